"""Request and reply values shared by the sandbox's handlers, and JSON that keeps money exact.

The providers' handlers are written against these plain values instead of
``BaseHTTPRequestHandler`` so they can be exercised without a socket, and so
the HTTP plumbing (``server.py``) stays the only place that touches one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class ApiRequest:
    """One HTTP request as the handlers see it: raw path (still percent-encoded), parsed query."""

    method: str
    path: str
    query: Mapping[str, Sequence[str]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # keys lower-cased
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def param(self, name: str) -> str | None:
        """First value of a query parameter; providers ignore repeats, so does the sandbox."""
        values = self.query.get(name)
        return values[0] if values else None


@dataclass(frozen=True)
class Reply:
    """An HTTP answer ready to write."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
        return cls(status, dumps(payload).encode(), "application/json", headers)

    def with_header(self, name: str, value: str) -> Reply:
        return Reply(self.status, self.body, self.content_type, (*self.headers, (name, value)))


def dumps(value: Any) -> str:
    """JSON text in which a ``Decimal`` is written verbatim (``10.50`` stays ``10.50``).

    ``json.dumps`` would need a float detour for Decimal, and the whole point of
    the sandbox's ledger is that a client's exact amount comes back exact.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"cannot write {value} as JSON")
        return format(value, "f")
    if isinstance(value, int | float | str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        items = (f"{json.dumps(str(key))}:{dumps(item)}" for key, item in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads(text: bytes | str) -> Any:
    """Parse JSON with decimals as ``Decimal`` and NaN/Infinity refused, as a strict API would."""
    return json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)
