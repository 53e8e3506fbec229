"""``creditq serve``: one ASGI process (Starlette on uvicorn) for producers that are not Python
and for the people who run creditq.

``api`` is the intake (``/v1``: the producer's ``enqueue`` over HTTP, with bearer tokens),
``health`` the probes (``/healthz``, ``/readyz``), ``openapi`` the API's document, and ``app``
builds the application and runs it. The console and ``/metrics`` are to come (issue 17).
"""
