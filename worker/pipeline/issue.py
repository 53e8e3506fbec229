"""The worker's logic: issue a grant once, confirm it in the listing, re-drive lost work.

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
The Celery tasks in ``tasks/`` only call these methods.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

from worker.domain.backoff import retry_delay
from worker.domain.grant import CreditGrant, Provider, check_idempotency_key
from worker.domain.job import Job, iso
from worker.domain.states import DlqReason, JobState
from worker.errors import IdempotencyConflict, InvalidGrant, MissingCredentials, TransitionRefused
from worker.pipeline.confirm import Confirmation, Verdict
from worker.pipeline.mover import NoSlot, NotHeld, Policy, error_record
from worker.pipeline.outcome import absence_proves, poll_delay
from worker.providers.base import Outcome, ProviderError
from worker.providers.errors import CONFIGURATION_CODE
from worker.store.jobs import PostStart, sweep_marker
from worker.store.keys import Keys

__all__ = ["Pipeline", "Policy"]

log = logging.getLogger("creditq.pipeline")

# Chargebee keeps an idempotency key's answer for 30 minutes; stay well inside it.
CHARGEBEE_REPLAY_WINDOW_SECONDS = 25 * 60


class Pipeline(Confirmation):
    """Issue (``issue``), confirm (``confirm``, from ``Confirmation``) and reconcile."""

    # -- issue ----------------------------------------------------------------------

    def issue(self, message: Mapping[str, Any]) -> str:
        """Handle one issue message; returns a word saying what happened (for logs and tests)."""
        key = message.get("idempotency_key")
        try:
            key = check_idempotency_key(key if isinstance(key, str) else None)
        except InvalidGrant as exc:
            log.warning("dropped an issue message without a usable key: %s", exc)
            return "dropped"
        try:
            return self._issue(key, message)
        except TransitionRefused as exc:
            # Another delivery, or a sweep that saw the credit in the listing before this
            # worker recorded the POST's 2xx, moved the job first: a lost race, not a failure.
            log.info("lost a race: %s", exc)
            return "lost race"

    def _issue(self, key: str, message: Mapping[str, Any]) -> str:
        begun = self._begin_post(message)
        if begun is None:
            job = self.store.get(key, history=False)
        else:
            started, grant = begun
            if started.outcome == "started" and started.job is not None:
                return self._post(started.job, grant)
            if started.outcome == "unheld" and started.job is not None:
                return self._put_off(started.job)
            if started.outcome == "wait" and started.job is not None:
                self._issue_later(started.job, started.wait)
                return "waiting for a request slot"
            job = started.job
        if job is None:
            if not self._adopt(key, message):
                return "rejected"
            job = self.store.get(key, history=False)
        if job is None or job.state.terminal:
            return "nothing to do"
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
        budget = self.budgets(grant.provider)
        started = self.store.begin_post(
            grant, max_attempts=self.policy.max_attempts, now=self.clock(),
            lease=self.policy.lease, slot=budget.slot_request() if budget else None,
        )  # fmt: skip
        if started.outcome == "started" and started.job is not None:
            job = started.job
            log.info("key=%s provider=%s queued -> submitting attempt=%d: POST attempt %d",
                     job.idempotency_key, job.provider, job.attempts, job.attempts)  # fmt: skip
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

    def _issue_job(self, job: Job) -> str:
        if job.state is JobState.SUBMITTED:
            self._schedule_confirm(job.provider, 0.0)
            return "awaiting confirmation"
        try:
            grant = job.grant()  # the stored payload, checked against today's rules
        except InvalidGrant as exc:
            record = {"last_error": error_record(exc, self.clock())}
            if job.number("first_post_at") is not None and job.state is JobState.SUBMITTING:
                # Stricter rules since its POST, whose outcome is not known: the credit may
                # exist, so "invalid" would be a false end; a person settles it.
                why = f"outcome unknown, and the stored grant fails today's rules: {exc}"
                self._move(job, JobState.DEAD, why, dlq=DlqReason.UNKNOWN, fields=record)
                return "dead"
            self._move(job, JobState.REJECTED, f"invalid: {exc}", dlq=DlqReason.INVALID,
                       fields=record)  # fmt: skip
            return "rejected"
        if job.state is JobState.QUEUED and job.extra.get("reconcile_first"):
            # Replayed from the DLQ after a POST that may have applied (a credit that
            # showed up late, an outcome never learned): the listing speaks first.
            now = self.clock()  # the replay starts a fresh wait for the listing to tell
            job, _ = self._move(job, JobState.SUBMITTING, "replayed: check the listing first",
                                fields={"reconcile_first": None, "unknown_since": now},
                                due=now)  # fmt: skip
            if job.number("submitted_at") is not None:
                return self._await_again(job)
        if job.state is JobState.QUEUED:
            return self._submit(job, grant)
        return self._resolve_unknown(job, grant)

    def _await_again(self, job: Job) -> str:
        """A replayed job the provider once accepted (2xx): a second POST could pay twice,
        so it only goes back to waiting for the listing, with a fresh deadline."""
        now = self.clock()
        token = self._sweep_token()
        _, flagged = self._move(
            job, JobState.SUBMITTED, "replayed: accepted before, waiting for the listing again",
            fields={"submitted_at": now}, due=now,
            flag=(Keys.confirming(job.provider), self.policy.grace, sweep_marker(token, now)),
        )  # fmt: skip
        if flagged:
            self.scheduler.confirm(job.provider, "", 0.0, token)
        return "awaiting confirmation"

    def _submit(self, job: Job, grant: CreditGrant) -> str:
        """POST once: from ``queued``, or from ``submitting`` known not to have applied.

        The move into ``submitting`` is the job's lease: it succeeds for one delivery only
        (the version check) and marks the POST in flight until ``in_flight_until``, before
        which no other delivery may decide anything about this job.
        """
        if job.attempts >= self.policy.max_attempts:
            return self._give_up(job, f"attempts exhausted ({job.attempts})", DlqReason.EXHAUSTED)
        try:
            self.clients(grant.provider)
            self._spend(grant.provider)
        except MissingCredentials as exc:
            self._move(job, JobState.DEAD, str(exc), dlq=DlqReason.CONFIGURATION,
                       fields={"last_error": error_record(exc, self.clock())})  # fmt: skip
            return "dead"
        except NoSlot as slot:
            self._issue_later(job, slot.wait)
            return "waiting for a request slot"
        now = self.clock()
        attempt = job.attempts + 1
        try:
            job, _ = self._move(job, JobState.SUBMITTING, f"POST attempt {attempt}",
                                attempts="incr",
                                fields={"first_post_at": job.number("first_post_at") or now,
                                        "last_post_at": now,
                                        "in_flight_until": now + self.policy.lease},
                                due=now + self.policy.lease, hold=True)  # fmt: skip
        except NotHeld as unheld:
            return self._put_off(unheld.job)
        return self._post(job, grant)

    def _post(self, job: Job, grant: CreditGrant) -> str:
        """The POST of a job just moved into ``submitting`` (its lease), and what follows."""
        try:
            result = self.clients(grant.provider).submit(grant, job.marker)
        except ProviderError as err:
            return self._after_error(job, grant, err, job.attempts)
        now = self.clock()
        replayed = " (replayed by the provider)" if result.replayed else ""
        first_read = self.lag.delay(grant.provider)
        token = self._sweep_token()
        _, flagged = self._move(
            job, JobState.SUBMITTED, f"HTTP {result.status}{replayed}",
            fields={"provider_ref": result.provider_ref, "submitted_at": now,
                    "last_error": None, "in_flight_until": None, "outcome_unknown": None},
            due=now + first_read,
            flag=(Keys.confirming(job.provider), first_read + self.policy.batch + self.policy.grace,
                  sweep_marker(token, now + first_read + self.policy.batch)),
        )  # fmt: skip
        if flagged:  # no sweep of this provider is scheduled yet: schedule one
            self.scheduler.confirm(job.provider, "", first_read + self.policy.batch, token)
        return "submitted"

    def _after_error(self, job: Job, grant: CreditGrant, err: ProviderError, attempt: int) -> str:
        now = self.clock()
        record = error_record(err, now)
        done = {"last_error": record, "in_flight_until": None}
        unknown = bool(job.extra.get("outcome_unknown"))
        if err.outcome is Outcome.PERMANENT and unknown:
            # An earlier try may have applied (a 409 on a Chargebee retry after a change, a
            # 400 after a 500): the refusal of this one says nothing of that one, and only
            # the listing can. Until it does, the outcome stays unknown.
            job, _ = self._move(job, JobState.SUBMITTING,
                                f"refused, but an earlier try still unknown: {err}",
                                fields={**done, "listing_first": "1"},
                                due=now + self.policy.settle)  # fmt: skip
            self.scheduler.issue(dict(job.grant_fields), self.policy.settle)
            return "outcome unknown"
        if err.outcome is Outcome.PERMANENT and err.code == CONFIGURATION_CODE:
            # Our side cannot send it (a key no header may carry): dead until fixed, then
            # replayable; the grant itself was never refused.
            self._move(job, JobState.DEAD, f"configuration: {err}", dlq=DlqReason.CONFIGURATION,
                       fields=done)  # fmt: skip
            return "dead"
        if err.outcome is Outcome.PERMANENT:
            self._move(job, JobState.REJECTED, f"refused: {err}", dlq=DlqReason.REFUSED,
                       fields=done)  # fmt: skip
            return "rejected"
        if err.outcome is Outcome.NOT_APPLIED:
            rate_limited = err.status == 429
            wait = err.retry_after
            budget = self.budgets(grant.provider)
            if rate_limited and budget is not None:
                wait = budget.pause_after_429(err.retry_after)  # the whole fleet holds off
            if not rate_limited and not unknown and attempt >= self.policy.max_attempts:
                self._move(job, JobState.DEAD, f"attempts exhausted; last: {err}",
                           dlq=DlqReason.EXHAUSTED, fields=done)  # fmt: skip
                return "dead"
            delay = retry_delay(attempt, self.policy.backoff_base, self.policy.backoff_max,
                                wait, self.policy.backoff_max, self.rng)  # fmt: skip
            # This try surely did not apply, but if an earlier one may have, the job stays
            # "outcome unknown" (queued would claim nothing applied) and is resolved first.
            target = JobState.SUBMITTING if unknown else JobState.QUEUED
            why = "an earlier try still unknown" if unknown else f"retry in {delay:.1f}s"
            # A 429 is the budget's doing, not the grant's: it does not use up an attempt.
            job, _ = self._move(job, target, f"not applied, {why}: {err}",
                                attempts="decr" if rate_limited else "keep", fields=done,
                                due=now + delay)  # fmt: skip
            self.scheduler.issue(dict(job.grant_fields), delay)
            return "outcome unknown" if unknown else "retry"
        wait = self._unknown_wait(grant, attempt)
        job, _ = self._move(job, JobState.SUBMITTING,
                            f"outcome unknown, reconcile in {wait:.1f}s: {err}",
                            fields={**done, "outcome_unknown": "1", "unknown_at": now,
                                    "unknown_since": job.number("unknown_since") or now},
                            due=now + wait)  # fmt: skip
        self.scheduler.issue(dict(job.grant_fields), wait)
        return "outcome unknown"

    def _unknown_wait(self, grant: CreditGrant, attempt: int) -> float:
        if grant.provider is Provider.CHARGEBEE:  # a same-key retry is answered from the record
            return retry_delay(attempt, self.policy.backoff_base, self.policy.backoff_max,
                               None, self.policy.backoff_max, self.rng)  # fmt: skip
        return self.policy.settle

    def _resolve_unknown(self, job: Job, grant: CreditGrant) -> str:
        """A ``submitting`` job: learn whether its last POST applied before any new one.

        Chargebee answers a same-key retry from its idempotency record, so inside its window
        the retry is the answer. Otherwise the listing decides, and its absence counts only
        as ``pipeline.outcome`` allows: a complete read, a later credit already shown, and the
        measured lag given time. Short of that the outcome stays unknown: the listing is read
        again later, and past the confirm deadline the job goes to the DLQ as
        ``outcome_unknown``. A proven absence is written down at once (back to ``queued``),
        so the POST that follows, whenever its budget slot comes, never re-reads the listing:
        a read and a POST needing two slots can no longer chase each other for ever.
        """
        now = self.clock()
        in_flight_until = job.number("in_flight_until")
        if in_flight_until is not None and now < in_flight_until:
            self._issue_later(job, in_flight_until - now)  # another delivery's POST is in flight
            return "post in flight"
        first_post = job.number("first_post_at")
        if first_post is None:
            return self._submit(job, grant)
        # When the last attempt ended: its answer, or (a worker killed mid-POST) its lease,
        # which outlasts any call (http.call_deadline_seconds is shorter).
        attempt_end = (job.number("unknown_at") or in_flight_until
                       or job.number("last_post_at") or job.state_at)  # fmt: skip
        unknown_since = job.number("unknown_since") or attempt_end
        if (grant.provider is Provider.CHARGEBEE and not job.extra.get("listing_first")
                and job.attempts < self.policy.max_attempts
                and now - first_post < CHARGEBEE_REPLAY_WINDOW_SECONDS):  # fmt: skip
            return self._retry_same_key(job, grant, attempt_end, unknown_since)
        ready_at = attempt_end + self.policy.settle
        if now < ready_at:
            self._issue_later(job, ready_at - now)
            return "settling"
        verdict = self._read_for(job, unknown_since)
        if not isinstance(verdict, Verdict):  # the task ends here
            return verdict
        now = self.clock()
        why = "a listing read could not tell (cut short, or an unmarked credit of its amount)"
        if verdict is Verdict.ABSENT:
            absence = absence_proves(attempt_end, now, self.policy.settle,
                                     self.store.visibility(job.provider, now))  # fmt: skip
            if absence.proven:
                return self._did_not_apply(job, absence.why)
            why = absence.why
        if now - unknown_since >= self.policy.confirm_deadline:
            reason = f"outcome unknown {now - unknown_since:.0f}s after the attempt: {why}"
            return self._give_up(job, reason, DlqReason.UNKNOWN)
        delay = poll_delay(now - attempt_end, self.policy.first_poll, self.policy.poll_max)
        log.info("key=%s provider=%s outcome still unknown, reading again in %.1fs: %s",
                 job.idempotency_key, job.provider, delay, why)  # fmt: skip
        self._issue_later(job, delay)
        return "outcome unknown"

    def _retry_same_key(self, job: Job, grant: CreditGrant, attempt_end: float,
                        unknown_since: float) -> str:  # fmt: skip
        """Chargebee, inside its idempotency window: the retry with the same key is answered
        from the record if the last try applied. One listing read first all the same (the
        customer's, filtered by time): a record lost early, or a proxy that drops the header,
        must not be all that stands between the customer and a second credit. The read is
        written down, so a retry waiting for its budget slot does not read again."""
        if (job.number("listing_checked_at") or 0.0) < attempt_end:
            verdict = self._read_for(job, unknown_since)
            if not isinstance(verdict, Verdict):  # the task ends here
                return verdict
            job, _ = self._move(job, JobState.SUBMITTING,
                                "not in the listing yet: retry with the same idempotency key",
                                fields={"listing_checked_at": self.clock()})  # fmt: skip
        return self._submit(job, grant)

    def _read_for(self, job: Job, unknown_since: float) -> Verdict | str:
        """Read the customer's listing for an unknown outcome: its verdict when it is still
        to be settled, or (a plain ``str``) how the task ends: found, confirmed; no read
        possible, read later."""
        try:
            verdict = self._confirm_focus(job)
        except (NoSlot, ProviderError) as failed:
            return self._read_later(job, failed, unknown_since)
        return "confirmed" if verdict is Verdict.FOUND else verdict

    def _read_later(self, job: Job, failed: NoSlot | ProviderError, unknown_since: float) -> str:
        """The listing could not be read now (no budget slot, an error): read it later, or,
        past the confirm deadline, hand the unknown outcome to a person."""
        now = self.clock()
        if now - unknown_since >= self.policy.confirm_deadline:
            reason = (f"outcome unknown {now - unknown_since:.0f}s after the attempt: the "
                      f"listing could not be read ({failed})")  # fmt: skip
            return self._give_up(job, reason, DlqReason.UNKNOWN)
        if isinstance(failed, NoSlot):
            self._issue_later(job, failed.wait)
            return "waiting for a request slot"
        self._issue_later(job, self._listing_retry(job.provider, failed))
        return "listing unavailable"

    def _did_not_apply(self, job: Job, why: str) -> str:
        """The listing proved that no earlier try applied: record it, then POST (or, if the
        last answer was a refusal, let the refusal stand)."""
        cleared = {"outcome_unknown": None, "unknown_at": None, "unknown_since": None,
                   "listing_first": None}  # fmt: skip
        error = job.last_error or {}
        if job.extra.get("listing_first") and error.get("class") == Outcome.PERMANENT.value:
            self._move(job, JobState.REJECTED, f"refused: {error.get('message')}; {why}",
                       dlq=DlqReason.REFUSED, fields=cleared)  # fmt: skip
            return "rejected"
        if job.attempts >= self.policy.max_attempts:
            reason = f"attempts exhausted ({job.attempts}), none applied: {why}"
            self._move(job, JobState.DEAD, reason, dlq=DlqReason.EXHAUSTED, fields=cleared)
            return "dead"
        job, _ = self._move(job, JobState.QUEUED, f"did not apply: {why}", fields=cleared,
                            due=self.clock())  # fmt: skip
        self.scheduler.issue(dict(job.grant_fields), 0.0)
        return "retry"

    # -- reconcile ------------------------------------------------------------------

    def reconcile(self, limit: int = 500) -> int:
        """Re-drive unfinished jobs that nobody has worked on since they were due.

        That covers a crash between "saved" and "published", a worker killed mid-job
        (its message waits for the broker's visibility timeout), and messages lost in a
        Redis restart. Re-driving is safe: every path starts by reading the job's state.
        """
        now = self.clock()
        keys = self.store.overdue(before=now - self.policy.grace, limit=limit)
        redriven = 0
        providers: set[str] = set()
        for key, job in zip(keys, self.store.get_many(keys, history=False), strict=True):
            if job is None or job.state.terminal:
                self.store.forget_due(key)
                continue
            self.store.set_due(key, now)  # the next sweep waits a full grace again
            if job.state is JobState.SUBMITTED:
                providers.add(job.provider)
            else:
                self.scheduler.issue(dict(job.grant_fields), 0.0)
            log.warning("re-driving key=%s provider=%s stuck in %s since %s",
                        key, job.provider, job.state.value, iso(job.state_at))  # fmt: skip
            redriven += 1
        for provider in providers:
            self._schedule_confirm(provider, 0.0, force=True)
        return redriven
