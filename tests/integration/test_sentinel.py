"""The job store behind Sentinels (``CREDITQ_REDIS_URL=sentinel://...``): every client
creditq makes finds the master through them and follows it through a failover."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.fixtures.grants import make_grant
from tests.fixtures.sentinels import SentinelSet, sentinels  # noqa: F401 (a fixture)
from tests.fixtures.workers import wait_until
from worker.budget import Budgets
from worker.domain.grant import Provider
from worker.settings import get_settings
from worker.store.connect import store_client
from worker.store.jobs import JobStore

pytestmark = pytest.mark.integration


@pytest.fixture
def behind_sentinels(
    sentinels: SentinelSet,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[SentinelSet]:
    monkeypatch.setenv("CREDITQ_REDIS_URL", sentinels.url)
    get_settings.cache_clear()
    yield sentinels
    get_settings.cache_clear()


def test_the_store_follows_the_master_through_a_failover_even_from_the_demoted_one(
    behind_sentinels: SentinelSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDITQ_REDIS_MIN_REPLICAS", "1")
    get_settings.cache_clear()
    store = JobStore.from_url()
    budget = Budgets(store_client(get_settings())).for_provider(Provider.INVETERATE)
    before = make_grant("before")
    assert store.create(before).held
    assert budget.try_acquire() == 0.0
    assert behind_sentinels.wait_synced()
    old = behind_sentinels.master_port()
    behind_sentinels.sentinel().execute_command("SENTINEL", "FAILOVER", "mymaster")
    assert wait_until(lambda: behind_sentinels.master_port() != old, timeout=30)
    assert behind_sentinels.master_port() == behind_sentinels.replica.port
    # until the Sentinels have turned the old master into a replica it still takes writes,
    # which its resync would then drop: CREDITQ_REDIS_MIN_REPLICAS is what guards that window
    demoted = redis.Redis(port=behind_sentinels.master.port)
    assert wait_until(lambda: demoted.info("replication")["role"] == "slave", timeout=30)
    assert wait_until(lambda: behind_sentinels.holds_writes(), timeout=30)
    # the same clients, without a restart: the next commands reach the new master
    assert store.create(make_grant("after")).created
    assert store.get("before") is not None and store.get("after") is not None
    assert budget.snapshot()["calls_last_hour"] == 1
    pool = store.redis.connection_pool
    assert pool.get_master_address()[1] == behind_sentinels.replica.port

    # A connection left on the demoted master (the Sentinels close its clients, but one
    # that reached it just before, in a pool that has not asked them since, is what a
    # second failover in two seconds left a producer with in benchmarks/failover.py). A
    # create that finds its job writes nothing, so no READONLY tells it: only the WAIT
    # after it is refused ("cannot be used with replica instances"), and before, the
    # producer was refused for good.
    connection = pool.get_connection()
    connection.disconnect()
    connection.connect_to(("127.0.0.1", old))
    pool.proxy.master_address = ("127.0.0.1", old)
    pool.release(connection)
    again = store.create(before)
    assert not again.created and again.held
    assert pool.get_master_address()[1] != old


def test_a_post_is_started_only_while_a_majority_of_the_sentinels_name_its_master(
    behind_sentinels: SentinelSet,
) -> None:
    """The partition the era cannot see: the Sentinels have promoted another server while
    this worker's connection still reaches the old master, which takes the move. Played by
    pointing the Sentinel at the replica (what the majority's side would name)."""
    store = JobStore.from_url()
    for key in ("vouched", "fenced", "unanswered"):
        store.create(make_grant(key))
    started = store.begin_post(make_grant("vouched"), max_attempts=5, now=0.0, lease=1)
    assert started.outcome == "started"
    sentinel = behind_sentinels.sentinel()
    sentinel.execute_command("SENTINEL", "REMOVE", "mymaster")
    sentinel.execute_command(
        "SENTINEL", "MONITOR", "mymaster", "127.0.0.1", behind_sentinels.replica.port, 1
    )
    fenced = store.begin_post(make_grant("fenced"), max_attempts=5, now=0.0, lease=1)
    assert fenced.outcome == "unheld"  # the move is made, the POST must not leave
    for process in behind_sentinels.processes:
        process.kill()
    unanswered = store.begin_post(make_grant("unanswered"), max_attempts=5, now=0.0, lease=1)
    assert unanswered.outcome == "unheld"
