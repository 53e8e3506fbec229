"""Keeping secrets out of text: URLs printed without their credentials, and every spelling
of an API key replaced before a message leaves the process.

Text about a failed call travels far: a job's ``last_error`` and history in Redis, logs,
``creditq status`` and ``check``, Flower. A key rarely appears there as typed: h11 quotes a
refused header value as ``bytes`` (``b'key\\n'``), Python's ``repr`` escapes quotes and
backslashes, a URL percent-encodes it, Basic auth base64-encodes it. ``scrub`` replaces each
of those spellings (``secret_spellings``), and surrounding whitespace is stripped from keys
when the settings are read, so the escaped form of a pasted newline is caught too.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "**********"
CREDENTIALS_MASK = "***"


def redact_url(url: str) -> str:
    """``url`` with any user name and password replaced by ``***``, for printing.

    The credentials end at the last ``@`` of the URL, not at the first ``/``: a password
    pasted with an unencoded ``/`` (``redis://:Xy7/SECRET@host/0``) fools ``urlsplit``
    into reading part of it as the port and the path, and so would fool a redactor built on
    it. Several URLs joined by ``;`` (Celery's Sentinel form) are redacted one by one.
    """
    if ";" in url:
        return ";".join(redact_url(part) for part in url.split(";"))
    scheme, sep, rest = url.partition("://")
    if not sep:
        # Not a URL at all: show nothing of it that could be a password.
        return "(not a URL)" if "@" in url or ":" in url else url
    if "@" not in rest:
        return url
    return f"{scheme}://{CREDENTIALS_MASK}@{rest.rpartition('@')[2]}"


def secret_spellings(secret: str) -> set[str]:
    """Every way ``secret`` may be written in a message: as is, with its whitespace collapsed
    (``one_line``), as ``repr`` shows it (a ``str``, or ``bytes`` as h11 quotes a header:
    quotes, backslashes and control characters escaped), JSON-escaped (a provider echoing
    it), URL-encoded, and base64 in an HTTP Basic header (user name, empty password:
    Chargebee)."""
    if not secret:
        return set()
    spellings = {
        secret,
        " ".join(secret.split()),
        quote(secret, safe=""),
        quote_plus(secret, safe=""),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
    }
    quoted = [repr(secret), ascii(secret)]
    quoted += [repr(secret.encode(codec, "backslashreplace")) for codec in ("utf-8", "latin-1")]
    for text in quoted:
        spellings.add(text[text.index(text[-1]) + 1 : -1])  # inside the quotes, b'' or ''
    spellings.add(base64.b64encode(f"{secret}:".encode("utf-8", "replace")).decode("ascii"))
    return {s for s in spellings if s.strip()}


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every spelling of every secret replaced by ``MASK``, longest first,
    so that a short spelling never leaves the tail of a longer one behind."""
    spellings = sorted(
        {s for secret in secrets for s in secret_spellings(secret)}, key=len, reverse=True
    )
    for spelling in spellings:
        text = text.replace(spelling, MASK)
    return text
