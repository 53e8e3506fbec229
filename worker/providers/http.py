"""The HTTP policy both provider clients share: timeouts, an overall deadline per call, pooling,
User-Agent, auth that keeps the key a ``SecretStr`` until the moment of sending, and turning
failures into ``ProviderError``.

Each client is thin policy over this (the httpx habit from STYLE.md): tests swap the
transport (respx), never patch internals.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Generator, Mapping
from decimal import Decimal
from importlib import metadata
from typing import Any

import httpx
from pydantic import SecretStr

from worker.domain.grant import Provider
from worker.errors import Outcome, ProviderError
from worker.providers.base import ProviderClient
from worker.providers.deadline import call_deadline, call_deadline_seconds, install_deadline
from worker.providers.errors import classify_exception, classify_response
from worker.providers.pool_guard import install_pool_guard
from worker.redaction import scrub

# Connecting is quick or it is failing: a short connect timeout turns a dead host into a
# fast NOT_APPLIED (nothing was sent) instead of eating the whole read budget.
CONNECT_TIMEOUT_MAX = 5.0
# Every connection may stay open between calls (for ``keepalive_expiry``): a worker's threads
# keep most of them busy, and closing an idle one only to connect again for the next call is
# waste. Before issue 20 it was 5 of 10, which httpcore (1.0.9) compares with all open
# connections, busy ones too: 26,264 new connections in 30,016 calls from 32 threads
# (benchmarks/fd_stress.py --without-guard). ``pool_guard`` now counts idle ones only.
MAX_CONNECTIONS = 10
DEFAULT_LIMITS = httpx.Limits(
    max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS, keepalive_expiry=30
)


def user_agent() -> str:
    try:
        version = metadata.version("creditq")
    except metadata.PackageNotFoundError:
        version = "0"
    return f"creditq/{version}"


def make_timeout(seconds: float) -> httpx.Timeout:
    """Explicit per-phase timeouts: ``seconds`` for read/write/pool, at most 5 s to connect."""
    return httpx.Timeout(
        connect=min(CONNECT_TIMEOUT_MAX, seconds), read=seconds, write=seconds, pool=seconds
    )


class HeaderKeyAuth(httpx.Auth):
    """Puts the key in one header at send time (Inveterate's ``X-Inveterate-Api-Key``)."""

    def __init__(self, header: str, key: SecretStr) -> None:
        self._header = header
        self._key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self._header] = self._key.get_secret_value()
        yield request

    def __repr__(self) -> str:
        return f"HeaderKeyAuth({self._header!r}, **********)"


class BasicKeyAuth(httpx.Auth):
    """HTTP Basic with the key as user name and an empty password (Chargebee)."""

    def __init__(self, key: SecretStr) -> None:
        self._key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = basic_header(self._key)
        yield request

    def __repr__(self) -> str:
        return "BasicKeyAuth(**********)"


def basic_header(key: SecretStr) -> str:
    token = base64.b64encode(f"{key.get_secret_value()}:".encode()).decode("ascii")
    return f"Basic {token}"


def parse_json(content: bytes) -> Any:
    """JSON with every non-integer number as an exact Decimal: money never passes a float."""
    return json.loads(content, parse_float=Decimal)


class HttpProviderClient(ProviderClient):
    """A pooled ``httpx.Client`` plus the one place that sends and classifies.

    ``timeout`` (``CREDITQ_HTTP_TIMEOUT_SECONDS``) bounds each socket operation, and every
    call as a whole ends by ``call_deadline_seconds(timeout)``, shorter than the job's lease
    (``worker.providers.deadline``). The deadline lives in the network backend of the
    client's own transport, whose pool is also kept from closing a connection another thread
    is using (``worker.providers.pool_guard``: one client serves all of a worker's threads);
    a ``transport`` passed in (respx, a test's mock) is left alone.
    """

    def __init__(
        self,
        name: Provider,
        base_url: str,
        auth: httpx.Auth,
        secret: SecretStr,
        timeout: float,
        *,
        limits: httpx.Limits | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._secret = secret
        self.deadline_seconds = call_deadline_seconds(timeout)
        self._http = httpx.Client(
            base_url=self.base_url,
            auth=auth,
            timeout=make_timeout(timeout),
            limits=limits or DEFAULT_LIMITS,
            transport=transport,
            headers={"User-Agent": user_agent(), "Accept": "application/json"},
            # A redirect would replay a POST somewhere else; a provider never needs one.
            follow_redirects=False,
        )
        if transport is None:
            install_deadline(self._http)
            install_pool_guard(self._http)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def close(self) -> None:
        self._http.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send once (no retries here: retrying is the task's decision, from the outcome),
        within the call's deadline: one past it fails as an httpx timeout, classified as any
        timeout is (a POST that was being sent is ambiguous)."""
        try:
            with call_deadline(self.deadline_seconds):
                response = self._http.request(
                    method, path, params=params, content=content, headers=headers
                )
        except (httpx.HTTPError, httpx.InvalidURL, UnicodeEncodeError) as exc:
            # UnicodeEncodeError: httpx refusing a non-ASCII header value (a key), raised
            # from the auth flow, outside httpx's own exception tree.
            raise self._scrub(classify_exception(self.name, exc, self._secrets())) from None
        error = classify_response(self.name, response, self._secrets())
        if error is not None:
            raise self._scrub(error)
        return response

    def _json(self, response: httpx.Response) -> Any:
        try:
            return parse_json(response.content)
        except ValueError:
            raise ProviderError(
                self.name,
                Outcome.AMBIGUOUS,
                f"{response.status_code} answer was not JSON",
                status=response.status_code,
            ) from None

    def _secrets(self) -> tuple[str, ...]:
        """The key as configured and as stripped: the settings strip it, a client built
        from a raw ``SecretStr`` may not have been."""
        secret = self._secret.get_secret_value()
        return tuple({secret, secret.strip()} - {""})

    def _scrub(self, error: ProviderError) -> ProviderError:
        """A provider may echo what it was sent; make sure the key never rides out in text,
        in any spelling (``worker.redaction.secret_spellings``: raw, repr, escaped bytes,
        URL-encoded, JSON-escaped, Basic)."""
        message = scrub(error.message, self._secrets())
        if message == error.message:
            return error
        return ProviderError(
            error.provider,
            error.outcome,
            message,
            status=error.status,
            retry_after=error.retry_after,
            code=error.code,
        )
