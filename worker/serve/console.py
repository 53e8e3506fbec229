"""The operator console: server-rendered pages (Jinja2, no build step, no CDN) behind the
console's basic auth, as Flower's login works.

- ``/``: jobs per state, dead letters per reason and per provider, the budgets, alarms;
- ``/search?q=``: a job by key, or a customer's waiting and dead-lettered jobs;
- ``/dlq``: dead letters with filters and paging; replay and purge are POST forms that carry
  a CSRF token (an HMAC of the user under the console's passwords, the same in every
  ``serve`` process) and a ticked confirmation, and are refused from another origin;
- ``/jobs/{key}``: the job and its whole history.

Every page is sent with a Content-Security-Policy that allows nothing but this site's own
stylesheet and forms: no script runs, no frame embeds it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from celery import Celery
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from worker.budget import Budgets
from worker.domain.grant import Provider
from worker.domain.job import iso
from worker.domain.states import DlqReason, JobState
from worker.lanes import lanes_of
from worker.serve.api import read_bounded
from worker.serve.auth import basic_user, login_required
from worker.store import dlq
from worker.store.jobs import JobStore

PAGE = 50
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def csrf_token(user: str, logins: dict[str, str]) -> str:
    """The user's form token: derived from the console's passwords, so it is the same in every
    process and unknown to a page on another site that cannot read ours."""
    key = hashlib.sha256(json.dumps(logins, sort_keys=True).encode()).digest()
    return hmac.new(key, f"creditq-console:{user}".encode(), hashlib.sha256).hexdigest()


# A form of the console names at most a page of keys: a few kilobytes.
MAX_FORM_BYTES = 64 * 1024


async def read_form(request: Request) -> dict[str, list[str]]:
    """An urlencoded form (what the console's forms send), bounded; no multipart parser. An
    oversized one reads as empty, so it carries no token and is refused."""
    body = await read_bounded(request, MAX_FORM_BYTES)
    if body is None:
        return {}
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


def first(form: dict[str, list[str]], name: str) -> str:
    return (form.get(name) or [""])[0]


def same_origin(request: Request) -> bool:
    """A form post from our own pages: no Origin header (old browsers) or our host in it."""
    origin = request.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == request.headers.get("host")


class Console:
    def __init__(
        self, logins: dict[str, str], store: JobStore, app: Celery, budgets: Budgets
    ) -> None:
        self.logins = logins
        self.store = store
        self.app = app
        self.budgets = budgets
        self.templates = Environment(
            loader=PackageLoader("worker.serve", "templates"),
            autoescape=select_autoescape(["html"]),
        )

    def routes(self) -> list[Route]:
        return [
            Route("/", self._guard(self.overview)),
            Route("/search", self._guard(self.search)),
            Route("/dlq", self._guard(self.dead_letters)),
            Route("/dlq/act", self._guard(self.act), methods=["POST"]),
            Route("/jobs/{key:path}", self._guard(self.job)),
            Route("/static/console.css", self._guard(self.stylesheet)),
        ]

    def _guard(self, page: Any) -> Any:
        async def guarded(request: Request) -> Response:
            user = basic_user(request, self.logins)
            if user is None:
                return login_required(self.logins, HEADERS)
            request.state.user = user
            return await page(request)  # type: ignore[no-any-return]

        return guarded

    def _page(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        context.setdefault("flash", request.query_params.get("done"))
        context.setdefault("csrf", csrf_token(request.state.user, self.logins))
        html = self.templates.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status, headers=HEADERS)

    async def stylesheet(self, _: Request) -> Response:
        css = files("worker.serve").joinpath("static/console.css").read_text()
        return Response(css, media_type="text/css", headers=HEADERS)

    async def overview(self, request: Request) -> Response:
        def read() -> dict[str, Any]:
            counts = self.store.count_by_state()
            budgets = self.budgets.snapshots()
            lanes = lanes_of(self.store.lanes(), budgets, time.time())
            for b in budgets:
                b["dead"] = dlq.dlq_depth(self.store, provider=b["provider"])
            return {
                "states": [(s.value, counts.get(s.value, 0)) for s in JobState],
                "by_provider": self.store.count_by_provider(),
                "dlq": [(r.value, dlq.dlq_depth(self.store, reason=r.value)) for r in DlqReason],
                "budgets": budgets,
                "lanes": lanes,
                "alarms": self.store.alarms(),
            }

        return self._page(request, "index.html", **await run_in_threadpool(read))

    async def search(self, request: Request) -> Response:
        query = request.query_params.get("q", "").strip()
        if not query:
            return RedirectResponse("/", status_code=303)

        def find() -> list[Any]:
            job = self.store.get(query, history=False)
            if job is not None:
                return [job]
            keys = [k for p in Provider for k in self.store.pending(p.value, query)]
            dead = dlq.list_dlq(self.store, limit=1000)
            keys += [j.idempotency_key for j in dead if j.customer_id == query]
            return [j for j in self.store.get_many(list(dict.fromkeys(keys)), history=False) if j]

        jobs = await run_in_threadpool(find)
        if len(jobs) == 1 and jobs[0].idempotency_key == query:
            return RedirectResponse(f"/jobs/{quote(query, safe='')}", status_code=303)
        return self._page(request, "search.html", jobs=jobs, query=query)

    async def dead_letters(self, request: Request) -> Response:
        provider = request.query_params.get("provider") or None
        reason = request.query_params.get("reason") or None
        try:
            page = max(int(request.query_params.get("page", "0")), 0)
        except ValueError:
            page = 0
        if provider not in (None, *(p.value for p in Provider)) or reason not in (
            None,
            *(r.value for r in DlqReason),
        ):
            return PlainTextResponse("creditq: no such provider or reason\n", 400, HEADERS)

        def read() -> tuple[list[Any], int]:
            jobs = dlq.list_dlq(self.store, provider, reason, limit=(page + 1) * PAGE + 1)
            return jobs, dlq.dlq_depth(self.store, provider, reason)

        jobs, depth = await run_in_threadpool(read)
        shown = jobs[page * PAGE : (page + 1) * PAGE]

        def page_url(n: int) -> str:
            query = {k: v for k, v in (("provider", provider), ("reason", reason)) if v}
            return "/dlq?" + urlencode({**query, "page": n})

        return self._page(
            request,
            "dlq.html",
            jobs=shown,
            depth=depth,
            more=len(jobs) > (page + 1) * PAGE,
            page=page,
            page_url=page_url,
            provider=provider,
            reason=reason,
            providers=[p.value for p in Provider],
            reasons=[r.value for r in DlqReason],
        )

    async def act(self, request: Request) -> Response:
        form = await read_form(request)
        token = first(form, "csrf")
        expected = csrf_token(request.state.user, self.logins)
        if not same_origin(request) or not hmac.compare_digest(token, expected):
            return PlainTextResponse("creditq: refused: not a form of this console\n", 403, HEADERS)
        keys = form.get("key", [])
        action = first(form, "action")
        if first(form, "confirm") != "yes" or not keys or action not in ("replay", "purge"):
            return PlainTextResponse(
                "creditq: tick the confirmation, choose jobs and replay or purge\n", 400, HEADERS
            )
        if action == "replay":
            outcomes = await run_in_threadpool(dlq.replay, self.store, keys, self.app)
            words = [f"{o.idempotency_key}: {o.result.value}" for o in outcomes]
        else:
            purged = await run_in_threadpool(dlq.purge, self.store, keys)
            words = [f"{o.idempotency_key}: {o.result.value}" for o in purged]
        back = "/dlq" if len(keys) > 1 or action == "purge" else f"/jobs/{quote(keys[0], safe='')}"
        return RedirectResponse(f"{back}?{urlencode({'done': '; '.join(words)})}", 303)

    async def job(self, request: Request) -> Response:
        key = request.path_params["key"]
        job = await run_in_threadpool(self.store.get, key)
        if job is None:
            return self._page(request, "search.html", status=404, jobs=[], query=key)
        grant = job.grant_fields
        fields = [
            ("state", job.state.value),
            ("provider", job.provider),
            ("customer", job.customer_id),
            ("amount", f"{grant.get('amount')} {grant.get('currency_code') or ''}"),
            ("note", grant.get("note") or ""),
            ("attempts", job.attempts),
            ("dead-letter reason", job.extra.get("dlq_reason", "")),
            ("last error", (job.last_error or {}).get("message", "")),
            ("provider reference", job.provider_ref or ""),
            ("created", iso(job.created_at)),
            ("in this state since", iso(job.state_at)),
        ]
        return self._page(request, "job.html", job=job, fields=fields)
