"""How fast ``creditq dlq list`` answers with 100,000 jobs in the dead-letter queue.

    .venv/bin/python benchmarks/dlq_list.py [--jobs N] [--runs N]

Fills a private redis-server with N dead letters (written through the store's own create
and transition scripts, pipelined), spread over ten hours, both providers and every reason
class, then times the listing newest first, with each filter, with both filters, and with
``--since``: the median of several runs, in ms per call, for ``list_dlq`` itself and for the
whole CLI command (``--json``, output discarded). Filling takes about a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from benchmarks.common import benchmark_redis, rate
from worker.cli.main import main as cli_main
from worker.domain.grant import CreditGrant
from worker.domain.states import DlqReason, JobState
from worker.store import dlq, lua
from worker.store.jobs import JobStore
from worker.store.keys import Keys

# reason class, share of the DLQ, providers it happens at. Configuration errors only at
# Chargebee, so "--provider inveterate --reason configuration" is the empty intersection:
# the worst case, where the whole smaller set is checked and nothing matches.
MIX: list[tuple[DlqReason, float, tuple[str, ...]]] = [
    (DlqReason.REFUSED, 0.40, ("inveterate", "chargebee")),
    (DlqReason.EXHAUSTED, 0.30, ("inveterate", "chargebee")),
    (DlqReason.NOT_VISIBLE, 0.20, ("inveterate", "chargebee")),
    (DlqReason.INVALID, 0.05, ("inveterate", "chargebee")),
    (DlqReason.CONFIGURATION, 0.05, ("chargebee",)),
]
SPAN_SECONDS = 10 * 3600
BATCH = 5000


def plan(n: int) -> list[tuple[str, str, DlqReason]]:
    """(key, provider, reason) for n jobs, in the MIX shares, interleaved in time."""
    out: list[tuple[str, str, DlqReason]] = []
    for reason, share, providers in MIX:
        for i in range(int(n * share)):
            out.append((f"{reason.value}-{i}", providers[i % len(providers)], reason))
    out.sort(key=lambda row: hash(row[0]))  # reasons and providers mixed across the timeline
    return out


class BulkStore(JobStore):
    """The store's own transition script, queued on a pipeline instead of run one by one.

    Benchmark only: ``transition`` here never sees the script's reply, so a refused move
    would pass unnoticed; the fill checks the counts afterwards instead.
    """

    def queue_on(self, pipe: Any) -> None:
        script = lua.script(self.redis, "transition.lua")

        def queued(keys: list[str], args: list[Any]) -> list[Any]:
            script(keys=keys, args=args, client=pipe)
            return [1, JobState.QUEUED.value, 0]  # moved, from queued, no flag

        self._transition = queued  # type: ignore[assignment]


def fill(store: BulkStore, n: int) -> float:
    rows = plan(n)
    start_at = time.time() - SPAN_SECONDS
    step = SPAN_SECONDS / len(rows)
    started = time.perf_counter()
    for first in range(0, len(rows), BATCH):
        chunk = rows[first : first + BATCH]
        grants = [
            CreditGrant(
                idempotency_key=key,
                provider=provider,
                customer_id=f"cust-{i % 997}",
                amount=f"{1 + i % 90}.50",
                note="benchmark",
            )
            for i, (key, provider, _) in enumerate(chunk, first)
        ]
        store.create_many(grants)
        pipe = store.redis.pipeline(transaction=False)
        store.queue_on(pipe)
        for i, (key, _, reason) in enumerate(chunk, first):
            target = (
                JobState.REJECTED
                if reason in (DlqReason.REFUSED, DlqReason.INVALID)
                else JobState.DEAD
            )
            error = {"class": "permanent", "status": 404, "message": "customer not found"}
            store.transition(
                key,
                target,
                reason=f"benchmark: {reason.value}",
                dlq_reason=reason,
                now=start_at + i * step,
                fields={"last_error": error},
            )
        pipe.execute()
    return time.perf_counter() - started


def median_ms(call: Callable[[], Any], runs: int) -> tuple[float, Any]:
    result = call()  # warm: scripts loaded, connections open
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def cli(argv: list[str]) -> None:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        cli_main(argv)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()

    with benchmark_redis() as url:
        client = redis.Redis.from_url(url, decode_responses=True)
        store = BulkStore(client)
        fill_s = fill(store, args.jobs)
        depth = int(client.zcard(Keys.dlq()))
        assert depth == store.count_by_state()["rejected"] + store.count_by_state()["dead"]
        print(f"filled {depth:,} dead letters in {fill_s:.1f} s ({rate(depth, fill_s)})")

        import worker.producer

        worker.producer.default_store = lambda: JobStore(client)  # type: ignore[assignment]
        since = time.time() - 2 * 3600
        cases: list[tuple[str, dict[str, Any], list[str]]] = [
            ("--limit 50", {}, []),
            ("--provider chargebee", {"provider": "chargebee"}, ["--provider", "chargebee"]),
            ("--reason not_visible", {"reason": "not_visible"}, ["--reason", "not_visible"]),
            (
                "--provider chargebee --reason not_visible",
                {"provider": "chargebee", "reason": "not_visible"},
                ["--provider", "chargebee", "--reason", "not_visible"],
            ),
            (
                "--provider inveterate --reason configuration (empty: worst case)",
                {"provider": "inveterate", "reason": "configuration"},
                ["--provider", "inveterate", "--reason", "configuration"],
            ),
            ("--since 2h", {"since": since}, ["--since", "2h"]),
            ("--limit 1000", {"limit": 1000}, ["--limit", "1000"]),
        ]
        print(f"{'dlq list':<66} {'list_dlq':>9} {'CLI --json':>11}  rows")
        for label, kwargs, argv in cases:
            list_ms, jobs = median_ms(functools.partial(dlq.list_dlq, store, **kwargs), args.runs)
            cli_ms, _ = median_ms(
                functools.partial(cli, ["dlq", "list", "--json", *argv]), args.runs
            )
            print(f"{label:<66} {list_ms:7.2f}ms {cli_ms:9.2f}ms  {len(jobs)}")
        print(
            f"(median of {args.runs} runs each, one process, loopback Redis, "
            f"{depth:,} jobs in the DLQ)"
        )
        command = [
            sys.executable,
            "-c",
            "from worker.cli.main import main; main()",
            "dlq",
            "list",
            "--limit",
            "50",
            "--json",
        ]
        env = {**os.environ, "CREDITQ_REDIS_URL": url}
        wall_ms, done = median_ms(
            lambda: subprocess.run(command, env=env, capture_output=True, check=True), 5
        )
        lines = len(done.stdout.splitlines())
        print(
            f"`creditq dlq list --limit 50 --json` as a fresh process (interpreter start "
            f"and imports included): {wall_ms:.0f} ms, {lines} lines"
        )


if __name__ == "__main__":
    main()
