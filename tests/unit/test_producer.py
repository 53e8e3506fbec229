"""enqueue and enqueue_many on fakeredis: one job and one message per key, whatever is retried."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.celery import PublishRecorder
from worker.app import ISSUE_TASK
from worker.errors import IdempotencyConflict, InvalidGrant
from worker.producer import enqueue, enqueue_many
from worker.store.jobs import JobStore


def raw(key: str = "k1", **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "idempotency_key": key,
        "provider": "chargebee",
        "customer_id": "c1",
        "amount": "7.25",
    }
    fields.update(overrides)
    return fields


def test_enqueue_creates_the_job_and_sends_one_message(
    store: JobStore, recorder: PublishRecorder
) -> None:
    result = enqueue(raw(), store=store, app=recorder)  # type: ignore[arg-type]
    assert result.created and result.job.state.value == "queued"
    assert recorder.sent == [
        (
            ISSUE_TASK,
            {
                "idempotency_key": "k1",
                "provider": "chargebee",
                "customer_id": "c1",
                "amount": "7.25",
                "note": None,
                "force": False,
                "currency_code": "USD",
                "credit_type": "general",
                "priority": "interactive",
            },
        )
    ]


def test_duplicate_key_sends_no_second_message(store: JobStore, recorder: PublishRecorder) -> None:
    enqueue(raw(), store=store, app=recorder)  # type: ignore[arg-type]
    again = enqueue(raw(amount="7.250"), store=store, app=recorder)  # type: ignore[arg-type]
    assert not again.created and len(recorder.sent) == 1


def test_conflicting_payload_raises_and_sends_nothing(
    store: JobStore, recorder: PublishRecorder
) -> None:
    enqueue(raw(), store=store, app=recorder)  # type: ignore[arg-type]
    with pytest.raises(IdempotencyConflict, match="'k1'"):
        enqueue(raw(amount="8.00"), store=store, app=recorder)  # type: ignore[arg-type]
    assert len(recorder.sent) == 1


def test_invalid_grant_writes_nothing_and_sends_nothing(
    store: JobStore, recorder: PublishRecorder
) -> None:
    with pytest.raises(InvalidGrant, match="^amount: must not be zero$"):
        enqueue(raw(amount="0"), store=store, app=recorder)  # type: ignore[arg-type]
    assert store.redis.dbsize() == 0 and recorder.sent == []


def test_enqueue_many_refuses_the_whole_batch_on_one_bad_grant(
    store: JobStore, recorder: PublishRecorder
) -> None:
    with pytest.raises(InvalidGrant, match=r"^grants\[1\]\.amount: "):
        enqueue_many([raw("a"), raw("b", amount="NaN")], store=store, app=recorder)  # type: ignore[arg-type]
    assert store.redis.dbsize() == 0 and recorder.sent == []


def test_enqueue_many_refuses_a_batch_reusing_a_key_for_different_grants(
    store: JobStore, recorder: PublishRecorder
) -> None:
    with pytest.raises(IdempotencyConflict, match="'a'"):
        enqueue_many([raw("a"), raw("a", amount="1.00")], store=store, app=recorder)  # type: ignore[arg-type]
    assert store.redis.dbsize() == 0


def test_enqueue_many_refuses_a_batch_conflicting_with_a_stored_job(
    store: JobStore, recorder: PublishRecorder
) -> None:
    enqueue(raw("a"), store=store, app=recorder)  # type: ignore[arg-type]
    with pytest.raises(IdempotencyConflict, match="'a'"):
        enqueue_many([raw("b"), raw("a", amount="1.00")], store=store, app=recorder)  # type: ignore[arg-type]
    assert store.get("b") is None and len(recorder.sent) == 1


def test_enqueue_many_publishes_only_new_grants(store: JobStore, recorder: PublishRecorder) -> None:
    enqueue(raw("a"), store=store, app=recorder)  # type: ignore[arg-type]
    results = enqueue_many([raw("a"), raw("b"), raw("b"), raw("c")], store=store, app=recorder)  # type: ignore[arg-type]
    assert [r.created for r in results] == [False, True, False, True]
    assert [kw["idempotency_key"] for _, kw in recorder.sent] == ["a", "b", "c"]
