"""Cost per confirmed grant: Redis commands, HTTP calls, and memory per job record.

    .venv/bin/python benchmarks/cost.py [--grants 2000] [--concurrency 16] [--lag 0]

One private Redis serves as both the job store and the Celery broker, so its counters
hold everything a grant costs: the producer's ``enqueue_many``, the broker traffic, the
worker's scripts and reads. One sandbox (20 ms a call) and one ``-P threads`` worker; no
beat (the reconcile sweep costs per interval, not per grant). Measured:

- Redis commands: ``INFO commandstats`` before and after N grants are confirmed, minus
  this script's own polling. Redis counts the commands a Lua script runs as well as the
  EVALSHA, so a MONITOR tally splits the total into commands sent by clients and commands
  run inside scripts. The idle rate (the worker's BRPOP loop and heartbeats, measured
  first) is reported, and subtracted in the "net" figure.
- HTTP calls: the sandbox's counters per operation.
- Memory: ``INFO memory`` used_memory before and after the N terminal jobs (hash, history,
  state index, claimed sets: everything a job leaves behind), ``MEMORY USAGE`` of sample job
  hashes and histories, and the projection to one million terminal records.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from benchmarks.common import benchmark_redis  # noqa: E402
from benchmarks.fleet import start_worker, warm_up  # noqa: E402
from benchmarks.throughput import (  # noqa: E402
    Processes,
    grant_batch,
    sandbox_stats,
    start_sandbox,
    wait,
    worker_env,
)
from worker.app import create_app  # noqa: E402
from worker.domain.states import JobState  # noqa: E402
from worker.producer import enqueue_many  # noqa: E402
from worker.store.jobs import JobStore  # noqa: E402
from worker.store.keys import Keys  # noqa: E402

IGNORED = {"info", "monitor", "client", "echo", "memory", "object", "config"}
END = "cost-benchmark-end"


def command_counts(client: redis.Redis) -> Counter[str]:
    stats = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})


class Tally(threading.Thread):
    """MONITOR: every command, by name and by origin (a client, or a Lua script)."""

    def __init__(self, url: str, skip_addr: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.skip_addr = skip_addr
        self.by_client: Counter[str] = Counter()
        self.in_lua: Counter[str] = Counter()
        self.ready = threading.Event()

    def run(self) -> None:
        with self.client.monitor() as monitor:
            self.ready.set()
            while True:
                command = monitor.next_command()
                words = str(command["command"]).split()
                name = words[0].lower() if words else ""
                if name == "echo" and END in command["command"]:
                    return
                if command.get("client_type") == "lua":
                    self.in_lua[name] += 1
                elif f"{command['client_address']}:{command['client_port']}" != self.skip_addr:
                    self.by_client[name] += 1


def http_calls(url: str) -> Counter[str]:
    calls: Counter[str] = Counter()
    for provider in sandbox_stats(url).values():
        calls.update(provider["calls"])
    return calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grants", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--lag", type=float, default=0.0)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    args = parser.parse_args()
    n = args.grants
    with benchmark_redis() as url:
        procs = Processes()
        try:
            poller = redis.Redis.from_url(url, decode_responses=True, single_connection_client=True)
            poller.flushdb()
            me = str(poller.client_info()["addr"])
            sandbox = start_sandbox(procs, args.latency, args.lag)
            env = worker_env(url, sandbox, args.lag)
            start_worker(procs, env, "cost", args.concurrency)
            store = JobStore(redis.Redis.from_url(url, decode_responses=True))
            os.environ["CREDITQ_REDIS_URL"] = url
            app = create_app()
            warm_up(store, app, "cost")
            time.sleep(1.0)

            idle_start = command_counts(poller)
            time.sleep(args.idle_seconds)
            idle = command_counts(poller) - idle_start
            idle_rate = sum(v for k, v in idle.items() if k not in IGNORED) / args.idle_seconds

            memory_before = int(poller.info("memory")["used_memory"])
            tally = Tally(url, me)
            tally.start()
            tally.ready.wait(5)
            time.sleep(0.2)
            before, http_before, start = command_counts(poller), http_calls(sandbox), time.time()
            enqueue_many(grant_batch(n, "cost"), store=store, app=app)
            confirmed = Keys.index(JobState.CONFIRMED)
            polls = Counter[str]()

            def all_confirmed() -> bool:
                polls["zcard"] += 1  # this script's own commands: not a cost of the pipeline
                return int(poller.zcard(confirmed)) >= n + 1

            wait(all_confirmed, 600, "every grant confirmed", 0.5)
            time.sleep(3.0)  # the last scheduled confirm reads find nothing left and stop
            after, http_after = command_counts(poller), http_calls(sandbox)
            seconds = time.time() - start
            poller.echo(END)
            tally.join(30)
            memory_after = int(poller.info("memory")["used_memory"])
            keys = [f"cost-{i}" for i in range(0, n, max(1, n // 50))]
            hashes = [int(poller.memory_usage(Keys.job(k), samples=0) or 0) for k in keys]
            histories = [int(poller.memory_usage(Keys.history(k), samples=0) or 0) for k in keys]
            encoding = poller.object("encoding", Keys.job(keys[0]))
            history_len = poller.llen(Keys.history(keys[0]))
        finally:
            procs.stop_all()

    delta = after - before - polls
    counted = {k: v for k, v in delta.items() if k not in IGNORED}
    total = sum(counted.values())
    from_clients = sum(v for k, v in tally.by_client.items() if k not in IGNORED)
    in_lua = sum(tally.in_lua.values())
    net = total - idle_rate * seconds
    http = http_after - http_before
    hash_avg, history_avg = sum(hashes) / len(keys), sum(histories) / len(keys)
    per_job = (memory_after - memory_before) / n
    print(
        f"{n} grants confirmed in {seconds:.1f} s (one worker -P threads -c {args.concurrency},"
        f" sandbox {args.latency * 1000:.0f} ms, lag {args.lag:g} s);"
        " Redis is store and broker"
    )
    print(
        f"Redis commands per grant: {total / n:.1f} (commandstats); net of idle "
        f"({idle_rate:.1f}/s x {seconds:.1f} s): {net / n:.1f}"
    )
    print(
        f"  sent by clients {from_clients / n:.1f}/grant, run inside Lua scripts "
        f"{in_lua / n:.1f}/grant (MONITOR)"
    )
    top = sorted(counted.items(), key=lambda kv: -kv[1])[:12]
    print("  top: " + ", ".join(f"{k} {v / n:.2f}" for k, v in top))
    top_clients = tally.by_client.most_common(8)
    print("  top sent by clients: " + ", ".join(f"{k} {v / n:.2f}" for k, v in top_clients))
    by_op = ", ".join(f"{op} {v / n:.2f}" for op, v in sorted(http.items()))
    print(f"HTTP calls per grant: {sum(http.values()) / n:.2f} ({by_op})")
    print(
        f"memory: used_memory +{(memory_after - memory_before) / 1e6:.2f} MB for {n} terminal"
        f" jobs = {per_job:.0f} B/job; MEMORY USAGE job hash {hash_avg:.0f} B ({encoding}),"
        f" history {history_avg:.0f} B ({history_len} entries)"
    )
    records = (hash_avg + history_avg) * 1e6 / 2**30
    print(
        f"projection: 1,000,000 terminal records = {per_job * 1e6 / 2**30:.2f} GiB of"
        f" used_memory (hash + history alone {records:.2f} GiB)"
    )


if __name__ == "__main__":
    main()
