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
        families = {
            name: kind(f"creditq_{name}", words, labels=label)
            for name, kind, words in PROVIDER_FIGURES
        }
        for snap in self.budgets.snapshots():
            ratio = snap["calls_per_confirmed_grant"]
            values = {
                "provider_calls_last_minute": snap["calls_last_minute"],
                "provider_calls_last_hour": snap["calls_last_hour"],
                "provider_rate_limited": snap["rate_limited_total"],
                "provider_rate_limited_last_hour": snap["rate_limited_last_hour"],
                "calls_per_confirmed_grant": math.nan if ratio is None else ratio,
                "budget_per_minute": snap["limit_per_minute"],
                "budget_use_ratio": snap["calls_last_minute"] / snap["limit_per_minute"],
                "budget_paused_seconds": snap["paused_for_seconds"],
            }
            for name, value in values.items():
                families[name].add_metric([snap["provider"]], value)
        yield from families.values()
        latency = HistogramMetricFamily(
            "creditq_enqueue_to_confirmed_seconds",
            "Time from enqueue to confirmed in the provider's listing.",
            labels=label,
        )
        for provider in Provider:
            buckets, _, total = self.store.latencies(provider.value)
            latency.add_metric(
                [provider.value],
                [("+Inf" if math.isinf(b) else repr(b), n) for b, n in buckets],
                sum_value=total,
            )
        yield latency


# The per-provider figures of ``Budgets.snapshots``: name (after ``creditq_``), kind, help.
PROVIDER_FIGURES: tuple[tuple[str, type[GaugeMetricFamily | CounterMetricFamily], str], ...] = (
    ("provider_calls_last_minute", GaugeMetricFamily, "Provider calls in the last minute."),
    ("provider_calls_last_hour", GaugeMetricFamily, "Provider calls in the last hour."),
    ("provider_rate_limited", CounterMetricFamily, "429s answered, ever."),
    ("provider_rate_limited_last_hour", GaugeMetricFamily, "429s in the last hour."),
    ("calls_per_confirmed_grant", GaugeMetricFamily, "Calls per grant confirmed, last hour."),
    ("budget_per_minute", GaugeMetricFamily, "The fleet's call budget per minute."),
    ("budget_use_ratio", GaugeMetricFamily, "Calls in the last minute over the budget."),
    ("budget_paused_seconds", GaugeMetricFamily, "Time left of a fleet-wide 429 pause."),
)


def registry_for(store: JobStore, budgets: Budgets) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(store, budgets))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
