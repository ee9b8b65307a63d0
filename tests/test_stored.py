"""Documents kept in Postgres (resolver.scan.stored, migration 0007): served only while current, loaded in groups."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from resolver import queries
from resolver.scan.stored import PostgresDocuments, build_fingerprint
from resolver.state import app_worker
from tests.conftest import Service
from tests.helpers import register_batch


def _documents(service: Service) -> PostgresDocuments:
    """A tier of its own on the service's pool: its counters count this test's loads only."""
    return PostgresDocuments(app_worker(service.app).pool)


async def _load(documents: PostgresDocuments, code: str) -> dict[str, Any]:
    loaded = await documents.load(code)
    assert loaded is not None
    document: dict[str, Any] = orjson.loads(loaded.document)
    return document


async def _batch_id(pg: asyncpg.Connection, code: str) -> int:
    batch_id: int = await pg.fetchval("SELECT id FROM batches WHERE trace_code = $1", code)
    return batch_id


async def _new_batch(service: Service, pg: asyncpg.Connection) -> tuple[str, int, PostgresDocuments]:
    """A new batch's code, its id, and a tier of its own."""
    code = (await register_batch(service))["trace_code"]
    return code, await _batch_id(pg, code), _documents(service)


async def test_a_built_document_is_stored_and_then_read_in_one_statement(service: Service) -> None:
    code = (await register_batch(service))["trace_code"]
    documents = _documents(service)

    first = await documents.load(code)
    service.query_log.queries.clear()
    second = await documents.load(code)

    assert first is not None and second is not None
    assert (documents.built, documents.stored) == (1, 1)
    assert second.document == first.document and second.batch_id == first.batch_id
    assert 0 < second.ttl_s <= 3_600
    assert service.query_log.queries == [queries.STORED_DOCUMENTS]


async def test_codes_asked_together_share_one_statement(service: Service) -> None:
    batch = await register_batch(service)
    codes = [batch["trace_code"], batch["long_code"]]
    documents = _documents(service)
    for code in codes:
        await documents.load(code)  # stored
    never_issued = "0" * 20
    service.query_log.queries.clear()

    loaded = await asyncio.gather(*(documents.load(code) for code in [*codes, never_issued]))

    assert loaded[0] is not None and loaded[1] is not None and loaded[2] is None
    assert loaded[0].document == loaded[1].document  # a batch code and its long form: one batch, one document
    assert service.query_log.count("FROM code_documents") == 1


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE batches SET status = 'recalled', recall_reason = '测试', recalled_at = now() WHERE id = $1",
        "UPDATE batches SET origin = '新产地' WHERE id = $1",
        """INSERT INTO events (event_time, batch_id, kind, biz_step, data)
           VALUES (now(), $1, 'labels', 'commissioning', '{}')""",
        "DELETE FROM events WHERE batch_id = $1 AND kind = 'inspection'",
        "UPDATE products SET name = '新品名' WHERE id = (SELECT product_id FROM batches WHERE id = $1)",
        "UPDATE producers SET contact = '0971-1111111' WHERE id = (SELECT producer_id FROM batches WHERE id = $1)",
        """INSERT INTO certifications (kind, number, producer_id, valid_from, valid_to)
           SELECT 'green', md5(random()::text), producer_id, current_date, current_date + 365
             FROM batches WHERE id = $1""",
    ],
    ids=["recall", "batch", "own-event", "own-event-removed", "product", "producer", "certification"],
)
async def test_a_change_of_what_the_document_shows_makes_the_stored_one_unservable(
    service: Service, pg: asyncpg.Connection, change: str
) -> None:
    code = (await register_batch(service))["trace_code"]
    documents = _documents(service)
    before = await _load(documents, code)

    await pg.execute(change, await _batch_id(pg, code))
    after = await _load(documents, code)

    assert documents.built == 2 and documents.stored == 0
    assert after != before


async def test_gate_scans_and_their_events_leave_the_stored_document_current(
    service: Service, pg: asyncpg.Connection
) -> None:
    code, batch_id, documents = await _new_batch(service, pg)
    await documents.load(code)

    # What an accepted gate scan writes to the batch and the chain (resolver.api.gate): its admitted quantity and
    # an event of the new entry, which shows only in the voucher's own document.
    await pg.execute("UPDATE batches SET admitted = admitted + 1 WHERE id = $1", batch_id)
    await pg.execute(
        "INSERT INTO events (event_time, batch_id, entry_id, kind, biz_step, data)"
        " VALUES (now(), $1, -1, 'market_entry', 'accepting', '{}')",
        batch_id,
    )
    await documents.load(code)

    assert (documents.built, documents.stored) == (1, 1)


async def test_a_document_built_before_a_change_committed_is_never_served(
    service: Service, pg: asyncpg.Connection
) -> None:
    """The race a cache fill loses elsewhere: the document is read, the batch changes, then the old one is stored."""
    code, batch_id, documents = await _new_batch(service, pg)
    stale = await pg.fetchrow(queries.DOCUMENT_BY_CODE, code)
    assert stale is not None

    await pg.execute(
        "UPDATE batches SET status = 'recalled', recall_reason = '测试', recalled_at = now() WHERE id = $1", batch_id
    )
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    await pg.execute(
        queries.STORE_DOCUMENTS, [code], [batch_id], [stale["document_version"]],
        [build_fingerprint()], [later], [b'{"status":"active"}'],
    )  # fmt: skip

    assert await pg.fetch(queries.STORED_DOCUMENTS, [code], build_fingerprint()) == []
    assert (await _load(documents, code))["status"] == "recalled"


async def test_expired_and_foreign_documents_are_not_served_and_expired_ones_are_deleted(
    service: Service, pg: asyncpg.Connection
) -> None:
    code = (await register_batch(service))["trace_code"]
    documents = _documents(service)
    await documents.load(code)
    build = build_fingerprint()

    assert len(await pg.fetch(queries.STORED_DOCUMENTS, [code], build)) == 1
    assert await pg.fetch(queries.STORED_DOCUMENTS, [code], "another release") == []
    await pg.execute("UPDATE code_documents SET valid_until = now() - interval '1 second' WHERE code = $1", code)
    assert await pg.fetch(queries.STORED_DOCUMENTS, [code], build) == []
    await pg.execute(queries.FORGET_EXPIRED_DOCUMENTS)
    assert await pg.fetchval("SELECT count(*) FROM code_documents WHERE code = $1", code) == 0


async def test_a_recall_is_seen_when_redis_has_lost_the_document(
    service: Service, pg: asyncpg.Connection, redis: aioredis.Redis
) -> None:
    """Through the API: the resolve after a recall misses Redis, and the stored document must not answer it."""
    batch = await register_batch(service)
    code = batch["trace_code"]
    assert (await service.client.get(f"/api/v1/codes/{code}")).json()["status"] == "active"
    assert await pg.fetchval("SELECT count(*) FROM code_documents WHERE code = $1", code) == 1

    recall = await service.client.post(
        f"/api/v1/batches/{code}/recall", json={"reason": "兽药残留超标"}, headers=service.admin_headers
    )
    assert recall.status_code == 200, recall.text
    await redis.flushdb()  # Redis restarted empty: the next resolve reaches Postgres
    answer = (await service.client.get(f"/api/v1/codes/{code}")).json()

    assert answer["status"] == "recalled"
    assert answer["recall"]["reason"] == "兽药残留超标"


async def test_a_certification_changed_or_removed_makes_the_stored_document_unservable(
    service: Service, pg: asyncpg.Connection
) -> None:
    code, batch_id, documents = await _new_batch(service, pg)
    certification_id = await pg.fetchval(
        """INSERT INTO certifications (kind, number, producer_id, valid_from, valid_to)
           SELECT 'organic', md5(random()::text), producer_id, current_date, current_date + 365
             FROM batches WHERE id = $1 RETURNING id""",
        batch_id,
    )
    shown = [await _load(documents, code)]

    await pg.execute("UPDATE certifications SET valid_to = valid_to + 1 WHERE id = $1", certification_id)
    shown.append(await _load(documents, code))
    await pg.execute("DELETE FROM certifications WHERE id = $1", certification_id)
    shown.append(await _load(documents, code))

    assert [len(document["certifications"]) for document in shown] == [1, 1, 0]
    assert shown[0]["certifications"] != shown[1]["certifications"]
    assert (documents.built, documents.stored) == (3, 0)
