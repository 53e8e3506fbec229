"""Turns for a short budget (``budget_turn.lua``) on fakeredis with a fake clock: interactive
work overtakes a bulk backlog, bulk is never starved, waiters are spread over the slots they
will get instead of racing for each one, a late owner holds nobody up, a pause holds for all."""

from __future__ import annotations

import fakeredis
import pytest

from tests.fixtures.simulation import Clock
from worker.budget import BULK_SHARE, TURN_GRACE_SECONDS, ProviderBudget, Turn, turn_class
from worker.domain.grant import Priority, Provider
from worker.store.keys import BudgetKeys

START = Clock().now
INTERVAL = 1.0  # 60 a minute, no headroom: one slot a second
HORIZON = 1.5  # 2.5 slots, within the bounds: a slot at most this far ahead is reserved

BULK_POST = turn_class(Priority.BULK, read=False)
BULK_READ = turn_class(Priority.BULK, read=True)
POST = turn_class(Priority.INTERACTIVE, read=False)
READ = turn_class(Priority.INTERACTIVE, read=True)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def budget(fake_redis: fakeredis.FakeRedis, clock: Clock) -> ProviderBudget:
    return ProviderBudget(fake_redis, Provider.INVETERATE, 60, clock=clock)


def drain(budget: ProviderBudget, clock: Clock, waiting: dict[str, int], until: float) -> list[str]:
    """Every owner comes back when told (a reserved slot is waited for, then called); the
    order tickets got their slots in."""
    due = dict.fromkeys(waiting, clock.now)
    served: list[str] = []
    while due and clock.now < until:
        ticket = min(due, key=lambda t: (due[t], t))
        clock.now = max(clock.now, due[ticket])
        turn = budget.take_turn(ticket, waiting[ticket])
        if turn.granted:
            served.append(ticket)
            del due[ticket]
        else:
            due[ticket] = clock.now + turn.wait
    return served


def test_the_classes_take_slots_interactive_reads_first_bulk_posts_last() -> None:
    assert [READ, POST, BULK_READ, BULK_POST] == [0, 1, 2, 3]


def test_a_free_slot_is_taken_at_once_and_the_next_one_reserved_within_the_horizon(
    budget: ProviderBudget,
) -> None:
    assert budget.take_turn("a", POST) == Turn(True, 0.0)
    assert budget.take_turn("b", POST) == Turn(True, INTERVAL)  # reserved: wait, then call
    refused = budget.take_turn("c", POST)  # 2 s away, past the horizon
    assert not refused.granted and refused.wait == pytest.approx(2 * INTERVAL - HORIZON / 2)


def test_waiters_are_told_to_come_back_one_slot_apart_not_all_at_once(
    budget: ProviderBudget,
) -> None:
    budget.take_turn("first", BULK_POST)
    budget.take_turn("second", BULK_POST)
    waits = [budget.take_turn(f"w{i}", BULK_POST).wait for i in range(5)]
    assert waits == pytest.approx([2.0 - 0.75 + i * INTERVAL for i in range(5)])


def test_an_interactive_grant_overtakes_a_bulk_backlog(
    budget: ProviderBudget, clock: Clock
) -> None:
    waiting = {f"bulk-{i:02d}": BULK_POST for i in range(20)}
    for ticket in waiting:
        budget.take_turn(ticket, BULK_POST)
    clock.now += 4.0
    waiting["refund"] = POST
    served = drain(budget, clock, waiting, START + 60)
    assert len(served) == 21
    # it takes the first slot not already reserved (the horizon's slots are promised)
    assert served.index("refund") <= 4 + 2
    assert served[: served.index("refund")] == sorted(served[: served.index("refund")])


def test_an_interactive_read_goes_before_interactive_posts_and_bulk_reads_before_bulk_posts(
    budget: ProviderBudget, clock: Clock
) -> None:
    budget.take_turn("hold", BULK_POST)
    budget.take_turn("hold-2", BULK_POST)  # the horizon is full: everyone below queues
    waiting = {"bulk-post": BULK_POST, "bulk-read": BULK_READ, "post": POST, "read": READ}
    for ticket, klass in waiting.items():
        assert not budget.take_turn(ticket, klass).granted
    clock.now += 1.0
    assert drain(budget, clock, waiting, START + 60) == ["read", "post", "bulk-read", "bulk-post"]


def test_bulk_is_not_starved_by_a_flood_of_interactive_grants(
    budget: ProviderBudget, clock: Clock
) -> None:
    budget.take_turn("bulk", BULK_POST)  # takes the free slot
    waiting = {"campaign": BULK_POST}
    waiting |= {f"refund-{i:03d}": POST for i in range(60)}
    served = drain(budget, clock, waiting, START + 120)
    # one slot in BULK_SHARE + 1 goes to bulk while interactive grants wait
    assert "campaign" in served[: BULK_SHARE + 3]


def test_an_owner_late_past_the_grace_holds_nobody_up_and_keeps_its_place(
    budget: ProviderBudget, clock: Clock
) -> None:
    budget.take_turn("a", BULK_POST)
    budget.take_turn("b", BULK_POST)
    late = budget.take_turn("late", BULK_POST)
    assert not late.granted
    assert not budget.take_turn("next", BULK_POST).granted
    clock.now += late.wait + TURN_GRACE_SECONDS + 0.1  # "late" never came back in time
    assert budget.take_turn("next", BULK_POST).granted
    back = budget.take_turn("late", BULK_POST)  # still ahead of anyone who came after it
    assert back.granted or back.wait < 2 * INTERVAL


def test_a_pause_holds_for_every_class(
    budget: ProviderBudget, clock: Clock, fake_redis: fakeredis.FakeRedis
) -> None:
    budget.pause(30.0)
    for ticket, klass in (("r", READ), ("p", POST), ("br", BULK_READ), ("bp", BULK_POST)):
        turn = budget.take_turn(ticket, klass)
        assert not turn.granted and turn.wait >= 30.0
    assert budget.try_acquire() >= 30.0  # behind the four waiting, after the pause
    clock.now += 30.0
    assert budget.take_turn("r", READ).granted


def test_a_caller_without_a_ticket_does_not_jump_the_queue(
    budget: ProviderBudget, clock: Clock
) -> None:
    budget.take_turn("a", POST)
    budget.take_turn("b", POST)
    assert not budget.take_turn("c", BULK_POST).granted
    clock.now += 2.0  # a slot is free now, but "c" waits for it
    assert budget.try_acquire() > 0
    assert budget.take_turn("c", BULK_POST).granted


def test_the_queue_keys_expire_when_nobody_waits(
    budget: ProviderBudget, fake_redis: fakeredis.FakeRedis
) -> None:
    for ticket in ("a", "b", "c"):  # "c" waits: the promise hash exists
        budget.take_turn(ticket, POST)
    p = Provider.INVETERATE
    for key in (BudgetKeys.queue(p), BudgetKeys.promised(p), BudgetKeys.lanes(p)):
        assert 0 < fake_redis.ttl(key) <= 1800, key


def test_owners_gone_in_numbers_at_the_front_do_not_hide_the_one_behind_them(
    budget: ProviderBudget, clock: Clock
) -> None:
    budget.take_turn("a", BULK_POST)
    budget.take_turn("b", BULK_POST)
    for i in range(100):  # a killed worker's countdowns: none of these owners comes back
        assert not budget.take_turn(f"gone-{i:03d}", BULK_POST).granted
    assert not budget.take_turn("alive", BULK_POST).granted
    clock.now += 200.0  # every "gone" owner is past its time and the grace, "alive" comes
    assert budget.take_turn("alive", BULK_POST).granted
