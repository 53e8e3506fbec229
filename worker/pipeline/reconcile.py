"""Reconcile: the periodic pass that re-drives work nobody is doing.

Messages can be lost (a crash between "saved" and "published", a Redis restart) and a worker
can die mid-job; the store's due index remembers when every unfinished job should next have
been worked on, and this pass sends a fresh message for each one overdue by a grace.
"""

from __future__ import annotations

import logging

from worker.domain.job import iso
from worker.domain.states import JobState
from worker.pipeline.mover import Mover

log = logging.getLogger("creditq.pipeline")


class Reconciler:
    """Re-drives overdue jobs through the broker; never touches a provider."""

    def __init__(self, mover: Mover) -> None:
        self.mover = mover
        self.store, self.policy, self.clock = mover.store, mover.policy, mover.clock

    def reconcile(self, limit: int = 500) -> int:
        """Re-drive unfinished jobs that nobody has worked on since they were due.

        That covers a crash between "saved" and "published", a worker killed mid-job
        (its message waits for the broker's visibility timeout), and messages lost in a
        Redis restart. Re-driving is safe: every path starts by reading the job's state.
        """
        now = self.clock()
        # beat's heartbeat, for its health check, and a look at the store's era: a promotion
        # is noticed within an interval even when no grant comes (mark_reconciled.lua)
        self.store.mark_reconciled(now)
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
                self.mover.scheduler.issue(dict(job.grant_fields), 0.0)
            log.warning(
                "re-driving key=%s provider=%s stuck in %s since %s",
                key,
                job.provider,
                job.state.value,
                iso(job.state_at),
            )
            redriven += 1
        for provider in providers:
            self.mover.schedule_confirm(provider, 0.0, force=True)
        return redriven
