from __future__ import annotations

import asyncio
import secrets

import asyncpg

from codegen.format import is_valid, region_of, type_of
from resolver.api.issuer import SINGLE_BLOCK, CodeIssuer

BLOCK = 2_000


async def test_concurrent_issuers_get_disjoint_codes(database_url: str) -> None:
    region = f"99{secrets.randbelow(10_000):04d}"  # a sequence no other test uses (no real county is 99xxxx)
    issuer = CodeIssuer(b"a secret of at least sixteen bytes")
    pools = [await asyncpg.create_pool(database_url, min_size=2, max_size=4) for _ in range(2)]  # two "processes"
    try:
        batches = await asyncio.gather(
            *(issuer.issue(pools[i % 2], 4, region, BLOCK) for i in range(16)),
            *(issuer.issue(pools[i % 2], 4, region, 1) for i in range(50)),
        )
    finally:
        for pool in pools:
            await pool.close()

    codes = [code for batch in batches for code in batch]
    assert len(codes) == 16 * BLOCK + 50
    assert len(set(codes)) == len(codes)
    assert all(is_valid(c) and type_of(c) == 4 and region_of(c) == region for c in codes)


async def test_single_and_block_paths_agree(database_url: str) -> None:
    issuer = CodeIssuer(b"another secret, sixteen bytes+")

    block = issuer.codes(1, "630121", 1_000, 50)

    assert block == [issuer.codes(1, "630121", 1_000 + i, 1)[0] for i in range(50)]


async def test_codes_issued_one_at_a_time_follow_the_sequence(database_url: str) -> None:
    region = f"99{secrets.randbelow(10_000):04d}"
    issuer = CodeIssuer(b"a third secret, sixteen bytes+")
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        codes = [await issuer.one(pool, 3, region) for _ in range(SINGLE_BLOCK + 3)]
    finally:
        await pool.close()

    assert codes == issuer.codes(3, region, 0, SINGLE_BLOCK + 3)
