"""The tracecode command as a user runs it: separate processes, real servers, the embedded default."""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import Servers, create_database, drop_database

TRACECODE = str(Path(sys.executable).with_name("tracecode"))
START_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env(**values: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({k: v for k, v in values.items() if v is not None})
    return env


def _run(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([TRACECODE, *args], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@contextmanager
def _serving(env: dict[str, str], *args: str) -> Iterator[str]:
    """Run `tracecode serve ARGS` until /livez answers and yield its base URL; stop it with SIGTERM after."""
    port = _free_port()
    process = subprocess.Popen(
        [TRACECODE, "serve", "--port", str(port), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, process.communicate()[0]
            try:
                if httpx.get(f"{base}/livez", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            output = process.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output = process.communicate()[0]
        print(output)


@pytest.fixture
async def cli_database(servers: Servers) -> AsyncIterator[str]:
    name = f"tracecode_cli_{secrets.token_hex(4)}"
    url = await create_database(servers, name)
    yield url
    await drop_database(servers, name)


def test_migrate_twice_then_token_and_serve_with_workers(cli_database: str, servers: Servers) -> None:
    env = _env(DATABASE_URL=cli_database, REDIS_URL=servers.redis_url, TRACECODE_SECRET=secrets.token_hex(16))

    first = _run(env, "migrate")
    second = _run(env, "migrate")
    token = _run(env, "token", "create", "--role", "regulator", "--scope", "630100").strip()

    assert "applied: 0001, 0002" in first
    assert "applied: none (up to date)" in second and "regions loaded: 0" in second
    with _serving(env, "--workers", "2") as base:
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
    env = _env(TRACECODE_DATA_DIR=str(data_dir))

    with _serving(env, "--demo") as base:
        health = httpx.get(f"{base}/healthz").json()
        output = _run(env, "demo")  # reuses the running embedded servers, loads nothing new, prints the URLs
        urls = re.findall(r"https?://\S+/t/\d{20}", output)
        pages = [httpx.get(url.replace("http://127.0.0.1:8000", base)) for url in urls]

    assert health == {"status": "ok", "postgres": "ok", "redis": "ok"}
    assert len(urls) >= 4
    assert all(p.status_code == 200 and "追溯链" in p.text for p in pages)
    assert not list(data_dir.glob("run/*.sock")), "embedded Redis still running after the server stopped"
