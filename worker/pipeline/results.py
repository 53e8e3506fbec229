"""What one issue task did, in a word: the value the Celery task returns (Flower shows it),
what the tests and benchmarks read, and the one place these words are spelled.

A ``StrEnum``, so a result is also the plain string Celery stores and Flower displays.
"""

from __future__ import annotations

from enum import StrEnum


class Result(StrEnum):
    # The job moved on.
    SUBMITTED = "submitted"  # a 2xx: waiting for the listing to show the credit
    CONFIRMED = "confirmed"  # a listing read for an unknown outcome found the credit
    AWAITING = "awaiting confirmation"  # accepted before: a sweep will read for it
    RETRY = "retry"  # did not apply: queued again after a backoff
    REJECTED = "rejected"  # refused for good (the grant, or the provider's 4xx)
    DEAD = "dead"  # in the DLQ (exhausted, configuration, unknown outcome)
    # The job waits; the task put the work back on the broker.
    OUTCOME_UNKNOWN = "outcome unknown"  # the last POST may have applied: the listing decides
    SETTLING = "settling"  # an unknown outcome, waiting for the provider's lag to pass
    POST_IN_FLIGHT = "post in flight"  # another delivery's POST holds the lease
    NO_SLOT = "waiting for a request slot"  # the provider's budget has no slot now
    LISTING_UNAVAILABLE = "listing unavailable"  # the read for an unknown outcome failed
    NOT_DURABLE = "store not durable yet"  # the move before the POST was not held: no POST
    MASTER_CHANGED = "store master changed"  # a POST may have left unrecorded: listing first
    # Nothing to do.
    LOST_RACE = "lost race"  # another delivery or a sweep moved the job first
    NOTHING = "nothing to do"  # the job is finished (or gone)
    DROPPED = "dropped"  # the message names no usable key: there is no job to record it on


class SweepEnd(StrEnum):
    """How a confirmation sweep ended without reading (one that read returns its summary:
    "confirmed N, waiting M, listings unread K")."""

    SUPERSEDED = "superseded"  # a newer schedule names another sweep
    BUSY = "another sweep is running"  # word is left for it; this one comes back at its lease
    LEASE_LOST = "lease lost"  # outlived its lease: the next sweep reads on
