"""The fake Chargebee promotional credits API over real sockets: add, list, idempotency, errors."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import httpx
import pytest

from worker.sandbox import Sandbox

ADD = "/api/v2/promotional_credits/add"
LIST = "/api/v2/promotional_credits"
ERROR_KEYS = {"message", "api_error_code", "error_code", "error_msg", "http_status_code"}


def _add(client: httpx.Client, key: str | None = None, **fields: str) -> httpx.Response:
    form = {"customer_id": "cust-1", "description": "creditq grant", **fields}
    headers = {"chargebee-idempotency-key": key} if key else {}
    return client.post(ADD, data=form, headers=headers)


def test_add_returns_customer_and_promotional_credit(
    sandbox: Sandbox, sandbox_chargebee_http: httpx.Client
) -> None:
    response = _add(sandbox_chargebee_http, amount="1050", reference="cq-0011223344556677")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["customer"]["id"] == "cust-1" and body["customer"]["promotional_credits"] == 1050
    credit = body["promotional_credit"]
    assert credit["id"].startswith("pc_") and credit["object"] == "promotional_credit"
    assert (credit["amount"], credit["amount_in_decimal"]) == (1050, "10.50")
    assert credit["type"] == "increment" and credit["credit_type"] == "general"
    assert credit["reference"] == "cq-0011223344556677" and credit["closing_balance"] == 1050
    assert isinstance(credit["created_at"], int)
    [entry] = sandbox.entries(provider="chargebee")
    assert entry.amount == Decimal("10.50") and entry.marker == "cq-0011223344556677"


@pytest.mark.parametrize(
    ("fields", "amount"),
    [
        ({"amount_in_decimal": "7.25"}, Decimal("7.25")),
        ({"amount": "1500", "currency_code": "JPY"}, Decimal("1500")),
        ({"amount_in_decimal": "1.234", "currency_code": "KWD"}, Decimal("1.234")),
        ({"amount": "5", "credit_type": "loyalty_credits"}, Decimal("0.05")),
    ],
)
def test_amounts_in_minor_units_or_decimal(
    sandbox: Sandbox, sandbox_chargebee_http: httpx.Client, fields: dict[str, str], amount: Decimal
) -> None:
    assert _add(sandbox_chargebee_http, **fields).status_code == 200
    assert sandbox.entries()[0].amount == amount


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"description": "", "amount": "1"}, "description"),
        ({"customer_id": "", "amount": "1"}, "customer_id"),
        ({}, "amount"),
        ({"amount": "0"}, "amount"),
        ({"amount": "-5"}, "amount"),
        ({"amount": "1.5"}, "amount"),
        ({"amount": "1", "amount_in_decimal": "1"}, "amount"),
        ({"amount_in_decimal": "0"}, "amount_in_decimal"),
        ({"amount_in_decimal": "abc"}, "amount_in_decimal"),
        ({"amount_in_decimal": "1.001"}, "amount_in_decimal"),
        ({"amount": "1", "credit_type": "cashback"}, "credit_type"),
        ({"amount": "1", "currency_code": "usd"}, "currency_code"),
    ],
)
def test_invalid_add_is_400_with_the_param(
    sandbox: Sandbox, sandbox_chargebee_http: httpx.Client, fields: dict[str, str], param: str
) -> None:
    response = _add(sandbox_chargebee_http, **fields)
    assert response.status_code == 400
    body = response.json()
    assert set(body) >= ERROR_KEYS and body["http_status_code"] == 400
    assert body["api_error_code"] == "invalid_request" and body["param"] == param
    assert sandbox.entries() == []


def test_same_key_same_body_replays_without_applying(
    sandbox: Sandbox, sandbox_chargebee_http: httpx.Client
) -> None:
    first = _add(sandbox_chargebee_http, key="k" * 40, amount="100")
    second = _add(sandbox_chargebee_http, key="k" * 40, amount="100")
    assert first.status_code == second.status_code == 200
    assert "chargebee-idempotency-replayed" not in first.headers
    assert second.headers["chargebee-idempotency-replayed"] == "true"
    assert second.json() == first.json()
    assert len(sandbox.entries()) == 1
    stats = sandbox.stats()["chargebee"]
    assert (stats["applied"], stats["replays"], stats["calls"]["submit"]) == (1, 1, 2)


def test_same_key_different_body_is_409(
    sandbox: Sandbox, sandbox_chargebee_http: httpx.Client
) -> None:
    _add(sandbox_chargebee_http, key="key-1", amount="100")
    response = _add(sandbox_chargebee_http, key="key-1", amount="101")
    assert response.status_code == 409
    assert set(response.json()) >= ERROR_KEYS and response.json()["http_status_code"] == 409
    assert len(sandbox.entries()) == 1 and sandbox.stats()["chargebee"]["conflicts"] == 1


def test_key_record_expires(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(idempotency_ttl=0)  # no record: each retry applies again
    with sandbox.client("chargebee") as client:
        _add(client, key="k", amount="100")
        assert "chargebee-idempotency-replayed" not in _add(client, key="k", amount="100").headers
    assert len(sandbox.entries()) == 2


def test_refused_add_leaves_the_key_free(
    sandbox: Sandbox, sandbox_chargebee_http: httpx.Client
) -> None:
    assert _add(sandbox_chargebee_http, key="k", amount="0").status_code == 400
    assert _add(sandbox_chargebee_http, key="k", amount="100").status_code == 200
    assert _add(sandbox_chargebee_http, key="x" * 101, amount="100").status_code == 400


@pytest.mark.parametrize(
    ("status", "code"), [(404, "resource_not_found"), (400, "invalid_request")]
)
def test_marked_customer_answers_its_status(
    sandbox: Sandbox, sandbox_chargebee_http: httpx.Client, status: int, code: str
) -> None:
    sandbox.mark_customer("cust-1", status)
    response = _add(sandbox_chargebee_http, amount="1")
    assert response.status_code == status and response.json()["api_error_code"] == code
    assert sandbox.entries() == []


@pytest.mark.parametrize("auth", [None, ("wrong", ""), ("", "test_sandbox_chargebee_key")])
def test_bad_credentials_are_401(sandbox: Sandbox, auth: tuple[str, str] | None) -> None:
    with sandbox.client(auth=auth) as client:
        for response in (client.get(LIST), _add(client, amount="1")):
            assert response.status_code == 401
            assert response.json()["api_error_code"] == "api_authentication_failed"
    assert sandbox.entries() == []


def _walk(client: httpx.Client, **params: str) -> tuple[list[dict[str, object]], list[str]]:
    credits: list[dict[str, object]] = []
    offsets: list[str] = []
    offset: str | None = None
    while True:
        query = params | ({"offset": offset} if offset else {})
        response = client.get(LIST, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        credits += [item["promotional_credit"] for item in body["list"]]
        offset = body.get("next_offset")
        if offset is None:
            return credits, offsets
        offsets.append(offset)


def test_listing_pages_newest_first_per_customer_and_across_customers(
    sandbox: Sandbox, sandbox_chargebee_http: httpx.Client
) -> None:
    for n in range(1, 6):
        _add(sandbox_chargebee_http, amount=str(n), customer_id="a")
        _add(sandbox_chargebee_http, amount=str(100 + n), customer_id="b")
    credits, offsets = _walk(sandbox_chargebee_http, **{"customer_id[is]": "a", "limit": "2"})
    assert [credit["amount"] for credit in credits] == [5, 4, 3, 2, 1]
    assert len(offsets) == 2 and all(offset.startswith('["') for offset in offsets)
    everyone, _ = _walk(sandbox_chargebee_http, limit="3")
    assert [credit["customer_id"] for credit in everyone] == ["b", "a"] * 5
    assert [credit["amount"] for credit in everyone][:2] == [105, 5]


def test_listing_parameters_are_checked(sandbox_chargebee_http: httpx.Client) -> None:
    for params in ({"limit": "0"}, {"limit": "101"}, {"limit": "x"}, {"offset": "garbage"}):
        response = sandbox_chargebee_http.get(LIST, params=params)
        assert (
            response.status_code == 400 and response.json()["api_error_code"] == "invalid_request"
        )


def test_page_size_caps_the_limit(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(page_size=1)
    for n in range(3):
        sandbox.ledger.apply("chargebee", "c", Decimal(n + 1), description="d")
    with sandbox.client("chargebee") as client:
        first = client.get(LIST, params={"limit": "100"}).json()
        assert len(first["list"]) == 1 and "next_offset" in first
        credits, _ = _walk(client)
    assert len(credits) == 3


def test_listing_lags_behind_the_add(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(lag=0.3)
    with sandbox.client("chargebee") as client:
        assert _add(client, amount="1").status_code == 200
        assert client.get(LIST).json()["list"] == []
        assert sandbox.wait_for(lambda: bool(client.get(LIST).json()["list"]), timeout=3)


def test_created_at_filters_are_strict_bounds_on_whole_seconds(
    sandbox: Sandbox, sandbox_chargebee_http: httpx.Client
) -> None:
    _add(sandbox_chargebee_http, amount="100", customer_id="a")
    _add(sandbox_chargebee_http, amount="200", customer_id="b")
    created = {int(entry.created_at) for entry in sandbox.entries()}
    low, high = min(created), max(created)

    def amounts(**params: str) -> list[object]:
        credits, _ = _walk(sandbox_chargebee_http, limit="1", **params)
        return [credit["amount"] for credit in credits]

    assert amounts(**{"created_at[after]": str(low - 1)}) == [200, 100]
    assert amounts(**{"created_at[after]": str(high)}) == []  # strictly after
    assert amounts(**{"created_at[before]": str(low)}) == []  # strictly before
    both = {"created_at[after]": str(low - 1), "created_at[before]": str(high + 1)}
    assert amounts(**both, **{"customer_id[is]": "a"}) == [100]


@pytest.mark.parametrize("param", ["created_at[after]", "created_at[before]"])
def test_created_at_filter_must_be_epoch_seconds(
    sandbox_chargebee_http: httpx.Client, param: str
) -> None:
    response = sandbox_chargebee_http.get(LIST, params={param: "yesterday"})
    assert response.status_code == 400
    assert response.json()["api_error_code"] == "invalid_request"
    assert response.json()["param"] == param


def test_expired_idempotency_records_let_the_same_key_apply_again(
    sandbox: Sandbox, sandbox_chargebee_http: httpx.Client
) -> None:
    _add(sandbox_chargebee_http, key="k1", amount="100")
    replay = _add(sandbox_chargebee_http, key="k1", amount="100")
    assert replay.headers["chargebee-idempotency-replayed"] == "true"
    assert sandbox.expire_idempotency() == 1
    again = _add(sandbox_chargebee_http, key="k1", amount="100")
    assert "chargebee-idempotency-replayed" not in again.headers
    with sandbox.client() as control:
        assert control.post("/_sandbox/idempotency/expire").json() == {"expired": 1}
        assert control.post("/_sandbox/idempotency/expire").json() == {"expired": 0}
    third = _add(sandbox_chargebee_http, key="k1", amount="100")
    assert "chargebee-idempotency-replayed" not in third.headers
    assert len(sandbox.entries()) == 3  # one key, three credits: the window passed twice
