"""The reconcile sweep, run by Celery beat: re-drives unfinished jobs nobody is working on."""

from __future__ import annotations

from worker.app import RECONCILE_TASK, app
from worker.app.runtime import pipeline


@app.task(name=RECONCILE_TASK)
def reconcile() -> int:
    return pipeline().reconcile()
