"""Confirmation: a scheduled sweep reads each provider listing that has grants due and
confirms every pending grant it shows.

A grant is ``confirmed`` only when the provider's own listing shows it; the sweep pages a
listing only as far as the grants due need, matches by the marker the note carries (by
amount and time where the listing does not echo it), and each ledger entry confirms one
job only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum

from worker.domain.grant import Provider
from worker.domain.job import Job, iso
from worker.domain.states import DlqReason, JobState
from worker.errors import NoSlot, ProviderError, SweepLost, TransitionRefused
from worker.pipeline.lag import LearnedLag
from worker.pipeline.mover import Mover, scope_of
from worker.pipeline.results import SweepEnd
from worker.providers.base import LedgerEntry, ListingPage, ProviderClient
from worker.providers.matching import (
    ListingRead,
    Matches,
    MatchWindow,
    PendingGrant,
    could_be_its,
    match,
    read_back,
)
from worker.store.jobs import Seen

log = logging.getLogger("creditq.pipeline")

LISTING_PAGE_MAX = 100  # Chargebee's largest page
# A job due within this much is read for now rather than by the next sweep.
DUE_SLACK = 0.05
# A sweep reads at most this many listings; the rest are read by the next one, scheduled
# at once, so one task never holds a worker thread for long.
MAX_READS_PER_SWEEP = 25


class _BudgetedListing:
    """A client whose every listing page first takes a slot of the provider's budget: the
    first page a free slot now (else the read is put off, nothing lost), each further page
    a reserved one (``Mover.spend_next_page``)."""

    def __init__(
        self,
        client: ProviderClient,
        spend: Callable[[], None],
        spend_next: Callable[[], None],
        renew: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.spend = spend
        self.spend_next = spend_next
        self.renew = renew  # a sweep's lease, extended before every page it reads

    def list_page(
        self,
        customer_id: str | None,
        cursor: str | None,
        limit: int,
        *,
        since: datetime | None = None,
    ) -> ListingPage:
        if self.renew is not None:
            self.renew()
        (self.spend if cursor is None else self.spend_next)()
        return self.client.list_page(customer_id, cursor, limit, since=since)


class Verdict(StrEnum):
    """What one listing read says of one job whose POST may not have applied."""

    FOUND = "found"  # its own entry: confirmed
    ABSENT = "absent"  # a complete read, and nothing there could be its credit
    UNPROVEN = "unproven"  # a read cut short, or an entry that might be its credit unmarked


@dataclass(frozen=True)
class ReadResult:
    """What ``Confirmer._read_listing`` did: the jobs it confirmed, and what it read."""

    confirmed: set[str]
    read: ListingRead
    matches: Matches


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
        self.clients = clients
        self.lag = lag
        self.window = window

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
        # The listings with a job due, the longest-waiting first.
        reads = sorted(
            (
                (min(due[k] or 0.0 for k in targets), scope, targets)
                for scope, group in groups.items()
                if (targets := self._due(group, due, now))
            ),
            key=lambda read: read[0],
        )
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
                found = self._read_listing(
                    provider,
                    scope,
                    groups[scope],
                    targets,
                    claimed.get(scope or "", set()),
                    everyone,
                    renew,
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

    def _youngest(self, found: set[str], jobs: Mapping[str, Job]) -> float | None:
        """How long the youngest accepted job a read confirmed had waited since its 2xx."""
        now = self.clock()
        waited = [now - at for k in found if (at := jobs[k].number("submitted_at")) is not None]
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
            waited = now - (job.number("submitted_at") or job.state_at)
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
        result = self._read_listing(
            job.provider,
            job.customer_id,
            jobs,
            [job.idempotency_key],
            claimed.get(job.customer_id, set()),
        )
        if job.idempotency_key in result.confirmed:
            return Verdict.FOUND
        key = job.idempotency_key
        mine = self._pending(jobs[key])
        if not result.read.complete or key in result.matches.found:
            return Verdict.UNPROVEN  # cut short, or its entry is another job's claim
        if key in result.matches.suspicious:
            return Verdict.UNPROVEN  # its marker on another credit: a person must look
        if any(could_be_its(mine, entry, self.window) for entry in result.read.entries):
            return Verdict.UNPROVEN  # an unmarked credit of its amount: maybe its own
        return Verdict.ABSENT

    def _read_listing(
        self,
        provider: str,
        customer_id: str | None,
        jobs: Mapping[str, Job],
        targets: list[str],
        claimed: set[str],
        everyone: Callable[[], Mapping[str, Job]] | None = None,
        renew: Callable[[], None] | None = None,
    ) -> ReadResult:
        """Read one listing (a customer's, or with None the provider's) as far as ``targets``
        need, and confirm every job of ``jobs`` (that listing's pending jobs) it shows.

        The read pages only until every target is matched, or it is complete back to the
        oldest of them (``matching.read_back``): jobs submitted a moment ago are most likely
        not visible yet, and paging back for them would spend the budget for nothing; they
        are confirmed if the pages read show them anyway. A job whose POST may never have
        applied (``submitting``) is confirmed only by its own marker, never by amount and
        time. ``everyone`` loads every waiting job of the listing, when ``_needs_everyone``
        says so. Duplicates and copied markers the read shows raise alarms.
        """
        pending = {key: self._pending(job) for key, job in jobs.items()}
        name = Provider(provider)
        client = _BudgetedListing(
            self.clients(name),
            lambda: self.mover.spend(name),
            lambda: self.mover.spend_next_page(name),
            renew,
        )
        # A page a little larger than the jobs due: they sit among the newest entries, and a
        # smaller page is less for the provider to send and for us to parse.
        page = min(LISTING_PAGE_MAX, 2 * len(targets) + 10)
        read = read_back(
            client,
            customer_id,
            [pending[k] for k in targets],
            claimed=claimed,
            window=self.window,
            page_size=page,
        )
        if everyone is not None and self._needs_everyone(read.entries, pending, targets):
            jobs = everyone()
            pending = {key: self._pending(job) for key, job in jobs.items()}
        matches = match(pending.values(), read.entries, claimed, self.window)
        self._raise_alarms(jobs, matches)
        self._alarm_late_duplicates(provider, pending, read.entries)
        confirmed = self._confirm_found(jobs, matches.found)
        budget = self.mover.budgets(Provider(provider))
        if confirmed and budget is not None:
            budget.record_confirmed(len(confirmed))
        return ReadResult(confirmed, read, matches)

    def _raise_alarms(self, jobs: Mapping[str, Job], matches: Matches) -> None:
        """A marker shown twice is a second payment; a marker on another amount or customer
        is a copy. Neither is hidden: the job carries the alarm, stats count it, and the log
        says it at ERROR."""
        now = self.clock()
        kinds = (("duplicate", matches.duplicates), ("copied_marker", matches.suspicious))
        for kind, found in kinds:
            for key, entries in found.items():
                job = jobs[key]
                refs = [e.ref for e in entries]
                if not [ref for ref in refs if self.store.first_alarm(ref)]:
                    continue  # raised before, by an earlier read
                own = matches.found.get(key)
                log.error(
                    "ALARM %s key=%s provider=%s customer=%s: entries %s carry its marker%s",
                    kind,
                    key,
                    job.provider,
                    job.customer_id,
                    ", ".join(refs),
                    f" (its own: {own.ref})" if own else "",
                )
                self.store.raise_alarm(
                    key,
                    {"kind": kind, "refs": refs, "own": own.ref if own else None, "at": iso(now)},
                    now,
                )

    def _alarm_late_duplicates(
        self, provider: str, pending: Mapping[str, PendingGrant], entries: list[LedgerEntry]
    ) -> None:
        """An entry carrying the marker of a job confirmed lately by another entry is a
        second payment that showed after the confirmation: raise it all the same."""
        known = {p.marker for p in pending.values()}
        others = [e for e in entries if e.marker and e.marker not in known]
        if not others:
            return
        now = self.clock()
        markers = list(dict.fromkeys(e.marker for e in others if e.marker))
        confirmed = self.store.recall_markers(provider, markers, now)
        for entry in others:
            key, ref = confirmed.get(entry.marker or "", ("", ""))
            if not key or entry.ref == ref or not self.store.first_alarm(entry.ref):
                continue
            log.error(
                "ALARM duplicate key=%s provider=%s: entry %s carries its marker; it was "
                "confirmed as %s",
                key,
                provider,
                entry.ref,
                ref,
            )
            self.store.raise_alarm(
                key, {"kind": "duplicate", "refs": [entry.ref], "own": ref, "at": iso(now)}, now
            )

    @staticmethod
    def _needs_everyone(
        entries: list[LedgerEntry], pending: Mapping[str, PendingGrant], targets: list[str]
    ) -> bool:
        """Whether the jobs not loaded (not due yet) must be loaded before matching: an entry
        that says nothing of its author can only be placed by amount and time, which needs
        every candidate; and an entry with a marker no loaded job holds, newer than the
        oldest job read for, is most likely a job not due yet that already shows: confirming
        it now saves it a read. Older entries with other markers are jobs confirmed before;
        entries whose text is someone else's are nobody's here."""
        known = {p.marker for p in pending.values()}
        oldest = min(pending[k].submitted_at for k in targets)
        return any(
            (e.marker is None and not e.foreign)
            or (
                e.marker is not None
                and e.marker not in known
                and (e.created_at is None or e.created_at >= oldest)
            )
            for e in entries
        )

    def _pending(self, job: Job) -> PendingGrant:
        since = job.number("first_post_at") or job.state_at
        return PendingGrant(
            job.idempotency_key,
            job.customer_id,
            Decimal(str(job.grant_fields["amount"])),
            job.marker,
            datetime.fromtimestamp(since, UTC),
            accepted=job.state is JobState.SUBMITTED,
        )

    def _confirm_found(self, jobs: Mapping[str, Job], found: Mapping[str, LedgerEntry]) -> set[str]:
        """Confirm every job a read found, in one round trip; each move is still its own
        compare-and-set, and one whose entry another job claimed (or that another worker
        moved first) simply stays pending."""
        now = self.clock()
        seen = []
        for key, entry in found.items():
            job = jobs[key]
            submitted_at = job.number("submitted_at") or job.number("first_post_at") or job.state_at
            created = entry.created_at.isoformat() if entry.created_at else None
            matched_by = "marker" if entry.marker else "amount and time"
            entry_json = {
                "ref": entry.ref,
                "amount": str(entry.amount),
                "created_at": created,
                "matched_by": matched_by,
            }
            seen.append(
                Seen(
                    key,
                    job.state,
                    job.version,
                    entry.ref,
                    job.provider_ref or entry.ref,
                    entry_json,
                    round(now - submitted_at, 3),
                )
            )
        confirmed: set[str] = set()
        accepted: list[tuple[float, float]] = []  # (accepted at, took to show) per confirmation
        for item, outcome in zip(seen, self.store.confirm_seen(seen, now=now), strict=True):
            job = jobs[item.idempotency_key]
            if isinstance(outcome, TransitionRefused):
                log.info("not confirmed: %s", outcome)
                continue
            confirmed.add(item.idempotency_key)
            if job.state is JobState.SUBMITTED and (at := job.number("submitted_at")):
                accepted.append((at, item.visible_after))
            log.info(
                "key=%s provider=%s %s -> confirmed attempt=%d: seen in the listing as %s",
                job.idempotency_key,
                job.provider,
                job.state.value,
                job.attempts,
                item.ref,
            )
        self.store.remember_markers(
            jobs[next(iter(found))].provider if found else "",
            {jobs[k].marker: f"{k} {found[k].ref}" for k in confirmed},
            now,
        )
        if accepted:  # what the listing has shown: the witness and the lag (pipeline.outcome)
            self.store.record_visibility(
                jobs[next(iter(confirmed))].provider,
                max(a for a, _ in accepted),
                max(t for _, t in accepted),
                now,
            )
        return confirmed
