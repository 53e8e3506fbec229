"""How the pipeline asks for later work: Celery messages with a countdown, never a sleep.

A worker that waits for a backoff, a provider's lag or a budget slot hands the wait
to the broker and frees its slot at once.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

from celery import Celery

from worker.app import CONFIRM_TASK, ISSUE_TASK


class Scheduler(Protocol):
    def issue(self, message: dict[str, Any], countdown: float) -> None: ...

    def confirm(
        self, provider: str, customer_id: str, countdown: float, token: str = ""
    ) -> None: ...


class CeleryScheduler:
    """Sends the tasks by name, so the worker package need not import the task modules.

    Countdowns are clamped below the broker's visibility timeout: the Redis transport
    would otherwise deliver a message that is only waiting for its ETA a second time.

    ``whole_seconds`` (quorum queues, ``worker.app.queues``): countdowns are rounded up to
    whole seconds. Celery then hands the wait to RabbitMQ's delayed-delivery queues, which
    count in whole seconds: it truncates a countdown to them, and refuses one under a second
    with a ValueError inside ``send_task`` (Celery 5.7, seen with a 0.2 s retry); a truncated
    one would reach a worker early, to be held there for its ETA in a prefetch slot that
    quorum queues do not let Celery widen. Rounded up, RabbitMQ holds the whole wait.
    """

    def __init__(self, app: Celery, visibility_timeout: float, whole_seconds: bool = False) -> None:
        self.app = app
        self.ceiling = visibility_timeout * 0.9
        self.whole_seconds = whole_seconds

    def _countdown(self, seconds: float) -> float | None:
        seconds = round(min(max(seconds, 0.0), self.ceiling), 3)
        if self.whole_seconds:
            seconds = math.ceil(seconds)
        return seconds if seconds > 0 else None

    def issue(self, message: dict[str, Any], countdown: float) -> None:
        self.app.send_task(ISSUE_TASK, kwargs=message, countdown=self._countdown(countdown))

    def confirm(self, provider: str, customer_id: str, countdown: float, token: str = "") -> None:
        kwargs = {"provider": provider, "customer_id": customer_id, "token": token}
        self.app.send_task(CONFIRM_TASK, kwargs=kwargs, countdown=self._countdown(countdown))
