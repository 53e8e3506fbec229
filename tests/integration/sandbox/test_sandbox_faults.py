"""Faults, budgets, latency and concurrency over real sockets, for both providers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest

from worker.sandbox import Sandbox

PROVIDERS = ("inveterate", "chargebee")


def _client(sandbox: Sandbox, provider: str, **kwargs: object) -> httpx.Client:
    return sandbox.client(provider, **kwargs)


def _submit(client: httpx.Client, provider: str, amount: str = "1") -> httpx.Response:
    if provider == "inveterate":
        return client.post("/v2.0/admin/members/c/credits", content=f'{{"amount": {amount}}}')
    form = {"customer_id": "c", "description": "d", "amount_in_decimal": amount}
    return client.post("/api/v2/promotional_credits/add", data=form)


def _list(client: httpx.Client, provider: str) -> httpx.Response:
    if provider == "inveterate":
        return client.get("/v2.0/admin/members/c/credits")
    return client.get("/api/v2/promotional_credits")


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("kind", "status", "applied"),
    [("error_before", 500, 0), ("error_after", 500, 1), ("unavailable", 503, 0)],
)
def test_error_faults_answer_their_status_and_apply_or_not(
    sandbox: Sandbox, provider: str, kind: str, status: int, applied: int
) -> None:
    sandbox.fail_next(kind, provider=provider, operation="submit")
    with _client(sandbox, provider) as client:
        response = _submit(client, provider)
        assert response.status_code == status
        assert "message" in response.json()
        assert len(sandbox.entries()) == applied
        assert _submit(client, provider).status_code in (200, 201)  # only the next call failed
    assert sandbox.stats()[provider]["faults"] == {kind: 1}
    assert sandbox.pending_faults() == 0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_timeout_after_applies_and_never_answers_in_time(sandbox: Sandbox, provider: str) -> None:
    sandbox.fail_next("timeout_after", provider=provider, hold=0.3)
    timeout = httpx.Timeout(5.0, read=0.1)
    with _client(sandbox, provider, timeout=timeout) as client, pytest.raises(httpx.ReadTimeout):
        _submit(client, provider)
    assert len(sandbox.entries()) == 1


def test_timeout_after_closes_unanswered_when_the_client_waits(sandbox: Sandbox) -> None:
    sandbox.fail_next("timeout_after", hold=0.05)
    with _client(sandbox, "chargebee", timeout=5.0) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            _submit(client, "chargebee")
        assert _list(client, "chargebee").status_code == 200  # a new connection works
    assert sandbox.stats()["chargebee"]["status"]["closed"] == 1


def test_timeout_after_can_answer_late_instead(sandbox: Sandbox) -> None:
    sandbox.fail_next("timeout_after", hold=0.05, late=True)
    with _client(sandbox, "inveterate", timeout=5.0) as client:
        started = time.monotonic()
        assert _submit(client, "inveterate").status_code == 201
        assert time.monotonic() - started >= 0.05


def test_injected_429_takes_each_providers_shape(sandbox: Sandbox) -> None:
    sandbox.fail_next("rate_limited", operation="list", times=2, retry_after=7)
    with _client(sandbox, "inveterate") as client:
        response = _list(client, "inveterate")
        assert response.status_code == 429 and response.headers["Retry-After"] == "7"
        assert response.headers["content-type"].startswith("text/html")
        assert "<html>" in response.text
    with _client(sandbox, "chargebee") as client:
        response = _list(client, "chargebee")
        assert response.status_code == 429 and response.headers["Retry-After"] == "7"
        assert response.json()["api_error_code"] == "api_request_limit_exceeded"
    assert sandbox.entries() == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_rate_limit_counts_gets_and_posts_per_provider(
    make_sandbox: Callable[..., Sandbox], provider: str
) -> None:
    sandbox = make_sandbox(rate_limit=3, rate_window=60)
    other = "chargebee" if provider == "inveterate" else "inveterate"
    with _client(sandbox, provider) as client, _client(sandbox, other) as other_client:
        assert _submit(client, provider).status_code in (200, 201)
        assert _list(client, provider).status_code == 200
        assert _submit(client, provider).status_code in (200, 201)
        refused = _list(client, provider)
        assert refused.status_code == 429
        assert 59 <= int(refused.headers["Retry-After"]) <= 60
        assert _submit(client, provider).status_code == 429
        assert _list(other_client, other).status_code == 200  # its own budget
    assert len(sandbox.entries()) == 2
    assert sandbox.stats()[provider]["rate_limited"] == 2


def test_rate_window_slides(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(rate_limit=2, rate_window=0.2)
    with _client(sandbox, "chargebee") as client:
        assert [_list(client, "chargebee").status_code for _ in range(3)] == [200, 200, 429]
        assert sandbox.wait_for(lambda: _list(client, "chargebee").status_code == 200, timeout=3)


def test_probabilistic_faults_repeat_with_the_seed(make_sandbox: Callable[..., Sandbox]) -> None:
    outcomes = []
    for _ in range(2):
        sandbox = make_sandbox(seed=11, fail_after=0.5)
        with _client(sandbox, "inveterate") as client:
            outcomes.append([_submit(client, "inveterate").status_code for _ in range(20)])
        assert len(sandbox.entries()) == 20  # fail_after applies every one of them
    assert outcomes[0] == outcomes[1]
    assert set(outcomes[0]) == {201, 500}


def test_latency_delays_provider_calls_only(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(latency=0.1)
    with _client(sandbox, "inveterate") as client:
        started = time.monotonic()
        _list(client, "inveterate")
        assert time.monotonic() - started >= 0.1
        started = time.monotonic()
        client.get("/_sandbox/stats")
        assert time.monotonic() - started < 0.1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_many_concurrent_clients_are_all_applied_exactly(sandbox: Sandbox, provider: str) -> None:
    limits = httpx.Limits(max_connections=32)
    with _client(sandbox, provider, limits=limits) as client, ThreadPoolExecutor(32) as pool:
        statuses = list(
            pool.map(lambda _: _submit(client, provider, "0.01").status_code, range(200))
        )
    assert set(statuses) <= {200, 201} and len(statuses) == 200
    assert sandbox.ledger.balance(provider, "c") == Decimal("2.00")
    assert len({entry.id for entry in sandbox.entries()}) == 200


def test_concurrent_replays_apply_once(sandbox: Sandbox) -> None:
    form = {"customer_id": "c", "description": "d", "amount": "100"}
    headers = {"chargebee-idempotency-key": "same-key"}
    with _client(sandbox, "chargebee") as client, ThreadPoolExecutor(16) as pool:
        responses = list(
            pool.map(
                lambda _: client.post(
                    "/api/v2/promotional_credits/add", data=form, headers=headers
                ),
                range(32),
            )
        )
    assert {response.status_code for response in responses} == {200}
    assert len(sandbox.entries()) == 1
    replayed = [r for r in responses if r.headers.get("chargebee-idempotency-replayed")]
    assert len(replayed) == 31


@pytest.mark.parametrize("provider", PROVIDERS)
def test_trickle_applies_and_answers_in_full_while_each_read_stays_quick(
    sandbox: Sandbox, provider: str
) -> None:
    sandbox.fail_next("trickle", provider=provider, operation="submit", hold=1.0)
    timeout = httpx.Timeout(5.0, read=0.5)  # each read waits at most 0.5 s
    with _client(sandbox, provider, timeout=timeout) as client:
        started = time.monotonic()
        response = client.send(_submit_request(client, provider), stream=True)
        try:
            assert time.monotonic() - started < 0.5  # status and headers at once
            assert response.status_code in (200, 201)
            length = int(response.headers["Content-Length"])
            body = response.read()
        finally:
            response.close()
        assert time.monotonic() - started >= 1.0  # the call outlived twice the read timeout
        assert len(body) == length and response.json()
        assert _submit(client, provider).status_code in (200, 201)  # the connection is reusable
    assert len(sandbox.entries()) == 2
    assert sandbox.stats()[provider]["faults"] == {"trickle": 1}


def _submit_request(client: httpx.Client, provider: str) -> httpx.Request:
    if provider == "inveterate":
        return client.build_request("POST", "/v2.0/admin/members/c/credits", json={"amount": 1})
    form = {"customer_id": "c", "description": "d", "amount_in_decimal": "1"}
    return client.build_request("POST", "/api/v2/promotional_credits/add", data=form)


def test_stop_cuts_a_trickle_short() -> None:
    sandbox = Sandbox().start()
    sandbox.fail_next("trickle", hold=30)
    headers_seen = threading.Event()
    failures: list[BaseException] = []

    def call() -> None:
        with sandbox.client("inveterate", timeout=httpx.Timeout(5, read=2)) as client:
            try:
                with client.stream(
                    "POST", "/v2.0/admin/members/c/credits", json={"amount": 1}
                ) as response:
                    headers_seen.set()
                    response.read()
            except httpx.HTTPError as exc:
                failures.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    try:
        assert headers_seen.wait(5)
        started = time.monotonic()
        sandbox.stop()
        caller.join(5)
        assert not caller.is_alive() and time.monotonic() - started < 5
    finally:
        sandbox.stop()
        caller.join()
    assert len(failures) == 1  # a truncated body, never a complete answer
    assert len(sandbox.entries()) == 1


def test_a_fault_aimed_at_one_customer_leaves_the_others_alone(sandbox: Sandbox) -> None:
    with sandbox.client() as control:
        fault = {"kind": "error_after", "customer_id": "target", "provider": "chargebee"}
        queued = control.post("/_sandbox/faults", json=fault).json()["queued"]
        assert queued[0]["customer_id"] == "target"
    sandbox.fail_next("unavailable", operation="list", customer_id="target")
    with _client(sandbox, "chargebee") as client:
        for customer, status in (("a", 200), ("target", 500), ("target", 200)):
            form = {"customer_id": customer, "description": "d", "amount": "100"}
            response = client.post("/api/v2/promotional_credits/add", data=form)
            assert response.status_code == status
        assert client.get("/api/v2/promotional_credits").status_code == 200  # names nobody
        filtered = client.get("/api/v2/promotional_credits", params={"customer_id[is]": "target"})
        assert filtered.status_code == 503
    assert [entry.customer_id for entry in sandbox.entries()] == ["a", "target", "target"]
    assert sandbox.pending_faults() == 0


def test_inveterate_fault_aimed_at_one_member_matches_the_decoded_path(sandbox: Sandbox) -> None:
    sandbox.fail_next("error_before", customer_id="a b")
    with _client(sandbox, "inveterate") as client:
        assert (
            client.post("/v2.0/admin/members/other/credits", json={"amount": 1}).status_code == 201
        )
        assert (
            client.post("/v2.0/admin/members/a%20b/credits", json={"amount": 1}).status_code == 500
        )
    assert [entry.customer_id for entry in sandbox.entries()] == ["other"]


def test_lagged_then_500_is_applied_answered_500_and_listed_late(sandbox: Sandbox) -> None:
    sandbox.fail_next("lagged", provider="inveterate", lag=0.4, then="error_after")
    with _client(sandbox, "inveterate") as client:
        started = time.monotonic()
        assert _submit(client, "inveterate").status_code == 500
        assert len(sandbox.entries()) == 1
        assert _list(client, "inveterate").json()["data"]["credits"] == []
        assert sandbox.wait_for(
            lambda: bool(_list(client, "inveterate").json()["data"]["credits"]), timeout=5
        )
        assert time.monotonic() - started >= 0.4
        assert _submit(client, "inveterate").status_code == 201  # the next one: usual lag (0)
        assert len(_list(client, "inveterate").json()["data"]["credits"]) == 2
