"""Bad settings become one line per variable, naming it and what it accepts (issue 15)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from worker.config_errors import accepts, exit_on, settings_error_lines
from worker.errors import SettingsError
from worker.settings import (
    BROKER_SCHEMES,
    STORE_SCHEMES,
    Settings,
    get_settings,
    header_safe,
    url_problem,
)

PASSWORD = "SECRETpart9"
KEY = "sk_live_DO_NOT_SHOW_4242"
QUORUM_ON_REDIS = (
    "CREDITQ_BROKER_QUEUE_TYPE='quorum' is not accepted: quorum queues are RabbitMQ's and the "
    "broker is redis://; set CREDITQ_BROKER_URL to an amqp:// URL, or leave this setting classic"
)


def lines_for(environ: dict[str, str]) -> list[str]:
    """What a process with ``environ`` is told (the values are read from it, as pydantic-
    settings does; passing them as fields would skip the environment's string parsing)."""
    fields: dict[str, Any] = {k.removeprefix("CREDITQ_").lower(): v for k, v in environ.items()}
    with pytest.raises(ValidationError) as caught:
        Settings(**fields)
    return settings_error_lines(caught.value, Settings, environ)


@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        (
            "CREDITQ_MAX_ATTEMPTS",
            "0",
            "CREDITQ_MAX_ATTEMPTS='0' is not accepted: expected a whole number from 1 to 100",
        ),
        (
            "CREDITQ_MAX_AMOUNT",
            "abc",
            "CREDITQ_MAX_AMOUNT='abc' is not accepted: expected a decimal number greater than 0",
        ),
        (
            "CREDITQ_DEFAULT_CURRENCY",
            "usd",
            "CREDITQ_DEFAULT_CURRENCY='usd' is not accepted: expected an ISO 4217 currency code "
            "in capitals, such as USD",
        ),
        (
            "CREDITQ_DEFAULT_CURRENCY",
            "dollars",
            "CREDITQ_DEFAULT_CURRENCY='dollars' is not accepted: expected an ISO 4217 currency "
            "code in capitals, such as USD",
        ),
        (
            "CREDITQ_CHARGEBEE_AMOUNT_IN_DECIMAL",
            "maybe",
            "CREDITQ_CHARGEBEE_AMOUNT_IN_DECIMAL='maybe' is not accepted: expected true or false "
            "(or 1/0, yes/no, on/off)",
        ),
        (
            "CREDITQ_HTTP_TIMEOUT_SECONDS",
            "nan",
            "CREDITQ_HTTP_TIMEOUT_SECONDS='nan' is not accepted: expected a number greater than 0",
        ),
        (
            "CREDITQ_REDIS_MIN_REPLICAS",
            "-1",
            "CREDITQ_REDIS_MIN_REPLICAS='-1' is not accepted: "
            "expected a whole number of at least 0",
        ),
        (
            "CREDITQ_BROKER_QUEUE_TYPE",
            "stream",
            "CREDITQ_BROKER_QUEUE_TYPE='stream' is not accepted: expected one of classic, quorum",
        ),
        (
            "CREDITQ_BROKER_QUEUE_TYPE",
            "quorum",  # and the broker is the Redis URL, by default
            QUORUM_ON_REDIS,
        ),
    ],
)
def test_each_bad_setting_is_one_line_naming_the_variable_and_what_it_accepts(
    variable: str, value: str, line: str
) -> None:
    assert lines_for({variable: value}) == [line]


def test_a_currency_outside_iso_4217_is_refused_with_the_table_s_reason() -> None:
    (line,) = lines_for({"CREDITQ_DEFAULT_CURRENCY": "ZZZ"})
    assert line.startswith("CREDITQ_DEFAULT_CURRENCY='ZZZ' is not accepted: 'ZZZ' is not an ISO")
    (line,) = lines_for({"CREDITQ_DEFAULT_CURRENCY": "XXX"})
    assert "no minor units" in line


def test_several_bad_settings_give_one_line_each_in_the_model_s_order() -> None:
    lines = lines_for(
        {
            "CREDITQ_MAX_ATTEMPTS": "0",
            "CREDITQ_MAX_AMOUNT": "abc",
            "CREDITQ_DEFAULT_CURRENCY": "usd",
        }
    )
    assert [line.split("=")[0] for line in lines] == [
        "CREDITQ_MAX_ATTEMPTS",
        "CREDITQ_MAX_AMOUNT",
        "CREDITQ_DEFAULT_CURRENCY",
    ]
    assert all("\n" not in line for line in lines)


def test_without_the_environment_the_line_names_the_variable_but_no_value() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(max_attempts=0)
    assert settings_error_lines(caught.value, Settings) == [
        "CREDITQ_MAX_ATTEMPTS is not accepted: expected a whole number from 1 to 100"
    ]


def test_a_long_value_is_cut_and_control_characters_stay_escaped_on_one_line() -> None:
    (line,) = lines_for({"CREDITQ_MAX_ATTEMPTS": "9" * 200 + "\nx"})
    assert "\n" not in line and "..." in line and len(line) < 160


def test_a_refused_key_is_named_but_never_shown() -> None:
    lines = lines_for(
        {"CREDITQ_INVETERATE_API_KEY": KEY + "\x01", "CREDITQ_CHARGEBEE_API_KEY": "clé-" + KEY}
    )
    assert [line.split(" ")[0] for line in lines] == [
        "CREDITQ_INVETERATE_API_KEY",
        "CREDITQ_CHARGEBEE_API_KEY",
    ]
    assert all("no HTTP header can carry" in line for line in lines)
    assert not any(KEY in line or "clé" in line for line in lines)


def test_pydantic_s_own_report_hides_the_input_too() -> None:
    """Whoever prints the ValidationError itself (a traceback) shows no key and no URL."""
    with pytest.raises(ValidationError) as caught:
        Settings(inveterate_api_key=KEY + "\n\x00", redis_url=f"redis://:{PASSWORD}@h:x/0")
    assert KEY not in str(caught.value) and PASSWORD not in str(caught.value)


@pytest.mark.parametrize("pasted", [f"{KEY}\n", f"  {KEY}\r\n", f"\t{KEY} "])
def test_a_key_pasted_with_surrounding_whitespace_is_stripped(pasted: str) -> None:
    settings = Settings(inveterate_api_key=SecretStr(pasted), chargebee_api_key=pasted)
    assert settings.inveterate_key().get_secret_value() == KEY
    assert settings.chargebee_key().get_secret_value() == KEY


def test_a_key_of_whitespace_only_counts_as_not_set() -> None:
    settings = Settings(inveterate_api_key="\n")
    assert settings.inveterate_api_key is None


@pytest.mark.parametrize(
    ("value", "safe"),
    [
        (KEY, True),
        ("with inner space", True),
        ("a\nb", False),
        ("a\tb", False),
        ("a\x7fb", False),
        ("clé", False),
        ("a\x00", False),
        ("", True),
    ],
)
def test_header_safe_allows_printable_ascii_only(value: str, safe: bool) -> None:
    assert header_safe(value) is safe


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://127.0.0.1:6379/0", None),
        ("redis://:p%2Fw@host:6379/15", None),
        ("redis://user:p@ss@host:6379/0", None),  # split at the last "@", as redis-py does
        ("rediss://user:pw@host/0", None),
        ("redis://host", None),
        ("unix:///var/run/redis.sock?db=2", None),
        ("notaurl", "scheme"),
        ("http://host:6379/0", "scheme"),
        ("sentinel://h1:26379/0", None),  # one part of a Sentinel URL
        ("sentinel://h1:notaport/0", "port"),
        (f"redis://:Xy7/{PASSWORD}@host:notaport/0", "percent-encode"),
        ("redis://host:notaport/0", "port"),
        ("redis://host:0/0", "port"),
        ("redis://host:99999/0", "port"),
        ("redis://host:/0", "port"),
        ("redis://ho st/0", "space"),
        ("redis://host/db15", "database"),
        ("unix://", "socket path"),
    ],
)
def test_store_url_rules(url: str, problem: str | None) -> None:
    found = url_problem(url, STORE_SCHEMES)
    assert (found is None) if problem is None else (found is not None and problem in found)
    if found is not None:
        assert PASSWORD not in found and "Xy7" not in found and "notaport" not in found


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("amqp://guest:guest@rabbit:5672//", True),
        ("sentinel://h1:26379/0", True),
        ("redis+socket:///tmp/redis.sock", True),
        ("memory://", True),
        ("amqp://rabbit:x//", False),
        ("sqs://", False),
    ],
)
def test_broker_url_rules(url: str, ok: bool) -> None:
    assert (url_problem(url, BROKER_SCHEMES) is None) is ok


@pytest.mark.parametrize("scheme", ["amqp", "amqps", "pyamqp"])
def test_quorum_queues_are_accepted_on_a_rabbitmq_broker(scheme: str) -> None:
    settings = Settings(
        broker_url=f"{scheme}://guest:guest@rabbit:5672//", broker_queue_type="quorum"
    )
    assert settings.broker_queue_type == "quorum" and settings.broker_is_rabbitmq


def test_queues_are_classic_unless_asked() -> None:
    assert Settings().broker_queue_type == "classic"
    assert Settings(broker_url="amqp://rabbit//").broker_queue_type == "classic"


@pytest.mark.parametrize(
    ("broker", "scheme"),
    [
        ("sentinel://h1:26379/0;sentinel://h2:26379/0", "sentinel"),
        ("rediss://redis:6380/0", "rediss"),
        ("memory://", "memory"),
    ],
)
def test_quorum_queues_on_any_broker_but_rabbitmq_are_refused(broker: str, scheme: str) -> None:
    lines = lines_for({"CREDITQ_BROKER_URL": broker, "CREDITQ_BROKER_QUEUE_TYPE": "quorum"})
    assert lines == [QUORUM_ON_REDIS.replace("redis://", f"{scheme}://")]


def test_quorum_with_a_refused_broker_url_is_one_line_about_the_url() -> None:
    lines = lines_for(
        {"CREDITQ_BROKER_URL": "amqp://rabbit:x//", "CREDITQ_BROKER_QUEUE_TYPE": "quorum"}
    )
    assert [line.split("=")[0] for line in lines] == ["CREDITQ_BROKER_URL"]


def test_a_bad_redis_url_line_shows_the_url_without_its_credentials() -> None:
    url = f"redis://:Xy7/{PASSWORD}@host:notaport/0"
    (line,) = lines_for({"CREDITQ_REDIS_URL": url})
    assert line.startswith("CREDITQ_REDIS_URL='redis://***@host:notaport/0' is not accepted: ")
    assert "percent-encode" in line and "expected redis://" in line
    assert PASSWORD not in line and "Xy7" not in line


def test_every_sentinel_of_a_broker_url_is_checked_and_redacted() -> None:
    url = f"sentinel://h1:26379/0;sentinel://:{PASSWORD}@h2:x/0"
    (line,) = lines_for({"CREDITQ_BROKER_URL": url})
    assert "'sentinel://h1:26379/0;sentinel://***@h2:x/0'" in line and "port" in line
    assert PASSWORD not in line


def test_every_sentinel_of_the_store_url_is_checked_and_redacted() -> None:
    good = "sentinel://h1:26379/0;sentinel://h2:26380/0"
    assert Settings(redis_url=good).redis_url == good
    url = f"sentinel://h1:26379/0;sentinel://:{PASSWORD}@h2:x/0"
    (line,) = lines_for({"CREDITQ_REDIS_URL": url})
    assert "'sentinel://h1:26379/0;sentinel://***@h2:x/0'" in line and "port" in line
    assert PASSWORD not in line
    (mixed,) = lines_for({"CREDITQ_REDIS_URL": "sentinel://h1:26379/0;redis://h2:6379/0"})
    assert "every part of a Sentinel URL must be sentinel://" in mixed


def test_a_query_string_redis_cannot_read_is_refused_without_echoing_it() -> None:
    (line,) = lines_for({"CREDITQ_REDIS_URL": f"redis://:{PASSWORD}@h/0?db=x"})
    assert "query string" in line and PASSWORD not in line


def test_get_settings_raises_the_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITQ_MAX_ATTEMPTS", "0")
    monkeypatch.setenv("CREDITQ_CHARGEBEE_AMOUNT_IN_DECIMAL", "maybe")
    get_settings.cache_clear()
    with pytest.raises(SettingsError) as caught:
        get_settings()
    assert [line.split("=")[0] for line in caught.value.lines] == [
        "CREDITQ_CHARGEBEE_AMOUNT_IN_DECIMAL",
        "CREDITQ_MAX_ATTEMPTS",
    ]


def test_exit_on_prints_each_line_and_exits_2() -> None:
    shown = io.StringIO()
    with pytest.raises(SystemExit) as caught:
        exit_on(
            SettingsError(["CREDITQ_A is not accepted: x", "CREDITQ_B is not accepted: y"]), shown
        )
    assert caught.value.code == 2
    assert shown.getvalue() == (
        "creditq: CREDITQ_A is not accepted: x\ncreditq: CREDITQ_B is not accepted: y\n"
    )


def test_accepts_words_the_type_and_bounds_of_every_numeric_setting() -> None:
    for name, field in Settings.model_fields.items():
        words = accepts(field)
        assert words, name
    assert accepts(Settings.model_fields["backoff_base_seconds"]) == "a number greater than 0"
    assert accepts(Settings.model_fields["job_ttl_seconds"]) == "a whole number of at least 60"
