"""``CreditGrant``: what a producer hands over, and every rule a grant must pass.

The rules are one pure function, ``check_grant``, so the producer and the worker
(a message can bypass the producer) apply exactly the same checks. Each failure
is an ``InvalidGrant`` whose one-line message names the field.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

# minor_units and parse_amount live in worker.domain.currencies and worker.domain.amounts; they are
# re-exported because providers and the sandbox import them from here.
from worker.domain.amounts import decimal_places
from worker.domain.amounts import parse_amount as parse_amount
from worker.domain.currencies import check_currency
from worker.domain.currencies import minor_units as minor_units
from worker.errors import InvalidGrant
from worker.settings import get_settings

IDEMPOTENCY_KEY_MAX = 200
CUSTOMER_ID_MAX = 100
# Chargebee customer ids are at most 50 characters.
CHARGEBEE_CUSTOMER_ID_MAX = 50
# Chargebee's description is at most 250 characters; the note leaves room for the
# marker that lets creditq recognise its own credit in the listing.
NOTE_MAX = 200

MARKER_PREFIX = "cq-"
# creditq's marker anywhere in a text: what a note may not contain, so that a note can never
# quote (or forge) another grant's marker.
MARKER_PATTERN = re.compile(re.escape(MARKER_PREFIX) + r"[0-9a-f]{16}")

_CURRENCY_SHAPE = re.compile(r"[A-Z]{3}")
_WHITESPACE = re.compile(r"\s")  # what str.isspace() calls whitespace
# What a customer id may hold: the characters RFC 3986 lets a path segment carry as they are
# (unreserved, sub-delims, ":" and "@"), less "%" (a server or proxy may decode "%2F" into
# a "/" of another path) and ";" (path parameters, which some servers strip).
CUSTOMER_ID_CHARACTERS = "-._~!$&'()*+,=:@"
_CUSTOMER_ID = re.compile(r"[A-Za-z0-9" + re.escape(CUSTOMER_ID_CHARACTERS) + r"]+")


class Provider(StrEnum):
    INVETERATE = "inveterate"
    CHARGEBEE = "chargebee"


class Priority(StrEnum):
    """Which lane a grant waits in when its provider's budget is short (DESIGN, "Priorities").

    Not part of the grant's identity: the same grant re-sent with another priority is a
    duplicate (the first one's priority stands), never a conflict: the money is the same.
    """

    INTERACTIVE = "interactive"  # a customer is waiting (a refund as credit): the next slots
    BULK = "bulk"  # a campaign, a backfill: every slot interactive grants leave


class CreditType(StrEnum):
    GENERAL = "general"
    REFERRAL_REWARDS = "referral_rewards"
    LOYALTY_CREDITS = "loyalty_credits"


FIELDS = (
    "idempotency_key",
    "provider",
    "customer_id",
    "amount",
    "note",
    "force",
    "currency_code",
    "credit_type",
    "priority",
)


def _text(raw: Mapping[str, Any], field: str, *, required: bool) -> str | None:
    value = raw.get(field)
    if value is None:
        if required:
            raise InvalidGrant(field, "is required")
        return None
    if not isinstance(value, str):
        raise InvalidGrant(field, f"must be a string, got {type(value).__name__}")
    return value


def _has_control(value: str) -> bool:
    return not value.isprintable()


def _has_space(value: str) -> bool:
    return _WHITESPACE.search(value) is not None


def check_idempotency_key(value: str | None) -> str:
    if not value:
        raise InvalidGrant("idempotency_key", "must not be empty")
    if len(value) > IDEMPOTENCY_KEY_MAX:
        raise InvalidGrant("idempotency_key", f"must be at most {IDEMPOTENCY_KEY_MAX} characters")
    if _has_control(value) or _has_space(value):
        raise InvalidGrant(
            "idempotency_key", "must be printable, without whitespace or control characters"
        )
    return value


def check_customer_id(value: str | None, provider: Provider) -> str:
    if not value:
        raise InvalidGrant("customer_id", "must not be empty")
    limit = CHARGEBEE_CUSTOMER_ID_MAX if provider is Provider.CHARGEBEE else CUSTOMER_ID_MAX
    if len(value) > limit:
        raise InvalidGrant("customer_id", f"must be at most {limit} characters for {provider}")
    if _has_control(value) or _has_space(value):
        raise InvalidGrant("customer_id", "must not contain whitespace or control characters")
    # The id goes into a URL path: a "/" or ".." would address another resource.
    if "/" in value or ".." in value:
        raise InvalidGrant("customer_id", "must not contain '/' or '..'")
    if value == ".":
        # A dot segment: the URL /members/./credits is normalised to /members/credits.
        raise InvalidGrant("customer_id", "must not be '.' (a URL would drop it)")
    if _CUSTOMER_ID.fullmatch(value) is None:
        # Anything else a URL, a proxy or the provider might decode or rewrite: "%", "\\",
        # "?", "#", ";", non-ASCII letters (Unicode normalisation), quotes and brackets.
        raise InvalidGrant(
            "customer_id",
            f"may hold only ASCII letters, digits and {CUSTOMER_ID_CHARACTERS} "
            "(it goes into a URL path)",
        )
    return value


def check_amount(amount: Decimal, currency_code: str, provider: Provider) -> Decimal:
    """The rules of money in this currency for this provider, on a ``parse_amount`` result
    (finite and bounded, so nothing below can round or trap)."""
    if amount.is_zero():
        raise InvalidGrant("amount", "must not be zero")
    places = minor_units(currency_code)
    if decimal_places(amount) > places:
        raise InvalidGrant(
            "amount", f"has more than {places} decimal places, the most {currency_code} allows"
        )
    ceiling = get_settings().max_amount
    if abs(amount) > ceiling:
        raise InvalidGrant("amount", f"must be within +/-{ceiling} (CREDITQ_MAX_AMOUNT)")
    if amount.as_tuple().exponent > 0:  # type: ignore[operator]
        # "1E+2" is a valid spelling of 100; store and send the plain form.
        amount = amount.quantize(Decimal(1))
    if amount < 0 and provider is Provider.CHARGEBEE:
        # promotional_credits/add only adds. A deduct can fail on the customer's
        # balance and is a different operation, so creditq refuses it outright.
        raise InvalidGrant("amount", "must be positive for chargebee: creditq only adds credit")
    return amount


def check_grant(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a raw grant; return its normalised fields or raise ``InvalidGrant``."""
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise InvalidGrant(unknown[0], "is not a field of a credit grant")
    key = check_idempotency_key(_text(raw, "idempotency_key", required=True))
    provider_name = _text(raw, "provider", required=True)
    try:
        provider = Provider(str(provider_name))
    except ValueError:
        choices = ", ".join(p.value for p in Provider)
        raise InvalidGrant("provider", f"must be one of {choices}, got {provider_name!r}") from None
    customer_id = check_customer_id(_text(raw, "customer_id", required=True), provider)

    currency = _text(raw, "currency_code", required=False)
    if currency is None:
        currency = get_settings().default_currency
    currency = currency.strip().upper()
    if not _CURRENCY_SHAPE.fullmatch(currency):
        raise InvalidGrant("currency_code", "must be three letters (ISO 4217), e.g. USD")
    check_currency(currency)
    try:
        amount = check_amount(parse_amount(raw.get("amount")), currency, provider)
    except ArithmeticError as exc:  # decimal's Overflow, InvalidOperation, DivisionByZero
        # parse_amount's bounds make these unreachable; should one slip through all the
        # same, a message that bypassed the producer must still end as a rejected job (the
        # worker records InvalidGrant), never as a traceback that leaves no record.
        raise InvalidGrant("amount", f"is out of range ({type(exc).__name__})") from None

    note = _text(raw, "note", required=False)
    if note is not None:
        if len(note) > NOTE_MAX:
            raise InvalidGrant("note", f"must be at most {NOTE_MAX} characters")
        if _has_control(note):
            raise InvalidGrant("note", "must not contain control characters")
        if MARKER_PATTERN.search(note):
            raise InvalidGrant("note", "must not contain a creditq marker (cq- and 16 hex digits)")

    force = raw.get("force", False)
    if force is None:
        force = False
    if not isinstance(force, bool):
        raise InvalidGrant("force", "must be true or false")
    if force and provider is not Provider.INVETERATE:
        raise InvalidGrant("force", "applies to inveterate only")

    credit_type_name = _text(raw, "credit_type", required=False)
    credit_type: CreditType | None = None
    if provider is Provider.CHARGEBEE:
        try:
            credit_type = CreditType(credit_type_name or CreditType.GENERAL)
        except ValueError:
            choices = ", ".join(c.value for c in CreditType)
            raise InvalidGrant("credit_type", f"must be one of {choices}") from None
    elif credit_type_name is not None:
        raise InvalidGrant("credit_type", "applies to chargebee only")

    priority_name = _text(raw, "priority", required=False)
    try:
        priority = Priority(priority_name or Priority.INTERACTIVE)
    except ValueError:
        choices = ", ".join(p.value for p in Priority)
        raise InvalidGrant("priority", f"must be one of {choices}") from None

    return {
        "idempotency_key": key,
        "provider": provider,
        "customer_id": customer_id,
        "amount": amount,
        "note": note,
        "force": force,
        "currency_code": currency,
        "credit_type": credit_type,
        "priority": priority,
    }


class CreditGrant(BaseModel):
    """One store-credit grant, identified by the producer's idempotency key.

    Construct it like any pydantic model; a fault raises ``InvalidGrant`` (one
    line, naming the field), not pydantic's multi-line ``ValidationError``.
    """

    model_config = ConfigDict(frozen=True)

    idempotency_key: str
    provider: Provider
    customer_id: str
    amount: Decimal
    note: str | None = None
    force: bool = False
    currency_code: str
    credit_type: CreditType | None = None
    priority: Priority = Priority.INTERACTIVE

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _one_line(exc) from None

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> CreditGrant:
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise _one_line(exc) from None

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | CreditGrant) -> CreditGrant:
        if isinstance(raw, CreditGrant):
            return raw
        if not isinstance(raw, Mapping):
            raise InvalidGrant("", f"a credit grant must be a mapping, got {type(raw).__name__}")
        return cls(**raw)

    @model_validator(mode="before")
    @classmethod
    def _checked(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise InvalidGrant("", "a credit grant must be a mapping")
        return check_grant(data)

    def to_message(self) -> dict[str, Any]:
        """The grant as JSON-safe fields (amount as an exact decimal string)."""
        return {
            "idempotency_key": self.idempotency_key,
            "provider": self.provider.value,
            "customer_id": self.customer_id,
            "amount": format(self.amount, "f"),
            "note": self.note,
            "force": self.force,
            "currency_code": self.currency_code,
            "credit_type": self.credit_type.value if self.credit_type else None,
            "priority": self.priority.value,
        }

    def fingerprint(self) -> str:
        """A digest of the payload: equal for the same grant, whatever the amount's spelling.

        ``10.0`` and ``10.00`` are the same money, so the amount is normalised first. The
        priority is left out: it says when to pay, not what (``Priority``), and grants
        accepted before priorities existed keep their fingerprint.
        """
        fields = self.to_message()
        fields["amount"] = format(self.amount.normalize(), "f")
        del fields["priority"]
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def marker_for(idempotency_key: str, incarnation: str = "") -> str:
    """``cq-`` and 16 hex digits of SHA-256 over the key and the job's incarnation: short,
    URL- and form-safe, and different for every life of the key.

    A key can live twice: re-sent after Redis lost its jobs, or reused after the retention
    TTL. A marker of the key alone would let the old life's credit confirm the new one (a
    grant never paid reported ``confirmed``), so each job carries a random ``incarnation``
    from its creation and its marker is of both. The empty incarnation is the form of jobs
    created before incarnations existed.
    """
    basis = idempotency_key if not incarnation else f"{idempotency_key}\x00{incarnation}"
    return MARKER_PREFIX + hashlib.sha256(basis.encode()).hexdigest()[:16]


def new_incarnation() -> str:
    """A fresh job's incarnation: 48 random bits, unguessable from the key."""
    return secrets.token_hex(6)


def _one_line(exc: ValidationError) -> InvalidGrant:
    error = exc.errors()[0]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, InvalidGrant):
        return cause
    field = ".".join(str(part) for part in error["loc"])
    return InvalidGrant(field, error["msg"])
