"""The confirm task: one sweep reads the provider's listings with grants due (or, with a
``customer_id``, that customer's) and confirms every pending grant they show."""

from __future__ import annotations

from worker.app import CONFIRM_TASK, app
from worker.app.runtime import pipeline


@app.task(name=CONFIRM_TASK)
def confirm(provider: str, customer_id: str = "", token: str = "") -> str:
    return str(pipeline().confirm(provider, customer_id, token))
