"""Speaks Inveterate's public API v2.0 (docs/wire.md): add credit, list credits, check the key.

Inveterate has no idempotency key, so exactly-once rests on two things here: the body is the
same bytes every time, and the note carries the grant's marker so the listing can show
whether an ambiguous POST landed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from worker.domain.grant import MARKER_PATTERN, CreditGrant, Provider
from worker.errors import ProviderError, one_line
from worker.providers.base import Cursor, LedgerEntry, ListingPage, SubmitResult
from worker.providers.http import HeaderKeyAuth, HttpProviderClient
from worker.settings import Settings

API_KEY_HEADER = "X-Inveterate-Api-Key"
# creditq's own note ends with its marker in brackets, and only that form counts: a marker
# quoted anywhere else in a note (a person copying one, another grant's note) is not a claim.
OWN_NOTE_TAIL = re.compile(r"\[(" + MARKER_PATTERN.pattern + r")\]\Z")
_ENTRY_LIST_KEYS = ("credits", "entries", "items", "results")


def credit_note(grant: CreditGrant, marker: str) -> str:
    """``"<note> [<marker>]"``, or ``"[<marker>]"``: the marker is how the listing names us."""
    tag = f"[{marker}]"
    return f"{grant.note} {tag}" if grant.note else tag


def credit_body(grant: CreditGrant, marker: str) -> bytes:
    """The POST body, written by hand so the Decimal goes out digit for digit (never a float).

    ``force`` is sent only when true: the seed documents it for negative amounts only.
    """
    note = json.dumps(credit_note(grant, marker))
    parts = [f'"amount": {format(grant.amount, "f")}', f'"note": {note}']
    if grant.force:
        parts.append('"force": true')
    return ("{" + ", ".join(parts) + "}").encode()


def own_marker(note: str | None) -> str | None:
    """The marker of a note creditq wrote (``credit_note``'s form), else None."""
    if not note:
        return None
    found = OWN_NOTE_TAIL.search(note.strip())
    return found.group(1) if found else None


def parse_credit_listing(payload: Any, customer_id: str) -> ListingPage:
    """Read one page of ``GET /admin/members/{id}/credits``, whatever its exact shape.

    The seed shows only the envelope ``{"message", "data": {}}``; v1 docs describe an entry as
    ``{amount, createdAt, newBalance, reason}``. docs/wire.md settles on
    ``data = {"credits": [ENTRY...], "lastCreditEntry": cursor|null}``, ENTRY carrying
    ``id, amount, createdAt, newBalance, reason`` and maybe ``note``. Because the real API
    may differ, this accepts:

    * ``data`` as a bare list of entries, or a dict holding them under ``credits``,
      ``entries``, ``items`` or ``results`` (a bare list payload is treated as ``data``);
    * the cursor ``lastCreditEntry`` in ``data`` or at the top level (non-string cursors are
      kept as their JSON text, so they round-trip);
    * an entry without ``id`` (or ``_id``): its ref is a hash of createdAt+amount+newBalance,
      stable across reads so a claim on it holds;
    * ``createdAt`` as ISO-8601 or epoch seconds/milliseconds; ``amount`` as number or string.

    The note is optional: ``text`` joins ``note`` and ``reason``. Only a note that ends with
    creditq's bracketed marker is creditq's (``own_marker``); a note without it makes the
    entry ``foreign`` (a person's, another system's); with no note echoed, only a grant the
    provider surely accepted may fall back to amount and time. Entries whose amount cannot be
    read are skipped (they cannot match a grant), never guessed.
    """
    data = payload.get("data", payload) if isinstance(payload, Mapping) else payload
    raw_entries: Any = data
    cursor: Any = None
    if isinstance(data, Mapping):
        raw_entries = next((data[k] for k in _ENTRY_LIST_KEYS if k in data), [])
        cursor = data.get("lastCreditEntry")
    if cursor is None and isinstance(payload, Mapping):
        cursor = payload.get("lastCreditEntry")
    entries = [
        entry
        for item in (raw_entries if isinstance(raw_entries, list) else [])
        if isinstance(item, Mapping) and (entry := _entry(item, customer_id)) is not None
    ]
    if cursor is not None and not isinstance(cursor, str):
        cursor = json.dumps(cursor, default=str, separators=(",", ":"))
    # An empty page with a cursor would page forever: no entries means no further progress.
    return ListingPage(entries=entries, next_cursor=(cursor or None) if entries else None)


def _entry(item: Mapping[str, Any], customer_id: str) -> LedgerEntry | None:
    amount = _decimal(item.get("amount"))
    if amount is None:
        return None
    texts = [str(item[k]) for k in ("note", "reason") if item.get(k) not in (None, "")]
    text = " | ".join(texts) or None
    note = item.get("note")
    note = str(note) if note not in (None, "") else None
    marker = own_marker(note)
    ref = item.get("id", item.get("_id"))
    if ref is None or ref == "":
        basis = f"{item.get('createdAt')}|{item.get('amount')}|{item.get('newBalance')}"
        ref = "syn-" + hashlib.sha256(basis.encode()).hexdigest()[:24]
    return LedgerEntry(
        ref=str(ref),
        customer_id=customer_id,
        amount=amount,
        created_at=_timestamp(item.get("createdAt")),
        text=text,
        marker=marker,
        # A note that is not creditq's says the credit is someone else's; an entry whose note
        # the listing does not echo says nothing either way.
        foreign=note is not None and marker is None,
    )


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        amount = Decimal(value) if isinstance(value, Decimal | int | str) else None
    except InvalidOperation:
        return None
    return amount if amount is not None and amount.is_finite() else None


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | Decimal):
        seconds = float(value)
        if seconds > 1e11:  # milliseconds since the epoch
            seconds /= 1000
        return datetime.fromtimestamp(seconds, UTC)
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip())  # 3.11 reads "Z"
        except ValueError:
            return None
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    return None


class InveterateClient(HttpProviderClient):
    """``base_url`` is the API root (``https://public.inveterateapi.com``); paths add /v2.0."""

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        timeout: float,
        *,
        limits: httpx.Limits | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            Provider.INVETERATE,
            base_url,
            HeaderKeyAuth(API_KEY_HEADER, api_key),
            api_key,
            timeout,
            limits=limits,
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> InveterateClient:
        return cls(
            settings.inveterate_base_url,
            settings.inveterate_key(),
            settings.http_timeout_seconds,
            **kwargs,
        )

    @staticmethod
    def credits_path(customer_id: str) -> str:
        # quote(safe=""): a "/" or "?" in an id must stay inside the path segment.
        return f"/v2.0/admin/members/{quote(customer_id, safe='')}/credits"

    def submit(self, grant: CreditGrant, marker: str) -> SubmitResult:
        response = self._request(
            "POST",
            self.credits_path(grant.customer_id),
            content=credit_body(grant, marker),
            headers={"Content-Type": "application/json"},
        )
        try:
            payload = self._json(response) if response.content else {}
        except ProviderError:  # a 201 is an acceptance whatever its body says
            payload = {}
        data = payload.get("data") if isinstance(payload, Mapping) else None
        ref = data.get("id") if isinstance(data, Mapping) else None
        message = payload.get("message") if isinstance(payload, Mapping) else None
        return SubmitResult(
            status=response.status_code,
            provider_ref=str(ref) if ref not in (None, "") else None,
            replayed=False,
            summary=one_line(str(message)) if message else f"HTTP {response.status_code}",
        )

    def list_page(
        self, customer_id: str | None, cursor: Cursor, limit: int, *, since: datetime | None = None
    ) -> ListingPage:
        # Inveterate documents no time filter: ``since`` is not sent.
        if not customer_id:
            raise ValueError("inveterate lists credits per customer: customer_id is required")
        params: dict[str, str | int] = {"limit": limit}
        if cursor is not None:
            params["lastCreditEntry"] = cursor  # exactly as received; httpx percent-encodes it
        response = self._request("GET", self.credits_path(customer_id), params=params)
        return parse_credit_listing(self._json(response), customer_id)

    def check(self) -> str:
        response = self._request("GET", "/v2.0/merchant")
        return f"key accepted by {self.base_url}/v2.0/merchant (HTTP {response.status_code})"
