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
"""

from __future__ import annotations

from collections.abc import Sequence

from kombu import Exchange, Queue  # type: ignore[attr-defined]

from worker.settings import QueueType

# A new name: the direct exchange a classic deployment already declared (Celery names it after
# the default queue) cannot be redeclared as a topic one (PRECONDITION_FAILED).
QUORUM_EXCHANGE = "creditq.tasks"
QUEUE_TYPE_ARGUMENT = "x-queue-type"


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
