"""Enqueueing against a real redis-server and the real Celery app configuration."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import redis
from celery import Celery

from tests.fixtures.celery import queued_messages
from tests.fixtures.cli import run_cli
from worker.domain.grant import CreditGrant
from worker.domain.states import DlqReason, JobState
from worker.producer import enqueue, enqueue_many
from worker.settings import get_settings
from worker.store.jobs import JobStore

SECRET = "sk_live_SENTINEL_never_store_me"


def raw(key: str, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "idempotency_key": key,
        "provider": "inveterate",
        "customer_id": "m-1",
        "amount": "3.00",
    }
    fields.update(overrides)
    return fields


def test_twenty_threads_enqueueing_one_key_make_one_job_and_one_message(
    redis_url: str, real_store: JobStore, real_redis: redis.Redis, celery_app: Celery
) -> None:
    barrier = threading.Barrier(20)
    created: list[bool] = []

    def producer() -> None:
        store = JobStore.from_url(redis_url)  # its own connection, as separate handlers have
        barrier.wait()
        created.append(enqueue(raw("race-1"), store=store, app=celery_app).created)

    threads = [threading.Thread(target=producer) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(created) == [False] * 19 + [True]
    assert real_store.count_by_state()["queued"] == 1
    assert queued_messages(real_redis) == 1


def test_enqueue_many_writes_each_grant_once_and_sends_one_message_each(
    real_store: JobStore, real_redis: redis.Redis, celery_app: Celery
) -> None:
    grants = [raw(f"batch-{i}") for i in range(50)]
    first = enqueue_many(grants, store=real_store, app=celery_app)
    again = enqueue_many(grants, store=real_store, app=celery_app)
    assert all(r.created for r in first) and not any(r.created for r in again)
    assert queued_messages(real_redis) == 50
    assert real_store.count_by_state()["queued"] == 50


def test_no_api_key_reaches_redis_or_the_broker(
    real_store: JobStore,
    real_redis: redis.Redis,
    celery_app: Celery,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CREDITQ_INVETERATE_API_KEY", SECRET)
    monkeypatch.setenv("CREDITQ_CHARGEBEE_API_KEY", SECRET)
    monkeypatch.setenv("CREDITQ_CHARGEBEE_SITE", "shop-test")
    get_settings.cache_clear()
    assert get_settings().inveterate_key().get_secret_value() == SECRET
    enqueue(raw("s-1"), store=real_store, app=celery_app)
    enqueue_many(
        [raw("s-2", provider="chargebee", customer_id="c9")], store=real_store, app=celery_app
    )
    real_store.transition("s-1", JobState.SUBMITTING, reason="posting", attempts="incr")
    real_store.transition(
        "s-1",
        JobState.REJECTED,
        reason="401 from provider",
        dlq_reason=DlqReason.REFUSED,
        fields={"last_error": {"status": 401, "message": "bad key"}},
    )
    assert SECRET not in repr(get_settings())
    dumped = []
    for key in real_redis.scan_iter("*"):
        dumped.append(key)
        dumped.append(repr(real_redis.dump(key)))
    blob = "\n".join(dumped)
    assert "s-1" in blob and SECRET not in blob


ENQUEUE = ["enqueue", "--key", "cli-1", "--provider", "chargebee", "--customer", "c-7"]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--amount", "0.00"], "amount: must not be zero"),
        (["--amount", "abc"], "amount:"),
        (["--amount", "1.001"], "decimal places"),
        (["--amount", "-2"], "only adds credit"),
        (["--amount", "1", "--credit-type", "cash"], "credit_type:"),
        (["--amount", "1", "--priority", "urgent"], "priority: must be one of"),
        ([], "Missing option '--amount'"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(
    redis_url: str, real_redis: redis.Redis, extra: list[str], needle: str
) -> None:
    done = run_cli(redis_url, *ENQUEUE, *extra)
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and done.stderr.count("\n") == 1 and needle in done.stderr
    assert real_redis.dbsize() == 0


def test_cli_enqueue_status_and_stats_speak_json_lines(
    redis_url: str, real_redis: redis.Redis
) -> None:
    first = run_cli(redis_url, *ENQUEUE, "--amount", "12.30", "--priority", "bulk", "--json")
    assert first.returncode == 0, first.stderr
    job = json.loads(first.stdout)
    assert job["created"] is True and job["amount"] == "12.30" and job["state"] == "queued"
    assert job["priority"] == "bulk"
    dup = json.loads(run_cli(redis_url, *ENQUEUE, "--amount", "12.3", "--json").stdout)
    assert dup["created"] is False
    assert queued_messages(real_redis) == 1

    conflict = run_cli(redis_url, *ENQUEUE, "--amount", "99", "--json")
    assert conflict.returncode == 3 and "'cli-1'" in conflict.stderr

    status = run_cli(redis_url, "status", "cli-1", "nope", "--json")
    lines = [json.loads(line) for line in status.stdout.splitlines()]
    assert status.returncode == 1
    assert lines[0]["state"] == "queued" and lines[1] == {"idempotency_key": "nope", "state": None}
    for field in (
        "idempotency_key",
        "state",
        "provider",
        "customer_id",
        "amount",
        "attempts",
        "provider_ref",
        "last_error",
        "history",
    ):
        assert field in lines[0]

    stats = json.loads(run_cli(redis_url, "stats", "--json").stdout)
    assert stats["states"]["queued"] == 1 and stats["dlq_depth"] == 0
    assert stats["oldest_age_seconds"]["queued"] >= 0


def test_grant_round_trips_through_redis_with_the_exact_amount(real_store: JobStore) -> None:
    real_store.create(
        CreditGrant.parse(raw("exact", provider="chargebee", amount="1234.50", currency_code="KWD"))
    )
    job = real_store.get("exact")
    assert job is not None and str(job.grant().amount) == "1234.50"
