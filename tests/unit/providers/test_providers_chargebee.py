"""Chargebee client: form body, Basic auth, derived idempotency key, listing by offset."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import parse_qsl

import pytest
import respx
from pydantic import SecretStr

from worker.domain.grant import CreditGrant
from worker.providers.chargebee import (
    ChargebeeClient,
    add_form,
    idempotency_header,
    parse_promotional_credits,
    to_minor_units,
)
from worker.providers.http import user_agent
from worker.settings import Settings

BASE = "https://acme-test.chargebee.com"
KEY = "test_cbSECRETkey0002"
PC = {
    "id": "pc_1",
    "customer_id": "cust-9",
    "type": "increment",
    "amount": 1050,
    "amount_in_decimal": "10.50",
    "currency_code": "USD",
    "description": "creditq grant",
    "credit_type": "general",
    "closing_balance": 1050,
    "created_at": 1735689600,
    "object": "promotional_credit",
}

MARKER = "cq-0011223344556677"  # a job's marker (worker.domain.grant.marker_for)


def grant(**fields: object) -> CreditGrant:
    values: dict[str, object] = {
        "idempotency_key": "referral-77",
        "provider": "chargebee",
        "customer_id": "cust-9",
        "amount": Decimal("10.50"),
    }
    values.update(fields)
    return CreditGrant(**values)


@pytest.fixture
def client() -> Iterator[ChargebeeClient]:
    with ChargebeeClient(BASE, SecretStr(KEY), timeout=7.0) as c:
        yield c


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


def added(ref: str = "pc_1") -> dict[str, object]:
    return {
        "customer": {"id": "cust-9", "promotional_credits": 1050},
        "promotional_credit": {**PC, "id": ref},
    }


def test_add_shape(client: ChargebeeClient, api: respx.MockRouter) -> None:
    route = api.post("/api/v2/promotional_credits/add").respond(200, json=added())
    g = grant(note="Referral bonus", credit_type="referral_rewards")
    result = client.submit(g, MARKER)
    request = route.calls.last.request
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert (
        request.headers["Authorization"] == "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
    )
    assert request.headers["User-Agent"] == user_agent()
    expected_key = hashlib.sha256(b"creditq:referral-77").hexdigest()[:40]
    assert request.headers["chargebee-idempotency-key"] == expected_key
    assert "chargebee-business-entity-id" not in request.headers
    assert request.content == (
        b"customer_id=cust-9&amount=1050&currency_code=USD&description=Referral+bonus"
        b"&credit_type=referral_rewards&reference=" + MARKER.encode()
    )
    assert result.status == 200
    assert result.provider_ref == "pc_1"
    assert result.replayed is False


def test_description_defaults_to_a_plain_line_and_type_to_general() -> None:
    g = grant()
    fields = dict(parse_qsl(add_form(g, MARKER).decode()))
    assert fields["description"] == "creditq grant"
    assert fields["credit_type"] == "general"
    assert fields["reference"] == MARKER


def test_same_grant_same_bytes(client: ChargebeeClient, api: respx.MockRouter) -> None:
    route = api.post("/api/v2/promotional_credits/add").respond(200, json=added())
    client.submit(grant(note="x & y = z"), MARKER)
    client.submit(grant(note="x & y = z"), MARKER)
    first, second = (call.request for call in route.calls)
    assert first.content == second.content
    assert first.headers["chargebee-idempotency-key"] == second.headers["chargebee-idempotency-key"]


def test_replayed_header_sets_replayed(client: ChargebeeClient, api: respx.MockRouter) -> None:
    api.post("/api/v2/promotional_credits/add").respond(
        200, json=added(), headers={"chargebee-idempotency-replayed": "true"}
    )
    result = client.submit(grant(), MARKER)
    assert result.replayed is True
    assert "replayed" in result.summary


def test_amount_in_decimal_mode(api: respx.MockRouter) -> None:
    route = api.post("/api/v2/promotional_credits/add").respond(200, json=added())
    with ChargebeeClient(BASE, SecretStr(KEY), 5.0, amount_in_decimal=True) as c:
        c.submit(grant(amount=Decimal("10.50")), MARKER)
    fields = parse_qsl(route.calls.last.request.content.decode())
    assert ("amount_in_decimal", "10.50") in fields
    assert "amount" not in dict(fields)


def test_business_entity_header(api: respx.MockRouter) -> None:
    post = api.post("/api/v2/promotional_credits/add").respond(200, json=added())
    get = api.get("/api/v2/promotional_credits").respond(200, json={"list": []})
    with ChargebeeClient(BASE, SecretStr(KEY), 5.0, business_entity_id="be_eu") as c:
        c.submit(grant(), MARKER)
        c.list_page("cust-9", None, 1)
    assert post.calls.last.request.headers["chargebee-business-entity-id"] == "be_eu"
    assert get.calls.last.request.headers["chargebee-business-entity-id"] == "be_eu"


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("10.50", "USD", 1050),
        ("500", "JPY", 500),
        ("1.250", "KWD", 1250),
        ("0.01", "EUR", 1),
        ("7", "USD", 700),
    ],
)
def test_minor_units(amount: str, currency: str, minor: int) -> None:
    assert to_minor_units(Decimal(amount), currency) == minor


def test_fraction_of_a_minor_unit_is_refused() -> None:
    with pytest.raises(ValueError, match="JPY"):
        to_minor_units(Decimal("1.5"), "JPY")


def test_form_amount_uses_grant_currency() -> None:
    fields = dict(
        parse_qsl(add_form(grant(amount=Decimal("1.250"), currency_code="KWD"), MARKER).decode())
    )
    assert (fields["amount"], fields["currency_code"]) == ("1250", "KWD")


def test_idempotency_key_is_short_stable_and_distinct() -> None:
    key = idempotency_header("k" * 200)
    assert len(key) == 40 <= 100
    assert key == idempotency_header("k" * 200) != idempotency_header("k" * 199)


def test_listing_request_and_offset_round_trip(
    client: ChargebeeClient, api: respx.MockRouter
) -> None:
    offset = '["1735689600000","pc_9"] +/=&#\'"'
    route = api.get("/api/v2/promotional_credits").respond(
        200,
        json={
            "list": [{"promotional_credit": {**PC, "reference": MARKER}}],
            "next_offset": "next+/=&#",
        },
    )
    page = client.list_page("cust 9+x", offset, 50)
    request = route.calls.last.request
    assert request.method == "GET"
    assert request.headers["Authorization"].startswith("Basic ")
    assert request.url.params["customer_id[is]"] == "cust 9+x"
    assert request.url.params["limit"] == "50"
    assert request.url.params["offset"] == offset
    assert b"%2B" in request.url.query and b"%26" in request.url.query
    assert page.next_cursor == "next+/=&#"
    [entry] = page.entries
    assert entry.ref == "pc_1"
    assert entry.customer_id == "cust-9"
    assert entry.amount == Decimal("10.50")
    assert entry.marker == MARKER
    assert entry.created_at == datetime(2025, 1, 1, tzinfo=UTC)


def test_listing_across_customers_omits_the_filter(
    client: ChargebeeClient, api: respx.MockRouter
) -> None:
    route = api.get("/api/v2/promotional_credits").respond(200, json={"list": []})
    page = client.list_page(None, None, 1)
    assert dict(route.calls.last.request.url.params) == {"limit": "1"}
    assert page.entries == [] and page.next_cursor is None


def test_parser_amounts_and_decrements() -> None:
    minor_only = {k: v for k, v in PC.items() if k != "amount_in_decimal"}
    jpy = {**minor_only, "id": "pc_2", "amount": 500, "currency_code": "JPY"}
    decrement = {**PC, "id": "pc_3", "type": "decrement"}
    no_id = {**PC, "id": None}
    page = parse_promotional_credits(
        {"list": [{"promotional_credit": p} for p in (minor_only, jpy, decrement, no_id)]}
    )
    assert [(e.ref, e.amount) for e in page.entries] == [
        ("pc_1", Decimal("10.50")),
        ("pc_2", Decimal(500)),
        ("pc_3", Decimal("-10.50")),
    ]


def test_a_marker_quoted_outside_the_reference_is_someone_elses_credit() -> None:
    """creditq writes its marker in ``reference`` and nowhere else: a description (or
    another reference) quoting one is a copy, never a claim."""
    page = parse_promotional_credits(
        {
            "list": [
                {"promotional_credit": {**PC, "description": f"creditq grant {MARKER}"}},
                {"promotional_credit": {**PC, "id": "pc_2", "reference": f"re {MARKER}"}},
                {"promotional_credit": {**PC, "id": "pc_3", "reference": MARKER}},
            ]
        }
    )
    assert [(e.marker, e.foreign) for e in page.entries] == [
        (None, True),
        (None, True),
        (MARKER, False),
    ]


def test_check_reads_one_entry(client: ChargebeeClient, api: respx.MockRouter) -> None:
    route = api.get("/api/v2/promotional_credits").respond(200, json={"list": []})
    assert "key accepted" in client.check()
    assert route.calls.last.request.url.params["limit"] == "1"


def test_from_settings_site_and_base_url() -> None:
    settings = Settings(chargebee_site="acme-test", chargebee_api_key=SecretStr(KEY))
    with ChargebeeClient.from_settings(settings) as c:
        assert c.base_url == BASE
    settings = Settings(
        chargebee_base_url="http://127.0.0.1:9/",
        chargebee_api_key=SecretStr(KEY),
        chargebee_business_entity_id="be_1",
    )
    with ChargebeeClient.from_settings(settings) as c:
        assert c.base_url == "http://127.0.0.1:9"
        assert c.business_entity_id == "be_1"
