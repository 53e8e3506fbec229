"""The DLQ end to end: real redis-server, real `celery -A worker.app worker` processes, the
sandbox over real sockets, and `creditq dlq ...` run as a separate process the way an operator
runs it. Every replay ends with the sandbox ledger holding exactly one credit per key."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery

from tests.fixtures.cli import run_cli
from tests.fixtures.exactly_once import assert_exactly_once
from tests.fixtures.workers import Fleet, wait_until
from worker.demo.report import credits_per_key
from worker.domain.states import DlqReason, JobState
from worker.producer import enqueue_many
from worker.sandbox import Sandbox
from worker.store.jobs import JobStore


def grant(key: str, provider: str, customer_id: str, amount: str = "7.50") -> dict[str, Any]:
    return {
        "idempotency_key": key,
        "provider": provider,
        "customer_id": customer_id,
        "amount": amount,
        "note": f"order {key}",
    }


def states(store: JobStore, keys: list[str]) -> dict[str, str | None]:
    return {
        k: (j.state.value if j else None) for k, j in zip(keys, store.get_many(keys), strict=True)
    }


def in_states(store: JobStore, expected: dict[str, JobState]) -> bool:
    return states(store, list(expected)) == {k: s.value for k, s in expected.items()}


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_refused_and_exhausted_jobs_land_with_reasons_and_replay_confirms_each_once(
    redis_url: str,
    real_store: JobStore,
    celery_app: Celery,
    make_sandbox: Callable[..., Sandbox],
    fleet_factory: Callable[..., Fleet],
) -> None:
    sandbox = make_sandbox()
    sandbox.mark_customer("m-malformed", 400)
    sandbox.mark_customer("m-unknown", 404)
    sandbox.fail_randomly("unavailable", 1.0, provider="chargebee", operation="submit")
    fleet = fleet_factory(sandbox, CREDITQ_MAX_ATTEMPTS="2")
    fleet.start_worker(concurrency=4)
    batch = [
        grant("bad-400", "inveterate", "m-malformed"),
        grant("bad-404", "inveterate", "m-unknown"),
        grant("outage", "chargebee", "c-1"),
    ]
    enqueue_many(batch, store=real_store, app=celery_app)
    keys = ["bad-400", "bad-404", "outage"]
    landed = {"bad-400": JobState.REJECTED, "bad-404": JobState.REJECTED, "outage": JobState.DEAD}
    assert wait_until(lambda: in_states(real_store, landed), timeout=60), (
        states(real_store, keys),
        fleet.log_text()[-3000:],
    )

    listed = run_cli(redis_url, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    jobs = {j["idempotency_key"]: j for j in json_lines(listed.stdout)}
    assert {k: (j["reason"], j["last_error"]["status"]) for k, j in jobs.items()} == {
        "bad-400": ("refused", 400),
        "bad-404": ("refused", 404),
        "outage": ("exhausted", 503),
    }
    assert jobs["outage"]["attempts"] == 2
    table = run_cli(redis_url, "dlq", "list", "--reason", "refused")
    assert table.returncode == 0 and "bad-404" in table.stdout and "outage" not in table.stdout
    assert sandbox.entries() == []

    sandbox.mark_customer("m-malformed", None)  # the operator fixes the causes...
    sandbox.mark_customer("m-unknown", None)
    sandbox.clear_faults()
    first = run_cli(redis_url, "dlq", "replay", "bad-400", "bad-404", "--json")
    again = run_cli(redis_url, "dlq", "replay", "bad-400", "bad-404", "--json")  # ...twice
    outage = run_cli(redis_url, "dlq", "replay", "--reason", "exhausted", "--json")
    assert first.returncode == 0 and outage.returncode == 0, (first.stderr, outage.stderr)
    assert [o["result"] for o in json_lines(first.stdout) + json_lines(outage.stdout)] == [
        "replayed"
    ] * 3
    assert again.returncode == 1
    assert [o["result"] for o in json_lines(again.stdout)] == ["not_in_dlq", "not_in_dlq"]

    assert wait_until(
        lambda: in_states(real_store, dict.fromkeys(keys, JobState.CONFIRMED)), timeout=60
    ), (states(real_store, keys), fleet.log_text()[-3000:])
    assert_exactly_once(real_store, sandbox, keys)
    late = run_cli(redis_url, "dlq", "replay", *keys, "--json")  # long after: still refused
    assert late.returncode == 1 and {o["state"] for o in json_lines(late.stdout)} == {"confirmed"}
    assert credits_per_key(sandbox, real_store, keys) == dict.fromkeys(keys, 1)
    assert run_cli(redis_url, "dlq", "list", "--json").stdout == ""


def test_replaying_a_credit_that_did_apply_confirms_it_without_a_second_credit(
    redis_url: str,
    real_store: JobStore,
    celery_app: Celery,
    make_sandbox: Callable[..., Sandbox],
    fleet_factory: Callable[..., Fleet],
) -> None:
    # Applied at once, shown only after the confirm deadline: the job dies not_visible.
    sandbox = make_sandbox(lag=4.0)
    fleet = fleet_factory(sandbox, CREDITQ_CONFIRM_DEADLINE_SECONDS="1.5")
    fleet.start_worker(concurrency=4)
    keys = ["late-inv", "late-cb"]
    enqueue_many(
        [grant("late-inv", "inveterate", "m-1"), grant("late-cb", "chargebee", "c-1")],
        store=real_store,
        app=celery_app,
    )
    assert wait_until(
        lambda: in_states(real_store, dict.fromkeys(keys, JobState.DEAD)), timeout=60
    ), (states(real_store, keys), fleet.log_text()[-3000:])
    listed = {
        j["idempotency_key"]: j["reason"]
        for j in json_lines(run_cli(redis_url, "dlq", "list", "--json").stdout)
    }
    assert listed == dict.fromkeys(keys, DlqReason.NOT_VISIBLE.value)
    assert credits_per_key(sandbox, real_store, keys) == dict.fromkeys(keys, 1)  # it did apply

    # The credit shows up at last (the ledger fixes each entry's lag when it is applied);
    # from now on a second POST would be visible at once, and so counted below.
    assert wait_until(
        lambda: all(e.visible(sandbox.ledger.now()) for e in sandbox.entries()), timeout=15
    )
    sandbox.configure(lag=0.0)
    replayed = run_cli(redis_url, "dlq", "replay", "--all", "--json")
    assert replayed.returncode == 0, replayed.stderr
    assert all(o["reconcile_first"] for o in json_lines(replayed.stdout))
    assert wait_until(
        lambda: in_states(real_store, dict.fromkeys(keys, JobState.CONFIRMED)), timeout=60
    ), (states(real_store, keys), fleet.log_text()[-3000:])
    assert_exactly_once(real_store, sandbox, keys)


def test_purge_asks_for_yes_on_all_and_leaves_no_trace_of_a_purged_key(
    redis_url: str, real_store: JobStore, real_redis: redis.Redis, celery_app: Celery
) -> None:
    enqueue_many(
        [grant(f"p-{i}", "inveterate", "m-1") for i in range(3)]
        + [grant("live", "chargebee", "c-1")],
        store=real_store,
        app=celery_app,
    )
    for i in range(3):
        real_store.transition(
            f"p-{i}", JobState.REJECTED, reason="invalid: test", dlq_reason=DlqReason.INVALID
        )
    before = sorted(real_redis.keys("*"))

    refused = run_cli(redis_url, "dlq", "purge", "--all")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "--yes" in refused.stderr
    assert sorted(real_redis.keys("*")) == before

    one = run_cli(redis_url, "dlq", "purge", "p-0", "live", "--json")
    assert one.returncode == 1  # the live job is refused, p-0 is gone
    assert [o["result"] for o in json_lines(one.stdout)] == ["purged", "not_in_dlq"]
    for name in real_redis.keys("*"):
        kind = real_redis.type(name)
        if kind == "zset":
            assert real_redis.zscore(name, "p-0") is None, name
        assert "p-0" not in name, name
    assert run_cli(redis_url, "status", "p-0").returncode == 1

    rest = run_cli(redis_url, "dlq", "purge", "--all", "--yes")
    assert rest.returncode == 0 and "purge: 2 of 2 done" in rest.stdout
    stats = json.loads(run_cli(redis_url, "stats", "--json").stdout)
    assert stats["dlq_depth"] == 0 and stats["states"]["queued"] == 1
