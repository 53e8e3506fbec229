"""The producer side: hand a grant over once, whatever the caller retries.

``enqueue`` validates, then one atomic Redis step creates the job ``queued`` (or
recognises the same grant), and only a newly created job is published. If the
process dies between the two, the job sits ``queued`` unpublished; the
reconciler sweep publishes jobs queued for too long, so nothing is lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from celery import Celery

from worker.app import ISSUE_TASK, get_app
from worker.domain.batch import check_batch
from worker.domain.grant import CreditGrant
from worker.domain.job import Job
from worker.errors import IdempotencyConflict, InvalidGrant, NotReplicated
from worker.store.jobs import JobStore

GrantLike = CreditGrant | Mapping[str, Any]


@dataclass(frozen=True)
class EnqueueResult:
    """The job as stored, and whether this call created it (False: a duplicate, nothing sent)."""

    job: Job
    created: bool


@lru_cache(maxsize=1)
def default_store() -> JobStore:
    return JobStore.from_url()


def publish(grant: CreditGrant, *, app: Celery | None = None, producer: Any = None) -> None:
    """Send the issue message: the key and the grant's non-secret fields, readable in Flower."""
    (app or get_app()).send_task(ISSUE_TASK, kwargs=grant.to_message(), producer=producer)


def enqueue(
    grant: GrantLike,
    *,
    store: JobStore | None = None,
    app: Celery | None = None,
    batch: str | None = None,
) -> EnqueueResult:
    """Accept one grant. Raises ``InvalidGrant`` (nothing written) or ``IdempotencyConflict``.
    ``batch``: a name to follow it by, with others (``creditq batch status``)."""
    grant = CreditGrant.parse(grant)
    batch = check_batch(batch)
    store = store or default_store()
    outcome = store.create(grant, batch=batch)
    if outcome.created:
        publish(grant, app=app)
    if not outcome.held:  # published all the same: a worker POSTs only a held move
        raise NotReplicated([grant.idempotency_key], store.min_replicas)
    job = store.get(grant.idempotency_key)
    assert job is not None, "a job just created or found cannot be missing"
    return EnqueueResult(job, outcome.created)


def enqueue_many(
    grants: Iterable[GrantLike],
    *,
    store: JobStore | None = None,
    app: Celery | None = None,
    batch: str | None = None,
) -> list[EnqueueResult]:
    """Accept a batch: every grant is validated before anything is written. ``batch``
    names it, so that ``creditq batch status NAME`` follows it while it drains.

    The creates go to Redis in one pipeline and the messages through one broker
    connection. A key used twice in the batch with different payloads, or
    already taken by a different grant, raises ``IdempotencyConflict`` naming
    it; grants of the batch that were created are still published first.
    """
    batch = check_batch(batch)
    parsed: list[CreditGrant] = []
    for index, raw in enumerate(grants):
        try:
            parsed.append(CreditGrant.parse(raw))
        except InvalidGrant as exc:
            raise InvalidGrant(f"grants[{index}].{exc.field}".rstrip("."), exc.reason) from None
    seen: dict[str, str] = {}
    for grant in parsed:
        if seen.setdefault(grant.idempotency_key, grant.fingerprint()) != grant.fingerprint():
            raise IdempotencyConflict(grant.idempotency_key)

    store = store or default_store()
    app = app or get_app()
    existing = store.fingerprints(seen)
    for key, fingerprint in existing.items():
        if fingerprint is not None and fingerprint != seen[key]:
            raise IdempotencyConflict(key)

    outcomes = store.create_many(parsed, batch=batch)
    created = [g for g, o in zip(parsed, outcomes, strict=True) if o.created]
    if created:
        with app.producer_or_acquire() as producer:
            for grant in created:
                publish(grant, app=app, producer=producer)
    conflicts = [o.idempotency_key for o in outcomes if o.conflict]
    if conflicts:  # lost a race with another producer after the check above
        raise IdempotencyConflict(conflicts[0])
    if outcomes and not outcomes[0].held:
        raise NotReplicated([o.idempotency_key for o in outcomes], store.min_replicas)

    jobs = store.get_many([g.idempotency_key for g in parsed])
    return [
        EnqueueResult(job, o.created)
        for job, o in zip(jobs, outcomes, strict=True)
        if job is not None
    ]
