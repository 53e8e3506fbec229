"""creditq's broker queues, declared as classic or as RabbitMQ quorum queues
(``CREDITQ_BROKER_QUEUE_TYPE``).

Classic (the default) keeps the declaration creditq always had: ``Queue(name)``, which Celery
binds to its default direct exchange and publishes to through the default exchange.

Quorum queues (``x-queue-type: quorum``, durable, replicated by Raft) change two things in
Celery 5.5+, both driven by the ``x-queue-type`` argument declared here:

- QoS: quorum queues refuse a global prefetch; Celery sees the argument
  (``worker_detect_quorum_queues``, on by default) and sets a per-consumer one.
- Countdowns (retries, confirmation sweeps): the per-consumer prefetch cannot grow, so a
  worker holding a message for its ETA holds a prefetch slot until then (seen: two sweeps
  15 s away held up a third, due now, for 15 s on a 2-thread worker). Celery instead hands
  the wait to RabbitMQ ("native delayed delivery": a chain of ``celery_delayed_*`` queues
  with TTLs, declared by the worker at start), but only for queues bound to a topic or
  fanout exchange: with a direct one it logs a warning and the worker holds the message.
  So quorum queues are bound to the topic exchange ``QUORUM_EXCHANGE``, each by its own
  name as routing key. Delayed delivery counts whole seconds: see ``CeleryScheduler``.

A queue's type never changes: RabbitMQ refuses to declare an existing queue with another
``x-queue-type`` (PRECONDITION_FAILED, "inequivalent arg"), either way. A Celery worker takes
that for an unrecoverable error and exits with a 60-line traceback, a restart loop under a
supervisor; a producer's publish raises it. So a starting worker declares its queues first
(``refuse_mismatched_queues``) and exits 2 with one line saying what to do.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

from celery import signals
from kombu import Connection, Exchange, Queue  # type: ignore[attr-defined]

from worker.settings import QueueType, get_settings

log = logging.getLogger("creditq.queues")

# A new name: the direct exchange a classic deployment already declared (Celery names it after
# the default queue) cannot be redeclared as a topic one (PRECONDITION_FAILED).
QUORUM_EXCHANGE = "creditq.tasks"
QUEUE_TYPE_ARGUMENT = "x-queue-type"
# AMQP 0-9-1's reply code for a declaration that does not match the existing queue.
PRECONDITION_FAILED = 406


def broker_queues(names: Sequence[str], queue_type: QueueType) -> list[Queue]:
    """The ``task_queues`` of a creditq app: one queue per name, of ``queue_type``."""
    if queue_type == "classic":
        return [Queue(name) for name in names]  # type: ignore[no-untyped-call]
    exchange = Exchange(QUORUM_EXCHANGE, type="topic", durable=True)  # type: ignore[no-untyped-call]
    return [
        Queue(  # type: ignore[no-untyped-call]
            name,
            exchange,
            routing_key=name,
            durable=True,
            queue_arguments={QUEUE_TYPE_ARGUMENT: queue_type},
        )
        for name in names
    ]


def mismatch_refusal(queue: str, names: Sequence[str], queue_type: QueueType, reply: str) -> str:
    """Pure: the line a worker exits with when RabbitMQ refused to declare ``queue`` (one of
    ``names``) as ``queue_type``; ``reply`` is RabbitMQ's, which names the type it holds."""
    return (
        f"creditq: RabbitMQ refuses queue {queue!r} as CREDITQ_BROKER_QUEUE_TYPE={queue_type}: "
        f"it exists with another type ({reply}). A queue's type cannot change: set "
        "CREDITQ_BROKER_QUEUE_TYPE to the type the queues have, or drain them with workers "
        "of that type and delete them (rabbitmqctl delete_queue, for each of "
        f"{', '.join(names)}), or move their messages with a shovel"
    )


def first_mismatch(
    connection: Connection, queues: Sequence[Queue], queue_type: QueueType
) -> str | None:
    """Declare each queue as configured, on a channel of its own (RabbitMQ closes the
    channel of a refused declaration); the refusal line for the first one RabbitMQ refuses.
    Declaring is what the worker does next anyway: the same declaration, done earlier."""
    names = [queue.name for queue in queues]
    for queue in queues:
        channel = connection.channel()  # type: ignore[no-untyped-call]
        try:
            queue.bind(channel).queue_declare()  # type: ignore[no-untyped-call]
        except connection.channel_errors as exc:
            if getattr(exc, "reply_code", None) != PRECONDITION_FAILED:
                raise
            return mismatch_refusal(queue.name, names, queue_type, str(exc.reply_text))
        finally:
            channel.close()
    return None


def refuse_mismatched_queues(sender: Any = None, **_: Any) -> None:
    """At a creditq worker's or beat's start (Celery's ``worker_init``, ``beat_init``), on
    RabbitMQ: exit 2, in one line, when its queues exist with another type (beat otherwise
    printed a traceback at every reconcile it sent into them). A broker that does not answer
    is left to the process's own connection retries."""
    from worker.app import is_creditq_worker  # worker.app imports this module

    if not is_creditq_worker(sender):  # a beat Service has the app as a worker does
        return
    line = queue_type_refusal(sender.app)
    if line is not None:
        print(line, file=sys.stderr, flush=True)
        raise SystemExit(2)


def queue_type_refusal(app: Any) -> str | None:
    """On RabbitMQ, the one line that refuses to go on when creditq's queues exist with
    another type than CREDITQ_BROKER_QUEUE_TYPE (None: they match, or another broker). A
    worker exits with it; ``creditq enqueue`` checks before writing the job, so a refused
    hand-over changes nothing. A broker that does not answer is left to the caller's own
    connection handling (logged here)."""
    settings = get_settings()
    if not settings.broker_is_rabbitmq:
        return None
    with app.connection_for_write() as connection:
        try:
            connection.connect()
            return first_mismatch(
                connection, list(app.amqp.queues.values()), settings.broker_queue_type
            )
        except connection.connection_errors as exc:
            log.warning("the broker's queues could not be checked: %s", type(exc).__name__)
            return None


signals.worker_init.connect(refuse_mismatched_queues)
signals.beat_init.connect(refuse_mismatched_queues)
