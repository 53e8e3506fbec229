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
``Channel._create_client``). ``_pool`` is kombu's private attribute: were it renamed,
every call would simply take kombu's own path.

The second difference is a Redis that answers but takes no writes for a few seconds: a master
demoted by a failover (READONLY), a replica cut from its master (MASTERDOWN), a restart
reading its data back (LOADING). kombu calls the first two channel errors, and a Celery
worker exits on a channel error ("Unrecoverable error"), so a failover used to stop every
worker. Here they are connection errors (``FAILOVER_ERRORS``); a BRPOP ended by the
demotion (``Channel._brpop_read``) and a refused acknowledgement (``QoS.ack``) drop the
connection; and a new connection to a replica fails (``Channel._refuse_a_replica``). So the
worker reconnects with Celery's backoff until a master answers.
Everything else, the consuming side included, is kombu's code unchanged.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from typing import Any

import redis
from celery.worker import state as worker_state
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from worker.settings import broker_scheme

# Plain redis:// takes ``Transport`` below and sentinel:// ``SentinelTransport``: rediss://
# (TLS), redis+socket:// and other brokers keep kombu's own, which reads their URLs itself.
SCHEMES = frozenset({"redis", "sentinel"})

# What a Redis answers while it takes no writes for a moment, each gone within seconds:
# READONLY (a master demoted by a failover, or a replica not promoted yet), MASTERDOWN (a
# replica with ``replica-serve-stale-data no`` that lost its master) and LOADING (a restarted
# Redis reading its AOF or RDB file back). LOADING is a ConnectionError in redis-py already;
# it is named so that this does not rest on redis-py's class tree.
FAILOVER_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ReadOnlyError,
    redis.exceptions.MasterDownError,
    redis.exceptions.BusyLoadingError,
)
# A BRPOP blocked when its master turns replica is answered with this error (no class of its
# own in redis-py: a plain ResponseError), before any READONLY is seen.
UNBLOCKED_PREFIX = "UNBLOCKED"

# How long a worker that has had its broker waits in place for it to answer again, and how
# often it tries: longer than a Sentinel failover (down-after plus an election, 2 s here with
# down-after 1 s; set down-after-milliseconds to a few seconds in production), short enough
# that a broker gone for good is reported within seconds.
RECONNECT_WAIT_SECONDS = 10.0
RECONNECT_FIRST_DELAY_SECONDS = 0.1
RECONNECT_MAX_DELAY_SECONDS = 0.5

log = logging.getLogger("creditq.broker")


class BrokerClosed(redis.exceptions.ConnectionError):
    """The channel's connection is closed and its pool torn down (``Channel._create_client``)."""


# Set once this process has connected to its broker: from then on, a lost broker is waited for.
_had_a_broker = threading.Event()


def stopping() -> bool:
    """Celery's signal handlers have asked this worker to stop, warm or cold (its flags hold
    an exit code, 0 included, as ``maybe_shutdown`` reads them)."""
    flags = (worker_state.should_stop, worker_state.should_terminate)
    return any(flag is not None and flag is not False for flag in flags)


class QoS(kombu_redis.QoS):
    """kombu's acknowledgements, reconnecting when Redis refuses one for a failover.

    Celery acknowledges through ``Message.ack_log_error``, which logs and swallows every
    connection error, and only a ``BrokenPipeError`` goes on to the consumer, which then
    reconnects. Swallowed, a refused acknowledgement keeps its prefetch slot for good (kombu
    frees it only after Redis took the write): once every slot is held that way the worker
    consumes nothing again, and on the same connection it would still be talking to the
    demoted master. So a failover error here is raised as a broken pipe. The message stays
    in Redis's unacked set: restored when the channel closes, or after the visibility timeout
    when Redis is still read-only then; a second delivery of a creditq task is harmless.
    """

    def ack(self, delivery_tag: str) -> None:
        """A task that finished after its connection was lost cannot be acknowledged: its
        message waits in Redis's unacked set and is delivered again after the visibility
        timeout (a duplicate the store recognises; the reconciler has re-driven its job long
        before if it was unfinished). kombu logs that as CRITICAL with a traceback, one per
        task in flight; here it is one line."""
        try:
            super().ack(delivery_tag)  # type: ignore[no-untyped-call]
        except BrokerClosed:
            log.warning(
                "message %s not acknowledged: its broker connection was lost "
                "(delivered again after the visibility timeout)",
                delivery_tag,
            )
        except FAILOVER_ERRORS as exc:
            raise BrokenPipeError(
                errno.EPIPE, f"the broker refused an acknowledgement: {exc}"
            ) from exc

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """Celery's ``reject_log_error`` swallows every connection error, a broken pipe too,
        so a refused rejection frees its prefetch slot here; the message waits in the
        unacked set for the visibility timeout, like one of a worker that died."""
        try:
            super().reject(delivery_tag, requeue=requeue)  # type: ignore[no-untyped-call]
        except FAILOVER_ERRORS:
            virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]
            raise


class Channel(kombu_redis.Channel):
    QoS = QoS
    _shared_client: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # kombu's: connects, and PINGs (a replica answers that too).
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        try:
            self._refuse_a_replica()
        except BaseException:
            # Undo what kombu's __init__ did after its PING, as kombu does when that fails.
            self.connection.cycle.discard(self)
            self._disconnect_pools()  # type: ignore[no-untyped-call]
            raise

    def _refuse_a_replica(self) -> None:
        """A channel is kombu's proof that the broker works (a new connection opens one), so
        a Redis that cannot take writes must fail here, as a connection error: Celery then
        waits between attempts (``broker_connection_retry``: 2 s, 4 s, ... up to 30 s). A
        replica passes kombu's PING, and the consumer would then fail on its first write
        (declaring its queues) and retry at once, five times a second, until the failover
        ends. ROLE is a read every Redis since 2.8.12 answers; one that refuses it (a proxy)
        is taken at its word, and its first write will tell."""
        try:
            reply = self.client.execute_command("ROLE")
        except redis.exceptions.ResponseError as exc:
            if isinstance(exc, FAILOVER_ERRORS):
                raise
            return
        role = reply[0] if isinstance(reply, list | tuple) and reply else reply
        if isinstance(role, bytes):
            role = role.decode("ascii", errors="replace")
        if role in {"slave", "replica"}:
            raise redis.exceptions.ReadOnlyError("the broker is a replica (a failover?)")

    def _brpop_read(self, **options: Any) -> Any:
        """kombu's read of a BRPOP answer, with Redis's UNBLOCKED as a lost connection."""
        try:
            return super()._brpop_read(**options)  # type: ignore[no-untyped-call]
        except redis.exceptions.ResponseError as exc:
            if not str(exc).startswith(UNBLOCKED_PREFIX):
                raise
            self.client.connection.disconnect()  # as kombu does for a connection error
            # Celery's "Connection to broker lost" line names no cause: say it once here.
            log.warning("broker: %s (a failover?): reconnecting", exc)
            raise redis.exceptions.ConnectionError(f"the broker stopped a BRPOP: {exc}") from exc

    def _create_client(self, asynchronous: bool = False) -> Any:
        pool = getattr(self, "_pool", None)
        if pool is None and not asynchronous and getattr(self.connection, "client", None) is None:
            # The connection is closed and its pool torn down, yet kombu closes the channel
            # once more and restores unacked messages through a new pool, which it cannot
            # build without the connection (an AttributeError, fatal to the worker; seen in
            # benchmarks/chaos.py after a Redis restart). Say so as the connection error it
            # is: kombu's close ignores those, and the messages wait in Redis's unacked set
            # to be restored later, as when Redis is down during the restore.
            raise BrokerClosed("the broker connection is closed")
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
    """kombu's Redis transport with ``Channel`` above and ``FAILOVER_ERRORS`` as connection
    errors: on those Celery's consumer drops the connection, restores what it had not
    acknowledged, and reconnects with backoff (``broker_connection_retry``), the path it
    takes when Redis is down, instead of exiting. kombu's own ``_brpop_read`` also drops
    its connection on them, and publishing retries them (``Connection.ensure``)."""

    Channel = Channel
    connection_errors = (*kombu_redis.Transport.connection_errors, *FAILOVER_ERRORS)

    def establish_connection(self) -> Any:
        """kombu's connection, tried again in place while the broker is briefly away (see
        the module's docstring). A worker asked to stop stops waiting and lets the error go
        to its caller: Celery's retry loop then stops the worker, and a task thread that was
        publishing gets the error it would have had without the wait."""
        deadline = time.monotonic() + (RECONNECT_WAIT_SECONDS if _had_a_broker.is_set() else 0)
        delay = RECONNECT_FIRST_DELAY_SECONDS
        while True:
            try:
                established = super().establish_connection()  # type: ignore[no-untyped-call]
            except self.connection_errors:
                if time.monotonic() + delay > deadline or stopping():
                    raise
                time.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY_SECONDS)
                continue
            _had_a_broker.set()
            return established


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """``Channel`` above on kombu's Sentinel channel, which finds the master through the
    Sentinels for every new connection. Without ``Channel._create_client``'s guard a worker
    died in a failover: kombu closing the channel of the lost master rebuilt a pool through
    a connection already gone ("Unrecoverable error: AttributeError: 'NoneType' object has
    no attribute 'hostname'", seen with a master SIGKILLed under three workers)."""


class SentinelTransport(Transport):
    """``Transport`` behind Sentinels (``sentinel://h1:26379/0;sentinel://h2:26379/0``)."""

    Channel = SentinelChannel
    default_port = 26379  # type: ignore[assignment]


# The ``broker_transport`` setting naming this module's transport for each scheme.
TRANSPORTS = {
    "redis": f"{__name__}:{Transport.__name__}",
    "sentinel": f"{__name__}:{SentinelTransport.__name__}",
}
TRANSPORT = TRANSPORTS["redis"]


def transport_for(broker_url: str) -> str | None:
    """The ``broker_transport`` setting for this URL: this module's for Redis and Sentinel,
    else None (the URL's scheme picks kombu's own)."""
    return TRANSPORTS.get(broker_scheme(broker_url))
