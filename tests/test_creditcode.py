from __future__ import annotations

import random

import pytest

from codegen.creditcode import (
    ALPHABET,
    CREDIT_CODE_LENGTH,
    WEIGHTS,
    credit_check_char,
    is_valid_credit_code,
    make_credit_code,
    normalise_credit_code,
    region_of_credit_code,
)

# Published codes: Huawei Technologies Co., Ltd. (the company's Wikipedia infobox), and the two valid
# examples in the test suite of the Hutool library's CreditCodeUtil.
PUBLISHED = ["914403001922038216", "91310110666007217T", "91310115591693856A"]


def test_weights_are_powers_of_three_mod_31() -> None:
    assert WEIGHTS == (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
    assert len(ALPHABET) == 31
    assert not set("IOSVZ") & set(ALPHABET)


@pytest.mark.parametrize("code", PUBLISHED)
def test_published_codes_are_valid(code: str) -> None:
    assert is_valid_credit_code(code)
    assert credit_check_char(code[:17]) == code[17]
    assert make_credit_code(code[:17]) == code


def test_check_char_known_values() -> None:
    assert credit_check_char("91440300192203821") == "6"
    assert credit_check_char("91310110666007217") == "T"
    # The check value 0 must wrap to "0", not to 31 (out of the alphabet).
    assert make_credit_code("00000000000000000") == "000000000000000000"


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("91110000100003000X", id="wrong-check-char"),
        pytest.param("91350211M00013FA1N", id="early-pilot-code-failing-the-check"),
        pytest.param("91440300192203821", id="17-chars"),
        pytest.param("9144030019220382166", id="19-chars"),
        pytest.param("", id="empty"),
        pytest.param("91440300192203821I", id="letter-I-not-in-alphabet"),
        pytest.param("91310110666007217t", id="lower-case-not-canonical"),
        pytest.param("９１４４０３００１９２２０３８２１６", id="full-width-not-canonical"),
    ],
)
def test_invalid_codes(code: str) -> None:
    assert not is_valid_credit_code(code)


def test_letters_in_the_region_part_are_rejected() -> None:
    code = make_credit_code("91A403001922038216"[:17])
    assert not is_valid_credit_code(code)


def test_every_single_character_substitution_fails() -> None:
    rng = random.Random(5)
    codes = PUBLISHED + [make_credit_code("93" + "630121" + "".join(rng.choices(ALPHABET, k=9))) for _ in range(20)]
    for code in codes:
        assert is_valid_credit_code(code)
        for position in range(CREDIT_CODE_LENGTH):
            for char in ALPHABET:
                if char != code[position]:
                    assert not is_valid_credit_code(code[:position] + char + code[position + 1 :])


def test_every_adjacent_swap_fails() -> None:
    for code in PUBLISHED:
        for position in range(CREDIT_CODE_LENGTH - 1):
            a, b = code[position], code[position + 1]
            if a != b:
                assert not is_valid_credit_code(code[:position] + b + a + code[position + 2 :])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("91310110666007217t", "91310110666007217T", id="lower-case"),
        pytest.param("  914403001922038216\n", "914403001922038216", id="surrounding-space"),
        pytest.param("９１４４０３００１９２２０３８２１６", "914403001922038216", id="full-width"),
    ],
)
def test_normalise(text: str, expected: str) -> None:
    assert normalise_credit_code(text) == expected
    assert is_valid_credit_code(normalise_credit_code(text))


@pytest.mark.parametrize("first17", ["9144030019220382", "914403001922038216", "9144030019220382I"])
def test_check_char_rejects_bad_input(first17: str) -> None:
    with pytest.raises(ValueError):
        credit_check_char(first17)


def test_region() -> None:
    assert region_of_credit_code("914403001922038216") == "440300"
    assert region_of_credit_code("91310110666007217T") == "310110"
