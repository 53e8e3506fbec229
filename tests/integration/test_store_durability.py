"""A worker refuses a job store that would forget what it acknowledged (issue 14, point 10):
a Redis that keeps nothing on disk loses every grant in a restart, and the producer's retry
of the same key then pays again."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.fixtures.paths import ROOT
from worker.app.commands import worker_command
from worker.sandbox import Sandbox
from worker.sandbox.options import creditq_env
from worker.store.embedded import EmbeddedRedis

pytestmark = pytest.mark.integration


@pytest.fixture
def volatile_redis() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


def start_worker(url: str, sandbox: Sandbox, tmp_path: Path, **extra: str) -> subprocess.Popen[str]:
    env = creditq_env(url, sandbox.url, PYTHONPATH=str(ROOT), **extra)
    env.pop("CREDITQ_ALLOW_VOLATILE_REDIS")  # what a production deployment has
    env.update(extra)
    return subprocess.Popen(
        worker_command("2", "-l", "INFO"),
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_worker_refuses_a_redis_that_keeps_nothing_on_disk_in_one_line(
    volatile_redis: EmbeddedRedis, sandbox: Sandbox, tmp_path: Path
) -> None:
    worker = start_worker(volatile_redis.url, sandbox, tmp_path)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 2
    refusal = [line for line in err.splitlines() if "refusing" in line]
    assert len(refusal) == 1 and "appendonly" in refusal[0] and "Traceback" not in err


def test_a_worker_starts_once_the_redis_keeps_an_append_only_file(
    volatile_redis: EmbeddedRedis, sandbox: Sandbox, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(volatile_redis.url)
    client.config_set("appendonly", "yes")
    client.config_set("appendfsync", "always")  # what Redis before 7.2 needs
    worker = start_worker(volatile_redis.url, sandbox, tmp_path)
    try:
        with pytest.raises(subprocess.TimeoutExpired):  # still running: it did not refuse
            worker.communicate(timeout=8)
    finally:
        worker.kill()
        _, err = worker.communicate(timeout=10)
    assert "refusing" not in err and "ready" in err


def test_a_demo_or_test_may_say_its_volatile_redis_is_on_purpose(
    volatile_redis: EmbeddedRedis, sandbox: Sandbox, tmp_path: Path
) -> None:
    worker = start_worker(
        volatile_redis.url, sandbox, tmp_path, CREDITQ_ALLOW_VOLATILE_REDIS="true"
    )
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            worker.communicate(timeout=8)
    finally:
        worker.kill()
        _, err = worker.communicate(timeout=10)
    assert "allowed by CREDITQ_ALLOW_VOLATILE_REDIS" in err
