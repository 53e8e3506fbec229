"""Listing cursors for both providers: opaque to clients, strict on the way back.

Inveterate says its ``lastCreditEntry`` must be sent encoded, so the sandbox's
cursor carries every character that breaks when it is not (``+ / = & # " '`` and a
space) plus a check digest: a client that forgets to percent-encode it gets a 400
instead of a silently wrong page. Chargebee's ``next_offset`` imitates the real
one, a JSON array of two digit strings.
"""

from __future__ import annotations

import hashlib
import json
import re

# Every character that a hand-built query string would mangle: "+" turns into a
# space, "&" splits the parameter, "#" cuts the URL, "=" and "/" confuse naive parsers.
_TAIL = " &/='\"#"
_INVETERATE = re.compile(r"^(\d+)\+([0-9a-f]{8})" + re.escape(_TAIL) + "$")


class BadCursor(ValueError):
    """The cursor is not one the sandbox made (or it was mangled in transit)."""


def _check(seq: int) -> str:
    return hashlib.sha256(f"sandbox-cursor:{seq}".encode()).hexdigest()[:8]


def encode_inveterate(seq: int) -> str:
    """The ``lastCreditEntry`` pointing after the entry with sequence number ``seq``."""
    return f"{seq}+{_check(seq)}{_TAIL}"


def decode_inveterate(cursor: str) -> int:
    match = _INVETERATE.match(cursor)
    if not match or match.group(2) != _check(int(match.group(1))):
        raise BadCursor(
            "lastCreditEntry is not a cursor this server issued; send it back exactly as "
            "received, percent-encoded"
        )
    return int(match.group(1))


def encode_chargebee(seq: int, created_at: float) -> str:
    """A ``next_offset`` shaped like Chargebee's: ``["<created ms>","<seq>"]``."""
    return json.dumps([str(int(created_at * 1000)), str(seq)], separators=(",", ":"))


def decode_chargebee(offset: str) -> int:
    try:
        parts = json.loads(offset)
    except ValueError:
        parts = None
    if (
        not isinstance(parts, list)
        or len(parts) != 2
        or not all(isinstance(part, str) and part.isdigit() for part in parts)
    ):
        raise BadCursor("offset is not a next_offset this server issued")
    return int(parts[1])
