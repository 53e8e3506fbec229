"""The fake Inveterate public API v2.0 (docs/wire.md, "Inveterate").

Routes: ``POST|GET /v2.0/admin/members/{id}/credits`` and ``GET /v2.0/merchant``.
Replies use the documented envelope ``{"message", "data"}``, except 429, which the
real API answers with an HTML page and no envelope. Listings run newest first, or
oldest first with the ``oldest_first`` option (the docs never say which).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

from worker.domain.grant import Provider
from worker.sandbox.cursors import BadCursor, decode_inveterate, encode_inveterate
from worker.sandbox.ledger import LedgerEntry
from worker.sandbox.options import SandboxOptions
from worker.sandbox.state import SandboxState
from worker.sandbox.wire import ApiRequest, Reply, loads

NAME = Provider.INVETERATE.value
KEY_HEADER = "X-Inveterate-Api-Key"
# Not documented: the sandbox's page when the client gives no limit.
DEFAULT_LIMIT = 25
ANONYMOUS_REASON = "Admin credit"
_CREDITS = re.compile(r"^/v2\.0/admin/members/([^/]+)/credits/?$")
_MERCHANT = "/v2.0/merchant"
_RATE_LIMIT_PAGE = (
    b"<html><head><title>429 Too Many Requests</title></head>"
    b"<body><h1>Too Many Requests</h1><p>Rate limit exceeded.</p></body></html>"
)


def _envelope(status: int, message: str, data: Any = None) -> Reply:
    return Reply.json(status, {"message": message, "data": {} if data is None else data})


def created_at_text(epoch: float) -> str:
    """ISO-8601 UTC with milliseconds, e.g. ``2024-05-01T12:00:00.123Z``."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def listing_entry(entry: LedgerEntry, echo_notes: bool) -> dict[str, Any]:
    """One credit as the listing shows it (the v1 shape plus id; note only when echoed)."""
    shown: dict[str, Any] = {
        "id": entry.id,
        "amount": entry.amount,
        "createdAt": created_at_text(entry.created_at),
        "newBalance": entry.balance,
        "reason": ANONYMOUS_REASON,
    }
    if echo_notes and entry.note is not None:
        shown["note"] = entry.note
    return shown


class InveterateApi:
    name = NAME

    def __init__(self, state: SandboxState) -> None:
        self._state = state

    def operation(self, request: ApiRequest) -> str | None:
        if request.path.rstrip("/") == _MERCHANT and request.method == "GET":
            return "health"
        if _CREDITS.match(request.path):
            return {"POST": "submit", "GET": "list"}.get(request.method)
        return None

    def customer(self, operation: str, request: ApiRequest) -> str | None:
        match = _CREDITS.match(request.path)
        return unquote(match.group(1)) if match else None

    def authorized(self, request: ApiRequest, options: SandboxOptions) -> bool:
        return request.header(KEY_HEADER) == options.inveterate_key

    def unauthorized(self) -> Reply:
        return _envelope(401, "Unauthorized: missing or invalid X-Inveterate-Api-Key")

    def not_found(self, request: ApiRequest) -> Reply:
        return _envelope(404, f"Cannot {request.method} {request.path}")

    def failure(self, status: int) -> Reply:
        if status == 503:
            return _envelope(503, "Service Unavailable")
        return _envelope(status, "Internal server error", {"error": "sandbox injected failure"})

    def rate_limited(self, retry_after: float) -> Reply:
        seconds = str(max(1, math.ceil(retry_after)))
        return Reply(429, _RATE_LIMIT_PAGE, "text/html", (("Retry-After", seconds),))

    def handle(self, operation: str, request: ApiRequest, lag: float) -> Reply:
        if operation == "health":
            return _envelope(200, "Merchant found", {"id": "sandbox", "name": "creditq sandbox"})
        match = _CREDITS.match(request.path)
        assert match is not None  # operation() routed it
        customer_id = unquote(match.group(1))
        if operation == "submit":
            return self._submit(customer_id, request, lag)
        return self._list(customer_id, request)

    def _submit(self, customer_id: str, request: ApiRequest, lag: float) -> Reply:
        marked = self._state.marks.status(NAME, customer_id)
        if marked == 404:
            return _envelope(404, f"Member {customer_id} not found")
        if marked == 400:
            return _envelope(400, f"Member {customer_id} cannot receive credits")
        try:
            body = loads(request.body)
        except ValueError:
            return _envelope(400, "Body must be JSON")
        if not isinstance(body, dict):
            return _envelope(400, "Body must be a JSON object")
        amount = body.get("amount")
        if isinstance(amount, bool) or not isinstance(amount, int | Decimal):
            return _envelope(400, "amount must be a number")
        amount = Decimal(amount)
        if amount.is_zero():
            return _envelope(400, "amount can't be zero")
        note = body.get("note")
        if note is not None and not isinstance(note, str):
            return _envelope(400, "note must be a string")
        force = body.get("force", False)
        if not isinstance(force, bool):
            return _envelope(400, "force must be a boolean")
        entry = self._state.ledger.apply(NAME, customer_id, amount, lag=lag, note=note, force=force)
        self._state.stats.bump(NAME, "applied")
        data: dict[str, Any] = {"memberId": customer_id, "amount": entry.amount}
        if note is not None:
            data["note"] = note
        return _envelope(201, "Credit request submitted", data)

    def _list(self, customer_id: str, request: ApiRequest) -> Reply:
        options = self._state.options
        limit = _limit(request.param("limit"))
        if limit is None:
            return _envelope(400, "limit must be a positive whole number")
        if options.page_size is not None:
            limit = min(limit, options.page_size)
        seq: int | None = None
        cursor = request.param("lastCreditEntry")
        if cursor is not None:
            try:
                seq = decode_inveterate(cursor)
            except BadCursor as exc:
                return _envelope(400, str(exc))
        ledger = self._state.ledger
        if options.oldest_first:
            try:
                page = ledger.page_oldest_first(NAME, customer_id, after_seq=seq, limit=limit)
            except LookupError:
                return _envelope(400, "lastCreditEntry names no credit (was the sandbox reset?)")
        else:
            page = ledger.page(NAME, customer_id, before_seq=seq, limit=limit)
        credits = [listing_entry(entry, options.echo_notes) for entry in page.entries]
        next_cursor = encode_inveterate(page.entries[-1].seq) if page.has_more else None
        return _envelope(200, "Credits found", {"credits": credits, "lastCreditEntry": next_cursor})


def _limit(raw: str | None) -> int | None:
    """The page size asked for; documented as a number, so ``10`` and ``10.0`` both work."""
    if raw is None:
        return DEFAULT_LIMIT
    try:
        value = float(raw)
    except ValueError:
        return None
    if not value.is_integer() or value < 1:
        return None
    return int(value)
