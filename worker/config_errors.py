"""Bad settings as people read them: one line per ``CREDITQ_*`` variable, naming it and what it
accepts, instead of pydantic's report (25 lines, a traceback, and the rejected input, a key
or a URL's password included).

``settings_error_lines`` is pure: it turns a ``ValidationError`` of the settings model into
those lines. ``SettingsError`` carries them; every entry point (the CLI, a worker and beat
importing ``worker.app``) prints them with ``exit_on`` and exits 2, the contract's status for
bad input or a bad setting.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Mapping
from decimal import Decimal
from typing import IO, Any, Literal, NoReturn, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo

from worker.errors import SettingsError
from worker.redaction import redact_url

EXIT_BAD_SETTING = 2
ENV_PREFIX = "CREDITQ_"
SHOWN_MAX = 60
# A field named like a secret is never echoed, whatever its type.
_SECRET_WORDS = ("key", "token", "password", "secret", "auth")


def settings_error_lines(
    error: ValidationError,
    model: type[BaseModel],
    environ: Mapping[str, str] | None = None,
    prefix: str = ENV_PREFIX,
) -> list[str]:
    """One line per refused field of ``model``: ``CREDITQ_MAX_ATTEMPTS='0' is not accepted:
    expected a whole number from 1 to 100``.

    The value is shown only when ``environ`` holds it, never for a secret, and a URL
    without its credentials. A field's validator message (a ``ValueError``) is the reason
    as written; pydantic's own errors become "expected" plus what the field's type and
    bounds accept.
    """
    by_name = {name.upper(): value for name, value in (environ or {}).items()}
    lines: list[str] = []
    seen: set[str] = set()
    for detail in error.errors(include_url=False, include_input=False):
        name = str(detail["loc"][0]) if detail["loc"] else ""
        if name in seen:
            continue  # a union tries each branch: one line per variable is enough
        seen.add(name)
        field = model.model_fields.get(name)
        variable = f"{prefix}{name.upper()}" if name else f"{prefix}*"
        shown = _shown(name, field, by_name.get(variable))
        lines.append(f"{variable}{shown} is not accepted: {_reason(detail, field)}")
    return lines


def exit_on(error: SettingsError, stream: IO[str] | None = None) -> NoReturn:
    """Print the lines (``creditq: `` first, as every creditq refusal) and exit 2."""
    out = stream or sys.stderr
    for line in error.lines:
        out.write(f"creditq: {line}\n")
    out.flush()
    raise SystemExit(EXIT_BAD_SETTING)


def _reason(detail: Mapping[str, Any], field: FieldInfo | None) -> str:
    if detail["type"] == "value_error":
        cause = detail.get("ctx", {}).get("error")
        return str(cause) if cause is not None else str(detail["msg"])
    if detail["type"] == "missing":
        return "it is required"
    return "expected " + accepts(field)


def accepts(field: FieldInfo | None) -> str:
    """Pure: what a field takes, in words, from its type and its bounds."""
    if field is None:
        return "a valid value"
    kind = _bare(field.annotation)
    if kind is bool:
        return "true or false (or 1/0, yes/no, on/off)"
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(str(choice) for choice in get_args(kind))
    noun = {int: "a whole number", float: "a number", Decimal: "a decimal number"}.get(kind)
    if noun is None:
        return "a valid value"
    bounds = {
        name: getattr(m, name)
        for m in field.metadata
        for name in ("ge", "gt", "le", "lt")
        if getattr(m, name, None) is not None
    }
    low = ("", None)
    if "ge" in bounds:
        low = ("at least", bounds["ge"])
    elif "gt" in bounds:
        low = ("greater than", bounds["gt"])
    high = ("", None)
    if "le" in bounds:
        high = ("at most", bounds["le"])
    elif "lt" in bounds:
        high = ("less than", bounds["lt"])
    if low[0] == "at least" and high[0] == "at most":
        return f"{noun} from {low[1]} to {high[1]}"
    said = " and ".join(f"{word} {value}" for word, value in (low, high) if word)
    if not said:
        return noun
    return f"{noun} {'of ' if said.startswith('at ') else ''}{said}"


def _bare(annotation: Any) -> Any:
    """``int | None`` -> ``int``; other annotations as they are."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _secret(name: str, field: FieldInfo | None) -> bool:
    if field is not None and _bare(field.annotation) is SecretStr:
        return True
    return any(word in name.lower() for word in _SECRET_WORDS)


def _shown(name: str, field: FieldInfo | None, value: str | None) -> str:
    """``='value'`` for the line, or nothing: secrets are never shown, URLs redacted, long
    values cut (the reader needs to recognise the value, not read all of it)."""
    if value is None or _secret(name, field):
        return ""
    if name.endswith("_url"):
        value = redact_url(value)
    if len(value) > SHOWN_MAX:
        value = value[: SHOWN_MAX - 3] + "..."
    return f"={value!r}"
