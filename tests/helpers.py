"""Builders of test data through the public API, with random identities."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from codegen.format import CodeType, region_of
from codegen.gtin import gtin_check_digit
from codegen.permute import issue_one
from resolver.state import app_worker
from tests.conftest import Service, random_credit_code

TRACECODE = str(Path(sys.executable).with_name("tracecode"))
START_TIMEOUT_S = 60.0


async def register_producer(service: Service, *, region: str = "630121", kind: str = "cooperative") -> str:
    credit_code = random_credit_code(region)
    response = await service.client.post(
        "/api/v1/producers",
        json={
            "credit_code": credit_code,
            "name": f"测试合作社{secrets.token_hex(3)}",
            "kind": kind,
            "region_code": region,
            "contact": "0971-0000000",
        },
        headers=service.admin_headers,
    )
    assert response.status_code == 201, response.text
    return credit_code


def batch_body(credit_code: str, **overrides: Any) -> dict[str, Any]:
    today = dt.date.today()
    body: dict[str, Any] = {
        "producer_credit_code": credit_code,
        "product": {"name": "大通牦牛肉", "category": "yak", "gtin": None},
        "lot": f"L{secrets.token_hex(4)}",
        "quantity": 1200,
        "unit": "kg",
        "produced_on": (today - dt.timedelta(days=3)).isoformat(),
        "origin": "青海省西宁市大通县",
        "expires_on": None,
        "inspection": {
            "result": "pass",
            "method": "快速检测",
            "items": ["克伦特罗", {"name": "莱克多巴胺", "result": "pass"}],
            "inspected_on": (today - dt.timedelta(days=2)).isoformat(),
        },
        "certificate": {"kind": "承诺达标合格证", "basis": "self_test", "issued_on": today.isoformat()},
    }
    body.update(overrides)
    return body


async def register_batch(service: Service, credit_code: str | None = None, **overrides: Any) -> dict[str, Any]:
    credit_code = credit_code or await register_producer(service)
    response = await service.client.post(
        "/api/v1/batches", json=batch_body(credit_code, **overrides), headers=service.admin_headers
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def issue_labels(service: Service, batch_code: str, count: int) -> list[str]:
    """`count` package codes of the batch, issued through the API, in sequence order."""
    response = await service.client.post(
        f"/api/v1/batches/{batch_code}/labels",
        json={"count": count},
        headers={**service.admin_headers, "Accept": "application/json"},
        timeout=120,
    )
    assert response.status_code == 201, response.text
    codes: list[str] = response.json()["codes"]
    return codes


def package_code(service: Service, region: str, seq: int) -> str:
    """The package code of sequence number `seq` of `region`, under the service's secret, issued or not."""
    return issue_one(service.settings.secret, CodeType.PACKAGE, region, seq)


def next_package_code(service: Service, code: str) -> str:
    """The package code of the sequence number after `code`'s."""
    return package_code(service, region_of(code), app_worker(service.app).ranges.seq_of(code) + 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def subprocess_env(**values: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({k: v for k, v in values.items() if v is not None})
    return env


@contextmanager
def serving_as_admin(database_url: str, redis_url: str) -> Iterator[tuple[str, dict[str, str]]]:
    """`tracecode serve` on the database with a secret and an admin token of its own: its base URL and the
    admin's headers."""
    admin_token = "admin-" + secrets.token_hex(16)
    env = subprocess_env(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        TRACECODE_SECRET=secrets.token_hex(16),
        TRACECODE_ADMIN_TOKEN=admin_token,
    )
    with serving(env) as base:
        yield base, {"Authorization": f"Bearer {admin_token}"}


def run_tracecode(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([TRACECODE, *args], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@contextmanager
def serving(env: dict[str, str], *args: str) -> Iterator[str]:
    """Run `tracecode serve ARGS` until /livez answers and yield its base URL; stop it with SIGTERM after."""
    port = free_port()
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


async def silent_server(answer_every_s: float | None) -> tuple[asyncio.Server, int]:
    """A server that reads commands and answers +OK to each, one every `answer_every_s` (never with None)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pending = 0
        try:
            while True:
                data = await reader.read(65_536)
                if not data:
                    return
                pending += data.count(b"*")
                if answer_every_s is None:
                    continue
                while pending:
                    await asyncio.sleep(answer_every_s)
                    writer.write(b"+OK\r\n")
                    pending -= 1
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def random_gtin(prefix: str = "069") -> str:
    """A valid 14-digit GTIN no other test uses."""
    body = prefix + "".join(secrets.choice("0123456789") for _ in range(13 - len(prefix)))
    return body + gtin_check_digit(body)
