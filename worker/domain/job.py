"""The job record as read from Redis, and its public JSON shape (the contract tools rely on)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from worker.domain.fields import JobField
from worker.domain.grant import CreditGrant, marker_for
from worker.domain.states import JobState


def iso(epoch: float | None) -> str | None:
    """Epoch seconds as ISO-8601 UTC with milliseconds; the form every JSON output uses."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Job:
    """One grant's job: the payload as accepted, and where it stands now."""

    idempotency_key: str
    state: JobState
    grant_fields: dict[str, Any]
    fingerprint: str
    attempts: int
    version: int
    created_at: float
    updated_at: float
    state_at: float
    provider_ref: str | None = None
    incarnation: str = ""
    batch: str | None = None
    last_error: dict[str, Any] | None = None
    extra: dict[str, str] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def provider(self) -> str:
        return str(self.grant_fields.get("provider", ""))

    @property
    def customer_id(self) -> str:
        return str(self.grant_fields.get("customer_id", ""))

    @property
    def priority(self) -> str:
        """The grant's lane; a job accepted before priorities existed is interactive."""
        return str(self.grant_fields.get("priority") or "interactive")

    def number(self, name: JobField | str) -> float | None:
        """A numeric extra field (e.g. ``submitted_at``), or None when absent."""
        value = self.extra.get(name)
        return float(value) if value else None

    @property
    def marker(self) -> str:
        """The tag this job's credit carries at the provider (see ``marker_for``)."""
        return marker_for(self.idempotency_key, self.incarnation)

    def grant(self) -> CreditGrant:
        """The stored payload, validated again: a record can be older than today's rules."""
        return CreditGrant.parse(self.grant_fields)

    @classmethod
    def from_redis(cls, fields: dict[str, str], history: list[str]) -> Job:
        last_error = fields.get(JobField.LAST_ERROR)
        grant_fields = json.loads(fields[JobField.GRANT])
        return cls(
            idempotency_key=str(grant_fields.get("idempotency_key", "")),
            state=JobState(fields[JobField.STATE]),
            grant_fields=grant_fields,
            fingerprint=fields[JobField.FINGERPRINT],
            attempts=int(fields.get(JobField.ATTEMPTS, 0)),
            version=int(fields.get(JobField.VERSION, 0)),
            created_at=float(fields[JobField.CREATED_AT]),
            updated_at=float(fields[JobField.UPDATED_AT]),
            state_at=float(fields.get(JobField.STATE_AT, fields[JobField.UPDATED_AT])),
            provider_ref=fields.get(JobField.PROVIDER_REF) or None,
            incarnation=fields.get(JobField.INCARNATION, ""),
            batch=fields.get(JobField.BATCH),
            last_error=json.loads(last_error) if last_error else None,
            extra={k: v for k, v in fields.items() if k not in _ATTRIBUTES},
            history=[json.loads(entry) for entry in history],
        )

    def to_json(self) -> dict[str, Any]:
        """The contract's job JSON: amount stays a decimal string, times are ISO-8601 UTC."""
        out: dict[str, Any] = {
            "idempotency_key": self.idempotency_key,
            "state": self.state.value,
            "provider": self.provider,
            "customer_id": self.customer_id,
            "amount": self.grant_fields.get("amount"),
            "currency_code": self.grant_fields.get("currency_code"),
            "note": self.grant_fields.get("note"),
            "force": self.grant_fields.get("force", False),
            "credit_type": self.grant_fields.get("credit_type"),
            "priority": self.priority,
            "batch": self.batch,
            "attempts": self.attempts,
            "provider_ref": self.provider_ref,
            "marker": self.marker,
            "last_error": self.last_error,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }
        for name, value in sorted(self.extra.items()):
            out[name] = _decode_extra(value)
        out["history"] = self.history
        return out


# The fields ``Job`` holds as attributes; every other field of the hash is in ``extra``.
_ATTRIBUTES = frozenset(
    {
        JobField.GRANT,
        JobField.FINGERPRINT,
        JobField.STATE,
        JobField.ATTEMPTS,
        JobField.VERSION,
        JobField.CREATED_AT,
        JobField.UPDATED_AT,
        JobField.STATE_AT,
        JobField.PROVIDER_REF,
        JobField.LAST_ERROR,
        JobField.PROVIDER,
        JobField.CUSTOMER_ID,
        JobField.INCARNATION,
        JobField.PRIORITY,
        JobField.BATCH,
    }
)


def _decode_extra(value: str) -> Any:
    """Extra fields are written as JSON by the pipeline; anything else is kept as text."""
    try:
        return json.loads(value)
    except ValueError:
        return value
