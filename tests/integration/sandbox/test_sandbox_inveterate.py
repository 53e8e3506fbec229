"""The fake Inveterate API over real sockets: submit, list, pages, lag, notes, auth, 400/404."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal

import httpx
import pytest

from worker.sandbox import Sandbox

CREDITS = "/v2.0/admin/members/{}/credits"


def _submit(client: httpx.Client, customer: str, body: str) -> httpx.Response:
    return client.post(
        CREDITS.format(customer), content=body, headers={"Content-Type": "application/json"}
    )


def _credits(client: httpx.Client, customer: str, **params: object) -> dict[str, object]:
    response = client.get(CREDITS.format(customer), params=params)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert isinstance(data, dict)
    return data


def test_submit_is_accepted_and_listed_with_exact_amount_and_note(
    sandbox: Sandbox, sandbox_inveterate_http: httpx.Client
) -> None:
    response = _submit(
        sandbox_inveterate_http, "cust-1", '{"amount": 10.50, "note": "gift [cq-0011223344556677]"}'
    )
    assert response.status_code == 201
    assert set(response.json()) == {"message", "data"}
    assert '"amount":10.50' in response.text  # written verbatim, never through a float

    listing = _credits(sandbox_inveterate_http, "cust-1")
    [entry] = listing["credits"]  # type: ignore[misc]
    assert entry["note"] == "gift [cq-0011223344556677]"
    assert entry["reason"] == "Admin credit"
    assert entry["id"] and entry["createdAt"].endswith("Z")
    raw = json.loads(
        sandbox_inveterate_http.get(CREDITS.format("cust-1")).text, parse_float=Decimal
    )
    assert raw["data"]["credits"][0]["amount"] == Decimal("10.50")
    assert raw["data"]["credits"][0]["newBalance"] == Decimal("10.50")
    assert listing["lastCreditEntry"] is None
    [stored] = sandbox.entries(provider="inveterate")
    assert stored.marker == "cq-0011223344556677" and stored.amount == Decimal("10.50")


def test_negative_amount_with_force_is_applied(
    sandbox: Sandbox, sandbox_inveterate_http: httpx.Client
) -> None:
    _submit(sandbox_inveterate_http, "c", '{"amount": 5}')
    assert (
        _submit(sandbox_inveterate_http, "c", '{"amount": -2.5, "force": true}').status_code == 201
    )
    assert sandbox.ledger.balance("inveterate", "c") == Decimal("2.5")
    assert sandbox.entries()[-1].force is True


def test_customer_id_is_percent_decoded(
    sandbox: Sandbox, sandbox_inveterate_http: httpx.Client
) -> None:
    assert _submit(sandbox_inveterate_http, "a%20b%2Bc", '{"amount": 1}').status_code == 201
    assert sandbox.entries()[0].customer_id == "a b+c"


@pytest.mark.parametrize(
    "body",
    [
        '{"amount": 0}',
        '{"amount": 0.00}',
        '{"amount": "10"}',
        '{"amount": true}',
        '{"note": "no amount"}',
        '{"amount": NaN}',
        '{"amount": 1, "note": 5}',
        '{"amount": 1, "force": "yes"}',
        "[1]",
        "not json",
    ],
)
def test_malformed_submit_is_400_and_applies_nothing(
    sandbox: Sandbox, sandbox_inveterate_http: httpx.Client, body: str
) -> None:
    response = _submit(sandbox_inveterate_http, "c", body)
    assert response.status_code == 400
    assert response.json()["data"] == {} and response.json()["message"]
    assert sandbox.entries() == []


@pytest.mark.parametrize("status", [400, 404])
def test_marked_customer_answers_its_status(
    sandbox: Sandbox, sandbox_inveterate_http: httpx.Client, status: int
) -> None:
    sandbox.mark_customer("bad", status, provider="inveterate")
    response = _submit(sandbox_inveterate_http, "bad", '{"amount": 1}')
    assert response.status_code == status and "message" in response.json()
    assert _submit(sandbox_inveterate_http, "good", '{"amount": 1}').status_code == 201
    assert [entry.customer_id for entry in sandbox.entries()] == ["good"]


@pytest.mark.parametrize("key", [None, "wrong"])
def test_missing_or_wrong_key_is_401_everywhere(sandbox: Sandbox, key: str | None) -> None:
    headers = {"X-Inveterate-Api-Key": key} if key else {}
    with sandbox.client(headers=headers) as client:
        for response in (
            client.get("/v2.0/merchant"),
            client.get(CREDITS.format("c")),
            client.post(CREDITS.format("c"), json={"amount": 1}),
        ):
            assert response.status_code == 401
            assert set(response.json()) == {"message", "data"}
    assert sandbox.entries() == []
    assert sandbox.stats()["inveterate"]["unauthorized"] == 3


def test_merchant_health_check(sandbox_inveterate_http: httpx.Client) -> None:
    response = sandbox_inveterate_http.get("/v2.0/merchant")
    assert response.status_code == 200 and set(response.json()) == {"message", "data"}


def test_walking_every_page_with_the_awkward_cursor(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(page_size=2)
    for n in range(1, 8):
        sandbox.ledger.apply("inveterate", "walker", Decimal(n), note=f"n{n}")
    sandbox.ledger.apply("inveterate", "someone-else", Decimal(99))
    seen: list[str] = []
    cursors: list[str] = []
    with sandbox.client("inveterate") as client:
        cursor = None
        while True:
            params = {"limit": 50} | ({"lastCreditEntry": cursor} if cursor else {})
            data = _credits(client, "walker", **params)
            credits = data["credits"]
            assert isinstance(credits, list) and len(credits) <= 2  # page_size caps limit=50
            seen += [credit["note"] for credit in credits]
            cursor = data["lastCreditEntry"]  # type: ignore[assignment]
            if cursor is None:
                break
            cursors.append(cursor)
        assert seen == [f"n{n}" for n in range(7, 0, -1)]
        assert all(set("+/=&#\"' ") <= set(c) for c in cursors)
        # Sent unencoded, the cursor is cut at "#" and "+" turns into a space: refused.
        broken = client.get(CREDITS.format("walker") + "?lastCreditEntry=" + cursors[0])
        assert broken.status_code == 400 and "percent-encoded" in broken.json()["message"]


def test_limit_must_be_a_positive_number(sandbox_inveterate_http: httpx.Client) -> None:
    for limit in ("0", "-1", "abc", "1.5"):
        response = sandbox_inveterate_http.get(CREDITS.format("c"), params={"limit": limit})
        assert response.status_code == 400
    assert _credits(sandbox_inveterate_http, "c", limit="3.0")["credits"] == []


def test_credit_shows_in_the_listing_only_after_the_lag(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox(lag=0.3)
    with sandbox.client("inveterate") as client:
        assert _submit(client, "c", '{"amount": 3}').status_code == 201
        assert _credits(client, "c")["credits"] == []
        assert (
            len(sandbox.entries()) == 1
            and not sandbox.ledger.page("inveterate", "c", before_seq=None, limit=5).entries
        )
        assert sandbox.wait_for(lambda: bool(_credits(client, "c")["credits"]), timeout=3)


def test_listing_without_notes_forces_fallback_matching(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox(echo_notes=False)
    with sandbox.client("inveterate") as client:
        _submit(client, "c", '{"amount": 3, "note": "[cq-0011223344556677]"}')
        [entry] = _credits(client, "c")["credits"]  # type: ignore[misc]
    assert "note" not in entry and entry["reason"] == "Admin credit"
    assert sandbox.entries()[0].note == "[cq-0011223344556677]"  # kept, just not shown


def _walk(client: httpx.Client, customer: str, between: Callable[[int], None]) -> list[str]:
    """Every note of ``customer``'s listing, page by page; ``between(n)`` runs after page n."""
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": 2} | ({"lastCreditEntry": cursor} if cursor else {})
        data = _credits(client, customer, **params)
        credits = data["credits"]
        assert isinstance(credits, list)
        seen += [credit["note"] for credit in credits]
        pages += 1
        between(pages)
        cursor = data["lastCreditEntry"]  # type: ignore[assignment]
        if cursor is None:
            return seen


def test_oldest_first_walk_sees_every_credit_once_including_late_and_new_ones(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox(oldest_first=True)
    sandbox.add_credit("inveterate", "walker", 1, note="n1")
    [slow] = sandbox.add_credit("inveterate", "walker", 2, note="slow", lag=0.3)  # shows late
    for n in range(3, 6):
        sandbox.add_credit("inveterate", "walker", n, note=f"n{n}")
    with sandbox.client("inveterate") as client:

        def between(page: int) -> None:
            if page == 1:
                _submit(client, "walker", '{"amount": 6, "note": "new"}')  # written mid-walk
                assert sandbox.wait_for(lambda: sandbox.ledger.now() >= slow.visible_at)

        seen = _walk(client, "walker", between)
    assert seen[:2] == ["n1", "n3"]  # oldest first; "slow" sorts where it became visible
    assert sorted(seen) == sorted(["n1", "slow", "n3", "n4", "n5", "new"])
    assert len(seen) == 6  # nothing skipped, nothing repeated


def _notes(client: httpx.Client, customer: str) -> list[str]:
    credits = _credits(client, customer)["credits"]
    assert isinstance(credits, list)
    return [credit["note"] for credit in credits]


def test_the_listing_order_can_be_switched_while_running(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox()
    for n in (1, 2, 3):
        sandbox.add_credit("inveterate", "c", n, note=f"n{n}")
    with sandbox.client("inveterate") as client, sandbox.client() as control:
        newest = _notes(client, "c")
        assert control.post("/_sandbox/config", json={"oldest_first": True}).status_code == 200
        oldest = _notes(client, "c")
    assert newest == ["n3", "n2", "n1"] and oldest == ["n1", "n2", "n3"]
