"""The per-call deadline: its arithmetic, its scope, and its place in the clients' transport.

The behaviour over a real socket (a trickling answer) is in
tests/integration/test_call_deadline.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpcore
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from worker.errors import Outcome, ProviderError
from worker.pipeline.mover import Policy
from worker.providers.chargebee import ChargebeeClient
from worker.providers.deadline import (
    DeadlineBackend,
    DeadlineStream,
    call_deadline,
    call_deadline_seconds,
    current_deadline,
)
from worker.providers.http import HttpProviderClient
from worker.providers.inveterate import InveterateClient
from worker.settings import Settings


@pytest.mark.parametrize(("timeout", "deadline"), [(1, 7), (10, 25), (0.5, 6), (30, 65)])
def test_the_deadline_is_two_timeouts_and_five_seconds(timeout: float, deadline: float) -> None:
    assert call_deadline_seconds(timeout) == deadline


@given(st.floats(min_value=0.001, max_value=3600, allow_nan=False))
def test_the_deadline_is_shorter_than_the_lease(timeout: float) -> None:
    """A call must end (and send nothing more) before the reconciler may POST again."""
    lease = Policy.from_settings(Settings(http_timeout_seconds=timeout)).lease
    assert timeout < call_deadline_seconds(timeout) < lease


def test_each_client_takes_its_deadline_from_its_timeout() -> None:
    key = SecretStr("k")
    assert InveterateClient("http://x", key, 3).deadline_seconds == 11
    assert ChargebeeClient("http://x", key, 4).deadline_seconds == 13
    settings = Settings(http_timeout_seconds=2, inveterate_api_key=key)
    with InveterateClient.from_settings(settings) as client:
        assert client.deadline_seconds == call_deadline_seconds(2)


def test_a_deadline_holds_for_its_block_only_and_the_sooner_wins() -> None:
    assert current_deadline() is None
    with call_deadline(5) as outer:
        with call_deadline(60) as inner:
            assert inner is outer  # a longer inner deadline cannot extend the outer one
        with call_deadline(1) as sooner:
            assert sooner.at < outer.at
            assert current_deadline() is sooner
        assert current_deadline() is outer
    assert current_deadline() is None


class RecordingStream(httpcore.NetworkStream):
    """Records the timeout of every operation; reads give one byte."""

    def __init__(self) -> None:
        self.timeouts: list[float | None] = []
        self.written = b""

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self.timeouts.append(timeout)
        return b"x"

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.timeouts.append(timeout)
        self.written += buffer

    def close(self) -> None:
        pass


def test_every_operation_waits_at_most_the_time_left() -> None:
    inner = RecordingStream()
    stream = DeadlineStream(inner)
    stream.read(10, timeout=None)  # no deadline: httpx's timeout, untouched
    with call_deadline(2):
        stream.read(10, timeout=30)
        stream.read(10, timeout=0.5)
        stream.read(10, timeout=None)
    assert inner.timeouts[0] is None
    long, short, unbounded = inner.timeouts[1:]
    assert long is not None and 1.5 < long <= 2
    assert short == 0.5
    assert unbounded is not None and unbounded <= 2


def test_a_large_write_is_bounded_piece_by_piece() -> None:
    inner = RecordingStream()
    data = bytes(range(256)) * 300  # 76,800 bytes
    with call_deadline(2):
        DeadlineStream(inner).write(data, timeout=None)
    assert inner.written == data
    assert len(inner.timeouts) > 1
    assert all(t is not None and t <= 2 for t in inner.timeouts)


@pytest.mark.parametrize(
    ("operation", "error"),
    [
        (lambda s: s.read(10, 5), httpcore.ReadTimeout),
        (lambda s: s.write(b"POST", 5), httpcore.WriteTimeout),
    ],
)
def test_past_the_deadline_nothing_more_is_read_or_sent(
    operation: object, error: type[Exception]
) -> None:
    inner = RecordingStream()
    with call_deadline(0), pytest.raises(error, match="deadline of 0s passed"):
        operation(DeadlineStream(inner))  # type: ignore[operator]
    assert inner.timeouts == []  # the inner stream was not even asked


@pytest.fixture
def client() -> Iterator[HttpProviderClient]:
    # Port 9 (discard) of loopback: never reached in these tests.
    with InveterateClient("http://127.0.0.1:9", SecretStr("k"), 1) as client:
        yield client


def backends(client: HttpProviderClient) -> list[object]:
    http = client._http
    transports = [http._transport, *(t for t in http._mounts.values() if t is not None)]
    return [t._pool._network_backend for t in transports]  # type: ignore[attr-defined]


def test_the_default_transport_carries_the_deadline(client: HttpProviderClient) -> None:
    assert [type(b) for b in backends(client)] == [DeadlineBackend]


def test_proxies_from_the_environment_carry_it_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    with InveterateClient("https://example.invalid", SecretStr("k"), 1) as client:
        found = backends(client)
    assert len(found) == 2
    assert all(isinstance(b, DeadlineBackend) for b in found)


def test_a_transport_passed_in_is_left_alone() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(201, json={"data": {}}))
    with InveterateClient("http://x", SecretStr("k"), 1, transport=transport) as client:
        assert client._http._transport is transport
        assert client._request("POST", "/credits").status_code == 201


def test_a_deadline_gone_before_connecting_is_not_applied(client: HttpProviderClient) -> None:
    """Nothing was sent, so httpx's ConnectTimeout, and a retry cannot pay twice."""
    started = time.monotonic()
    with call_deadline(0), pytest.raises(ProviderError) as raised:
        client._request("POST", "/v2.0/admin/members/c/credits", content=b"{}")
    assert raised.value.outcome is Outcome.NOT_APPLIED
    assert "ConnectTimeout" in str(raised.value)
    assert time.monotonic() - started < 1
