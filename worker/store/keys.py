"""Every Redis key name creditq uses, spelled in one place: the job store's (``Keys``) and the
request budgets' (``BudgetKeys``).

The Lua scripts (``worker/store/lua``) spell no key name or prefix: they are passed the
names, or the prefixes they complete with what they read from a job (a provider, a
customer, a state, a reason class), from here.
"""

from __future__ import annotations

from worker.domain.grant import Provider
from worker.domain.states import JobState

PREFIX = "creditq"
HISTORY_LIMIT = 200  # a job that needs more moves than this has a bug; keep memory bounded


class Keys:
    """The one place Redis key names are spelled."""

    @staticmethod
    def job(idempotency_key: str) -> str:
        return f"{Keys.JOB_PREFIX}{idempotency_key}"

    # Job hashes and history lists live under different prefixes, each followed by the
    # producer's key and nothing else: a key that looks like one of creditq's own names
    # (``order-9:history``) can never address another job's record. The key is the tail of
    # every name that holds it, so two distinct keys never share a name.
    JOB_PREFIX = f"{PREFIX}:job:"
    HISTORY_PREFIX = f"{PREFIX}:history:"

    @staticmethod
    def history(idempotency_key: str) -> str:
        return f"{Keys.HISTORY_PREFIX}{idempotency_key}"

    INDEX_PREFIX = f"{PREFIX}:state:"
    # Jobs waiting in submitting/submitted, per provider and customer: one listing read
    # confirms every job it shows.
    PENDING_PREFIX = f"{PREFIX}:pending:"
    # Unfinished jobs per provider and lane, by when they were accepted (or replayed): what
    # waits, and for how long, in each lane (``creditq stats``).
    WAITING_PREFIX = f"{PREFIX}:waiting:"

    @staticmethod
    def waiting(provider: str, lane: str) -> str:
        return f"{Keys.WAITING_PREFIX}{provider}:{lane}"

    @staticmethod
    def batch(name: str) -> str:
        """The keys handed over under a batch name, by when (``creditq batch status``)."""
        return f"{PREFIX}:batch:{name}"

    # When each unfinished job should next be worked on; the reconciler re-drives the overdue.
    DUE = f"{PREFIX}:due"
    # The store's era: raised when the store is found on a promoted replica (era.lua).
    ERA = f"{PREFIX}:era"

    @staticmethod
    def index(state: JobState, provider: str | None = None) -> str:
        """Every job in ``state``, or (``provider`` given) the provider's only: the console's
        and the metrics' counts per state and provider are one ZCARD each."""
        if provider is None:
            return f"{Keys.INDEX_PREFIX}{state.value}"
        return f"{Keys.INDEX_PREFIX}{state.value}:{provider}"

    @staticmethod
    def pending(provider: str, customer_id: str | None) -> str:
        """Per customer, or (``None``) for every customer of the provider."""
        if customer_id is None:
            return f"{Keys.PENDING_PREFIX}{provider}"
        return f"{Keys.PENDING_PREFIX}{provider}:{customer_id}"

    # Ledger entries already used to confirm a job, per provider and customer: each entry
    # confirms one job only.
    CLAIMED_PREFIX = f"{PREFIX}:claimed:"

    @staticmethod
    def claimed(provider: str, customer_id: str) -> str:
        return f"{Keys.CLAIMED_PREFIX}{provider}:{customer_id}"

    # The dead-letter queue: every rejected or dead job, by time, and by provider and by
    # reason class, so filtered listings stay range reads at 100,000 entries.
    DLQ_PREFIX = f"{PREFIX}:dlq:"
    DLQ_ALL = f"{DLQ_PREFIX}all"
    DLQ_BY_PROVIDER = f"{DLQ_PREFIX}provider:"  # the provider follows
    DLQ_BY_REASON = f"{DLQ_PREFIX}reason:"  # the reason class follows

    @staticmethod
    def dlq(provider: str | None = None, reason: str | None = None) -> str:
        if provider is not None:
            return f"{Keys.DLQ_BY_PROVIDER}{provider}"
        if reason is not None:
            return f"{Keys.DLQ_BY_REASON}{reason}"
        return Keys.DLQ_ALL

    @staticmethod
    def dlq_layout() -> list[str]:
        """The DLQ sets as the scripts take them (``dlq.lua``): all, then the per-provider
        and the per-reason prefixes."""
        return [Keys.DLQ_ALL, Keys.DLQ_BY_PROVIDER, Keys.DLQ_BY_REASON]

    @staticmethod
    def learned_delay(provider: str) -> str:
        """The learned delay before a listing first shows a credit (see LearnedLag)."""
        return f"{PREFIX}:lag:{provider}"

    @staticmethod
    def confirming(provider: str) -> str:
        """Set while a confirmation sweep of the provider is scheduled: one sweep serves
        every pending job of the provider."""
        return f"{PREFIX}:confirming:{provider}"

    @staticmethod
    def sweeping(provider: str) -> str:
        """Held (the sweep's token) while a confirmation sweep of the provider runs: sweeps
        never overlap, so none reads a listing or confirms a job another has just settled."""
        return f"{PREFIX}:sweeping:{provider}"

    @staticmethod
    def sweep_wanted(provider: str) -> str:
        """Set by a sweep that found another running: the running one, when it ends,
        schedules the next at once instead of leaving it to a countdown."""
        return f"{PREFIX}:sweep-wanted:{provider}"

    @staticmethod
    def latency(provider: str) -> str:
        """The enqueue-to-confirmed times of the provider's grants, as a histogram: one hash
        field per bucket (``le`` its upper bound, non-cumulative), plus ``count`` and ``sum``."""
        return f"{PREFIX}:latency:{provider}"

    # When a reconcile pass last ran: beat schedules one every interval, so its age says
    # whether beat (and a worker to run it) is alive (``python -m worker.app.health beat``).
    RECONCILED_AT = f"{PREFIX}:reconciled-at"

    # Counters of work done for nothing (e.g. ``confirm_again``: a confirmation refused
    # because the job was confirmed already), read by the benchmarks and by operators.
    COUNTERS = f"{PREFIX}:counters"

    @staticmethod
    def visibility(provider: str) -> str:
        """What the provider's listing has shown lately: the newest credit it showed (when
        it was accepted) and the longest any took to show (see ``JobStore.visibility``)."""
        return f"{PREFIX}:visibility:{provider}"

    # Jobs with an alarm raised (a duplicate credit, a copied marker), by when it was raised.
    ALARMS = f"{PREFIX}:alarms"

    @staticmethod
    def confirmed_markers(provider: str, hour: int) -> str:
        """The markers confirmed in one hour: marker -> "key ref", so that a later read
        showing a confirmed job's marker on another entry raises a duplicate alarm."""
        return f"{PREFIX}:markers:{provider}:{hour}"

    # Ledger entries an alarm was raised for: each is raised (and logged) once.
    ALARMED_REFS = f"{PREFIX}:alarmed"


class BudgetKeys:
    """The budget's Redis key names (``worker.budget``); all but the 429 total expire.

    ``tat``: when the next slot opens (server microseconds), gone once in the past.
    ``pause``: until when the fleet is paused, gone with the pause. ``strikes``: 429s in
    a row for the backoff, deleted by a success, gone a grace after the pause.
    ``rate_limited_total``: one integer. ``minute:<n>``: a hash per minute (``calls``,
    ``s<second>``, ``rate_limited``, ``confirmed``), gone after an hour. ``queue``,
    ``promised``, ``lanes``: the turns of the callers waiting for a slot, gone half an hour
    after the last caller.
    """

    @staticmethod
    def base(provider: Provider) -> str:
        return f"{PREFIX}:budget:{provider.value}"

    @staticmethod
    def tat(provider: Provider) -> str:
        return f"{BudgetKeys.base(provider)}:tat"

    @staticmethod
    def pause(provider: Provider) -> str:
        return f"{BudgetKeys.base(provider)}:pause"

    @staticmethod
    def strikes(provider: Provider) -> str:
        return f"{BudgetKeys.base(provider)}:strikes"

    @staticmethod
    def rate_limited_total(provider: Provider) -> str:
        return f"{BudgetKeys.base(provider)}:rate_limited_total"

    @staticmethod
    def queue(provider: Provider) -> str:
        """The tickets waiting for a slot, by class and arrival (``budget_turn.lua``)."""
        return f"{BudgetKeys.base(provider)}:queue"

    @staticmethod
    def promised(provider: Provider) -> str:
        """Per waiting ticket, when its owner said it would come back."""
        return f"{BudgetKeys.base(provider)}:promised"

    @staticmethod
    def lanes(provider: Provider) -> str:
        """The ticket counter (``seq``) and the interactive slots in a row while bulk
        tickets waited (``owed``)."""
        return f"{BudgetKeys.base(provider)}:lanes"

    @staticmethod
    def minute_prefix(provider: Provider) -> str:
        """The scripts append the server's minute number (epoch seconds // 60)."""
        return f"{BudgetKeys.base(provider)}:minute:"
