"""`creditq check` against the sandbox, and the per-provider budget figures in `creditq stats`."""

from __future__ import annotations

import json
import time

from tests.fixtures.cli import run_cli
from worker.domain.grant import CreditGrant
from worker.sandbox import Sandbox
from worker.sandbox.options import DEFAULT_CHARGEBEE_KEY, DEFAULT_INVETERATE_KEY
from worker.store.jobs import JobStore


def sandbox_env(sandbox: Sandbox, **keys: str) -> dict[str, str]:
    return {
        "CREDITQ_INVETERATE_BASE_URL": sandbox.url,
        "CREDITQ_CHARGEBEE_BASE_URL": sandbox.url,
        "CREDITQ_INVETERATE_API_KEY": keys.get("inveterate", DEFAULT_INVETERATE_KEY),
        "CREDITQ_CHARGEBEE_API_KEY": keys.get("chargebee", DEFAULT_CHARGEBEE_KEY),
    }


def test_check_accepts_working_keys_and_spends_one_budgeted_call_each(
    redis_url: str, real_redis: object, sandbox: Sandbox
) -> None:
    done = run_cli(redis_url, "check", "--json", settings=sandbox_env(sandbox))
    assert done.returncode == 0, done.stderr
    verdicts = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(v["provider"], v["ok"]) for v in verdicts] == [
        ("inveterate", True),
        ("chargebee", True),
    ]
    stats = json.loads(run_cli(redis_url, "stats", "--json").stdout)
    assert [p["calls_last_minute"] for p in stats["providers"]] == [1, 1]


def test_check_names_a_refused_key_without_printing_it(
    redis_url: str, real_redis: object, sandbox: Sandbox
) -> None:
    wrong = "sk_live_WRONG_KEY_never_print"
    done = run_cli(redis_url, "check", settings=sandbox_env(sandbox, chargebee=wrong))
    assert done.returncode == 1
    assert "FAILED" in done.stdout and "401" in done.stdout
    assert wrong not in done.stdout + done.stderr


def test_check_without_any_key_says_what_to_set(redis_url: str) -> None:
    done = run_cli(redis_url, "check")
    assert done.returncode == 1
    assert "CREDITQ_INVETERATE_API_KEY is not set" in done.stdout


def test_stats_counts_the_jobs_that_carry_a_duplicate_alarm(
    redis_url: str, real_store: JobStore
) -> None:
    grant = CreditGrant(
        idempotency_key="twice", provider="inveterate", customer_id="m1", amount="5"
    )
    real_store.create(grant)
    assert real_store.raise_alarm("twice", {"kind": "duplicate", "refs": ["e2"]}, time.time())
    assert not real_store.raise_alarm("no-such-job", {"kind": "duplicate"}, time.time())
    stats = json.loads(run_cli(redis_url, "stats", "--json").stdout)
    assert stats["alarms"] == 1
    shown = run_cli(redis_url, "stats").stdout
    assert "ALARMS: 1" in shown
