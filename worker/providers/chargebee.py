"""Speaks Chargebee's API v2 promotional credits (docs/wire.md): add, list, check the key.

Chargebee honours an idempotency key for 30 minutes, and only for the same parameters. So the
key is derived from the grant's key (same grant, same header, whichever worker sends it) and
the form body is built in a fixed field order (same grant, same bytes, on every retry).
After 30 minutes the key is forgotten: the listing, matched by ``reference`` = marker, is
the truth.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

import httpx
from pydantic import SecretStr

from worker.domain.grant import MARKER_PATTERN, CreditGrant, CreditType, Provider, minor_units
from worker.errors import ProviderError
from worker.providers.base import Cursor, LedgerEntry, ListingPage, SubmitResult
from worker.providers.http import BasicKeyAuth, HttpProviderClient
from worker.settings import Settings

IDEMPOTENCY_HEADER = "chargebee-idempotency-key"
REPLAYED_HEADER = "chargebee-idempotency-replayed"
BUSINESS_ENTITY_HEADER = "chargebee-business-entity-id"
IDEMPOTENCY_KEY_LENGTH = 40  # Chargebee allows at most 100 characters


def idempotency_header(idempotency_key: str) -> str:
    """40 hex digits of sha256("creditq:" + key): short, stable, and reveals nothing of the key."""
    digest = hashlib.sha256(("creditq:" + idempotency_key).encode()).hexdigest()
    return digest[:IDEMPOTENCY_KEY_LENGTH]


def to_minor_units(amount: Decimal, currency_code: str) -> int:
    """Amount in the currency's minor units: USD 10.50 -> 1050, JPY 500 -> 500, KWD 1.250 -> 1250.

    Raises ValueError for a fraction of a minor unit (models.check_amount already refuses it).
    """
    scaled = amount.scaleb(minor_units(currency_code))
    try:
        whole = scaled.to_integral_exact()
    except InvalidOperation:  # pragma: no cover - only with a trapping context
        whole = None
    if whole is None or whole != scaled:
        raise ValueError(f"{amount} has more decimals than {currency_code} allows")
    return int(whole)


def describe(grant: CreditGrant) -> str:
    """Chargebee requires a description: the note, else a line saying who wrote it."""
    return grant.note or "creditq grant"


def add_form(grant: CreditGrant, marker: str, *, amount_in_decimal: bool = False) -> bytes:
    """The form body in a fixed field order: a retry must be byte-identical, or Chargebee
    answers a reused idempotency key with a 409 instead of the recorded response."""
    if amount_in_decimal:
        amount_field = ("amount_in_decimal", format(grant.amount, "f"))
    else:
        amount_field = ("amount", str(to_minor_units(grant.amount, grant.currency_code)))
    fields = [
        ("customer_id", grant.customer_id),
        amount_field,
        ("currency_code", grant.currency_code),
        ("description", describe(grant)),
        ("credit_type", (grant.credit_type or CreditType.GENERAL).value),
        ("reference", marker),
    ]
    return urlencode(fields).encode("ascii")


def parse_promotional_credits(payload: Any) -> ListingPage:
    """``{"list": [{"promotional_credit": PC}, ...], "next_offset": "..."}`` to a page.

    The amount comes from ``amount_in_decimal`` when present, else from the minor-unit
    ``amount`` and ``currency_code``. A ``decrement`` entry is negative, so it can never be
    taken for a grant (creditq only adds). The marker is looked for in ``reference`` first,
    and only there (``own_reference``).
    """
    items = payload.get("list") if isinstance(payload, Mapping) else None
    entries: list[LedgerEntry] = []
    for item in items if isinstance(items, list) else []:
        credit = item.get("promotional_credit", item) if isinstance(item, Mapping) else None
        if isinstance(credit, Mapping) and (entry := _entry(credit)) is not None:
            entries.append(entry)
    cursor = payload.get("next_offset") if isinstance(payload, Mapping) else None
    return ListingPage(entries=entries, next_cursor=str(cursor) if cursor else None)


def _entry(pc: Mapping[str, Any]) -> LedgerEntry | None:
    amount = _amount(pc)
    if amount is None or pc.get("id") in (None, ""):
        return None
    if pc.get("type") == "decrement":
        amount = -abs(amount)
    texts = [str(pc[k]) for k in ("description", "reference") if pc.get(k) not in (None, "")]
    created = pc.get("created_at")
    return LedgerEntry(
        ref=str(pc["id"]),
        customer_id=str(pc["customer_id"]) if pc.get("customer_id") is not None else None,
        amount=amount,
        created_at=(
            datetime.fromtimestamp(int(created), UTC)
            if isinstance(created, int | Decimal) and not isinstance(created, bool)
            else None
        ),
        text=" | ".join(texts) or None,
        marker=own_reference(pc.get("reference")),
        # Chargebee always echoes the reference: an entry without creditq's is someone else's.
        foreign=own_reference(pc.get("reference")) is None,
    )


def own_reference(reference: Any) -> str | None:
    """The marker, when the reference is exactly creditq's (``add_form`` writes nothing else
    there); a marker quoted in a description or inside another reference does not count."""
    text = str(reference) if isinstance(reference, str) else ""
    return text if MARKER_PATTERN.fullmatch(text) else None


def _amount(pc: Mapping[str, Any]) -> Decimal | None:
    try:
        if isinstance(pc.get("amount_in_decimal"), str):
            return Decimal(pc["amount_in_decimal"])
        minor = pc.get("amount")
        if isinstance(minor, int) and not isinstance(minor, bool):
            places = minor_units(str(pc.get("currency_code") or "USD"))
            return Decimal(minor).scaleb(-places)
    except InvalidOperation:
        return None
    return None


class ChargebeeClient(HttpProviderClient):
    """``base_url`` is the site root (``https://{site}.chargebee.com``); paths add /api/v2."""

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        timeout: float,
        *,
        business_entity_id: str | None = None,
        amount_in_decimal: bool = False,
        limits: httpx.Limits | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            Provider.CHARGEBEE,
            base_url,
            BasicKeyAuth(api_key),
            api_key,
            timeout,
            limits=limits,
            transport=transport,
        )
        self.business_entity_id = business_entity_id
        self.amount_in_decimal = amount_in_decimal

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> ChargebeeClient:
        kwargs.setdefault("business_entity_id", settings.chargebee_business_entity_id)
        # Optional setting (multi-decimal sites send amount_in_decimal); absent means minor units.
        kwargs.setdefault("amount_in_decimal", settings.chargebee_amount_in_decimal)
        return cls(
            settings.effective_chargebee_base_url,
            settings.chargebee_key(),
            settings.http_timeout_seconds,
            **kwargs,
        )

    def _headers(self) -> dict[str, str]:
        if self.business_entity_id:
            return {BUSINESS_ENTITY_HEADER: self.business_entity_id}
        return {}

    def submit(self, grant: CreditGrant, marker: str) -> SubmitResult:
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            IDEMPOTENCY_HEADER: idempotency_header(grant.idempotency_key),
            **self._headers(),
        }
        response = self._request(
            "POST",
            "/api/v2/promotional_credits/add",
            content=add_form(grant, marker, amount_in_decimal=self.amount_in_decimal),
            headers=headers,
        )
        try:
            payload = self._json(response)
        except ProviderError:  # a 200 is an applied credit whatever its body says
            payload = {}
        credit = payload.get("promotional_credit") if isinstance(payload, Mapping) else None
        ref = credit.get("id") if isinstance(credit, Mapping) else None
        replayed = response.headers.get(REPLAYED_HEADER, "").strip().lower() == "true"
        summary = f"promotional_credit {ref}" if ref else f"HTTP {response.status_code}"
        return SubmitResult(
            status=response.status_code,
            provider_ref=str(ref) if ref else None,
            replayed=replayed,
            summary=summary + (" (replayed)" if replayed else ""),
        )

    def list_page(
        self, customer_id: str | None, cursor: Cursor, limit: int, *, since: datetime | None = None
    ) -> ListingPage:
        params: dict[str, str | int] = {}
        if customer_id is not None:
            params["customer_id[is]"] = customer_id
        if since is not None:
            # Page back by time, not by a page count: hundreds of newer credits of other
            # customers must not push a grant's own out of reach. One second earlier, as
            # Chargebee's created_at is whole seconds and the filter is strict.
            params["created_at[after]"] = int(since.timestamp()) - 1
        params["limit"] = limit
        if cursor is not None:
            params["offset"] = cursor
        response = self._request(
            "GET", "/api/v2/promotional_credits", params=params, headers=self._headers()
        )
        return parse_promotional_credits(self._json(response))

    def check(self) -> str:
        self.list_page(None, None, 1)
        return f"key accepted by {self.base_url} (promotional_credits listing readable)"
