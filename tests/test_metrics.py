from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from codegen.format import compose
from resolver.ops.metrics import SYNC_INTERVAL_S
from resolver.ops.server import METRICS_DIR_VAR, metrics_dir
from resolver.ops.settings import Settings
from tests.conftest import Service
from tests.helpers import START_TIMEOUT_S, free_port, register_batch, serving, subprocess_env


def _value(text: str, pattern: str, *, missing: float | None = None) -> float:
    match = re.search(rf"^{pattern} (\S+)$", text, re.MULTILINE)
    if match is None and missing is not None:
        return missing
    assert match is not None, pattern
    return float(match.group(1))


async def test_metrics_count_requests_by_route_template_and_cache_tiers(service: Service) -> None:
    code = (await register_batch(service))["trace_code"]
    for _ in range(3):
        await service.client.get(f"/api/v1/codes/{code}")
    await service.client.get(f"/api/v1/codes/{compose(1, '630121', 12345)}")

    text = (await service.client.get("/metrics")).text

    route = r'route="/api/v1/codes/\{code:path\}"'
    assert _value(text, rf'tracecode_requests_total\{{method="GET",{route},status="200"\}}') == 3
    assert _value(text, rf'tracecode_requests_total\{{method="GET",{route},status="404"\}}') == 1
    assert _value(text, rf"tracecode_request_duration_seconds_count\{{{route}\}}") == 4
    assert _value(text, r'tracecode_cache_total\{tier="local_hits"\}') == 2
    assert _value(text, r'tracecode_cache_total\{tier="postgres_loads"\}') == 2
    assert _value(text, r'tracecode_store_errors_total\{store="postgres"\}') == 0
    assert code not in text  # codes never become labels


async def test_metrics_count_pages_refusals_and_other_methods_under_their_route(service: Service) -> None:
    code = (await register_batch(service))["trace_code"]
    await service.client.get(f"/t/{code}", headers={"Accept": "text/html"})
    await service.client.get(f"/t/{code[:-1]}x", headers={"Accept": "text/html"})
    await service.client.head(f"/api/v1/codes/{code}")
    await service.client.options(f"/api/v1/codes/{code}")

    text = (await service.client.get("/metrics")).text

    page, document = r'route="/t/\{code:path\}"', r'route="/api/v1/codes/\{code:path\}"'
    assert _value(text, rf'tracecode_requests_total\{{method="GET",{page},status="200"\}}') == 1
    assert _value(text, rf'tracecode_requests_total\{{method="GET",{page},status="400"\}}') == 1
    assert _value(text, rf'tracecode_requests_total\{{method="HEAD",{document},status="200"\}}') == 1
    assert _value(text, rf'tracecode_requests_total\{{method="OPTIONS",{document},status="405"\}}') == 1


# Workers in prometheus_client's multiprocess mode: real processes writing to one directory.

WORKER = """
import asyncio, sys
from starlette.requests import Request
from resolver.ops.metrics import Metrics
metrics = Metrics()
for _ in range(int(sys.argv[1])):
    metrics.observe("GET", "/livez", int(sys.argv[2]), 0.003)
metrics.sync()
if sys.argv[3] == "scrape":
    scope = {"type": "http", "method": "GET", "path": "/metrics", "headers": []}
    print(asyncio.run(metrics.endpoint(Request(scope))).body.decode())
"""


def _worker(directory: Path, requests: int, status: int, *, is_scrape: bool = False) -> str:
    env = subprocess_env(PROMETHEUS_MULTIPROC_DIR=str(directory))
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(requests), str(status), "scrape" if is_scrape else "-"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout


def test_the_figures_of_every_worker_of_the_run_are_summed_the_exited_ones_too(tmp_path: Path) -> None:
    _worker(tmp_path, 3, 200)
    _worker(tmp_path, 4, 200)
    text = _worker(tmp_path, 5, 404, is_scrape=True)

    livez = 'route="/livez"'
    assert _value(text, rf'tracecode_requests_total\{{method="GET",{livez},status="200"\}}') == 7
    assert _value(text, rf'tracecode_requests_total\{{method="GET",{livez},status="404"\}}') == 5
    assert _value(text, rf"tracecode_request_duration_seconds_count\{{{livez}\}}") == 12
    assert _value(text, rf'tracecode_request_duration_seconds_bucket\{{le="0.005",{livez}\}}') == 12
    assert _value(text, rf'tracecode_request_duration_seconds_bucket\{{le="0.002",{livez}\}}') == 0
    assert _value(text, rf"tracecode_request_duration_seconds_sum\{{{livez}\}}") == pytest.approx(12 * 0.003)
    assert _value(text, "tracecode_workers") == 1  # the two that exited are no longer live


def _scrape(base: str) -> str:
    for _ in range(5):  # a connection the killed worker had accepted fails: ask again
        try:
            response = httpx.get(f"{base}/metrics", timeout=5)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    assert response.status_code == 200
    return response.text


def test_counters_never_go_down_with_redis_away_or_a_worker_killed(settings: Settings, tmp_path: Path) -> None:
    env = subprocess_env(
        DATABASE_URL=settings.database_url, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",  # Redis away
        TRACECODE_SECRET="s" * 16, TRACECODE_DATA_DIR=str(tmp_path),
    )  # fmt: skip
    unmatched = r'tracecode_requests_total\{method="GET",route="unmatched",status="404"\}'
    with serving(env, "--workers", "2") as base:
        for _ in range(40):  # each on a connection of its own, so that both workers answer some
            assert httpx.get(f"{base}/no-such-page", timeout=5).status_code == 404
        workers = [int(p.stem.rpartition("_")[2]) for p in tmp_path.glob("metrics-*/gauge_livesum_*.db")]
        seen: list[float] = []
        deadline = time.monotonic() + 10 * SYNC_INTERVAL_S
        while not seen or seen[-1] < 40 and time.monotonic() < deadline:
            seen.append(_value(_scrape(base), unmatched, missing=0.0))
            time.sleep(0.1)
        os.kill(workers[0], signal.SIGKILL)
        after_kill = [_value(_scrape(base), unmatched) for _ in range(10)]
        killed_is_live = any(tmp_path.glob(f"metrics-*/gauge_livesum_{workers[0]}.db"))
        deadline = time.monotonic() + START_TIMEOUT_S
        while (live := _value(_scrape(base), "tracecode_workers")) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)  # until the server has started a worker in place of the killed one

    assert len(workers) == 2
    assert seen == sorted(seen) and seen[-1] == 40, seen
    assert after_kill == [40] * 10
    assert not killed_is_live and live == 2
    assert not list(tmp_path.glob("metrics-*")), "the server removes its metrics directory"


def test_each_start_of_the_server_sums_no_figure_of_an_earlier_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(METRICS_DIR_VAR, raising=False)
    with metrics_dir(tmp_path) as first:
        assert os.environ[METRICS_DIR_VAR] == str(first) and first.parent == tmp_path
        (first / "counter_1.db").write_bytes(b"figures")
    with metrics_dir(tmp_path) as second:
        assert list(second.iterdir()) == []
    assert list(tmp_path.iterdir()) == [] and METRICS_DIR_VAR not in os.environ

    given = tmp_path / "operator"
    given.mkdir()
    (given / "counter_1.db").write_bytes(b"figures of an earlier run")
    (given / "README").write_text("not ours")
    monkeypatch.setenv(METRICS_DIR_VAR, str(given))
    with metrics_dir(tmp_path / "data") as path:
        assert path == given and [p.name for p in given.iterdir()] == ["README"]
