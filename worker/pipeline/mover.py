"""The mover: what the pipeline's parts share, and the only way any of them changes a job.

Issue (``issue.Issuer``), confirm (``confirm.Confirmer``) and reconcile
(``reconcile.Reconciler``) each hold one ``Mover``: it carries the pipeline's timings and
budgets, and does the plumbing every path uses (the one compare-and-set move with its log
line, taking a budget slot, putting work off to the broker, scheduling a sweep).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from worker.app.scheduler import Scheduler
from worker.budget import Turn
from worker.domain.backoff import retry_delay
from worker.domain.fields import JobField as F
from worker.domain.grant import Provider
from worker.domain.job import Job, iso
from worker.domain.states import DlqReason, JobState
from worker.errors import (
    InvalidGrant,
    MasterChanged,
    MissingCredentials,
    NoSlot,
    NotHeld,
    ProviderError,
)
from worker.pipeline.results import Result
from worker.settings import Settings
from worker.store.jobs import JobStore

# What a move sets on the job: ``None`` deletes a field, non-strings are stored as JSON.
Fields = Mapping[F, Any]

log = logging.getLogger("creditq.pipeline")

# Providers whose listing spans every customer, newest first (Chargebee's
# customer_id[is] filter is optional): one read confirms the whole provider's pending
# grants. Inveterate lists one member at a time.
PROVIDER_WIDE_LISTING = frozenset({Provider.CHARGEBEE})


def listing_scope(provider: str, customer_id: str) -> str | None:
    """Whose listing confirms this job: the customer's, or (None) the whole provider's."""
    return None if Provider(provider) in PROVIDER_WIDE_LISTING else customer_id


def scope_of(job: Job) -> str | None:
    """Whose listing confirms ``job`` (``listing_scope``)."""
    return listing_scope(job.provider, job.customer_id)


@dataclass(frozen=True)
class Policy:
    """The pipeline's timings and bounds, from ``Settings`` (documented there)."""

    max_attempts: int
    backoff_base: float
    backoff_max: float
    confirm_deadline: float
    first_poll: float
    batch: float
    poll_max: float
    settle: float
    lease: float
    grace: float

    @classmethod
    def from_settings(cls, s: Settings) -> Policy:
        return cls(
            max_attempts=s.max_attempts,
            backoff_base=s.backoff_base_seconds,
            backoff_max=s.backoff_max_seconds,
            confirm_deadline=s.confirm_deadline_seconds,
            first_poll=s.confirm_first_poll_seconds,
            batch=s.confirm_batch_seconds,
            poll_max=s.confirm_poll_max_seconds,
            settle=s.settle_seconds,
            lease=4 * s.http_timeout_seconds + 10,
            grace=s.reconcile_grace_seconds,
        )


class Budget(Protocol):
    """The fleet-wide request budget of one provider account (``worker.budget``)."""

    per_minute: int

    def take_turn(self, ticket: str, klass: int) -> Turn: ...

    def waiting(self, klass: int) -> int: ...

    def reserve(self, longest_wait: float) -> float | None: ...

    def pause_after_429(self, retry_after: float | None) -> float: ...

    def paused_for(self) -> float: ...

    def record_success(self) -> None: ...

    def record_confirmed(self, n: int = 1) -> None: ...

    def turn_request(self, ticket: str, klass: int) -> tuple[list[str], list[str | int]]: ...


# The longest a listing read under way waits for the slot of its next page: a few slots
# at the default budgets (0.6 s apart for Inveterate). The one wait a worker thread does,
# bounded, and only once a read has started.
PAGE_WAIT_SECONDS = 5.0


Failure = ProviderError | InvalidGrant | MissingCredentials


def error_record(err: Failure, now: float) -> dict[str, Any]:
    """What the job keeps of a failure: class, status and the provider's message, never a key."""
    if isinstance(err, ProviderError):
        return {
            "class": err.outcome.value,
            "status": err.status,
            "message": err.message,
            "code": err.code,
            "at": iso(now),
        }
    kind = "validation" if isinstance(err, InvalidGrant) else "configuration"
    return {"class": kind, "status": None, "message": str(err), "at": iso(now)}


def error_detail(err: ProviderError) -> dict[str, Any]:
    """What a history entry keeps of a failed call, for readers that must not parse the
    reason's words (the demo's report, an operator's tools): the outcome class the error
    table gave it and the HTTP status (None: no response at all)."""
    return {"outcome": err.outcome.value, "status": err.status}


class Mover:
    """The store, the broker and the budgets, as every part of the pipeline uses them."""

    def __init__(
        self,
        store: JobStore,
        scheduler: Scheduler,
        policy: Policy,
        budgets: Callable[[Provider], Budget | None] = lambda _: None,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.scheduler = scheduler
        self.policy = policy
        self.budgets = budgets
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()

    def listing_retry(self, provider: str, err: ProviderError) -> float:
        """A listing read failed: nothing about any job changed; when to read again."""
        wait = err.retry_after
        budget = self.budgets(Provider(provider))
        if err.status == 429 and budget is not None:
            wait = budget.pause_after_429(err.retry_after)
        delay = retry_delay(
            2,
            self.policy.backoff_base,
            self.policy.backoff_max,
            wait,
            self.policy.backoff_max,
            self.rng,
        )
        log.warning("listing read failed provider=%s: %s; again in %.1fs", provider, err, delay)
        return delay

    def answered(self, provider: Provider | str, status: int | None = 200) -> None:
        """A call to ``provider`` was answered: any answer but a 429 ends a 429 streak
        (``ProviderBudget.record_success``), so the next 429 pauses the fleet 60 s again,
        not the doubled pause of a streak long over."""
        budget = self.budgets(Provider(provider))
        if budget is not None and status is not None and status != 429:
            budget.record_success()

    def spend(self, provider: Provider, ticket: str, klass: int) -> None:
        """A slot of the provider's budget for one call, taken in turn (``ticket`` in class
        ``klass``, see ``worker.budget.turn_class``): waited for when it is reserved a
        moment ahead, else ``NoSlot`` says when to ask again."""
        budget = self.budgets(provider)
        if budget is None:
            return
        turn = budget.take_turn(ticket, klass)
        if not turn.granted:
            raise NoSlot(turn.wait)
        paused = self.wait_for_slot(provider, turn.wait)
        if paused > 0:
            raise NoSlot(paused)

    def wait_for_slot(self, provider: Provider, seconds: float) -> float:
        """Wait for a slot reserved ``seconds`` ahead; then how long the budget is paused
        (0: not, and nothing is asked when there was no wait). A 429 another worker met
        meanwhile set the pause after the slot was taken; a call sent anyway meets the limit
        the 429 announced (a credit before the pause's end in ``test_budget_fleet``'s burst
        of 429s)."""
        budget = self.budgets(provider)
        if seconds <= 0 or budget is None:
            return 0.0
        self.sleep(seconds)
        return budget.paused_for()

    def spend_next_page(self, provider: Provider) -> None:
        """A slot for a further page of a listing read under way: reserved and waited for
        (at most ``PAGE_WAIT_SECONDS``), so the pages read so far are not thrown away for
        want of a slot only a few hundred milliseconds off (see ``ProviderBudget.reserve``)."""
        budget = self.budgets(provider)
        if budget is None:
            return
        wait = budget.reserve(PAGE_WAIT_SECONDS)
        if wait is None:  # paused, or a queue of reservations: read again later
            raise NoSlot(PAGE_WAIT_SECONDS)
        if self.wait_for_slot(provider, wait) > 0:
            raise NoSlot(PAGE_WAIT_SECONDS)

    def sweep_token(self) -> str:
        """Names one scheduled confirmation sweep (``Confirmer.confirm``): it only has to
        differ from the other sweeps scheduled around the same time, so no system entropy
        is spent."""
        return f"{self.rng.getrandbits(48):012x}"

    def schedule_confirm(self, provider: str, delay: float, *, force: bool = False) -> None:
        """One scheduled sweep serves all the provider's pending jobs: the marker names it,
        and expires a grace after it was due, so a lost message cannot block the next one.
        A sweep wanted earlier than the scheduled one supersedes it; ``force`` schedules
        this sweep even if an earlier one is scheduled."""
        token = self.sweep_token()
        due_at = self.clock() + delay
        if self.store.schedule_sweep(
            provider, token, due_at, delay + self.policy.grace, force=force
        ):
            self.scheduler.confirm(provider, "", delay, token)

    def issue_later(self, job: Job, delay: float) -> None:
        self.store.set_due(job.idempotency_key, self.clock() + delay)
        self.scheduler.issue(dict(job.grant_fields), delay)

    def give_up(
        self,
        job: Job,
        reason: str,
        why: DlqReason,
        fields: Fields | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> Result:
        """Into the DLQ for ``why``: ``rejected`` or ``dead`` (``DlqReason.end_state``)."""
        end = why.end_state
        self.move(job, end, reason, dlq=why, fields=fields, detail=detail)
        return Result.REJECTED if end is JobState.REJECTED else Result.DEAD

    def move(
        self,
        job: Job,
        target: JobState,
        reason: str,
        *,
        attempts: str = "keep",
        fields: Fields | None = None,
        due: float | None = None,
        claim: str | None = None,
        dlq: DlqReason | None = None,
        flag: tuple[str, float, str] | None = None,
        hold: bool = False,
        detail: Mapping[str, Any] | None = None,
    ) -> tuple[Job, bool]:
        """One compare-and-set from the job exactly as it was read (its version), and its
        log line. Returns the job as it now stands and whether ``flag`` was set. ``hold``:
        the move precedes a POST; raises ``NotHeld`` (the move made) if it is not durable,
        and ``MasterChanged`` if the store turned it into a listing check (the job moved).
        ``detail`` goes into the history entry, structured, beside the reason's words."""
        moved = self.store.transition(
            job.idempotency_key,
            target,
            reason=reason,
            expect=[job.state],
            attempts=attempts,
            fields={str(name): value for name, value in (fields or {}).items()},
            due=due,
            claim=claim,
            dlq_reason=dlq,
            version=job.version,
            flag=flag,
            detail=detail,
            post=self.policy.lease if hold else None,
        )
        now_as = moved.job
        if now_as is None:  # the script always returns it; a store that did not is a bug
            raise RuntimeError(f"the move of job {job.idempotency_key!r} returned no job")
        log.info(
            "key=%s provider=%s %s -> %s attempt=%d: %s",
            job.idempotency_key,
            job.provider,
            job.state.value,
            target.value,
            now_as.attempts,
            reason,
        )
        if moved.checked:  # before the hold: a check must never be put off back to queued
            raise MasterChanged(now_as)
        if not moved.held:
            raise NotHeld(now_as)
        return now_as, moved.flagged

    def put_off(self, job: Job) -> Result:
        """A POST whose move was not held (or whose master the Sentinels did not vouch for,
        ``store.fence``): nothing was sent, so back to ``queued`` (the attempt given back),
        to try again after a backoff."""
        delay = retry_delay(
            1,
            self.policy.backoff_base,
            self.policy.backoff_max,
            None,
            self.policy.backoff_max,
            self.rng,
        )
        why = (
            "the store did not hold the move in time (disk or replicas), or no majority of "
            f"the Sentinels vouched for its master; retry in {delay:.1f}s"
        )
        self.hand_back(job, delay, why)
        return Result.NOT_DURABLE

    def hand_back(self, job: Job, delay: float, why: str) -> None:
        """A job moved into ``submitting`` whose POST was not sent: back to ``queued``, the
        attempt given back, to be issued again in ``delay`` seconds."""
        job, _ = self.move(
            job,
            JobState.QUEUED,
            f"not posted: {why}",
            attempts="decr",
            fields={F.IN_FLIGHT_UNTIL: None},
            due=self.clock() + delay,
        )
        self.scheduler.issue(dict(job.grant_fields), delay)
