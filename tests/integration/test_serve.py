"""creditq serve over real sockets: uvicorn, a real Redis as store and broker, real HTTP."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
import redis
from celery import Celery
from pydantic import SecretStr

from tests.fixtures.celery import queued_messages
from tests.fixtures.grants import grants, raw_grant
from tests.fixtures.serve import served
from worker.settings import Settings
from worker.store.embedded import EmbeddedRedis
from worker.store.jobs import JobStore

TOKEN = "integration-token-0123456789abcdef"


@pytest.fixture
def base_url(real_store: JobStore, celery_app: Celery) -> Iterator[str]:
    with served(real_store, celery_app, Settings(api_tokens=SecretStr(TOKEN))) as url:
        yield url


@pytest.fixture
def api(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    ) as client:
        yield client


def test_every_status_of_the_intake_over_a_real_socket(
    api: httpx.Client, real_redis: redis.Redis
) -> None:
    assert api.post("/v1/grants", json=raw_grant()).status_code == 201
    assert api.post("/v1/grants", json=raw_grant()).status_code == 200
    assert api.post("/v1/grants", json=raw_grant(amount="9.99")).status_code == 409
    refused = api.post("/v1/grants", json=raw_grant(idempotency_key="z", amount="0"))
    assert refused.status_code == 422 and refused.json()["field"] == "amount"
    assert (
        api.post("/v1/grants", json=raw_grant(), headers={"Authorization": "x"}).status_code == 401
    )
    assert api.get("/v1/grants/nobody").status_code == 404
    assert api.get("/v1/grants/order-1001-cashback").json()["state"] == "queued"
    huge = api.post("/v1/grants", content=b"[" + b"0," * 1_100_000 + b"0]")
    assert huge.status_code == 413
    assert queued_messages(real_redis) == 1  # one message, for the one grant created
    assert TOKEN not in everything_in(real_redis)  # the token reached neither job nor message


def everything_in(client: redis.Redis) -> str:
    """Every key and value of the database, as text."""
    readers = {
        "string": client.get,
        "hash": client.hgetall,
        "list": lambda k: client.lrange(k, 0, -1),
        "set": client.smembers,
        "zset": lambda k: client.zrange(k, 0, -1, withscores=True),
    }
    return repr({key: readers[client.type(key)](key) for key in client.scan_iter()})


def test_a_thousand_grant_batch_is_accepted_in_one_request(
    api: httpx.Client, real_store: JobStore, real_redis: redis.Redis
) -> None:
    batch = grants(1000, prefix="http")
    answer = api.post("/v1/grants/batch", json={"grants": batch})
    assert answer.status_code == 201 and answer.json()["created"] == 1000
    assert real_store.count_by_state().get("queued") == 1000
    assert queued_messages(real_redis) == 1000
    again = api.post("/v1/grants/batch", json={"grants": batch})
    assert again.status_code == 200 and again.json()["created"] == 0
    assert queued_messages(real_redis) == 1000


def test_readyz_says_503_when_redis_stops_and_healthz_stays_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker.app import create_app
    from worker.settings import get_settings

    with EmbeddedRedis() as own:
        monkeypatch.setenv("CREDITQ_REDIS_URL", own.url)
        get_settings.cache_clear()
        store = JobStore(redis.Redis.from_url(own.url, decode_responses=True, socket_timeout=2))
        with served(store, create_app(), Settings(api_tokens=SecretStr(TOKEN))) as base:
            ready = httpx.get(f"{base}/readyz", timeout=30)
            assert ready.status_code == 200, ready.text
            assert ready.json() == {"status": "ready", "redis": "ok", "broker": "ok"}
            own.stop(hard=True)
            down = httpx.get(f"{base}/readyz", timeout=30)
            assert down.status_code == 503 and down.json()["status"] == "not ready"
            assert down.json()["redis"].startswith("error")
            assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200


def test_serve_refuses_a_network_address_without_tokens(tmp_path: object) -> None:
    answer = subprocess.run(
        [
            sys.executable,
            "-c",
            "from worker.cli.main import main; main()",
            "serve",
            "--host",
            "0.0.0.0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "CREDITQ_REDIS_URL": "redis://127.0.0.1:1/0"},
    )
    assert answer.returncode == 2
    assert answer.stderr.strip().splitlines() == [
        "creditq: refusing to serve on 0.0.0.0 without CREDITQ_API_TOKENS: the /v1 API would "
        "be open to the network; set tokens, or serve on 127.0.0.1"
    ]


def test_a_webhook_retried_at_once_from_many_connections_is_created_once(
    base_url: str, real_redis: redis.Redis
) -> None:
    """A storefront that retries before its first attempt answered: 16 copies of one grant
    race through the intake; one is created, the others are its duplicates, one message."""
    from concurrent.futures import ThreadPoolExecutor

    def post(_: int) -> int:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        return httpx.post(f"{base_url}/v1/grants", json=raw_grant(), headers=headers).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = sorted(pool.map(post, range(16)))
    assert statuses == [200] * 15 + [201]
    assert queued_messages(real_redis) == 1
