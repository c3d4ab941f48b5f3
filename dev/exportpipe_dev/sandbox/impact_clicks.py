"""Emulator of the impact.com Partner API: ``ClickExport`` and the Partner Jobs API.

Serve it with :class:`~exportpipe_dev.sandbox.base.SandboxServer`; the origin stands in for
``https://api.impact.com``. Endpoints (``{SID}`` is the Account SID of the credentials):

- ``GET /Mediapartners/{SID}/ClickExport`` schedules a click export job;
- ``GET /Mediapartners/{SID}/Jobs[?CreatedAfter=&CreatedBefore=]`` lists jobs;
- ``GET /Mediapartners/{SID}/Jobs/{JobId}`` reads a job;
- ``GET /Mediapartners/{SID}/Jobs/{JobId}/Download[?Mode=Stream]`` downloads the result;
- ``PUT /Mediapartners/{SID}/Jobs/{JobId}/Replay`` re-runs a job;
- ``GET /storage/impact-exports/{JobId}/{run}/{file}?X-Amz-...`` is the signed storage URL Download
  redirects to (served on the other loopback host name, see Downloads).

Documented behaviour is followed as the reference (``source-apis.md`` section 2) gives it: HTTP Basic
``AccountSID:AuthToken`` (401 otherwise), 403 for a disabled or unscoped token, the
``{"Status": "ERROR", "Message", "Errors": [{"Field", "Message"}]}`` envelope (``<ImpactRadiusResponse>`` in
XML), ClickExport's parameters and its ``{Status, QueuedUri, ResultUri, ReplayUri}`` answer with relative
URIs and a UUID job id, de-duplication of identical requests, the job object and its statuses (``ERROR``
re-runs every 15 minutes, at most 5 tries, then ``FAILED``), Download's 202/302/``Mode=Stream``, Replay's
403 text, the 10/day ClickExport limit and the hourly limit with the partner page's headers, and the
``ProgramId``/``ProgramName`` columns of the migration note.

Choices made where the public record is silent or contradictory (reference [U] items):

Credentials and paths
  - ``credentials()`` is ``{"account_sid", "auth_token"}``. The default SID is ``IR`` + 32 letters and
    digits (34 characters, the shape of real SIDs); the token is 32 characters of letters, digits and
    ``-._~`` (its shape is not documented; the punctuation makes clients encode Basic auth properly).
  - Path segments other than the SID are matched case-insensitively, job ids included (the agency pages
    spell ``MediaPartners`` where the partner spec says ``Mediapartners``); the URIs the API answers
    always use the spec's ``Mediapartners``. The SID must equal the credentials' SID exactly; a valid
    login addressing another SID gets 403. A trailing slash is ignored.
  - Query parameter names are case-insensitive, and so are enumerated values (``TRUE``/``true``,
    ``CSV``/``csv``, ``Mode=Stream``/``stream``: a public client sends ``Mode=stream``).
  - Format of API answers (not of result files): a ``.json`` or ``.xml`` suffix on the last path segment
    (tap-impact appends ``.json``) wins; otherwise ``Accept`` (``application/json``/``text/json`` or
    ``application/xml``/``text/xml``, highest q first); otherwise ``default_format``, **XML** by default:
    every documented example sends ``Accept: application/json`` and the tap adds ``.json``, which only
    makes sense if JSON is not the default. XML answers are ``<ImpactRadiusResponse>`` with one element
    per JSON key; list items are named by the list's singular (``Jobs`` → ``Job``, ``Errors`` → ``Error``).

Auth and errors
  - Missing or wrong credentials: 401 ``{"Status": "ERROR", "Message": "Unauthorized: check your
    AccountSID and AuthToken."}`` with ``WWW-Authenticate: Basic realm="impact.com"``. ``token_disabled``
    → 403 ``The Auth Token is disabled.``; ``token_endpoints`` (``None`` = all; else a set of
    ``"ClickExport"``/``"Jobs"``) → 403 ``The Auth Token does not have access to this endpoint.``
    Order: credentials (401), SID (403), route (404/405), token scope (403), hourly limit (429),
    then the endpoint (400 validation, then the daily limit).
  - Unknown path or job id: 404 (``Not Found``); wrong method: 405 with ``Allow``. ``HEAD`` works where
    ``GET`` reads (jobs, downloads) but not on ClickExport, which would schedule a job.
  - 429 body: the envelope with ``Message`` naming the limit (the body is not documented).

ClickExport validation (all problems reported at once: 400, ``Message: "Validation Failed"``, one
``Errors`` item per problem)
  - ``Date``: ``yyyy-MM-dd`` and a real date, else ``Not a valid date; the format is yyyy-MM-dd``; a date
    after today (account time zone) is refused with ``Must not be in the future``. No lower bound.
  - ``ProgramId``/``AdId``: ASCII digits, else ``Not a numeric value`` (the documented example message).
    An id the partner has no clicks for is a filter that matches nothing, not an error.
  - ``UniqueClick``: ``TRUE``/``FALSE``; ``ResultFormat``: ``CSV``/``JSON``/``XML``.
  - Any parameter with an empty value, a non-repeatable one given twice, or an unknown parameter
    (e.g. ``StartDate``: there is no date range, one ``Date`` per job) is an error, so a mistaken client
    fails loudly instead of exporting today's clicks.
  - Filters: repeated values of one parameter are OR-ed, different parameters AND-ed; ``SubId`` matches
    when any of ``SubId1..3`` equals the value; ``UniqueClick=TRUE`` keeps unique clicks only.

De-duplication
  - Requests are identical when their *normalised* parameters are: the date after applying the default
    (omitted ``Date`` = today's date), repeated values as a set, ``UniqueClick=FALSE`` = omitted,
    ``ResultFormat`` defaulting to CSV. The existing job is answered with its **current** ``Status``
    (the JS client expects a non-QUEUED status back). A job whose result expired is not reused (a new
    job is created). Duplicates count against the daily limit (best-practices page).

Limits
  - Hourly: every authenticated, routed API call counts in one "Other" group (``hourly_limit``, 1,000)
    per fixed clock hour (UTC). Every such answer carries ``X-RateLimit-Limit-hour``,
    ``X-RateLimit-Remaining-hour`` and ``RateLimit-Reset`` (seconds to the end of the hour); a 429 adds
    ``Retry-After``. Calls refused by the hourly limit are not counted; a ClickExport refused by the daily
    limit still counts as an hourly call.
  - Daily: accepted ClickExport calls (new or duplicate; not 400s) count against ``daily_limit`` (10),
    reset at midnight in ``account_timezone``. ClickExport answers add ``X-RateLimit-Limit-day`` and
    ``X-RateLimit-Remaining-day`` (the ``-day`` names are chosen by analogy); its 429 sets
    ``RateLimit-Reset`` and ``Retry-After`` to the seconds until that midnight. Replays do not count
    against it (they are not ClickExport calls). ``daily_limit=None`` emulates delayed enforcement.

Jobs (all on the sandbox clock)
  - Every job runs on its own (no queue between jobs). A run starts ``pickup_seconds`` after it was
    scheduled (QUEUED until then), takes ``processing_seconds`` (RUNNING, with ``RecordsProcessed`` and
    ``PercentageComplete`` growing linearly), then COMPLETED. ``fail_next(n, attempts)``: the next ``n``
    runs scheduled (ClickExport or Replay) fail ``attempts`` tries (default: all ``max_tries``); after a
    failed try the job is ERROR for ``retry_interval_seconds`` (900), then RUNNING again; when every try
    failed it is FAILED. ``cancel_job`` stands in for the impact.com administrator (no API to cancel).
  - A run exports the clicks whose ``EventDate`` lies before the start of its successful try, so an
    export of today holds the clicks so far, and a Replay later in the day picks up the newer ones.
  - Job fields are all present; dates not reached are ``""`` (impact renders blanks as empty strings).
    ``StartedDate`` is the start of the latest try; ``LastProgressUpdateDate`` is the latest transition
    (now, while RUNNING). ``ProgramId`` is the filter when exactly one was given, else ``""``.
    ``RecordsProcessed``/``PercentageComplete``/``Replayable`` are strings (``"250"``, ``"100"``,
    ``"true"``) as in every doc example; ``typed_numbers=True`` emits the spec's integers and booleans.
    ``Replayable`` is whether a replay is accepted now. Dates are ISO-8601 with the offset of
    ``account_timezone`` (default ``America/Chicago``: the doc example of a June date has ``-05:00``),
    seconds precision. ``StatusMessage`` texts other than the documented COMPLETED one are chosen.
  - Replay is accepted for COMPLETED, FAILED and CANCELLED jobs: the same job id runs again, answering
    200 with the job (QUEUED); ``StartedDate``/``CompletedDate``/``FailedDate``/``CancelledDate`` start
    afresh, ``CreatedDate`` and ``AbandonedDate`` stay. Otherwise 403 with the documented text, and a
    replay of a RUNNING job sets ``AbandonedDate`` ("an attempt is made to start a job that is already
    running"). A request body is ignored.
  - The list answers ``{"Jobs": [...]}`` (partner spec), oldest first, unpaginated. ``CreatedAfter`` and
    ``CreatedBefore`` take ``yyyy-MM-dd`` (midnight, account time zone) or an ISO-8601 instant;
    ``CreatedAfter`` is inclusive, ``CreatedBefore`` exclusive.
  - Results expire ``result_ttl_days`` (90, the download page; ``None`` = kept forever, the best-practices
    page) after completion; then Download answers 404, storage 404 ``NoSuchKey``, and an identical
    ClickExport creates a new job. The job itself stays readable and replayable.

Downloads
  - Not finished (QUEUED, RUNNING, ERROR): 202 with the job object. FAILED, CANCELLED or expired: 404
    (``No result is available for this job (status ...)``/``The job result has expired.``) rather than a
    202 a client would wait on forever.
  - COMPLETED: 302 to ``http://localhost:<port>/storage/impact-exports/...`` (``127.0.0.1`` when the client
    itself used ``localhost``), an S3-style presigned URL (``X-Amz-Date``, ``X-Amz-Expires`` =
    ``signed_url_ttl``, ``X-Amz-Signature``). Storage answers S3's XML errors: 400 ``InvalidArgument`` to
    a request carrying ``Authorization``, 403 ``SignatureDoesNotMatch``/``AccessDenied`` ("Request has
    expired"), 405 for other methods than GET/HEAD; it needs no credentials and counts no API calls.
    A URL names one run: after a replay, old URLs keep serving the old run's file until they expire.
  - ``Mode=Stream``: 200 with the file, ``application/octet-stream`` (storage objects carry the format's
    own type). Other ``Mode`` values → 400. Other query parameters of Download (a public client pages
    with ``Page``) are ignored: the result is one file.
  - ``truncate_downloads``: the full Content-Length is announced, half the body sent, the connection
    closed (stream and storage). ``fail_requests(status, times, path_prefix)``: the next matching
    requests answer that status with an HTML body before any other check.

Files (``CLICK_FIELDS`` order: the v16 Click schema, flattened, ``ProgramId``/``ProgramName`` in place of
``CampaignId``/``CampaignName``, ``BrandRelated`` as ``AdCampaign..Channel``, ``PartnerRelated`` as
``SubId1..3`` — the flat shape of the partner doc example and of a public client's schema)
  - Every value is a string; blanks are ``""``; ``UniqueClick`` is ``true``/``false``; money is ``0.00``
    style; ``EventDate`` is ISO-8601 with the account's offset. Rows are ordered by ``EventDate`` then
    ``Id``. UTF-8 without BOM in every format.
  - CSV: a header row, RFC 4180 (comma, minimal double-quote quoting, CRLF: ``csv_line_terminator``).
  - JSON: ``{"@page": "1", "@numpages": "1", "@pagesize", "@total", "@start", "@end", "Clicks": [...]}``
    (the key ``Clicks`` as a public client reads it; the impact list envelope with one page).
  - XML: ``<ImpactRadiusResponse><Clicks page="1" numpages="1" ...><Click><Id>...</Id>...</Click>
    </Clicks></ImpactRadiusResponse>``; a carriage return is written ``&#13;`` so it survives parsing.
  - Data: a deterministic function of ``seed``, the SID, ``account_timezone`` and ``clicks_per_day``:
    about ``clicks_per_day`` (±20 %) clicks per local day at whole seconds, five programs with awkward
    names (comma, quotes, ``&``, ``<``, non-ASCII), and values with commas, quotes, CR/LF, tabs, leading
    ``=``/``@``/``+``, whitespace-only and empty strings. :meth:`ImpactClicksSandbox.expected_rows` and
    :meth:`ImpactClicksSandbox.expected_rows_for_job` compute what a file must contain.

Not emulated: job completion postbacks (their parameters are undocumented), the Brand/Agency paths,
other job types and endpoints, real HTTPS, token rotation.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import math
import random
import re
import secrets
import string
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from enum import StrEnum
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlencode
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from exportpipe_dev.sandbox.base import Clock, Request, Response, Sandbox

__all__ = ["CLICK_FIELDS", "DEFAULT_ACCOUNT_SID", "DEFAULT_AUTH_TOKEN", "ImpactClicksSandbox", "JobStatus"]

DEFAULT_ACCOUNT_SID = "IRqTdDQBOAMuJ5l6Sy6GZ922nwrnC6G0a1"
DEFAULT_AUTH_TOKEN = "O00ln.2PxgQnjKO7zAj6qkV~~TJBbb8Q"
API_ROOT = "Mediapartners"
STORAGE_PREFIX = "/storage/impact-exports/"
NOT_REPLAYABLE = "The job is not in a replayable state or is not of a replayable type."

#: Columns of a ClickExport result, in file order.
CLICK_FIELDS: tuple[str, ...] = (
    "Id",
    "ProgramId",
    "ProgramName",
    "ProfileId",
    "IpAddress",
    "EventDate",
    "MediaId",
    "MediaName",
    "AdId",
    "AdName",
    "AdType",
    "ProductSku",
    "AdCampaign",
    "AdGroup",
    "Keyword",
    "MatchType",
    "Channel",
    "DealName",
    "DealType",
    "DealScope",
    "CustomerArea",
    "CustomerCity",
    "CustomerRegion",
    "CustomerCountry",
    "DeviceType",
    "DeviceFamily",
    "Browser",
    "Os",
    "ReferringUrl",
    "ReferringDomain",
    "LandingPageUrl",
    "TrafficCategory",
    "TrafficSource",
    "BidKeyword",
    "SearchText",
    "SharedId",
    "SubId1",
    "SubId2",
    "SubId3",
    "CpcBid",
    "Payout",
    "UniqueClick",
)

_FORMATS = ("CSV", "JSON", "XML")
_EXTENSIONS = {"CSV": "csv", "JSON": "json", "XML": "xml"}
_STORAGE_TYPES = {
    "CSV": "text/csv; charset=utf-8",
    "JSON": "application/json; charset=utf-8",
    "XML": "application/xml; charset=utf-8",
}
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase

# ---- synthetic data pools --------------------------------------------------------------------------

_PROGRAMS: tuple[tuple[str, str, str], ...] = (  # id, name, landing domain
    ("3629", "Acme Outdoor", "www.acme-outdoor.example"),
    ("4120", 'Globex "Gear" Store', "shop.globex.example"),
    ("5317", "Zoë's Café, Bakery & More", "zoes-cafe.example"),
    ("6048", "東京ショップ", "tokyo-shop.example"),
    ("7781", "Initech <Software>", "initech.example"),
)
_PROGRAM_WEIGHTS = (40, 25, 15, 12, 8)
_AD_TYPES = (
    "BANNER",
    "TEXT_LINK",
    "ONLINE_TRACKING_LINK",
    "COUPON",
    "CONTENT",
    "EMAIL",
    "VIDEO",
    "TEXT",
)
_MEDIA = (("1180245", "Trail Notes Blog"), ("1180246", "Deals & Coupons, Daily"))
_AD_NAMES = ("Homepage banner 728x90", 'Spring "Flash" Sale', "Text link, sidebar", "Ünïcode promo ✓")
_DEALS: tuple[tuple[str, str, str], ...] = (
    ("Spring Sale, 20% off", "GENERAL_SALE", "ENTIRE_STORE"),
    ('"Free" shipping over $50', "FREE_SHIPPING", "ENTIRE_STORE"),
    ("Buy one, get one", "BOGO", "PRODUCT"),
)
_PLACES: tuple[tuple[str, str, str, str], ...] = (  # area, city, region, country
    ("805", "Santa Barbara", "CA", "US"),
    ("212", "New York", "NY", "US"),
    ("", "São Paulo", "SP", "BR"),
    ("", "München", "BY", "DE"),
    ("", "Québec", "QC", "CA"),
    ("", "", "", ""),
)
_DEVICES: tuple[tuple[str, str, str, str], ...] = (  # type, family, browser, os
    ("Desktop", "Personal Computer", "Chrome", "Windows"),
    ("Desktop", "Apple Macintosh", "Safari", "Mac OS X"),
    ("Mobile", "Apple iPhone", "Mobile Safari", "iOS"),
    ("Mobile", "Google Pixel", "Chrome Mobile", "Android"),
    ("Tablet", "Samsung Galaxy Tab", "Samsung Internet", "Android"),
)
_REFERRERS = (
    ("https://trailnotes.example/posts/best-tents-2026?ref=nav&tags=a,b", "trailnotes.example"),
    ("https://www.google.com/", "www.google.com"),
    ("https://deals.example/coupons/acme?utm_source=impact&x=%22quoted%22", "deals.example"),
    ("android-app://com.example.reader", "com.example.reader"),
)
_TRAFFIC = (("Content", "Blog"), ("Coupon", "Newsletter"), ("Social", "Instagram"), ("Search", "Organic"))
_SUB_IDS = (
    "blog",
    "newsletter",
    "sidebar, top",
    'header "hero"',
    "story\nswipe-up",
    "Zoë",
    "@handle",
    "=1+1",
    "+44 20 7946 0018",
    "tab\there",
    "   ",
    "home-page",
)
_SEARCH_TEXT = (
    "best tents 2026",
    'tent "ultralight", 2 person',
    "line one\r\nline two",
    "camping & hiking <gear>",
    "東京 キャンプ",
    "-42",
    " leading and trailing ",
)


class JobStatus(StrEnum):
    """The ``Status`` of a job."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    ERROR = "ERROR"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


_REPLAYABLE = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class _ApiError(Exception):
    """An impact error answer: the ``{Status, Message, Errors}`` envelope with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        errors: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = list(errors)
        self.headers = dict(headers or {})

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"Status": "ERROR", "Message": self.message}
        if self.errors:
            body["Errors"] = [{"Field": name, "Message": text} for name, text in self.errors]
        return body


@dataclass(frozen=True)
class _Query:
    """The normalised parameters of a ClickExport request (the de-duplication key)."""

    day: date
    program_ids: tuple[str, ...] = ()
    ad_ids: tuple[str, ...] = ()
    sub_ids: tuple[str, ...] = ()
    unique_only: bool = False
    result_format: str = "CSV"


@dataclass
class _Run:
    """One execution of a job: its tries as (start, end) and whether the last one succeeds."""

    number: int
    scheduled_at: datetime
    attempts: list[tuple[datetime, datetime]]
    succeeds: bool
    cancelled_at: datetime | None = None
    lengths: dict[str, int] = field(default_factory=dict)

    def phase(self, now: datetime) -> tuple[JobStatus, int]:
        """The status at ``now`` and the index of the try it refers to (-1 before the first)."""
        if self.cancelled_at is not None and now >= self.cancelled_at:
            return JobStatus.CANCELLED, len(self.attempts) - 1
        for index, (start, end) in enumerate(self.attempts):
            if now < start:
                return (JobStatus.QUEUED, -1) if index == 0 else (JobStatus.ERROR, index - 1)
            if now < end:
                return JobStatus.RUNNING, index
        return (JobStatus.COMPLETED if self.succeeds else JobStatus.FAILED), len(self.attempts) - 1

    @property
    def cutoff(self) -> datetime | None:
        """The start of the successful try: clicks before it are in the result."""
        return self.attempts[-1][0] if self.succeeds else None

    @property
    def ended_at(self) -> datetime:
        return self.attempts[-1][1]


@dataclass
class _Job:
    id: str
    query: _Query
    created_at: datetime
    runs: list[_Run] = field(default_factory=list)
    abandoned_at: datetime | None = None

    @property
    def run(self) -> _Run:
        return self.runs[-1]


@dataclass(frozen=True)
class _Route:
    endpoint: str  # token scope: "ClickExport" or "Jobs"
    action: str
    job_id: str | None = None


class ImpactClicksSandbox(Sandbox):
    """A faithful, controllable impact.com Partner ClickExport + Jobs API (see the module docstring).

    Every constructor argument is also a public attribute that tests may change at any time; data knobs
    (``seed``, ``clicks_per_day``, ``account_timezone``) should be set before jobs are created.
    """

    source: ClassVar[str] = "impact_clicks"
    fault_path_prefix: ClassVar[str] = f"/{API_ROOT}/"

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        seed: int = 0,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        account_timezone: str = "America/Chicago",
        default_format: Literal["xml", "json"] = "xml",
        pickup_seconds: float = 0.25,
        processing_seconds: float = 1.0,
        retry_interval_seconds: float = 900.0,
        max_tries: int = 5,
        clicks_per_day: int = 400,
        daily_limit: int | None = 10,
        hourly_limit: int | None = 1000,
        result_ttl_days: float | None = 90.0,
        signed_url_ttl: float = 300.0,
        truncate_downloads: bool = False,
        typed_numbers: bool = False,
        csv_line_terminator: str = "\r\n",
        token_disabled: bool = False,
        token_endpoints: set[str] | frozenset[str] | None = None,
        latency_seconds: float = 0.0,
    ) -> None:
        super().__init__(clock=clock)
        self.seed = seed
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.account_timezone = account_timezone
        self.default_format = default_format
        self.pickup_seconds = pickup_seconds
        self.processing_seconds = processing_seconds
        self.retry_interval_seconds = retry_interval_seconds
        self.max_tries = max_tries
        self.clicks_per_day = clicks_per_day
        self.daily_limit = daily_limit
        self.hourly_limit = hourly_limit
        self.result_ttl_days = result_ttl_days
        self.signed_url_ttl = signed_url_ttl
        self.truncate_downloads = truncate_downloads
        self.typed_numbers = typed_numbers
        self.csv_line_terminator = csv_line_terminator
        self.token_disabled = token_disabled
        self.token_endpoints = token_endpoints
        self.latency_seconds = latency_seconds

        self._lock = threading.RLock()
        self._signing_key = secrets.token_bytes(32)
        self._id_rng = random.Random(f"impact-jobs:{seed}")
        self._jobs: dict[str, _Job] = {}
        self._by_query: dict[_Query, str] = {}
        self._failures: list[int] = []
        self._hour_start: datetime | None = None
        self._hour_calls = 0
        self._usage_day: date | None = None
        self._day_calls = 0
        self._day_cache: dict[tuple[Any, ...], list[tuple[int, dict[str, str]]]] = {}

    # ---- knobs and inspection --------------------------------------------------------------------

    def credentials(self) -> dict[str, str]:
        """The handshake credentials: the Account SID and the Auth Token (HTTP Basic user and password)."""
        return {"account_sid": self.account_sid, "auth_token": self.auth_token}

    def fail_next(self, n: int = 1, attempts: int | None = None) -> None:
        """Make the next ``n`` runs scheduled fail ``attempts`` tries (default: every try, so FAILED).

        With ``attempts`` below ``max_tries`` the job goes through ERROR and then completes.
        """
        tries = self.max_tries if attempts is None else max(0, attempts)
        with self._lock:
            self._failures.extend([tries] * n)

    def cancel_job(self, job_id: str) -> None:
        """Cancel a job, as only an impact.com administrator can (``KeyError`` when unknown).

        A FAILED or already CANCELLED job is left as it is.
        """
        with self._lock:
            job = self._jobs[job_id]
            now = self.clock.now()
            status, _ = job.run.phase(now)
            if status not in (JobStatus.FAILED, JobStatus.CANCELLED):
                job.run.cancelled_at = now

    def job_status(self, job_id: str) -> JobStatus:
        """The current status of a job (``KeyError`` when unknown)."""
        with self._lock:
            return self._jobs[job_id].run.phase(self.clock.now())[0]

    def job_ids(self) -> list[str]:
        """Ids of every job created so far, oldest first."""
        with self._lock:
            return list(self._jobs)

    def click_exports_today(self) -> int:
        """ClickExport calls counted against today's limit (account time zone)."""
        with self._lock:
            self._roll_day(self.clock.now())
            return self._day_calls

    def api_calls_this_hour(self) -> int:
        """API calls counted against the current hour's limit."""
        with self._lock:
            self._roll_hour(self.clock.now())
            return self._hour_calls

    def expected_rows(
        self,
        day: date | str | None = None,
        *,
        program_ids: Sequence[str] = (),
        ad_ids: Sequence[str] = (),
        sub_ids: Sequence[str] = (),
        unique_click: bool = False,
        as_of: datetime | None = None,
    ) -> list[dict[str, str]]:
        """The rows (all strings, file order) of an export of ``day`` (default: today) run at ``as_of``.

        ``as_of`` (default: now) is when the run starts: clicks before it are included.
        """
        if day is None:
            day = self.clock.now().astimezone(ZoneInfo(self.account_timezone)).date()
        elif isinstance(day, str):
            day = date.fromisoformat(day)
        query = _Query(
            day,
            tuple(sorted(set(program_ids))),
            tuple(sorted(set(ad_ids))),
            tuple(sorted(set(sub_ids))),
            unique_click,
        )
        return self._select(query, as_of or self.clock.now())

    def expected_rows_for_job(self, job_id: str) -> list[dict[str, str]]:
        """What the result of a job's latest run contains (or will), in file order; ``[]`` if it fails."""
        with self._lock:
            job = self._jobs[job_id]
            run = job.run
        if run.cutoff is None or run.cancelled_at is not None:
            return []
        return self._select(job.query, run.cutoff)

    # ---- HTTP entry point -----------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Route one request."""
        if request.path.startswith(STORAGE_PREFIX):
            return self._storage(request)
        segments = request.path.strip("/").split("/")
        if segments[0].lower() == API_ROOT.lower():
            return self._api(request, segments[1:])
        return Response.text(404, "Not Found")

    def _api(self, request: Request, segments: list[str]) -> Response:
        segments, fmt = _negotiate(request, segments)
        fmt = fmt or self.default_format
        try:
            self._authenticate(request)
            if not segments or not segments[0]:
                raise _ApiError(404, "Not Found")
            if segments[0] != self.account_sid:
                raise _ApiError(403, "Forbidden: the Account SID in the path does not match the credentials.")
            route = _route(request.method, segments[1:])
            if self.token_disabled:
                raise _ApiError(403, "The Auth Token is disabled.")
            if self.token_endpoints is not None and route.endpoint not in self.token_endpoints:
                raise _ApiError(403, "The Auth Token does not have access to this endpoint.")
            if self.latency_seconds > 0:
                time.sleep(self.latency_seconds)
            with self._lock:
                self._admit_hour(self.clock.now())
        except _ApiError as exc:
            return _render_error(exc, fmt)
        try:
            response = self._dispatch_route(route, request, fmt)
        except _ApiError as exc:
            response = _render_error(exc, fmt)
        with self._lock:
            for name, value in self._hour_headers(self.clock.now()).items():
                response.headers.setdefault(name, value)
        return response

    def _dispatch_route(self, route: _Route, request: Request, fmt: str) -> Response:
        if route.action == "export":
            return self._click_export(request, fmt)
        if route.action == "list":
            return self._list_jobs(request, fmt)
        assert route.job_id is not None
        with self._lock:
            job = self._jobs.get(route.job_id.lower())
            if job is None:
                raise _ApiError(404, "Not Found: no job with this id.")
            if route.action == "job":
                return _render(200, self._job_body(job, self.clock.now()), fmt)
            if route.action == "replay":
                return self._replay(job, fmt)
        return self._download(job, request, fmt)

    def _authenticate(self, request: Request) -> None:
        credentials = request.basic_credentials()
        if credentials is None or not (
            hmac.compare_digest(credentials[0], self.account_sid)
            and hmac.compare_digest(credentials[1], self.auth_token)
        ):
            raise _ApiError(
                401,
                "Unauthorized: check your AccountSID and AuthToken.",
                headers={"WWW-Authenticate": 'Basic realm="impact.com"'},
            )

    # ---- limits ---------------------------------------------------------------------------------

    def _roll_hour(self, now: datetime) -> datetime:
        start = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        if start != self._hour_start:
            self._hour_start, self._hour_calls = start, 0
        return start

    def _roll_day(self, now: datetime) -> datetime:
        """Reset the daily counter at local midnight; returns the next local midnight."""
        zone = ZoneInfo(self.account_timezone)
        today = now.astimezone(zone).date()
        if today != self._usage_day:
            self._usage_day, self._day_calls = today, 0
        return datetime.combine(today + timedelta(days=1), dtime(0), zone)

    def _hour_headers(self, now: datetime) -> dict[str, str]:
        start = self._roll_hour(now)
        reset = str(max(1, math.ceil((start + timedelta(hours=1) - now).total_seconds())))
        if self.hourly_limit is None:
            return {"RateLimit-Reset": reset}
        remaining = max(0, self.hourly_limit - self._hour_calls)
        return {
            "X-RateLimit-Limit-hour": str(self.hourly_limit),
            "X-RateLimit-Remaining-hour": str(remaining),
            "RateLimit-Reset": reset,
        }

    def _day_headers(self, now: datetime) -> dict[str, str]:
        self._roll_day(now)
        if self.daily_limit is None:
            return {}
        return {
            "X-RateLimit-Limit-day": str(self.daily_limit),
            "X-RateLimit-Remaining-day": str(max(0, self.daily_limit - self._day_calls)),
        }

    def _admit_hour(self, now: datetime) -> None:
        self._roll_hour(now)
        if self.hourly_limit is not None and self._hour_calls >= self.hourly_limit:
            headers = self._hour_headers(now)
            headers["Retry-After"] = headers["RateLimit-Reset"]
            raise _ApiError(
                429,
                f"Too Many Requests: the limit of {self.hourly_limit} requests per hour has been reached.",
                headers=headers,
            )
        self._hour_calls += 1

    def _admit_day(self, now: datetime) -> None:
        midnight = self._roll_day(now)
        if self.daily_limit is not None and self._day_calls >= self.daily_limit:
            reset = str(max(1, math.ceil((midnight - now).total_seconds())))
            headers = {**self._day_headers(now), "RateLimit-Reset": reset, "Retry-After": reset}
            raise _ApiError(
                429,
                f"Too Many Requests: the ClickExport limit of {self.daily_limit} requests per day has been "
                "reached.",
                headers=headers,
            )
        self._day_calls += 1

    # ---- ClickExport ----------------------------------------------------------------------------

    def _click_export(self, request: Request, fmt: str) -> Response:
        values, errors = _parse_params(
            request,
            {
                "ProgramId": True,
                "AdId": True,
                "Date": False,
                "SubId": True,
                "UniqueClick": False,
                "ResultFormat": False,
            },
        )
        zone = ZoneInfo(self.account_timezone)
        with self._lock:
            now = self.clock.now()
            day = now.astimezone(zone).date()
            text = _single(values, "Date")
            if text is not None:
                parsed = _parse_day(text)
                if parsed is None:
                    errors.append(("Date", "Not a valid date; the format is yyyy-MM-dd."))
                elif parsed > day:
                    errors.append(("Date", "Must not be in the future."))
                else:
                    day = parsed
            for name in ("ProgramId", "AdId"):
                if any(v and not (v.isascii() and v.isdigit()) for v in values.get(name, [])):
                    errors.append((name, "Not a numeric value"))
            unique = (_single(values, "UniqueClick") or "FALSE").upper()
            if unique not in ("TRUE", "FALSE"):
                errors.append(("UniqueClick", "Must be TRUE or FALSE."))
            result_format = (_single(values, "ResultFormat") or "CSV").upper()
            if result_format not in _FORMATS:
                errors.append(("ResultFormat", "Must be one of CSV, JSON, XML."))
            if errors:
                raise _ApiError(400, "Validation Failed", errors, headers=self._day_headers(now))
            query = _Query(
                day=day,
                program_ids=tuple(sorted(set(values.get("ProgramId", [])))),
                ad_ids=tuple(sorted(set(values.get("AdId", [])))),
                sub_ids=tuple(sorted(set(values.get("SubId", [])))),
                unique_only=unique == "TRUE",
                result_format=result_format,
            )
            self._admit_day(now)
            job = self._existing(query, now)
            if job is None:
                job = _Job(
                    id=str(uuid.UUID(int=self._id_rng.getrandbits(128), version=4)),
                    query=query,
                    created_at=now,
                )
                job.runs.append(self._schedule(1, now))
                self._jobs[job.id] = job
                self._by_query[query] = job.id
                status = JobStatus.QUEUED
            else:
                status = job.run.phase(now)[0]
            uri = f"/{API_ROOT}/{self.account_sid}/Jobs/{job.id}"
            body = {
                "Status": status.value,
                "QueuedUri": uri,
                "ResultUri": f"{uri}/Download",
                "ReplayUri": f"{uri}/Replay",
            }
            return _render(200, body, fmt, self._day_headers(now))

    def _existing(self, query: _Query, now: datetime) -> _Job | None:
        job_id = self._by_query.get(query)
        if job_id is None:
            return None
        job = self._jobs[job_id]
        return None if self._expired(job.run, now) else job

    def _schedule(self, number: int, at: datetime) -> _Run:
        failures = self._failures.pop(0) if self._failures else 0
        tries = max(1, min(failures + 1, self.max_tries))
        attempts: list[tuple[datetime, datetime]] = []
        start = at + timedelta(seconds=self.pickup_seconds)
        for _ in range(tries):
            end = start + timedelta(seconds=self.processing_seconds)
            attempts.append((start, end))
            start = end + timedelta(seconds=self.retry_interval_seconds)
        return _Run(number, at, attempts, succeeds=failures < tries)

    def _expired(self, run: _Run, now: datetime) -> bool:
        if self.result_ttl_days is None or not run.succeeds or run.cancelled_at is not None:
            return False
        return now >= run.ended_at + timedelta(days=self.result_ttl_days)

    # ---- Jobs -----------------------------------------------------------------------------------

    def _job_body(self, job: _Job, now: datetime) -> dict[str, Any]:
        run = job.run
        status, index = run.phase(now)
        stamp = self._stamp
        started = run.attempts[index][0] if index >= 0 else None
        total = processed = percent = 0
        message = {
            JobStatus.QUEUED: "Job is queued.",
            JobStatus.COMPLETED: "Job processing completed successfully.",
            JobStatus.FAILED: f"Job could not be completed after {len(run.attempts)} tries.",
            JobStatus.CANCELLED: "Job was cancelled by an impact.com administrator.",
        }.get(status, "")
        progress_at: datetime = run.scheduled_at
        if status is JobStatus.RUNNING:
            start, end = run.attempts[index]
            total = len(self._select(job.query, start))
            fraction = (now - start) / (end - start) if end > start else 1.0
            processed = min(total, int(total * fraction))
            percent = min(99, int(100 * fraction))
            message = f"Job is running (try {index + 1} of {self.max_tries})."
            progress_at = now
        elif status is JobStatus.ERROR:
            message = (
                f"An error occurred during job execution (try {index + 1} of {self.max_tries}). "
                f"The job will automatically re-run every {round(self.retry_interval_seconds / 60)} minutes."
            )
            progress_at = run.attempts[index][1]
        elif status is JobStatus.COMPLETED:
            assert run.cutoff is not None
            processed = total = len(self._select(job.query, run.cutoff))
            percent = 100
            progress_at = run.ended_at
        elif status is JobStatus.FAILED:
            progress_at = run.ended_at
        elif status is JobStatus.CANCELLED:
            assert run.cancelled_at is not None
            progress_at = run.cancelled_at
        replayable = status in _REPLAYABLE
        typed = self.typed_numbers
        return {
            "Id": job.id,
            "Type": "ClickExport",
            "ProgramId": job.query.program_ids[0] if len(job.query.program_ids) == 1 else "",
            "CreatedBy": self.account_sid,
            "CreatedDate": stamp(job.created_at),
            "StartedDate": stamp(started),
            "AbandonedDate": stamp(job.abandoned_at),
            "CompletedDate": stamp(run.ended_at if status is JobStatus.COMPLETED else None),
            "CancelledDate": stamp(run.cancelled_at if status is JobStatus.CANCELLED else None),
            "FailedDate": stamp(run.ended_at if status is JobStatus.FAILED else None),
            "LastProgressUpdateDate": stamp(progress_at),
            "Status": status.value,
            "StatusMessage": message,
            "RecordsProcessed": processed if typed else str(processed),
            "PercentageComplete": percent if typed else str(percent),
            "Replayable": replayable if typed else ("true" if replayable else "false"),
            "ResultUri": f"/{API_ROOT}/{self.account_sid}/Jobs/{job.id}/Download",
        }

    def _stamp(self, instant: datetime | None) -> str:
        if instant is None:
            return ""
        return instant.astimezone(ZoneInfo(self.account_timezone)).isoformat(timespec="seconds")

    def _list_jobs(self, request: Request, fmt: str) -> Response:
        values, errors = _parse_params(request, {"CreatedAfter": False, "CreatedBefore": False})
        bounds: dict[str, datetime] = {}
        for name in ("CreatedAfter", "CreatedBefore"):
            text = _single(values, name)
            if text:
                instant = self._parse_instant(text)
                if instant is None:
                    errors.append((name, "Not a valid date; use yyyy-MM-dd or an ISO-8601 date and time."))
                else:
                    bounds[name] = instant
        if errors:
            raise _ApiError(400, "Validation Failed", errors)
        after, before = bounds.get("CreatedAfter"), bounds.get("CreatedBefore")
        with self._lock:
            now = self.clock.now()
            jobs = [
                self._job_body(job, now)
                for job in sorted(self._jobs.values(), key=lambda j: j.created_at)
                if (after is None or job.created_at >= after) and (before is None or job.created_at < before)
            ]
        return _render(200, {"Jobs": jobs}, fmt)

    def _parse_instant(self, text: str) -> datetime | None:
        zone = ZoneInfo(self.account_timezone)
        day = _parse_day(text)
        if day is not None:
            return datetime.combine(day, dtime(0), zone)
        try:
            instant = datetime.fromisoformat(text)
        except ValueError:
            return None
        return instant if instant.tzinfo is not None else instant.replace(tzinfo=zone)

    def _replay(self, job: _Job, fmt: str) -> Response:
        now = self.clock.now()
        status, _ = job.run.phase(now)
        if status not in _REPLAYABLE:
            if status is JobStatus.RUNNING:
                job.abandoned_at = now
            raise _ApiError(403, NOT_REPLAYABLE)
        job.runs.append(self._schedule(len(job.runs) + 1, now))
        return _render(200, self._job_body(job, now), fmt)

    # ---- downloads ------------------------------------------------------------------------------

    def _download(self, job: _Job, request: Request, fmt: str) -> Response:
        mode = ""
        for name, value in request.query.items():
            if name.lower() == "mode":
                mode = value.strip().lower()
        if mode not in ("", "stream"):
            raise _ApiError(400, "Validation Failed", [("Mode", "Must be Stream or omitted.")])
        with self._lock:
            now = self.clock.now()
            run = job.run
            status, _ = run.phase(now)
            if status in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.ERROR):
                return _render(202, self._job_body(job, now), fmt)
            if status is not JobStatus.COMPLETED:
                raise _ApiError(404, f"No result is available for this job (status {status.value}).")
            if self._expired(run, now):
                raise _ApiError(404, "The job result has expired.")
            if mode == "":
                return self._redirect(job, run, request, now)
        return self._file_response(job, run, "application/octet-stream")

    def _file_name(self, job: _Job) -> str:
        return f"ClickExport_{job.query.day:%Y%m%d}_{job.id}.{_EXTENSIONS[job.query.result_format]}"

    def _redirect(self, job: _Job, run: _Run, request: Request, now: datetime) -> Response:
        """302 to a presigned storage URL on the other host name of this server."""
        path = f"{STORAGE_PREFIX}{job.id}/{run.number}/{self._file_name(job)}"
        amz_date = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        expires = str(max(1, int(self.signed_url_ttl)))
        query = urlencode(
            {
                "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
                "X-Amz-Credential": f"ASIASANDBOXIMPACT000/{amz_date[:8]}/us-east-1/s3/aws4_request",
                "X-Amz-Date": amz_date,
                "X-Amz-Expires": expires,
                "X-Amz-SignedHeaders": "host",
                "X-Amz-Signature": self._sign(path, amz_date, expires),
            }
        )
        location = f"{request.storage_origin}{quote(path)}?{query}"
        return Response(302, {"Location": location, "Content-Type": "text/plain; charset=utf-8"}, b"")

    def _sign(self, path: str, amz_date: str, expires: str) -> str:
        message = f"GET\n{path}\n{amz_date}\n{expires}".encode()
        return hmac.new(self._signing_key, message, hashlib.sha256).hexdigest()

    def _storage(self, request: Request) -> Response:
        if "Authorization" in request.headers:
            return _s3_error(
                400,
                "InvalidArgument",
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query "
                "string parameter or the Authorization header should be specified",
            )
        if request.method not in ("GET", "HEAD"):
            return _s3_error(
                405, "MethodNotAllowed", "The specified method is not allowed against this resource."
            )
        amz_date = request.query.get("X-Amz-Date", "")
        expires = request.query.get("X-Amz-Expires", "")
        signature = request.query.get("X-Amz-Signature", "")
        try:
            signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            lifetime = int(expires)
        except ValueError:
            signed_at, lifetime = None, 0
        if signed_at is None or not hmac.compare_digest(
            signature, self._sign(request.path, amz_date, expires)
        ):
            return _s3_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        now = self.clock.now()
        if now > signed_at + timedelta(seconds=lifetime):
            return _s3_error(403, "AccessDenied", "Request has expired")
        parts = request.path[len(STORAGE_PREFIX) :].split("/")
        with self._lock:
            job = self._jobs.get(parts[0]) if len(parts) == 3 else None
            run = None
            if job is not None and parts[1].isdigit() and 1 <= int(parts[1]) <= len(job.runs):
                run = job.runs[int(parts[1]) - 1]
            if (
                job is None
                or run is None
                or run.phase(now)[0] is not JobStatus.COMPLETED
                or self._expired(run, now)
                or parts[2] != self._file_name(job)
            ):
                return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
        return self._file_response(job, run, _STORAGE_TYPES[job.query.result_format])

    def _file_response(self, job: _Job, run: _Run, content_type: str) -> Response:
        assert run.cutoff is not None
        rows = self._select(job.query, run.cutoff)
        terminator = self.csv_line_terminator
        fmt = job.query.result_format
        with self._lock:
            length = run.lengths.get(terminator)
        if length is None:
            length = sum(len(chunk) for chunk in _file_chunks(fmt, rows, terminator))
            with self._lock:
                run.lengths[terminator] = length
        truncate = max(0, min(length - 1, length // 2)) if self.truncate_downloads else None
        return Response(
            200,
            {
                "Content-Type": content_type,
                "Content-Disposition": f'attachment; filename="{self._file_name(job)}"',
            },
            _file_chunks(fmt, rows, terminator),
            content_length=length,
            truncate_after=truncate,
        )

    # ---- synthetic data -------------------------------------------------------------------------

    def _select(self, query: _Query, cutoff: datetime) -> list[dict[str, str]]:
        """The rows of ``query`` among the clicks before ``cutoff``, in file order."""
        limit = cutoff.timestamp()
        programs, ads, subs = set(query.program_ids), set(query.ad_ids), set(query.sub_ids)
        rows: list[dict[str, str]] = []
        for epoch, row in self._day_clicks(query.day):
            if epoch >= limit:
                break
            if programs and row["ProgramId"] not in programs:
                continue
            if ads and row["AdId"] not in ads:
                continue
            if subs and not subs & {row["SubId1"], row["SubId2"], row["SubId3"]}:
                continue
            if query.unique_only and row["UniqueClick"] != "true":
                continue
            rows.append(dict(row))
        return rows

    def _day_clicks(self, day: date) -> list[tuple[int, dict[str, str]]]:
        """Every click of a local day, ordered by time then id (cached; rows must not be mutated)."""
        key = (self.seed, self.account_sid, self.account_timezone, self.clicks_per_day, day)
        with self._lock:
            cached = self._day_cache.get(key)
        if cached is not None:
            return cached
        zone = ZoneInfo(self.account_timezone)
        start = int(datetime.combine(day, dtime(0), zone).timestamp())
        span = int(datetime.combine(day + timedelta(days=1), dtime(0), zone).timestamp()) - start
        rng = random.Random(f"impact-clicks:{self.seed}:{self.account_sid}:{day.isoformat()}")
        count = max(0, round(self.clicks_per_day * rng.uniform(0.8, 1.2)))
        stamps = [start + rng.randrange(span) for _ in range(count)]
        clicks = [(stamp, _click(random.Random(rng.getrandbits(64)), stamp, zone)) for stamp in stamps]
        clicks.sort(key=lambda item: (item[0], item[1]["Id"]))
        with self._lock:
            if len(self._day_cache) >= 64:
                self._day_cache.pop(next(iter(self._day_cache)))
            self._day_cache[key] = clicks
        return clicks


def _click(rng: random.Random, epoch: int, zone: ZoneInfo) -> dict[str, str]:
    """One synthetic click (every value a string, blanks empty)."""

    def maybe(probability: float, value: str) -> str:
        return value if rng.random() < probability else ""

    program_index = rng.choices(range(len(_PROGRAMS)), weights=_PROGRAM_WEIGHTS)[0]
    program_id, program_name, domain = _PROGRAMS[program_index]
    ad_slot = rng.randrange(3)
    media_id, media_name = _MEDIA[rng.randrange(len(_MEDIA))]
    deal = _DEALS[rng.randrange(len(_DEALS))] if rng.random() < 0.3 else ("", "", "")
    area, city, region, country = _PLACES[rng.randrange(len(_PLACES))]
    device_type, family, browser, os_name = _DEVICES[rng.randrange(len(_DEVICES))]
    referrer, referring_domain = (
        _REFERRERS[rng.randrange(len(_REFERRERS))] if rng.random() < 0.8 else ("", "")
    )
    category, traffic_source = _TRAFFIC[rng.randrange(len(_TRAFFIC))]
    click_id = "".join(rng.choice(_BASE62) for _ in range(30))
    subs = [maybe(0.6, _SUB_IDS[rng.randrange(len(_SUB_IDS))]) for _ in range(3)]
    brand = rng.random() < 0.15
    return {
        "Id": click_id,
        "ProgramId": program_id,
        "ProgramName": program_name,
        "ProfileId": maybe(0.6, str(rng.randrange(10**9, 10**10))),
        "IpAddress": f"{rng.getrandbits(160):040x}",
        "EventDate": datetime.fromtimestamp(epoch, zone).isoformat(timespec="seconds"),
        "MediaId": media_id,
        "MediaName": media_name,
        "AdId": str(100_000 + int(program_id) * 10 + ad_slot),
        "AdName": _AD_NAMES[(program_index + ad_slot) % len(_AD_NAMES)],
        "AdType": _AD_TYPES[(program_index * 3 + ad_slot) % len(_AD_TYPES)],
        "ProductSku": maybe(0.3, f"SKU-{rng.randrange(10_000):04d}"),
        "AdCampaign": "Search - Brand, US" if brand else "",
        "AdGroup": "Tents & Shelters" if brand else "",
        "Keyword": "ultralight tent" if brand else "",
        "MatchType": rng.choice(("EXACT", "PHRASE", "BROAD")) if brand else "",
        "Channel": "Paid Search" if brand else "",
        "DealName": deal[0],
        "DealType": deal[1],
        "DealScope": deal[2],
        "CustomerArea": area,
        "CustomerCity": city,
        "CustomerRegion": region,
        "CustomerCountry": country,
        "DeviceType": device_type,
        "DeviceFamily": family,
        "Browser": browser,
        "Os": os_name,
        "ReferringUrl": referrer,
        "ReferringDomain": referring_domain,
        "LandingPageUrl": f"https://{domain}/landing?irclickid={click_id}&utm_source=impact&utm_medium=affiliate",
        "TrafficCategory": category,
        "TrafficSource": traffic_source,
        "BidKeyword": "tents" if brand else "",
        "SearchText": maybe(0.35, _SEARCH_TEXT[rng.randrange(len(_SEARCH_TEXT))]),
        "SharedId": maybe(0.4, f"shr-{rng.randrange(10**6):06d}"),
        "SubId1": subs[0],
        "SubId2": subs[1],
        "SubId3": subs[2],
        "CpcBid": f"{rng.choice((0, 0, 0, 5, 15, 35)) / 100:.2f}",
        "Payout": f"{rng.choice((0, 0, 0, 0, 10, 12)) / 100:.2f}",
        "UniqueClick": "true" if rng.random() < 0.75 else "false",
    }


# ---- result files ----------------------------------------------------------------------------------


def _file_chunks(fmt: str, rows: list[dict[str, str]], terminator: str) -> Iterator[bytes]:
    """The result file of ``rows`` in ``fmt``, in chunks of a few hundred rows."""
    batch = 500
    count = len(rows)
    if fmt == "CSV":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator=terminator)
        writer.writerow(CLICK_FIELDS)
        for offset in range(0, count, batch):
            writer.writerows([row[name] for name in CLICK_FIELDS] for row in rows[offset : offset + batch])
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
        if buffer.getvalue():
            yield buffer.getvalue().encode("utf-8")
        return
    page = {
        "page": "1",
        "numpages": "1",
        "pagesize": str(count),
        "total": str(count),
        "start": "1" if count else "0",
        "end": str(count),
    }
    if fmt == "JSON":
        head = {f"@{name}": value for name, value in page.items()}
        yield (json.dumps(head, ensure_ascii=False)[:-1] + ', "Clicks": [').encode("utf-8")
        for offset in range(0, count, batch):
            items = (json.dumps(row, ensure_ascii=False) for row in rows[offset : offset + batch])
            yield ((", " if offset else "") + ", ".join(items)).encode("utf-8")
        yield b"]}"
        return
    attributes = " ".join(f'{name}="{value}"' for name, value in page.items())
    yield f'<?xml version="1.0" encoding="UTF-8"?>\n<ImpactRadiusResponse><Clicks {attributes}>'.encode()
    for offset in range(0, count, batch):
        parts = []
        for row in rows[offset : offset + batch]:
            cells = "".join(f"<{name}>{_xml_text(row[name])}</{name}>" for name in CLICK_FIELDS)
            parts.append(f"<Click>{cells}</Click>")
        yield "".join(parts).encode("utf-8")
    yield b"</Clicks></ImpactRadiusResponse>"


def _xml_text(value: str) -> str:
    return escape(value, {"\r": "&#13;"})


# ---- API answers -----------------------------------------------------------------------------------


def _negotiate(request: Request, segments: list[str]) -> tuple[list[str], str]:
    """Strip a ``.json``/``.xml`` suffix from the path and pick the answer format.

    Returns ``json``, ``xml`` or ``""`` (no preference: the sandbox's ``default_format`` applies).
    """
    segments = [s for s in segments if s] if segments else []
    if segments:
        last = segments[-1]
        for suffix in (".json", ".xml"):
            if last.lower().endswith(suffix) and len(last) > len(suffix):
                return [*segments[:-1], last[: -len(suffix)]], suffix[1:]
    best: tuple[float, str] | None = None
    for item in request.headers.get("Accept", "").split(","):
        media, *params = (part.strip() for part in item.split(";"))
        kind = {
            "application/json": "json",
            "text/json": "json",
            "application/xml": "xml",
            "text/xml": "xml",
        }.get(media.lower())
        if kind is None:
            continue
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if weight > 0 and (best is None or weight > best[0]):
            best = (weight, kind)
    return segments, best[1] if best else ""


def _render(
    status: int, payload: Mapping[str, Any], fmt: str, headers: Mapping[str, str] | None = None
) -> Response:
    if fmt == "json":
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        content_type = "application/json; charset=utf-8"
    else:
        parts = ['<?xml version="1.0" encoding="UTF-8"?>\n<ImpactRadiusResponse>']
        _xml_items(payload, parts)
        parts.append("</ImpactRadiusResponse>")
        data = "".join(parts).encode("utf-8")
        content_type = "application/xml; charset=utf-8"
    return Response(status, {"Content-Type": content_type, **(headers or {})}, data)


def _render_error(exc: _ApiError, fmt: str) -> Response:
    return _render(exc.status, exc.payload(), fmt, exc.headers)


def _xml_items(mapping: Mapping[str, Any], parts: list[str]) -> None:
    for key, value in mapping.items():
        parts.append(f"<{key}>")
        if isinstance(value, list):
            child = key[:-1] if key.endswith("s") else "Item"
            for item in value:
                parts.append(f"<{child}>")
                if isinstance(item, Mapping):
                    _xml_items(item, parts)
                else:
                    parts.append(_xml_scalar(item))
                parts.append(f"</{child}>")
        elif isinstance(value, Mapping):
            _xml_items(value, parts)
        else:
            parts.append(_xml_scalar(value))
        parts.append(f"</{key}>")


def _xml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else _xml_text(str(value))


def _route(method: str, rest: list[str]) -> _Route:
    lowered = [s.lower() for s in rest]
    reads: tuple[str, ...] = ("GET", "HEAD")
    allowed: tuple[str, ...]
    if lowered == ["clickexport"]:
        route, allowed = _Route("ClickExport", "export"), ("GET",)
    elif lowered == ["jobs"]:
        route, allowed = _Route("Jobs", "list"), reads
    elif len(lowered) == 2 and lowered[0] == "jobs":
        route, allowed = _Route("Jobs", "job", rest[1]), reads
    elif len(lowered) == 3 and lowered[0] == "jobs" and lowered[2] == "download":
        route, allowed = _Route("Jobs", "download", rest[1]), reads
    elif len(lowered) == 3 and lowered[0] == "jobs" and lowered[2] == "replay":
        route, allowed = _Route("Jobs", "replay", rest[1]), ("PUT",)
    else:
        raise _ApiError(404, "Not Found")
    if method not in allowed:
        raise _ApiError(405, "Method Not Allowed", headers={"Allow": ", ".join(allowed)})
    return route


def _parse_params(
    request: Request, allowed: Mapping[str, bool]
) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    """Query parameters by canonical name (names are case-insensitive), and the problems found.

    ``allowed`` maps each name to whether it may be repeated.
    """
    canonical = {name.lower(): name for name in allowed}
    values: dict[str, list[str]] = {}
    errors: list[tuple[str, str]] = []
    for raw, items in request.query_list.items():
        name = canonical.get(raw.lower())
        if name is None:
            errors.append((raw, "Unknown parameter."))
            continue
        values.setdefault(name, []).extend(items)
    for name, items in values.items():
        if not allowed[name] and len(items) > 1:
            errors.append((name, "Must be given at most once."))
        if any(not item.strip() for item in items):
            errors.append((name, "Must not be empty."))
    return values, errors


def _single(values: Mapping[str, list[str]], name: str) -> str | None:
    items = values.get(name)
    if not items or len(items) > 1 or not items[0].strip():
        return None
    return items[0].strip()


def _parse_day(text: str) -> date | None:
    if not _DATE_RE.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _s3_error(status: int, code: str, message: str) -> Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{escape(message)}</Message>"
        f"<RequestId>{secrets.token_hex(8).upper()}</RequestId></Error>"
    )
    return Response.text(status, body, "application/xml")
