"""The ``creditq serve`` application, and what is checked before it listens.

Starlette on uvicorn: the intake is a thin layer over ``enqueue`` (validation, errors and
idempotency stay the producer's), so a small toolkit with plain request handlers fits
better than a framework whose validation and error shapes would have to be overridden
(FastAPI); uvicorn is the ASGI server Starlette is built and tested with.
"""

from __future__ import annotations

import ipaddress

from celery import Celery
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from worker.budget import Budgets
from worker.errors import SettingsError
from worker.serve.api import Intake
from worker.serve.auth import basic_user, login_required
from worker.serve.console import Console
from worker.serve.health import PROBE_TIMEOUT_SECONDS, Readiness, healthz
from worker.serve.metrics import registry_for, render
from worker.serve.openapi import document
from worker.settings import Settings
from worker.store.connect import probe_client
from worker.store.jobs import JobStore


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, settings: Settings) -> None:
    """Refuse to open the API beyond this machine without tokens: anyone on the network
    could otherwise hand creditq grants to pay."""
    if not is_loopback(host) and not settings.api_token_list:
        raise SettingsError(
            [
                f"refusing to serve on {host} without CREDITQ_API_TOKENS: the /v1 API would "
                "be open to the network; set tokens, or serve on 127.0.0.1"
            ]
        )


def build_app(settings: Settings, store: JobStore, celery: Celery) -> Starlette:
    intake = Intake(settings.api_token_list, store, celery)
    # /readyz asks the Redis that ``settings`` name (``serve`` opens ``store`` on it too) with
    # a client of its own that tries once: see worker.serve.health
    readiness = Readiness(probe_client(settings, timeout=PROBE_TIMEOUT_SECONDS), celery)
    logins = settings.console_logins
    budgets = Budgets(store.redis, settings)  # sized by these settings, for both readers
    registry = registry_for(store, budgets)

    async def openapi(_: Request) -> Response:
        return JSONResponse(document())

    async def metrics(request: Request) -> Response:
        if basic_user(request, logins) is None:
            return login_required(logins)
        body = await run_in_threadpool(render, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/v1/grants", intake.create, methods=["POST"]),
            Route("/v1/grants/batch", intake.create_many, methods=["POST"]),
            Route("/v1/grants/{key:path}", intake.show, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readiness.readyz, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            *Console(logins, store, celery, budgets).routes(),
        ]
    )


def serve(host: str, port: int, settings: Settings) -> None:
    """Check, build and run until stopped (uvicorn handles SIGINT and SIGTERM)."""
    import uvicorn

    from worker.app import get_app

    check_exposure(host, settings)
    store = JobStore.from_url(settings.redis_url)
    uvicorn.run(build_app(settings, store, get_app()), host=host, port=port, log_level="info")
