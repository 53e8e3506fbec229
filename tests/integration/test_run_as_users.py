"""The Procfile as operators run it (honcho: worker, beat, flower, web) against a private Redis
and the sandbox; Flower as they watch it (behind basic auth, showing grants, never a key), and
creditq serve taking a grant over HTTP."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from celery import Celery

from tests.fixtures.exactly_once import assert_exactly_once, confirmed_count
from tests.fixtures.grants import grants
from tests.fixtures.paths import ROOT
from tests.fixtures.workers import wait_until, worker_env
from worker.producer import enqueue_many
from worker.sandbox import Sandbox
from worker.store.embedded import free_port
from worker.store.jobs import JobStore

BIN = Path(sys.executable).parent
STOP_SECONDS = 15.0


@dataclass
class Deployment:
    """A running ``honcho start``: where Flower listens and what must never leak."""

    honcho: subprocess.Popen[bytes]
    flower: str
    auth: tuple[str, str]
    secrets: tuple[str, ...]
    log: Path
    web: str = ""

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def api(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.get(f"{self.flower}{path}", timeout=5.0, **kwargs)  # type: ignore[arg-type]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``: honcho puts each Procfile entry in a session of its own."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop_everything(honcho: subprocess.Popen[bytes]) -> None:
    """SIGTERM honcho (it stops its children), then SIGKILL every group still there."""
    groups = {honcho.pid}
    for pid in descendants(honcho.pid):
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(pid))
    with contextlib.suppress(ProcessLookupError):
        os.killpg(honcho.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        honcho.wait(timeout=STOP_SECONDS)
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    honcho.wait(timeout=5)


@pytest.fixture
def deployment(
    redis_url: str, make_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> Iterator[tuple[Deployment, Sandbox]]:
    keys = (f"inv-secret-{secrets.token_hex(8)}", f"cb-secret-{secrets.token_hex(8)}")
    sandbox = make_sandbox(lag=0.2, inveterate_key=keys[0], chargebee_key=keys[1])
    auth = ("ops", secrets.token_hex(8))
    port, web_port = free_port(), free_port()
    token = f"web-token-{secrets.token_hex(12)}"
    env = worker_env(
        redis_url,
        sandbox,
        CREDITQ_INVETERATE_API_KEY=keys[0],
        CREDITQ_CHARGEBEE_API_KEY=keys[1],
        CREDITQ_API_TOKENS=token,
        SERVE_PORT=str(web_port),
        FLOWER_BASIC_AUTH=":".join(auth),
        FLOWER_PORT=str(port),
        BEAT_SCHEDULE_FILE=str(tmp_path / "beat-schedule"),
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "honcho.log"
    with log.open("wb") as sink:
        honcho = subprocess.Popen(
            [str(BIN / "honcho"), "-f", str(ROOT / "Procfile"), "start", "--no-colour"],
            env=env,
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    web = f"http://127.0.0.1:{web_port}"
    running = Deployment(honcho, f"http://127.0.0.1:{port}", auth, (*keys, token), log, web)
    try:
        yield running, sandbox
    finally:
        stop_everything(honcho)


def web_answers(deployment: Deployment, path: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{deployment.web}{path}", timeout=5.0).status_code == 200
    return False


def flower_is_up(deployment: Deployment) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return deployment.api("/healthcheck").status_code == 200
    return False


def flower_hears_a_worker(deployment: Deployment) -> bool:
    with contextlib.suppress(httpx.HTTPError, ValueError):
        reply = deployment.api("/api/workers?status=1", auth=deployment.auth)
        return reply.status_code == 200 and any(reply.json().values())
    return False


def test_the_procfile_processes_grants_and_flower_shows_them_behind_auth_without_secrets(
    deployment: tuple[Deployment, Sandbox], celery_app: Celery, real_store: JobStore
) -> None:
    running, sandbox = deployment
    assert wait_until(lambda: flower_is_up(running), timeout=30), running.output()
    assert wait_until(lambda: celery_app.control.ping(timeout=0.5), timeout=30), running.output()
    # Task events are pub/sub, lost when sent before Flower subscribed (its healthcheck
    # answers earlier): wait until its event receiver has heard a worker
    assert wait_until(lambda: flower_hears_a_worker(running), timeout=30), running.output()
    sandbox.fail_next("error_after", provider="chargebee", operation="submit")

    batch = grants(6, prefix="procfile")
    enqueue_many(batch[:5], store=real_store, app=celery_app)
    ready = wait_until(lambda: web_answers(running, "/readyz"), timeout=30)
    assert ready, running.output()[-3000:]
    posted = httpx.post(  # the sixth through the Procfile's web process, creditq serve
        f"{running.web}/v1/grants",
        json=batch[5],
        headers={"Authorization": f"Bearer {running.secrets[-1]}"},
        timeout=10,
    )
    assert posted.status_code == 201, posted.text
    keys = [g["idempotency_key"] for g in batch]
    assert wait_until(lambda: confirmed_count(real_store) == 6, timeout=60), running.output()
    assert_exactly_once(real_store, sandbox, keys)

    def tasks() -> dict[str, dict[str, object]]:
        reply = running.api("/api/tasks", auth=running.auth)
        return reply.json() if reply.status_code == 200 else {}

    def listed() -> dict[str, dict[str, object]] | None:
        found = tasks()
        names = {str(t.get("name")) for t in found.values()}
        issued = {k for k in keys for t in found.values() if k in str(t.get("kwargs"))}
        wanted = {"creditq.issue", "creditq.confirm", "creditq.reconcile"}  # beat runs too
        return found if wanted <= names and issued == set(keys) else None

    found = wait_until(listed, timeout=30)
    assert found, (tasks(), running.output()[-3000:])
    issue = next(t for t in found.values() if t["name"] == "creditq.issue")
    for field in ("idempotency_key", "provider", "customer_id", "amount"):
        assert f"'{field}'" in str(issue["kwargs"]), issue

    for page in ("/", "/tasks", "/workers", "/api/tasks", "/api/workers"):  # no login, no page
        assert running.api(page).status_code == 401, page
    assert running.api("/api/tasks", auth=(running.auth[0], "wrong")).status_code == 401
    metrics = running.api("/metrics")  # Prometheus scrapes it without credentials
    assert metrics.status_code == 200 and 'task="creditq.issue"' in metrics.text

    seen = [
        running.api("/api/tasks", auth=running.auth).text,
        running.api("/api/workers", auth=running.auth).text,
        running.api("/tasks", auth=running.auth).text,
        metrics.text,
        running.output(),  # the worker's, beat's and Flower's logs
    ]
    for secret in running.secrets:
        assert not [text for text in seen if secret in text], f"{secret[:6]}... leaked"


@pytest.mark.parametrize("basic_auth", [None, "", "ops", "ops:"])
def test_the_procfiles_flower_refuses_to_start_without_a_login(
    redis_url: str, make_sandbox: Callable[..., Sandbox], tmp_path: Path, basic_auth: str | None
) -> None:
    port = free_port()
    env = worker_env(
        redis_url,
        make_sandbox(),
        FLOWER_PORT=str(port),
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    env.pop("FLOWER_BASIC_AUTH", None)
    if basic_auth is not None:
        env["FLOWER_BASIC_AUTH"] = basic_auth
    honcho = subprocess.Popen(
        [str(BIN / "honcho"), "-f", str(ROOT / "Procfile"), "start", "--no-colour", "flower"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = honcho.communicate(timeout=60)
    finally:
        stop_everything(honcho)
    text = output.decode(errors="replace")
    assert "flower: " in text and "FLOWER_BASIC_AUTH" in text and "Traceback" not in text, text
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2.0)
