from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from schema.migrate import list_migrations, migrate
from tests.conftest import Servers, create_database, drop_database


@pytest.fixture
async def fresh(servers: Servers) -> AsyncIterator[asyncpg.Connection]:
    name = f"tracecode_migrate_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(await create_database(servers, name))
    yield conn
    await conn.close()
    await drop_database(servers, name)


async def _partitions(conn: asyncpg.Connection, parent: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = $1::regclass ORDER BY c.relname",
        parent,
    )
    return [r["relname"] for r in rows]


async def test_migrate_twice_is_a_noop(fresh: asyncpg.Connection) -> None:
    first = await migrate(fresh, code_partitions=16)
    tables_before = await fresh.fetchval("SELECT count(*) FROM pg_class WHERE relkind IN ('r', 'p')")

    second = await migrate(fresh, code_partitions=16)

    assert first.applied == [m.version for m in list_migrations()]
    assert first.regions_loaded > 3_000
    assert second.applied == []
    assert second.regions_loaded == 0 and second.event_partitions_created == 0
    assert await fresh.fetchval("SELECT count(*) FROM pg_class WHERE relkind IN ('r', 'p')") == tables_before


async def test_partitions_exist(fresh: asyncpg.Connection) -> None:
    today = dt.date(2026, 11, 29)

    await migrate(fresh, code_partitions=16, today=today)

    assert len(await _partitions(fresh, "trace_codes")) == 16
    assert await _partitions(fresh, "events") == [
        "events_2026_10", "events_2026_11", "events_2026_12", "events_2027_01", "events_2027_02"
    ]  # fmt: skip


async def test_partition_count_is_a_setting_kept_once_made(fresh: asyncpg.Connection) -> None:
    await migrate(fresh, code_partitions=4)
    report = await migrate(fresh, code_partitions=32)

    assert report.code_partitions == 4
    assert len(await _partitions(fresh, "trace_codes")) == 4


async def test_regions_roll_up(fresh: asyncpg.Connection) -> None:
    await migrate(fresh, code_partitions=2)

    row = await fresh.fetchrow("SELECT name, level, prefecture_code, province_code FROM regions WHERE code = '632802'")

    assert row is not None
    assert dict(row) == {"name": "德令哈市", "level": 3, "prefecture_code": "632800", "province_code": "630000"}


async def test_changed_migration_is_refused(fresh: asyncpg.Connection) -> None:
    await migrate(fresh, code_partitions=2)
    await fresh.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = '0001'")

    with pytest.raises(RuntimeError, match="0001 changed"):
        await migrate(fresh, code_partitions=2)
