"""Flower's configuration file for the Procfile and compose: no login, no Flower.

Flower serves its pages and its API (every task with its arguments, the workers, revoke
and shutdown buttons) to whoever reaches its port, on every interface, unless an
authentication option is set; a Procfile runner sets none. The Procfile starts Flower
with ``--conf=worker/app/flowerconfig.py`` (a path from the project root, where Procfile
runners and the image's ``WORKDIR`` start), and Flower executes this file before it
listens: without a login it stops with one line instead.

Accepted: ``FLOWER_BASIC_AUTH=user:password`` (several separated by commas), read by Flower
from the environment so the password stays out of the process list, or Flower's OAuth
(``FLOWER_AUTH_PROVIDER`` with ``FLOWER_AUTH``, the allowed e-mail pattern). ``/metrics``
and ``/healthcheck`` stay open, as Flower serves them: keep the port on a private network.

Flower copies every top-level name defined here that matches one of its options into its
settings, so this file defines none: its only effect is the refusal.
"""

import os as _os


def _login_problem(environ: dict[str, str]) -> str | None:
    """Why Flower must not start with this environment, or None when a login is set."""
    if environ.get("FLOWER_AUTH_PROVIDER") and environ.get("FLOWER_AUTH"):
        return None
    entries = [e.strip() for e in environ.get("FLOWER_BASIC_AUTH", "").split(",") if e.strip()]
    if not entries:
        return (
            "flower: set FLOWER_BASIC_AUTH=user:password (several separated by commas) or "
            "FLOWER_AUTH_PROVIDER with FLOWER_AUTH: creditq's Flower does not start without "
            "a login"
        )
    for entry in entries:
        user, _, password = entry.partition(":")
        if not user or not password:
            return "flower: FLOWER_BASIC_AUTH takes user:password pairs, each with both parts"
    return None


_problem = _login_problem(dict(_os.environ))
if _problem:
    raise SystemExit(_problem)
