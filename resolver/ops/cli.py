"""The `tracecode` command line: migrate, serve, demo, token create, labels, import, export, bench."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import asyncpg

from resolver import db
from resolver.api.auth import ROLES, create_token
from resolver.api.issuer import CodeIssuer
from resolver.ops.embedded import ensure_services
from resolver.ops.settings import DEFAULT_HOST, DEFAULT_PORT, Settings, SettingsError

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
        report = await migrate(conn, code_partitions=settings.code_partitions, secret=settings.secret)
        applied = ", ".join(report.applied) or "none (up to date)"
        print(f"migrations applied: {applied}")
        print(f"trace code partitions: {report.code_partitions}; event partitions created: "
              f"{report.event_partitions_created}; regions loaded: {report.regions_loaded}")  # fmt: skip

    await _with_connection(settings, work)


async def _demo(settings: Settings) -> None:
    from resolver.ops.demo import load_demo

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


LABEL_SUFFIXES = (".csv", ".pdf")


async def _labels(settings: Settings, batch_code: str, count: int, out: Path, *, is_digital_link: bool) -> int:
    from cache.store import REDIS_ERRORS, DocumentCache, redis_client
    from resolver.api import labels
    from resolver.edge.problems import Problem
    from resolver.scan.resolve import canonical_code

    assert settings.database_url is not None and settings.redis_url is not None
    if not os.environ.get("TRACECODE_PUBLIC_URL"):
        logger.warning("TRACECODE_PUBLIC_URL is not set: the labels' QR codes point at %s", settings.public_url)
    started = time.perf_counter()
    pool = await db.create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        batch = await labels.find_batch(pool, canonical_code(batch_code))
        link_path = labels.link_path(batch, "digital_link" if is_digital_link else "trace")
        sheet = labels.label_sheet(settings.public_url, batch, link_path) if out.suffix.lower() == ".pdf" else None
        issued = await labels.issue_labels(pool, CodeIssuer(settings.secret), settings.secret, batch, count)
    except (Problem, ValueError) as exc:
        print(f"tracecode: {exc.detail if isinstance(exc, Problem) else exc}", file=sys.stderr)
        return 1
    finally:
        await pool.close()
    redis = redis_client(settings.redis_url)
    try:  # the batch's chain has a new event
        await DocumentCache(redis).invalidate_batch(batch.batch_id)
    except REDIS_ERRORS as exc:
        logger.warning(
            "cached documents of batch %s not invalidated (stale for at most their TTL): %r", batch_code, exc
        )
    finally:
        await redis.aclose()
    print(f"issued {count} package codes (产品追溯码) for batch {batch.trace_code} ({batch.product_name}) "
          f"in {time.perf_counter() - started:.2f}s")  # fmt: skip
    prefix = labels.url_prefix(settings.public_url, link_path)
    print(f"  each label's URL: {prefix}{{code}}")
    if sheet is None:
        labels.write_csv(issued, prefix, out)
        print(f"  {out}: code,url for label-printer software")
    else:
        for path, pages in labels.write_pdf(issued, sheet, out):
            print(f"  {path}: {pages} A4 page(s) of 24 labels, 70 x 37 mm; print at actual size")
    return 0


def _label_count(text: str) -> int:
    from resolver.api.labels import MAX_LABELS_PER_REQUEST

    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_LABELS_PER_REQUEST):
        raise argparse.ArgumentTypeError(f"a whole number from 1 to {MAX_LABELS_PER_REQUEST}, got {text!r}")
    return int(text)


def _label_file(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in LABEL_SUFFIXES:
        raise argparse.ArgumentTypeError(f"a .csv or .pdf file name, got {text!r}")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"directory {str(path.parent)!r} does not exist")
    return path


async def _import(settings: Settings, args: argparse.Namespace) -> int:
    from resolver.api.imports import import_command

    assert settings.database_url is not None
    return await import_command(
        settings.database_url, settings.redis_url, args.kind, args.file,
        mode="good_rows" if args.good_rows else "all_or_nothing", is_dry_run=args.dry_run,
    )  # fmt: skip


def _export(settings: Settings, args: argparse.Namespace) -> int:
    from resolver.api.export import export_command

    assert settings.database_url is not None
    with args.out.open("wb") if args.out else open(sys.stdout.fileno(), "wb", closefd=False) as out:
        return asyncio.run(
            export_command(
                settings.database_url, settings.public_url, region_code=args.region, start=args.start, end=args.end,
                export_format=args.format, out=out,
            )
        )  # fmt: skip


def _date_arg(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a date, YYYY-MM-DD, got {text!r}") from None


BENCH_SUITES = {"peak": "peak.py"}  # `tracecode bench peak ...` runs bench/peak.py ...


def _bench(suite: str, args: Sequence[str]) -> int:
    """Run a benchmark script of the source checkout (bench/ is not part of the installed package)."""
    script = Path(__file__).resolve().parents[2] / "bench" / BENCH_SUITES[suite]
    if not script.is_file():
        print(
            f"tracecode bench: {script} not found. The benchmarks live in the source checkout's bench/ folder, "
            "which is not installed: run `tracecode bench` from an editable install of a git clone "
            "(`make install`), or `python bench/peak.py` there.",
            file=sys.stderr,
        )
        return 2
    return subprocess.run([sys.executable, str(script), *args], check=False).returncode


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
    labels = commands.add_parser(
        "labels", help="issue package codes (产品追溯码) for a batch into a CSV file or PDF label sheets"
    )
    labels.add_argument("--batch", required=True, help="the batch's trace code (or national long form)")
    labels.add_argument("--count", required=True, type=_label_count, help="how many package codes")
    labels.add_argument(
        "--out",
        required=True,
        type=_label_file,
        help="labels.csv (code,url for label-printer software) or labels.pdf (A4 sheets, 24 labels a page; "
        "10,000 labels a file, more go to labels-001.pdf, labels-002.pdf, ...)",
    )
    labels.add_argument(
        "--digital-link",
        action="store_true",
        help="give each code its GS1 Digital Link URI, PUBLIC_URL/01/{gtin}/10/{lot}/21/{code}, instead of "
        "PUBLIC_URL/t/{code} (the batch's product needs a GTIN, its lot 1 to 20 GS1 characters)",
    )
    importing = commands.add_parser("import", help="import producers or certifications from a CSV file (UTF-8)")
    importing.add_argument("kind", choices=("producers", "certifications"))
    importing.add_argument(
        "file", type=Path, help="CSV with a header row (see resolver/api/imports.py for the columns)"
    )
    importing.add_argument("--good-rows", action="store_true", help="import the good rows even when others are bad")
    importing.add_argument("--dry-run", action="store_true", help="check the file and report, write nothing")
    exporting = commands.add_parser("export", help="export a region's batches and events of a period")
    exporting.add_argument("what", choices=("batches",))
    exporting.add_argument("--region", required=True, help="county, prefecture or province code")
    exporting.add_argument("--from", dest="start", required=True, type=_date_arg, help="first day, YYYY-MM-DD")
    exporting.add_argument("--to", dest="end", required=True, type=_date_arg, help="last day, YYYY-MM-DD")
    exporting.add_argument("--format", choices=("national", "epcis"), default="national")
    exporting.add_argument("--out", type=Path, help="file to write (default: standard output)")
    bench = commands.add_parser(
        "bench",
        help="run a load suite from the source checkout: `tracecode bench peak --users N --duration S` "
        "(the rest of the line goes to bench/peak.py; `tracecode bench peak --help` lists it)",
    )
    bench.add_argument("suite", choices=sorted(BENCH_SUITES))
    bench.add_argument("args", nargs=argparse.REMAINDER, help="options of the suite")
    return parser


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "bench":  # the suite starts (or finds) its own servers
        return _bench(args.suite, args.args)
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
        elif args.command == "labels":
            return asyncio.run(_labels(ready, args.batch, args.count, args.out, is_digital_link=args.digital_link))
        elif args.command == "import":
            return asyncio.run(_import(ready, args))
        elif args.command == "export":
            return _export(ready, args)
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
            from resolver.ops.server import serve

            print(f"serving on http://{args.host}:{args.port} with {args.workers} worker(s) ({args.server})")
            serve(args.host, args.port, args.workers, args.server, data_dir=ready.data_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
