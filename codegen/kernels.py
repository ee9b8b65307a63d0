"""Issue a block of consecutive codes at once: the ``codegen.permute`` permutation compiled with numba.

``issue_block`` returns a ``(count, 20)`` uint8 array of ASCII digits, one code per row, equal bit for
bit to ``codegen.permute.issue_one`` for each sequence number. The kernel releases the GIL, so callers
may split a large block over threads. ``unpermute_one`` and ``unpermute_block`` go the other way, serial to
sequence number (``codegen.permute.unpermute``), which is how a package code finds its range. The kernels are
compiled on first use (and cached on disk); call ``warm()`` at start-up to pay that cost before the first request.

How it is fast (``bench/codegen_speed.py`` measures it) without changing the permutation:

* Round-major order. One code is a chain of 8 dependent rounds of about 25 cycles of latency each
  (two multiplies in ``mix64``, a multiply-high and a multiply for ``% M``), too long for the CPU to
  overlap much with the next code, so code-by-code evaluation runs near the latency of the chain. The
  kernel instead runs each round over a chunk of ``CHUNK`` codes (the two halves in small arrays that
  stay in L1) before the next round: the iterations of a round are independent, and the loop runs
  near the throughput of the multiplier, about 2.5 times faster (13 ns a code instead of 30 on the
  2-core Xeon of the benchmark). Cycle walking (about 1.5 codes in a million) is then done code by
  code for the few values that land outside ``[0, 10**11)``. The arithmetic, and so every serial, is
  exactly that of ``codegen.permute``.
* Constant divisors. ``M``, 97, 10**6, 10**4 and 100 are compile-time constants, so every ``//`` and
  ``%`` is a multiply and a shift, never a ``div`` instruction, and there is no division by zero to
  check (``error_model="numpy"`` is set, but measured no different).
* Whole words out. A 20-byte row is five aligned 32-bit words: the 7 prefix digits (type and region,
  the same on every row) are two precomputed words with a hole for the serial's first digit; the other
  10 serial digits come from tables of the ASCII forms of ``0000``..``9999`` and ``00``..``99``; the
  check digits from a 97-entry table of the block, indexed by ``serial % 97`` (the prefix's share of
  the MOD 97-10 sum is the same on every row). Five stores per code instead of twenty.

All kernel arithmetic is uint64, with every constant a ``np.uint64``: numba, like NumPy, promotes a
mix of int64 and uint64 to float64, which would silently lose digits. The word layout assumes a
little-endian machine, as every platform numba supports is.
"""

from __future__ import annotations

import sys
from typing import Final

import numpy as np
from numba import njit
from numpy.typing import NDArray

from codegen.format import CHECK_BASE, CHECK_MODULUS, CODE_LENGTH, REGION_LENGTH, SERIAL_LENGTH
from codegen.permute import (
    DOMAIN_SIZE,
    HALF_MODULUS,
    MIN_SECRET_BYTES,
    MIX_MULT_1,
    MIX_MULT_2,
    MIX_SHIFT_1,
    MIX_SHIFT_2,
    MIX_SHIFT_3,
    ROUNDS,
    RoundKeys,
    derive_round_keys,
)

if sys.byteorder != "little":  # pragma: no cover - numba runs on little-endian machines only
    raise ImportError("codegen.kernels writes codes as little-endian 32-bit words")

CodeBlock = NDArray[np.uint8]
_CodeWords = NDArray[np.uint32]
_Serials = NDArray[np.uint64]

_PREFIX_LENGTH: Final = 1 + REGION_LENGTH  # type digit and region, the same on every row of a block
_WORD_BYTES: Final = 4  # a row is 5 words: TRRR RRRN NNNN NNNN NNCC
CHUNK: Final = 1024  # codes per round-major pass: 3 arrays of 8 KiB, well inside L1
_WARM_SECRET: Final = bytes(MIN_SECRET_BYTES)
_WARM_REGION: Final = "110101"

# uint64 constants for the kernels (numba freezes global NumPy scalars as typed constants).
_U_M = np.uint64(HALF_MODULUS)
_U_DOMAIN = np.uint64(DOMAIN_SIZE)
_U_SERIAL_SCALE = np.uint64(10**SERIAL_LENGTH)
_U_MULT_1 = np.uint64(MIX_MULT_1)
_U_MULT_2 = np.uint64(MIX_MULT_2)
_U_SHIFT_1 = np.uint64(MIX_SHIFT_1)
_U_SHIFT_2 = np.uint64(MIX_SHIFT_2)
_U_SHIFT_3 = np.uint64(MIX_SHIFT_3)
_U_MOD = np.uint64(CHECK_MODULUS)
_U_CHECK_BASE = np.uint64(CHECK_BASE)
_U_HUNDRED = np.uint64(100)  # the two check-digit places, and a digit pair
_U_TEN_THOUSAND = np.uint64(10**4)  # a digit quad
_U_MILLION = np.uint64(10**6)  # the serial splits into 5 + 6 digits, each fitting 32 bits
_U_MILLION_MOD = np.uint64(10**6 % CHECK_MODULUS)  # so y % 97 == (hi * 27 + lo) % 97
_U_LEAD_SHIFT = np.uint64(8 * (_PREFIX_LENGTH - _WORD_BYTES))  # byte 7: the top of word 1
_U_HALF_WORD = np.uint64(16)  # bytes 18-19, the check digits, are the top half of word 4

# ASCII digits as little-endian words: _PAIR_CHARS[37] holds b"37", _QUAD_CHARS[1234] holds b"1234".
_PAIR_CHARS: Final = np.frombuffer("".join(f"{i:02d}" for i in range(100)).encode("ascii"), dtype=np.uint16)
_QUAD_CHARS: Final = np.frombuffer("".join(f"{i:04d}" for i in range(10**4)).encode("ascii"), dtype=np.uint32)


@njit(cache=True, nogil=True, error_model="numpy")
def _mix64(z: np.uint64) -> np.uint64:
    z = (z ^ (z >> _U_SHIFT_1)) * _U_MULT_1
    z = (z ^ (z >> _U_SHIFT_2)) * _U_MULT_2
    return z ^ (z >> _U_SHIFT_3)


@njit(cache=True, nogil=True, error_model="numpy")
def _encrypt(x: np.uint64, keys: RoundKeys) -> np.uint64:
    """One Feistel pass on one value, code by code: only for cycle walking."""
    left = x // _U_M
    right = x % _U_M
    for r in range(ROUNDS):
        total = left + _mix64(right ^ keys[r]) % _U_M
        if total >= _U_M:  # (left + f) % M without a second division: both terms are < M
            total -= _U_M
        left, right = right, total
    return left * _U_M + right


@njit(cache=True, nogil=True, error_model="numpy")
def _permute_chunk(serials: _Serials, start_seq: np.uint64, keys: RoundKeys, left: _Serials, right: _Serials) -> None:
    """``serials[j]`` = the serial of ``start_seq + j``; ``left`` and ``right`` are scratch of the same size.

    The same Feistel rounds as ``_encrypt``, but one round over the whole chunk before the next, so
    that consecutive iterations are independent and overlap in the pipeline.
    """
    count = serials.shape[0]
    for j in range(count):
        x = start_seq + np.uint64(j)
        left[j] = x // _U_M
        right[j] = x % _U_M
    for r in range(ROUNDS):
        key = keys[r]
        for j in range(count):
            total = left[j] + _mix64(right[j] ^ key) % _U_M
            if total >= _U_M:
                total -= _U_M
            left[j] = total  # (L, R) -> (R, L + f(R)): the new right half goes where L was...
        left, right = right, left  # ...and the names swap
    for j in range(count):
        y = left[j] * _U_M + right[j]
        while y >= _U_DOMAIN:  # cycle walking, as in codegen.permute.permute
            y = _encrypt(y, keys)
        serials[j] = y


@njit(cache=True, nogil=True, error_model="numpy")
def _issue_into(
    words: _CodeWords, head: _CodeWords, prefix_value: np.uint64, start_seq: np.uint64, keys: RoundKeys
) -> None:
    """Fill ``words`` (the ``(n, 5)`` uint32 view of the codes) for sequence numbers from ``start_seq``.

    ``head`` is the first two words of every row: the 7 prefix digits and a ``"0"`` for the serial's
    first digit, which is added to it.
    """
    # MOD 97-10 over the 18-digit body: (prefix * 10**11 + serial) * 100 mod 97. The prefix term is
    # the same on every row, so the check digits depend only on serial % 97: one table per block.
    head_mod = prefix_value * _U_SERIAL_SCALE % _U_MOD
    check_words = np.empty(CHECK_MODULUS, dtype=np.uint32)
    for residue in range(CHECK_MODULUS):
        check = _U_CHECK_BASE - (head_mod + np.uint64(residue)) * _U_HUNDRED % _U_MOD
        check_words[residue] = np.uint32(np.uint64(_PAIR_CHARS[check]) << _U_HALF_WORD)
    word0 = head[0]
    word1 = np.uint64(head[1])
    serials = np.empty(CHUNK, dtype=np.uint64)
    left = np.empty(CHUNK, dtype=np.uint64)
    right = np.empty(CHUNK, dtype=np.uint64)
    n = words.shape[0]
    for base in range(0, n, CHUNK):
        count = min(CHUNK, n - base)
        _permute_chunk(serials[:count], start_seq + np.uint64(base), keys, left, right)
        for j in range(count):
            y = serials[j]
            hi = y // _U_MILLION  # serial digits 1-5
            lo = y - hi * _U_MILLION  # serial digits 6-11
            lead = hi // _U_TEN_THOUSAND  # digit 1
            quad = lo // _U_HUNDRED  # digits 6-9
            residue = (hi * _U_MILLION_MOD + lo) % _U_MOD
            row = base + j
            words[row, 0] = word0
            words[row, 1] = np.uint32(word1 + (lead << _U_LEAD_SHIFT))
            words[row, 2] = _QUAD_CHARS[hi - lead * _U_TEN_THOUSAND]  # digits 2-5
            words[row, 3] = _QUAD_CHARS[quad]
            words[row, 4] = np.uint32(_PAIR_CHARS[lo - quad * _U_HUNDRED]) | check_words[residue]


@njit(cache=True, nogil=True, error_model="numpy")
def _decrypt(y: np.uint64, keys: RoundKeys) -> np.uint64:
    """The inverse of ``_encrypt``: the Feistel rounds backwards."""
    left = y // _U_M
    right = y % _U_M
    for r in range(ROUNDS - 1, -1, -1):
        total = right + _U_M - _mix64(left ^ keys[r]) % _U_M  # (R - f(L)) % M, kept non-negative
        if total >= _U_M:
            total -= _U_M
        left, right = total, left
    return left * _U_M + right


@njit(cache=True, nogil=True, error_model="numpy")
def _unpermute_into(seqs: _Serials, serials: _Serials, keys: RoundKeys) -> None:
    for j in range(serials.shape[0]):
        x = _decrypt(serials[j], keys)
        while x >= _U_DOMAIN:  # cycle walking backwards, as in codegen.permute.unpermute
            x = _decrypt(x, keys)
        seqs[j] = x


@njit(cache=True, nogil=True, error_model="numpy")
def _unpermute_one(serial: int, keys: RoundKeys) -> np.uint64:
    x = _decrypt(np.uint64(serial), keys)
    while x >= _U_DOMAIN:
        x = _decrypt(x, keys)
    return x


def unpermute_one(serial: int, keys: RoundKeys) -> int:
    """The sequence number of one serial (``codegen.permute.unpermute``, compiled): under a microsecond, where the
    Python reference takes about 8. A package code is found by its sequence number on every first scan."""
    if not 0 <= serial < DOMAIN_SIZE:
        raise ValueError(f"serial must be in [0, 10**11), got {serial!r}")
    return int(_unpermute_one(serial, keys))


def unpermute_block(serials: _Serials, keys: RoundKeys) -> _Serials:
    """The sequence numbers of an array of serials (each in ``[0, 10**11)``), as a uint64 array of the same length."""
    serials = np.ascontiguousarray(serials, dtype=np.uint64)
    if serials.size and int(serials.max()) >= DOMAIN_SIZE:
        raise ValueError("serials must be in [0, 10**11)")
    seqs = np.empty_like(serials)
    _unpermute_into(seqs, serials, _checked_keys(keys))
    return seqs


def _checked_keys(keys: RoundKeys) -> RoundKeys:
    if not isinstance(keys, np.ndarray) or keys.dtype != np.uint64 or keys.shape != (ROUNDS,):
        raise ValueError(f"keys must be a uint64 array of {ROUNDS} round keys (see derive_round_keys)")
    return np.ascontiguousarray(keys)


def issue_block(code_type: int, region: str, start_seq: int, count: int, keys: RoundKeys) -> CodeBlock:
    """Codes for sequence numbers ``start_seq .. start_seq + count - 1``: a ``(count, 20)`` uint8 array.

    ``keys`` are the round keys of (``code_type``, ``region``) from ``derive_round_keys``.
    """
    if not 1 <= code_type <= 4:
        raise ValueError(f"code type must be 1..4, got {code_type!r}")
    if not (len(region) == REGION_LENGTH and region.isascii() and region.isdigit()):
        raise ValueError(f"region must be {REGION_LENGTH} ASCII digits, got {region!r}")
    if count < 0 or start_seq < 0 or start_seq + count > DOMAIN_SIZE:
        raise ValueError(f"sequence numbers {start_seq} + {count} do not fit in [0, 10**11)")
    keys = _checked_keys(keys)
    out = np.empty((count, CODE_LENGTH), dtype=np.uint8)
    if count:
        prefix_text = f"{code_type}{region}"
        head = np.frombuffer(f"{prefix_text}0".encode("ascii"), dtype=np.uint32)
        _issue_into(out.view(np.uint32), head, np.uint64(int(prefix_text)), np.uint64(start_seq), keys)
    return out


def _checked_block(block: CodeBlock) -> CodeBlock:
    if block.dtype != np.uint8 or block.ndim != 2 or block.shape[1] != CODE_LENGTH:
        raise ValueError(f"expected a (n, {CODE_LENGTH}) uint8 block, got {block.dtype} {block.shape}")
    return np.ascontiguousarray(block)


def block_to_strings(block: CodeBlock) -> list[str]:
    """The codes of a block as a list of 20-character strings."""
    # One newline-separated text split in C: faster than slicing the codes out one by one in Python.
    return block_to_bytes(block).decode("ascii").splitlines()


def block_to_bytes(block: CodeBlock, *, line_end: bytes = b"\n") -> bytes:
    """The codes of a block as one ASCII byte string, each code followed by ``line_end``.

    Ready to write as a label-printer file (use ``b"\\r\\n"`` for RFC 4180 CSV).
    """
    block = _checked_block(block)
    if not line_end:
        return block.tobytes()
    lines = np.empty((block.shape[0], CODE_LENGTH + len(line_end)), dtype=np.uint8)
    lines[:, :CODE_LENGTH] = block
    lines[:, CODE_LENGTH:] = np.frombuffer(line_end, dtype=np.uint8)
    return lines.tobytes()


def warm() -> None:
    """Compile (or load from the on-disk cache) the kernels, so that the first real call is fast."""
    keys = derive_round_keys(_WARM_SECRET, 1, _WARM_REGION)
    issue_block(1, _WARM_REGION, 0, 1, keys)
    unpermute_one(0, keys)
    unpermute_block(np.zeros(1, dtype=np.uint64), keys)
