"""Printing results: plain text tables, the machine they were measured on, and their JSON form."""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from phases import Measurement, median_measurement
from sizes import SizeStep
from stores import MEMORY_SETTLE_S

OUT_DIR = Path(__file__).with_name("out")  # gitignored
KIB = 1 << 10
MIB = 1 << 20
TABLES_SHOWN = 5  # tables named in a store-size step's growth line, the largest growth first


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table, the first column left-aligned and the rest right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def spread(runs: Sequence[Measurement]) -> str:
    """min-max of requests per second over repeated runs, e.g. "4810-5230"; "" for one run."""
    if len(runs) < 2:
        return ""
    values = [m.load.rps for m in runs]
    return f"{min(values):,.0f}-{max(values):,.0f}"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def describe_machine() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "-"
    return (
        f"machine: {os.cpu_count()} cores, load average {load}; Python {platform.python_version()}; "
        f"granian {_version('granian')}, uvicorn {_version('uvicorn')}, uvloop {_version('uvloop')}, "
        f"httptools {_version('httptools')}, starlette {_version('starlette')}, redis-py {_version('redis')}"
    )


def accounting_table(labelled: Sequence[tuple[str, Measurement]]) -> str:
    """Where the CPU went in each run (cores kept busy), the server's CPU per request, and what Redis saw."""
    rows = []
    for label, m in labelled:
        cpu = m.cpu
        server_us = cpu.group_s / m.load.requests * 1e6 if m.load.requests else 0.0
        rows.append(
            [
                label,
                f"{m.cores(cpu.group_s):.2f}",
                f"{server_us:.0f}",
                f"{m.cores(cpu.children_s):.2f}",
                f"{m.cores(cpu.postgres_s):.2f}",
                f"{m.cores(cpu.redis_s):.2f}",
                f"{m.cores(m.other_cpu_s):.2f}",
                f"{m.redis.hits:,}",
                f"{m.redis.misses:,}",
                f"{m.redis.keys:,}",
            ]
        )
    headers = ["run", "server", "us/req", "generator", "postgres", "redis", "other", "hits", "misses", "keys+"]
    return table(headers, rows)


def medians(by_name: dict[str, list[Measurement]]) -> list[tuple[str, Measurement]]:
    return [(name, median_measurement(runs)) for name, runs in by_name.items() if runs]


def write_json(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")


def statuses_text(statuses: Mapping[int, int]) -> str:
    """Answers by status, e.g. "400: 60, 429: 29,153"; "-" for none."""
    return ", ".join(f"{status}: {n:,}" for status, n in sorted(statuses.items())) or "-"


def per_request_text(count: int, requests: int) -> str:
    """A count per request, "0" when exactly none, enough digits to see one in a thousand."""
    if count == 0:
        return "0"
    value = count / requests if requests else 0.0
    return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.4f}"


def store_io_table(labelled: Sequence[tuple[str, Measurement]]) -> str:
    """The service's Redis commands and Postgres transactions in each run, against an idle interval of the same
    length right before it where one was measured, and what is left per request."""
    rows = []
    for label, m in labelled:
        store, idle, net = m.store, m.idle, m.net_store
        if store is None or net is None:
            continue
        requests = m.load.requests
        rows.append(
            [
                label, f"{requests:,}",
                f"{store.redis_total:,}", f"{idle.redis_total:,}" if idle else "-", f"{net.redis_total:,}",
                per_request_text(net.redis_total, requests),
                f"{store.postgres_xacts:,}", f"{idle.postgres_xacts:,}" if idle else "-", f"{net.postgres_xacts:,}",
                per_request_text(net.postgres_xacts, requests),
            ]
        )  # fmt: skip
    headers = ["run", "requests", "redis cmds", "idle", "net", "/req", "pg xacts", "idle", "net", "/req"]
    return table(headers, rows)


def store_commands_lines(labelled: Sequence[tuple[str, Measurement]]) -> list[str]:
    """Per run: the Redis commands by name, in the run and in its idle interval."""
    lines = []
    for label, m in labelled:
        if m.store is None:
            continue
        line = f"  {label}: {m.store.describe_commands()}"
        if m.idle is not None:
            line += f" | idle: {m.idle.describe_commands()}"
        lines.append(line)
    return lines


def cpu_per_request_table(labelled: Sequence[tuple[str, Measurement]]) -> str:
    """Microseconds of CPU per answer in the server, Postgres, Redis and the load generator: what limits a run."""
    rows = []
    for label, m in labelled:
        requests = m.load.requests
        cpu = m.cpu

        def us(seconds: float, requests: int = requests) -> str:
            return f"{seconds / requests * 1e6:.0f}" if requests else "-"

        busy = cpu.group_s + cpu.postgres_s + cpu.redis_s + cpu.children_s
        rows.append(
            [
                label, f"{m.load.rps:,.0f}", us(cpu.group_s), us(cpu.postgres_s), us(cpu.redis_s), us(cpu.children_s),
                us(busy), f"{m.cores(busy):.2f}", f"{m.cores(m.other_cpu_s):.2f}",
            ]
        )  # fmt: skip
    headers = ["run", "req/s", "server", "postgres", "redis", "generator", "all four", "cores", "other cores"]
    return table(headers, rows)


def _bytes_text(n: int) -> str:
    """e.g. "12.52 MiB", "-416.0 KiB", "0 B"."""
    if abs(n) >= MIB:
        return f"{n / MIB:,.2f} MiB"
    return f"{n / KIB:,.1f} KiB" if abs(n) >= KIB else f"{n:,} B"


def _per_code_text(value: float, unit: str) -> str:
    """Three significant digits or so: "123 B", "12.3 B", "0.41 B"."""
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:,.{digits}f} {unit}"


def _seconds_text(seconds: float) -> str:
    return f"{seconds:,.2f} s" if seconds >= 1 else f"{seconds * 1e3:,.1f} ms"


def _growth_row(store: str, measured: str, codes: int, before: int, after: int, *, unit: str = "B") -> list[str]:
    """A row of the store-size table: a reading before and after `codes` were issued or scanned, in `unit`
    ("B": bytes, shown in KiB or MiB as they grow; anything else: a plain count)."""

    def shown(n: int) -> str:
        return _bytes_text(n) if unit == "B" else f"{n:,}"

    per_code = _per_code_text((after - before) / codes, unit) if codes else "-"
    return [store, measured, f"{codes:,}", shown(before), shown(after), shown(after - before), per_code]


def _postgres_size_rows(steps: Sequence[SizeStep]) -> list[list[str]]:
    return [
        _growth_row(
            "postgres", f"pg_database_size, {step.requests:,} x {step.codes_per_request:,} codes issued", step.codes,
            step.before.total_bytes, step.after.total_bytes,
        )
        for step in steps
    ]  # fmt: skip


def _redis_size_rows(m: Measurement) -> list[list[str]]:
    if m.memory is None:
        return []
    before, after, scanned = m.memory.before, m.memory.after, m.load.requests
    what = f"{m.phase} (median round), codes scanned"
    return [
        _growth_row("redis", f"used_memory, {what}", scanned, before.used_bytes, after.used_bytes),
        _growth_row(
            "redis", f"used_memory less client buffers, {what}", scanned, before.stored_bytes, after.stored_bytes
        ),
        _growth_row("redis", f"keys (DBSIZE), {what}", scanned, before.keys, after.keys, unit="keys"),
    ]


def store_sizes_lines(steps: Sequence[SizeStep], scanned: Measurement | None, connections: int) -> list[str]:
    """What issued package codes cost Postgres (`steps`, bench/sizes.py) and what the codes a phase scanned left
    in Redis (`scanned`, a phase that reads memory): a table, then what grew and how long the requests took."""
    rows = _postgres_size_rows(steps) + (_redis_size_rows(scanned) if scanned is not None else [])
    if not rows:
        return []
    lines = [table(["store", "measured", "codes", "before", "after", "grew", "per code"], rows)]
    for step in steps:
        grown = ", ".join(
            f"{name} +{_bytes_text(n)} ({_per_code_text(n / step.codes, 'B')}/code)"
            for name, n in step.grown_tables()[:TABLES_SHOWN]
        )
        seconds = step.request_seconds
        took = (
            f"issue_labels of {step.codes_per_request:,} codes returned in {_seconds_text(seconds[0])} (committed; "
            "the CSV answer streams after)"
            if len(seconds) == 1
            else f"{len(seconds):,} issue_labels calls of {step.codes_per_request:,} codes: median "
            f"{_seconds_text(median(seconds))}, slowest {_seconds_text(max(seconds))}, {_seconds_text(sum(seconds))} "
            "in all"
        )
        lines.append(f"  {step.requests:,} x {step.codes_per_request:,}: {took}")
        lines.append(f"    grew: {grown or 'nothing'}")
        if not (step.before.is_checkpointed and step.after.is_checkpointed):
            lines.append("    (CHECKPOINT refused: sizes read without one)")
    if scanned is not None and scanned.memory is not None:
        lines.append(
            f"  redis: read {MEMORY_SETTLE_S:g} s after {scanned.phase}'s warm-up and after its run; codes scanned = "
            f"the run's answers (up to {connections} more were in flight at its end); client buffers "
            "(mem_clients_normal) come and go with the load"
        )
    return lines
