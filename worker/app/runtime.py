"""The pipeline of this worker process, built once from the settings, after any fork."""

from __future__ import annotations

import threading

from worker.app import app
from worker.app.scheduler import CeleryScheduler
from worker.budget import Budgets
from worker.domain.grant import Provider
from worker.pipeline import Pipeline, Policy
from worker.providers import ProviderClient, client_for
from worker.settings import Settings, get_settings
from worker.store.jobs import JobStore

_lock = threading.Lock()
_pipeline: Pipeline | None = None


class ClientPool:
    """One pooled HTTP client per provider, made on first use (a missing key fails then)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._clients: dict[Provider, ProviderClient] = {}
        self._lock = threading.Lock()

    def __call__(self, provider: Provider) -> ProviderClient:
        with self._lock:
            if provider not in self._clients:
                self._clients[provider] = client_for(provider, self.settings)
            return self._clients[provider]


def build(settings: Settings | None = None) -> Pipeline:
    settings = settings or get_settings()
    store = JobStore.from_url(settings.redis_url)
    return Pipeline(
        store,
        CeleryScheduler(
            app,
            settings.visibility_timeout_seconds,
            whole_seconds=settings.broker_queue_type == "quorum",
        ),
        ClientPool(settings),
        Policy.from_settings(settings),
        Budgets(store.redis, settings).for_provider,
    )


def pipeline() -> Pipeline:
    global _pipeline
    with _lock:
        if _pipeline is None:
            _pipeline = build()
        return _pipeline
