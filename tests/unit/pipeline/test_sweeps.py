"""Confirmation sweeps under load (issue 20): one at a time per provider, never later than a
new credit needs, and never confirming again what another already settled."""

from __future__ import annotations

from tests.fixtures.grants import message
from tests.fixtures.simulation import World, state
from worker.domain.grant import CreditGrant, Provider
from worker.domain.states import JobState
from worker.store.jobs import JobStore, Seen
from worker.store.keys import Keys


def scheduled(store: JobStore, provider: str = "inveterate") -> str:
    """The provider's sweep marker: "token@due", or "" when no sweep is scheduled."""
    return str(store.redis.get(Keys.confirming(provider)) or "")


def submit(world: World, key: str, customer_id: str) -> None:
    m = message(key, customer_id=customer_id)
    world.store.create(CreditGrant.parse(m))
    assert world.pipeline.issue(m) == "submitted"


def test_a_new_credit_is_read_at_the_learned_lag_not_at_an_older_jobs_grown_interval(
    world: World,
) -> None:
    """An old job whose credit is slow to show pushes its sweep out (its poll interval grows
    to the cap); a grant accepted meanwhile must not wait for that sweep."""
    inv = world.providers[Provider.INVETERATE]
    began = world.clock.now
    submit(world, "old", "m-old")
    inv.credits.clear()  # its credit is not showing for a long while
    world.run(until=lambda: world.clock.now - began > world.pipeline.policy.poll_max * 4)
    (far,) = [i.at for i in world.scheduler.queue if i.task == "confirm"]
    assert far - world.clock.now > 10  # the scheduled sweep is far out
    posted, learned = world.clock.now, world.pipeline.lag.delay(Provider.INVETERATE)
    assert posted + learned + world.pipeline.policy.batch < far
    submit(world, "new", "m-new")
    world.run(until=lambda: state(world, "new") is JobState.CONFIRMED)
    assert world.clock.now - posted <= learned + world.pipeline.policy.batch + 0.01
    assert "superseded" not in world.outcomes  # the far sweep's message has not come yet


def test_a_sweep_that_finds_another_running_leaves_word_and_the_running_one_sweeps_again_at_once(
    world: World,
) -> None:
    submit(world, "g1", "m-1")
    submit(world, "g2", "m-2")
    world.clock.now += 5
    inv = world.providers[Provider.INVETERATE]
    original = inv.list_page
    arrived: list[str] = []

    def another_sweep_arrives_meanwhile(*args: object, **kwargs: object) -> object:
        if not arrived:
            arrived.append(world.pipeline.confirm("inveterate", "", "latecomer"))
        return original(*args, **kwargs)  # type: ignore[arg-type]

    inv.list_page = another_sweep_arrives_meanwhile  # type: ignore[method-assign,assignment]
    token = scheduled(world.store).split("@")[0]
    assert world.pipeline.confirm("inveterate", "", token).startswith("confirmed 2")
    assert arrived == ["another sweep is running"] and inv.reads == 2
    others = (token, "latecomer")  # the first schedule, and the latecomer's own return
    (again,) = [
        i for i in world.scheduler.queue if i.task == "confirm" and i.kwargs["token"] not in others
    ]
    assert again.at == world.clock.now  # no countdown: the running one swept again at once
    world.run()
    assert inv.reads == 2  # nothing was left to read


def test_a_sweep_that_lost_its_lease_stops_reading(world: World) -> None:
    for n in range(3):
        submit(world, f"g{n}", f"m-{n}")
    world.clock.now += 5
    inv = world.providers[Provider.INVETERATE]
    original = inv.list_page

    def taken_over_after_the_first_read(*args: object, **kwargs: object) -> object:
        page = original(*args, **kwargs)  # type: ignore[arg-type]
        world.store.redis.set(Keys.sweeping("inveterate"), "another")
        return page

    inv.list_page = taken_over_after_the_first_read  # type: ignore[method-assign,assignment]
    token = scheduled(world.store).split("@")[0]
    assert world.pipeline.confirm("inveterate", "", token) == "lease lost"
    assert inv.reads == 1
    assert world.store.redis.get(Keys.sweeping("inveterate")) == "another"  # not released


def test_a_sweep_releases_its_lease_when_it_ends(world: World) -> None:
    submit(world, "g1", "m-1")
    world.clock.now += 5
    token = scheduled(world.store).split("@")[0]
    assert world.pipeline.confirm("inveterate", "", token).startswith("confirmed 1")
    assert world.store.redis.get(Keys.sweeping("inveterate")) is None


def test_a_later_schedule_never_replaces_an_earlier_one_and_force_always_does(
    store: JobStore,
) -> None:
    assert store.schedule_sweep("inveterate", "a", 100.0, 60.0)
    assert not store.schedule_sweep("inveterate", "b", 150.0, 60.0)  # served by "a"
    assert store.schedule_sweep("inveterate", "c", 90.0, 60.0)  # earlier: "a" stands down
    assert scheduled(store).startswith("c@")
    assert store.schedule_sweep("inveterate", "d", 500.0, 60.0, force=True)
    assert scheduled(store).startswith("d@")


def test_confirming_a_job_already_confirmed_is_counted_as_work_for_nothing(world: World) -> None:
    submit(world, "g1", "m-1")
    world.run()
    job = world.store.get("g1")
    assert job is not None and job.state is JobState.CONFIRMED
    again = Seen("g1", JobState.SUBMITTED, job.version, "e9", "e9", {}, 1.0)
    (outcome,) = world.store.confirm_seen([again], now=world.clock.now)
    assert world.store.counters() == {"confirm_again": 1}, outcome


def test_a_sweep_whose_runner_died_holding_the_lease_runs_once_the_lease_runs_out(
    world: World,
) -> None:
    """A worker killed mid-sweep leaves its lease (and the word left for it) behind: the
    sweep that found it busy comes back by itself when the lease expires."""
    submit(world, "g1", "m-1")
    lease = world.pipeline.policy.lease
    world.store.redis.set(Keys.sweeping("inveterate"), "dead", px=int(lease * 1000))
    world.clock.now += 5
    token = scheduled(world.store).split("@")[0]
    assert world.pipeline.confirm("inveterate", "", token) == "another sweep is running"
    (back,) = [i for i in world.scheduler.queue if i.task == "confirm" and i.at > world.clock.now]
    assert back.kwargs["token"] == token and back.at <= world.clock.now + lease + 0.1
    world.clock.now = back.at
    world.store.redis.delete(Keys.sweeping("inveterate"))  # what Redis's expiry does meanwhile
    world.run()
    assert state(world) is JobState.CONFIRMED
