from __future__ import annotations

import random
import unicodedata

import pytest

from codegen.format import (
    CODE_LENGTH,
    MAX_INPUT_CHARS,
    SERIAL_LIMIT,
    CodeType,
    MalformedCode,
    check_digits,
    compose,
    group,
    is_valid,
    parse,
    region_of,
    serial_of,
    type_of,
)

REGIONS = ["630121", "110101", "632223", "650102", "440305", "530102"]


def _sample_codes(count: int = 50) -> list[str]:
    rng = random.Random(20261120)
    codes = [compose(1, "630121", 0), compose(4, "659004", SERIAL_LIMIT - 1)]
    while len(codes) < count:
        codes.append(compose(rng.randint(1, 4), rng.choice(REGIONS), rng.randrange(SERIAL_LIMIT)))
    return codes


SAMPLES = _sample_codes()
CODE = compose(1, "630121", 12_345_678_901)


def _horner_mod97(digits: str) -> int:
    remainder = 0
    for char in digits:
        remainder = (remainder * 10 + int(char)) % 97
    return remainder


def test_check_digits_known_values() -> None:
    assert check_digits("163012100000000000") == "43"
    assert check_digits("465432199999999999") == "51"
    assert check_digits("100000000000000000") == "81"


def test_check_digits_agree_with_digit_by_digit_mod97() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        body = "".join(rng.choice("0123456789") for _ in range(18))
        expected = 98 - _horner_mod97(body + "00")
        assert check_digits(body) == f"{expected:02d}"
        assert _horner_mod97(body + check_digits(body)) == 1


@pytest.mark.parametrize("body", ["", "12345678901234567", "1234567890123456789", "12345678901234567a", "１" * 18])
def test_check_digits_rejects_bad_body(body: str) -> None:
    with pytest.raises(ValueError):
        check_digits(body)


def test_compose_layout() -> None:
    code = compose(3, "632223", 42)
    assert code[:18] == "3632223" + "00000000042"
    assert len(code) == CODE_LENGTH
    assert int(code) % 97 == 1
    assert is_valid(code)


@pytest.mark.parametrize(
    ("code_type", "region", "serial"),
    [
        pytest.param(0, "630121", 1, id="type-0"),
        pytest.param(5, "630121", 1, id="type-5"),
        pytest.param(1, "63012", 1, id="short-region"),
        pytest.param(1, "63012a", 1, id="letter-region"),
        pytest.param(1, "630121", -1, id="negative-serial"),
        pytest.param(1, "630121", SERIAL_LIMIT, id="serial-too-big"),
    ],
)
def test_compose_rejects_bad_parts(code_type: int, region: str, serial: int) -> None:
    with pytest.raises(ValueError):
        compose(code_type, region, serial)


def test_every_single_digit_substitution_is_rejected() -> None:
    for code in SAMPLES:
        assert parse(code) == code
        for position in range(CODE_LENGTH):
            for digit in "0123456789":
                if digit == code[position]:
                    continue
                wrong = code[:position] + digit + code[position + 1 :]
                assert not is_valid(wrong), wrong
                with pytest.raises(MalformedCode) as caught:
                    parse(wrong)
                assert caught.value.reason in ("bad_check_digits", "bad_type"), wrong


def test_every_adjacent_swap_is_rejected() -> None:
    swaps = 0
    for code in SAMPLES:
        for position in range(CODE_LENGTH - 1):
            a, b = code[position], code[position + 1]
            if a == b:
                continue
            wrong = code[:position] + b + a + code[position + 2 :]
            swaps += 1
            assert not is_valid(wrong), wrong
            with pytest.raises(MalformedCode):
                parse(wrong)
    assert swaps > 800


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(CODE, id="clean"),
        pytest.param(group(CODE), id="grouped"),
        pytest.param(f"  {CODE}\r\n", id="surrounding-whitespace"),
        pytest.param(f"{CODE[:7]}-{CODE[7:18]}-{CODE[18:]}", id="ascii-dashes"),
        pytest.param(f"{CODE[:7]}\u2013{CODE[7:18]}\u2014{CODE[18:]}", id="en-em-dashes"),
        pytest.param(f"{CODE[:7]}\uff0d{CODE[7:]}", id="full-width-dash"),
        pytest.param(f"{CODE[:7]}\u3000{CODE[7:]}", id="ideographic-space"),
        pytest.param(f"{CODE[:7]}\u00a0{CODE[7:]}", id="no-break-space"),
        pytest.param(CODE.translate(str.maketrans("0123456789", "０１２３４５６７８９")), id="full-width-digits"),
        pytest.param(f"https://trace.example.cn/t/{CODE}", id="https-url"),
        pytest.param(f"http://127.0.0.1:8000/t/{CODE}", id="http-url-port"),
        pytest.param(f"https://trace.example.cn/t/{CODE}/", id="trailing-slash"),
        pytest.param(f"https://trace.example.cn/t/{CODE}?src=qr&x=1", id="query"),
        pytest.param(f"https://trace.example.cn/t/{CODE}/?src=qr#top", id="slash-query-fragment"),
        pytest.param(f"https://trace.example.cn/t/{CODE}#top", id="fragment"),
        pytest.param(f"https://gov.example.cn/trace/t/{CODE}", id="path-prefix"),
        pytest.param(f"HTTPS://TRACE.EXAMPLE.CN/T/{CODE}", id="upper-case-url"),
        pytest.param(f"https://trace.example.cn/t/{group(CODE).replace(' ', '%20')}", id="percent-encoded-spaces"),
    ],
)
def test_parse_accepts(text: str) -> None:
    assert parse(text) == CODE


def _with_type(code_type: str) -> str:
    body = code_type + CODE[1:18]
    return body + check_digits(body)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("   ", "empty", id="blank"),
        pytest.param("- -", "empty", id="only-separators"),
        pytest.param(CODE[:-1], "bad_length", id="19-digits"),
        pytest.param(CODE + "0", "bad_length", id="21-digits"),
        pytest.param(CODE[:10], "bad_length", id="10-digits"),
        pytest.param(CODE[:5] + "A" + CODE[6:], "bad_character", id="letter"),
        pytest.param(CODE[:5] + "o" + CODE[6:], "bad_character", id="letter-o-for-zero"),
        pytest.param(CODE + "x", "bad_character", id="trailing-letter"),
        pytest.param(CODE[:5] + "\u200b" + CODE[5:], "bad_character", id="zero-width-space"),
        pytest.param(CODE[:5] + "." + CODE[5:], "bad_character", id="dot"),
        pytest.param("\u0661" * 20, "bad_character", id="arabic-indic-digits"),
        pytest.param("'; DROP TABLE trace_codes; --", "bad_character", id="sql"),
        pytest.param(_with_type("0"), "bad_type", id="type-0"),
        pytest.param(_with_type("5"), "bad_type", id="type-5"),
        pytest.param(_with_type("9"), "bad_type", id="type-9"),
        pytest.param(CODE[:18] + f"{(int(CODE[18:]) + 1) % 100:02d}", "bad_check_digits", id="check-digits"),
        pytest.param("1" * (MAX_INPUT_CHARS + 1), "too_long", id="just-too-long"),
        pytest.param("1" * 10_000_000, "too_long", id="huge"),
        pytest.param(f"ftp://trace.example.cn/t/{CODE}", "bad_url", id="ftp-url"),
        pytest.param(f"https://trace.example.cn/x/{CODE}", "bad_url", id="other-path"),
        pytest.param(f"https://trace.example.cn/{CODE}", "bad_url", id="no-t-segment"),
        pytest.param(f"https:///t/{CODE}", "bad_url", id="no-host"),
        pytest.param(f"https://trace.example.cn/t/{CODE[:-1]}", "bad_length", id="url-short-code"),
    ],
)
def test_parse_rejects(text: str, reason: str) -> None:
    with pytest.raises(MalformedCode) as caught:
        parse(text)
    assert caught.value.reason == reason
    assert caught.value.message
    assert not caught.value.message.isascii()  # a Chinese message for people
    assert isinstance(caught.value, ValueError)


def test_parse_rejects_huge_input_before_normalising(monkeypatch: pytest.MonkeyPatch) -> None:
    original = unicodedata.normalize

    def normalize(form: str, text: str) -> str:  # pytest itself normalises short strings meanwhile
        if len(text) > MAX_INPUT_CHARS:
            raise AssertionError("huge input reached unicodedata.normalize")
        return original(form, text)  # type: ignore[arg-type]

    monkeypatch.setattr(unicodedata, "normalize", normalize)
    with pytest.raises(MalformedCode) as caught:
        parse("１" * 50_000_000)
    assert caught.value.reason == "too_long"


def test_parse_returns_plain_str() -> None:
    class Tagged(str):
        pass

    result = parse(Tagged(CODE))
    assert type(result) is str
    assert result == CODE


def test_group_round_trips_and_reads_in_short_groups() -> None:
    grouped = group(CODE)
    assert grouped == f"{CODE[0]} {CODE[1:7]} {CODE[7:10]} {CODE[10:14]} {CODE[14:18]} {CODE[18:]}"
    assert [len(part) for part in grouped.split(" ")] == [1, 6, 3, 4, 4, 2]
    for code in SAMPLES:
        assert parse(group(code)) == code


def test_group_rejects_non_code() -> None:
    with pytest.raises(ValueError):
        group("12345")


def test_parts_of_a_code() -> None:
    code = compose(2, "632223", 98_765_432_109)
    assert type_of(code) is CodeType.CIRCULATION_BATCH
    assert region_of(code) == "632223"
    assert serial_of(code) == 98_765_432_109


@pytest.mark.parametrize(
    ("code_type", "api_name", "label"),
    [
        pytest.param(CodeType.PRODUCTION_BATCH, "production_batch", "生产批次码", id="1"),
        pytest.param(CodeType.CIRCULATION_BATCH, "circulation_batch", "流通批次码", id="2"),
        pytest.param(CodeType.MARKET_ENTRY, "market_entry", "入市追溯凭证", id="3"),
        pytest.param(CodeType.PACKAGE, "package", "产品追溯码", id="4"),
    ],
)
def test_code_type_names(code_type: CodeType, api_name: str, label: str) -> None:
    assert code_type.api_name == api_name
    assert code_type.label == label
    assert CodeType.from_api_name(api_name) is code_type
    assert type_of(compose(code_type, "630121", 1)) is code_type


def test_code_type_values_are_the_printed_digits() -> None:
    assert [int(t) for t in CodeType] == [1, 2, 3, 4]
    with pytest.raises(ValueError):
        CodeType.from_api_name("batch")
