"""The impact.com Partner ClickExport + Jobs API sandbox, exercised over real HTTP with requests."""

from __future__ import annotations

import csv
import io
import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import requests
from exportpipe_dev.sandbox.base import Clock, SandboxServer
from exportpipe_dev.sandbox.impact_clicks import CLICK_FIELDS, NOT_REPLAYABLE, ImpactClicksSandbox

#: 2026-03-10 10:00:00 in Chicago (CDT, -05:00): the frozen "now" of most tests.
NOW = datetime(2026, 3, 10, 15, 0, 0, tzinfo=UTC)
YESTERDAY = "2026-03-09"
DONE = 1.25 + 0.01  # pickup (0.25 s) + processing (1 s), on the frozen clock


class ImpactApi:
    """A thin requests-based client of the sandbox: Basic auth, JSON answers, relative URIs."""

    def __init__(self, sandbox: ImpactClicksSandbox, base_url: str) -> None:
        self.sandbox = sandbox
        self.base_url = base_url
        self.sid = sandbox.account_sid
        self.session = requests.Session()
        self.session.auth = (sandbox.account_sid, sandbox.auth_token)
        self.session.headers["Accept"] = "application/json"

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def path(self, rest: str) -> str:
        return f"/Mediapartners/{self.sid}/{rest}"

    def export(self, params: Any = None) -> requests.Response:
        return self.session.get(self.url(self.path("ClickExport")), params=params)

    def export_ok(self, params: Any = None) -> dict[str, Any]:
        resp = self.export(params)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def job(self, job_id: str) -> dict[str, Any]:
        resp = self.session.get(self.url(self.path(f"Jobs/{job_id}")))
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def download(self, job_id: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.url(self.path(f"Jobs/{job_id}/Download")), **kwargs)

    def replay(self, job_id: str) -> requests.Response:
        return self.session.put(self.url(self.path(f"Jobs/{job_id}/Replay")))


def job_id_of(answer: dict[str, Any]) -> str:
    return str(answer["QueuedUri"]).rsplit("/", 1)[1]


def completed(api: ImpactApi, clock: Clock, params: Any = None) -> str:
    job_id = job_id_of(api.export_ok(params))
    clock.advance(DONE)
    assert api.job(job_id)["Status"] == "COMPLETED"
    return job_id


def rows_of(content: bytes, result_format: str) -> list[dict[str, str]]:
    if result_format == "CSV":
        reader = csv.DictReader(io.StringIO(content.decode("utf-8"), newline=""))
        assert tuple(reader.fieldnames or ()) == CLICK_FIELDS
        return list(reader)
    if result_format == "JSON":
        rows: list[dict[str, str]] = json.loads(content)["Clicks"]
        return rows
    root = ET.fromstring(content)
    assert root.tag == "ImpactRadiusResponse"
    return [{cell.tag: cell.text or "" for cell in click} for click in root.iter("Click")]


def error_of(resp: requests.Response) -> tuple[int, str, list[str]]:
    body = resp.json()
    assert body["Status"] == "ERROR"
    return resp.status_code, body["Message"], [e["Field"] for e in body.get("Errors", [])]


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def sandbox(clock: Clock) -> ImpactClicksSandbox:
    return ImpactClicksSandbox(clock=clock)


@pytest.fixture
def server(sandbox: ImpactClicksSandbox) -> Iterator[SandboxServer]:
    with SandboxServer(sandbox) as srv:
        yield srv


@pytest.fixture
def api(sandbox: ImpactClicksSandbox, server: SandboxServer) -> Iterator[ImpactApi]:
    client = ImpactApi(sandbox, server.base_url)
    yield client
    client.session.close()


# ---- handshake, auth, formats ----------------------------------------------------------------------


def test_handshake_has_the_account_sid_and_auth_token(
    sandbox: ImpactClicksSandbox, server: SandboxServer
) -> None:
    handshake = sandbox.handshake(server.base_url)

    assert handshake["source"] == "impact_clicks"
    assert handshake["base_url"] == server.base_url
    assert set(handshake["credentials"]) == {"account_sid", "auth_token"}
    assert re.fullmatch(r"IR[A-Za-z0-9]{32}", handshake["credentials"]["account_sid"])
    assert len(handshake["credentials"]["auth_token"]) == 32


@pytest.mark.parametrize(
    "auth", [None, ("sid", "token"), "wrong-token", "wrong-sid"], ids=["none", "unknown", "token", "sid"]
)
def test_missing_or_wrong_credentials_are_401(api: ImpactApi, auth: Any) -> None:
    if auth == "wrong-token":
        auth = (api.sid, "nope")
    elif auth == "wrong-sid":
        auth = ("IR" + "x" * 32, api.sandbox.auth_token)

    resp = requests.get(api.url(api.path("Jobs")), auth=auth, headers={"Accept": "application/json"})

    assert error_of(resp) == (401, "Unauthorized: check your AccountSID and AuthToken.", [])
    assert resp.headers["WWW-Authenticate"].startswith("Basic")
    assert "X-RateLimit-Remaining-hour" not in resp.headers


def test_bearer_token_is_not_basic_auth(api: ImpactApi) -> None:
    resp = requests.get(
        api.url(api.path("Jobs.json")), headers={"Authorization": f"Bearer {api.sandbox.auth_token}"}
    )

    assert resp.status_code == 401


def test_sid_in_the_path_must_be_the_credentials_sid(api: ImpactApi) -> None:
    resp = api.session.get(api.url("/Mediapartners/IRaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/Jobs"))

    assert error_of(resp)[0] == 403


def test_disabled_or_unscoped_token_is_403(api: ImpactApi) -> None:
    api.sandbox.token_endpoints = {"Jobs"}
    assert error_of(api.export())[:2] == (403, "The Auth Token does not have access to this endpoint.")
    assert api.session.get(api.url(api.path("Jobs"))).status_code == 200

    api.sandbox.token_disabled = True
    assert error_of(api.session.get(api.url(api.path("Jobs"))))[:2] == (403, "The Auth Token is disabled.")


def test_answers_are_xml_unless_json_is_asked_for(api: ImpactApi) -> None:
    auth = api.session.auth
    jobs = api.url(api.path("Jobs"))

    default = requests.get(jobs, auth=auth)
    by_suffix = requests.get(api.url(api.path("Jobs.json")), auth=auth)
    by_accept = requests.get(jobs, auth=auth, headers={"Accept": "application/xml;q=0.5, application/json"})
    suffix_wins = requests.get(
        api.url(api.path("Jobs.xml")), auth=auth, headers={"Accept": "application/json"}
    )
    error = requests.get(jobs)

    assert default.headers["Content-Type"].startswith("application/xml")
    assert ET.fromstring(default.content).tag == "ImpactRadiusResponse"
    assert by_suffix.json() == by_accept.json() == {"Jobs": []}
    assert suffix_wins.headers["Content-Type"].startswith("application/xml")
    root = ET.fromstring(error.content)
    assert (root.tag, root.findtext("Status")) == ("ImpactRadiusResponse", "ERROR")


def test_fixed_path_segments_are_case_insensitive(api: ImpactApi) -> None:
    resp = api.session.get(api.url(f"/MediaPartners/{api.sid}/clickexport"), params={"Date": YESTERDAY})

    assert resp.status_code == 200
    assert resp.json()["QueuedUri"].startswith(f"/Mediapartners/{api.sid}/Jobs/")


def test_unknown_paths_jobs_and_methods(api: ImpactApi) -> None:
    assert error_of(api.session.get(api.url(api.path("Clicks"))))[0] == 404
    assert error_of(api.session.get(api.url(api.path("Jobs/00000000-0000-4000-8000-000000000000"))))[0] == 404
    post = api.session.post(api.url(api.path("ClickExport")))
    assert error_of(post)[0] == 405
    assert post.headers["Allow"] == "GET"
    job_id = job_id_of(api.export_ok({"Date": YESTERDAY}))
    replay_get = api.session.get(api.url(api.path(f"Jobs/{job_id}/Replay")))
    assert (replay_get.status_code, replay_get.headers["Allow"]) == (405, "PUT")


# ---- ClickExport ---------------------------------------------------------------------------------


def test_click_export_queues_a_job_with_relative_uris(api: ImpactApi) -> None:
    resp = api.export({"Date": YESTERDAY, "ResultFormat": "JSON"})

    assert resp.status_code == 200
    body = resp.json()
    assert list(body) == ["Status", "QueuedUri", "ResultUri", "ReplayUri"]
    assert body["Status"] == "QUEUED"
    job_id = job_id_of(body)
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", job_id)
    assert body["QueuedUri"] == f"/Mediapartners/{api.sid}/Jobs/{job_id}"
    assert body["ResultUri"] == f"/Mediapartners/{api.sid}/Jobs/{job_id}/Download"
    assert body["ReplayUri"] == f"/Mediapartners/{api.sid}/Jobs/{job_id}/Replay"
    assert resp.headers["X-RateLimit-Limit-day"] == "10"
    assert resp.headers["X-RateLimit-Remaining-day"] == "9"
    assert resp.headers["X-RateLimit-Limit-hour"] == "1000"
    assert resp.headers["X-RateLimit-Remaining-hour"] == "999"
    assert resp.headers["RateLimit-Reset"] == "3600"
    assert "Retry-After" not in resp.headers


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"Date": "2026/03/09"}, "Date", "Not a valid date; the format is yyyy-MM-dd."),
        ({"Date": "2026-02-30"}, "Date", "Not a valid date; the format is yyyy-MM-dd."),
        ({"Date": "2026-03-11"}, "Date", "Must not be in the future."),
        ({"ProgramId": "acme"}, "ProgramId", "Not a numeric value"),
        ([("AdId", "123"), ("AdId", "12x")], "AdId", "Not a numeric value"),
        ({"UniqueClick": "yes"}, "UniqueClick", "Must be TRUE or FALSE."),
        ({"ResultFormat": "XLSX"}, "ResultFormat", "Must be one of CSV, JSON, XML."),
        ({"StartDate": "2026-03-01"}, "StartDate", "Unknown parameter."),
        ([("Date", "2026-03-01"), ("Date", "2026-03-02")], "Date", "Must be given at most once."),
        ({"SubId": ""}, "SubId", "Must not be empty."),
    ],
)
def test_click_export_validation(api: ImpactApi, params: Any, field: str, message: str) -> None:
    resp = api.export(params)

    assert resp.status_code == 400
    assert resp.json() == {
        "Status": "ERROR",
        "Message": "Validation Failed",
        "Errors": [{"Field": field, "Message": message}],
    }
    assert api.sandbox.click_exports_today() == 0
    assert api.sandbox.job_ids() == []


def test_every_validation_problem_is_reported_at_once(api: ImpactApi) -> None:
    resp = api.export({"Date": "yesterday", "ProgramId": "x", "ResultFormat": "PDF", "unique": "TRUE"})

    assert error_of(resp) == (400, "Validation Failed", ["unique", "Date", "ProgramId", "ResultFormat"])


def test_identical_requests_return_the_existing_job_and_count_against_the_limit(
    api: ImpactApi, clock: Clock
) -> None:
    first = api.export_ok([("ProgramId", "3629"), ("ProgramId", "4120"), ("Date", YESTERDAY)])
    same = api.export_ok(
        [("programid", "4120"), ("ProgramId", "3629"), ("Date", YESTERDAY), ("ResultFormat", "csv")]
    )
    clock.advance(DONE)
    again = api.export_ok({"Date": YESTERDAY, "ProgramId": ["3629", "4120"], "UniqueClick": "FALSE"})
    other_format = api.export_ok({"Date": YESTERDAY, "ProgramId": ["3629", "4120"], "ResultFormat": "XML"})

    assert job_id_of(first) == job_id_of(same) == job_id_of(again)
    assert (first["Status"], same["Status"], again["Status"]) == ("QUEUED", "QUEUED", "COMPLETED")
    assert job_id_of(other_format) != job_id_of(first)
    assert api.sandbox.click_exports_today() == 4
    assert len(api.sandbox.job_ids()) == 2


def test_date_defaults_to_today_in_the_account_timezone(api: ImpactApi) -> None:
    implicit = api.export_ok()
    explicit = api.export_ok({"Date": "2026-03-10"})

    assert job_id_of(implicit) == job_id_of(explicit)


# ---- limits ----------------------------------------------------------------------------------------


def test_daily_click_export_limit_is_429_until_midnight_in_the_account_timezone(
    api: ImpactApi, clock: Clock
) -> None:
    for day in range(1, 11):
        assert api.export({"Date": f"2026-03-{day:02d}"}).status_code == 200

    refused = api.export({"Date": "2026-02-28"})
    assert error_of(refused)[:2] == (
        429,
        "Too Many Requests: the ClickExport limit of 10 requests per day has been reached.",
    )
    assert refused.headers["X-RateLimit-Limit-day"] == "10"
    assert refused.headers["X-RateLimit-Remaining-day"] == "0"
    assert refused.headers["RateLimit-Reset"] == refused.headers["Retry-After"] == str(14 * 3600)
    assert refused.headers["X-RateLimit-Limit-hour"] == "1000"
    assert api.session.get(api.url(api.path("Jobs"))).status_code == 200  # other calls still pass
    clock.advance(timedelta(hours=13, minutes=59))  # 23:59 in Chicago
    assert api.export({"Date": "2026-02-28"}).status_code == 429
    clock.advance(60)
    assert api.export({"Date": "2026-02-28"}).status_code == 200
    assert api.sandbox.click_exports_today() == 1


def test_hourly_limit_is_429_with_the_partner_headers(api: ImpactApi, clock: Clock) -> None:
    api.sandbox.hourly_limit = 3
    clock.advance(20 * 60)
    jobs = api.url(api.path("Jobs"))
    remaining = [api.session.get(jobs).headers["X-RateLimit-Remaining-hour"] for _ in range(3)]

    refused = api.session.get(jobs)

    assert remaining == ["2", "1", "0"]
    assert error_of(refused)[0] == 429
    assert refused.headers["X-RateLimit-Limit-hour"] == "3"
    assert refused.headers["X-RateLimit-Remaining-hour"] == "0"
    assert refused.headers["RateLimit-Reset"] == refused.headers["Retry-After"] == str(40 * 60)
    assert api.sandbox.api_calls_this_hour() == 3
    clock.advance(40 * 60)
    assert api.session.get(jobs).status_code == 200


# ---- jobs ------------------------------------------------------------------------------------------


def test_job_moves_queued_running_completed_on_the_sandbox_clock(api: ImpactApi, clock: Clock) -> None:
    job_id = job_id_of(api.export_ok({"Date": YESTERDAY, "ProgramId": "3629"}))
    expected = api.sandbox.expected_rows_for_job(job_id)

    queued = api.job(job_id)
    assert queued == {
        "Id": job_id,
        "Type": "ClickExport",
        "ProgramId": "3629",
        "CreatedBy": api.sid,
        "CreatedDate": "2026-03-10T10:00:00-05:00",
        "StartedDate": "",
        "AbandonedDate": "",
        "CompletedDate": "",
        "CancelledDate": "",
        "FailedDate": "",
        "LastProgressUpdateDate": "2026-03-10T10:00:00-05:00",
        "Status": "QUEUED",
        "StatusMessage": "Job is queued.",
        "RecordsProcessed": "0",
        "PercentageComplete": "0",
        "Replayable": "false",
        "ResultUri": f"/Mediapartners/{api.sid}/Jobs/{job_id}/Download",
    }
    clock.advance(0.75)
    running = api.job(job_id)
    assert (running["Status"], running["PercentageComplete"]) == ("RUNNING", "50")
    assert running["RecordsProcessed"] == str(len(expected) // 2)
    assert running["StartedDate"] == "2026-03-10T10:00:00-05:00"
    clock.advance(0.5)
    done = api.job(job_id)
    assert done["Status"] == "COMPLETED"
    assert done["StatusMessage"] == "Job processing completed successfully."
    assert done["CompletedDate"] == "2026-03-10T10:00:01-05:00"
    assert (done["RecordsProcessed"], done["PercentageComplete"]) == (str(len(expected)), "100")
    assert done["Replayable"] == "true"
    assert len(expected) > 50


def test_on_the_real_clock_a_job_completes_within_seconds() -> None:
    sandbox = ImpactClicksSandbox()
    with SandboxServer(sandbox) as server:
        api = ImpactApi(sandbox, server.base_url)
        job_id = job_id_of(api.export_ok({"ResultFormat": "JSON"}))
        deadline = time.monotonic() + 5
        while api.job(job_id)["Status"] != "COMPLETED":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert rows_of(api.download(job_id).content, "JSON") == sandbox.expected_rows_for_job(job_id)


def test_typed_numbers_knob_emits_the_spec_types(api: ImpactApi, clock: Clock) -> None:
    api.sandbox.typed_numbers = True
    job = api.job(completed(api, clock, {"Date": YESTERDAY}))

    assert job["Replayable"] is True
    assert job["PercentageComplete"] == 100
    assert isinstance(job["RecordsProcessed"], int)


def test_list_jobs_filters_on_creation_date(api: ImpactApi, clock: Clock) -> None:
    first = job_id_of(api.export_ok({"Date": "2026-03-01"}))
    clock.advance(timedelta(days=1))
    second = job_id_of(api.export_ok({"Date": "2026-03-02"}))

    def listed(**params: str) -> list[str]:
        resp = api.session.get(api.url(api.path("Jobs")), params=params)
        assert resp.status_code == 200, resp.text
        return [job["Id"] for job in resp.json()["Jobs"]]

    assert listed() == [first, second]
    assert listed(CreatedAfter="2026-03-11") == [second]
    assert listed(CreatedBefore="2026-03-11") == [first]
    assert listed(CreatedAfter="2026-03-10T10:00:01-05:00") == [second]
    assert error_of(api.session.get(api.url(api.path("Jobs")), params={"CreatedAfter": "last week"}))[2] == [
        "CreatedAfter"
    ]


def test_failing_job_goes_through_error_retries_then_failed(api: ImpactApi, clock: Clock) -> None:
    api.sandbox.fail_next()
    job_id = job_id_of(api.export_ok({"Date": YESTERDAY}))

    clock.advance(DONE)
    error = api.job(job_id)
    assert error["Status"] == "ERROR"
    assert "try 1 of 5" in error["StatusMessage"]
    assert api.download(job_id).status_code == 202
    clock.advance(900)
    assert api.job(job_id)["Status"] == "RUNNING"
    clock.advance(2 * 901 + 2)  # after the fourth try
    assert "try 4 of 5" in api.job(job_id)["StatusMessage"]
    clock.advance(901)
    failed = api.job(job_id)
    assert failed["Status"] == "FAILED"
    assert failed["FailedDate"] == "2026-03-10T11:00:05-05:00"  # 0.25 s + 5 tries of 1 s + 4 × 15 min
    assert failed["Replayable"] == "true"
    assert api.sandbox.expected_rows_for_job(job_id) == []
    assert error_of(api.download(job_id))[:2] == (404, "No result is available for this job (status FAILED).")

    replayed = api.replay(job_id)
    assert replayed.status_code == 200
    assert replayed.json()["Status"] == "QUEUED"
    assert replayed.json()["FailedDate"] == ""
    clock.advance(DONE)
    assert api.job(job_id)["Status"] == "COMPLETED"


def test_a_job_that_errors_once_completes_on_the_retry(api: ImpactApi, clock: Clock) -> None:
    api.sandbox.fail_next(attempts=1)
    job_id = job_id_of(api.export_ok({"Date": YESTERDAY, "ResultFormat": "JSON"}))

    clock.advance(DONE)
    assert api.job(job_id)["Status"] == "ERROR"
    clock.advance(901)
    assert api.job(job_id)["Status"] == "COMPLETED"
    assert rows_of(api.download(job_id).content, "JSON") == api.sandbox.expected_rows(YESTERDAY)


def test_replay_is_refused_while_queued_or_running_and_marks_abandoned(api: ImpactApi, clock: Clock) -> None:
    job_id = job_id_of(api.export_ok({"Date": YESTERDAY}))

    queued = api.replay(job_id)
    clock.advance(0.5)
    running = api.replay(job_id)

    assert error_of(queued)[:2] == (403, NOT_REPLAYABLE)
    assert error_of(running)[:2] == (403, NOT_REPLAYABLE)
    assert api.job(job_id)["AbandonedDate"] == "2026-03-10T10:00:00-05:00"


def test_replay_of_today_picks_up_later_clicks(api: ImpactApi, clock: Clock) -> None:
    job_id = completed(api, clock, {"ResultFormat": "JSON"})
    morning = rows_of(api.download(job_id, params={"Mode": "Stream"}).content, "JSON")
    clock.advance(timedelta(hours=3))

    replayed = api.replay(job_id)
    assert replayed.status_code == 200
    assert replayed.json()["CreatedDate"] == "2026-03-10T10:00:00-05:00"
    assert replayed.json()["Status"] == "QUEUED"
    clock.advance(DONE)
    afternoon = rows_of(api.download(job_id, params={"Mode": "Stream"}).content, "JSON")

    assert morning == api.sandbox.expected_rows("2026-03-10", as_of=NOW + timedelta(seconds=0.25))
    assert afternoon == api.sandbox.expected_rows_for_job(job_id)
    assert afternoon[: len(morning)] == morning
    assert len(afternoon) > len(morning) > 50
    assert all(row["EventDate"] < "2026-03-10T13:00:02-05:00" for row in afternoon)


def test_administrator_cancel(api: ImpactApi, clock: Clock) -> None:
    job_id = job_id_of(api.export_ok({"Date": YESTERDAY}))
    clock.advance(0.5)
    api.sandbox.cancel_job(job_id)

    job = api.job(job_id)
    assert (job["Status"], job["CancelledDate"], job["Replayable"]) == (
        "CANCELLED",
        "2026-03-10T10:00:00-05:00",
        "true",
    )
    assert error_of(api.download(job_id))[0] == 404
    assert api.replay(job_id).status_code == 200


def test_results_expire_after_90_days(api: ImpactApi, clock: Clock) -> None:
    job_id = completed(api, clock, {"Date": YESTERDAY})
    location = api.download(job_id, allow_redirects=False).headers["Location"]
    clock.advance(timedelta(days=90) - timedelta(seconds=1))
    assert api.download(job_id, params={"Mode": "Stream"}).status_code == 200
    clock.advance(1)

    assert error_of(api.download(job_id))[:2] == (404, "The job result has expired.")
    assert api.job(job_id)["Status"] == "COMPLETED"
    assert job_id_of(api.export_ok({"Date": YESTERDAY})) != job_id
    assert requests.get(location).status_code == 403  # the signed URL expired long before


# ---- downloads -------------------------------------------------------------------------------------


def test_download_is_202_with_the_job_until_completed(api: ImpactApi, clock: Clock) -> None:
    job_id = job_id_of(api.export_ok({"Date": YESTERDAY}))

    queued = api.download(job_id)
    clock.advance(0.5)
    running = api.download(job_id, params={"Mode": "Stream"})

    assert (queued.status_code, queued.json()["Status"]) == (202, "QUEUED")
    assert (running.status_code, running.json()["Status"]) == (202, "RUNNING")


def test_download_redirects_to_signed_storage_on_another_host(api: ImpactApi, clock: Clock) -> None:
    job_id = completed(api, clock, {"Date": YESTERDAY})
    streamed = api.download(job_id, params={"Mode": "stream"})

    redirect = api.download(job_id, allow_redirects=False)
    location = redirect.headers["Location"]
    followed = api.download(job_id)  # requests drops Authorization when the host changes

    assert redirect.status_code == 302
    assert urlsplit(location).hostname == "localhost"
    assert urlsplit(location).port == urlsplit(api.base_url).port
    assert urlsplit(location).path.startswith("/storage/impact-exports/")
    assert streamed.status_code == followed.status_code == 200
    assert streamed.headers["Content-Type"] == "application/octet-stream"
    assert followed.headers["Content-Type"].startswith("text/csv")
    assert [r.status_code for r in followed.history] == [302]
    assert followed.content == streamed.content
    assert int(followed.headers["Content-Length"]) == len(followed.content)

    with_auth = requests.get(location, auth=api.session.auth)
    assert with_auth.status_code == 400
    assert b"<Code>InvalidArgument</Code>" in with_auth.content
    query = dict(parse_qsl(urlsplit(location).query))
    tampered = urlunsplit(
        urlsplit(location)._replace(query=urlencode({**query, "X-Amz-Signature": "0" * 64}))
    )
    assert requests.get(tampered).status_code == 403
    assert b"SignatureDoesNotMatch" in requests.get(tampered).content
    assert requests.put(location).status_code == 405
    clock.advance(api.sandbox.signed_url_ttl + 1)
    expired = requests.get(location)
    assert expired.status_code == 403
    assert b"Request has expired" in expired.content


def test_a_client_on_localhost_is_redirected_to_127_0_0_1(api: ImpactApi, clock: Clock) -> None:
    job_id = completed(api, clock, {"Date": YESTERDAY})
    port = urlsplit(api.base_url).port

    resp = api.session.get(
        f"http://localhost:{port}{api.path(f'Jobs/{job_id}/Download')}", allow_redirects=False
    )

    assert urlsplit(resp.headers["Location"]).hostname == "127.0.0.1"


def test_unknown_download_mode_is_400(api: ImpactApi, clock: Clock) -> None:
    job_id = completed(api, clock, {"Date": YESTERDAY})

    assert error_of(api.download(job_id, params={"Mode": "Zip"})) == (400, "Validation Failed", ["Mode"])


@pytest.mark.parametrize("result_format", ["CSV", "JSON", "XML"])
def test_every_row_arrives_in_each_format(api: ImpactApi, clock: Clock, result_format: str) -> None:
    job_id = completed(api, clock, {"Date": YESTERDAY, "ResultFormat": result_format})

    resp = api.download(job_id)
    rows = rows_of(resp.content, result_format)

    assert resp.status_code == 200
    assert not resp.content.startswith(b"\xef\xbb\xbf")
    assert rows == api.sandbox.expected_rows(YESTERDAY) == api.sandbox.expected_rows_for_job(job_id)
    assert len(rows) >= 300
    assert all(tuple(row) == CLICK_FIELDS for row in rows)
    assert all(re.fullmatch(r"2026-03-09T\d\d:\d\d:\d\d-05:00", row["EventDate"]) for row in rows)
    assert [row["EventDate"] for row in rows] == sorted(row["EventDate"] for row in rows)
    assert len({row["Id"] for row in rows}) == len(rows)
    values = {value for row in rows for value in row.values()}
    assert {"line one\r\nline two", "story\nswipe-up", 'header "hero"', "   ", "Initech <Software>"} <= values
    assert {"Zoë's Café, Bakery & More", "東京ショップ", "=1+1"} <= values
    assert {row["UniqueClick"] for row in rows} == {"true", "false"}
    assert api.job(job_id)["RecordsProcessed"] == str(len(rows))


def test_json_and_xml_files_carry_one_page(api: ImpactApi, clock: Clock) -> None:
    json_job = completed(api, clock, {"Date": YESTERDAY, "ResultFormat": "JSON"})
    xml_job = completed(api, clock, {"Date": YESTERDAY, "ResultFormat": "XML"})

    body = api.download(json_job).json()
    clicks = ET.fromstring(api.download(xml_job).content).find("Clicks")

    total = str(len(body["Clicks"]))
    assert {k: v for k, v in body.items() if k != "Clicks"} == {
        "@page": "1",
        "@numpages": "1",
        "@pagesize": total,
        "@total": total,
        "@start": "1",
        "@end": total,
    }
    assert clicks is not None
    assert (clicks.get("numpages"), clicks.get("total")) == ("1", total)


def test_filters_select_programs_ads_sub_ids_and_unique_clicks(api: ImpactApi, clock: Clock) -> None:
    every = api.sandbox.expected_rows(YESTERDAY)
    params = [("Date", YESTERDAY), ("ProgramId", "3629"), ("ProgramId", "5317"), ("UniqueClick", "TRUE")]
    job_id = completed(api, clock, params)
    by_sub = completed(
        api, clock, {"Date": YESTERDAY, "SubId": ["blog", "sidebar, top"], "ResultFormat": "JSON"}
    )
    ad = every[0]["AdId"]
    by_ad = completed(api, clock, {"Date": YESTERDAY, "AdId": ad, "ResultFormat": "XML"})

    rows = rows_of(api.download(job_id).content, "CSV")
    assert rows == [r for r in every if r["ProgramId"] in ("3629", "5317") and r["UniqueClick"] == "true"]
    assert {r["ProgramId"] for r in rows} == {"3629", "5317"}
    assert rows == api.sandbox.expected_rows(YESTERDAY, program_ids=["5317", "3629"], unique_click=True)
    subs = rows_of(api.download(by_sub).content, "JSON")
    assert subs and all({"blog", "sidebar, top"} & {r["SubId1"], r["SubId2"], r["SubId3"]} for r in subs)
    assert subs == api.sandbox.expected_rows(YESTERDAY, sub_ids=["blog", "sidebar, top"])
    ads = rows_of(api.download(by_ad).content, "XML")
    assert ads and {r["AdId"] for r in ads} == {ad}
    assert api.job(job_id)["ProgramId"] == ""


def test_truncated_download_is_detected_by_requests(api: ImpactApi, clock: Clock) -> None:
    job_id = completed(api, clock, {"Date": YESTERDAY})
    api.sandbox.truncate_downloads = True

    with pytest.raises(requests.exceptions.RequestException):
        api.download(job_id, params={"Mode": "Stream"})
    with pytest.raises(requests.exceptions.RequestException):
        api.download(job_id)
    api.sandbox.truncate_downloads = False
    assert api.download(job_id).status_code == 200


def test_transient_upstream_errors_and_the_request_log(api: ImpactApi) -> None:
    api.sandbox.fail_requests(status=503, times=2)
    jobs = api.url(api.path("Jobs"))

    first, second, third = (api.session.get(jobs) for _ in range(3))

    assert (first.status_code, second.status_code, third.status_code) == (503, 503, 200)
    assert first.headers["Content-Type"].startswith("text/html")
    assert [(e.method, e.path, e.status) for e in api.sandbox.request_log] == [
        ("GET", api.path("Jobs"), 503),
        ("GET", api.path("Jobs"), 503),
        ("GET", api.path("Jobs"), 200),
    ]
