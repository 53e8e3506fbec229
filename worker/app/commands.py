"""The command lines that start Celery processes on this machine, spelled once: the demo,
the tests and the benchmarks start their workers and beat with these (the Procfile and
docker-compose.yml spell production's own)."""

from __future__ import annotations

import sys


def celery_command(app: str, *args: str) -> list[str]:
    """``celery -A app args...`` run by this interpreter, so by its virtualenv's Celery."""
    return [sys.executable, "-m", "celery", "-A", app, *args]


def worker_command(concurrency: int | str, *extra: str, app: str = "worker.app") -> list[str]:
    """A ``-P threads`` worker, as production runs them, without gossip and mingle: the
    processes started here have no peers worth a round of messages at start."""
    threads = ("-P", "threads", "-c", str(concurrency), "--without-gossip", "--without-mingle")
    return celery_command(app, "worker", *threads, *extra)
