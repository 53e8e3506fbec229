"""The control API under ``/_sandbox/``: JSON in and out, for tests and operators.

It never counts as a provider call, needs no key (the sandbox listens on
loopback) and ignores latency, faults and budgets, so inspecting a scenario
cannot disturb it.

    GET    /_sandbox/ledger[?provider=&customer_id=&origin=api|admin]
                                                         every entry, visible or not
    GET    /_sandbox/stats                               counters per provider
    POST   /_sandbox/reset                               empty ledger, faults, stats, marks
    GET    /_sandbox/faults                              the fault plan
    POST   /_sandbox/faults  {"kind", "provider"?, "operation"?, "customer_id"?,
                              "times"? | "probability"?, "retry_after"?, "hold"?, "late"?,
                              "lag"?, "then"?}       (lag and then: kind "lagged" only)
    DELETE /_sandbox/faults                              forget every fault
    POST   /_sandbox/credits {"provider", "customer_id", "amount" (string), "note"?,
                              "description"?, "reference"?, "currency"?, "count"?, "lag"?}
                             credits written as a person in the provider's admin would:
                             no key, no budget, no fault; answers {"entries": [...]}
    POST   /_sandbox/idempotency/expire                  forget every Chargebee idempotency
                                                         record, as if 30 minutes had passed
    GET    /_sandbox/customers                           marked customers
    POST   /_sandbox/customers {"customer_id", "status": 400|404|null, "provider"?}
    GET    /_sandbox/config                              the options in force
    POST   /_sandbox/config  {option: value, ...}        change options while running
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from worker.sandbox import admin
from worker.sandbox.faults import Fault
from worker.sandbox.state import SandboxState
from worker.sandbox.wire import ApiRequest, Reply, loads

PREFIX = "/_sandbox"


class ControlError(ValueError):
    """A control request the sandbox cannot honour; answered 400 with the reason."""


def options_json(state: SandboxState) -> dict[str, Any]:
    """The options without the keys' values: secrets stay out of any output."""
    shown = dataclasses.asdict(state.options)
    for name in ("inveterate_key", "chargebee_key"):
        shown[name] = "***"
    return shown


def _body(request: ApiRequest) -> dict[str, Any]:
    try:
        body = loads(request.body) if request.body else {}
    except ValueError as exc:
        raise ControlError(f"body must be JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ControlError("body must be a JSON object")
    return body


def _ledger(state: SandboxState, request: ApiRequest) -> Any:
    now = state.ledger.now()
    entries = state.ledger.entries(
        request.param("provider"), request.param("customer_id"), request.param("origin")
    )
    return {"entries": [entry.to_json(now) for entry in entries]}


def _reset(state: SandboxState, request: ApiRequest) -> Any:
    state.reset()
    return {"reset": True}


def _add_fault(state: SandboxState, request: ApiRequest) -> Any:
    body = _body(request)
    times, probability = body.pop("times", None), body.pop("probability", None)
    try:
        fault = Fault(**{name: _plain(value) for name, value in body.items()})
        if probability is not None:
            if times is not None:
                raise ControlError("give either times or probability, not both")
            state.faults.chance(fault, float(probability))
        else:
            state.faults.queue(fault, 1 if times is None else int(times))
    except (TypeError, ValueError) as exc:
        raise ControlError(str(exc)) from None
    return state.faults.to_json()


def _add_credits(state: SandboxState, request: ApiRequest) -> Any:
    body = _body(request)
    unknown = set(body) - _CREDIT_FIELDS
    if unknown:
        raise ControlError(f"unknown fields: {', '.join(sorted(unknown))}")
    texts = {name: _text(body, name) for name in ("note", "description", "reference")}
    amount = body.get("amount")
    if not isinstance(amount, str | int | Decimal) or isinstance(amount, bool):
        raise ControlError('amount is required, as a string such as "10.50"')
    lag = body.get("lag")
    if lag is not None and (isinstance(lag, bool) or not isinstance(lag, int | Decimal)):
        raise ControlError("lag must be a number of seconds")
    try:
        entries = admin.add_credits(
            state,
            _text(body, "provider") or "",
            _text(body, "customer_id") or "",
            amount,
            currency=_text(body, "currency") or "USD",
            count=body.get("count", 1),
            lag=None if lag is None else float(lag),
            **texts,
        )
    except ValueError as exc:
        raise ControlError(str(exc)) from None
    now = state.ledger.now()
    return {"entries": [entry.to_json(now) for entry in entries]}


_CREDIT_FIELDS = frozenset(
    {
        "provider",
        "customer_id",
        "amount",
        "note",
        "description",
        "reference",
        "currency",
        "count",
        "lag",
    }
)


def _text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ControlError(f"{name} must be a string")
    return value


def _expire_idempotency(state: SandboxState, request: ApiRequest) -> Any:
    return {"expired": state.idempotency.expire_all()}


def _clear_faults(state: SandboxState, request: ApiRequest) -> Any:
    state.faults.clear()
    return state.faults.to_json()


def _mark(state: SandboxState, request: ApiRequest) -> Any:
    body = _body(request)
    customer_id = body.get("customer_id")
    if not isinstance(customer_id, str) or not customer_id:
        raise ControlError("customer_id is required")
    status = body.get("status")
    try:
        state.marks.mark(customer_id, None if status is None else int(status), body.get("provider"))
    except (TypeError, ValueError) as exc:
        raise ControlError(str(exc)) from None
    return {"customers": state.marks.to_json()}


def _configure(state: SandboxState, request: ApiRequest) -> Any:
    changes = {name: _plain(value) for name, value in _body(request).items()}
    try:
        state.configure(**changes)
    except (TypeError, ValueError) as exc:
        raise ControlError(str(exc)) from None
    return options_json(state)


def _plain(value: Any) -> Any:
    """JSON decimals arrive as Decimal; options and faults take floats."""
    return float(value) if isinstance(value, Decimal) else value


_Route = Callable[[SandboxState, ApiRequest], Any]
_ROUTES: dict[tuple[str, str], _Route] = {
    ("GET", "/ledger"): _ledger,
    ("GET", "/stats"): lambda state, request: state.stats.snapshot(),
    ("POST", "/reset"): _reset,
    ("GET", "/faults"): lambda state, request: state.faults.to_json(),
    ("POST", "/faults"): _add_fault,
    ("DELETE", "/faults"): _clear_faults,
    ("POST", "/credits"): _add_credits,
    ("POST", "/idempotency/expire"): _expire_idempotency,
    ("GET", "/customers"): lambda state, request: {"customers": state.marks.to_json()},
    ("POST", "/customers"): _mark,
    ("GET", "/config"): lambda state, request: options_json(state),
    ("POST", "/config"): _configure,
}


def handle(state: SandboxState, request: ApiRequest) -> Reply:
    route = request.path[len(PREFIX) :].rstrip("/")
    action = _ROUTES.get((request.method, route))
    if action is None:
        return Reply.json(404, {"error": f"no control route {request.method} {request.path}"})
    try:
        return Reply.json(200, action(state, request))
    except ControlError as exc:
        return Reply.json(400, {"error": str(exc)})
