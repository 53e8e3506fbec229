"""One request budget per provider account, shared by every worker on every machine.

Why a short Lua GCRA and not the ``limits`` library (weighed for issue 9):

- **Round trips.** ``limits``' Redis moving window answers yes/no; the time until the
  next slot, which a task needs to reschedule itself, is a second call
  (``get_window_stats``), made after the first and so already stale. Here one EVALSHA
  takes the slot or returns the wait, and the fleet-wide 429 pause is checked in the
  same call.
- **Clocks.** ``limits`` hands its scripts the caller's ``time.time()``; two workers
  whose clocks differ by a second disagree on the window. The scripts here
  (``worker/store/lua/budget_*.lua``) read Redis' ``TIME``, so every worker uses one
  clock (a script that reads TIME and then writes needs Redis 5 or later, which
  replicates scripts by their effects).
- **Evenness.** A moving window of 100 per minute lets all 100 go in the first second;
  a provider that counts over a shorter window (Chargebee's concurrency limits, the
  sandbox's 3-second window) then sees a burst. GCRA with no burst tolerance spaces the
  calls ``60 / per_minute`` seconds apart, so every sub-window holds its share.
- **Memory.** The moving window keeps one list entry per call in the window; GCRA keeps
  one number, the theoretical arrival time (TAT) of the next slot.

Both are atomic (a Lua script runs alone on the server). ``limits`` would also be a new
dependency for a few short scripts, and its moving window alone does not give us
spacing. Counters for ``creditq stats`` live in one hash per provider and minute, written
by the same scripts and expiring after an hour, so memory stays bounded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from worker.domain.grant import Priority, Provider
from worker.settings import Settings, get_settings
from worker.store import lua
from worker.store.keys import BudgetKeys

# Both providers lift a rate-limit block after about a minute (see DESIGN.md, "Request
# budgets"); each further 429 in a row doubles the pause, up to five minutes.
DEFAULT_PAUSE_SECONDS = 60.0
MAX_PAUSE_SECONDS = 300.0
# A 429 this long after the pause ended starts a new streak even if nobody called
# ``record_success``: an idle queue must not keep the fleet at the longest pause.
STREAK_GRACE_SECONDS = 120
# Minute buckets live a little over an hour: "last hour" sums the last 60 of them.
BUCKET_TTL_SECONDS = 3720
HOUR_MINUTES = 60
# A success ends a 429 streak with one DEL, sent at most this often per process (and at once
# after this process saw a 429): shorter than the 60 s pause, the only pause a streak
# lengthens, so every streak that matters is ended by the first success after it.
SUCCESS_RESET_SECONDS = 30.0

_US = 1_000_000

# The turns (``budget_turn.lua``): how far ahead a caller near the front reserves its slot
# and waits for it in its thread (2.5 slots, within these bounds), how late an owner may
# come back before the others go past it, the longest wait handed out (a countdown well
# under the broker's visibility timeout), and every how many interactive slots one goes to
# a waiting bulk ticket.
HORIZON_SLOTS = 2.5
HORIZON_BOUNDS = (0.3, 1.5)
TURN_GRACE_SECONDS = 2.0
TURN_MAX_WAIT_SECONDS = 300.0
BULK_SHARE = 9

# A ticket's score in the queue: its class times this, plus its arrival (budget_turn.lua's
# CLASS_SPAN).
CLASS_SPAN = 2**40

# A turn's arguments, by name, in the order ``budget_turn.lua`` reads them (its TURN;
# tests/unit/store/test_lua.py keeps the lists equal): the six keys, then the values.
TURN_ARGS = (
    "minute_prefix",
    "pause_key",
    "tat_key",
    "queue_key",
    "promised_key",
    "lanes_key",
    "clock",
    "interval",
    "bucket_ttl",
    "horizon",
    "grace",
    "max_wait",
    "share",
    "ticket",
    "class",
)


def turn_class(priority: Priority | str, *, read: bool) -> int:
    """A ticket's class, the order classes take slots in: interactive listing reads (a
    customer waits on the credit they confirm), interactive POSTs, bulk reads (they finish
    work already paid for, and keep a campaign's early grants inside the confirm
    deadline), bulk POSTs."""
    bulk = Priority(priority) is Priority.BULK
    return 2 * bulk + (0 if read else 1)


# Ticket names: each the same every time its owner asks, so it keeps its place in turn.
SWEEP_TICKET = "sweep"  # the provider's confirmation sweep (one runs at a time)


def post_ticket(idempotency_key: str) -> str:
    """The ticket of a job's POST."""
    return f"post:{idempotency_key}"


def focus_ticket(idempotency_key: str) -> str:
    """The ticket of the listing read that settles a job's unknown outcome."""
    return f"focus:{idempotency_key}"


@dataclass(frozen=True)
class Turn:
    """What taking a turn gave: a slot ``wait`` seconds from now (``granted``: the caller
    waits that long, then calls), or nothing, and when to ask again."""

    granted: bool
    wait: float


class ProviderBudget:
    """The fleet-wide budget of one provider account: ``per_minute`` evenly spaced calls.

    ``clock`` (epoch seconds) replaces the server's ``TIME`` in unit tests only; in
    production every worker must read the one Redis clock.
    """

    def __init__(
        self,
        client: redis.Redis,
        provider: Provider,
        per_minute: int,
        *,
        clock: Callable[[], float] | None = None,
        headroom: float = 1.0,
    ) -> None:
        if per_minute < 1:
            raise ValueError(f"per_minute for {provider.value} must be at least 1")
        if not 0 < headroom <= 1:
            raise ValueError("headroom must be in (0, 1]")
        self.redis = client
        self.provider = provider
        self.per_minute = per_minute
        self.interval_us = round(60 * _US / (per_minute * headroom))
        low, high = HORIZON_BOUNDS
        self.horizon_us = round(min(max(HORIZON_SLOTS * self.interval_us, low * _US), high * _US))
        self._clock = clock
        self._reset_at = -math.inf  # when this process last ended a streak (monotonic)
        self._saw_429 = False
        self._acquire = lua.script(client, "budget_acquire.lua")
        self._reserve = lua.script(client, "budget_reserve.lua")
        self._pause = lua.script(client, "budget_pause.lua")
        self._confirmed = lua.script(client, "budget_confirmed.lua")
        self._snapshot = lua.script(client, "budget_snapshot.lua")
        self._paused_for = lua.script(client, "budget_paused_for.lua")

    def _now_arg(self) -> str:
        return "" if self._clock is None else str(round(self._clock() * _US))

    def try_acquire(self) -> float:
        """Take a slot free now and return 0.0, or take nothing and return the seconds to
        wait: for a caller that holds no ticket (``creditq check``), which goes only when
        nobody waits in turn."""
        return self.try_acquire_at()[0]

    def try_acquire_at(self) -> tuple[float, float]:
        """``try_acquire`` plus the server's time of the decision (epoch seconds).

        Tests and the benchmark check spacing on these stamps: the caller's own clock
        adds its thread scheduling to every gap.
        """
        granted, wait, now = self._turn("", 0)
        return (0.0 if granted else wait), now

    def take_turn(self, ticket: str, klass: int) -> Turn:
        """A slot in turn for ``ticket`` (the same name each time its owner asks, so it
        keeps its place) in class ``klass`` (``turn_class``): reserved, and ``wait``
        seconds away, or refused, and when to ask again (``budget_turn.lua``)."""
        granted, wait, _ = self._turn(ticket, klass)
        return Turn(granted, wait)

    def _turn(self, ticket: str, klass: int) -> tuple[bool, float, float]:
        keys, args = self.turn_request(ticket, klass)
        granted, wait, now = self._acquire(keys=keys, args=args)
        return bool(int(granted)), int(wait) / _US, int(now) / _US

    def reserve(self, longest_wait: float) -> float | None:
        """Reserve the next free slot and return the seconds until it (the caller waits that
        long, then calls), or None, reserving nothing, when the provider is paused or the
        slot is more than ``longest_wait`` away.

        For the second and later pages of one listing read: with no burst allowed, a page
        asked for just after the first never finds a free slot, and a read that gave up
        there would start again at page one, for ever at the real budget. A reserved slot
        is nobody else's, so the read advances at the budget's pace.
        """
        keys = [
            BudgetKeys.minute_prefix(self.provider),
            BudgetKeys.pause(self.provider),
            BudgetKeys.tat(self.provider),
        ]
        args: list[str | int] = [
            self._now_arg(),
            self.interval_us,
            BUCKET_TTL_SECONDS,
            round(longest_wait * _US),
        ]
        reserved, wait = self._reserve(keys=keys, args=args)
        return int(wait) / _US if int(reserved) else None

    def waiting(self, klass: int) -> int:
        """How many tickets of class ``klass`` wait for a slot (late owners included)."""
        low, high = klass * CLASS_SPAN, (klass + 1) * CLASS_SPAN - 1
        return int(self.redis.zcount(BudgetKeys.queue(self.provider), low, high))

    def turn_request(self, ticket: str, klass: int) -> tuple[list[str], list[str | int]]:
        """The keys and the other arguments of a turn (``TURN_ARGS``), for a script that
        takes one as one of its steps (``JobStore.begin_post``)."""
        p = self.provider
        keys = [
            BudgetKeys.minute_prefix(p),
            BudgetKeys.pause(p),
            BudgetKeys.tat(p),
            BudgetKeys.queue(p),
            BudgetKeys.promised(p),
            BudgetKeys.lanes(p),
        ]
        args: list[str | int] = [
            self._now_arg(),
            self.interval_us,
            BUCKET_TTL_SECONDS,
            self.horizon_us,
            round(TURN_GRACE_SECONDS * _US),
            round(TURN_MAX_WAIT_SECONDS * _US),
            BULK_SHARE,
            ticket,
            klass,
        ]
        return keys, args

    def _run_pause(self, mode: str, length: str) -> tuple[float, float]:
        p = self.provider
        keys = [
            BudgetKeys.minute_prefix(p),
            BudgetKeys.pause(p),
            BudgetKeys.strikes(p),
            BudgetKeys.rate_limited_total(p),
        ]
        args: list[str | int] = [
            self._now_arg(),
            BUCKET_TTL_SECONDS,
            mode,
            length,
            round(DEFAULT_PAUSE_SECONDS * _US),
            round(MAX_PAUSE_SECONDS * _US),
            STREAK_GRACE_SECONDS,
        ]
        applied, remaining = self._pause(keys=keys, args=args)
        return int(applied) / _US, int(remaining) / _US

    def pause(self, seconds: float) -> None:
        """Pause this provider for the whole fleet; a longer pause in force is kept."""
        self._run_pause("set", str(round(max(seconds, 0.0) * _US)))

    def pause_after_429(self, retry_after: float | None) -> float:
        """Count a 429 and pause the fleet; return the pause now in force, in seconds.

        The pause is ``retry_after`` when the provider sent one, else 60 s doubled for
        each further 429 in a row (60, 120, 240, 300, 300...). The streak ends with
        ``record_success`` or ``STREAK_GRACE_SECONDS`` after the pause ends.
        """
        length = "" if retry_after is None else str(round(max(retry_after, 0.0) * _US))
        self._saw_429 = True
        return self._run_pause("429", length)[1]

    def record_success(self) -> None:
        """A call went through: the next 429 starts a new backoff streak (60 s again).

        Called after every answered call, so it must not cost every call a Redis write: it
        deletes the fleet's strike count at most every ``SUCCESS_RESET_SECONDS`` from one
        process, and at once after this process's own 429.
        """
        now = time.monotonic()
        if not self._saw_429 and now - self._reset_at < SUCCESS_RESET_SECONDS:
            return
        self._saw_429, self._reset_at = False, now
        self.redis.delete(BudgetKeys.strikes(self.provider))

    def record_confirmed(self, n: int = 1) -> None:
        """Count grants confirmed, for calls per confirmed grant in ``creditq stats``."""
        if n < 0:
            raise ValueError("confirmed count must not be negative")
        keys = [BudgetKeys.minute_prefix(self.provider)]
        self._confirmed(keys=keys, args=[self._now_arg(), BUCKET_TTL_SECONDS, n])

    def paused_for(self) -> float:
        """Seconds left of the fleet-wide pause, 0.0 when none is in force."""
        keys = [BudgetKeys.pause(self.provider)]
        return int(self._paused_for(keys=keys, args=[self._now_arg()])) / _US

    def snapshot(self) -> dict[str, Any]:
        """The figures ``creditq stats`` shows for this provider, read in one round trip."""
        keys = [
            BudgetKeys.minute_prefix(self.provider),
            BudgetKeys.pause(self.provider),
            BudgetKeys.rate_limited_total(self.provider),
        ]
        reply = self._snapshot(keys=keys, args=[self._now_arg(), HOUR_MINUTES])
        minute, calls, confirmed, limited, total, paused = (int(v) for v in reply)
        return {
            "provider": self.provider.value,
            "limit_per_minute": self.per_minute,
            "calls_last_minute": minute,
            "calls_last_hour": calls,
            "confirmed_last_hour": confirmed,
            "calls_per_confirmed_grant": round(calls / confirmed, 3) if confirmed else None,
            "rate_limited_total": total,
            "rate_limited_last_hour": limited,
            "paused_for_seconds": paused / _US,
        }


# The fleet spends 97% of each provider's rate. Slots are spaced by Redis time, but a call
# reaches the provider a few milliseconds after its slot, and not always the same few: with
# spacing at exactly the limit, a provider counting arrivals over a sliding window could see
# one call too many. 3% of the interval (3 ms at 600/min) absorbs that jitter.
HEADROOM = 0.97


class Budgets:
    """The budget of every provider, sized from the settings, with ``HEADROOM``."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings | None = None,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        settings = settings or get_settings()
        limits = {
            Provider.INVETERATE: settings.inveterate_rate_limit_per_minute,
            Provider.CHARGEBEE: settings.chargebee_rate_limit_per_minute,
        }
        self._budgets = {
            p: ProviderBudget(client, p, n, clock=clock, headroom=HEADROOM)
            for p, n in limits.items()
        }

    def for_provider(self, provider: Provider) -> ProviderBudget:
        return self._budgets[provider]

    def snapshots(self) -> list[dict[str, Any]]:
        return [budget.snapshot() for budget in self._budgets.values()]
