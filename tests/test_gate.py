from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import time
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from starlette.requests import Request
from starlette.types import Message

from cache import keys
from codegen.format import compose, is_valid, region_of, type_of
from resolver import queries
from resolver.api.gate import (
    VOUCHER_BLOCK,
    VOUCHER_LOW,
    GateScanIn,
    GateScanRoute,
    GroupCommit,
    PendingScan,
    VoucherSupply,
    _request_hash,
    _scan_hash,
)
from resolver.api.issuer import CodeIssuer
from resolver.app import create_app
from resolver.edge.bodies import MAX_BODY_BYTES, read_json
from resolver.edge.problems import Problem
from resolver.ops.settings import Settings
from resolver.state import app_worker
from tests.conftest import QueryLog, Service
from tests.helpers import (
    issue_labels,
    next_package_code,
    register_batch,
    register_producer,
    serving,
    subprocess_env,
)


async def make_market(service: Service, *, region: str = "630103", categories: list[str] | None = None) -> int:
    response = await service.client.post(
        "/api/v1/markets",
        json={"name": f"西宁海湖农产品批发市场{secrets.token_hex(2)}", "region_code": region,
              "admitted_categories": categories},
        headers=service.admin_headers,
    )  # fmt: skip
    assert response.status_code == 201, response.text
    market_id: int = response.json()["id"]
    return market_id


async def token(service: Service, role: str, scope: str) -> dict[str, str]:
    response = await service.client.post(
        "/api/v1/tokens", json={"role": role, "scope": scope}, headers=service.admin_headers
    )
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


async def scan(
    service: Service, gate: dict[str, str], code: str, quantity: float = 10, *, key: str | None = None,
    unit: str = "kg",
) -> dict[str, Any]:  # fmt: skip
    response = await service.client.post(
        "/api/v1/gate/scans",
        json={"code": code, "quantity": quantity, "unit": unit, "idempotency_key": key or secrets.token_hex(8)},
        headers=gate,
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def reasons(answer: dict[str, Any]) -> list[str]:
    return [r["code"] for r in answer["reasons"]]


@pytest.fixture
async def gate(service: Service) -> dict[str, str]:
    return await token(service, "gate", f"{await make_market(service)}/north-1")


async def test_accepted_scan_issues_a_voucher_that_resolves(service: Service, gate: dict[str, str]) -> None:
    batch = await register_batch(service)

    answer = await scan(service, gate, batch["trace_code"], 50)

    assert answer["decision"] == "accept" and answer["reasons"] == []
    voucher = answer["voucher_code"]
    assert is_valid(voucher) and type_of(voucher) == 3 and region_of(voucher) == "630103"
    doc = (await service.client.get(f"/api/v1/codes/{voucher}")).json()
    assert doc["type"] == "market_entry"
    assert doc["batch"]["trace_code"] == batch["trace_code"]
    entry = doc["chain"][-1]
    assert entry["kind"] == "market_entry" and entry["biz_step"] == "accepting"
    assert entry["voucher_code"] == voucher and entry["quantity"] == 50 and entry["gate"] == "north-1"


async def test_package_label_codes_are_admitted_like_their_batch(service: Service, gate: dict[str, str]) -> None:
    batch = await register_batch(service)
    first, *_, last = await issue_labels(service, batch["trace_code"], 3)
    after_last = next_package_code(service, last)

    answers = [await scan(service, gate, code, 1) for code in (first, last, after_last)]

    assert [answer["decision"] for answer in answers] == ["accept", "accept", "reject"]
    assert reasons(answers[2]) == ["unknown_code"]
    entries = await app_worker(service.app).pool.fetch(
        "SELECT batch_id, scanned_code FROM gate_entries WHERE scanned_code = ANY ($1::text[])", [first, last]
    )
    assert sorted((r["batch_id"], r["scanned_code"]) for r in entries) == sorted(
        [(batch["batch_id"], first), (batch["batch_id"], last)]
    )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        pytest.param({"inspection": {"result": "fail", "inspected_on": "2026-01-02"}}, ["inspection_failed"],
                     id="inspection_failed"),
        pytest.param({"certificate": None}, ["no_certificate"], id="no_certificate"),
        pytest.param({"produced_on": "2025-01-01", "expires_on": "2025-06-01"}, ["expired"], id="expired"),
        pytest.param({"certificate": None, "expires_on": "2025-06-01", "produced_on": "2025-01-01"},
                     ["expired", "no_certificate"], id="several"),
    ],
)  # fmt: skip
async def test_batch_state_reasons(
    service: Service, gate: dict[str, str], overrides: dict[str, Any], expected: list[str]
) -> None:
    batch = await register_batch(service, **overrides)

    answer = await scan(service, gate, batch["trace_code"])

    assert answer["decision"] == "reject" and answer["voucher_code"] is None
    assert reasons(answer) == expected
    assert all(r["message"] for r in answer["reasons"])


async def test_unknown_malformed_and_voucher_codes_are_rejected(service: Service, gate: dict[str, str]) -> None:
    accepted = await scan(service, gate, (await register_batch(service))["trace_code"])

    never_issued = compose(1, "630121", secrets.randbelow(10**11))
    unknown = await scan(service, gate, never_issued)
    malformed = await scan(service, gate, never_issued[:-1] + str((int(never_issued[-1]) + 1) % 10))
    voucher = await scan(service, gate, accepted["voucher_code"])

    assert reasons(unknown) == ["unknown_code"] and reasons(malformed) == ["malformed_code"]
    assert reasons(voucher) == ["voucher_not_admissible"]
    assert "格式错误" in malformed["reasons"][0]["message"]


async def test_market_restriction_and_unit(service: Service) -> None:
    fish_only = await token(service, "gate", f"{await make_market(service, categories=['cold_water_fish'])}/1")
    batch = await register_batch(service)  # yak meat

    answer = await scan(service, fish_only, batch["trace_code"], unit="斤")

    assert reasons(answer) == ["not_for_this_market", "unit_mismatch"]


async def test_quantity_is_counted_across_gates(service: Service) -> None:
    market = await make_market(service)
    north, south = await token(service, "gate", f"{market}/north"), await token(service, "gate", f"{market}/south")
    batch = await register_batch(service, quantity=100)

    first = await scan(service, north, batch["trace_code"], 60)
    second = await scan(service, south, batch["trace_code"], 60)
    third = await scan(service, south, batch["trace_code"], 40)

    assert first["decision"] == "accept"
    assert reasons(second) == ["quantity_exceeds_batch"]
    assert third["decision"] == "accept"


async def test_exact_admission_under_32_concurrent_scans(
    service: Service, second_service: Service, gate: dict[str, str]
) -> None:
    batch = await register_batch(service, quantity=8)
    workers = [service, second_service]

    answers = await asyncio.gather(*(scan(workers[i % 2], gate, batch["trace_code"], 1) for i in range(32)))

    assert sum(a["decision"] == "accept" for a in answers) == 8
    assert all(reasons(a) == ["quantity_exceeds_batch"] for a in answers if a["decision"] == "reject")
    assert len({a["voucher_code"] for a in answers if a["voucher_code"]}) == 8
    async with app_worker(service.app).pool.acquire() as conn:
        assert await conn.fetchval("SELECT admitted FROM batches WHERE id = $1", batch["batch_id"]) == 8
        assert await conn.fetchval("SELECT count(*) FROM gate_entries WHERE batch_id = $1", batch["batch_id"]) == 8


async def test_same_key_same_answer_nothing_written_twice_even_racing(
    service: Service, second_service: Service, gate: dict[str, str]
) -> None:
    batch = await register_batch(service)
    key = secrets.token_hex(8)

    racing = await asyncio.gather(
        *(scan(w, gate, batch["trace_code"], 5, key=key) for w in [service, second_service] * 4)
    )
    later = await scan(service, gate, batch["trace_code"], 5, key=key)

    assert len({a["voucher_code"] for a in [*racing, later]}) == 1
    assert sum(not a["replay"] for a in racing) == 1 and later["replay"]
    async with app_worker(service.app).pool.acquire() as conn:
        assert await conn.fetchval("SELECT admitted FROM batches WHERE id = $1", batch["batch_id"]) == 5
        assert await conn.fetchval("SELECT count(*) FROM gate_entries WHERE batch_id = $1", batch["batch_id"]) == 1


async def test_same_key_with_other_content_is_refused(service: Service, gate: dict[str, str]) -> None:
    batch = await register_batch(service)
    await scan(service, gate, batch["trace_code"], 5, key="k-1")

    response = await service.client.post(
        "/api/v1/gate/scans",
        json={"code": batch["trace_code"], "quantity": 6, "unit": "kg", "idempotency_key": "k-1"},
        headers=gate,
    )

    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"


async def test_scopes(service: Service, gate: dict[str, str]) -> None:
    batch = await register_batch(service)
    producer = await token(service, "producer", await register_producer(service))
    body = {"code": batch["trace_code"], "quantity": 1, "unit": "kg", "idempotency_key": "x"}

    missing = await service.client.post("/api/v1/gate/scans", json=body)
    wrong_role = await service.client.post("/api/v1/gate/scans", json=body, headers=producer)
    no_market = await service.client.post(
        "/api/v1/tokens", json={"role": "gate", "scope": "999999999/1"}, headers=service.admin_headers
    )
    other_county = await token(service, "regulator", "632800")
    recall = await service.client.post(
        f"/api/v1/batches/{batch['trace_code']}/recall", json={"reason": "测试"}, headers=other_county
    )

    assert missing.status_code == 401
    assert wrong_role.status_code == 403
    assert no_market.status_code == 422
    assert recall.status_code == 403


async def test_revoked_token_is_refused_at_once(service: Service) -> None:
    market = await make_market(service)
    created = await service.client.post(
        "/api/v1/tokens", json={"role": "gate", "scope": f"{market}/1"}, headers=service.admin_headers
    )
    gate = {"Authorization": f"Bearer {created.json()['token']}"}
    body = {"code": "16301210000000000097", "quantity": 1, "unit": "kg", "idempotency_key": "r"}
    assert (await service.client.post("/api/v1/gate/scans", json=body, headers=gate)).status_code == 200

    revoked = await service.client.delete(f"/api/v1/tokens/{created.json()['id']}", headers=service.admin_headers)
    after = await service.client.post("/api/v1/gate/scans", json=body, headers=gate)

    assert revoked.status_code == 204
    assert after.status_code == 401


async def test_recall_takes_effect_for_every_code_of_the_batch(service: Service, gate: dict[str, str]) -> None:
    batch = await register_batch(service)
    voucher = (await scan(service, gate, batch["trace_code"], 10))["voucher_code"]
    for code in (batch["trace_code"], voucher):  # both documents cached as active
        assert (await service.client.get(f"/api/v1/codes/{code}")).json()["status"] == "active"
    regulator = await token(service, "regulator", "630100")  # 西宁市 covers 大通县

    response = await service.client.post(
        f"/api/v1/batches/{batch['trace_code']}/recall", json={"reason": "兽药残留超标"}, headers=regulator
    )

    assert response.status_code == 200, response.text
    assert response.json()["caches_invalidated"] is True
    for code in (batch["trace_code"], voucher):
        doc = (await service.client.get(f"/api/v1/codes/{code}")).json()
        assert doc["status"] == "recalled" and doc["recall"]["reason"] == "兽药残留超标"
        assert doc["chain"][-1]["kind"] == "recall" and doc["chain"][-1]["disposition"] == "recalled"
    page = await service.client.get(f"/t/{batch['trace_code']}", headers={"Accept": "text/html"})
    assert "已被召回" in page.text and "兽药残留超标" in page.text and "status bad" in page.text
    assert reasons(await scan(service, gate, batch["trace_code"], 1)) == ["recalled"]
    again = await service.client.post(
        f"/api/v1/batches/{batch['trace_code']}/recall", json={"reason": "again"}, headers=regulator
    )
    assert again.json()["already_recalled"] is True and again.json()["reason"] == "兽药残留超标"


async def test_circulation_code_shows_the_chain_back_to_the_producer(service: Service, gate: dict[str, str]) -> None:
    batch = await register_batch(service)
    other = await scan(service, gate, batch["trace_code"], 30)  # a second entry, another branch of the chain
    voucher = (await scan(service, gate, batch["trace_code"], 100))["voucher_code"]
    trade_body = {"voucher_code": voucher, "buyer": {"name": "城中区刘记牛羊肉店"}, "quantity": 20, "unit": "kg",
                  "idempotency_key": "t-1"}  # fmt: skip

    traded = await service.client.post("/api/v1/trades", json=trade_body, headers=gate)
    replay = await service.client.post("/api/v1/trades", json=trade_body, headers=gate)
    too_much = await service.client.post(
        "/api/v1/trades", json={**trade_body, "quantity": 81, "idempotency_key": "t-2"}, headers=gate
    )

    assert traded.status_code == 201, traded.text
    assert replay.status_code == 200 and replay.json()["circulation_code"] == traded.json()["circulation_code"]
    assert too_much.status_code == 409 and too_much.json()["code"] == "quantity_exceeds_entry"
    code = traded.json()["circulation_code"]
    assert type_of(code) == 2
    doc = (await service.client.get(f"/api/v1/codes/{code}")).json()
    assert doc["type"] == "circulation_batch"
    assert doc["producer"]["credit_code"] == (await _credit_code(service, batch["batch_id"]))
    assert [e["kind"] for e in doc["chain"]] == ["inspection", "commissioning", "market_entry", "trade"]
    times = [dt.datetime.fromisoformat(e["at"]) for e in doc["chain"]]
    assert times == sorted(times)
    assert doc["chain"][2]["voucher_code"] == voucher != other["voucher_code"]
    assert doc["chain"][3]["buyer"] == "城中区刘记牛羊肉店"


async def test_entries_and_trades_change_no_existing_document(
    service: Service, gate: dict[str, str], redis: aioredis.Redis
) -> None:
    """A package or batch code shows the batch's own chain, a voucher its entry, a circulation code its trade:
    so busy gates neither grow every package's chain nor drop its cached document."""
    batch = await register_batch(service)
    code = batch["trace_code"]
    before = (await service.client.get(f"/api/v1/codes/{code}")).json()
    cached = await redis.get(keys.document_key(code))
    assert cached is not None

    first = (await scan(service, gate, code, 30))["voucher_code"]
    await scan(service, gate, code, 20)
    trade_body = {"voucher_code": first, "buyer": {"name": "城东区马记清真肉店"}, "quantity": 5, "unit": "kg",
                  "idempotency_key": secrets.token_hex(8)}  # fmt: skip
    traded = await service.client.post("/api/v1/trades", json=trade_body, headers=gate)
    assert traded.status_code == 201, traded.text

    assert await redis.get(keys.document_key(code)) == cached  # not dropped, not rebuilt
    after = (await service.client.get(f"/api/v1/codes/{code}")).json()
    assert (
        [e["kind"] for e in after["chain"]] == [e["kind"] for e in before["chain"]] == ["inspection", "commissioning"]
    )
    voucher = (await service.client.get(f"/api/v1/codes/{first}")).json()
    assert [e["kind"] for e in voucher["chain"]] == ["inspection", "commissioning", "market_entry"]
    assert voucher["chain"][-1]["voucher_code"] == first
    circulation = (await service.client.get(f"/api/v1/codes/{traded.json()['circulation_code']}")).json()
    assert [e["kind"] for e in circulation["chain"]] == ["inspection", "commissioning", "market_entry", "trade"]


async def _credit_code(service: Service, batch_id: int) -> str:
    async with app_worker(service.app).pool.acquire() as conn:
        code: str = await conn.fetchval(
            "SELECT p.credit_code FROM batches b JOIN producers p ON p.id = b.producer_id WHERE b.id = $1", batch_id
        )
    return code


async def test_recall_is_seen_by_a_second_server_process_within_one_second(
    service: Service, settings: Settings
) -> None:
    batch = await register_batch(service)
    env = subprocess_env(DATABASE_URL=settings.database_url, REDIS_URL=settings.redis_url,
                         TRACECODE_SECRET=settings.secret.decode())  # fmt: skip
    with serving(env, "--workers", "2") as other:
        async with httpx.AsyncClient(base_url=other) as client:
            for _ in range(4):  # warm: cached as active, whichever worker answers
                assert (await client.get(f"/api/v1/codes/{batch['trace_code']}")).json()["status"] == "active"

            recalled = await service.client.post(
                f"/api/v1/batches/{batch['trace_code']}/recall", json={"reason": "抽检不合格"},
                headers=service.admin_headers,
            )  # fmt: skip
            returned_at = time.monotonic()
            seen: list[tuple[float, str]] = []
            while time.monotonic() - returned_at < 2.0:
                status = (await client.get(f"/api/v1/codes/{batch['trace_code']}")).json()["status"]
                seen.append((time.monotonic() - returned_at, status))

    assert recalled.status_code == 200
    last_active = max((at for at, status in seen if status == "active"), default=0.0)
    assert last_active < 1.0, f"a worker still showed the batch active {last_active:.3f} s after the recall"
    assert [status for at, status in seen if at >= 1.0] and all(
        status == "recalled" for at, status in seen if at >= 1.0
    )


async def test_scan_counts_survive_a_restart_of_redis_and_of_the_service(settings: Settings) -> None:
    async def resolve_times(n: int) -> dict[str, Any]:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
            async with client:
                service = Service(
                    app, client, settings, {"Authorization": f"Bearer {settings.admin_token}"}, QueryLog()
                )
                code = codes[0] if codes else (await register_batch(service))["trace_code"]
                codes.append(code)
                docs = [(await client.get(f"/api/v1/codes/{code}")).json() for _ in range(n)]
        scans: dict[str, Any] = docs[-1]["scans"]
        return scans  # the service has stopped: its last counts are flushed to Postgres

    codes: list[str] = []
    first = await resolve_times(3)
    redis = aioredis.Redis.from_url(settings.redis_url or "")
    await redis.flushdb()  # Redis restarted without its data
    await redis.aclose()
    second = await resolve_times(2)

    assert first["count"] == 3
    assert second["count"] == 5 and second["first_at"] == first["first_at"]


# Group commit: the scans a worker receives while its previous statement runs go as one statement.


def _pending(
    market: int, code: str, *, key: str | None = None, quantity: int = 1, voucher: str | None = None
) -> PendingScan:
    voucher = voucher or compose(3, "630103", secrets.randbelow(10**11))
    key = key or secrets.token_hex(8)
    return PendingScan(market, "g-1", key, key.encode(), code, Decimal(quantity), "kg", voucher, None)


async def test_scans_arriving_together_go_as_one_group_each_decided_alone(service: Service) -> None:
    market = await make_market(service)
    small, other = await register_batch(service, quantity=3), await register_batch(service, certificate=None)
    never_issued = compose(1, "630121", secrets.randbelow(10**11))
    groups = group_commit_of(service)
    scans = [_pending(market, small["trace_code"]) for _ in range(5)]
    scans += [_pending(market, other["trace_code"]), _pending(market, never_issued)]
    before = service.query_log.count("tracecode_gate_scans")

    rows = await asyncio.gather(*(groups.decide(scan) for scan in scans))

    assert service.query_log.count("tracecode_gate_scans") - before == 1
    # Scans that arrive together have no order: which three of the five get the last 3 kg is not defined.
    assert sorted(r["decision"] for r in rows[:5]) == ["accept"] * 3 + ["reject"] * 2
    assert [r["reasons"] for r in rows[:5] if r["decision"] == "reject"] == [["quantity_exceeds_batch"]] * 2
    assert [r["reasons"] for r in rows[5:]] == [["no_certificate"], ["unknown_code"]]
    assert all(r["voucher_code"] == s.voucher_code for r, s in zip(rows, scans, strict=True) if r["voucher_code"])
    async with app_worker(service.app).pool.acquire() as conn:
        assert await conn.fetchval("SELECT admitted FROM batches WHERE id = $1", small["batch_id"]) == 3
        assert await conn.fetchval("SELECT count(*) FROM gate_scans WHERE market_id = $1", market) == 7


async def test_one_bad_scan_fails_alone(service: Service) -> None:
    market = await make_market(service)
    batch = await register_batch(service)
    taken = (await scan(service, await token(service, "gate", f"{market}/x"), batch["trace_code"]))["voucher_code"]
    groups = group_commit_of(service)
    good = [_pending(market, batch["trace_code"]) for _ in range(4)]
    bad = _pending(market, batch["trace_code"], voucher=taken)  # the database refuses its entry

    answers = await asyncio.gather(*(groups.decide(s) for s in [*good[:2], bad, *good[2:]]), return_exceptions=True)

    assert isinstance(answers[2], asyncpg.UniqueViolationError)
    assert [a["decision"] for a in answers if not isinstance(a, BaseException)] == ["accept"] * 4
    async with app_worker(service.app).pool.acquire() as conn:
        assert await conn.fetchval("SELECT admitted FROM batches WHERE id = $1", batch["batch_id"]) == 10 + 4
        assert await conn.fetchval("SELECT count(*) FROM gate_scans WHERE market_id = $1", market) == 5


async def test_a_key_twice_in_one_group_is_one_scan_and_its_replay(service: Service) -> None:
    market = await make_market(service)
    batch = await register_batch(service)
    groups = group_commit_of(service)
    first, again = (_pending(market, batch["trace_code"], key="same", quantity=5) for _ in range(2))

    rows = await asyncio.gather(groups.decide(first), groups.decide(again))

    assert sorted(r["is_replay"] for r in rows) == [False, True]
    assert rows[0]["voucher_code"] == rows[1]["voucher_code"] and not any(r["is_conflict"] for r in rows)
    async with app_worker(service.app).pool.acquire() as conn:
        assert await conn.fetchval("SELECT admitted FROM batches WHERE id = $1", batch["batch_id"]) == 5


async def test_a_key_racing_with_another_workers_group_is_replayed(service: Service) -> None:
    market = await make_market(service)
    batch = await register_batch(service)
    # A code never issued: neither group locks a batch for it, so they meet at the key itself.
    racer = _pending(market, compose(1, "630121", secrets.randbelow(10**11)), key="raced")
    neighbour = _pending(market, batch["trace_code"])
    other_worker = await asyncpg.connect(service.settings.database_url)
    try:
        async with other_worker.transaction():  # the other worker's group, not yet committed
            await other_worker.fetch(
                queries.GATE_SCANS, [market], ["g-2"], [racer.key], [racer.request_hash], [racer.code],
                [racer.quantity], ["kg"], [compose(3, "630103", secrets.randbelow(10**11))], dt.date.today(), [None],
            )  # fmt: skip
            groups = group_commit_of(service)
            before = service.query_log.count("tracecode_gate_scans")
            waiting = asyncio.gather(groups.decide(racer), groups.decide(neighbour))
            await _until_blocked(service)
        rows = await waiting
    finally:
        await other_worker.close()

    assert rows[0]["is_replay"] and rows[0]["reasons"] == ["unknown_code"] and not rows[0]["is_conflict"]
    assert rows[1]["decision"] == "accept" and not rows[1]["is_replay"]
    assert service.query_log.count("tracecode_gate_scans") - before == 3  # the group, then each scan alone
    async with app_worker(service.app).pool.acquire() as conn:
        assert await conn.fetchval("SELECT admitted FROM batches WHERE id = $1", batch["batch_id"]) == 1
        assert await conn.fetchval("SELECT count(*) FROM gate_scans WHERE market_id = $1", market) == 2


async def _until_blocked(service: Service) -> None:
    """Until a backend of the service waits for a lock (its group met the other worker's uncommitted row)."""
    async with app_worker(service.app).pool.acquire() as conn:
        for _ in range(500):
            if await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            ):
                return
            await asyncio.sleep(0.01)
    raise AssertionError("the group never waited for the other worker")


def group_commit_of(service: Service) -> GroupCommit:
    return app_worker(service.app).gate_groups


@pytest.mark.parametrize(
    "quantity", [1, 10, 1.5, "1.500", 0.001, "1E+3", "1e12", 999999999999.999, "0.1", 7.25], ids=str
)
@pytest.mark.parametrize("unit", ["kg", " 斤 ", "箱"])
def test_the_fast_scan_hash_is_the_stored_one(quantity: object, unit: str) -> None:
    body = GateScanIn.model_validate(
        {"code": " 1630-1210 ", "quantity": quantity, "unit": unit, "idempotency_key": "gate-01 é-1"}
    )

    assert _scan_hash(body) == _request_hash(body)


# The lean scan route: its refusals are read_json's own, and so are the bodies it accepts.


async def _read_json_answer(body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
    """What read_json answers for this body, as every other route of the API would."""
    scope = {
        "type": "http", "method": "POST", "path": "/api/v1/gate/scans", "query_string": b"",
        "headers": [(b"content-type", content_type.encode("latin-1")), (b"content-length", b"%d" % len(body))],
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    with pytest.raises(Problem) as refused:
        await read_json(Request(scope, receive), GateScanIn)
    response = refused.value.to_response()
    return response.status_code, orjson.loads(response.body)


REFUSED_SCANS = [  # (body, content type): one app for all (a service per case costs a shut-down each)
    (b'{"code": "1", "quantity": 1, "unit": "kg"', "application/json"),  # malformed JSON
    (b'\xff{"code": 1}', "application/json"),  # not UTF-8
    (b'{"code": "1", "unit": "kg", "idempotency_key": "k"}', "application/json"),  # no quantity
    (b'{"code": "1", "quantity": 0, "unit": "kg", "idempotency_key": "k"}', "application/json"),
    (b'{"code": "1", "quantity": "1.0001", "unit": "kg", "idempotency_key": "k"}', "application/json"),
    (b'{"code": "1", "quantity": 1, "unit": "kg", "idempotency_key": "k", "x": 1}', "application/json"),
    (b'{"code": "1", "quantity": 1, "unit": "k\\u0007g", "idempotency_key": " "}', "application/json; charset=utf-8"),
    (b"[]", "application/json"),
    (b'{"code": "1"}', "text/plain"),
    (b'{"code": "1"}', "APPLICATION/JSON ; x=1"),
    (b'{"code": "1"}', "application/json\xa0"),  # a space only str.strip() takes away
    (b" " * (MAX_BODY_BYTES + 1), "application/json"),
]


async def test_scan_refusals_are_read_jsons(service: Service, gate: dict[str, str]) -> None:
    authorization = (b"authorization", gate["Authorization"].encode())
    for body, content_type in REFUSED_SCANS:
        headers = [authorization, (b"content-type", content_type.encode("latin-1"))]
        response = await service.client.post("/api/v1/gate/scans", content=body, headers=headers)

        assert (response.status_code, response.json()) == await _read_json_answer(body, content_type), body[:80]
        assert response.headers["content-type"] == "application/problem+json"
    await _until_listening(service)


async def _call_route(
    service: Service, headers: list[tuple[bytes, bytes]], chunks: list[bytes]
) -> tuple[int, dict[bytes, bytes], dict[str, Any]]:
    """The scan route called as the ASGI server calls it, the body in `chunks`."""
    scope = {
        "type": "http", "method": "POST", "path": "/api/v1/gate/scans", "query_string": b"",
        "headers": headers, "app": service.app,
    }  # fmt: skip
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await GateScanRoute()(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return sent[0]["status"], dict(sent[0]["headers"]), orjson.loads(body)


async def test_scan_body_in_chunks(service: Service, gate: dict[str, str]) -> None:
    batch = await register_batch(service)
    body = orjson.dumps({"code": batch["trace_code"], "quantity": 2, "unit": "kg", "idempotency_key": "chunks"})
    headers = [(b"authorization", gate["Authorization"].encode()), (b"content-type", b"application/json")]
    await scan(service, gate, batch["trace_code"], 1)  # the token is now in the worker's cache

    status, answer_headers, answer = await _call_route(service, headers, [body[:7], body[7:30], body[30:]])
    too_large = await _call_route(service, headers, [b" " * 40_000, b" " * 40_000])
    first_is_empty = [headers[0], (b"content-type", b""), (b"content-type", b"application/json")]
    doubled = await _call_route(service, first_is_empty, [body])  # the first header counts, as in Starlette

    assert status == 200 and answer["decision"] == "accept" and answer["replay"] is False
    assert answer_headers == {
        b"content-length": b"%d" % len(orjson.dumps(answer)),
        b"content-type": b"application/json",
    }
    assert too_large[0] == 413 and too_large[2]["code"] == "payload_too_large"
    assert doubled[0] == 415 and doubled[2]["code"] == "unsupported_media_type"


async def test_scan_auth_before_body_with_and_without_the_token_cache(service: Service, gate: dict[str, str]) -> None:
    """401 and 403 come before any look at the body, whether the token was checked lately or not."""
    producer = await token(service, "producer", await register_producer(service))
    for _ in range(2):  # the first time from Postgres, then from the worker's cache
        wrong_role = await service.client.post("/api/v1/gate/scans", content=b"{", headers=producer)
        no_bearer = await service.client.post(
            "/api/v1/gate/scans", content=b"{", headers={"Authorization": "Basic x", "Content-Type": "text/plain"}
        )
        unknown = await service.client.post("/api/v1/gate/scans", content=b"{", headers={"Authorization": "Bearer x"})
        good = await service.client.post(
            "/api/v1/gate/scans", content=b"{", headers={**gate, "Content-Type": "application/json"}
        )

        assert wrong_role.status_code == 403 and wrong_role.json()["code"] == "forbidden"
        assert no_bearer.status_code == 401 and no_bearer.headers["www-authenticate"] == "Bearer"
        assert unknown.status_code == 401 and unknown.json()["code"] == "unauthorized"
        assert good.status_code == 400 and good.json()["code"] == "malformed_json"
    await _until_listening(service)


async def _until_listening(service: Service) -> None:
    """Until the token cache's listener has subscribed: one cancelled while it subscribes holds up the shut-down
    for SHUTDOWN_STEP_S (cache.store.follow_ids), which a test that ends at once would pay."""
    for _ in range(200):
        if app_worker(service.app).token_cache.is_listening:
            return
        await asyncio.sleep(0.01)


async def test_scan_route_keeps_method_and_name(service: Service, gate: dict[str, str]) -> None:
    response = await service.client.get("/api/v1/gate/scans", headers=gate)

    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.json()["code"] == "method_not_allowed"
    assert service.app.url_path_for("gate_scan") == "/api/v1/gate/scans"


# Voucher codes: a block reserved ahead, one reservation at a time.


async def test_vouchers_come_from_one_reservation_and_the_next_is_made_ahead(service: Service) -> None:
    supply = VoucherSupply(app_worker(service.app).issuer, app_worker(service.app).pool)
    before = service.query_log.count("code_sequences")

    first = await asyncio.gather(*(supply.one("630103") for _ in range(100)))
    reserved_once = service.query_log.count("code_sequences") - before
    rest = [await supply.one("630103") for _ in range(VOUCHER_BLOCK - 100 - VOUCHER_LOW + 1)]  # below the low mark
    await asyncio.sleep(0.5)  # the next block, reserved in the background
    codes = [*first, *rest, *(await asyncio.gather(*(supply.one("630103") for _ in range(VOUCHER_LOW))))]

    assert reserved_once == 1
    assert service.query_log.count("code_sequences") - before == 2
    assert len(set(codes)) == len(codes) and all(type_of(c) == 3 and region_of(c) == "630103" for c in codes)


class _FailingIssuer(CodeIssuer):
    def __init__(self) -> None:
        super().__init__(b"0123456789abcdef")
        self.failures = 1

    async def reserve(self, pool: asyncpg.Pool, code_type: int, region: str, count: int) -> int:
        if self.failures:
            self.failures -= 1
            raise ConnectionRefusedError("postgres is away")
        return await super().reserve(pool, code_type, region, count)


async def test_a_failed_voucher_reservation_fails_its_scans_and_the_next_scan_tries_again(service: Service) -> None:
    supply = VoucherSupply(_FailingIssuer(), app_worker(service.app).pool)

    failed = await asyncio.gather(*(supply.one("630103") for _ in range(3)), return_exceptions=True)
    later = await supply.one("630103")

    assert all(isinstance(f, ConnectionRefusedError) for f in failed)
    assert type_of(later) == 3
