"""GS1 Digital Link request paths (resolver.scan.gs1_uri): what is a conformant URI, and the 400 of what is not."""

from __future__ import annotations

import pytest

from resolver.edge.problems import Problem
from resolver.scan.gs1_uri import PATH_MAX_BYTES, DigitalLink, parse_path

GTIN = "06901234567892"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param(GTIN, DigitalLink(GTIN), id="gtin"),
        pytest.param(GTIN + "/", DigitalLink(GTIN), id="trailing-slash"),
        pytest.param(GTIN[1:], DigitalLink(GTIN), id="gtin-13"),
        pytest.param(f"{GTIN}/10/L1", DigitalLink(GTIN, lot="L1"), id="lot"),
        pytest.param(f"{GTIN}/10/A%2FB", DigitalLink(GTIN, lot="A/B"), id="encoded-slash"),
        pytest.param(f"{GTIN}/10/L1/21/S1", DigitalLink(GTIN, lot="L1", serial="S1"), id="lot-serial"),
        pytest.param(f"{GTIN}/21/S1", DigitalLink(GTIN, serial="S1"), id="serial"),
        pytest.param(f"{GTIN}/22/2A/10/L1/21/S1", DigitalLink(GTIN, cpv="2A", lot="L1", serial="S1"), id="cpv"),
        pytest.param(f"{GTIN}/235/T1", DigitalLink(GTIN, tpx="T1"), id="tpx"),
        pytest.param(f"{GTIN}/10/{'A' * 20}", DigitalLink(GTIN, lot="A" * 20), id="longest-lot"),
        pytest.param(f"{GTIN}/10/%21%22%25", DigitalLink(GTIN, lot='!"%'), id="set-82-encoded"),
    ],
)
def test_conformant_paths_parse(path: str, expected: DigitalLink) -> None:
    assert parse_path(path.encode()) == expected


@pytest.mark.parametrize(
    ("path", "code"),
    [
        pytest.param("06901234567893", "invalid_gtin", id="check-digit"),
        pytest.param("0690123456789", "invalid_gtin", id="13-digits-bad-check-digit"),
        pytest.param("12345", "invalid_gtin", id="short"),
        pytest.param("", "invalid_gtin", id="empty"),
        pytest.param(f"{GTIN}/foo", "malformed_path", id="odd-segment"),
        pytest.param(f"{GTIN}//10/L1", "malformed_path", id="empty-segment"),
        pytest.param(f"{GTIN}/99/X", "unknown_ai", id="unknown-ai"),
        pytest.param(f"{GTIN}/17/261231", "unknown_ai", id="data-attribute-in-path"),
        pytest.param(f"{GTIN}/01/{GTIN}", "unknown_ai", id="second-gtin"),
        pytest.param(f"{GTIN}/21/S1/10/L1", "qualifier_order", id="out-of-order"),
        pytest.param(f"{GTIN}/10/L1/10/L2", "qualifier_order", id="repeated"),
        pytest.param(f"{GTIN}/235/T1/21/S1", "qualifier_order", id="tpx-not-alone"),
        pytest.param(f"{GTIN}/10/{'A' * 21}", "invalid_lot", id="lot-too-long"),
        pytest.param(f"{GTIN}/10/L%201", "invalid_lot", id="lot-space"),
        pytest.param(f"{GTIN}/10/L~1", "invalid_lot", id="lot-tilde"),
        pytest.param(f"{GTIN}/10/%E6%89%B9", "invalid_lot", id="lot-chinese"),
        pytest.param(f"{GTIN}/10/%FF", "invalid_lot", id="lot-not-utf8"),
        pytest.param(f"{GTIN}/10/", "malformed_path", id="lot-missing"),
        pytest.param(f"{GTIN}/21/{'9' * 21}", "invalid_serial", id="serial-too-long"),
        pytest.param(f"{GTIN}/21/S%231", "invalid_serial", id="serial-hash"),
        pytest.param(f"{GTIN}/22/{'A' * 21}", "invalid_qualifier", id="cpv-too-long"),
        pytest.param(f"{GTIN}/10/{'A' * PATH_MAX_BYTES}", "path_too_long", id="too-long"),
    ],
)
def test_non_conformant_paths_are_400(path: str, code: str) -> None:
    with pytest.raises(Problem) as raised:
        parse_path(path.encode())

    assert (raised.value.status, raised.value.code) == (400, code)
    assert raised.value.title and raised.value.detail


def test_canonical_paths_of_each_level() -> None:
    link = parse_path(f"{GTIN[1:]}/10/A%2FB/21/S1".encode())

    assert link.path() == f"/01/{GTIN}/10/A%2FB/21/S1"
    assert link.path(serial=False) == f"/01/{GTIN}/10/A%2FB"
    assert link.path(lot=False, serial=False) == f"/01/{GTIN}"
