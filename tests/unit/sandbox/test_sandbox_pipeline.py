"""The per-call order with faults aimed at customers, lagged and trickled writes, oldest-first
Inveterate pages and Chargebee's created_at filters, all without a socket."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from urllib.parse import urlencode

import pytest

from worker.sandbox import pipeline
from worker.sandbox.chargebee import ChargebeeApi
from worker.sandbox.cursors import encode_inveterate
from worker.sandbox.faults import Fault, FaultKind
from worker.sandbox.inveterate import InveterateApi
from worker.sandbox.ledger import Ledger
from worker.sandbox.options import DEFAULT_CHARGEBEE_KEY, DEFAULT_INVETERATE_KEY, SandboxOptions
from worker.sandbox.state import SandboxState
from worker.sandbox.wire import ApiRequest

_BASIC = "Basic " + base64.b64encode(f"{DEFAULT_CHARGEBEE_KEY}:".encode()).decode()


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _inveterate_submit(customer: str, amount: str = "1") -> ApiRequest:
    return ApiRequest(
        "POST",
        f"/v2.0/admin/members/{customer}/credits",
        headers={"x-inveterate-api-key": DEFAULT_INVETERATE_KEY},
        body=f'{{"amount": {amount}}}'.encode(),
    )


def _inveterate_list(customer: str, **query: str) -> ApiRequest:
    return ApiRequest(
        "GET",
        f"/v2.0/admin/members/{customer}/credits",
        query={name: [value] for name, value in query.items()},
        headers={"x-inveterate-api-key": DEFAULT_INVETERATE_KEY},
    )


def _chargebee_add(customer: str) -> ApiRequest:
    form = {"customer_id": customer, "description": "d", "amount": "100"}
    return ApiRequest(
        "POST",
        "/api/v2/promotional_credits/add",
        headers={"authorization": _BASIC},
        body=urlencode(form).encode(),
    )


def _chargebee_list(**query: str) -> ApiRequest:
    return ApiRequest(
        "GET",
        "/api/v2/promotional_credits",
        query={name: [value] for name, value in query.items()},
        headers={"authorization": _BASIC},
    )


def test_each_api_names_the_customer_of_a_call() -> None:
    state = SandboxState()
    inveterate, chargebee = InveterateApi(state), ChargebeeApi(state)
    assert inveterate.customer("submit", _inveterate_submit("a%20b")) == "a b"
    assert inveterate.customer("health", ApiRequest("GET", "/v2.0/merchant")) is None
    assert chargebee.customer("submit", _chargebee_add("cb-1")) == "cb-1"
    assert chargebee.customer("list", _chargebee_list(**{"customer_id[is]": "cb-2"})) == "cb-2"
    assert chargebee.customer("list", _chargebee_list()) is None
    assert chargebee.customer("submit", ApiRequest("POST", "/x", body=b"\xff")) is None


def test_a_customer_fault_fails_only_that_customers_submit() -> None:
    state = SandboxState()
    state.faults.queue(Fault(FaultKind.ERROR_BEFORE, customer_id="target"))
    api = ChargebeeApi(state)
    statuses = [pipeline.run(api, _chargebee_add(c), state).reply for c in ("a", "target", "b")]
    assert [reply.status for reply in statuses if reply] == [200, 500, 200]
    assert [entry.customer_id for entry in state.ledger.entries()] == ["a", "b"]


@pytest.mark.parametrize(
    ("then", "status", "answered"),
    [(None, 201, True), ("error_after", 500, True), ("timeout_after", None, False)],
)
def test_a_lagged_fault_applies_with_its_own_lag_then_answers_per_then(
    then: str | None, status: int | None, answered: bool
) -> None:
    state = SandboxState(SandboxOptions(lag=0.5))
    state.faults.queue(
        Fault(FaultKind.LAGGED, lag=6, then=None if then is None else FaultKind(then))
    )
    api = InveterateApi(state)
    outcome = pipeline.run(api, _inveterate_submit("c"), state)
    assert (outcome.reply is not None) is answered
    if outcome.reply is not None:
        assert outcome.reply.status == status
    pipeline.run(api, _inveterate_submit("c"), state)  # the next one has the usual lag
    lagged, usual = state.ledger.entries()
    assert lagged.visible_at - lagged.created_at == pytest.approx(6)
    assert usual.visible_at - usual.created_at == pytest.approx(0.5)


def test_a_trickle_fault_applies_and_hands_the_real_reply_to_be_trickled() -> None:
    state = SandboxState(SandboxOptions(hold=4.0))
    state.faults.queue(Fault(FaultKind.TRICKLE))
    outcome = pipeline.run(InveterateApi(state), _inveterate_submit("c", "2.5"), state)
    assert outcome.trickle and outcome.hold == 4.0
    assert outcome.reply is not None and outcome.reply.status == 201
    assert state.ledger.entries()[0].amount == Decimal("2.5")
    assert state.stats.snapshot()["inveterate"]["faults"] == {"trickle": 1}


def _listed(state: SandboxState, customer: str, **query: str) -> tuple[list[str], str | None]:
    reply = InveterateApi(state).handle("list", _inveterate_list(customer, **query), lag=0)
    data = json.loads(reply.body)["data"]
    return [credit["id"] for credit in data["credits"]], data["lastCreditEntry"]


def test_oldest_first_inveterate_pages_forward_with_its_cursor() -> None:
    state = SandboxState(SandboxOptions(oldest_first=True))
    ids = [state.ledger.apply("inveterate", "c", Decimal(n)).id for n in range(1, 6)]
    first, cursor = _listed(state, "c", limit="2")
    assert first == ids[:2] and cursor is not None
    ids.append(state.ledger.apply("inveterate", "c", Decimal(6)).id)  # written mid-walk
    seen = list(first)
    while cursor is not None:
        page, cursor = _listed(state, "c", limit="2", lastCreditEntry=cursor)
        seen += page
    assert seen == ids


def test_oldest_first_cursor_from_before_a_reset_is_400() -> None:
    state = SandboxState(SandboxOptions(oldest_first=True))
    request = _inveterate_list("c", lastCreditEntry=encode_inveterate(9))
    reply = InveterateApi(state).handle("list", request, lag=0)
    assert reply.status == 400 and "lastCreditEntry" in json.loads(reply.body)["message"]


def _chargebee_listed(state: SandboxState, **query: str) -> tuple[list[int], str | None]:
    reply = ChargebeeApi(state).handle("list", _chargebee_list(**query), lag=0)
    assert reply.status == 200, reply.body
    body = json.loads(reply.body)
    return [item["promotional_credit"]["created_at"] for item in body["list"]], body.get(
        "next_offset"
    )


def test_created_at_filters_are_strict_and_combine_with_customer_and_pages() -> None:
    clock = Clock()
    state = SandboxState()
    state.ledger = Ledger(clock)
    start = int(clock.now)
    for _ in range(6):
        clock.now += 1
        state.ledger.apply("chargebee", "a", Decimal(1), description="d")
        state.ledger.apply("chargebee", "b", Decimal(1), description="d")
    window = {"created_at[after]": str(start + 1), "created_at[before]": str(start + 6)}
    both, _ = _chargebee_listed(state, **window)
    assert both == [start + n for n in (5, 5, 4, 4, 3, 3, 2, 2)]
    query = {**window, "customer_id[is]": "a", "limit": "3"}
    first, offset = _chargebee_listed(state, **query)
    assert first == [start + 5, start + 4, start + 3] and offset is not None
    rest, offset = _chargebee_listed(state, **query, offset=offset)
    assert rest == [start + 2] and offset is None
    after_only, _ = _chargebee_listed(state, **{"created_at[after]": str(start + 5)})
    assert after_only == [start + 6, start + 6]


@pytest.mark.parametrize("param", ["created_at[after]", "created_at[before]"])
@pytest.mark.parametrize("value", ["1.5", "abc", "", "2024-01-01"])
def test_a_created_at_filter_that_is_not_whole_seconds_is_400_naming_it(
    param: str, value: str
) -> None:
    state = SandboxState()
    reply = ChargebeeApi(state).handle("list", _chargebee_list(**{param: value}), lag=0)
    body = json.loads(reply.body)
    assert reply.status == 400 and body["api_error_code"] == "invalid_request"
    assert body["param"] == param
