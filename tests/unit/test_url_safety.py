"""Where a download may go, and who gets the credentials (issue 12, item 1).

Result URLs and redirect ``Location`` headers come from the upstream. A URL that two parsers read
differently (``urlsplit`` for the checks, urllib3 for the connection) once passed the host check
while the connection went elsewhere, with ``Authorization`` and ``Pardot-Business-Unit-Id``. Each
trick here is refused before anything is sent; the loopback servers prove that no request with
credentials reaches any host but the API host.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter

from exportpipe.errors import UnsafeDownloadError, UpstreamUnavailableError
from exportpipe.http import PeerGuard, _check_url, guard_session, make_session, open_download
from tests.loopback import RecordingServer, recording_server

AUTH = {"Authorization": "Bearer api-token", "Pardot-Business-Unit-Id": "0Uv000000000001AAA"}
PARDOT_HOSTS = frozenset({"pi.pardot.com"})
# Wildcards that would match the internal targets below: only an exact entry admits one.
WILDCARDS = ("*.pardot.com", "*.salesforce.com", "*.0.0.1", "*.254.169.254", "*.localhost")


class _NoNetwork(BaseAdapter):
    """A transport that records what it was asked to send, and sends nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        self.sent.append(str(request.url))
        raise AssertionError(f"a request was sent to {request.url!r}")

    def close(self) -> None:
        pass


@pytest.fixture
def offline() -> Iterator[tuple[requests.Session, _NoNetwork]]:
    session = requests.Session()
    adapter = _NoNetwork()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    yield session, adapter
    session.close()


@pytest.mark.parametrize(
    "url",
    [
        # the URL: urlsplit reads pi.pardot.com, urllib3 connects to evil.example
        "https://evil.example\\@pi.pardot.com/x",
        # "\." : urlsplit reads the host "evil.example\.pi.pardot.com", which *.pardot.com matches
        "https://evil.example\\.pi.pardot.com/x",
        "https://evil.example%5C@pi.pardot.com/x",
        "https://pi.pardot.com@evil.example/x",
        "https://user:secret@pi.pardot.com/x",
        "https://%70i.pardot.com/x",
        "https://pi.pardot.com%2F@evil.example/x",
        "https://p\u0456.pardot.com/x",  # a Cyrillic i
        "https://evil.example\t.pi.pardot.com/x",
        "https://evil.example\r\n@pi.pardot.com/x",
        "https://pi.pardot.com\x00.evil.example/x",
        "https://pi.pardot.com./x",
        "http://pi.pardot.com/x",
        "ftp://pi.pardot.com/x",
        # internal targets, in every spelling a resolver accepts, and by name
        "https://127.0.0.1/x",
        "https://0x7f.1/x",
        "https://2130706433/x",
        "https://0177.0.0.1/x",
        "https://127.1/x",
        "https://0x7f000001/x",
        "https://[::1]/x",
        "https://[::ffff:127.0.0.1]/x",
        "https://[::ffff:7f00:1]/x",
        "https://[2002:7f00:1::]/x",  # 6to4 of 127.0.0.1
        "https://169.254.169.254/latest/meta-data/",
        "https://[fe80::1]/x",
        "https://[fe80::1%25eth0]/x",
        "https://10.0.0.1/x",
        "https://192.168.1.1/x",
        "https://localhost/x",
        "https://api.localhost/x",
    ],
)
def test_tricky_and_internal_urls_are_refused_before_any_connection(
    url: str, offline: tuple[requests.Session, _NoNetwork]
) -> None:
    session, adapter = offline
    with pytest.raises(UnsafeDownloadError):
        open_download(
            session, url, auth_headers=AUTH, auth_hosts=PARDOT_HOSTS, allowed_hosts=WILDCARDS, timeout=5
        )
    assert adapter.sent == []


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://10.0.0.5/x", ("10.0.0.5",)),
        ("https://[fd00::5]:8443/x", ("fd00::5",)),
        ("http://127.0.0.1:8080/x", ("127.0.0.1",)),
        ("http://localhost:8080/x", ("localhost",)),
        ("https://storage.example/x.csv?X-Amz-Signature=s", ("*.example",)),
    ],
)
def test_internal_and_plain_http_targets_need_an_exact_entry(url: str, allowed: tuple[str, ...]) -> None:
    _check_url(url, PARDOT_HOSTS, allowed)
    if not allowed[0].startswith("*."):
        with pytest.raises(UnsafeDownloadError, match="exact name"):
            _check_url(url, PARDOT_HOSTS, ("*." + allowed[0],))


@pytest.fixture
def api_and_evil() -> Iterator[tuple[RecordingServer, RecordingServer]]:
    """The API host (reached as ``localhost``) and another host (reached as ``127.0.0.1``)."""
    with recording_server() as api, recording_server() as evil:
        yield api, evil


def _download(url: str, allowed: tuple[str, ...] = ("localhost", "127.0.0.1")) -> requests.Response:
    return open_download(
        make_session(total_retries=0),
        url,
        auth_headers=AUTH,
        auth_hosts=frozenset({"localhost"}),
        allowed_hosts=allowed,
        timeout=5,
    )


def _with_credentials(server: RecordingServer) -> list[str]:
    return [r.path for r in server.received if {"Authorization", "Pardot-Business-Unit-Id"} & set(r.headers)]


def _bypasses(api: RecordingServer, evil: RecordingServer) -> list[str]:
    """The issue's tricks, aimed at the loopback servers: each reads as the API host to urlsplit."""
    return [
        f"http://127.0.0.1:{evil.port}\\@localhost:{api.port}/x",
        f"http://127.0.0.1:{evil.port}\\.localhost:{api.port}/x",
        f"http://localhost:{api.port}@127.0.0.1:{evil.port}/x",
        f"http://0x7f.1:{evil.port}/x",
        f"http://2130706433:{evil.port}/x",
    ]


def test_no_credentials_reach_another_host_by_a_tricky_url(
    api_and_evil: tuple[RecordingServer, RecordingServer],
) -> None:
    api, evil = api_and_evil
    for url in _bypasses(api, evil):
        with pytest.raises(UnsafeDownloadError):
            _download(url)
    assert evil.received == [] and api.received == []
    # the API host itself gets them
    _download(f"http://localhost:{api.port}/x").close()
    assert _with_credentials(api) == ["/x"]


def test_no_credentials_reach_another_host_by_a_redirect(
    api_and_evil: tuple[RecordingServer, RecordingServer],
) -> None:
    api, evil = api_and_evil
    targets = {f"/r{n}": url for n, url in enumerate(_bypasses(api, evil))}
    targets["/storage"] = f"http://127.0.0.1:{evil.port}/file.csv?sig=s"
    api.answer = lambda method, path: (302, {"Location": targets[path]}, b"")
    for path in targets:
        if path == "/storage":
            continue
        with pytest.raises(UnsafeDownloadError):
            _download(f"http://localhost:{api.port}{path}")
    assert evil.received == []
    # a redirect to an allow-listed storage host is followed, without the credentials
    _download(f"http://localhost:{api.port}/storage").close()
    assert [r.path for r in evil.received] == ["/file.csv?sig=s"] and _with_credentials(evil) == []
    assert len(_with_credentials(api)) == len(targets)


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS that answers 127.0.0.1 for ``rebind.example`` (the name passed every URL check)."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == "rebind.example" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.usefixtures("rebinding")
def test_a_name_that_resolves_to_an_internal_address_is_refused_at_connect_time(
    api_and_evil: tuple[RecordingServer, RecordingServer],
) -> None:
    _, evil = api_and_evil
    url = f"https://rebind.example:{evil.port}/x"
    with pytest.raises(UnsafeDownloadError, match=r"resolved to 127\.0\.0\.1"):
        _download(url, allowed=("*.example",))
    # listed by its exact name, the connection goes ahead (and fails the TLS handshake with this
    # plain-HTTP server: nothing was requested)
    session = make_session(total_retries=0)
    guard_session(session, {"rebind.example"})
    with pytest.raises(UpstreamUnavailableError):
        open_download(
            session, url, auth_headers=AUTH, auth_hosts=frozenset(), allowed_hosts=("*.example",), timeout=5
        )
    assert evil.received == []


def test_the_guard_reads_embedded_ipv4_addresses() -> None:
    guard = PeerGuard({"trusted.example"})
    for peer in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "10.1.2.3", "169.254.169.254", "fe80::1%2"):
        with pytest.raises(UnsafeDownloadError):
            guard.check("other.example", peer)
        guard.check("trusted.example", peer)
    guard.check("other.example", "93.184.215.14")


def test_a_session_built_elsewhere_gets_guarded() -> None:
    session = requests.Session()
    guard_session(session, {"api.example"})
    adapters: Mapping[str, Any] = session.adapters
    assert all(a.guard.trusted == {"api.example"} for a in adapters.values())
