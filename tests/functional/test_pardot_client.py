"""The Pardot client against the sandbox over HTTP, without AWS: auth grants, window bounds under both
readings of the docs, and tolerance for the response shapes the public record leaves open."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from exportpipe_dev.sandbox.base import SandboxServer
from exportpipe_dev.sandbox.pardot import PardotSandbox

from exportpipe.errors import (
    ConfigurationError,
    UnsafeDownloadError,
    UpstreamError,
    UpstreamRateLimitedError,
    UpstreamUnavailableError,
)
from exportpipe.http import IN_CALL_WAIT_LIMIT
from exportpipe.models.definition import Window
from exportpipe.sources.base import UpstreamState
from exportpipe.sources.pardot.client import PardotClient, PardotCredentials, _export
from exportpipe.sources.registry import parse_definition
from tests.loopback import Answer, RecordingServer, recording_server

DEFINITION = parse_definition(
    {
        "source": "pardot",
        "name": "client-test",
        "object": "prospect",
        "procedure": "filter_by_created_at",
        "fields": ["id", "createdAt"],
        "timezone": "America/New_York",
        "start": "2026-11-01T00:00:00Z",
    }
)


@pytest.fixture(params=["exclusive", "inclusive"])
def served(request: pytest.FixtureRequest) -> Iterator[tuple[PardotSandbox, str]]:
    # one record every second, exactly on the second: any error at a window's bounds shows
    sandbox = PardotSandbox(
        bounds=request.param,
        record_spacing_seconds=1,
        record_fill=1.0,
        pickup_seconds=0.0,
        processing_seconds=0.05,
        seed=3,
    )
    with SandboxServer(sandbox) as server:
        yield sandbox, server.base_url


def _client(sandbox: PardotSandbox, base_url: str, **changes: Any) -> PardotClient:
    creds = {**sandbox.credentials(), "base_url": base_url, "window_bounds": sandbox.bounds, **changes}
    return PardotClient(PardotCredentials.parse(creds), allowed_hosts=("127.0.0.1", "localhost"))


def _export_rows(client: PardotClient, window: Window) -> list[dict[str, str]]:
    export = client.create_export(DEFINITION, window)
    for _ in range(100):
        export = client.get_export(export.upstream_id)
        if export.state is not UpstreamState.PENDING:
            break
        time.sleep(0.05)
    assert export.state is UpstreamState.READY
    rows: list[dict[str, str]] = []
    for url in export.result_urls:
        with client.open_result(url) as stream:
            body = b"".join(stream.chunks).decode()
        rows += csv.DictReader(io.StringIO(body, newline=""))
    return rows


def _ids_between(sandbox: PardotSandbox, start: datetime, end: datetime) -> set[str]:
    """Ids of the records created in [start, end), from a wider query the bounds cannot affect."""
    wide = sandbox.expected_rows(
        "prospect",
        "filter_by_created_at",
        {
            "created_after": (start - timedelta(hours=1)).isoformat(),
            "created_before": (end + timedelta(hours=1)).isoformat(),
        },
        ["id", "createdAt"],
    )
    return {str(r["id"]) for r in wide if start <= r["createdAt"] < end}


def test_consecutive_windows_neither_overlap_nor_leave_a_gap(served: tuple[PardotSandbox, str]) -> None:
    sandbox, base_url = served
    client = _client(sandbox, base_url)
    t0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    t2 = t0 + timedelta(minutes=20)
    # the bound between the two windows is exactly the creation time of a record
    t1 = min(
        r["createdAt"]
        for r in sandbox.expected_rows(
            "prospect",
            "filter_by_created_at",
            {"created_after": t0.isoformat(), "created_before": t2.isoformat()},
            ["id", "createdAt"],
        )
        if r["createdAt"] >= t0 + timedelta(minutes=10)
    ).astimezone(UTC)
    first = [r["id"] for r in _export_rows(client, Window.of(t0, t1))]
    second = [r["id"] for r in _export_rows(client, Window.of(t1, t2))]
    # each window holds exactly the records of [start, end): the one created at t1 lands once
    assert set(first) == _ids_between(sandbox, t0, t1) and len(first) == len(set(first))
    assert set(second) == _ids_between(sandbox, t1, t2) and len(second) == len(set(second))
    assert not set(first) & set(second)
    on_bound = _ids_between(sandbox, t1, t1 + timedelta(seconds=1))
    assert on_bound and on_bound <= set(second)


def test_refresh_token_grant_is_used_when_the_secret_holds_one(served: tuple[PardotSandbox, str]) -> None:
    sandbox, base_url = served
    client = _client(sandbox, base_url, password="", refresh_token=sandbox.issue_refresh_token())
    t0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    rows = _export_rows(client, Window.of(t0, t0 + timedelta(minutes=1)))
    assert {r["id"] for r in rows} == _ids_between(sandbox, t0, t0 + timedelta(minutes=1))


def test_a_bad_secret_names_the_fields() -> None:
    with pytest.raises(ConfigurationError, match=r"client_id \(Field required\), business_unit_id"):
        PardotCredentials.parse(
            {
                "token_url": "https://login.salesforce.com/services/oauth2/token",
                "client_secret": "s",
                "username": "u",
                "business_unit_id": "nope",
            }
        )


@pytest.mark.parametrize(
    ("body", "state", "urls"),
    [
        ({"id": 7, "state": "Waiting", "isExpired": False}, UpstreamState.PENDING, []),
        ({"export": {"id": "7", "state": "Processing"}}, UpstreamState.PENDING, []),
        ({"id": 7, "state": "Complete", "isExpired": False}, UpstreamState.READY, []),
        ({"id": 7, "state": "Complete", "resultRefs": "https://pi/1"}, UpstreamState.READY, ["https://pi/1"]),
        (
            {"id": 7, "state": "Complete", "resultRefs": ["https://pi/1", "https://pi/2"]},
            UpstreamState.READY,
            ["https://pi/1", "https://pi/2"],
        ),
        (
            {"id": 7, "state": "Complete", "isExpired": True, "resultRefs": "https://pi/1"},
            UpstreamState.EXPIRED,
            [],
        ),
        ({"id": 7, "state": "Failed"}, UpstreamState.FAILED, []),
        ({"id": 7, "state": "Canceled"}, UpstreamState.CANCELED, []),
    ],
)
def test_export_representations_in_every_documented_shape(
    body: dict[str, Any], state: UpstreamState, urls: list[str]
) -> None:
    export = _export(body)
    assert (export.upstream_id, export.state, export.result_urls) == ("7", state, urls)


def test_calls_fit_in_the_time_the_invocation_has_left(served: tuple[PardotSandbox, str]) -> None:
    sandbox, base_url = served
    creds = PardotCredentials.parse({**sandbox.credentials(), "base_url": base_url})
    slept: list[float] = []
    # 66 with a pause longer than the time left: hand back to the workflow instead of sleeping
    client = PardotClient(creds, backoff_seconds=5.0, sleep=slept.append, remaining_seconds=lambda: 13.0)
    sandbox.force_error(66, times=1)
    t0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    with pytest.raises(UpstreamRateLimitedError, match="no time left"):
        client.create_export(DEFINITION, Window.of(t0, t0 + timedelta(minutes=1)))
    assert slept == []
    # no time at all: no request is sent
    calls = len(sandbox.request_log)
    late = PardotClient(creds, remaining_seconds=lambda: 5.0)
    with pytest.raises(UpstreamUnavailableError, match="out of time"):
        late.get_export("1")
    assert len(sandbox.request_log) == calls


# ---- waits and credentials (issue 12, items 1 and 5) ----------------------------------------------


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every sleep of this process (urllib3's included) is recorded, and none waits."""
    recorded: list[float] = []
    monkeypatch.setattr(time, "sleep", recorded.append)
    return recorded


def _fake_pardot(api: Any) -> Any:
    """A stand-in Pardot at ``localhost``: it logs in anyone, and answers API calls with ``api``."""

    def answer(method: str, path: str) -> Answer:
        if path == "/token":
            return 200, {"Content-Type": "application/json"}, b'{"access_token": "t-1"}'
        return api(method, path)  # type: ignore[no-any-return]

    return answer


def _client_of(server: RecordingServer, sleep: Any, **options: Any) -> PardotClient:
    origin = server.origin("localhost")
    creds = PardotCredentials.parse(
        {
            "token_url": f"{origin}/token",
            "client_id": "c",
            "client_secret": "s",
            "username": "u",
            "password": "p",
            "business_unit_id": "0Uv000000000001AAA",
            "base_url": origin,
        }
    )
    return PardotClient(creds, sleep=sleep, **options)


@pytest.mark.parametrize("status", [503, 429])
def test_a_long_retry_after_is_the_workflows_wait_not_the_lambdas(status: int, slept: list[float]) -> None:
    busy = {"Content-Type": "text/html", "Retry-After": "3600"}
    with recording_server(_fake_pardot(lambda method, path: (status, busy, b"<h1>busy</h1>"))) as server:
        client = _client_of(server, slept.append)
        with pytest.raises(UpstreamRateLimitedError) as info:
            client.get_export("7")
    assert info.value.retry_after == 3600
    assert all(s <= IN_CALL_WAIT_LIMIT for s in slept) and sum(slept) <= IN_CALL_WAIT_LIMIT


def test_concurrency_backoff_in_the_call_is_bounded_in_all(served: tuple[PardotSandbox, str]) -> None:
    sandbox, base_url = served
    slept: list[float] = []
    client = PardotClient(
        PardotCredentials.parse({**sandbox.credentials(), "base_url": base_url}),
        sleep=slept.append,
        backoff_seconds=2.0,
    )
    sandbox.force_error(66, times=10)
    t0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    with pytest.raises(UpstreamRateLimitedError) as info:
        client.create_export(DEFINITION, Window.of(t0, t0 + timedelta(minutes=1)))
    # 2 s, then 4 s more would pass the limit: the workflow waits those instead
    assert slept == [2.0] and info.value.retry_after == 4.0


def test_api_calls_follow_no_redirect_so_no_header_leaves_the_api_host(slept: list[float]) -> None:
    with recording_server() as other:
        moved = {"Location": f"{other.origin()}/api/v5/exports/7"}
        with recording_server(_fake_pardot(lambda method, path: (302, moved, b""))) as server:
            client = _client_of(server, slept.append)
            with pytest.raises(UpstreamError, match="follow no redirects"):
                client.get_export("7")
    assert other.received == []


def test_a_result_url_that_reads_as_the_api_host_sends_nothing_elsewhere(
    served: tuple[PardotSandbox, str],
) -> None:
    sandbox, base_url = served
    client = _client(sandbox, base_url)
    api = base_url.removeprefix("http://")
    with recording_server() as evil:
        for url in (f"http://localhost:{evil.port}\\@{api}/x", f"http://{api}@localhost:{evil.port}/x"):
            with pytest.raises(UnsafeDownloadError), client.open_result(url):
                pass
    assert evil.received == []
