"""``creditq serve``: one ASGI process (Starlette on uvicorn) for producers that are not Python
and for the people who run creditq.

``api`` is the intake (``/v1``: the producer's ``enqueue`` over HTTP, with bearer tokens),
``health`` the probes (``/healthz``, ``/readyz``), ``openapi`` the API's document, ``metrics``
the Prometheus figures, ``console`` the operator's pages (``templates/``, ``static/``),
``auth`` the tokens and logins, and ``app`` builds the application and runs it.
"""
