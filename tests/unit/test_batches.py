"""Batches: a campaign handed over under a name (``enqueue_many(..., batch=NAME)``, the CLI,
the HTTP batch form) and followed with ``creditq batch status NAME``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from tests.fixtures.celery import PublishRecorder
from tests.fixtures.cli import run
from worker.domain.batch import BATCH_MAX, check_batch
from worker.domain.states import DlqReason, JobState
from worker.errors import InvalidGrant
from worker.producer import enqueue, enqueue_many
from worker.serve.app import build_app
from worker.settings import Settings
from worker.store.jobs import JobStore
from worker.store.keys import Keys


def grants(prefix: str, n: int) -> list[dict[str, Any]]:
    return [
        {
            "idempotency_key": f"{prefix}-{i}",
            "provider": "inveterate",
            "customer_id": f"m-{i}",
            "amount": "5.00",
            "priority": "bulk",
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("name", ["", "two words", "tab\there", "x" * (BATCH_MAX + 1), "bell\a"])
def test_a_batch_name_must_be_printable_without_whitespace_and_bounded(name: str) -> None:
    with pytest.raises(InvalidGrant) as caught:
        check_batch(name)
    assert caught.value.field == "batch" and "\n" not in str(caught.value)
    assert check_batch("spring-loyalty") == "spring-loyalty" and check_batch(None) is None


def test_a_bad_batch_name_writes_nothing_and_sends_nothing(
    store: JobStore, recorder: PublishRecorder
) -> None:
    with pytest.raises(InvalidGrant, match="^batch: "):
        enqueue_many(grants("g", 3), store=store, app=recorder, batch="spring loyalty")  # type: ignore[arg-type]
    assert store.redis.dbsize() == 0 and recorder.sent == []


def test_a_batch_counts_its_grants_per_state_and_each_job_names_it(
    store: JobStore, recorder: PublishRecorder
) -> None:
    enqueue(grants("old", 1)[0], store=store, app=recorder)  # accepted before the campaign
    batch = [*grants("old", 1), *grants("g", 4)]
    results = enqueue_many(batch, store=store, app=recorder, batch="spring")  # type: ignore[arg-type]
    assert [r.created for r in results] == [False, True, True, True, True]
    store.transition("g-0", JobState.SUBMITTING, reason="x")
    store.transition("g-0", JobState.CONFIRMED, reason="x")
    store.transition("g-1", JobState.DEAD, reason="x", dlq_reason=DlqReason.EXHAUSTED)
    counts = store.batch_states("spring")
    assert {s: n for s, n in counts.items() if n} == {"queued": 3, "confirmed": 1, "dead": 1}
    job = store.get("g-2")
    assert job is not None and job.to_json()["batch"] == "spring"
    old = store.get("old-0")  # in the batch's count, its job keeps its own (no) batch
    assert old is not None and old.batch is None
    store.redis.delete(Keys.job("g-3"))  # purged, or past its retention
    assert store.batch_states("spring")["gone"] == 1
    assert store.redis.ttl(Keys.batch("spring")) > 0


def test_batch_status_json_and_its_table(
    cli_store: JobStore, recorder: PublishRecorder, capsys: pytest.CaptureFixture[str]
) -> None:
    enqueue_many(grants("g", 3), store=cli_store, app=recorder, batch="spring")  # type: ignore[arg-type]
    cli_store.transition("g-0", JobState.SUBMITTING, reason="x")
    cli_store.transition("g-0", JobState.CONFIRMED, reason="x")
    code, out, _ = run(capsys, "batch", "status", "spring", "--json")
    report = json.loads(out)
    assert code == 0
    assert (report["total"], report["finished"], report["done"]) == (3, 1, False)
    assert report["states"]["queued"] == 2 and report["batch"] == "spring"
    code, out, _ = run(capsys, "batch", "status", "spring", "--no-follow")
    assert code == 0 and "spring: 1 of 3 finished" in out
    code, _, err = run(capsys, "batch", "status", "autumn", "--no-follow")
    assert (
        code == 1
        and err == "creditq: no batch named 'autumn' (or its grants are past their retention)\n"
    )
    code, _, err = run(capsys, "batch", "status", "two words")
    assert code == 2 and err.count("\n") == 1


def test_creditq_enqueue_hands_a_grant_over_in_a_batch(
    cli_store: JobStore, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["enqueue", "--key", "k1", "--provider", "chargebee", "--customer", "c1"]
    code, out, _ = run(capsys, *argv, "--amount", "3", "--batch", "spring", "--json")
    assert code == 0 and json.loads(out)["batch"] == "spring"
    code, _, err = run(
        capsys, *[a.replace("k1", "k2") for a in argv], "--amount", "3", "--batch", "a b"
    )
    assert code == 2 and err.startswith("creditq: batch: ") and cli_store.get("k2") is None


def test_the_http_batch_form_takes_a_batch_name(store: JobStore, recorder: PublishRecorder) -> None:
    token = "t0k3n-for-the-batch-tests-00001"
    client = TestClient(build_app(Settings(api_tokens=SecretStr(token)), store, recorder))  # type: ignore[arg-type]
    client.headers["Authorization"] = f"Bearer {token}"
    answer = client.post("/v1/grants/batch", json={"grants": grants("h", 2), "batch": "spring"})
    assert answer.status_code == 201
    assert [g["batch"] for g in answer.json()["grants"]] == ["spring", "spring"]
    refused = client.post("/v1/grants/batch", json={"grants": grants("x", 1), "batch": "a b"})
    assert refused.status_code == 422 and refused.json()["field"] == "batch"
    assert store.get("x-0") is None
    odd = client.post("/v1/grants/batch", json={"grants": grants("y", 1), "name": "spring"})
    assert odd.status_code == 422 and store.get("y-0") is None


def test_batch_status_follows_a_draining_batch_until_every_grant_is_finished(
    cli_store: JobStore,
    recorder: PublishRecorder,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import worker.cli.batch

    enqueue_many(grants("g", 2), store=cli_store, app=recorder, batch="spring")  # type: ignore[arg-type]
    monkeypatch.setattr(worker.cli.batch, "FOLLOW_SECONDS", 0.0)
    reads = 0
    real = cli_store.batch_states

    def draining(name: str) -> dict[str, int]:
        nonlocal reads
        reads += 1
        if reads == 2:  # the follow's first read again: one grant has finished meanwhile
            cli_store.transition("g-0", JobState.SUBMITTING, reason="x")
            cli_store.transition("g-0", JobState.CONFIRMED, reason="x")
        if reads == 3:
            cli_store.transition("g-1", JobState.DEAD, reason="x", dlq_reason=DlqReason.EXHAUSTED)
        return real(name)

    monkeypatch.setattr(cli_store, "batch_states", draining)
    code, out, _ = run(capsys, "batch", "status", "spring", "--follow")
    assert code == 0 and "spring: 2 of 2 finished" in out and reads == 3
