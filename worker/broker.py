"""The Redis broker transport of creditq's app: kombu's own, with one client per channel.

kombu's Redis channel builds a new redis-py client for every publish, acknowledgement and
task event it sends (``Channel._create_client``), and building one (its table of a few
hundred response callbacks) is the largest single cost of a task's delivery: 0.5 ms of
worker CPU per grant, measured with ``benchmarks/throughput.py --profile``, as much as
the provider's POST. A client holds no connection of its own (each command borrows one
from the channel's pool) and redis-py clients are safe to share between threads, so the
channel keeps one for as long as its pool lives. While kombu has the pool torn down
(closing the channel, or after a lost connection) it takes kombu's own path, and where
that path would fail with an AttributeError it raises a connection error instead (see
``Channel._create_client``). Everything else, the consuming side included, is kombu's
code unchanged. ``_pool`` is kombu's private attribute: were it renamed, every call would
simply take kombu's own path.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis
from kombu.transport import redis as kombu_redis

# Only plain redis:// takes this transport: rediss:// (TLS), sentinel://, redis+socket://
# and other brokers keep kombu's own, which reads their URLs itself.
SCHEMES = frozenset({"redis"})


class Channel(kombu_redis.Channel):
    _shared_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        pool = getattr(self, "_pool", None)
        if pool is None and not asynchronous and getattr(self.connection, "client", None) is None:
            # The connection is closed and its pool torn down, yet kombu closes the channel
            # once more and restores unacked messages through a new pool, which it cannot
            # build without the connection (an AttributeError, fatal to the worker; seen in
            # benchmarks/chaos.py after a Redis restart). Say so as the connection error it
            # is: kombu's close ignores those, and the messages wait in Redis's unacked set
            # to be restored later, as when Redis is down during the restore.
            raise redis.exceptions.ConnectionError("the broker connection is closed")
        if asynchronous or pool is None:
            # The consumer's BRPOP client (kombu keeps one already), or a channel whose
            # pool kombu tore down (closing, or after a lost connection): kombu's own path.
            self._shared_client = None
            return super()._create_client(asynchronous=asynchronous)  # type: ignore[no-untyped-call]
        client = self._shared_client
        if client is None or client.connection_pool is not pool:
            client = super()._create_client()  # type: ignore[no-untyped-call]
            self._shared_client = client
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel


# The ``broker_transport`` setting naming this module's transport.
TRANSPORT = f"{__name__}:{Transport.__name__}"


def transport_for(broker_url: str) -> str | None:
    """The ``broker_transport`` setting for this URL: ``TRANSPORT`` for Redis, else None
    (the URL's scheme picks kombu's own)."""
    return TRANSPORT if urlsplit(broker_url).scheme in SCHEMES else None
