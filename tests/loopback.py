"""A tiny HTTP server on loopback for tests: it answers what a test tells it to and records every
request that reached it (method, path, headers), so a test can prove where credentials went."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]


# (status, headers, body) for a request's method and path
Answer = tuple[int, dict[str, str], bytes]
Route = Callable[[str, str], Answer]


@dataclass
class RecordingServer:
    port: int = 0
    answer: Route = field(default=lambda method, path: (200, {"Content-Type": "text/plain"}, b"ok"))
    received: list[Received] = field(default_factory=list)

    def origin(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}"


@contextmanager
def recording_server(answer: Route | None = None) -> Iterator[RecordingServer]:
    """Serve on 127.0.0.1 (a free port) until the block ends."""
    state = RecordingServer()
    if answer is not None:
        state.answer = answer
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            with lock:
                state.received.append(Received(self.command, self.path, dict(self.headers.items())))
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            status, headers, body = state.answer(self.command, self.path)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_HEAD = _serve

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
