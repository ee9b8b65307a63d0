from __future__ import annotations

import numpy as np
import pytest

from codegen import permute as p
from codegen.format import is_valid, parse, region_of, serial_of, type_of

SECRET = b"tracecode-test-secret-0001"
OTHER_SECRET = b"tracecode-test-secret-0002"
KEYS = p.derive_round_keys(SECRET, 1, "630121")


def _serials(keys: p.RoundKeys, count: int, start: int = 0) -> list[int]:
    ints = keys.tolist()
    return [p.permute(seq, ints) for seq in range(start, start + count)]


def test_round_keys_shape_and_determinism() -> None:
    assert KEYS.dtype == np.uint64
    assert KEYS.shape == (p.ROUNDS,)
    assert not KEYS.flags.writeable
    assert np.array_equal(KEYS, p.derive_round_keys(SECRET, 1, "630121"))
    assert len(set(KEYS.tolist())) == p.ROUNDS


@pytest.mark.parametrize(
    ("secret", "code_type", "region"),
    [
        pytest.param(OTHER_SECRET, 1, "630121", id="secret"),
        pytest.param(SECRET, 2, "630121", id="type"),
        pytest.param(SECRET, 1, "630122", id="region"),
    ],
)
def test_each_input_of_the_key_derivation_changes_every_round_key(secret: bytes, code_type: int, region: str) -> None:
    other = p.derive_round_keys(secret, code_type, region)
    assert not np.any(other == KEYS)


@pytest.mark.parametrize(
    ("secret", "code_type", "region"),
    [
        pytest.param(b"short", 1, "630121", id="short-secret"),
        pytest.param(SECRET, 0, "630121", id="type-0"),
        pytest.param(SECRET, 5, "630121", id="type-5"),
        pytest.param(SECRET, 1, "6301", id="short-region"),
        pytest.param(SECRET, 1, "６３０１２１", id="full-width-region"),
    ],
)
def test_key_derivation_rejects_bad_input(secret: bytes, code_type: int, region: str) -> None:
    with pytest.raises(ValueError):
        p.derive_round_keys(secret, code_type, region)


def test_mix64_known_values() -> None:
    # splitmix64 outputs for the seed 0: next() adds the golden gamma, then finalises.
    gamma = 0x9E37_79B9_7F4A_7C15
    assert p.mix64(gamma) == 0xE220_A839_7B1D_CDAF
    assert p.mix64((2 * gamma) & p.MASK64) == 0x6E78_9E6A_A1B9_65F4
    assert p.mix64(0) == 0


def test_known_answers_are_frozen() -> None:
    # Issued codes are stored, and new ones must never collide with them: the permutation must not change.
    assert p.permute(0, KEYS) == 44_893_886_515
    assert p.permute(1, KEYS) == 93_331_536_913
    assert p.permute(p.DOMAIN_SIZE - 1, KEYS) == 86_023_797_740
    assert p.issue_one(SECRET, 4, "110101", 123_456) == "41101018477177255769"


def test_permute_is_a_bijection_on_200k_inputs() -> None:
    serials = _serials(KEYS, 200_000)
    assert len(set(serials)) == len(serials)
    assert all(0 <= serial < p.DOMAIN_SIZE for serial in serials)


def test_unpermute_inverts_permute() -> None:
    rng = np.random.default_rng(3)
    seqs = [0, 1, p.DOMAIN_SIZE - 1, *rng.integers(0, p.DOMAIN_SIZE, 2000).tolist()]
    for seq in seqs:
        assert p.unpermute(p.permute(seq, KEYS), KEYS) == seq


def test_cycle_walking_keeps_serials_in_range() -> None:
    # Walk backwards from a point outside the domain to the sequence number whose first encryption lands
    # outside it: permute must walk on to a serial inside, and unpermute must come back.
    keys = KEYS.tolist()
    seq = p._decrypt(p.DOMAIN_SIZE + 12_345, keys)
    while seq >= p.DOMAIN_SIZE:
        seq = p._decrypt(seq, keys)
    assert p._encrypt(seq, keys) >= p.DOMAIN_SIZE
    serial = p.permute(seq, KEYS)
    assert serial < p.DOMAIN_SIZE
    assert p.unpermute(serial, KEYS) == seq


def test_feistel_pass_is_a_bijection_on_its_square_domain() -> None:
    keys = KEYS.tolist()
    m2 = p.HALF_MODULUS * p.HALF_MODULUS
    for x in [0, 1, p.HALF_MODULUS, p.DOMAIN_SIZE, m2 - 1]:
        y = p._encrypt(x, keys)
        assert 0 <= y < m2
        assert p._decrypt(y, keys) == x


@pytest.mark.parametrize(
    ("secret", "code_type", "region"),
    [
        pytest.param(OTHER_SECRET, 1, "630121", id="secret"),
        pytest.param(SECRET, 2, "630121", id="type"),
        pytest.param(SECRET, 1, "630122", id="region"),
    ],
)
def test_different_secret_type_or_region_gives_a_different_permutation(
    secret: bytes, code_type: int, region: str
) -> None:
    ours = _serials(KEYS, 2000)
    theirs = _serials(p.derive_round_keys(secret, code_type, region), 2000)
    # Two independent permutations of 10**11 values agree at a given input with probability 1e-11.
    assert sum(a == b for a, b in zip(ours, theirs, strict=True)) == 0
    assert len(set(ours) & set(theirs)) < 5


def test_consecutive_sequence_numbers_are_not_guessable_from_each_other() -> None:
    serials = _serials(KEYS, 20_000, start=1_000_000)
    steps = [b - a for a, b in zip(serials, serials[1:], strict=False)]
    assert not any(abs(step) <= 1000 for step in steps)
    # Spread over the whole range: every leading digit and every decile of the range is hit.
    assert {serial // 10**10 for serial in serials} == set(range(10))
    leading_counts = np.bincount([serial // 10**10 for serial in serials], minlength=10)
    assert leading_counts.min() > 1700  # 2000 expected per decile; a biased permutation would fail
    # Neighbouring inputs differ in about half of the serial's bits (avalanche), not in a few low ones.
    flipped = np.array([bin(a ^ b).count("1") for a, b in zip(serials, serials[1:], strict=False)])
    assert 16 < flipped.mean() < 21


@pytest.mark.parametrize("seq", [-1, p.DOMAIN_SIZE, 10**12])
def test_permute_rejects_out_of_domain(seq: int) -> None:
    with pytest.raises(ValueError):
        p.permute(seq, KEYS)
    with pytest.raises(ValueError):
        p.unpermute(seq, KEYS)


def test_permute_rejects_wrong_number_of_keys() -> None:
    with pytest.raises(ValueError):
        p.permute(1, KEYS[:-1])


def test_permute_accepts_plain_int_keys() -> None:
    assert p.permute(77, KEYS.tolist()) == p.permute(77, KEYS)


def test_issue_one_builds_a_valid_code() -> None:
    code = p.issue_one(SECRET, 3, "632223", 99)
    assert is_valid(code)
    assert parse(code) == code
    assert int(type_of(code)) == 3
    assert region_of(code) == "632223"
    assert serial_of(code) == p.permute(99, p.derive_round_keys(SECRET, 3, "632223"))
