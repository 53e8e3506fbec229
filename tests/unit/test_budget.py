"""The request budget on fakeredis: spacing, the fleet-wide pause, the 429 backoff, counters."""

from __future__ import annotations

import fakeredis
import pytest

from worker.budget import DEFAULT_PAUSE_SECONDS, MAX_PAUSE_SECONDS, Budgets, ProviderBudget
from worker.domain.grant import Provider
from worker.settings import get_settings
from worker.store.keys import BudgetKeys

START = 1_800_000_000.0  # a minute boundary, so bucket arithmetic is easy to follow


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def budget(fake_redis: fakeredis.FakeRedis, clock: FakeClock) -> ProviderBudget:
    return ProviderBudget(fake_redis, Provider.INVETERATE, 600, clock=clock)


def test_second_immediate_call_waits_one_interval_by_server_time(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    budget = ProviderBudget(fake_redis, Provider.CHARGEBEE, 600)
    assert budget.try_acquire() == 0.0
    assert 0.05 < budget.try_acquire() <= 0.1


def test_calls_are_spaced_evenly_without_burst_after_idle(
    budget: ProviderBudget, clock: FakeClock
) -> None:
    assert budget.try_acquire() == 0.0
    assert budget.try_acquire() == pytest.approx(0.1)
    clock.advance(0.04)
    assert budget.try_acquire() == pytest.approx(0.06)
    clock.advance(0.06)
    assert budget.try_acquire() == 0.0
    clock.advance(100)  # a long idle earns no burst: the next call after one is spaced
    assert budget.try_acquire() == 0.0
    assert budget.try_acquire() == pytest.approx(0.1)


def test_refused_acquire_takes_nothing(budget: ProviderBudget, clock: FakeClock) -> None:
    budget.try_acquire()
    for _ in range(5):
        assert budget.try_acquire() > 0
    assert budget.snapshot()["calls_last_minute"] == 1
    clock.advance(0.1)
    assert budget.try_acquire() == 0.0


def test_pause_blocks_acquire_and_reports_remaining(
    budget: ProviderBudget, clock: FakeClock
) -> None:
    budget.pause(30)
    assert budget.try_acquire() == pytest.approx(30)
    clock.advance(10)
    assert budget.paused_for() == pytest.approx(20)
    assert budget.try_acquire() == pytest.approx(20)
    assert budget.snapshot()["calls_last_minute"] == 0
    clock.advance(20)
    assert budget.paused_for() == 0.0
    assert budget.try_acquire() == 0.0


def test_pause_is_never_shortened(budget: ProviderBudget, clock: FakeClock) -> None:
    budget.pause(30)
    budget.pause(5)
    assert budget.paused_for() == pytest.approx(30)
    assert budget.pause_after_429(retry_after=1) == pytest.approx(30)
    budget.pause(45)
    assert budget.paused_for() == pytest.approx(45)


def test_pause_holds_for_the_whole_fleet(fake_redis: fakeredis.FakeRedis, clock: FakeClock) -> None:
    one = ProviderBudget(fake_redis, Provider.INVETERATE, 600, clock=clock)
    other = ProviderBudget(fake_redis, Provider.INVETERATE, 600, clock=clock)
    one.pause(12)
    assert other.try_acquire() == pytest.approx(12)


def test_providers_have_separate_budgets(fake_redis: fakeredis.FakeRedis, clock: FakeClock) -> None:
    budgets = Budgets(fake_redis, clock=clock)
    budgets.for_provider(Provider.INVETERATE).pause(60)
    assert budgets.for_provider(Provider.CHARGEBEE).try_acquire() == 0.0


def test_429_without_retry_after_pauses_a_minute_then_backs_off(
    budget: ProviderBudget, clock: FakeClock
) -> None:
    applied = []
    for _ in range(5):
        applied.append(budget.pause_after_429(None))
        clock.advance(applied[-1])  # the pause ends, the next call is refused again
    assert applied == [DEFAULT_PAUSE_SECONDS, 120.0, 240.0, MAX_PAUSE_SECONDS, MAX_PAUSE_SECONDS]


def test_success_ends_the_backoff_streak(budget: ProviderBudget, clock: FakeClock) -> None:
    budget.pause_after_429(None)
    clock.advance(60)
    budget.record_success()
    assert budget.pause_after_429(None) == DEFAULT_PAUSE_SECONDS


def test_backoff_streak_expires_after_the_pause_and_a_grace(
    fake_redis: fakeredis.FakeRedis, budget: ProviderBudget
) -> None:
    budget.pause_after_429(None)
    ttl = fake_redis.ttl(BudgetKeys.strikes(Provider.INVETERATE))
    assert DEFAULT_PAUSE_SECONDS < ttl <= DEFAULT_PAUSE_SECONDS + 120


def test_retry_after_wins_over_the_default(budget: ProviderBudget) -> None:
    assert budget.pause_after_429(7.5) == 7.5
    assert budget.paused_for() == 7.5
    assert budget.snapshot()["rate_limited_total"] == 1


def test_snapshot_counts_calls_confirmations_and_429s(
    budget: ProviderBudget, clock: FakeClock
) -> None:
    for _ in range(3):
        assert budget.try_acquire() == 0.0
        clock.advance(0.1)
    budget.record_confirmed(2)
    budget.pause_after_429(5)
    assert budget.snapshot() == {
        "provider": "inveterate",
        "limit_per_minute": 600,
        "calls_last_minute": 3,
        "calls_last_hour": 3,
        "confirmed_last_hour": 2,
        "calls_per_confirmed_grant": 1.5,
        "rate_limited_total": 1,
        "rate_limited_last_hour": 1,
        "paused_for_seconds": 5.0,
    }


def test_counters_roll_out_of_their_windows(budget: ProviderBudget, clock: FakeClock) -> None:
    clock.advance(30)  # mid-minute: the last 60 s span two minute buckets
    budget.try_acquire()
    budget.pause_after_429(1)
    clock.advance(59)
    assert budget.snapshot()["calls_last_minute"] == 1
    clock.advance(1)
    snap = budget.snapshot()
    assert (snap["calls_last_minute"], snap["calls_last_hour"]) == (0, 1)
    clock.advance(3600)
    snap = budget.snapshot()
    assert (snap["calls_last_hour"], snap["rate_limited_last_hour"]) == (0, 0)
    assert snap["rate_limited_total"] == 1


def test_no_confirmations_give_no_ratio(budget: ProviderBudget) -> None:
    budget.try_acquire()
    assert budget.snapshot()["calls_per_confirmed_grant"] is None


def test_every_key_but_the_429_total_expires(
    fake_redis: fakeredis.FakeRedis, budget: ProviderBudget
) -> None:
    budget.try_acquire()
    budget.record_confirmed()
    budget.pause_after_429(None)
    keys = fake_redis.keys(f"{BudgetKeys.base(Provider.INVETERATE)}:*")
    assert len(keys) == 5
    total = BudgetKeys.rate_limited_total(Provider.INVETERATE)
    assert all(fake_redis.ttl(k) > 0 for k in keys if k != total)


def test_budgets_follow_the_settings(
    fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert [s["limit_per_minute"] for s in Budgets(fake_redis).snapshots()] == [100, 150]
    monkeypatch.setenv("CREDITQ_CHARGEBEE_RATE_LIMIT_PER_MINUTE", "1000")
    get_settings.cache_clear()
    # 1000/min with 3% headroom: one call every 61.856 ms
    assert Budgets(fake_redis).for_provider(Provider.CHARGEBEE).interval_us == 61_856


def test_a_budget_needs_at_least_one_call_per_minute(fake_redis: fakeredis.FakeRedis) -> None:
    with pytest.raises(ValueError, match="chargebee"):
        ProviderBudget(fake_redis, Provider.CHARGEBEE, 0)


def test_a_success_costs_a_redis_write_only_now_and_then(
    fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every answered call reports success; one DEL per SUCCESS_RESET_SECONDS per process
    (and one at once after its own 429) is what that costs Redis."""
    import worker.budget as budget_module

    now = [1000.0]
    monkeypatch.setattr(budget_module.time, "monotonic", lambda: now[0])
    budget = ProviderBudget(fake_redis, Provider.INVETERATE, 600)
    deletes: list[str] = []
    real_delete = fake_redis.delete
    monkeypatch.setattr(fake_redis, "delete", lambda *k: deletes.extend(k) or real_delete(*k))
    for _ in range(100):
        budget.record_success()
    assert len(deletes) == 1
    now[0] += budget_module.SUCCESS_RESET_SECONDS
    budget.record_success()
    assert len(deletes) == 2
    budget.pause_after_429(None)
    budget.record_success()  # its own 429: the streak ends with the next success, at once
    assert len(deletes) == 3


def test_a_streak_started_elsewhere_ends_with_a_success_here(
    fake_redis: fakeredis.FakeRedis, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker's 429s are ended by this worker's next success once the throttle
    allows, which is always before a streak's 60 s pause has run out."""
    import worker.budget as budget_module

    now = [1000.0]
    monkeypatch.setattr(budget_module.time, "monotonic", lambda: now[0])
    elsewhere = ProviderBudget(fake_redis, Provider.INVETERATE, 600, clock=clock)
    here = ProviderBudget(fake_redis, Provider.INVETERATE, 600, clock=clock)
    here.record_success()  # a success before the streak
    assert elsewhere.pause_after_429(None) == DEFAULT_PAUSE_SECONDS
    clock.advance(DEFAULT_PAUSE_SECONDS)
    now[0] += DEFAULT_PAUSE_SECONDS
    here.record_success()  # the pause is over and this call went through
    assert elsewhere.pause_after_429(None) == DEFAULT_PAUSE_SECONDS  # not 120: a new streak
