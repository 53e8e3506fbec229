"""How deep a grant goes through creditq's own code, before and after a layout change.

    .venv/bin/python benchmarks/call_path.py [--json]
    PYTHONPATH=/path/to/other/checkout .venv/bin/python benchmarks/call_path.py

Issue 16 asks for figures taken on the tree before and after its redesign: the longest path
of calls from ``enqueue`` to the POST, the modules and their largest, the repeated blocks.
A layout that is easier to read should not make a grant cross more of the project's own
frames, so this script measures the chain, not the time:

- producer: ``worker.enqueue`` of one grant, on fakeredis, with an app that records the
  message (the deepest chain of project frames, the chain when the message is published,
  and the distinct project functions called);
- worker: the issue task (``tasks/issue.py``) with that message, through a ``Pipeline`` on
  the same store whose Inveterate client speaks to an ``httpx.MockTransport`` answering the
  sandbox's 201 (the chain when the POST reaches the transport, and the functions called);
- the tree: modules under ``worker/``, the five largest, and what ``duplicates`` counts.

Project frames are those of files under ``worker/`` and ``tasks/`` of the imported package,
``worker/sandbox/`` left out; comprehension frames (``<listcomp>``...) are not calls and are
skipped. Each side runs once untraced first, so imports and first-use caches are not counted.
It runs against either layout (``worker.store.jobs`` or the flat ``worker.store``...): the
tree measured is the one ``import worker`` finds, printed first. No Redis, no network.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

# Found last, so a PYTHONPATH naming another checkout wins over this one.
sys.path.append(str(Path(__file__).resolve().parent.parent))

import fakeredis
import httpx
from pydantic import SecretStr

import worker

ROOT = Path(worker.__file__).resolve().parent.parent
PROJECT = tuple(str(ROOT / part) + os.sep for part in ("worker", "tasks"))
EXCLUDED = str(ROOT / "worker" / "sandbox") + os.sep
NOT_CALLS = {"<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>", "<module>"}
Chain = list[str]


def _first(*names: str) -> ModuleType:
    """The first of ``names`` that imports: the new layout's module, then the old one's."""
    for name in names:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise  # a module missing inside it: a real error, not the other layout
    raise ModuleNotFoundError(f"none of {names} imports")


@cache
def _is_project(filename: str) -> bool:
    path = os.path.realpath(filename)
    return path.startswith(PROJECT) and not path.startswith(EXCLUDED)


def _name(frame: FrameType) -> str | None:
    """``module.qualname`` of a project frame, else None."""
    code = frame.f_code
    if code.co_name in NOT_CALLS or not _is_project(code.co_filename):
        return None
    return f"{frame.f_globals.get('__name__', '?')}.{code.co_qualname}"


def project_chain(frame: FrameType | None) -> Chain:
    """The project frames on the stack ending at ``frame``, outermost first."""
    names: Chain = []
    while frame is not None:
        if (name := _name(frame)) is not None:
            names.append(name)
        frame = frame.f_back
    return names[::-1]


class Profile:
    """A ``sys.setprofile`` hook: every project function called and the deepest chain."""

    def __init__(self) -> None:
        self.functions: set[str] = set()
        self.deepest: Chain = []

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event != "call" or (name := _name(frame)) is None:
            return
        self.functions.add(name)
        if len(chain := project_chain(frame)) > len(self.deepest):
            self.deepest = chain


@contextlib.contextmanager
def profiled() -> Iterator[Profile]:
    profile = Profile()
    sys.setprofile(profile)
    try:
        yield profile
    finally:
        sys.setprofile(None)


class Outbox:
    """Stands in for the Celery app: records each message and the project chain sending it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.chain: Chain = []

    def send_task(self, name: str, kwargs: dict[str, Any] | None = None, **_: Any) -> None:
        self.chain = project_chain(sys._getframe(1))
        self.sent.append((name, dict(kwargs or {})))

    @contextlib.contextmanager
    def producer_or_acquire(self) -> Iterator[None]:
        yield None


class InveterateAPI:
    """The MockTransport handler: Inveterate's answers (docs/wire.md), and the project chain
    at the moment a POST arrives."""

    def __init__(self) -> None:
        self.post_chain: Chain = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST":  # a listing read: nothing there yet
            return httpx.Response(200, json={"message": "OK", "data": {"credits": []}})
        self.post_chain = project_chain(sys._getframe(1))
        body = json.loads(request.content)
        data = {"memberId": request.url.path.split("/")[-2], "amount": body["amount"]}
        return httpx.Response(201, json={"message": "Credit request submitted", "data": data})


def grant(key: str) -> dict[str, Any]:
    return {
        "idempotency_key": key,
        "provider": "inveterate",
        "customer_id": "cust-1",
        "amount": "12.50",
        "note": "call path",
    }


def measure_calls() -> dict[str, Any]:
    jobs = _first("worker.store.jobs", "worker.store")
    runtime: Any = _first("worker.app.runtime", "worker.runtime")
    scheduler = _first("worker.app.scheduler", "worker.scheduler")
    pipelines = importlib.import_module("worker.pipeline")
    budget = importlib.import_module("worker.budget")
    inveterate = importlib.import_module("worker.providers.inveterate")
    settings = importlib.import_module("worker.settings").get_settings()
    issue_task = importlib.import_module("tasks.issue").issue

    now = time.time()  # the budgets' clock: a minute passes after the warm-up
    store = jobs.JobStore(fakeredis.FakeRedis(decode_responses=True))
    outbox, api = Outbox(), InveterateAPI()
    client = inveterate.InveterateClient(
        "https://inveterate.test",
        SecretStr("bench-key"),
        settings.http_timeout_seconds,
        transport=httpx.MockTransport(api),
    )
    pipeline = pipelines.Pipeline(
        store,
        scheduler.CeleryScheduler(Outbox(), settings.visibility_timeout_seconds),
        lambda _provider: client,
        pipelines.Policy.from_settings(settings),
        budget.Budgets(store.redis, settings, clock=lambda: now).for_provider,
    )
    runtime._pipeline = pipeline  # what the task's ``pipeline()`` returns
    enqueue: Callable[..., Any] = worker.enqueue
    try:
        enqueue(grant("warm-up"), store=store, app=outbox)
        issue_task(**outbox.sent.pop()[1])
        now, api.post_chain = now + 60, []  # the warm-up's POST spent the budget's slot
        with profiled() as producer:
            enqueue(grant("traced"), store=store, app=outbox)
        with profiled() as consumer:
            result = str(issue_task(**outbox.sent.pop()[1]))
    finally:
        runtime._pipeline = None
    if not api.post_chain:
        raise SystemExit(f"the traced issue task sent no POST (it answered {result!r})")
    return {
        "enqueue": {
            "deepest": producer.deepest,
            "at_publish": outbox.chain,
            "functions": len(producer.functions),
        },
        "issue": {
            "result": result,
            "at_post": api.post_chain,
            "deepest": consumer.deepest,
            "functions": len(consumer.functions),
        },
    }


def duplicates(folder: Path) -> int | str | None:
    """Pairs of repeated blocks ``duplicates`` reports (its first line), None without it."""
    if shutil.which("duplicates") is None:
        return None
    done = subprocess.run(
        ["duplicates", "--repo", str(folder), "--most", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    first = done.stdout.splitlines()[0] if done.stdout else done.stderr.strip()
    if "incomplete:" in done.stdout:
        return first + " (incomplete)"
    found = re.match(r"(\d+) pairs? of places", first)
    return int(found.group(1)) if found else 0 if first.startswith("no duplicates") else first


def measure_tree() -> dict[str, Any]:
    package = ROOT / "worker"
    lines = {
        p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines())
        for p in sorted(package.rglob("*.py"))
    }
    core = [p for p in lines if not p.startswith(("worker/sandbox/", "worker/providers/"))]
    return {
        "modules": len(lines),
        "modules_without_sandbox": sum(not p.startswith("worker/sandbox/") for p in lines),
        "modules_without_sandbox_and_providers": len(core),
        "largest": sorted(lines.items(), key=lambda item: -item[1])[:5],
        "duplicates_worker": duplicates(package),
        "duplicates_tree": duplicates(ROOT),
    }


def show_chain(title: str, chain: Chain) -> None:
    print(f"  {title}: {len(chain)} project frames")
    for depth, name in enumerate(chain):
        print(f"    {'  ' * depth}{name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    figures = {"package": worker.__file__, **measure_calls(), "tree": measure_tree()}
    if args.json:
        print(json.dumps(figures, indent=2))
        return

    producer, consumer, tree = figures["enqueue"], figures["issue"], figures["tree"]
    print(f"worker package: {worker.__file__}")
    print("producer: worker.enqueue of one grant")
    show_chain("deepest chain", producer["deepest"])
    show_chain("chain at publish", producer["at_publish"])
    print(f"  distinct project functions called: {producer['functions']}")
    print(f"worker: the issue task to the POST (inveterate), answered {consumer['result']!r}")
    show_chain("chain at the POST", consumer["at_post"])
    print(f"  deepest chain in the whole issue call: {len(consumer['deepest'])} project frames")
    print(f"  distinct project functions called: {consumer['functions']}")
    print(
        f"modules under worker/: {tree['modules']} ({tree['modules_without_sandbox']} without "
        f"sandbox/, {tree['modules_without_sandbox_and_providers']} without sandbox/ and "
        "providers/)"
    )
    print("  largest: " + ", ".join(f"{path} {n}" for path, n in tree["largest"]))
    if tree["duplicates_worker"] is None:
        print("repeated blocks: the duplicates command is not on PATH")
    else:
        print(
            f"repeated blocks (duplicates pairs): worker/ {tree['duplicates_worker']}, "
            f"whole tree {tree['duplicates_tree']}"
        )


if __name__ == "__main__":
    main()
