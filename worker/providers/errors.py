"""The one table that maps a failed provider call to an ``Outcome``: pure, no I/O.

The question is never "is this an error" but "could the credit have been applied?":

* PERMANENT: the provider read the request and refused it; the same request can never succeed.
* NOT_APPLIED: the request surely did no work (it never left, or the provider turned it away
  at the door): POSTing again cannot double-credit.
* AMBIGUOUS: the request may have done work: the job must reconcile with the listing before
  any new POST. Anything unrecognised lands here, because guessing "not applied" wrongly
  pays a customer twice, while guessing "ambiguous" wrongly only costs a listing read.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from worker.domain.grant import Provider
from worker.errors import MESSAGE_MAX, Outcome, ProviderError, one_line
from worker.redaction import scrub

# Status codes where the provider read the request and said no. 409 is Chargebee's answer to
# a reused idempotency key with a different body: retrying the same bytes gives the same 409.
PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 409, 422})
# 429: rate limited, rejected before any work. 503: the service (or its gateway) is
# unavailable and turned the request away before reading it (DESIGN, "Error classes").
# 408: the server gave up waiting for the request to arrive, so it never ran.
NOT_APPLIED_STATUSES = frozenset({408, 429, 503})
# What ``classify_exception`` tags a failure that is ours, not the provider's: a request that
# could not even be written (a key or header value no HTTP header can carry), so no retry
# will ever send it.
CONFIGURATION_CODE = "configuration"

# Without a Retry-After header a 429 still means "wait": both providers count requests per
# minute (Chargebee lifts its block "after about a minute"), so a retry sooner is wasted.
RATE_LIMIT_DEFAULT_WAIT_SECONDS = 60.0

_TAG = re.compile(r"<[^>]*>")
_HTML_BLOCK = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)


def outcome_for_status(status: int) -> Outcome | None:
    """The table for answers that came back: None for success (2xx)."""
    if 200 <= status < 300:
        return None
    if status in PERMANENT_STATUSES:
        return Outcome.PERMANENT
    if status in NOT_APPLIED_STATUSES:
        return Outcome.NOT_APPLIED
    if status >= 500:
        return Outcome.AMBIGUOUS
    # Other 4xx (405, 413, 415...) and unfollowed 3xx: the provider refused this request
    # shape; sending it again cannot succeed.
    return Outcome.PERMANENT


def outcome_for_exception(exc: BaseException) -> Outcome:
    """The table for calls that got no answer.

    httpx raises ConnectError/ConnectTimeout before a byte of the request is sent, and
    PoolTimeout while waiting for a connection: nothing reached the provider. Once sending
    began (WriteError, WriteTimeout, ReadTimeout, RemoteProtocolError, ReadError for a
    connection reset), the provider may have the whole request and acted on it.
    """
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return Outcome.NOT_APPLIED
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return Outcome.PERMANENT  # a configuration fault: no retry will fix the URL
    if is_unsendable(exc):
        return Outcome.PERMANENT
    return Outcome.AMBIGUOUS


def is_unsendable(exc: BaseException) -> bool:
    """A request that could not be written as HTTP: h11 refused a header value (a key with a
    newline or a control character), or httpx could not encode one as ASCII. Both happen
    before the request is complete on the wire, so nothing was applied, and the same
    request fails the same way every time: a configuration fault, not an ambiguous call."""
    return isinstance(exc, httpx.LocalProtocolError | UnicodeEncodeError)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After value: delay-seconds or an HTTP-date (RFC 9110).

    A date in the past gives 0; garbage gives None (the caller falls back to its backoff).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    reference = now or datetime.now(UTC)
    return max(0.0, (when - reference).total_seconds())


def message_from_body(content: bytes) -> tuple[str, str | None]:
    """The provider's own words and error code from a body; never anything from headers.

    JSON ``message`` (Inveterate, Chargebee) or ``error_msg`` (Chargebee) when present,
    else a short excerpt of the body with HTML tags removed (Inveterate's 429 page).
    """
    text = content[: MESSAGE_MAX * 20].decode("utf-8", errors="replace")
    try:
        payload: Any = json.loads(content) if content else None
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        code = payload.get("api_error_code") or payload.get("error_code")
        for name in ("message", "error_msg"):
            value = payload.get(name)
            if isinstance(value, str) and value.strip():
                return one_line(value), str(code) if code else None
        if code:
            return str(code), str(code)
    text = _TAG.sub(" ", _HTML_BLOCK.sub(" ", text))
    return one_line(text) or "(empty body)", None


def classify_response(
    provider: Provider | str, response: httpx.Response, secrets: Iterable[str] = ()
) -> ProviderError | None:
    """None for a 2xx; else the error, its outcome from the table, and the provider's message.
    A provider that echoes the key gets it replaced (every spelling of each of ``secrets``)
    before the message is cut to one line, so no cut can leave a piece of it behind."""
    outcome = outcome_for_status(response.status_code)
    if outcome is None:
        return None
    try:
        content = response.content
    except httpx.ResponseNotRead:
        content = b""
    if secrets and content:
        content = scrub(content.decode("utf-8", errors="replace"), secrets).encode("utf-8")
    message, code = message_from_body(content)
    retry_after = None
    if outcome is Outcome.NOT_APPLIED:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if retry_after is None and response.status_code == 429:
            retry_after = RATE_LIMIT_DEFAULT_WAIT_SECONDS
    return ProviderError(
        provider, outcome, message, status=response.status_code, retry_after=retry_after, code=code
    )


def classify_exception(
    provider: Provider | str, exc: BaseException, secrets: Iterable[str] = ()
) -> ProviderError:
    """A transport failure as a ProviderError: the exception class and the first line of its
    text, with every spelling of each of ``secrets`` replaced first. httpx mostly describes
    sockets there ("[Errno 111] Connection refused"), but h11 quotes a header value it
    refuses (``Illegal header value b'key\\n'``): a key, escaped."""
    outcome = outcome_for_exception(exc)
    text = scrub(str(exc), secrets)
    detail = text.splitlines()[0] if text.strip() else ""
    message = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    code = CONFIGURATION_CODE if is_unsendable(exc) else None
    return ProviderError(provider, outcome, message, code=code)
