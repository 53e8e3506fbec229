"""`creditq demo` as a newcomer runs it: a subprocess, nothing configured, every process stopped.

Each run carries a marker in its environment, which every process it starts inherits;
after the run no process on the machine may still carry it.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis
from rich.console import Console

from tests.fixtures.workers import wait_until
from worker.app import ISSUE_QUEUE
from worker.demo import run as demo

CREDITQ = str(Path(sys.executable).parent / "creditq")
MARKER = "CREDITQ_DEMO_TEST_MARKER_"  # not a CREDITQ_ variable: the demo keeps it for its worker
RUN_SECONDS = 120


def bare_env(**extra: str) -> tuple[dict[str, str], str]:
    """The environment of a machine with nothing configured, plus a marker to find processes."""
    marker = f"{MARKER.lower()}{uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITQ_")}
    env.update({"DEMO_TEST_MARKER": marker, "PYTHONUNBUFFERED": "1", **extra})
    return env, marker


def processes_carrying(marker: str) -> list[int]:
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def run_demo(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CREDITQ, "demo"], env=env, capture_output=True, text=True, timeout=RUN_SECONDS
    )


def test_demo_with_nothing_configured_confirms_every_grant_and_leaves_no_process() -> None:
    env, marker = bare_env()
    result = run_demo(env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    confirmed_rows = re.findall(r" confirmed +\d+ +[\d.]+s +1 ", out)  # tries, time, 1 credit
    assert len(confirmed_rows) == 8, out
    assert "rejected: Member cust-gone not found" in out
    assert "refused at enqueue: amount: must not be zero" in out
    assert "duplicate detected (nothing sent)" in out
    assert "8 of 8 confirmed keys hold exactly one" in out
    assert "every grant reached its expected end, exactly once" in out
    assert processes_carrying(marker) == []


def test_demo_on_a_configured_redis_writes_only_its_own_expiring_keys(
    redis_url: str, real_redis: redis.Redis
) -> None:
    real_redis.set("shop:session:42", "keep me")
    env, marker = bare_env(CREDITQ_REDIS_URL=redis_url)
    result = run_demo(env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nothing is flushed" in result.stdout
    assert real_redis.get("shop:session:42") == "keep me"
    jobs = list(real_redis.scan_iter("creditq:job:*", count=1000))
    assert jobs and all(key.startswith("creditq:job:demo-") for key in jobs)
    assert all(0 < real_redis.ttl(key) <= demo.DEMO_JOB_TTL_SECONDS for key in jobs)
    assert real_redis.llen(ISSUE_QUEUE) == 0
    assert processes_carrying(marker) == []


def test_demo_refuses_a_redis_where_creditq_work_is_waiting(
    redis_url: str, real_redis: redis.Redis
) -> None:
    real_redis.rpush(ISSUE_QUEUE, "someone else's grant")
    env, _ = bare_env(CREDITQ_REDIS_URL=redis_url)
    result = run_demo(env)
    assert result.returncode == 1
    assert "holds creditq messages" in result.stdout and "spare database" in result.stdout
    assert real_redis.lrange(ISSUE_QUEUE, 0, -1) == ["someone else's grant"]
    assert not list(real_redis.scan_iter("creditq:job:*"))


def test_ctrl_c_stops_the_worker_redis_and_sandbox() -> None:
    env, marker = bare_env()
    proc = subprocess.Popen(
        [CREDITQ, "demo"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # the worker is the last thing it starts
        lines.append(line)
        if line.startswith("worker:"):
            break
    assert len(processes_carrying(marker)) >= 2, lines  # the worker and redis-server
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(lines) + rest
    assert "interrupted" in rest
    assert processes_carrying(marker) == []


def test_a_run_that_misses_its_deadline_exits_non_zero_with_one_clear_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    marker = f"{MARKER.lower()}{uuid.uuid4().hex}"
    monkeypatch.setenv("DEMO_TEST_MARKER", marker)
    buffer = io.StringIO()
    code = demo.run(Console(file=buffer, width=160), deadline_seconds=0.0)
    out = buffer.getvalue()
    assert code == 1, out
    assert "demo: timed out with" in out and "grants unfinished" in out
    assert wait_until(lambda: processes_carrying(marker) == [], timeout=5), out
