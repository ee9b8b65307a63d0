"""Issue a block of consecutive codes at once: the ``codegen.permute`` permutation compiled with numba.

``issue_block`` returns a ``(count, 20)`` uint8 array of ASCII digits, one code per row, equal bit for
bit to ``codegen.permute.issue_one`` for each sequence number. The kernel releases the GIL, so callers
may split a large block over threads. It is compiled on first use (and cached on disk); call ``warm()``
at start-up to pay that cost before the first request.

All kernel arithmetic is uint64, with every constant a ``np.uint64``: numba, like NumPy, promotes a
mix of int64 and uint64 to float64, which would silently lose digits.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numba import njit
from numpy.typing import NDArray

from codegen.format import BODY_LENGTH, CHECK_BASE, CHECK_MODULUS, CODE_LENGTH, REGION_LENGTH, SERIAL_LENGTH
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

CodeBlock = NDArray[np.uint8]

_PREFIX_LENGTH: Final = 1 + REGION_LENGTH  # type digit and region, the same on every row of a block
_ASCII_ZERO: Final = ord("0")
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
_U_HUNDRED = np.uint64(100)  # the two check-digit places
_U_TEN = np.uint64(10)
_U_ZERO_CHAR = np.uint64(_ASCII_ZERO)


@njit(cache=True, nogil=True)
def _mix64(z: np.uint64) -> np.uint64:
    z = (z ^ (z >> _U_SHIFT_1)) * _U_MULT_1
    z = (z ^ (z >> _U_SHIFT_2)) * _U_MULT_2
    return z ^ (z >> _U_SHIFT_3)


@njit(cache=True, nogil=True)
def _encrypt(x: np.uint64, keys: RoundKeys) -> np.uint64:
    left = x // _U_M
    right = x % _U_M
    for r in range(keys.shape[0]):
        total = left + _mix64(right ^ keys[r]) % _U_M
        if total >= _U_M:  # (left + f) % M without a second division: both terms are < M
            total -= _U_M
        left, right = right, total
    return left * _U_M + right


@njit(cache=True, nogil=True)
def _issue_into(
    out: CodeBlock, prefix: CodeBlock, prefix_value: np.uint64, start_seq: np.uint64, keys: RoundKeys
) -> None:
    # MOD 97-10 over the 18-digit body: (prefix * 10**11 + serial) * 100 mod 97, reduced term by term so
    # that nothing leaves uint64.
    head_mod = prefix_value * _U_SERIAL_SCALE % _U_MOD
    flat = out.reshape(-1)  # out is C-contiguous: a view, one code every CODE_LENGTH bytes
    for i in range(out.shape[0]):
        y = _encrypt(start_seq + np.uint64(i), keys)
        while y >= _U_DOMAIN:
            y = _encrypt(y, keys)
        check = _U_CHECK_BASE - (head_mod + y % _U_MOD) * _U_HUNDRED % _U_MOD
        row = i * CODE_LENGTH
        for j in range(_PREFIX_LENGTH):
            flat[row + j] = prefix[j]
        for j in range(BODY_LENGTH - 1, _PREFIX_LENGTH - 1, -1):
            quotient = y // _U_TEN
            flat[row + j] = np.uint8(y - quotient * _U_TEN + _U_ZERO_CHAR)
            y = quotient
        flat[row + CODE_LENGTH - 2] = np.uint8(check // _U_TEN + _U_ZERO_CHAR)
        flat[row + CODE_LENGTH - 1] = np.uint8(check % _U_TEN + _U_ZERO_CHAR)


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
        prefix = np.frombuffer(prefix_text.encode("ascii"), dtype=np.uint8)
        _issue_into(out, prefix, np.uint64(int(prefix_text)), np.uint64(start_seq), keys)
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
    """Compile (or load from the on-disk cache) the kernel, so that the first real block is fast."""
    issue_block(1, _WARM_REGION, 0, 1, derive_round_keys(_WARM_SECRET, 1, _WARM_REGION))
