"""``/metrics``: Prometheus text, read from Redis at each scrape, so every ``serve`` process of
a fleet reports the same numbers (the fleet's, never one process's memory)."""

from __future__ import annotations

import math
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from worker.budget import Budgets
from worker.domain.grant import Provider
from worker.domain.states import DlqReason, JobState
from worker.store.dlq import dlq_depth
from worker.store.jobs import JobStore


class FleetCollector(Collector):
    """Each scrape reads the job indexes, the DLQ, the budgets, the histogram and alarms."""

    def __init__(self, store: JobStore, budgets: Budgets) -> None:
        self.store = store
        self.budgets = budgets

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("creditq_jobs", "Jobs in each state.", labels=["state"])
        counts = self.store.count_by_state()
        for state in JobState:
            jobs.add_metric([state.value], counts.get(state.value, 0))
        yield jobs
        dlq = GaugeMetricFamily(
            "creditq_dlq_jobs", "Dead-lettered jobs per reason.", labels=["reason"]
        )
        for reason in DlqReason:
            dlq.add_metric([reason.value], dlq_depth(self.store, reason=reason.value))
        yield dlq
        yield from self._providers()
        alarms = GaugeMetricFamily(
            "creditq_alarms", "Jobs with a duplicate credit or a copied marker (alarms)."
        )
        alarms.add_metric([], self.store.alarms())
        yield alarms

    def _providers(self) -> Iterator[Metric]:
        label = ["provider"]
        calls_minute = GaugeMetricFamily(
            "creditq_provider_calls_last_minute", "Provider calls in the last minute.", labels=label
        )
        calls_hour = GaugeMetricFamily(
            "creditq_provider_calls_last_hour", "Provider calls in the last hour.", labels=label
        )
        limited = CounterMetricFamily(
            "creditq_provider_rate_limited", "429s answered, ever.", labels=label
        )
        limited_hour = GaugeMetricFamily(
            "creditq_provider_rate_limited_last_hour", "429s in the last hour.", labels=label
        )
        per_grant = GaugeMetricFamily(
            "creditq_calls_per_confirmed_grant",
            "Provider calls per grant confirmed, over the last hour.",
            labels=label,
        )
        budget = GaugeMetricFamily(
            "creditq_budget_per_minute", "The fleet's call budget per minute.", labels=label
        )
        use = GaugeMetricFamily(
            "creditq_budget_use_ratio", "Calls in the last minute over the budget.", labels=label
        )
        paused = GaugeMetricFamily(
            "creditq_budget_paused_seconds", "Time left of a fleet-wide 429 pause.", labels=label
        )
        latency = HistogramMetricFamily(
            "creditq_enqueue_to_confirmed_seconds",
            "Time from enqueue to confirmed in the provider's listing.",
            labels=label,
        )
        for snap in self.budgets.snapshots():
            name = [snap["provider"]]
            calls_minute.add_metric(name, snap["calls_last_minute"])
            calls_hour.add_metric(name, snap["calls_last_hour"])
            limited.add_metric(name, snap["rate_limited_total"])
            limited_hour.add_metric(name, snap["rate_limited_last_hour"])
            ratio = snap["calls_per_confirmed_grant"]
            per_grant.add_metric(name, math.nan if ratio is None else ratio)
            budget.add_metric(name, snap["limit_per_minute"])
            use.add_metric(name, snap["calls_last_minute"] / snap["limit_per_minute"])
            paused.add_metric(name, snap["paused_for_seconds"])
        for provider in Provider:
            buckets, _, total = self.store.latencies(provider.value)
            latency.add_metric(
                [provider.value],
                [("+Inf" if math.isinf(b) else repr(b), n) for b, n in buckets],
                sum_value=total,
            )
        yield from (calls_minute, calls_hour, limited, limited_hour, per_grant)
        yield from (budget, use, paused, latency)


def registry_for(store: JobStore, budgets: Budgets) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(store, budgets))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
