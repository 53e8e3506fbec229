"""Both clients: every status class and transport failure becomes the right ProviderError,
and the key never shows up in any text the code produces."""

from __future__ import annotations

import base64
import pickle
from collections.abc import Callable, Iterator
from decimal import Decimal

import httpx
import pytest
import respx
from pydantic import SecretStr

from worker.domain.grant import CreditGrant, Provider
from worker.errors import Outcome, ProviderError
from worker.providers import client_for
from worker.providers.base import ProviderClient
from worker.providers.chargebee import ChargebeeClient
from worker.providers.check import check_credentials
from worker.providers.inveterate import InveterateClient
from worker.settings import Settings

BASE = "https://provider.test"
KEY = "sk_live_TOPSECRET_9f8e7d"
BASIC = base64.b64encode(f"{KEY}:".encode()).decode()
ROUTES = {
    Provider.INVETERATE: "/v2.0/admin/members/cust-1/credits",
    Provider.CHARGEBEE: "/api/v2/promotional_credits/add",
}
OK_STATUS = {Provider.INVETERATE: 201, Provider.CHARGEBEE: 200}

MARKER = "cq-0011223344556677"  # a job's marker (worker.domain.grant.marker_for)


def make(provider: Provider) -> ProviderClient:
    if provider is Provider.INVETERATE:
        return InveterateClient(BASE, SecretStr(KEY), timeout=3.0)
    return ChargebeeClient(BASE, SecretStr(KEY), timeout=3.0)


def grant(provider: Provider) -> CreditGrant:
    return CreditGrant(
        idempotency_key="k-1", provider=provider, customer_id="cust-1", amount=Decimal("5.00")
    )


@pytest.fixture(params=list(Provider), ids=str)
def provider(request: pytest.FixtureRequest) -> Provider:
    return Provider(request.param)


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


def submit(provider: Provider, api: respx.MockRouter, **respond: object) -> ProviderError:
    api.post(ROUTES[provider]).respond(**respond)  # type: ignore[arg-type]
    with make(provider) as client, pytest.raises(ProviderError) as caught:
        client.submit(grant(provider), MARKER)
    return caught.value


@pytest.mark.parametrize("status", [200, 201])
def test_success(provider: Provider, api: respx.MockRouter, status: int) -> None:
    api.post(ROUTES[provider]).respond(
        status, json={"message": "ok", "data": {}, "promotional_credit": {"id": "pc_1"}}
    )
    with make(provider) as client:
        result = client.submit(grant(provider), MARKER)
    assert result.status == status


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (400, Outcome.PERMANENT),
        (401, Outcome.PERMANENT),
        (404, Outcome.PERMANENT),
        (409, Outcome.PERMANENT),
        (422, Outcome.PERMANENT),
        (500, Outcome.AMBIGUOUS),
        (502, Outcome.AMBIGUOUS),
        (503, Outcome.NOT_APPLIED),
        (504, Outcome.AMBIGUOUS),
    ],
)
def test_status_classes(
    provider: Provider, api: respx.MockRouter, status: int, outcome: Outcome
) -> None:
    error = submit(
        provider, api, status_code=status, json={"message": f"failed {status}", "data": {}}
    )
    assert (error.outcome, error.status, error.message) == (outcome, status, f"failed {status}")
    assert error.provider == provider.value


@pytest.mark.parametrize(
    ("headers", "body", "retry_after"),
    [
        ({"Retry-After": "12"}, b'{"message": "slow down", "data": {}}', 12.0),
        ({}, b'{"api_error_code": "api_request_limit_exceeded", "message": "slow"}', 60.0),
        (
            {"Content-Type": "text/html"},
            b"<html><body><p>Too many requests</p></body></html>",
            60.0,
        ),
        ({"Retry-After": "2", "Content-Type": "text/html"}, b"<h1>429</h1>", 2.0),
    ],
)
def test_429_is_not_applied(
    provider: Provider,
    api: respx.MockRouter,
    headers: dict[str, str],
    body: bytes,
    retry_after: float,
) -> None:
    error = submit(provider, api, status_code=429, headers=headers, content=body)
    assert error.outcome is Outcome.NOT_APPLIED
    assert error.retry_after == retry_after
    assert "<" not in error.message


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), Outcome.NOT_APPLIED),
        (httpx.ConnectTimeout("timed out"), Outcome.NOT_APPLIED),
        (httpx.ReadTimeout("timed out"), Outcome.AMBIGUOUS),
        (httpx.RemoteProtocolError("Server disconnected"), Outcome.AMBIGUOUS),
        (httpx.ReadError("[Errno 104] Connection reset by peer"), Outcome.AMBIGUOUS),
    ],
)
def test_transport_failures(
    provider: Provider, api: respx.MockRouter, exc: Exception, outcome: Outcome
) -> None:
    api.post(ROUTES[provider]).mock(side_effect=exc)
    with make(provider) as client, pytest.raises(ProviderError) as caught:
        client.submit(grant(provider), MARKER)
    assert caught.value.outcome is outcome
    assert caught.value.status is None


def test_real_refused_connection_is_not_applied(provider: Provider) -> None:
    # Port 9 on localhost: nothing listens, the kernel refuses before a byte is sent.
    cls = InveterateClient if provider is Provider.INVETERATE else ChargebeeClient
    with (
        cls("http://127.0.0.1:9", SecretStr(KEY), timeout=2.0) as client,
        pytest.raises(ProviderError) as caught,
    ):
        client.submit(grant(provider), MARKER)
    assert caught.value.outcome is Outcome.NOT_APPLIED


def test_timeouts_and_pool_are_explicit(provider: Provider) -> None:
    with make(provider) as client:
        timeout = client._http.timeout  # type: ignore[attr-defined]
    assert (timeout.connect, timeout.read, timeout.write, timeout.pool) == (3.0, 3.0, 3.0, 3.0)
    with InveterateClient(BASE, SecretStr(KEY), timeout=30.0) as slow:
        assert slow._http.timeout.connect == 5.0
        assert slow._http.timeout.read == 30.0


def everything_printable(provider: Provider, api: respx.MockRouter) -> list[str]:
    """Force every kind of failure with the key echoed back, and collect every text."""
    texts: list[str] = []
    echo = {"message": f"bad key {KEY} / Basic {BASIC}", "data": {}}
    bodies: list[Callable[[], object]] = [
        lambda: api.post(ROUTES[provider]).respond(401, json=echo),
        lambda: api.post(ROUTES[provider]).respond(500, text=f"<p>{KEY}</p>"),
        lambda: api.post(ROUTES[provider]).mock(side_effect=httpx.ConnectError(f"boom {KEY}")),
        lambda: api.post(ROUTES[provider]).mock(side_effect=httpx.ReadTimeout("slow")),
    ]
    for arrange in bodies:
        arrange()
        with make(provider) as client:
            texts += [str(client), repr(client), repr(client._http.auth)]  # type: ignore[attr-defined]
            try:
                client.submit(grant(provider), MARKER)
            except ProviderError as exc:
                texts += [str(exc), repr(exc), exc.message, str(pickle.loads(pickle.dumps(exc)))]
                texts += [str(exc.__cause__)]
    return texts


def test_key_never_in_any_text(provider: Provider, api: respx.MockRouter) -> None:
    texts = everything_printable(provider, api)
    assert any("**********" in t for t in texts)
    for text in texts:
        assert KEY not in text
        assert BASIC not in text


def test_settings_and_client_for_never_print_the_key(api: respx.MockRouter) -> None:
    settings = Settings(
        inveterate_api_key=SecretStr(KEY),
        inveterate_base_url=BASE,
        chargebee_api_key=SecretStr(KEY),
        chargebee_base_url=BASE,
    )
    assert KEY not in repr(settings) and KEY not in str(settings)
    for provider in Provider:
        with client_for(provider, settings) as client:
            assert client.name is provider
            assert KEY not in repr(client) + str(vars(client))


def test_client_for_unknown_provider() -> None:
    with pytest.raises(ValueError):
        client_for("paypal", Settings())


def test_check_credentials_reports_each_provider(api: respx.MockRouter) -> None:
    api.get("/v2.0/merchant").respond(401, json={"message": f"Invalid key {KEY}", "data": {}})
    settings = Settings(
        inveterate_api_key=SecretStr(KEY), inveterate_base_url=BASE, chargebee_api_key=None
    )
    inveterate, chargebee = check_credentials(settings)
    assert inveterate.provider is Provider.INVETERATE and inveterate.ok is False
    assert "HTTP 401" in inveterate.verdict and KEY not in inveterate.verdict
    assert chargebee.provider is Provider.CHARGEBEE and chargebee.ok is False
    assert chargebee.verdict in (
        "CREDITQ_CHARGEBEE_API_KEY is not set",
        "CREDITQ_CHARGEBEE_SITE is not set",
    )


def test_check_credentials_ok(api: respx.MockRouter) -> None:
    api.get("/v2.0/merchant").respond(200, json={"message": "ok", "data": {}})
    api.get("/api/v2/promotional_credits").respond(200, json={"list": []})
    settings = Settings(
        inveterate_api_key=SecretStr(KEY),
        inveterate_base_url=BASE,
        chargebee_api_key=SecretStr(KEY),
        chargebee_base_url=BASE,
    )
    results = check_credentials(settings)
    assert [(r.provider, r.ok) for r in results] == [
        (Provider.INVETERATE, True),
        (Provider.CHARGEBEE, True),
    ]
    assert all(KEY not in r.verdict for r in results)


def test_check_credentials_missing_key_names_the_variable() -> None:
    settings = Settings(inveterate_api_key=None, chargebee_site="acme", chargebee_api_key=None)
    verdicts = {r.provider: r.verdict for r in check_credentials(settings)}
    assert verdicts == {
        Provider.INVETERATE: "CREDITQ_INVETERATE_API_KEY is not set",
        Provider.CHARGEBEE: "CREDITQ_CHARGEBEE_API_KEY is not set",
    }
