"""Living within each provider's request budget: creditq's fleet-wide budget against the
baseline a user writes first (Celery's per-worker ``rate_limit``), side by side.

    .venv/bin/python benchmarks/budget.py [--grants 300] [--per-minute 600] [--lag 2]

The sandbox enforces the budget per provider over a 3-second sliding window (`--per-minute`
/ 20 calls: a provider counting over a window shorter than a minute, which punishes
bursts) and answers 429 past it, with the listing `--lag` seconds behind. Both sides run
three worker processes (`-P threads -c 8`) on one private Redis. creditq is configured at
the same budget and confirms every grant in the listing; the baseline task has
`rate_limit` set to the budget on each of its three workers and autoretry, and confirms
nothing. Half the grants go to Inveterate, five per member; half to Chargebee. Prints, per
provider: calls per confirmed grant, confirmed grants per budgeted call, 429s provoked,
and wall time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import benchmark_redis  # noqa: E402
from benchmarks.fleet import start_beat, start_worker  # noqa: E402
from benchmarks.throughput import Processes, sandbox_stats, start_sandbox, wait  # noqa: E402
from benchmarks.throughput import worker_env as creditq_env  # noqa: E402
from worker.app.commands import worker_command  # noqa: E402
from worker.domain.grant import CreditGrant, Provider  # noqa: E402
from worker.producer import enqueue_many  # noqa: E402
from worker.sandbox.options import DEFAULT_CHARGEBEE_KEY, DEFAULT_INVETERATE_KEY  # noqa: E402
from worker.store.jobs import JobStore  # noqa: E402

PROVIDERS = [p.value for p in Provider]


def grants(n: int, prefix: str) -> list[CreditGrant]:
    """Even i: Inveterate, five grants per member; odd i: Chargebee, one customer each."""
    return [
        CreditGrant(
            idempotency_key=f"{prefix}-{i}",
            provider="inveterate" if i % 2 == 0 else "chargebee",
            customer_id=f"{prefix}-m{i // 10}" if i % 2 == 0 else f"{prefix}-c{i}",
            amount=f"{1 + i % 9}.{i % 100:02d}",
            note=f"order {i}",
        )
        for i in range(n)
    ]


def window(args: argparse.Namespace) -> tuple[str, ...]:
    """The sandbox's budget: the same rate, counted over 3 seconds."""
    return ("--rate-limit", str(args.per_minute // 20), "--rate-window", "3")


def report(stats: dict[str, Any], confirmed: dict[str, int], seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {"seconds": seconds}
    for provider in PROVIDERS:
        calls = sum(stats[provider]["calls"].values())
        done = confirmed[provider]
        out[provider] = {
            "calls": calls,
            "confirmed": done,
            "rate_limited": stats[provider]["rate_limited"],
            "calls_per_grant": calls / done if done else None,
            "grants_per_call": done / calls if calls else None,
        }
    return out


def run_creditq(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    procs = Processes()
    try:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        client.flushdb()
        sandbox = start_sandbox(procs, 0.02, args.lag, *window(args))
        env = creditq_env(redis_url, sandbox, args.lag)
        env["CREDITQ_INVETERATE_RATE_LIMIT_PER_MINUTE"] = str(args.per_minute)
        env["CREDITQ_CHARGEBEE_RATE_LIMIT_PER_MINUTE"] = str(args.per_minute)
        for n in range(3):
            start_worker(procs, env, f"w{n}", 8)
        start_beat(procs, env)
        os.environ["CREDITQ_REDIS_URL"] = redis_url
        from worker.app import create_app

        app, store = create_app(), JobStore(client)
        batch = grants(args.grants, "cq")
        time.sleep(3.0)  # the workers connect before the clock starts
        start = time.monotonic()
        enqueue_many(batch, store=store, app=app)
        end = wait(
            lambda: store.count_by_state()["confirmed"] == args.grants, 900, "creditq", interval=0.2
        )
        confirmed = {p: sum(1 for g in batch if g.provider.value == p) for p in PROVIDERS}
        return report(sandbox_stats(sandbox), confirmed, end - start)
    finally:
        procs.stop_all()


def run_baseline(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    procs = Processes()
    try:
        redis.Redis.from_url(redis_url).flushdb()
        sandbox = start_sandbox(procs, 0.02, args.lag, *window(args))
        env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITQ_")}
        env.update(
            {
                "BASELINE_BROKER_URL": redis_url,
                "BASELINE_SANDBOX_URL": sandbox,
                "BASELINE_INVETERATE_KEY": DEFAULT_INVETERATE_KEY,
                "BASELINE_CHARGEBEE_KEY": DEFAULT_CHARGEBEE_KEY,
                "BASELINE_RATE_LIMIT": f"{args.per_minute}/m",
                "PYTHONPATH": str(ROOT),
            }
        )
        for n in range(3):
            procs.start(
                worker_command(
                    "8", "-n", f"b{n}@%h", "-l", "WARNING", app="benchmarks.baseline_app"
                ),
                env,
                f"baseline{n}",
            )
        os.environ.update({k: env[k] for k in ("BASELINE_BROKER_URL", "BASELINE_SANDBOX_URL")})
        from benchmarks.baseline_app import app, post_chargebee, post_inveterate

        batch = [g.to_message() for g in grants(args.grants, "base")]
        time.sleep(3.0)
        start = time.monotonic()
        with app.producer_or_acquire() as producer:
            for message in batch:
                task = post_inveterate if message["provider"] == "inveterate" else post_chargebee
                task.apply_async(kwargs=message, producer=producer)

        def applied() -> bool:
            return sum(p["applied"] for p in sandbox_stats(sandbox).values()) >= args.grants

        end = wait(applied, 900, "baseline", interval=0.2)
        stats = sandbox_stats(sandbox)
        # The baseline confirms nothing: count what it applied.
        return report(stats, {p: stats[p]["applied"] for p in PROVIDERS}, end - start)
    finally:
        procs.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grants", type=int, default=300)
    parser.add_argument("--per-minute", type=int, default=600)
    parser.add_argument("--lag", type=float, default=2.0)
    args = parser.parse_args()
    with benchmark_redis() as url:
        creditq = run_creditq(args, url)
        baseline = run_baseline(args, url)
    print(
        f"{args.grants} grants (half Inveterate at 5 per member, half Chargebee), budget "
        f"{args.per_minute}/min per provider enforced by the sandbox, listing {args.lag:g} s "
        "behind, 3 workers -P threads -c 8 each"
    )
    for name, run, what in (("creditq", creditq, "confirmed"), ("baseline", baseline, "applied")):
        print(f"{name}: all {what} in {run['seconds']:.1f} s")
        for provider in PROVIDERS:
            r = run[provider]
            print(
                f"  {provider:<10} {r['calls']:4d} calls, {r['calls_per_grant']:.2f} calls per "
                f"{what} grant, {r['grants_per_call']:.2f} {what} grants per call, "
                f"{r['rate_limited']} 429s"
            )


if __name__ == "__main__":
    main()
