"""The Celery app: ``celery -A worker.app worker|beat|flower`` find it here.

Choices, each for the exactly-once guarantee or for operators:
- JSON only: a pickle message from a compromised producer would run code.
- ``acks_late`` + ``reject_on_worker_lost`` + prefetch 1: a worker killed mid-task
  leaves its message unacknowledged, so it is delivered again (the store's
  compare-and-set on the job's version makes the second delivery safe), and a
  worker never hoards messages another could run.
- Worker task events on, so Flower sees every task from the moment a worker
  receives it; the arguments are the grant's non-secret fields, readable there.
  The producer's "task-sent" event is off: it costs 40% of the enqueue rate
  (measured, benchmarks/enqueue.py), and grants still waiting are counted by
  ``creditq stats`` and found by ``creditq status``.
- A worker's Redis broker connections go through ``worker.app.broker``: kombu's transport
  with one client per channel instead of one per message (0.5 ms of worker CPU per
  grant, measured), and which rides through a failover (READONLY, LOADING: reconnect
  with backoff, where kombu's own makes the worker exit). Only in workers: producers,
  beat and Flower (which reads the broker URL's scheme to find the queues) keep kombu's
  own.
- The Redis visibility timeout (``CREDITQ_VISIBILITY_TIMEOUT_SECONDS``, default
  3600 s) is how long an unacknowledged message waits before redelivery. Every
  countdown creditq schedules stays below it (backoff is capped by
  ``CREDITQ_BACKOFF_MAX_SECONDS``), or a message merely waiting for its ETA
  would be delivered twice.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

from celery import Celery, signals
from celery.exceptions import CPendingDeprecationWarning

from worker.app.broker import transport_for
from worker.app.queues import broker_queues
from worker.config_errors import exit_on
from worker.errors import SettingsError
from worker.settings import broker_scheme, get_settings
from worker.store.durability import refuse_volatile_store

CREDITQ_APP = "creditq"
ISSUE_TASK = "creditq.issue"
CONFIRM_TASK = "creditq.confirm"
RECONCILE_TASK = "creditq.reconcile"

ISSUE_QUEUE = "creditq.issue"
CONFIRM_QUEUE = "creditq.confirm"
RECONCILE_QUEUE = "creditq.reconcile"

TASK_MODULES = ["tasks.issue", "tasks.confirm", "tasks.reconcile"]


def create_app() -> Celery:
    settings = get_settings()
    celery = Celery(CREDITQ_APP, broker=settings.effective_broker_url, include=TASK_MODULES)
    celery.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        event_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # How late a countdown may run: Celery's timer sleeps up to this long between looks
        # at its schedule (1 s by default), and every confirmation sweep and retry is a
        # countdown: a second of it per link was a stall of the confirmation chain (issue 20).
        worker_timer_precision=0.1,
        worker_send_task_events=True,
        task_send_sent_event=False,
        task_default_queue=ISSUE_QUEUE,
        task_queues=broker_queues(
            (ISSUE_QUEUE, CONFIRM_QUEUE, RECONCILE_QUEUE), settings.broker_queue_type
        ),
        task_routes={
            ISSUE_TASK: {"queue": ISSUE_QUEUE},
            CONFIRM_TASK: {"queue": CONFIRM_QUEUE},
            RECONCILE_TASK: {"queue": RECONCILE_QUEUE},
        },
        creditq_worker_transport=transport_for(settings.effective_broker_url),
        broker_transport_options=broker_options(settings),
        broker_connection_retry_on_startup=True,
        # On a lost broker connection, let the tasks in flight finish. Their acknowledgements
        # cannot be sent, so each is delivered again (a duplicate the store recognises), but a
        # task cancelled mid-POST would leave its outcome unknown for nothing; and the thread
        # pool creditq runs cannot cancel at all: asked to (Celery 6's default), it logged a
        # traceback per task in flight at every lost connection (benchmarks/failover.py).
        worker_cancel_long_running_tasks_on_connection_loss=False,
        beat_schedule={
            "creditq-reconcile": {
                "task": RECONCILE_TASK,
                "schedule": settings.reconcile_interval_seconds,
                # A sweep that could not run in time is replaced by the next one.
                "options": {"expires": settings.reconcile_interval_seconds},
            }
        },
        enable_utc=True,
    )
    return celery


def broker_options(settings: Any) -> dict[str, Any]:
    """The broker transport's options: the visibility timeout, and behind Sentinels the
    master's name (kombu's Sentinel transport asks them for it)."""
    options: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout_seconds}
    if broker_scheme(settings.effective_broker_url) == "sentinel":
        options["master_name"] = settings.redis_sentinel_master
    return options


def _worker_transport(conf: Any = None, **_: Any) -> None:
    """A worker of a creditq app starting: its broker connections take ``worker.app.broker``."""
    transport = conf.get("creditq_worker_transport") if conf is not None else None
    if transport:
        conf.broker_transport = transport


signals.celeryd_init.connect(_worker_transport)


def _quiet_the_cancel_notice(**_: Any) -> None:
    """Celery warns at every lost broker connection, in a paragraph, that cancelling the tasks
    in flight will become its default; creditq chose not to (``create_app``). Connected to
    ``celeryd_after_setup`` because Celery's log setup, just before it, makes every such
    warning show: a filter added earlier would lose to Celery's."""
    warnings.filterwarnings(
        "ignore",
        message=r"\s*In Celery 5\.1 we introduced an optional breaking change",
        category=CPendingDeprecationWarning,
    )


signals.celeryd_after_setup.connect(_quiet_the_cancel_notice)


def is_creditq_worker(sender: Any) -> bool:
    """A ``worker_init`` sender that is a worker of the creditq app: importing ``worker`` (its
    broker transport, say) connects creditq's handlers for every Celery app of the process."""
    return getattr(getattr(sender, "app", None), "main", None) == CREDITQ_APP


def _check_store(sender: Any = None, **_: Any) -> None:
    """A creditq worker refuses a job store that keeps nothing on disk or evicts
    (worker.store.durability)."""
    if is_creditq_worker(sender):
        refuse_volatile_store()


signals.worker_init.connect(_check_store)

_app: Celery | None = None
_app_lock = threading.Lock()


def get_app() -> Celery:
    """The process's creditq app, built on first use, not on import: a producer that only
    reads a grant's rules, ``creditq --help`` and the demo's parent never build one.

    The settings are read here, when ``celery -A worker.app worker|beat|flower`` asks for
    ``worker.app.app``: a bad one must end the process in one line per variable (exit 2),
    where Celery would print its "Unable to load celery application" block and a traceback.
    SystemExit is not an Exception, so Celery's loader lets it through.
    """
    global _app
    with _app_lock:
        if _app is None:
            try:
                _app = create_app()
            except SettingsError as bad:
                exit_on(bad)
        return _app


def __getattr__(name: str) -> Any:
    """``worker.app.app`` (what ``celery -A worker.app`` and the task modules use), built
    on first access."""
    if name == "app":
        return get_app()
    raise AttributeError(f"module 'worker.app' has no attribute {name!r}")
