"""creditq: queue-driven, exactly-once store-credit issuance through Inveterate and Chargebee.

Producers use ``enqueue`` / ``enqueue_many`` with a ``CreditGrant``.

The names below are imported on first use, not with the package: ``worker.producer`` builds
the Celery app, which reads the settings, and ``creditq --version`` or ``--help`` (or any
module of the package) must not fail on a bad ``CREDITQ_*`` setting they never use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.domain.grant import CreditGrant
    from worker.errors import IdempotencyConflict, InvalidGrant
    from worker.producer import EnqueueResult, enqueue, enqueue_many

_HOMES = {
    "CreditGrant": "worker.domain.grant",
    "EnqueueResult": "worker.producer",
    "IdempotencyConflict": "worker.errors",
    "InvalidGrant": "worker.errors",
    "enqueue": "worker.producer",
    "enqueue_many": "worker.producer",
}

__all__ = [
    "CreditGrant",
    "EnqueueResult",
    "IdempotencyConflict",
    "InvalidGrant",
    "enqueue",
    "enqueue_many",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'worker' has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value
    return value
