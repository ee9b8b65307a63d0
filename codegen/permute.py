"""The keyed format-preserving permutation of a per-(type, region) sequence number into an 11-digit serial.

A balanced Feistel network over ``[0, M) x [0, M)`` with ``M * M >= 10**11``, made a permutation of
``[0, 10**11)`` by cycle walking (re-encrypt while the result is out of range). Round keys come from
HMAC-SHA256 of the secret over a message that names the code type and region, so every (type, region)
has its own permutation. This module is the plain-Python reference for one value; ``codegen.kernels``
does the same for a block and must agree with it bit for bit.

Changing anything here (constants, key derivation, round function) re-maps every sequence number, so
new codes would collide with codes already issued: treat it as frozen, and version the key label if it
ever has to change.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Final

import numpy as np
from numpy.typing import NDArray

from codegen.format import REGION_LENGTH, SERIAL_LIMIT, compose

ROUNDS: Final = 8
DOMAIN_SIZE: Final = SERIAL_LIMIT  # 10**11 sequence numbers and serials per (type, region)
HALF_MODULUS: Final = 316_228  # M, the smallest integer with M * M >= DOMAIN_SIZE: M * M = 100_000_147_984
MIN_SECRET_BYTES: Final = 16  # 128 bits
MASK64: Final = 0xFFFF_FFFF_FFFF_FFFF

# splitmix64 finaliser constants (Steele, Lea, Flood 2014; Stafford's "Mix13" variant).
MIX_SHIFT_1: Final = 30
MIX_MULT_1: Final = 0xBF58_476D_1CE4_E5B9
MIX_SHIFT_2: Final = 27
MIX_MULT_2: Final = 0x94D0_49BB_1331_11EB
MIX_SHIFT_3: Final = 31

_KEY_LABEL: Final = b"tracecode/codegen/permute/v1\x00"
_KEY_BYTES: Final = 8  # one uint64 per round, the first 8 bytes of its HMAC-SHA256

RoundKeys = NDArray[np.uint64]


def derive_round_keys(secret: bytes, code_type: int, region: str) -> RoundKeys:
    """The ``ROUNDS`` 64-bit round keys (read-only uint64 array) of the permutation for (type, region).

    Round ``r`` gets the first 8 bytes (big-endian) of HMAC-SHA256(secret, label || type || region || r);
    type and region have fixed widths, so the message is unambiguous.
    """
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the permutation secret must be at least {MIN_SECRET_BYTES} bytes")
    if not 1 <= code_type <= 4:
        raise ValueError(f"code type must be 1..4, got {code_type!r}")
    if not (len(region) == REGION_LENGTH and region.isascii() and region.isdigit()):
        raise ValueError(f"region must be {REGION_LENGTH} ASCII digits, got {region!r}")
    message = _KEY_LABEL + f"{code_type}{region}".encode("ascii")
    keys = np.array(
        [
            int.from_bytes(hmac.digest(secret, message + bytes([r]), "sha256")[:_KEY_BYTES], "big")
            for r in range(ROUNDS)
        ],
        dtype=np.uint64,
    )
    keys.flags.writeable = False
    return keys


def mix64(z: int) -> int:
    """The splitmix64 finaliser: a bijection of 64-bit integers with full avalanche."""
    z = ((z ^ (z >> MIX_SHIFT_1)) * MIX_MULT_1) & MASK64
    z = ((z ^ (z >> MIX_SHIFT_2)) * MIX_MULT_2) & MASK64
    return z ^ (z >> MIX_SHIFT_3)


def _round_ints(keys: RoundKeys | Sequence[int]) -> list[int]:
    ints = keys.tolist() if isinstance(keys, np.ndarray) else [int(k) for k in keys]
    if len(ints) != ROUNDS:
        raise ValueError(f"expected {ROUNDS} round keys, got {len(ints)}")
    return ints


def _encrypt(x: int, keys: list[int]) -> int:
    """One pass of the Feistel network on ``[0, M * M)``; round function ``mix64(R ^ k) % M``."""
    m = HALF_MODULUS
    left, right = divmod(x, m)
    for k in keys:
        left, right = right, (left + mix64(right ^ k) % m) % m
    return left * m + right


def _decrypt(y: int, keys: list[int]) -> int:
    m = HALF_MODULUS
    left, right = divmod(y, m)
    for k in reversed(keys):
        left, right = (right - mix64(left ^ k) % m) % m, left
    return left * m + right


def _check_in_domain(value: int, name: str) -> None:
    if not 0 <= value < DOMAIN_SIZE:
        raise ValueError(f"{name} must be in [0, 10**11), got {value!r}")


def permute(seq: int, keys: RoundKeys | Sequence[int]) -> int:
    """The 11-digit serial (``0 <= serial < 10**11``) of sequence number ``seq`` under ``keys``."""
    _check_in_domain(seq, "sequence number")
    ks = _round_ints(keys)
    y = _encrypt(seq, ks)
    while y >= DOMAIN_SIZE:  # cycle walking; taken for about 1.5 in a million inputs
        y = _encrypt(y, ks)
    return y


def unpermute(serial: int, keys: RoundKeys | Sequence[int]) -> int:
    """The sequence number that ``permute`` maps to ``serial`` (its inverse)."""
    _check_in_domain(serial, "serial")
    ks = _round_ints(keys)
    x = _decrypt(serial, ks)
    while x >= DOMAIN_SIZE:
        x = _decrypt(x, ks)
    return x


def issue_one(secret: bytes, code_type: int, region: str, seq: int) -> str:
    """The full 20-digit code for sequence number ``seq`` of (type, region)."""
    return compose(code_type, region, permute(seq, derive_round_keys(secret, code_type, region)))
