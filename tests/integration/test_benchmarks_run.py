"""Every benchmark runs end to end at a small size and prints its figures.

Not timing tests: nothing here compares a figure with a threshold. They keep the scripts
from rotting, and the chaos run still has to show its guarantee (no duplicate, nothing lost).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.fixtures.paths import ROOT

SMALL = {
    "throughput": (
        [
            "--grants",
            "40",
            "--lag",
            "0.5",
            "--tuned-baseline",
            "--ambiguous-kind",
            "error_after",
            "--settle",
            "5",
        ],
        [
            "body/s",
            "end-to-end/s",
            "calls/grant",
            "task events off",
            "of no lag",
            "creditq's worker transport",
            "longest stall",
            "confirm_again",
            "one ambiguous POST (error_after, CREDITQ_SETTLE_SECONDS=5)",
        ],
    ),
    "latency": (["--rate", "20", "--seconds", "2"], ["p50", "0.2 s"]),
    "cost": (
        ["--grants", "40", "--idle-seconds", "0.5"],
        ["Redis commands per grant", "HTTP calls per grant", "1,000,000 terminal records"],
    ),
    "call_path": (
        [],
        [
            "chain at publish",
            "chain at the POST",
            "answered 'submitted'",
            "distinct project functions called",
            "modules under worker/",
        ],
    ),
    "enqueue": (["--single", "100", "--batch", "200"], ["enqueue_many"]),
    "intake": (
        ["--single", "40", "--batch", "1200", "--clients", "4"],
        ["POST /v1/grants, 4 clients", "POST /v1/grants/batch", "of its baseline"],
    ),
    "dlq_list": (["--jobs", "500", "--runs", "3"], ["dlq list"]),
    "budget": (["--grants", "20", "--lag", "0.5"], ["confirmed grants per call", "0 429s"]),
    "lanes": (
        [
            "--bulk-inveterate",
            "8",
            "--bulk-chargebee",
            "10",
            "--interactive",
            "1",
            "--interactive-at",
            "1",
            "--workers",
            "2",
        ],
        ["mode: ", "slowest", "drain efficiency", "idle slots", "keys with more than one credit 0"],
    ),
    "failover": (
        ["--grants", "24", "--kill-after", "12", "--replicas", "2", "--timeout", "15"],
        ["handed_over", "paid_twice", "checked_took", "logs: "],
    ),
    "chaos": (
        ["--grants", "30", "--chaos-seconds", "6", "--kill-every", "1", "2"],
        [
            "duplicates (more than one credit): 0",
            "never issued (no credit, not confirmed): 0",
            "not confirmed: 0",
            'worker processes that died on their own ("Unrecoverable error" in their log): 0',
        ],
    ),
}


# Columns of a benchmark's table that must read 0 in every run, whatever the size: the
# guarantees (the small failover run ends before a checked job's lease, so its lost and
# unconfirmed columns may not be 0 yet; nobody may be paid twice, no worker may die).
ZERO_COLUMNS = {"failover": ("paid_twice", "workers_died")}


def table_rows(stdout: str) -> list[dict[str, str]]:
    """The rows of the per-run table (its header starts with ``run``), by column name."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["run"])
    header = lines[start].split()
    rows = []
    for line in lines[start + 1 :]:
        cells = line.split()
        if len(cells) == len(header) and cells[0].isdigit():
            rows.append(dict(zip(header, cells, strict=True)))
    return rows


@pytest.mark.parametrize("name", sorted(SMALL))
def test_the_benchmark_runs_at_a_small_size_and_prints_its_figures(name: str) -> None:
    args, expected = SMALL[name]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITQ_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for text in expected:
        assert text in done.stdout, done.stdout[-2000:]
    if name in ZERO_COLUMNS:
        rows = table_rows(done.stdout)
        assert rows, done.stdout[-2000:]
        for row in rows:
            for column in ZERO_COLUMNS[name]:
                assert row[column] == "0", (column, row)
