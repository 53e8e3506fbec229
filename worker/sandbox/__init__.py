"""The sandbox: a real HTTP server on loopback that speaks the Inveterate and Chargebee APIs.

End-to-end tests and ``creditq sandbox`` run it instead of the real providers. It
keeps a ledger with exact amounts, shows credits in the listings after a lag,
paginates with awkward cursors, enforces rate limits on demand, honours
Chargebee idempotency keys, and injects faults (500 before/after applying,
timeouts, trickled bodies, per-credit listing lag, 429, 503; for every customer or
one), and takes credits written by others (an admin) beside creditq's own. The wire
formats are the ones in docs/wire.md.

Layout: ``ledger`` (credits), ``faults`` (fault plan), ``ratelimit`` (budget),
``idempotency`` (Chargebee's key record), ``cursors``, ``money``, ``stats``,
``state`` (all of it together), ``inveterate`` / ``chargebee`` (the APIs),
``pipeline`` (auth, budget, fault, handler), ``trickle`` (slow bodies), ``admin``
(credits by others), ``control`` (``/_sandbox/...``), ``server`` (HTTP),
``harness`` (``Sandbox``), ``cli`` (``serve``).
"""

from worker.sandbox.cli import serve
from worker.sandbox.faults import Fault, FaultKind
from worker.sandbox.harness import Sandbox
from worker.sandbox.ledger import LedgerEntry
from worker.sandbox.options import DEFAULT_CHARGEBEE_KEY, DEFAULT_INVETERATE_KEY, SandboxOptions

__all__ = [
    "DEFAULT_CHARGEBEE_KEY",
    "DEFAULT_INVETERATE_KEY",
    "Fault",
    "FaultKind",
    "LedgerEntry",
    "Sandbox",
    "SandboxOptions",
    "serve",
]
