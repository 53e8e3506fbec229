"""A provider call ends by its deadline however its answer trickles in, over a real socket.

The server here (a thread of the test) reads the request, sends the status line and headers,
then one body byte every 0.2 s for far longer than any deadline: every read is quicker than
httpx's per-read timeout, so only the call's overall deadline can end it (FAULTS.md, "slow
answer"). The same server also answers quickly, or slowly but within the deadline.
"""

from __future__ import annotations

import json
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from worker.errors import Outcome, ProviderError
from worker.providers.deadline import call_deadline_seconds
from worker.providers.inveterate import InveterateClient

pytestmark = pytest.mark.integration

HTTP_TIMEOUT = 1.0  # per socket operation; the call's deadline is 2 * 1 + 5 = 7 s
DEADLINE = call_deadline_seconds(HTTP_TIMEOUT)
TRICKLE_INTERVAL = 0.2
CREDITS = "/v2.0/admin/members/cust-1/credits"
BODY = json.dumps({"message": "ok", "data": {"id": "cr_1"}}).encode()


class Handler(socketserver.StreamRequestHandler):
    """One connection: answers requests (keep-alive) the way ``server.mode`` says."""

    server: ProviderStub

    def handle(self) -> None:
        self.server.connections += 1
        try:
            while self.read_request():
                mode = self.server.mode
                if mode == "trickle":
                    self.trickle(b"x" * 1_000_000, TRICKLE_INTERVAL)
                    return
                if mode == "slow":  # slower than one read timeout, well within the deadline
                    self.trickle(BODY, 1.5 / len(BODY))
                else:
                    self.wfile.write(self.head(len(BODY)) + BODY)
                    self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return  # the client gave up: what the trickle waits for

    def read_request(self) -> bool:
        length = 0
        line = self.rfile.readline()
        if not line:
            return False
        while line not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
            line = self.rfile.readline()
        self.rfile.read(length)
        return True

    @staticmethod
    def head(length: int) -> bytes:
        return (
            f"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n"
        ).encode()

    def trickle(self, body: bytes, interval: float) -> None:
        self.wfile.write(self.head(len(body)))
        self.wfile.flush()
        for byte in body:
            if self.server.stopping.wait(interval):  # the server's pace, not a test's wait
                return
            self.wfile.write(bytes([byte]))
            self.wfile.flush()


class ProviderStub(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.mode = "quick"
        self.connections = 0
        self.stopping = threading.Event()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


@pytest.fixture
def stub() -> Iterator[ProviderStub]:
    server = ProviderStub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.stopping.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def client(stub: ProviderStub) -> Iterator[InveterateClient]:
    with InveterateClient(stub.url, SecretStr("key"), HTTP_TIMEOUT) as client:
        yield client


def post(client: InveterateClient) -> int:
    response = client._request("POST", CREDITS, content=b'{"amount": 5}')
    return response.status_code


def test_a_trickling_answer_ends_at_the_deadline_as_ambiguous(
    stub: ProviderStub, client: InveterateClient
) -> None:
    stub.mode = "trickle"
    started = time.monotonic()
    with pytest.raises(ProviderError) as raised:
        post(client)
    elapsed = time.monotonic() - started
    assert raised.value.outcome is Outcome.AMBIGUOUS  # the POST was sent: it may have applied
    assert "deadline" in str(raised.value)
    # Not an early per-read timeout (each byte came within 0.2 s), and not much past it.
    assert DEADLINE - 0.1 <= elapsed <= DEADLINE + 1.0, elapsed

    stub.mode = "quick"  # the same server, the same client, now answering at once
    assert post(client) == 201


def test_quick_answers_are_unaffected(stub: ProviderStub, client: InveterateClient) -> None:
    started = time.monotonic()
    for _ in range(50):
        assert post(client) == 201
    assert client._request("GET", CREDITS, params={"limit": 1}).json()["data"]["id"] == "cr_1"
    assert time.monotonic() - started < DEADLINE
    assert stub.connections == 1  # one kept-alive connection served every call


def test_a_slow_answer_within_the_deadline_is_read_whole(
    stub: ProviderStub, client: InveterateClient
) -> None:
    """Slower than one read timeout, within the deadline: an honest slow provider."""
    stub.mode = "slow"
    started = time.monotonic()
    response = client._request("GET", CREDITS)
    assert response.content == BODY
    assert HTTP_TIMEOUT < time.monotonic() - started < DEADLINE
