"""A developer's own Redis, full of canaries, while a run of the suite goes by.

``python -m tests.integration.canary_redis PORT PYTEST_ARGS...`` starts a redis-server on
127.0.0.1:PORT standing in for a developer's (``test_developer_redis.py`` runs it on 6379
inside a network namespace of its own, so the machine's real 6379 is never reached), puts a
canary key in each of its 16 databases, runs pytest as a developer would (no
``CREDITQ_TEST_REDIS_URL``; ``CREDITQ_REDIS_URL`` and ``CREDITQ_BROKER_URL`` exported to
that Redis, as a shell set up for local work has them), then prints one JSON line: pytest's
exit status, each database whose keys changed, and how many connections the server saw.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import redis

from tests.fixtures.paths import ROOT
from worker.store.embedded import EmbeddedRedis

DATABASES = range(16)
CANARY = "developer:canary"


def _keys(url: str) -> dict[int, dict[str, str | None]]:
    found: dict[int, dict[str, str | None]] = {}
    for db in DATABASES:
        with redis.Redis.from_url(f"{url}/{db}", decode_responses=True) as client:
            found[db] = {
                key: client.get(key) if client.type(key) == "string" else None
                for key in client.scan_iter()
            }
    return found


def _connections(url: str) -> int:
    with redis.Redis.from_url(f"{url}/0") as client:
        return int(client.info("stats")["total_connections_received"])


def main(argv: list[str]) -> int:
    port, pytest_args = int(argv[0]), argv[1:]
    with EmbeddedRedis(port) as server:
        url = server.url.rsplit("/", 1)[0]
        token = secrets.token_hex(8)
        seeded = {db: {CANARY: f"{token}-{db}"} for db in DATABASES}
        for db, keys in seeded.items():
            with redis.Redis.from_url(f"{url}/{db}") as client:
                client.mset(keys)
        before = _connections(url)
        # A developer's shell: not the outer pytest's (its PYTEST_* and the COLUMNS=80 it
        # exports would change how the inner run prints), and no CREDITQ_TEST_REDIS_URL.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CREDITQ_", "PYTEST_")) and k not in ("COLUMNS", "LINES")
        }
        env.update(CREDITQ_REDIS_URL=f"{url}/0", CREDITQ_BROKER_URL=f"{url}/0")
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        # Our own two reads (before and now) are the only connections allowed.
        seen = _connections(url) - before - 1
        after = _keys(url)
    changed = {db: after[db] for db in DATABASES if after[db] != seeded[db]}
    report = {
        "pytest_exit": run.returncode,
        "changed": changed,
        "connections": seen,
        "port": port,
        "output": (run.stdout + run.stderr)[-4000:],
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
