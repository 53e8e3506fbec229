"""The fake Chargebee API v2 promotional credits (docs/wire.md, "Chargebee").

Routes: ``POST /api/v2/promotional_credits/add`` (form-encoded, Basic auth with
the key as user name) and ``GET /api/v2/promotional_credits``. Errors use
Chargebee's JSON error object. ``chargebee-idempotency-key`` is honoured as
documented: a replay within the record's lifetime gets the recorded answer. The
listing takes Chargebee's filters ``customer_id[is]``, ``created_at[after]`` and
``created_at[before]`` (epoch seconds, strict bounds), with ``limit`` and ``offset``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs

from worker.domain.grant import CreditType, Provider, minor_units
from worker.sandbox.cursors import BadCursor, decode_chargebee, encode_chargebee
from worker.sandbox.idempotency import Verdict
from worker.sandbox.ledger import LedgerEntry
from worker.sandbox.money import from_minor, to_minor
from worker.sandbox.options import SandboxOptions
from worker.sandbox.state import SandboxState
from worker.sandbox.wire import ApiRequest, Reply

NAME = Provider.CHARGEBEE.value
IDEMPOTENCY_HEADER = "chargebee-idempotency-key"
REPLAYED_HEADER = "chargebee-idempotency-replayed"
IDEMPOTENCY_KEY_MAX = 100
DEFAULT_CURRENCY = "USD"
DEFAULT_LIMIT, MAX_LIMIT = 10, 100  # Chargebee's documented list defaults
DESCRIPTION_MAX = 250
_ADD = "/api/v2/promotional_credits/add"
_LIST = "/api/v2/promotional_credits"
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_UNITS = re.compile(r"^[0-9]+$")
_CREDIT_TYPES = tuple(credit_type.value for credit_type in CreditType)
_CREATED_AFTER, _CREATED_BEFORE = "created_at[after]", "created_at[before]"
_EPOCH = re.compile(r"^-?[0-9]+$")


def error(status: int, api_error_code: str, message: str, *, param: str | None = None) -> Reply:
    """Chargebee's error object; ``type`` and ``param`` only where Chargebee sends them."""
    body: dict[str, Any] = {
        "message": message,
        "api_error_code": api_error_code,
        "error_code": api_error_code,
        "error_msg": message,
        "http_status_code": status,
    }
    if api_error_code in ("invalid_request", "resource_not_found"):
        body["type"] = "invalid_request"
    if param is not None:
        body["param"] = param
    return Reply.json(status, body)


def _invalid(param: str, message: str) -> Reply:
    return error(400, "invalid_request", message, param=param)


def promotional_credit(entry: LedgerEntry) -> dict[str, Any]:
    """The ``promotional_credit`` resource for a ledger entry."""
    shown: dict[str, Any] = {
        "id": entry.id,
        "customer_id": entry.customer_id,
        "type": "increment" if entry.amount > 0 else "decrement",
        "amount": to_minor(abs(entry.amount), entry.currency),
        "amount_in_decimal": str(abs(entry.amount)),
        "currency_code": entry.currency,
        "description": entry.description,
        "credit_type": entry.credit_type,
        "closing_balance": to_minor(entry.balance, entry.currency),
        "created_at": int(entry.created_at),
        "object": "promotional_credit",
    }
    if entry.reference is not None:
        shown["reference"] = entry.reference
    return shown


class ChargebeeApi:
    name = NAME

    def __init__(self, state: SandboxState) -> None:
        self._state = state

    def operation(self, request: ApiRequest) -> str | None:
        path = request.path.rstrip("/")
        if path == _ADD and request.method == "POST":
            return "submit"
        if path == _LIST and request.method == "GET":
            return "list"
        return None

    def customer(self, operation: str, request: ApiRequest) -> str | None:
        if operation == "list":
            return request.param("customer_id[is]")
        return _form(request).get("customer_id") or None

    def authorized(self, request: ApiRequest, options: SandboxOptions) -> bool:
        header = request.header("Authorization") or ""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user = base64.b64decode(encoded, validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return False
        return user == options.chargebee_key

    def unauthorized(self) -> Reply:
        return error(
            401, "api_authentication_failed", "Sorry, authentication failed. Invalid api key"
        )

    def not_found(self, request: ApiRequest) -> Reply:
        return error(404, "resource_not_found", f"No route for {request.method} {request.path}")

    def failure(self, status: int) -> Reply:
        if status == 503:
            return error(503, "internal_temporary_error", "Service temporarily unavailable")
        return error(status, "internal_error", "Sorry, something went wrong (sandbox fault)")

    def rate_limited(self, retry_after: float) -> Reply:
        reply = error(
            429,
            "api_request_limit_exceeded",
            "Sorry, access has been blocked temporarily due to request count exceeding "
            "acceptable limits. Please try after some time.",
        )
        return reply.with_header("Retry-After", str(max(1, math.ceil(retry_after))))

    def handle(self, operation: str, request: ApiRequest, lag: float) -> Reply:
        if operation == "submit":
            return self._submit(request, lag)
        return self._list(request)

    def _submit(self, request: ApiRequest, lag: float) -> Reply:
        key = request.header(IDEMPOTENCY_HEADER)
        if key is None:
            reply, _ = self._add(request, lag)
            return reply
        if not key or len(key) > IDEMPOTENCY_KEY_MAX:
            return _invalid(IDEMPOTENCY_HEADER, f"must be 1 to {IDEMPOTENCY_KEY_MAX} characters")
        # "Same parameters" means the same operation and the same body bytes.
        fingerprint = hashlib.sha256(
            request.method.encode() + b" " + request.path.encode() + b"\n" + request.body
        ).hexdigest()
        outcome = self._state.idempotency.run_once(
            key, fingerprint, self._state.options.idempotency_ttl, lambda: self._add(request, lag)
        )
        if outcome.verdict is Verdict.CONFLICT:
            self._state.stats.bump(NAME, "conflicts")
            return error(
                409,
                "invalid_request",
                "The idempotency key was already used with different request parameters",
                param=IDEMPOTENCY_HEADER,
            )
        assert outcome.reply is not None
        if outcome.verdict is Verdict.REPLAYED:
            self._state.stats.bump(NAME, "replays")
            return outcome.reply.with_header(REPLAYED_HEADER, "true")
        return outcome.reply

    def _add(self, request: ApiRequest, lag: float) -> tuple[Reply, bool]:
        """Validate and apply; the flag says whether a credit was written."""
        try:
            fields = _fields(request)
        except UnicodeDecodeError:
            return _invalid("body", "The body must be UTF-8 form data"), False
        checked = _check_add(fields)
        if isinstance(checked, Reply):
            return checked, False
        customer_id, amount, currency = checked
        marked = self._state.marks.status(NAME, customer_id)
        if marked == 404:
            return error(404, "resource_not_found", f"Customer {customer_id} not found"), False
        if marked == 400:
            return _invalid("customer_id", f"Customer {customer_id} cannot take credits"), False
        entry = self._state.ledger.apply(
            NAME,
            customer_id,
            amount,
            currency=currency,
            lag=lag,
            description=fields["description"],
            reference=fields.get("reference") or None,
            credit_type=fields.get("credit_type") or CreditType.GENERAL.value,
        )
        self._state.stats.bump(NAME, "applied")
        customer = {
            "id": customer_id,
            "object": "customer",
            "preferred_currency_code": currency,
            "promotional_credits": to_minor(entry.balance, currency),
        }
        return Reply.json(
            200, {"customer": customer, "promotional_credit": promotional_credit(entry)}
        ), True

    def _list(self, request: ApiRequest) -> Reply:
        options = self._state.options
        raw_limit = request.param("limit")
        limit = DEFAULT_LIMIT
        if raw_limit is not None:
            if not _UNITS.match(raw_limit) or not 1 <= int(raw_limit) <= MAX_LIMIT:
                return _invalid("limit", f"limit must be between 1 and {MAX_LIMIT}")
            limit = int(raw_limit)
        if options.page_size is not None:
            limit = min(limit, options.page_size)
        before: int | None = None
        offset = request.param("offset")
        if offset is not None:
            try:
                before = decode_chargebee(offset)
            except BadCursor as exc:
                return _invalid("offset", str(exc))
        window = _created_window(request)
        if isinstance(window, Reply):
            return window
        customer_id = request.param("customer_id[is]")
        page = self._state.ledger.page(
            NAME, customer_id, before_seq=before, limit=limit, where=window
        )
        body: dict[str, Any] = {
            "list": [{"promotional_credit": promotional_credit(e)} for e in page.entries]
        }
        if page.has_more:
            last = page.entries[-1]
            body["next_offset"] = encode_chargebee(last.seq, last.created_at)
        return Reply.json(200, body)


def _fields(request: ApiRequest) -> dict[str, str]:
    """The add call's form fields, first value of each (raises UnicodeDecodeError)."""
    form = parse_qs(request.body.decode(), keep_blank_values=True, strict_parsing=False)
    return {name: values[0] for name, values in form.items()}


def _form(request: ApiRequest) -> dict[str, str]:
    """The form fields, or none when the body is not UTF-8 (``_add`` answers that 400)."""
    try:
        return _fields(request)
    except UnicodeDecodeError:
        return {}


def _created_window(request: ApiRequest) -> Reply | Callable[[LedgerEntry], bool] | None:
    """``created_at[after]`` / ``created_at[before]`` as a filter on the entry's integer
    ``created_at`` (strict on both ends, as Chargebee's filters are), or a 400 naming the
    parameter that is not a whole number of epoch seconds; None when neither is given."""
    bounds: dict[str, int] = {}
    for param in (_CREATED_AFTER, _CREATED_BEFORE):
        raw = request.param(param)
        if raw is None:
            continue
        if not _EPOCH.match(raw):
            return _invalid(param, f"{param} : must be a timestamp in epoch seconds")
        bounds[param] = int(raw)
    if not bounds:
        return None
    after, before = bounds.get(_CREATED_AFTER), bounds.get(_CREATED_BEFORE)

    def inside(entry: LedgerEntry) -> bool:
        created = int(entry.created_at)
        return (after is None or created > after) and (before is None or created < before)

    return inside


def _check_add(fields: dict[str, str]) -> Reply | tuple[str, Decimal, str]:
    """The add call's rules; returns (customer_id, amount, currency) or a 400."""
    customer_id = fields.get("customer_id", "")
    if not customer_id:
        return _invalid("customer_id", "customer_id : cannot be blank")
    description = fields.get("description", "")
    if not description:
        return _invalid("description", "description : cannot be blank")
    if len(description) > DESCRIPTION_MAX:
        return _invalid("description", f"description : cannot exceed {DESCRIPTION_MAX} chars")
    currency = fields.get("currency_code") or DEFAULT_CURRENCY
    if not _CURRENCY.match(currency):
        return _invalid("currency_code", "currency_code : invalid value")
    credit_type = fields.get("credit_type") or CreditType.GENERAL.value
    if credit_type not in _CREDIT_TYPES:
        return _invalid("credit_type", f"credit_type : must be one of {', '.join(_CREDIT_TYPES)}")
    units, decimal_text = fields.get("amount"), fields.get("amount_in_decimal")
    if (units is None) == (decimal_text is None):
        return _invalid("amount", "exactly one of amount and amount_in_decimal is required")
    if units is not None:
        if not _UNITS.match(units) or int(units) <= 0:
            return _invalid("amount", "amount : must be a positive integer (minor units)")
        return customer_id, from_minor(int(units), currency), currency
    assert decimal_text is not None
    try:
        amount = Decimal(decimal_text)
    except InvalidOperation:
        amount = Decimal("NaN")
    # "10.500" is the same money as "10.50": judge the precision of the normalised value.
    exponent = amount.normalize().as_tuple().exponent if amount.is_finite() else 0
    if not amount.is_finite() or amount <= 0 or not isinstance(exponent, int):
        return _invalid("amount_in_decimal", "amount_in_decimal : must be a positive decimal")
    if -exponent > minor_units(currency):
        return _invalid(
            "amount_in_decimal", f"amount_in_decimal : too many decimals for {currency}"
        )
    return customer_id, amount, currency
