"""The document query against the store itself: what it reads to build a code's document."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import asyncpg

from resolver import queries
from tests.conftest import Service
from tests.helpers import register_batch


def _event_partitions_read(plan: dict[str, Any]) -> set[str]:
    """The event partitions an EXPLAIN ANALYZE plan (JSON) actually scanned."""
    read: set[str] = set()
    name = plan.get("Relation Name", "")
    if name.startswith("events_") and plan.get("Actual Loops", 0) > 0:
        read.add(name)
    for child in plan.get("Plans", []):
        read |= _event_partitions_read(child)
    return read


async def test_the_chain_reads_only_the_event_partitions_of_the_batch_lifetime(
    service: Service, pg: asyncpg.Connection
) -> None:
    # Months long gone, as a store that has run for years keeps them: a new batch has no event there.
    await pg.fetchval("SELECT tracecode_ensure_event_partitions($1, $2)", dt.date(2020, 1, 1), 12)
    batch = await register_batch(service)
    code = batch["trace_code"]

    explained = await pg.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {queries.DOCUMENT_BY_CODE}", code)
    read = _event_partitions_read(json.loads(explained)[0]["Plan"])
    document = (await service.client.get(f"/api/v1/codes/{code}")).json()

    assert read and not {name for name in read if name.startswith("events_2020_")}
    assert [event["kind"] for event in document["chain"]] == ["inspection", "commissioning"]
