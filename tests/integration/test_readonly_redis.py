"""A worker rides through a read-only Redis: a failover in progress, seen from the old master.

While Sentinel (or an operator) demotes the master, every write a worker sends (BRPOP, an
acknowledgement, a queue declaration) is answered ``READONLY You can't write against a read
only replica``, and a BRPOP already waiting is ended with ``UNBLOCKED``; a restarting Redis
answers ``LOADING``. All of it passes in seconds, so the worker must reconnect with backoff,
not exit with "Unrecoverable error" (FAULTS.md, "Redis and the broker: failover"). The Redis
here is a private one, made a replica of a closed port: it keeps its data and refuses writes
for as long as the test wants.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterator

import pytest
import redis
from kombu import Connection

from tests.fixtures.grants import grants
from tests.fixtures.workers import Fleet, wait_until, worker_env
from worker.app import ISSUE_QUEUE, broker, create_app
from worker.app.broker import FAILOVER_ERRORS, Transport
from worker.domain.states import JobState
from worker.producer import enqueue, enqueue_many
from worker.sandbox import Sandbox
from worker.settings import get_settings
from worker.store.embedded import EmbeddedRedis, free_port
from worker.store.jobs import JobStore

pytestmark = pytest.mark.integration

# How long the Redis stays read-only: several reconnection attempts of the worker.
READ_ONLY_SECONDS = 4.0


@pytest.fixture
def private_redis(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own (never the shared one: these tests demote it)."""
    with EmbeddedRedis() as server:
        monkeypatch.setenv("CREDITQ_REDIS_URL", server.url)
        get_settings.cache_clear()
        yield server
        get_settings.cache_clear()


@pytest.fixture
def admin(private_redis: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(private_redis.url, decode_responses=True)
    yield client
    client.execute_command("REPLICAOF", "NO", "ONE")
    client.close()


def demote(client: redis.Redis) -> None:
    """A replica of a port nobody listens on: it keeps its data and refuses every write."""
    client.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
    assert wait_until(lambda: is_read_only(client), 5)


def promote(client: redis.Redis) -> None:
    client.execute_command("REPLICAOF", "NO", "ONE")
    assert wait_until(lambda: not is_read_only(client), 5)


def is_read_only(client: redis.Redis) -> bool:
    try:
        client.set("creditq-test:probe", "1")
    except redis.exceptions.ReadOnlyError:
        return True
    return False


def alive(worker: subprocess.Popen[bytes]) -> bool:
    return worker.poll() is None


def test_failover_answers_are_connection_errors() -> None:
    for error in (redis.exceptions.ReadOnlyError, redis.exceptions.BusyLoadingError):
        assert issubclass(error, Transport.connection_errors)
    assert set(FAILOVER_ERRORS) <= set(Transport.connection_errors)


def test_a_refused_acknowledgement_is_a_broken_pipe(
    private_redis: EmbeddedRedis, admin: redis.Redis
) -> None:
    """The one error Celery's ``ack_log_error`` passes on to the consumer, which reconnects;
    any other connection error it swallows, and the message keeps its prefetch slot."""
    with Connection(private_redis.url, transport=Transport) as connection:
        queue = connection.SimpleQueue(ISSUE_QUEUE)
        queue.put({"n": 1})
        message = queue.get(timeout=5)
        demote(admin)
        with pytest.raises(BrokenPipeError) as raised:
            message.ack()
        assert isinstance(raised.value.__cause__, redis.exceptions.ReadOnlyError)
        assert admin.zcard("unacked_index") == 1  # still there, to be restored
        promote(admin)
        queue.close()


def test_a_refused_rejection_frees_its_prefetch_slot(
    private_redis: EmbeddedRedis, admin: redis.Redis
) -> None:
    """Celery swallows a failed rejection: the slot must not stay taken for good."""
    with Connection(private_redis.url, transport=Transport) as connection:
        queue = connection.SimpleQueue(ISSUE_QUEUE)
        queue.put({"n": 1})
        message = queue.get(timeout=5)
        qos = message.channel.qos
        qos.prefetch_count = 1  # as a worker's: one message held, no slot left
        assert not qos.can_consume()
        demote(admin)
        with pytest.raises(redis.exceptions.ReadOnlyError):
            message.reject()
        assert qos.can_consume()
        assert admin.zcard("unacked_index") == 1  # back after the visibility timeout
        promote(admin)
        queue.close()


def test_a_new_connection_to_a_replica_fails_as_a_connection_error(
    private_redis: EmbeddedRedis, admin: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So that Celery's connection retry, with its growing interval, takes over. As a
    process's first connection: once one has had a broker it waits for it in place first
    (10 s, ``broker.RECONNECT_WAIT_SECONDS``), which in a whole run cost this test 21 s."""
    monkeypatch.setattr(broker, "_had_a_broker", threading.Event())
    demote(admin)
    with (
        Connection(private_redis.url, transport=Transport) as connection,
        pytest.raises(Transport.connection_errors),
    ):
        connection.connect()
    promote(admin)
    with Connection(private_redis.url, transport=Transport) as connection:
        connection.connect()
        assert connection.connected


@pytest.mark.parametrize(
    ("concurrency", "meets"),
    [
        # Two of four slots free: the consumer's BRPOP is waiting when Redis turns replica.
        (4, "UNBLOCKED"),
        # Both slots busy, no BRPOP waiting: the acknowledgements meet the read-only Redis.
        (2, "Couldn't ack"),
    ],
)
def test_a_worker_outlives_a_read_only_redis(
    private_redis: EmbeddedRedis,
    admin: redis.Redis,
    make_sandbox: Callable[..., Sandbox],
    concurrency: int,
    meets: str,
) -> None:
    sandbox = make_sandbox(latency=0.6)  # POSTs in flight while Redis turns read-only
    store = JobStore(admin)
    app = create_app()
    fleet = Fleet(worker_env(private_redis.url, sandbox))
    try:
        worker = fleet.start_worker(concurrency=concurrency)
        enqueue_many(grants(2, "before"), store=store, app=app)
        started = wait_until(lambda: store.count_by_state()[JobState.SUBMITTING.value] == 2, 30)
        assert started, fleet.log_text()[-3000:]

        demote(admin)
        # Hold it read-only for a while, watching for the worker to exit meanwhile.
        died = wait_until(lambda: not alive(worker), READ_ONLY_SECONDS)
        assert not died, f"worker exited while Redis was read-only:\n{fleet.log_text()[-6000:]}"
        assert is_read_only(admin)
        promote(admin)

        after = grants(1, "after")[0]
        enqueue(after, store=store, app=app)
        key = str(after["idempotency_key"])

        def confirmed() -> bool:
            job = store.get(key)
            return job is not None and job.state is JobState.CONFIRMED

        assert wait_until(confirmed, 60), (store.get(key), fleet.log_text()[-4000:])
        assert alive(worker), fleet.log_text()[-4000:]
        log = fleet.log_text()
        assert "Unrecoverable error" not in log
        assert meets in log, log[-4000:]  # the worker did meet the fault this case is about
    finally:
        fleet.stop()
