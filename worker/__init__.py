"""creditq: queue-driven, exactly-once store-credit issuance through Inveterate and Chargebee.

Producers use ``enqueue`` / ``enqueue_many`` with a ``CreditGrant``.
"""

from worker.errors import IdempotencyConflict, InvalidGrant
from worker.models import CreditGrant
from worker.producer import EnqueueResult, enqueue, enqueue_many

__all__ = [
    "CreditGrant",
    "EnqueueResult",
    "IdempotencyConflict",
    "InvalidGrant",
    "enqueue",
    "enqueue_many",
]
