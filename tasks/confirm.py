"""The confirm task: one listing read confirms every pending grant of that customer."""

from __future__ import annotations

from worker.app import CONFIRM_TASK, app
from worker.runtime import pipeline


@app.task(name=CONFIRM_TASK)
def confirm(idempotency_key: str, provider: str = "", customer_id: str = "") -> str:
    # provider and customer_id are carried for Flower; the job record is the truth.
    return pipeline().confirm(idempotency_key)
