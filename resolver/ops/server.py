"""Run the application under an ASGI server with N worker processes.

Granian is the default: measured side by side with uvicorn (httptools + uvloop) on this
machine, it answered more requests per second at lower tail latency (bench/servers.py prints
the table). uvicorn stays available with `--server uvicorn`.
"""

from __future__ import annotations

from typing import Literal

APP_FACTORY = "resolver.app:app_from_env"
BACKLOG = 2_048

ServerName = Literal["granian", "uvicorn"]
SERVERS: tuple[ServerName, ...] = ("granian", "uvicorn")


def serve(host: str, port: int, workers: int, server: ServerName = "granian") -> None:
    """Serve until interrupted. Workers build the app from the environment (see resolver.ops.settings)."""
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
