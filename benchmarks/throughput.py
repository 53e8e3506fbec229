"""Throughput of the full creditq pipeline against the baseline a user writes first.

    .venv/bin/python benchmarks/throughput.py [--grants N] [--repeat R] [--concurrency C]
        [--latency S] [--tuned-baseline] [--profile PREFIX]

Both run on one private Redis, the same `-P threads -c C` worker, and one sandbox process
answering every call after `--latency` (20 ms). creditq issues, reconciles and confirms each
grant in the listing; the baseline POSTs with autoretry and never confirms. Then creditq
again with the listing `--lag` seconds behind, its rate counted without the last lag (the
wait no pipeline can avoid for the final grant). Prints grants per second and the ratios:
creditq's both when every grant is confirmed and when every credit is applied at the
provider (the baseline's own finish line, which leaves out the final confirmation wait).

creditq's workers use worker/broker.py's transport (kombu's, one Redis client per channel);
the baseline, as a user writes it first, kombu's own. `--tuned-baseline` also runs the
baseline with creditq's transport, so the report shows what that transport alone buys.
`--profile PREFIX` attaches py-spy to each worker for the timed part: PREFIX.<run>.txt.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import benchmark_redis, grant_batch  # noqa: E402
from worker.broker import TRANSPORT  # noqa: E402
from worker.embedded_redis import free_port  # noqa: E402
from worker.producer import enqueue_many  # noqa: E402
from worker.sandbox.options import (  # noqa: E402
    DEFAULT_CHARGEBEE_KEY,
    DEFAULT_INVETERATE_KEY,
    creditq_env,
)
from worker.store import JobStore  # noqa: E402


class Processes:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.dir = tempfile.mkdtemp(prefix="creditq-bench-")

    def start(self, args: list[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        log = open(Path(self.dir) / f"{name}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.procs.clear()


def cpu_seconds(pid: int, *, system_only: bool = False) -> float:
    """User + system CPU (or system CPU alone) a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[12]) + (0 if system_only else int(fields[11]))
    return ticks / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU spent per grant by each process of a run: where the machine's two cores go."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self.start_sys = cpu_seconds(pids["worker"], system_only=True)

    def per_grant_ms(self, grants: int) -> dict[str, float]:
        """CPU ms per grant of each process, and ``worker_sys``: the worker's kernel share."""
        used = {name: (cpu_seconds(pid) - self.start[name]) * 1000 / grants
                for name, pid in self.pids.items()}  # fmt: skip
        kernel = cpu_seconds(self.pids["worker"], system_only=True) - self.start_sys
        return {**used, "worker_sys": kernel * 1000 / grants}


def start_profiler(args: argparse.Namespace, pid: int, name: str) -> subprocess.Popen[bytes] | None:
    """py-spy attached to a running worker once the clock has started (so the profile holds
    the work, not the imports): collapsed stacks of the samples holding the GIL, written to
    ``<--profile>.<name>.txt`` for a flame graph or a per-function tally."""
    if not args.profile:
        return None
    return subprocess.Popen(
        ["py-spy", "record", "--gil", "--nonblocking", "-r", "200", "-f", "raw", "-p", str(pid),
         "-o", f"{args.profile}.{name}.txt"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stop_profiler(profiler: subprocess.Popen[bytes] | None) -> None:
    """Stop at the finish line: py-spy writes its file on SIGINT."""
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(timeout=60)


def redis_pid(client: redis.Redis) -> int:
    return int(client.info("server")["process_id"])


def start_sandbox(procs: Processes, latency: float, lag: float, *extra: str) -> str:
    """The sandbox in its own process; ``extra`` flags such as ``--rate-limit 600``."""
    port = free_port()
    procs.start([sys.executable, "-m", "worker.sandbox", "--port", str(port), "--latency",
                 str(latency), "--lag", str(lag), *extra], dict(os.environ), "sandbox")  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait(lambda: _up(url), 20, "sandbox")
    return url


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/_sandbox/stats", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def wait(condition: Any, timeout: float, what: str, interval: float = 0.05) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(interval)
    return time.monotonic()


def sandbox_stats(url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/_sandbox/stats", timeout=5).json())


def applied_count(url: str) -> int:
    return sum(p["applied"] for p in sandbox_stats(url).values())


def worker_env(redis_url: str, sandbox_url: str, lag: float) -> dict[str, str]:
    # The budget still runs (a slot is taken per call) but never makes anyone wait: the
    # baseline has none, and this compares the pipelines, not the pacing.
    return creditq_env(
        redis_url, sandbox_url,
        CREDITQ_INVETERATE_RATE_LIMIT_PER_MINUTE="1000000000",
        CREDITQ_CHARGEBEE_RATE_LIMIT_PER_MINUTE="1000000000",
        CREDITQ_CONFIRM_FIRST_POLL_SECONDS=str(max(lag, 0.2)),
        PYTHONPATH=str(ROOT),
    )  # fmt: skip


def run_creditq(
    args: argparse.Namespace, redis_url: str, lag: float, prefix: str
) -> dict[str, float]:
    procs = Processes()
    try:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        client.flushdb()
        sandbox = start_sandbox(procs, args.latency, lag)
        env = worker_env(redis_url, sandbox, lag)
        command = [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-P",
                   "threads", "-c", str(args.concurrency), "--without-gossip",
                   "--without-mingle", "-l", "WARNING"]  # fmt: skip
        worker = procs.start(command, env, "worker")
        store = JobStore(client)
        from worker.app import create_app

        os.environ["CREDITQ_REDIS_URL"] = redis_url
        app = create_app()
        batch = grant_batch(args.grants, prefix)
        time.sleep(2.0)  # let the worker connect before the clock starts
        cpu = CpuMeter({"worker": worker.pid, "sandbox": procs.procs[0].pid,
                        "redis": redis_pid(client)})  # fmt: skip
        start = time.monotonic()
        profiler = start_profiler(args, worker.pid, prefix)
        enqueue_many(batch, store=store, app=app)
        # When every credit is applied at the provider: the baseline's finish line.
        applied = wait(lambda: applied_count(sandbox) >= args.grants, 600, "creditq POSTs", 0.1)
        end = wait(lambda: store.count_by_state()["confirmed"] == args.grants, 600, "creditq")
        cpu_ms = cpu.per_grant_ms(args.grants)
        stop_profiler(profiler)
        stats = sandbox_stats(sandbox)
        calls = sum(sum(p["calls"].values()) for p in stats.values())
        seconds = end - start
        return {
            "seconds": seconds,
            "rate": args.grants / seconds,
            "applied_rate": args.grants / (applied - start),
            "rate_without_last_lag": args.grants / max(seconds - lag, 1e-9),
            "calls_per_grant": calls / args.grants,
            **{f"cpu_ms_{name}": ms for name, ms in cpu_ms.items()},
        }
    finally:
        procs.stop_all()


def run_baseline(
    args: argparse.Namespace, redis_url: str, transport: str | None = None
) -> dict[str, float]:
    procs = Processes()
    try:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        client.flushdb()
        sandbox = start_sandbox(procs, args.latency, 0.0)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITQ_")}
        env.update({"BASELINE_BROKER_URL": redis_url, "BASELINE_SANDBOX_URL": sandbox,
                    "BASELINE_INVETERATE_KEY": DEFAULT_INVETERATE_KEY,
                    "BASELINE_CHARGEBEE_KEY": DEFAULT_CHARGEBEE_KEY,
                    "PYTHONPATH": str(ROOT)})  # fmt: skip
        if transport:
            env["BASELINE_BROKER_TRANSPORT"] = transport
        worker = procs.start([sys.executable, "-m", "celery", "-A", "benchmarks.baseline_app",
                              "worker", "-P", "threads", "-c", str(args.concurrency),
                              "--without-gossip", "--without-mingle", "-l", "WARNING"],
                             env, "baseline")  # fmt: skip
        os.environ["BASELINE_BROKER_URL"] = redis_url
        os.environ["BASELINE_SANDBOX_URL"] = sandbox
        from benchmarks.baseline_app import app, post_credit

        batch = [g.to_message() for g in grant_batch(args.grants, "base")]
        time.sleep(2.0)  # let the worker connect before the clock starts
        cpu = CpuMeter({"worker": worker.pid, "sandbox": procs.procs[0].pid,
                        "redis": redis_pid(client)})  # fmt: skip
        start = time.monotonic()
        profiler = start_profiler(args, worker.pid, "tuned" if transport else "baseline")
        with app.producer_or_acquire() as producer:
            for message in batch:
                post_credit.apply_async(kwargs=message, producer=producer)

        end = wait(lambda: applied_count(sandbox) >= args.grants, 600, "baseline", 0.1)
        cpu_ms = cpu.per_grant_ms(args.grants)
        stop_profiler(profiler)
        seconds = end - start
        return {"seconds": seconds, "rate": args.grants / seconds, "calls_per_grant": 1.0,
                **{f"cpu_ms_{name}": ms for name, ms in cpu_ms.items()}}  # fmt: skip
    finally:
        procs.stop_all()


def report(args: argparse.Namespace, baseline: dict[str, float], plain: dict[str, float],
           lagged: dict[str, float], tuned: dict[str, float] | None) -> None:  # fmt: skip
    print(f"baseline (POST + autoretry, no confirm)  {baseline['rate']:7.1f} grants/s  "
          f"{baseline['seconds']:6.1f} s  1.00 calls/grant")  # fmt: skip
    print(f"creditq (exactly once, confirmed)        {plain['rate']:7.1f} grants/s  "
          f"{plain['seconds']:6.1f} s  {plain['calls_per_grant']:.2f} calls/grant  "
          f"ratio {plain['rate'] / baseline['rate']:.2f}")  # fmt: skip
    print(f"creditq, every credit applied (the baseline's finish line; confirmation still "
          f"running) {plain['applied_rate']:7.1f} grants/s  "
          f"ratio {plain['applied_rate'] / baseline['rate']:.2f}")  # fmt: skip
    if tuned is not None:
        print(
            f"baseline given creditq's worker transport {tuned['rate']:7.1f} grants/s  "
            f"{tuned['seconds']:6.1f} s  creditq/this {plain['rate'] / tuned['rate']:.2f}"
        )
    print("CPU per grant (ms): worker (of which kernel) / sandbox / redis")
    runs = [("baseline", baseline), ("creditq", plain), ("creditq lagged", lagged)]
    for name, run in runs + ([("tuned baseline", tuned)] if tuned else []):
        print(f"  {name:<15} {run['cpu_ms_worker']:5.2f} ({run['cpu_ms_worker_sys']:4.2f}) / "
              f"{run['cpu_ms_sandbox']:5.2f} / {run['cpu_ms_redis']:5.2f}")  # fmt: skip
    print(f"creditq, listing {args.lag:.0f} s behind           "
          f"{lagged['rate_without_last_lag']:7.1f} grants/s  {lagged['seconds']:6.1f} s  "
          f"{lagged['calls_per_grant']:.2f} calls/grant  "
          f"ratio {lagged['rate_without_last_lag'] / plain['rate']:.2f} of no lag "
          f"(without the last lag); every credit applied {lagged['applied_rate']:7.1f} "
          f"grants/s, ratio {lagged['applied_rate'] / plain['applied_rate']:.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grants", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--lag", type=float, default=2.0)
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of baseline, creditq, creditq lagged; medians of the ratios",
    )
    parser.add_argument("--profile", help="py-spy each worker (py-spy on PATH) to this prefix")
    parser.add_argument("--only", choices=["baseline", "plain", "lagged"])
    parser.add_argument(
        "--tuned-baseline",
        action="store_true",
        help="also run the baseline with creditq's worker transport (worker/broker.py)",
    )
    args = parser.parse_args()
    rounds = []
    with benchmark_redis() as url:
        if args.only == "plain":
            print(run_creditq(args, url, 0.0, "plain"))
            return
        if args.only == "lagged":
            print(run_creditq(args, url, args.lag, "lagged"))
            return
        if args.only == "baseline":
            print(run_baseline(args, url))
            return
        print(f"{args.grants} grants, threads pool -c {args.concurrency}, sandbox latency "
              f"{args.latency * 1000:.0f} ms, one worker process each")  # fmt: skip
        for n in range(args.repeat):
            # Each round runs the three side by side: a ratio compares runs minutes apart
            # at most, whatever else the machine does meanwhile.
            baseline = run_baseline(args, url)
            plain = run_creditq(args, url, 0.0, "plain")
            lagged = run_creditq(args, url, args.lag, "lagged")
            tuned = run_baseline(args, url, TRANSPORT) if args.tuned_baseline else None
            if args.repeat > 1:
                print(f"-- round {n + 1} of {args.repeat}")
            report(args, baseline, plain, lagged, tuned)
            rounds.append((plain["rate"] / baseline["rate"],
                           plain["applied_rate"] / baseline["rate"],
                           lagged["rate_without_last_lag"] / plain["rate"],
                           plain["rate"] / tuned["rate"] if tuned else 0.0))  # fmt: skip
    if args.repeat > 1:
        confirmed, applied, lag, against_tuned = (sorted(r[i] for r in rounds) for i in range(4))
        median = statistics.median
        print(f"median of {args.repeat} rounds: creditq/baseline {median(confirmed):.2f} "
              f"(range {confirmed[0]:.2f}-{confirmed[-1]:.2f}), at the baseline's finish line "
              f"{median(applied):.2f}, lagged/no lag {median(lag):.2f} "
              f"(range {lag[0]:.2f}-{lag[-1]:.2f})")  # fmt: skip
        if args.tuned_baseline:
            print(f"median creditq/baseline given creditq's worker transport "
                  f"{median(against_tuned):.2f} "
                  f"(range {against_tuned[0]:.2f}-{against_tuned[-1]:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
