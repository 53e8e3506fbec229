"""Intake rates: grants handed over through ``creditq serve`` against ``enqueue`` itself.

    .venv/bin/python benchmarks/intake.py [--single N] [--batch N] [--clients C]

One private Redis, in one run:
- ``enqueue`` one grant at a time and ``enqueue_many`` over the batch, in this process (the
  baseline: the producer API with no HTTP in between),
- ``POST /v1/grants`` one grant per request, from one client and from ``--clients`` client
  threads (a web shop's handlers post side by side), each on a kept-alive connection,
- ``POST /v1/grants/batch`` in requests of 1,000,
to ``creditq serve`` as its own process (one uvicorn worker), with a bearer token; then the
rates and their ratios to the baseline of the same shape.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import redis

from benchmarks.common import benchmark_redis, grant_batch, rate
from tests.fixtures.workers import wait_until
from worker.app import create_app
from worker.producer import enqueue, enqueue_many
from worker.serve.api import MAX_BATCH
from worker.store.embedded import free_port
from worker.store.jobs import JobStore

TOKEN = "intake-benchmark-token-0123456789"


def messages(prefix: str, n: int) -> list[dict[str, object]]:
    return [g.to_message() for g in grant_batch(n, prefix)]


def start_serve(redis_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "CREDITQ_REDIS_URL": redis_url, "CREDITQ_API_TOKENS": TOKEN}
    command = [sys.executable, "-c", "from worker.cli.main import main; main()", "serve"]
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    if not wait_until(ready, timeout=30):
        process.kill()
        raise SystemExit("creditq serve did not become ready")
    return process, base


def post_each(base: str, grants: list[dict[str, object]], clients: int) -> float:
    """Seconds to POST every grant, one per request, from ``clients`` threads."""
    shares = [grants[i::clients] for i in range(clients)]
    failures: list[str] = []

    def run(share: list[dict[str, object]]) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            for grant in share:
                answer = client.post("/v1/grants", json=grant)
                if answer.status_code != 201:
                    failures.append(f"{answer.status_code} {answer.text[:200]}")

    threads = [threading.Thread(target=run, args=(share,)) for share in shares]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    if failures:
        raise SystemExit(f"{len(failures)} POSTs failed, first: {failures[0]}")
    return seconds


def post_batches(base: str, grants: list[dict[str, object]]) -> float:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
        start = time.perf_counter()
        for i in range(0, len(grants), MAX_BATCH):
            answer = client.post("/v1/grants/batch", json={"grants": grants[i : i + MAX_BATCH]})
            if answer.status_code != 201:
                raise SystemExit(f"batch refused: {answer.status_code} {answer.text[:200]}")
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--single", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()

    with benchmark_redis() as url:
        client = redis.Redis.from_url(url, decode_responses=True)
        app = create_app()
        store = JobStore(client)
        serve, base = start_serve(url)
        try:
            post_each(base, messages("warm", 20), 1)  # connections and first-use caches
            start = time.perf_counter()
            for grant in grant_batch(args.single, "enqueue"):
                enqueue(grant, store=store, app=app)
            enqueue_s = time.perf_counter() - start
            start = time.perf_counter()
            enqueue_many(grant_batch(args.batch, "many"), store=store, app=app)
            many_s = time.perf_counter() - start

            one_s = post_each(base, messages("http1", args.single), 1)
            par_s = post_each(base, messages("httpc", args.single), args.clients)
            batch_s = post_batches(base, messages("httpb", args.batch))
            total = 20 + 3 * args.single + 2 * args.batch
            assert client.llen("creditq.issue") == total, "every accepted grant is one message"
        finally:
            serve.terminate()
            serve.wait(timeout=15)

    single_rate = args.single / enqueue_s
    many_rate = args.batch / many_s
    rows = [
        ("enqueue, one grant per call (baseline)", args.single, enqueue_s, single_rate),
        ("POST /v1/grants, 1 client", args.single, one_s, single_rate),
        (f"POST /v1/grants, {args.clients} clients", args.single, par_s, single_rate),
        ("enqueue_many (baseline)", args.batch, many_s, many_rate),
        (f"POST /v1/grants/batch, {MAX_BATCH} a request", args.batch, batch_s, many_rate),
    ]
    print(f"{'path':<44} {'grants':>7} {'seconds':>8} {'rate':>9}  of its baseline")
    for name, n, seconds, baseline in rows:
        print(
            f"{name:<44} {n:>7} {seconds:>8.2f} {rate(n, seconds):>9}  {n / seconds / baseline:.2f}"
        )


if __name__ == "__main__":
    main()
