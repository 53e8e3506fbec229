"""creditq's queues as classic or quorum queues (CREDITQ_BROKER_QUEUE_TYPE), and what Celery
does with each: no broker is reached here (tests/integration/test_quorum_queues.py runs them
on a real RabbitMQ)."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from celery import Celery
from celery.utils.quorum_queues import detect_quorum_queues

from worker.app import CONFIRM_QUEUE, CONFIRM_TASK, ISSUE_QUEUE, RECONCILE_QUEUE, create_app
from worker.app.queues import QUORUM_EXCHANGE, broker_queues, mismatch_refusal
from worker.app.scheduler import CeleryScheduler
from worker.settings import get_settings

NAMES = (ISSUE_QUEUE, CONFIRM_QUEUE, RECONCILE_QUEUE)
RABBITMQ = "amqp://guest:guest@127.0.0.1:1//"  # never reached: nothing here connects


def app_with(monkeypatch: pytest.MonkeyPatch, queue_type: str) -> Celery:
    monkeypatch.setenv("CREDITQ_BROKER_URL", RABBITMQ)
    monkeypatch.setenv("CREDITQ_BROKER_QUEUE_TYPE", queue_type)
    get_settings.cache_clear()
    return create_app()


def test_classic_queues_are_declared_as_they_always_were() -> None:
    """Existing deployments must find their queues and bindings unchanged."""
    queues = broker_queues(NAMES, "classic")
    assert [q.name for q in queues] == list(NAMES)
    # No exchange of their own: Celery binds them to its default direct one.
    assert all(q.queue_arguments is None and not q.exchange.name for q in queues)


def test_quorum_queues_are_durable_quorum_queues_each_on_its_own_topic_key() -> None:
    queues = broker_queues(NAMES, "quorum")
    assert [q.name for q in queues] == list(NAMES)
    for queue in queues:
        assert queue.durable and queue.queue_arguments == {"x-queue-type": "quorum"}
        assert (queue.exchange.name, queue.exchange.type) == (QUORUM_EXCHANGE, "topic")
        assert queue.routing_key == queue.name


@pytest.mark.parametrize(("queue_type", "quorum"), [("classic", False), ("quorum", True)])
def test_celery_sees_quorum_queues_and_so_drops_global_qos(
    monkeypatch: pytest.MonkeyPatch, queue_type: str, quorum: bool
) -> None:
    """What worker_detect_quorum_queues reads: then the worker asks a per-consumer prefetch,
    which quorum queues support, instead of a global one, which they refuse."""
    app = app_with(monkeypatch, queue_type)
    assert app.conf.worker_detect_quorum_queues
    assert detect_quorum_queues(app, "amqp")[0] is quorum


def published(app: Celery, **options: Any) -> dict[str, Any]:
    """The exchange and routing key Celery publishes a confirmation sweep with."""
    sent: dict[str, Any] = {}
    with mock.patch.object(app.amqp, "send_task_message", lambda _p, _n, _m, **o: sent.update(o)):
        app.send_task(CONFIRM_TASK, kwargs={}, **options)
    return sent


def test_a_countdown_to_a_quorum_queue_waits_in_rabbitmq_not_in_a_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = published(app_with(monkeypatch, "quorum"), countdown=5)
    assert sent["exchange"].name == "celery_delayed_27"  # the top of the delay chain
    delay_bits, queue = sent["routing_key"][: 28 * 2], sent["routing_key"][28 * 2 :]
    assert int(delay_bits.replace(".", ""), 2) == 5 and queue == CONFIRM_QUEUE
    now = published(app_with(monkeypatch, "quorum"))  # no countdown: straight to the queue
    assert now["queue"].name == CONFIRM_QUEUE and "exchange" not in now


class SentCountdowns:
    """Stands in for the Celery app: records each countdown the scheduler asks for."""

    def __init__(self) -> None:
        self.countdowns: list[float | None] = []

    def send_task(self, name: str, kwargs: dict[str, Any], countdown: float | None) -> None:
        self.countdowns.append(countdown)


@pytest.mark.parametrize(
    ("whole_seconds", "asked", "sent"),
    [
        (False, [0.2, 1.5, 0, -1], [0.2, 1.5, None, None]),
        # Celery's delayed delivery refuses a countdown under a second and truncates others.
        (True, [0.2, 1.0, 1.5, 2.0004, 0, -1], [1, 1, 2, 2, None, None]),
        (True, [7200], [3240]),  # still below the visibility timeout (3600 s x 0.9)
    ],
)
def test_with_quorum_queues_countdowns_are_whole_seconds_rounded_up(
    whole_seconds: bool, asked: list[float], sent: list[float | None]
) -> None:
    app = SentCountdowns()
    scheduler = CeleryScheduler(app, 3600, whole_seconds=whole_seconds)  # type: ignore[arg-type]
    for countdown in asked:
        scheduler.confirm("inveterate", "c1", countdown)
    assert app.countdowns == sent


def test_a_queue_of_another_type_is_one_line_saying_what_to_do() -> None:
    reply = (
        "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'creditq.issue' in "
        "vhost '/': received the value 'quorum' of type 'longstr' but current is none"
    )
    assert mismatch_refusal(ISSUE_QUEUE, NAMES, "quorum", reply) == (
        "creditq: RabbitMQ refuses queue 'creditq.issue' as CREDITQ_BROKER_QUEUE_TYPE=quorum: "
        f"it exists with another type ({reply}). A queue's type cannot change: set "
        "CREDITQ_BROKER_QUEUE_TYPE to the type the queues have, or drain them with workers of "
        "that type and delete them (rabbitmqctl delete_queue, for each of creditq.issue, "
        "creditq.confirm, creditq.reconcile), or move their messages with a shovel"
    )
