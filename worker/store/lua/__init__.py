"""creditq's Lua scripts, one per ``.lua`` file in this package, and the one loader for them.

A script runs alone on the Redis server and cannot call another script, so a helper
several scripts need (``move.lua``, ``dlq.lua``, ``budget_turn.lua``...) must be part of
each script's text. Rather than concatenate strings in Python, a file names the helpers it
calls in its header comment::

    -- uses: move.lua, budget_turn.lua

and ``source`` puts each helper (after the helpers *it* uses) once in front of the file's
own text, in the order the header lists them. Helpers define ``local`` functions only, so
the composed text is one Lua chunk whose helpers are in scope for the script below them.

``script`` registers a composed script with a Redis client once per client and returns
a ``Script``: calling it sends EVALSHA, and SCRIPT LOAD only when the server does not know
the script yet (redis-py's own fallback), so each script's text crosses the wire once per
server, not once per call; a second NOSCRIPT right after the load (a failover) is sent
again on fresh connections (``Script.__call__``).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Sequence
from functools import cache
from importlib.resources import files
from typing import Any
from weakref import WeakKeyDictionary

import redis
from redis.client import Pipeline
from redis.commands.core import Script as RedisScript
from redis.exceptions import NoScriptError
from redis.typing import EncodableT, KeyT

_USES = re.compile(r"^--\s*uses:\s*(.*)$")


# Pauses before the script is loaded and sent again, after a second NOSCRIPT in a row.
RELOAD_PAUSES_SECONDS = (0.05, 0.2, 0.5)


class Script(RedisScript):
    """redis-py's script, which also survives the moment a failover moves it between servers.

    redis-py answers NOSCRIPT with SCRIPT LOAD and EVALSHA once more, and raises a second
    NOSCRIPT. In ``benchmarks/failover.py`` two workers' tasks failed on one, as the
    Sentinels moved the master: the load and the EVALSHA had reached different servers (a
    new master starts with an empty cache, as Redis 7 replicates no script, and a replica
    answers NOSCRIPT before it would say READONLY). So a second NOSCRIPT drops the idle
    connections (a Sentinel pool asks the Sentinels for the master again), pauses, and loads
    and sends the script once more, a few times. Nothing ran where NOSCRIPT was answered,
    so sending again is safe.
    """

    def __call__(
        self,
        keys: Sequence[KeyT] | None = None,
        args: Iterable[EncodableT] | None = None,
        client: Any = None,
    ) -> Any:
        target: Any = client if client is not None else self.registered_client
        for pause in (*RELOAD_PAUSES_SECONDS, None):
            try:
                return super().__call__(keys, args, client)
            except NoScriptError:
                if pause is None or isinstance(target, Pipeline):
                    raise  # a pipeline sends what it queued as one batch; its caller retries
                target.connection_pool.disconnect(inuse_connections=False)
                time.sleep(pause)
        raise AssertionError("unreachable: the last pass returns or raises")


def execute(pipe: Pipeline) -> list[Any]:
    """``pipe.execute()`` for a pipeline that runs scripts, sent once more when the server
    knew none of them: redis-py loads a pipeline's scripts before sending it, but when its
    connection is dropped and made again to a new master (a failover) it sends the EVALSHAs
    again there, where no script is loaded yet. Sent again only when every EVALSHA was
    refused, so that nothing ran; the second time redis-py loads them on the new master.
    The first error among the replies is raised, as ``pipe.execute()`` does."""
    stack, scripts = list(pipe.command_stack), set(pipe.scripts)
    replies: list[Any] = pipe.execute(raise_on_error=False)
    calls = sum(1 for args, _ in stack if args[0] == "EVALSHA")
    refused = sum(1 for reply in replies if isinstance(reply, NoScriptError))
    if calls and refused == calls:
        pipe.command_stack.extend(stack)
        pipe.scripts.update(scripts)
        replies = pipe.execute(raise_on_error=False)
    for reply in replies:
        if isinstance(reply, redis.exceptions.ResponseError):
            raise reply
    return replies


_registered: WeakKeyDictionary[redis.Redis, dict[str, Script]] = WeakKeyDictionary()
_lock = threading.Lock()


def script(client: redis.Redis, name: str) -> Script:
    """``name`` (e.g. ``"transition.lua"``) registered with ``client``, once per client."""
    with _lock:
        scripts = _registered.setdefault(client, {})
        if name not in scripts:
            scripts[name] = Script(client, source(name))
        return scripts[name]


@cache
def source(name: str) -> str:
    """The text Redis runs for ``name``: the helpers it uses, each once, then its own text."""
    return "\n".join(text(part) for part in _composition(name, ()))


@cache
def text(name: str) -> str:
    """One file's own text, as shipped in the package."""
    return files(__name__).joinpath(name).read_text(encoding="utf-8")


def uses(name: str) -> list[str]:
    """The helpers a file's header names (``-- uses: a.lua, b.lua``), in that order."""
    found: list[str] = []
    for line in text(name).splitlines():
        if not line.startswith("--"):
            break  # the header ends with the first line that is not a comment
        match = _USES.match(line)
        if match:
            found += [part.strip() for part in match.group(1).split(",") if part.strip()]
    return found


def _composition(name: str, path: tuple[str, ...]) -> list[str]:
    """``name`` and every file it uses, helpers first, each once (depth first)."""
    if name in path:
        raise ValueError(f"Lua helpers use each other in a circle: {' -> '.join((*path, name))}")
    order: list[str] = []
    for helper in uses(name):
        order += [part for part in _composition(helper, (*path, name)) if part not in order]
    return [*order, name]
