"""Run the application under an ASGI server with N worker processes.

Granian is the default: measured side by side with uvicorn (httptools + uvloop) on this
machine, it answered more requests per second at lower tail latency (bench/servers.py prints
the table). uvicorn stays available with `--server uvicorn`.

Every worker writes its metrics to files of its own in PROMETHEUS_MULTIPROC_DIR (prometheus_client's
multiprocess mode, resolver.ops.metrics); `serve` makes that directory fresh for each start, before
any worker imports prometheus_client.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

APP_FACTORY = "resolver.app:app_from_env"
BACKLOG = 2_048

ServerName = Literal["granian", "uvicorn"]
SERVERS: tuple[ServerName, ...] = ("granian", "uvicorn")
METRICS_DIR_VAR = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def metrics_dir(data_dir: Path) -> Iterator[Path]:
    """A directory with no metric files in it, named in PROMETHEUS_MULTIPROC_DIR for the workers, for the block.

    An operator's PROMETHEUS_MULTIPROC_DIR is emptied of metric files (`*.db`) first, so that no figure of an
    earlier run is summed into this one's; without one, a new directory under `data_dir`, removed afterwards.
    """
    given = os.environ.get(METRICS_DIR_VAR)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        yield path
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="metrics-", dir=data_dir))
    os.environ[METRICS_DIR_VAR] = str(path)
    try:
        yield path
    finally:
        del os.environ[METRICS_DIR_VAR]
        shutil.rmtree(path, ignore_errors=True)


def serve(host: str, port: int, workers: int, server: ServerName = "granian", *, data_dir: Path) -> None:
    """Serve until interrupted. Workers build the app from the environment (see resolver.ops.settings) and write
    their metrics under `data_dir` (see metrics_dir)."""
    with metrics_dir(data_dir):
        _serve(host, port, workers, server)


def _serve(host: str, port: int, workers: int, server: ServerName) -> None:
    if server == "granian":
        from granian import Granian
        from granian.constants import Interfaces, Loops

        Granian(
            APP_FACTORY,
            factory=True,
            address=host,
            port=port,
            interface=Interfaces.ASGI,
            workers=workers,
            loop=Loops.uvloop,
            backlog=BACKLOG,
            respawn_failed_workers=True,
            log_access=False,
        ).serve()
    else:
        import uvicorn

        uvicorn.run(
            APP_FACTORY,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http="httptools",
            backlog=BACKLOG,
            access_log=False,
            server_header=False,
        )
