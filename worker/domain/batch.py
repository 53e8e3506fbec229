"""A batch: the name a campaign's grants are handed over under (``enqueue_many(...,
batch="spring-loyalty")``), so an operator can follow it (``creditq batch status``)."""

from __future__ import annotations

from worker.errors import InvalidGrant

BATCH_MAX = 100


def check_batch(name: str | None) -> str | None:
    """The batch name as given, or ``InvalidGrant`` naming the field ``batch``: printable,
    no whitespace (it is part of a Redis key and of a command line), at most BATCH_MAX."""
    if name is None:
        return None
    if not isinstance(name, str) or not name:
        raise InvalidGrant("batch", "must be a non-empty string")
    if len(name) > BATCH_MAX:
        raise InvalidGrant("batch", f"must be at most {BATCH_MAX} characters")
    if not name.isprintable() or any(c.isspace() for c in name):
        raise InvalidGrant("batch", "must be printable, without whitespace")
    return name
