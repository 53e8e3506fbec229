"""``creditq dlq``: list, show, replay and purge dead letters from the command line.

Same conventions as the rest of the CLI (``worker.cli``): a rich table for people, one
JSON object per line with ``--json``, bad input exits 2 with one line on stderr before
anything is read or written, and a key that could not be handled makes the exit 1.
"""

from __future__ import annotations

import json
import math
import time
from typing import Annotated, Any

import typer
from rich.table import Column, Table

from worker.cli import common
from worker.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_UNKNOWN,
    JsonFlag,
    command_group,
    emit_json,
    fail,
    out,
)
from worker.domain.grant import Provider
from worker.domain.job import Job, iso
from worker.domain.states import DlqReason
from worker.store import dlq

dlq_app = command_group(
    "dlq", "The dead-letter queue: jobs that ended rejected or dead, and their replay."
)

ProviderOption = Annotated[
    Provider | None, typer.Option("--provider", help="Only this provider's jobs.")
]
ReasonOption = Annotated[DlqReason | None, typer.Option("--reason", help="Only this reason class.")]
KeysArgument = Annotated[list[str] | None, typer.Argument(help="Idempotency keys.")]


def _since(text: str | None) -> float | None:
    """The cut-off as epoch seconds, checked before Redis sees it: ``nan`` would reach
    ZRANGEBYSCORE as a bad score, and ``inf``/``-inf`` (or a duration too long for a float)
    would silently select nothing or everything."""
    if text is None:
        return None
    try:
        since = dlq.parse_since(text)
    except (ValueError, OverflowError) as exc:
        raise typer.BadParameter(str(exc), param_hint="'--since'") from None
    if not math.isfinite(since):
        raise typer.BadParameter(
            f"{text.strip()[:40]!r} is not a time: give a duration (e.g. 2h, 30m, 7d), "
            "an ISO-8601 time or finite epoch seconds",
            param_hint="'--since'",
        )
    return since


def _age(epoch: float, now: float) -> str:
    """How long ago, like ``kubectl get``'s AGE: the exact time is in ``show`` and ``--json``."""
    age = max(now - epoch, 0.0)
    for unit, seconds in (("d", 86400), ("h", 3600), ("m", 60)):
        if age >= seconds:
            return f"{age // seconds:.0f}{unit} ago"
    return f"{age:.0f}s ago"


def _error(job: Job) -> tuple[str, str]:
    """The provider status and message of the job's last error, or the move's own reason."""
    record = dlq.dead_letter_json(job)["last_error"] or {}
    status = record.get("status")
    return ("" if status is None else str(status)), str(record.get("message") or "")


@dlq_app.command("list")
def list_command(
    provider: ProviderOption = None,
    reason: ReasonOption = None,
    since: Annotated[
        str | None,
        typer.Option(help="Entered the DLQ since: 2h, 30m, 7d, an ISO-8601 time or epoch."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Dead letters, newest first: key, provider, customer, amount, reason, last error, when."""
    after = _since(since)
    store = common.open_store()
    p, r = (provider.value if provider else None), (reason.value if reason else None)
    jobs = dlq.list_dlq(store, provider=p, reason=r, since=after, limit=limit)
    if as_json:
        for job in jobs:
            emit_json(dlq.dead_letter_json(job))
        return
    now = time.time()
    # Keys and times stay whole on a narrow terminal; customer and error text wrap instead.
    table = Table(
        Column("key", no_wrap=True),
        Column("provider", no_wrap=True),
        "customer",
        Column("amount", no_wrap=True),
        Column("reason", no_wrap=True),
        "status",
        "last error",
        "attempts",
        Column("when", no_wrap=True),
    )
    for job in jobs:
        status, message = _error(job)
        table.add_row(
            job.idempotency_key,
            job.provider,
            job.customer_id,
            str(job.grant_fields.get("amount", "")),
            dlq.dlq_reason(job) or "",
            status,
            message,
            str(job.attempts),
            _age(job.state_at, now),
        )
    out.print(table)
    if p is None or r is None:  # with both filters the total would cost a walk of the set
        out.print(
            f"{len(jobs)} shown; {dlq.dlq_depth(store, p, r)} in the DLQ"
            f"{' matching' if p or r else ''}"
        )
    else:
        out.print(f"{len(jobs)} shown")


@dlq_app.command("show")
def show(
    key: Annotated[str, typer.Argument(help="Idempotency key.")], as_json: JsonFlag = False
) -> None:
    """One job with its whole history; exits 1 if the key is unknown."""
    job = common.open_store().get(key)
    if job is None:
        if as_json:
            emit_json({"idempotency_key": key, "state": None})
            raise typer.Exit(EXIT_UNKNOWN)
        fail(f"no job with key {key!r} (never enqueued, purged or expired)", EXIT_UNKNOWN)
    if as_json:
        emit_json(dlq.dead_letter_json(job))
        return
    status, message = _error(job)
    fields = Table("field", "value", show_header=False)
    for name, value in (
        ("key", job.idempotency_key),
        ("state", job.state.value),
        ("reason", dlq.dlq_reason(job) or ""),
        ("provider", job.provider),
        ("customer", job.customer_id),
        ("amount", str(job.grant_fields.get("amount", ""))),
        ("currency", str(job.grant_fields.get("currency_code") or "")),
        ("note", str(job.grant_fields.get("note") or "")),
        ("attempts", str(job.attempts)),
        ("provider ref", job.provider_ref or ""),
        ("last error", f"{status} {message}".strip()),
        ("created", iso(job.created_at) or ""),
        ("in this state since", iso(job.state_at) or ""),
    ):
        fields.add_row(name, value)
    out.print(fields)
    history = Table("at", "from", "to", "attempt", "reason", "detail", title="history")
    for entry in job.history:
        detail = entry.get("detail")
        cells = (entry.get(name, "") for name in ("at", "from", "to", "attempt", "reason"))
        history.add_row(
            *map(str, cells), json.dumps(detail, separators=(",", ":")) if detail else ""
        )
    out.print(history)


def _selection(
    keys: list[str] | None, everything: bool, provider: Provider | None, reason: DlqReason | None
) -> tuple[list[str] | None, dict[str, Any]]:
    """Explicit keys, or the filters of a selector; refuses an ambiguous or empty choice."""
    filtered = provider is not None or reason is not None
    if keys and (everything or filtered):
        fail("give keys or a selector (--all, --provider, --reason), not both", EXIT_BAD_INPUT)
    if everything and filtered:
        fail("--all takes no --provider or --reason: use those alone to narrow it", EXIT_BAD_INPUT)
    if keys:
        return keys, {}
    if not (everything or filtered):
        fail("name the jobs: KEY..., --all, --provider P or --reason R", EXIT_BAD_INPUT)
    return None, {
        "provider": provider.value if provider else None,
        "reason": reason.value if reason else None,
    }


@dlq_app.command("replay")
def replay_command(
    keys: KeysArgument = None,
    everything: Annotated[bool, typer.Option("--all", help="Every job in the DLQ.")] = False,
    provider: ProviderOption = None,
    reason: ReasonOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would happen.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Send DLQ jobs again: back to queued (attempts reset), republished, oldest first.

    Safe to repeat: a job no longer in the DLQ is refused and nothing is sent; a job
    that was ever POSTed has the listing checked before any new POST.
    """
    chosen, filters = _selection(keys, everything, provider, reason)
    store = common.open_store()
    if chosen is None:
        chosen = dlq.select(store, **filters)
    outcomes = dlq.replay(store, chosen, dry_run=dry_run)
    _report(outcomes, as_json, "replay" + (" (dry run)" if dry_run else ""))


@dlq_app.command("purge")
def purge_command(
    keys: KeysArgument = None,
    everything: Annotated[bool, typer.Option("--all", help="Every job in the DLQ.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm purging with --all.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Delete DLQ jobs for good (record, history, index entries). Live jobs are never purged.

    A purged key is forgotten: enqueueing it again makes a new grant.
    """
    if keys and everything:
        fail("give keys or --all, not both", EXIT_BAD_INPUT)
    if not keys and not everything:
        fail("name the jobs: KEY... or --all --yes", EXIT_BAD_INPUT)
    if everything and not yes:
        fail("--all deletes every dead letter for good: add --yes to confirm", EXIT_BAD_INPUT)
    store = common.open_store()
    outcomes = dlq.purge(store, keys if keys else dlq.select(store))
    _report(outcomes, as_json, "purge")


def _report(outcomes: list[Any], as_json: bool, what: str) -> None:
    """One line per key (or JSON object); exit 1 if any key could not be handled."""
    if as_json:
        for outcome in outcomes:
            emit_json(outcome.to_json())
    elif not outcomes:
        out.print(f"{what}: the DLQ holds no matching job; nothing done")
    else:
        for o in outcomes:
            detail = getattr(o, "detail", None) or (f"it is {o.state}" if o.state else "")
            out.print(f"{o.idempotency_key}: {o.result.value}{f' ({detail})' if detail else ''}")
        done = sum(1 for o in outcomes if o.result.ok)
        out.print(f"{what}: {done} of {len(outcomes)} done")
    if any(not o.result.ok for o in outcomes):
        raise typer.Exit(EXIT_UNKNOWN)
