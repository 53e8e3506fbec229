"""An overall deadline for one provider call: connect, send, headers and the whole body.

httpx's timeouts bound each socket operation, not the call: a provider whose answer trickles
out (every read quick, the whole answer taking minutes) keeps a POST open for as long as it
likes. The job's lease (``Policy.lease`` in ``worker.pipeline.mover``) runs out meanwhile, the
reconciler takes the job as abandoned, and a second POST leaves while the first is still
open (FAULTS.md, "slow answer"). So every call gets a deadline shorter than the lease
(``call_deadline_seconds``), and every socket operation of the call waits at most until it.

How: ``call_deadline`` sets the deadline in a context variable, for the calling thread only
(a Celery thread pool runs several calls at once), and the network backend of the client's
connection pools (``install_deadline``) hands httpcore streams that bound each read, write,
connect and TLS handshake by the time left, and refuse to start one once it is gone. The call thus
fails in its own thread, through httpcore's own timeout exceptions, which httpx turns into
``httpx.ReadTimeout``/``WriteTimeout``/``ConnectTimeout``, and ``classify_exception`` reads
as it reads any timeout: ambiguous once the request was being sent, not applied before.
Nothing closes a socket from another thread (a watchdog that did would race httpcore's own
close: the double-close of a reused descriptor). httpcore closes the connection it was
using, as after any timeout.

Bounds: the deadline starts with the call, so a wait for a pooled connection (bounded by
httpx's pool timeout, shorter than the deadline) counts against it. Each read waits at most
the time left, so the answer cannot outlive the deadline by more than one ``recv``'s
wake-up. A write is handed to httpcore in pieces, each bounded by the time left when it
starts (a request of a few hundred bytes is one piece, taken by the kernel's send buffer at
once). Resolving the host name is not bounded here (it is before any byte is sent). A call
that reaches the deadline sends nothing after it.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import httpcore
import httpx

# The deadline is this many HTTP timeouts plus a margin (see ``call_deadline_seconds``).
DEADLINE_TIMEOUTS = 2
DEADLINE_MARGIN_SECONDS = 5.0
# Largest piece of a request handed to httpcore's write under one bound (see the module's
# docstring): at most what a socket's send buffer takes at once.
WRITE_PIECE_BYTES = 16 * 1024

T = TypeVar("T")


def call_deadline_seconds(http_timeout: float) -> float:
    """The longest a provider call may take, all phases together: ``2 * http_timeout + 5``.

    A call that goes well takes a connect (at most 5 s, ``CONNECT_TIMEOUT_MAX``) and a few
    reads, each far shorter than ``http_timeout``: twice the timeout plus the connect margin
    leaves room for a slow but honest provider. The job's lease is ``4 * http_timeout + 10``,
    twice this, so a call always ends (and sends nothing more) well before the reconciler may
    take its job for abandoned and POST again: the pipeline can assert
    ``call_deadline_seconds(t) < lease``.
    """
    return DEADLINE_TIMEOUTS * http_timeout + DEADLINE_MARGIN_SECONDS


@dataclass(frozen=True)
class Deadline:
    """When the current call must be over (``time.monotonic()``), and its length, for text."""

    at: float
    seconds: float

    def left(self) -> float:
        return self.at - time.monotonic()


_CURRENT: ContextVar[Deadline | None] = ContextVar("creditq_call_deadline", default=None)


def current_deadline() -> Deadline | None:
    return _CURRENT.get()


@contextmanager
def call_deadline(seconds: float) -> Iterator[Deadline]:
    """Every socket operation of the block's calls, in this thread, ends by ``seconds`` from
    now. Nested, the sooner deadline holds."""
    deadline = Deadline(time.monotonic() + seconds, seconds)
    outer = _CURRENT.get()
    if outer is not None and outer.at <= deadline.at:
        deadline = outer
    token = _CURRENT.set(deadline)
    try:
        yield deadline
    finally:
        _CURRENT.reset(token)


def _bounded(
    operation: Callable[[float | None], T],
    timeout: float | None,
    error: type[httpcore.TimeoutException],
    doing: str,
) -> T:
    """Run ``operation(timeout)`` with the timeout cut to the time left before the deadline;
    past the deadline, raise ``error`` (an httpcore timeout, for httpx to map) instead."""
    deadline = _CURRENT.get()
    if deadline is None:
        return operation(timeout)
    left = deadline.left()
    if left <= 0:
        raise error(f"the call's deadline of {deadline.seconds:g}s passed before {doing}")
    try:
        return operation(left if timeout is None else min(timeout, left))
    except httpcore.TimeoutException as exc:
        if deadline.left() > 0:
            raise  # httpx's own per-operation timeout: its message says so
        raise error(f"the call's deadline of {deadline.seconds:g}s passed {doing}") from exc


class DeadlineStream(httpcore.NetworkStream):
    """A stream whose every operation ends by the deadline of the call using it (a pooled
    connection serves several calls, each with its own deadline: read at each operation)."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return _bounded(
            lambda t: self._stream.read(max_bytes, t),
            timeout,
            httpcore.ReadTimeout,
            "reading the answer",
        )

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        view = memoryview(buffer)
        while view:
            piece = bytes(view[:WRITE_PIECE_BYTES])
            _bounded(
                lambda t: self._stream.write(piece, t),  # noqa: B023 (called at once)
                timeout,
                httpcore.WriteTimeout,
                "sending the request",
            )
            view = view[WRITE_PIECE_BYTES:]

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        stream = _bounded(
            lambda t: self._stream.start_tls(ssl_context, server_hostname, t),
            timeout,
            httpcore.ConnectTimeout,
            "the TLS handshake",
        )
        return DeadlineStream(stream)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend (``inner``), with ``DeadlineStream``s."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = _bounded(
            lambda t: self._inner.connect_tcp(host, port, t, local_address, socket_options),
            timeout,
            httpcore.ConnectTimeout,
            "connecting",
        )
        return DeadlineStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = _bounded(
            lambda t: self._inner.connect_unix_socket(path, t, socket_options),
            timeout,
            httpcore.ConnectTimeout,
            "connecting",
        )
        return DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def install_deadline(client: httpx.Client) -> None:
    """Give every connection pool of ``client`` (its default transport and the proxies httpx
    mounted from the environment) the deadline backend.

    httpx has no public hook for httpcore's ``network_backend``; this reaches it through
    attributes private to httpx (``_transport``, ``_mounts``, ``_pool``) and httpcore
    (``_network_backend``). Were one renamed, this raises at client construction (a unit
    test builds a client) rather than let calls run without a deadline.
    """
    transports = [client._transport, *client._mounts.values()]
    for transport in transports:
        if transport is None:  # a NO_PROXY mount: goes through the default transport
            continue
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if not isinstance(transport, httpx.HTTPTransport) or backend is None:
            raise RuntimeError(
                f"cannot give {type(transport).__name__} a call deadline: httpx or httpcore "
                "changed how a transport holds its network backend"
            )
        if not isinstance(backend, DeadlineBackend):
            pool._network_backend = DeadlineBackend(backend)  # type: ignore[union-attr]
