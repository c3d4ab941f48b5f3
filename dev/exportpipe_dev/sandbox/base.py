"""Shared machinery of the source sandboxes: a controllable clock, a loopback HTTP server, a base class.

A sandbox is an in-process emulator of one upstream API. It sees plain :class:`Request` objects and
answers :class:`Response` objects; :class:`SandboxServer` puts it behind a real HTTP/1.1 server on
127.0.0.1 (stdlib ``ThreadingHTTPServer``, daemon threads) so clients are exercised over real sockets:
keep-alive, streamed bodies, and each response framed as real servers frame them (``Response.framing``):
``Content-Length`` (the default), ``Transfer-Encoding: chunked``, or close-delimited (neither header;
the body ends when the server closes the connection), each optionally cut short.

Development only: never shipped to Lambda; standard library plus the ``exportpipe`` package.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "FRAMINGS",
    "SANDBOXES",
    "Clock",
    "Framing",
    "Headers",
    "LogEntry",
    "Request",
    "Response",
    "Sandbox",
    "SandboxServer",
    "build_sandbox",
    "run_cli",
]


class Clock:
    """A thread-safe clock that tests can freeze and move forward.

    By default it follows real time (UTC). ``freeze()`` stops it (at the given instant or now);
    ``advance()`` moves it forward, frozen or not; ``unfreeze()`` lets it run again from where it is.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._offset = timedelta(0)
        self._frozen: datetime | None = None
        if start is not None:
            self.freeze(start)

    def now(self) -> datetime:
        """The current instant, timezone-aware (UTC)."""
        with self._lock:
            if self._frozen is not None:
                return self._frozen
            return datetime.now(UTC) + self._offset

    def freeze(self, at: datetime | None = None) -> datetime:
        """Stop the clock at ``at`` (aware; default: the current instant) and return that instant."""
        if at is not None and at.tzinfo is None:
            raise ValueError("Clock.freeze needs an aware datetime")
        instant = (at or self.now()).astimezone(UTC)
        with self._lock:
            self._frozen = instant
        return instant

    def unfreeze(self) -> None:
        """Let the clock run again, continuing from its current reading."""
        with self._lock:
            if self._frozen is not None:
                self._offset = self._frozen - datetime.now(UTC)
                self._frozen = None

    @property
    def frozen(self) -> bool:
        """Whether the clock is frozen."""
        with self._lock:
            return self._frozen is not None

    def advance(self, delta: float | timedelta) -> datetime:
        """Move the clock forward by ``delta`` (seconds or a timedelta) and return the new reading."""
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        if step < timedelta(0):
            raise ValueError("the clock only moves forward")
        with self._lock:
            if self._frozen is not None:
                self._frozen += step
            else:
                self._offset += step
        return self.now()


class Headers(Mapping[str, str]):
    """Case-insensitive, read-only HTTP headers (the last value wins for repeated names)."""

    def __init__(self, items: Iterable[tuple[str, str]] | Mapping[str, str] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._items: dict[str, tuple[str, str]] = {}
        for name, value in pairs:
            self._items[name.lower()] = (name, value)

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()][1]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


@dataclass(frozen=True)
class Request:
    """One HTTP request as a sandbox sees it.

    ``query`` keeps the last value of each parameter; ``query_list`` keeps every value. ``host`` is the
    Host header (``127.0.0.1:<port>`` by default) and ``server_port`` the port the server listens on.
    """

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    host: str = "127.0.0.1"
    server_port: int = 0
    query_list: Mapping[str, list[str]] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        """``http://<host>``: the origin the client addressed, for building absolute URLs."""
        return f"http://{self.host}"

    @property
    def hostname(self) -> str:
        """The host name of the Host header, without the port."""
        return urlsplit(f"http://{self.host}").hostname or ""

    def json(self) -> Any:
        """The body parsed as JSON (raises ``ValueError`` when it is not JSON)."""
        return json.loads(self.body.decode("utf-8"))

    @property
    def storage_origin(self) -> str:
        """The origin of the sandbox's "storage host": this server under its *other* loopback name
        (``localhost`` ↔ ``127.0.0.1``), so a client following a download redirect crosses hosts, as
        it would to a vendor's object storage, and must not carry the API's credentials there."""
        other = "127.0.0.1" if self.hostname == "localhost" else "localhost"
        return f"http://{other}:{self.server_port}"

    def basic_credentials(self) -> tuple[str, str] | None:
        """``(user, password)`` of an HTTP Basic ``Authorization`` header, or None."""
        scheme, _, value = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except ValueError:
            return None
        user, sep, secret = decoded.partition(":")
        return (user, secret) if sep else None


#: How a response body is delimited on the wire (RFC 9112 §6): ``length`` announces Content-Length,
#: ``chunked`` sends Transfer-Encoding: chunked, ``close`` sends neither and closes the connection
#: after the body.
Framing = Literal["length", "chunked", "close"]
FRAMINGS: tuple[Framing, ...] = ("length", "chunked", "close")


@dataclass
class Response:
    """What a sandbox answers.

    ``body`` is bytes or an iterable of byte chunks (streamed); a streamed body framed by length needs
    ``content_length``. ``framing`` delimits the body (see :data:`Framing`). ``truncate_after`` sends
    only that many body bytes and then closes the connection: with ``length`` framing the full length
    is announced; ``chunked`` announces the chunk under way in full and never sends the last chunk
    (a cut at a chunk boundary when the budget ends there); ``close`` just closes, which a client
    cannot tell from the end. ``on_close`` callbacks run once the body was sent (or sending failed).
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Iterable[bytes] = b""
    content_length: int | None = None
    truncate_after: int | None = None
    framing: Framing = "length"
    on_close: list[Callable[[], None]] = field(default_factory=list)

    @classmethod
    def json(cls, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
        """A JSON response."""
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        return cls(status, {"Content-Type": "application/json", **(headers or {})}, data)

    @classmethod
    def text(
        cls, status: int, text: str, content_type: str = "text/plain; charset=utf-8", **headers: str
    ) -> Response:
        """A text response."""
        return cls(status, {"Content-Type": content_type, **headers}, text.encode("utf-8"))

    def length(self) -> int:
        """The Content-Length to announce."""
        if isinstance(self.body, bytes | bytearray):
            return len(self.body)
        if self.content_length is None:
            raise ValueError("a streamed response needs content_length")
        return self.content_length

    def chunks(self) -> Iterator[bytes]:
        """The body as chunks."""
        if isinstance(self.body, bytes | bytearray):
            if self.body:
                yield bytes(self.body)
        else:
            yield from self.body

    def close(self) -> None:
        """Run the ``on_close`` callbacks (once)."""
        callbacks, self.on_close = self.on_close, []
        for callback in callbacks:
            callback()


@dataclass(frozen=True)
class LogEntry:
    """One request a sandbox answered.

    ``received`` is ``time.monotonic()`` when the sandbox got the request: real elapsed time (not the
    sandbox clock, which tests freeze and move), to check how long a client waited between calls.
    ``disruption`` names the wire misbehaviour the response was given, if any.
    """

    method: str
    path: str
    status: int
    query: Mapping[str, str]
    headers: Headers
    host: str
    received: float = 0.0
    disruption: str | None = None  # "reset", "truncate", "delay" or "trickle" when one was applied


@dataclass
class _Fault:
    status: int
    remaining: int
    path_prefix: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Disruption:
    """A misbehaviour of the next ``remaining`` matching responses (see :meth:`Sandbox.reset_requests`
    and its siblings)."""

    kind: str  # "reset", "truncate", "delay" or "trickle"
    remaining: int
    matches: Callable[[str], bool]
    after_bytes: int = 0
    seconds: float = 0.0
    before_response: bool = False


class _ResetConnection(Exception):
    """Raised from a response body to make the server reset the connection (TCP RST) right there."""


# How long a reset waits after the last bytes it sends, so the client has read the headers and those
# bytes before the RST arrives (a peer's RST discards what the receiver has not read yet).
_RESET_GRACE_SECONDS = 0.3
# A trickled body goes out in a slice every this many seconds.
_TRICKLE_STEP_SECONDS = 0.1


class Sandbox(ABC):
    """Base class of the source sandboxes.

    Subclasses set ``source`` and implement :meth:`handle` and :meth:`credentials`. The server calls
    :meth:`dispatch`, which answers injected faults (:meth:`fail_requests`) before :meth:`handle` sees
    the request, records every request in :attr:`request_log` and turns unexpected exceptions into a
    500. :meth:`attach` tells the sandbox the origin it is served at; :meth:`close` (called when the
    server stops) lets a sandbox stop background work such as webhook deliveries.
    ``fault_path_prefix`` is the path prefix :meth:`fail_requests` matches by default (the API's root).

    Besides error answers, the next matching *successful* responses can misbehave on the wire, once
    per ``times``: :meth:`reset_requests` (the connection is reset mid-body), :meth:`truncate_requests`
    (the body stops short of its Content-Length, clean close), :meth:`delay_requests` (the answer
    comes late: a client with a shorter read timeout gives up first) and :meth:`trickle_requests`
    (the body comes slowly, a little at a time, so no read timeout fires). They match ``path_prefix``
    (default: the class's ``fault_path_prefix``) or a ``match`` predicate on the path; a response
    that matches none is sent as it is. :meth:`clear_faults` forgets what is still queued.
    """

    source: ClassVar[str] = ""
    fault_path_prefix: ClassVar[str] = "/"

    def __init__(self, *, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.base_url: str | None = None
        self._log_lock = threading.Lock()
        self._log: list[LogEntry] = []
        self._faults_lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._disruptions: list[_Disruption] = []

    # ---- to implement ----------------------------------------------------------------------------

    @abstractmethod
    def handle(self, request: Request) -> Response:
        """Answer one request."""

    @abstractmethod
    def credentials(self) -> dict[str, str]:
        """The credentials a client needs (may refer to :attr:`base_url`)."""

    # ---- provided --------------------------------------------------------------------------------

    def attach(self, base_url: str) -> None:
        """Record the origin the sandbox is served at (``http://127.0.0.1:<port>``)."""
        self.base_url = base_url.rstrip("/")

    def close(self) -> None:  # noqa: B027 - an optional hook, a no-op unless a sandbox needs it
        """Stop background work (nothing by default); a sandbox may be served again afterwards."""

    def handshake(self, base_url: str | None = None) -> dict[str, Any]:
        """``{"source", "base_url", "credentials"}``: what a client needs to talk to this sandbox."""
        if base_url is not None:
            self.attach(base_url)
        if self.base_url is None:
            raise RuntimeError("the sandbox is not attached to a server yet")
        return {"source": self.source, "base_url": self.base_url, "credentials": self.credentials()}

    def fail_requests(
        self,
        status: int = 503,
        times: int = 1,
        path_prefix: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Make the next ``times`` requests under ``path_prefix`` answer ``status`` before any check.

        The answer is an HTML error page (what a load balancer in front of the API sends) with
        ``headers`` added (e.g. ``{"Retry-After": "120"}`` on a 429 or 503); the default prefix is the
        class's ``fault_path_prefix``. Faults queued earlier are used up first.
        """
        prefix = self.fault_path_prefix if path_prefix is None else path_prefix
        with self._faults_lock:
            self._faults.append(_Fault(status, times, prefix, dict(headers or {})))

    def reset_requests(
        self,
        after_bytes: int = 0,
        times: int = 1,
        path_prefix: str | None = None,
        *,
        before_response: bool = False,
        match: Callable[[str], bool] | None = None,
    ) -> None:
        """The next ``times`` matching successful responses send their headers and ``after_bytes``
        body bytes, then the connection is reset (TCP RST, as a crashed peer or a middlebox dropping
        the flow sends): the client reads ``ECONNRESET``, not a clean end. ``before_response``: the
        request is read and the connection reset before anything is answered (logged with status 0)."""
        self._disrupt("reset", times, path_prefix, match, after_bytes=after_bytes, before=before_response)

    def truncate_requests(
        self,
        after_bytes: int = 0,
        times: int = 1,
        path_prefix: str | None = None,
        *,
        match: Callable[[str], bool] | None = None,
    ) -> None:
        """The next ``times`` matching successful responses announce their full Content-Length but
        send only ``after_bytes`` body bytes, then close the connection cleanly (FIN)."""
        self._disrupt("truncate", times, path_prefix, match, after_bytes=after_bytes)

    def delay_requests(
        self,
        seconds: float,
        times: int = 1,
        path_prefix: str | None = None,
        *,
        match: Callable[[str], bool] | None = None,
    ) -> None:
        """The next ``times`` matching successful responses are held ``seconds`` before their status
        line is sent (a slow upstream): a client whose read timeout is shorter gives up first, and the
        late answer then goes to a closed connection."""
        self._disrupt("delay", times, path_prefix, match, seconds=seconds)

    def trickle_requests(
        self,
        seconds: float,
        times: int = 1,
        path_prefix: str | None = None,
        *,
        after_bytes: int = 0,
        match: Callable[[str], bool] | None = None,
    ) -> None:
        """The next ``times`` matching successful responses send their first ``after_bytes`` body bytes
        at full speed and the rest spread evenly over ``seconds`` (a slice every 0.1 s): a slow
        download during which every read gets data, so no read timeout fires."""
        self._disrupt("trickle", times, path_prefix, match, after_bytes=after_bytes, seconds=seconds)

    def clear_faults(self) -> None:
        """Forget every queued fault and disruption that was not used up."""
        with self._faults_lock:
            self._faults.clear()
            self._disruptions.clear()

    def _disrupt(
        self,
        kind: str,
        times: int,
        path_prefix: str | None,
        match: Callable[[str], bool] | None,
        *,
        after_bytes: int = 0,
        seconds: float = 0.0,
        before: bool = False,
    ) -> None:
        if after_bytes < 0 or seconds < 0 or times < 1:
            raise ValueError("after_bytes and seconds must not be negative, times must be positive")
        if match is None:
            prefix = self.fault_path_prefix if path_prefix is None else path_prefix
            match = lambda path: path.startswith(prefix)  # noqa: E731
        elif path_prefix is not None:
            raise ValueError("give either path_prefix or match, not both")
        with self._faults_lock:
            self._disruptions.append(_Disruption(kind, times, match, after_bytes, seconds, before))

    def _take_disruption(self, path: str, response: Response) -> _Disruption | None:
        """The disruption a successful response to ``path`` gets, or None (uses one up)."""
        if not 200 <= response.status < 300:
            return None
        with self._faults_lock:
            for disruption in self._disruptions:
                if disruption.remaining > 0 and disruption.matches(path):
                    disruption.remaining -= 1
                    break
            else:
                return None
            self._disruptions = [d for d in self._disruptions if d.remaining > 0]
        return disruption

    @staticmethod
    def _apply(disruption: _Disruption, response: Response) -> Response:
        """Make ``response`` misbehave as ``disruption`` says (the delay is slept here)."""
        if disruption.kind == "delay":
            time.sleep(disruption.seconds)
            return response
        if disruption.kind == "truncate":
            response.truncate_after = min(disruption.after_bytes, response.length())
            return response
        original = response.body
        response.content_length = response.length()
        source = iter([bytes(original)]) if isinstance(original, bytes | bytearray) else iter(original)
        if disruption.kind == "reset":
            response.body = _reset_after(source, disruption.after_bytes)
        else:
            response.body = _trickle(source, disruption.after_bytes, disruption.seconds, response.length())
        return response

    def _take_fault(self, path: str) -> Response | None:
        """The injected error page for a request to ``path``, or ``None`` (uses one fault up)."""
        with self._faults_lock:
            for fault in self._faults:
                if fault.remaining > 0 and path.startswith(fault.path_prefix):
                    fault.remaining -= 1
                    status, headers = fault.status, fault.headers
                    break
            else:
                return None
            self._faults = [f for f in self._faults if f.remaining > 0]
        html = f"<html><head><title>{status}</title></head><body><h1>Error {status}</h1></body></html>"
        return Response.text(status, html, "text/html; charset=utf-8", **headers)

    def dispatch(self, request: Request) -> Response:
        """Answer an injected fault or handle ``request`` and log it. Never raises, but to have the
        server reset the connection without an answer (:meth:`reset_requests` ``before_response``)."""
        received = time.monotonic()
        try:
            fault = self._take_fault(request.path)
            response = fault if fault is not None else self.handle(request)
            disruption = self._take_disruption(request.path, response) if fault is None else None
            if disruption is not None:
                response = self._apply(disruption, response)
        except Exception:  # the server must answer something; the traceback goes to stderr
            traceback.print_exc(file=sys.stderr)
            response = Response.text(500, "Internal Server Error")
            disruption = None
        unanswered = disruption is not None and disruption.before_response
        entry = LogEntry(
            request.method,
            request.path,
            0 if unanswered else response.status,
            dict(request.query),
            request.headers,
            request.host,
            received,
            disruption.kind if disruption is not None else None,
        )
        with self._log_lock:
            self._log.append(entry)
        if unanswered:
            response.close()
            raise _ResetConnection
        return response

    @property
    def request_log(self) -> list[LogEntry]:
        """A copy of the requests answered so far, oldest first."""
        with self._log_lock:
            return list(self._log)

    def clear_log(self) -> None:
        """Forget the logged requests."""
        with self._log_lock:
            self._log.clear()


def _reset_after(chunks: Iterator[bytes], budget: int) -> Iterator[bytes]:
    """The first ``budget`` bytes of ``chunks``, then a pause and :class:`_ResetConnection`."""
    for chunk in chunks:
        if budget <= 0:
            break
        piece = chunk[:budget]
        budget -= len(piece)
        yield piece
    time.sleep(_RESET_GRACE_SECONDS)
    raise _ResetConnection


def _trickle(chunks: Iterator[bytes], fast: int, seconds: float, total: int) -> Iterator[bytes]:
    """``chunks`` again: the first ``fast`` bytes at once, the rest in even slices over ``seconds``."""
    steps = max(1, int(seconds / _TRICKLE_STEP_SECONDS))
    slice_size = max(1, -(-max(total - fast, 0) // steps))
    pause = seconds / steps
    sent = 0
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            if sent < fast:
                piece = view[: fast - sent]
            else:
                time.sleep(pause)
                piece = view[:slice_size]
            view = view[len(piece) :]
            sent += len(piece)
            yield bytes(piece)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes; avoid delayed-ACK stalls
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        query_list: dict[str, list[str]] = {}
        for name, value in pairs:
            query_list.setdefault(name, []).append(value)
        port = self.server.server_address[1]
        request = Request(
            method=self.command,
            path=parts.path or "/",
            query={name: values[-1] for name, values in query_list.items()},
            headers=Headers(self.headers.items()),
            body=self._read_body(),
            host=self.headers.get("Host") or f"127.0.0.1:{port}",
            server_port=int(port),
            query_list=query_list,
        )
        response = self.server.app.dispatch(request)
        try:
            self._write(response, head_only=self.command == "HEAD")
        finally:
            response.close()

    def _write(self, response: Response, *, head_only: bool) -> None:
        framing = response.framing
        ends_with_close = framing == "close" or response.truncate_after is not None
        self.send_response(response.status)
        for name, value in response.headers.items():
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        if framing == "length":
            self.send_header("Content-Length", str(response.length()))
        elif framing == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        if ends_with_close:
            self.send_header("Connection", "close")
        self.end_headers()
        if head_only:
            if ends_with_close:
                self.close_connection = True
            return
        budget = response.truncate_after
        cut = False
        for chunk in response.chunks():
            if not chunk:
                continue
            announced = len(chunk)
            if budget is not None:
                chunk = chunk[:budget]
                budget -= len(chunk)
                cut = budget <= 0
            if framing == "chunked" and chunk:
                self.wfile.write(f"{announced:x}\r\n".encode() + chunk)
                if len(chunk) == announced:
                    self.wfile.write(b"\r\n")
            elif chunk:
                self.wfile.write(chunk)
            if cut:
                break
        if framing == "chunked" and not cut:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        if ends_with_close:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    app: Sandbox

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resets: set[int] = set()  # connections to reset rather than shut down (_ResetConnection)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Client disconnects mid-response are normal here (truncation tests, aborted downloads)."""
        exc = sys.exc_info()[1]
        if isinstance(exc, _ResetConnection):
            # close with SO_LINGER 0 and no shutdown first: the kernel sends RST instead of FIN
            with contextlib.suppress(OSError):
                request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self._resets.add(id(request))
            return
        if isinstance(exc, ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        if id(request) in self._resets:
            self._resets.discard(id(request))
            self.close_request(request)
            return
        super().shutdown_request(request)


class SandboxServer:
    """A sandbox served over real HTTP on loopback.

    ``port=0`` picks a free port. Use as a context manager (starts in a background thread, stops on exit)
    or call :meth:`start`/:meth:`stop`, or :meth:`serve_forever` to serve on the calling thread.
    """

    def __init__(self, app: Sandbox, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self._server = _Server((host, port), _Handler, bind_and_activate=True)
        self._server.app = app
        self._thread: threading.Thread | None = None
        app.attach(self.base_url)

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://<host>:<port>``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> SandboxServer:
        """Serve in a daemon thread; returns ``self``."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"sandbox-{self.app.source}",
                daemon=True,
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve on the calling thread until :meth:`stop` is called from another thread."""
        self._server.serve_forever(poll_interval=0.05)

    def stop(self) -> None:
        """Stop serving, close the listening socket and :meth:`Sandbox.close` the sandbox."""
        self._server.shutdown()
        self._server.server_close()
        self.app.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


#: Sandboxes by source id, as ``"module:Class"`` (imported on demand).
SANDBOXES: dict[str, str] = {
    "pardot": "exportpipe_dev.sandbox.pardot:PardotSandbox",
    "impact_clicks": "exportpipe_dev.sandbox.impact_clicks:ImpactClicksSandbox",
    "advocate": "exportpipe_dev.sandbox.advocate:AdvocateSandbox",
}


def build_sandbox(source: str, **kwargs: Any) -> Sandbox:
    """Instantiate the sandbox registered for ``source`` (``KeyError`` when there is none)."""
    module_name, _, class_name = SANDBOXES[source].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    sandbox = cls(**kwargs)
    if not isinstance(sandbox, Sandbox):
        raise TypeError(f"{SANDBOXES[source]} is not a Sandbox")
    return sandbox


def run_cli(source: str, port: int) -> int:
    """Serve the ``source`` sandbox on 127.0.0.1:``port`` until SIGINT/SIGTERM; returns the exit status.

    The first stdout line is the handshake JSON (``source``, ``base_url``, ``credentials``), flushed.
    """
    if source not in SANDBOXES:
        print(f"unknown sandbox {source!r}; known: {', '.join(sorted(SANDBOXES))}", file=sys.stderr)
        return 2
    server = SandboxServer(build_sandbox(source), port=port)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        print(json.dumps(server.app.handshake(server.base_url)), flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
