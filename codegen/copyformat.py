"""Rows of ``trace_codes`` in PostgreSQL's binary COPY format, built from a code block with NumPy.

A ``trace_codes`` row is ``(code char(20), code_type smallint, batch_id bigint, created_at timestamptz)``. In the
binary COPY format a row is an int16 field count, then each field as an int32 byte length and its value in network
byte order: the code as its 20 ASCII bytes (the binary form of ``char`` is its text), an int2, an int8, and the
timestamp as int8 microseconds since 2000-01-01 UTC. All rows of one issuance share type, batch and time, so a row
is a fixed 56-byte template with the code written into bytes 6..25: one vectorised copy per block, nothing per code
in Python. A stream is ``HEADER``, any number of ``CodeRowEncoder.rows`` payloads, then ``TRAILER``.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Callable, Sequence
from typing import Final

import numpy as np
from numpy.typing import NDArray

from codegen.format import BODY_LENGTH, CODE_LENGTH, REGION_LENGTH
from codegen.kernels import CodeBlock

CODE_COLUMNS: Final = ("code", "code_type", "batch_id", "created_at")
HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)  # signature, flags, no header extension
TRAILER: Final = struct.pack(">h", -1)

_ROW = struct.Struct(f">hi{CODE_LENGTH}sihiqiq")  # field count, then (length, value) for each of the 4 fields
ROW_BYTES: Final = _ROW.size  # 56
_CODE_OFFSET: Final = 2 + 4  # after the field count and the code's length
_PG_EPOCH: Final = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_US_PER_S: Final = 1_000_000
_INT16_MAX: Final = 2**15 - 1
_INT64_MAX: Final = 2**63 - 1
_ASCII_ZERO: Final = ord("0")
_SERIAL_AT: Final = 1 + REGION_LENGTH
_PREFIX_DIGITS: Final = 8  # of the serial: 8 bytes, one uint64 to compare


def timestamp_us(moment: dt.datetime) -> int:
    """``moment`` (timezone-aware) as PostgreSQL stores a timestamptz: microseconds since 2000-01-01 UTC."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("created_at must be timezone-aware")
    delta = moment - _PG_EPOCH
    return (delta.days * 86_400 + delta.seconds) * _US_PER_S + delta.microseconds


class CodeRowEncoder:
    """Binary COPY rows of codes of one type, batch and creation time: ``encoder.rows(block)``."""

    __slots__ = ("_template",)

    def __init__(self, *, code_type: int, batch_id: int, created_at: dt.datetime) -> None:
        if not 0 <= code_type <= _INT16_MAX:
            raise ValueError(f"code_type must fit a smallint, got {code_type!r}")
        if not 0 <= batch_id <= _INT64_MAX:
            raise ValueError(f"batch_id must fit a bigint, got {batch_id!r}")
        row = _ROW.pack(
            len(CODE_COLUMNS), CODE_LENGTH, b"0" * CODE_LENGTH, 2, code_type, 8, batch_id, 8, timestamp_us(created_at)
        )
        self._template: NDArray[np.uint8] = np.frombuffer(row, dtype=np.uint8)

    def __repr__(self) -> str:
        return f"CodeRowEncoder(template={self._template.tobytes()!r})"

    def rows(self, block: CodeBlock) -> bytes:
        """The rows of the codes of ``block`` (a ``(n, 20)`` uint8 array of ASCII digits), without header or trailer."""
        if block.dtype != np.uint8 or block.ndim != 2 or block.shape[1] != CODE_LENGTH:
            raise ValueError(f"expected a (n, {CODE_LENGTH}) uint8 block, got {block.dtype} {block.shape}")
        out = np.empty((block.shape[0], ROW_BYTES), dtype=np.uint8)
        out[:] = self._template
        out[:, _CODE_OFFSET : _CODE_OFFSET + CODE_LENGTH] = block
        return out.tobytes()


def sort_block(block: CodeBlock) -> CodeBlock:
    """The rows of ``block`` in ascending code order."""
    # The 18-digit body decides the order (the check digits follow from it) and fits an int64. Built a digit
    # column at a time: a (n, 18) int64 intermediate would take 144 bytes a code.
    keys = np.zeros(block.shape[0], dtype=np.int64)
    for column in block[:, :BODY_LENGTH].T:
        keys *= 10
        keys += column - _ASCII_ZERO
    return block[np.argsort(keys)]


def ordered_part(
    block_of: Callable[[int, int], CodeBlock], spans: Sequence[tuple[int, int]], part: int, parts: int
) -> CodeBlock:
    """Part ``part`` (0-based) of ``parts`` of the codes of ``spans``, in ascending code order.

    ``block_of(start_seq, count)`` makes the codes of a span; all must share one type and region (as the blocks of
    ``issue_block`` for one sequence do). Part k holds the codes whose serial is in the k-th of ``parts`` equal
    ranges of the serial space, so the parts one after the other are every code once, in code order, while
    memory holds one part: each part makes every span again (the kernel makes ~50 million codes a second) and
    keeps its share.

    Why code order: codes are a keyed permutation, so in sequence order they land all over the primary-key
    B-trees of the partitions. In code order each insert lands next to the one before, and every index page is
    visited once per COPY. Measured (bench/labels.py, 1,000,000 codes into a table of up to 10 million): about
    3 times faster than sequence order, and a quarter faster than sorting each part on its own.
    """
    if parts == 1:
        return sort_block(np.concatenate([block_of(*span) for span in spans]))
    low, high = _prefix_bound(part, parts), _prefix_bound(part + 1, parts)
    kept = []
    for span in spans:
        block = block_of(*span)
        prefix = np.ascontiguousarray(block[:, _SERIAL_AT : _SERIAL_AT + _PREFIX_DIGITS]).view(">u8").ravel()
        kept.append(block[(prefix >= low) & (prefix < high)])
    return sort_block(np.concatenate(kept))


def _prefix_bound(part: int, parts: int) -> int:
    """The first 8 serial digits where part ``part`` starts, as the big-endian integer of their ASCII bytes (which
    orders like the digits do); past the last part, one more than the largest."""
    if part >= parts:
        return int.from_bytes(b"9" * _PREFIX_DIGITS, "big") + 1
    return int.from_bytes(f"{10**_PREFIX_DIGITS * part // parts:0{_PREFIX_DIGITS}d}".encode(), "big")
