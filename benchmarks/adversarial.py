"""Adversarial cases: the provider, a person in its admin and Redis at their worst, one by one.

    .venv/bin/python benchmarks/adversarial.py [--quick] [--only NAME[,NAME...]] [--deadline S]

Real parts throughout: a private redis-server (``benchmark_redis``), the provider sandbox in
this process (``worker.sandbox.Sandbox``), two ``celery -A worker.app worker -P threads``
processes and one beat (``benchmarks.fleet``), at the **default request budgets**: the
workers get no ``CREDITQ_*_RATE_LIMIT_PER_MINUTE`` (Inveterate 100, Chargebee 150 a minute)
and the sandbox enforces 150 calls per 60 s (its ``rate_limit`` is one number for both
providers, so Inveterate's 100 cannot be set apart: 150, the larger, is used). Other timings
are the integration tests' FAST ones (HTTP timeout 1 s, settle 3 s, backoff 0.2-2 s, first
poll 0.5 s, poll cap 2 s, reconcile every 1 s with 4 s grace) and a confirm deadline of
``--deadline`` seconds (20, or 12 with ``--quick``) so that the cases whose honest end is the
DLQ get there.

Cases run one after another, each on a reset sandbox and a flushed Redis, sharing the
workers: before the flush the run waits until no issue or confirm message is queued or held
by a worker (a countdown message outliving its job would otherwise adopt its grant again
after the flush), and restarts the workers if that does not happen in time. The flush keeps
kombu's queue bindings, which workers would declare again on reconnecting to a Redis that
lost everything but do not after a FLUSHDB.

One row per case: keys, credits per key (``worker.demo.run.credits_per_key``: creditq's own ledger
entries carrying the job's marker; a person's copy of the marker is named beside), final states (and
DLQ reasons), provider POSTs and listing reads of the case, and a verdict: OK when every key
has exactly one credit of its own and is ``confirmed`` by that entry, or is in the DLQ with
an honest reason and no credit, as the case documents; KNOWN for a documented limitation
(not OK); FAIL otherwise, with the job histories. Exits non-zero unless every case is OK
(or skipped).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from celery import Celery  # noqa: E402

from benchmarks.common import benchmark_redis, settings_for  # noqa: E402
from benchmarks.fleet import start_beat, start_worker, warm_up  # noqa: E402
from benchmarks.throughput import Processes  # noqa: E402
from tests.fixtures.workers import FAST, wait_until  # noqa: E402
from worker.app import CONFIRM_QUEUE, ISSUE_QUEUE, create_app  # noqa: E402
from worker.app.commands import worker_command  # noqa: E402
from worker.demo.report import credits_per_key  # noqa: E402
from worker.domain.grant import CreditGrant  # noqa: E402
from worker.domain.job import Job  # noqa: E402
from worker.domain.states import JobState  # noqa: E402
from worker.errors import InvalidGrant  # noqa: E402
from worker.producer import enqueue  # noqa: E402
from worker.sandbox import Sandbox  # noqa: E402
from worker.sandbox.options import DEFAULT_BUDGETS_RATE_LIMIT, creditq_env  # noqa: E402
from worker.store.dlq import replay, select  # noqa: E402
from worker.store.embedded import EmbeddedRedis  # noqa: E402
from worker.store.jobs import JobStore  # noqa: E402

# FAST without its lifted budgets: the workers run at the defaults (100 and 150 a minute).
TIMINGS = {k: v for k, v in FAST.items() if not k.endswith("_RATE_LIMIT_PER_MINUTE")}
SANDBOX_RATE_LIMIT, SANDBOX_RATE_WINDOW = DEFAULT_BUDGETS_RATE_LIMIT, 60.0
# Every case starts from these sandbox options, plus its own.
BASE_OPTIONS: dict[str, Any] = {
    "lag": 0.0,
    "latency": 0.0,
    "page_size": None,
    "echo_notes": True,
    "oldest_first": False,
    "rate_limit": SANDBOX_RATE_LIMIT,
    "rate_window": SANDBOX_RATE_WINDOW,
}
WORKERS, CONCURRENCY = 2, 8
HONEST_DLQ = {"outcome_unknown", "exhausted", "refused"}  # reasons that may hold no credit
REPLAY_READS_MAX = 5  # listing reads per job after a DLQ replay: a handful, not a loop
BUSY_QUEUES = (ISSUE_QUEUE, CONFIRM_QUEUE)
QUIET_SECONDS = 45.0  # longer than any countdown a case leaves behind (the 14 s lease)
READONLY_TEST = ROOT / "tests" / "integration" / "test_readonly_redis.py"


# -- the parts --------------------------------------------------------------------------------


class Once:
    """An action run at most once, by whichever trigger comes first."""

    def __init__(self, action: Callable[[], Any]) -> None:
        self._action = action
        self._lock = threading.Lock()
        self.done = False

    def __call__(self) -> None:
        with self._lock:
            if not self.done:
                self._action()
                self.done = True


class Observer:
    """Counts the sandbox's calls per provider, operation and customer, and runs a case's
    action when a given call arrives, before the sandbox decides anything about it (so
    "a person's credit, then the retry" happens in that order, however fast the retry is).

    It wraps the sandbox's fault plan, which sees every call past authentication and the
    rate limit (the 429s it answers are in the sandbox's stats, not here)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._lock = threading.Lock()
        self.calls: collections.Counter[tuple[str, str, str | None]] = collections.Counter()
        self._hooks: dict[tuple[str, str, str | None, int], Callable[[], object]] = {}
        plan = sandbox.state.faults
        draw = plan.draw

        def observed(provider: str, operation: str, customer_id: str | None = None) -> Any:
            with self._lock:
                self.calls[(provider, operation, customer_id)] += 1
                nth = self.calls[(provider, operation, customer_id)]
                hook = self._hooks.pop((provider, operation, customer_id, nth), None)
            if hook is not None:
                hook()
            return draw(provider, operation, customer_id)

        plan.draw = observed  # type: ignore[method-assign]

    def at(
        self,
        provider: str,
        operation: str,
        customer_id: str,
        nth: int,
        action: Callable[[], object],
    ) -> None:
        """Run ``action`` when the ``nth`` such call arrives."""
        with self._lock:
            self._hooks[(provider, operation, customer_id, nth)] = action

    def count(self, provider: str, operation: str, customer_id: str | None) -> int:
        with self._lock:
            return self.calls[(provider, operation, customer_id)]

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self._hooks.clear()


@dataclass
class Story:
    """What a case reports beyond the common checks."""

    keys: list[str]
    allowed: dict[str, set[str]] = field(default_factory=dict)  # key -> acceptable ends
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    known: str | None = None  # a documented limitation happened: KNOWN, not OK
    credits: dict[str, int] | None = None  # credits per key when the ledger says more
    skip: str | None = None
    store: JobStore | None = None  # where the case's jobs are, if not in the run's store
    close: Callable[[], None] | None = None  # what the case leaves running until judged


@dataclass
class Result:
    name: str
    keys: list[str]
    credits: list[str]
    states: str
    posts: int
    reads: int
    verdict: str
    notes: list[str]
    problems: list[str]
    seconds: float
    stories: list[str] = field(default_factory=list)

    def row(self) -> list[str]:
        note = "; ".join(self.problems + self.notes)
        return [
            self.name,
            ", ".join(self.keys),
            ", ".join(self.credits),
            self.states,
            str(self.posts),
            str(self.reads),
            self.verdict,
            note,
        ]


class Bench:
    """The shared parts of a run, and what every case does with them."""

    def __init__(
        self, redis_url: str, sandbox: Sandbox, env: dict[str, str], quick: bool, deadline: float
    ) -> None:
        self.url = redis_url
        self.sandbox = sandbox
        self.env = env
        self.quick = quick
        self.deadline = deadline
        self.client = redis.Redis.from_url(redis_url, decode_responses=True)
        self.store = JobStore(self.client)
        self.app: Celery = create_app()
        self.observer = Observer(sandbox)
        self.procs = Processes()
        self.workers: list[subprocess.Popen[bytes]] = []
        self.restarts = 0
        self.runaway: str | None = None  # why a case stopped waiting for its jobs

    # life cycle

    def start(self) -> None:
        self.workers = [
            start_worker(self.procs, self.env, f"w{i}", CONCURRENCY, "INFO") for i in range(WORKERS)
        ]
        start_beat(self.procs, self.env)
        warm_up(self.store, self.app, "adversarial")

    def stop(self) -> None:
        self.procs.stop_all()

    def restart_workers(self) -> None:
        """Kill the workers (their held countdown messages die with them) and start anew."""
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.restarts += 1
        self.flush()
        self.workers = [
            start_worker(self.procs, self.env, f"w{i}.{self.restarts}", CONCURRENCY, "INFO")
            for i in range(WORKERS)
        ]
        warm_up(self.store, self.app, f"adversarial-{self.restarts}")

    def busy(self) -> int:
        """Issue and confirm messages queued, or delivered and not yet acknowledged (a
        running task, or a countdown a worker holds until it is due)."""
        waiting = sum(self.client.llen(q) for q in BUSY_QUEUES)
        for raw in self.client.hvals("unacked"):
            try:
                routing_key = json.loads(raw)[2]
            except (ValueError, IndexError, TypeError):
                routing_key = None
            waiting += routing_key in BUSY_QUEUES or routing_key is None
        return waiting

    def quiesce(self) -> None:
        """Wait until the fleet holds no work (twice in a row), else restart the workers."""

        def quiet() -> bool:
            if self.busy():
                return False
            time.sleep(0.3)
            return not self.busy()

        if not wait_until(quiet, QUIET_SECONDS, interval=0.2):
            self.restart_workers()
            wait_until(quiet, QUIET_SECONDS, interval=0.2)

    def flush(self) -> None:
        """Everything goes but kombu's queue bindings (see the module docstring)."""
        bindings = {
            key: self.client.smembers(key) for key in self.client.scan_iter("_kombu.binding.*")
        }
        with self.client.pipeline() as pipe:
            pipe.flushdb()
            for key, members in bindings.items():
                if members:
                    pipe.sadd(key, *members)
            pipe.execute()

    def fresh(self, options: dict[str, Any]) -> None:
        self.quiesce()
        self.flush()
        self.sandbox.reset()
        self.sandbox.configure(**{**BASE_OPTIONS, **options})
        self.observer.reset()
        self.runaway = None

    # what cases do

    def enqueue(
        self, key: str, provider: str, customer: str, amount: str, note: str = "adversarial case"
    ) -> Job:
        grant = CreditGrant(
            idempotency_key=key, provider=provider, customer_id=customer, amount=amount, note=note
        )
        return enqueue(grant, store=self.store, app=self.app).job

    def job(self, key: str) -> Job | None:
        return self.store.get(key)

    def reads(self) -> int:
        return sum(p["calls"].get("list", 0) for p in self.sandbox.stats().values())

    def reads_allowed(self, jobs: int) -> int:
        """Listing reads ``jobs`` unknown outcomes may take by their deadline: one at settle,
        then one every 1.5 to 2 s (half the wait, up to the poll cap), and a margin."""
        return jobs * (math.ceil(self.deadline / 1.5) + 3) + 10

    def wait_terminal(self, keys: list[str], timeout: float | None = None) -> bool:
        """Until every job has ended: each does by its confirm deadline (the DLQ), at most a
        poll after it. Gives up early on a job reading far more than that allows (a loop)."""
        start, allowed = self.reads(), self.reads_allowed(len(keys))

        def done() -> bool:
            if self.reads() - start > allowed:
                self.runaway = f"stopped waiting after {self.reads() - start} listing reads"
                return True
            jobs = self.store.get_many(keys, history=False)
            return all(j is not None and j.state.terminal for j in jobs)

        return bool(wait_until(done, timeout or self.deadline + 10, interval=0.1))

    def wait_failed(self, key: str, timeout: float = 15.0) -> bool:
        """Until the job's first POST has been answered with something other than a 2xx."""

        def failed() -> bool:
            job = self.store.get(key, history=False)
            return job is not None and (
                bool(job.extra.get("outcome_unknown"))
                or job.attempts >= 2
                or job.state.terminal
                or job.state is JobState.SUBMITTED
            )

        return bool(wait_until(failed, timeout, interval=0.01))

    def witnesses(self, provider: str, tag: str) -> list[str]:
        """Ordinary grants to other members, accepted after a failure: the later credits that
        let a listing's absence prove a failed POST did not apply."""
        keys = [f"{tag}-witness-{i}" for i in range(1 if self.quick else 2)]
        for i, key in enumerate(keys):
            self.enqueue(key, provider, f"{tag}-w{i}", f"{3 + i}.00", note="witness")
        self.wait_terminal(keys, 30)
        return keys

    def posts(self, provider: str, customer: str) -> int:
        return self.observer.count(provider, "submit", customer)

    def own_entries(self, job: Job) -> list[Any]:
        return [e for e in self.sandbox.entries(origin="api") if e.marker == job.marker]

    def alarm(self, key: str) -> dict[str, Any]:
        job = self.job(key)
        raw = job.extra.get("alarm") if job else None
        return json.loads(raw) if raw else {}

    def judge(self, key: str, allowed: set[str], store: JobStore | None = None) -> list[str]:
        """The rule every key meets: one credit of its own and confirmed by that very entry,
        or in the DLQ with an honest reason and no credit; ``allowed`` narrows the ends."""
        job = (store or self.store).get(key)
        if job is None:
            return [f"{key}: no job"]
        own = self.own_entries(job)
        refs = {e.id for e in own}
        if job.state is JobState.CONFIRMED:
            problems = [] if "confirmed" in allowed else [f"{key}: confirmed, expected {allowed}"]
            if len(own) != 1:
                problems.append(f"{key}: {len(own)} credits of its own")
            entry = json.loads(job.extra.get("provider_entry") or "{}")
            ref = entry.get("ref")
            if ref not in refs:
                origin = {e.id: e.origin for e in self.sandbox.entries()}.get(ref, "unknown")
                problems.append(f"{key}: confirmed by {ref} ({origin} entry), not its own")
            if job.provider_ref is not None and job.provider_ref not in refs:
                problems.append(f"{key}: provider_ref {job.provider_ref} is not its own entry")
            return problems
        if job.state.dead_letter:
            reason = job.extra.get("dlq_reason")
            problems = (
                []
                if reason in allowed and reason in HONEST_DLQ
                else [f"{key}: {job.state.value} ({reason}), expected {sorted(allowed)}"]
            )
            if own:
                problems.append(f"{key}: in the DLQ with {len(own)} credit(s) of its own")
            return problems
        return [f"{key}: still {job.state.value}"]


# -- the cases --------------------------------------------------------------------------------

Case = Callable[[Bench], Story]
CONFIRMED = {"confirmed"}
CONFIRMED_OR_UNKNOWN = {"confirmed", "outcome_unknown"}


def livelock(b: Bench) -> Story:
    """Inveterate POSTs answered 500 (one applied, the others not) on a quiet provider: the
    applied one shows, the others wait for a witness until the DLQ; two ordinary grants
    then confirm, and the DLQ is replayed at the default budget. Reads per job must stay a
    handful: a read and a POST must not chase each other's budget slots for ever."""
    targets = [("lv-m0", "error_after")] + [
        (f"lv-m{i}", "error_before") for i in range(1, 2 if b.quick else 3)
    ]
    keys = [f"livelock-{i}-{kind}" for i, (_, kind) in enumerate(targets)]
    members = dict(zip(keys, (m for m, _ in targets), strict=True))
    for member, kind in targets:
        b.sandbox.fail_next(kind, provider="inveterate", operation="submit", customer_id=member)
    for i, key in enumerate(keys):
        b.enqueue(key, "inveterate", members[key], f"{11 + i}.00")
    story = Story(list(keys), {k: CONFIRMED for k in keys})
    if not b.wait_terminal(keys):
        story.problems.append("not all ended (confirmed or DLQ) before the replay")
    before = {k: b.observer.count("inveterate", "list", members[k]) for k in keys}
    dead = select(b.store)
    story.keys += b.witnesses("inveterate", "lv")
    replayed = [r for r in replay(b.store, dead, b.app) if r.result.ok]
    b.wait_terminal(keys, 40)
    after = {k: b.observer.count("inveterate", "list", members[k]) - before[k] for k in keys}
    # Before the DLQ an unknown job reads at settle, then every 1.5 to 2 s (the poll cap).
    limit = math.ceil(b.deadline / 1.5) + 3
    for key in keys:
        if before[key] > limit:
            story.problems.append(f"{key}: {before[key]} reads before the DLQ (limit {limit})")
        if after[key] > REPLAY_READS_MAX:
            story.problems.append(
                f"{key}: {after[key]} reads after the replay (limit {REPLAY_READS_MAX})"
            )
    story.notes.append(
        f"{len(dead)} in the DLQ, {len(replayed)} replayed; reads per job "
        f"before DLQ {list(before.values())}, after replay "
        f"{list(after.values())}; POSTs per job "
        f"{[b.posts('inveterate', members[k]) for k in keys]}"
    )
    return story


def lag_past_settle(b: Bench) -> Story:
    """Applied, listed only 6 s later (settle is 3 s), answered 500: no second POST."""
    key, member = "lag-1", "lag-m"
    b.sandbox.fail_next(
        "lagged", provider="inveterate", lag=6, then="error_after", customer_id=member
    )
    b.enqueue(key, "inveterate", member, "21.00")
    b.wait_terminal([key])
    story = Story([key], {key: CONFIRMED})
    if (posts := b.posts("inveterate", member)) != 1:
        story.problems.append(f"{posts} POSTs")
    return story


def persons_credit(variant: str) -> Case:
    """The POST fails before applying, then a person gives the member the same amount by
    hand: that credit never confirms the job."""

    def case(b: Bench) -> Story:
        provider = "chargebee" if variant == "chargebee" else "inveterate"
        key, member, amount = f"person-{variant}", f"person-{variant}-m", "15.00"
        b.sandbox.fail_next(
            "error_before", provider=provider, operation="submit", customer_id=member
        )
        made: list[str] = []

        def person() -> None:
            if provider == "chargebee":
                entries = b.sandbox.add_credit(
                    provider, member, amount, description="Goodwill: parcel arrived late"
                )
            else:
                entries = b.sandbox.add_credit(
                    provider, member, amount, note="goodwill: parcel arrived late"
                )
            made.extend(e.id for e in entries)

        b.observer.at(provider, "submit", member, 1, person)  # right as the POST fails
        if provider == "chargebee":  # the retry finds no record to answer from
            b.observer.at(provider, "submit", member, 2, b.sandbox.expire_idempotency)
        b.enqueue(key, provider, member, amount)
        b.wait_failed(key)
        allowed = CONFIRMED_OR_UNKNOWN if variant == "no_echo" else CONFIRMED
        story = Story([key], {key: allowed})
        story.keys += b.witnesses(provider, f"pc-{variant}")
        b.wait_terminal([key])
        job = b.job(key)
        story.notes.append(
            f"person's credit {', '.join(made) or 'NOT MADE'}; "
            f"{b.posts(provider, member)} POSTs for the member"
            + (
                f"; confirmed by {json.loads(job.extra['provider_entry'])['ref']}"
                if job and "provider_entry" in job.extra
                else ""
            )
        )
        if not made:
            story.problems.append("the person's credit was never written")
        return story

    case.__doc__ = persons_credit.__doc__
    return case


def copied_marker(b: Bench) -> Story:
    """A person's credit whose note copies the job's marker on another amount, while the
    job's POST failed before applying: never its confirmation, an alarm instead. And a
    grant whose note quotes a marker is refused at enqueue."""
    key, member = "copy-1", "copy-m"
    b.sandbox.fail_next(
        "error_before", provider="inveterate", operation="submit", customer_id=member
    )

    def copy() -> None:
        job = b.job(key)
        assert job is not None
        marker = job.to_json()["marker"]
        b.sandbox.add_credit(
            "inveterate", member, "70.00", note=f"refund per ticket 4411 [{marker}]"
        )

    b.observer.at("inveterate", "submit", member, 1, copy)
    job = b.enqueue(key, "inveterate", member, "7.00")
    marker = job.to_json()["marker"]
    story = Story([key], {key: CONFIRMED_OR_UNKNOWN})
    try:
        b.enqueue("copy-quoting", "inveterate", member, "7.00", note=f"as agreed [{marker}]")
        story.problems.append("a note quoting a marker was accepted at enqueue")
    except InvalidGrant as exc:
        if not str(exc).startswith("note"):
            story.problems.append(f"refused, but not on the note: {exc}")
        story.notes.append(f"note quoting the marker refused: {exc}")
    b.wait_failed(key)
    story.keys += b.witnesses("inveterate", "cm")
    b.wait_terminal([key])
    alarm = b.alarm(key)
    if alarm.get("kind") != "copied_marker":
        story.problems.append(f"alarm {alarm or None}, expected copied_marker")
    else:
        story.notes.append(f"alarm copied_marker on {alarm.get('refs')}")
    return story


def deep_listing(b: Bench) -> Story:
    """Chargebee: applied then 500; 130 newer admin credits of other customers, and the
    idempotency record gone, before the retry: the listing has to find it, deep down."""
    key, customer = "deep-1", "deep-c"
    b.sandbox.fail_next(
        "error_after", provider="chargebee", operation="submit", customer_id=customer
    )

    def bury() -> None:
        for i in range(13):
            b.sandbox.add_credit("chargebee", f"deep-other-{i}", f"{1 + i}.00", count=10)
        b.sandbox.expire_idempotency()

    action = Once(bury)
    b.observer.at("chargebee", "submit", customer, 2, action)  # before a quick retry
    b.enqueue(key, "chargebee", customer, "12.34")
    b.wait_failed(key)
    action()  # or now, if no retry came yet
    b.wait_terminal([key])
    story = Story([key], {key: CONFIRMED})
    story.notes.append(f"{b.posts('chargebee', customer)} POSTs for the customer")
    job = b.job(key)
    if job is not None and len(b.own_entries(job)) > 1 and not b.alarm(key):
        story.notes.append("no duplicate alarm: the read stopped at the newest of its credits")
    return story


def oldest_first(b: Bench) -> Story:
    """Inveterate listing oldest first, 20 older admin credits of the same amount, a 500
    after applying."""
    key, member = "oldest-1", "oldest-m"
    b.sandbox.add_credit("inveterate", member, "5.00", note="loyalty top-up", count=20)
    b.sandbox.fail_next(
        "error_after", provider="inveterate", operation="submit", customer_id=member
    )
    b.enqueue(key, "inveterate", member, "5.00")
    b.wait_terminal([key])
    return Story([key], {key: CONFIRMED})


def slow_answer(b: Bench) -> Story:
    """The POST applies and its answer trickles for 30 s, every read quicker than the 1 s
    timeout: the call's overall deadline must end it, and nothing POSTs again meanwhile."""
    key, member = "slow-1", "slow-m"
    b.sandbox.fail_next(
        "trickle", provider="inveterate", operation="submit", hold=30, customer_id=member
    )
    b.enqueue(key, "inveterate", member, "31.00")
    b.wait_terminal([key], max(b.deadline, 30) + 30)
    story = Story([key], {key: CONFIRMED})
    if (posts := b.posts("inveterate", member)) != 1:
        story.problems.append(f"{posts} POSTs")
    job = b.job(key)
    if job is not None:
        posted, cut = job.number("first_post_at"), job.number("unknown_at")
        done = job.number("confirmed_at")
        if posted and cut:
            story.notes.append(f"answer cut {cut - posted:.1f} s into the trickle")
        if posted and done:
            story.notes.append(f"confirmed {done - posted:.1f} s after the POST")
    if story.problems or not (job and job.number("unknown_at")):
        try:
            import worker.providers.deadline  # noqa: F401
        except ImportError:
            story.notes.append("no per-call deadline in worker/providers/http.py yet")
    return story


def refusal_after_unknown(b: Bench) -> Story:
    """Chargebee: applied then 500; before the retry the record is gone and the customer
    refused (400): the earlier try applied, so the listing confirms it, no rejection."""
    key, customer = "refuse-1", "refuse-c"
    b.sandbox.fail_next(
        "error_after", provider="chargebee", operation="submit", customer_id=customer
    )

    def refuse() -> None:
        b.sandbox.expire_idempotency()
        b.sandbox.mark_customer(customer, 400, provider="chargebee")

    action = Once(refuse)
    b.observer.at("chargebee", "submit", customer, 2, action)
    b.enqueue(key, "chargebee", customer, "8.00")
    b.wait_failed(key)
    action()
    b.wait_terminal([key])
    story = Story([key], {key: CONFIRMED})
    refused = b.sandbox.stats()["chargebee"]["status"].get("400", 0)
    story.notes.append(f"{b.posts('chargebee', customer)} POSTs, {refused} answered 400")
    return story


def key_collision(b: Bench) -> Story:
    """A key spelled like another job's history list."""
    keys = ["order-9", "order-9:history"]
    b.enqueue(keys[0], "inveterate", "kc-m", "9.00")
    b.enqueue(keys[1], "inveterate", "kc-m", "19.00")
    b.wait_terminal(keys)
    return Story(keys, {k: CONFIRMED for k in keys})


def lost_redis(b: Bench) -> Story:
    """Redis restarts. On a store that keeps nothing a restart forgets every job and the
    retried webhook pays again, so a production worker refuses such a store (exit 2). On a
    store with an append-only file, killed (SIGKILL) and started again under a production
    worker, nothing is forgotten: a confirmed grant sent again is not paid again, and a
    grant still queued at the crash is issued once after it."""
    story = Story(["lost-confirmed", "lost-queued"], {})
    refused = production_worker_refuses(b)
    if refused is None:
        story.problems.append("a production worker started on a volatile Redis")
    else:
        story.notes.append(f"volatile store refused ({refused.split('. Run Redis')[0]})")
    durable = EmbeddedRedis(appendonly=True).start()
    story.close = durable.cleanup
    try:
        return _crash_durable_store(b, story, durable)
    except Exception:
        durable.cleanup()
        raise


def _crash_durable_store(b: Bench, story: Story, durable: EmbeddedRedis) -> Story:
    with settings_for(durable.url):
        app = create_app()
    store = story.store = JobStore(redis.Redis.from_url(durable.url, decode_responses=True))
    env = {k: v for k, v in b.env.items() if k != "CREDITQ_ALLOW_VOLATILE_REDIS"}
    env["CREDITQ_REDIS_URL"] = durable.url
    first, queued = (
        CreditGrant(
            idempotency_key=key,
            provider="inveterate",
            customer_id="lost-m",
            amount=amount,
            note="lost redis",
        )
        for key, amount in zip(story.keys, ("10.00", "11.00"), strict=True)
    )
    worker = start_worker(b.procs, env, "durable", 2, "INFO")
    enqueue(first, store=store, app=app)
    if not wait_until(lambda: _state(store, first.idempotency_key) == "confirmed", 60):
        story.problems.append("the first grant did not confirm on the durable store")
        return story
    os.killpg(worker.pid, signal.SIGKILL)  # nobody takes the next grant before the crash
    worker.wait()
    enqueue(queued, store=store, app=app)
    durable.restart(hard=True)  # SIGKILL: what it acknowledged must still be there
    store.redis.connection_pool.disconnect()
    again = [enqueue(g, store=store, app=app).created for g in (first, queued)]
    if any(again):
        story.problems.append(f"after the crash a key was new again: created={again}")
    worker = start_worker(b.procs, env, "durable-2", 2, "INFO")
    wait_until(lambda: _state(store, queued.idempotency_key) == "confirmed", 60)
    os.killpg(worker.pid, signal.SIGTERM)
    story.notes.append(
        "Redis (appendonly yes) killed and restarted: both keys remembered, "
        "the retried webhook created nothing, the queued grant was issued"
    )
    return story


def _state(store: JobStore, key: str) -> str | None:
    job = store.get(key, history=False)
    return job.state.value if job else None


def production_worker_refuses(b: Bench) -> str | None:
    """Start a worker as production would (no CREDITQ_ALLOW_VOLATILE_REDIS) on this run's
    Redis, which keeps nothing on disk: its one-line refusal, or None if it started."""
    env = {k: v for k, v in b.env.items() if k != "CREDITQ_ALLOW_VOLATILE_REDIS"}
    command = worker_command("1", "-l", "WARNING")
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None
    lines = [line for line in err.splitlines() if "refusing" in line]
    return f"exit {proc.returncode}: {lines[0]}" if proc.returncode == 2 and lines else None


def duplicate_alarm(b: Bench) -> Story:
    """A person copies creditq's credit (same marker, amount, customer) before it is
    read: the job confirms by its own entry and the copy raises a duplicate alarm."""
    key, member, amount = "dup-1", "dup-m", "9.99"
    job = b.enqueue(key, "inveterate", member, amount)
    marker = job.to_json()["marker"]
    story = Story([key], {key: CONFIRMED})
    applied = wait_until(
        lambda: [e for e in b.sandbox.entries(origin="api") if e.marker == marker],
        10,
        interval=0.005,
    )
    if not applied:
        story.problems.append("the job's credit never applied")
        return story
    b.sandbox.add_credit("inveterate", member, amount, note=f"re-issued by hand [{marker}]")
    b.wait_terminal([key])
    alarm = b.alarm(key)
    if alarm.get("kind") != "duplicate":
        story.problems.append(f"alarm {alarm or None}, expected duplicate")
    stats = creditq_stats(b.url)
    if int(stats.get("alarms", 0)) < 1:
        story.problems.append(f"creditq stats --json alarms {stats.get('alarms')}")
    story.notes.append(
        f"alarm {alarm.get('kind')} on {alarm.get('refs')} (own "
        f"{alarm.get('own')}); stats alarms {stats.get('alarms')}"
    )
    return story


def readonly_redis(b: Bench) -> Story:
    if READONLY_TEST.exists():
        return Story([], skip=f"covered by {READONLY_TEST.relative_to(ROOT)}")
    return Story([], skip="not written here: READONLY needs a replica and a failover")


def creditq_stats(redis_url: str) -> dict[str, Any]:
    """``creditq stats --json``, as an operator runs it."""
    script = Path(sys.executable).parent / "creditq"
    command = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "from worker.cli.main import main; main()"]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITQ_")}
    env.update(CREDITQ_REDIS_URL=redis_url, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [*command, "stats", "--json"], capture_output=True, text=True, env=env, timeout=60
    )
    try:
        return dict(json.loads(done.stdout))
    except ValueError:
        return {"error": done.stderr.strip()[-200:]}


# name, case, sandbox options
CASES: list[tuple[str, Case, dict[str, Any]]] = [
    ("livelock", livelock, {}),
    ("lag_past_settle", lag_past_settle, {}),
    ("persons_credit_echoed", persons_credit("echoed"), {}),
    ("persons_credit_no_echo", persons_credit("no_echo"), {"echo_notes": False}),
    ("persons_credit_chargebee", persons_credit("chargebee"), {}),
    ("copied_marker", copied_marker, {}),
    ("deep_listing", deep_listing, {}),
    ("oldest_first", oldest_first, {"oldest_first": True}),
    ("slow_answer", slow_answer, {}),
    ("refusal_after_unknown", refusal_after_unknown, {}),
    ("key_collision", key_collision, {}),
    ("lost_redis", lost_redis, {}),
    ("duplicate_alarm", duplicate_alarm, {}),
    ("readonly_redis", readonly_redis, {}),
]
NAMES = [name for name, _, _ in CASES]


# -- running and reporting --------------------------------------------------------------------


def run_case(b: Bench, name: str, case: Case, options: dict[str, Any]) -> Result:
    b.fresh(options)
    began = time.monotonic()
    try:
        story = case(b)
    except Exception as exc:  # a case that breaks is a failed case, the others still run
        story = Story([], problems=[f"the case raised {type(exc).__name__}: {exc}"])
    if story.skip:
        return Result(name, [], [], "-", 0, 0, "SKIP", [story.skip], [], 0.0)
    store = story.store or b.store
    jobs = store.get_many(story.keys, history=False)
    # A job that never ended may be looping: its workers go, instead of waiting for quiet.
    looping = any(j is not None and not j.state.terminal for j in jobs)
    if not looping:
        b.quiesce()  # the case's last calls are in the stats
    seconds = time.monotonic() - began
    problems = list(story.problems)
    for key in story.keys:
        problems += b.judge(key, story.allowed.get(key, CONFIRMED), store)
    counted = credits_per_key(b.sandbox, store, story.keys)
    counted.update(story.credits or {})
    jobs = store.get_many(story.keys)
    if story.close is not None:
        story.close()
    credits = []
    admin = b.sandbox.entries(origin="admin")
    for key, job in zip(story.keys, jobs, strict=True):
        copies = len([e for e in admin if job and e.marker == job.marker])
        credits.append(f"{counted[key]}" + (f" (+{copies} a person's copy)" if copies else ""))
    states = collections.Counter(
        "missing"
        if j is None
        else j.state.value + (f"({j.extra.get('dlq_reason')})" if j.state.dead_letter else "")
        for j in jobs
    )
    stats = b.sandbox.stats()
    posts = sum(p["calls"].get("submit", 0) for p in stats.values())
    reads = sum(p["calls"].get("list", 0) for p in stats.values())
    notes = list(story.notes)
    if b.runaway:
        notes.insert(0, f"{b.runaway} (a job may take {b.reads_allowed(1)} by its deadline)")
    if limited := sum(p["rate_limited"] for p in stats.values()):
        notes.append(f"{limited} answered 429")
    verdict = "FAIL" if problems else "KNOWN" if story.known else "OK"
    if story.known:
        notes.insert(0, story.known)
    result = Result(
        name,
        story.keys,
        credits,
        ", ".join(f"{s} x{n}" if n > 1 else s for s, n in states.items()),
        posts,
        reads,
        verdict,
        notes,
        problems,
        seconds,
    )
    if verdict != "OK":
        result.stories = [story_of(job, key) for key, job in zip(story.keys, jobs, strict=True)]
    if looping:
        b.restart_workers()
    return result


def story_of(job: Job | None, key: str) -> str:
    if job is None:
        return f"--- {key}: no job"
    lines = [
        f"--- {key}: {job.state.value} attempts={job.attempts} marker={job.marker} "
        f"provider_ref={job.provider_ref} entry={job.extra.get('provider_entry')} "
        f"alarm={job.extra.get('alarm')}"
    ]
    lines += [f"    {json.dumps(h, default=str)}" for h in job.history]
    return "\n".join(lines)


@dataclass
class Run:
    results: list[Result]
    seconds: float
    logs: str

    @property
    def ok(self) -> bool:
        return all(r.verdict in ("OK", "SKIP") for r in self.results)


HEADER = ["case", "keys", "credits per key", "final state", "POSTs", "reads", "verdict", "notes"]


def table(results: list[Result]) -> str:
    rows = [HEADER, ["---"] * len(HEADER)] + [r.row() for r in results]
    return "\n".join("| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows)


@contextlib.contextmanager
def bench(quick: bool, deadline: float) -> Iterator[Bench]:
    """A private Redis, the sandbox and the fleet, stopped on the way out."""
    with benchmark_redis() as url:
        sandbox = Sandbox(**BASE_OPTIONS).start()
        env = creditq_env(
            url,
            sandbox.url,
            **TIMINGS,
            PYTHONPATH=str(ROOT),
            CREDITQ_CONFIRM_DEADLINE_SECONDS=f"{deadline:g}",
        )
        b = Bench(url, sandbox, env, quick, deadline)
        try:
            b.start()
            yield b
        finally:
            b.stop()
            sandbox.stop()


def run(
    names: list[str] | None = None,
    *,
    quick: bool = False,
    deadline: float | None = None,
    out: Callable[[str], Any] = print,
) -> Run:
    """Run the named cases (all by default) one after another; ``out`` gets each row."""
    chosen = [c for c in CASES if names is None or c[0] in names]
    if names is not None and (unknown := set(names) - set(NAMES)):
        raise ValueError(f"no such case: {', '.join(sorted(unknown))} (cases: {', '.join(NAMES)})")
    deadline = deadline or (12.0 if quick else 20.0)
    began = time.monotonic()
    results: list[Result] = []
    with bench(quick, deadline) as b:
        out(
            f"{WORKERS} workers -P threads -c {CONCURRENCY} + beat, default budgets (Inveterate "
            f"100/min, Chargebee 150/min); sandbox limit {SANDBOX_RATE_LIMIT} per "
            f"{SANDBOX_RATE_WINDOW:g} s for each provider (one number for both); confirm "
            f"deadline {deadline:g} s; {'quick' if quick else 'full'} size"
        )
        for name, case, options in chosen:
            result = run_case(b, name, case, options)
            results.append(result)
            out(
                f"{result.verdict:<5} {name:<26} {result.seconds:5.1f} s  keys "
                f"{len(result.keys)}  credits {result.credits}  {result.states}  POSTs "
                f"{result.posts}  reads {result.reads}  {'; '.join(result.problems + result.notes)}"
            )
            for text in result.stories:
                out(text)
        logs = b.procs.dir
    return Run(results, time.monotonic() - began, logs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only these cases (repeat or comma-separate): {', '.join(NAMES)}",
    )
    parser.add_argument("--quick", action="store_true", help="fewest grants, 12 s deadline")
    parser.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="CREDITQ_CONFIRM_DEADLINE_SECONDS (default 20, 12 with --quick)",
    )
    args = parser.parse_args()
    names = [n for part in args.only for n in part.split(",") if n] if args.only else None
    try:
        done = run(names, quick=args.quick, deadline=args.deadline)
    except ValueError as exc:
        parser.error(str(exc))
    print()
    print(table(done.results))
    print(f"\n{len(done.results)} cases in {done.seconds:.0f} s; worker logs in {done.logs}")
    sys.exit(0 if done.ok else 1)


if __name__ == "__main__":
    main()
