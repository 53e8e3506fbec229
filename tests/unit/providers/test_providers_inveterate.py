"""Inveterate client: the exact request shape of docs/wire.md, and a tolerant listing parser."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import quote

import pytest
import respx
from pydantic import SecretStr

from worker.domain.grant import CreditGrant, Provider
from worker.errors import Outcome, ProviderError
from worker.providers.http import user_agent
from worker.providers.inveterate import InveterateClient, credit_body, parse_credit_listing

BASE = "https://inveterate.test"
KEY = "inv-SECRET-key-0001"

MARKER = "cq-0011223344556677"  # a job's marker (worker.domain.grant.marker_for)


def grant(**fields: object) -> CreditGrant:
    values: dict[str, object] = {
        "idempotency_key": "order-1001-paid",
        "provider": "inveterate",
        "customer_id": "cust-42",
        "amount": Decimal("10.50"),
    }
    values.update(fields)
    return CreditGrant(**values)


@pytest.fixture
def client() -> Iterator[InveterateClient]:
    with InveterateClient(BASE, SecretStr(KEY), timeout=7.0) as c:
        yield c


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


def test_post_shape(client: InveterateClient, api: respx.MockRouter) -> None:
    route = api.post("/v2.0/admin/members/cust-42/credits").respond(
        201, json={"message": "Credit request sent", "data": {}}
    )
    result = client.submit(grant(note="Refund #1001"), MARKER)
    request = route.calls.last.request
    assert request.method == "POST"
    assert request.headers["X-Inveterate-Api-Key"] == KEY
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == user_agent()
    assert user_agent().startswith("creditq/")
    assert "authorization" not in request.headers
    marker = MARKER
    assert request.content == (
        b'{"amount": 10.50, "note": "Refund #1001 [' + marker.encode() + b']"}'
    )
    assert result.status == 201
    assert result.replayed is False
    assert result.summary == "Credit request sent"


def test_amount_written_exactly_never_through_float() -> None:
    body = credit_body(grant(amount=Decimal("0.10")), MARKER)
    assert body.startswith(b'{"amount": 0.10,')
    precise = json.loads(credit_body(grant(amount=Decimal("1234.57")), MARKER), parse_float=Decimal)
    assert precise["amount"] == Decimal("1234.57")
    assert credit_body(grant(amount=Decimal("1E+2")), MARKER).startswith(b'{"amount": 100,')


def test_note_is_marker_alone_without_user_note() -> None:
    body = json.loads(credit_body(grant(), MARKER))
    assert body == {"amount": 10.5, "note": f"[{MARKER}]"}


def test_force_sent_only_when_true() -> None:
    assert b"force" not in credit_body(grant(amount=Decimal("-5")), MARKER)
    body = json.loads(credit_body(grant(amount=Decimal("-5"), force=True), MARKER))
    assert body["force"] is True and body["amount"] == -5


def test_customer_id_is_percent_encoded_in_path(
    client: InveterateClient, api: respx.MockRouter
) -> None:
    route = api.post(url__regex=r".*/credits$").respond(201, json={"message": "ok", "data": {}})
    # Validation refuses "?", "%" and "#" in a customer id; the client's quoting is the second
    # line of defence, so the grant is built past validation to prove it holds on its own.
    unsafe = grant().model_copy(update={"customer_id": "a+b@c?d=e%f#g"})
    client.submit(unsafe, MARKER)
    raw = route.calls.last.request.url.raw_path
    assert raw == b"/v2.0/admin/members/" + quote("a+b@c?d=e%f#g", safe="").encode() + b"/credits"


def test_listing_request_and_cursor_round_trip(
    client: InveterateClient, api: respx.MockRouter
) -> None:
    cursor = "a+b/c=d&e#f \"q\" 's' g h"
    route = api.get("/v2.0/admin/members/cust-42/credits").respond(
        200,
        json={
            "message": "ok",
            "data": {
                "credits": [
                    {
                        "id": "c1",
                        "amount": 10.5,
                        "createdAt": "2025-01-01T12:00:00Z",
                        "newBalance": 20.5,
                        "reason": "Admin credit",
                        "note": f"Refund [{MARKER}]",
                    }
                ],
                "lastCreditEntry": "next+/=&#cursor",
            },
        },
    )
    page = client.list_page("cust-42", cursor, 25)
    request = route.calls.last.request
    assert request.method == "GET"
    assert request.headers["X-Inveterate-Api-Key"] == KEY
    assert request.url.params["lastCreditEntry"] == cursor
    assert request.url.params["limit"] == "25"
    # Form-style query encoding: every reserved byte escaped, spaces as "+".
    assert request.url.query == (
        b"limit=25&lastCreditEntry=a%2Bb%2Fc%3Dd%26e%23f+%22q%22+%27s%27+g+h"
    )
    assert page.next_cursor == "next+/=&#cursor"
    [entry] = page.entries
    assert entry.ref == "c1"
    assert entry.amount == Decimal("10.5")
    assert entry.marker == MARKER
    assert entry.customer_id == "cust-42"
    assert entry.created_at == datetime(2025, 1, 1, 12, tzinfo=UTC)


def test_first_page_sends_no_cursor(client: InveterateClient, api: respx.MockRouter) -> None:
    route = api.get("/v2.0/admin/members/cust-42/credits").respond(
        200, json={"message": "ok", "data": {"credits": []}}
    )
    page = client.list_page("cust-42", None, 10)
    assert "lastCreditEntry" not in route.calls.last.request.url.params
    assert page.entries == [] and page.next_cursor is None


def test_listing_needs_a_customer(client: InveterateClient) -> None:
    with pytest.raises(ValueError, match="customer_id"):
        client.list_page(None, None, 10)


def test_check_reads_merchant(client: InveterateClient, api: respx.MockRouter) -> None:
    route = api.get("/v2.0/merchant").respond(200, json={"message": "ok", "data": {}})
    assert "key accepted" in client.check()
    assert route.calls.last.request.headers["X-Inveterate-Api-Key"] == KEY


def test_check_refused_key(client: InveterateClient, api: respx.MockRouter) -> None:
    api.get("/v2.0/merchant").respond(401, json={"message": "Invalid API key", "data": {}})
    with pytest.raises(ProviderError) as caught:
        client.check()
    assert caught.value.outcome is Outcome.PERMANENT
    assert caught.value.message == "Invalid API key"


def test_from_settings_uses_base_url_and_key(api: respx.MockRouter) -> None:
    from worker.settings import Settings

    settings = Settings(inveterate_api_key=SecretStr(KEY), inveterate_base_url=BASE + "/")
    route = api.get("/v2.0/merchant").respond(200, json={"message": "ok", "data": {}})
    with InveterateClient.from_settings(settings) as c:
        c.check()
        assert c.name is Provider.INVETERATE
    assert route.called


ENTRY = {"amount": 5, "createdAt": "2025-01-01T00:00:00.000Z", "newBalance": 5, "reason": "x"}


@pytest.mark.parametrize(
    "payload",
    [
        {"message": "ok", "data": [ENTRY]},
        [ENTRY],
        {"message": "ok", "data": {"credits": [ENTRY]}},
        {"message": "ok", "data": {"entries": [ENTRY]}},
        {"message": "ok", "data": {"items": [ENTRY]}},
        {"message": "ok", "data": {"results": [ENTRY]}},
    ],
)
def test_parser_accepts_every_documented_shape(payload: object) -> None:
    [entry] = parse_credit_listing(payload, "c").entries
    assert entry.amount == Decimal(5)
    assert entry.marker is None  # no note echoed: matching falls back to amount and time


def test_missing_id_gets_a_stable_synthetic_ref() -> None:
    first = parse_credit_listing([ENTRY], "c").entries[0].ref
    again = parse_credit_listing([dict(ENTRY)], "c").entries[0].ref
    other = parse_credit_listing([{**ENTRY, "newBalance": 6}], "c").entries[0].ref
    assert first == again != other
    assert first.startswith("syn-")


def test_cursor_found_at_top_level_or_in_data() -> None:
    top = {"message": "ok", "data": {"credits": [ENTRY]}, "lastCreditEntry": "t"}
    assert parse_credit_listing(top, "c").next_cursor == "t"
    inner = {"data": {"credits": [ENTRY], "lastCreditEntry": {"id": "x", "ts": 1}}}
    assert parse_credit_listing(inner, "c").next_cursor == '{"id":"x","ts":1}'


def test_parser_skips_unreadable_entries_and_reads_epochs() -> None:
    payload = {
        "data": {
            "credits": [
                {"amount": "not money"},
                "garbage",
                {"id": 7, "amount": "2.50", "createdAt": 1735689600000},
                {"id": 8, "amount": Decimal("1.25"), "createdAt": 1735689600},
            ],
            "lastCreditEntry": None,
        }
    }
    page = parse_credit_listing(payload, "c")
    assert [e.ref for e in page.entries] == ["7", "8"]
    assert (
        page.entries[0].created_at == page.entries[1].created_at == datetime(2025, 1, 1, tzinfo=UTC)
    )
    assert page.next_cursor is None


def test_empty_page_ends_paging_even_with_a_cursor() -> None:
    payload = {"data": {"credits": [], "lastCreditEntry": "x"}}
    assert parse_credit_listing(payload, "c").next_cursor is None
