"""Health checks for the processes that serve no HTTP: ``python -m worker.app.health beat``
exits 0 while reconcile passes keep arriving (beat schedules one every
``CREDITQ_RECONCILE_INTERVAL_SECONDS`` and a worker runs it), 1 with one line otherwise. A
container probe for beat: a beat that hangs, or whose messages go nowhere, fails it."""

from __future__ import annotations

import sys
import time

import redis

from worker.settings import get_settings
from worker.store.connect import store_client
from worker.store.jobs import JobStore

# Passes may be late by a few intervals (a busy worker, a broker restart) before it counts.
MISSED_PASSES = 4


def beat_alive(store: JobStore, interval: float, now: float) -> tuple[bool, str]:
    last = store.reconciled_at()
    if last is None:
        return False, "no reconcile pass has run yet"
    age = now - last
    limit = MISSED_PASSES * interval + 10
    if age > limit:
        return False, f"the last reconcile pass ran {age:.0f}s ago (more than {limit:.0f}s)"
    return True, f"the last reconcile pass ran {age:.0f}s ago"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["beat"]:
        print("usage: python -m worker.app.health beat", file=sys.stderr)
        return 2
    settings = get_settings()
    client = store_client(settings, decode_responses=True, socket_timeout=3)
    try:
        ok, why = beat_alive(JobStore(client), settings.reconcile_interval_seconds, time.time())
    except redis.RedisError as exc:
        ok, why = False, f"Redis does not answer ({type(exc).__name__})"
    print(f"beat: {why}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
