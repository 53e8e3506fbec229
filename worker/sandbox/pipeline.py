"""What happens to every provider call, in order: latency, auth, budget, fault, handler.

The order mirrors a real API gateway: a wrong key is refused before it spends the
budget, the budget is checked before the backend is touched, and a fault decides
whether the write happens and what the client gets to see of it.

Faults are drawn per call with the customer the call names, so a fault aimed at one
customer leaves every other customer's traffic alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from worker.sandbox.faults import Fault, FaultKind
from worker.sandbox.options import SandboxOptions
from worker.sandbox.state import SandboxState
from worker.sandbox.wire import ApiRequest, Reply


class ProviderApi(Protocol):
    """One fake provider: routes its paths and answers in its own error shapes."""

    name: str

    def operation(self, request: ApiRequest) -> str | None:
        """``submit``, ``list`` or ``health``; None when the path is not this API's."""

    def customer(self, operation: str, request: ApiRequest) -> str | None:
        """The customer the call names, for faults aimed at one (None: it names none)."""

    def authorized(self, request: ApiRequest, options: SandboxOptions) -> bool: ...

    def unauthorized(self) -> Reply: ...

    def not_found(self, request: ApiRequest) -> Reply: ...

    def failure(self, status: int) -> Reply:
        """A 500 or 503 as this provider words it."""

    def rate_limited(self, retry_after: float) -> Reply: ...

    def handle(self, operation: str, request: ApiRequest, lag: float) -> Reply:
        """Do the work (this is where a credit is applied, listed ``lag`` seconds later)."""


@dataclass(frozen=True)
class Outcome:
    """What the HTTP layer must do: wait ``hold`` seconds, then write ``reply``, or close the
    connection unanswered when ``reply`` is None (the client sees a timeout or a reset).

    With ``trickle`` it does not wait first: it sends the status line and headers at once
    and spreads the body over ``hold`` seconds, a few bytes at a time.
    """

    reply: Reply | None
    hold: float = 0.0
    trickle: bool = False


def run(api: ProviderApi, request: ApiRequest, state: SandboxState) -> Outcome:
    operation = api.operation(request)
    if operation is None:
        return Outcome(api.not_found(request))
    outcome = _run(api, operation, request, state)
    status = str(outcome.reply.status) if outcome.reply is not None else "closed"
    state.stats.bump(api.name, f"status:{status}")
    return outcome


def _run(api: ProviderApi, operation: str, request: ApiRequest, state: SandboxState) -> Outcome:
    options = state.options
    state.stats.bump(api.name, f"calls:{operation}")
    state.pause(options.latency)
    if not api.authorized(request, options):
        state.stats.bump(api.name, "unauthorized")
        return Outcome(api.unauthorized())
    if options.rate_limit is not None:
        wait = state.limiters[api.name].admit(options.rate_limit, options.rate_window)
        if wait is not None:
            state.stats.bump(api.name, "rate_limited")
            return Outcome(api.rate_limited(wait))

    fault = state.faults.draw(api.name, operation, api.customer(operation, request))
    if fault is not None:
        state.stats.bump(api.name, f"faults:{fault.kind.value}")
        if fault.kind is FaultKind.RATE_LIMITED:
            state.stats.bump(api.name, "rate_limited")
            return Outcome(api.rate_limited(fault.retry_after))
        if fault.kind is FaultKind.UNAVAILABLE:
            return Outcome(api.failure(503))
        if fault.kind is FaultKind.ERROR_BEFORE:
            return Outcome(api.failure(500))

    lag = fault.lag if fault is not None and fault.lag is not None else options.lag
    reply = api.handle(operation, request, lag)
    if fault is None:
        return Outcome(reply)
    return _answer(api, fault, reply, options)


def _answer(api: ProviderApi, fault: Fault, reply: Reply, options: SandboxOptions) -> Outcome:
    """What the client sees of a call that was applied despite ``fault``."""
    answer = fault.answer
    if answer is None:
        return Outcome(reply)
    if answer is FaultKind.ERROR_AFTER:
        return Outcome(api.failure(500))
    hold = options.hold if fault.hold is None else fault.hold
    if answer is FaultKind.TRICKLE:
        return Outcome(reply, hold=hold, trickle=True)
    return Outcome(reply if fault.late else None, hold=hold)
