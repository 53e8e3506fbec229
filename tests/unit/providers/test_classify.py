"""The error table: every failure class maps to the outcome DESIGN.md promises."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

import httpx
import pytest

from worker.errors import Outcome, ProviderError
from worker.providers.errors import (
    RATE_LIMIT_DEFAULT_WAIT_SECONDS,
    classify_exception,
    classify_response,
    message_from_body,
    outcome_for_status,
    parse_retry_after,
)

REQUEST = httpx.Request("POST", "https://provider.test/x")


def response(
    status: int, body: bytes = b"", headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(status, content=body, headers=headers, request=REQUEST)


@pytest.mark.parametrize("status", [200, 201, 204])
def test_success_is_not_an_error(status: int) -> None:
    assert classify_response("inveterate", response(status)) is None


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (400, Outcome.PERMANENT),
        (401, Outcome.PERMANENT),
        (403, Outcome.PERMANENT),
        (404, Outcome.PERMANENT),
        (409, Outcome.PERMANENT),
        (422, Outcome.PERMANENT),
        (405, Outcome.PERMANENT),
        (302, Outcome.PERMANENT),
        (408, Outcome.NOT_APPLIED),
        (429, Outcome.NOT_APPLIED),
        (503, Outcome.NOT_APPLIED),
        (500, Outcome.AMBIGUOUS),
        (502, Outcome.AMBIGUOUS),
        (504, Outcome.AMBIGUOUS),
        (599, Outcome.AMBIGUOUS),
    ],
)
def test_status_table(status: int, outcome: Outcome) -> None:
    assert outcome_for_status(status) is outcome
    error = classify_response("chargebee", response(status, b'{"message": "m"}'))
    assert error is not None
    assert error.outcome is outcome
    assert error.status == status


def test_429_with_html_body_is_not_applied_with_a_readable_message() -> None:
    html = b"<html><head><style>p{}</style></head><body><h1>Too Many Requests</h1></body></html>"
    error = classify_response("inveterate", response(429, html, {"Content-Type": "text/html"}))
    assert error is not None
    assert error.outcome is Outcome.NOT_APPLIED
    assert error.message == "Too Many Requests"


def test_429_without_retry_after_waits_the_default() -> None:
    error = classify_response("chargebee", response(429, b"{}"))
    assert error is not None and error.retry_after == RATE_LIMIT_DEFAULT_WAIT_SECONDS


def test_429_with_retry_after_seconds() -> None:
    error = classify_response("chargebee", response(429, b"{}", {"Retry-After": "7"}))
    assert error is not None and error.retry_after == 7.0


def test_503_honours_retry_after_and_500_ignores_it() -> None:
    unavailable = classify_response("chargebee", response(503, b"", {"Retry-After": "3"}))
    assert unavailable is not None and unavailable.retry_after == 3.0
    broken = classify_response("chargebee", response(500, b"", {"Retry-After": "3"}))
    assert broken is not None and broken.retry_after is None


def test_chargebee_error_message_and_code() -> None:
    body = (
        b'{"message": "customer_id : cannot be blank", "type": "invalid_request",'
        b' "api_error_code": "param_wrong_value", "error_msg": "x", "http_status_code": 400}'
    )
    error = classify_response("chargebee", response(400, body))
    assert error is not None
    assert error.message == "customer_id : cannot be blank"
    assert error.code == "param_wrong_value"
    assert str(error) == (
        "chargebee HTTP 400 (permanent) [param_wrong_value]: customer_id : cannot be blank"
    )


def test_error_msg_used_when_message_missing() -> None:
    assert message_from_body(b'{"error_msg": "bad"}') == ("bad", None)


def test_message_is_one_line_and_truncated() -> None:
    error = classify_response("inveterate", response(500, b"line one\nline two " + b"x" * 1000))
    assert error is not None
    assert "\n" not in str(error)
    assert len(error.message) <= 300
    assert error.message.startswith("line one line two")


def test_empty_body_says_so() -> None:
    assert message_from_body(b"") == ("(empty body)", None)


def test_message_never_comes_from_headers() -> None:
    error = classify_response("inveterate", response(401, b"", {"X-Inveterate-Api-Key": "k-123"}))
    assert error is not None and "k-123" not in str(error) + repr(error)


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), Outcome.NOT_APPLIED),
        (httpx.ConnectTimeout("timed out"), Outcome.NOT_APPLIED),
        (httpx.PoolTimeout("pool"), Outcome.NOT_APPLIED),
        (httpx.ReadTimeout("timed out"), Outcome.AMBIGUOUS),
        (httpx.WriteTimeout("timed out"), Outcome.AMBIGUOUS),
        (httpx.WriteError("broken pipe"), Outcome.AMBIGUOUS),
        (httpx.ReadError("connection reset by peer"), Outcome.AMBIGUOUS),
        (httpx.RemoteProtocolError("server disconnected"), Outcome.AMBIGUOUS),
        (httpx.UnsupportedProtocol("ftp"), Outcome.PERMANENT),
        (RuntimeError("who knows"), Outcome.AMBIGUOUS),
    ],
)
def test_exception_table(exc: BaseException, outcome: Outcome) -> None:
    error = classify_exception("inveterate", exc)
    assert error.outcome is outcome
    assert error.status is None
    assert type(exc).__name__ in error.message
    assert "no response" in str(error)


def test_provider_error_pickles() -> None:
    error = ProviderError("chargebee", Outcome.NOT_APPLIED, "slow down", status=429, retry_after=5)
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error)
    assert (copy.outcome, copy.status, copy.retry_after) == (Outcome.NOT_APPLIED, 429, 5)


NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("1.5", 1.5),
        ("-4", 0.0),
        ("Wed, 01 Jan 2025 12:00:30 GMT", 30.0),
        ("Wed, 01 Jan 2025 11:00:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        ("nan", None),
        ("inf", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds
