"""The Advocate client against the sandbox over HTTP, without AWS: create, lookup, list (and finding an
export whose id was lost), the 303 download with the API key kept from the storage host, the states
(ABORTED, EXPIRED), refusals (429, 5xx, a bad key or tenant, a validation error) and window bounds."""

from __future__ import annotations

import csv
import io
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from exportpipe_dev.sandbox.advocate import AdvocateSandbox
from exportpipe_dev.sandbox.base import Clock, SandboxServer

from exportpipe.errors import (
    ConfigurationError,
    DownloadIncompleteError,
    UnsafeDownloadError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamRateLimitedError,
    UpstreamUnavailableError,
)
from exportpipe.models.definition import Window
from exportpipe.sources.advocate.client import AdvocateClient, AdvocateCredentials, unwrap_workbook
from exportpipe.sources.advocate.definition import XLSX, AdvocateDefinition
from exportpipe.sources.base import UpstreamState
from exportpipe.sources.registry import parse_definition
from tests.loopback import recording_server

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
MONTH = Window.of(datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC))
LOCAL_HOSTS = ("127.0.0.1", "localhost")


def _definition(**fields: Any) -> AdvocateDefinition:
    payload = {"source": "advocate", "name": "client-test", "type": "USER", "start": "2025-01-01T00:00:00Z"}
    definition = parse_definition({**payload, **fields})
    assert isinstance(definition, AdvocateDefinition)
    return definition


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[AdvocateSandbox, str]]:
    sandbox = AdvocateSandbox(clock=Clock(NOW), users_per_day=6.0, processing_seconds=1.0, seed=7)
    with SandboxServer(sandbox) as server:
        yield sandbox, server.base_url


@pytest.fixture
def sandbox(served: tuple[AdvocateSandbox, str]) -> Iterator[AdvocateSandbox]:
    sandbox = served[0]
    sandbox.request_log.clear()
    yield sandbox
    sandbox.truncate_downloads = False


def _client(served: tuple[AdvocateSandbox, str], **changes: Any) -> AdvocateClient:
    sandbox, base_url = served
    creds = {**sandbox.credentials(), "base_url": base_url, **changes}
    return AdvocateClient(AdvocateCredentials.parse(creds), allowed_hosts=LOCAL_HOSTS, sleep=lambda s: None)


def _completed(sandbox: AdvocateSandbox) -> None:
    clock = sandbox.clock
    assert isinstance(clock, Clock)
    clock.advance(sandbox.processing_seconds + 0.5)


def _rows(client: AdvocateClient, upstream_id: str) -> list[dict[str, str]]:
    export = client.get_export(upstream_id)
    assert export.state is UpstreamState.READY and export.raw_state == "COMPLETED"
    (url,) = export.result_urls
    with client.open_result(url) as stream:
        assert stream.content_type == "text/csv"
        body = b"".join(stream.chunks)
    assert stream.content_length == len(body)
    return list(csv.DictReader(io.StringIO(body.decode(), newline="")))


def test_create_lookup_and_download_through_the_303_without_the_key_reaching_storage(
    served: tuple[AdvocateSandbox, str], sandbox: AdvocateSandbox
) -> None:
    client = _client(served)
    created = client.create_export(_definition(), MONTH)
    assert created.state is UpstreamState.PENDING and created.result_urls == []
    assert created.created_at == NOW.isoformat(timespec="milliseconds")
    assert client.get_export(created.upstream_id).state is UpstreamState.PENDING
    _completed(sandbox)
    rows = _rows(client, created.upstream_id)
    assert rows == sandbox.expected_rows(created.upstream_id) != []
    # the ExportStub as sent, the key as the Basic password on every API call and on none other
    create, *_, download, storage = sandbox.request_log
    assert create.method == "POST" and create.status == 201
    assert download.path.endswith(f"/export/{created.upstream_id}/download") and download.status == 303
    assert storage.path.startswith("/tenant-files.ssqt.io/exports/") and storage.status == 200
    api = [e for e in sandbox.request_log if e.path.startswith("/api/v1/")]
    assert all(e.headers.get("Authorization", "").startswith("Basic ") for e in api)
    assert "Authorization" not in storage.headers
    assert storage.headers.get("Accept-Encoding") == "identity"


def test_the_window_is_sent_as_epoch_ms_and_consecutive_windows_split_the_records_exactly(
    served: tuple[AdvocateSandbox, str], sandbox: AdvocateSandbox
) -> None:
    # a window edge exactly on a record's creation: that record lands in the later window only
    every = sandbox.rows_for({"type": "USER", "params": {"createdBefore": 1_745_000_000_000}})
    edge_ms = int(every[len(every) // 2]["dateCreated"])
    edge = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=edge_ms)
    start, end = edge - timedelta(days=9), edge + timedelta(days=9)
    client = _client(served)
    definition = _definition(window_filter="created")
    halves = [
        client.create_export(definition, Window.of(start, edge)),
        client.create_export(definition, Window.of(edge, end)),
    ]
    # what the sandbox received (it echoes the ExportStub on the Export)
    echoed = requests.get(
        f"{served[1]}/api/v1/{sandbox.tenant_alias}/export/{halves[1].upstream_id}",
        auth=("", sandbox.api_key),
        timeout=5,
    ).json()
    assert echoed["params"] == {"createdSince": edge_ms, "createdBefore": int(end.timestamp() * 1000)}
    assert echoed["name"] == f"exportpipe client-test {edge_ms}-{int(end.timestamp() * 1000)}"
    _completed(sandbox)
    first, second = (_rows(client, h.upstream_id) for h in halves)
    assert [r["dateCreated"] for r in second].count(str(edge_ms)) >= 1
    assert str(edge_ms) not in [r["dateCreated"] for r in first]
    start_ms, end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    whole = [r for r in every if start_ms <= int(r["dateCreated"]) < end_ms]
    assert sorted(r["id"] for r in first + second) == sorted(r["id"] for r in whole) != []


def test_an_xlsx_export_downloads_as_a_workbook(
    served: tuple[AdvocateSandbox, str], sandbox: AdvocateSandbox
) -> None:
    client = _client(served)
    created = client.create_export(_definition(type="REWARD_BALANCE", format="XLSX"), MONTH)
    _completed(sandbox)
    (url,) = client.get_export(created.upstream_id).result_urls
    with client.open_result(url) as stream:
        data = b"".join(stream.chunks)
    assert stream.content_type == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert data.startswith(b"PK\x03\x04") and sandbox.request_log[-1].path.endswith(".xlsx")


def test_aborted_is_failed_and_expired_is_expired(
    served: tuple[AdvocateSandbox, str], sandbox: AdvocateSandbox
) -> None:
    client = _client(served)
    sandbox.fail_next(1)
    aborted = client.create_export(_definition(), MONTH)
    done = client.create_export(_definition(), MONTH)
    _completed(sandbox)
    failed = client.get_export(aborted.upstream_id)
    assert (failed.state, failed.raw_state, failed.result_urls) == (UpstreamState.FAILED, "ABORTED", [])
    (url,) = client.get_export(done.upstream_id).result_urls
    clock = sandbox.clock
    assert isinstance(clock, Clock)
    clock.advance(timedelta(days=sandbox.expiry_days))
    expired = client.get_export(done.upstream_id)
    assert (expired.state, expired.raw_state, expired.result_urls) == (UpstreamState.EXPIRED, "EXPIRED", [])
    # a download of an expired export is refused (the copy then asks the lookup, which says EXPIRED)
    with pytest.raises(UpstreamError) as refused, client.open_result(url):
        pass
    assert refused.value.status == 404 and not isinstance(refused.value, UpstreamUnavailableError)
    assert client.get_export(aborted.upstream_id).state is UpstreamState.FAILED  # aborted never expires


def test_the_history_is_listed_and_a_lost_export_is_found_by_its_window(
    served: tuple[AdvocateSandbox, str], sandbox: AdvocateSandbox
) -> None:
    client = _client(served)
    definition = _definition(name="lost-and-found", type="REFERRAL")
    windows = [
        Window.of(datetime(2025, 2, d, tzinfo=UTC), datetime(2025, 2, d + 1, tzinfo=UTC)) for d in (1, 2)
    ]
    made = []
    for window in windows:
        made.append(client.create_export(definition, window))
        sandbox.clock.advance(1)
    page = client.list_exports(limit=2)
    assert [listed.export.upstream_id for listed in page.exports] == [m.upstream_id for m in reversed(made)]
    assert page.total == len(sandbox.export_ids()) and page.exports[0].type == "REFERRAL"
    assert client.list_exports(limit=1, offset=1).exports[0].export.upstream_id == made[0].upstream_id
    found = client.find_export(definition, windows[0])
    assert found is not None and found.upstream_id == made[0].upstream_id
    other_day = Window.of(datetime(2025, 2, 3, tzinfo=UTC), datetime(2025, 2, 4, tzinfo=UTC))
    assert client.find_export(definition, other_day) is None
    assert client.find_export(_definition(name="lost-and-found", type="USER"), windows[0]) is None


def test_there_is_no_cancel_so_cancelling_says_false_without_a_call(
    served: tuple[AdvocateSandbox, str], sandbox: AdvocateSandbox
) -> None:
    client = _client(served)
    created = client.create_export(_definition(), MONTH)
    before = len(sandbox.request_log)
    assert client.cancel_export(created.upstream_id) is False
    assert len(sandbox.request_log) == before


def test_429_and_5xx_go_through_the_shared_mechanisms(
    served: tuple[AdvocateSandbox, str], sandbox: AdvocateSandbox
) -> None:
    client = _client(served)
    sandbox.fail_requests(429, times=1, headers={"Retry-After": "120"})
    with pytest.raises(UpstreamRateLimitedError) as limited:
        client.create_export(_definition(), MONTH)
    assert limited.value.retry_after == 120 and limited.value.status == 429
    sandbox.fail_requests(429, times=1)
    with pytest.raises(UpstreamUnavailableError) as busy:
        client.create_export(_definition(), MONTH)
    assert not isinstance(busy.value, UpstreamRateLimitedError)
    created = client.create_export(_definition(), MONTH)
    # a lookup is retried inside the call (idempotent), within its wait budget
    sandbox.fail_requests(503, times=2)
    assert client.get_export(created.upstream_id).state is UpstreamState.PENDING
    assert [e.status for e in sandbox.request_log[-3:]] == [503, 503, 200]
    # a create is not (a retried POST could make two exports): the workflow tries it again
    sandbox.fail_requests(502, times=1)
    with pytest.raises(UpstreamUnavailableError, match="answered 502"):
        client.create_export(_definition(), MONTH)


def test_refusals_name_what_was_refused(
    served: tuple[AdvocateSandbox, str], sandbox: AdvocateSandbox
) -> None:
    with pytest.raises(UpstreamAuthError, match="401 UNAUTHORIZED"):
        _client(served, api_key="TEST_WRONGWRONGWRONG0000").create_export(_definition(), MONTH)
    with pytest.raises(UpstreamAuthError, match="404 TENANT_NOT_FOUND"):
        _client(served, tenant_alias="test_nobody").get_export("0" * 24)
    with pytest.raises(UpstreamError, match="404 NOT_FOUND") as missing:
        _client(served).get_export("0" * 24)
    assert not isinstance(missing.value, UpstreamAuthError)
    # a filter the sandbox does not emulate: its validation errors are in the message
    timeframe = _definition(type="REWARD", params={"filter": {"dateGiven_timeframe": "last_7_days"}})
    with pytest.raises(UpstreamError, match=r"400 VALIDATION_FAILED: .*params.filter.*timeframes"):
        _client(served).create_export(timeframe, MONTH)


def test_base_url_may_end_in_the_api_path(
    served: tuple[AdvocateSandbox, str], sandbox: AdvocateSandbox
) -> None:
    client = _client(served, base_url=f"{served[1]}/api/v1/")
    assert client.create_export(_definition(), MONTH).state is UpstreamState.PENDING


def test_a_bad_secret_names_the_fields() -> None:
    with pytest.raises(ConfigurationError) as bad:
        AdvocateCredentials.parse({"tenant_alias": "a/b", "window_bounds": "both"})
    message = str(bad.value)
    assert all(name in message for name in ("tenant_alias", "api_key", "window_bounds"))
    assert "TEST_" not in message


def test_api_calls_follow_no_redirect_and_downloads_go_only_to_allowed_hosts() -> None:
    with recording_server() as other:
        moved = {"Location": f"{other.origin('localhost')}/elsewhere"}
        with recording_server(lambda method, path: (303, moved, b"")) as api:
            creds = AdvocateCredentials.parse(
                {"tenant_alias": "t", "api_key": "TEST_K", "base_url": api.origin()}
            )
            client = AdvocateClient(creds, allowed_hosts=("127.0.0.1",), sleep=time.sleep)
            with pytest.raises(UpstreamError, match="follow no redirects"):
                client.get_export("x")
            # a download's 303 to a host that is neither the API's nor allow-listed is not followed
            with pytest.raises(UnsafeDownloadError), client.open_result(client.download_url("x")):
                pass
    assert other.received == []
    assert [r.headers.get("Authorization", "")[:6] for r in api.received] == ["Basic ", "Basic "]


def _wrapped(workbook: bytes, name: str = "export.xlsx") -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, workbook)
    return out.getvalue()


def test_a_workbook_zipped_once_more_is_unwrapped_as_it_streams(
    served: tuple[AdvocateSandbox, str], sandbox: AdvocateSandbox
) -> None:
    # the other reading of "zipped XLSX": a zip holding the .xlsx
    client = _client(served)
    created = client.create_export(_definition(type="REFERRAL", format="XLSX"), MONTH)
    _completed(sandbox)
    (url,) = client.get_export(created.upstream_id).result_urls
    with client.open_result(url) as stream:
        workbook = b"".join(stream.chunks)
    wrapped = _wrapped(workbook)
    served_bodies = {"/whole": wrapped, "/cut": wrapped[: len(wrapped) - 30]}

    def answer(method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        return 200, {"Content-Type": "application/zip"}, served_bodies[path.split("?")[0]]

    with recording_server(answer) as server:
        creds = AdvocateCredentials.parse(
            {"tenant_alias": "t", "api_key": "TEST_K", "base_url": server.origin()}
        )
        other = AdvocateClient(creds, sleep=lambda s: None)
        with other.open_result(f"{server.origin()}/whole") as stream:
            assert stream.content_type == XLSX.content_type and stream.content_length is None
            assert b"".join(stream.chunks) == workbook
        # cut after the workbook's entry: the workbook is whole (its CRC-32 checked), the wrapper's
        # central directory is not needed; the server framed the cut body by its own length
        with other.open_result(f"{server.origin()}/cut") as stream:
            assert b"".join(stream.chunks) == workbook
    # and a plain workbook, a CSV or nothing at all pass as they are
    for body in (workbook, b"id,name\r\n1,a\r\n", b""):
        chunks, wrapped_flag = unwrap_workbook(iter([body[:5], body[5:]]), len(body))
        assert b"".join(chunks) == body and wrapped_flag is False


def test_a_zipped_workbook_cut_or_damaged_is_refused() -> None:
    workbook = _book_bytes()
    wrapped = _wrapped(workbook)
    entry_end = 30 + len("export.xlsx") + zipfile.ZipFile(io.BytesIO(wrapped)).infolist()[0].compress_size
    for cut in (60, entry_end // 2, entry_end - 1):  # (a cut inside the first header is no zip here)
        chunks, flag = unwrap_workbook(iter([wrapped[:cut]]), None)
        assert flag is True
        with pytest.raises(DownloadIncompleteError, match="zipped workbook"):
            b"".join(chunks)
    chunks, _ = unwrap_workbook(iter([wrapped[:-5]]), len(wrapped))  # fewer bytes than announced
    with pytest.raises(DownloadIncompleteError, match=f"of {len(wrapped)} bytes"):
        b"".join(chunks)
    damaged = bytearray(wrapped)
    damaged[entry_end - 10] ^= 0x33
    chunks, _ = unwrap_workbook(iter([bytes(damaged)]), len(damaged))
    with pytest.raises(DownloadIncompleteError, match=r"zipped workbook: entry 'export\.xlsx'"):
        b"".join(chunks)


def _book_bytes() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as book:
        book.writestr("[Content_Types].xml", "<Types/>" + "x" * 5000)
        book.writestr("xl/worksheets/sheet1.xml", "<worksheet/>" + "y" * 5000)
    return out.getvalue()
