"""The intake API, ``/v1``: ``enqueue`` and ``enqueue_many`` over HTTP, with the CLI's rules.

The statuses producers know from Stripe's API: 201 created, 200 the same grant again
(nothing sent), 409 the key already holds another grant, 422 a field refused (the CLI's one
line, and the field), 401 without a valid token, 413 a body too large, 404 an unknown key,
503 with ``Retry-After`` while the job store or the broker cannot take it (a failover).
An amount may be a JSON string or number; numbers are read as exact decimals, never floats.
Nothing is written and nothing sent unless the whole request is valid.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from worker.domain.job import Job
from worker.errors import IdempotencyConflict, InvalidGrant, NotReplicated
from worker.producer import enqueue, enqueue_many
from worker.serve.auth import bearer_ok
from worker.store.jobs import JobStore

# A grant is a few hundred bytes: this holds a full batch with room to spare.
MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_BATCH = 1000
KEY_HEADER = "idempotency-key"

# The job store or the broker away for a moment (a failover, a restart; their clients have
# retried already). The producer sends the grant again with the same key: a duplicate if it
# was written (its message is re-driven by the reconciler if it was not sent), else created.
AWAY = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    OperationalError,
)

log = logging.getLogger("creditq.serve")


class Refused(Exception):
    """A request refused before anything is written: its status, line and field."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class JobResponse(JSONResponse):
    """JSON as the CLI's ``--json`` writes it: compact, Decimals as exact strings."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":"), default=_json_default).encode()


def refusal(status: int, message: str, field: str | None = None) -> Response:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JobResponse(body, status_code=status, headers=headers)


async def read_bounded(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is larger than ``limit`` bytes, however it is sent (a
    Content-Length over the limit is refused before a byte is read)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request) -> Any:
    """The body as JSON (numbers as Decimals), at most ``MAX_BODY_BYTES``."""
    body = await read_bounded(request, MAX_BODY_BYTES)
    if body is None:
        raise Refused(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(body, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError):
        raise Refused(400, "the body is not JSON") from None


def with_header_key(raw: Any, header: str | None) -> Mapping[str, Any]:
    """The grant, its key from the body or the ``Idempotency-Key`` header (both: the same)."""
    if not isinstance(raw, dict):
        raise Refused(422, "the body must be a JSON object: a credit grant")
    if header is None:
        return raw
    body_key = raw.get("idempotency_key")
    if body_key is not None and body_key != header:
        raise Refused(422, "differs from the Idempotency-Key header", "idempotency_key")
    return {**raw, "idempotency_key": header}


def job_body(job: Job, created: bool) -> dict[str, Any]:
    return {**job.to_json(), "created": created}


def again_later(message: str) -> Response:
    """A 503 the producer retries after a second, with the same key."""
    answer = refusal(503, message)
    answer.headers["Retry-After"] = "1"
    return answer


class Intake:
    """The ``/v1`` endpoints, over one store and one Celery app."""

    def __init__(self, tokens: list[str], store: JobStore, app: Celery) -> None:
        self.tokens = tokens
        self.store = store
        self.app = app

    async def _guarded(self, request: Request, handle: Any) -> Response:
        if not bearer_ok(request, self.tokens):
            return refusal(401, "a valid bearer token is required")
        try:
            return await handle(request)  # type: ignore[no-any-return]
        except Refused as refused:
            return refusal(refused.status, refused.message, refused.field)
        except InvalidGrant as exc:
            return refusal(422, str(exc), exc.field or None)
        except IdempotencyConflict as exc:
            return refusal(409, str(exc), "idempotency_key")
        except NotReplicated as exc:  # written, not yet safe from a failover: send it again
            return again_later(str(exc))
        except AWAY as exc:
            # the type only: a broker's message may spell its URL
            log.warning(
                "intake: 503, the job store or the broker did not answer (%s)", type(exc).__name__
            )
            return again_later(
                "the job store or the broker did not answer (a failover?): send it again "
                "with the same key"
            )

    async def create(self, request: Request) -> Response:
        return await self._guarded(request, self._create)

    async def create_many(self, request: Request) -> Response:
        return await self._guarded(request, self._create_many)

    async def show(self, request: Request) -> Response:
        return await self._guarded(request, self._show)

    async def _create(self, request: Request) -> Response:
        grant = with_header_key(await read_json(request), request.headers.get(KEY_HEADER))
        result = await run_in_threadpool(enqueue, grant, store=self.store, app=self.app)
        return JobResponse(job_body(result.job, result.created), 201 if result.created else 200)

    async def _create_many(self, request: Request) -> Response:
        raw = await read_json(request)
        grants = raw.get("grants") if isinstance(raw, dict) else None
        if not isinstance(grants, list) or not {"grants"} <= set(raw) <= {"grants", "batch"}:
            raise Refused(
                422,
                'the body must be {"grants": [...]}, a list of credit grants, and an optional '
                '"batch" name',
            )
        if len(grants) > MAX_BATCH:
            raise Refused(422, f"at most {MAX_BATCH} grants in one batch", "grants")
        for index, grant in enumerate(grants):
            if not isinstance(grant, dict):
                raise Refused(422, "must be a JSON object: a credit grant", f"grants[{index}]")
        batch = raw.get("batch")
        if batch is not None and not isinstance(batch, str):
            raise Refused(422, "batch: must be a string", "batch")
        results = await run_in_threadpool(
            enqueue_many, grants, store=self.store, app=self.app, batch=batch
        )
        created = sum(1 for r in results if r.created)
        body = {"created": created, "grants": [job_body(r.job, r.created) for r in results]}
        return JobResponse(body, 201 if created else 200)

    async def _show(self, request: Request) -> Response:
        key = request.path_params["key"]
        job = await run_in_threadpool(self.store.get, key)
        if job is None:
            raise Refused(404, f"no job with idempotency_key {key!r}")
        return JobResponse(job.to_json())
