"""The connection pool's pass never closes a connection that a request holds (issue 20).

The pass is driven directly here, with stand-in connections whose state each test sets, so
the race's moment (a connection assigned to a request whose thread has not started on it
yet) is a state, not a timing. Many threads on real sockets: benchmarks/fd_stress.py and
tests/integration/test_fd_stress.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpcore
import httpx
import pytest
from httpcore._sync.connection_pool import PoolRequest
from pydantic import SecretStr

from worker.providers.http import DEFAULT_LIMITS
from worker.providers.inveterate import InveterateClient
from worker.providers.pool_guard import HeldConnectionGuard, install_pool_guard

ORIGIN = httpcore.URL("http://provider.test/").origin


class StandInConnection(httpcore.ConnectionInterface):
    """The few questions a pool's pass asks a connection, answered as each test says."""

    def __init__(self, *, idle: bool = True, expired: bool = False) -> None:
        self.idle = idle
        self.expired = expired
        self.closed = False

    def can_handle_request(self, origin: httpcore.Origin) -> bool:
        return origin == ORIGIN

    def is_available(self) -> bool:
        return self.idle and not self.closed

    def is_idle(self) -> bool:
        return self.idle and not self.closed

    def has_expired(self) -> bool:
        return self.expired

    def is_closed(self) -> bool:
        return self.closed


def pool_with(
    pool_class: type[httpcore.ConnectionPool],
    connections: list[StandInConnection],
    *,
    held: tuple[StandInConnection, ...] | list[StandInConnection] = (),
    queued: int = 0,
    max_connections: int = 10,
    max_keepalive: int = 10,
) -> httpcore.ConnectionPool:
    pool = pool_class(max_connections=max_connections, max_keepalive_connections=max_keepalive)
    pool._connections = list(connections)
    for connection in held:
        request = PoolRequest(httpcore.Request("POST", "http://provider.test/credits"))
        request.assign_to_connection(connection)
        pool._requests.append(request)
    for _ in range(queued):
        pool._requests.append(PoolRequest(httpcore.Request("GET", "http://provider.test/")))
    return pool


def test_a_pass_keeps_a_connection_assigned_to_a_request_not_started_yet() -> None:
    """The issue 20 moment: assigned (still IDLE), and another thread's pass sees a surplus
    keep-alive connection. Closing it would close the socket under the request's POST."""
    assigned = StandInConnection()
    pool = pool_with(HeldConnectionGuard, [assigned], held=[assigned], max_keepalive=0)
    assert pool._assign_requests_to_connections() == []
    assert pool._connections == [assigned]


def test_httpcore_own_pass_closes_it_the_race_the_guard_exists_for() -> None:
    """When this fails, httpcore has fixed encode/httpcore#1110 and the guard may go."""
    assigned = StandInConnection()
    pool = pool_with(httpcore.ConnectionPool, [assigned], held=[assigned], max_keepalive=0)
    assert pool._assign_requests_to_connections() == [assigned]


def test_a_held_connection_whose_socket_reads_as_hung_up_is_left_to_its_request() -> None:
    """httpcore takes a readable idle socket for a server's hang-up, yet it is readable too
    when the answer to the request just sent on it has arrived; a free one still goes."""
    busy, hung_up = StandInConnection(expired=True), StandInConnection(expired=True)
    pool = pool_with(HeldConnectionGuard, [busy, hung_up], held=[busy])
    assert pool._assign_requests_to_connections() == [hung_up]
    assert pool._connections == [busy]


def test_keep_alive_counts_idle_connections_only() -> None:
    """Three busy and two idle, keep-alive 2: nothing to close (httpcore counted all five)."""
    busy = [StandInConnection(idle=False) for _ in range(3)]
    idle = [StandInConnection(), StandInConnection()]
    pool = pool_with(HeldConnectionGuard, [*busy, *idle], held=busy, max_keepalive=2)
    assert pool._assign_requests_to_connections() == []
    surplus = StandInConnection()
    pool._connections.append(surplus)
    assert pool._assign_requests_to_connections() == [idle[0]]


def test_a_waiting_request_gets_an_idle_connection() -> None:
    idle = StandInConnection()
    pool = pool_with(HeldConnectionGuard, [idle], queued=1)
    pool._assign_requests_to_connections()
    assert pool._requests[0].connection is idle


def test_at_max_connections_a_request_waits_rather_than_take_a_held_one() -> None:
    held = [StandInConnection(idle=False), StandInConnection(idle=False)]
    pool = pool_with(HeldConnectionGuard, held, held=held, queued=1, max_connections=2)
    assert pool._assign_requests_to_connections() == []
    assert pool._requests[-1].is_queued()
    assert len(pool._connections) == 2


@pytest.fixture
def client() -> Iterator[InveterateClient]:
    # Port 9 (discard) of loopback: never reached in these tests.
    with InveterateClient("http://127.0.0.1:9", SecretStr("k"), 1) as client:
        yield client


def test_every_provider_client_pool_is_guarded(client: InveterateClient) -> None:
    assert isinstance(client._http._transport._pool, HeldConnectionGuard)  # type: ignore[attr-defined]


def test_proxy_pools_from_the_environment_are_guarded_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    with InveterateClient("https://example.invalid", SecretStr("k"), 1) as client:
        mounts = [t for t in client._http._mounts.values() if t is not None]
        pools = [t._pool for t in mounts]  # type: ignore[attr-defined]
    assert pools
    assert all(isinstance(pool, HeldConnectionGuard) for pool in pools)


def test_a_pool_held_differently_fails_at_construction() -> None:
    http = httpx.Client()
    http._transport._pool = object()  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="cannot guard the connection pool"):
        install_pool_guard(http)


def test_every_connection_may_stay_open_between_calls() -> None:
    """Fewer kept alive than allowed open made a busy worker reconnect at most calls."""
    assert DEFAULT_LIMITS.max_keepalive_connections == DEFAULT_LIMITS.max_connections
