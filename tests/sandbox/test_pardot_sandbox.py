"""The Pardot Export API v5 sandbox, exercised over real HTTP with requests."""

from __future__ import annotations

import base64
import csv
import io
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import pytest
import requests
from exportpipe_dev.sandbox.base import Clock, SandboxServer
from exportpipe_dev.sandbox.gnudate import parse_date_argument
from exportpipe_dev.sandbox.pardot import PardotSandbox
from exportpipe_dev.sandbox.pardot_requests import (
    ExportRequestError,
    one_year_after,
    validate_definition,
    validate_export_request,
)

from exportpipe.sources.pardot.catalog import MAX_FIELDS, OBJECTS

from .conftest import NOW, PardotApi

NEW_YORK = ZoneInfo("America/New_York")
ROOT = Path(__file__).resolve().parents[2]

# 36 hours of prospects in New York time, well inside the frozen "now" (2026-03-10 11:00 EDT).
PROSPECT_WINDOW = {"created_after": "2026-03-08 00:00:00", "created_before": "2026-03-09 12:00:00"}


def prospect_export(fields: list[str] | None = None, **arguments: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "object": "prospect",
        "procedure": {"name": "filter_by_created_at", "arguments": {**PROSPECT_WINDOW, **arguments}},
    }
    if fields is not None:
        body["fields"] = fields
    return body


def refs_of(export: dict[str, Any]) -> list[str]:
    refs = export.get("resultRefs")
    if refs is None:
        return []
    return [refs] if isinstance(refs, str) else list(refs)


def complete(api: PardotApi, clock: Clock, body: dict[str, Any]) -> dict[str, Any]:
    """Create an export and move the clock until it is complete; returns the read representation."""
    export_id = api.create_ok(body)["id"]
    clock.advance(5)
    export = api.read_ok(export_id)
    assert export["state"] == "Complete", export
    return export


def download_rows(api: PardotApi, export: dict[str, Any]) -> tuple[list[dict[str, str]], list[bytes]]:
    rows: list[dict[str, str]] = []
    bodies: list[bytes] = []
    for url in refs_of(export):
        resp = api.download(url)
        assert resp.status_code == 200, resp.text
        assert resp.headers["Content-Type"].startswith("text/csv")
        bodies.append(resp.content)
        rows.extend(csv.DictReader(io.StringIO(resp.content.decode("utf-8"), newline="")))
    rows.sort(key=lambda r: int(r["id"]))
    return rows, bodies


def error_of(resp: requests.Response) -> tuple[int, int, str]:
    body = resp.json()
    return resp.status_code, body["code"], body["message"]


# ---- auth ------------------------------------------------------------------------------------------


def password_form(sandbox: PardotSandbox, **overrides: str) -> dict[str, str]:
    return {
        "grant_type": "password",
        "client_id": sandbox.client_id,
        "client_secret": sandbox.client_secret,
        "username": sandbox.username,
        "password": sandbox.password,
        **overrides,
    }


def test_password_grant_returns_a_salesforce_token_that_opens_the_api(
    sandbox: PardotSandbox, server: SandboxServer
) -> None:
    resp = requests.post(sandbox.credentials()["token_url"], data=password_form(sandbox))

    assert resp.status_code == 200
    body = resp.json()
    assert body["token_type"] == "Bearer"
    assert body["instance_url"] == server.base_url
    assert body["issued_at"] == str(int(NOW.timestamp() * 1000))
    assert {"access_token", "id", "signature", "scope"} <= body.keys()
    assert "refresh_token" not in body
    headers = {
        "Authorization": f"Bearer {body['access_token']}",
        "Pardot-Business-Unit-Id": sandbox.business_unit_id,
    }
    assert requests.get(f"{server.base_url}/api/v5/exports", headers=headers).status_code == 200


def test_password_grant_accepts_query_string_and_basic_client_credentials(
    sandbox: PardotSandbox, server: SandboxServer
) -> None:
    basic = base64.b64encode(f"{sandbox.client_id}:{sandbox.client_secret}".encode()).decode()
    params = {"grant_type": "password", "username": sandbox.username, "password": sandbox.password}

    resp = requests.post(
        sandbox.credentials()["token_url"], params=params, headers={"Authorization": f"Basic {basic}"}
    )

    assert resp.status_code == 200, resp.text
    assert resp.json()["access_token"]


def test_refresh_token_grant_issues_a_new_access_token(sandbox: PardotSandbox, server: SandboxServer) -> None:
    url = sandbox.credentials()["token_url"]
    refresh = sandbox.issue_refresh_token()
    form = {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": sandbox.client_id}

    first = requests.post(url, data=form)
    second = requests.post(url, data={**form, "client_secret": sandbox.client_secret})

    assert first.status_code == second.status_code == 200
    assert first.json()["access_token"] != second.json()["access_token"]
    wrong_secret = requests.post(url, data={**form, "client_secret": "nope"})
    assert wrong_secret.json() == {
        "error": "invalid_client",
        "error_description": "invalid client credentials",
    }
    sandbox.revoke_refresh_tokens()
    revoked = requests.post(url, data=form)
    assert revoked.status_code == 400
    assert revoked.json() == {"error": "invalid_grant", "error_description": "expired access/refresh token"}


@pytest.mark.parametrize(
    ("overrides", "error", "description"),
    [
        ({"password": "wrong"}, "invalid_grant", "authentication failure"),
        ({"username": "someone@example.com"}, "invalid_grant", "authentication failure"),
        ({"client_id": "unknown"}, "invalid_client_id", "client identifier invalid"),
        ({"client_secret": "wrong"}, "invalid_client", "invalid client credentials"),
        ({"grant_type": "client_credentials"}, "unsupported_grant_type", "grant type not supported"),
    ],
)
def test_token_errors_are_salesforce_errors(
    sandbox: PardotSandbox, server: SandboxServer, overrides: dict[str, str], error: str, description: str
) -> None:
    resp = requests.post(sandbox.credentials()["token_url"], data=password_form(sandbox, **overrides))

    assert resp.status_code == 400
    assert resp.json() == {"error": error, "error_description": description}


@pytest.mark.parametrize(
    ("authorization", "detail"),
    [
        (None, "Missing token"),
        ("Bearer not-a-token", "Inactive token"),
        ("Basic abc", "Missing token"),
        # the retired v3/v4 scheme: no v5 code for it is published, so it is just not a Bearer token
        ("Pardot api_key=5a1698a233e73d7c8ccd60d775fbc68a, user_key=9a5bc2b2b4a0a6b4d1f0", "Missing token"),
    ],
)
def test_missing_or_unknown_token_is_401_code_184(
    api: PardotApi, authorization: str | None, detail: str
) -> None:
    headers = {"Pardot-Business-Unit-Id": api.sandbox.business_unit_id}
    if authorization:
        headers["Authorization"] = authorization

    resp = requests.get(api.url("/api/v5/exports"), headers=headers)

    assert error_of(resp) == (401, 184, f"access_token is invalid, unknown, or malformed: {detail}")


def test_access_token_expires_after_ttl_and_on_demand(api: PardotApi, clock: Clock) -> None:
    assert api.query().status_code == 200
    clock.advance(api.sandbox.token_ttl)
    assert error_of(api.query())[:2] == (401, 184)

    api.token = api.sandbox.issue_access_token()
    assert api.query().status_code == 200
    api.sandbox.expire_tokens()
    assert error_of(api.query()) == (
        401,
        184,
        "access_token is invalid, unknown, or malformed: Inactive token",
    )


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        (
            None,
            (400, 181, "A required header is missing: Pardot-Business-Unit-Id header not found on request."),
        ),
        (
            "0Uv123",
            (400, 182, "Invalid header value: Pardot-Business-Unit-Id header value is not a valid ID."),
        ),
        (
            "0Uv000000000000AAA",
            (403, 201, "Business Unit specified in Pardot-Business-Unit-Id header not found or inactive."),
        ),
    ],
)
def test_business_unit_header_is_checked(
    api: PardotApi, unit: str | None, expected: tuple[int, int, str]
) -> None:
    headers = {"Authorization": f"Bearer {api.token}"}
    if unit:
        headers["Pardot-Business-Unit-Id"] = unit

    assert error_of(requests.get(api.url("/api/v5/exports"), headers=headers)) == expected


# ---- lifecycle -------------------------------------------------------------------------------------


def test_export_moves_waiting_processing_complete_on_the_sandbox_clock(api: PardotApi, clock: Clock) -> None:
    created = api.create_ok(prospect_export(["id", "email"]))

    assert created["state"] == "Waiting"
    assert created["isExpired"] is False
    assert "resultRefs" not in created
    assert created["createdAt"] == created["updatedAt"] == "2026-03-10T11:00:00-04:00"
    assert set(created) == {"id", "state", "isExpired", "createdAt", "updatedAt"}

    clock.advance(0.5)
    assert api.read_ok(created["id"])["state"] == "Processing"
    clock.advance(1)
    done = api.read_ok(created["id"])
    assert done["state"] == "Complete"
    assert done["updatedAt"] == "2026-03-10T11:00:01-04:00"
    assert refs_of(done)


def test_exports_are_processed_one_at_a_time_oldest_first(api: PardotApi, clock: Clock) -> None:
    ids = [api.create_ok(prospect_export(["id"]))["id"] for _ in range(3)]

    def states() -> list[str]:
        return [api.read_ok(i)["state"] for i in ids]

    clock.advance(0.5)
    assert states() == ["Processing", "Waiting", "Waiting"]
    clock.advance(1)
    assert states() == ["Complete", "Processing", "Waiting"]
    clock.advance(1)
    assert states() == ["Complete", "Complete", "Processing"]
    clock.advance(1)
    assert states() == ["Complete", "Complete", "Complete"]


def test_on_the_real_clock_an_export_completes_within_a_fraction_of_a_second() -> None:
    sandbox = PardotSandbox(pickup_seconds=0.05, processing_seconds=0.1)
    with SandboxServer(sandbox) as server:
        api = PardotApi(sandbox, server.base_url)
        export_id = api.create_ok(prospect_export(["id"], created_after="yesterday", created_before="today"))[
            "id"
        ]
        deadline = time.monotonic() + 3
        while api.read_ok(export_id)["state"] != "Complete":
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_result_refs_are_absent_without_data(api: PardotApi, clock: Clock) -> None:
    # Both bounds are exclusive and timestamps are whole seconds: nothing lies strictly between them.
    export = complete(
        api, clock, prospect_export(created_after="2026-03-09 10:00:00", created_before="2026-03-09 10:00:01")
    )

    assert "resultRefs" not in export


def test_result_refs_is_a_string_for_one_file(api: PardotApi, clock: Clock) -> None:
    api.sandbox.rows_per_file = 10_000

    export = complete(api, clock, prospect_export(["id"]))

    assert isinstance(export["resultRefs"], str)
    assert urlsplit(export["resultRefs"]).path.startswith(f"/api/v5/exports/{export['id']}/results/")


def test_result_refs_is_an_array_for_several_files_that_together_hold_the_data(
    api: PardotApi, clock: Clock
) -> None:
    api.sandbox.file_count = 3
    fields = ["id", "email", "company", "score", "optedOut", "createdAt", "updatedAt"]

    export = complete(api, clock, prospect_export(fields))
    rows, bodies = download_rows(api, export)

    assert isinstance(export["resultRefs"], list)
    assert len(export["resultRefs"]) == 3
    assert rows == api.sandbox.expected_csv_rows("prospect", "filter_by_created_at", PROSPECT_WINDOW, fields)
    assert len(rows) > 50
    for body in bodies:
        assert not body.startswith(b"\xef\xbb\xbf")
        assert body.split(b"\n", 1)[0] == ",".join(fields).encode()
        assert body.endswith(b"\n")


def test_rows_per_file_gives_files_of_varying_size(api: PardotApi, clock: Clock) -> None:
    api.sandbox.rows_per_file = 20

    export = complete(api, clock, prospect_export(["id"]))
    _, bodies = download_rows(api, export)

    sizes = sorted(body.count(b"\n") - 1 for body in bodies)  # refs come in no particular order
    assert len(sizes) >= 4
    assert all(10 <= size <= 20 for size in sizes[1:])
    assert 1 <= sizes[0] <= 20
    assert len(set(sizes)) > 1


def test_omitting_fields_exports_every_field_in_catalog_order(api: PardotApi, clock: Clock) -> None:
    api.sandbox.rows_per_file = 10_000

    export = complete(api, clock, prospect_export())
    rows, bodies = download_rows(api, export)

    assert bodies[0].split(b"\n", 1)[0].decode() == ",".join(OBJECTS["prospect"].fields)
    assert rows == api.sandbox.expected_csv_rows("prospect", "filter_by_created_at", PROSPECT_WINDOW)


@pytest.mark.parametrize(
    ("object_name", "procedure"),
    [(o.name, p.name) for o in OBJECTS.values() for p in o.procedures.values()],
)
def test_every_object_and_procedure_exports_its_expected_rows(
    api: PardotApi, clock: Clock, object_name: str, procedure: str
) -> None:
    spec = OBJECTS[object_name].procedures[procedure]
    arguments = {spec.after_arg: "2026-03-05 00:00:00", spec.before_arg: "2026-03-07 00:00:00"}
    body = {"object": object_name, "procedure": {"name": procedure, "arguments": arguments}}

    rows, bodies = download_rows(api, complete(api, clock, body))

    assert rows == api.sandbox.expected_csv_rows(object_name, procedure, arguments, created_at=NOW)
    assert rows
    assert all(b.split(b"\n", 1)[0].decode() == ",".join(OBJECTS[object_name].fields) for b in bodies)


def test_csv_quotes_strings_escapes_quotes_and_formula_characters_and_leaves_nulls_empty(
    api: PardotApi, clock: Clock
) -> None:
    api.sandbox.rows_per_file = 10_000
    fields = ["id", "company", "jobTitle", "city", "comments", "score", "optedOut"]

    body = download_rows(api, complete(api, clock, prospect_export(fields)))[1][0].decode("utf-8")
    typed = api.sandbox.expected_rows("prospect", "filter_by_created_at", PROSPECT_WINDOW, fields)
    strings = [row[f] for row in typed for f in ("company", "jobTitle", "city", "comments")]

    assert 'The "Widget Co" CEO' in strings
    assert '"The ""Widget Co"" CEO"' in body
    assert "@mysocialmediahandle" in strings
    assert '"\\@mysocialmediahandle"' in body
    assert '"\\=HYPERLINK(""http://example.com"")"' in body
    assert '"\\+1 (555) 010-0199"' in body
    assert '"first line\nsecond line"' in body
    assert '"Acme, Inc."' in body
    assert '"東京都渋谷区"' in body
    assert '"   "' in body
    assert None in strings and "" in strings
    assert ',"",' in body or ',""\n' in body
    assert ",," in body
    first = typed[0]
    assert f"{first['id']}," in body
    assert f",{first['score']},{'true' if first['optedOut'] else 'false'}\n" in body


def test_dates_are_in_the_creators_timezone_at_creation(api: PardotApi, clock: Clock) -> None:
    api.sandbox.rows_per_file = 10_000
    fields = ["id", "createdAt", "updatedAt"]
    export_id = api.create_ok(prospect_export(fields))["id"]

    api.sandbox.user_timezone = "Asia/Tokyo"  # changed after creation: the files keep New York time
    clock.advance(5)
    export = api.read_ok(export_id)
    rows, _ = download_rows(api, export)

    assert export["createdAt"] == "2026-03-11T00:00:00+09:00"
    typed = api.sandbox.expected_rows(
        "prospect",
        "filter_by_created_at",
        PROSPECT_WINDOW,
        fields,
        created_at=NOW,
        timezone="America/New_York",
    )
    assert [r["createdAt"] for r in rows] == [t["createdAt"].strftime("%Y-%m-%d %H:%M:%S") for t in typed]
    for row in rows:
        local = datetime.strptime(row["createdAt"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=NEW_YORK)
        assert datetime(2026, 3, 8, tzinfo=NEW_YORK) < local < datetime(2026, 3, 9, 12, tzinfo=NEW_YORK)


def test_contiguous_windows_never_share_a_record(sandbox: PardotSandbox) -> None:
    def ids(after: str, before: str) -> set[int]:
        rows = sandbox.expected_rows(
            "visitorActivity",
            "filter_by_updated_at",
            {"updated_after": after, "updated_before": before},
            ["id", "updatedAt"],
        )
        for row in rows:
            stamp = row["updatedAt"].replace(tzinfo=None)
            assert datetime.fromisoformat(after) < stamp < datetime.fromisoformat(before)
        return {row["id"] for row in rows}

    first = ids("2026-03-01 00:00:00", "2026-03-02 00:00:00")
    second = ids("2026-03-02 00:00:00", "2026-03-03 00:00:00")
    both = ids("2026-03-01 00:00:00", "2026-03-03 00:00:00")

    assert first and second
    assert not first & second
    assert first | second <= both
    assert len(both - (first | second)) <= 1  # only a record stamped exactly 2026-03-02 00:00:00


def test_inclusive_bounds_knob_selects_records_on_the_bounds(sandbox: PardotSandbox) -> None:
    args = {"created_after": "2026-03-09 10:00:00", "created_before": "2026-03-09 12:00:00"}
    exclusive = sandbox.expected_rows("prospect", "filter_by_created_at", args, ["id", "createdAt"])
    stamps = [r["createdAt"] for r in exclusive]
    bound = {
        "created_after": stamps[0].strftime("%Y-%m-%d %H:%M:%S"),
        "created_before": args["created_before"],
    }

    assert stamps[0] not in [
        r["createdAt"] for r in sandbox.expected_rows("prospect", "filter_by_created_at", bound)
    ]
    sandbox.bounds = "inclusive"
    assert stamps[0] in [
        r["createdAt"] for r in sandbox.expected_rows("prospect", "filter_by_created_at", bound)
    ]


def _ids(rows: list[dict[str, Any]]) -> list[int]:
    return [int(r["id"]) for r in rows]


SEPT_22 = datetime(2026, 9, 22, 16, tzinfo=UTC)  # a Tuesday, 12:00 EDT


@pytest.mark.parametrize(
    ("after", "before", "start", "end"),
    [
        # @seconds since the epoch: 1790000000 is 2026-09-21 14:13:20 UTC; bounds are exclusive and records
        # are stamped in whole seconds, so the half-open window of what is selected starts at :21
        ("@1790000000", None, datetime(2026, 9, 21, 14, 13, 21, tzinfo=UTC), SEPT_22),
        (
            "@1790000000",
            "@1790043200.5",
            datetime(2026, 9, 21, 14, 13, 21, tzinfo=UTC),
            datetime(2026, 9, 22, 2, 13, 21, tzinfo=UTC),
        ),
        # relative to the creation time (no DST change in between)
        ("2 days ago", None, datetime(2026, 9, 20, 16, 0, 1, tzinfo=UTC), SEPT_22),
        (
            "2 days ago",
            "yesterday noon",
            datetime(2026, 9, 20, 16, 0, 1, tzinfo=UTC),
            datetime(2026, 9, 21, 16, tzinfo=UTC),
        ),
        # Monday 10:00 EDT to Tuesday 08:00 in Paris (CEST)
        (
            "last monday 10:00",
            'TZ="Europe/Paris" 2026-09-22 08:00',
            datetime(2026, 9, 21, 14, 0, 1, tzinfo=UTC),
            datetime(2026, 9, 22, 6, tzinfo=UTC),
        ),
    ],
)
def test_gnu_date_arguments_select_the_records_of_the_instants_they_name(
    sandbox: PardotSandbox,
    server: SandboxServer,
    clock: Clock,
    after: str,
    before: str | None,
    start: datetime,
    end: datetime,
) -> None:
    clock.freeze(SEPT_22)
    api = PardotApi(sandbox, server.base_url)  # a token minted on the moved clock
    sandbox.rows_per_file = 10_000
    arguments = (
        {"created_after": after} if before is None else {"created_after": after, "created_before": before}
    )
    body = {
        "object": "prospect",
        "fields": ["id"],
        "procedure": {"name": "filter_by_created_at", "arguments": arguments},
    }

    rows, _ = download_rows(api, complete(api, clock, body))

    truth = sandbox.records_in("prospect", "filter_by_created_at", start, end, fields=["id"], as_of=SEPT_22)
    assert len(truth) > 10
    assert _ids(rows) == _ids(truth)
    api.session.close()


def test_relative_days_across_a_dst_change_keep_the_utc_offset_of_now(api: PardotApi, clock: Clock) -> None:
    # NOW is 2026-03-10 11:00 EDT; "3 days ago" is 2026-03-07 10:00 EST (72 hours, GNU keeps now's DST
    # flag), not 11:00 EST as a wall-clock reading would have it. Records from 15:00:01 UTC on count.
    api.sandbox.rows_per_file = 10_000
    window = {"created_after": "3 days ago", "created_before": "2026-03-07 12:00"}

    rows, _ = download_rows(api, complete(api, clock, prospect_export(["id", "createdAt"], **window)))

    truth = api.sandbox.records_in(
        "prospect",
        "filter_by_created_at",
        datetime(2026, 3, 7, 15, 0, 1, tzinfo=UTC),
        datetime(2026, 3, 7, 17, tzinfo=UTC),
        fields=["id"],
    )
    assert rows and _ids(rows) == _ids(truth)
    wall_clock = api.sandbox.records_in(
        "prospect",
        "filter_by_created_at",
        datetime(2026, 3, 7, 16, 0, 1, tzinfo=UTC),
        datetime(2026, 3, 7, 17, tzinfo=UTC),
    )
    assert len(wall_clock) < len(truth)  # the hour between tells the two readings apart


def test_query_date_filters_read_gnu_dates_too(api: PardotApi, clock: Clock) -> None:
    api.create_ok(prospect_export(["id"]))
    clock.advance(60)
    api.create_ok(prospect_export(["id"]))

    assert api.query(created_after="30 seconds ago").json()["result"]["total_results"] == 1
    assert api.query(created_after=f"@{int(NOW.timestamp()) - 1}").json()["result"]["total_results"] == 2
    status, code, _ = error_of(api.query(created_after="next blursday"))
    assert (status, code) == (400, 5)


def test_relative_dates_and_timezone_offsets_select_the_same_records(api: PardotApi, clock: Clock) -> None:
    api.sandbox.rows_per_file = 10_000
    relative = prospect_export(["id"], created_after="yesterday", created_before="today")
    explicit = prospect_export(
        ["id"], created_after="2026-03-09T04:00:00Z", created_before="2026-03-10T00:00:00-0400"
    )

    first = download_rows(api, complete(api, clock, relative))[0]
    clock.freeze(NOW)
    second = download_rows(api, complete(api, clock, explicit))[0]

    assert first == second
    assert len(first) > 20


def test_deleted_argument_selects_deleted_live_or_all(sandbox: PardotSandbox) -> None:
    def rows(deleted: str | None) -> list[dict[str, Any]]:
        extra = {} if deleted is None else {"deleted": deleted}
        return sandbox.expected_rows(
            "prospect", "filter_by_updated_at", {"updated_after": "2026-02-20", **extra}, ["id", "isDeleted"]
        )

    live, gone, every = rows("false"), rows("true"), rows("all")

    assert rows(None) == live
    assert live and gone
    assert {r["isDeleted"] for r in live} == {False}
    assert {r["isDeleted"] for r in gone} == {True}
    assert sorted(live + gone, key=lambda r: r["id"]) == every


def test_visitor_activity_type_and_prospect_only_filters(sandbox: PardotSandbox) -> None:
    window = {"created_after": "2026-03-01", "created_before": "2026-03-08"}
    fields = ["id", "type", "typeName", "prospectId"]
    every = sandbox.expected_rows("visitorActivity", "filter_by_created_at", window, fields)
    typed = sandbox.expected_rows(
        "visitorActivity", "filter_by_created_at", {**window, "type": [1, 6, 11]}, fields
    )
    with_prospect = sandbox.expected_rows(
        "visitorActivity",
        "filter_by_updated_at",
        {"updated_after": "2026-03-01", "prospectOnly": True},
        fields,
    )

    assert {r["type"] for r in typed} == {1, 6, 11}
    assert typed == [r for r in every if r["type"] in (1, 6, 11)]
    assert {r["typeName"] for r in typed} == {"Click", "Sent", "Open"}
    assert 5 not in {r["type"] for r in every}
    assert any(r["prospectId"] is None for r in every)
    assert with_prospect and all(r["prospectId"] is not None for r in with_prospect)


def test_prospect_updated_procedure_filters_on_the_prospects_deletion(sandbox: PardotSandbox) -> None:
    args = {"prospect_updated_after": "2026-03-01"}
    live = sandbox.expected_rows("visitor", "filter_by_prospect_updated_at", args, ["id", "prospectId"])
    every = sandbox.expected_rows(
        "visitor", "filter_by_prospect_updated_at", {**args, "prospect_deleted": "all"}, ["id", "prospectId"]
    )

    assert live and len(every) > len(live)
    assert all(r["prospectId"] is not None for r in every)


# ---- validation ------------------------------------------------------------------------------------


def too_many_fields() -> list[str]:
    return [f"field{i}" for i in range(MAX_FIELDS + 1)]


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        ({**prospect_export(), "object": "opportunity"}, 154, "Invalid property in request"),
        ({"object": "prospect"}, 153, "Missing required property in request: procedure"),
        (prospect_export(["id", "favouriteColour"]), 180, "One or more of the specified fields are invalid"),
        (prospect_export(too_many_fields()), 154, "fields can't contain more than 150 fields"),
        ({**prospect_export(), "fields": "id,email"}, 154, "fields must be an array of strings"),
        (
            {"object": "prospect", "procedure": {"name": "filter_by_colour", "arguments": {}}},
            174,
            "Unknown procedure name.",
        ),
        (
            {"object": "prospect", "procedure": {"name": "filter_by_created_at", "arguments": {}}},
            176,
            "Missing required argument. created_after is required.",
        ),
        (prospect_export(colour="blue"), 175, "Unknown procedure argument."),
        (
            prospect_export(created_after="2026-03-09", created_before="2026-03-09"),
            177,
            "created_before must be after created_after",
        ),
        (prospect_export(created_after="next blursday"), 177, "Invalid procedure argument. created_after:"),
        (prospect_export(created_after="2 days ago", created_before="1.5 days ago"), 177, "created_before:"),
        (prospect_export(created_after="2026-02-30 10:00:00"), 177, "not a valid calendar date"),
        (prospect_export(deleted="maybe"), 177, "deleted must be true, false or all"),
        (
            prospect_export(created_after="2025-01-01", created_before="2026-01-02"),
            177,
            "can't exceed 1 year",
        ),
        (
            {
                "object": "prospect",
                "procedure": {"name": "filter_by_created_at", "arguments": {"created_after": "2025-03-09"}},
            },
            177,
            "must be within a year of the creation date",
        ),
        (
            {
                "object": "visitorActivity",
                "procedure": {
                    "name": "filter_by_created_at",
                    "arguments": {"created_after": "today", "type": [5]},
                },
            },
            177,
            "unknown visitor activity type",
        ),
    ],
)
def test_invalid_export_requests_are_refused_with_pardot_codes(
    api: PardotApi, body: dict[str, Any], code: int, message: str
) -> None:
    status, got_code, got_message = error_of(api.create(body))

    assert (status, got_code) == (400, code)
    assert message in got_message


def test_the_field_limit_counts_fields_as_given_duplicates_included(api: PardotApi, clock: Clock) -> None:
    # 151 entries naming only two distinct fields: "The number of fields specified ... can't exceed 150"
    status, code, message = error_of(api.create(prospect_export(["id", "email"] * 75 + ["id"])))
    assert (status, code) == (400, 154)
    assert "fields can't contain more than 150 fields" in message

    # 150 entries are fine, and the repeated names still give one column each
    export = complete(api, clock, prospect_export(["id", "email"] * 75))
    rows, bodies = download_rows(api, export)
    assert rows and list(rows[0]) == ["id", "email"]
    assert bodies[0].startswith(b"id,email\n")


def test_create_needs_a_json_body(api: PardotApi) -> None:
    url = api.url("/api/v5/exports")
    form = {**api.headers, "Content-Type": "application/x-www-form-urlencoded"}
    as_json = {**api.headers, "Content-Type": "application/json"}

    assert error_of(requests.post(url, data="object=prospect", headers=form)) == (
        400,
        151,
        "Unsupported content-type",
    )
    assert error_of(requests.post(url, data=b"", headers=as_json)) == (
        400,
        152,
        "Request body can't be empty",
    )
    assert error_of(requests.post(url, data=b"{oops", headers=as_json)) == (
        400,
        150,
        "Input needs to be valid JSON",
    )


def test_unknown_endpoints_records_and_methods(api: PardotApi) -> None:
    assert error_of(api.read(999)) == (404, 109, "The requested record was not found.")
    assert error_of(requests.get(api.url("/api/v5/objects/prospects"), headers=api.headers))[:2] == (404, 198)
    assert error_of(requests.delete(api.url("/api/v5/exports/1"), headers=api.headers))[:2] == (405, 60)


def test_catalog_validates_definitions_without_a_window() -> None:
    definition = validate_definition(
        "VisitorActivity", "filter_by_updated_at", ["id", "type"], {"type": ["6", 1], "prospectOnly": "true"}
    )

    assert definition.object.name == "visitorActivity"
    assert definition.fields == ("id", "type")
    assert dict(definition.extra) == {"type": (1, 6), "prospect_only": True}
    assert dict(validate_definition("visitor", "filter_by_prospect_updated_at").extra) == {
        "prospect_deleted": "false"
    }
    for bad, code in [
        (("prospect", "filter_by_created_at", None, {"deleted": "sometimes"}), 177),
        (("prospect", "filter_by_created_at", None, {"colour": "red"}), 175),
        (("prospect", "filter_by_activity_date"), 174),
        (("externalActivity", "filter_by_activity_date", ["id", "grade"]), 180),
        (("campaign", "filter_by_created_at"), 154),
    ]:
        with pytest.raises(ExportRequestError) as caught:
            validate_definition(*bad)
        assert caught.value.code == code


def test_expected_rows_refuses_a_request_without_its_required_argument() -> None:
    with pytest.raises(ExportRequestError) as caught:
        PardotSandbox().expected_rows("prospect", "filter_by_created_at", {})
    assert caught.value.code == 176


# ---- cancel, query, expiry, failure ----------------------------------------------------------------


def test_cancel_waiting_export_and_refuse_to_cancel_finished_ones(api: PardotApi, clock: Clock) -> None:
    first = api.create_ok(prospect_export(["id"]))["id"]
    second = api.create_ok(prospect_export(["id"]))["id"]

    canceled = api.cancel(first)
    assert canceled.status_code == 200
    assert canceled.json()["state"] == "Canceled"
    assert api.cancel(first).json()["state"] == "Canceled"
    clock.advance(5)
    assert api.read_ok(first)["state"] == "Canceled"
    assert "resultRefs" not in api.read_ok(first)
    assert api.read_ok(second)["state"] == "Complete"
    assert error_of(api.cancel(second)) == (
        400,
        178,
        f"The current state of the export does not allow the operation: export {second} is Complete.",
    )
    assert error_of(api.cancel(12345))[:2] == (404, 109)


def test_failed_export_has_no_results_and_cannot_be_canceled(api: PardotApi, clock: Clock) -> None:
    api.sandbox.fail_next()
    failed = api.create_ok(prospect_export(["id"]))["id"]
    fine = api.create_ok(prospect_export(["id"]))["id"]
    clock.advance(5)

    assert api.read_ok(failed)["state"] == "Failed"
    assert "resultRefs" not in api.read_ok(failed)
    assert api.read_ok(fine)["state"] == "Complete"
    assert error_of(api.cancel(failed))[:2] == (400, 178)


def test_query_shapes_and_sorting(api: PardotApi, clock: Clock) -> None:
    assert api.query().json() == {"result": {"total_results": 0}}

    first = api.create_ok(prospect_export(["id"]))["id"]
    single = api.query().json()["result"]
    assert single["total_results"] == 1
    assert isinstance(single["export"], dict)
    assert single["export"]["id"] == first

    clock.advance(5)
    second = api.create_ok(
        {
            "object": "visitor",
            "procedure": {"name": "filter_by_updated_at", "arguments": {"updated_after": "today"}},
        }
    )["id"]
    third = api.create_ok(prospect_export(["id"]))["id"]
    several = api.query().json()["result"]
    assert several["total_results"] == 3
    assert [e["id"] for e in several["export"]] == [third, second, first]
    assert all("resultRefs" not in e for e in several["export"])
    ascending = api.query(sort_by="created_at", sort_order="ascending").json()["result"]["export"]
    assert [e["id"] for e in ascending] == [first, second, third]
    assert api.query(status="Complete").json()["result"]["export"]["id"] == first
    assert [e["id"] for e in api.query(object="prospect").json()["result"]["export"]] == [third, first]
    assert api.query(created_after="2026-03-10T11:00:01-04:00").json()["result"]["total_results"] == 2
    assert error_of(api.query(sort_by="name"))[:2] == (400, 19)
    assert error_of(api.query(sort_order="sideways"))[:2] == (400, 20)
    assert error_of(api.query(status="Done"))[:2] == (400, 5)


def test_data_expires_seven_days_after_completion(api: PardotApi, clock: Clock) -> None:
    api.sandbox.token_ttl = timedelta(days=30).total_seconds()
    export = complete(api, clock, prospect_export(["id"]))
    url = refs_of(export)[0]

    clock.advance(timedelta(days=7) - timedelta(seconds=10))
    assert api.download(url).status_code == 200
    clock.advance(10)
    expired = api.read_ok(export["id"])

    assert expired["isExpired"] is True
    assert expired["state"] == "Complete"
    assert "resultRefs" not in expired
    assert expired["updatedAt"] == "2026-03-17T11:00:01-04:00"
    assert error_of(api.download(url)) == (
        400,
        178,
        "The current state of the export does not allow the operation: the export has expired.",
    )


def test_export_not_complete_within_seven_days_is_canceled_and_expired(api: PardotApi, clock: Clock) -> None:
    api.sandbox.token_ttl = timedelta(days=30).total_seconds()
    api.sandbox.processing_seconds = timedelta(days=8).total_seconds()
    export_id = api.create_ok(prospect_export(["id"]))["id"]

    clock.advance(timedelta(days=6))
    assert api.read_ok(export_id)["state"] == "Processing"
    clock.advance(timedelta(days=1))
    export = api.read_ok(export_id)

    assert (export["state"], export["isExpired"]) == ("Canceled", True)
    assert export["updatedAt"] == "2026-03-17T11:00:00-04:00"


# ---- limits and transient failures -----------------------------------------------------------------


def test_forced_concurrency_and_daily_limit_errors(api: PardotApi) -> None:
    api.sandbox.force_error(66, times=2)
    api.sandbox.force_error(122)

    concurrency = (
        429,
        66,
        "You have exceeded your concurrent request limit. Please wait, before trying again",
    )
    assert error_of(api.query()) == concurrency
    assert error_of(api.query()) == concurrency
    assert error_of(api.query()) == (429, 122, "Daily API rate limit met")
    assert api.query().status_code == 200


def test_daily_allowance_is_counted_and_resets_at_midnight_in_the_account_timezone(
    api: PardotApi, clock: Clock
) -> None:
    api.sandbox.daily_limit = 3
    api.sandbox.token_ttl = timedelta(days=1).total_seconds()
    for _ in range(3):
        assert api.query().status_code == 200

    assert error_of(api.query())[:2] == (429, 122)
    assert api.sandbox.api_calls_today() == 3
    clock.advance(timedelta(hours=12, minutes=59))  # 23:59 in New York
    assert error_of(api.query())[:2] == (429, 122)
    clock.advance(timedelta(minutes=1))
    assert api.query().status_code == 200
    resp = requests.get(api.url("/api/v5/exports"), headers={**api.headers, "X-Return-Api-Usage": "1"})
    assert resp.headers["x-api-usage"] == "2/3"


def test_more_than_five_concurrent_calls_are_refused_with_code_66(api: PardotApi) -> None:
    api.sandbox.latency_seconds = 2.5  # wide enough that all seven are in flight together, even under load
    barrier = threading.Barrier(7)
    results: list[tuple[int, int | None]] = []
    lock = threading.Lock()

    def call() -> None:
        barrier.wait()
        resp = requests.get(api.url("/api/v5/exports"), headers=api.headers)
        with lock:
            results.append((resp.status_code, resp.json().get("code")))

    threads = [threading.Thread(target=call) for _ in range(7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results, key=str) == [(200, None)] * 5 + [(429, 66)] * 2


def test_transient_upstream_errors(api: PardotApi) -> None:
    api.sandbox.fail_requests(status=503, times=2)

    first, second, third = api.query(), api.query(), api.query()

    assert (first.status_code, second.status_code, third.status_code) == (503, 503, 200)
    assert first.headers["Content-Type"].startswith("text/html")
    assert [(e.method, e.path, e.status) for e in api.sandbox.request_log] == [
        ("GET", "/api/v5/exports", 503),
        ("GET", "/api/v5/exports", 503),
        ("GET", "/api/v5/exports", 200),
    ]


# ---- downloads -------------------------------------------------------------------------------------


def test_redirected_download_rejects_credentials_at_storage(api: PardotApi, clock: Clock) -> None:
    api.sandbox.rows_per_file = 10_000
    url = refs_of(complete(api, clock, prospect_export(["id", "email"])))[0]
    direct = api.download(url).content
    api.sandbox.redirect_downloads = True

    redirect = api.download(url, allow_redirects=False)
    location = redirect.headers["Location"]
    followed_naively = api.download(url)  # requests drops Authorization on a new host, keeps the BU header

    assert redirect.status_code == 302
    assert urlsplit(location).hostname == "localhost"
    assert urlsplit(location).port == urlsplit(url).port
    assert followed_naively.status_code == 400
    assert b"InvalidArgument" in followed_naively.content
    assert requests.get(location, headers={"Authorization": f"Bearer {api.token}"}).status_code == 400
    clean = requests.get(location)
    assert clean.status_code == 200
    assert clean.content == direct
    tampered = urlunsplit(
        urlsplit(location)._replace(query=urlsplit(location).query.replace("sig=", "sig=x"))
    )
    assert requests.get(tampered).status_code == 403
    clock.advance(api.sandbox.signed_url_ttl + 1)
    assert b"Request has expired" in requests.get(location).content


def test_truncated_download_is_detected_by_requests(api: PardotApi, clock: Clock) -> None:
    url = refs_of(complete(api, clock, prospect_export(["id", "email"])))[0]
    api.sandbox.truncate_downloads = True

    with pytest.raises(requests.exceptions.RequestException):
        api.download(url)
    api.sandbox.truncate_downloads = False
    assert api.download(url).status_code == 200


def test_large_download_streams_with_exact_content_length(api: PardotApi, clock: Clock) -> None:
    api.sandbox.record_spacing_seconds = {"listMembership": 1}
    api.sandbox.rows_per_file = 1_000_000
    body = {
        "object": "listMembership",
        "procedure": {
            "name": "filter_by_created_at",
            "arguments": {"created_after": "2026-03-09 06:00:00", "created_before": "2026-03-09 12:00:00"},
        },
    }
    url = refs_of(complete(api, clock, body))[0]

    with api.download(url, stream=True) as resp:
        announced = int(resp.headers["Content-Length"])
        chunks = list(resp.iter_content(chunk_size=64 * 1024))

    assert announced > 1_000_000
    assert sum(len(c) for c in chunks) == announced
    assert len(chunks) > 10


def test_downloads_need_the_same_auth(api: PardotApi, clock: Clock) -> None:
    url = refs_of(complete(api, clock, prospect_export(["id"])))[0]

    assert error_of(requests.get(url))[:2] == (401, 184)
    assert error_of(requests.get(url, headers={"Authorization": f"Bearer {api.token}"}))[:2] == (400, 181)
    assert error_of(api.download(url.rsplit("/", 1)[0] + "/1"))[:2] == (404, 109)


def test_a_closed_window_may_lie_more_than_a_year_back(api: PardotApi, clock: Clock) -> None:
    # Backfills: with both bounds given, only the one-year range rule applies, not the age of *_after.
    old = prospect_export(created_after="2024-01-01 00:00:00", created_before="2024-06-01 00:00:00")
    export = complete(api, clock, old)
    assert export["state"] == "Complete"


# ---- the one-year rules ----------------------------------------------------------------------------


def created_window(after: str, before: str | None = None) -> dict[str, Any]:
    arguments = (
        {"created_after": after} if before is None else {"created_after": after, "created_before": before}
    )
    return {
        "object": "visitorActivity",
        "fields": ["id", "createdAt"],
        "procedure": {"name": "filter_by_created_at", "arguments": arguments},
    }


@pytest.mark.parametrize(
    ("after", "before"),
    [
        ("2019-12-25", "2020-12-25"),  # the v5 page: "from December 25, 2019 to December 25, 2020"
        ("2019-12-25 10:00:00", "2020-12-25 10:00:00"),
        ("2019-12-25T15:00:00Z", "2020-12-25T15:00:00Z"),  # the same instants, written in UTC
    ],
)
def test_the_docs_example_year_across_a_leap_day_is_accepted(api: PardotApi, after: str, before: str) -> None:
    assert (datetime.fromisoformat(before[:10]) - datetime.fromisoformat(after[:10])).days == 366

    resp = api.create(created_window(after, before))

    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    ("after", "before"),
    [
        ("2019-12-25 10:00:00", "2020-12-25 10:00:01"),
        ("2019-12-25", "2020-12-26"),
        # the v3/v4 JSON example: hour 24 rolls over to 2020-12-26 00:59:59 (the catalog's documented choice)
        ("2019-12-25 10:00:00", "2020-12-25 24:59:59"),
    ],
)
def test_a_window_past_one_calendar_year_is_refused_with_177(api: PardotApi, after: str, before: str) -> None:
    status, code, message = error_of(api.create(created_window(after, before)))

    assert (status, code) == (400, 177)
    assert message == (
        "Invalid procedure argument. The range between created_after and created_before can't exceed 1 year."
    )


def test_one_year_after_a_leap_day_is_the_first_of_march() -> None:
    leap_day = datetime(2024, 2, 29, 12, 30, tzinfo=NEW_YORK)
    created = datetime(2026, 3, 10, tzinfo=UTC)

    def validate(before: str) -> None:
        validate_export_request(
            "prospect",
            ["id"],
            "filter_by_created_at",
            {"created_after": "2024-02-29 12:30:00", "created_before": before},
            now=created,
            tz=NEW_YORK,
            parse_date=parse_date_argument,
        )

    assert one_year_after(leap_day, NEW_YORK) == datetime(2025, 3, 1, 12, 30, tzinfo=NEW_YORK)
    assert one_year_after(datetime(2023, 3, 1, tzinfo=UTC), UTC) == datetime(2024, 3, 1, tzinfo=UTC)
    validate("2025-03-01 12:30:00")
    with pytest.raises(ExportRequestError) as caught:
        validate("2025-03-01 12:30:01")
    assert caught.value.code == 177


def test_one_year_is_counted_on_the_users_calendar_across_daylight_saving_time() -> None:
    # 2025-03-01 00:00 EST is 05:00 UTC; a year later on New York's calendar is 2026-03-01 00:00 EST again,
    # while 2026-03-15 00:00 EDT is 04:00 UTC: the wall clock counts, not a fixed number of hours.
    assert one_year_after(datetime(2025, 3, 1, 5, tzinfo=UTC), NEW_YORK) == datetime(
        2026, 3, 1, tzinfo=NEW_YORK
    )
    assert one_year_after(datetime(2025, 3, 15, 4, tzinfo=UTC), NEW_YORK) == datetime(
        2026, 3, 15, tzinfo=NEW_YORK
    )


def test_without_before_after_may_be_exactly_one_calendar_year_before_creation(api: PardotApi) -> None:
    # NOW is 2026-03-10 11:00:00 in New York
    assert api.create(created_window("2025-03-10 11:00:00")).status_code == 200

    status, code, message = error_of(api.create(created_window("2025-03-10 10:59:59")))

    assert (status, code) == (400, 177)
    assert message == (
        "Invalid procedure argument. "
        "The created_after must be within a year of the creation date of the Export."
    )


@pytest.mark.parametrize(
    ("literal", "window", "accepted"),
    [
        (False, ("2024-01-01 00:00:00", "2024-06-01 00:00:00"), True),  # a backfill, long ago
        (True, ("2024-01-01 00:00:00", "2024-06-01 00:00:00"), False),
        (True, ("2025-03-10 11:00:00", "2025-06-01 00:00:00"), True),  # after exactly a year before NOW
        (True, ("2025-03-10 10:59:59", "2025-06-01 00:00:00"), False),
        (True, ("2025-03-10 10:59:59", None), False),
        (False, ("2025-03-10 10:59:59", None), False),  # an open window is held to it either way
    ],
)
def test_after_within_a_year_of_creation_has_two_readings(
    api: PardotApi, literal: bool, window: tuple[str, str | None], accepted: bool
) -> None:
    api.sandbox.after_within_year_of_creation = literal

    resp = api.create(created_window(*window))

    if accepted:
        assert resp.status_code == 200, resp.text
    else:
        assert error_of(resp) == (
            400,
            177,
            "Invalid procedure argument. "
            "The created_after must be within a year of the creation date of the Export.",
        )


def test_expected_rows_follow_the_sandboxs_reading_of_the_creation_date_rule(sandbox: PardotSandbox) -> None:
    backfill = {"created_after": "2024-01-01 00:00:00", "created_before": "2024-01-02 00:00:00"}
    assert sandbox.expected_rows("prospect", "filter_by_created_at", backfill, ["id"])

    sandbox.after_within_year_of_creation = True

    with pytest.raises(ExportRequestError) as caught:
        sandbox.expected_rows("prospect", "filter_by_created_at", backfill, ["id"])
    assert caught.value.code == 177


# ---- choices where the page is silent or contradictory ---------------------------------------------


def test_prospect_only_camel_case_is_accepted_only_where_the_page_spells_it(sandbox: PardotSandbox) -> None:
    updated = sandbox.expected_rows(
        "visitorActivity",
        "filter_by_updated_at",
        {"updated_after": "2026-03-09", "prospectOnly": True},
        ["id"],
    )
    assert updated

    with pytest.raises(ExportRequestError) as caught:
        sandbox.expected_rows(
            "visitorActivity", "filter_by_created_at", {"created_after": "2026-03-09", "prospectOnly": True}
        )
    assert caught.value.code == 175


@pytest.mark.parametrize("before", [None, "2026-03-20 00:00:00"])
def test_a_future_after_is_accepted_and_exports_nothing(
    api: PardotApi, clock: Clock, before: str | None
) -> None:
    export = complete(api, clock, created_window("2026-03-11 00:00:00", before))  # NOW is 2026-03-10

    assert "resultRefs" not in export


def test_external_activity_date_is_exported_as_a_datetime(api: PardotApi, clock: Clock) -> None:
    body = {
        "object": "externalActivity",
        "fields": ["id", "activityDate"],
        "procedure": {"name": "filter_by_activity_date", "arguments": {"activity_after": "2026-03-01"}},
    }

    rows, _ = download_rows(api, complete(api, clock, body))

    assert len(rows) > 10
    stamps = [datetime.strptime(r["activityDate"], "%Y-%m-%d %H:%M:%S") for r in rows]
    assert any(s.time() != datetime.min.time() for s in stamps)  # a time of day, not a bare date


# ---- ground truth ----------------------------------------------------------------------------------


def test_records_in_is_the_half_open_window_of_instants(sandbox: PardotSandbox) -> None:
    start, end = datetime(2026, 3, 8, 5, tzinfo=UTC), datetime(2026, 3, 9, 17, tzinfo=UTC)
    truth = sandbox.records_in("prospect", "filter_by_updated_at", start, end, fields=["id", "updatedAt"])
    stamps = [r["updatedAt"] for r in truth]

    assert len(truth) > 50
    assert all(start <= s < end for s in stamps)
    # what an exclusive-bounds client must send for [start, end): after = start - 1 s, before = end
    second = timedelta(seconds=1)
    exclusive = {"updated_after": (start - second).isoformat(), "updated_before": end.isoformat()}
    assert truth == sandbox.expected_rows("prospect", "filter_by_updated_at", exclusive, ["id", "updatedAt"])
    # ...and it does not follow the bounds knob
    sandbox.bounds = "inclusive"
    assert truth == sandbox.records_in(
        "prospect", "filter_by_updated_at", start, end, fields=["id", "updatedAt"]
    )


def test_records_in_includes_the_start_instant_and_excludes_the_end(sandbox: PardotSandbox) -> None:
    first = sandbox.records_in(
        "listMembership",
        "filter_by_created_at",
        datetime(2026, 3, 9, tzinfo=UTC),
        datetime(2026, 3, 10, tzinfo=UTC),
        fields=["id", "createdAt"],
    )[0]
    stamp = first["createdAt"]

    def ids(start: datetime, end: datetime) -> list[int]:
        rows = sandbox.records_in("listMembership", "filter_by_created_at", start, end, fields=["id"])
        return [r["id"] for r in rows]

    assert first["id"] in ids(stamp, stamp + timedelta(seconds=1))
    assert first["id"] not in ids(stamp - timedelta(hours=1), stamp)


def test_records_in_counts_only_records_that_exist_as_of(sandbox: PardotSandbox) -> None:
    # activityDate is up to two days before createdAt: the last day's activities are mostly not in yet
    start, end = datetime(2026, 3, 8, tzinfo=UTC), datetime(2026, 3, 10, tzinfo=UTC)

    def rows(as_of: datetime) -> list[dict[str, Any]]:
        return sandbox.records_in(
            "externalActivity", "filter_by_activity_date", start, end, fields=["id", "createdAt"], as_of=as_of
        )

    early, later = rows(end), rows(end + timedelta(days=3))

    assert all(r["createdAt"] < end for r in early)
    assert len(later) > len(early) and {r["id"] for r in early} < {r["id"] for r in later}
    assert rows(NOW) == rows(NOW)  # the default is now on the sandbox clock, which is frozen


def test_records_in_applies_the_procedures_filters_and_refuses_a_window_argument(
    sandbox: PardotSandbox,
) -> None:
    start, end = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 9, tzinfo=UTC)
    live = sandbox.records_in("prospect", "filter_by_updated_at", start, end, fields=["id", "isDeleted"])
    every = sandbox.records_in(
        "prospect", "filter_by_updated_at", start, end, filters={"deleted": "all"}, fields=["id", "isDeleted"]
    )

    assert {r["isDeleted"] for r in live} == {False}
    assert {r["isDeleted"] for r in every} == {False, True}
    with pytest.raises(ValueError, match="updated_after"):
        sandbox.records_in("prospect", "filter_by_updated_at", start, end, filters={"updated_after": "today"})
    with pytest.raises(ValueError, match="aware"):
        sandbox.records_in("prospect", "filter_by_updated_at", datetime(2026, 3, 1), end)
    with pytest.raises(ExportRequestError):
        sandbox.records_in("prospect", "filter_by_colour", start, end)


def test_csv_records_in_reads_like_the_downloaded_files(api: PardotApi, clock: Clock) -> None:
    api.sandbox.rows_per_file = 10_000
    start, end = datetime(2026, 3, 8, 5, tzinfo=UTC), datetime(2026, 3, 9, 17, tzinfo=UTC)
    window = {"created_after": (start - timedelta(seconds=1)).isoformat(), "created_before": end.isoformat()}
    created = clock.now()

    rows, _ = download_rows(api, complete(api, clock, prospect_export(None, **window)))

    assert rows == api.sandbox.csv_records_in("prospect", "filter_by_created_at", start, end, as_of=created)
