"""The console in a real browser: Chromium, driven by Playwright, logs in, finds a
dead-lettered job, replays it from its page, and sees it confirmed by a real worker through
the sandbox; and the overview fits a phone's width without a script on the page."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from pydantic import SecretStr

from tests.fixtures.exactly_once import assert_exactly_once
from tests.fixtures.serve import served
from tests.fixtures.workers import Fleet, wait_until
from worker.domain.states import JobState
from worker.producer import enqueue_many
from worker.sandbox import Sandbox
from worker.settings import Settings
from worker.store.jobs import JobStore

LOGIN = ("ops", "browser-test-password")
CHROMIUM = next(
    (
        p
        for p in (
            os.environ.get("CREDITQ_CHROMIUM"),
            shutil.which("chromium"),
            shutil.which("chromium-browser"),
        )
        if p
    ),
    None,
)


@pytest.fixture
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine (apt-get install -y chromium; .ci/run does)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def test_an_operator_replays_a_dead_letter_from_the_console_and_sees_it_confirmed(
    browser: Any,
    real_store: JobStore,
    celery_app: Celery,
    make_sandbox: Callable[..., Sandbox],
    fleet_factory: Callable[..., Fleet],
    tmp_path: Path,
) -> None:
    sandbox = make_sandbox()
    sandbox.mark_customer("m-moved", 404)  # the provider does not know the customer yet
    fleet = fleet_factory(sandbox)
    fleet.start_worker(concurrency=2)
    grant = {
        "idempotency_key": "console-1",
        "provider": "inveterate",
        "customer_id": "m-moved",
        "amount": "12.50",
    }
    enqueue_many([grant], store=real_store, app=celery_app)

    def state() -> JobState | None:
        job = real_store.get("console-1", history=False)
        return job.state if job else None

    assert wait_until(lambda: state() is JobState.REJECTED, timeout=30), fleet.log_text()[-2000:]
    sandbox.mark_customer("m-moved", None)  # fixed: the customer exists now

    settings = Settings(console_basic_auth=SecretStr(":".join(LOGIN)))
    with served(real_store, celery_app, settings) as base:
        context = browser.new_context(http_credentials={"username": LOGIN[0], "password": LOGIN[1]})
        page = context.new_page()
        page.goto(f"{base}/")
        assert page.locator(".state-rejected .count").inner_text() == "1"
        page.fill("input[name=q]", "console-1")
        page.click("text=find")
        page.wait_for_url(f"{base}/jobs/console-1")
        assert "Member m-moved not found" in page.content() or "404" in page.content()
        page.check("input[name=confirm]")
        page.click("button[value=replay]")
        page.wait_for_url(f"{base}/jobs/console-1?done=*")
        assert "console-1: replayed" in page.locator(".flash").inner_text()

        def confirmed_on_the_page() -> bool:
            page.reload()
            return page.locator("h1 small").inner_text() == "confirmed"

        assert wait_until(confirmed_on_the_page, timeout=30, interval=0.5), fleet.log_text()[-2000:]
        assert "seen in the listing" in page.content()
        assert_exactly_once(real_store, sandbox, ["console-1"])

        phone = browser.new_context(
            http_credentials={"username": LOGIN[0], "password": LOGIN[1]},
            viewport={"width": 390, "height": 844},
        )
        small = phone.new_page()
        small.goto(f"{base}/")
        assert small.evaluate("document.documentElement.scrollWidth") <= 390
        assert small.evaluate("document.scripts.length") == 0
        if os.environ.get("CONSOLE_SCREENSHOT"):  # the README's picture
            page.goto(f"{base}/")
            page.set_viewport_size({"width": 1100, "height": 720})
            page.screenshot(path=os.environ["CONSOLE_SCREENSHOT"], full_page=True)
        context.close()
        phone.close()
