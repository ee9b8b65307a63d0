from __future__ import annotations

import numpy as np
import pytest

from codegen import kernels as k
from codegen import permute as p
from codegen.format import CHECK_MODULUS, CODE_LENGTH, compose, is_valid

SECRET = b"tracecode-test-secret-0001"
BIG_BLOCK = 1_000_000
BIG_START = 7_654_321


@pytest.fixture(scope="module")
def keys() -> p.RoundKeys:
    k.warm()
    return p.derive_round_keys(SECRET, 4, "632223")


@pytest.fixture(scope="module")
def big_block(keys: p.RoundKeys) -> k.CodeBlock:
    return k.issue_block(4, "632223", BIG_START, BIG_BLOCK, keys)


def _mod97(block: k.CodeBlock) -> np.ndarray[tuple[int], np.dtype[np.int64]]:
    """``int(code) % 97`` for every row, digit by digit in int64 (independent of the kernel's method)."""
    remainder = np.zeros(block.shape[0], dtype=np.int64)
    for column in range(CODE_LENGTH):
        remainder = (remainder * 10 + (block[:, column].astype(np.int64) - ord("0"))) % CHECK_MODULUS
    return remainder


def test_block_shape_and_layout(keys: p.RoundKeys) -> None:
    block = k.issue_block(4, "632223", 0, 3, keys)
    assert block.dtype == np.uint8
    assert block.shape == (3, CODE_LENGTH)
    assert block.flags.c_contiguous
    codes = k.block_to_strings(block)
    assert all(code.startswith("4632223") for code in codes)
    assert codes == [p.issue_one(SECRET, 4, "632223", seq) for seq in range(3)]


def test_big_block_is_unique_and_valid(big_block: k.CodeBlock) -> None:
    assert big_block.shape == (BIG_BLOCK, CODE_LENGTH)
    assert big_block.min() >= ord("0")
    assert big_block.max() <= ord("9")
    assert np.all(big_block[:, :7] == np.frombuffer(b"4632223", dtype=np.uint8))
    assert np.all(_mod97(big_block) == 1)
    assert len(np.unique(big_block.view("S20").ravel())) == BIG_BLOCK


def test_big_block_agrees_with_the_python_reference(keys: p.RoundKeys, big_block: k.CodeBlock) -> None:
    ints = keys.tolist()
    expected = [compose(4, "632223", p.permute(seq, ints)) for seq in range(BIG_START, BIG_START + BIG_BLOCK)]
    assert k.block_to_strings(big_block) == expected


def test_block_strings_are_valid_codes(big_block: k.CodeBlock) -> None:
    assert all(is_valid(code) for code in k.block_to_strings(big_block[:20_000]))


def _walked_seqs(ints: list[int], count: int) -> list[int]:
    """Sequence numbers whose first Feistel pass leaves the domain, found by walking back from outside it."""
    walked = []
    for outside in range(p.DOMAIN_SIZE, p.DOMAIN_SIZE + count):
        seq = p._decrypt(outside, ints)
        while seq >= p.DOMAIN_SIZE:
            seq = p._decrypt(seq, ints)
        walked.append(seq)
    return walked


def test_kernel_walks_cycles_like_the_reference(keys: p.RoundKeys) -> None:
    # Single-code blocks of sequence numbers that need cycle walking.
    ints = keys.tolist()
    for seq in _walked_seqs(ints, 50):
        assert p._encrypt(seq, ints) >= p.DOMAIN_SIZE
        assert k.block_to_strings(k.issue_block(4, "632223", seq, 1, keys)) == [p.issue_one(SECRET, 4, "632223", seq)]


def test_kernel_matches_the_frozen_known_answer() -> None:
    keys = p.derive_round_keys(SECRET, 4, "110101")
    assert k.block_to_strings(k.issue_block(4, "110101", 123_456, 1, keys)) == ["41101018477177255769"]


@pytest.mark.parametrize("offset", [0, 1, k.CHUNK - 1, k.CHUNK, k.CHUNK + 1])
def test_walked_codes_inside_a_block_at_chunk_edges(keys: p.RoundKeys, offset: int) -> None:
    # A code that needs cycle walking at the start, in the middle, and on either side of a chunk boundary.
    ints = keys.tolist()
    seq = min(_walked_seqs(ints, 20))
    start = seq - offset
    count = 2 * k.CHUNK + 5
    assert start >= 0
    expected = [compose(4, "632223", p.permute(s, ints)) for s in range(start, start + count)]
    assert k.block_to_strings(k.issue_block(4, "632223", start, count, keys)) == expected


@pytest.mark.parametrize("count", [1, 2, k.CHUNK - 1, k.CHUNK, k.CHUNK + 1, 3 * k.CHUNK + 7])
def test_block_sizes_around_the_chunk_size(keys: p.RoundKeys, count: int) -> None:
    ints = keys.tolist()
    start = 987_654_321
    expected = [compose(4, "632223", p.permute(s, ints)) for s in range(start, start + count)]
    assert k.block_to_strings(k.issue_block(4, "632223", start, count, keys)) == expected


@pytest.mark.parametrize(
    ("code_type", "region"),
    [(1, "000000"), (2, "999999"), (3, "110101"), (4, "650000"), (1, "090909")],
)
def test_every_prefix_is_laid_out_like_the_reference(code_type: int, region: str) -> None:
    # The type and region are written as precomputed words and the check digits come from a per-block
    # table: check them for prefixes with extreme digits and different MOD 97 shares.
    keys = p.derive_round_keys(SECRET, code_type, region)
    block = k.issue_block(code_type, region, 500, 3000, keys)
    assert k.block_to_strings(block) == [p.issue_one(SECRET, code_type, region, seq) for seq in range(500, 3500)]
    assert np.all(_mod97(block) == 1)


def test_block_at_the_end_of_the_domain(keys: p.RoundKeys) -> None:
    block = k.issue_block(4, "632223", p.DOMAIN_SIZE - 10, 10, keys)
    expected = [p.issue_one(SECRET, 4, "632223", seq) for seq in range(p.DOMAIN_SIZE - 10, p.DOMAIN_SIZE)]
    assert k.block_to_strings(block) == expected


def test_empty_block(keys: p.RoundKeys) -> None:
    block = k.issue_block(4, "632223", 5, 0, keys)
    assert block.shape == (0, CODE_LENGTH)
    assert k.block_to_strings(block) == []
    assert k.block_to_bytes(block) == b""


@pytest.mark.parametrize(
    ("code_type", "region", "start_seq", "count"),
    [
        pytest.param(0, "632223", 0, 1, id="type-0"),
        pytest.param(5, "632223", 0, 1, id="type-5"),
        pytest.param(4, "63222", 0, 1, id="short-region"),
        pytest.param(4, "632223", -1, 1, id="negative-start"),
        pytest.param(4, "632223", 0, -1, id="negative-count"),
        pytest.param(4, "632223", p.DOMAIN_SIZE - 10, 11, id="past-the-domain"),
    ],
)
def test_issue_block_rejects_bad_arguments(
    keys: p.RoundKeys, code_type: int, region: str, start_seq: int, count: int
) -> None:
    with pytest.raises(ValueError):
        k.issue_block(code_type, region, start_seq, count, keys)


@pytest.mark.parametrize(
    "bad_keys",
    [
        pytest.param(np.arange(p.ROUNDS, dtype=np.int64), id="int64"),
        pytest.param(np.arange(p.ROUNDS - 1, dtype=np.uint64), id="too-few"),
        pytest.param(np.zeros((2, p.ROUNDS), dtype=np.uint64), id="2d"),
    ],
)
def test_issue_block_rejects_bad_keys(bad_keys: p.RoundKeys) -> None:
    with pytest.raises(ValueError):
        k.issue_block(1, "630121", 0, 1, bad_keys)


def test_writable_keys_give_the_same_codes(keys: p.RoundKeys) -> None:
    writable = keys.copy()
    assert writable.flags.writeable
    assert np.array_equal(k.issue_block(4, "632223", 0, 100, writable), k.issue_block(4, "632223", 0, 100, keys))


def test_block_to_bytes(keys: p.RoundKeys) -> None:
    block = k.issue_block(4, "632223", 10, 3, keys)
    codes = k.block_to_strings(block)
    assert k.block_to_bytes(block) == "".join(f"{code}\n" for code in codes).encode()
    assert k.block_to_bytes(block, line_end=b"\r\n") == "".join(f"{code}\r\n" for code in codes).encode()
    assert k.block_to_bytes(block, line_end=b"") == "".join(codes).encode()


def test_block_conversions_accept_a_strided_slice(big_block: k.CodeBlock) -> None:
    every_other = big_block[:10:2]
    assert not every_other.flags.c_contiguous
    assert k.block_to_strings(every_other) == k.block_to_strings(big_block[:10])[::2]


def test_block_conversions_reject_other_shapes() -> None:
    with pytest.raises(ValueError):
        k.block_to_strings(np.zeros((2, 19), dtype=np.uint8))
    with pytest.raises(ValueError):
        k.block_to_bytes(np.zeros((2, 20), dtype=np.int32))


def test_unpermute_one_inverts_the_reference(keys: p.RoundKeys) -> None:
    ints = keys.tolist()
    seqs = [0, 1, 123_456, p.DOMAIN_SIZE - 1, *_walked_seqs(ints, 5)]
    for seq in seqs:
        assert k.unpermute_one(p.permute(seq, ints), keys) == seq == p.unpermute(p.permute(seq, ints), ints)


def test_unpermute_block_inverts_a_block(keys: p.RoundKeys, big_block: k.CodeBlock) -> None:
    serials = np.array([int(code[7:18]) for code in k.block_to_strings(big_block[:50_000])], dtype=np.uint64)
    assert k.unpermute_block(serials, keys).tolist() == list(range(BIG_START, BIG_START + 50_000))


def test_unpermute_rejects_serials_out_of_the_domain(keys: p.RoundKeys) -> None:
    with pytest.raises(ValueError, match="serial"):
        k.unpermute_one(p.DOMAIN_SIZE, keys)
    with pytest.raises(ValueError, match="serials"):
        k.unpermute_block(np.array([p.DOMAIN_SIZE], dtype=np.uint64), keys)
    assert k.unpermute_block(np.array([], dtype=np.uint64), keys).shape == (0,)
