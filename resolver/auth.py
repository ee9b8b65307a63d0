"""Bearer tokens: issued at random, stored as SHA-256 hashes, checked for role and scope."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import asyncpg
from starlette.requests import Request

from resolver import queries
from resolver.problems import Problem

TOKEN_PREFIX = "tc_"
TOKEN_BYTES = 32
ROLES = ("admin", "regulator", "producer", "gate")


@dataclass(frozen=True, slots=True)
class Principal:
    role: str
    scope: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def covers_region(self, region_code: str) -> bool:
        """Whether a regulator of `scope` acts on `region_code`: a province or prefecture covers its counties."""
        if self.role != "regulator" or len(self.scope) != 6:
            return False
        if self.scope.endswith("0000"):
            return region_code[:2] == self.scope[:2]
        if self.scope.endswith("00"):
            return region_code[:4] == self.scope[:4]
        return region_code == self.scope


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


async def authenticate(request: Request) -> Principal:
    """The principal of the request's bearer token; Problem 401 when it is missing or unknown."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Problem(
            401, "unauthorized", "未认证", "需要 Authorization: Bearer <token>", headers={"WWW-Authenticate": "Bearer"}
        )
    admin_token: str | None = request.app.state.settings.admin_token
    if admin_token is not None and hmac.compare_digest(token.encode(), admin_token.encode()):
        return Principal("admin", "")
    row = await request.app.state.pool.fetchrow(queries.TOKEN_BY_HASH, hash_token(token))
    if row is None:
        raise Problem(401, "unauthorized", "未认证", "令牌无效或已撤销", headers={"WWW-Authenticate": "Bearer"})
    return Principal(row["role"], row["scope"])


def forbidden(detail: str) -> Problem:
    return Problem(403, "forbidden", "无权限", detail)
