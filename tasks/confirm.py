"""The confirm task: one listing read confirms every pending grant of that customer."""

from __future__ import annotations

from worker.app import CONFIRM_TASK, app
from worker.runtime import pipeline


@app.task(name=CONFIRM_TASK)
def confirm(provider: str, customer_id: str) -> str:
    return pipeline().confirm(provider, customer_id)
