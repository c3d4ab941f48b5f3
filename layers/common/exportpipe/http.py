"""HTTP for upstream APIs: one requests Session per client, and a download opener that follows
redirects by hand so that upstream credentials go only to the API host.

Three things are guarded here, for every source:

- **Where a request goes.** A result URL (or a redirect's ``Location``) comes from the upstream and is
  checked with the parser that connects (urllib3's ``parse_url``, after requests prepared the URL),
  and refused when another parser could read it differently: backslashes, userinfo, percent-encoded
  or non-ASCII hosts, control characters, numeric IPv4 forms other than the dotted quad, or any
  disagreement between ``urlsplit`` and urllib3 on the scheme, host or port. HTTPS only; plain HTTP
  and internal addresses (private, loopback, link-local, ...) only to hosts listed by exact name
  (an auth host, or an allow-list entry that is not a ``*.`` wildcard). At connect time the
  Session's adapter checks the address the socket actually reached, so a name that resolves to an
  internal address (DNS rebinding) is refused too unless it is listed by exact name.
- **Who gets the credentials.** :func:`open_download` sends the auth headers only while the URL's
  host is one of the client's auth hosts (requests drops ``Authorization`` on a cross-host redirect
  but keeps every other header, a source's own credential headers among them).
- **How long a call waits inside the Lambda.** Every in-call wait (urllib3's retry backoff, a
  ``Retry-After``, a source's own backoff) draws from one budget of :data:`IN_CALL_WAIT_LIMIT`
  seconds per call; a longer wait is handed back to the workflow as
  :class:`~exportpipe.errors.UpstreamRateLimitedError` with ``retry_after``.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import DEFAULT_POOLBLOCK, HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import MaxRetryError, ResponseError
from urllib3.response import BaseHTTPResponse
from urllib3.util import parse_url
from urllib3.util.retry import Retry

from exportpipe.errors import (
    UnsafeDownloadError,
    UpstreamError,
    UpstreamRateLimitedError,
    UpstreamUnavailableError,
    scrub,
)

# The most one call (with its retries, renewals and backoffs) may wait inside the Lambda, in all.
IN_CALL_WAIT_LIMIT = 5.0
# The longest Retry-After taken at its word: an upstream cannot park a job for longer per refusal.
MAX_RETRY_AFTER = 86400.0
MAX_REDIRECTS = 5
RETRY_STATUSES = (500, 502, 503, 504)

# The one function that removes query strings and userinfo from a text (a URL, a message).
redact = scrub

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# ---- waits inside the Lambda ---------------------------------------------------------------------


class WaitBudget:
    """What one upstream call may still wait inside the Lambda (:data:`IN_CALL_WAIT_LIMIT` in all)."""

    def __init__(
        self, limit: float = IN_CALL_WAIT_LIMIT, sleep: Callable[[float], None] | None = None
    ) -> None:
        self.limit = limit
        self.spent = 0.0
        self._sleep = sleep

    @property
    def left(self) -> float:
        return max(self.limit - self.spent, 0.0)

    def fits(self, seconds: float) -> bool:
        return seconds <= self.left + 1e-9

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds`` (the caller checked :meth:`fits`); never more than what is left."""
        seconds = min(max(seconds, 0.0), self.left)
        if seconds > 0:
            (self._sleep or time.sleep)(seconds)
            self.spent += seconds


_budget: ContextVar[WaitBudget | None] = ContextVar("exportpipe_wait_budget", default=None)


@contextmanager
def in_call_waits(sleep: Callable[[float], None] | None = None) -> Iterator[WaitBudget]:
    """The wait budget of one upstream call: every wait inside draws from it — urllib3's retries in
    the Session, a source's own backoff. Nested, the outermost budget is shared."""
    current = _budget.get()
    if current is not None:
        yield current
        return
    budget = WaitBudget(sleep=sleep)
    token = _budget.set(budget)
    try:
        yield budget
    finally:
        _budget.reset(token)


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` value (delay-seconds or an HTTP-date) in seconds from now, at most
    :data:`MAX_RETRY_AFTER`; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]+", value):
        seconds = float(int(value))
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def upstream_refusal(
    status: int, headers: Mapping[str, str], message: str, *, code: int | str | None = None
) -> UpstreamError:
    """The error for a refused call: a 429 / 503 that says when to come back is a rate-limit
    refusal carrying that wait (the workflow waits it out), other 429 and 5xx are transient, the
    rest are refusals that retrying will not fix."""
    if status in (429, 503):
        after = retry_after_seconds(headers.get("Retry-After"))
        if after is not None:
            return UpstreamRateLimitedError(
                f"{message} (Retry-After {after:g} s)", status=status, code=code, retry_after=after
            )
    if status == 429 or status >= 500:
        return UpstreamUnavailableError(message, status=status, code=code)
    return UpstreamError(message, status=status, code=code)


class _BoundedRetry(Retry):
    """urllib3's Retry, with every wait (backoff or ``Retry-After``) drawn from the call's
    :class:`WaitBudget`: a wait that does not fit ends the retries, and the caller gets the last
    answer (a 503 with its ``Retry-After``, say) or the connection error."""

    @classmethod
    def of(cls, retry: Retry) -> _BoundedRetry:
        """``retry`` with the same settings and state, its waits bounded."""
        if isinstance(retry, cls):
            return retry
        bounded = retry.new()
        bounded.__class__ = cls  # the same attributes; only sleep and increment differ
        return bounded  # type: ignore[return-value]

    def _next_wait(self, response: BaseHTTPResponse | None) -> float:
        if self.respect_retry_after_header and response is not None:
            after = retry_after_seconds(response.headers.get("Retry-After"))
            if after:
                return after
        return self.get_backoff_time()

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        new = super().increment(method, url, response, error, _pool, _stacktrace)
        wait = new._next_wait(response)
        budget = _budget.get()
        if budget is not None and not budget.fits(wait):
            reason = error or ResponseError(f"a wait of {wait:g} s is more than this call may still wait")
            raise MaxRetryError(_pool, url, reason) from error  # type: ignore[arg-type]
        return new

    def sleep(self, response: BaseHTTPResponse | None = None) -> None:
        budget = _budget.get() or WaitBudget()
        budget.wait(self._next_wait(response))


# ---- where a request may go ---------------------------------------------------------------------

# Anything but visible ASCII (controls, spaces, non-ASCII), and backslashes: parsers differ on them.
_FORBIDDEN = re.compile(r"[^\x21-\x7e]|\\")
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
# A last label that a resolver reads as (part of) an IPv4 address: 1.2.3.4, 127.1, 0x7f.1, 2130706433
_NUMERIC = re.compile(r"0x[0-9a-f]*|[0-9]+")


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def _bare(host: str) -> str:
    host = host.lower()
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    for pattern in allowed:
        if pattern.startswith("*.") and (host.endswith(pattern[1:]) or host == pattern[2:]):
            return True
        if host == pattern:
            return True
    return False


def exact_hosts(allowed: Iterable[str]) -> frozenset[str]:
    """The allow-list entries that name one host (not a ``*.`` wildcard)."""
    return frozenset(_bare(h) for h in allowed if h and not h.startswith("*."))


def _internal(ip: IPAddress) -> bool:
    """Not a public unicast address: private, loopback, link-local, shared, reserved, multicast...
    An IPv6 form that embeds an IPv4 address (mapped, 6to4, Teredo) counts as that address."""
    embedded: list[IPAddress] = []
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            embedded.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            embedded.append(ip.sixtofour)
        if ip.teredo is not None:
            embedded.extend(ip.teredo)
    return any(not a.is_global or a.is_multicast for a in (ip, *embedded))


def _loopback(host: str, ip: IPAddress | None) -> bool:
    if ip is None:
        return host == "localhost" or host.endswith(".localhost")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _address_of(host: str) -> IPAddress | None:
    """The IP address ``host`` is written as, or None for a name. Raises ValueError for a host that
    is neither a canonical address nor a valid name (``127.1``, ``0x7f.1``, ``2130706433``, ...)."""
    if ":" in host:
        return ipaddress.IPv6Address(host)
    if _NUMERIC.fullmatch(host.rsplit(".", 1)[-1]):
        try:
            ip = ipaddress.IPv4Address(host)  # only the dotted quad, without leading zeros
        except ValueError:
            ip = None
        if ip is None or str(ip) != host:
            raise ValueError(f"{host!r} is an IPv4 address to a resolver, but not written as a dotted quad")
        return ip
    if len(host) > 253 or not _HOSTNAME.fullmatch(host):
        raise ValueError(f"{host!r} is not a valid host name")
    return None


def _check_url(url: str, auth_hosts: frozenset[str], allowed: tuple[str, ...]) -> str:
    """Refuse ``url`` unless it is safe to request (see the module's docstring); return its host."""
    shown = scrub(url)

    def refuse(why: str) -> UnsafeDownloadError:
        return UnsafeDownloadError(f"result URL {shown!r} refused: {why}")

    scheme, host = _unambiguous(url, refuse)
    try:
        ip = _address_of(host)
    except ValueError as exc:
        raise refuse(str(exc)) from None
    explicit = host in auth_hosts or host in exact_hosts(allowed)
    loopback = _loopback(host, ip)
    if (loopback or (ip is not None and _internal(ip))) and not explicit:
        raise refuse(f"host {host!r} is internal; only hosts allow-listed by exact name may be")
    if scheme == "http" and not (loopback and explicit):
        raise refuse(
            f"host {host!r}: plain HTTP is only allowed on loopback hosts allow-listed by exact name"
        )
    if host not in auth_hosts and not host_allowed(host, allowed):
        raise refuse(f"host {host!r} is not the API host and not in the allow-list")
    return host


def _unambiguous(url: str, refuse: Callable[[str], UnsafeDownloadError]) -> tuple[str, str]:
    """The URL's scheme and host, if every parser that matters reads the same ones (urlsplit, which
    the checks read; urllib3, which connects; the URL requests prepares and sends); else refused."""
    if _FORBIDDEN.search(url):
        raise refuse("it holds a backslash, white space, a control or a non-ASCII character")
    try:
        split = urlsplit(url)
        split_port = split.port
        connecting = parse_url(url)
        prepared = requests.PreparedRequest()
        prepared.prepare_url(url, None)
        sent = parse_url(prepared.url or "")
    except (ValueError, requests.RequestException) as exc:
        raise refuse(f"it does not parse ({exc})") from None
    scheme = split.scheme.lower()
    if scheme not in ("https", "http"):
        raise refuse(f"scheme {scheme!r} is not http(s)")
    if "@" in split.netloc or connecting.auth or sent.auth:
        raise refuse("it carries userinfo (user@host)")
    if "%" in split.netloc:
        raise refuse("its host is percent-encoded")
    host = (split.hostname or "").lower()
    if not host:
        raise refuse("it names no host")
    for other in (connecting, sent):
        if (_bare(other.host or ""), other.port, other.scheme) != (host, split_port, scheme):
            raise refuse("URL parsers disagree on its host")
    return scheme, host


# ---- the connection guard (DNS rebinding) --------------------------------------------------------


class PeerGuard:
    """Refuses a connection whose socket reached an internal address, unless the URL's host is one
    of the ``trusted`` names (the client's auth hosts, exact allow-list entries)."""

    def __init__(self, trusted: Iterable[str] = ()) -> None:
        self._trusted = frozenset(_bare(h) for h in trusted)

    @property
    def trusted(self) -> frozenset[str]:
        return self._trusted

    def trust(self, hosts: Iterable[str]) -> None:
        self._trusted = self._trusted | {_bare(h) for h in hosts}

    def check(self, host: str, peer: str) -> None:
        try:
            ip = ipaddress.ip_address(peer.split("%", 1)[0])
        except ValueError:  # not an IP socket (a proxy's Unix socket, say): nothing to check
            return
        if _internal(ip) and _bare(host) not in self._trusted:
            raise UnsafeDownloadError(
                f"host {host!r} resolved to {ip}, an internal address; only hosts allow-listed by exact "
                "name may"
            )


def _checked(guard: PeerGuard, host: str, sock: socket.socket) -> socket.socket:
    try:
        guard.check(host, str(sock.getpeername()[0]))
    except BaseException:
        sock.close()
        raise
    return sock


class _GuardedHTTPConnection(HTTPConnection):
    def __init__(self, *args: Any, peer_guard: PeerGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._peer_guard = peer_guard

    def _new_conn(self) -> socket.socket:
        return _checked(self._peer_guard, self.host, super()._new_conn())


class _GuardedHTTPSConnection(HTTPSConnection):
    def __init__(self, *args: Any, peer_guard: PeerGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._peer_guard = peer_guard

    def _new_conn(self) -> socket.socket:
        # before the TLS handshake: nothing but the TCP connection reached the peer
        return _checked(self._peer_guard, self.host, super()._new_conn())


class _GuardedPoolManager(PoolManager):
    def __init__(self, *args: Any, peer_guard: PeerGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._peer_guard = peer_guard

    def _new_pool(
        self, scheme: str, host: str, port: int, request_context: dict[str, Any] | None = None
    ) -> HTTPConnectionPool:
        pool = super()._new_pool(scheme, host, port, request_context)
        if isinstance(pool, HTTPSConnectionPool):
            pool.ConnectionCls = _GuardedHTTPSConnection
        else:
            pool.ConnectionCls = _GuardedHTTPConnection
        pool.conn_kw["peer_guard"] = self._peer_guard
        return pool


class GuardedAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections pass :class:`PeerGuard` and whose sends wait (retries) at
    most :data:`IN_CALL_WAIT_LIMIT` in all, or what is left of the enclosing call's budget."""

    def __init__(self, *, guard: PeerGuard | None = None, **kwargs: Any) -> None:
        self.guard = guard or PeerGuard()
        super().__init__(**kwargs)
        self.max_retries = _BoundedRetry.of(self.max_retries)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = DEFAULT_POOLBLOCK, **pool_kwargs: Any
    ) -> None:
        self._pool_connections = connections
        self._pool_maxsize = maxsize
        self._pool_block = block
        self.poolmanager = _GuardedPoolManager(
            num_pools=connections, maxsize=maxsize, block=block, peer_guard=self.guard, **pool_kwargs
        )

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        with in_call_waits():
            return super().send(
                request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies
            )


def make_session(*, total_retries: int = 4, backoff: float = 0.5) -> requests.Session:
    """A Session that retries connection errors and 5xx on idempotent methods, within the call's
    wait budget, and whose connections pass the :class:`PeerGuard` (see :func:`guard_session`).

    A 429 or 503 is retried here only while its ``Retry-After`` fits that budget; otherwise the
    caller gets it (and :func:`upstream_refusal` turns it into a wait for the workflow). Each source
    knows what its other rate-limit answers mean.
    """
    retry = _BoundedRetry(
        total=total_retries,
        connect=total_retries,
        read=2,
        status=total_retries,
        backoff_factor=backoff,
        backoff_max=20,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    session = requests.Session()
    adapter = GuardedAdapter(max_retries=retry, pool_connections=4, pool_maxsize=8)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def guard_session(session: requests.Session, trusted: Iterable[str]) -> None:
    """Let connections of ``session`` reach internal addresses only for the ``trusted`` host names;
    an adapter that is not guarded yet (a Session built elsewhere) is replaced by one that is, with
    the same retries, their waits bounded."""
    hosts = list(trusted)
    for prefix, adapter in list(session.adapters.items()):
        if not isinstance(adapter, GuardedAdapter):
            retries = adapter.max_retries if isinstance(adapter, HTTPAdapter) else 0
            adapter = GuardedAdapter(max_retries=retries)
            session.mount(prefix, adapter)
        adapter.guard.trust(hosts)


# ---- downloads ----------------------------------------------------------------------------------


def _error_code(body: str) -> int | str | None:
    """The ``code`` of a JSON error body (``{"code", "message"}``, as some upstreams answer), if any."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    code = parsed.get("code") if isinstance(parsed, dict) else None
    return code if isinstance(code, int | str) else None


def open_download(
    session: requests.Session,
    url: str,
    *,
    auth_headers: Mapping[str, str],
    auth_hosts: frozenset[str],
    allowed_hosts: tuple[str, ...],
    timeout: float,
) -> requests.Response:
    """GET ``url`` as a stream; return the final 200 response (the caller must close it).

    ``auth_headers`` go only to ``auth_hosts``; every hop is checked by :func:`_check_url` before
    anything is sent to it, and the session's connections by its :class:`PeerGuard`.

    Raises UpstreamRateLimitedError for a 429/503 with ``Retry-After``, UpstreamUnavailableError
    for other 429/5xx and connection errors, UpstreamError for other 4xx, UnsafeDownloadError for a
    URL or redirect that may not be requested.
    """
    # the hosts this download may find at an internal address, and no other (DNS rebinding)
    guard_session(session, auth_hosts | exact_hosts(allowed_hosts))
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        host = _check_url(current, auth_hosts, allowed_hosts)
        # Credentials only to the upstream's own hosts, never to the storage a download redirects to.
        # identity: a compressed body would not match Content-Length, which detects truncation.
        headers = {"Accept-Encoding": "identity"}
        if host in auth_hosts:
            headers |= auth_headers
        try:
            resp = session.get(current, headers=headers, stream=True, allow_redirects=False, timeout=timeout)
        except requests.RequestException as exc:
            raise UpstreamUnavailableError(
                f"download of {scrub(current)!r} failed: {scrub(str(exc))}"
            ) from exc
        if resp.status_code in (301, 302, 303, 307, 308):
            location = resp.headers.get("Location")
            resp.close()
            if not location:
                raise UpstreamError(
                    f"redirect without Location from {scrub(current)!r}", status=resp.status_code
                )
            current = urljoin(current, location)
            continue
        if resp.status_code == 200:
            return resp
        body = resp.text[:500]
        code = _error_code(body)
        resp.close()
        message = f"download of {scrub(current)!r} answered {resp.status_code}: {body}"
        raise upstream_refusal(resp.status_code, resp.headers, message, code=code)
    raise UpstreamError(f"more than {MAX_REDIRECTS} redirects downloading {scrub(url)!r}")


# ---- what every source client shares -----------------------------------------------------------

DEADLINE_MARGIN = 10.0
"""Seconds a client keeps back from the invocation's end, to record what happened."""


def time_left(remaining_seconds: Callable[[], float] | None) -> float:
    """Seconds this invocation may still spend upstream (:data:`DEADLINE_MARGIN` kept back)."""
    return float("inf") if remaining_seconds is None else remaining_seconds() - DEADLINE_MARGIN


def request_timeout(timeout: float, remaining_seconds: Callable[[], float] | None) -> float:
    """The timeout of the next request: ``timeout``, or less to end inside the invocation; out of
    time, an :class:`UpstreamUnavailableError` (the next attempt goes on)."""
    left = time_left(remaining_seconds)
    if left < 1:
        raise UpstreamUnavailableError("out of time in this invocation; the next attempt goes on")
    return min(timeout, left)


def json_object(resp: requests.Response) -> dict[str, Any]:
    """An upstream answer's JSON object; another JSON value under ``value``, text under ``message``."""
    try:
        value = resp.json()
    except ValueError:
        return {"message": resp.text[:500]}
    return value if isinstance(value, dict) else {"value": value}
