"""Confirmation sweeps: which listings to read, when, and what follows a read.

A scheduled sweep of one provider reads each listing that has grants due (at most
``MAX_READS_PER_SWEEP``), through ``listing.ListingReader``, which confirms what a read shows;
the sweep buries the grants past the confirm deadline and schedules the one next sweep. One
sweep runs per provider at a time (a lease in the store). ``Confirmer.focus`` reads one
customer's listing for the issue path, which must settle an unknown outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from enum import StrEnum

from worker.budget import SWEEP_TICKET, focus_ticket, turn_class
from worker.domain.fields import JobField as F
from worker.domain.grant import Priority, Provider
from worker.domain.job import Job
from worker.domain.states import DlqReason, JobState
from worker.errors import NoSlot, ProviderError, SweepLost, TransitionRefused
from worker.pipeline.lag import LearnedLag
from worker.pipeline.listing import ListingReader
from worker.pipeline.mover import Mover, scope_of
from worker.pipeline.results import SweepEnd
from worker.providers.base import ProviderClient
from worker.providers.matching import MatchWindow, could_be_its

log = logging.getLogger("creditq.pipeline")

# A job due within this much is read for now rather than by the next sweep.
DUE_SLACK = 0.05
# A sweep reads at most this many listings; the rest are read by the next one, scheduled
# at once, so one task never holds a worker thread for long.
MAX_READS_PER_SWEEP = 25


class Verdict(StrEnum):
    """What one listing read says of one job whose POST may not have applied."""

    FOUND = "found"  # its own entry: confirmed
    ABSENT = "absent"  # a complete read, and nothing there could be its credit
    UNPROVEN = "unproven"  # a read cut short, or an entry that might be its credit unmarked


class Confirmer:
    """The confirmation sweeps, and the focused read the issue path asks for (``focus``)."""

    def __init__(
        self,
        mover: Mover,
        clients: Callable[[Provider], ProviderClient],
        lag: LearnedLag,
        window: MatchWindow,
    ) -> None:
        self.mover = mover
        self.store, self.policy, self.clock = mover.store, mover.policy, mover.clock
        self.lag = lag
        self.window = window
        self.reader = ListingReader(mover, clients, window)

    def confirm(self, provider: str, customer_id: str, token: str = "") -> str:
        """A scheduled confirmation sweep of one provider (``customer_id`` empty) or of one
        customer: read every listing that has jobs due (Chargebee's one provider-wide
        listing, or one per Inveterate member), confirm every pending job a read shows,
        bury those past the deadline, and schedule one next sweep for the rest.

        One task reads several listings: a read per Celery task would cost a message, a
        delivery and three events each, for a call that takes one budget slot. ``token``
        names the sweep: a message whose sweep was superseded by a newer schedule (the
        provider's marker names another token) does nothing, so sweeps never run twice over.
        A sweep loads the jobs due, and for each Inveterate member it reads, that member's
        other waiting jobs (one read confirms them all); every other waiting job is loaded
        only if a listing shows an entry without a marker, which only matching by amount and
        time can place.
        """
        if customer_id:
            keys = self.store.pending(provider, customer_id)
            summary, _ = self._sweep(provider, customer_id, keys, None, None)
            return summary
        lease = self.policy.lease
        sweep = self.store.start_sweep(provider, token, self.clock() + DUE_SLACK, lease)
        if sweep.superseded:
            return SweepEnd.SUPERSEDED
        if sweep.busy:  # word is left: the running sweep schedules the next when it ends,
            # and should it have died, this one comes back once its lease has run out
            self.mover.scheduler.confirm(provider, "", (sweep.next_due or 0.0) + DUE_SLACK, token)
            return SweepEnd.BUSY

        def renew() -> None:
            if not self.store.renew_sweep(provider, token, lease):
                raise SweepLost(provider)

        try:
            summary, following = self._sweep(provider, "", sweep.due, sweep.next_due, renew)
        except BaseException:
            if self.store.end_sweep(provider, token):
                self.mover.schedule_confirm(provider, 0.0, force=True)
            raise
        if self.store.end_sweep(provider, token):  # one came meanwhile: its jobs may be due
            following = (0.0, True)
        if following is not None:  # only now: a next sweep due at once must not find it busy
            self.mover.schedule_confirm(provider, following[0], force=following[1])
        return summary

    def _sweep(
        self,
        provider: str,
        customer_id: str,
        keys: list[str],
        later: float | None,
        renew: Callable[[], None] | None,
    ) -> tuple[str, tuple[float, bool] | None]:
        """The body of ``confirm``: read, confirm, bury; returns its summary and the next
        sweep it wants (in how long, and whether it supersedes an earlier schedule)."""
        now = self.clock()
        jobs, due = self._waiting_jobs(keys)
        groups: dict[str | None, dict[str, Job]] = {}
        for key, job in jobs.items():
            groups.setdefault(scope_of(job), {})[key] = job
        # The listings with a job due: those an interactive grant waits on first (their
        # reads take interactive turns), then the longest-waiting first.
        reads = sorted(
            (
                (min(due[k] or 0.0 for k in targets), scope, targets)
                for scope, group in groups.items()
                if (targets := self._due(group, due, now))
            ),
            key=lambda read: (not _interactive(groups[read[1]], read[2]), read[0]),
        )
        reads = self._put_off_reads(provider, reads, groups, due, now)
        members = [scope for _, scope, _ in reads[:MAX_READS_PER_SWEEP] if scope is not None]
        if not customer_id:  # a one-customer confirm loaded that customer's whole set
            self._load_more(provider, members, jobs, due, groups)
        claimed = self.store.claimed_many(provider, members)
        confirmed: set[str] = set()
        read: set[str] = set()  # keys whose listing was read
        learned: list[tuple[float | None, list[Job]]] = []  # per read: youngest found, missed
        retry: float | None = None  # when to sweep again for listings left unread
        for n, (_, scope, targets) in enumerate(reads):
            if n == MAX_READS_PER_SWEEP:
                retry = 0.0
                break

            def everyone(scope: str | None = scope) -> Mapping[str, Job]:
                self._load_more(provider, [scope], jobs, due, groups)
                return groups[scope]

            try:
                found = self.reader.read(
                    provider,
                    scope,
                    groups[scope],
                    targets,
                    claimed.get(scope or "", set()),
                    everyone,
                    renew,
                    turn=(SWEEP_TICKET, _read_class(groups[scope], targets)),
                ).confirmed
            except SweepLost:
                log.warning(
                    "provider=%s a sweep outlived its lease; the next one reads on", provider
                )
                return SweepEnd.LEASE_LOST, None
            except NoSlot as slot:
                retry = slot.wait
                break
            except ProviderError as err:
                wait = self.mover.listing_retry(provider, err)
                retry = wait if retry is None else min(retry, wait)
                continue
            confirmed |= found
            read.update(targets)
            learned.append(
                (self._youngest(found, jobs), [groups[scope][k] for k in targets if k not in found])
            )
        now = self.clock()
        self.lag.learn(Provider(provider), learned)
        next_reads = self._next_reads(
            [job for key, job in jobs.items() if key not in confirmed], due, read, now
        )
        # Listings left unread are swept again at ``retry``; the rest when their next is due.
        times = [t for k, t in next_reads.items() if k in read or t > now]
        times += [later] if later is not None else []
        delay = min(times) - now + self.policy.batch if times else None
        following: tuple[float, bool] | None = None
        if retry is not None:
            following = (retry if delay is None else min(delay, retry), True)
        elif delay is not None:
            following = (max(delay, 0.0), False)
        if customer_id and following is not None:
            self.mover.schedule_confirm(provider, following[0], force=following[1])
            following = None
        unread = len(reads) - len({scope_of(jobs[k]) for k in read})
        summary = f"confirmed {len(confirmed)}, waiting {len(next_reads)}, listings unread {unread}"
        return summary, following

    def _put_off_reads(
        self,
        provider: str,
        reads: list[tuple[float, str | None, list[str]]],
        groups: Mapping[str | None, Mapping[str, Job]],
        due: dict[str, float | None],
        now: float,
    ) -> list[tuple[float, str | None, list[str]]]:
        """The reads to make now: a read is put off while POSTs of its lane wait for slots
        (interactive POSTs for a read an interactive grant waits on, bulk POSTs for one only
        bulk grants wait on), so that one read confirms them all once they are sent (one per
        member, one per page of Chargebee's listing) instead of a read every few POSTs; never
        past ``CREDITQ_CONFIRM_POLL_MAX_SECONDS`` after a grant's 2xx, which keeps a long
        backlog's first grants far inside the confirm deadline. The postponed grants are due
        again when the POSTs should be through."""
        budget = self.mover.budgets(Provider(provider))
        if not reads or budget is None:
            return reads
        posts = {
            lane: budget.waiting(turn_class(lane, read=False))
            for lane in (Priority.INTERACTIVE, Priority.BULK)
        }
        if not any(posts.values()):
            return reads
        interval = 60.0 / budget.per_minute
        kept: list[tuple[float, str | None, list[str]]] = []
        for read in reads:
            _, scope, targets = read
            group = groups[scope]
            lane = Priority.INTERACTIVE if _interactive(group, targets) else Priority.BULK
            accepted = [group[k].number(F.SUBMITTED_AT) or now for k in targets]
            latest = min(accepted) + self.policy.poll_max
            if not posts[lane] or latest <= now:
                kept.append(read)
                continue
            again = min(now + posts[lane] * interval, latest)
            due.update(dict.fromkeys(targets, again))
            self.store.set_due_many(dict.fromkeys(targets, again))
        return kept

    def _youngest(self, found: set[str], jobs: Mapping[str, Job]) -> float | None:
        """How long the youngest accepted job a read confirmed had waited since its 2xx."""
        now = self.clock()
        waited = [now - at for k in found if (at := jobs[k].number(F.SUBMITTED_AT)) is not None]
        return min(waited) if waited else None

    def _waiting_jobs(self, keys: list[str]) -> tuple[dict[str, Job], dict[str, float | None]]:
        """The jobs among ``keys`` still waiting for the listing, and when each is due."""
        found, due = self.store.get_with_due(keys)
        waiting = (JobState.SUBMITTING, JobState.SUBMITTED)
        jobs = {j.idempotency_key: j for j in found if j is not None and j.state in waiting}
        return jobs, {key: due.get(key) for key in jobs}

    def _load_more(
        self,
        provider: str,
        scopes: Sequence[str | None],
        jobs: dict[str, Job],
        due: dict[str, float | None],
        groups: dict[str | None, dict[str, Job]],
    ) -> None:
        """Add the waiting jobs of these listings (a member's, or with None the provider's)
        that are not loaded yet."""
        if not scopes:
            return
        keys = self.store.pending_many(provider, scopes)
        more, more_due = self._waiting_jobs([k for k in keys if k not in jobs])
        jobs.update(more)
        due.update(more_due)
        for key, job in more.items():
            groups.setdefault(scope_of(job), {})[key] = job

    @staticmethod
    def _due(group: Mapping[str, Job], due: Mapping[str, float | None], now: float) -> list[str]:
        """The jobs a read is for: accepted (``submitted``) and due. A job whose POST may not
        have applied is the issue path's to resolve; it is confirmed if a read shows it."""
        return [
            k
            for k, j in group.items()
            if j.state is JobState.SUBMITTED and (due.get(k) or 0.0) <= now + DUE_SLACK
        ]

    def _next_reads(
        self, waiting: list[Job], due: Mapping[str, float | None], read: set[str], now: float
    ) -> dict[str, float]:
        """Bury the jobs past the confirm deadline; return when each other waiting job should
        be read for next. A job whose listing was not read this sweep keeps its time."""
        first_read = self.lag.delay(Provider(waiting[0].provider)) if waiting else 0.0
        next_reads: dict[str, float] = {}
        for job in waiting:
            if job.state is not JobState.SUBMITTED:
                continue  # an unknown outcome is the issue path's to resolve
            key = job.idempotency_key
            waited = now - (job.number(F.SUBMITTED_AT) or job.state_at)
            if waited >= self.policy.confirm_deadline:
                with suppress(TransitionRefused):
                    self.mover.move(
                        job,
                        JobState.DEAD,
                        f"not visible in the listing {waited:.0f}s after it was accepted",
                        dlq=DlqReason.NOT_VISIBLE,
                    )
                continue
            own = due.get(key)
            if key not in read:
                next_reads[key] = own if own is not None else now
                continue
            # Each read waits about half the time already waited: frequent while the lag
            # is young, sparse for a late credit, never past the deadline.
            delay = min(
                self.policy.poll_max,
                max(first_read, waited / 2),
                self.policy.confirm_deadline - waited + 0.01,
            )
            next_reads[key] = now + delay
        self.store.set_due_many({k: t for k, t in next_reads.items() if k in read})
        return next_reads

    def focus(self, job: Job) -> Verdict:
        """Read the job's customer's listing for it alone (the issue path resolving an
        unknown outcome); every other pending job of the customer the read shows is
        confirmed too. A customer's listing even on Chargebee: a filtered read stays short
        however many credits other customers were given since."""
        jobs, _ = self._waiting_jobs(self.store.pending(job.provider, job.customer_id))
        if job.idempotency_key not in jobs:
            return Verdict.UNPROVEN  # moved meanwhile: the caller reloads it
        claimed = self.store.claimed_many(job.provider, [job.customer_id])
        result = self.reader.read(
            job.provider,
            job.customer_id,
            jobs,
            [job.idempotency_key],
            claimed.get(job.customer_id, set()),
            turn=(focus_ticket(job.idempotency_key), turn_class(job.priority, read=True)),
        )
        if job.idempotency_key in result.confirmed:
            return Verdict.FOUND
        key = job.idempotency_key
        mine = self.reader.pending(jobs[key])
        if not result.read.complete or key in result.matches.found:
            return Verdict.UNPROVEN  # cut short, or its entry is another job's claim
        if key in result.matches.suspicious:
            return Verdict.UNPROVEN  # its marker on another credit: a person must look
        if any(could_be_its(mine, entry, self.window) for entry in result.read.entries):
            return Verdict.UNPROVEN  # an unmarked credit of its amount: maybe its own
        return Verdict.ABSENT


def _interactive(group: Mapping[str, Job], targets: Sequence[str]) -> bool:
    """Whether an interactive grant waits on this read."""
    return any(group[k].priority != Priority.BULK for k in targets)


def _read_class(group: Mapping[str, Job], targets: Sequence[str]) -> int:
    """The class of a read's turn: interactive if any grant it is for is."""
    return turn_class(
        Priority.INTERACTIVE if _interactive(group, targets) else Priority.BULK, read=True
    )
