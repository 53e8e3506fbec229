"""HTTP plumbing: a threaded loopback server that hands each request to the right API.

Everything about the providers lives in the handlers; this module only reads
requests, writes replies (all at once, or trickled for a ``trickle`` fault), and can be
stopped cleanly even while clients hold keep-alive connections open or a
``timeout_after`` or ``trickle`` fault is holding a reply.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from worker.sandbox import control, pipeline, trickle
from worker.sandbox.chargebee import ChargebeeApi
from worker.sandbox.inveterate import InveterateApi
from worker.sandbox.state import SandboxState
from worker.sandbox.wire import ApiRequest, Reply

# Paths do not collide, so one server is both the Inveterate base URL and the Chargebee site.
_API_PREFIXES = {"/v2.0/": "inveterate", "/api/v2/": "chargebee"}
# An idle keep-alive connection is dropped after this, so threads do not pile up.
IDLE_TIMEOUT_SECONDS = 60.0
# How often serve_forever checks for stop(): bounds how long a test waits in teardown.
POLL_INTERVAL_SECONDS = 0.02


class _SandboxHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for a held reply
    request_queue_size = 512  # many Celery threads connect at once
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: SandboxState, access_log: bool) -> None:
        self.state = state
        self.access_log = access_log
        self.apis: dict[str, pipeline.ProviderApi] = {
            "inveterate": InveterateApi(state),
            "chargebee": ChargebeeApi(state),
        }
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that vanished (a worker killed mid-call) is normal here, not a traceback."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Cut every open connection so their handler threads end now."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx clients expect
    timeout = IDLE_TIMEOUT_SECONDS
    # Headers and body go out in two writes; with Nagle on, delayed ACKs cost ~40 ms a call.
    disable_nagle_algorithm = True
    server: _SandboxHttpServer

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        # Only the request line and status are logged, never headers (they carry keys).
        if self.server.access_log:
            sys.stderr.write(f"sandbox {self.address_string()} {format % args}\n")

    def _read(self) -> ApiRequest:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        return ApiRequest(
            method=self.command,
            path=url.path,
            query=parse_qs(url.query, keep_blank_values=True),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
        )

    def _dispatch(self) -> None:
        state = self.server.state
        try:
            request = self._read()
            if request.path == control.PREFIX or request.path.startswith(control.PREFIX + "/"):
                self._write(control.handle(state, request))
                return
            api = next(
                (
                    self.server.apis[name]
                    for prefix, name in _API_PREFIXES.items()
                    if request.path.startswith(prefix)
                ),
                None,
            )
            if api is None:
                self._write(Reply.json(404, {"message": f"no such path {request.path}"}))
                return
            outcome = pipeline.run(api, request, state)
            if outcome.trickle and outcome.reply is not None:
                self._write_slowly(outcome.reply, outcome.hold)
                return
            state.pause(outcome.hold)
            if outcome.reply is None or state.stopping.is_set():
                self.close_connection = True  # hang up unanswered: the client cannot know
                return
            self._write(outcome.reply)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a sandbox bug must show in the test, not hang it
            traceback.print_exc()
            self._write(Reply.json(500, {"message": f"sandbox bug: {exc!r}", "data": {}}))

    def _write(self, reply: Reply) -> None:
        try:
            self._write_head(reply, len(reply.body))
            self.wfile.write(reply.body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (its read timeout) first

    def _write_slowly(self, reply: Reply, seconds: float) -> None:
        """Status line and headers now, then the body in small pieces over ``seconds``.

        Content-Length announces the whole body, so the client keeps reading to the end;
        a stop cuts the trickle short and hangs up (the client sees a truncated body).
        """
        stopping = self.server.state.stopping
        pieces = trickle.pieces(reply.body, reply.content_type, seconds)
        gap = trickle.gap(seconds, len(pieces))
        try:
            self._write_head(reply, sum(len(piece) for piece in pieces))
            for piece in pieces:
                if stopping.wait(gap):
                    self.close_connection = True
                    return
                self.wfile.write(piece)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _write_head(self, reply: Reply, length: int) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(length))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()


class SandboxServer:
    """Owns the listening socket and the thread that serves it."""

    def __init__(
        self, state: SandboxState, host: str = "127.0.0.1", port: int = 0, access_log: bool = False
    ) -> None:
        self.state = state
        self._httpd = _SandboxHttpServer((host, port), state, access_log)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"

    def start(self) -> None:
        if self._thread is not None:
            return
        self.state.stopping.clear()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": POLL_INTERVAL_SECONDS},
            name=f"creditq-sandbox-{self.address[1]}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, wake every held reply, cut open connections, free the port."""
        self.state.stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.drop_connections()
        self._httpd.server_close()
