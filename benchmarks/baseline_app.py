"""The baseline a user writes first: one Celery task that POSTs with autoretry, never confirms.

Run by benchmarks/throughput.py with the same Redis, pool, concurrency and sandbox as creditq.
It has no idempotency, no reconciliation and no confirmation: it is the speed to beat,
not a design to copy.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from typing import Any

import httpx
from celery import Celery

app = Celery("baseline", broker=os.environ["BASELINE_BROKER_URL"])
# The same delivery settings as creditq, task events included: a deployment watched in
# Flower turns them on, and each task then publishes three events. BASELINE_TASK_EVENTS=0
# turns them off, for the baseline as written without Flower (throughput.py runs both).
TASK_EVENTS = os.environ.get("BASELINE_TASK_EVENTS", "1") != "0"
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    worker_send_task_events=TASK_EVENTS,
)
# Only for throughput.py --tuned-baseline: the baseline given creditq's worker transport
# (worker/app/broker.py), to show how much of creditq's rate that transport alone buys.
if os.environ.get("BASELINE_BROKER_TRANSPORT"):
    app.conf.broker_transport = os.environ["BASELINE_BROKER_TRANSPORT"]

_client = httpx.Client(base_url=os.environ["BASELINE_SANDBOX_URL"], timeout=10.0)
_KEYS = {
    "inveterate": os.environ.get("BASELINE_INVETERATE_KEY", ""),
    "chargebee": os.environ.get("BASELINE_CHARGEBEE_KEY", ""),
}


def _post(grant: dict[str, Any]) -> None:
    if grant["provider"] == "inveterate":
        response = _client.post(
            f"/v2.0/admin/members/{grant['customer_id']}/credits",
            # The amount is already an exact decimal string: written as a JSON number as is.
            content=f'{{"amount": {grant["amount"]}, "note": {json.dumps(grant.get("note"))}}}',
            headers={
                "X-Inveterate-Api-Key": _KEYS["inveterate"],
                "Content-Type": "application/json",
            },
        )
    else:
        cents = int(Decimal(grant["amount"]) * 100)
        response = _client.post(
            "/api/v2/promotional_credits/add",
            data={
                "customer_id": grant["customer_id"],
                "amount": cents,
                "currency_code": "USD",
                "description": grant.get("note") or "credit",
            },
            auth=(_KEYS["chargebee"], ""),
        )
    response.raise_for_status()


RETRY: dict[str, Any] = {
    "autoretry_for": (httpx.HTTPError,),
    "retry_backoff": True,
    "max_retries": 12,
}
# Celery's rate_limit holds per worker process: three workers send three times this.
RATE_LIMIT = os.environ.get("BASELINE_RATE_LIMIT") or None


@app.task(name="baseline.post_credit", **RETRY)
def post_credit(**grant: Any) -> None:
    _post(grant)


@app.task(name="baseline.post_inveterate", rate_limit=RATE_LIMIT, **RETRY)
def post_inveterate(**grant: Any) -> None:
    _post(grant)


@app.task(name="baseline.post_chargebee", rate_limit=RATE_LIMIT, **RETRY)
def post_chargebee(**grant: Any) -> None:
    _post(grant)
