"""The suite never flushes, writes or even reaches a Redis it did not start.

The risk is a developer's own Redis: on 127.0.0.1:6379, and named by ``CREDITQ_REDIS_URL``
in their shell. The proof runs the fast loop and an integration file (CLI processes, the
job store, flushes before each test) in a subprocess beside such a Redis holding a canary in
each of its 16 databases (tests/integration/canary_redis.py), and checks that every canary
is still there, alone, and that the server saw no connection from the run.

Where the kernel allows it, that Redis listens on 127.0.0.1:6379 itself, inside a network
namespace of the test's own (``unshare -rn``: a private loopback, no privileges needed), so
the machine's real 6379, and whatever other runs keep there, are never touched. Elsewhere it
listens on a free port, which still proves the ``CREDITQ_REDIS_URL`` half of the risk.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from typing import Any

import pytest

from tests.fixtures.paths import ROOT
from worker.store.embedded import free_port

pytestmark = pytest.mark.integration

DEVELOPER_PORT = 6379
SUITE_SAMPLE = ["tests/unit", "tests/integration/test_enqueue.py"]
RUN_SECONDS = 240


def private_network() -> bool:
    """True when this user may make a network namespace with its own loopback."""
    if not (shutil.which("unshare") and shutil.which("ip")):
        return False
    probe = subprocess.run(
        ["unshare", "-rn", "ip", "link", "set", "lo", "up"], capture_output=True, timeout=30
    )
    return probe.returncode == 0


def run_beside_a_developer_redis(isolated: bool) -> dict[str, Any]:
    probe = [sys.executable, "-m", "tests.integration.canary_redis"]
    if isolated:
        command = [
            "unshare",
            "-rn",
            "sh",
            "-c",
            'ip link set lo up && exec "$@"',
            "sh",
            *probe,
            str(DEVELOPER_PORT),
            *SUITE_SAMPLE,
        ]
    else:
        command = [*probe, str(free_port()), *SUITE_SAMPLE]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=RUN_SECONDS)
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_a_developers_redis_keeps_every_canary_in_every_database_through_a_test_run() -> None:
    isolated = private_network()
    report = run_beside_a_developer_redis(isolated)
    assert report["pytest_exit"] == 0, report["output"]
    assert report["changed"] == {}, report["changed"]  # nothing flushed, nothing written
    assert report["connections"] == 0, report  # not even probed
    assert report["port"] == DEVELOPER_PORT or not isolated
