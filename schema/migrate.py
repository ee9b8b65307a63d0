"""Apply the versioned SQL migrations in order, once each, and keep partitions and regions current.

Running it twice is a no-op: applied versions are recorded in `schema_migrations`, partitions
are created only where missing, and the region table is reloaded only when the shipped file
changed. An advisory lock makes concurrent runs wait for each other.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass, field
from importlib import resources

import asyncpg

from schema.regions import load_regions, regions_csv_bytes

logger = logging.getLogger(__name__)

MIGRATION_LOCK_KEY = 0x7472_6163_6500  # "trace" as a number: one advisory lock for all migrators
EVENT_PARTITION_MONTHS_BEHIND = 1
EVENT_PARTITION_MONTHS_AHEAD = 3

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(slots=True)
class MigrationReport:
    applied: list[str] = field(default_factory=list)
    event_partitions_created: int = 0
    code_partitions: int = 0
    regions_loaded: int = 0


class MigrationError(RuntimeError):
    """An applied migration no longer matches its file, or a file is malformed."""


def list_migrations() -> list[Migration]:
    """The shipped migrations, ordered by their version prefix (`0001_core.sql` is version `0001`)."""
    folder = resources.files("schema") / "migrations"
    migrations = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = entry.name.split("_", 1)[0]
            if not version.isdigit():
                raise MigrationError(f"migration file {entry.name!r} does not start with a number")
            migrations.append(Migration(version=version, sql=entry.read_text(encoding="utf-8")))
    migrations.sort(key=lambda m: m.version)
    return migrations


async def migrate(conn: asyncpg.Connection, *, code_partitions: int, today: dt.date | None = None) -> MigrationReport:
    """Bring the database on `conn` up to date; see the module docstring."""
    report = MigrationReport()
    today = today or dt.date.today()
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(_CREATE_LEDGER)
        applied = {
            r["version"]: r["checksum"] for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        for migration in list_migrations():
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise MigrationError(f"migration {migration.version} changed after it was applied")
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                    migration.version,
                    migration.checksum,
                )
            report.applied.append(migration.version)
            logger.info("applied migration %s", migration.version)
        report.code_partitions = await conn.fetchval("SELECT tracecode_create_code_partitions($1)", code_partitions)
        report.event_partitions_created = await ensure_event_partitions(conn, today=today)
        report.regions_loaded = await _load_regions(conn)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return report


async def ensure_event_partitions(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, *, today: dt.date
) -> int:
    """Create the monthly event partitions around `today` that are missing; return how many were made."""
    first_month = _add_months(today.replace(day=1), -EVENT_PARTITION_MONTHS_BEHIND)
    months = EVENT_PARTITION_MONTHS_BEHIND + 1 + EVENT_PARTITION_MONTHS_AHEAD
    created: int = await conn.fetchval("SELECT tracecode_ensure_event_partitions($1, $2)", first_month, months)
    return created


def _add_months(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + day.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


async def _load_regions(conn: asyncpg.Connection) -> int:
    checksum = hashlib.sha256(regions_csv_bytes()).hexdigest()
    stored = await conn.fetchval("SELECT value FROM schema_settings WHERE name = 'regions_checksum'")
    if stored == checksum:
        return 0
    regions = load_regions()
    records = [(r.code, r.name, r.level, r.parent_code, r.prefecture_code, r.province_code) for r in regions]
    async with conn.transaction():
        await conn.execute(
            "CREATE TEMP TABLE regions_in (LIKE regions INCLUDING DEFAULTS) ON COMMIT DROP",
        )
        await conn.copy_records_to_table("regions_in", records=records)
        # Parents before children: level order keeps the self-reference satisfied row by row.
        await conn.execute(
            """
            INSERT INTO regions AS r (code, name, level, parent_code, prefecture_code, province_code)
            SELECT code, name, level, parent_code, prefecture_code, province_code FROM regions_in ORDER BY level, code
            ON CONFLICT (code) DO UPDATE SET name = excluded.name, level = excluded.level,
                parent_code = excluded.parent_code, prefecture_code = excluded.prefecture_code,
                province_code = excluded.province_code
            """
        )
        await conn.execute(
            """
            INSERT INTO schema_settings (name, value) VALUES ('regions_checksum', $1)
            ON CONFLICT (name) DO UPDATE SET value = excluded.value
            """,
            checksum,
        )
    logger.info("loaded %d regions", len(records))
    return len(records)
