"""Reading one listing: page it as far as the jobs due need, match what it shows, confirm
those jobs, and raise the alarms a second payment or a copied marker calls for.

A grant is ``confirmed`` only when the provider's own listing shows it; the read matches by
the marker the entry carries (by amount and time where the listing does not echo it), and
each ledger entry confirms one job only. ``confirm.Confirmer`` decides which listings to read
and when; this module reads one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from worker.domain.fields import JobField as F
from worker.domain.grant import Provider
from worker.domain.job import Job, iso
from worker.domain.states import JobState
from worker.errors import TransitionRefused
from worker.pipeline.mover import Mover
from worker.providers.base import Cursor, LedgerEntry, ListingPage, ProviderClient
from worker.providers.matching import (
    ListingRead,
    Matches,
    MatchWindow,
    PendingGrant,
    match,
    read_back,
)
from worker.store.jobs import Seen

log = logging.getLogger("creditq.pipeline")

LISTING_PAGE_MAX = 100  # Chargebee's largest page


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
        self, customer_id: str | None, cursor: Cursor, limit: int, *, since: datetime | None = None
    ) -> ListingPage:
        if self.renew is not None:
            self.renew()
        (self.spend if cursor is None else self.spend_next)()
        return self.client.list_page(customer_id, cursor, limit, since=since)


@dataclass(frozen=True)
class ReadResult:
    """What ``ListingReader.read`` did: the jobs it confirmed, and what it read."""

    confirmed: set[str]
    read: ListingRead
    matches: Matches


class ListingReader:
    """Reads a listing for a set of jobs and confirms each one it shows."""

    def __init__(
        self, mover: Mover, clients: Callable[[Provider], ProviderClient], window: MatchWindow
    ) -> None:
        self.mover = mover
        self.store, self.clock = mover.store, mover.clock
        self.clients = clients
        self.window = window

    def read(
        self,
        provider: str,
        customer_id: str | None,
        jobs: Mapping[str, Job],
        targets: list[str],
        claimed: set[str],
        everyone: Callable[[], Mapping[str, Job]] | None = None,
        renew: Callable[[], None] | None = None,
        *,
        turn: tuple[str, int],
    ) -> ReadResult:
        """Read one listing (a customer's, or with None the provider's) as far as ``targets``
        need, and confirm every job of ``jobs`` (that listing's pending jobs) it shows.

        The read pages only until every target is matched, or it is complete back to the
        oldest of them (``matching.read_back``): jobs submitted a moment ago are most likely
        not visible yet, and paging back for them would spend the budget for nothing; they
        are confirmed if the pages read show them anyway. A job whose POST may never have
        applied (``submitting``) is confirmed only by its own marker, never by amount and
        time. ``everyone`` loads every waiting job of the listing, when ``_needs_everyone``
        says so. Duplicates and copied markers the read shows raise alarms. ``turn`` is the
        ticket and class its first page's slot is taken in (``worker.budget``).
        """
        pending = {key: self.pending(job) for key, job in jobs.items()}
        name = Provider(provider)
        client = _BudgetedListing(
            self.clients(name),
            lambda: self.mover.spend(name, *turn),
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
        self.mover.answered(provider)
        if everyone is not None and self._needs_everyone(read.entries, pending, targets):
            jobs = everyone()
            pending = {key: self.pending(job) for key, job in jobs.items()}
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

    def pending(self, job: Job) -> PendingGrant:
        since = job.number(F.FIRST_POST_AT) or job.state_at
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
            submitted_at = job.number(F.SUBMITTED_AT) or job.number(F.FIRST_POST_AT) or job.state_at
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
            if job.state is JobState.SUBMITTED and (at := job.number(F.SUBMITTED_AT)):
                accepted.append((at, item.visible_after))
            log.info(
                "key=%s provider=%s %s -> confirmed attempt=%d: seen in the listing as %s",
                job.idempotency_key,
                job.provider,
                job.state.value,
                job.attempts,
                item.ref,
            )
        provider = jobs[next(iter(found))].provider if found else ""  # one listing, one provider
        self.store.remember_confirmed(
            provider,
            {jobs[k].marker: f"{k} {found[k].ref}" for k in confirmed},
            [now - jobs[k].created_at for k in confirmed],  # enqueue to confirmed, /metrics
            now,
        )
        if accepted:  # what the listing has shown: the witness and the lag (pipeline.outcome)
            self.store.record_visibility(
                provider, max(a for a, _ in accepted), max(t for _, t in accepted), now
            )
        return confirmed
