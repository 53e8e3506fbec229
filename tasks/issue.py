"""The issue task: its name, queue and message are final; the body is the pipeline's."""

from __future__ import annotations

import logging
from typing import Any

from worker.app import ISSUE_TASK, app

log = logging.getLogger("creditq.issue")


@app.task(name=ISSUE_TASK, acks_late=True)
def issue(**message: Any) -> None:
    """Placeholder until the pipeline lands: it accepts the message and records nothing."""
    log.info("received grant %s for %s", message.get("idempotency_key"), message.get("provider"))
