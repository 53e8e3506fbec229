"""``creditq``: the operator's command line.

Read commands print a rich table for people and, with ``--json``, one JSON
object per line for machines. Bad input exits 2 with one line on stderr and
writes nothing; an idempotency conflict exits 3; an unknown key in ``status`` exits 1.
"""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any, NoReturn

import redis
import typer
from rich.table import Table

from worker.cli import common
from worker.cli.batch import batch_app
from worker.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_CONFLICT,
    EXIT_UNKNOWN,
    JsonFlag,
    command_group,
    emit_json,
    out,
)
from worker.cli.dlq import dlq_app
from worker.config_errors import exit_on
from worker.domain.states import WAITING, JobState
from worker.errors import CreditqError, IdempotencyConflict, InvalidGrant, SettingsError

try:  # typer >= 0.26 vendors click; older typer uses click itself
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # type: ignore[assignment]

cli = command_group(
    "creditq", "Queue-driven, exactly-once store-credit issuance (Inveterate, Chargebee)."
)


def _print_version(wanted: bool) -> None:
    if wanted:
        from importlib.metadata import version

        sys.stdout.write(f"creditq {version('creditq')}\n")
        raise typer.Exit()


@cli.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Queue-driven, exactly-once store-credit issuance (Inveterate, Chargebee)."""


@cli.command()
def enqueue(
    key: Annotated[str, typer.Option("--key", "--idempotency-key", help="Idempotency key.")],
    provider: Annotated[str, typer.Option(help="inveterate or chargebee.")],
    customer: Annotated[str, typer.Option("--customer", "--customer-id", help="Customer id.")],
    amount: Annotated[str, typer.Option(help="Decimal amount, e.g. 10.50.")],
    note: Annotated[str | None, typer.Option(help="Note shown with the credit.")] = None,
    force: Annotated[bool, typer.Option(help="Inveterate: force a negative grant.")] = False,
    currency: Annotated[str | None, typer.Option(help="ISO 4217 code.")] = None,
    credit_type: Annotated[str | None, typer.Option(help="Chargebee credit type.")] = None,
    priority: Annotated[
        str | None,
        typer.Option(help="interactive (default: a customer waits) or bulk (a campaign)."),
    ] = None,
    batch: Annotated[
        str | None, typer.Option(help="A batch name to follow it by (creditq batch status).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Accept one grant (validated first; a duplicate key with the same grant sends nothing)."""
    from worker.app import get_app
    from worker.app.queues import queue_type_refusal
    from worker.domain.batch import check_batch
    from worker.domain.grant import CreditGrant
    from worker.producer import enqueue as enqueue_grant

    raw = {
        "idempotency_key": key,
        "provider": provider,
        "customer_id": customer,
        "amount": amount,
        "note": note,
        "force": force,
        "currency_code": currency,
        "credit_type": credit_type,
        "priority": priority,
    }
    grant = CreditGrant.parse(raw)  # before any connection: bad input touches nothing
    check_batch(batch)
    refused = queue_type_refusal(get_app())  # a broker refusing the queues: write nothing
    if refused is not None:
        _die(refused.removeprefix("creditq: "), EXIT_BAD_INPUT)
    result = enqueue_grant(grant, store=common.open_store(), batch=batch)
    if as_json:
        emit_json({**result.job.to_json(), "created": result.created})
        return
    verb = "queued" if result.created else "duplicate of an existing job, nothing sent:"
    out.print(f"{grant.idempotency_key}: {verb} {result.job.state.value}")


@cli.command()
def status(
    keys: Annotated[list[str], typer.Argument(help="Idempotency keys.")], as_json: JsonFlag = False
) -> None:
    """Show jobs by key; exits 1 if any key is unknown."""
    jobs = common.open_store().get_many(keys)
    if as_json:
        for key, job in zip(keys, jobs, strict=True):
            emit_json(job.to_json() if job else {"idempotency_key": key, "state": None})
    else:
        table = Table("key", "state", "provider", "customer", "amount", "attempts", "last error")
        for key, job in zip(keys, jobs, strict=True):
            if job is None:
                table.add_row(key, "unknown", "", "", "", "", "")
                continue
            error = (job.last_error or {}).get("message", "")
            table.add_row(
                key,
                job.state.value,
                job.provider,
                job.customer_id,
                str(job.grant_fields["amount"]),
                str(job.attempts),
                str(error),
            )
        out.print(table)
    if any(job is None for job in jobs):
        raise typer.Exit(EXIT_UNKNOWN)


@cli.command()
def stats(as_json: JsonFlag = False) -> None:
    """Jobs per state, DLQ depth, and the age of the oldest job waiting in each waiting state."""
    store = common.open_store()
    counts = store.count_by_state()
    by_provider = store.count_by_provider()
    now = time.time()
    oldest = {
        state: (round(now - since, 3) if since is not None else None)
        for state, since in store.oldest(WAITING).items()
    }
    dlq_depth = sum(counts[s.value] for s in (JobState.REJECTED, JobState.DEAD))
    from worker.budget import Budgets
    from worker.lanes import lanes_of

    budgets = Budgets(store.redis).snapshots()
    lanes = lanes_of(store.lanes(), budgets, now)
    alarms = store.alarms()
    if as_json:
        emit_json(
            {
                "states": counts,
                "states_by_provider": by_provider,
                "dlq_depth": dlq_depth,
                "oldest_age_seconds": oldest,
                "alarms": alarms,
                "providers": budgets,
                "lanes": [lane.to_json() for lane in lanes],
            }
        )
        return
    table = Table("state", "jobs", *by_provider, "oldest waiting (s)")
    for state, count in counts.items():
        age = oldest.get(state)
        row = [str(by_provider[p][state]) for p in by_provider]
        table.add_row(state, str(count), *row, "" if age is None else f"{age:.1f}")
    out.print(table)
    out.print(f"dead-letter queue: {dlq_depth}")
    if alarms:  # a duplicate credit or a copied marker: `creditq status KEY` shows which
        out.print(
            f"[bold red]ALARMS: {alarms} job(s) with a duplicate credit or a copied "
            "marker; their job JSON has the field 'alarm'[/]"
        )
    else:
        out.print("alarms: 0")
    calls = Table(
        "provider",
        "calls last minute / budget",
        "429s (last hour / total)",
        "calls per confirmed grant (last hour)",
        "fleet pause (s)",
    )
    for b in budgets:
        per_grant = b["calls_per_confirmed_grant"]
        calls.add_row(
            b["provider"],
            f"{b['calls_last_minute']} / {b['limit_per_minute']}",
            f"{b['rate_limited_last_hour']} / {b['rate_limited_total']}",
            "" if per_grant is None else f"{per_grant:.2f}",
            f"{b['paused_for_seconds']:.1f}" if b["paused_for_seconds"] else "",
        )
    out.print(calls)
    waiting = Table("provider", "lane", "waiting", "oldest (s)", "through in (s)")
    for lane in lanes:
        age = lane.oldest_age_seconds
        waiting.add_row(
            lane.provider,
            lane.lane,
            str(lane.waiting),
            "" if age is None else f"{age:.1f}",
            f"{lane.drain_seconds:.0f}" if lane.waiting else "",
        )
    out.print(waiting)


# Mounted here: the sub-app builds on the helpers above (emit_json, fail, _store).

cli.add_typer(dlq_app, name="dlq")
cli.add_typer(batch_app, name="batch")


@cli.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def sandbox(ctx: typer.Context) -> None:
    """Run the provider sandbox (both APIs, faults, lag, budget); --help lists its flags."""
    from worker.sandbox.cli import main as sandbox_main

    raise typer.Exit(sandbox_main(ctx.args))


@cli.command()
def check(as_json: JsonFlag = False) -> None:
    """Verify each configured provider key with one cheap call; never prints a key.

    Exits 1 if a configured provider refuses its key, or if none is configured.
    """
    from worker.providers.check import check_credentials
    from worker.settings import get_settings

    settings = get_settings()
    results = check_credentials(settings, before_call=_budget_slot_taker(settings))
    for result in results:
        status = "ok" if result.ok else ("not configured" if not result.configured else "FAILED")
        if as_json:
            emit_json(
                {
                    "provider": result.provider.value,
                    "ok": result.ok,
                    "configured": result.configured,
                    "verdict": result.verdict,
                }
            )
        else:
            out.print(f"{result.provider.value:<11} {status:<15} {result.verdict}")
    configured = [r for r in results if r.configured]
    if not configured or not all(r.ok for r in configured):
        raise typer.Exit(1)


def _budget_slot_taker(settings: Any) -> Any:
    """A check spends the fleet's request budget like any call: wait for a slot first.
    Without a reachable Redis there is no fleet to share with, so the call goes ahead."""
    from worker.budget import Budgets
    from worker.domain.grant import Provider
    from worker.store.connect import store_client

    try:
        budgets = Budgets(store_client(settings, socket_timeout=2), settings)
        budgets.for_provider(Provider.INVETERATE).paused_for()
    except (redis.RedisError, OSError):
        return None

    def take(provider: Provider) -> None:
        budget = budgets.for_provider(provider)
        deadline = time.monotonic() + 120
        while (wait := budget.try_acquire()) > 0 and time.monotonic() < deadline:
            time.sleep(min(wait, 1.0))  # a CLI waiting for its turn, not a worker

    return take


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8080,
) -> None:
    """The HTTP intake (/v1), health probes and OpenAPI document, until stopped."""
    from worker.serve.app import serve as run_server
    from worker.settings import get_settings

    run_server(host, port, get_settings())


@cli.command()
def demo() -> None:
    """Run the pipeline on this machine: its own Redis, the provider sandbox, a real worker."""
    from worker.demo.run import run
    from worker.settings import get_settings

    get_settings()  # a bad CREDITQ_* setting (the Redis URL the demo would use) stops it here
    raise typer.Exit(run())


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every error becomes one line on stderr and a non-zero exit."""
    command = typer.main.get_command(cli)
    try:
        code = command.main(args=argv, prog_name="creditq", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except NoArgsIsHelpError as exc:
        sys.stdout.write(exc.ctx.get_help() + "\n" if exc.ctx else "")
        sys.exit(0)
    except UsageError as exc:
        _die(exc.format_message().replace("\n", " "), EXIT_BAD_INPUT)
    except ClickException as exc:
        _die(exc.format_message().replace("\n", " "), 1)
    except typer.Abort:
        _die("aborted", 1)
    except InvalidGrant as exc:
        _die(str(exc), EXIT_BAD_INPUT)
    except IdempotencyConflict as exc:
        _die(str(exc), EXIT_CONFLICT)
    except SettingsError as exc:  # one line per bad CREDITQ_* variable, exit 2
        exit_on(exc)
    except CreditqError as exc:
        _die(str(exc), 1)
    except redis.RedisError as exc:
        _die(f"Redis error: {exc}", 1)
    sys.exit(code if isinstance(code, int) else 0)


def _die(message: str, code: int) -> NoReturn:
    sys.stderr.write(f"creditq: {message}\n")
    sys.exit(code)
