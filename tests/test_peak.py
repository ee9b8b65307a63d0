"""The peak-day suite as a user runs it: `tracecode bench peak`, a few seconds, a few users, a small data set."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import TEST_REDIS_DB, Servers
from tests.helpers import TRACECODE, subprocess_env

KINDS = (
    "resolve", "page", "resolve_mistyped", "resolve_never_issued", "gate_scan", "trade", "labels", "recall",
    "recall_seen", "total",
)  # fmt: skip
TIMED_KINDS = ("recall_seen", "total")  # a recall seen within 1 s: a timing, not asserted here
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RUN_TIMEOUT_S = 150


def test_one_command_prints_a_row_per_kind_draws_the_plot_and_loses_no_accepted_scan(
    servers: Servers, tmp_path: Path
) -> None:
    # The suite makes a database of its own on the server and flushes the Redis database it is told to use.
    env = subprocess_env(
        DATABASE_URL=servers.admin_dsn, REDIS_URL=servers.redis_url, TRACECODE_BENCH_REDIS_DB=str(TEST_REDIS_DB)
    )
    args = ["--users", "16", "--duration", "8", "--codes", "2000", "--batches", "4", "--recalls", "1"]
    done = subprocess.run(
        [TRACECODE, "bench", "peak", *args, "--workers", "1", "--out", str(tmp_path / "run")],
        env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.strip()}
    for kind in KINDS:
        assert kind in rows and int(rows[kind][1].replace(",", "")) > 0, f"no {kind} row:\n{done.stdout}"
        if kind not in TIMED_KINDS:
            assert rows[kind][6] == "0", f"failures in {kind}:\n{done.stdout}"  # the failures column: "0 (0.0%)"
    plot = re.search(r"^plot: (.+\.png)$", done.stdout, re.MULTILINE)
    assert plot is not None, done.stdout
    assert Path(plot.group(1)).read_bytes()[:8] == PNG_SIGNATURE
    durability = re.search(r"^durability: .*counted by the users (\d+).*added by the run (\d+): OK", done.stdout, re.M)
    assert durability is not None, done.stdout
    assert int(durability.group(1)) == int(durability.group(2)) > 0
