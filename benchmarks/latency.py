"""Enqueue-to-confirmed latency at a steady offered load below saturation.

    .venv/bin/python benchmarks/latency.py [--rate 40] [--seconds 30] [--concurrency 16]
        [--latency 0.02] [--first-polls 0.2,2.0]

One private Redis (job store and broker), one sandbox process answering every call after
``--latency`` with no listing lag, and one ``-P threads -c C`` worker. Grants are enqueued
one at a time with ``enqueue`` at ``--rate`` per second for ``--seconds``, paced on a clock
(an open loop: a slow pipeline does not slow the producer). Each grant's latency is its
job's ``confirmed_at`` minus its ``created_at``, both written by the store. One run per
value of ``CREDITQ_CONFIRM_FIRST_POLL_SECONDS`` (the wait before the first listing read,
which sets the floor of the latency). Prints the offered and achieved rates, p50/p95/p99
and max, and the split into enqueue-to-submitted and submitted-to-confirmed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from benchmarks.common import benchmark_redis  # noqa: E402
from benchmarks.fleet import percentile, start_worker, warm_up  # noqa: E402
from benchmarks.throughput import Processes, grant_batch, start_sandbox, wait, worker_env  # noqa: E402
from worker.app import create_app  # noqa: E402
from worker.domain.job import Job  # noqa: E402
from worker.domain.states import JobState  # noqa: E402
from worker.producer import enqueue  # noqa: E402
from worker.store.jobs import JobStore  # noqa: E402


def offer(
    store: JobStore, app: Any, prefix: str, rate: float, seconds: float
) -> tuple[list[str], float]:
    """Enqueue ``rate * seconds`` grants on a fixed schedule; returns the keys and the
    achieved offered rate (grants over the time from the first to the last enqueue)."""
    batch = grant_batch(round(rate * seconds), prefix)
    start = time.monotonic()
    for i, grant in enumerate(batch):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        enqueue(grant, store=store, app=app)
    elapsed = time.monotonic() - start
    return [g.idempotency_key for g in batch], (len(batch) - 1) / elapsed


def run(args: argparse.Namespace, url: str, first_poll: float) -> dict[str, float]:
    procs = Processes()
    try:
        client = redis.Redis.from_url(url, decode_responses=True)
        client.flushdb()
        sandbox = start_sandbox(procs, args.latency, 0.0)
        env = worker_env(url, sandbox, 0.0)
        env["CREDITQ_CONFIRM_FIRST_POLL_SECONDS"] = str(first_poll)
        start_worker(procs, env, "latency", args.concurrency)
        store = JobStore(client)
        os.environ["CREDITQ_REDIS_URL"] = url
        app = create_app()
        warm_up(store, app, f"poll{first_poll}")
        keys, offered = offer(store, app, f"lat{first_poll}", args.rate, args.seconds)

        def all_confirmed() -> bool:
            jobs = store.get_many(keys, history=False)
            return all(j is not None and j.state is JobState.CONFIRMED for j in jobs)

        wait(all_confirmed, 300, "every grant confirmed", interval=0.5)
        jobs: list[Job] = [j for j in store.get_many(keys, history=False) if j is not None]
        created = [j.created_at for j in jobs]
        confirmed = [j.number("confirmed_at") or 0.0 for j in jobs]
        submitted = [j.number("submitted_at") or 0.0 for j in jobs]
        total = [c - s for s, c in zip(created, confirmed, strict=True)]
        to_submit = [s - c for c, s in zip(created, submitted, strict=True)]
        to_confirm = [c - s for s, c in zip(submitted, confirmed, strict=True)]
        figures = {
            "offered": offered,
            "achieved": len(jobs) / (max(confirmed) - min(created)),
            "n": float(len(jobs)),
        }
        for name, values in (("total", total), ("submit", to_submit), ("confirm", to_confirm)):
            for q in (50, 95, 99, 100):
                figures[f"{name}_p{q}"] = percentile(values, q)
        return figures
    finally:
        procs.stop_all()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.0f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=40.0, help="grants per second offered")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.02, help="sandbox seconds per call")
    parser.add_argument(
        "--first-polls", default="0.2,2.0", help="CREDITQ_CONFIRM_FIRST_POLL_SECONDS, one run each"
    )
    args = parser.parse_args()
    polls = [float(p) for p in args.first_polls.split(",")]
    with benchmark_redis() as url:
        results = {poll: run(args, url, poll) for poll in polls}
    print(
        f"{args.rate:g} grants/s offered for {args.seconds:g} s, one worker -P threads -c "
        f"{args.concurrency}, sandbox latency {args.latency * 1000:.0f} ms, no lag"
    )
    print(
        "first poll  offered  achieved   grants |  enqueue->confirmed ms: p50     p95     "
        "p99     max | ->submitted p50  p99 | submitted->confirmed p50  p99"
    )
    for poll, r in results.items():
        print(
            f"{poll:8.1f} s {r['offered']:7.1f}/s {r['achieved']:7.1f}/s {r['n']:7.0f} | "
            f"{' ' * 20}{ms(r['total_p50'])} {ms(r['total_p95'])} {ms(r['total_p99'])} "
            f"{ms(r['total_p100'])} |     {ms(r['submit_p50'])} {ms(r['submit_p99'])} | "
            f"{' ' * 17}{ms(r['confirm_p50'])} {ms(r['confirm_p99'])}"
        )


if __name__ == "__main__":
    main()
