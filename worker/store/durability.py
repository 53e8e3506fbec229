"""Whether the job store keeps what it acknowledged: checked when a worker starts.

The store is the only record of which keys were accepted and issued. A Redis that keeps
nothing on disk loses every job in a restart, and the producer's retry of the same key then
looks new: Inveterate, which has no idempotency key, pays it a second time. A Redis that
evicts under memory pressure does the same to one job at a time, silently. So a worker
refuses such a store, in one line naming what to change, unless
``CREDITQ_ALLOW_VOLATILE_REDIS`` says this is a demo or a test.

What counts is whether the move before a POST is on disk before the POST leaves (a lost
move sends the POST again after a restart, and Inveterate pays twice):

- the append-only file on (``appendonly yes``), and either ``appendfsync always`` or Redis
  7.2+, where creditq waits for the file with ``WAITAOF`` before each POST. With
  ``everysec`` on an older Redis, a host crash loses the last second of acknowledged writes,
  and so can a Redis crash while an fsync is slow (Redis then puts off writing the file for
  up to two seconds, replies sent): seen here, a grant acknowledged just before a SIGKILL was
  gone after the restart. Refused, naming both fixes.
- RDB snapshots alone lose everything since the last snapshot: refused.
- ``maxmemory-policy noeviction``: any other policy forgets jobs one at a time: refused.

A Redis that hides CONFIG (some managed services) cannot be checked; the worker says so and
starts: the operator vouches for it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import redis

log = logging.getLogger("creditq.durability")


@dataclass(frozen=True)
class Durability:
    """What the store's configuration says: ``problems`` refuse it, ``warnings`` do not."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checked: bool = True


# WAITAOF, with which creditq waits for the append-only file before each POST.
WAITAOF_SINCE = (7, 2)


def judge(config: Mapping[str, str], version: str | None = None) -> Durability:
    """Pure: the verdict on a Redis's ``CONFIG GET`` answers and its ``redis_version``."""
    problems: list[str] = []
    warnings: list[str] = []
    aof = config.get("appendonly", "no") == "yes"
    snapshots = bool(config.get("save", "").strip())
    fsync = config.get("appendfsync", "everysec")
    if not aof and not snapshots:
        problems.append("it keeps nothing on disk (appendonly no, save '')")
    elif not aof:
        problems.append(
            "only RDB snapshots (appendonly no): a restart loses what came after the last one"
        )
    elif fsync != "always" and not has_waitaof(version):
        problems.append(
            f"appendfsync {fsync} on Redis {version or '(version unknown)'}, which "
            "has no WAITAOF: a crash can lose the last seconds of acknowledged "
            "writes, the move before a POST included; set appendfsync always, or "
            "run Redis 7.2+"
        )
    policy = config.get("maxmemory-policy", "noeviction")
    if policy != "noeviction":
        problems.append(f"maxmemory-policy {policy} evicts keys under memory pressure")
    return Durability(problems, warnings)


def has_waitaof(version: str | None) -> bool:
    try:
        major, minor = (int(part) for part in (version or "").split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= WAITAOF_SINCE


def inspect(client: redis.Redis) -> Durability:
    """Read the configuration that ``judge`` needs; unchecked if CONFIG is refused."""
    try:
        config: dict[str, str] = {}
        for name in ("appendonly", "appendfsync", "save", "maxmemory-policy"):
            answer = cast(Mapping[Any, Any], client.config_get(name))
            config.update({_text(k): _text(v) for k, v in answer.items()})
    except redis.ResponseError:
        return Durability(checked=False)
    try:
        version = _text(cast(Mapping[str, Any], client.info("server")).get("redis_version"))
    except redis.ResponseError:
        version = None
    return judge(config, version)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def refusal(verdict: Durability) -> str | None:
    """The one line a worker exits with, or None when the store may be used."""
    if not verdict.problems:
        return None
    return (
        "creditq: refusing a volatile job store: "
        + "; ".join(verdict.problems)
        + ". Run Redis with appendonly yes (appendfsync always before Redis 7.2) and "
        "maxmemory-policy noeviction, or set CREDITQ_ALLOW_VOLATILE_REDIS=true for a demo "
        "or a test"
    )


def check_at_start(client: redis.Redis, allow_volatile: bool) -> str | None:
    """What a starting worker does about its store: the refusal line to exit with, or None
    (after logging any warning, or that the store could not be checked)."""
    verdict = inspect(client)
    if not verdict.checked:
        log.warning(
            "the job store hides CONFIG: its persistence could not be checked; "
            "it must keep an append-only file and never evict keys"
        )
        return None
    for warning in verdict.warnings:
        log.warning("job store: %s", warning)
    line = refusal(verdict)
    if line is not None and allow_volatile:
        log.warning(
            "job store: %s; allowed by CREDITQ_ALLOW_VOLATILE_REDIS (a demo or a "
            "test): a restart loses every grant",
            "; ".join(verdict.problems),
        )
        return None
    return line


def refuse_volatile_store() -> None:
    """At a worker's start (Celery's ``worker_init``): it exits, in one line, on a store
    that cannot keep what it acknowledged (see the module docstring). A store that does not
    answer yet is left to the worker's own connection retries."""
    from worker.settings import get_settings  # read when a worker starts, not at import
    from worker.store.connect import store_client

    settings = get_settings()
    client = store_client(settings, socket_timeout=5)
    try:
        line = check_at_start(client, settings.allow_volatile_redis)
    except redis.RedisError as exc:
        log.warning("the job store's persistence could not be checked: %s", type(exc).__name__)
        return
    finally:
        client.close()
    if line is not None:
        print(line, file=sys.stderr, flush=True)
        raise SystemExit(2)
