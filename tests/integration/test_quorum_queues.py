"""CREDITQ_BROKER_QUEUE_TYPE=quorum on a real RabbitMQ (issue 19, point 5): real worker
processes issue grants through the sandbox over quorum queues, countdowns included, and a
worker meeting queues of the other type stops in one line. Skipped where no RabbitMQ answers
at 127.0.0.1:5672 (tests/fixtures/rabbitmq.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from celery import Celery

from tests.fixtures.cli import run_cli
from tests.fixtures.exactly_once import assert_exactly_once, confirmed_count
from tests.fixtures.grants import grants
from tests.fixtures.rabbitmq import CREDITQ_QUEUES, RabbitMQ
from tests.fixtures.workers import Fleet, wait_until
from worker.app import create_app
from worker.app.scheduler import CeleryScheduler
from worker.domain.grant import Provider
from worker.producer import enqueue_many
from worker.sandbox import Sandbox
from worker.settings import get_settings
from worker.store.jobs import JobStore

pytestmark = pytest.mark.integration

# A confirmation sweep scheduled this far out must wait in RabbitMQ, not in the worker.
HELD_SWEEP_SECONDS = 600


def producer_app(monkeypatch: pytest.MonkeyPatch, redis_url: str, broker: str) -> Celery:
    """The app a producer (or a worker) builds from the same settings as the fleet's."""
    monkeypatch.setenv("CREDITQ_REDIS_URL", redis_url)
    monkeypatch.setenv("CREDITQ_BROKER_URL", broker)
    monkeypatch.setenv("CREDITQ_BROKER_QUEUE_TYPE", "quorum")
    get_settings.cache_clear()
    return create_app()


def test_grants_through_quorum_queues_are_each_credited_once_countdowns_waiting_in_rabbitmq(
    rabbitmq: RabbitMQ,
    redis_url: str,
    real_store: JobStore,
    make_sandbox: Callable[..., Sandbox],
    fleet_factory: Callable[..., Fleet],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One worker thread, so one prefetch slot per queue: had the worker held the sweep
    scheduled ten minutes out (quorum queues on a direct exchange do that), no other
    confirmation could run. A Chargebee 500 sends its grant round a retry countdown, and
    every grant's confirmation is a countdown too."""
    sandbox = make_sandbox()
    sandbox.fail_next("error_before", provider=Provider.CHARGEBEE.value, operation="submit")
    fleet = fleet_factory(
        sandbox, CREDITQ_BROKER_URL=rabbitmq.url, CREDITQ_BROKER_QUEUE_TYPE="quorum"
    )
    worker = fleet.start_worker(concurrency=1)
    # The worker declares the delay chain at start; a countdown published before would
    # find no exchange to go to.
    assert wait_until(lambda: " ready." in fleet.log_text(), 60), fleet.log_text()[-3000:]
    app = producer_app(monkeypatch, redis_url, rabbitmq.url)
    CeleryScheduler(app, 3600, whole_seconds=True).confirm(
        Provider.INVETERATE.value, "held-sweep", HELD_SWEEP_SECONDS
    )
    batch = grants(6, "quorum")
    keys = [g["idempotency_key"] for g in batch]
    enqueue_many(batch, store=real_store, app=app)

    done = wait_until(lambda: confirmed_count(real_store) == len(keys), 60)
    assert done, (real_store.count_by_state(), fleet.log_text()[-4000:])
    assert_exactly_once(real_store, sandbox, keys)
    retried = [j.idempotency_key for j in real_store.get_many(keys) if j and j.attempts > 1]
    assert len(retried) == 1, retried  # the 500: back through a retry countdown
    assert worker.poll() is None
    for queue in CREDITQ_QUEUES:
        assert rabbitmq.declares_as(queue, "quorum") and not rabbitmq.declares_as(queue, "classic")
    log = fleet.log_text()
    assert "Global QoS is disabled" in log  # Celery saw the quorum queues
    assert "direct exchange" not in log.lower() and "Traceback" not in log


@pytest.mark.parametrize(
    ("existing", "configured"),
    [
        ("classic", "quorum"),  # a deployment switching to quorum queues in place
        ("quorum", "classic"),  # quorum queues declared by hand, as the README once advised
    ],
)
def test_a_worker_meeting_queues_of_the_other_type_stops_in_one_line_and_changes_nothing(
    rabbitmq: RabbitMQ,
    make_sandbox: Callable[..., Sandbox],
    fleet_factory: Callable[..., Fleet],
    existing: str,
    configured: str,
) -> None:
    """Celery alone exits with PRECONDITION_FAILED and a 60-line traceback."""
    if existing == "classic":
        rabbitmq.declare_classic(CREDITQ_QUEUES)
    else:
        rabbitmq.declare_quorum(CREDITQ_QUEUES)
    fleet = fleet_factory(
        make_sandbox(), CREDITQ_BROKER_URL=rabbitmq.url, CREDITQ_BROKER_QUEUE_TYPE=configured
    )
    worker = fleet.start_worker(concurrency=1)
    assert wait_until(lambda: worker.poll() is not None, 60), fleet.log_text()[-3000:]
    log = fleet.log_text()
    assert worker.returncode == 2, log[-3000:]
    refusals = [line for line in log.splitlines() if line.startswith("creditq: RabbitMQ")]
    assert len(refusals) == 1, log[-3000:]
    assert refusals[0].startswith(
        f"creditq: RabbitMQ refuses queue 'creditq.issue' as "
        f"CREDITQ_BROKER_QUEUE_TYPE={configured}: it exists with another type ("
    )
    assert "rabbitmqctl delete_queue" in refusals[0] and "shovel" in refusals[0]
    assert "Traceback" not in log and " ready." not in log
    for queue in CREDITQ_QUEUES:
        assert rabbitmq.declares_as(queue, existing)


def test_creditq_enqueue_meeting_queues_of_the_other_type_fails_in_one_line_writing_nothing(
    rabbitmq: RabbitMQ, redis_url: str, real_store: JobStore
) -> None:
    """Celery alone prints a traceback, after the job was written."""
    rabbitmq.declare_classic(CREDITQ_QUEUES)
    done = run_cli(
        redis_url,
        "enqueue",
        "--key",
        "mismatch-1",
        "--provider",
        "inveterate",
        "--customer",
        "m-1",
        "--amount",
        "5.00",
        settings={"CREDITQ_BROKER_URL": rabbitmq.url, "CREDITQ_BROKER_QUEUE_TYPE": "quorum"},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(
        "creditq: RabbitMQ refuses queue 'creditq.issue' as CREDITQ_BROKER_QUEUE_TYPE=quorum"
    )
    assert len(done.stderr.strip().splitlines()) == 1 and not done.stdout
    assert real_store.get("mismatch-1") is None
    for queue in CREDITQ_QUEUES:
        assert rabbitmq.declares_as(queue, "classic")


def test_beat_meeting_queues_of_the_other_type_stops_in_one_line(
    rabbitmq: RabbitMQ, make_sandbox: Callable[..., Sandbox], fleet_factory: Callable[..., Fleet]
) -> None:
    """Celery alone printed a traceback at every reconcile beat sent."""
    rabbitmq.declare_classic(CREDITQ_QUEUES)
    fleet = fleet_factory(
        make_sandbox(), CREDITQ_BROKER_URL=rabbitmq.url, CREDITQ_BROKER_QUEUE_TYPE="quorum"
    )
    fleet.start_beat()
    assert fleet.beat is not None
    beat = fleet.beat
    assert wait_until(lambda: beat.poll() is not None, 60), fleet.log_text()[-3000:]
    log = fleet.log_text()
    assert beat.returncode == 2, log[-3000:]
    # beat logs what it prints: the one line comes as a WARNING
    refusals = [line for line in log.splitlines() if "creditq: RabbitMQ refuses queue" in line]
    assert len(refusals) == 1, log[-3000:]
    assert "Traceback" not in log
