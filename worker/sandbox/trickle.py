"""How a ``trickle`` fault cuts a reply body: many small pieces, one every ``STEP_SECONDS``.

A client's read timeout bounds the wait for *one* read, not for the whole call; a body
that keeps arriving a few bytes at a time defeats it, so the call can outlive any lease
a client holds. The pieces are planned here (pure, unit-tested); ``server.py`` writes them.
"""

from __future__ import annotations

import math

# The gap between two writes: far below any sane read timeout, so no single read waits long.
STEP_SECONDS = 0.2
# JSON ignores whitespace between tokens, so a short JSON body can be stretched with it.
_PAD = b" "


def pieces(body: bytes, content_type: str, hold: float) -> list[bytes]:
    """``body`` split into one piece per step of a ``hold``-second trickle.

    A JSON body too short to give every step a byte is padded with trailing spaces (the
    client parses the same value), so even a 60-byte answer can take a minute. Another
    body is cut into at most one piece per byte (its gaps then grow). Joined, the pieces
    are what goes out; their total length is the Content-Length to announce.
    """
    steps = max(1, math.ceil(hold / STEP_SECONDS))
    if len(body) < steps and content_type.startswith("application/json"):
        body += _PAD * (steps - len(body))
    steps = max(1, min(steps, len(body)))
    size, extra = divmod(len(body), steps)
    cut: list[bytes] = []
    start = 0
    for index in range(steps):
        end = start + size + (1 if index < extra else 0)
        cut.append(body[start:end])
        start = end
    return cut


def gap(hold: float, count: int) -> float:
    """Seconds to wait before each of ``count`` pieces so they span ``hold`` seconds."""
    return hold / count if count else 0.0
