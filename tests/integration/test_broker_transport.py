"""The worker's broker transport: one redis-py client per channel, kombu's behaviour otherwise."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from celery import Celery
from kombu import Connection

from tests.fixtures.grants import grants
from tests.fixtures.workers import Fleet, wait_until, worker_env
from worker.app import ISSUE_QUEUE, _worker_transport, create_app
from worker.app.broker import Transport, transport_for
from worker.producer import enqueue_many
from worker.sandbox import Sandbox
from worker.settings import get_settings
from worker.store.embedded import EmbeddedRedis
from worker.store.jobs import JobStore

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "worker.app.broker:Transport"),
        ("redis://:secret@redis:6379/3", "worker.app.broker:Transport"),
        ("rediss://redis:6380/0", None),
        ("sentinel://redis:26379", "worker.app.broker:SentinelTransport"),
        ("sentinel://h1:26379/0;sentinel://h2:26379/0", "worker.app.broker:SentinelTransport"),
        ("redis+socket:///tmp/redis.sock", None),
        ("amqp://guest:guest@127.0.0.1:5672//", None),
    ],
)
def test_only_plain_redis_and_sentinel_urls_take_the_worker_transports(
    url: str, expected: str | None
) -> None:
    assert transport_for(url) == expected


def test_a_starting_worker_switches_its_app_to_the_transport(celery_app: Celery) -> None:
    assert celery_app.conf.broker_transport is None  # producers, beat and Flower: kombu's own
    _worker_transport(conf=celery_app.conf)
    assert celery_app.conf.broker_transport == "worker.app.broker:Transport"
    with celery_app.connection_for_write() as connection:
        assert isinstance(connection.transport, Transport)


def test_a_worker_of_another_app_is_left_alone(celery_app: Celery) -> None:
    other = Celery("other", broker=celery_app.conf.broker_url)
    _worker_transport(conf=other.conf)
    assert other.conf.broker_transport is None


def test_a_channel_reuses_one_client_while_its_pool_lives(redis_url: str) -> None:
    with Connection(redis_url, transport=Transport) as connection:
        channel = connection.default_channel
        channel._create_client()  # the first call builds the pool, the kombu way
        first = channel._create_client()
        assert channel._create_client() is first
        assert first.ping()
        channel._disconnect_pools()  # what kombu does closing, or after a lost connection
        torn_down = channel._create_client()  # kombu's own path: it builds a new pool
        assert torn_down is not first and torn_down.ping()
        again = channel._create_client()
        assert again is not first
        assert again.connection_pool is channel.pool
        assert channel._create_client() is again


def test_a_channel_closed_after_its_connection_raises_a_connection_error(redis_url: str) -> None:
    """kombu's own path raises AttributeError here, which kills a Celery worker; a connection
    error is what kombu's close paths ignore."""
    with Connection(redis_url, transport=Transport) as connection:
        channel = connection.default_channel
        transport_client = channel.connection.client
        channel._disconnect_pools()
        channel.connection.client = None  # what kombu's Connection.collect() leaves behind
        try:
            with pytest.raises(connection.connection_errors):
                channel._create_client()
        finally:
            channel.connection.client = transport_client


def test_messages_published_and_consumed_through_the_transport_arrive_once(
    redis_url: str, real_redis: redis.Redis
) -> None:
    with Connection(redis_url, transport=Transport) as connection:
        queue = connection.SimpleQueue(ISSUE_QUEUE)
        for n in range(20):
            queue.put({"n": n})
        received = []
        for _ in range(20):
            message = queue.get(timeout=5)
            received.append(message.payload["n"])
            message.ack()
        queue.close()
    assert received == list(range(20))
    assert real_redis.llen(ISSUE_QUEUE) == 0


def test_a_worker_outlives_a_redis_restart_with_tasks_in_flight(
    make_sandbox: Callable[..., Sandbox], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker connection drops while POSTs hold unacknowledged messages: the worker
    restores them, reconnects and goes on. (benchmarks/chaos.py, under heavier load, also
    counts workers that died on their own: a first version of this transport did.)"""
    sandbox = make_sandbox(latency=0.5)
    with EmbeddedRedis(appendonly=True) as server:
        monkeypatch.setenv("CREDITQ_REDIS_URL", server.url)
        get_settings.cache_clear()
        client = redis.Redis.from_url(server.url, decode_responses=True)
        client.config_set("appendfsync", "always")  # a killed server loses no job
        store, app = JobStore(client), create_app()
        fleet = Fleet(worker_env(server.url, sandbox))
        try:
            worker = fleet.start_worker(concurrency=4)
            # As in production, beat's reconciler re-drives a job whose message the kill
            # left behind: once in CI two jobs stayed queued for 90 s without it (their
            # messages, delivered and not yet started, waiting out the visibility timeout).
            fleet.start_beat()
            enqueue_many(grants(8, "before"), store=store, app=app)
            in_flight = wait_until(lambda: store.count_by_state()["submitting"] >= 2, 30)
            assert in_flight, fleet.log_text()[-3000:]
            server.restart(hard=True)  # SIGKILL, then the append-only file is read back
            enqueue_many(grants(4, "after"), store=store, app=app)
            done = wait_until(lambda: store.count_by_state()["confirmed"] == 12, 90)
            assert done, (store.count_by_state(), fleet.log_text()[-3000:])
            assert worker.poll() is None, fleet.log_text()[-3000:]
            assert "Unrecoverable error" not in fleet.log_text()
        finally:
            fleet.stop()
            client.close()
            get_settings.cache_clear()
