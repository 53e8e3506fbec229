"""/metrics: the fleet's numbers from Redis in Prometheus text, behind the console's login."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from starlette.testclient import TestClient

from tests.fixtures.celery import PublishRecorder
from tests.fixtures.grants import make_grant
from worker.domain.states import DlqReason, JobState
from worker.serve.app import build_app
from worker.settings import Settings
from worker.store.jobs import JobStore

LOGIN = ("ops", "a-console-password")


@pytest.fixture
def console(store: JobStore, recorder: PublishRecorder) -> TestClient:
    settings = Settings(console_basic_auth=SecretStr(":".join(LOGIN)))
    return TestClient(build_app(settings, store, recorder))  # type: ignore[arg-type]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_need_the_console_login(console: TestClient) -> None:
    assert console.get("/metrics").status_code == 401
    assert console.get("/metrics", auth=("ops", "wrong")).status_code == 401
    answer = console.get("/metrics", auth=LOGIN)
    assert answer.status_code == 200 and "a-console-password" not in answer.text


def test_without_a_console_login_configured_metrics_stay_shut(
    store: JobStore, recorder: PublishRecorder
) -> None:
    shut = TestClient(build_app(Settings(), store, recorder))  # type: ignore[arg-type]
    answer = shut.get("/metrics", auth=("anyone", "anything"))
    assert answer.status_code == 401 and "CREDITQ_CONSOLE_BASIC_AUTH" in answer.text


def test_metrics_count_known_jobs_the_dlq_alarms_and_latencies(
    console: TestClient, store: JobStore
) -> None:
    for key in ("q1", "q2", "d1"):
        store.create(make_grant(key))
    store.transition("d1", JobState.DEAD, reason="x", dlq_reason=DlqReason.EXHAUSTED)
    store.raise_alarm("q1", {"kind": "duplicate", "refs": ["r1"]}, 1.0)
    store.record_latencies("inveterate", [0.4, 3.0, 3.5, 7200.0])
    got = samples(console.get("/metrics", auth=LOGIN).text)
    assert got[("creditq_jobs", (("state", "queued"),))] == 2
    assert got[("creditq_jobs", (("state", "dead"),))] == 1
    assert got[("creditq_jobs", (("state", "confirmed"),))] == 0
    assert got[("creditq_provider_jobs", (("provider", "inveterate"), ("state", "queued")))] == 2
    assert got[("creditq_provider_jobs", (("provider", "chargebee"), ("state", "dead")))] == 0
    lane = (("lane", "interactive"), ("provider", "inveterate"))
    assert got[("creditq_lane_waiting", lane)] == 2  # the two queued; d1 is through
    assert got[("creditq_lane_oldest_age_seconds", lane)] >= 0
    assert got[("creditq_lane_drain_seconds", lane)] > 0
    assert got[("creditq_dlq_jobs", (("reason", "exhausted"),))] == 1
    assert got[("creditq_dlq_jobs", (("reason", "refused"),))] == 0
    assert got[("creditq_alarms", ())] == 1
    inv = (("provider", "inveterate"),)
    bucket = "creditq_enqueue_to_confirmed_seconds_bucket"
    assert got[(bucket, (("le", "0.5"), *inv))] == 1
    assert got[(bucket, (("le", "5.0"), *inv))] == 3
    assert got[(bucket, (("le", "3600.0"), *inv))] == 3
    assert got[(bucket, (("le", "+Inf"), *inv))] == 4
    assert got[("creditq_enqueue_to_confirmed_seconds_count", inv)] == 4
    assert got[("creditq_enqueue_to_confirmed_seconds_sum", inv)] == pytest.approx(7206.9)
    assert got[("creditq_budget_per_minute", inv)] == 100
    assert got[("creditq_provider_rate_limited_total", inv)] == 0
