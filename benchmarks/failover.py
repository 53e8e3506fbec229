"""A Redis failover under load: what a SIGKILLed master costs, and that it costs no money.

    .venv/bin/python benchmarks/failover.py [--runs 3] [--grants 150] [--kill-after 50]
        [--replicas 1] [--burst 0] [--flap] [--default-budgets] [--log-level INFO]

A master, ``--replicas`` replicas and three Sentinels (quorum 2, a master down after 1 s
without an answer), all redis-server processes on loopback with Redis's replication
defaults; three workers (``-P threads -c 8``) and beat behind them, for the job store and
the broker alike (``CREDITQ_REDIS_URL`` names the Sentinels, ``CREDITQ_REDIS_MIN_REPLICAS=1``);
the sandbox 20 ms a call, its listing 0.3 s behind. Once a warm-up grant is confirmed (the
workers consume), a producer hands the grants over one by one, 50 ms apart, and hands a
refused one over again after 0.2 s, as a webhook is retried; after ``--kill-after`` grants
(and ``--burst`` more handed over at once, a backlog in the broker) the master is
SIGKILLed, and restarted as soon as the Sentinels have promoted a replica: it comes back
empty, as a master, until the Sentinels make it a replica of the new one (at their next
look at it, up to 10 s) and it resyncs (after Redis's ``repl-diskless-sync-delay``, 5 s).
``--flap`` then stops the promoted master for 2.5 s (SIGSTOP), so that the Sentinels fail
over a second time, to the other replica.
The workers' request budgets are lifted (60,000 calls a minute) unless ``--default-budgets``:
then they run at the defaults (Inveterate 100, Chargebee 150 a minute) and the sandbox
answers 429 past 150 calls a minute per provider, as production would.

Printed per run, times in seconds from the first grant: the kill, the promotion, when a
write was held by a replica again, the time without a credit written at the provider
around the failover (the POSTs' pause: ``pause_around``) and
when the last credit of the run was written (a grant whose POST's fate the kill left unknown
comes last, once its outcome is settled); grants paid
twice, lost (accepted, and then no job or no credit), unconfirmed; worker processes that
died; and the broker's messages in flight at the kill (queued or delivered and not
acknowledged, of them held for a countdown), how many of them the new master had at the
promotion, were delivered again during the run, were still in its unacked set at the end
(kombu delivers those again after the visibility timeout), how many jobs the reconciler
re-drove after the kill, and the calls the sandbox answered 429 (none expected: the budgets
are the workers' to keep). The workers' logs stay in the directory printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.fleet import ledger_by_marker, start_beat, start_worker, warm_up  # noqa: E402
from benchmarks.throughput import Processes, sandbox_stats, start_sandbox, wait  # noqa: E402
from worker.app import CONFIRM_QUEUE, ISSUE_QUEUE, RECONCILE_QUEUE, create_app  # noqa: E402
from worker.domain.job import Job  # noqa: E402
from worker.domain.states import JobState  # noqa: E402
from worker.errors import NotReplicated  # noqa: E402
from worker.producer import enqueue, enqueue_many  # noqa: E402
from worker.sandbox.options import DEFAULT_BUDGETS_RATE_LIMIT, creditq_env  # noqa: E402
from worker.settings import get_settings  # noqa: E402
from worker.store.embedded import EmbeddedSentinels  # noqa: E402
from worker.store.jobs import JobStore  # noqa: E402
from worker.store.keys import Keys  # noqa: E402

RETRY_SECONDS = 0.2
FLAP_SECONDS = 2.5  # longer than the Sentinels' down-after (1 s) and an election
SPACING_SECONDS = 0.05
BUDGETS_LIFTED = {
    "CREDITQ_INVETERATE_RATE_LIMIT_PER_MINUTE": "60000",
    "CREDITQ_CHARGEBEE_RATE_LIMIT_PER_MINUTE": "60000",
}


def grant(i: int, prefix: str = "fo") -> dict[str, Any]:
    return {
        "idempotency_key": f"{prefix}-{i}",
        "provider": "inveterate" if i % 2 else "chargebee",
        "customer_id": f"c{i}",
        "amount": f"{1 + i % 9}.00",
    }


def pause_around(times: list[float], kill: float, held_again: float) -> tuple[float, float]:
    """The POSTs' pause around the failover: the longest time between two credits written
    that ends after the kill and begins before writes were held again (a POST in flight at
    the kill may still land just after it). A grant that waits alone for its unknown outcome
    to be settled later is not part of it (``last_credit_at`` shows those)."""
    pauses = [(a, b) for a, b in pairwise(sorted(times)) if b > kill and a < max(held_again, kill)]
    return max(pauses, key=lambda pause: pause[1] - pause[0], default=(kill, kill))


RECEIVED = re.compile(r"^\[(\S+ \S+): INFO/MainProcess\] Task \S+\[([0-9a-f-]+)\] received")
REDRIVEN = re.compile(r"^\[(\S+ \S+): WARNING/MainProcess\] re-driving key=(\S+)")


def broker_messages(port: int) -> dict[str, str]:
    """The task messages the broker holds on the Redis at ``port``, by task id: "queued"
    (waiting in a queue), "countdown" (delivered, held by a worker until its ETA) or
    "running" (delivered, not acknowledged yet); the last two are kombu's ``unacked`` hash."""
    client = redis.Redis(port=port)
    try:
        held: dict[str, str] = {}
        for queue in (ISSUE_QUEUE, CONFIRM_QUEUE, RECONCILE_QUEUE):
            for raw in client.lrange(queue, 0, -1):
                held[json.loads(raw)["headers"]["id"]] = "queued"
        for raw in client.hvals("unacked"):
            headers = json.loads(raw)[0]["headers"]
            held[headers["id"]] = "countdown" if headers.get("eta") else "running"
        return held
    finally:
        client.close()


def log_times(logs: str, pattern: re.Pattern[str]) -> list[tuple[float, str]]:
    """(epoch seconds, the captured name) of every line of the workers' logs ``pattern``
    matches; the logs' times are this machine's local time."""
    found = []
    for path in Path(logs).glob("w*.log"):
        for line in path.read_text(errors="replace").splitlines():
            match = pattern.match(line)
            if match:
                at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                found.append((at, match.group(2)))
    return found


def run_once(args: argparse.Namespace) -> dict[str, Any]:
    ha = EmbeddedSentinels(count=3, quorum=2, replicas=args.replicas)
    procs = Processes()
    try:
        budgets = {} if args.default_budgets else BUDGETS_LIFTED
        limit = ("--rate-limit", str(DEFAULT_BUDGETS_RATE_LIMIT)) if args.default_budgets else ()
        sandbox = start_sandbox(procs, 0.02, 0.3, *limit)
        env = creditq_env(
            ha.url,
            sandbox,
            CREDITQ_REDIS_MIN_REPLICAS="1",
            CREDITQ_CONFIRM_FIRST_POLL_SECONDS="0.3",
            CREDITQ_RECONCILE_INTERVAL_SECONDS="2",
            CREDITQ_RECONCILE_GRACE_SECONDS="4",
            PYTHONPATH=str(ROOT),
            **budgets,
        )
        os.environ.update({"CREDITQ_REDIS_URL": ha.url, "CREDITQ_REDIS_MIN_REPLICAS": "1"})
        get_settings.cache_clear()
        workers = [start_worker(procs, env, f"w{n}", 8, args.log_level) for n in range(3)]
        start_beat(procs, env)
        store, app = JobStore.from_url(), create_app()
        # Hand over only once the workers consume: a kill before any of them has POSTed
        # measures the workers' start, not the failover (every grant would be checked).
        warm_up(store, app, "failover")
        accepted: list[str] = []
        refusals = 0
        reasons: Counter[str] = Counter()
        start = time.time()
        killed_at = failed_over_at = held_again_at = 0.0
        at_kill: dict[str, str] = {}
        on_new_master: dict[str, str] = {}

        def bring_back() -> None:
            nonlocal failed_over_at, held_again_at, on_new_master
            wait(ha.promoted, 60, "the failover")
            failed_over_at = time.time() - start
            on_new_master = broker_messages(ha.master_port())
            ha.master.start()
            if args.flap:  # the new master stops answering: the Sentinels fail over again
                promoted = next(r for r in ha.replicas if r.port == ha.master_port())
                assert promoted.process is not None
                promoted.process.send_signal(signal.SIGSTOP)
                time.sleep(FLAP_SECONDS)
                promoted.process.send_signal(signal.SIGCONT)
            wait(ha.holds_writes, 60, "a replica of the new master")
            held_again_at = time.time() - start

        for i in range(args.grants):
            while True:
                try:
                    enqueue(grant(i), store=store, app=app)
                    break
                except (NotReplicated, redis.RedisError, OSError) as exc:
                    refusals += 1
                    reasons[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1
                    time.sleep(RETRY_SECONDS)
            accepted.append(grant(i)["idempotency_key"])
            if i == args.kill_after:
                if args.burst:  # a backlog in the broker at the kill: its messages in flight
                    burst = [grant(n, "burst") for n in range(args.burst)]
                    enqueue_many(burst, store=store, app=app)
                    accepted.extend(g["idempotency_key"] for g in burst)
                at_kill = broker_messages(ha.master.port)
                ha.master.stop(hard=True)
                killed_at = time.time() - start
                threading.Thread(target=bring_back, daemon=True).start()
            time.sleep(SPACING_SECONDS)
        handed_over = time.time() - start

        def settled() -> bool:
            jobs = store.get_many(accepted, history=False)
            return all(j is not None and j.state.terminal for j in jobs)

        deadline = time.monotonic() + (args.timeout or (600 if args.default_budgets else 120))
        while not settled() and time.monotonic() < deadline:
            time.sleep(0.5)
        jobs = dict(zip(accepted, store.get_many(accepted), strict=True))
        ledger = ledger_by_marker(sandbox)
        credits = {key: len(ledger.get(job.marker, [])) if job else 0 for key, job in jobs.items()}
        times = [float(e["created_at"]) for entries in ledger.values() for e in entries]
        kill_time = start + killed_at
        stopped, resumed = pause_around(times, kill_time, start + held_again_at)
        again = {tid for at, tid in log_times(procs.dir, RECEIVED) if at > kill_time}
        redriven = {key for at, key in log_times(procs.dir, REDRIVEN) if at > kill_time}
        at_end = broker_messages(ha.master_port())
        return {
            "handed_over": len(accepted),
            "refusals": refusals,
            "killed_at": round(killed_at, 1),
            "failed_over_at": round(failed_over_at, 1),
            "held_again_at": round(held_again_at, 1),
            "handed_over_in": round(handed_over, 1),
            "no_credit_for": round(resumed - stopped, 2),
            "credits_stopped_at": round(stopped - start, 1),
            "credits_resumed_at": round(resumed - start, 1),
            "last_credit_at": round(max(times, default=start) - start, 1),
            "paid_twice": sum(1 for n in credits.values() if n > 1),
            "lost": sum(1 for key, job in jobs.items() if job is None or credits[key] == 0),
            "unconfirmed": sum(
                1 for job in jobs.values() if job is None or job.state is not JobState.CONFIRMED
            ),
            "workers_died": sum(1 for w in workers if w.poll() is not None),
            "in_flight": len(at_kill),
            "of_them_countdowns": sum(1 for kind in at_kill.values() if kind == "countdown"),
            "on_new_master": len(at_kill.keys() & on_new_master.keys()),
            "delivered_again": len(at_kill.keys() & again),
            "left_unacked": sum(
                1 for tid in at_kill if at_end.get(tid, "queued") != "queued" and tid not in again
            ),
            "jobs_redriven": len(redriven),
            "answered_429": sum(p["rate_limited"] for p in sandbox_stats(sandbox).values()),
            "era": int(store.redis.hget(Keys.ERA, "era") or 0),
            **promotion_checks(jobs.values()),
            "logs": procs.dir,
            "reasons": reasons.most_common(3),
        }
    finally:
        procs.stop_all()
        ha.stop()


# The history reason of a POST's move the store turned into a listing check (move.lua).
PROMOTED = "master was promoted"


def promotion_checks(jobs: Iterable[Job | None]) -> dict[str, Any]:
    """The jobs the store sent to the listing after the promotion (``store/lua/era.lua``),
    and the longest time from that check to the job's confirmation, in seconds."""
    took = []
    for job in jobs:
        checks = [h for h in job.history if PROMOTED in h["reason"]] if job else []
        confirmed = job.number("confirmed_at") if job else None
        if checks and confirmed is not None:
            took.append(confirmed - datetime.fromisoformat(checks[0]["at"]).timestamp())
        elif checks:
            took.append(float("inf"))
    return {"checked": len(took), "checked_took": round(max(took, default=0.0), 1)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--grants", type=int, default=150)
    parser.add_argument("--kill-after", type=int, default=50)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument(
        "--burst", type=int, default=0, help="grants handed over at once just before the kill"
    )
    parser.add_argument(
        "--flap",
        action="store_true",
        help="stop the promoted master for 2.5 s (SIGSTOP): a second failover (needs --replicas 2)",
    )
    parser.add_argument(
        "--default-budgets",
        action="store_true",
        help="the workers at the default budgets, the sandbox answering 429 past 150 a minute",
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds to settle (120, 600 at the budgets)"
    )
    parser.add_argument("--log-level", default="INFO", help="the workers' (logs kept)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    print(
        f"{args.grants} grants handed over one by one, the master SIGKILLed after "
        f"{args.kill_after} (and {args.burst} more at once); {args.replicas} replica(s), "
        "three Sentinels, three workers and beat, CREDITQ_REDIS_MIN_REPLICAS=1"
    )
    columns = [
        "handed_over",
        "refusals",
        "killed_at",
        "failed_over_at",
        "held_again_at",
        "no_credit_for",
        "credits_stopped_at",
        "credits_resumed_at",
        "last_credit_at",
        "paid_twice",
        "lost",
        "unconfirmed",
        "workers_died",
        "in_flight",
        "of_them_countdowns",
        "on_new_master",
        "delivered_again",
        "left_unacked",
        "jobs_redriven",
        "answered_429",
        "era",
        "checked",
        "checked_took",
    ]
    print("  run " + " ".join(f"{c:>14.14}" for c in columns))
    for n in range(args.runs):
        run = run_once(args)
        print(f"  {n + 1:>3} " + " ".join(f"{run[c]!s:>14}" for c in columns), flush=True)
        print(f"      logs: {run['logs']}; refused for: {run['reasons']}", flush=True)


if __name__ == "__main__":
    main()
