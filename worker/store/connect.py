"""Every Redis client creditq makes for its job store and budgets (producer, workers, beat,
the CLI, ``serve``), from one URL: a plain Redis as redis-py reads it, or Sentinels in
Celery's form (``sentinel://h1:26379/0;sentinel://h2:26379/0``), which give the master of
``CREDITQ_REDIS_SENTINEL_MASTER`` and follow it through a failover.

Behind Sentinels a client asks them for the master on every new connection, and a master
that turns replica (READONLY, or a WAIT it refuses: ``MasterConnection``) drops the
connection, so the next command goes to the new master; a command refused or cut off
meanwhile is sent again after a short backoff (``RETRIES``). Sending one again is safe for
creditq's writes: every move of a job is a compare-and-set on its version, a create
recognises its own grant, and a budget slot taken twice only wastes a slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection

SENTINEL_SCHEME = "sentinel"
# A command refused (READONLY, LOADING) or cut off during a failover is sent again this
# many times, backing off from 50 ms to 1 s: a few seconds, what a planned failover takes.
RETRIES = 8
BACKOFF = (1.0, 0.05)  # cap, base


# How a replica refuses WAIT (and WAITAOF): "ERR WAIT cannot be used with replica instances".
REPLICA_REFUSAL = "cannot be used with replica instances"


class MasterConnection(SentinelManagedConnection):
    """A connection to the master the Sentinels named, which also notices when that master
    has been turned into a replica by a WAIT it refuses.

    redis-py drops a connection on READONLY only, that is on a write. A connection left on
    a demoted master whose commands write nothing never gets one: a create that finds its
    job already there writes nothing, and the WAIT after it is refused with a plain error.
    That kept ``benchmarks/failover.py``'s producer handing one grant over 1,933 times,
    after the Sentinels failed over twice in two seconds. This refusal drops the connection
    as READONLY does, and the command is sent again to the master the Sentinels name now
    (``send_packed_command``)."""

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        """A connection dropped (by READONLY, the refusal below, or a cut) is made again
        through the Sentinels: redis-py 8's own reconnection here goes back to the address
        the connection had, the demoted master, for every retry of the command."""
        if not self._sock:
            self.connect()  # type: ignore[no-untyped-call]
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except redis.exceptions.ResponseError as exc:
            if self.connection_pool.is_master and REPLICA_REFUSAL in str(exc):
                self.disconnect()  # type: ignore[no-untyped-call]
                raise redis.exceptions.ConnectionError(
                    f"the master is now a replica: {exc}"
                ) from exc
            raise


@dataclass(frozen=True)
class SentinelUrl:
    """What a ``sentinel://`` URL names: the Sentinels, and the master's database and login."""

    sentinels: list[tuple[str, int]]
    db: int
    username: str | None
    password: str | None


def is_sentinel(url: str) -> bool:
    return url.lower().startswith(f"{SENTINEL_SCHEME}://")


def parse_sentinel_url(url: str) -> SentinelUrl:
    """The parts of ``sentinel://[user:password@]h1:26379/0;sentinel://h2:26379/0``: every
    part names a Sentinel; the first that gives a database or a login gives them for the
    master (Celery reads the form the same way)."""
    sentinels: list[tuple[str, int]] = []
    db, username, password = 0, None, None
    for part in url.split(";"):
        parts = urlsplit(part.strip())
        if parts.scheme.lower() != SENTINEL_SCHEME or not parts.hostname:
            raise ValueError("every part must be sentinel://host[:port][/db]")
        sentinels.append((parts.hostname, parts.port or 26379))
        if parts.path.strip("/") and db == 0:
            db = int(parts.path.strip("/"))
        if parts.password is not None and password is None:
            password = unquote(parts.password)
            username = unquote(parts.username) if parts.username else None
    return SentinelUrl(sentinels, db, username, password)


def redis_client(
    url: str, *, master: str = "mymaster", decode_responses: bool = False, **options: Any
) -> redis.Redis:
    """A client of the Redis ``url`` names (``master``: the Sentinels' name for it). Behind
    Sentinels a command is sent again for a few seconds (``RETRIES``) unless ``retry`` is
    among the options."""
    if not is_sentinel(url):
        return redis.Redis.from_url(url, decode_responses=decode_responses, **options)
    named = parse_sentinel_url(url)
    timeouts = {
        k: v for k, v in options.items() if k in ("socket_timeout", "socket_connect_timeout")
    }
    sentinel = Sentinel(named.sentinels, sentinel_kwargs=dict(timeouts), **timeouts)
    retry = options.pop("retry", None) or Retry(ExponentialBackoff(*BACKOFF), RETRIES)
    client: redis.Redis = sentinel.master_for(
        master,
        db=named.db,
        username=named.username,
        password=named.password,
        decode_responses=decode_responses,
        retry=retry,
        retry_on_error=[redis.exceptions.ReadOnlyError, redis.exceptions.BusyLoadingError],
        connection_class=MasterConnection,
        **options,
    )
    return client


def store_client(settings: Any, *, decode_responses: bool = False, **options: Any) -> redis.Redis:
    """A client of the job store the settings name (``CREDITQ_REDIS_URL``)."""
    return redis_client(
        settings.redis_url,
        master=settings.redis_sentinel_master,
        decode_responses=decode_responses,
        **options,
    )


def probe_client(settings: Any, *, timeout: float) -> redis.Redis:
    """A client of the job store for a health probe: one try, and each socket operation (a
    Sentinel's answer, the master's connect and reply) given ``timeout``.

    The store's own clients send a command again for seconds through a failover (``RETRIES``,
    and redis-py's ten retries for a plain Redis), which is what work wants; a probe must say
    how things are now, within its prober's patience (compose's check of ``/readyz`` waits
    3 s). Behind Sentinels that name no master it answers MasterNotFoundError at once."""
    return store_client(
        settings,
        retry=Retry(NoBackoff(), 0),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )
