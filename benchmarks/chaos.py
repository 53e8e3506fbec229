"""Chaos: the exactly-once and nothing-lost guarantees under kills, faults and a Redis crash.

    .venv/bin/python benchmarks/chaos.py [--grants 300] [--chaos-seconds 60] [--seed 7]

A private Redis with the append-only file on (appendfsync everysec), one sandbox with
faults on every submit (500 before applying, 500 after applying, no answer after applying)
and the listing ``--lag`` behind, three ``-P threads -c 8`` workers and one beat, with the
fast timings of the integration tests (tests/fixtures/workers.py FAST). For
``--chaos-seconds`` the grants (both providers) are enqueued in small batches while a random
worker is SIGKILLed and restarted every few seconds, and halfway through Redis is SIGKILLed
and started again on the same port and directory. Then: wait until every job is terminal,
replay whatever is in the DLQ, wait again, and compare the jobs with the sandbox's ledger.

Prints grants enqueued and confirmed, DLQ depth before and after the replay, duplicates
(keys with more than one credit: must be 0), grants never issued (no credit and not
confirmed: 0), grants not confirmed (0), job records lost (a credit with no job: the
window AOF everysec may lose), wall time and kills; and the full story of any bad key.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import redis  # noqa: E402
from kombu.exceptions import OperationalError  # noqa: E402

from benchmarks.fleet import credits_for, ledger_by_marker, start_beat, start_worker, warm_up  # noqa: E402
from benchmarks.throughput import Processes, grant_batch, sandbox_stats, start_sandbox, worker_env  # noqa: E402
from tests.fixtures.witnesses import Witnesses  # noqa: E402
from tests.fixtures.workers import FAST  # noqa: E402
from worker.app import create_app  # noqa: E402
from worker.domain.grant import CreditGrant  # noqa: E402
from worker.domain.states import JobState  # noqa: E402
from worker.producer import enqueue_many  # noqa: E402
from worker.settings import get_settings  # noqa: E402
from worker.store.dlq import dlq_depth, replay, select  # noqa: E402
from worker.store.embedded import EmbeddedRedis  # noqa: E402
from worker.store.jobs import JobStore  # noqa: E402


def add_faults(sandbox: str, args: argparse.Namespace) -> None:
    for kind, probability in (
        ("error_before", args.fail_before),
        ("error_after", args.fail_after),
        ("timeout_after", args.timeout_after),
    ):
        body = {"kind": kind, "operation": "submit", "probability": probability}
        httpx.post(f"{sandbox}/_sandbox/faults", json=body, timeout=5).raise_for_status()


def mark(sandbox: str, customer_id: str, status: int | None) -> None:
    """Make the sandbox refuse (404) or accept again a customer's submits."""
    body = {"customer_id": customer_id, "status": status}
    httpx.post(f"{sandbox}/_sandbox/customers", json=body, timeout=5).raise_for_status()


def enqueue_retrying(batch: list[CreditGrant], store: JobStore, app: Any) -> None:
    """A producer that retries while Redis is down: the same keys again are duplicates."""
    deadline = time.monotonic() + 30
    while True:
        try:
            enqueue_many(batch, store=store, app=app)
            return
        except (redis.RedisError, OperationalError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def wait_terminal(
    store: JobStore, keys: list[str], timeout: float, shop: Witnesses | None = None
) -> list[str]:
    """Wait until every job is terminal or gone; returns the keys still unfinished. With a
    ``shop``, it sells on while an outcome is unknown (tests/fixtures/witnesses.py), and the
    keys of the witness grants are added to ``keys``."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = store.get_many(keys, history=False)
        open_keys = [k for k, j in zip(keys, jobs, strict=True) if j and not j.state.terminal]
        if not open_keys or time.monotonic() > deadline:
            return open_keys
        if shop is not None:
            keys.extend(shop.tick(open_keys))
        time.sleep(1.0)


def crashed_on_their_own(procs: Processes) -> int:
    """Workers Celery gave up on (not our SIGKILLs): the harness restarts them like any dead
    worker, so only their logs tell."""
    return sum(
        "Unrecoverable error" in log.read_text(errors="replace")
        for log in Path(procs.dir).glob("w*.log")
    )


def story(
    store: JobStore, key: str, ledger: dict[str | None, list[dict[str, Any]]], procs: Processes
) -> str:
    """Everything about one bad key: its job with history, its credits, its log lines."""
    job = store.get(key)
    lines = [
        f"--- {key}",
        "job: " + json.dumps(job.to_json() if job else None, default=str),
        "credits: " + json.dumps(credits_for(ledger, job), default=str),
    ]
    for log in sorted(Path(procs.dir).glob("*.log")):
        lines += [
            f"{log.name}: {line}"
            for line in log.read_text(errors="replace").splitlines()
            if key in line
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grants", type=int, default=300)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--chaos-seconds", type=float, default=60.0)
    parser.add_argument(
        "--kill-every",
        type=float,
        nargs=2,
        default=[2.0, 5.0],
        metavar=("MIN", "MAX"),
        help="seconds between kills, uniform",
    )
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--lag", type=float, default=1.0)
    parser.add_argument("--fail-before", type=float, default=0.05)
    parser.add_argument("--fail-after", type=float, default=0.05)
    parser.add_argument("--timeout-after", type=float, default=0.03)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--refuse-customer",
        default="chaos-cust-3",
        help="answered 404 during the chaos, fixed before the DLQ replay",
    )
    parser.add_argument("--settle-timeout", type=float, default=300.0)
    args = parser.parse_args()
    server = EmbeddedRedis(appendonly=True).start()
    os.environ["CREDITQ_REDIS_URL"] = server.url
    get_settings.cache_clear()
    try:
        run(args, server)
    finally:
        server.cleanup()


def run(args: argparse.Namespace, server: EmbeddedRedis) -> None:
    rng = random.Random(args.seed)
    procs = Processes()
    began = time.monotonic()
    try:
        sandbox = start_sandbox(procs, args.latency, args.lag)
        add_faults(sandbox, args)
        mark(sandbox, args.refuse_customer, 404)  # lands in the DLQ; replayed once fixed
        env = {**worker_env(server.url, sandbox, args.lag), **FAST}
        workers = [
            start_worker(procs, env, f"w{i}.0", args.concurrency, "INFO")
            for i in range(args.workers)
        ]
        beat = start_beat(procs, env)
        store = JobStore.from_url(server.url)
        app = create_app()
        warm_up(store, app, "chaos")

        grants = grant_batch(args.grants, "chaos")
        per_second = math.ceil(args.grants / (0.8 * args.chaos_seconds))
        kills, enqueued_at = 0, {}
        redis_down: tuple[float, float] | None = None
        start, chaos_wall = time.monotonic(), time.time()
        next_kill = start + rng.uniform(*args.kill_every)
        redis_at = start + args.chaos_seconds / 2
        next_batch = start
        while (now := time.monotonic()) < start + args.chaos_seconds:
            if grants and now >= next_batch:
                batch, grants = grants[:per_second], grants[per_second:]
                enqueue_retrying(batch, store, app)
                enqueued_at.update({g.idempotency_key: time.time() for g in batch})
                next_batch += 1.0
            if now >= next_kill:
                i = rng.randrange(len(workers))
                os.killpg(workers[i].pid, signal.SIGKILL)
                workers[i].wait()
                kills += 1
                workers[i] = start_worker(procs, env, f"w{i}.{kills}", args.concurrency, "INFO")
                next_kill = now + rng.uniform(*args.kill_every)
            if redis_down is None and now >= redis_at:
                server.restart(hard=True)
                redis_down = (now - start, time.monotonic() - now)
            time.sleep(0.05)
        for batch in (grants[i : i + 50] for i in range(0, len(grants), 50)):  # if any left
            enqueue_retrying(batch, store, app)
            enqueued_at.update({g.idempotency_key: time.time() for g in batch})
        chaos_end = time.monotonic()
        beat_alive = beat.poll() is None

        keys = list(enqueued_at)
        shop = Witnesses(store, lambda g: enqueue_retrying(g, store, app), prefix="chaos-witness")
        stuck = wait_terminal(store, keys, args.settle_timeout, shop)
        dlq_before = dlq_depth(store)
        mark(sandbox, args.refuse_customer, None)  # the operator fixes the cause, then replays
        replayed = replay(store, select(store), app) if dlq_before else []
        stuck_after = wait_terminal(store, keys, args.settle_timeout, shop) if replayed else stuck
        dlq_after = dlq_depth(store)
        done = time.monotonic()

        ledger = ledger_by_marker(sandbox)
        jobs = dict(zip(keys, store.get_many(keys), strict=True))
        confirmed = [k for k, j in jobs.items() if j and j.state is JobState.CONFIRMED]
        duplicates = [k for k in keys if len(credits_for(ledger, jobs[k])) > 1]
        never_issued = [k for k in keys if not credits_for(ledger, jobs[k]) and k not in confirmed]
        not_confirmed = [k for k in keys if k not in confirmed]
        lost = [k for k, j in jobs.items() if j is None]
        stats = sandbox_stats(sandbox)
    finally:
        procs.stop_all()

    print(
        f"{args.workers} workers -P threads -c {args.concurrency} + beat; sandbox latency "
        f"{args.latency * 1000:.0f} ms, lag {args.lag:g} s, submit faults: 500 before "
        f"{args.fail_before:g}, 500 after {args.fail_after:g}, timeout after "
        f"{args.timeout_after:g}; Redis AOF everysec; seed {args.seed}"
    )
    for provider, s in stats.items():
        print(
            f"  sandbox {provider}: calls {s['calls']}, applied {s['applied']}, "
            f"faults {s['faults']}, idempotent replays {s['replays']}"
        )
    if redis_down:
        print(
            f"Redis SIGKILLed {redis_down[0]:.1f} s into the chaos, serving again "
            f"{redis_down[1]:.2f} s later (AOF reloaded)"
        )
    print(
        f"worker kills (SIGKILL + restart): {kills} in {chaos_end - start:.0f} s; "
        f"beat alive after the chaos: {beat_alive}"
    )
    print(
        f'worker processes that died on their own ("Unrecoverable error" in their log): '
        f"{crashed_on_their_own(procs)}"
    )
    witnesses = sum(k.startswith("chaos-witness-") for k in keys)
    print(
        f"grants enqueued {len(keys)} ({witnesses} after the chaos, the shop selling on while an"
        f" outcome was unknown), confirmed {len(confirmed)}"
    )
    print(f"unfinished before replay {len(stuck)}, after {len(stuck_after)}")
    print(
        f"in DLQ before replay {dlq_before}, replayed {sum(r.result.ok for r in replayed)}, "
        f"in DLQ after {dlq_after}"
    )
    print(f"duplicates (more than one credit): {len(duplicates)}")
    print(f"never issued (no credit, not confirmed): {len(never_issued)}")
    print(f"not confirmed: {len(not_confirmed)}")
    print(f"job records lost (no job, so no marker to count its credits by): {len(lost)}")
    print(
        f"wall time {done - began:.0f} s (chaos {chaos_end - start:.0f} s, settle and replay "
        f"{done - chaos_end:.0f} s); logs in {procs.dir}"
    )
    for key in dict.fromkeys(duplicates + never_issued + not_confirmed + lost):
        print(f"enqueued {enqueued_at[key] - chaos_wall:.1f} s into the chaos")
        print(story(store, key, ledger, procs))


if __name__ == "__main__":
    main()
