"""How fast codes are issued: the numba block kernel on one thread against the pure-Python reference.

    .venv/bin/python bench/codegen_speed.py [--count N] [--runs R] [--python-count P] [--baseline FILE]

Prints one table: ``issue_block`` (permutation, check digits and ASCII digits into a new array) on
the calling thread, median of ``--runs`` runs of ``--count`` codes; the Python reference
(``compose(permute(seq))`` with keys derived once, as the kernel gets them) on ``--python-count``
codes, extrapolated per code; their ratio; and ``block_to_bytes`` on the issued block. Then the machine
and the parameters, and whether the targets are met: at least 20 million codes/s and at least 50x the
reference. The first codes of the block are checked against the reference on the way.

The kernel is single-threaded (no ``parallel=True``), so the numba thread count does not matter; the
CPU time of the calling thread is shown beside the wall time, and a ``cpu/wall`` well below 1 means
the machine was busy with something else during the run (the verdict is on wall time; the report then
also gives the rates by CPU time). ``--baseline`` takes another copy of
``codegen/kernels.py`` (say, from before a change) and times its ``issue_block`` in alternation with
the current one, so that both see the same load.

(Not called ``bench/codegen.py``: a script of that name would shadow the ``codegen`` package when run
from bench/, and mypy would see two modules named ``codegen``.)
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numba
import numpy as np

from codegen import kernels
from codegen.format import CODE_LENGTH, compose
from codegen.permute import DOMAIN_SIZE, HALF_MODULUS, ROUNDS, RoundKeys, derive_round_keys, permute

TARGET_CODES_PER_S: Final = 20_000_000
TARGET_RATIO: Final = 50.0
BUSY_CPU_SHARE: Final = 0.9  # below this, another process took the core during the runs
SECRET: Final = b"tracecode-bench-secret-0001"
CODE_TYPE: Final = 4
REGION: Final = "632223"
START_SEQ: Final = 7_654_321

IssueBlock = Callable[[int, str, int, int, RoundKeys], kernels.CodeBlock]


@dataclass(frozen=True, slots=True)
class Timing:
    """Wall and calling-thread CPU seconds of each run of one measurement, for ``items`` items a run."""

    items: int
    wall_s: tuple[float, ...]
    cpu_s: tuple[float, ...]

    @property
    def median_s(self) -> float:
        return statistics.median(self.wall_s)

    @property
    def per_s(self) -> float:
        return self.items / self.median_s

    @property
    def ns_per_item(self) -> float:
        return self.median_s / self.items * 1e9

    @property
    def cpu_per_s(self) -> float:
        """Items per second of the calling thread's CPU time (median run): what an idle machine would do."""
        return self.items / statistics.median(self.cpu_s)

    @property
    def cpu_share(self) -> float:
        return sum(self.cpu_s) / sum(self.wall_s)


def _time_once(run: Callable[[], object]) -> tuple[float, float]:
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    run()
    wall1, cpu1 = time.perf_counter(), time.thread_time()
    return wall1 - wall0, cpu1 - cpu0


def time_runs(runs: int, candidates: Sequence[tuple[int, Callable[[], object]]]) -> list[Timing]:
    """Time each ``(items, run)`` candidate ``runs`` times, in alternation (a, b, c, a, b, c, ...).

    A load that comes and goes on the machine then falls on all of them alike, and their ratios hold
    better than their absolute rates.
    """
    walls: list[list[float]] = [[] for _ in candidates]
    cpus: list[list[float]] = [[] for _ in candidates]
    for _ in range(runs):
        for index, (_items, run) in enumerate(candidates):
            wall, cpu = _time_once(run)
            walls[index].append(wall)
            cpus[index].append(cpu)
    return [Timing(items, tuple(w), tuple(c)) for (items, _run), w, c in zip(candidates, walls, cpus, strict=True)]


def python_reference(keys: list[int], start: int, count: int) -> list[str]:
    return [compose(CODE_TYPE, REGION, permute(seq, keys)) for seq in range(start, start + count)]


def load_baseline(path: Path) -> IssueBlock:
    """``issue_block`` of another copy of ``codegen/kernels.py`` (imported under a name of its own)."""
    spec = importlib.util.spec_from_file_location("codegen_kernels_baseline", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # numba's on-disk cache finds the module of a kernel by name
    spec.loader.exec_module(module)
    issue: IssueBlock = module.issue_block
    return issue


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _load() -> str:
    if not hasattr(os, "getloadavg"):
        return "n/a"
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _row(name: str, timing: Timing, unit: str, note: str = "") -> str:
    rate = f"{timing.per_s / 1e6:8.2f} M{unit}/s"
    return (
        f"{name:<30} {timing.items:>12,} {timing.median_s * 1e3:>11.1f} {rate:>16} "
        f"{timing.ns_per_item:>9.1f} {1e9 / timing.cpu_per_s:>8.1f} {timing.cpu_share:>8.2f}  {note}"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="numba code-issuing kernel against the pure-Python reference")
    parser.add_argument("--count", type=int, default=10_000_000, help="codes per kernel run (default 10M)")
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement; the median is shown (default 5)")
    parser.add_argument(
        "--python-count", type=int, default=20_000, help="codes per run of the Python reference (default 20k)"
    )
    parser.add_argument("--baseline", type=Path, help="another copy of codegen/kernels.py to time beside this one")
    args = parser.parse_args(argv)
    if args.count < 1 or args.runs < 1 or args.python_count < 1:
        parser.error("--count, --runs and --python-count must be positive")
    if START_SEQ + args.count > DOMAIN_SIZE:
        parser.error("--count is larger than the sequence space")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    count: int = args.count
    runs: int = args.runs
    python_count = min(args.python_count, count)
    keys = derive_round_keys(SECRET, CODE_TYPE, REGION)
    key_ints = keys.tolist()

    compile_start = time.perf_counter()
    kernels.warm()
    warm_s = time.perf_counter() - compile_start
    baseline = load_baseline(args.baseline) if args.baseline else None
    if baseline is not None:
        baseline(CODE_TYPE, REGION, 0, 1, keys)  # compile it before timing

    def issue() -> kernels.CodeBlock:
        return kernels.issue_block(CODE_TYPE, REGION, START_SEQ, count, keys)

    block = issue()
    expected = python_reference(key_ints, START_SEQ, python_count)
    agrees = kernels.block_to_strings(block[:python_count]) == expected
    candidates: list[tuple[int, Callable[[], object]]] = [
        (count, issue),
        (python_count, lambda: python_reference(key_ints, START_SEQ, python_count)),
        (count, lambda: kernels.block_to_bytes(block)),
    ]
    if baseline is not None:
        old_block = baseline(CODE_TYPE, REGION, START_SEQ, python_count, keys)
        agrees = agrees and np.array_equal(old_block, block[:python_count])
        candidates.append((count, lambda: baseline(CODE_TYPE, REGION, START_SEQ, count, keys)))
    kernel, python_timing, bytes_timing, *baseline_timing = time_runs(runs, candidates)

    ratio = kernel.per_s / python_timing.per_s
    header = (
        f"{'measurement':<30} {'codes':>12} {'median ms':>11} {'rate':>16} {'ns/code':>9} {'cpu ns':>8} {'cpu/wall':>8}"
    )
    print(header)
    print("-" * len(header))
    print(_row("numba issue_block, 1 thread", kernel, "codes", "codes in a new (n, 20) uint8 array"))
    for old in baseline_timing:
        print(_row("baseline issue_block", old, "codes", f"this kernel / baseline: {kernel.per_s / old.per_s:.2f}x"))
    print(_row("Python reference", python_timing, "codes", "compose(permute(seq)), keys derived once"))
    print(_row("block_to_bytes", bytes_timing, "codes", f"{bytes_timing.per_s * (CODE_LENGTH + 1) / 1e6:,.0f} MB/s"))
    print(f"{'ratio kernel / Python':<30} {ratio:>12.1f}x")
    print()
    print(f"machine: {_cpu_model()}, {_usable_cores()} usable cores ({os.cpu_count()} online), load average {_load()}")
    print(
        f"software: Python {platform.python_version()}, numba {numba.__version__}, NumPy {np.__version__}; "
        f"kernel compiled or loaded from cache in {warm_s:.2f} s"
    )
    print(
        f"parameters: {runs} runs (median), {count:,} codes per kernel run from sequence number {START_SEQ:,}, "
        f"{python_count:,} per Python run; type {CODE_TYPE}, region {REGION}; Feistel over M*M with "
        f"M = {HALF_MODULUS}, {ROUNDS} rounds, cycle walking to [0, 10**11); round-major chunks of "
        f"{kernels.CHUNK} codes"
    )
    print(f"kernel agrees with the Python reference on the first {python_count:,} codes: {'yes' if agrees else 'NO'}")
    if kernel.cpu_share < BUSY_CPU_SHARE or python_timing.cpu_share < BUSY_CPU_SHARE:
        print(
            f"the machine was busy (cpu/wall < {BUSY_CPU_SHARE}): by thread CPU time the kernel does "
            f"{kernel.cpu_per_s / 1e6:.1f}M codes/s, {kernel.cpu_per_s / python_timing.cpu_per_s:.1f}x the reference"
        )
    speed_met = kernel.per_s >= TARGET_CODES_PER_S
    ratio_met = ratio >= TARGET_RATIO
    print(
        f"target >= {TARGET_CODES_PER_S / 1e6:.0f}M codes/s on one thread: {'met' if speed_met else 'NOT met'} "
        f"({kernel.per_s / 1e6:.1f}M)"
    )
    print(f"target >= {TARGET_RATIO:.0f}x the Python reference: {'met' if ratio_met else 'NOT met'} ({ratio:.1f}x)")
    return 0 if agrees else 1


if __name__ == "__main__":
    sys.exit(main())
