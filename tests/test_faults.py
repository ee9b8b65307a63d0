"""Faults under load: Redis killed, Postgres stopped, a worker killed. Each on servers of its own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from cache import keys
from resolver.app import create_app
from resolver.db import REQUEST_WAIT_S
from resolver.ops.embedded import EmbeddedPostgres, EmbeddedRedis
from resolver.ops.settings import Settings
from resolver.scan.scans import FLUSH_INTERVAL_S
from resolver.state import app_worker
from schema.migrate import migrate
from tests.conftest import QueryLog, Service
from tests.helpers import issue_labels, register_batch, serving, subprocess_env

LOAD_CONCURRENCY = 8
RETRY_FOR_S = 30.0  # a gate retries a lot this long before giving up


@dataclass
class OwnServers:
    postgres: EmbeddedPostgres
    redis: EmbeddedRedis


@pytest.fixture
def own_servers() -> Iterator[OwnServers]:
    """A Postgres and a Redis that this test may stop and start again."""
    data_dir = Path(tempfile.mkdtemp(prefix="tracecode-faults-"))
    servers = OwnServers(EmbeddedPostgres(data_dir), EmbeddedRedis(data_dir))
    servers.postgres.start()
    servers.redis.start()
    try:
        yield servers
    finally:
        servers.redis.stop()
        servers.postgres.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
async def own_service(own_servers: OwnServers, settings: Settings) -> AsyncIterator[Service]:
    conn = await asyncpg.connect(own_servers.postgres.url)
    try:
        await migrate(conn, code_partitions=4)
    finally:
        await conn.close()
    own = replace(settings, database_url=own_servers.postgres.url, redis_url=own_servers.redis.url)
    app = create_app(own)
    async with app.router.lifespan_context(app):
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
        async with client:
            yield Service(app, client, own, {"Authorization": f"Bearer {own.admin_token}"}, QueryLog())


async def _wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_redis_killed_resolves_go_on_and_full_speed_returns(
    own_service: Service, own_servers: OwnServers
) -> None:
    codes = [(await register_batch(own_service))["trace_code"] for _ in range(3)]
    for code in codes:
        await own_service.client.get(f"/api/v1/codes/{code}")
    state = app_worker(own_service.app)
    await _wait_for(lambda: state.local.is_enabled)

    await asyncio.to_thread(own_servers.redis.stop)
    during = [await own_service.client.get(f"/api/v1/codes/{code}") for code in codes * 5]
    health_down = (await own_service.client.get("/healthz")).json()
    await _wait_for(lambda: not state.local.is_enabled)  # no invalidation channel: the tier steps aside
    after_tier_off = [await own_service.client.get(f"/api/v1/codes/{code}") for code in codes]

    await asyncio.to_thread(own_servers.redis.start)
    await _wait_for(lambda: state.local.is_enabled)  # resubscribed: the in-process tier is back
    health_up = (await own_service.client.get("/healthz")).json()
    hits_before = state.local.hits
    for code in codes * 2:
        await own_service.client.get(f"/api/v1/codes/{code}")

    assert {r.status_code for r in during + after_tier_off} == {200}
    assert health_down == {"status": "degraded", "postgres": "ok", "redis": "down"}
    assert health_up == {"status": "ok", "postgres": "ok", "redis": "ok"}
    assert state.local.hits - hits_before >= len(codes)  # warm scans are answered in-process again


async def _gate_token(service: Service) -> dict[str, str]:
    market = await service.client.post(
        "/api/v1/markets", json={"name": "测试市场", "region_code": "630103"}, headers=service.admin_headers
    )
    token = await service.client.post(
        "/api/v1/tokens", json={"role": "gate", "scope": f"{market.json()['id']}/1"}, headers=service.admin_headers
    )
    return {"Authorization": f"Bearer {token.json()['token']}"}


async def test_postgres_stopped_nothing_lost_nothing_doubled(own_service: Service, own_servers: OwnServers) -> None:
    batch = await register_batch(own_service, quantity=1_000_000)
    code = batch["trace_code"]
    gate = await _gate_token(own_service)
    # Accepted scans change the scanned batch's chain and drop its cached documents; another batch stays cached.
    quiet = (await register_batch(own_service))["trace_code"]
    await own_service.client.get(f"/api/v1/codes/{quiet}")
    answers: dict[str, list[int | str]] = {}
    stop = asyncio.Event()

    async def scan(key: str) -> int | str:
        body = {"code": code, "quantity": 1, "unit": "kg", "idempotency_key": key}
        response = await own_service.client.post("/api/v1/gate/scans", json=body, headers=gate)
        if response.status_code == 503:
            assert int(response.headers["Retry-After"]) > 0
            assert response.json()["code"] == "store_unavailable"
            return 503
        assert response.status_code == 200, response.text
        decision: str = response.json()["decision"]
        return decision

    async def gate_client() -> None:
        """Scan new lots until told to stop; a 503 is retried with the same key after a pause, as a gate would."""
        while not stop.is_set():
            key = secrets.token_hex(8)
            seen = answers[key] = [await scan(key)]
            deadline = time.monotonic() + RETRY_FOR_S
            while seen[-1] == 503 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                seen.append(await scan(key))

    clients = [asyncio.create_task(gate_client()) for _ in range(LOAD_CONCURRENCY)]
    await asyncio.sleep(0.5)
    await asyncio.to_thread(own_servers.postgres.stop)
    await asyncio.sleep(0.3)
    cached = await own_service.client.get(f"/api/v1/codes/{quiet}")
    during = await scan(secrets.token_hex(8))
    await asyncio.to_thread(own_servers.postgres.start)
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*clients)

    conn = await asyncpg.connect(own_servers.postgres.url)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM gate_entries WHERE batch_id = $1", batch["batch_id"])
        admitted = await conn.fetchval("SELECT admitted FROM batches WHERE id = $1", batch["batch_id"])
    finally:
        await conn.close()
    accepted = sum(seen[-1] == "accept" for seen in answers.values())
    assert cached.status_code == 200
    assert during == 503
    assert any(503 in seen for seen in answers.values()), "the outage was not seen by the load"
    assert all(seen[-1] != 503 for seen in answers.values()), "a retried scan never got through"
    assert accepted == stored == admitted > 0


def test_a_worker_killed_mid_load_the_others_serve_on(settings: Settings) -> None:
    env = subprocess_env(DATABASE_URL=settings.database_url, REDIS_URL=settings.redis_url, TRACECODE_SECRET="s" * 16)
    with serving(env, "--workers", "2") as base:
        workers = psutil.Process(_server_pid(base)).children(recursive=True)
        assert len(workers) >= 2
        statuses: list[int] = []
        killed_at = None
        started = time.monotonic()
        with httpx.Client(base_url=base, timeout=5) as client:
            while time.monotonic() - started < 3.0:
                if killed_at is None and time.monotonic() - started > 1.0:
                    os.kill(workers[0].pid, signal.SIGKILL)
                    killed_at = time.monotonic()
                try:
                    statuses.append(client.get("/healthz").status_code)
                except httpx.TransportError:
                    statuses.append(0)  # the killed worker's connection
        after = [httpx.get(f"{base}/healthz", timeout=5).status_code for _ in range(20)]

    assert killed_at is not None
    assert statuses.count(200) >= 0.95 * len(statuses)
    assert after == [200] * 20


def _server_pid(base: str) -> int:
    port = int(base.rsplit(":", 1)[1])
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            parent = psutil.Process(conn.pid)
            while parent.parent() is not None and "tracecode" in " ".join(parent.parent().cmdline()):
                parent = parent.parent()
            pid: int = parent.pid
            return pid
    raise AssertionError(f"no process listens on {base}")


# Hangs: a store that stops answering rather than refusing (SIGSTOP, as in a network partition).


@contextlib.contextmanager
def frozen(pid: int | None, *, with_children: bool = False) -> Iterator[None]:
    """The process (and its children) stopped with SIGSTOP for the block, continued afterwards whatever happens."""
    assert pid is not None
    process = psutil.Process(pid)
    processes = [process, *(process.children(recursive=True) if with_children else [])]
    for each in processes:
        each.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for each in processes:
            each.send_signal(signal.SIGCONT)


@contextlib.asynccontextmanager
async def _second_worker(settings: Settings) -> AsyncIterator[Service]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://worker-2") as client:
            yield Service(app, client, settings, {"Authorization": f"Bearer {settings.admin_token}"}, QueryLog())


async def test_a_recall_holds_on_every_worker_while_redis_hangs(own_service: Service, own_servers: OwnServers) -> None:
    code = (await register_batch(own_service))["trace_code"]
    seen: list[tuple[float, int, str]] = []  # (seconds after the recall answered, status code, status)
    recall_answered: list[float] = []

    async def consumer(other: Service) -> None:
        while not recall_answered or time.monotonic() - recall_answered[0] < 3.0:
            response = await other.client.get(f"/api/v1/codes/{code}")
            status = response.json().get("status", "") if response.status_code == 200 else ""
            since = time.monotonic() - recall_answered[0] if recall_answered else -1.0
            seen.append((since, response.status_code, status))
            await asyncio.sleep(0.01)

    async with _second_worker(own_service.settings) as other:
        await _wait_for(lambda: app_worker(other.app).local.is_enabled)
        for _ in range(3):  # in the other worker's tier and in Redis, as active
            assert (await other.client.get(f"/api/v1/codes/{code}")).json()["status"] == "active"
        assert len(app_worker(other.app).local) == 1
        with frozen(own_servers.redis.pid):
            consumers = [asyncio.create_task(consumer(other)) for _ in range(LOAD_CONCURRENCY)]
            await asyncio.sleep(0.3)
            recall = await own_service.client.post(
                f"/api/v1/batches/{code}/recall", json={"reason": "抽检不合格"}, headers=own_service.admin_headers
            )
            recall_answered.append(time.monotonic())
            await asyncio.sleep(2.0)
        thawed = [(await other.client.get(f"/api/v1/codes/{code}")).json()["status"] for _ in range(20)]
        await asyncio.gather(*consumers)

    after = [(at, status) for at, status_code, status in seen if at >= 0 and status_code == 200]
    stale = [at for at, status in after if status == "active"]
    assert recall.status_code == 200 and recall.json()["caches_invalidated"] is False  # Redis could not be told
    assert after, "no answer after the recall"
    assert not [at for at in stale if at >= 1.0], f"active {max(stale):.2f} s after the recall answered"
    assert {status_code for _, status_code, _ in seen} <= {200, 503}
    assert set(thawed) == {"recalled"}


async def test_a_hung_postgres_gets_bounded_answers_and_nothing_half_written(
    own_service: Service, own_servers: OwnServers
) -> None:
    batch = await register_batch(own_service)
    cold = (await register_batch(own_service))["trace_code"]  # never resolved: its document needs Postgres
    gate = await _gate_token(own_service)
    body = {"code": batch["trace_code"], "quantity": 1, "unit": "kg", "idempotency_key": "hang-1"}
    assert (await own_service.client.get("/healthz")).json()["status"] == "ok"

    async def timed(request: Awaitable[httpx.Response]) -> tuple[float, httpx.Response]:
        started = time.monotonic()
        response = await request
        return time.monotonic() - started, response

    with frozen(own_servers.postgres.pid, with_children=True):
        health_s, health = await timed(own_service.client.get("/healthz"))
        (resolve_s, resolve), (scan_s, scan) = await asyncio.gather(
            timed(own_service.client.get(f"/api/v1/codes/{cold}")),
            timed(own_service.client.post("/api/v1/gate/scans", json=body, headers=gate)),
        )
    await asyncio.sleep(1.0)
    again = await own_service.client.post("/api/v1/gate/scans", json=body, headers=gate)

    assert health.json() == {"status": "degraded", "postgres": "down", "redis": "ok"}
    assert health_s < 1.5
    for elapsed, response in ((resolve_s, resolve), (scan_s, scan)):
        assert response.status_code == 503 and response.json()["code"] == "store_unavailable"
        assert int(response.headers["Retry-After"]) > 0
        assert elapsed < REQUEST_WAIT_S + 1.0
    assert again.status_code == 200 and again.json()["decision"] == "accept"
    conn = await asyncpg.connect(own_servers.postgres.url)
    try:
        entries = await conn.fetchval("SELECT count(*) FROM gate_entries WHERE batch_id = $1", batch["batch_id"])
        admitted = await conn.fetchval("SELECT admitted FROM batches WHERE id = $1", batch["batch_id"])
    finally:
        await conn.close()
    assert entries == admitted == 1  # the scan given up on and its retry: one entry


async def test_scan_counts_lose_nothing_when_redis_restarts(own_service: Service, own_servers: OwnServers) -> None:
    batch = await register_batch(own_service)
    (code,) = await issue_labels(own_service, batch["trace_code"], 1)
    shown: list[int] = []

    async def scans(count: int, workers: list[Service]) -> None:
        for i in range(count):
            answer = await workers[i % len(workers)].client.get(f"/api/v1/codes/{code}")
            assert answer.status_code == 200
            shown.append(answer.json()["scans"]["count"])

    async with _second_worker(own_service.settings) as other:
        await scans(100, [own_service, other])
        await asyncio.to_thread(own_servers.redis.stop)  # within the sync interval of the last scans
        await asyncio.to_thread(own_servers.redis.start)  # empty
        await scans(250, [own_service, other])
        await asyncio.sleep(keys.REDIS_RETRY_AFTER_S + 4 * keys.SCAN_SYNC_INTERVAL_S)  # back-off over, synced
        await scans(1, [own_service])
        await asyncio.sleep(3 * keys.SCAN_SYNC_INTERVAL_S)  # synced: the other worker's answer shows it
        await scans(1, [other])
        await asyncio.sleep(FLUSH_INTERVAL_S + 2 * keys.SCAN_SYNC_INTERVAL_S)  # flushed
    conn = await asyncpg.connect(own_servers.postgres.url)
    try:
        stored = await conn.fetchval("SELECT sum(count) FROM package_scans")
    finally:
        await conn.close()

    assert shown[-2:] == [351, 352]  # every scan counted, whichever worker answers, after a sync
    assert stored == 352
    assert all(count > 0 for count in shown)
