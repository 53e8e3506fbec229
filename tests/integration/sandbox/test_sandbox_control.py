"""The control API under /_sandbox/ and the foreground CLI (python -m worker.sandbox)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from decimal import Decimal

import httpx
import pytest

from tests.fixtures.paths import ROOT
from worker.sandbox import Sandbox, cli


def test_faults_customers_and_config_are_steerable_over_http(
    sandbox: Sandbox, sandbox_chargebee_http: httpx.Client
) -> None:
    control = sandbox.client(base_url=sandbox.url + "/_sandbox")
    fault = {"kind": "error_after", "provider": "chargebee", "operation": "submit", "times": 1}
    assert control.post("/faults", json=fault).json()["queued"][0]["kind"] == "error_after"
    assert (
        control.post("/faults", json={"kind": "error_before", "probability": 0.5}).status_code
        == 200
    )
    assert len(control.get("/faults").json()["probabilities"]) == 1
    assert control.delete("/faults").json()["queued"] == []
    control.post("/faults", json=fault)

    form = {"customer_id": "c", "description": "d", "amount": "100"}
    assert (
        sandbox_chargebee_http.post("/api/v2/promotional_credits/add", data=form).status_code == 500
    )

    control.post("/customers", json={"customer_id": "c", "status": 404, "provider": "chargebee"})
    assert (
        sandbox_chargebee_http.post("/api/v2/promotional_credits/add", data=form).status_code == 404
    )
    control.post("/customers", json={"customer_id": "c", "status": None, "provider": "chargebee"})
    assert control.get("/customers").json() == {"customers": []}

    config = control.post("/config", json={"lag": 0.5, "page_size": 3}).json()
    assert config["lag"] == 0.5 and config["page_size"] == 3
    assert config["chargebee_key"] == "***"  # keys never leave the sandbox
    assert sandbox.options.page_size == 3

    ledger = control.get("/ledger", params={"provider": "chargebee"}).json()["entries"]
    assert [entry["amount"] for entry in ledger] == ["1.00"]
    assert ledger[0]["visible"] is True

    stats = control.get("/stats").json()["chargebee"]
    assert stats["faults"] == {"error_after": 1} and stats["status"] == {"500": 1, "404": 1}

    assert control.post("/reset").status_code == 200
    assert control.get("/ledger").json() == {"entries": []}
    assert control.get("/stats").json()["chargebee"]["calls"] == {}
    assert sandbox.options.page_size == 3  # reset keeps the options


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/faults", {"kind": "explode"}),
        ("POST", "/faults", {"kind": "error_after", "times": 1, "probability": 0.5}),
        ("POST", "/faults", {"kind": "error_after", "operation": "nope"}),
        ("POST", "/faults", {"kind": "lagged"}),
        ("POST", "/faults", {"kind": "lagged", "lag": 1, "then": "explode"}),
        ("POST", "/faults", {"kind": "error_after", "lag": 1}),
        ("POST", "/faults", {"kind": "error_after", "customer_id": ""}),
        ("POST", "/customers", {"customer_id": "c", "status": 418}),
        ("POST", "/customers", {"status": 400}),
        ("POST", "/config", {"lag": -1}),
        ("POST", "/config", {"no_such_option": 1}),
    ],
)
def test_bad_control_requests_are_400(
    sandbox: Sandbox, method: str, path: str, body: dict[str, object]
) -> None:
    with sandbox.client() as client:
        response = client.request(method, "/_sandbox" + path, json=body)
    assert response.status_code == 400 and response.json()["error"]


def test_unknown_paths_are_404(sandbox: Sandbox) -> None:
    with sandbox.client("inveterate") as client:
        assert client.get("/_sandbox/nothing").status_code == 404
        assert client.get("/elsewhere").status_code == 404
        assert client.delete("/v2.0/admin/members/c/credits").status_code == 404


def test_stop_frees_the_port_and_cuts_held_replies() -> None:
    sandbox = Sandbox(hold=30).start()
    sandbox.fail_next("timeout_after", late=True)
    with sandbox.client("inveterate", timeout=httpx.Timeout(5, read=0.1)) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post("/v2.0/admin/members/c/credits", json={"amount": 1})
        started = time.monotonic()
        sandbox.stop()
        assert time.monotonic() - started < 5  # the 30 s hold did not delay the stop
        with pytest.raises(httpx.ConnectError):
            client.get("/_sandbox/stats")
    assert sandbox.entries()[0].amount == Decimal(1)


def test_cli_serves_until_sigterm() -> None:
    env = {**os.environ, "CREDITQ_INVETERATE_API_KEY": "from-env"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker.sandbox",
            "--port",
            "0",
            "--lag",
            "0",
            "--seed",
            "3",
            "--fail-after",
            "0.1",
            "--rate-limit",
            "100",
            "--no-echo-notes",
            "--oldest-first",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("creditq sandbox listening on http://127.0.0.1:")
        url = first.rsplit(" ", 1)[1].strip()
        with httpx.Client(base_url=url, verify=False, timeout=5) as client:
            response = client.get("/v2.0/merchant", headers={"X-Inveterate-Api-Key": "from-env"})
            assert response.status_code == 200
            config = client.get("/_sandbox/config").json()
        assert config["echo_notes"] is False and config["rate_limit"] == 100
        assert config["oldest_first"] is True
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "from-env" not in first + out + err  # the key is never printed


def test_cli_refuses_a_bad_probability(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--fail-after", "2"])
    assert exit_info.value.code == 2 and "between 0 and 1" in capsys.readouterr().err


def test_admin_credits_fill_a_deep_listing_above_ours(sandbox: Sandbox) -> None:
    with sandbox.client("chargebee") as api, sandbox.client() as control:
        form = {"customer_id": "ours", "description": "d", "amount": "500"}
        assert api.post("/api/v2/promotional_credits/add", data=form).status_code == 200
        response = control.post(
            "/_sandbox/credits",
            json={"provider": "chargebee", "customer_id": "others", "amount": "1.00", "count": 130},
        )
        assert response.status_code == 200, response.text
        created = response.json()["entries"]
        assert len(created) == 130 and created[0]["description"] == "Manual credit"
        assert {entry["origin"] for entry in created} == {"admin"}
        offset, pages, customers = None, 0, []
        while True:
            params = {"limit": "100"} | ({"offset": offset} if offset else {})
            body = api.get("/api/v2/promotional_credits", params=params).json()
            customers += [item["promotional_credit"]["customer_id"] for item in body["list"]]
            pages += 1
            offset = body.get("next_offset")
            if offset is None:
                break
    assert pages == 2 and customers[-1] == "ours" and customers.count("others") == 130
    assert sandbox.stats()["chargebee"]["calls"] == {"submit": 1, "list": 2}  # admin: no calls


def test_ledger_tells_our_credits_from_the_admins(sandbox: Sandbox) -> None:
    marker_note = "[cq-0011223344556677]"
    with sandbox.client("inveterate") as api, sandbox.client() as control:
        api.post("/v2.0/admin/members/m/credits", json={"amount": 5, "note": marker_note})
        credit = {"provider": "inveterate", "customer_id": "m", "amount": "5", "note": marker_note}
        [admin] = control.post("/_sandbox/credits", json=credit).json()["entries"]
        assert admin["marker"] == "cq-0011223344556677" and admin["amount"] == "5"
        listed = api.get("/v2.0/admin/members/m/credits").json()["data"]["credits"]
        assert [entry["note"] for entry in listed] == [marker_note] * 2  # alike in listings
        ledger = control.get("/_sandbox/ledger").json()["entries"]
        assert [entry["origin"] for entry in ledger] == ["api", "admin"]
        ours = control.get("/_sandbox/ledger", params={"origin": "api"}).json()["entries"]
    assert len(ours) == 1 and ours[0]["marker"] == "cq-0011223344556677"
    assert [entry.origin for entry in sandbox.entries(origin="admin")] == ["admin"]


def test_admin_credit_with_lag_shows_late(sandbox: Sandbox) -> None:
    [entry] = sandbox.add_credit("chargebee", "c", "2.00", description="refund", lag=0.3)
    assert entry.origin == "admin" and entry.description == "refund"
    with sandbox.client("chargebee") as api:
        listing = "/api/v2/promotional_credits"
        assert api.get(listing).json()["list"] == []
        assert sandbox.wait_for(lambda: bool(api.get(listing).json()["list"]), timeout=5)


@pytest.mark.parametrize(
    "body",
    [
        {"customer_id": "c", "amount": "1"},  # no provider
        {"provider": "inveterate", "amount": "1"},  # no customer
        {"provider": "inveterate", "customer_id": "c"},  # no amount
        {"provider": "inveterate", "customer_id": "c", "amount": "zero"},
        {"provider": "inveterate", "customer_id": "c", "amount": True},
        {"provider": "inveterate", "customer_id": "c", "amount": "1", "count": 0},
        {"provider": "inveterate", "customer_id": "c", "amount": "1", "count": "2"},
        {"provider": "inveterate", "customer_id": "c", "amount": "1", "lag": "soon"},
        {"provider": "inveterate", "customer_id": "c", "amount": "1", "note": 5},
        {"provider": "inveterate", "customer_id": "c", "amount": "1", "colour": "red"},
        {"provider": "chargebee", "customer_id": "c", "amount": "0.001"},
    ],
)
def test_bad_admin_credits_are_400_and_write_nothing(
    sandbox: Sandbox, body: dict[str, object]
) -> None:
    with sandbox.client() as control:
        response = control.post("/_sandbox/credits", json=body)
    assert response.status_code == 400 and response.json()["error"]
    assert sandbox.entries() == []


def test_a_lagged_fault_is_scriptable_over_http(sandbox: Sandbox) -> None:
    fault = {"kind": "lagged", "lag": 6.5, "then": "timeout_after", "hold": 0.05, "late": True}
    with sandbox.client() as control:
        [queued] = control.post("/_sandbox/faults", json=fault).json()["queued"]
    assert (queued["operation"], queued["lag"], queued["then"]) == ("submit", 6.5, "timeout_after")
    with sandbox.client("inveterate") as api:
        assert api.post("/v2.0/admin/members/c/credits", json={"amount": 1}).status_code == 201
    [entry] = sandbox.entries()
    assert entry.visible_at - entry.created_at == pytest.approx(6.5)
