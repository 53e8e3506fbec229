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

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from worker.backoff import retry_delay
from worker.errors import (
    IdempotencyConflict,
    InvalidGrant,
    MissingCredentials,
    TransitionRefused,
)
from worker.job import Job, iso
from worker.keys import Keys
from worker.lag import LearnedLag
from worker.models import CreditGrant, Provider, check_idempotency_key, marker_for
from worker.providers.base import LedgerEntry, ListingPage, Outcome, ProviderClient, ProviderError
from worker.providers.matching import MatchWindow, PendingGrant, collect_entries, match_entries
from worker.scheduler import Scheduler
from worker.settings import Settings
from worker.states import DlqReason, JobState
from worker.store import JobStore, Move, PostStart

log = logging.getLogger("creditq.pipeline")

# Chargebee keeps an idempotency key's answer for 30 minutes; stay well inside it.
CHARGEBEE_REPLAY_WINDOW_SECONDS = 25 * 60
# Providers whose listing spans every customer, newest first (Chargebee's
# customer_id[is] filter is optional): one read confirms the whole provider's pending
# grants. Inveterate lists one member at a time.
PROVIDER_WIDE_LISTING = frozenset({Provider.CHARGEBEE})
LISTING_PAGE_MAX = 100  # Chargebee's largest page
# A sweep reads at most this many listings; the rest are read by the next one, scheduled
# at once, so one task never holds a worker thread for long.
MAX_READS_PER_SWEEP = 25


def listing_scope(provider: str, customer_id: str) -> str | None:
    """Whose listing confirms this job: the customer's, or (None) the whole provider's."""
    return None if Provider(provider) in PROVIDER_WIDE_LISTING else customer_id


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
            max_attempts=s.max_attempts, backoff_base=s.backoff_base_seconds,
            backoff_max=s.backoff_max_seconds, confirm_deadline=s.confirm_deadline_seconds,
            first_poll=s.confirm_first_poll_seconds, batch=s.confirm_batch_seconds,
            poll_max=s.confirm_poll_max_seconds,
            settle=s.settle_seconds, lease=4 * s.http_timeout_seconds + 10,
            grace=s.reconcile_grace_seconds,
        )  # fmt: skip


class Budget(Protocol):
    """The fleet-wide request budget of one provider account (``worker.budget``)."""

    def try_acquire(self) -> float: ...

    def pause_after_429(self, retry_after: float | None) -> float: ...

    def record_confirmed(self, n: int = 1) -> None: ...

    def slot_request(self) -> tuple[list[str], list[str | int]]: ...


class NoSlot(Exception):
    """No budget slot now: the work goes back to the broker for ``wait`` seconds."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"no request slot for {wait:.2f}s")
        self.wait = wait


class _BudgetedListing:
    """A client whose every listing page first takes a slot of the provider's budget."""

    def __init__(self, client: ProviderClient, spend: Callable[[], None]) -> None:
        self.client = client
        self.spend = spend

    def list_page(self, customer_id: str | None, cursor: str | None, limit: int) -> ListingPage:
        self.spend()
        return self.client.list_page(customer_id, cursor, limit)


Failure = ProviderError | InvalidGrant | MissingCredentials


def error_record(err: Failure, now: float) -> dict[str, Any]:
    """What the job keeps of a failure: class, status and the provider's message, never a key."""
    if isinstance(err, ProviderError):
        return {"class": err.outcome.value, "status": err.status, "message": err.message,
                "code": err.code, "at": iso(now)}  # fmt: skip
    kind = "validation" if isinstance(err, InvalidGrant) else "configuration"
    return {"class": kind, "status": None, "message": str(err), "at": iso(now)}


class Pipeline:
    def __init__(
        self,
        store: JobStore,
        scheduler: Scheduler,
        clients: Callable[[Provider], ProviderClient],
        policy: Policy,
        budgets: Callable[[Provider], Budget | None] = lambda _: None,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        window: MatchWindow | None = None,
    ) -> None:
        self.store = store
        self.scheduler = scheduler
        self.clients = clients
        self.policy = policy
        self.budgets = budgets
        self.clock = clock
        self.rng = rng or random.Random()
        self.window = window or MatchWindow()
        self.lag = LearnedLag(store, policy.first_poll, policy.poll_max, clock)

    # -- issue ----------------------------------------------------------------------

    def issue(self, message: Mapping[str, Any]) -> str:
        """Handle one issue message; returns a word saying what happened (for logs and tests)."""
        key = message.get("idempotency_key")
        try:
            key = check_idempotency_key(key if isinstance(key, str) else None)
        except InvalidGrant as exc:
            log.warning("dropped an issue message without a usable key: %s", exc)
            return "dropped"
        begun = self._begin_post(message)
        if begun is None:
            job = self.store.get(key, history=False)
        else:
            started, grant = begun
            if started.outcome == "started" and started.job is not None:
                return self._post(started.job, grant)
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
        try:
            return self._issue_job(job)
        except TransitionRefused as exc:  # another delivery moved the job first
            log.info("lost a race: %s", exc)
            return "lost race"

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
            self._move(job, JobState.REJECTED, f"invalid: {exc}", dlq=DlqReason.INVALID,
                       fields={"last_error": error_record(exc, self.clock())})  # fmt: skip
            return "rejected"
        if job.state is JobState.QUEUED and job.extra.get("reconcile_first"):
            # Replayed from the DLQ after a POST that may have applied (a credit that
            # showed up late, an outcome never learned): the listing speaks first.
            job, _ = self._move(job, JobState.SUBMITTING, "replayed: check the listing first",
                                fields={"reconcile_first": None}, due=self.clock())  # fmt: skip
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
            flag=(Keys.confirming(job.provider), self.policy.grace, token),
        )  # fmt: skip
        if flagged:
            self.scheduler.confirm(job.provider, "", 0.0, token)
        return "awaiting confirmation"

    def _submit(self, job: Job, grant: CreditGrant, *, unknown_resolved: bool = False) -> str:
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
        job, _ = self._move(job, JobState.SUBMITTING, f"POST attempt {attempt}", attempts="incr",
                            fields={"first_post_at": job.number("first_post_at") or now,
                                    "last_post_at": now,
                                    "in_flight_until": now + self.policy.lease,
                                    **({"outcome_unknown": None} if unknown_resolved else {})},
                            due=now + self.policy.lease)  # fmt: skip
        return self._post(job, grant)

    def _post(self, job: Job, grant: CreditGrant) -> str:
        """The POST of a job just moved into ``submitting`` (its lease), and what follows."""
        try:
            result = self.clients(grant.provider).submit(grant)
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
            flag=(Keys.confirming(job.provider),
                  first_read + self.policy.batch + self.policy.grace, token),
        )  # fmt: skip
        if flagged:  # no sweep of this provider is scheduled yet: schedule one
            self.scheduler.confirm(job.provider, "", first_read + self.policy.batch, token)
        return "submitted"

    def _after_error(self, job: Job, grant: CreditGrant, err: ProviderError, attempt: int) -> str:
        now = self.clock()
        record = error_record(err, now)
        done = {"last_error": record, "in_flight_until": None}
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
            if not rate_limited and attempt >= self.policy.max_attempts:
                self._move(job, JobState.DEAD, f"attempts exhausted; last: {err}",
                           dlq=DlqReason.EXHAUSTED, fields=done)  # fmt: skip
                return "dead"
            delay = retry_delay(attempt, self.policy.backoff_base, self.policy.backoff_max,
                                wait, self.policy.backoff_max, self.rng)  # fmt: skip
            # This try surely did not apply, but if an earlier one may have, the job stays
            # "outcome unknown" (queued would claim nothing applied) and is resolved first.
            unknown = bool(job.extra.get("outcome_unknown"))
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
                            fields={**done, "outcome_unknown": "1"}, due=now + wait)  # fmt: skip
        self.scheduler.issue(dict(job.grant_fields), wait)
        return "outcome unknown"

    def _unknown_wait(self, grant: CreditGrant, attempt: int) -> float:
        if grant.provider is Provider.CHARGEBEE:  # a same-key retry is answered from the record
            return retry_delay(attempt, self.policy.backoff_base, self.policy.backoff_max,
                               None, self.policy.backoff_max, self.rng)  # fmt: skip
        return self.policy.settle

    def _resolve_unknown(self, job: Job, grant: CreditGrant) -> str:
        """A ``submitting`` job: learn whether its last POST applied before any new one."""
        now = self.clock()
        in_flight_until = job.number("in_flight_until")
        if in_flight_until is not None and now < in_flight_until:
            self._issue_later(job, in_flight_until - now)  # another delivery's POST is in flight
            return "post in flight"
        first_post = job.number("first_post_at")
        last_post = job.number("last_post_at") or job.state_at
        if first_post is None:
            return self._submit(job, grant)
        if (grant.provider is Provider.CHARGEBEE and job.attempts < self.policy.max_attempts
                and now - first_post < CHARGEBEE_REPLAY_WINDOW_SECONDS):  # fmt: skip
            return self._submit(job, grant)  # answered from Chargebee's record if it applied
        ready_at = last_post + self.policy.settle
        if now < ready_at:
            self._issue_later(job, ready_at - now)
            return "settling"
        try:
            confirmed = self._confirm_focus(job)
        except NoSlot as slot:
            self._issue_later(job, slot.wait)
            return "waiting for a request slot"
        except ProviderError as err:
            self._issue_later(job, self._listing_retry(job.provider, err))
            return "listing unavailable"
        if confirmed:
            return "confirmed"
        if job.attempts >= self.policy.max_attempts:
            reason = "attempts exhausted; last outcome unknown and not in the listing"
            return self._give_up(job, reason, DlqReason.EXHAUSTED)
        # Absent after the lag settled: no earlier try applied.
        return self._submit(job, grant, unknown_resolved=True)

    # -- confirm --------------------------------------------------------------------

    def confirm(self, provider: str, customer_id: str, token: str = "") -> str:
        """A scheduled confirmation sweep of one provider (``customer_id`` empty) or of one
        customer: read every listing that has jobs due (Chargebee's one provider-wide
        listing, or one per Inveterate member), confirm every pending job a read shows,
        bury those past the deadline, and schedule one next sweep for the rest.

        One task reads several listings: a read per Celery task would cost a message, a
        delivery and three events each, for a call that takes one budget slot. ``token``
        names the sweep: a message whose sweep was superseded by a newer schedule (the
        provider's marker names another token) does nothing, so sweeps never run twice over.
        """
        if customer_id:
            keys = self.store.confirmation_work(provider, customer_id)
        else:
            keys, superseded = self.store.start_sweep(provider, token)
            if superseded:
                return "superseded"
        jobs = self._waiting_jobs(keys)
        due = {key: due for key, (_, due) in jobs.items()}
        now = self.clock()
        groups: dict[str | None, dict[str, Job]] = {}
        for key, (job, _) in jobs.items():
            groups.setdefault(self._scope(job), {})[key] = job
        # The listings with a job due, the longest-waiting first.
        reads = sorted(
            ((min(due[k] or 0.0 for k in targets), scope, targets)
             for scope, group in groups.items() if (targets := self._due(group, due, now))),
            key=lambda read: read[0],
        )  # fmt: skip
        claimed = self.store.claimed_many(provider, [s for _, s, _ in reads if s is not None])
        confirmed: set[str] = set()
        read: set[str] = set()  # keys whose listing was read
        learned: list[tuple[int, list[Job]]] = []  # per read: found, due jobs missed
        retry: float | None = None  # when to sweep again for listings left unread
        for n, (_, scope, targets) in enumerate(reads):
            if n == MAX_READS_PER_SWEEP:
                retry = 0.0
                break
            try:
                found = self._read_listing(provider, scope, groups[scope], targets,
                                           claimed.get(scope or "", set()))  # fmt: skip
            except NoSlot as slot:
                retry = slot.wait
                break
            except ProviderError as err:
                wait = self._listing_retry(provider, err)
                retry = wait if retry is None else min(retry, wait)
                continue
            confirmed |= found
            read.update(targets)
            learned.append((len(found), [groups[scope][k] for k in targets if k not in found]))
        now = self.clock()
        self.lag.learn(Provider(provider), learned)
        next_reads = self._next_reads(
            [job for key, (job, _) in jobs.items() if key not in confirmed], due, read, now
        )
        # Listings left unread are swept again at ``retry``; the rest when their next is due.
        times = [t for k, t in next_reads.items() if k in read or t > now]
        delay = min(times) - now + self.policy.batch if times else None
        if retry is not None:
            self._schedule_confirm(provider, retry if delay is None else min(delay, retry),
                                   force=True)  # fmt: skip
        elif delay is not None:
            self._schedule_confirm(provider, delay)
        unread = len(reads) - len({self._scope(jobs[k][0]) for k in read})
        return f"confirmed {len(confirmed)}, waiting {len(next_reads)}, listings unread {unread}"

    def _waiting_jobs(self, keys: list[str]) -> dict[str, tuple[Job, float | None]]:
        """The jobs among ``keys`` still waiting for the listing, with when each is due."""
        found, due = self.store.get_with_due(keys)
        waiting = (JobState.SUBMITTING, JobState.SUBMITTED)
        return {j.idempotency_key: (j, due.get(j.idempotency_key)) for j in found
                if j is not None and j.state in waiting}  # fmt: skip

    @staticmethod
    def _due(group: Mapping[str, Job], due: Mapping[str, float | None], now: float) -> list[str]:
        """The jobs a read is for: accepted (``submitted``) and due. A job whose POST may not
        have applied is the issue path's to resolve; it is confirmed if a read shows it."""
        return [k for k, j in group.items() if j.state is JobState.SUBMITTED
                and (due.get(k) or 0.0) <= now + 0.05]  # fmt: skip

    def _next_reads(self, waiting: list[Job], due: Mapping[str, float | None],
                    read: set[str], now: float) -> dict[str, float]:  # fmt: skip
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
                    self._move(job, JobState.DEAD,
                               f"not visible in the listing {waited:.0f}s after it was accepted",
                               dlq=DlqReason.NOT_VISIBLE)  # fmt: skip
                continue
            own = due.get(key)
            if key not in read:
                next_reads[key] = own if own is not None else now
                continue
            # Each read waits about half the time already waited: frequent while the lag
            # is young, sparse for a late credit, never past the deadline.
            delay = min(self.policy.poll_max, max(first_read, waited / 2),
                        self.policy.confirm_deadline - waited + 0.01)  # fmt: skip
            next_reads[key] = now + delay
        self.store.set_due_many({k: t for k, t in next_reads.items() if k in read})
        return next_reads

    def _confirm_focus(self, job: Job) -> bool:
        """Read the job's listing for it alone (the issue path resolving an unknown
        outcome); every other pending job the read shows is confirmed too."""
        scope = self._scope(job)
        jobs = {k: j for k, (j, _) in self._waiting_jobs(
            self.store.confirmation_work(job.provider, scope)).items()}  # fmt: skip
        if job.idempotency_key not in jobs:
            return False
        claimed = self.store.claimed_many(job.provider, [scope]) if scope else {}
        confirmed = self._read_listing(job.provider, scope, jobs, [job.idempotency_key],
                                       claimed.get(scope or "", set()))  # fmt: skip
        return job.idempotency_key in confirmed

    def _read_listing(self, provider: str, customer_id: str | None, jobs: Mapping[str, Job],
                      targets: list[str], claimed: set[str]) -> set[str]:  # fmt: skip
        """Read one listing (a customer's, or with None the provider's) as far as ``targets``
        need, and confirm every job of ``jobs`` (that listing's pending jobs) it shows.

        The read pages only until every target is matched, or the entries are older than the
        oldest of them: jobs submitted a moment ago are most likely not visible yet, and
        paging back for them would spend the budget for nothing; they are confirmed if the
        pages read show them anyway. Jobs the provider surely accepted (``submitted``) choose
        unmarked entries before jobs whose POST may never have applied (``submitting``), so
        a credit is never spent on a doubtful job while a certain one goes without.
        """
        pending = {key: self._pending(job) for key, job in jobs.items()}
        client = _BudgetedListing(self.clients(Provider(provider)),
                                  lambda: self._spend(Provider(provider)))  # fmt: skip
        # A page a little larger than the jobs due: they sit among the newest entries, and a
        # smaller page is less for the provider to send and for us to parse.
        page = min(LISTING_PAGE_MAX, 2 * len(targets) + 10)
        entries = collect_entries(client, customer_id, [pending[k] for k in targets],  # type: ignore[arg-type]
                                  claimed=claimed, window=self.window, page_size=page)  # fmt: skip
        certain = [p for k, p in pending.items() if jobs[k].state is JobState.SUBMITTED]
        doubtful = [p for k, p in pending.items() if jobs[k].state is JobState.SUBMITTING]
        found = match_entries(certain, entries, claimed, self.window)
        taken = claimed | {e.ref for e in found.values()}
        found.update(match_entries(doubtful, entries, taken, self.window))
        confirmed = self._confirm_found(jobs, found)
        budget = self.budgets(Provider(provider))
        if confirmed and budget is not None:
            budget.record_confirmed(len(confirmed))
        return confirmed

    def _pending(self, job: Job) -> PendingGrant:
        since = job.number("first_post_at") or job.state_at
        return PendingGrant(job.idempotency_key, job.customer_id,
                            Decimal(str(job.grant_fields["amount"])),
                            marker_for(job.idempotency_key),
                            datetime.fromtimestamp(since, UTC))  # fmt: skip

    def _confirm_found(self, jobs: Mapping[str, Job], found: Mapping[str, LedgerEntry]) -> set[str]:
        """Confirm every job a read found, in one round trip; each move is still its own
        compare-and-set, and one whose entry another job claimed (or that another worker
        moved first) simply stays pending."""
        now = self.clock()
        moves = []
        for key, entry in found.items():
            job = jobs[key]
            submitted_at = job.number("submitted_at") or job.number("first_post_at") or job.state_at
            created = entry.created_at.isoformat() if entry.created_at else None
            matched_by = "marker" if entry.marker else "amount and time"
            entry_json = {"ref": entry.ref, "amount": str(entry.amount), "created_at": created,
                          "matched_by": matched_by}  # fmt: skip
            fields = {"provider_ref": job.provider_ref or entry.ref, "provider_entry": entry_json,
                      "confirmed_at": now, "in_flight_until": None, "outcome_unknown": None,
                      "visible_after_seconds": round(now - submitted_at, 3)}  # fmt: skip
            moves.append(Move(key, JobState.CONFIRMED, f"seen in the listing as {entry.ref}",
                              expect=[job.state], version=job.version, claim=entry.ref,
                              fields=fields))  # fmt: skip
        confirmed: set[str] = set()
        for move, outcome in zip(moves, self.store.transition_many(moves), strict=True):
            job = jobs[move.idempotency_key]
            if isinstance(outcome, TransitionRefused):
                log.info("not confirmed: %s", outcome)
                continue
            confirmed.add(move.idempotency_key)
            log.info("key=%s provider=%s %s -> confirmed attempt=%d: %s", job.idempotency_key,
                     job.provider, job.state.value, job.attempts, move.reason)  # fmt: skip
        return confirmed

    def _listing_retry(self, provider: str, err: ProviderError) -> float:
        """A listing read failed: nothing about any job changed; when to read again."""
        wait = err.retry_after
        budget = self.budgets(Provider(provider))
        if err.status == 429 and budget is not None:
            wait = budget.pause_after_429(err.retry_after)
        delay = retry_delay(2, self.policy.backoff_base, self.policy.backoff_max, wait,
                            self.policy.backoff_max, self.rng)  # fmt: skip
        log.warning("listing read failed provider=%s: %s; again in %.1fs", provider, err, delay)
        return delay

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

    # -- plumbing -------------------------------------------------------------------

    def _spend(self, provider: Provider) -> None:
        budget = self.budgets(provider)
        if budget is not None:
            wait = budget.try_acquire()
            if wait > 0:
                raise NoSlot(wait)

    @staticmethod
    def _scope(job: Job) -> str | None:
        return listing_scope(job.provider, job.customer_id)

    def _sweep_token(self) -> str:
        """Names one scheduled confirmation sweep (``confirm``): it only has to differ from
        the other sweeps scheduled around the same time, so no system entropy is spent."""
        return f"{self.rng.getrandbits(48):012x}"

    def _schedule_confirm(self, provider: str, delay: float, *, force: bool = False) -> None:
        """One scheduled sweep serves all the provider's pending jobs: the marker names it,
        and expires a grace after it was due, so a lost message cannot block the next one.
        ``force`` schedules this sweep even if one is scheduled, superseding that one."""
        token = self._sweep_token()
        marker = Keys.confirming(provider)
        if self.store.take_flag(marker, delay + self.policy.grace, token, replace=force):
            self.scheduler.confirm(provider, "", delay, token)

    def _issue_later(self, job: Job, delay: float) -> None:
        self.store.set_due(job.idempotency_key, self.clock() + delay)
        self.scheduler.issue(dict(job.grant_fields), delay)

    def _give_up(self, job: Job, reason: str, why: DlqReason) -> str:
        self._move(job, JobState.DEAD, reason, dlq=why)
        return "dead"

    def _move(self, job: Job, target: JobState, reason: str, *, attempts: str = "keep",
              fields: Mapping[str, Any] | None = None, due: float | None = None,
              claim: str | None = None, dlq: DlqReason | None = None,
              flag: tuple[str, float, str] | None = None) -> tuple[Job, bool]:  # fmt: skip
        """One compare-and-set from the job exactly as it was read (its version), and its
        log line. Returns the job as it now stands and whether ``flag`` was set."""
        moved = self.store.transition(job.idempotency_key, target, reason=reason,
                                      expect=[job.state], attempts=attempts, fields=fields,
                                      due=due, claim=claim, dlq_reason=dlq,
                                      version=job.version, flag=flag)  # fmt: skip
        count = job.attempts + {"incr": 1, "decr": -1, "reset": -job.attempts}.get(attempts, 0)
        log.info("key=%s provider=%s %s -> %s attempt=%d: %s", job.idempotency_key,
                 job.provider, job.state.value, target.value, count, reason)  # fmt: skip
        extra = dict(job.extra)  # what the move wrote, so the next move of this call sees it
        for name, value in (fields or {}).items():
            if value is None:
                extra.pop(name, None)
            else:
                extra[name] = value if isinstance(value, str) else json.dumps(value, default=str)
        now_as = replace(job, state=target, attempts=max(count, 0), version=job.version + 1,
                         extra=extra)  # fmt: skip
        return now_as, moved.flagged
