"""Bearer tokens for ``/v1``: compared in constant time, never logged, never echoed."""

from __future__ import annotations

import base64
import binascii
import hmac

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response


def bearer_ok(request: Request, tokens: list[str]) -> bool:
    """Whether the request carries one of ``tokens``; every token is compared (no early
    exit), so the time taken says nothing of which one matched or how much of it. No tokens
    configured: the API is open (``app.check_exposure`` allows that on loopback only)."""
    if not tokens:
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    offered = given.strip().encode()
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(offered, token.encode())
    return matched


def basic_user(request: Request, logins: dict[str, str]) -> str | None:
    """The user whose password the request carries (HTTP basic, as Flower takes
    ``FLOWER_BASIC_AUTH``); every login is compared, in constant time. No logins: nobody."""
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not logins:
        return None
    try:
        user, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    found = None
    for known, secret in logins.items():
        same = hmac.compare_digest(user.encode(), known.encode())
        if same & hmac.compare_digest(password.encode(), secret.encode()):
            found = known
    return found


def login_required(logins: dict[str, str], headers: dict[str, str] | None = None) -> Response:
    """401 asking for the console's login; with none configured, the line says how to set one."""
    why = "log in" if logins else "set CREDITQ_CONSOLE_BASIC_AUTH=user:password to open it"
    return PlainTextResponse(
        f"creditq: {why}\n",
        status_code=401,
        headers={**(headers or {}), "WWW-Authenticate": 'Basic realm="creditq"'},
    )
