"""The `tracecode` command line: migrate, serve, demo, token create."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

import asyncpg

from resolver import db
from resolver.auth import ROLES, create_token
from resolver.embedded import ensure_services
from resolver.issuer import CodeIssuer
from resolver.settings import DEFAULT_HOST, DEFAULT_PORT, Settings, SettingsError

logger = logging.getLogger("tracecode")


@contextmanager
def _services(settings: Settings) -> Iterator[Settings]:
    """`settings` with database and Redis URLs: the configured ones, or embedded servers started for the duration."""
    database_url, redis_url, embedded = ensure_services(settings.data_dir, settings.database_url, settings.redis_url)
    try:
        yield replace(settings, database_url=database_url, redis_url=redis_url)
    finally:
        if embedded is not None:
            embedded.stop()


async def _with_connection(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[None]]) -> None:
    assert settings.database_url is not None
    conn = await db.connect(settings.database_url)
    try:
        await work(conn)
    finally:
        await conn.close()


async def _migrate(settings: Settings) -> None:
    from schema.migrate import migrate

    async def work(conn: asyncpg.Connection) -> None:
        report = await migrate(conn, code_partitions=settings.code_partitions)
        applied = ", ".join(report.applied) or "none (up to date)"
        print(f"migrations applied: {applied}")
        print(f"trace code partitions: {report.code_partitions}; event partitions created: "
              f"{report.event_partitions_created}; regions loaded: {report.regions_loaded}")  # fmt: skip

    await _with_connection(settings, work)


async def _demo(settings: Settings) -> None:
    from resolver.demo import load_demo

    assert settings.database_url is not None
    pool = await db.create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        batches = await load_demo(pool, CodeIssuer(settings.secret))
    finally:
        await pool.close()
    print(f"demo data loaded: {len(batches)} batches. Open, for example:")
    for batch in batches[:4] + batches[-2:]:
        print(f"  {batch.product}: {settings.public_url}/t/{batch.trace_code}")
    print(f"  JSON document: {settings.public_url}/api/v1/codes/{batches[0].trace_code}")
    print(f"  national long form: {settings.public_url}/t/{batches[0].long_code}")
    print(f"  health: {settings.public_url}/healthz")


async def _token_create(settings: Settings, role: str, scope: str) -> None:
    async def work(conn: asyncpg.Connection) -> None:
        print((await create_token(conn, role, scope))[1])

    await _with_connection(settings, work)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tracecode", description="农产品质量安全追溯码服务 / trace-code service")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply the schema migrations (idempotent)")
    serve = commands.add_parser("serve", help="serve the API and the consumer pages")
    serve.add_argument("--host", default=DEFAULT_HOST)
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--server", choices=("granian", "uvicorn"), default="granian")
    serve.add_argument("--migrate", action="store_true", help="migrate before serving")
    serve.add_argument("--demo", action="store_true", help="load the demo data before serving (implies --migrate)")
    commands.add_parser("demo", help="load the demo data (Qinghai producers and batches)")
    token = commands.add_parser("token", help="manage API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser("create", help="print a new token")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--scope", default="")
    return parser


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"tracecode: {exc}", file=sys.stderr)
        return 2
    # A plain SIGTERM would skip the clean-up below and leave embedded servers behind: make it an exit.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    if settings.is_dev_secret:
        logger.warning("TRACECODE_SECRET is not set: using the development key; set it before issuing real codes")
    with _services(settings) as ready:
        if args.command == "migrate":
            asyncio.run(_migrate(ready))
        elif args.command == "demo":
            asyncio.run(_migrate(ready))
            asyncio.run(_demo(ready))
        elif args.command == "token":
            asyncio.run(_token_create(ready, args.role, args.scope))
        elif args.command == "serve":
            if not os.environ.get("TRACECODE_PUBLIC_URL"):
                shown_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
                ready = replace(ready, public_url=f"http://{shown_host}:{args.port}")
                os.environ["TRACECODE_PUBLIC_URL"] = ready.public_url
            if args.migrate or args.demo:
                asyncio.run(_migrate(ready))
            if args.demo:
                asyncio.run(_demo(ready))
            # Workers read their settings from the environment: hand them the URLs of the servers in use.
            assert ready.database_url is not None and ready.redis_url is not None
            os.environ["DATABASE_URL"] = ready.database_url
            os.environ["REDIS_URL"] = ready.redis_url
            from resolver.server import serve

            print(f"serving on http://{args.host}:{args.port} with {args.workers} worker(s) ({args.server})")
            serve(args.host, args.port, args.workers, args.server)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
