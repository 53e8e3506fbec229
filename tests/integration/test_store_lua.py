"""The composed Lua scripts on a real Redis (its Lua 5.1 and cjson, not fakeredis'): a move
with a detail, the DLQ filing and the pending sets the scripts name from keys.py."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.grants import make_grant
from worker.domain.states import DlqReason, JobState
from worker.store.dlq import PurgeResult, purge
from worker.store.jobs import JobStore, Seen
from worker.store.keys import Keys

pytestmark = pytest.mark.integration


def test_a_detail_a_confirmation_and_a_purge_on_a_real_redis(real_store: JobStore) -> None:
    store, redis = real_store, real_store.redis
    grant = make_grant("k1", customer_id="c:1")
    store.create(grant)
    started = store.begin_post(grant, max_attempts=5, now=1_800_000_000.0, lease=30.0)
    assert started.outcome == "started" and started.job is not None
    assert redis.zrange(Keys.pending("inveterate", "c:1"), 0, -1) == ["k1"]
    assert redis.zrange(Keys.pending("inveterate", None), 0, -1) == ["k1"]
    detail = {"outcome": "unknown", "status": 500, "took": 0.1 + 0.2}
    store.transition("k1", JobState.SUBMITTING, reason="HTTP 500", detail=detail)
    entry = json.loads(redis.lrange(Keys.history("k1"), -1, -1)[0])
    assert entry["detail"] == detail and entry["reason"] == "HTTP 500"

    job = store.get("k1", history=False)
    assert job is not None
    seen = Seen("k1", JobState.SUBMITTING, job.version, "e-1", "e-1", {"ref": "e-1"}, 2.5)
    assert [type(o).__name__ for o in store.confirm_seen([seen], now=1_800_000_010.0)] == ["Moved"]
    assert redis.smembers(Keys.claimed("inveterate", "c:1")) == {"e-1"}
    assert redis.zcard(Keys.pending("inveterate", None)) == 0

    store.create(make_grant("k2"))
    store.transition("k2", JobState.DEAD, reason="gave up", dlq_reason=DlqReason.EXHAUSTED)
    sets = [Keys.dlq(), Keys.dlq(provider="inveterate"), Keys.dlq(reason="exhausted")]
    assert [redis.zrange(s, 0, -1) for s in sets] == [["k2"]] * 3
    assert [o.result for o in purge(store, ["k2", "k1"])] == [
        PurgeResult.PURGED,
        PurgeResult.NOT_IN_DLQ,
    ]
    assert [redis.zcard(s) for s in sets] == [0, 0, 0]
