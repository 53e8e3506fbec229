"""The job states and the only moves between them: the single home of the state machine.

The Redis store enforces these moves with an atomic compare-and-set; nothing
else decides whether a move is allowed.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "queued"  # accepted; waiting for a worker or for a retry that surely did not apply
    SUBMITTING = "submitting"  # a POST is in flight, or its outcome is unknown
    SUBMITTED = "submitted"  # the provider answered 2xx; not yet visible in its listing
    CONFIRMED = "confirmed"  # seen in the provider's listing: done
    REJECTED = "rejected"  # refused for good (validation, provider 4xx): in the DLQ
    DEAD = "dead"  # gave up (attempts or confirm deadline): in the DLQ

    @property
    def terminal(self) -> bool:
        """Terminal jobs get the retention TTL; only DLQ states ever leave (by replay)."""
        return self in TERMINAL

    @property
    def dead_letter(self) -> bool:
        return self in DEAD_LETTER


class DlqReason(StrEnum):
    """Why a job is in the dead-letter queue: what an operator filters and replays by."""

    INVALID = "invalid"  # failed validation (in the producer's rules, at the worker)
    REFUSED = "refused"  # the provider refused it for good (400, 401, 403, 404, 409, 422)
    EXHAUSTED = "exhausted"  # CREDITQ_MAX_ATTEMPTS tries, none known to have applied
    NOT_VISIBLE = "not_visible"  # accepted, but never seen in the listing by the deadline
    CONFIGURATION = "configuration"  # e.g. the provider's key is not set
    # A POST may have applied, and no listing could tell by the deadline (a note the listing
    # does not echo, a same-amount credit of unknown origin, a listing that never showed a
    # later credit): creditq will not guess, a person checks the provider's ledger.
    UNKNOWN = "outcome_unknown"

    @property
    def end_state(self) -> JobState:
        """A grant refused (by its rules or by the provider) ends ``rejected``; every other
        reason ends ``dead``: replayable once what stood in the way is fixed."""
        return (
            JobState.REJECTED if self in (DlqReason.INVALID, DlqReason.REFUSED) else JobState.DEAD
        )


TERMINAL = frozenset({JobState.CONFIRMED, JobState.REJECTED, JobState.DEAD})
DEAD_LETTER = frozenset({JobState.REJECTED, JobState.DEAD})
WAITING = (JobState.QUEUED, JobState.SUBMITTING, JobState.SUBMITTED)

ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.SUBMITTING, JobState.REJECTED, JobState.DEAD}),
    JobState.SUBMITTING: frozenset(
        {
            JobState.SUBMITTING,  # another attempt while the outcome is still unknown
            JobState.SUBMITTED,
            JobState.CONFIRMED,  # reconciliation found the credit in the listing
            JobState.QUEUED,  # the last try surely did not apply (e.g. 429, refused)
            JobState.REJECTED,
            JobState.DEAD,
        }
    ),
    JobState.SUBMITTED: frozenset({JobState.CONFIRMED, JobState.DEAD}),
    JobState.CONFIRMED: frozenset(),
    JobState.REJECTED: frozenset({JobState.QUEUED}),  # replay
    JobState.DEAD: frozenset({JobState.QUEUED}),  # replay
}


def sources_of(target: JobState) -> frozenset[JobState]:
    """The states a job may be in for a move to ``target`` to be allowed."""
    return frozenset(s for s, nexts in ALLOWED.items() if target in nexts)


def can_move(current: JobState, target: JobState) -> bool:
    return target in ALLOWED[current]
