"""Ctrl-C during the demo ends it with 130 and its cleanup, wherever the signal lands."""

from __future__ import annotations

import contextlib
import io
import os
import signal
from typing import Any

import pytest
from rich.console import Console

from worker.demo import run as demo_run


def test_ctrl_c_inside_an_import_still_ends_the_demo_as_interrupted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Python re-raises a KeyboardInterrupt from a class body's __set_name__ as RuntimeError:
    the demo must still see the interrupt (CI once saw a traceback and exit 1)."""
    cleaned: list[bool] = []

    def interrupted_in_an_import(_: Console, stack: contextlib.ExitStack, *__: Any) -> int:
        stack.callback(lambda: cleaned.append(True))
        try:
            os.kill(os.getpid(), signal.SIGINT)  # the demo's handler raises KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise RuntimeError("Error calling __set_name__") from exc
        return 0

    monkeypatch.setattr(demo_run, "_run", interrupted_in_an_import)
    out = io.StringIO()
    assert demo_run.run(Console(file=out)) == 130
    assert cleaned == [True] and "interrupted" in out.getvalue()


def test_an_error_without_an_interrupt_is_not_taken_for_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*_: Any) -> int:
        raise RuntimeError("a real bug")

    monkeypatch.setattr(demo_run, "_run", broken)
    with pytest.raises(RuntimeError, match="a real bug"):
        demo_run.run(Console(file=io.StringIO()))
