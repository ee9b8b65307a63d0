"""Apply the versioned SQL migrations in order, once each, and keep partitions and regions current.

Running it twice is a no-op: applied versions are recorded in `schema_migrations`, partitions
are created only where missing, and the region table is reloaded only when the shipped file
changed. An advisory lock makes concurrent runs wait for each other. A migration that moves data
the database cannot compute itself has a data step here, run in the same transaction as its SQL
(0009: package codes to ranges, which needs the permutation's secret).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import asyncpg
import numpy as np

from codegen.format import CodeType
from codegen.kernels import unpermute_block
from codegen.permute import derive_round_keys
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


async def migrate(
    conn: asyncpg.Connection,
    *,
    code_partitions: int,
    secret: bytes | None = None,
    today: dt.date | None = None,
    until: str | None = None,
) -> MigrationReport:
    """Bring the database on `conn` up to date; see the module docstring.

    `secret` is the permutation's key (TRACECODE_SECRET): a database with package codes issued before 0009 needs
    it to move them to ranges. `until` stops after that version (tests of a data step start from the version
    before it)."""
    report = MigrationReport()
    today = today or dt.date.today()
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(_CREATE_LEDGER)
        applied = {
            r["version"]: r["checksum"] for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        for migration in list_migrations():
            if until is not None and migration.version > until:
                break
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise MigrationError(f"migration {migration.version} changed after it was applied")
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                data_step = _DATA_STEPS.get(migration.version)
                if data_step is not None:
                    await data_step(conn, secret)
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


PACKAGE_ROWS_PER_FETCH = 100_000


async def move_package_codes_to_ranges(conn: asyncpg.Connection, secret: bytes | None) -> None:
    """0009's data step: the package codes in `trace_codes` become ranges of `code_ranges`, their scan counts rows
    of `package_scans`, and their rows go.

    Each code's sequence number is its serial unpermuted with `secret`; the numbers of one batch that follow
    each other make one range (a labels request reserved them together). With another secret than the codes were
    issued with, the numbers come out scattered over 10**11, beyond what `code_sequences` ever handed out: that
    is refused, and nothing is moved.
    """
    found = await conn.fetchval("SELECT count(*) FROM trace_codes WHERE code_type = $1", CodeType.PACKAGE)
    if not found:
        return
    if secret is None:
        raise MigrationError(f"{found} package codes must move to ranges, which needs TRACECODE_SECRET")
    codes = await _fetch_all(
        conn, "SELECT code::text, batch_id, created_at FROM trace_codes WHERE code_type = $1", CodeType.PACKAGE
    )
    scans = await _fetch_all(
        conn, "SELECT code, count, first_at FROM scan_counts WHERE code LIKE '4%' AND length(code) = 20"
    )
    seqs = _sequence_numbers(secret, [r["code"] for r in codes], [r["code"] for r in scans])
    reserved = await conn.fetch("SELECT region_code, next_seq FROM code_sequences WHERE code_type = $1", 4)
    issued: dict[str, int] = {row["region_code"]: row["next_seq"] for row in reserved}
    beyond = [code for code, (region, seq) in seqs.items() if seq >= issued.get(region, 0)]
    if beyond:
        raise MigrationError(
            f"{len(beyond)} package codes (e.g. {beyond[0]}) do not come from this TRACECODE_SECRET: their sequence "
            "numbers were never reserved. Migrate with the secret the codes were issued with."
        )
    ranges = _ranges([(*seqs[r["code"]], r["batch_id"], r["created_at"]) for r in codes])
    await conn.copy_records_to_table(
        "code_ranges",
        records=ranges,
        columns=("code_type", "region_code", "first_seq", "count", "batch_id", "created_at"),
    )
    await conn.executemany(
        "INSERT INTO package_scans (region_code, seq, count, first_at) VALUES ($1, $2, $3, $4)",
        [(*seqs[r["code"]], r["count"], r["first_at"]) for r in scans if r["code"] in seqs],
    )
    await conn.execute("DELETE FROM scan_counts WHERE code = ANY ($1::text[])", [r["code"] for r in scans])
    await conn.execute("DELETE FROM trace_codes WHERE code_type = $1", CodeType.PACKAGE)
    logger.info("moved %d package codes to %d ranges, and %d scan counts", len(codes), len(ranges), len(scans))


async def _fetch_all(conn: asyncpg.Connection, query: str, *args: Any) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = []
    cursor = await conn.cursor(query, *args)
    while chunk := await cursor.fetch(PACKAGE_ROWS_PER_FETCH):
        rows += chunk
    return rows


def _sequence_numbers(secret: bytes, *code_lists: list[str]) -> dict[str, tuple[str, int]]:
    """(region, sequence number) of each package code, unpermuted a region at a time."""
    by_region: dict[str, list[str]] = {}
    for codes in code_lists:
        for code in codes:
            by_region.setdefault(code[1:7], []).append(code)
    found: dict[str, tuple[str, int]] = {}
    for region, codes in by_region.items():
        serials = np.array([int(code[7:18]) for code in codes], dtype=np.uint64)
        keys = derive_round_keys(secret, CodeType.PACKAGE, region)
        for code, seq in zip(codes, unpermute_block(serials, keys).tolist(), strict=True):
            found[code] = (region, seq)
    return found


def _ranges(rows: list[tuple[str, int, int, dt.datetime]]) -> list[tuple[int, str, int, int, int, dt.datetime]]:
    """Rows of code_ranges from (region, sequence number, batch, created_at) of codes: runs of one batch's numbers."""
    ranges: list[tuple[int, str, int, int, int, dt.datetime]] = []
    for region, seq, batch_id, created_at in sorted(rows, key=lambda row: (row[0], row[1])):
        if ranges:
            _, last_region, first, count, last_batch, since = ranges[-1]
            if (last_region, last_batch, first + count) == (region, batch_id, seq):
                ranges[-1] = (CodeType.PACKAGE, region, first, count + 1, batch_id, min(since, created_at))
                continue
        ranges.append((CodeType.PACKAGE, region, seq, 1, batch_id, created_at))
    return ranges


_DATA_STEPS = {"0009": move_package_codes_to_ranges}


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
