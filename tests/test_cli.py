"""The tracecode command as a user runs it: separate processes, real servers, the embedded default."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Servers, create_database, drop_database
from tests.helpers import run_tracecode, serving, subprocess_env


@pytest.fixture
async def cli_database(servers: Servers) -> AsyncIterator[str]:
    name = f"tracecode_cli_{secrets.token_hex(4)}"
    url = await create_database(servers, name)
    yield url
    await drop_database(servers, name)


def test_migrate_twice_then_token_and_serve_with_workers(cli_database: str, servers: Servers) -> None:
    env = subprocess_env(DATABASE_URL=cli_database, REDIS_URL=servers.redis_url, TRACECODE_SECRET=secrets.token_hex(16))

    first = run_tracecode(env, "migrate")
    second = run_tracecode(env, "migrate")
    token = run_tracecode(env, "token", "create", "--role", "regulator", "--scope", "630100").strip()

    assert "applied: 0001, 0002" in first
    assert "applied: none (up to date)" in second and "regions loaded: 0" in second
    with serving(env, "--workers", "2") as base:
        producer = httpx.post(
            f"{base}/api/v1/producers",
            json={"credit_code": "93630121MA7H8Q2K1C", "name": "大通县测试合作社", "kind": "cooperative",
                  "region_code": "630121"},
            headers={"Authorization": f"Bearer {token}"},
        )  # fmt: skip
        statuses = {httpx.get(f"{base}/healthz").json()["status"] for _ in range(4)}
    assert producer.status_code == 201, producer.text
    assert statuses == {"ok"}


def test_serve_demo_on_embedded_servers(tmp_path: Path) -> None:
    """`make run` on a fresh machine: no URLs, so embedded Postgres and Redis; the demo URLs resolve."""
    data_dir = tmp_path / "data"
    env = subprocess_env(TRACECODE_DATA_DIR=str(data_dir))

    with serving(env, "--demo") as base:
        health = httpx.get(f"{base}/healthz").json()
        output = run_tracecode(env, "demo")  # reuses the running embedded servers, loads nothing new, prints the URLs
        urls = re.findall(r"https?://\S+/t/\d{20}", output)
        pages = [httpx.get(url.replace("http://127.0.0.1:8000", base)) for url in urls]

    assert health == {"status": "ok", "postgres": "ok", "redis": "ok"}
    assert len(urls) >= 4
    assert all(p.status_code == 200 and "追溯链" in p.text for p in pages)
    assert not list(data_dir.glob("run/*.sock")), "embedded Redis still running after the server stopped"
