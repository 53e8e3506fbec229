"""``creditq enqueue`` with a bad amount, currency or customer id: exit 2, one line, no Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from worker.cli import common
from worker.cli.main import main

BASE = ["enqueue", "--key", "order-1", "--provider", "chargebee", "--customer", "cust_42"]


@pytest.fixture
def no_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad input must be refused before creditq so much as opens its store."""

    def refuse(*_: Any) -> Any:
        raise AssertionError("the CLI reached the store with a bad grant")

    monkeypatch.setattr(common, "open_store", refuse)


@pytest.mark.parametrize(
    ("extra", "line"),
    [
        (["--amount", "1_000"], "amount: '1_000' is not a plain decimal number"),
        (["--amount", "١٢"], "amount: '١٢' is not a plain decimal number"),
        (["--amount", "1e999999999"], "amount: '1e999999999' is not a plain decimal number"),
        (["--amount", "9999.999999999999999999999999999"], "amount: has more than 12 digits after"),
        (["--amount", "10", "--currency", "ZZZ"], "currency_code: 'ZZZ' is not an ISO 4217"),
        (["--amount", "10", "--currency", "XXX"], "currency_code: 'XXX' is not money"),
        (["--amount", "10", "--priority", "now"], "priority: must be one of interactive, bulk"),
    ],
)
def test_a_bad_amount_or_currency_exits_2_with_one_line(
    no_store: None, capsys: pytest.CaptureFixture[str], extra: list[str], line: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*BASE, *extra])
    captured = capsys.readouterr()
    assert exit_info.value.code == 2
    assert captured.err.startswith(f"creditq: {line}") and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err and captured.out == ""


def test_a_dot_customer_id_exits_2_with_one_line(
    no_store: None, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["enqueue", "--key", "k", "--provider", "inveterate", "--customer", ".", "--amount", "1"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert (
        capsys.readouterr().err == "creditq: customer_id: must not be '.' (a URL would drop it)\n"
    )


def test_the_installed_command_refuses_an_underscored_amount_without_touching_redis() -> None:
    # A Redis URL nothing answers on: reaching it would fail with exit 1, not 2.
    env = {**os.environ, "CREDITQ_REDIS_URL": "redis://127.0.0.1:9/0"}
    creditq = Path(sys.executable).with_name("creditq")
    done = subprocess.run(
        [str(creditq), *BASE, "--amount", "1_000"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "creditq: amount: '1_000' is not a plain decimal number: "
        "write ASCII digits with at most one '.', e.g. 10.50"
    ]
    assert "Traceback" not in done.stderr and done.stdout == ""
