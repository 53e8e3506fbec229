"""The /v1 intake in process (Starlette's test client, fakeredis, a publish recorder): every
status, the CLI's one-line errors, exact amounts, tokens, and nothing written when refused."""

from __future__ import annotations

import json

import pytest
import redis
from kombu.exceptions import OperationalError
from pydantic import SecretStr
from starlette.testclient import TestClient

from tests.fixtures.celery import PublishRecorder
from tests.fixtures.grants import raw_grant
from worker.errors import SettingsError
from worker.serve.api import MAX_BATCH, MAX_BODY_BYTES
from worker.serve.app import build_app, check_exposure
from worker.settings import Settings
from worker.store.jobs import JobStore

TOKEN = "t0k3n-for-the-intake-tests-0001"


@pytest.fixture
def intake(store: JobStore, recorder: PublishRecorder) -> TestClient:
    settings = Settings(api_tokens=SecretStr(TOKEN))
    client = TestClient(build_app(settings, store, recorder))  # type: ignore[arg-type]
    client.headers["Authorization"] = f"Bearer {TOKEN}"
    return client


def test_a_grant_is_created_once_and_its_repeat_sends_nothing(
    intake: TestClient, recorder: PublishRecorder
) -> None:
    first = intake.post("/v1/grants", json=raw_grant())
    again = intake.post("/v1/grants", json=raw_grant())
    assert first.status_code == 201 and first.json()["created"] is True
    assert first.json()["state"] == "queued" and first.json()["amount"] == "10.50"
    assert again.status_code == 200 and again.json()["created"] is False
    assert len(recorder.sent) == 1


def test_the_key_may_come_in_the_idempotency_key_header(intake: TestClient) -> None:
    body = raw_grant()
    del body["idempotency_key"]
    answer = intake.post("/v1/grants", json=body, headers={"Idempotency-Key": "hdr-1"})
    assert answer.status_code == 201 and answer.json()["idempotency_key"] == "hdr-1"
    clash = intake.post("/v1/grants", json=raw_grant(), headers={"Idempotency-Key": "hdr-2"})
    assert clash.status_code == 422
    assert clash.json() == {
        "error": "differs from the Idempotency-Key header",
        "field": "idempotency_key",
    }


def test_a_key_holding_another_grant_is_a_conflict(intake: TestClient) -> None:
    assert intake.post("/v1/grants", json=raw_grant()).status_code == 201
    answer = intake.post("/v1/grants", json=raw_grant(amount="11.00"))
    assert answer.status_code == 409 and answer.json()["field"] == "idempotency_key"


@pytest.mark.parametrize(
    ("body", "error", "field"),
    [
        (raw_grant(amount="0"), "amount: must not be zero", "amount"),
        (raw_grant(colour="red"), "colour: is not a field of a credit grant", "colour"),
        (raw_grant(provider="stripe"), None, "provider"),
        (raw_grant(priority="urgent"), "priority: must be one of interactive, bulk", "priority"),
        ([raw_grant()], "the body must be a JSON object: a credit grant", None),
    ],
)
def test_a_refused_field_is_a_422_naming_it_and_nothing_is_written(
    intake: TestClient,
    store: JobStore,
    recorder: PublishRecorder,
    body: object,
    error: str | None,
    field: str | None,
) -> None:
    answer = intake.post("/v1/grants", json=body)
    assert answer.status_code == 422
    assert answer.json().get("field") == field
    if error is not None:
        assert answer.json()["error"] == error
    assert store.count_by_state() == {} or sum(store.count_by_state().values()) == 0
    assert recorder.sent == []


def test_a_bulk_grant_says_so_in_its_job_and_a_repeat_in_another_lane_is_a_duplicate(
    intake: TestClient, recorder: PublishRecorder
) -> None:
    first = intake.post("/v1/grants", json=raw_grant(priority="bulk"))
    assert first.status_code == 201 and first.json()["priority"] == "bulk"
    again = intake.post("/v1/grants", json=raw_grant())
    assert again.status_code == 200 and again.json()["priority"] == "bulk"
    assert len(recorder.sent) == 1 and recorder.sent[0][1]["priority"] == "bulk"


def test_a_json_number_amount_keeps_its_exact_value(intake: TestClient) -> None:
    body = json.dumps(raw_grant(amount=None)).replace("null", "10.10")
    answer = intake.post("/v1/grants", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 201 and answer.json()["amount"] == "10.10"


def test_without_a_valid_token_nothing_is_read_or_written(
    intake: TestClient, recorder: PublishRecorder
) -> None:
    for header in ({"Authorization": ""}, {"Authorization": "Bearer wrong-token-0000000000"}):
        answer = intake.post("/v1/grants", json=raw_grant(), headers=header)
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"] == "Bearer"
        assert TOKEN not in answer.text
    assert (
        intake.get("/v1/grants/order-1001-cashback", headers={"Authorization": ""}).status_code
        == 401
    )
    assert recorder.sent == []


def test_bodies_are_bounded_and_must_be_json(intake: TestClient) -> None:
    big = b"{" + b" " * MAX_BODY_BYTES + b"}"
    too_big = intake.post("/v1/grants", content=big, headers={"Content-Type": "application/json"})
    assert too_big.status_code == 413
    garbled = intake.post("/v1/grants", content=b"{not json", headers={"Content-Type": "x"})
    assert garbled.status_code == 400 and garbled.json() == {"error": "the body is not JSON"}


def test_a_batch_is_written_whole_or_not_at_all(
    intake: TestClient, store: JobStore, recorder: PublishRecorder
) -> None:
    good = [raw_grant(idempotency_key=f"b-{i}") for i in range(3)]
    bad = [*good[:1], raw_grant(idempotency_key="b-x", amount="0")]
    refused = intake.post("/v1/grants/batch", json={"grants": bad})
    assert refused.status_code == 422
    assert refused.json() == {
        "error": "grants[1].amount: must not be zero",
        "field": "grants[1].amount",
    }
    assert store.get("b-0") is None and recorder.sent == []
    accepted = intake.post("/v1/grants/batch", json={"grants": good})
    assert accepted.status_code == 201 and accepted.json()["created"] == 3
    assert [g["idempotency_key"] for g in accepted.json()["grants"]] == ["b-0", "b-1", "b-2"]
    repeat = intake.post("/v1/grants/batch", json={"grants": good})
    assert repeat.status_code == 200 and repeat.json()["created"] == 0
    over = intake.post("/v1/grants/batch", json={"grants": [raw_grant()] * (MAX_BATCH + 1)})
    assert over.status_code == 422 and over.json()["field"] == "grants"


def test_a_job_is_read_by_its_key(intake: TestClient) -> None:
    assert intake.get("/v1/grants/nobody").status_code == 404
    intake.post("/v1/grants", json=raw_grant())
    job = intake.get("/v1/grants/order-1001-cashback").json()
    assert job["state"] == "queued" and job["history"][0]["to"] == "queued"


def test_the_openapi_document_names_every_endpoint(intake: TestClient) -> None:
    paths = intake.get("/openapi.json").json()["paths"]
    assert set(paths) == {"/v1/grants", "/v1/grants/batch", "/v1/grants/{key}"}


def test_the_api_is_not_opened_to_the_network_without_tokens() -> None:
    open_settings = Settings()
    with pytest.raises(SettingsError, match="refusing to serve on 0.0.0.0"):
        check_exposure("0.0.0.0", open_settings)
    check_exposure("127.0.0.1", open_settings)
    check_exposure("::1", open_settings)
    check_exposure("0.0.0.0", Settings(api_tokens=SecretStr(TOKEN)))


def test_a_grant_not_yet_held_by_the_replicas_is_a_503_to_send_again(
    intake: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import worker.serve.api
    from worker.errors import NotReplicated

    def not_held(*_: object, **__: object) -> None:
        raise NotReplicated(["order-1001-cashback"], 1)

    monkeypatch.setattr(worker.serve.api, "enqueue", not_held)
    answer = intake.post("/v1/grants", json=raw_grant())
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
    assert "hand it over again with the same key" in answer.json()["error"]


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379."),
        redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
        OperationalError("the broker is away"),
    ],
)
def test_a_store_or_broker_away_is_a_503_to_send_again_in_one_log_line(
    intake: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
) -> None:
    import worker.serve.api

    def away(*_: object, **__: object) -> None:
        raise error

    monkeypatch.setattr(worker.serve.api, "enqueue", away)
    monkeypatch.setattr(worker.serve.api, "enqueue_many", away)
    single = intake.post("/v1/grants", json=raw_grant())
    many = intake.post("/v1/grants/batch", json={"grants": [raw_grant()]})
    for answer in (single, many):
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
        assert "send it again with the same key" in answer.json()["error"]
    lines = [r for r in caplog.records if r.name == "creditq.serve"]
    assert len(lines) == 2 and all(r.exc_info is None for r in lines)
    assert type(error).__name__ in lines[0].getMessage()
