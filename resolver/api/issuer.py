"""Issue trace codes: reserve a range of the per-(type, region) sequence in Postgres, permute it into codes.

A reservation is one atomic `UPDATE ... RETURNING` in its own short transaction, so concurrent
issuers on any number of processes get disjoint ranges and nobody holds the sequence row while
writing codes. A range whose codes are never written (a failed request) is a harmless gap.
"""

from __future__ import annotations

import asyncio
from functools import lru_cache

import asyncpg

from codegen.format import compose
from codegen.kernels import block_to_strings, issue_block
from codegen.permute import RoundKeys, derive_round_keys, permute
from resolver import queries

KEY_CACHE_SIZE = 4_096  # (type, region) pairs whose round keys stay derived
SINGLE_BLOCK = 64  # sequence numbers reserved at once for codes issued one at a time (vouchers, trades)


class CodeIssuer:
    """Codes of one secret: `await issuer.issue(pool, code_type, region, count)`."""

    __slots__ = ("_blocks", "_keys")

    def __init__(self, secret: bytes) -> None:
        self._blocks: dict[tuple[int, str], list[str]] = {}  # (type, region) -> codes reserved here, last first

        @lru_cache(maxsize=KEY_CACHE_SIZE)
        def keys(code_type: int, region: str) -> RoundKeys:
            return derive_round_keys(secret, code_type, region)

        self._keys = keys

    def __repr__(self) -> str:
        return f"CodeIssuer(keys_cached={self._keys.cache_info().currsize})"

    async def reserve(self, pool: asyncpg.Pool, code_type: int, region: str, count: int) -> int:
        """The first of `count` sequence numbers now owned by the caller alone."""
        start: int = await pool.fetchval(queries.RESERVE_SEQUENCE, code_type, region, count)
        return start

    def codes(self, code_type: int, region: str, start_seq: int, count: int) -> list[str]:
        """The codes of sequence numbers `start_seq` .. `start_seq + count - 1`."""
        keys = self._keys(code_type, region)
        if count == 1:
            return [compose(code_type, region, permute(start_seq, keys))]
        return block_to_strings(issue_block(code_type, region, start_seq, count, keys))

    async def issue(self, pool: asyncpg.Pool, code_type: int, region: str, count: int) -> list[str]:
        start = await self.reserve(pool, code_type, region, count)
        return self.codes(code_type, region, start, count)

    async def one(self, pool: asyncpg.Pool, code_type: int, region: str) -> str:
        """One code from a block this process reserved: a Postgres round trip every SINGLE_BLOCK codes only.

        The block's codes are made at once by the kernel, in a thread (the kernel may still be loading at
        start-up, and must not hold up the event loop then): ~1 us a code instead of ~30 us for one alone.
        Codes of a block left unused (the process stops, a scan is rejected) are gaps, never duplicates.
        """
        codes = self._blocks.get((code_type, region))
        if not codes:
            start = await self.reserve(pool, code_type, region, SINGLE_BLOCK)
            codes = await asyncio.to_thread(self.codes, code_type, region, start, SINGLE_BLOCK)
            codes.reverse()
            self._blocks[(code_type, region)] = codes
        return codes.pop()
