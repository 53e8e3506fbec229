"""The issue task: the message is the grant's non-secret fields, readable in Flower."""

from __future__ import annotations

from typing import Any

from worker.app import ISSUE_TASK, app
from worker.app.runtime import pipeline


@app.task(name=ISSUE_TASK)
def issue(**message: Any) -> str:
    return str(pipeline().issue(message))  # the word itself in Flower, not the enum's repr
