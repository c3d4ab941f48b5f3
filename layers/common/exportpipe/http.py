"""HTTP for upstream APIs: one requests Session per client with timeouts and urllib3 retries, and a
download opener that follows redirects by hand so that upstream credentials go only to the API host.

requests drops ``Authorization`` on a cross-host redirect but keeps every other header (Pardot's
``Pardot-Business-Unit-Id``, for one), and it follows redirects to any host. :func:`open_download`
sends the auth headers only while the URL's host is the API host, checks every hop against the
allow-list, and refuses plain HTTP except on loopback.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from exportpipe.errors import UnsafeDownloadError, UpstreamError, UpstreamUnavailableError

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_REDIRECTS = 5
RETRY_STATUSES = (500, 502, 503, 504)


def make_session(*, total_retries: int = 4, backoff: float = 0.5) -> requests.Session:
    """A Session that retries connection errors and 5xx on idempotent methods, honouring Retry-After.

    429 is not retried here: each source knows what its rate-limit answers mean.
    """
    retry = Retry(
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
    adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=8)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    for pattern in allowed:
        if pattern.startswith("*.") and (host.endswith(pattern[1:]) or host == pattern[2:]):
            return True
        if host == pattern:
            return True
    return False


def redact(url: str) -> str:
    """The URL without its query string: signed storage URLs carry credentials there."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + ("?…" if parts.query else "")


def _check_url(url: str, auth_hosts: frozenset[str], allowed: tuple[str, ...]) -> None:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http"):
        raise UnsafeDownloadError(f"result URL {redact(url)!r}: scheme {parts.scheme!r} is not http(s)")
    if parts.scheme == "http" and host not in LOOPBACK:
        raise UnsafeDownloadError(f"result URL host {host!r}: plain HTTP is only allowed on loopback")
    if host not in auth_hosts and not host_allowed(host, allowed):
        raise UnsafeDownloadError(f"result URL host {host!r} is not the API host and not in the allow-list")


def _error_code(body: str) -> int | str | None:
    """The ``code`` of a JSON error body (Pardot v5's ``{"code", "message"}``), if there is one."""
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

    ``auth_headers`` go only to ``auth_hosts``; every hop must be one of them or in ``allowed_hosts``.

    Raises UpstreamUnavailableError for 429/5xx, UpstreamError for other 4xx, UnsafeDownloadError for
    a URL or redirect outside the allow-list.
    """
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        _check_url(current, auth_hosts, allowed_hosts)
        # Credentials only to the upstream's own hosts, never to the storage a download redirects to.
        # identity: a compressed body would not match Content-Length, which detects truncation.
        headers = {"Accept-Encoding": "identity"}
        if host_of(current) in auth_hosts:
            headers |= auth_headers
        try:
            resp = session.get(current, headers=headers, stream=True, allow_redirects=False, timeout=timeout)
        except requests.RequestException as exc:
            raise UpstreamUnavailableError(f"download of {redact(current)!r} failed: {exc}") from exc
        if resp.status_code in (301, 302, 303, 307, 308):
            location = resp.headers.get("Location")
            resp.close()
            if not location:
                raise UpstreamError(
                    f"redirect without Location from {redact(current)!r}", status=resp.status_code
                )
            current = urljoin(current, location)
            continue
        if resp.status_code == 200:
            return resp
        body = resp.text[:500]
        code = _error_code(body)
        resp.close()
        message = f"download of {redact(current)!r} answered {resp.status_code}: {body}"
        if resp.status_code == 429 or resp.status_code >= 500:
            raise UpstreamUnavailableError(message, status=resp.status_code, code=code)
        raise UpstreamError(message, status=resp.status_code, code=code)
    raise UpstreamError(f"more than {MAX_REDIRECTS} redirects downloading {redact(url)!r}")
