"""``Sandbox``: the in-process handle tests and the CLI use to run and steer the fake providers.

    with Sandbox(lag=0.5, latency=0.02) as sb:
        sb.fail_next("error_after", provider="chargebee", operation="submit")
        ...  # point CREDITQ_INVETERATE_BASE_URL and CREDITQ_CHARGEBEE_BASE_URL at sb.url
        assert len(sb.entries(provider="chargebee")) == 1

One instance is one server on one port, used once: start, steer, stop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from types import TracebackType
from typing import Any

import httpx

from worker.sandbox import admin
from worker.sandbox.faults import Fault, FaultKind
from worker.sandbox.ledger import Ledger, LedgerEntry
from worker.sandbox.options import SandboxOptions
from worker.sandbox.server import SandboxServer
from worker.sandbox.state import SandboxState


class Sandbox:
    """A running loopback server speaking both provider APIs (see ``SandboxOptions``).

    ``fail_before``, ``fail_after`` and ``timeout_after`` are probabilities applied to
    every submit, drawn from an RNG seeded with ``seed`` (the CLI flags of the same names).
    """

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        seed: int = 0,
        fail_before: float = 0.0,
        fail_after: float = 0.0,
        timeout_after: float = 0.0,
        access_log: bool = False,
        **options: Any,
    ) -> None:
        self.state = SandboxState(SandboxOptions(**options), seed=seed)
        for kind, probability in (
            (FaultKind.ERROR_BEFORE, fail_before),
            (FaultKind.ERROR_AFTER, fail_after),
            (FaultKind.TIMEOUT_AFTER, timeout_after),
        ):
            if probability:
                self.state.faults.chance(Fault(kind, operation="submit"), probability)
        self._server = SandboxServer(self.state, host, port, access_log)
        self._started = False

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> Sandbox:
        self._server.start()
        self._started = True
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- where and what ------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the Inveterate base URL and the Chargebee site root."""
        return self._server.url

    @property
    def port(self) -> int:
        return self._server.address[1]

    @property
    def options(self) -> SandboxOptions:
        return self.state.options

    @property
    def ledger(self) -> Ledger:
        return self.state.ledger

    def client(self, provider: str | None = None, **kwargs: Any) -> httpx.Client:
        """An httpx client on ``url`` with ``provider``'s credentials (None: the control API).

        ``verify=False`` because the sandbox is plain HTTP on loopback: it spares the
        ~90 ms httpx spends loading CA certificates per client. Close it after use.
        """
        options: dict[str, Any] = {"base_url": self.url, "timeout": 5.0, "verify": False}
        if provider == "inveterate":
            options["headers"] = {"X-Inveterate-Api-Key": self.options.inveterate_key}
        elif provider == "chargebee":
            options["auth"] = (self.options.chargebee_key, "")
        elif provider is not None:
            raise ValueError(f"unknown provider {provider!r}")
        return httpx.Client(**{**options, **kwargs})

    def entries(
        self, provider: str | None = None, customer_id: str | None = None, origin: str | None = None
    ) -> list[LedgerEntry]:
        """Every applied credit, oldest first, including those listings do not show yet;
        ``origin="api"`` keeps only credits written through the APIs (creditq's own),
        ``"admin"`` only those ``add_credit`` wrote."""
        return self.state.ledger.entries(provider, customer_id, origin)

    def stats(self) -> dict[str, Any]:
        return self.state.stats.snapshot()

    # -- steering --------------------------------------------------------------------------

    def configure(self, **changes: Any) -> SandboxOptions:
        """Change options while running, e.g. ``sb.configure(lag=1.0, rate_limit=5)``."""
        return self.state.configure(**changes)

    def fail_next(
        self,
        kind: FaultKind | str,
        *,
        provider: str | None = None,
        operation: str | None = None,
        times: int = 1,
        retry_after: float = 1.0,
        hold: float | None = None,
        late: bool = False,
        customer_id: str | None = None,
        lag: float | None = None,
        then: FaultKind | str | None = None,
    ) -> None:
        """Make the next ``times`` matching calls fail with ``kind`` (``Fault`` says what each
        argument means), e.g. ``fail_next("lagged", lag=6, then="error_after")``."""
        fault = _fault(kind, provider, operation, retry_after, hold, late, customer_id, lag, then)
        self.state.faults.queue(fault, times)

    def fail_randomly(
        self,
        kind: FaultKind | str,
        probability: float,
        *,
        provider: str | None = None,
        operation: str | None = None,
        retry_after: float = 1.0,
        hold: float | None = None,
        late: bool = False,
        customer_id: str | None = None,
        lag: float | None = None,
        then: FaultKind | str | None = None,
    ) -> None:
        """Make each matching call fail with ``kind`` at ``probability`` (seeded RNG)."""
        fault = _fault(kind, provider, operation, retry_after, hold, late, customer_id, lag, then)
        self.state.faults.chance(fault, probability)

    def clear_faults(self) -> None:
        self.state.faults.clear()

    def pending_faults(self) -> int:
        return self.state.faults.pending()

    def mark_customer(
        self, customer_id: str, status: int | None, provider: str | None = None
    ) -> None:
        """Make submits for ``customer_id`` answer 400 or 404 (None clears the mark)."""
        self.state.marks.mark(customer_id, status, provider)

    def add_credit(
        self,
        provider: str,
        customer_id: str,
        amount: Decimal | str | int,
        *,
        note: str | None = None,
        description: str | None = None,
        reference: str | None = None,
        currency: str = "USD",
        count: int = 1,
        lag: float | None = None,
    ) -> list[LedgerEntry]:
        """Write ``count`` credits as a person in the provider's admin would (no API call,
        no budget, no fault; ``origin="admin"``), e.g. 130 other customers' credits above
        creditq's, or one for the same customer and amount quoting its marker. ``lag``
        None: the sandbox's lag option. See ``worker.sandbox.admin.add_credits``."""
        return admin.add_credits(
            self.state,
            provider,
            customer_id,
            amount,
            note=note,
            description=description,
            reference=reference,
            currency=currency,
            count=count,
            lag=lag,
        )

    def expire_idempotency(self) -> int:
        """Forget every Chargebee idempotency record, as if 30 minutes had passed: the next
        retry with a used key applies again. Returns how many live records were dropped."""
        return self.state.idempotency.expire_all()

    def reset(self) -> None:
        """Empty ledger, faults, stats, idempotency records, budgets and marks; keep options."""
        self.state.reset()

    def wait_for(
        self, condition: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01
    ) -> bool:
        """Poll ``condition`` until true or the deadline; tests use it instead of fixed sleeps."""
        deadline = time.monotonic() + timeout
        while True:
            if condition():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)


def _fault(
    kind: FaultKind | str,
    provider: str | None,
    operation: str | None,
    retry_after: float,
    hold: float | None,
    late: bool,
    customer_id: str | None,
    lag: float | None,
    then: FaultKind | str | None,
) -> Fault:
    return Fault(
        FaultKind(kind),
        provider,
        operation,
        retry_after,
        hold,
        late,
        customer_id=customer_id,
        lag=lag,
        then=None if then is None else FaultKind(then),
    )
