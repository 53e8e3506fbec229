"""``creditq serve`` and Flower behind Sentinels (``sentinel://`` as the job store and as the
broker, the master behind a password), as operators run them: real processes, a master
SIGKILLed, a replica promoted, and neither serve nor Flower restarted."""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.fixtures.grants import grants, raw_grant
from tests.fixtures.sentinels import SentinelSet, failover_held, names_no_master, require_password
from tests.fixtures.serve import serve_process
from tests.fixtures.workers import Fleet, wait_until, worker_env
from worker.app import ISSUE_QUEUE, create_app
from worker.producer import enqueue_many
from worker.sandbox import Sandbox
from worker.settings import get_settings
from worker.store.embedded import SENTINEL_MASTER, free_port
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
    found = SentinelSet(count=3, quorum=2, sync_delay=0)
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

        assert wait_until(ha.promoted, timeout=30)
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


# -- Flower ----------------------------------------------------------------------------------


class FlowerSite:
    """Flower's pages and API, behind its basic auth."""

    def __init__(self, auth: tuple[str, str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.auth = auth

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.base}{path}", auth=self.auth, timeout=10)

    def answers(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{self.base}/healthcheck", timeout=2).status_code == 200
        return False

    def hears(self, worker_prefix: str) -> bool:
        """Flower's event receiver has heard a worker (its online event or a heartbeat).
        Task events are Redis pub/sub, kept for nobody: those sent before Flower subscribed
        are lost, and its healthcheck answers before it has (a CI flake)."""
        reply = self.get("/api/workers?status=1")
        if reply.status_code != 200:
            return False
        alive: dict[str, bool] = reply.json()
        return any(name.startswith(worker_prefix) and up for name, up in alive.items())

    def issued(self, keys: list[str]) -> bool:
        """Flower shows a ``creditq.issue`` task of each key that succeeded: the worker's
        task events reached it through the broker."""
        reply = self.get("/api/tasks")
        if reply.status_code != 200:
            return False
        done = [
            str(task.get("kwargs"))
            for task in reply.json().values()
            if task.get("name") == "creditq.issue" and task.get("state") == "SUCCESS"
        ]
        return all(any(f"'{key}'" in kwargs for kwargs in done) for key in keys)

    def queue_lengths(self) -> dict[str, int] | None:
        reply = self.get("/api/queues/length")
        if reply.status_code != 200:
            return None
        return {q["name"]: int(q["messages"]) for q in reply.json()["active_queues"]}


@pytest.fixture
def producer(ha: SentinelSet, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """What a producer in this process hands grants over with, behind the Sentinels."""
    for name, value in behind(ha).items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield {"store": JobStore.from_url(), "app": create_app()}
    get_settings.cache_clear()


def _enqueued(batch: list[dict[str, Any]], producer: dict[str, Any]) -> bool:
    """Hand ``batch`` over; False while the broker or the store refuse it (a failover)."""
    try:
        enqueue_many(batch, **producer)
    except (redis.RedisError, OSError):
        return False
    return True


def test_flower_behind_sentinels_shows_workers_tasks_and_queues_and_follows_a_failover(
    ha: SentinelSet, producer: dict[str, Any], make_sandbox: Callable[..., Sandbox]
) -> None:
    """Flower as the Procfile runs it, with a real worker: everything works behind the
    Sentinels out of the box; without a master only the queue lengths fail (the API with a
    bare 500, the Broker page empty), and after the promotion its events come back without a
    restart (Flower's own retry loop reconnects through the Sentinels)."""
    login = ("ops", secrets.token_hex(8))
    env = worker_env(
        sentinel_url(ha),
        make_sandbox(),
        **behind(ha),
        FLOWER_BASIC_AUTH=":".join(login),
        PYTHONUNBUFFERED="1",
    )
    fleet = Fleet(env)
    try:
        fleet.start_worker(concurrency=4)
        flower = FlowerSite(login)
        fleet.start_flower(flower.port)
        assert wait_until(flower.answers, timeout=30), fleet.log_text()
        assert wait_until(lambda: flower.hears("w0@"), timeout=30), fleet.log_text()

        before = grants(3, prefix="before")
        enqueue_many(before, **producer)
        keys = [g["idempotency_key"] for g in before]
        assert wait_until(lambda: flower.issued(keys), timeout=30), fleet.log_text()
        workers = wait_until(lambda: flower.get("/api/workers?refresh=1").json(), timeout=15)
        assert any(name.startswith("w0@") for name in workers), workers
        # the Broker page and its API read the queues through the Sentinels (master_name
        # from broker_transport_options, the password from the URL)
        lengths = flower.queue_lengths()
        assert lengths is not None and {"creditq.issue", "creditq.confirm"} <= set(lengths)
        page = flower.get("/broker")
        assert page.status_code == 200 and "creditq.issue" in page.text

        with failover_held(ha):
            ha.master.stop(hard=True)
            assert wait_until(lambda: names_no_master(ha), timeout=10)
            # no master: the API says 500 (Flower's, no detail), the page shows no queue
            failed = flower.get("/api/queues/length")
            assert failed.status_code == 500 and PASSWORD not in failed.text
            page = flower.get("/broker")
            assert page.status_code == 200 and "creditq.issue" not in page.text

        assert wait_until(ha.promoted, timeout=30)
        after = grants(3, prefix="after")
        taken = wait_until(lambda: _enqueued(after, producer), timeout=15)
        assert taken, "the producer could not hand grants over after the failover"
        # Task events flow again: Flower sees the tasks of grants handed over since. Events
        # are Redis pub/sub, kept for nobody: those a worker sends before Flower has
        # subscribed again on the new master are lost (the worker may be back first), so
        # a grant is handed over each second until Flower shows one.
        sent: list[str] = []

        def flower_sees_a_new_grant() -> bool:
            one = grants(1, prefix=f"after-{len(sent)}")
            if _enqueued(one, producer):
                sent.append(str(one[0]["idempotency_key"]))
            return any(flower.issued([key]) for key in sent)

        assert wait_until(flower_sees_a_new_grant, timeout=30, interval=1.0), fleet.log_text()
        assert wait_until(flower.queue_lengths, timeout=10) is not None
        assert fleet.flower is not None and fleet.flower.poll() is None

        # Flower reads queue lengths from the first Sentinel of the URL only (it takes the
        # broker connection's as_uri(), which names one): with it gone, the API fails and
        # the page shows no queue, while tasks and events go on through kombu's connections
        stop_first_sentinel(ha)
        assert flower.get("/api/queues/length").status_code == 500
        page = flower.get("/broker")
        assert page.status_code == 200 and "creditq.issue" not in page.text
        late = grants(3, prefix="late")
        enqueue_many(late, **producer)
        keys = [g["idempotency_key"] for g in late]
        assert wait_until(lambda: flower.issued(keys), timeout=30), fleet.log_text()

        shown = [flower.get(p).text for p in ("/api/tasks", "/api/workers", "/broker", "/")]
        for secret in (PASSWORD, login[1]):
            assert not [t for t in (*shown, fleet.log_text()) if secret in t], "a secret leaked"
    finally:
        fleet.stop()
