"""httpcore's connection pool, kept from closing a connection that another thread is using.

Why: httpcore's sync pool (1.0.9, encode/httpcore#1110) hands an idle connection to a waiting
request under its lock, but the connection stays IDLE until that request's thread wakes up
and starts sending. Every request that starts or ends runs a pass over the pool in its own
thread, and a pass made in between still sees the connection idle: it may close it as a
surplus keep-alive connection, or as one the server hung up on, because its socket is
readable (it is: the answer to the request already sent on it). The close runs in the thread
making the pass, outside the pool's lock, whatever the connection's state
(``HTTP11Connection.close``). When the owner has started by then, its socket is closed under
it. Python's socket then holds fd -1, so the next send or receive fails with EBADF (httpx's
``ReadError: [Errno 9] Bad file descriptor``: an ambiguous POST, seen once in 3,000 grants
of benchmarks/throughput.py) or a wait on it sleeps to the read timeout. A close landing
while a system call is under way is worse: the number may already belong to a new socket
(a Redis connection, another POST), which then gets bytes meant for someone else.

The guard is the pass itself, rewritten with two differences from httpcore's: a connection
that a request of the pool holds (assigned, sending, or reading its answer) is never closed
by another thread's pass (the first pass after its request let it go judges it again; until
then only its own thread closes it, after an error or an answer that ends the connection),
and ``max_keepalive_connections`` counts idle connections, not all of them (httpcore counts
busy ones too, so with more busy than that it closed an idle connection at every call's end:
encode/httpcore PR #1000). Otherwise the rules are httpcore's: drop closed connections,
close expired ones, then give each waiting request an available connection, else a new one
below ``max_connections``, else a new one in place of an idle one no request holds.
``benchmarks/fd_stress.py`` measures what this prevents.
"""

from __future__ import annotations

from typing import Any

import httpcore
import httpx

# httpcore's private names the guard rests on: checked at install, so that a changed
# httpcore fails when a client is built instead of letting the race back in unseen.
_POOL_ATTRIBUTES = (
    "_requests",
    "_connections",
    "_max_connections",
    "_max_keepalive_connections",
    "_assign_requests_to_connections",
)


class HeldConnectionGuard(httpcore.ConnectionPool):
    """A pool whose passes close only connections that no request of it holds."""

    def _assign_requests_to_connections(self) -> list[httpcore.ConnectionInterface]:
        # httpcore calls this with the pool's lock held: no request or connection is
        # added or dropped meanwhile, so "held" cannot go stale within the pass.
        held = {
            id(request.connection) for request in self._requests if request.connection is not None
        }
        closing = self._drop_dead_and_surplus(held)
        for request in self._requests:
            if not request.is_queued():
                continue
            origin = request.request.url.origin
            connection = next(
                (c for c in self._connections if c.can_handle_request(origin) and c.is_available()),
                None,
            )
            if connection is None:
                if len(self._connections) >= self._max_connections:
                    spares = self._free_idle(held)
                    if not spares:
                        continue  # it waits: the next pass (a call ending) looks again
                    spare = spares[0]
                    self._connections.remove(spare)
                    closing.append(spare)
                connection = self.create_connection(origin)
                self._connections.append(connection)
            request.assign_to_connection(connection)
            held.add(id(connection))
        return closing

    def _drop_dead_and_surplus(self, held: set[int]) -> list[httpcore.ConnectionInterface]:
        """Forget closed connections; take out (for closing) the expired ones and the idle
        ones beyond the keep-alive limit, of those no request holds."""
        closing: list[httpcore.ConnectionInterface] = []
        for connection in list(self._connections):
            if connection.is_closed():
                self._connections.remove(connection)
            elif id(connection) not in held and connection.has_expired():
                self._connections.remove(connection)
                closing.append(connection)
        idle = self._free_idle(held)
        for connection in idle[: max(len(idle) - self._max_keepalive_connections, 0)]:
            self._connections.remove(connection)
            closing.append(connection)
        return closing

    def _free_idle(self, held: set[int]) -> list[httpcore.ConnectionInterface]:
        return [c for c in self._connections if c.is_idle() and id(c) not in held]


_GUARDED: dict[type[Any], type[Any]] = {httpcore.ConnectionPool: HeldConnectionGuard}


def guarded_class(pool_class: type[Any]) -> type[Any]:
    """``pool_class`` with the guard in front (one class per pool class: the plain pool, and
    the proxies httpx mounts from the environment, which are pools too)."""
    guarded = _GUARDED.get(pool_class)
    if guarded is None:
        guarded = type(f"Guarded{pool_class.__name__}", (HeldConnectionGuard, pool_class), {})
        _GUARDED[pool_class] = guarded
    return guarded


def install_pool_guard(client: httpx.Client) -> None:
    """Give every connection pool of ``client`` (its default transport and the proxy mounts)
    the guard, by switching the pool object's class: httpx builds the pool inside its
    transport and has no hook to choose its class. Raises RuntimeError when httpx or httpcore
    no longer hold their pools the way this expects."""
    for transport in [client._transport, *client._mounts.values()]:
        if transport is None:  # a NO_PROXY mount: goes through the default transport
            continue
        pool = getattr(transport, "_pool", None)
        if not isinstance(pool, httpcore.ConnectionPool) or not all(
            hasattr(pool, name) for name in _POOL_ATTRIBUTES
        ):
            raise RuntimeError(
                f"cannot guard the connection pool of {type(transport).__name__}: httpx or "
                "httpcore changed how a transport holds its pool"
            )
        if not isinstance(pool, HeldConnectionGuard):
            pool.__class__ = guarded_class(type(pool))
