"""``creditq serve`` and Flower behind Sentinels (``sentinel://`` as the job store and as the
broker, the master behind a password), as operators run them: real processes, a master
SIGKILLed, a replica promoted, and neither serve nor Flower restarted."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.fixtures.grants import raw_grant
from tests.fixtures.sentinels import SentinelSet, failover_held, names_no_master, require_password
from tests.fixtures.serve import serve_process
from tests.fixtures.workers import wait_until
from worker.app import ISSUE_QUEUE
from worker.store.embedded import SENTINEL_MASTER
from worker.store.jobs import JobStore

pytestmark = pytest.mark.integration

PASSWORD = f"redis-pw-{secrets.token_hex(8)}"
TOKEN = f"serve-token-{secrets.token_hex(12)}"
# compose's health check of serve gives /readyz this long (docker-compose.yml)
PROBER_PATIENCE_SECONDS = 3.0


@pytest.fixture
def ha() -> Iterator[SentinelSet]:
    """Three Sentinels, two of which must agree, as in production; the master and its
    replica behind ``PASSWORD``."""
    found = SentinelSet(count=3, quorum=2)
    try:
        require_password(found, PASSWORD)
        admin = redis.Redis(port=found.master.port, password=PASSWORD, decode_responses=True)
        assert admin.config_get("requirepass") == {"requirepass": PASSWORD}
        admin.close()
        yield found
    finally:
        found.stop()


def stop_first_sentinel(found: SentinelSet) -> None:
    """The Sentinel the URLs name first goes (SIGKILL); the others stay."""
    found.processes[0].kill()
    found.processes[0].wait(timeout=10)


def sentinel_url(found: SentinelSet) -> str:
    """Celery's form, the master's password in the first part (as the README writes it)."""
    first, *others = found.ports
    return ";".join(
        [f"sentinel://:{PASSWORD}@127.0.0.1:{first}/0"]
        + [f"sentinel://127.0.0.1:{port}/0" for port in others]
    )


def behind(found: SentinelSet) -> dict[str, str]:
    """The settings that put the store and the broker behind the Sentinels."""
    url = sentinel_url(found)
    return {
        "CREDITQ_REDIS_URL": url,
        "CREDITQ_BROKER_URL": url,
        "CREDITQ_REDIS_SENTINEL_MASTER": SENTINEL_MASTER,
    }


def master_of(found: SentinelSet) -> redis.Redis:
    """A client of whichever Redis the Sentinels name master now."""
    return redis.Redis(port=found.master_port(), password=PASSWORD, decode_responses=True)


def promoted(found: SentinelSet) -> bool:
    return found.master_port() != found.master.port


def readyz(base: str) -> httpx.Response:
    return httpx.get(f"{base}/readyz", timeout=10)


# -- creditq serve ---------------------------------------------------------------------------


def test_serve_is_ready_behind_sentinels_says_which_part_fails_while_no_master_and_recovers(
    ha: SentinelSet, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITQ_")}
    env.update(behind(ha), CREDITQ_API_TOKENS=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with serve_process(env, tmp_path / "serve.log") as serve:
        ready = readyz(serve.url)
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready", "redis": "ok", "broker": "ok"}
        before = raw_grant(idempotency_key="before-failover")
        assert httpx.post(f"{serve.url}/v1/grants", json=before, headers=auth).status_code == 201

        with failover_held(ha):
            ha.master.stop(hard=True)
            assert wait_until(lambda: names_no_master(ha), timeout=10)
            asked = time.monotonic()
            down = readyz(serve.url)
            took = time.monotonic() - asked
            assert down.status_code == 503, down.text
            assert down.json()["status"] == "not ready"
            assert down.json()["redis"] == "error: MasterNotFoundError"
            assert down.json()["broker"].startswith("error: ")
            assert took < PROBER_PATIENCE_SECONDS, f"/readyz took {took:.1f} s without a master"
            for secret in (PASSWORD, TOKEN, "Traceback"):
                assert secret not in down.text

        assert wait_until(lambda: promoted(ha), timeout=30)
        assert wait_until(lambda: readyz(serve.url).status_code == 200, timeout=15), serve.output()
        after = raw_grant(idempotency_key="after-failover")
        created = httpx.post(f"{serve.url}/v1/grants", json=after, headers=auth)
        assert created.status_code == 201, created.text
        # the same serve process wrote the job and its message to the new master
        assert serve.process.poll() is None
        master = master_of(ha)
        assert JobStore(master).get("after-failover") is not None
        messages = master.lrange(ISSUE_QUEUE, 0, -1)
        assert [m for m in messages if "after-failover" in m], messages

        # a Sentinel gone: the store's clients and the broker's connections ask the others
        stop_first_sentinel(ha)
        assert readyz(serve.url).json() == {"status": "ready", "redis": "ok", "broker": "ok"}
        late = raw_grant(idempotency_key="first-sentinel-gone")
        assert httpx.post(f"{serve.url}/v1/grants", json=late, headers=auth).status_code == 201
        for secret in (PASSWORD, TOKEN):
            assert secret not in serve.output()
