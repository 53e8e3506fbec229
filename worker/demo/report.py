"""What the demo prints and checks: each grant's end, the faults it met (from its structured
history), and the credits the sandbox's ledger holds for it."""

from __future__ import annotations

import collections

from rich import box
from rich.console import Console
from rich.table import Table

from worker.demo.scenario import Expect, Row
from worker.domain.job import Job
from worker.domain.states import JobState
from worker.errors import Outcome
from worker.sandbox import Sandbox
from worker.store.jobs import JobStore


def what_happened(job: Job) -> str:
    """The faults a job met and how each was resolved, in a few words, from the structured
    detail of its history (``Mover.move(detail=...)``): a failed call's outcome class and
    HTTP status, None when no answer came."""
    notes = []
    for entry, after in zip(job.history, [*job.history[1:], {}], strict=True):
        detail = entry.get("detail") or {}
        if detail.get("outcome") not in (Outcome.AMBIGUOUS, Outcome.NOT_APPLIED):
            continue
        status = detail.get("status")
        fault = "timeout" if status is None else str(status)
        then = "found in listing" if after.get("to") == JobState.CONFIRMED else "retried"
        notes.append(f"{fault}, {then}")
    return "; ".join(notes)


def credits_per_key(sandbox: Sandbox, store: JobStore, keys: list[str]) -> dict[str, int]:
    """How many credits the sandbox's ledger holds for each key's job (by its marker, which
    belongs to the job's incarnation); a key with no job counts 0. Credits a person wrote
    in the admin (``origin="admin"``) are not creditq's, whatever their note says."""
    by_marker = collections.Counter(entry.marker for entry in sandbox.entries(origin="api"))
    jobs = store.get_many(keys, history=False)
    return {key: by_marker[job.marker] if job else 0 for key, job in zip(keys, jobs, strict=True)}


def verdict(rows: list[Row], credits: dict[str, int]) -> list[str]:
    """Every way the run missed its expected end; empty when it did not."""
    problems = []
    for row in rows:
        expect = row.sample.expect
        if expect in (Expect.REFUSED, Expect.DUPLICATE):
            if not row.outcome.startswith(expect.value):
                problems.append(f"{row.sample.key}: {row.outcome}, expected {expect.value}")
            continue
        state = row.job.state.value if row.job else "missing"
        if state != expect.value:
            problems.append(f"{row.sample.key}: {state}, expected {expect.value}")
        wanted = 1 if expect is Expect.CONFIRMED else 0
        if credits.get(row.key, 0) != wanted:
            problems.append(f"{row.sample.key}: {credits.get(row.key, 0)} credits at the provider")
    return problems


def outcome_of(row: Row, prefix: str) -> str:
    if row.job is None:
        return row.outcome
    if row.job.state is JobState.REJECTED:
        message = str((row.job.last_error or {}).get("message", ""))
        return f"rejected: {message.replace(prefix, '')}"
    return row.job.state.value


def outcome_table(rows: list[Row], credits: dict[str, int], run_id: str) -> Table:
    prefix = f"demo-{run_id}-"
    table = Table(
        "key",
        "provider",
        "amount",
        "outcome",
        "tries",
        "confirmed in",
        "credits",
        "faults met",
        box=box.SIMPLE_HEAD,
        caption=f"keys and customers are prefixed {prefix}; credits: the sandbox's ledger",
    )
    for row in rows:
        job, s = row.job, row.sample
        confirmed_in = ""
        if job is not None and job.state is JobState.CONFIRMED:
            confirmed_in = f"{job.state_at - job.created_at:.1f}s"
        table.add_row(
            s.key,
            s.provider,
            f"{s.amount} {s.currency}",
            outcome_of(row, prefix),
            str(job.attempts) if job else "",
            confirmed_in,
            str(credits.get(row.key, 0)) if s.expect is not Expect.DUPLICATE else "",
            what_happened(job) if job else "",
        )
    return table


def default_console() -> Console:
    """The terminal's width, or one wide enough for the table when output is captured."""
    probe = Console()
    return Console(highlight=False, width=None if probe.is_terminal else 160)
