"""Issue: POST a grant once, and settle every answer that does not say whether it applied.

Exactly one credit per key rests on three things here:
- every state change is the store's compare-and-set, so a late or duplicate delivery
  loses the race instead of acting twice;
- the move into ``submitting`` is the job's lease: it carries the version the worker read,
  so one delivery only wins it, and it marks the POST in flight (``in_flight_until``), so
  two deliveries of one job never POST at the same time;
- a job left ``submitting`` (an ambiguous answer, or a worker killed mid-POST) is never
  POSTed again before its fate is known: Chargebee answers a retry with the same
  idempotency key from its record (within its 30-minute window), and otherwise the
  listing is read once the provider's lag has had time to pass (``settle_seconds``).

Nothing here sleeps: every wait goes back to the broker as a countdown (``Scheduler``).
A POST that may have applied is settled by ``unknown.Resolver`` before any other is sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any

from worker.budget import post_ticket, turn_class
from worker.domain.backoff import retry_delay
from worker.domain.fields import JobField as F
from worker.domain.grant import CreditGrant, Provider, check_idempotency_key
from worker.domain.job import Job
from worker.domain.states import DlqReason, JobState
from worker.errors import (
    IdempotencyConflict,
    InvalidGrant,
    MasterChanged,
    MissingCredentials,
    NoSlot,
    NotHeld,
    Outcome,
    ProviderError,
    TransitionRefused,
)
from worker.pipeline.confirm import Confirmer
from worker.pipeline.lag import LearnedLag
from worker.pipeline.mover import Mover, error_detail, error_record
from worker.pipeline.results import Result
from worker.pipeline.unknown import Resolver
from worker.providers.base import ProviderClient
from worker.providers.errors import CONFIGURATION_CODE
from worker.store.jobs import PostStart, sweep_marker
from worker.store.keys import Keys

log = logging.getLogger("creditq.pipeline")


class Issuer:
    """The issue task's logic: one message in, the job moved on, the next step scheduled."""

    def __init__(
        self,
        mover: Mover,
        clients: Callable[[Provider], ProviderClient],
        confirmer: Confirmer,
        lag: LearnedLag,
    ) -> None:
        self.mover = mover
        self.store, self.policy, self.clock = mover.store, mover.policy, mover.clock
        self.clients = clients
        self.lag = lag
        self.resolver = Resolver(mover, confirmer, self._submit)

    def issue(self, message: Mapping[str, Any]) -> Result:
        """Handle one issue message; returns a word saying what happened (for logs and tests)."""
        key = message.get("idempotency_key")
        try:
            key = check_idempotency_key(key if isinstance(key, str) else None)
        except InvalidGrant as exc:
            log.warning("dropped an issue message without a usable key: %s", exc)
            return Result.DROPPED
        try:
            return self._issue(key, message)
        except TransitionRefused as exc:
            # Another delivery, or a sweep that saw the credit in the listing before this
            # worker recorded the POST's 2xx, moved the job first: a lost race, not a failure.
            log.info("lost a race: %s", exc)
            return Result.LOST_RACE

    def _issue(self, key: str, message: Mapping[str, Any]) -> Result:
        begun = self._begin_post(message)
        if begun is None:
            job = self.store.get(key, history=False)
        else:
            started, grant = begun
            if started.outcome == "started" and started.job is not None:
                paused = self.mover.wait_for_slot(grant.provider, started.wait)
                if paused > 0:
                    why = f"the provider's budget paused for {paused:.1f}s (a 429) meanwhile"
                    self.mover.hand_back(started.job, paused, why)
                    return Result.NO_SLOT
                return self._post(started.job, grant)
            if started.outcome == "unheld" and started.job is not None:
                return self.mover.put_off(started.job)
            if started.outcome == "checked" and started.job is not None:
                return self._check_first(started.job)
            if started.outcome == "wait" and started.job is not None:
                self.mover.issue_later(started.job, started.wait)
                return Result.NO_SLOT
            job = started.job
        if job is None:
            if not self._adopt(key, message):
                return Result.REJECTED
            job = self.store.get(key, history=False)
        if job is None or job.state.terminal:
            return Result.NOTHING
        return self._issue_job(job)

    def _begin_post(self, message: Mapping[str, Any]) -> tuple[PostStart, CreditGrant] | None:
        """The common case in one round trip: a queued job whose message carries exactly
        its grant is loaded, given a budget slot and moved into ``submitting`` together.
        None when the message is not a valid grant or its provider has no key: the full
        path loads the job and decides."""
        try:
            grant = CreditGrant.parse(message)
            self.clients(grant.provider)
        except (InvalidGrant, MissingCredentials):
            return None
        budget = self.mover.budgets(grant.provider)
        klass = turn_class(grant.priority, read=False)
        started = self.store.begin_post(
            grant,
            max_attempts=self.policy.max_attempts,
            now=self.clock(),
            lease=self.policy.lease,
            turn=budget.turn_request(post_ticket(grant.idempotency_key), klass) if budget else None,
        )
        if started.outcome == "started" and started.job is not None:
            job = started.job  # its slot may be a moment ahead: _issue waits for it
            log.info(
                "key=%s provider=%s queued -> submitting attempt=%d: POST attempt %d",
                job.idempotency_key,
                job.provider,
                job.attempts,
                job.attempts,
            )
        return started, grant

    def _adopt(self, key: str, message: Mapping[str, Any]) -> bool:
        """A message whose job is not in the store (it bypassed the producer): check it
        exactly as the producer would, then either record it rejected or create the job."""
        try:
            grant = CreditGrant.parse(message)
        except InvalidGrant as exc:
            self.store.create_rejected(key, message, error_record(exc, self.clock()))
            log.warning("rejected key=%s: invalid message: %s", key, exc)
            return False
        # If the producer won a race with a different payload, the store is the truth.
        with suppress(IdempotencyConflict):
            self.store.create(grant)
        return True

    def _issue_job(self, job: Job) -> Result:
        if job.state is JobState.SUBMITTED:
            self.mover.schedule_confirm(job.provider, 0.0)
            return Result.AWAITING
        try:
            grant = job.grant()  # the stored payload, checked against today's rules
        except InvalidGrant as exc:
            record = {F.LAST_ERROR: error_record(exc, self.clock())}
            if job.number(F.FIRST_POST_AT) is not None and job.state is JobState.SUBMITTING:
                # Stricter rules since its POST, whose outcome is not known: the credit may
                # exist, so "invalid" would be a false end; a person settles it.
                why = f"outcome unknown, and the stored grant fails today's rules: {exc}"
                return self.mover.give_up(job, why, DlqReason.UNKNOWN, fields=record)
            return self.mover.give_up(job, f"invalid: {exc}", DlqReason.INVALID, fields=record)
        if job.state is JobState.QUEUED and job.extra.get(F.RECONCILE_FIRST):
            # Replayed from the DLQ after a POST that may have applied (a credit that
            # showed up late, an outcome never learned): the listing speaks first.
            now = self.clock()  # the replay starts a fresh wait for the listing to tell
            job, _ = self.mover.move(
                job,
                JobState.SUBMITTING,
                "replayed: check the listing first",
                fields={F.RECONCILE_FIRST: None, F.UNKNOWN_SINCE: now},
                due=now,
            )
            if job.number(F.SUBMITTED_AT) is not None:
                return self._await_again(job)
        if job.state is JobState.QUEUED:
            return self._submit(job, grant)
        return self.resolver.resolve(job, grant)

    def _await_again(self, job: Job) -> Result:
        """A replayed job the provider once accepted (2xx): a second POST could pay twice,
        so it only goes back to waiting for the listing, with a fresh deadline."""
        now = self.clock()
        token = self.mover.sweep_token()
        _, flagged = self.mover.move(
            job,
            JobState.SUBMITTED,
            "replayed: accepted before, waiting for the listing again",
            fields={F.SUBMITTED_AT: now},
            due=now,
            flag=(Keys.confirming(job.provider), self.policy.grace, sweep_marker(token, now)),
        )
        if flagged:
            self.mover.scheduler.confirm(job.provider, "", 0.0, token)
        return Result.AWAITING

    def _submit(self, job: Job, grant: CreditGrant) -> Result:
        """POST once: from ``queued``, or from ``submitting`` known not to have applied.

        The move into ``submitting`` is the job's lease: it succeeds for one delivery only
        (the version check) and marks the POST in flight until ``in_flight_until``, before
        which no other delivery may decide anything about this job.
        """
        if job.attempts >= self.policy.max_attempts:
            return self.mover.give_up(
                job, f"attempts exhausted ({job.attempts})", DlqReason.EXHAUSTED
            )
        try:
            self.clients(grant.provider)
            klass = turn_class(grant.priority, read=False)
            self.mover.spend(grant.provider, post_ticket(job.idempotency_key), klass)
        except MissingCredentials as exc:
            return self.mover.give_up(
                job,
                str(exc),
                DlqReason.CONFIGURATION,
                fields={F.LAST_ERROR: error_record(exc, self.clock())},
            )
        except NoSlot as slot:
            self.mover.issue_later(job, slot.wait)
            return Result.NO_SLOT
        now = self.clock()
        attempt = job.attempts + 1
        try:
            job, _ = self.mover.move(
                job,
                JobState.SUBMITTING,
                f"POST attempt {attempt}",
                attempts="incr",
                fields={
                    F.FIRST_POST_AT: job.number(F.FIRST_POST_AT) or now,
                    F.LAST_POST_AT: now,
                    F.IN_FLIGHT_UNTIL: now + self.policy.lease,
                },
                due=now + self.policy.lease,
                hold=True,
            )
        except NotHeld as unheld:
            return self.mover.put_off(unheld.job)
        except MasterChanged as changed:
            return self._check_first(changed.job)
        return self._post(job, grant)

    def _check_first(self, job: Job) -> Result:
        """The store moved this job into an unknown outcome instead of starting its POST: its
        master was promoted since the job's last move, and the old master may have sent a
        POST whose record the promotion lost (``store/lua/era.lua``). Inveterate would pay
        that one twice, so the job waits out the lease of such a POST, then the listing
        decides (``unknown.Resolver``), as after any POST whose answer was lost."""
        log.warning(
            "key=%s provider=%s the job store's master was promoted since this job's last "
            "move: a POST may have left unrecorded; reading the listing before any POST",
            job.idempotency_key,
            job.provider,
        )
        until = job.number(F.IN_FLIGHT_UNTIL) or self.clock()
        self.mover.issue_later(job, max(0.0, until - self.clock()))
        return Result.MASTER_CHANGED

    def _post(self, job: Job, grant: CreditGrant) -> Result:
        """The POST of a job just moved into ``submitting`` (its lease), and what follows."""
        try:
            result = self.clients(grant.provider).submit(grant, job.marker)
        except ProviderError as err:
            self.mover.answered(grant.provider, err.status)
            return self._after_error(job, grant, err, job.attempts)
        self.mover.answered(grant.provider)
        now = self.clock()
        replayed = " (replayed by the provider)" if result.replayed else ""
        first_read = self.lag.delay(grant.provider)
        token = self.mover.sweep_token()
        _, flagged = self.mover.move(
            job,
            JobState.SUBMITTED,
            f"HTTP {result.status}{replayed}",
            detail={"status": result.status, "replayed": result.replayed},
            fields={
                F.PROVIDER_REF: result.provider_ref,
                F.SUBMITTED_AT: now,
                F.LAST_ERROR: None,
                F.IN_FLIGHT_UNTIL: None,
                F.OUTCOME_UNKNOWN: None,
            },
            due=now + first_read,
            flag=(
                Keys.confirming(job.provider),
                first_read + self.policy.batch + self.policy.grace,
                sweep_marker(token, now + first_read + self.policy.batch),
            ),
        )
        if flagged:  # no sweep of this provider is scheduled yet: schedule one
            self.mover.scheduler.confirm(job.provider, "", first_read + self.policy.batch, token)
        return Result.SUBMITTED

    def _after_error(
        self, job: Job, grant: CreditGrant, err: ProviderError, attempt: int
    ) -> Result:
        now = self.clock()
        record = error_record(err, now)
        done = {F.LAST_ERROR: record, F.IN_FLIGHT_UNTIL: None}
        said = error_detail(err)  # the history entry's detail: what the answer was
        unknown = bool(job.extra.get(F.OUTCOME_UNKNOWN))
        if err.outcome is Outcome.PERMANENT and unknown:
            # An earlier try may have applied (a 409 on a Chargebee retry after a change, a
            # 400 after a 500): the refusal of this one says nothing of that one, and only
            # the listing can. Until it does, the outcome stays unknown.
            job, _ = self.mover.move(
                job,
                JobState.SUBMITTING,
                f"refused, but an earlier try still unknown: {err}",
                fields={**done, F.LISTING_FIRST: "1"},
                detail=said,
                due=now + self.policy.settle,
            )
            self.mover.scheduler.issue(dict(job.grant_fields), self.policy.settle)
            return Result.OUTCOME_UNKNOWN
        if err.outcome is Outcome.PERMANENT and err.code == CONFIGURATION_CODE:
            # Our side cannot send it (a key no header may carry): dead until fixed, then
            # replayable; the grant itself was never refused.
            return self.mover.give_up(
                job, f"configuration: {err}", DlqReason.CONFIGURATION, fields=done, detail=said
            )
        if err.outcome is Outcome.PERMANENT:
            return self.mover.give_up(
                job, f"refused: {err}", DlqReason.REFUSED, fields=done, detail=said
            )
        if err.outcome is Outcome.NOT_APPLIED:
            rate_limited = err.status == 429
            wait = err.retry_after
            budget = self.mover.budgets(grant.provider)
            if rate_limited and budget is not None:
                wait = budget.pause_after_429(err.retry_after)  # the whole fleet holds off
            if not rate_limited and not unknown and attempt >= self.policy.max_attempts:
                return self.mover.give_up(
                    job,
                    f"attempts exhausted; last: {err}",
                    DlqReason.EXHAUSTED,
                    fields=done,
                    detail=said,
                )
            delay = retry_delay(
                attempt,
                self.policy.backoff_base,
                self.policy.backoff_max,
                wait,
                self.policy.backoff_max,
                self.mover.rng,
            )
            # This try surely did not apply, but if an earlier one may have, the job stays
            # "outcome unknown" (queued would claim nothing applied) and is resolved first.
            target = JobState.SUBMITTING if unknown else JobState.QUEUED
            why = "an earlier try still unknown" if unknown else f"retry in {delay:.1f}s"
            # A 429 is the budget's doing, not the grant's: it does not use up an attempt.
            job, _ = self.mover.move(
                job,
                target,
                f"not applied, {why}: {err}",
                attempts="decr" if rate_limited else "keep",
                fields=done,
                due=now + delay,
                detail=said,
            )
            self.mover.scheduler.issue(dict(job.grant_fields), delay)
            return Result.OUTCOME_UNKNOWN if unknown else Result.RETRY
        wait = self._unknown_wait(grant, attempt)
        job, _ = self.mover.move(
            job,
            JobState.SUBMITTING,
            f"outcome unknown, reconcile in {wait:.1f}s: {err}",
            fields={
                **done,
                F.OUTCOME_UNKNOWN: "1",
                F.UNKNOWN_AT: now,
                F.UNKNOWN_SINCE: job.number(F.UNKNOWN_SINCE) or now,
            },
            due=now + wait,
            detail=said,
        )
        self.mover.scheduler.issue(dict(job.grant_fields), wait)
        return Result.OUTCOME_UNKNOWN

    def _unknown_wait(self, grant: CreditGrant, attempt: int) -> float:
        if grant.provider is Provider.CHARGEBEE:  # a same-key retry is answered from the record
            return retry_delay(
                attempt,
                self.policy.backoff_base,
                self.policy.backoff_max,
                None,
                self.policy.backoff_max,
                self.mover.rng,
            )
        return self.policy.settle
