"""``creditq batch status NAME``: how far a campaign handed over with
``enqueue_many(..., batch=NAME)`` has come, with a progress bar while it drains."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from worker.cli import common
from worker.cli.common import EXIT_UNKNOWN, JsonFlag, command_group, emit_json, fail, out
from worker.domain.batch import check_batch
from worker.domain.states import TERMINAL
from worker.errors import InvalidGrant
from worker.store.jobs import JobStore

batch_app = command_group("batch", "Batches: a campaign's grants, followed by name.")

# How often a followed batch is read again.
FOLLOW_SECONDS = 1.0
# Beside the states, what a batch's count may say of a grant whose job is gone.
GONE = "gone"


def _finished(counts: dict[str, int]) -> int:
    return sum(n for state, n in counts.items() if state in TERMINAL or state == GONE)


def _report(name: str, counts: dict[str, int]) -> dict[str, object]:
    total = sum(counts.values())
    finished = _finished(counts)
    return {
        "batch": name,
        "total": total,
        "finished": finished,
        "done": total > 0 and finished == total,
        "states": counts,
    }


@batch_app.command("status")
def status(
    name: Annotated[str, typer.Argument(help="The batch's name.")],
    as_json: JsonFlag = False,
    follow: Annotated[
        bool | None,
        typer.Option(
            "--follow/--no-follow",
            help="Show a progress bar until every grant is finished (default: on a terminal).",
        ),
    ] = None,
) -> None:
    """Grants of a batch per state; on a terminal, a progress bar until it has drained."""
    try:
        check_batch(name)
    except InvalidGrant as exc:
        raise typer.BadParameter(exc.reason, param_hint="'NAME'") from None
    store = common.open_store()
    counts = store.batch_states(name)
    if not sum(counts.values()):
        if as_json:
            emit_json(_report(name, counts))
        fail(f"no batch named {name!r} (or its grants are past their retention)", EXIT_UNKNOWN)
    if as_json:
        emit_json(_report(name, counts))
        return
    if follow is None:
        follow = out.is_terminal
    if follow and _finished(counts) < sum(counts.values()):
        counts = _follow(store, name, counts)
    table = Table("state", "grants")
    for state, n in counts.items():
        if n:
            table.add_row(state, str(n))
    out.print(table)
    report = _report(name, counts)
    out.print(f"{name}: {report['finished']} of {report['total']} finished")


def _follow(store: JobStore, name: str, counts: dict[str, int]) -> dict[str, int]:
    """A progress bar of finished grants, read again every FOLLOW_SECONDS until all are."""
    total = sum(counts.values())
    columns = (
        TextColumn(f"[bold]{name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=out, transient=True) as progress:
        task = progress.add_task(name, total=total, detail="")
        while True:
            waiting = ", ".join(f"{s} {n}" for s, n in counts.items() if n and s not in TERMINAL)
            progress.update(task, completed=_finished(counts), detail=waiting)
            if _finished(counts) >= total:
                return counts
            time.sleep(FOLLOW_SECONDS)
            counts = store.batch_states(name)
            total = sum(counts.values())
            progress.update(task, total=total)
