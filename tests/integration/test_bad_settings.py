"""Bad settings, URLs and keys from every entry point: one line per variable, exit 2, no
traceback, no secret (issue 15). Nothing here reaches a Redis: the URL given to the commands
whose settings are good is one where nothing listens."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from pydantic import SecretStr

from worker.domain.grant import Provider
from worker.errors import Outcome, ProviderError
from worker.providers.errors import CONFIGURATION_CODE
from worker.providers.inveterate import InveterateClient
from worker.redaction import MASK
from worker.sandbox import Sandbox
from worker.sandbox.options import DEFAULT_INVETERATE_KEY

PASSWORD = "SECRETpart9"
KEY = "sk_live_DO_NOT_SHOW_4242"
NOWHERE = "redis://127.0.0.1:1/15"  # refused at once: a command that got this far would exit 1

BAD_SETTINGS = {
    "CREDITQ_MAX_ATTEMPTS=0": (
        {"CREDITQ_MAX_ATTEMPTS": "0"},
        ["CREDITQ_MAX_ATTEMPTS='0' is not accepted: expected a whole number from 1 to 100"],
    ),
    "CREDITQ_MAX_AMOUNT=abc": (
        {"CREDITQ_MAX_AMOUNT": "abc"},
        ["CREDITQ_MAX_AMOUNT='abc' is not accepted: expected a decimal number greater than 0"],
    ),
    "CREDITQ_DEFAULT_CURRENCY=usd": (
        {"CREDITQ_DEFAULT_CURRENCY": "usd"},
        [
            "CREDITQ_DEFAULT_CURRENCY='usd' is not accepted: expected an ISO 4217 currency code "
            "in capitals, such as USD"
        ],
    ),
    "CREDITQ_DEFAULT_CURRENCY=dollars": (
        {"CREDITQ_DEFAULT_CURRENCY": "dollars"},
        [
            "CREDITQ_DEFAULT_CURRENCY='dollars' is not accepted: expected an ISO 4217 currency "
            "code in capitals, such as USD"
        ],
    ),
    "CREDITQ_CHARGEBEE_AMOUNT_IN_DECIMAL=maybe": (
        {"CREDITQ_CHARGEBEE_AMOUNT_IN_DECIMAL": "maybe"},
        [
            "CREDITQ_CHARGEBEE_AMOUNT_IN_DECIMAL='maybe' is not accepted: expected true or false "
            "(or 1/0, yes/no, on/off)"
        ],
    ),
    "a password with a slash and no port": (
        {"CREDITQ_REDIS_URL": f"redis://:Xy7/{PASSWORD}@host:notaport/0"},
        [
            "CREDITQ_REDIS_URL='redis://***@host:notaport/0' is not accepted: its user name or "
            "password holds '/', '?' or '#': percent-encode them (%2F, %3F, %23); "
            "expected redis://[user:password@]host[:port][/db], rediss://..., "
            "unix:///path/to.sock or sentinel://host:26379/0;sentinel://host2:26379/0"
        ],
    ),
    "a broker URL that is not one": (
        {"CREDITQ_BROKER_URL": f"redis//:{PASSWORD}@host/0"},
        [
            "CREDITQ_BROKER_URL='(not a URL)' is not accepted: its scheme must be one of "
            "redis://, rediss://, redis+socket://, sentinel://, amqp://, amqps://, pyamqp://, "
            "memory://; expected a Redis, Sentinel or AMQP URL"
        ],
    ),
    "quorum queues on a Redis broker": (
        {"CREDITQ_BROKER_QUEUE_TYPE": "quorum"},
        [
            "CREDITQ_BROKER_QUEUE_TYPE='quorum' is not accepted: quorum queues are RabbitMQ's "
            "and the broker is redis://; set CREDITQ_BROKER_URL to an amqp:// URL, or leave "
            "this setting classic"
        ],
    ),
    "a key with a control character": (
        {"CREDITQ_INVETERATE_API_KEY": f"{KEY}\x1b[0m"},
        [
            "CREDITQ_INVETERATE_API_KEY is not accepted: the key holds a control or non-ASCII "
            "character, which no HTTP header can carry; set the key alone, as the provider "
            "shows it"
        ],
    ),
    "a key with a non-ASCII character": (
        {"CREDITQ_CHARGEBEE_API_KEY": f"{KEY}é"},
        [
            "CREDITQ_CHARGEBEE_API_KEY is not accepted: the key holds a control or non-ASCII "
            "character, which no HTTP header can carry; set the key alone, as the provider "
            "shows it"
        ],
    ),
}

CLI = "from worker.cli.main import main; main()"
COMMANDS = {
    "stats": [CLI, "stats", "--json"],
    "status": [CLI, "status", "k-1", "--json"],
    "enqueue": [
        CLI,
        "enqueue",
        "--key",
        "k-1",
        "--provider",
        "inveterate",
        "--customer",
        "c-1",
        "--amount",
        "1.00",
        "--json",
    ],
    "dlq list": [CLI, "dlq", "list", "--json"],
    "check": [CLI, "check", "--json"],
    "demo": [CLI, "demo"],
    "worker": ["-m", "celery", "-A", "worker.app", "worker", "--pool", "solo", "-l", "warning"],
    "beat": ["-m", "celery", "-A", "worker.app", "beat", "-l", "warning"],
}


def run(args: list[str], env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITQ_")}
    env.update({"CREDITQ_REDIS_URL": NOWHERE, **env_extra})
    command = [sys.executable, *(["-c", *args] if args[0] == CLI else args)]
    return subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL
    )


def assert_refused(result: subprocess.CompletedProcess[str], lines: list[str]) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert result.stderr.splitlines() == [f"creditq: {line}" for line in lines], output
    assert result.stdout == ""
    assert "Traceback" not in output
    for secret in (PASSWORD, KEY):
        assert secret not in output


@pytest.mark.parametrize("case", BAD_SETTINGS)
def test_every_bad_setting_is_one_line_and_exit_2_from_the_cli(case: str) -> None:
    env, lines = BAD_SETTINGS[case]
    assert_refused(run(COMMANDS["stats"], env), lines)


@pytest.mark.parametrize("entry", COMMANDS)
def test_every_entry_point_refuses_bad_settings_in_one_line_each(entry: str) -> None:
    env = {
        **BAD_SETTINGS["CREDITQ_MAX_ATTEMPTS=0"][0],
        **BAD_SETTINGS["a password with a slash and no port"][0],
        **BAD_SETTINGS["a key with a control character"][0],
    }
    lines = (
        BAD_SETTINGS["a password with a slash and no port"][1]
        + BAD_SETTINGS["a key with a control character"][1]
        + BAD_SETTINGS["CREDITQ_MAX_ATTEMPTS=0"][1]
    )
    assert_refused(run(COMMANDS[entry], env), lines)


@pytest.mark.parametrize("entry", ["worker", "beat", "enqueue"])
def test_quorum_queues_on_a_redis_broker_stop_every_entry_point_in_one_line(entry: str) -> None:
    env, lines = BAD_SETTINGS["quorum queues on a Redis broker"]
    assert_refused(run(COMMANDS[entry], env), lines)


def test_check_with_a_key_pasted_with_a_newline_works_and_never_shows_it(sandbox: Sandbox) -> None:
    """``echo key > file``: the newline is stripped when the settings are read."""
    env = {
        "CREDITQ_INVETERATE_BASE_URL": sandbox.url,
        "CREDITQ_CHARGEBEE_BASE_URL": sandbox.url,
        "CREDITQ_INVETERATE_API_KEY": DEFAULT_INVETERATE_KEY + "\n",
    }
    result = run(COMMANDS["check"], env)
    verdicts = {v["provider"]: v for v in map(json.loads, result.stdout.splitlines())}
    assert verdicts["inveterate"]["ok"] is True, result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_a_client_given_a_key_with_a_newline_fails_as_configuration_and_hides_it(
    sandbox: Sandbox,
) -> None:
    """Past the settings (a client built from a raw key): h11 refuses the header before the
    request is sent; the error is permanent, tagged configuration, and carries no key."""
    client = InveterateClient(sandbox.url, SecretStr(KEY + "\n"), 5)
    with client, pytest.raises(ProviderError) as caught:
        client.check()
    err = caught.value
    assert err.provider == Provider.INVETERATE.value
    assert err.outcome is Outcome.PERMANENT and err.code == CONFIGURATION_CODE
    assert KEY not in str(err) and KEY not in repr(err) and MASK in err.message
