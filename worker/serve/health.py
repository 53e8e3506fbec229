"""Container probes: ``/healthz`` says the process answers, ``/readyz`` that it can work
(the job store and the broker both answer within a second or two), else 503 with which one
did not. Neither needs a token: a probe carries none, and neither says anything secret."""

from __future__ import annotations

from celery import Celery
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from worker.store.jobs import JobStore

PROBE_TIMEOUT_SECONDS = 2.0


async def healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


class Readiness:
    def __init__(self, store: JobStore, app: Celery) -> None:
        self.store = store
        self.app = app

    def _redis(self) -> str:
        try:
            self.store.redis.ping()
        except Exception as exc:  # any failure means not ready; the words say which
            return f"error: {type(exc).__name__}"
        return "ok"

    def _broker(self) -> str:
        try:
            with self.app.connection_for_write() as connection:
                connection.ensure_connection(
                    max_retries=1, interval_start=0, interval_step=0, timeout=PROBE_TIMEOUT_SECONDS
                )
        except Exception as exc:  # kombu raises its own and the transport's
            return f"error: {type(exc).__name__}"
        return "ok"

    async def readyz(self, _: Request) -> Response:
        redis_state = await run_in_threadpool(self._redis)
        broker_state = await run_in_threadpool(self._broker)
        ready = redis_state == broker_state == "ok"
        body = {
            "status": "ready" if ready else "not ready",
            "redis": redis_state,
            "broker": broker_state,
        }
        return JSONResponse(body, status_code=200 if ready else 503)
