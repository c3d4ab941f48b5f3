"""The impact.com Advocate (SaaSquatch) Export API sandbox, exercised over real HTTP with requests.

Webhook signatures are verified here independently of the sandbox: the RFC 7797 signing input is rebuilt
from the raw body as the vendor's verifiers do, and checked against the public key from the served JWKS.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import json
import re
import threading
import time
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import pytest
import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers
from exportpipe_dev.sandbox.advocate import (
    EXPORT_TYPES,
    REFERRAL_COLUMNS,
    REWARD_BALANCE_COLUMNS,
    USER_COLUMNS,
    AdvocateSandbox,
    ExportStatus,
)
from exportpipe_dev.sandbox.base import Clock, SandboxServer

#: 2026-03-10 15:00:00 UTC: the frozen "now" of most tests.
NOW = datetime(2026, 3, 10, 15, 0, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
DONE = 2.001  # processing_seconds (2 s) on the frozen clock
DAY_MS = 86_400_000
SHEET_NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"


class AdvocateApi:
    """A thin requests-based client: Basic auth with the API key as password, the tenant in the path."""

    def __init__(self, sandbox: AdvocateSandbox, base_url: str) -> None:
        self.sandbox = sandbox
        self.base_url = base_url
        self.session = requests.Session()
        self.session.auth = ("", sandbox.api_key)

    def url(self, rest: str) -> str:
        return f"{self.base_url}/api/v1/{self.sandbox.tenant_alias}/{rest}"

    def create(self, body: Any) -> requests.Response:
        return self.session.post(self.url("export"), json=body)

    def create_ok(self, body: dict[str, Any]) -> dict[str, Any]:
        resp = self.create(body)
        assert resp.status_code == 201, resp.text
        data: dict[str, Any] = resp.json()
        return data

    def lookup(self, export_id: str) -> dict[str, Any]:
        resp = self.session.get(self.url(f"export/{export_id}"))
        assert resp.status_code == 200, resp.text
        data: dict[str, Any] = resp.json()
        return data

    def download(self, export_id: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.url(f"export/{export_id}/download"), **kwargs)

    def listing(self, **params: Any) -> requests.Response:
        return self.session.get(self.url("export/history/list"), params=params)


def completed(api: AdvocateApi, clock: Clock, body: dict[str, Any]) -> str:
    export_id = str(api.create_ok(body)["id"])
    clock.advance(DONE)
    assert api.lookup(export_id)["status"] == "COMPLETED"
    return export_id


def error_of(resp: requests.Response) -> tuple[int, str, list[str]]:
    body = resp.json()
    assert set(body) <= {"statusCode", "message", "apiErrorCode", "rsCode", "validationErrors"}
    assert body["statusCode"] == resp.status_code and isinstance(body["message"], str)
    return resp.status_code, body["apiErrorCode"], list(body.get("validationErrors", []))


def csv_rows(content: bytes) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(content.decode("utf-8"), newline=""))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def xlsx_rows(content: bytes) -> tuple[list[str], list[dict[str, str]]]:
    """Read the workbook with zipfile + ElementTree only, values as the CSV would write them."""
    archive = zipfile.ZipFile(io.BytesIO(content))
    assert archive.testzip() is None
    names = set(archive.namelist())
    assert {"[Content_Types].xml", "_rels/.rels", "xl/workbook.xml", "xl/worksheets/sheet1.xml"} <= names
    types = ET.fromstring(archive.read("[Content_Types].xml"))
    overrides = {o.get("PartName"): o.get("ContentType") for o in types}
    assert overrides["/xl/workbook.xml"].endswith("spreadsheetml.sheet.main+xml")
    sheet = ET.fromstring(archive.read("xl/worksheets/sheet1.xml"))
    table: list[dict[int, str]] = []
    for row in sheet.iter(f"{SHEET_NS}row"):
        cells: dict[int, str] = {}
        for cell in row:
            ref = cell.get("r") or ""
            letters = re.match(r"[A-Z]+", ref)
            assert letters is not None
            column = 0
            for ch in letters.group(0):
                column = column * 26 + ord(ch) - 64
            kind = cell.get("t")
            if kind == "inlineStr":
                text = cell.find(f"{SHEET_NS}is/{SHEET_NS}t")
                cells[column - 1] = "" if text is None else (text.text or "")
            elif kind == "b":
                cells[column - 1] = "true" if cell.findtext(f"{SHEET_NS}v") == "1" else "false"
            else:
                cells[column - 1] = cell.findtext(f"{SHEET_NS}v") or ""
        table.append(cells)
    header = [table[0][i] for i in range(len(table[0]))]
    return header, [{name: cells.get(i, "") for i, name in enumerate(header)} for cells in table[1:]]


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def sandbox(clock: Clock) -> Iterator[AdvocateSandbox]:
    app = AdvocateSandbox(clock=clock, webhook_retry_seconds=0.05)
    yield app
    app.close()


@pytest.fixture
def server(sandbox: AdvocateSandbox) -> Iterator[SandboxServer]:
    with SandboxServer(sandbox) as srv:
        yield srv


@pytest.fixture
def api(sandbox: AdvocateSandbox, server: SandboxServer) -> Iterator[AdvocateApi]:
    client = AdvocateApi(sandbox, server.base_url)
    yield client
    client.session.close()


# ---- a local webhook receiver ------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


@dataclass
class Receiver:
    """Records every POST; answers the statuses in ``replies`` in turn, then 200."""

    url: str = ""
    replies: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            assert time.monotonic() < deadline, f"only {len(self.received)} of {count} deliveries arrived"
            time.sleep(0.01)

    def types(self) -> list[str]:
        with self.lock:
            return [r.event["type"] for r in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with state.lock:
                state.received.append(Received(self.path, dict(self.headers.items()), body))
                status = state.replies.pop(0) if state.replies else 200
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "http://127.0.0.1:9/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/hooks/advocate"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_jws(header_value: str, body: bytes, jwks: dict[str, Any]) -> str:
    """Verify ``X-Hook-JWS-RFC-7797`` as the vendor's verifiers do; returns the kid (raises if invalid)."""
    assert header_value.count("..") == 1
    payload = base64.urlsafe_b64encode(body).rstrip(b"=").decode("ascii")
    compact = header_value.replace("..", f".{payload}.", 1)
    protected, encoded_body, signature = compact.split(".")
    header = json.loads(b64url_decode(protected))
    assert header["alg"] == "RS256" and header["typ"] == "JWT"
    matching = [key for key in jwks["keys"] if key["kid"] == header["kid"]]
    if not matching:
        raise LookupError(f"no JWK with kid {header['kid']}")
    jwk = matching[0]
    assert (jwk["kty"], jwk["alg"], jwk["use"]) == ("RSA", "RS256", "sig")
    public = RSAPublicNumbers(
        e=int.from_bytes(b64url_decode(jwk["e"]), "big"), n=int.from_bytes(b64url_decode(jwk["n"]), "big")
    ).public_key()
    public.verify(
        b64url_decode(signature),
        f"{protected}.{encoded_body}".encode("ascii"),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )
    return str(header["kid"])


def fetch_jwks(base_url: str) -> dict[str, Any]:
    resp = requests.get(f"{base_url}/.well-known/jwks.json")  # no credentials: it is public
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("application/json")
    data: dict[str, Any] = resp.json()
    return data


# ---- handshake, auth, errors -------------------------------------------------------------------------


def test_handshake_has_the_tenant_alias_and_api_key(sandbox: AdvocateSandbox, server: SandboxServer) -> None:
    handshake = sandbox.handshake(server.base_url)

    assert handshake["source"] == "advocate"
    assert handshake["base_url"] == server.base_url
    creds = handshake["credentials"]
    assert set(creds) == {"tenant_alias", "api_key"}
    assert re.fullmatch(r"test_[a-z0-9]+", creds["tenant_alias"])
    assert re.fullmatch(r"TEST_[A-Z0-9]{20}", creds["api_key"])


@pytest.mark.parametrize("auth", ["none", "wrong-key", "key-as-username", "bearer"])
def test_missing_or_wrong_api_key_is_401(api: AdvocateApi, auth: str) -> None:
    key = api.sandbox.api_key
    kwargs: dict[str, Any] = {
        "none": {},
        "wrong-key": {"auth": ("", "TEST_WRONGWRONGWRONGWRONG")},
        "key-as-username": {"auth": (key, "")},
        "bearer": {"headers": {"Authorization": f"Bearer {key}"}},
    }[auth]

    resp = requests.get(api.url("export/history/list"), **kwargs)

    assert error_of(resp) == (401, "UNAUTHORIZED", [])
    assert resp.json()["rsCode"] is None
    assert resp.headers["WWW-Authenticate"].startswith("Basic")


def test_any_username_is_accepted_with_the_key_as_password(api: AdvocateApi) -> None:
    resp = requests.get(api.url("export/history/list"), auth=("whoever", api.sandbox.api_key))

    assert resp.status_code == 200


def test_unknown_tenant_is_404_whatever_the_key(api: AdvocateApi) -> None:
    for auth in (("", api.sandbox.api_key), ("", "nope"), None):
        resp = requests.get(f"{api.base_url}/api/v1/fake/export/history/list", auth=auth)
        assert error_of(resp) == (404, "TENANT_NOT_FOUND", [])


def test_unknown_export_route_and_method(api: AdvocateApi) -> None:
    assert error_of(api.session.get(api.url("export/000000000000000000000000"))) == (404, "NOT_FOUND", [])
    assert api.session.get(api.url("export/000000000000000000000000")).json()["message"] == "Export NOT found"
    assert error_of(api.session.get(api.url("exports")))[0] == 404
    assert error_of(api.session.get(api.url("Export/history/list")))[0] == 404  # paths are case-sensitive
    wrong = api.session.get(api.url("export"))
    assert error_of(wrong)[:2] == (405, "METHOD_NOT_ALLOWED")
    assert wrong.headers["Allow"] == "POST"


# ---- create ------------------------------------------------------------------------------------------


def test_create_answers_201_with_the_pending_export(api: AdvocateApi) -> None:
    resp = api.create({"type": "USER"})

    assert resp.status_code == 201
    body = resp.json()
    assert list(body) == [
        "id",
        "type",
        "format",
        "name",
        "requester",
        "params",
        "status",
        "dateCreated",
        "dateCompleted",
        "dateExpires",
        "mailtoEmail",
    ]
    assert re.fullmatch(r"[0-9a-f]{24}", body["id"])
    assert int(body["id"][:8], 16) == NOW_MS // 1000  # an ObjectId: its creation second first
    assert body == {
        "id": body["id"],
        "type": "USER",
        "format": "CSV",
        "name": None,
        "requester": "API",
        "params": None,
        "status": "PENDING",
        "dateCreated": NOW_MS,
        "dateCompleted": None,
        "dateExpires": None,
        "mailtoEmail": None,
    }
    assert api.lookup(body["id"]) == body


def test_create_echoes_name_requester_format_and_normalised_params(api: AdvocateApi) -> None:
    body = api.create_ok(
        {
            "type": "USER",
            "format": "XLSX",
            "name": "Monthly user export",
            "requester": "Hayward Erikson",
            "params": {
                "createdOrUpdatedSince": "2025-01-01T00:00:00Z",  # the Singer tap's ISO string
                "createdOrUpdatedBefore": 1771000000000,
                "createdSince": "2024-12-01",
                "updatedSince": "1735689600000",
                "programId": "partner-program",
                "fields": {"includeUserStatsFields": True},
            },
        }
    )

    assert (body["format"], body["name"], body["requester"]) == (
        "XLSX",
        "Monthly user export",
        "Hayward Erikson",
    )
    assert body["params"] == {
        "createdSince": 1733011200000,
        "updatedSince": 1735689600000,
        "createdOrUpdatedSince": 1735689600000,
        "createdOrUpdatedBefore": 1771000000000,
        "programId": "partner-program",
        "fields": {"includeUserStatsFields": True},
    }


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({}, "type: is required"),
        ({"type": "user"}, "type: must be one of"),
        ({"type": "USERS"}, "type: must be one of"),
        ({"type": "USER", "format": "PDF"}, "format: must be CSV or XLSX"),
        ({"type": "USER", "format": "csv"}, "format: must be CSV or XLSX"),
        ({"type": "USER", "name": 7}, "name: must be a string"),
        ({"type": "USER", "outputFormat": "CSV"}, "outputFormat: unknown property"),
        ({"type": "USER", "params": []}, "params: must be an object"),
        ({"type": "USER", "params": {"since": 1}}, "params.since: unknown parameter"),
        (
            {"type": "USER", "params": {"createdSince": "last week"}},
            "params.createdSince: must be a timestamp",
        ),
        ({"type": "USER", "params": {"updatedBefore": True}}, "params.updatedBefore: must be a timestamp"),
        ({"type": "USER", "params": {"programId": 12}}, "params.programId: must be a non-empty string"),
        ({"type": "USER", "params": {"fields": {"includeAll": True}}}, "params.fields.includeAll: unknown"),
        ({"type": "USER", "params": {"fields": {"includeUserStatsFields": "yes"}}}, "must be a boolean"),
        ({"type": "REWARD", "params": {"filter": {"colour_eq": "red"}}}, "params.filter.colour_eq: unknown"),
        ({"type": "REWARD", "params": {"filter": {"type_eq": "CASH"}}}, "params.filter.type_eq: must be one"),
        ({"type": "REWARD", "params": {"filter": {"dateCreated_timeframe": "last_30_days"}}}, "not emulated"),
        ({"type": "REWARD", "params": {"filter": {"statuses_in": [{"status": "GONE"}]}}}, "statuses_in"),
        (
            {"type": "REWARD", "params": {"filter": {"OR": {"id_eq": "x"}}}},
            "params.filter.OR: must be a list",
        ),
        ({"type": "REWARD", "params": {"at": "noon"}}, "params.at: must be a timestamp"),
    ],
)
def test_create_validation(api: AdvocateApi, body: dict[str, Any], problem: str) -> None:
    resp = api.create(body)

    status, code, problems = error_of(resp)
    assert (status, code) == (400, "VALIDATION_FAILED")
    assert len(problems) == 1 and problem in problems[0], problems
    assert api.sandbox.export_ids() == []


def test_every_validation_problem_is_reported_at_once(api: AdvocateApi) -> None:
    resp = api.create({"type": "NOPE", "format": "PDF", "params": {"createdSince": "x", "bogus": 1}})

    problems = error_of(resp)[2]
    assert [p.split(":")[0] for p in problems] == ["type", "format", "params.bogus", "params.createdSince"]


def test_body_must_be_a_json_object_sent_as_json(api: AdvocateApi) -> None:
    form = api.session.post(api.url("export"), data={"type": "USER"})
    broken = api.session.post(api.url("export"), data=b"{", headers={"Content-Type": "application/json"})
    array = api.create([{"type": "USER"}])

    assert error_of(form)[:2] == (415, "UNSUPPORTED_MEDIA_TYPE")
    assert error_of(broken)[:2] == (400, "VALIDATION_FAILED")
    assert error_of(array)[:2] == (400, "VALIDATION_FAILED")


def test_read_only_export_fields_sent_back_are_ignored(api: AdvocateApi) -> None:
    first = api.create_ok({"type": "REFERRAL"})

    again = api.create_ok(first)

    assert again["id"] != first["id"] and again["status"] == "PENDING"


# ---- the filter matrix -------------------------------------------------------------------------------


def rows_of(api: AdvocateApi, clock: Clock, body: dict[str, Any]) -> list[dict[str, str]]:
    export_id = completed(api, clock, body)
    header, rows = csv_rows(api.download(export_id).content)
    assert tuple(header) == api.sandbox.expected_columns(export_id)
    assert rows == api.sandbox.expected_rows(export_id)
    return rows


def test_created_and_updated_filters_select_on_the_right_dates(api: AdvocateApi, clock: Clock) -> None:
    since, before = NOW_MS - 120 * DAY_MS, NOW_MS - 60 * DAY_MS
    every = rows_of(api, clock, {"type": "USER"})
    created = rows_of(
        api, clock, {"type": "USER", "params": {"createdSince": since, "createdBefore": before}}
    )
    updated = rows_of(
        api, clock, {"type": "USER", "params": {"updatedSince": since, "updatedBefore": before}}
    )

    assert created == [r for r in every if since <= int(r["dateCreated"]) < before]
    assert 50 < len(created) < len(every)
    assert updated == [
        r for r in every if r["dateModified"] != r["dateCreated"] and since <= int(r["dateModified"]) < before
    ]
    assert updated and any(int(r["dateCreated"]) < since for r in updated)


def test_since_is_inclusive_and_before_exclusive(api: AdvocateApi, clock: Clock) -> None:
    every = rows_of(api, clock, {"type": "USER"})
    edge = every[len(every) // 2]
    bound = int(edge["dateCreated"])
    changed = next(r for r in every if r["dateModified"] != r["dateCreated"])

    since = rows_of(api, clock, {"type": "USER", "params": {"createdSince": bound}})
    before = rows_of(api, clock, {"type": "USER", "params": {"createdBefore": bound}})
    at_change = {
        "createdOrUpdatedSince": int(changed["dateModified"]),
        "updatedBefore": int(changed["dateModified"]),
    }
    window = rows_of(api, clock, {"type": "USER", "params": at_change})

    assert since[0] == edge and edge not in before
    assert len(since) + len(before) == len(every)
    assert changed not in window and all(
        int(r["dateModified"]) >= int(changed["dateModified"]) for r in window
    )


def test_created_or_updated_windows_are_contiguous(api: AdvocateApi, clock: Clock) -> None:
    cut = NOW_MS - 30 * DAY_MS
    every = rows_of(api, clock, {"type": "REFERRAL"})
    old = rows_of(api, clock, {"type": "REFERRAL", "params": {"createdOrUpdatedBefore": cut}})
    new = rows_of(api, clock, {"type": "REFERRAL", "params": {"createdOrUpdatedSince": cut}})

    assert sorted(r["id"] for r in old + new) == sorted(r["id"] for r in every)
    assert all(int(r["dateModified"]) >= cut for r in new)
    assert any(int(r["dateReferralStarted"]) < cut for r in new)  # updated recently, created earlier


def test_filters_that_do_not_apply_to_the_type_are_ignored(api: AdvocateApi, clock: Clock) -> None:
    # the Singer tap sends createdOrUpdatedSince with REWARD_BALANCE, which the spec says it doesn't work with
    future = NOW_MS + DAY_MS
    plain = rows_of(api, clock, {"type": "REWARD_BALANCE"})
    body = api.create_ok(
        {"type": "REWARD_BALANCE", "params": {"createdOrUpdatedSince": future, "programId": "x"}}
    )
    clock.advance(DONE)
    ignored = csv_rows(api.download(body["id"]).content)[1]
    rewards = rows_of(
        api, clock, {"type": "REWARD", "params": {"createdSince": future, "updatedSince": future}}
    )

    assert body["params"] == {"createdOrUpdatedSince": future, "programId": "x"}
    assert ignored == plain and plain
    assert len(rewards) > 100


def test_balance_exports_select_on_the_users_creation(api: AdvocateApi, clock: Clock) -> None:
    before = NOW_MS - 200 * DAY_MS
    users = {r["id"] for r in rows_of(api, clock, {"type": "USER", "params": {"createdBefore": before}})}
    balances = rows_of(api, clock, {"type": "REWARD_BALANCE", "params": {"createdBefore": before}})
    per_user = rows_of(api, clock, {"type": "USER_REWARD_BALANCE", "params": {"createdBefore": before}})

    assert balances and {r["userId"] for r in balances} < users
    assert {r["id"] for r in per_user} == users
    assert {(r["type"], r["unit"]) for r in balances} == {
        ("CREDIT", "POINT"),
        ("CREDIT", "CASH/USD"),
        ("PCT_DISCOUNT", "%"),
    }
    assert all(r["amount"].isdigit() for r in balances)


def test_program_id_picks_share_links_for_users_and_filters_referrals(api: AdvocateApi, clock: Clock) -> None:
    default = rows_of(api, clock, {"type": "USER"})
    partner = rows_of(api, clock, {"type": "USER", "params": {"programId": "partner-program"}})
    unknown = rows_of(api, clock, {"type": "USER_REFERRAL", "params": {"programId": "no-such-program"}})
    referrals = rows_of(api, clock, {"type": "REFERRAL", "params": {"programId": "partner-program"}})

    assert [r["id"] for r in partner] == [r["id"] for r in default]
    assert all(
        a["referralCode"] != b["referralCode"] and a["shareLink"] != b["shareLink"]
        for a, b in zip(default, partner, strict=True)
    )
    assert all(r["referralCode"].endswith("P") for r in partner)
    assert all(r["referralCode"] == "" and r["shareLink"] == "" for r in unknown)
    assert referrals and {r["programId"] for r in referrals} == {"partner-program"}


def test_fields_flags_add_columns_for_their_type_only(api: AdvocateApi, clock: Clock) -> None:
    stats = completed(api, clock, {"type": "USER", "params": {"fields": {"includeUserStatsFields": True}}})
    rewards = completed(
        api,
        clock,
        {"type": "REWARD", "params": {"fields": {"includeUserFields": True, "includeReferralFields": True}}},
    )
    ignored = completed(
        api, clock, {"type": "REFERRAL", "params": {"fields": {"includeUserStatsFields": True}}}
    )

    stats_header, stats_rows = csv_rows(api.download(stats).content)
    assert stats_header[-3:] == ["referralCount", "convertedReferralCount", "rewardCount"]
    assert any(int(r["referralCount"]) > 0 for r in stats_rows)
    reward_header, reward_rows = csv_rows(api.download(rewards).content)
    assert "user.email" in reward_header and "referral.referrerUserId" in reward_header
    assert any(r["referral.referrerUserId"] for r in reward_rows)
    assert csv_rows(api.download(ignored).content)[0] == list(REFERRAL_COLUMNS)


def test_reward_filter_and_at(api: AdvocateApi, clock: Clock) -> None:
    every = rows_of(api, clock, {"type": "REWARD"})
    since = NOW_MS - 90 * DAY_MS
    credit = rows_of(
        api,
        clock,
        {"type": "REWARD", "params": {"filter": {"type_eq": "CREDIT", "dateCreated_gte": since}}},
    )
    either = rows_of(
        api,
        clock,
        {
            "type": "REWARD",
            "params": {
                "filter": {"OR": [{"statuses_eq": {"status": "REDEEMED"}}, {"rewardSource_in": ["MANUAL"]}]}
            },
        },
    )
    at = NOW_MS - 180 * DAY_MS
    earlier = rows_of(api, clock, {"type": "REWARD", "params": {"at": at}})

    assert credit == [r for r in every if r["type"] == "CREDIT" and int(r["dateCreated"]) >= since]
    assert credit
    assert either == [r for r in every if r["statuses"] == "REDEEMED" or r["rewardSource"] == "MANUAL"]
    assert {r["statuses"] for r in either} >= {"REDEEMED", "AVAILABLE"}
    assert [r["id"] for r in earlier] == [r["id"] for r in every if int(r["dateCreated"]) <= at]
    now_by_id = {r["id"]: r for r in every}
    assert any(r["statuses"] != now_by_id[r["id"]]["statuses"] for r in earlier)


# ---- every type and format ---------------------------------------------------------------------------


@pytest.mark.parametrize("export_format", ["CSV", "XLSX"])
@pytest.mark.parametrize("export_type", EXPORT_TYPES)
def test_every_type_downloads_in_each_format(
    api: AdvocateApi, clock: Clock, export_type: str, export_format: str
) -> None:
    export_id = completed(api, clock, {"type": export_type, "format": export_format})

    resp = api.download(export_id)

    assert resp.status_code == 200
    assert [r.status_code for r in resp.history] == [303]
    assert int(resp.headers["Content-Length"]) == len(resp.content)
    if export_format == "CSV":
        assert resp.headers["Content-Type"].startswith("text/csv")
        header, rows = csv_rows(resp.content)
    else:
        assert (
            resp.headers["Content-Type"]
            == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        )
        assert resp.content[:2] == b"PK"
        header, rows = xlsx_rows(resp.content)
    assert tuple(header) == api.sandbox.expected_columns(export_id)
    assert rows == api.sandbox.expected_rows(export_id)
    assert len(rows) > 100
    assert (
        resp.headers["Content-Disposition"] == f'attachment; filename="{export_id}.{export_format.lower()}"'
    )


def test_csv_is_realistic_crlf_utf8_with_epoch_ms_dates(api: AdvocateApi, clock: Clock) -> None:
    users = api.download(completed(api, clock, {"type": "USER"})).content
    referrals = api.download(completed(api, clock, {"type": "REFERRAL"})).content

    assert not users.startswith(b"\xef\xbb\xbf")
    assert users.split(b"\r\n", 1)[0].decode() == ",".join(USER_COLUMNS)  # the tap's columns come first
    header, rows = csv_rows(users)
    assert header[:17] == [
        "id",
        "accountId",
        "email",
        "firstName",
        "lastName",
        "imageUrl",
        "firstSeenIP",
        "lastSeenIP",
        "dateCreated",
        "emailHash",
        "referralSource",
        "locale",
        "shareLink",
        "facebookShareLink",
        "twitterShareLink",
        "emailShareLink",
        "linkedinShareLink",
    ]
    assert all(re.fullmatch(r"\d{13}", r["dateCreated"]) for r in rows)
    assert [int(r["dateCreated"]) for r in rows] == sorted(int(r["dateCreated"]) for r in rows)
    assert max(int(r["dateCreated"]) for r in rows) <= NOW_MS
    assert len({(r["id"], r["accountId"]) for r in rows}) == len(rows)
    values = {v for r in rows for v in r.values()}
    assert {"García, Jr.", '"Bobby" Tables', "Smith\r\nJones", "=SUM(A1:A9)", "Zoë", " Spaces "} <= values
    assert "" in {r["lastSeenIP"] for r in rows}
    assert all(
        r["emailHash"] == hashlib.md5(r["email"].lower().encode()).hexdigest() for r in rows if r["email"]
    )
    _, referral_rows = csv_rows(referrals)
    assert {r["referredModerationStatus"] for r in referral_rows} == {"PENDING", "APPROVED", "DENIED"}
    assert any(r["dateConverted"] == "" for r in referral_rows) and any(
        r["dateReferralEnded"] for r in referral_rows
    )


def test_data_is_deterministic_from_the_seed(api: AdvocateApi, clock: Clock) -> None:
    first = api.download(completed(api, clock, {"type": "REWARD"})).content
    again = AdvocateSandbox(clock=Clock(NOW + timedelta(seconds=DONE)))
    other = AdvocateSandbox(clock=Clock(NOW + timedelta(seconds=DONE)), seed=1)
    stub = {"type": "REWARD"}

    _, rows = csv_rows(first)
    assert again.rows_for(stub, as_of=NOW) == rows
    assert other.rows_for(stub, as_of=NOW) != rows
    assert api.download(api.sandbox.export_ids()[0]).content == first  # a file never changes


def test_an_export_holds_the_records_as_of_its_creation(api: AdvocateApi, clock: Clock) -> None:
    early = api.create_ok({"type": "USER"})["id"]
    clock.advance(timedelta(days=3))
    later = completed(api, clock, {"type": "USER"})

    early_rows = csv_rows(api.download(early).content)[1]
    later_rows = csv_rows(api.download(later).content)[1]
    assert len(later_rows) > len(early_rows)
    assert {r["id"] for r in early_rows} < {r["id"] for r in later_rows}


# ---- lifecycle on the frozen clock -------------------------------------------------------------------


def test_lifecycle_pending_completed_expired(api: AdvocateApi, clock: Clock) -> None:
    export_id = api.create_ok({"type": "USER"})["id"]
    clock.advance(1.999)
    assert api.lookup(export_id)["status"] == "PENDING"
    clock.advance(0.001)

    done = api.lookup(export_id)
    assert (done["status"], done["dateCompleted"]) == ("COMPLETED", NOW_MS + 2000)
    assert done["dateExpires"] == NOW_MS + 2000 + 28 * DAY_MS
    clock.advance(timedelta(days=28) - timedelta(milliseconds=1))
    assert api.lookup(export_id)["status"] == "COMPLETED"
    assert api.download(export_id).status_code == 200
    clock.advance(timedelta(milliseconds=1))
    expired = api.lookup(export_id)
    assert expired["status"] == "EXPIRED"
    assert (expired["dateCompleted"], expired["dateExpires"]) == (done["dateCompleted"], done["dateExpires"])
    assert error_of(api.download(export_id))[:2] == (404, "EXPORT_EXPIRED")
    assert api.sandbox.export_status(export_id) is ExportStatus.EXPIRED


def test_failed_export_is_aborted_and_never_expires(api: AdvocateApi, clock: Clock) -> None:
    api.sandbox.fail_next()
    aborted = api.create_ok({"type": "REFERRAL"})["id"]
    fine = api.create_ok({"type": "REFERRAL"})["id"]
    clock.advance(DONE)

    body = api.lookup(aborted)
    assert (body["status"], body["dateCompleted"], body["dateExpires"]) == ("ABORTED", None, None)
    assert error_of(api.download(aborted))[:2] == (400, "EXPORT_NOT_COMPLETED")
    assert api.lookup(fine)["status"] == "COMPLETED"
    clock.advance(timedelta(days=60))
    assert api.lookup(aborted)["status"] == "ABORTED"


def test_hanging_export_stays_pending_and_cannot_be_downloaded(api: AdvocateApi, clock: Clock) -> None:
    api.sandbox.hang_next()
    export_id = api.create_ok({"type": "USER"})["id"]
    clock.advance(timedelta(days=10))

    assert api.lookup(export_id)["status"] == "PENDING"
    resp = api.download(export_id)
    assert error_of(resp)[:2] == (400, "EXPORT_NOT_COMPLETED")
    assert "PENDING" in resp.json()["message"]


def test_on_the_real_clock_an_export_completes_within_seconds() -> None:
    sandbox = AdvocateSandbox(processing_seconds=0.2)
    with SandboxServer(sandbox) as server:
        api = AdvocateApi(sandbox, server.base_url)
        export_id = api.create_ok({"type": "REWARD_BALANCE"})["id"]
        deadline = time.monotonic() + 5
        while api.lookup(export_id)["status"] != "COMPLETED":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert csv_rows(api.download(export_id).content)[1] == sandbox.expected_rows(export_id)


# ---- list --------------------------------------------------------------------------------------------


def test_list_pages_newest_first_with_count_and_total(api: AdvocateApi, clock: Clock) -> None:
    ids = []
    for export_type in EXPORT_TYPES[:5]:
        ids.append(api.create_ok({"type": export_type})["id"])
        clock.advance(1)

    default = api.listing().json()
    page = api.listing(limit=2, offset=1).json()
    beyond = api.listing(limit=10, offset=7).json()

    assert [e["id"] for e in default["data"]] == ids[::-1]
    assert (default["count"], default["totalCount"]) == (5, 5)
    assert default["data"][0] == api.lookup(ids[-1])
    assert [e["id"] for e in page["data"]] == [ids[3], ids[2]]
    assert (page["count"], page["totalCount"]) == (2, 5)
    assert beyond == {"data": [], "count": 0, "totalCount": 5}
    assert {e["status"] for e in default["data"]} == {"COMPLETED", "PENDING"}


def test_list_defaults_to_ten_and_validates_its_parameters(api: AdvocateApi) -> None:
    for _ in range(12):
        api.create_ok({"type": "USER"})

    assert api.listing().json()["count"] == 10
    assert api.listing(limit=0).json() == {"data": [], "count": 0, "totalCount": 12}
    for params in ({"limit": "-1"}, {"offset": "x"}, {"limit": "2.5"}):
        status, code, problems = error_of(api.listing(**params))
        assert (status, code) == (400, "VALIDATION_FAILED") and problems


# ---- download and storage ----------------------------------------------------------------------------


def test_download_is_303_to_signed_storage_that_needs_no_credentials(api: AdvocateApi, clock: Clock) -> None:
    export_id = completed(api, clock, {"type": "USER"})

    redirect = api.download(export_id, allow_redirects=False)
    location = redirect.headers["Location"]
    plain = requests.get(location)  # no credentials at all

    assert redirect.status_code == 303 and redirect.content == b""
    parts = urlsplit(location)
    assert (parts.hostname, parts.port) == ("localhost", urlsplit(api.base_url).port)
    assert parts.path == f"/tenant-files.ssqt.io/exports/{api.sandbox.tenant_alias}/{export_id}.csv"
    query = dict(parse_qsl(parts.query))
    assert query["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    assert query["X-Goog-Expires"] == "900"
    assert plain.status_code == 200
    assert csv_rows(plain.content)[1] == api.sandbox.expected_rows(export_id)


def test_storage_refuses_credentials_bad_signatures_expiry_and_writes(api: AdvocateApi, clock: Clock) -> None:
    export_id = completed(api, clock, {"type": "REFERRAL"})
    location = api.download(export_id, allow_redirects=False).headers["Location"]
    parts = urlsplit(location)
    query = dict(parse_qsl(parts.query))

    with_auth = requests.get(location, auth=("", api.sandbox.api_key))
    tampered = requests.get(
        urlunsplit(parts._replace(query=urlencode({**query, "X-Goog-Signature": "0" * 64})))
    )
    other = requests.get(location.replace(export_id, "0" * 24))
    put = requests.put(location)

    assert (with_auth.status_code, b"<Code>InvalidArgument</Code>" in with_auth.content) == (400, True)
    assert (tampered.status_code, b"<Code>SignatureDoesNotMatch</Code>" in tampered.content) == (403, True)
    assert other.status_code == 403  # the signature covers the path
    assert put.status_code == 405
    clock.advance(899)  # the URL was signed at a whole second, 0.001 s before now
    assert requests.get(location).status_code == 200
    clock.advance(1)
    expired = requests.get(location)
    assert (expired.status_code, b"<Code>ExpiredToken</Code>" in expired.content) == (400, True)
    fresh = api.download(export_id)  # a new redirect works again
    assert fresh.status_code == 200


def test_storage_url_dies_with_the_export(api: AdvocateApi, clock: Clock) -> None:
    api.sandbox.expiry_days = 0.0001  # ~8.6 s
    export_id = completed(api, clock, {"type": "USER_REWARD_BALANCE"})
    location = api.download(export_id, allow_redirects=False).headers["Location"]
    clock.advance(9)

    resp = requests.get(location)

    assert (resp.status_code, b"<Code>NoSuchKey</Code>" in resp.content) == (404, True)


def test_a_client_on_localhost_is_redirected_to_127_0_0_1(api: AdvocateApi, clock: Clock) -> None:
    export_id = completed(api, clock, {"type": "USER"})
    port = urlsplit(api.base_url).port
    url = f"http://localhost:{port}/api/v1/{api.sandbox.tenant_alias}/export/{export_id}/download"

    resp = api.session.get(url, allow_redirects=False)

    assert urlsplit(resp.headers["Location"]).hostname == "127.0.0.1"


def test_truncated_downloads_and_injected_errors(api: AdvocateApi, clock: Clock) -> None:
    export_id = completed(api, clock, {"type": "USER"})
    api.sandbox.truncate_downloads = True
    with pytest.raises(requests.exceptions.RequestException):
        api.download(export_id)
    api.sandbox.truncate_downloads = False
    api.sandbox.fail_requests(503, times=2)

    first, second, third = (api.download(export_id) for _ in range(3))

    assert (first.status_code, second.status_code, third.status_code) == (503, 503, 200)
    assert first.headers["Content-Type"].startswith("text/html")
    assert [e.status for e in api.sandbox.request_log[-4:]] == [503, 503, 303, 200]  # API, then storage


def test_the_singer_taps_requests_work_as_it_sends_them(api: AdvocateApi, clock: Clock) -> None:
    """tap-referral-saasquatch: empty-username Basic auth, a JSON Content-Type on every request, an ISO
    ``createdOrUpdatedSince`` for each of its three types, polling for COMPLETED, a followed redirect and
    ``csv.reader`` over the lines of the streamed body."""
    base = f"{api.base_url}/api/v1/{api.sandbox.tenant_alias}"
    auth = ("", api.sandbox.api_key)
    headers = {"Content-Type": "application/json"}
    for entity, export_type in (
        ("users", "USER"),
        ("reward_balances", "REWARD_BALANCE"),
        ("referrals", "REFERRAL"),
    ):
        data = {
            "type": export_type,
            "format": "CSV",
            "name": f"Stitch Streams {entity}:{datetime.now(UTC)}",
            "params": {"createdOrUpdatedSince": "2025-06-01T00:00:00.000000Z"},
        }
        created = requests.post(f"{base}/export", auth=auth, headers=headers, json=data)
        assert created.status_code < 400
        export_id = created.json()["id"]
        statuses = []
        for _ in range(3):
            statuses.append(
                requests.get(f"{base}/export/{export_id}", auth=auth, headers=headers).json()["status"]
            )
            clock.advance(1)
        assert statuses[0] == "PENDING" and statuses[-1] == "COMPLETED"
        resp = requests.get(f"{base}/export/{export_id}/download", auth=auth, headers=headers, stream=True)
        # the tap splits the streamed body into lines (universal newlines, chunk-safe), then csv.reader
        reader = csv.reader(b"".join(resp.iter_content(8192)).decode("utf-8").splitlines())
        fields = next(reader)
        rows = [dict(zip(fields, row, strict=True)) for row in reader]
        expected = api.sandbox.expected_rows(export_id)
        key = "userId" if export_type == "REWARD_BALANCE" else "id"
        assert [r[key] for r in rows] == [r[key] for r in expected] and rows
        if export_type == "REFERRAL":
            assert rows == expected


# ---- webhook subscriptions ---------------------------------------------------------------------------


def test_subscription_endpoints(api: AdvocateApi) -> None:
    url = "https://example.com/hook?x=1"
    first = api.session.post(api.url("subscription"), json={"endpointUrl": url, "name": "Zapier"})
    again = api.session.post(api.url("subscription"), json={"endpointUrl": url, "name": "Renamed"})
    other = api.session.post(api.url("subscription"), json={"endpointUrl": "http://another.example.com/hook"})
    bad = api.session.post(api.url("subscription"), json={"endpointUrl": "ftp://example.com/x", "colour": 1})

    assert (first.status_code, first.content, again.status_code, other.status_code) == (201, b"", 201, 201)
    assert error_of(bad)[:2] == (400, "VALIDATION_FAILED") and len(error_of(bad)[2]) == 2
    assert api.session.get(api.url("subscription")).json() == [
        {"endpointUrl": url, "name": "Renamed", "source": "MANUAL", "webhookTypes": ["*"]},
        {
            "endpointUrl": "http://another.example.com/hook",
            "name": None,
            "source": "MANUAL",
            "webhookTypes": ["*"],
        },
    ]
    deleted = api.session.delete(api.url(f"subscription/{quote(url, safe='')}"))
    assert deleted.status_code == 204
    assert error_of(api.session.delete(api.url(f"subscription/{quote(url, safe='')}")))[0] == 404
    assert [s["endpointUrl"] for s in api.session.get(api.url("subscription")).json()] == [
        "http://another.example.com/hook"
    ]
    assert requests.get(api.url("subscription")).status_code == 401


def test_test_endpoint_sends_a_test_event(api: AdvocateApi, receiver: Receiver) -> None:
    api.session.post(api.url("subscription"), json={"endpointUrl": receiver.url, "name": "Example"})

    resp = api.session.post(api.url(f"subscription/{quote(receiver.url, safe='')}/test"))

    assert resp.status_code == 204
    event = receiver.wait_for(1)[0].event
    assert event["type"] == "test" and event["data"] == {"endpointUrl": receiver.url, "name": "Example"}
    assert (event["tenantAlias"], event["live"], event["created"]) == (
        api.sandbox.tenant_alias,
        False,
        NOW_MS,
    )
    assert error_of(api.session.post(api.url("subscription/http%3A%2F%2Fnope/test")))[0] == 404


# ---- webhook deliveries ------------------------------------------------------------------------------


def test_export_events_are_delivered_signed_with_the_documented_envelope(
    api: AdvocateApi, clock: Clock, server: SandboxServer, receiver: Receiver
) -> None:
    api.session.post(api.url("subscription"), json={"endpointUrl": receiver.url, "name": "pipeline"})
    export = api.create_ok({"type": "USER", "name": "Nightly", "params": {"createdSince": 1}})
    created = receiver.wait_for(1)[0]
    clock.advance(DONE)
    completion = receiver.wait_for(2)[1]

    jwks = fetch_jwks(server.base_url)
    for delivery in (created, completion):
        assert delivery.path == "/hooks/advocate"
        assert delivery.headers["Content-Type"] == "application/json"
        assert (
            verify_jws(delivery.headers["X-Hook-JWS-RFC-7797"], delivery.body, jwks)
            == api.sandbox.signing_kid
        )
        digest = hmac.new(api.sandbox.api_key.encode(), delivery.body, hashlib.sha1).digest()
        assert delivery.headers["X-Hook-Signature"] == base64.b64encode(digest).decode()
    first, second = created.event, completion.event
    assert list(first) == ["id", "type", "tenantAlias", "live", "created", "data"]
    assert (first["type"], second["type"]) == ("export.created", "export.completed")
    assert first["id"] != second["id"] and re.fullmatch(r"[0-9a-f]{24}", first["id"])
    assert (first["tenantAlias"], first["live"]) == (api.sandbox.tenant_alias, False)
    assert (first["created"], second["created"]) == (NOW_MS, NOW_MS + 2000)
    assert list(first["data"]) == [
        "id",
        "name",
        "requester",
        "status",
        "dateCreated",
        "dateExpires",
        "dateCompleted",
        "type",
        "outputFormat",
        "params",
    ]
    assert first["data"]["outputFormat"] == "CSV" and "format" not in first["data"]
    assert (first["data"]["id"], first["data"]["status"], first["data"]["dateCompleted"]) == (
        export["id"],
        "PENDING",
        None,
    )
    assert first["data"]["params"] == {
        "createdSince": 1,
        "createdBefore": None,
        "updatedSince": None,
        "updatedBefore": None,
        "createdOrUpdatedSince": None,
        "createdOrUpdatedBefore": None,
    }
    done = api.lookup(export["id"])
    assert second["data"]["status"] == "COMPLETED"
    assert (second["data"]["dateCompleted"], second["data"]["dateExpires"]) == (
        done["dateCompleted"],
        done["dateExpires"],
    )


def test_a_tampered_body_or_a_foreign_key_fails_verification(
    api: AdvocateApi, server: SandboxServer, receiver: Receiver
) -> None:
    api.sandbox.subscribe(receiver.url)
    api.create_ok({"type": "REFERRAL"})
    delivery = receiver.wait_for(1)[0]
    jwks = fetch_jwks(server.base_url)
    header = delivery.headers["X-Hook-JWS-RFC-7797"]
    verify_jws(header, delivery.body, jwks)

    tampered = delivery.body.replace(b'"REFERRAL"', b'"USER"')
    reserialised = json.dumps(json.loads(delivery.body), indent=2).encode()  # same JSON, other bytes
    with pytest.raises(InvalidSignature):
        verify_jws(header, tampered, jwks)
    with pytest.raises(InvalidSignature):
        verify_jws(header, reserialised, jwks)
    other = AdvocateSandbox()
    with pytest.raises(LookupError):
        verify_jws(header, delivery.body, other.jwks())
    assert tampered != delivery.body


def test_non_200_answers_are_redelivered_until_success(api: AdvocateApi, receiver: Receiver) -> None:
    receiver.replies = [500, 204, 302, 201]
    api.sandbox.subscribe(receiver.url)
    api.create_ok({"type": "USER"})

    deliveries = receiver.wait_for(5)
    assert api.sandbox.wait_for_webhooks()

    assert len({d.body for d in deliveries}) == 1 and len(receiver.received) == 5
    log = api.sandbox.webhook_log
    assert [(a.attempt, a.status) for a in log] == [(1, 500), (2, 204), (3, 302), (4, 201), (5, 200)]
    assert len({a.event_id for a in log}) == 1


def test_redelivery_stops_after_the_maximum_attempts(api: AdvocateApi, receiver: Receiver) -> None:
    api.sandbox.webhook_max_attempts = 3
    receiver.replies = [503] * 10
    api.sandbox.subscribe(receiver.url)
    api.create_ok({"type": "USER"})

    receiver.wait_for(3)
    assert api.sandbox.wait_for_webhooks()
    time.sleep(0.2)

    assert len(receiver.received) == 3
    assert [a.status for a in api.sandbox.webhook_log] == [503, 503, 503]


def test_an_unreachable_endpoint_is_retried(api: AdvocateApi, clock: Clock) -> None:
    api.sandbox.webhook_max_attempts = 2
    api.sandbox.subscribe("http://127.0.0.1:9/closed")
    api.create_ok({"type": "USER"})

    assert api.sandbox.wait_for_webhooks()

    log = api.sandbox.webhook_log
    assert [a.attempt for a in log] == [1, 2]
    assert all(a.status is None and a.error for a in log)


def test_duplicate_deliveries_switch(api: AdvocateApi, clock: Clock, receiver: Receiver) -> None:
    api.sandbox.duplicate_deliveries = True
    api.sandbox.subscribe(receiver.url)
    api.create_ok({"type": "USER"})
    clock.advance(DONE)

    deliveries = receiver.wait_for(4)
    assert api.sandbox.wait_for_webhooks()

    ids = [d.event["id"] for d in deliveries]
    assert len(ids) == 4 and len(set(ids)) == 2
    assert sorted(receiver.types()) == [
        "export.completed",
        "export.completed",
        "export.created",
        "export.created",
    ]
    assert sum(a.duplicate for a in api.sandbox.webhook_log) == 2


def test_out_of_order_switch_delivers_the_newer_event_first(
    api: AdvocateApi, clock: Clock, receiver: Receiver
) -> None:
    api.sandbox.out_of_order_deliveries = True
    api.sandbox.reorder_hold_seconds = 3.0
    api.sandbox.subscribe(receiver.url)
    api.create_ok({"type": "USER"})
    clock.advance(DONE)

    receiver.wait_for(2)

    assert receiver.types() == ["export.completed", "export.created"]


def test_webhook_types_and_aborted_exports(api: AdvocateApi, clock: Clock, receiver: Receiver) -> None:
    api.session.post(
        api.url("subscription"), json={"endpointUrl": receiver.url, "webhookTypes": ["export.completed"]}
    )
    api.sandbox.fail_next()
    api.create_ok({"type": "USER"})
    fine = api.create_ok({"type": "USER"})
    clock.advance(DONE)

    receiver.wait_for(1)
    assert api.sandbox.wait_for_webhooks()

    assert receiver.types() == ["export.completed"]
    assert receiver.received[0].event["data"]["id"] == fine["id"]


def test_a_late_subscriber_gets_no_earlier_events(api: AdvocateApi, clock: Clock, receiver: Receiver) -> None:
    api.create_ok({"type": "USER"})
    clock.advance(DONE)
    api.sandbox.subscribe(receiver.url)
    later = api.create_ok({"type": "USER"})

    receiver.wait_for(1)
    assert api.sandbox.wait_for_webhooks()

    assert [d.event["data"]["id"] for d in receiver.received] == [later["id"]]


def test_key_rotation_new_kid_old_key_retired(
    api: AdvocateApi, clock: Clock, server: SandboxServer, receiver: Receiver
) -> None:
    api.sandbox.subscribe(receiver.url)
    api.create_ok({"type": "USER"})
    before = receiver.wait_for(1)[0]
    old_kid = verify_jws(before.headers["X-Hook-JWS-RFC-7797"], before.body, fetch_jwks(server.base_url))

    new_kid = api.sandbox.rotate_signing_key()
    clock.advance(DONE)
    after = receiver.wait_for(2)[1]
    jwks = fetch_jwks(server.base_url)

    assert new_kid != old_kid and [k["kid"] for k in jwks["keys"]] == [new_kid]
    assert verify_jws(after.headers["X-Hook-JWS-RFC-7797"], after.body, jwks) == new_kid
    with pytest.raises(LookupError):
        verify_jws(before.headers["X-Hook-JWS-RFC-7797"], before.body, jwks)
    assert re.fullmatch(r"[A-Za-z0-9+/]{27}=", new_kid)

    kept = api.sandbox.rotate_signing_key(retire_previous=False)
    assert [k["kid"] for k in fetch_jwks(server.base_url)["keys"]] == [new_kid, kept]
    api.sandbox.retire_key(new_kid)
    assert [k["kid"] for k in fetch_jwks(server.base_url)["keys"]] == [kept]
    with pytest.raises(ValueError):
        api.sandbox.retire_key(kept)


def test_a_redelivery_after_rotation_is_signed_with_the_new_key(
    api: AdvocateApi, server: SandboxServer, receiver: Receiver
) -> None:
    api.sandbox.webhook_retry_seconds = 1.5  # time to make the new key before the retry
    receiver.replies = [500]
    api.sandbox.subscribe(receiver.url)
    api.create_ok({"type": "USER"})
    first = receiver.wait_for(1)[0]

    new_kid = api.sandbox.rotate_signing_key()
    second = receiver.wait_for(2, timeout=5)[1]

    assert first.body == second.body
    assert (
        verify_jws(second.headers["X-Hook-JWS-RFC-7797"], second.body, fetch_jwks(server.base_url)) == new_kid
    )
    assert [a.kid for a in api.sandbox.webhook_log][-1] == new_kid
    assert api.sandbox.webhook_log[0].kid != new_kid


def test_hex_hook_signature_knob(api: AdvocateApi, receiver: Receiver) -> None:
    api.sandbox.hook_signature_encoding = "hex"
    api.sandbox.subscribe(receiver.url)
    api.create_ok({"type": "USER"})

    delivery = receiver.wait_for(1)[0]

    expected = hmac.new(api.sandbox.api_key.encode(), delivery.body, hashlib.sha1).hexdigest()
    assert delivery.headers["X-Hook-Signature"] == expected


def test_reward_balance_columns_are_the_taps(api: AdvocateApi, clock: Clock) -> None:
    header, rows = csv_rows(api.download(completed(api, clock, {"type": "REWARD_BALANCE"})).content)

    assert header == list(REWARD_BALANCE_COLUMNS) == ["userId", "accountId", "type", "amount", "unit"]
    assert rows
