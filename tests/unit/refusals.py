"""What the input-edge tests share: a valid raw grant, and a proof that a bad one was refused
cleanly at enqueue (one line naming the field, nothing in Redis, nothing published, no HTTP).

A helper module rather than fixtures: the tests call it with a different field each time.
"""

from __future__ import annotations

from typing import Any

import pytest
import respx

from tests.fixtures.celery import PublishRecorder
from tests.fixtures.grants import raw_grant
from worker.errors import InvalidGrant
from worker.producer import enqueue
from worker.store.jobs import JobStore


def refused_at_enqueue(
    store: JobStore, recorder: PublishRecorder, field: str, **overrides: Any
) -> str:
    """Enqueue the grant with ``overrides``; return the refusal's message after proving that
    it names ``field`` in one line and that nothing was written, published or requested."""
    with respx.mock(assert_all_called=False) as http, pytest.raises(InvalidGrant) as caught:
        enqueue(raw_grant(**overrides), store=store, app=recorder)
    message = str(caught.value)
    assert caught.value.field == field, message
    assert message.startswith(f"{field}: ") and "\n" not in message and "\r" not in message
    assert store.redis.dbsize() == 0, "a refused grant wrote to Redis"
    assert recorder.sent == [], "a refused grant was published"
    assert not http.calls, "a refused grant made an HTTP request"
    return message


__all__ = ["raw_grant", "refused_at_enqueue"]
