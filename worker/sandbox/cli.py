"""``python -m worker.sandbox`` (and ``creditq sandbox``): run the sandbox in the foreground.

The keys default to ``CREDITQ_INVETERATE_API_KEY`` / ``CREDITQ_CHARGEBEE_API_KEY`` when
set, so a worker configured from the same environment is accepted as is. Keys are
never printed.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any, NoReturn

from worker.sandbox.harness import Sandbox
from worker.sandbox.options import DEFAULT_CHARGEBEE_KEY, DEFAULT_INVETERATE_KEY


def serve(
    port: int = 8099,
    host: str = "127.0.0.1",
    lag: float = 0.0,
    latency: float = 0.0,
    page_size: int | None = None,
    fail_after: float = 0.0,
    rate_limit: int | None = None,
    rate_window: float = 60.0,
    inveterate_key: str = DEFAULT_INVETERATE_KEY,
    chargebee_key: str = DEFAULT_CHARGEBEE_KEY,
    echo_notes: bool = True,
    *,
    fail_before: float = 0.0,
    timeout_after: float = 0.0,
    hold: float = 2.0,
    oldest_first: bool = False,
    seed: int = 0,
    access_log: bool = False,
    ready: threading.Event | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Run until SIGINT/SIGTERM (or ``stop`` is set); print the URL once listening."""
    sandbox = Sandbox(
        port,
        host,
        seed=seed,
        fail_before=fail_before,
        fail_after=fail_after,
        timeout_after=timeout_after,
        access_log=access_log,
        lag=lag,
        latency=latency,
        page_size=page_size,
        rate_limit=rate_limit,
        rate_window=rate_window,
        inveterate_key=inveterate_key,
        chargebee_key=chargebee_key,
        echo_notes=echo_notes,
        hold=hold,
        oldest_first=oldest_first,
    )
    stop = stop or threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    sandbox.start()
    try:
        print(f"creditq sandbox listening on {sandbox.url}", flush=True)
        print(
            f"  inveterate base URL {sandbox.url}  chargebee site root {sandbox.url}  "
            f"control {sandbox.url}/_sandbox/stats",
            flush=True,
        )
        if ready is not None:
            ready.set()
        stop.wait()
    finally:
        sandbox.stop()
        for restored, handler in previous.items():
            signal.signal(restored, handler)
        print("creditq sandbox stopped", flush=True)


class _OneLineParser(argparse.ArgumentParser):
    """Bad input is one line on stderr and exit 2, as everywhere in ``creditq``, instead of
    argparse's usage block: ``--help`` still shows every flag."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"creditq sandbox: {message} (--help lists the flags)\n")


def _number(text: str) -> float:
    """A finite float: ``nan`` and ``inf`` parse as floats but mean no delay or probability."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _seconds(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: seconds must not be negative")
    return value


def _probability(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be between 0 and 1")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: a port is 0 to 65535 (0 picks a free one)")
    return value


def parser() -> argparse.ArgumentParser:
    env = os.environ
    p = _OneLineParser(
        prog="creditq sandbox",
        description="Fake Inveterate and Chargebee APIs on loopback, with a ledger and faults.",
    )
    p.add_argument("--port", type=_port, default=8099, help="0 picks a free port (default 8099)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--lag", type=_seconds, default=0.0, help="seconds before a credit is listed")
    p.add_argument("--latency", type=_seconds, default=0.0, help="seconds added to every call")
    p.add_argument("--page-size", type=int, default=None, help="cap on listing page size")
    p.add_argument("--fail-before", type=_probability, default=0.0, help="P(500, not applied)")
    p.add_argument("--fail-after", type=_probability, default=0.0, help="P(applied, then 500)")
    p.add_argument(
        "--timeout-after", type=_probability, default=0.0, help="P(applied, then no answer)"
    )
    p.add_argument("--hold", type=_seconds, default=2.0, help="seconds a timeout holds the reply")
    p.add_argument("--rate-limit", type=int, default=None, help="calls per window and provider")
    p.add_argument("--rate-window", type=_number, default=60.0, help="window in seconds")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault RNG")
    p.add_argument("--no-echo-notes", dest="echo_notes", action="store_false")
    p.add_argument(
        "--oldest-first",
        action="store_true",
        help="Inveterate listings run oldest first (its docs do not say which end)",
    )
    p.add_argument(
        "--inveterate-key", default=env.get("CREDITQ_INVETERATE_API_KEY") or DEFAULT_INVETERATE_KEY
    )
    p.add_argument(
        "--chargebee-key", default=env.get("CREDITQ_CHARGEBEE_API_KEY") or DEFAULT_CHARGEBEE_KEY
    )
    p.add_argument("--access-log", action="store_true", help="log each request line to stderr")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        serve(**vars(args))
    except (OSError, ValueError) as exc:
        print(f"creditq sandbox: {exc}", file=sys.stderr)
        return 2
    return 0
