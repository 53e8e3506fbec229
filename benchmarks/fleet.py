"""What latency.py, cost.py and chaos.py share on top of throughput.py's helpers.

Real ``celery -A worker.app`` worker and beat processes started through throughput's
``Processes`` (one log file each, stopped at the end), a warm-up grant that proves the
fleet is consuming before any clock starts, the sandbox's ledger grouped by creditq
marker, and percentiles.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
from celery import Celery

from benchmarks.throughput import Processes, wait
from worker.app.commands import celery_command, worker_command
from worker.domain.grant import CreditGrant
from worker.domain.job import Job
from worker.domain.states import JobState
from worker.producer import enqueue
from worker.store.jobs import JobStore


def start_worker(
    procs: Processes, env: dict[str, str], name: str, concurrency: int, level: str = "WARNING"
) -> Any:
    """One ``-P threads`` worker; its process group is its pid (``start_new_session``)."""
    command = worker_command(str(concurrency), "-n", f"{name}@%h", "-l", level)
    return procs.start(command, env, name)


def start_beat(procs: Processes, env: dict[str, str]) -> Any:
    schedule = Path(procs.dir) / "beat-schedule"
    return procs.start(
        celery_command("worker.app", "beat", "-s", str(schedule), "-l", "INFO"), env, "beat"
    )


def warm_up(store: JobStore, app: Celery, tag: str, timeout: float = 60) -> None:
    """Send one grant and wait for it to be confirmed: the workers are up and connected."""
    key = f"warmup-{tag}-{time.time_ns()}"
    grant = CreditGrant(
        idempotency_key=key,
        provider="inveterate",
        customer_id="warmup",
        amount="1.00",
        note="warm-up",
    )
    enqueue(grant, store=store, app=app)

    def done() -> bool:
        job = store.get(key, history=False)
        return job is not None and job.state is JobState.CONFIRMED

    wait(done, timeout, "the warm-up grant", interval=0.1)


def ledger_by_marker(sandbox_url: str) -> dict[str | None, list[dict[str, Any]]]:
    """Every credit the sandbox applied (visible or not), grouped by the creditq marker."""
    entries = httpx.get(f"{sandbox_url}/_sandbox/ledger", timeout=30).json()["entries"]
    grouped: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for entry in entries:
        grouped[entry["marker"]].append(entry)
    return grouped


def credits_for(
    grouped: dict[str | None, list[dict[str, Any]]], job: Job | None
) -> list[dict[str, Any]]:
    """The credits carrying the job's marker (none for a job that no longer exists)."""
    return grouped.get(job.marker, []) if job is not None else []


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]
