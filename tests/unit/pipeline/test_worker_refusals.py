"""A bad grant that reaches a worker without the producer is recorded rejected, never raised.

A message can bypass the producer (another system publishing, a hand-made replay). The issue
task parses it with the same ``CreditGrant.parse``; whatever is wrong with it must end as a
``rejected`` job in the DLQ (reason ``invalid``) with a one-line reason, with no provider
call, and never as a traceback that leaves no record (``1e999999999`` once did).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fixtures.grants import raw_grant
from tests.fixtures.simulation import World
from worker.domain.grant import CreditGrant, Provider
from worker.domain.states import DlqReason, JobState
from worker.store import dlq


def valid_message(key: str) -> dict[str, Any]:
    return CreditGrant.parse(raw_grant(idempotency_key=key, provider="inveterate")).to_message()


def assert_rejected_without_a_call(world: World, key: str, field: str) -> None:
    job = world.store.get(key)
    assert job is not None and job.state is JobState.REJECTED
    assert dlq.dlq_reason(job) == DlqReason.INVALID.value
    assert job.last_error is not None and job.last_error["class"] == "validation"
    message = job.last_error["message"]
    assert message.startswith(f"{field}: ") and "\n" not in message
    assert job.history[-1]["reason"] == f"invalid: {message}"
    assert all(p.submits == 0 and p.reads == 0 for p in world.providers.values())
    assert world.scheduler.queue == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount", "1e999999999"),  # raised decimal.Overflow in the worker
        ("amount", "1e-1000030"),
        ("amount", "1_000"),
        ("amount", "١٢"),
        ("amount", "9999.999999999999999999999999999"),
        ("amount", "1" * 100_000),
        ("currency_code", "XXX"),
        ("currency_code", "ZZZ"),
        ("customer_id", "."),
        ("customer_id", "a%2Fb"),
        ("priority", "urgent"),
    ],
)
def test_a_bad_message_that_bypassed_the_producer_is_recorded_rejected(
    world: World, field: str, value: str
) -> None:
    bad = {**valid_message("bypass-1"), field: value}
    assert world.pipeline.issue(bad) == "rejected"
    assert_rejected_without_a_call(world, "bypass-1", field)


def test_a_job_stored_under_older_rules_is_rejected_when_its_turn_comes(world: World) -> None:
    # A job accepted before today's rules (here: a currency no longer credited) is checked
    # again by the worker before any POST.
    fields = {
        **CreditGrant.parse(raw_grant(idempotency_key="old-1", provider="inveterate")).model_dump(),
        "currency_code": "XXX",
    }
    world.store.create(CreditGrant.model_construct(**fields))
    message = {**valid_message("old-1"), "currency_code": "XXX"}
    assert world.pipeline.issue(message) == "rejected"
    assert_rejected_without_a_call(world, "old-1", "currency_code")


def test_the_worker_accepts_exactly_what_the_producer_accepts(world: World) -> None:
    world.scheduler.issue(valid_message("fine-1"), 0.0)
    world.run()
    job = world.store.get("fine-1")
    assert job is not None and job.state is JobState.CONFIRMED
    assert world.providers[Provider.INVETERATE].submits == 1


def test_a_job_whose_post_may_have_applied_is_not_called_invalid_under_stricter_rules(
    world: World,
) -> None:
    """Stricter rules since its POST, whose outcome is unknown: "invalid" would claim no
    credit exists; the job goes to the DLQ as outcome_unknown for a person to settle."""
    key = "old-2"
    world.providers[Provider.INVETERATE].script = ["error_after"]  # applied, then a 500
    world.store.create(CreditGrant.parse(raw_grant(idempotency_key=key, provider="inveterate")))
    assert world.pipeline.issue(valid_message(key)) == "outcome unknown"
    stored = json.loads(world.store.redis.hget(f"creditq:job:{key}", "grant") or "{}")
    world.store.redis.hset(
        f"creditq:job:{key}", "grant", json.dumps({**stored, "currency_code": "XXX"})
    )
    job = world.store.get(key)
    assert job is not None and job.grant_fields.get("currency_code") == "XXX", job.grant_fields
    assert world.pipeline.issue(valid_message(key)) == "dead"
    job = world.store.get(key)
    assert job is not None and dlq.dlq_reason(job) == DlqReason.UNKNOWN.value


def test_a_key_no_header_can_carry_ends_in_the_dlq_as_configuration(world: World) -> None:
    from worker.errors import Outcome, ProviderError
    from worker.providers.errors import CONFIGURATION_CODE

    inv = world.providers[Provider.INVETERATE]

    def unsendable(grant: CreditGrant, marker: str) -> Any:
        raise ProviderError(
            Provider.INVETERATE, Outcome.PERMANENT, "Illegal header value", code=CONFIGURATION_CODE
        )

    inv.submit = unsendable  # type: ignore[method-assign]
    world.store.create(CreditGrant.parse(raw_grant(idempotency_key="cfg-1", provider="inveterate")))
    assert world.pipeline.issue(valid_message("cfg-1")) == "dead"
    job = world.store.get("cfg-1")
    assert job is not None and dlq.dlq_reason(job) == DlqReason.CONFIGURATION.value
