"""The peak-day mix (issue 6) as locust users: consumers, market gates, producers and a regulator.

    TRACECODE_PEAK_SEED=seed.json locust -f bench/locustfile.py --host URL --headless -u 64 -t 60s

Normally run by bench/peak.py, which seeds the data, starts the server and prints the report; see
bench/PEAK.md for remote deployments and distributed workers. The seed file (written by
`bench/peak.py seed`) names the package codes, the never-issued codes, the batches with their
producer tokens, the gates with their tokens and the regulator's token. It is read from the path
in TRACECODE_PEAK_SEED on every locust process, so a worker on another machine needs its own copy.

    ConsumerUser   most of the load: GET /api/v1/codes/{code} (resolve) and GET /t/{code} (page) of
                   package codes picked with Zipf popularity; 5 % of the lookups are a real code with
                   one digit changed (400 expected: resolve_mistyped), 1 % a well-formed code with a valid
                   check that was never issued (404 expected: resolve_never_issued)
    GateUser       one market gate: POST /api/v1/gate/scans of batch codes (3 % mistyped by hand), each
                   under a new idempotency key; accept and reject are both answers. Now and then a trade
                   (POST /api/v1/trades) out of an entry this gate accepted
    ProducerUser   POST /api/v1/batches/{code}/labels of a few dozen package codes with its own token
    RegulatorUser  recalls the seed's recall batches one by one, spread over the run (--peak-recall-interval),
                   then checks a second later that codes of the batch resolve as recalled (recall_seen)

Every request has a stable name, so that the statistics have one row per kind. The users count what
matters for the durability check (gate scans accepted, rejected, refused, in doubt; trades; labels;
recalls) in a ledger that workers report to the master; the master (or the single process) writes it
as JSON to TRACECODE_PEAK_LEDGER when it quits.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from locust import FastHttpUser, between, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

SEED_ENV = "TRACECODE_PEAK_SEED"
LEDGER_ENV = "TRACECODE_PEAK_LEDGER"
LEDGER_KEY = "tracecode_peak_ledger"
ZIPF_EXPONENT = 1.0  # popularity of the k-th most scanned code ~ 1 / k**s
# Of every 100 lookups of a consumer, 5 are mistyped and 1 never issued: exact shares, spread out (a burst of
# bad lookups from one network would be rate limited, as it should be).
LOOKUP_CYCLE = 100
MISTYPED_SLOTS = frozenset({10, 30, 50, 70, 90})
NEVER_ISSUED_SLOTS = frozenset({60})
PAGE_SHARE = 0.3  # of the good lookups: the consumer's HTML page rather than the JSON document
GATE_MISTYPED_SHARE = 0.03
SCAN_KG = (5, 50)
TRADE_KG = (1, 5)
LABEL_COUNT = (10, 100)
RECALL_CHECK_DELAY_S = 1.0  # the spec: a recall is seen everywhere within one second
RECALL_CHECK_CODES = 5
DEFAULT_RECALL_INTERVAL_S = 20.0
UNIT = "kg"
HTTP_OK = 200
HTTP_CREATED = 201
HTTP_BAD_REQUEST = 400
HTTP_NOT_FOUND = 404
BODY_SAMPLE_CHARS = 200


class Ledger:
    """What the users of a process counted: events (gate decisions, trades, labels, recalls), and every
    request's latency in a bucket of two significant digits, by second and kind. Workers send theirs to the
    master with each stats report (and start again); the master adds them up."""

    __slots__ = ("counts", "failures", "latencies")

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.latencies: Counter[tuple[int, str, float]] = Counter()  # (second, name, ms bucket) -> requests
        self.failures: Counter[tuple[int, str]] = Counter()

    def __repr__(self) -> str:
        return f"Ledger(counts={dict(self.counts)!r}, requests={sum(self.latencies.values())})"

    def record(self, name: str, response_time_ms: float, *, is_failure: bool) -> None:
        second = int(time.time())
        self.latencies[(second, name, float(f"{response_time_ms:.2g}"))] += 1
        if is_failure:
            self.failures[(second, name)] += 1

    def dump(self) -> dict[str, Any]:
        """Plain lists and dicts (what locust's messages and JSON carry)."""
        return {
            "counts": dict(self.counts),
            "latencies": [[s, n, b, c] for (s, n, b), c in self.latencies.items()],
            "failures": [[s, n, c] for (s, n), c in self.failures.items()],
        }

    def add(self, dumped: dict[str, Any]) -> None:
        self.counts.update(dumped["counts"])
        for second, name, bucket, count in dumped["latencies"]:
            self.latencies[(int(second), str(name), float(bucket))] += int(count)
        for second, name, count in dumped["failures"]:
            self.failures[(int(second), str(name))] += int(count)

    def clear(self) -> None:
        self.counts.clear()
        self.latencies.clear()
        self.failures.clear()


_ledger = Ledger()  # this process's users, since the last report to the master
_reported = Ledger()  # on the master: what the workers reported


@dataclass(frozen=True, slots=True)
class Seed:
    """The seed file, read once per process; codes shuffled so that popularity does not follow batches."""

    package_codes: list[str]
    cumulative_weights: list[float]  # Zipf over package_codes, for random.choices
    never_issued: list[str]
    batches: list[dict[str, Any]]  # code, producer_token, sample_codes, is_recall
    gates: list[dict[str, Any]]  # market_id, gate, token
    regulator_token: str
    recall_codes: list[str]

    @classmethod
    def load(cls, path: Path) -> Seed:
        data = json.loads(path.read_text())
        codes = list(data["package_codes"])
        random.Random(data.get("run", "peak")).shuffle(codes)  # the same order on every worker
        total = 0.0
        cumulative = []
        for rank in range(1, len(codes) + 1):
            total += rank**-ZIPF_EXPONENT
            cumulative.append(total)
        return cls(
            codes,
            cumulative,
            list(data["never_issued"]),
            list(data["batches"]),
            list(data["gates"]),
            data["regulator_token"],
            [b["code"] for b in data["batches"] if b.get("is_recall")],
        )


_seed: Seed | None = None


def seed() -> Seed:
    global _seed
    if _seed is None:
        path = os.environ.get(SEED_ENV)
        if not path:
            raise RuntimeError(f"{SEED_ENV} must name the seed file written by `bench/peak.py seed`")
        _seed = Seed.load(Path(path))
    return _seed


def mistype(code: str, rng: random.Random) -> str:
    """`code` with one of its first 18 digits changed: MOD 97-10 catches every single-digit error."""
    position = rng.randrange(18)
    digit = rng.choice([d for d in "0123456789" if d != code[position]])
    return code[:position] + digit + code[position + 1 :]


def _sample(body: bytes | str | None) -> str:
    if body is None:
        return ""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    return text[:BODY_SAMPLE_CHARS]


def _arguments(parser: Any) -> None:
    parser.add_argument(
        "--peak-recall-interval", type=float, default=DEFAULT_RECALL_INTERVAL_S,
        help="seconds between the regulator's recalls (peak.py spreads them over the run)",
    )  # fmt: skip


def _on_request(name: str, response_time: float, exception: BaseException | None, **_: Any) -> None:
    _ledger.record(name, response_time, is_failure=exception is not None)


def _report(client_id: str, data: dict[str, Any]) -> None:
    data[LEDGER_KEY] = _ledger.dump()
    _ledger.clear()


def _collect(client_id: str, data: dict[str, Any]) -> None:
    if LEDGER_KEY in data:
        _reported.add(data[LEDGER_KEY])


def _write_ledger(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    path = os.environ.get(LEDGER_ENV)
    if path:
        _reported.add(_ledger.dump())
        dumped = _reported.dump() | {"distributed": isinstance(environment.runner, MasterRunner)}
        Path(path).write_text(json.dumps(dumped))


def _listen(hook: Any, listener: Callable[..., None]) -> None:
    hook.add_listener(listener)  # locust's EventHook is untyped


_listen(events.init_command_line_parser, _arguments)
_listen(events.request, _on_request)
_listen(events.report_to_master, _report)
_listen(events.worker_report, _collect)
_listen(events.quitting, _write_ledger)


class ConsumerUser(FastHttpUser):
    """A consumer scanning package codes with a phone, or typing them into an app."""

    weight = 20
    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        self.seed = seed()
        self.rng = random.Random()
        self.lookups = self.rng.randrange(LOOKUP_CYCLE)  # users start at different places of the cycle

    def _popular(self) -> str:
        return self.rng.choices(self.seed.package_codes, cum_weights=self.seed.cumulative_weights)[0]

    @task
    def look_up(self) -> None:
        slot = self.lookups % LOOKUP_CYCLE
        self.lookups += 1
        if slot in MISTYPED_SLOTS:
            self._expect(f"/api/v1/codes/{mistype(self._popular(), self.rng)}", "resolve_mistyped", HTTP_BAD_REQUEST)
        elif slot in NEVER_ISSUED_SLOTS:
            code = self.rng.choice(self.seed.never_issued)
            self._expect(f"/api/v1/codes/{code}", "resolve_never_issued", HTTP_NOT_FOUND)
        elif self.rng.random() < PAGE_SHARE:
            self._expect(f"/t/{self._popular()}", "page", HTTP_OK, headers={"Accept": "text/html"})
        else:
            self._expect(f"/api/v1/codes/{self._popular()}", "resolve", HTTP_OK)

    def _expect(self, path: str, name: str, status: int, headers: dict[str, str] | None = None) -> None:
        with self.client.get(path, name=name, headers=headers, catch_response=True) as response:
            if response.status_code == status:
                response.success()
            else:
                response.failure(f"{response.status_code} where {status} was expected: {_sample(response.content)}")


def _settle(response: Any, is_ok: bool, count: str, *, by: int = 1) -> None:
    """A good answer: counted in the ledger under `count` (by `by`) and marked a success. Any other: a failure,
    with its status and a sample of its body."""
    if is_ok:
        _ledger.counts[count] += by
        response.success()
    else:
        response.failure(f"{response.status_code}: {_sample(response.content)}")


class GateUser(FastHttpUser):
    """One gate of a market: scans the lots coming in, and records a trade out of an admitted lot now and then."""

    weight = 4
    wait_time = between(0.05, 0.3)
    _numbers = itertools.count()

    def on_start(self) -> None:
        self.seed = seed()
        self.rng = random.Random()
        gate = self.seed.gates[next(GateUser._numbers) % len(self.seed.gates)]
        self.headers = {"Authorization": f"Bearer {gate['token']}"}
        self.batch_codes = [b["code"] for b in self.seed.batches]
        self.entries: list[tuple[str, int]] = []  # (voucher, kg not yet traded) of entries this gate accepted

    @task(10)
    def scan(self) -> None:
        code = self.rng.choice(self.batch_codes)
        if self.rng.random() < GATE_MISTYPED_SHARE:
            code = mistype(code, self.rng)
        quantity = self.rng.randint(*SCAN_KG)
        body = {"code": code, "quantity": quantity, "unit": UNIT, "idempotency_key": uuid.uuid4().hex}
        _ledger.counts["gate_scans_sent"] += 1
        with self.client.post(
            "/api/v1/gate/scans", name="gate_scan", json=body, headers=self.headers, catch_response=True
        ) as response:
            if response.status_code != HTTP_OK:
                # No answer at all: the scan may or may not have been recorded. An error answer: nothing was.
                _ledger.counts["gate_scans_in_doubt" if response.status_code == 0 else "gate_scans_refused"] += 1
                response.failure(f"{response.status_code}: {_sample(response.content)}")
                return
            answer = response.json()
            decision = answer.get("decision")
            if decision == "accept" and answer.get("voucher_code") and not answer.get("replay"):
                _ledger.counts["gate_scans_accepted"] += 1
                self.entries.append((answer["voucher_code"], quantity))
                response.success()
            elif decision == "reject" and answer.get("reasons"):
                _ledger.counts["gate_scans_rejected"] += 1
                for reason in answer["reasons"]:
                    _ledger.counts[f"gate_reject_{reason['code']}"] += 1
                response.success()
            else:
                _ledger.counts["gate_scans_odd"] += 1
                response.failure(f"unexpected answer: {_sample(response.content)}")

    @task(2)
    def trade(self) -> None:
        if not self.entries:
            return
        index = self.rng.randrange(len(self.entries))
        voucher, left = self.entries[index]
        quantity = min(left, self.rng.randint(*TRADE_KG))
        if quantity >= left:
            self.entries.pop(index)
        else:
            self.entries[index] = (voucher, left - quantity)
        body = {
            "voucher_code": voucher, "buyer": {"name": "西宁市城东区农贸市场个体户"}, "quantity": quantity,
            "unit": UNIT, "idempotency_key": uuid.uuid4().hex,
        }  # fmt: skip
        with self.client.post(
            "/api/v1/trades", name="trade", json=body, headers=self.headers, catch_response=True
        ) as response:
            is_traded = response.status_code == HTTP_CREATED and bool(response.json().get("circulation_code"))
            _settle(response, is_traded, "trades")


class ProducerUser(FastHttpUser):
    """A cooperative printing labels for its batches through the day."""

    fixed_count = 2
    wait_time = between(1.0, 3.0)

    def on_start(self) -> None:
        self.seed = seed()
        self.rng = random.Random()
        self.batches = [b for b in self.seed.batches if not b.get("is_recall")] or self.seed.batches

    @task
    def labels(self) -> None:
        batch = self.rng.choice(self.batches)
        count = self.rng.randint(*LABEL_COUNT)
        headers = {"Authorization": f"Bearer {batch['producer_token']}", "Accept": "application/json"}
        with self.client.post(
            f"/api/v1/batches/{batch['code']}/labels", name="labels", json={"count": count}, headers=headers,
            catch_response=True,
        ) as response:  # fmt: skip
            is_issued = response.status_code == HTTP_CREATED and len(response.json().get("codes", ())) == count
            _settle(response, is_issued, "labels_issued", by=count)


class RegulatorUser(FastHttpUser):
    """The county regulator recalling a few batches during the run, and checking that the recall is seen."""

    fixed_count = 1

    def on_start(self) -> None:
        self.seed = seed()
        self.rng = random.Random()
        self.headers = {"Authorization": f"Bearer {self.seed.regulator_token}"}
        self.to_recall = list(self.seed.recall_codes)
        options = self.environment.parsed_options
        self.interval_s = float(getattr(options, "peak_recall_interval", None) or DEFAULT_RECALL_INTERVAL_S)
        self.next_at = time.monotonic() + self.interval_s

    def wait_time(self) -> float:
        if not self.to_recall:
            return 3600.0  # done: stopping the run interrupts the wait
        return max(0.1, self.next_at - time.monotonic())

    @task
    def recall(self) -> None:
        if not self.to_recall or time.monotonic() < self.next_at:
            return
        code = self.to_recall.pop(0)
        self.next_at += self.interval_s
        body = {"reason": "抽检发现克伦特罗残留超标（压测）"}
        with self.client.post(
            f"/api/v1/batches/{code}/recall", name="recall", json=body, headers=self.headers, catch_response=True
        ) as response:
            is_recalled = response.status_code == HTTP_OK and response.json().get("status") == "recalled"
            _settle(response, is_recalled, "recalls")
        if is_recalled:
            self._check_seen(code)

    def _check_seen(self, batch_code: str) -> None:
        """A second after the recall returned, codes of the batch must resolve as recalled."""
        time.sleep(RECALL_CHECK_DELAY_S)  # gevent patches time.sleep: only this user waits
        batch = next(b for b in self.seed.batches if b["code"] == batch_code)
        codes: Sequence[str] = batch["sample_codes"][:RECALL_CHECK_CODES]
        for code in codes:
            with self.client.get(f"/api/v1/codes/{code}", name="recall_seen", catch_response=True) as response:
                status = response.json().get("status") if response.status_code == HTTP_OK else None
                if status == "recalled":
                    response.success()
                else:
                    _ledger.counts["recall_not_seen"] += 1
                    response.failure(f"{response.status_code} status={status!r} 1 s after the recall")
