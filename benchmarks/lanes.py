"""Under the budget: interactive grants first, and the backlog drains at the budget's full
pace (issue 18).

    .venv/bin/python benchmarks/lanes.py [--per-second 4] [--window 3] [--lag 1]
        [--workers 3] [--runs 1] [--json]

A shop's backlog (a loyalty campaign, a replayed import) must not hold up the grant a
customer is waiting for at the checkout, and holding it up must not cost the backlog its
pace: the budget a provider grants is the only throughput there is. This measures both.

**Setup.** One private Redis, one sandbox process (every call answered after 20 ms, the
listing `--lag` seconds behind) enforcing `--per-second` calls a second per provider counted
over `--window` seconds (``--rate-limit per_second x window --rate-window window``: 12 over
3 s by default, 4 over 1 s with `--window 1`; a 429 past it), `--workers` worker processes
(``-P threads -c 8``) and beat. creditq is configured at the same budget
(``CREDITQ_{INVETERATE,CHARGEBEE}_RATE_LIMIT_PER_MINUTE`` = 60 x `--per-second`) from
``worker.sandbox.options.creditq_env``, not throughput's ``worker_env``, which lifts the
budgets. The one setting changed from creditq's defaults is
``CREDITQ_CONFIRM_FIRST_POLL_SECONDS`` = `--lag` (default 2 s): the first listing read
after a 2xx waits for the provider's lag, and the other benchmarks set it to the sandbox's
lag the same way (throughput's ``worker_env``, budget, chaos). The settle, batching, poll
and deadline settings keep their defaults. A warm-up grant (Inveterate, its own member)
proves the fleet consumes before the clock starts; the sandbox's counters are read before
and after, so it is not counted.

**Workload.** At t=0 (just after a whole second, so a line of the timeline is a second of
the run) a backlog in one ``enqueue_many``: 60 Inveterate grants, one per member, and 100
Chargebee grants, one per customer. At t=4 s six interactive grants one by one with
``enqueue``, alternating 3 Inveterate (new members) and 3 Chargebee (new customers). When
``CreditGrant`` has a ``priority`` field the backlog is sent with ``priority="bulk"`` (the
interactive ones keep the default); without one the run is first come, first served, the
baseline, and the report says which ran.

**Figures**, per run:

1. each interactive grant's time from its job's ``created_at`` to its ``confirmed``
   history entry, and the slowest; split at its first POST, with the backlog POSTs of its
   provider that went out between its enqueue and its POST (what a lane must bring to 0);
2. drain efficiency = lower bound / actual: actual is the first enqueue to the last
   confirmation of all 166 grants; the bound is, per provider, (POSTs + the fewest listing
   reads) / the budget rate, the larger of the two, plus one listing lag. Fewest reads:
   Inveterate lists one member at a time, so one read per member with a grant (63);
   Chargebee's listing spans every customer newest first, up to 100 a page, so
   ceil(103 / 100) = 2 pages once every credit shows. The bound counts the lag in full,
   though reads of other members can fill it, so a run at the budget's full pace scores
   about 1. creditq spaces its slots at 97% of the budget (``worker.budget.HEADROOM``):
   the report also gives that floor, the same calls at creditq's own pace;
3. calls per confirmed grant per provider (the sandbox's counters by operation) against
   the minimum (POSTs + fewest reads) / grants, and how often each Inveterate member's
   listing was read (the sandbox's access log: request lines, no times);
4. 429s (the sandbox's count, and the budget's ``rate_limited_total``), duplicates (a
   job's marker on more than one credit in the sandbox ledger), and jobs not confirmed;
5. a timeline per provider, one line a second: POSTs (each job's moves into
   ``submitting``: the script that makes the move takes the budget slot) and listing reads
   (the budget's own count per second, ``creditq:budget:<provider>:minute:<n>`` field
   ``s<second>``, less the POSTs; the sandbox keeps no time per call), the slots left idle
   while grants of the provider waited (the budget rate less the calls, over the part of
   the second when a grant was enqueued and not yet confirmed), grants not yet POSTed,
   POSTed and not yet shown, confirmed that second, and the interactive grants' moves.
   The idle slots are totalled apart while a POST waited (lost pace) and while only
   confirmations waited (the lag and the sweeps' schedule); the tail from each provider's
   last POST to its last confirmation is printed too.

Goals (printed pass/fail): slowest interactive < 8 s, drain efficiency >= 0.85, no 429,
nothing paid twice. `--json` prints every figure as one JSON object; `--runs N` repeats the
run with fresh processes. The only sleeps are the workload's schedule (the whole second,
t=4 s); everything else polls against a deadline and stops with a message naming what did
not happen, leaving the processes' logs in the directory it names.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import benchmark_redis  # noqa: E402
from benchmarks.fleet import credits_for, ledger_by_marker, start_beat, start_worker, warm_up  # noqa: E402
from benchmarks.throughput import Processes, sandbox_stats, start_sandbox  # noqa: E402
from worker.app import create_app  # noqa: E402
from worker.budget import HEADROOM, Budgets  # noqa: E402
from worker.domain.grant import CreditGrant, Provider  # noqa: E402
from worker.domain.job import Job  # noqa: E402
from worker.domain.states import TERMINAL, JobState  # noqa: E402
from worker.pipeline.listing import LISTING_PAGE_MAX  # noqa: E402
from worker.producer import enqueue, enqueue_many  # noqa: E402
from worker.sandbox.options import creditq_env  # noqa: E402
from worker.settings import get_settings  # noqa: E402
from worker.store.jobs import JobStore  # noqa: E402
from worker.store.keys import BudgetKeys  # noqa: E402

PROVIDERS = [p.value for p in Provider]
LATENCY = 0.02  # seconds the sandbox takes to answer, as in the other benchmarks
CONCURRENCY = 8  # threads per worker process
# Issue 18 adds CreditGrant.priority ("interactive", the default, or "bulk"). Without it
# the backlog goes in as any grant: first come, first served, the baseline.
PRIORITY = "priority" in CreditGrant.model_fields
GOAL_INTERACTIVE_SECONDS = 8.0
GOAL_EFFICIENCY = 0.85
SHORT = {"inveterate": "i", "chargebee": "c"}
# A request line of the sandbox's access log: "GET /path?query HTTP/1.1" 200
ACCESS_LINE = re.compile(r'"(GET|POST) ([^ ?"]+)(\?[^ "]*)? HTTP/[0-9.]+" (\d{3})')
INVETERATE_CREDITS = re.compile(r"^/v2\.0/admin/members/([^/]+)/credits/?$")
CHARGEBEE_LIST = "/api/v2/promotional_credits"


class RunFailed(Exception):
    """A run that could not finish: the message says what did not happen, and where the
    processes' logs are."""


# -- the workload ---------------------------------------------------------------------------


def bulk(**fields: Any) -> CreditGrant:
    """A backlog grant: ``priority="bulk"`` where CreditGrant has the field."""
    if PRIORITY:
        fields["priority"] = "bulk"
    return CreditGrant(**fields)


def backlog(prefix: str, inveterate: int, chargebee: int) -> list[CreditGrant]:
    """One grant per Inveterate member, then one per Chargebee customer."""
    kinds = (("inveterate", "i", "m", inveterate), ("chargebee", "c", "c", chargebee))
    return [
        bulk(
            idempotency_key=f"{prefix}-bulk-{short}{i}",
            provider=provider,
            customer_id=f"{prefix}-{who}{i}",
            amount=f"{1 + i % 9}.{i % 100:02d}",
            note=f"campaign credit {i}",
        )
        for provider, short, who, count in kinds
        for i in range(count)
    ]


def interactive(prefix: str, per_provider: int) -> list[CreditGrant]:
    """Alternating Inveterate and Chargebee, each to a member or customer of its own."""
    return [
        CreditGrant(
            idempotency_key=f"{prefix}-now-{SHORT[provider]}{i + 1}",
            provider=provider,
            customer_id=f"{prefix}-now-{SHORT[provider]}{i + 1}",
            amount=f"{5 + i}.50",
            note=f"cashback on order {1000 + i}",
        )
        for i in range(per_provider)
        for provider in PROVIDERS
    ]


# -- the bound ------------------------------------------------------------------------------


def fewest_reads(provider: str, grants: Sequence[CreditGrant]) -> int:
    """Inveterate: one listing read per member with a grant. Chargebee: one listing across
    every customer, up to LISTING_PAGE_MAX a page, read once every credit shows."""
    mine = [g for g in grants if g.provider.value == provider]
    if provider == "inveterate":
        return len({g.customer_id for g in mine})
    return math.ceil(len(mine) / LISTING_PAGE_MAX)


def lower_bound(grants: Sequence[CreditGrant], per_second: float, lag: float) -> dict[str, Any]:
    """The fastest any client could drain the workload at the budget: per provider, its
    POSTs and fewest reads at the budget rate; the slower provider, plus one listing lag."""
    terms: dict[str, Any] = {}
    for provider in PROVIDERS:
        posts = sum(1 for g in grants if g.provider.value == provider)
        reads = fewest_reads(provider, grants)
        terms[provider] = {
            "grants": posts,
            "posts": posts,
            "reads": reads,
            "seconds": (posts + reads) / per_second,
        }
    slowest = max(t["seconds"] for t in terms.values())
    return {"providers": terms, "lag": lag, "seconds": slowest + lag}


# -- reading a run back ---------------------------------------------------------------------


def epoch(entry: dict[str, Any]) -> float:
    return datetime.fromisoformat(entry["at"]).timestamp()


@dataclass(frozen=True)
class Trace:
    """One grant's way through the run (epoch seconds): created, each POST, confirmed."""

    key: str
    provider: str
    created: float
    posts: tuple[float, ...]  # every move into submitting: a budget slot and a POST
    confirmed: float | None
    state: str
    done: float  # when it stopped waiting (confirmed, rejected, dead); inf if it never did

    @classmethod
    def of(cls, job: Job) -> Trace:
        posts = tuple(epoch(h) for h in job.history if h["to"] == JobState.SUBMITTING.value)
        confirmed = next(
            (epoch(h) for h in job.history if h["to"] == JobState.CONFIRMED.value),
            job.number("confirmed_at") if job.state is JobState.CONFIRMED else None,
        )
        done = confirmed or (job.state_at if job.state in TERMINAL else math.inf)
        return cls(
            job.idempotency_key,
            job.provider,
            job.created_at,
            posts,
            confirmed,
            job.state.value,
            done,
        )

    @property
    def first_post(self) -> float:
        return self.posts[0] if self.posts else math.inf


def budget_calls(client: redis.Redis, provider: str, first: int, last: int) -> dict[int, int]:
    """Calls the fleet's budget let through in each epoch second ``first..last`` (every
    call takes a slot first): the per-minute hashes' ``s<second>`` fields."""
    prefix = BudgetKeys.minute_prefix(Provider(provider))
    calls: dict[int, int] = {}
    for minute in range(first // 60, last // 60 + 1):
        counts = client.hgetall(f"{prefix}{minute}")
        for second in range(max(first, minute * 60), min(last, minute * 60 + 59) + 1):
            calls[second] = int(counts.get(f"s{second % 60}") or 0)
    return calls


def covered(intervals: Iterable[tuple[float, float]], a: float, b: float) -> float:
    """The share of [a, b) covered by the union of ``intervals``."""
    clipped = sorted((max(s, a), min(e, b)) for s, e in intervals if e > a and s < b)
    total, reach = 0.0, a
    for s, e in clipped:
        if e > reach:
            total += e - max(s, reach)
            reach = e
    return total / (b - a)


def timeline(
    traces: Sequence[Trace],
    calls: dict[int, int],
    provider: str,
    start_second: int,
    end: float,
    rate: float,
) -> list[dict[str, Any]]:
    """One row per second from ``start_second`` through the second holding ``end``."""
    mine = [p for p in traces if p.provider == provider]
    waiting = [(p.created, p.done) for p in mine]
    unposted = [(p.created, min(p.first_post, p.done)) for p in mine]
    rows = []
    for second in range(start_second, math.floor(end) + 1):
        a, b = float(second), float(second + 1)
        posts = sum(1 for p in mine for t in p.posts if a <= t < b)
        total = calls.get(second, 0)
        busy, post_busy = covered(waiting, a, b), covered(unposted, a, b)
        rows.append(
            {
                "t": second - start_second,
                "calls": total,
                "posts": posts,
                "reads": max(total - posts, 0),
                "idle": max(rate * busy - total, 0.0),
                "idle_posts_waiting": max(rate * post_busy - total, 0.0),
                "unposted": sum(1 for p in mine if p.created < b and p.first_post >= b),
                "unconfirmed": sum(
                    1 for p in mine if p.created < b and p.first_post < b and p.done >= b
                ),
                "confirmed": sum(
                    1 for p in mine if p.confirmed is not None and a <= p.confirmed < b
                ),
            }
        )
    return rows


def access_reads(log: Path, members: set[str]) -> dict[str, Any]:
    """Listing reads by request line (the sandbox's access log carries no times): reads of
    each of ``members``' Inveterate listings, and Chargebee listing pages."""
    per_member: Counter[str] = Counter()
    chargebee_pages = chargebee_later = 0
    text = log.read_text(errors="replace") if log.exists() else ""
    for line in text.splitlines():
        found = ACCESS_LINE.search(line)
        if found is None or found.group(1) != "GET":
            continue
        path, query = found.group(2), found.group(3) or ""
        member = INVETERATE_CREDITS.match(path)
        if member is not None and member.group(1) in members:
            per_member[member.group(1)] += 1
        elif path.rstrip("/") == CHARGEBEE_LIST:
            chargebee_pages += 1
            chargebee_later += "offset=" in query
    spread = Counter(per_member[m] for m in members)
    return {
        "inveterate_reads_per_member": {str(k): v for k, v in sorted(spread.items())},
        "chargebee_pages": chargebee_pages,
        "chargebee_later_pages": chargebee_later,
        "logged": bool(text),
    }


def stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The sandbox's counters over the run: calls by operation, 429s, credits applied."""
    out: dict[str, Any] = {}
    for provider in PROVIDERS:
        b, a = before[provider], after[provider]
        ops = {op: n - b["calls"].get(op, 0) for op, n in a["calls"].items()}
        out[provider] = {
            "calls": {op: n for op, n in ops.items() if n},
            "rate_limited": a["rate_limited"] - b["rate_limited"],
            "status_429": a["status"].get("429", 0) - b["status"].get("429", 0),
            "applied": a["applied"] - b["applied"],
        }
    return out


# -- one run --------------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], timeout: float, failure: Callable[[], str]) -> None:
    """Poll ``condition`` until it holds; past ``timeout`` seconds raise RunFailed with
    ``failure()`` (built then, so it can say how far the run got)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RunFailed(failure())
        time.sleep(0.1)


def sandbox_flags(args: argparse.Namespace) -> tuple[str, ...]:
    """The sandbox's budget: ``--per-second`` calls a second, counted over ``--window``."""
    return ("--rate-limit", str(window_limit(args)), "--rate-window", f"{args.window:g}")


def window_limit(args: argparse.Namespace) -> int:
    per_second: float = args.per_second
    window: float = args.window
    return round(per_second * window)


def run_once(args: argparse.Namespace, redis_url: str, n: int) -> dict[str, Any]:
    prefix = f"r{n}"
    procs = Processes()
    try:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        client.flushdb()
        sandbox = start_sandbox(procs, LATENCY, args.lag, *sandbox_flags(args), "--access-log")
        per_minute = str(round(args.per_second * 60))
        env = creditq_env(
            redis_url,
            sandbox,
            CREDITQ_INVETERATE_RATE_LIMIT_PER_MINUTE=per_minute,
            CREDITQ_CHARGEBEE_RATE_LIMIT_PER_MINUTE=per_minute,
            CREDITQ_CONFIRM_FIRST_POLL_SECONDS=f"{args.lag:g}",
            PYTHONPATH=str(ROOT),
        )
        for w in range(args.workers):
            start_worker(procs, env, f"w{w}", CONCURRENCY)
        start_beat(procs, env)
        store, app = JobStore(client), create_app()
        try:
            warm_up(store, app, prefix, timeout=args.timeout)
        except SystemExit as exc:
            raise RunFailed(
                f"run {n + 1}: {exc}; are the workers up? logs in {procs.dir}"
            ) from None
        before = sandbox_stats(sandbox)
        commands_before = redis_commands(client)

        bulk_grants = backlog(prefix, args.bulk_inveterate, args.bulk_chargebee)
        now_grants = interactive(prefix, args.interactive)
        grants = bulk_grants + now_grants
        keys = [g.idempotency_key for g in grants]

        time.sleep(math.ceil(time.time()) + 0.005 - time.time())  # the schedule: a whole second
        start = time.time()
        enqueue_many(bulk_grants, store=store, app=app)
        time.sleep(max(start + args.interactive_at - time.time(), 0.0))  # the schedule: t=4 s
        for grant in now_grants:
            enqueue(grant, store=store, app=app)

        def finished() -> bool:
            jobs = store.get_many(keys, history=False)
            return all(j is not None and j.state in TERMINAL for j in jobs)

        def how_far() -> str:
            jobs = store.get_many(keys, history=False)
            states = Counter(j.state.value if j is not None else "missing" for j in jobs)
            shown = ", ".join(f"{s} {c}" for s, c in sorted(states.items()))
            return (
                f"run {n + 1}: not every grant finished within {args.timeout:g} s of the "
                f"first enqueue ({shown}); logs in {procs.dir}"
            )

        wait_for(finished, args.timeout - (time.time() - start), how_far)
        commands = redis_commands(client) - commands_before
        after = sandbox_stats(sandbox)
        jobs = [j for j in store.get_many(keys) if j is not None]
        ledger = ledger_by_marker(sandbox)
        snapshots = Budgets(client, budget_settings(args)).snapshots()
        members = {g.customer_id for g in grants if g.provider is Provider.INVETERATE}
        reads = access_reads(Path(procs.dir) / "sandbox.log", members)
        run = figures(
            args, grants, jobs, start, client, stats_delta(before, after), ledger, snapshots, reads
        )
        run["redis_commands_per_grant"] = round(commands / len(grants), 1)
        return run
    finally:
        procs.stop_all()


def redis_commands(client: redis.Redis) -> int:
    """Commands the server has run (``INFO commandstats``, those inside scripts included):
    what waiting for slots costs Redis, with this script's own polling (one HGETALL per grant
    every 50 ms) in it."""
    return sum(int(v["calls"]) for v in client.info("commandstats").values())


def budget_settings(args: argparse.Namespace) -> Any:
    per_minute = round(args.per_second * 60)
    return get_settings().model_copy(
        update={
            "inveterate_rate_limit_per_minute": per_minute,
            "chargebee_rate_limit_per_minute": per_minute,
        }
    )


def figures(
    args: argparse.Namespace,
    grants: Sequence[CreditGrant],
    jobs: Sequence[Job],
    start: float,
    client: redis.Redis,
    stats: dict[str, Any],
    ledger: dict[str | None, list[dict[str, Any]]],
    snapshots: list[dict[str, Any]],
    reads: dict[str, Any],
) -> dict[str, Any]:
    traces = [Trace.of(j) for j in jobs]
    by_key = {p.key: p for p in traces}
    now_keys = [g.idempotency_key for g in grants if "-now-" in g.idempotency_key]

    # 1. interactive grants
    fast: list[dict[str, Any]] = []
    for key in now_keys:
        t = by_key[key]
        fast.append(
            {
                "grant": key.rsplit("-", 1)[1],
                "provider": t.provider,
                "enqueued_at": t.created - start,
                "to_first_post": t.first_post - t.created if t.posts else None,
                "backlog_posts_first": sum(
                    1
                    for b in traces
                    if b.provider == t.provider
                    and b.key not in now_keys
                    and t.created < b.first_post < t.first_post
                ),
                "to_confirmed": None if t.confirmed is None else t.confirmed - t.created,
            }
        )
    waits = [f["to_confirmed"] for f in fast]
    slowest = max(waits) if waits and None not in waits else None

    # 2. drain efficiency
    bound = lower_bound(grants, args.per_second, args.lag)
    ends = [t.confirmed for t in traces if t.confirmed is not None]
    actual = max(ends) - start if len(ends) == len(grants) else None
    efficiency = bound["seconds"] / actual if actual else None

    # 3. calls per confirmed grant; 4. 429s and duplicates
    per_provider: dict[str, Any] = {}
    first_second = math.floor(start)
    last_second = math.floor(max((p.done for p in traces if p.done < math.inf), default=start))
    rate = args.per_second
    limited_total = {s["provider"]: s["rate_limited_total"] for s in snapshots}
    for provider in PROVIDERS:
        mine = [p for p in traces if p.provider == provider]
        done = [p for p in mine if p.confirmed is not None]
        term = bound["providers"][provider]
        calls = stats[provider]["calls"]
        total = sum(calls.values())
        budget = budget_calls(client, provider, first_second, last_second + 2)
        rows = timeline(traces, budget, provider, first_second, last_second + 1, rate)
        posts = [at for t in mine for at in t.posts]
        last_post = max(posts, default=None)
        last_confirmed = max((t.confirmed for t in done if t.confirmed is not None), default=None)
        per_provider[provider] = {
            "grants": len(mine),
            "confirmed": len(done),
            "calls": calls,
            "calls_total": total,
            "calls_per_confirmed": total / len(done) if done else None,
            "minimum_per_grant": (term["posts"] + term["reads"]) / term["grants"],
            "extra_posts": calls.get("submit", 0) - term["posts"],
            "extra_reads": calls.get("list", 0) - term["reads"],
            "rate_limited_sandbox": stats[provider]["rate_limited"],
            "rate_limited_budget_total": limited_total.get(provider, 0),
            "idle_slots": sum(r["idle"] for r in rows),
            "idle_slots_posts_waiting": sum(r["idle_posts_waiting"] for r in rows),
            "budget_calls_counted": sum(budget.values()),
            "post_moves": len(posts),
            "last_post_at": since(last_post, start),
            "last_confirmed_at": since(last_confirmed, start),
            "tail_after_last_post": since(last_confirmed, last_post),
            "timeline": rows,
        }
    duplicates = sum(1 for j in jobs if len(credits_for(ledger, j)) > 1)
    uncredited = sum(
        1 for j in jobs if j.state is JobState.CONFIRMED and not credits_for(ledger, j)
    )
    states = Counter(j.state.value for j in jobs)
    limited = sum(
        v["rate_limited_sandbox"] + v["rate_limited_budget_total"] for v in per_provider.values()
    )
    goals = {
        "interactive_under_8s": slowest is not None and slowest < GOAL_INTERACTIVE_SECONDS,
        "efficiency_at_least_0.85": efficiency is not None and efficiency >= GOAL_EFFICIENCY,
        "no_429": limited == 0,
        "nothing_paid_twice": duplicates == 0,
    }
    return {
        "mode": "lanes" if PRIORITY else "fcfs",
        "grants": len(grants),
        "interactive": fast,
        "slowest_interactive": slowest,
        "actual_seconds": actual,
        "bound": bound,
        "calls_at_creditq_pace": max(t["seconds"] for t in bound["providers"].values()) / HEADROOM,
        "efficiency": efficiency,
        "providers": per_provider,
        "duplicates": duplicates,
        "confirmed_without_credit": uncredited,
        "states": dict(states),
        "not_confirmed": len(grants) - len(ends),
        "reads": reads,
        "interactive_events": interactive_events(by_key, now_keys, first_second),
        "goals": goals,
    }


def since(at: float | None, origin: float | None) -> float | None:
    """``at - origin``, or None when either is missing."""
    return None if at is None or origin is None else at - origin


def interactive_events(
    by_key: dict[str, Trace], keys: Sequence[str], first_second: int
) -> dict[int, list[str]]:
    """What the interactive grants did, by timeline second: enqueued, POSTed, confirmed."""
    events: dict[int, list[str]] = {}
    for key in keys:
        p, name = by_key[key], key.rsplit("-", 1)[1]
        moves = [(p.created, f"+{name}"), *((t, f"{name}>") for t in p.posts)]
        if p.confirmed is not None:
            moves.append((p.confirmed, f"{name} ok {p.confirmed - p.created:.1f}s"))
        for t, text in moves:
            events.setdefault(math.floor(t) - first_second, []).append(text)
    return events


# -- the report -----------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def print_run(args: argparse.Namespace, run: dict[str, Any]) -> None:
    goals = run["goals"]
    print("1. interactive grants: enqueue to confirmed, split at the first POST")
    for f in run["interactive"]:
        after_post = since(f["to_confirmed"], f["to_first_post"])
        print(
            f"   {f['grant']} {f['provider']:<10} enqueued at {f['enqueued_at']:.1f} s: "
            f"confirmed after {seconds(f['to_confirmed'])} = first POST after "
            f"{seconds(f['to_first_post'])} ({f['backlog_posts_first']} backlog POSTs went "
            f"first) + {seconds(after_post)} to the listing"
        )
    print(
        f"   slowest {seconds(run['slowest_interactive'])}  "
        f"goal < {GOAL_INTERACTIVE_SECONDS:g} s: {verdict(goals['interactive_under_8s'])}"
    )
    bound, terms = run["bound"], run["bound"]["providers"]
    print("2. drain efficiency = lower bound / actual (first enqueue to last confirmation)")
    print(
        "   bound = max("
        + ", ".join(
            f"{p} ({t['posts']} POSTs + {t['reads']} reads) / {args.per_second:g}/s = "
            f"{t['seconds']:.2f} s"
            for p, t in terms.items()
        )
        + f") + lag {bound['lag']:g} s = {bound['seconds']:.2f} s"
    )
    eff = run["efficiency"]
    print(
        f"   actual {seconds(run['actual_seconds'])}, efficiency "
        f"{'-' if eff is None else f'{eff:.2f}'}  goal >= {GOAL_EFFICIENCY:g}: "
        f"{verdict(goals['efficiency_at_least_0.85'])}; the calls alone at creditq's pace "
        f"({HEADROOM:.0%} of the budget) take {run['calls_at_creditq_pace']:.2f} s"
    )
    print("3. calls per confirmed grant (minimum: POSTs + fewest reads, per grant)")
    for provider, p in run["providers"].items():
        ops = ", ".join(f"{op} {n}" for op, n in sorted(p["calls"].items()))
        per = p["calls_per_confirmed"]
        print(
            f"   {provider:<10} {'-' if per is None else f'{per:.2f}'} (minimum "
            f"{p['minimum_per_grant']:.2f}): {p['calls_total']} calls ({ops}); "
            f"{p['extra_posts']:+d} POSTs, {p['extra_reads']:+d} reads over the minimum"
        )
    reads = run["reads"]
    if reads["logged"]:
        spread = ", ".join(
            f"read {k}x: {v}" for k, v in reads["inveterate_reads_per_member"].items()
        )
        print(
            f"   inveterate members by listing reads ({spread}); chargebee listing pages "
            f"{reads['chargebee_pages']} ({reads['chargebee_later_pages']} past the first)"
        )
    print("4. 429s, duplicates, unfinished")
    print(
        "   429s "
        + ", ".join(
            f"{provider} {p['rate_limited_sandbox']} (budget's rate_limited_total "
            f"{p['rate_limited_budget_total']})"
            for provider, p in run["providers"].items()
        )
        + f"  goal none: {verdict(goals['no_429'])}"
    )
    print(
        f"   keys with more than one credit {run['duplicates']}  goal none: "
        f"{verdict(goals['nothing_paid_twice'])}; confirmed without a credit "
        f"{run['confirmed_without_credit']}; not confirmed {run['not_confirmed']} "
        f"(states: {', '.join(f'{s} {c}' for s, c in sorted(run['states'].items()))})"
    )
    print(
        f"   Redis commands per grant {run['redis_commands_per_grant']:g} (everything the fleet "
        "and this script's polling ran, scripts' own commands included)"
    )
    print_timeline(args, run)


def print_timeline(args: argparse.Namespace, run: dict[str, Any]) -> None:
    rate = args.per_second
    print(
        f"5. timeline, one line a second from the first enqueue (budget {rate:g}/s a provider): "
        "P POSTs, R listing reads, idle = slots unused while grants of the provider waited, "
        "q not yet POSTed, w POSTed and not yet shown, ok confirmed that second; "
        "interactive: +enqueued, > POSTed, ok confirmed (enqueue to confirmed)"
    )
    head = f"{'P':>3}{'R':>3}{'idle':>5}{'q':>4}{'w':>4}{'ok':>4}"
    print(f"   {'t':>3} |{'inveterate':^23}|{'chargebee':^23}| interactive")
    print(f"   {'':>3} |{head}|{head}|")
    events = {int(k): v for k, v in run["interactive_events"].items()}
    providers = run["providers"]
    rows = zip(*(providers[p]["timeline"] for p in PROVIDERS), strict=True)
    for pair in rows:
        cells = "|".join(
            f"{r['posts']:>3}{r['reads']:>3}{r['idle']:>5.1f}{r['unposted']:>4}"
            f"{r['unconfirmed']:>4}{r['confirmed']:>4}"
            for r in pair
        )
        t = pair[0]["t"]
        print(f"   {t:>3} |{cells}| {' '.join(events.get(t, []))}".rstrip())
    for provider, p in providers.items():
        print(
            f"   {provider:<10} idle slots {p['idle_slots']:.1f} while grants waited: "
            f"{p['idle_slots_posts_waiting']:.1f} while a POST waited, "
            f"{p['idle_slots'] - p['idle_slots_posts_waiting']:.1f} while only confirmations "
            f"did; last POST at {seconds(p['last_post_at'])}, last confirmation at "
            f"{seconds(p['last_confirmed_at'])} (tail {seconds(p['tail_after_last_post'])})"
        )
        posted = p["calls"].get("submit", 0)
        if p["post_moves"] != posted or p["budget_calls_counted"] != p["calls_total"]:
            print(
                f"   ! {provider}: {p['post_moves']} moves into submitting against {posted} "
                f"POSTs at the sandbox; {p['budget_calls_counted']} budget slots in the "
                f"timeline's seconds against {p['calls_total']} calls"
            )


def print_summary(runs: list[dict[str, Any]]) -> None:
    """Several runs: each run's headline figures, and the medians."""
    print(f"-- {len(runs)} runs")
    print(
        f"   {'run':>3}{'slowest interactive':>21}{'actual':>9}{'efficiency':>12}"
        f"{'calls/grant i, c':>18}{'idle i, c':>12}{'429s':>6}{'duplicates':>12}"
    )
    for n, run in enumerate(runs, 1):
        p = run["providers"]
        per = "/".join(
            "-" if p[x]["calls_per_confirmed"] is None else f"{p[x]['calls_per_confirmed']:.2f}"
            for x in PROVIDERS
        )
        idle = "/".join(f"{p[x]['idle_slots']:.0f}" for x in PROVIDERS)
        limited = sum(
            v["rate_limited_sandbox"] + v["rate_limited_budget_total"] for v in p.values()
        )
        eff = run["efficiency"]
        print(
            f"   {n:>3}{seconds(run['slowest_interactive']):>21}"
            f"{seconds(run['actual_seconds']):>9}{'-' if eff is None else f'{eff:.2f}':>12}"
            f"{per:>18}{idle:>12}{limited:>6}{run['duplicates']:>12}"
        )
    slowest = [r["slowest_interactive"] for r in runs if r["slowest_interactive"] is not None]
    effs = [r["efficiency"] for r in runs if r["efficiency"] is not None]
    if slowest and effs:
        print(
            f"   median slowest interactive {statistics.median(slowest):.1f} s, "
            f"median efficiency {statistics.median(effs):.2f}"
        )


def mode_line() -> str:
    if PRIORITY:
        return 'mode: lanes (the backlog sent with priority="bulk", interactive by default)'
    return "mode: first come, first served (CreditGrant has no priority field: the baseline)"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-second", type=float, default=4.0, help="budget per provider")
    parser.add_argument(
        "--window", type=float, default=3.0, help="seconds the sandbox counts the budget over"
    )
    parser.add_argument("--lag", type=float, default=1.0, help="seconds the listing is behind")
    parser.add_argument("--workers", type=int, default=3, help="worker processes, -c 8 each")
    parser.add_argument("--bulk-inveterate", type=int, default=60, help="backlog, one a member")
    parser.add_argument("--bulk-chargebee", type=int, default=100, help="backlog, one a customer")
    parser.add_argument("--interactive", type=int, default=3, help="interactive per provider")
    parser.add_argument("--interactive-at", type=float, default=4.0, help="seconds after t=0")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds a run (and the warm-up) may take"
    )
    parser.add_argument("--json", action="store_true", help="the figures as one JSON object")
    args = parser.parse_args()
    limit = args.per_second * args.window
    if args.per_second <= 0 or args.window <= 0 or abs(limit - round(limit)) > 1e-9:
        parser.error("--per-second x --window must be a positive whole number of calls")
    if (args.per_second * 60) != round(args.per_second * 60):
        parser.error("--per-second x 60 must be a whole number (creditq's budget is a minute's)")
    return args


def main() -> None:
    args = parse_args()
    runs: list[dict[str, Any]] = []
    grants = args.bulk_inveterate + args.bulk_chargebee + 2 * args.interactive
    if not args.json:
        print(
            f"{grants} grants: a backlog of {args.bulk_inveterate} Inveterate (one a member) "
            f"and {args.bulk_chargebee} Chargebee at t=0, {2 * args.interactive} interactive "
            f"at t={args.interactive_at:g} s; budget {args.per_second:g}/s a provider (sandbox "
            f"{window_limit(args)} calls per {args.window:g} s), listing {args.lag:g} s behind, "
            f"latency {LATENCY * 1000:.0f} ms, {args.workers} workers -P threads -c "
            f"{CONCURRENCY} and beat"
        )
        print(mode_line(), flush=True)
    try:
        with benchmark_redis() as url:
            for n in range(args.runs):
                run = run_once(args, url, n)
                runs.append(run)
                if not args.json:
                    if args.runs > 1:
                        print(f"-- run {n + 1} of {args.runs}")
                    print_run(args, run)
                    sys.stdout.flush()
    except RunFailed as exc:
        raise SystemExit(f"lanes: {exc}") from None
    if args.json:
        config = {k: v for k, v in vars(args).items() if k != "json"}
        print(json.dumps({"mode": runs[0]["mode"], "config": config, "runs": runs}))
    elif args.runs > 1:
        print_summary(runs)


if __name__ == "__main__":
    main()
