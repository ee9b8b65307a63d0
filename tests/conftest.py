"""Fixtures on the real Postgres and Redis.

With DATABASE_URL and REDIS_URL set (CI, this machine) the tests use those servers; without
them, embedded ones are started under a temporary directory for the session. Every session
gets a database of its own, migrated once; every test builds its own data with random codes
and starts with an empty Redis database, so tests never see each other's data.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette

from codegen.creditcode import make_credit_code
from resolver.app import create_app
from resolver.ops.embedded import EmbeddedRedis, ensure_services
from resolver.ops.settings import Settings
from schema.migrate import migrate

# Tests flush this Redis database only; give concurrent runs on one Redis different ones.
TEST_REDIS_DB = int(os.environ.get("TRACECODE_TEST_REDIS_DB", "9"))
# One permutation key for the whole session: with the session's shared sequences, codes are unique by
# construction, as in production; a key per test could map two tests' sequence numbers to one code.
SESSION_SECRET = secrets.token_hex(32).encode()
CREDIT_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"


@dataclass(frozen=True, slots=True)
class Servers:
    admin_dsn: str  # the server's maintenance database, for CREATE/DROP DATABASE
    redis_url: str

    def database(self, name: str) -> str:
        parts = urlsplit(self.admin_dsn)
        return urlunsplit(parts._replace(path="/" + name))


def _redis_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = "&".join(p for p in parts.query.split("&") if p and not p.startswith("db=")) + f"&db={db}"
        return urlunsplit(parts._replace(query=query.lstrip("&")))
    return urlunsplit(parts._replace(path=f"/{db}"))


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    data_dir = Path(os.environ.get("TRACECODE_TEST_DATA_DIR") or tempfile.mkdtemp(prefix="tracecode-test-"))
    database_url, redis_url, embedded = ensure_services(
        data_dir, os.environ.get("DATABASE_URL") or None, os.environ.get("REDIS_URL") or None
    )
    try:
        yield Servers(admin_dsn=database_url, redis_url=_redis_db(redis_url, TEST_REDIS_DB))
    finally:
        if embedded is not None:
            embedded.stop()


async def create_database(servers: Servers, name: str) -> str:
    conn = await asyncpg.connect(servers.admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return servers.database(name)


async def drop_database(servers: Servers, name: str) -> None:
    conn = await asyncpg.connect(servers.admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def migrated_database(servers: Servers, prefix: str, *, code_partitions: int) -> AsyncIterator[str]:
    """A database of its own, migrated, dropped afterwards: its URL."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    url = await create_database(servers, name)
    try:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn, code_partitions=code_partitions)
        finally:
            await conn.close()
        yield url
    finally:
        await drop_database(servers, name)


@pytest.fixture(scope="session")
async def database_url(servers: Servers) -> AsyncIterator[str]:
    async with migrated_database(servers, "tracecode_test", code_partitions=16) as url:
        yield url


@pytest.fixture
async def redis_url(servers: Servers) -> AsyncIterator[str]:
    client = aioredis.Redis.from_url(servers.redis_url)
    await client.flushdb()
    yield servers.redis_url
    await client.flushdb()
    await client.aclose()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def pg(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    data_dir = Path(tempfile.mkdtemp(prefix="tracecode-redis-path-"))
    server = EmbeddedRedis(data_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


BACKGROUND_MARK = "/* tracecode: background */"  # the change feed's polls (resolver.scan.changes), twice a second


@dataclass(eq=False)  # hashable by identity: asyncpg keeps query loggers in a set
class QueryLog:
    """The queries a service sent, but for its background polls."""

    queries: list[str] = field(default_factory=list)

    def __call__(self, record: asyncpg.connection.LoggedQuery) -> None:
        if not record.query.startswith(BACKGROUND_MARK):
            self.queries.append(record.query)

    def count(self, needle: str) -> int:
        return sum(needle in q for q in self.queries)


@dataclass
class Service:
    app: Starlette
    client: httpx.AsyncClient
    settings: Settings
    admin_headers: dict[str, str]
    query_log: QueryLog


@pytest.fixture
def settings(database_url: str, redis_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        secret=SESSION_SECRET,
        admin_token="admin-" + secrets.token_hex(16),
        public_url="https://trace.example.cn",
        is_dev_secret=False,
    )


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[Service]:
    log = QueryLog()
    app = create_app(settings, query_logger=log)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Service(app, client, settings, {"Authorization": f"Bearer {settings.admin_token}"}, log)


def random_credit_code(region: str = "630121") -> str:
    """A valid unified social credit code (registration kind 93: farmers' cooperative) no other test uses."""
    tail = "".join(secrets.choice(CREDIT_ALPHABET) for _ in range(9))
    return make_credit_code("93" + region + tail)


@pytest.fixture
async def second_service(settings: Settings) -> AsyncIterator[Service]:
    """Another instance of the service on the same Postgres and Redis: a different worker."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://worker-2")
        async with client:
            yield Service(app, client, settings, {"Authorization": f"Bearer {settings.admin_token}"}, QueryLog())
