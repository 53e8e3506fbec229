"""Container probes: ``/healthz`` says the process answers, ``/readyz`` that it can work
(the job store and the broker both answer), else 503 with which one did not. Neither needs
a token: a probe carries none, and neither says anything secret.

``/readyz`` answers within ``PROBE_TIMEOUT_SECONDS`` or so, whatever Redis does: the two
checks run side by side, and the store's is made with a client of its own that tries once
(``worker.store.connect.probe_client``), where the store's client would send its PING again
for seconds through a failover. So while Sentinels name no master the answer is a prompt
503, not a prober's timeout; and the checks ask anew each time, so the same process is
ready again once a master answers.
"""

from __future__ import annotations

import asyncio

import redis
from celery import Celery
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

# Each check's bound: every socket operation of the store's (each Sentinel asked, the
# master's connect and PONG), and the broker's connection attempts altogether.
PROBE_TIMEOUT_SECONDS = 1.0


async def healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


class Readiness:
    """``redis_probe``: a client of the job store that tries once (``probe_client``)."""

    def __init__(self, redis_probe: redis.Redis, app: Celery) -> None:
        self.redis_probe = redis_probe
        self.app = app

    def _redis(self) -> str:
        try:
            self.redis_probe.ping()
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
        redis_state, broker_state = await asyncio.gather(
            run_in_threadpool(self._redis), run_in_threadpool(self._broker)
        )
        ready = redis_state == broker_state == "ok"
        body = {
            "status": "ready" if ready else "not ready",
            "redis": redis_state,
            "broker": broker_state,
        }
        return JSONResponse(body, status_code=200 if ready else 503)
