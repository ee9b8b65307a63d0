"""Bearer tokens: issued at random, stored as SHA-256 hashes, checked for role and scope.

Each worker keeps the tokens it has checked for TOKEN_CACHE_TTL_S (a gate sends every scan with the
same token, and a Postgres round trip per request was a fifth of a scan's cost). A revocation is
published on Redis and every worker that listens drops the token at once; a worker that missed the
message (Redis down) still asks Postgres again within TOKEN_CACHE_TTL_S, so a revoked token is
refused everywhere within that time at the latest.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis
from starlette.requests import Request

from cache.keys import KEY_PREFIX
from cache.store import db_channel, follow_ids
from resolver import queries
from resolver.db import within_request_wait
from resolver.edge.problems import Problem
from resolver.state import worker

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "tc_"
TOKEN_BYTES = 32
ROLES = ("admin", "regulator", "producer", "gate", "lab")
TOKEN_CACHE_TTL_S = 1.0  # the longest a worker that missed a revocation message keeps accepting the token
TOKEN_CACHE_SIZE = 10_000  # tokens per worker; full, the cache starts afresh
REVOCATION_CHANNEL = KEY_PREFIX + "tokens:revoked:"  # + Redis db number -> ids of revoked tokens


@dataclass(frozen=True, slots=True)
class Principal:
    role: str
    scope: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def covers_region(self, region_code: str) -> bool:
        """Whether a regulator of `scope` acts on `region_code`: a province or prefecture covers its counties."""
        return self.role == "regulator" and self._scope_holds(region_code)

    def inspects_region(self, region_code: str) -> bool:
        """Whether a lab of `scope` adds inspection results in `region_code` (its scope read as a regulator's)."""
        return self.role == "lab" and self._scope_holds(region_code)

    def _scope_holds(self, region_code: str) -> bool:
        if len(self.scope) != 6:
            return False
        if self.scope.endswith("0000"):
            return region_code[:2] == self.scope[:2]
        if self.scope.endswith("00"):
            return region_code[:4] == self.scope[:4]
        return region_code == self.scope


class TokenCache:
    """One worker's checked tokens: hash -> (token id, principal, when checked).

    `generation` rises with every revocation heard, so that a lookup that started before a revocation
    (and may have read the token as valid) does not put it back afterwards.
    """

    __slots__ = ("_channel", "_entries", "_redis", "generation", "is_listening")

    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._entries: dict[bytes, tuple[int, Principal, float]] = {}
        self._channel = db_channel(REVOCATION_CHANNEL, client)
        self.generation = 0
        self.is_listening = False

    def __repr__(self) -> str:
        return f"TokenCache(tokens={len(self._entries)}, generation={self.generation})"

    def get(self, token_hash: bytes) -> Principal | None:
        entry = self._entries.get(token_hash)
        if entry is None:
            return None
        if time.monotonic() - entry[2] >= TOKEN_CACHE_TTL_S:
            del self._entries[token_hash]
            return None
        return entry[1]

    def put(self, token_hash: bytes, token_id: int, principal: Principal, *, generation: int) -> None:
        """Keep a token read from Postgres, unless a revocation was heard since the read began."""
        if generation != self.generation:
            return
        if len(self._entries) >= TOKEN_CACHE_SIZE:
            self._entries.clear()
        self._entries[token_hash] = (token_id, principal, time.monotonic())

    def drop(self, token_id: int) -> None:
        self.generation += 1
        for token_hash in [h for h, entry in self._entries.items() if entry[0] == token_id]:
            del self._entries[token_hash]

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()

    async def publish_revocation(self, token_id: int) -> None:
        """Tell every worker of every instance; raises on a Redis error (the caller decides)."""
        self.drop(token_id)
        await self._redis.publish(self._channel, token_id)

    async def listen(self) -> None:
        """Drop every token announced as revoked, until cancelled. Messages missed while the connection is
        down cannot be replayed: on reconnecting the cache starts afresh."""

        def subscribed() -> None:
            self.clear()
            self.is_listening = True

        def lost() -> None:
            self.is_listening = False
            self.clear()

        await follow_ids(self._redis, self._channel, self.drop, on_subscribed=subscribed, on_lost=lost)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> bytes:
    # Tokens are 256 random bits, so a plain hash is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode()).digest()


async def create_token(conn: asyncpg.Pool | asyncpg.Connection, role: str, scope: str) -> tuple[int, str]:
    """Store a new token's hash; return its id and the token itself, which is never stored."""
    token = new_token()
    token_id: int = await conn.fetchval(queries.INSERT_TOKEN, hash_token(token), role, scope)
    return token_id, token


def bearer_token(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header's value; None for any other value."""
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def authenticate(request: Request) -> Principal:
    """The principal of the request's bearer token; Problem 401 when it is missing or unknown."""
    token = bearer_token(request.headers.get("authorization", ""))
    if token is None:
        raise Problem(
            401, "unauthorized", "未认证", "需要 Authorization: Bearer <token>", headers={"WWW-Authenticate": "Bearer"}
        )
    state = worker(request)
    admin_token = state.settings.admin_token
    if admin_token is not None and hmac.compare_digest(token.encode(), admin_token.encode()):
        return Principal("admin", "")
    token_hash = hash_token(token)
    cache = state.token_cache
    principal = cache.get(token_hash)
    if principal is not None:
        return principal
    generation = cache.generation
    row = await within_request_wait(state.pool.fetchrow(queries.TOKEN_BY_HASH, token_hash))
    if row is None:
        raise Problem(401, "unauthorized", "未认证", "令牌无效或已撤销", headers={"WWW-Authenticate": "Bearer"})
    principal = Principal(row["role"], row["scope"])
    cache.put(token_hash, row["id"], principal, generation=generation)
    return principal


def forbidden(detail: str) -> Problem:
    return Problem(403, "forbidden", "无权限", detail)
