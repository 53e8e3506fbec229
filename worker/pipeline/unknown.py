"""Unknown outcomes: learn whether a POST applied before any other POST is sent.

A job left ``submitting`` (an ambiguous answer, a worker killed mid-POST, a refusal after an
earlier try that may have applied) comes here on every delivery until its fate is known:
Chargebee's same-key retry inside its idempotency window, or a listing read whose silence
``outcome.absence_proves``. Short of proof the job keeps waiting, and past the confirm
deadline it goes to the DLQ as ``outcome_unknown``: a person settles it, nobody guesses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from worker.domain.fields import JobField as F
from worker.domain.grant import CreditGrant, Provider
from worker.domain.job import Job
from worker.domain.states import DlqReason, JobState
from worker.errors import NoSlot, Outcome, ProviderError
from worker.pipeline.confirm import Confirmer, Verdict
from worker.pipeline.mover import Mover
from worker.pipeline.outcome import absence_proves, poll_delay
from worker.pipeline.results import Result

log = logging.getLogger("creditq.pipeline")

# Chargebee keeps an idempotency key's answer for 30 minutes; stay well inside it.
CHARGEBEE_REPLAY_WINDOW_SECONDS = 25 * 60


class Resolver:
    """Settles a job whose last POST may have applied; ``submit`` POSTs once it is proven
    that none did (the issuer's own ``_submit``)."""

    def __init__(
        self, mover: Mover, confirmer: Confirmer, submit: Callable[[Job, CreditGrant], Result]
    ) -> None:
        self.mover = mover
        self.store, self.policy, self.clock = mover.store, mover.policy, mover.clock
        self.confirmer = confirmer
        self.submit = submit

    def resolve(self, job: Job, grant: CreditGrant) -> Result:
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
        in_flight_until = job.number(F.IN_FLIGHT_UNTIL)
        if in_flight_until is not None and now < in_flight_until:
            self.mover.issue_later(
                job, in_flight_until - now
            )  # another delivery's POST is in flight
            return Result.POST_IN_FLIGHT
        first_post = job.number(F.FIRST_POST_AT)
        if first_post is None:
            return self.submit(job, grant)
        # When the last attempt ended: its answer, or (a worker killed mid-POST) its lease,
        # which outlasts any call (http.call_deadline_seconds is shorter).
        attempt_end = (
            job.number(F.UNKNOWN_AT)
            or in_flight_until
            or job.number(F.LAST_POST_AT)
            or job.state_at
        )
        unknown_since = job.number(F.UNKNOWN_SINCE) or attempt_end
        if (
            grant.provider is Provider.CHARGEBEE
            and not job.extra.get(F.LISTING_FIRST)
            and job.attempts < self.policy.max_attempts
            and now - first_post < CHARGEBEE_REPLAY_WINDOW_SECONDS
        ):
            return self._retry_same_key(job, grant, attempt_end, unknown_since)
        ready_at = attempt_end + self.policy.settle
        if now < ready_at:
            self.mover.issue_later(job, ready_at - now)
            return Result.SETTLING
        verdict = self._read_for(job, unknown_since)
        if not isinstance(verdict, Verdict):  # the task ends here
            return verdict
        now = self.clock()
        why = "a listing read could not tell (cut short, or an unmarked credit of its amount)"
        if verdict is Verdict.ABSENT:
            absence = absence_proves(
                attempt_end, now, self.policy.settle, self.store.visibility(job.provider, now)
            )
            if absence.proven:
                return self._did_not_apply(job, absence.why)
            why = absence.why
        if now - unknown_since >= self.policy.confirm_deadline:
            reason = f"outcome unknown {now - unknown_since:.0f}s after the attempt: {why}"
            return self.mover.give_up(job, reason, DlqReason.UNKNOWN)
        delay = poll_delay(now - attempt_end, self.policy.first_poll, self.policy.poll_max)
        log.info(
            "key=%s provider=%s outcome still unknown, reading again in %.1fs: %s",
            job.idempotency_key,
            job.provider,
            delay,
            why,
        )
        self.mover.issue_later(job, delay)
        return Result.OUTCOME_UNKNOWN

    def _retry_same_key(
        self, job: Job, grant: CreditGrant, attempt_end: float, unknown_since: float
    ) -> Result:
        """Chargebee, inside its idempotency window: the retry with the same key is answered
        from the record if the last try applied. One listing read first all the same (the
        customer's, filtered by time): a record lost early, or a proxy that drops the header,
        must not be all that stands between the customer and a second credit. The read is
        written down, so a retry waiting for its budget slot does not read again."""
        if (job.number(F.LISTING_CHECKED_AT) or 0.0) < attempt_end:
            verdict = self._read_for(job, unknown_since)
            if not isinstance(verdict, Verdict):  # the task ends here
                return verdict
            job, _ = self.mover.move(
                job,
                JobState.SUBMITTING,
                "not in the listing yet: retry with the same idempotency key",
                fields={F.LISTING_CHECKED_AT: self.clock()},
            )
        return self.submit(job, grant)

    def _read_for(self, job: Job, unknown_since: float) -> Verdict | Result:
        """Read the customer's listing for an unknown outcome: its verdict when it is still
        to be settled, or (a plain ``str``) how the task ends: found, confirmed; no read
        possible, read later."""
        try:
            verdict = self.confirmer.focus(job)
        except (NoSlot, ProviderError) as failed:
            return self._read_later(job, failed, unknown_since)
        return Result.CONFIRMED if verdict is Verdict.FOUND else verdict

    def _read_later(self, job: Job, failed: NoSlot | ProviderError, unknown_since: float) -> Result:
        """The listing could not be read now (no budget slot, an error): read it later, or,
        past the confirm deadline, hand the unknown outcome to a person."""
        now = self.clock()
        if now - unknown_since >= self.policy.confirm_deadline:
            reason = (
                f"outcome unknown {now - unknown_since:.0f}s after the attempt: the "
                f"listing could not be read ({failed})"
            )
            return self.mover.give_up(job, reason, DlqReason.UNKNOWN)
        if isinstance(failed, NoSlot):
            self.mover.issue_later(job, failed.wait)
            return Result.NO_SLOT
        self.mover.issue_later(job, self.mover.listing_retry(job.provider, failed))
        return Result.LISTING_UNAVAILABLE

    def _did_not_apply(self, job: Job, why: str) -> Result:
        """The listing proved that no earlier try applied: record it, then POST (or, if the
        last answer was a refusal, let the refusal stand)."""
        cleared = {
            F.OUTCOME_UNKNOWN: None,
            F.UNKNOWN_AT: None,
            F.UNKNOWN_SINCE: None,
            F.LISTING_FIRST: None,
        }
        error = job.last_error or {}
        if job.extra.get(F.LISTING_FIRST) and error.get("class") == Outcome.PERMANENT.value:
            return self.mover.give_up(
                job, f"refused: {error.get('message')}; {why}", DlqReason.REFUSED, fields=cleared
            )
        if job.attempts >= self.policy.max_attempts:
            reason = f"attempts exhausted ({job.attempts}), none applied: {why}"
            return self.mover.give_up(job, reason, DlqReason.EXHAUSTED, fields=cleared)
        job, _ = self.mover.move(
            job, JobState.QUEUED, f"did not apply: {why}", fields=cleared, due=self.clock()
        )
        self.mover.scheduler.issue(dict(job.grant_fields), 0.0)
        return Result.RETRY
