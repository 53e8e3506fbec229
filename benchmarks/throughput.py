"""Throughput of the full creditq pipeline against the baseline a user writes first.

    .venv/bin/python benchmarks/throughput.py [--grants N] [--repeat R] [--concurrency C]
        [--latency S] [--lag S] [--tuned-baseline] [--no-ambiguous] [--ambiguous-kind K]
        [--settle S] [--profile PREFIX] [--only RUN]

All runs share one private Redis, the same `-P threads -c C` worker, and one sandbox process
answering every call after `--latency` (20 ms). creditq issues, reconciles and confirms each
grant in the listing; the baseline POSTs with autoretry and never confirms, and runs twice:
with Celery task events on (as creditq has them, for Flower) and off (BASELINE_TASK_EVENTS=0).
creditq runs with the listing in step, then `--lag` seconds behind, then (unless
`--no-ambiguous`) lagged again with exactly one Inveterate POST answered ambiguously.

Every figure is read off the run's timeline, not off a poll: creditq's finish line is each
job's ``confirmed_at`` in the store, the baseline's (and creditq's "applied" line) each
credit's ``created_at`` in the sandbox's ledger, both wall-clock epoch from the first
enqueue. Per run:

- **end-to-end rate**: grants / (first enqueue to the last finish);
- **body rate**: the finishes between the 10th and the 90th percentile (nearest rank)
  divided by the time between those two, so neither the ramp-up (the first reads wait out
  the lag) nor a tail weighs in: compare bodies with bodies, ends with ends;
- **tail**: the 99th percentile finish to the last, and the last grant's wait from its last
  2xx (``submitted_at``; its last POST when it never had one) to its confirmation; also
  every accepted grant's wait from its 2xx to its confirmation (p50, p99, max);
- **longest confirmation stall**: the longest gap between consecutive confirmations that
  began while an accepted grant was still unconfirmed past its due read (its 2xx + the first
  read delay, max(lag, 0.2 s) + the 1 s batching window); 0 when there was none;
- **confirm_again**: confirmations refused because the job was already confirmed (the
  store's ``confirm_again`` counter): a sweep redoing finished work;
- CPU per grant of the worker (its kernel share apart), the sandbox and Redis.

The ambiguous run sets ``CREDITQ_SETTLE_SECONDS`` to `--settle` (30 s, the production
default) and arms one sandbox fault (`--ambiguous-kind`: ``error_after``, applied then 500;
``timeout_after``, applied then no answer; ``error_before``, the default, a 500 that applied
nothing, so creditq must prove the absence and POST again) on the first Inveterate POST of a
customer 90% into the batch, late enough to show after the body, early enough that later
credits still witness the listing.
Its tail is the time from the end of the body (the 90th percentile confirmation) to that
grant's confirmation, against the bound settle + one read at the learned lag (the learned
first-read delay + the batching window).

creditq's workers use worker/app/broker.py's transport (kombu's, one Redis client per channel);
the baseline, as a user writes it first, kombu's own. `--tuned-baseline` also runs the
baseline with creditq's transport, so the report shows what that transport alone buys.
`--profile PREFIX` attaches py-spy to each worker for the timed part: PREFIX.<run>.txt.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import Timeline, benchmark_redis, grant_batch, longest_stall, nearest_rank  # noqa: E402
from worker.app.broker import TRANSPORT  # noqa: E402
from worker.app.commands import worker_command  # noqa: E402
from worker.domain.grant import CreditGrant  # noqa: E402
from worker.domain.job import Job  # noqa: E402
from worker.domain.states import TERMINAL, JobState  # noqa: E402
from worker.producer import enqueue_many  # noqa: E402
from worker.sandbox.options import DEFAULT_CHARGEBEE_KEY, DEFAULT_INVETERATE_KEY, creditq_env  # noqa: E402
from worker.settings import Settings  # noqa: E402
from worker.store.embedded import free_port  # noqa: E402
from worker.store.jobs import JobStore  # noqa: E402

# The first listing read after a 2xx when the listing is in step: soon, never at once.
FIRST_POLL_FLOOR = 0.2
# How long a scheduled read waits for later grants to ride along (the setting's default:
# the workers here run with it).
BATCH_SECONDS = float(Settings.model_fields["confirm_batch_seconds"].default)
AMBIGUOUS_KINDS = ("error_after", "timeout_after", "error_before")


class Processes:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.dir = tempfile.mkdtemp(prefix="creditq-bench-")

    def start(self, args: list[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        log = open(Path(self.dir) / f"{name}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            args, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
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
        used = {
            name: (cpu_seconds(pid) - self.start[name]) * 1000 / grants
            for name, pid in self.pids.items()
        }
        kernel = cpu_seconds(self.pids["worker"], system_only=True) - self.start_sys
        return {**used, "worker_sys": kernel * 1000 / grants}


def start_profiler(args: argparse.Namespace, pid: int, name: str) -> subprocess.Popen[bytes] | None:
    """py-spy attached to a running worker once the clock has started (so the profile holds
    the work, not the imports): collapsed stacks of the samples holding the GIL, written to
    ``<--profile>.<name>.txt`` for a flame graph or a per-function tally."""
    if not args.profile:
        return None
    return subprocess.Popen(
        [
            "py-spy",
            "record",
            "--gil",
            "--nonblocking",
            "-r",
            "200",
            "-f",
            "raw",
            "-p",
            str(pid),
            "-o",
            f"{args.profile}.{name}.txt",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


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
    procs.start(
        [
            sys.executable,
            "-m",
            "worker.sandbox",
            "--port",
            str(port),
            "--latency",
            str(latency),
            "--lag",
            str(lag),
            *extra,
        ],
        dict(os.environ),
        "sandbox",
    )
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


def applied_timeline(url: str, start: float) -> Timeline:
    """When each credit was written at the provider (the sandbox's ledger, API writes only):
    the baseline's finish line, and creditq's before its confirmation."""
    reply = httpx.get(f"{url}/_sandbox/ledger", params={"origin": "api"}, timeout=30)
    return Timeline.of(start, (float(e["created_at"]) for e in reply.json()["entries"]))


def calls_per_grant(url: str, grants: int) -> float:
    """Provider calls of every kind (POSTs, retries, listing reads) per grant."""
    return sum(sum(p["calls"].values()) for p in sandbox_stats(url).values()) / grants


def worker_env(redis_url: str, sandbox_url: str, lag: float, **settings: str) -> dict[str, str]:
    # The budget still runs (a slot is taken per call) but never makes anyone wait: the
    # baseline has none, and this compares the pipelines, not the pacing.
    return creditq_env(
        redis_url,
        sandbox_url,
        CREDITQ_INVETERATE_RATE_LIMIT_PER_MINUTE="1000000000",
        CREDITQ_CHARGEBEE_RATE_LIMIT_PER_MINUTE="1000000000",
        CREDITQ_CONFIRM_FIRST_POLL_SECONDS=str(max(lag, FIRST_POLL_FLOOR)),
        PYTHONPATH=str(ROOT),
        **settings,
    )


def ambiguous_customer(batch: Sequence[CreditGrant]) -> str:
    """The customer of the first Inveterate grant 90% into the batch: its POST comes late
    enough for its tail to show after the body, and early enough that later credits still
    flow (creditq needs one shown as a witness before it calls a credit absent)."""
    late = [*batch[int(len(batch) * 0.9) :], *batch]
    return next(g.customer_id for g in late if g.provider == "inveterate")


def arm_ambiguous(url: str, customer_id: str, kind: str) -> None:
    """One sandbox fault: the customer's next Inveterate POST answers ambiguously."""
    fault = {
        "kind": kind,
        "provider": "inveterate",
        "operation": "submit",
        "customer_id": customer_id,
        "times": 1,
    }
    httpx.post(f"{url}/_sandbox/faults", json=fault, timeout=5).raise_for_status()


def confirmed_at(job: Job) -> float:
    """When the store confirmed the job (its move's time if the field is missing)."""
    return job.number("confirmed_at") or job.state_at


def accepted_at(job: Job) -> float | None:
    """The job's last 2xx; None for a job confirmed without one (an ambiguous POST found)."""
    return job.number("submitted_at")


def finished(store: JobStore) -> int:
    """Jobs in a terminal state: a run ends when every grant is confirmed or given up."""
    counts = store.count_by_state()
    return sum(counts[state.value] for state in TERMINAL)


def confirmation_figures(
    store: JobStore, keys: list[str], start: float, lag: float
) -> dict[str, float]:
    """The rates, tail and stall of a creditq run, read off each job's ``confirmed_at``."""
    jobs = [j for j in store.get_many(keys, history=False) if j is not None]
    confirmed = [j for j in jobs if j.state is JobState.CONFIRMED]
    timeline = Timeline.of(start, (confirmed_at(j) for j in confirmed))
    last = max(confirmed, key=confirmed_at)
    last_accepted = accepted_at(last) or last.number("last_post_at") or last.state_at
    pairs = [(confirmed_at(j), accepted_at(j)) for j in confirmed]
    stall = longest_stall(pairs, max(lag, FIRST_POLL_FLOOR) + BATCH_SECONDS)
    waits = sorted(done - accepted for done, accepted in pairs if accepted is not None)
    return {
        "confirmed": len(confirmed),
        "seconds": timeline.seconds,
        "rate": timeline.end_to_end_rate,
        "body_rate": timeline.body_rate or math.nan,
        "body_end": timeline.at(90),
        "rate_without_last_lag": len(confirmed) / max(timeline.seconds - lag, 1e-9),
        "tail": timeline.tail,
        "last_wait": confirmed_at(last) - last_accepted,
        **{
            f"wait_p{q}": waits[nearest_rank(waits, q)] if waits else math.nan
            for q in (50, 99, 100)
        },
        "stall": stall.seconds,
        "stall_at": stall.at - start if stall.seconds else 0.0,
        "stall_waiting": stall.waiting,
        "confirm_again": store.counters().get("confirm_again", 0),
    }


def first_post_unanswered(job: Job) -> float | None:
    """When the job's first POST began, if no 2xx followed it (an ambiguous answer, or none
    yet when a sweep found the credit); None for a first POST answered 2xx."""
    moves = job.history
    first = next((i for i, h in enumerate(moves) if h["to"] == JobState.SUBMITTING.value), None)
    if first is None:
        return None
    after = moves[first + 1] if first + 1 < len(moves) else None
    if after is not None and after["to"] == JobState.SUBMITTED.value:
        return None
    return datetime.fromisoformat(moves[first]["at"]).timestamp()


def ambiguous_job(jobs: Sequence[Job | None]) -> tuple[Job, float] | None:
    """The job whose POST the fault answered, and when that POST began. One the worker
    marked "outcome unknown" first; a sweep can also find the credit while a
    ``timeout_after`` holds the answer, and confirm the job before it ever learns that."""
    candidates = [
        (job, at)
        for job in jobs
        if job is not None and (at := first_post_unanswered(job)) is not None
    ]
    unknown = [c for c in candidates if any("outcome unknown" in h["reason"] for h in c[0].history)]
    chosen = unknown or candidates
    return chosen[0] if chosen else None


def ambiguous_figures(
    store: JobStore, batch: Sequence[CreditGrant], customer_id: str, body_end: float, settle: float
) -> dict[str, float]:
    """The grant whose POST answered ambiguously: how many POSTs it took, and how long after
    that POST and after the end of the body it was confirmed.

    The bound is settle + one read at the learned lag: the learned first-read delay plus the
    batching window, as a fresh 2xx gets. Also returned: the longest 2xx-to-shown time the
    fleet measured (``Visibility.lag``), of which creditq waits twice before a second POST.
    """
    keys = [
        g.idempotency_key
        for g in batch
        if g.customer_id == customer_id and g.provider == "inveterate"
    ]
    found = ambiguous_job(store.get_many(keys))
    if found is None:
        return {"ambiguous_found": 0.0}
    job, posted = found
    done = confirmed_at(job) if job.state is JobState.CONFIRMED else math.nan
    learned = store.learned_delay("inveterate") or FIRST_POLL_FLOOR
    measured = store.visibility("inveterate", time.time()).lag
    return {
        "ambiguous_found": 1.0,
        "ambiguous_posts": job.attempts,
        "settle": settle,
        "learned_lag": learned,
        "measured_lag": math.nan if measured is None else measured,
        "ambiguous_wait": done - posted,
        "ambiguous_tail": done - body_end,
        "ambiguous_bound": settle + learned + BATCH_SECONDS,
    }


def run_creditq(
    args: argparse.Namespace, redis_url: str, lag: float, prefix: str, ambiguous: bool = False
) -> dict[str, float]:
    procs = Processes()
    try:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        client.flushdb()
        sandbox = start_sandbox(procs, args.latency, lag)
        settle = {"CREDITQ_SETTLE_SECONDS": str(args.settle)} if ambiguous else {}
        env = worker_env(redis_url, sandbox, lag, **settle)
        command = worker_command(str(args.concurrency), "-l", "WARNING")
        worker = procs.start(command, env, "worker")
        store = JobStore(client)
        from worker.app import create_app

        os.environ["CREDITQ_REDIS_URL"] = redis_url
        app = create_app()
        batch = grant_batch(args.grants, prefix)
        target = ambiguous_customer(batch) if ambiguous else ""
        if target:
            arm_ambiguous(sandbox, target, args.ambiguous_kind)
        time.sleep(2.0)  # let the worker connect before the clock starts
        cpu = CpuMeter(
            {"worker": worker.pid, "sandbox": procs.procs[0].pid, "redis": redis_pid(client)}
        )
        start = time.time()  # epoch, as the store's confirmed_at and the ledger's created_at
        profiler = start_profiler(args, worker.pid, prefix)
        enqueue_many(batch, store=store, app=app)
        wait(lambda: finished(store) >= args.grants, 600, "creditq")
        cpu_ms = cpu.per_grant_ms(args.grants)
        stop_profiler(profiler)
        figures = confirmation_figures(store, [g.idempotency_key for g in batch], start, lag)
        applied = applied_timeline(sandbox, start)
        figures.update(
            {
                "applied_rate": applied.end_to_end_rate,
                "applied_body_rate": applied.body_rate or math.nan,
                "applied_seconds": applied.seconds,
                "credits": len(applied.ends),
                "calls_per_grant": calls_per_grant(sandbox, args.grants),
                **{f"cpu_ms_{name}": ms for name, ms in cpu_ms.items()},
            }
        )
        if target:
            figures.update(
                ambiguous_figures(store, batch, target, figures["body_end"], args.settle)
            )
        return figures
    finally:
        procs.stop_all()


def run_baseline(
    args: argparse.Namespace, redis_url: str, transport: str | None = None, events: bool = True
) -> dict[str, float]:
    procs = Processes()
    try:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        client.flushdb()
        sandbox = start_sandbox(procs, args.latency, 0.0)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITQ_")}
        env.update(
            {
                "BASELINE_BROKER_URL": redis_url,
                "BASELINE_SANDBOX_URL": sandbox,
                "BASELINE_INVETERATE_KEY": DEFAULT_INVETERATE_KEY,
                "BASELINE_CHARGEBEE_KEY": DEFAULT_CHARGEBEE_KEY,
                "BASELINE_TASK_EVENTS": "1" if events else "0",
                "PYTHONPATH": str(ROOT),
            }
        )
        if transport:
            env["BASELINE_BROKER_TRANSPORT"] = transport
        worker = procs.start(
            worker_command(str(args.concurrency), "-l", "WARNING", app="benchmarks.baseline_app"),
            env,
            "baseline",
        )
        os.environ["BASELINE_BROKER_URL"] = redis_url
        os.environ["BASELINE_SANDBOX_URL"] = sandbox
        from benchmarks.baseline_app import app, post_credit

        batch = [g.to_message() for g in grant_batch(args.grants, "base")]
        time.sleep(2.0)  # let the worker connect before the clock starts
        cpu = CpuMeter(
            {"worker": worker.pid, "sandbox": procs.procs[0].pid, "redis": redis_pid(client)}
        )
        start = time.time()
        name = "tuned" if transport else "baseline" if events else "baseline-no-events"
        profiler = start_profiler(args, worker.pid, name)
        with app.producer_or_acquire() as producer:
            for message in batch:
                post_credit.apply_async(kwargs=message, producer=producer)

        wait(lambda: applied_count(sandbox) >= args.grants, 600, "baseline", 0.1)
        cpu_ms = cpu.per_grant_ms(args.grants)
        stop_profiler(profiler)
        applied = applied_timeline(sandbox, start)
        return {
            "seconds": applied.seconds,
            "rate": applied.end_to_end_rate,
            "body_rate": applied.body_rate or math.nan,
            "calls_per_grant": calls_per_grant(sandbox, args.grants),
            **{f"cpu_ms_{name}": ms for name, ms in cpu_ms.items()},
        }
    finally:
        procs.stop_all()


Runs = dict[str, dict[str, float]]  # one round: figures per run name


def rate_rows(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(label, run, finish line) of the rate table; "applied" rows are creditq's figures at
    the baseline's finish line (every credit written), before the confirmation wait."""
    lagged = f"creditq, lag {args.lag:g} s"
    return [
        ("baseline, task events on: applied", "baseline", "rate"),
        ("baseline, task events off: applied", "baseline_no_events", "rate"),
        ("creditq: confirmed", "plain", "rate"),
        ("creditq: applied (the baseline's finish line)", "plain", "applied"),
        (f"{lagged}: confirmed", "lagged", "rate"),
        (f"{lagged}: applied", "lagged", "applied"),
        (f"{lagged}, one ambiguous POST: confirmed", "ambiguous", "rate"),
        ("baseline, creditq's worker transport: applied", "tuned", "rate"),
    ]


def rates(run: dict[str, float], line: str) -> tuple[float, float, float]:
    """Body rate, end-to-end rate and seconds of a run at one finish line."""
    if line == "applied":
        return run["applied_body_rate"], run["applied_rate"], run["applied_seconds"]
    return run["body_rate"], run["rate"], run["seconds"]


def print_rates(args: argparse.Namespace, runs: Runs) -> None:
    print(
        f"{'run':<52}{'body/s':>8}{'end-to-end/s':>14}{'seconds':>9}{'calls/grant':>13}"
        "   CPU ms/grant: worker (kernel) / sandbox / redis"
    )
    for label, name, line in rate_rows(args):
        if name not in runs:
            continue
        run = runs[name]
        body, end_to_end, seconds = rates(run, line)
        extra = (
            ""
            if line == "applied"
            else (
                f"{run['calls_per_grant']:13.2f}   {run['cpu_ms_worker']:5.2f} "
                f"({run['cpu_ms_worker_sys']:4.2f}) / {run['cpu_ms_sandbox']:5.2f} / "
                f"{run['cpu_ms_redis']:5.2f}"
            )
        )
        print(f"{label:<52}{body:8.1f}{end_to_end:14.1f}{seconds:9.1f}{extra}")


RATIO_ROWS = (
    ("creditq, confirmed", "plain", "rate"),
    ("creditq, every credit applied", "plain", "applied"),
    ("creditq lagged, confirmed", "lagged", "rate"),
)
BASELINES = (("baseline", "events on"), ("baseline_no_events", "events off"))


def ratios(runs: Runs) -> dict[str, float]:
    """Every ratio of the report, by name: creditq against both baselines (body to body, end
    to end to end to end), lagged against no lag, and against the tuned baseline."""
    out: dict[str, float] = {}
    for label, name, line in RATIO_ROWS:
        for base, _ in BASELINES:
            if name in runs and base in runs:
                body, end_to_end, _ = rates(runs[name], line)
                out[f"{label}|{base}|body"] = body / runs[base]["body_rate"]
                out[f"{label}|{base}|end"] = end_to_end / runs[base]["rate"]
    if "plain" in runs and "lagged" in runs:
        plain, lagged = runs["plain"], runs["lagged"]
        out["lag|body"] = lagged["body_rate"] / plain["body_rate"]
        out["lag|end"] = lagged["rate"] / plain["rate"]
        out["lag|without"] = lagged["rate_without_last_lag"] / plain["rate"]
    if "plain" in runs and "tuned" in runs:
        out["tuned|body"] = runs["plain"]["body_rate"] / runs["tuned"]["body_rate"]
        out["tuned|end"] = runs["plain"]["rate"] / runs["tuned"]["rate"]
    return out


def cell(rounds: list[dict[str, float]], key: str) -> str:
    """One ratio: its value, or over several rounds the median [lowest-highest]."""
    values = sorted(r[key] for r in rounds if key in r)
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} [{values[0]:.2f}-{values[-1]:.2f}]"


def print_ratios(args: argparse.Namespace, rounds: list[dict[str, float]]) -> None:
    """Ratios as ``body (end to end)``; from several rounds, medians [ranges] of the ratios
    taken within each round."""
    keys = set().union(*rounds)
    width = 44 if len(rounds) > 1 else 22  # "0.78 [0.74-0.79] (0.70 [0.66-0.71])"
    print(
        f"{'ratio, body (end to end)':<34}"
        + "".join(f"  {'to baseline, ' + what:>{width}}" for _, what in BASELINES)
    )
    for label, _, _ in RATIO_ROWS:
        cells = [
            f"{cell(rounds, f'{label}|{b}|body')} ({cell(rounds, f'{label}|{b}|end')})"
            for b, _ in BASELINES
            if f"{label}|{b}|body" in keys
        ]
        if cells:
            print(f"{label:<34}" + "".join(f"  {c:>{width}}" for c in cells))
    if "lag|body" in keys:
        print(
            f"creditq, listing {args.lag:g} s behind: body {cell(rounds, 'lag|body')} "
            f"(end to end {cell(rounds, 'lag|end')}; without the last lag "
            f"{cell(rounds, 'lag|without')}) of no lag"
        )
    if "tuned|body" in keys:
        print(
            f"creditq against the baseline given creditq's worker transport: body "
            f"{cell(rounds, 'tuned|body')} (end to end {cell(rounds, 'tuned|end')})"
        )


def print_tails(args: argparse.Namespace, runs: Runs) -> None:
    """Where the end-to-end rate goes: the tail, waits and stalls, redundant confirmations."""
    rows = [
        ("creditq", "plain"),
        (f"creditq, lag {args.lag:g} s", "lagged"),
        (f"creditq, lag {args.lag:g} s, ambiguous", "ambiguous"),
    ]
    print(
        f"{'tail (seconds)':<30}{'p99 to last':>12}{'last: 2xx to confirmed':>24}"
        f"{'2xx to confirmed p50/p99/max':>30}{'longest stall (at, waiting)':>30}"
        f"{'confirm_again':>15}"
    )
    for label, name in rows:
        if name not in runs:
            continue
        run = runs[name]
        waits = f"{run['wait_p50']:.1f} / {run['wait_p99']:.1f} / {run['wait_p100']:.1f}"
        stall = f"{run['stall']:.1f} (at {run['stall_at']:.1f}, {run['stall_waiting']:.0f})"
        print(
            f"{label:<30}{run['tail']:12.1f}{run['last_wait']:24.1f}{waits:>30}{stall:>30}"
            f"{run['confirm_again']:15.0f}"
        )
        if run["confirmed"] != args.grants or run["credits"] != args.grants:
            print(
                f"  ! {run['confirmed']:.0f} of {args.grants} confirmed, "
                f"{run['credits']:.0f} credits at the provider"
            )


def print_ambiguous(args: argparse.Namespace, run: dict[str, float]) -> None:
    if not run.get("ambiguous_found"):
        print(f"one ambiguous POST ({args.ambiguous_kind}): the fault never fired")
        return
    verdict = "within" if run["ambiguous_tail"] <= run["ambiguous_bound"] else "PAST"
    print(
        f"one ambiguous POST ({args.ambiguous_kind}, CREDITQ_SETTLE_SECONDS="
        f"{run['settle']:g}): {run['ambiguous_posts']:.0f} POST(s); confirmed "
        f"{run['ambiguous_wait']:.1f} s after that POST began, "
        f"{run['ambiguous_tail']:.1f} s after the end of the body (p90)"
    )
    print(
        f"  bound settle + learned first read {run['learned_lag']:.2f} s + batching "
        f"{BATCH_SECONDS:g} s = {run['ambiguous_bound']:.1f} s: {verdict} "
        f"(longest 2xx-to-shown measured: {run['measured_lag']:.2f} s)"
    )


def report(args: argparse.Namespace, runs: Runs) -> None:
    print_rates(args, runs)
    print_ratios(args, [ratios(runs)])
    print_tails(args, runs)
    if "ambiguous" in runs:
        print_ambiguous(args, runs["ambiguous"])


def one_round(args: argparse.Namespace, url: str) -> Runs:
    """Every run side by side: a ratio compares runs minutes apart at most, whatever else
    the machine does meanwhile."""
    runs = {
        "baseline": run_baseline(args, url),
        "baseline_no_events": run_baseline(args, url, events=False),
        "plain": run_creditq(args, url, 0.0, "plain"),
        "lagged": run_creditq(args, url, args.lag, "lagged"),
    }
    if args.ambiguous:
        runs["ambiguous"] = run_creditq(args, url, args.lag, "ambiguous", ambiguous=True)
    if args.tuned_baseline:
        runs["tuned"] = run_baseline(args, url, TRANSPORT)
    return runs


def only(args: argparse.Namespace, url: str) -> dict[str, float]:
    """The one run ``--only`` names, its figures printed raw."""
    if args.only == "baseline":
        return run_baseline(args, url)
    if args.only == "baseline-no-events":
        return run_baseline(args, url, events=False)
    if args.only == "plain":
        return run_creditq(args, url, 0.0, "plain")
    return run_creditq(args, url, args.lag, args.only, ambiguous=args.only == "ambiguous")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grants", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--lag", type=float, default=2.0)
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of every run; medians of the ratios"
    )
    parser.add_argument("--profile", help="py-spy each worker (py-spy on PATH) to this prefix")
    parser.add_argument(
        "--only", choices=["baseline", "baseline-no-events", "plain", "lagged", "ambiguous"]
    )
    parser.add_argument(
        "--tuned-baseline",
        action="store_true",
        help="also run the baseline with creditq's worker transport (worker/app/broker.py)",
    )
    parser.add_argument(
        "--ambiguous",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run creditq lagged with one ambiguous Inveterate POST",
    )
    # The hard case by default: a 500 that applied nothing, whose absence must be proven
    # before the POST goes out again; the production default settle (worker.settings).
    parser.add_argument("--ambiguous-kind", choices=AMBIGUOUS_KINDS, default="error_before")
    parser.add_argument(
        "--settle", type=float, default=30.0, help="CREDITQ_SETTLE_SECONDS of the ambiguous run"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    rounds: list[dict[str, float]] = []
    with benchmark_redis() as url:
        if args.only:
            print(only(args, url))
            return
        print(
            f"{args.grants} grants, threads pool -c {args.concurrency}, sandbox latency "
            f"{args.latency * 1000:.0f} ms, one worker process each"
        )
        for n in range(args.repeat):
            runs = one_round(args, url)
            if args.repeat > 1:
                print(f"-- round {n + 1} of {args.repeat}")
            report(args, runs)
            rounds.append(ratios(runs))
    if args.repeat > 1:
        print(f"-- median [range] of the ratios over {args.repeat} rounds")
        print_ratios(args, rounds)


if __name__ == "__main__":
    main()
