"""The console in process: its login, its pages, and the replay and purge forms with their
CSRF token, confirmation and origin check."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from tests.fixtures.celery import PublishRecorder
from tests.fixtures.grants import make_grant
from worker.domain.states import DlqReason, JobState
from worker.serve.app import build_app
from worker.serve.console import CSP, csrf_token
from worker.settings import Settings
from worker.store.jobs import JobStore

LOGIN = ("ops", "console-password-1")
LOGINS = {"ops": "console-password-1", "viewer": "another-password"}


@pytest.fixture
def console(store: JobStore, recorder: PublishRecorder) -> TestClient:
    settings = Settings(
        console_basic_auth=SecretStr("ops:console-password-1,viewer:another-password")
    )
    client = TestClient(build_app(settings, store, recorder), follow_redirects=False)  # type: ignore[arg-type]
    client.auth = LOGIN
    return client


def dead(store: JobStore, key: str, customer: str = "c1") -> None:
    store.create(make_grant(key, customer_id=customer))
    store.transition(
        key, JobState.DEAD, reason="attempts exhausted", dlq_reason=DlqReason.EXHAUSTED
    )


def form(key: str, action: str, **extra: str) -> dict[str, str]:
    return {
        "key": key,
        "action": action,
        "confirm": "yes",
        "csrf": csrf_token("ops", LOGINS),
        **extra,
    }


def test_every_page_needs_the_login_and_sends_a_strict_policy(console: TestClient) -> None:
    for path in ("/", "/dlq", "/jobs/k", "/search?q=k", "/static/console.css"):
        assert console.get(path, auth=("ops", "wrong")).status_code == 401, path
    page = console.get("/")
    assert page.status_code == 200 and page.headers["Content-Security-Policy"] == CSP
    assert "script" not in CSP and "console-password-1" not in page.text


def test_the_overview_counts_states_dead_letters_and_alarms(
    console: TestClient, store: JobStore
) -> None:
    dead(store, "d1")
    store.create(make_grant("q1"))
    store.raise_alarm("q1", {"kind": "duplicate", "refs": ["r"]}, 1.0)
    text = console.get("/").text
    assert '<span class="count">1</span><span>dead</span>' in text
    assert '<span class="count">1</span><span>queued</span>' in text
    assert "1 job(s) with a duplicate credit" in text
    assert '<a href="/dlq?reason=exhausted">exhausted</a></td><td>1</td>' in text
    inveterate = text.split("<tr><td>inveterate</td>")[1].split("</tr>")[0]
    assert '<td class="state-queued">1</td>' in inveterate
    assert '<td class="state-dead">1</td>' in inveterate
    chargebee = text.split("<tr><td>chargebee</td>")[1].split("</tr>")[0]
    assert '<td class="state-queued">0</td>' in chargebee
    assert "<tr><td>inveterate</td><td>interactive</td><td>1</td>" in text  # q1 waits


def test_a_dead_letter_is_found_listed_and_replayed_from_its_page(
    console: TestClient, store: JobStore, recorder: PublishRecorder
) -> None:
    dead(store, "d1", customer="cust-9")
    assert console.get("/search", params={"q": "d1"}).headers["location"] == "/jobs/d1"
    assert "/jobs/d1" in console.get("/search", params={"q": "cust-9"}).text
    listing = console.get("/dlq", params={"reason": "exhausted"}).text
    assert 'value="d1"' in listing and csrf_token("ops", LOGINS) in listing
    assert "attempts exhausted" in console.get("/jobs/d1").text
    done = console.post("/dlq/act", data=form("d1", "replay"))
    assert done.status_code == 303 and done.headers["location"].startswith("/jobs/d1?done=")
    job = store.get("d1")
    assert job is not None and job.state is JobState.QUEUED and len(recorder.sent) == 1


def test_a_form_without_its_token_confirmation_or_origin_changes_nothing(
    console: TestClient, store: JobStore, recorder: PublishRecorder
) -> None:
    dead(store, "d1")
    refused = [
        console.post("/dlq/act", data=form("d1", "replay", csrf="forged")),
        console.post("/dlq/act", data={**form("d1", "replay"), "confirm": ""}),
        console.post(
            "/dlq/act", data=form("d1", "purge"), headers={"Origin": "https://evil.example"}
        ),
        console.post("/dlq/act", data=form("d1", "replay"), auth=("ops", "wrong")),
        console.post("/dlq/act", data=form("d1", "replay"), auth=("viewer", "another-password")),
    ]
    assert [r.status_code for r in refused] == [403, 400, 403, 401, 403]
    job = store.get("d1")
    assert job is not None and job.state is JobState.DEAD and recorder.sent == []


def test_purge_deletes_only_dead_letters(console: TestClient, store: JobStore) -> None:
    dead(store, "d1")
    store.create(make_grant("live"))
    answer = console.post(
        "/dlq/act",
        data={**form("d1", "purge"), "key": ["d1", "live"]},  # type: ignore[dict-item]
    )
    assert answer.status_code == 303
    assert store.get("d1") is None and store.get("live") is not None
    assert "live: not_in_dlq" in console.get(answer.headers["location"]).text


@pytest.mark.parametrize("pairs", ["ops", "ops:", ":pw", "ops:pw,", "ops:pw,viewer"])
def test_a_console_login_without_both_parts_is_refused(pairs: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="user:password pairs, each with both parts"):
        Settings(console_basic_auth=SecretStr(pairs))
