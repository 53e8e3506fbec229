"""Enqueue rates against a real redis-server: what the idempotency step costs a producer.

    .venv/bin/python benchmarks/enqueue.py [--single N] [--batch N]

Prints, from one process and one private Redis:
- a raw Celery ``send_task`` of the issue message (the baseline: no idempotency at all),
- ``enqueue`` one grant at a time (validation + atomic create + publish),
- ``enqueue_many`` over a batch (one pipeline, one broker connection),
and the ratios against the baseline.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from benchmarks.common import benchmark_redis, grant_batch, rate
from worker.app import ISSUE_TASK, create_app
from worker.producer import enqueue, enqueue_many
from worker.store.jobs import JobStore


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--single", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()

    with benchmark_redis() as url:
        client = redis.Redis.from_url(url, decode_responses=True)
        app = create_app()
        store = JobStore(client)
        messages = [g.to_message() for g in grant_batch(args.single, "raw")]

        client.flushdb()
        with app.producer_or_acquire() as producer:  # warm the connection like a long-lived app
            app.send_task(ISSUE_TASK, kwargs=messages[0], producer=producer)
        client.flushdb()
        start = time.perf_counter()
        for message in messages:
            app.send_task(ISSUE_TASK, kwargs=message)
        raw_s = time.perf_counter() - start

        single = grant_batch(args.single, "single")
        client.flushdb()
        start = time.perf_counter()
        for grant in single:
            enqueue(grant, store=store, app=app)
        single_s = time.perf_counter() - start
        assert client.llen("creditq.issue") == args.single

        batch = grant_batch(args.batch, "batch")
        client.flushdb()
        start = time.perf_counter()
        results = enqueue_many(batch, store=store, app=app)
        batch_s = time.perf_counter() - start
        assert sum(r.created for r in results) == args.batch
        assert client.llen("creditq.issue") == args.batch

        start = time.perf_counter()
        again = enqueue_many(batch, store=store, app=app)
        dup_s = time.perf_counter() - start
        assert not any(r.created for r in again)

    print(f"raw send_task        {args.single:>6} msgs  {raw_s:6.2f} s  {rate(args.single, raw_s)}")
    print(
        f"enqueue (single)     {args.single:>6} jobs  {single_s:6.2f} s  "
        f"{rate(args.single, single_s)}  ratio {raw_s / single_s:.2f} of raw"
    )
    print(
        f"enqueue_many         {args.batch:>6} jobs  {batch_s:6.2f} s  "
        f"{rate(args.batch, batch_s)}  ratio {(args.batch / batch_s) / (args.single / raw_s):.2f}"
        " of raw"
    )
    print(f"enqueue_many (dups)  {args.batch:>6} jobs  {dup_s:6.2f} s  {rate(args.batch, dup_s)}")


if __name__ == "__main__":
    main()
