from __future__ import annotations

import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from exportpipe.errors import UnsafeDownloadError, UpstreamRateLimitedError, UpstreamUnavailableError
from exportpipe.http import (
    IN_CALL_WAIT_LIMIT,
    _check_url,
    guard_session,
    host_allowed,
    in_call_waits,
    make_session,
    open_download,
    retry_after_seconds,
)
from tests.loopback import RecordingServer, Route, recording_server


def test_allow_list_matches_hosts_and_subdomains() -> None:
    allowed = ("*.pardot.com", "storage.googleapis.com")
    assert host_allowed("pi.pardot.com", allowed)
    assert host_allowed("pardot.com", allowed)
    assert host_allowed("storage.googleapis.com", allowed)
    assert not host_allowed("evilpardot.com", allowed)
    assert not host_allowed("storage.googleapis.com.evil.io", allowed)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://pi.pardot.com/x", "plain HTTP is only allowed on loopback"),
        ("https://attacker.example/x", "not the API host and not in the allow-list"),
        ("file:///etc/passwd", r"is not http\(s\)"),
    ],
)
def test_unsafe_result_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(UnsafeDownloadError, match=message):
        _check_url(url, frozenset({"pi.pardot.com"}), ("*.salesforce.com",))


def test_api_host_and_loopback_are_fine() -> None:
    _check_url("https://pi.pardot.com/api/v5/exports/1/results/2", frozenset({"pi.pardot.com"}), ())
    _check_url("http://127.0.0.1:8080/x", frozenset({"127.0.0.1"}), ())


def test_messages_never_carry_signed_query_strings() -> None:
    from exportpipe.http import redact

    signed = "https://storage.example/exports/1.csv?X-Amz-Signature=secret&X-Amz-Credential=key"
    assert redact(signed) == "https://storage.example/exports/1.csv?…"
    with pytest.raises(UnsafeDownloadError) as info:
        _check_url("ftp://storage.example/x.csv?sig=secret", frozenset({"pi.pardot.com"}), ())
    assert "secret" not in str(info.value)


# ---- waits inside the Lambda (issue 12, item 5) ---------------------------------------------------


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every sleep of this process (urllib3's included) is recorded, and none waits."""
    recorded: list[float] = []
    monkeypatch.setattr(time, "sleep", recorded.append)
    return recorded


def _refusing(status: int, retry_after: str | None) -> Route:
    headers = {"Content-Type": "text/plain"} | ({"Retry-After": retry_after} if retry_after else {})
    return lambda method, path: (status, headers, b"busy")


def _get(server: RecordingServer, sleep: Callable[[float], None], **session: Any) -> requests.Response:
    with in_call_waits(sleep):
        return open_download(
            make_session(**session),
            f"{server.origin()}/x",
            auth_headers={},
            auth_hosts=frozenset({"127.0.0.1"}),
            allowed_hosts=(),
            timeout=5,
        )


@pytest.mark.parametrize("status", [503, 429])
def test_a_long_retry_after_is_handed_to_the_workflow_without_waiting(
    status: int, slept: list[float]
) -> None:
    refusing = _refusing(status, "3600")
    with recording_server(refusing) as server, pytest.raises(UpstreamRateLimitedError) as info:
        _get(server, slept.append)
    assert info.value.retry_after == 3600 and info.value.status == status
    assert all(s <= IN_CALL_WAIT_LIMIT for s in slept) and sum(slept) <= IN_CALL_WAIT_LIMIT
    assert len(server.received) == 1  # not asked again inside the call


def test_retry_after_as_an_http_date(slept: list[float]) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(hours=2), usegmt=True)
    with recording_server(_refusing(503, when)) as server, pytest.raises(UpstreamRateLimitedError) as info:
        _get(server, slept.append)
    assert 7190 <= info.value.retry_after <= 7200
    assert sum(slept) <= IN_CALL_WAIT_LIMIT


def test_short_retry_afters_are_waited_out_in_the_call_up_to_the_limit_in_all(slept: list[float]) -> None:
    with recording_server(_refusing(503, "2")) as server, pytest.raises(UpstreamRateLimitedError) as info:
        _get(server, slept.append, total_retries=10)
    # 2 s, 2 s, and the third would pass the limit: the rest is the workflow's
    assert slept == [2, 2] and info.value.retry_after == 2
    assert len(server.received) == 3


def test_connection_retries_back_off_within_the_limit(slept: list[float]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]  # nothing listens once the socket is closed
    with pytest.raises(UpstreamUnavailableError), in_call_waits(slept.append):
        open_download(
            make_session(total_retries=10, backoff=1.0),
            f"http://127.0.0.1:{closed}/x",
            auth_headers={},
            auth_hosts=frozenset({"127.0.0.1"}),
            allowed_hosts=(),
            timeout=5,
        )
    assert slept and sum(slept) <= IN_CALL_WAIT_LIMIT


def test_a_session_alone_still_bounds_its_waits(slept: list[float]) -> None:
    session = make_session()
    guard_session(session, {"127.0.0.1"})  # a bare session may not reach loopback either
    with recording_server(_refusing(503, "3600")) as server:
        resp = session.get(f"{server.origin()}/x", timeout=5)
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "3600"
    assert sum(slept) <= IN_CALL_WAIT_LIMIT and len(server.received) == 1


def test_a_session_built_elsewhere_gets_bounded_waits_too(slept: list[float]) -> None:
    session = requests.Session()
    retry = Retry(total=3, status_forcelist=[503], respect_retry_after_header=True, raise_on_status=False)
    session.mount("http://", HTTPAdapter(max_retries=retry))
    guard_session(session, {"127.0.0.1"})
    with recording_server(_refusing(503, "3600")) as server:
        assert session.get(f"{server.origin()}/x", timeout=5).status_code == 503
    assert sum(slept) <= IN_CALL_WAIT_LIMIT and len(server.received) == 1


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("120", 120.0), (" 7 ", 7.0), ("0", 0.0), ("99999999", 86400.0), ("soon", None), (None, None)],
)
def test_retry_after_values(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value) == seconds
    past = format_datetime(datetime(2020, 1, 1, tzinfo=UTC), usegmt=True)
    assert retry_after_seconds(past) == 0.0
