"""``import worker`` is light (issue 16, point 5): no Celery app, no settings read, until a
message is sent or a worker asks for ``worker.app.app``."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
import worker.app, worker.producer
from worker import CreditGrant, enqueue, enqueue_many
CreditGrant.parse({"idempotency_key": "k", "provider": "inveterate", "customer_id": "c",
                   "amount": "1.00"})
print("built" if worker.app._app is not None else "not built")
worker.app.app
print("built" if worker.app._app is not None else "not built")
"""


def test_importing_the_producer_and_checking_a_grant_builds_no_celery_app() -> None:
    env = {**os.environ, "CREDITQ_MAX_ATTEMPTS": "5"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["not", "built", "built"]
