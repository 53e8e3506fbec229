"""One request budget per provider account, shared by every worker on every machine.

Why a short Lua GCRA and not the ``limits`` library (weighed for issue 9):

- **Round trips.** ``limits``' Redis moving window answers yes/no; the time until the
  next slot, which a task needs to reschedule itself, is a second call
  (``get_window_stats``), made after the first and so already stale. Here one EVALSHA
  takes the slot or returns the wait, and the fleet-wide 429 pause is checked in the
  same call.
- **Clocks.** ``limits`` hands its scripts the caller's ``time.time()``; two workers
  whose clocks differ by a second disagree on the window. The scripts here read Redis'
  ``TIME``, so every worker uses one clock (a script that reads TIME and then writes
  needs Redis 5 or later, which replicates scripts by their effects).
- **Evenness.** A moving window of 100 per minute lets all 100 go in the first second;
  a provider that counts over a shorter window (Chargebee's concurrency limits, the
  sandbox's 3-second window) then sees a burst. GCRA with no burst tolerance spaces the
  calls ``60 / per_minute`` seconds apart, so every sub-window holds its share.
- **Memory.** The moving window keeps one list entry per call in the window; GCRA keeps
  one number, the theoretical arrival time (TAT) of the next slot.

Both are atomic (a Lua script runs alone on the server). ``limits`` would also be a new
dependency for the few lines below, and its moving window alone does not give us
spacing. Counters for ``creditq stats`` live in one hash per provider and minute, written
by the same scripts and expiring after an hour, so memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from worker.domain.grant import Provider
from worker.settings import Settings, get_settings
from worker.store.keys import PREFIX

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

_US = 1_000_000


class BudgetKeys:
    """The one place the budget's Redis key names are spelled; all but the 429 total expire.

    ``tat``: when the next slot opens (server microseconds), gone once in the past.
    ``pause``: until when the fleet is paused, gone with the pause. ``strikes``: 429s in
    a row for the backoff, deleted by a success, gone a grace after the pause.
    ``rate_limited_total``: one integer. ``minute:<n>``: a hash per minute (``calls``,
    ``s<second>``, ``rate_limited``, ``confirmed``), gone after an hour.
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
    def minute_prefix(provider: Provider) -> str:
        """The scripts append the server's minute number (epoch seconds // 60)."""
        return f"{BudgetKeys.base(provider)}:minute:"


# Every script is registered after this prelude. ARGV[1] is the injected clock in
# microseconds, or '' for the server's TIME; ``bucket`` is this minute's counter hash
# (KEYS[1] is its prefix); KEYS[2] is the pause key.
_PRELUDE = """
local now
if ARGV[1] ~= '' then now = tonumber(ARGV[1]) else
  local t = redis.call('TIME'); now = tonumber(t[1]) * 1000000 + tonumber(t[2]) end
local minute = math.floor(now / 60000000)
local bucket = KEYS[1] .. string.format('%d', minute)
local function paused_for()
  local until_us = tonumber(redis.call('GET', KEYS[2]) or '0')
  if until_us > now then return until_us - now end
  return 0
end
"""

# Taking one call slot, as a Lua function so that the job store's BEGIN_POST can take the
# slot and start the job's POST in the same step. Arguments: minute prefix, pause key,
# tat key, clock ('' for the server's TIME), interval us, bucket ttl.
# Returns {0 (slot taken) or the microseconds to wait, the time of the decision}.
SLOT_FN = """
local function take_slot(minute_prefix, pause_key, tat_key, clock, interval, bucket_ttl)
  local now
  if clock ~= '' then now = tonumber(clock) else
    local t = redis.call('TIME'); now = tonumber(t[1]) * 1000000 + tonumber(t[2]) end
  local paused_until = tonumber(redis.call('GET', pause_key) or '0')
  if paused_until > now then return {paused_until - now, now} end
  local tat = tonumber(redis.call('GET', tat_key) or '0')
  if tat > now then return {tat - now, now} end
  interval = tonumber(interval)
  redis.call('SET', tat_key, string.format('%d', now + interval),
    'PX', math.ceil(interval / 1000) + 1000)
  local bucket = minute_prefix .. string.format('%d', math.floor(now / 60000000))
  redis.call('HINCRBY', bucket, 'calls', 1)
  redis.call('HINCRBY', bucket, 's' .. (math.floor(now / 1000000) % 60), 1)
  redis.call('EXPIRE', bucket, bucket_ttl)
  return {0, now}
end
"""

# KEYS: minute prefix, pause, tat. ARGV: clock, interval us, bucket ttl.
_ACQUIRE = SLOT_FN + "return take_slot(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3])\n"

# Reserving the next free slot, even if it is in the future: the slot is this caller's, and
# nobody else's, at the time returned. Refused (nothing changed) when the provider is paused
# or the slot is further away than the caller will wait.
# KEYS: minute prefix, pause, tat. ARGV: clock, interval us, bucket ttl, longest wait us.
# Returns {1 reserved or 0 refused, microseconds until the slot}.
_RESERVE = """
local now
if ARGV[1] ~= '' then now = tonumber(ARGV[1]) else
  local t = redis.call('TIME'); now = tonumber(t[1]) * 1000000 + tonumber(t[2]) end
local paused_until = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused_until > now then return {0, paused_until - now} end
local at = math.max(tonumber(redis.call('GET', KEYS[3]) or '0'), now)
if at - now > tonumber(ARGV[4]) then return {0, at - now} end
local interval = tonumber(ARGV[2])
redis.call('SET', KEYS[3], string.format('%d', at + interval),
  'PX', math.ceil((at + interval - now) / 1000) + 1000)
local bucket = KEYS[1] .. string.format('%d', math.floor(at / 60000000))
redis.call('HINCRBY', bucket, 'calls', 1)
redis.call('HINCRBY', bucket, 's' .. (math.floor(at / 1000000) % 60), 1)
redis.call('EXPIRE', bucket, ARGV[3])
return {1, at - now}
"""

# KEYS: minute prefix, pause, strikes, rate-limited total. ARGV: clock, bucket ttl,
# mode ('set': pause ARGV[4] us; '429': count it, ARGV[4] is Retry-After us or ''),
# length us, default us, max us, grace s. Returns {pause applied us, remaining us}.
_PAUSE = """
local length
if ARGV[3] == '429' then
  local strikes = redis.call('INCR', KEYS[3])
  redis.call('INCR', KEYS[4])
  redis.call('HINCRBY', bucket, 'rate_limited', 1)
  redis.call('EXPIRE', bucket, ARGV[2])
  if ARGV[4] ~= '' then length = tonumber(ARGV[4]) else
    length = math.min(tonumber(ARGV[5]) * 2 ^ math.min(strikes - 1, 32), tonumber(ARGV[6])) end
else
  length = tonumber(ARGV[4])
end
length = math.max(0, math.floor(length))
local remaining = paused_for()
if length > remaining then
  redis.call('SET', KEYS[2], string.format('%d', now + length),
    'PX', math.ceil(length / 1000) + 1000)
  remaining = length
end
if ARGV[3] == '429' then
  redis.call('EXPIRE', KEYS[3], math.ceil(remaining / 1000000) + tonumber(ARGV[7]))
end
return {length, remaining}
"""

# KEYS: minute prefix, pause. ARGV: clock, bucket ttl, confirmed count.
_CONFIRMED = """
redis.call('HINCRBY', bucket, 'confirmed', ARGV[3])
redis.call('EXPIRE', bucket, ARGV[2])
return 0
"""

# KEYS: minute prefix, pause. ARGV: clock. Returns the pause remaining in microseconds.
_PAUSED_FOR = "return paused_for()"

# KEYS: minute prefix, pause, rate-limited total. ARGV: clock, minutes per hour.
# Returns {calls last 60 s, calls last hour, confirmed last hour, 429s last hour,
# 429s total, pause remaining us}.
_SNAPSHOT = """
local second = math.floor(now / 1000000) % 60
local last_minute = 0
for s = 0, 59 do
  local key = bucket
  if s > second then key = KEYS[1] .. string.format('%d', minute - 1) end
  last_minute = last_minute + tonumber(redis.call('HGET', key, 's' .. s) or '0')
end
local calls, confirmed, limited = 0, 0, 0
for m = minute - tonumber(ARGV[2]) + 1, minute do
  local v = redis.call('HMGET', KEYS[1] .. string.format('%d', m),
    'calls', 'confirmed', 'rate_limited')
  calls = calls + tonumber(v[1] or '0')
  confirmed = confirmed + tonumber(v[2] or '0')
  limited = limited + tonumber(v[3] or '0')
end
local total = tonumber(redis.call('GET', KEYS[3]) or '0')
return {last_minute, calls, confirmed, limited, total, paused_for()}
"""


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
        self._clock = clock
        self._acquire = client.register_script(_ACQUIRE)
        self._reserve = client.register_script(_RESERVE)
        self._pause = client.register_script(_PRELUDE + _PAUSE)
        self._confirmed = client.register_script(_PRELUDE + _CONFIRMED)
        self._snapshot = client.register_script(_PRELUDE + _SNAPSHOT)
        self._paused_for = client.register_script(_PRELUDE + _PAUSED_FOR)

    def _now_arg(self) -> str:
        return "" if self._clock is None else str(round(self._clock() * _US))

    def try_acquire(self) -> float:
        """Take a call slot and return 0.0, or take nothing and return the seconds to wait.

        The wait is the fleet-wide pause when one is in force, else the time until the
        next evenly spaced slot; a task reschedules itself for then instead of sleeping.
        """
        return self.try_acquire_at()[0]

    def try_acquire_at(self) -> tuple[float, float]:
        """``try_acquire`` plus the server's time of the decision (epoch seconds).

        Tests and the benchmark check spacing on these stamps: the caller's own clock
        adds its thread scheduling to every gap.
        """
        keys, args = self.slot_request()
        wait, now = self._acquire(keys=keys, args=args)
        return int(wait) / _US, int(now) / _US

    def reserve(self, longest_wait: float) -> float | None:
        """Reserve the next free slot and return the seconds until it (the caller waits that
        long, then calls), or None, reserving nothing, when the provider is paused or the
        slot is more than ``longest_wait`` away.

        For the second and later pages of one listing read: with no burst allowed, a page
        asked for just after the first never finds a free slot, and a read that gave up
        there would start again at page one, for ever at the real budget. A reserved slot
        is nobody else's, so the read advances at the budget's pace.
        """
        keys, args = self.slot_request()
        reserved, wait = self._reserve(keys=keys, args=[*args, round(longest_wait * _US)])
        return int(wait) / _US if int(reserved) else None

    def slot_request(self) -> tuple[list[str], list[str | int]]:
        """The keys and arguments of ``SLOT_FN``, for a script that takes a slot as one of
        its steps (``JobStore.begin_post``)."""
        keys = [BudgetKeys.minute_prefix(self.provider), BudgetKeys.pause(self.provider),
                BudgetKeys.tat(self.provider)]  # fmt: skip
        return keys, [self._now_arg(), self.interval_us, BUCKET_TTL_SECONDS]

    def _run_pause(self, mode: str, length: str) -> tuple[float, float]:
        p = self.provider
        keys = [BudgetKeys.minute_prefix(p), BudgetKeys.pause(p), BudgetKeys.strikes(p),
                BudgetKeys.rate_limited_total(p)]  # fmt: skip
        args: list[str | int] = [self._now_arg(), BUCKET_TTL_SECONDS, mode, length,
                round(DEFAULT_PAUSE_SECONDS * _US), round(MAX_PAUSE_SECONDS * _US),
                STREAK_GRACE_SECONDS]  # fmt: skip
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
        return self._run_pause("429", length)[1]

    def record_success(self) -> None:
        """A call went through: the next 429 starts a new backoff streak."""
        self.redis.delete(BudgetKeys.strikes(self.provider))

    def record_confirmed(self, n: int = 1) -> None:
        """Count grants confirmed, for calls per confirmed grant in ``creditq stats``."""
        if n < 0:
            raise ValueError("confirmed count must not be negative")
        keys = [BudgetKeys.minute_prefix(self.provider), BudgetKeys.pause(self.provider)]
        self._confirmed(keys=keys, args=[self._now_arg(), BUCKET_TTL_SECONDS, n])

    def paused_for(self) -> float:
        """Seconds left of the fleet-wide pause, 0.0 when none is in force."""
        keys = [BudgetKeys.minute_prefix(self.provider), BudgetKeys.pause(self.provider)]
        return int(self._paused_for(keys=keys, args=[self._now_arg()])) / _US

    def snapshot(self) -> dict[str, Any]:
        """The figures ``creditq stats`` shows for this provider, read in one round trip."""
        keys = [BudgetKeys.minute_prefix(self.provider), BudgetKeys.pause(self.provider),
                BudgetKeys.rate_limited_total(self.provider)]  # fmt: skip
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
