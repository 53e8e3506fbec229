"""``/metrics``: Prometheus text, read from Redis at each scrape, so every ``serve`` process of
a fleet reports the same numbers (the fleet's, never one process's memory)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

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
from worker.lanes import lanes_of
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
        per_provider = GaugeMetricFamily(
            "creditq_provider_jobs",
            "Jobs in each state, per provider.",
            labels=["provider", "state"],
        )
        for provider, by_state in self.store.count_by_provider().items():
            for name, n in by_state.items():
                per_provider.add_metric([provider, name], n)
        yield per_provider
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
        families = [
            (kind(f"creditq_{name}", words, labels=label), value)
            for name, kind, words, value in PROVIDER_FIGURES
        ]
        snapshots = self.budgets.snapshots()
        for snap in snapshots:
            for family, value in families:
                family.add_metric([snap["provider"]], value(snap))
        yield from (family for family, _ in families)
        yield from self._lanes(snapshots)
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

    def _lanes(self, snapshots: list[dict[str, Any]]) -> Iterator[Metric]:
        """Per provider and lane, from the budgets' snapshots the providers' figures read."""
        labels = ["provider", "lane"]
        waiting = GaugeMetricFamily(
            "creditq_lane_waiting", "Unfinished grants per provider and lane.", labels=labels
        )
        oldest = GaugeMetricFamily(
            "creditq_lane_oldest_age_seconds",
            "How long the oldest unfinished grant of the lane has waited.",
            labels=labels,
        )
        drain = GaugeMetricFamily(
            "creditq_lane_drain_seconds",
            "When the lane's last grant should be through at the budget's pace (estimate).",
            labels=labels,
        )
        now = time.time()
        for lane in lanes_of(self.store.lanes(), snapshots, now):
            key = [lane.provider, lane.lane]
            waiting.add_metric(key, lane.waiting)
            oldest.add_metric(key, lane.oldest_age_seconds or 0.0)
            drain.add_metric(key, lane.drain_seconds)
        yield from (waiting, oldest, drain)


def _ratio(value: float | None) -> float:
    return math.nan if value is None else value


Snapshot = dict[str, Any]
Kind = type[GaugeMetricFamily | CounterMetricFamily]

# The per-provider figures, from ``Budgets.snapshots``: name (after ``creditq_``), kind, help,
# and how to read it off a provider's snapshot.
PROVIDER_FIGURES: tuple[tuple[str, Kind, str, Callable[[Snapshot], float]], ...] = (
    (
        "provider_calls_last_minute",
        GaugeMetricFamily,
        "Provider calls in the last minute.",
        lambda s: s["calls_last_minute"],
    ),
    (
        "provider_calls_last_hour",
        GaugeMetricFamily,
        "Provider calls in the last hour.",
        lambda s: s["calls_last_hour"],
    ),
    (
        "provider_rate_limited",
        CounterMetricFamily,
        "429s answered, ever.",
        lambda s: s["rate_limited_total"],
    ),
    (
        "provider_rate_limited_last_hour",
        GaugeMetricFamily,
        "429s in the last hour.",
        lambda s: s["rate_limited_last_hour"],
    ),
    (
        "calls_per_confirmed_grant",
        GaugeMetricFamily,
        "Calls per grant confirmed, last hour.",
        lambda s: _ratio(s["calls_per_confirmed_grant"]),
    ),
    (
        "budget_per_minute",
        GaugeMetricFamily,
        "The fleet's call budget per minute.",
        lambda s: s["limit_per_minute"],
    ),
    (
        "budget_use_ratio",
        GaugeMetricFamily,
        "Calls in the last minute over the budget.",
        lambda s: s["calls_last_minute"] / s["limit_per_minute"],
    ),
    (
        "budget_paused_seconds",
        GaugeMetricFamily,
        "Time left of a fleet-wide 429 pause.",
        lambda s: s["paused_for_seconds"],
    ),
)


def registry_for(store: JobStore, budgets: Budgets) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(store, budgets))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
