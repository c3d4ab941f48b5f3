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

from exportpipe.definitions import Window, parse_definition
from exportpipe.errors import ConfigurationError, UpstreamRateLimitedError, UpstreamUnavailableError
from exportpipe.sandbox.base import SandboxServer
from exportpipe.sandbox.pardot import PardotSandbox
from exportpipe.sources.base import UpstreamState
from exportpipe.sources.pardot import PardotClient, PardotCredentials, _export

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
