import pytest

from codegen.digitallink import CSET82, digital_link_path, is_cset82
from codegen.gtin import InvalidGtin


def test_a_gtin_is_written_as_14_digits() -> None:
    assert digital_link_path("6901234567892") == "/01/06901234567892"


def test_lot_and_serial_follow_in_order() -> None:
    path = digital_link_path("06901234567892", "LOT-7", "16301214181039605482")
    assert path == "/01/06901234567892/10/LOT-7/21/16301214181039605482"
    assert digital_link_path("06901234567892", serial="A1") == "/01/06901234567892/21/A1"


def test_set_82_characters_outside_the_unreserved_ones_are_percent_encoded() -> None:
    assert digital_link_path("06901234567892", "A/B%C?D=E&F") == "/01/06901234567892/10/A%2FB%25C%3FD%3DE%26F"
    reserved = "".join(sorted(set(CSET82) - set("-._0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")))
    assert reserved == "!\"%&'()*+,/:;<=>?"
    encoded = digital_link_path("06901234567892", reserved).rsplit("/", 1)[1]
    assert all(c in "%0123456789ABCDEF" for c in encoded)


@pytest.mark.parametrize(
    ("lot", "serial"),
    [
        pytest.param("", None, id="empty-lot"),
        pytest.param("x" * 21, None, id="lot-too-long"),
        pytest.param("批号", None, id="lot-not-set-82"),
        pytest.param("L1", "a b", id="serial-with-space"),
        pytest.param("L1", "1" * 21, id="serial-too-long"),
    ],
)
def test_a_lot_or_serial_outside_its_ai_is_refused(lot: str, serial: str | None) -> None:
    with pytest.raises(ValueError, match="AI"):
        digital_link_path("06901234567892", lot, serial)


def test_a_bad_gtin_is_refused() -> None:
    with pytest.raises(InvalidGtin):
        digital_link_path("06901234567893")


def test_set_82_is_82_characters() -> None:
    assert len(CSET82) == 82
    assert is_cset82("A" * 20, 20) and not is_cset82("A" * 21, 20) and not is_cset82("", 20)
