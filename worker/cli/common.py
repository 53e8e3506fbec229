"""What every ``creditq`` command shares: exit codes, the console, ``--json`` output, the
one-line refusal, and the store the commands read (``open_store``, patched by the tests that
prove bad input never reaches it)."""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

EXIT_UNKNOWN = 1
EXIT_BAD_INPUT = 2
EXIT_CONFLICT = 3

out = Console(highlight=False, soft_wrap=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="One JSON object per line.")]


def command_group(name: str, help: str) -> typer.Typer:
    """A ``typer`` group as every creditq group is: help without arguments, plain text (no
    rich markup to escape), and no tracebacks (``main`` turns errors into one line)."""
    return typer.Typer(
        name=name,
        help=help,
        add_completion=False,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )


def emit_json(obj: Any) -> None:
    """One compact JSON object per line; Decimals stay exact strings."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":"), default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def fail(message: str, code: int) -> NoReturn:
    """Refuse with one line on stderr and ``code``, from inside a command."""
    sys.stderr.write(f"creditq: {message}\n")
    raise typer.Exit(code)


def open_store() -> Any:
    """The job store the settings name; imported late, so ``--help`` needs no Redis."""
    from worker.producer import default_store

    return default_store()
