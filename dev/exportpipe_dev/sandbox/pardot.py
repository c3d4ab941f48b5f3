"""Emulator of the Account Engagement (Pardot) Export API v5 and its Salesforce token endpoint.

Serve it with :class:`~exportpipe_dev.sandbox.base.SandboxServer`; the origin stands in for both
``login.salesforce.com`` (``POST /services/oauth2/token``) and ``pi.pardot.com`` (``/api/v5/...``).
The catalog of objects, procedures, arguments and fields is :mod:`exportpipe.sources.pardot.catalog`,
shared with the pipeline, so request validation here is the catalog's.

Endpoints: ``POST /api/v5/exports`` (create), ``GET /api/v5/exports/{id}`` (read), ``GET /api/v5/exports``
(query), ``POST /api/v5/exports/{id}/do/cancel`` (cancel), ``GET /api/v5/exports/{id}/results/{fileId}``
(download, the URLs in ``resultRefs``), ``GET /storage/exports/{id}/{fileId}.csv`` (signed storage URL
when ``redirect_downloads`` is on).

Choices made where the public record is silent or contradictory (reference [U] items):

Paths and shapes
  - The query path is ``GET /api/v5/exports`` and cancel is ``POST /api/v5/exports/{id}/do/cancel`` (v5's
    ``/do/<action>`` convention). Download URLs are ``{origin}/api/v5/exports/{id}/results/{fileId}``, built
    from the Host the client addressed.
  - Create answers **200** (the v5 export page says so; other v5 creates use 201) with the bare export
    representation ``{id, state, isExpired, [resultRefs], createdAt, updatedAt}`` (every published example
    is unwrapped). ``createdAt``/``updatedAt`` are ISO-8601 with offset, seconds precision, in the
    timezone of the user making the request. ``resultRefs``: absent without data, a string for one file,
    an array (in no significant order) for several.
  - Query answers ``{"result": {"total_results": n, "export": ...}}``; ``export`` is omitted, an object or
    an array; items omit ``resultRefs``; no pagination. ``status`` also accepts ``Canceled`` (the page
    lists only four values). Query date filters are exclusive, like the procedures.
  - The ``Content-Type`` of create must be ``application/json`` (parameters such as ``charset`` allowed).

Validation (see the catalog's docstring for argument formats and the one-year rules)
  - Object names are matched case-insensitively; procedure and argument names are snake_case. The
    spelling ``prospectOnly`` is accepted for ``prospect_only`` only where the page uses it: visitor
    activity ``filter_by_updated_at``; on ``filter_by_created_at`` it is an unknown argument (175). The
    activity-date procedure of external activity is ``filter_by_activity_date``. Duplicate argument
    names can't occur in a JSON object (the parser keeps the last, which is also the documented
    behaviour).
  - ``type`` 5 (Session): the page says "Type ``Session`` is omitted". Read as "Session activities are
    never exported", so asking for them is an invalid value: a ``type`` list containing 5 is refused
    with 177 (``... unknown visitor activity type 5``) rather than answered with an empty export, and
    type 5 never occurs in the data.
  - Date arguments (and the query's date filters) are the page's keywords or GNU date input syntax
    (``2026-11-01T10:00:00Z``, ``@1790000000``, ``2 days ago``, ``next friday``, ``TZ="Europe/Paris"
    2026-11-01 06:30``), resolved on the sandbox clock in the user's timezone exactly as ``date -d``
    does; :mod:`exportpipe_dev.sandbox.gnudate` lists the rules and where it follows ``strtotime`` instead
    (``today`` is midnight, hour 24 rolls over). A value it cannot read is a 177.
  - A ``*_after`` in the future is accepted. Without ``*_before`` the window (``*_after``, creation
    time) is empty, and with one nothing stamped after the creation time exists yet: the export
    completes without ``resultRefs``. (The page does not say the API refuses it; 177 would be as
    plausible.)
  - Window bounds are exclusive on both ends, as the v5 page words it ("greater than ``*_after`` and less
    than ``*_before``"). The later v4 page says inclusive; set ``bounds="inclusive"`` to emulate that.
  - One year (177 beyond it) is a calendar year on the user's wall clock, 29 February + 1 year = 1 March
    (details in the catalog). The page says two things about the age of ``*_after``, and the sandbox
    can be either reading:

    * default (``after_within_year_of_creation=False``): "The ``*_after`` must be within a year of the
      creation date of the Export" is read together with the sentence next to it ("When ``*_before``
      isn't specified, the current date is used to gauge the interval"), so it binds only a window
      without ``*_before``; a closed window may lie any distance in the past (backfills), only its
      length is limited.
    * ``after_within_year_of_creation=True``: the sentence as written under every ``*_before``: every
      request whose ``*_after`` is more than a year before the export's creation is refused with 177
      ``The <after> must be within a year of the creation date of the Export.``, bounded or not. A
      client that backfills further back than a year cannot work against this reading.

Errors: v5 body ``{"code": <int>, "message": "<text>"}`` with the codes and messages of the published
"Error Codes & Messages" page (pardot/api-docs ``kb/error-codes-messages``, 2021); detail is appended as
``"<message>: <detail>"`` (as in the recorded v5 answer ``"A required header is missing:
Pardot-Business-Unit-Id header not found on request."``), or after a space when the message ends with a
period. ``": Inactive token"`` is the suffix clients report for expired tokens; ``": Missing token"`` is
chosen for an absent one. Which code the API uses for an unknown object, a bad field list or a range
error is not published; the closest published text is used, as listed below.

  ===================================  =====  ===================================================
  situation                            HTTP   code
  ===================================  =====  ===================================================
  missing / invalid / expired token    401    184 ``access_token is invalid, unknown, or malformed``
                                              ``: Inactive token`` (``: Missing token`` when absent)
  no Pardot-Business-Unit-Id header    400    181
  malformed business unit id           400    182 ``Invalid header value``
  well-formed but unknown BU id        403    201 (chosen status)
  daily API allowance used up          429    122 (429 as Airbyte's connector observes)
  more than ``max_concurrent`` calls   429    66 (status chosen to match 122)
  forced internal error                500    183
  unknown endpoint / wrong method      404    198 / 405 60
  export or file not found             404    109 ``The requested record was not found.``
  bad Content-Type / empty / bad JSON  400    151 / 152 / 150
  missing / invalid body property      400    153 / 154 (also unknown object, bad ``fields``, > 150 fields)
  unknown field                        400    180
  unknown procedure / argument         400    174 / 175
  missing required argument            400    176
  invalid argument value or range      400    177
  cancel of Complete/Failed export     400    178 ``The current state of the export does not allow
  download of expired/unfinished       400    178   the operation`` (the page names both reasons)
  bad query parameter value            400    5 (status, object, dates) / 19 sort_by / 20 sort_order
  ===================================  =====  ===================================================

Auth (Salesforce OAuth)
  - ``grant_type=password`` and ``grant_type=refresh_token``; parameters from the form body or the query
    string (tap-pardot sends them in the query), client credentials also from HTTP Basic. Errors are
    Salesforce's 400 bodies (``invalid_grant``/``authentication failure`` or ``expired access/refresh
    token``, ``invalid_client_id``, ``invalid_client``, ``unsupported_grant_type``, ``invalid_request``).
  - Success has no ``expires_in`` and the password grant returns no ``refresh_token`` (Salesforce
    behaviour); tests mint one with :meth:`PardotSandbox.issue_refresh_token`. Access tokens live
    ``token_ttl`` seconds of the sandbox clock (Salesforce: the org's session timeout; default 2 h);
    :meth:`PardotSandbox.expire_tokens` invalidates every issued access token at once.
  - The legacy Pardot scheme (``Authorization: Pardot api_key=..., user_key=...``, v3/v4 only) is answered
    like any other non-Bearer header: 401, 184 ``: Missing token``. The reference records the scheme as
    retired but publishes no v5 code for it (no code 199 "api_key no longer supported" or similar is in
    the stored sources, and v3/v4's code 1 "Invalid API key or user key" belongs to the old XML API), so
    no code is invented.
  - Every API call, downloads included, needs ``Authorization: Bearer`` and ``Pardot-Business-Unit-Id``.
    The token check comes first, then the business unit, then injected errors, the daily allowance and
    the concurrency limit.

Limits
  - The daily allowance counts every authenticated API call per business unit (create, read, query,
    cancel, download); calls refused by a limit are not counted. It resets at midnight in
    ``account_timezone`` (default: the user's timezone). ``X-Return-Api-Usage: 1`` adds an ``x-api-usage``
    header ``"<calls today>/<allowance>"`` (format chosen).
  - Concurrency counts calls in flight, a download until its body has been sent.

States and time (all on the sandbox clock)
  - A new export is ``Waiting``; exports are processed one at a time per account, oldest first; each one
    starts ``pickup_seconds`` after creation at the earliest and takes ``processing_seconds`` (both as
    they were when it was created: a knob changed later applies to later exports only). Each
    transition sets ``updatedAt``. ``fail_next(n)`` makes the next ``n`` exports to finish processing end
    ``Failed``.
  - Data expires 7 days after completion: ``isExpired`` becomes true, ``resultRefs`` disappears,
    ``updatedAt`` is set to the expiry instant and downloads answer 178. Failed and canceled exports are
    marked expired 7 days after they ended. An export not complete 7 days after creation is canceled
    and expired at that instant.
  - Cancel turns ``Waiting``/``Processing`` into ``Canceled``; canceling a canceled export is a no-op 200.

Files (CSV)
  - UTF-8 without BOM; LF line endings (PHP's ``fputcsv`` default; ``line_terminator`` knob), every row
    terminated; a header row of field names (unquoted) in every file; one column per requested field in
    request order (all catalog fields when ``fields`` is omitted).
  - Strings are always double-quoted, embedded quotes doubled, a leading ``=``, ``+`` or ``@`` escaped with
    a backslash (inside the quotes); null is an empty unquoted cell, so ``""`` is an empty string.
    Integers are bare, booleans ``true``/``false``, DateTime ``YYYY-MM-DD HH:MM:SS`` and Date ``YYYY-MM-DD``
    in the creating user's timezone at creation time (``user_timezone``, default ``America/New_York``).
  - External activity ``activityDate``: the field table types it DateTime, its description says "This
    must be in "YYYY-MM-DD" format". The description is read as the input rule for *creating* an
    activity (it goes on "If not specified, then the current date is used"), so the export writes it as
    any DateTime, ``YYYY-MM-DD HH:MM:SS`` with a time of day, and ``filter_by_activity_date`` compares
    full instants. A client should accept a bare ``YYYY-MM-DD`` there too.
  - Rows are split over files of varying size (between half of and ``rows_per_file`` rows, or exactly
    ``file_count`` files), rows shuffled and files listed in no particular order.

Data
  - Each object has an endless deterministic record stream (a function of ``seed``): time from
    2020-01-01 UTC is cut into slots of ``record_spacing_seconds``; a slot holds one record with
    probability ``record_fill`` at a whole-second offset. Ids grow with creation time. ``updatedAt`` is 0-3
    days after ``createdAt`` (30 % never updated), ``activityDate`` 0-2 days before it, the associated
    prospect's ``updatedAt`` 0-5 days after it. Records are immutable.
  - A record is in an export when its filtered timestamp is inside the window and both that timestamp and
    its ``createdAt`` are before the export's creation time. ``deleted`` (default ``false``) selects on
    ``isDeleted``; the prospect-updated procedures only return records associated with a prospect and
    ``prospect_deleted`` (default ``false``) selects on that prospect's deletion; ``prospect_only`` and
    ``type`` filter visitor activities (type 5, Session, never occurs).
  - String values include the awkward cases: commas, quotes, CR/LF, leading ``@``/``=``/``+``, non-ASCII,
    whitespace-only, empty strings and nulls. :meth:`PardotSandbox.expected_rows` and
    :meth:`PardotSandbox.expected_csv_rows` compute what an export of given arguments must contain;
    :meth:`PardotSandbox.records_in` / :meth:`PardotSandbox.csv_records_in` are the ground truth for a
    half-open window ``[start, end)`` of instants, independent of any request, to check that a client
    turned its window into the right arguments.

Downloads
  - ``redirect_downloads``: the download answers 302 to ``http://localhost:<port>/storage/...?expires=&sig=``
    (``127.0.0.1`` when the client itself used ``localhost``): a different host name of the same server.
    Storage answers 400 (S3's ``InvalidArgument``, XML) to any request carrying ``Authorization`` or
    ``Pardot-Business-Unit-Id``, 403 to a bad or expired signature (``signed_url_ttl``), 404 once the
    export expired. Storage requests do not count as API calls.
  - ``download_framing`` (storage answers too): ``"length"`` (default) announces ``Content-Length``;
    ``"chunked"`` sends ``Transfer-Encoding: chunked``; ``"close"`` sends neither and closes the
    connection after the body. The public record does not say which one Pardot or its storage uses
    [U]; servers in front of object storage send any of them, so a client must handle all three.
  - ``truncate_downloads``: half the body is sent, then the connection is closed. With ``"length"``
    the full Content-Length was announced; with ``"chunked"`` the chunk under way was announced in
    full and the last chunk never comes; with ``"close"`` the close looks like the end of the body
    (only the file's format can tell, and only where the cut falls inside a record).
  - ``fail_requests(status, times, path_prefix, headers)``: the next matching requests answer that status
    with an HTML body, before any other check (a load balancer's error page), with ``headers`` added
    (``{"Retry-After": "120"}`` on a 429, say).
  - ``reset_requests`` / ``truncate_requests`` / ``delay_requests`` / ``trickle_requests`` (the base
    class's): the next matching successful answers are reset mid-body (TCP RST), cut short of their
    Content-Length (clean close), held before their status line, or sent slowly. Downloads are under
    ``/api/v5/exports/{id}/results/`` and, with ``redirect_downloads``, ``/storage/exports/``.

Faults of the export's own life (not what Pardot is documented to do; what a client must survive)
  - ``expire_export(id)``: the export expires now, as its 7 days running out would (a finished one
    loses its data; a Waiting or Processing one is canceled and expired).
  - ``go_back_once(id)``: once Complete, the export's next read answers Complete, then it goes back to
    Processing (downloads answer 178 ``the export is Processing.``, the following read answers
    ``Processing``), then it is Complete again with the same files: a state seen going backwards.

Not emulated: relationship (dot-notation) fields, per-user permissions ("Admin > Exports > View"),
the v5 read cache, ``Pardot-Warning`` headers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import random
import secrets
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, quote, urlencode
from zoneinfo import ZoneInfo

from exportpipe.sources.pardot.catalog import (
    VISITOR_ACTIVITY_TYPES,
    ArgValue,
    FieldType,
    PardotObject,
    Procedure,
)
from exportpipe_dev.sandbox.base import Clock, Framing, Request, Response, Sandbox
from exportpipe_dev.sandbox.gnudate import parse_date_argument
from exportpipe_dev.sandbox.pardot_requests import (
    ExportDefinition,
    ExportRequest,
    ExportRequestError,
    PardotErrorCode,
    error_message,
    lookup_object,
    validate_definition,
    validate_export_request,
)

__all__ = ["ExportState", "PardotSandbox"]

TOKEN_PATH = "/services/oauth2/token"
EXPORTS_PATH = "/api/v5/exports"
STORAGE_PREFIX = "/storage/exports/"
RETENTION = timedelta(days=7)
EPOCH0 = 1577836800  # 2020-01-01T00:00:00Z: the record streams start here

#: What a row is built from: the object and the requested fields (a request or a bare definition).
_Columns = ExportRequest | ExportDefinition

_STATUS_OF_CODE: dict[int, int] = {
    PardotErrorCode.INVALID_ACCESS_TOKEN: 401,
    PardotErrorCode.BUSINESS_UNIT_NOT_FOUND: 403,
    PardotErrorCode.RECORD_NOT_FOUND: 404,
    PardotErrorCode.ENDPOINT_NOT_FOUND: 404,
    PardotErrorCode.INVALID_HTTP_METHOD: 405,
    PardotErrorCode.CONCURRENT_LIMIT: 429,
    PardotErrorCode.DAILY_LIMIT: 429,
    PardotErrorCode.INTERNAL_ERROR: 500,
}

#: Visitor activity types that occur in the synthetic data (Session is never exported).
_VA_TYPES = tuple(t for t in VISITOR_ACTIVITY_TYPES if t != 5)

_OBJECT_ID_BASE = {
    "externalActivity": 10_000_000,
    "visitorActivity": 500_000_000,
    "listMembership": 80_000_000,
    "prospect": 30_000_000,
    "prospectAccount": 2_000_000,
    "visitor": 900_000_000,
}

_FIRST = (
    "Zoë",
    "Ana",
    "Łukasz",
    "Chloé",
    "Mike",
    "Priya",
    "José",
    "Wei",
    "Sam",
    "Olúwadámilọ́lá",
    "Anne-Marie",
)
_LAST = ("O'Brien", "Ångström", "Nguyen", "Smith", "García", "Müller", "Kowalski", "D'Souza", "Tanaka", "Lee")
_ASCII = ("zoe", "ana", "lukasz", "chloe", "mike", "priya", "jose", "wei", "sam", "dami", "annemarie")
_ASCII_LAST = (
    "obrien",
    "angstrom",
    "nguyen",
    "smith",
    "garcia",
    "muller",
    "kowalski",
    "dsouza",
    "tanaka",
    "lee",
)
_WORDS = ("Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Hooli", "Vandelay", "Wonka", "Tyrell")
_AWKWARD = (
    "Acme, Inc.",
    'The "Widget Co" CEO',
    "first line\nsecond line",
    "windows\r\nline break",
    "@mysocialmediahandle",
    '=HYPERLINK("http://example.com")',
    "+1 (555) 010-0199",
    "Zoë Ångström-Łukasz",
    "東京都渋谷区",
    "   ",
    "",
    "O'Brien & Sons; naïve café",
    'launch 🚀, "go"',
    "tab\tseparated",
    "back\\slash",
    "-42",
    " leading and trailing ",
)
_EXTERNAL_TYPES = ("Attended Webinar", "Registered for Event", "Viewed Recording", 'Clicked "Join", late')
_EXTENSIONS = ("Zoom", "ON24", "Eventbrite, Inc.", "Webinar Platform")
_SF_PREFIX = {
    "salesforceLeadId": "00Q",
    "salesforceContactId": "003",
    "salesforceAccountId": "001",
    "salesforceOwnerId": "005",
    "extensionSalesforceId": "0qV",
    "typeSalesforceId": "0qW",
}
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# Filter timestamp = createdAt + lag, with the lag range (seconds) per timestamp.
_LAGS: dict[str, tuple[int, int]] = {
    "createdAt": (0, 0),
    "updatedAt": (0, 3 * 86400),
    "activityDate": (-2 * 86400, 0),
    "prospect.updatedAt": (0, 5 * 86400),
}


class ExportState(StrEnum):
    """The ``state`` of an export."""

    WAITING = "Waiting"
    PROCESSING = "Processing"
    COMPLETE = "Complete"
    FAILED = "Failed"
    CANCELED = "Canceled"


class _ApiError(Exception):
    """A v5 error answer: ``{"code", "message"}`` with the HTTP status of the code."""

    def __init__(self, code: PardotErrorCode, detail: str = "", *, message: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.message = message or error_message(code, detail)
        self.status = _STATUS_OF_CODE.get(code, 400)

    def response(self) -> Response:
        return Response.json(self.status, {"code": int(self.code), "message": self.message})


@dataclass
class _Token:
    client_id: str
    issued_at: datetime
    revoked: bool = False


@dataclass(frozen=True)
class _Record:
    """The cheap attributes of one synthetic record (rich field values come from ``rng_seed``)."""

    id: int
    created: int  # epoch seconds
    updated: int
    activity: int
    prospect_updated: int
    is_deleted: bool
    prospect_deleted: bool
    has_prospect: bool
    va_type: int
    rng_seed: int

    def timestamp(self, filter_on: str) -> int:
        return {
            "createdAt": self.created,
            "updatedAt": self.updated,
            "activityDate": self.activity,
            "prospect.updatedAt": self.prospect_updated,
        }[filter_on]


@dataclass
class _File:
    file_id: int
    records: list[_Record]
    length: int | None = None


@dataclass
class _Export:
    id: int
    request: ExportRequest
    timezone: str
    created_at: datetime
    updated_at: datetime
    # the timing knobs as they were when the export was created: changing a knob later affects only
    # exports created after the change, never one already queued behind others
    pickup: timedelta
    processing: timedelta
    state: ExportState = ExportState.WAITING
    finish_at: datetime | None = None
    ended_at: datetime | None = None
    expired: bool = False
    files: list[_File] = field(default_factory=list)
    ref_order: list[int] = field(default_factory=list)


class PardotSandbox(Sandbox):
    """A faithful, controllable Account Engagement Export API v5 (see the module docstring).

    Every constructor argument is also a public attribute that tests may change at any time; data knobs
    (``seed``, ``record_spacing_seconds``, ``record_fill``) should be set before exports are created.
    """

    source: ClassVar[str] = "pardot"
    fault_path_prefix: ClassVar[str] = "/api/"

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        seed: int = 0,
        client_id: str = "3MVG9sandboxPardotExportClientId",
        client_secret: str = "sandbox-client-secret",
        username: str = "integration@example.com",
        password: str = "sandbox-password",
        business_unit_id: str = "0Uv8b000000TqLgCAK",
        user_timezone: str = "America/New_York",
        account_timezone: str | None = None,
        token_ttl: float = 7200.0,
        pickup_seconds: float = 0.2,
        processing_seconds: float = 1.0,
        daily_limit: int = 25_000,
        max_concurrent: int = 5,
        latency_seconds: float = 0.0,
        record_spacing_seconds: int | Mapping[str, int] = 600,
        record_fill: float = 0.75,
        rows_per_file: int = 2_000,
        file_count: int | None = None,
        bounds: Literal["exclusive", "inclusive"] = "exclusive",
        after_within_year_of_creation: bool = False,
        line_terminator: str = "\n",
        redirect_downloads: bool = False,
        truncate_downloads: bool = False,
        download_framing: Framing = "length",
        signed_url_ttl: float = 300.0,
    ) -> None:
        super().__init__(clock=clock)
        self.seed = seed
        self.client_id = client_id
        self.client_secret = client_secret
        self.username = username
        self.password = password
        self.business_unit_id = business_unit_id
        self.user_timezone = user_timezone
        self.account_timezone = account_timezone
        self.token_ttl = token_ttl
        self.pickup_seconds = pickup_seconds
        self.processing_seconds = processing_seconds
        self.daily_limit = daily_limit
        self.max_concurrent = max_concurrent
        self.latency_seconds = latency_seconds
        self.record_spacing_seconds = record_spacing_seconds
        self.record_fill = record_fill
        self.rows_per_file = rows_per_file
        self.file_count = file_count
        self.bounds = bounds
        self.after_within_year_of_creation = after_within_year_of_creation
        self.line_terminator = line_terminator
        self.redirect_downloads = redirect_downloads
        self.truncate_downloads = truncate_downloads
        self.download_framing: Framing = download_framing
        self.signed_url_ttl = signed_url_ttl

        self.org_id = "00D8b0000000SbXEAU"
        self.user_id = "0058b00000GxYzAAAV"
        self._lock = threading.RLock()
        self._signing_key = secrets.token_bytes(32)
        self._access: dict[str, _Token] = {}
        self._refresh: dict[str, str] = {}
        self._exports: dict[int, _Export] = {}
        self._queue: list[int] = []
        self._processing: int | None = None
        self._free_at = datetime.min.replace(tzinfo=UTC)
        self._next_export_id = 201917
        self._next_file_id = 23191
        self._fail_next = 0
        self._going_back: dict[int, str] = {}  # export id -> "armed" | "back" (go_back_once)
        self._forced: list[PardotErrorCode] = []
        self._usage_day: date | None = None
        self._usage = 0
        self._in_flight = 0

    # ---- knobs and inspection --------------------------------------------------------------------

    def credentials(self) -> dict[str, str]:
        """The handshake credentials: token URL, client id and secret, username, password, business unit."""
        base = self.base_url or "http://127.0.0.1"
        return {
            "token_url": f"{base}{TOKEN_PATH}",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "username": self.username,
            "password": self.password,
            "business_unit_id": self.business_unit_id,
        }

    def issue_refresh_token(self, client_id: str | None = None) -> str:
        """Mint a refresh token for ``client_id`` (default: the sandbox's), as a web-server flow would."""
        token = f"5Aep861{secrets.token_urlsafe(48)}"
        with self._lock:
            self._refresh[token] = client_id or self.client_id
        return token

    def revoke_refresh_tokens(self) -> None:
        """Invalidate every refresh token issued so far."""
        with self._lock:
            self._refresh.clear()

    def issue_access_token(self) -> str:
        """Mint an access token directly (what a successful token grant returns)."""
        with self._lock:
            return self._new_access_token(self.client_id)

    def expire_tokens(self) -> None:
        """Invalidate every access token issued so far (refresh tokens stay valid)."""
        with self._lock:
            for token in self._access.values():
                token.revoked = True

    def fail_next(self, n: int = 1) -> None:
        """Make the next ``n`` exports to finish processing end ``Failed``."""
        with self._lock:
            self._fail_next += n

    def expire_export(self, export_id: int) -> None:
        """Expire an export now, as its 7 days running out would: a finished export's data goes
        (``isExpired`` true, no ``resultRefs``, downloads answer 178, signed storage URLs 404); one
        still Waiting or Processing is canceled and expired (``KeyError`` when unknown)."""
        with self._lock:
            self._advance()
            export = self._exports[export_id]
            now = self.clock.now()
            if export.state in (ExportState.WAITING, ExportState.PROCESSING):
                if self._processing == export.id:
                    self._processing, self._free_at = None, now
                if export.id in self._queue:
                    self._queue.remove(export.id)
                self._end(export, ExportState.CANCELED, now, expired=True)
            elif not export.expired:
                export.expired, export.updated_at = True, now
                export.ended_at = export.ended_at or now

    def go_back_once(self, export_id: int) -> None:
        """Make an export's state go backwards once: when it is Complete, its next read answers
        Complete, then it goes back to Processing — downloads answer 178 (``the export is
        Processing.``) and the read after that answers ``Processing`` without ``resultRefs`` — and
        after that read it is Complete again, with the same files (``KeyError`` when unknown)."""
        with self._lock:
            if export_id not in self._exports:
                raise KeyError(export_id)
            self._going_back[export_id] = "armed"

    def force_error(self, code: int, times: int = 1) -> None:
        """Make the next ``times`` authenticated API calls answer error ``code`` (e.g. 66, 122, 183)."""
        error_code = PardotErrorCode(code)
        with self._lock:
            self._forced.extend([error_code] * times)

    def api_calls_today(self) -> int:
        """API calls counted against today's allowance."""
        with self._lock:
            self._roll_usage_day()
            return self._usage

    def export_state(self, export_id: int) -> ExportState:
        """The current state of an export (``KeyError`` when unknown)."""
        with self._lock:
            self._advance()
            return self._exports[export_id].state

    def export_ids(self) -> list[int]:
        """Ids of every export created so far, oldest first."""
        with self._lock:
            return sorted(self._exports)

    def expected_rows(
        self,
        object_name: str,
        procedure: str,
        arguments: Mapping[str, Any],
        fields: Sequence[str] | None = None,
        *,
        created_at: datetime | None = None,
        timezone: str | None = None,
    ) -> list[dict[str, Any]]:
        """The records an export created at ``created_at`` (default: now) would contain, ordered by id.

        ``timezone`` is the creating user's timezone (default: the current ``user_timezone``): it resolves
        the arguments and formats the dates. Values are typed: ``int``, ``str``, ``bool``, ``None``, and
        aware datetimes in that timezone. Raises :class:`ExportRequestError` when the request is invalid.
        """
        zone = ZoneInfo(timezone or self.user_timezone)
        request, created = self._validate_for_expectation(
            object_name, procedure, arguments, fields, created_at, zone
        )
        return [self._typed_row(request, rec, zone) for rec in self._select(request, created)]

    def expected_csv_rows(
        self,
        object_name: str,
        procedure: str,
        arguments: Mapping[str, Any],
        fields: Sequence[str] | None = None,
        *,
        created_at: datetime | None = None,
        timezone: str | None = None,
    ) -> list[dict[str, str]]:
        """Like :meth:`expected_rows`, as ``csv.DictReader`` reads the downloaded files (all strings)."""
        zone = ZoneInfo(timezone or self.user_timezone)
        request, created = self._validate_for_expectation(
            object_name, procedure, arguments, fields, created_at, zone
        )
        return [self._parsed_row(request, rec, zone) for rec in self._select(request, created)]

    def export_created_at(self, export_id: int) -> datetime:
        """When an export was created, on the sandbox clock (UTC; ``KeyError`` when unknown)."""
        with self._lock:
            return self._exports[export_id].created_at

    def records_in(
        self,
        object_name: str,
        procedure: str,
        start: datetime,
        end: datetime,
        *,
        filters: Mapping[str, Any] | None = None,
        fields: Sequence[str] | None = None,
        as_of: datetime | None = None,
        timezone: str | None = None,
    ) -> list[dict[str, Any]]:
        """Ground truth: the records whose ``procedure`` timestamp lies in ``[start, end)``, by id.

        Independent of any export request and of the ``bounds`` knob: ``start`` and ``end`` are instants
        (aware datetimes), the window is half-open, exactly what a pipeline exporting the window
        ``[start, end)`` must land. Only records that exist at ``as_of`` (default: now on the sandbox
        clock) count: created, and stamped, before it; pass the export's creation time
        (:meth:`export_created_at`) to ask what that export could see. ``filters`` are the procedure's
        other arguments (``deleted``, ``prospect_deleted``, ``type``, ``prospect_only``; defaults as the
        API applies them), never its window arguments. Rows are typed as in :meth:`expected_rows`.
        """
        zone = ZoneInfo(timezone or self.user_timezone)
        definition, records = self._ground_truth(object_name, procedure, start, end, filters, fields, as_of)
        return [self._typed_row(definition, rec, zone) for rec in records]

    def csv_records_in(
        self,
        object_name: str,
        procedure: str,
        start: datetime,
        end: datetime,
        *,
        filters: Mapping[str, Any] | None = None,
        fields: Sequence[str] | None = None,
        as_of: datetime | None = None,
        timezone: str | None = None,
    ) -> list[dict[str, str]]:
        """Like :meth:`records_in`, as ``csv.DictReader`` reads the downloaded files (all strings)."""
        zone = ZoneInfo(timezone or self.user_timezone)
        definition, records = self._ground_truth(object_name, procedure, start, end, filters, fields, as_of)
        return [self._parsed_row(definition, rec, zone) for rec in records]

    def _ground_truth(
        self,
        object_name: str,
        procedure: str,
        start: datetime,
        end: datetime,
        filters: Mapping[str, Any] | None,
        fields: Sequence[str] | None,
        as_of: datetime | None,
    ) -> tuple[ExportDefinition, list[_Record]]:
        """The definition and records of :meth:`records_in`: ``start <= stamp < end``, before ``as_of``."""
        if start.tzinfo is None or end.tzinfo is None or (as_of is not None and as_of.tzinfo is None):
            raise ValueError("start, end and as_of must be aware datetimes")
        definition = validate_definition(
            object_name, procedure, list(fields) if fields is not None else None, dict(filters or {})
        )
        window_args = {definition.procedure.after_arg, definition.procedure.before_arg} & set(filters or {})
        if window_args:
            raise ValueError(f"the window is start/end, not {', '.join(sorted(window_args))}")
        records = self._scan(
            definition.object.name,
            definition.procedure,
            definition.extra,
            start.timestamp(),
            end.timestamp(),
            (as_of or self.clock.now()).timestamp(),
            closed_low=True,
            closed_high=False,
        )
        return definition, records

    # ---- HTTP entry point -----------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Route one request."""
        if request.path == TOKEN_PATH:
            return self._token_endpoint(request)
        if request.path.startswith(STORAGE_PREFIX):
            return self._storage(request)
        if request.path.startswith("/api/"):
            return self._api(request)
        return Response.text(404, "Not Found")

    # ---- token endpoint -------------------------------------------------------------------------

    def _token_endpoint(self, request: Request) -> Response:
        if request.method != "POST":
            return _oauth_error("invalid_request", "must use HTTP POST")
        params = dict(request.query)
        if "application/x-www-form-urlencoded" in request.headers.get("Content-Type", "") and request.body:
            params.update(parse_qsl(request.body.decode("utf-8"), keep_blank_values=True))
        basic = request.basic_credentials()
        if basic is not None:
            params.setdefault("client_id", basic[0])
            params.setdefault("client_secret", basic[1])
        grant = params.get("grant_type", "")
        if grant not in ("password", "refresh_token"):
            return _oauth_error("unsupported_grant_type", "grant type not supported")
        if params.get("client_id") != self.client_id:
            return _oauth_error("invalid_client_id", "client identifier invalid")
        secret = params.get("client_secret")
        with self._lock:
            if grant == "password":
                if secret != self.client_secret:
                    return _oauth_error("invalid_client", "invalid client credentials")
                if params.get("username") != self.username or params.get("password") != self.password:
                    return _oauth_error("invalid_grant", "authentication failure")
            else:
                if secret is not None and secret != self.client_secret:
                    return _oauth_error("invalid_client", "invalid client credentials")
                if self._refresh.get(params.get("refresh_token", "")) != self.client_id:
                    return _oauth_error("invalid_grant", "expired access/refresh token")
            token = self._new_access_token(self.client_id)
            issued = self._access[token].issued_at
        issued_ms = str(int(issued.timestamp() * 1000))
        identity = f"{request.origin}/id/{self.org_id}/{self.user_id}"
        signature = hmac.new(self.client_secret.encode(), (identity + issued_ms).encode(), hashlib.sha256)
        return Response.json(
            200,
            {
                "access_token": token,
                "instance_url": request.origin,
                "id": identity,
                "token_type": "Bearer",
                "issued_at": issued_ms,
                "signature": base64.b64encode(signature.digest()).decode(),
                "scope": "pardot_api api",
            },
        )

    def _new_access_token(self, client_id: str) -> str:
        token = f"{self.org_id[:15]}!{secrets.token_urlsafe(72)}"
        self._access[token] = _Token(client_id, self.clock.now())
        return token

    # ---- API ------------------------------------------------------------------------------------

    def _api(self, request: Request) -> Response:
        try:
            self._authenticate(request)
            with self._lock:
                self._admit()
        except _ApiError as exc:
            return exc.response()
        release = _Once(self._release)
        try:
            if self.latency_seconds > 0:
                time.sleep(self.latency_seconds)
            response = self._route(request)
        except _ApiError as exc:
            response = exc.response()
        except BaseException:
            release()
            raise
        if request.headers.get("X-Return-Api-Usage") == "1":
            response.headers["x-api-usage"] = f"{self.api_calls_today()}/{self.daily_limit}"
        response.on_close.append(release)
        return response

    def _authenticate(self, request: Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if not header or scheme.lower() != "bearer" or not value.strip():
            raise _ApiError(PardotErrorCode.INVALID_ACCESS_TOKEN, "Missing token")
        with self._lock:
            token = self._access.get(value.strip())
            expired = token is None or token.revoked
            if token is not None and self.clock.now() >= token.issued_at + timedelta(seconds=self.token_ttl):
                expired = True
        if expired:
            raise _ApiError(PardotErrorCode.INVALID_ACCESS_TOKEN, "Inactive token")
        unit = request.headers.get("Pardot-Business-Unit-Id")
        if unit is None or not unit.strip():
            raise _ApiError(
                PardotErrorCode.MISSING_HEADER, "Pardot-Business-Unit-Id header not found on request."
            )
        unit = unit.strip()
        if len(unit) != 18 or not unit.startswith("0Uv") or not unit.isalnum():
            raise _ApiError(
                PardotErrorCode.INVALID_HEADER, "Pardot-Business-Unit-Id header value is not a valid ID."
            )
        if unit != self.business_unit_id:
            raise _ApiError(PardotErrorCode.BUSINESS_UNIT_NOT_FOUND)

    def _admit(self) -> None:
        """Apply injected errors and limits, then take a concurrency slot (under the lock)."""
        if self._forced:
            raise _ApiError(self._forced.pop(0))
        self._roll_usage_day()
        if self._usage >= self.daily_limit:
            raise _ApiError(PardotErrorCode.DAILY_LIMIT)
        if self._in_flight >= self.max_concurrent:
            raise _ApiError(PardotErrorCode.CONCURRENT_LIMIT)
        self._usage += 1
        self._in_flight += 1

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _roll_usage_day(self) -> None:
        today = self.clock.now().astimezone(ZoneInfo(self.account_timezone or self.user_timezone)).date()
        if today != self._usage_day:
            self._usage_day, self._usage = today, 0

    def _route(self, request: Request) -> Response:
        path = request.path.rstrip("/")
        if path == EXPORTS_PATH:
            if request.method == "POST":
                return self._create(request)
            if request.method == "GET":
                return self._query(request)
            raise _ApiError(PardotErrorCode.INVALID_HTTP_METHOD)
        if not path.startswith(EXPORTS_PATH + "/"):
            raise _ApiError(PardotErrorCode.ENDPOINT_NOT_FOUND)
        parts = path[len(EXPORTS_PATH) + 1 :].split("/")
        if len(parts) == 1:
            action, method = "read", "GET"
        elif parts[1:] == ["do", "cancel"]:
            action, method = "cancel", "POST"
        elif len(parts) == 3 and parts[1] == "results":
            action, method = "download", "GET"
        else:
            raise _ApiError(PardotErrorCode.ENDPOINT_NOT_FOUND)
        if request.method != method:
            raise _ApiError(PardotErrorCode.INVALID_HTTP_METHOD)
        export_id = _int_or_none(parts[0])
        with self._lock:
            self._advance()
            export = self._exports.get(export_id) if export_id is not None else None
            if export is None:
                raise _ApiError(PardotErrorCode.RECORD_NOT_FOUND)
            if action == "read":
                return Response.json(200, self._read(export, request.origin))
            if action == "cancel":
                return self._cancel(export, request.origin)
            found = self._file_of(export, _int_or_none(parts[2]))
            if self.redirect_downloads:
                return self._redirect(export, found, request)
        return self._file_response(export, found)

    # ---- create / read / query / cancel ---------------------------------------------------------

    def _create(self, request: Request) -> Response:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise _ApiError(PardotErrorCode.UNSUPPORTED_CONTENT_TYPE)
        if not request.body.strip():
            raise _ApiError(PardotErrorCode.EMPTY_BODY)
        try:
            body = request.json()
        except ValueError as exc:
            raise _ApiError(PardotErrorCode.INVALID_JSON) from exc
        if not isinstance(body, dict):
            raise _ApiError(PardotErrorCode.INVALID_JSON)
        procedure = body.get("procedure")
        if procedure is None:
            raise _ApiError(PardotErrorCode.MISSING_PROPERTY, "procedure")
        if not isinstance(procedure, dict):
            raise _ApiError(PardotErrorCode.INVALID_PROPERTY, "procedure must be an object.")
        with self._lock:
            now = self.clock.now()
            try:
                validated = validate_export_request(
                    body.get("object"),
                    body.get("fields"),
                    procedure.get("name"),
                    procedure.get("arguments"),
                    now=now,
                    tz=ZoneInfo(self.user_timezone),
                    parse_date=parse_date_argument,
                    after_within_year_of_creation=self.after_within_year_of_creation,
                )
            except ExportRequestError as exc:
                raise _ApiError(exc.code, message=exc.message) from exc
            export = _Export(
                id=self._next_export_id,
                request=validated,
                timezone=self.user_timezone,
                created_at=now,
                updated_at=now,
                pickup=timedelta(seconds=self.pickup_seconds),
                processing=timedelta(seconds=self.processing_seconds),
            )
            self._next_export_id += 1
            self._exports[export.id] = export
            self._queue.append(export.id)
            self._advance()
            return Response.json(200, self._representation(export, request.origin))

    def _query(self, request: Request) -> Response:
        params = request.query
        zone = ZoneInfo(self.user_timezone)
        sort_by = params.get("sort_by", "id")
        if sort_by not in ("id", "created_at", "updated_at"):
            raise _ApiError(PardotErrorCode.INVALID_SORT_BY)
        sort_order = params.get("sort_order", "descending")
        if sort_order not in ("ascending", "descending"):
            raise _ApiError(PardotErrorCode.INVALID_SORT_ORDER)
        with self._lock:
            now = self.clock.now()
            self._advance()
            bounds: dict[str, datetime] = {}
            for name in ("created_after", "created_before", "updated_after", "updated_before"):
                if params.get(name):
                    try:
                        bounds[name] = parse_date_argument(params[name], now=now, tz=zone)
                    except ValueError as exc:
                        raise _ApiError(PardotErrorCode.INVALID_QUERY_PARAMETERS, f"{name}: {exc}") from exc
            status = params.get("status")
            states = {s.value.lower(): s for s in ExportState}
            if status and status.lower() not in states:
                raise _ApiError(PardotErrorCode.INVALID_QUERY_PARAMETERS, f"status {status!r} is not valid")
            object_filter = None
            if params.get("object"):
                found = lookup_object(params["object"])
                if found is None:
                    raise _ApiError(
                        PardotErrorCode.INVALID_QUERY_PARAMETERS, f"object {params['object']!r} is not valid"
                    )
                object_filter = found.name
            selected = []
            for export in self._exports.values():
                if status and export.state is not states[status.lower()]:
                    continue
                if object_filter and export.request.object.name != object_filter:
                    continue
                if not _between(export.created_at, bounds.get("created_after"), bounds.get("created_before")):
                    continue
                if not _between(export.updated_at, bounds.get("updated_after"), bounds.get("updated_before")):
                    continue
                selected.append(export)
            selected.sort(key=lambda e: _sort_key(e, sort_by), reverse=sort_order == "descending")
            items = [self._representation(e, request.origin, with_refs=False) for e in selected]
        result: dict[str, Any] = {"total_results": len(items)}
        if len(items) == 1:
            result["export"] = items[0]
        elif items:
            result["export"] = items
        return Response.json(200, {"result": result})

    def _cancel(self, export: _Export, origin: str) -> Response:
        if export.state in (ExportState.COMPLETE, ExportState.FAILED):
            raise _ApiError(
                PardotErrorCode.INVALID_EXPORT_STATE, f"export {export.id} is {export.state.value}."
            )
        if export.state is not ExportState.CANCELED:
            now = self.clock.now()
            if self._processing == export.id:
                self._processing = None
                self._free_at = now
            if export.id in self._queue:
                self._queue.remove(export.id)
            export.state, export.updated_at, export.ended_at = ExportState.CANCELED, now, now
        return Response.json(200, self._representation(export, origin, with_refs=False))

    def _representation(self, export: _Export, origin: str, *, with_refs: bool = True) -> dict[str, Any]:
        zone = ZoneInfo(self.user_timezone)
        body: dict[str, Any] = {"id": export.id, "state": export.state.value, "isExpired": export.expired}
        if with_refs and export.state is ExportState.COMPLETE and not export.expired and export.files:
            by_id = {f.file_id: f for f in export.files}
            urls = [
                f"{origin}{EXPORTS_PATH}/{export.id}/results/{by_id[i].file_id}" for i in export.ref_order
            ]
            body["resultRefs"] = urls[0] if len(urls) == 1 else urls
        body["createdAt"] = export.created_at.astimezone(zone).isoformat(timespec="seconds")
        body["updatedAt"] = export.updated_at.astimezone(zone).isoformat(timespec="seconds")
        return body

    # ---- processing -----------------------------------------------------------------------------

    def _advance(self) -> None:
        """Bring every export up to the clock's current time (under the lock)."""
        now = self.clock.now()
        while True:
            if self._processing is not None:
                export = self._exports[self._processing]
                assert export.finish_at is not None
                deadline = export.created_at + RETENTION
                end = min(export.finish_at, deadline)
                if end > now:
                    break
                self._processing, self._free_at = None, end
                if export.finish_at > deadline:
                    self._end(export, ExportState.CANCELED, deadline, expired=True)
                else:
                    self._finish(export, end)
                continue
            if not self._queue:
                break
            export = self._exports[self._queue[0]]
            deadline = export.created_at + RETENTION
            start = max(export.created_at + export.pickup, self._free_at)
            if start >= deadline:
                if deadline > now:
                    break
                self._queue.pop(0)
                self._end(export, ExportState.CANCELED, deadline, expired=True)
                continue
            if start > now:
                break
            self._queue.pop(0)
            export.state, export.updated_at = ExportState.PROCESSING, start
            export.finish_at = start + export.processing
            self._processing = export.id
        for export in self._exports.values():
            if export.ended_at is not None and not export.expired and export.ended_at + RETENTION <= now:
                export.expired, export.updated_at = True, export.ended_at + RETENTION

    def _end(self, export: _Export, state: ExportState, at: datetime, *, expired: bool = False) -> None:
        export.state, export.updated_at, export.ended_at, export.expired = state, at, at, expired

    def _finish(self, export: _Export, at: datetime) -> None:
        if self._fail_next > 0:
            self._fail_next -= 1
            self._end(export, ExportState.FAILED, at)
            return
        records = self._select(export.request, export.created_at)
        rng = random.Random(f"{self.seed}:{export.id}")
        rng.shuffle(records)
        sizes = _file_sizes(len(records), self.rows_per_file, self.file_count, rng)
        offset = 0
        for size in sizes:
            export.files.append(_File(self._next_file_id, records[offset : offset + size]))
            self._next_file_id += 1
            offset += size
        export.ref_order = [f.file_id for f in export.files]
        rng.shuffle(export.ref_order)
        self._end(export, ExportState.COMPLETE, at)

    # ---- downloads ------------------------------------------------------------------------------

    def _redirect(self, export: _Export, found: _File, request: Request) -> Response:
        """302 to a signed storage URL on another host name of this server."""
        expires = int(self.clock.now().timestamp() + self.signed_url_ttl)
        path = f"{STORAGE_PREFIX}{export.id}/{found.file_id}.csv"
        query = urlencode({"expires": expires, "sig": self._sign(path, expires)})
        location = f"{request.storage_origin}{quote(path)}?{query}"
        return Response(302, {"Location": location, "Content-Type": "text/plain"}, b"")

    def _read(self, export: _Export, origin: str) -> dict[str, Any]:
        """What a read of ``export`` answers (its representation, unless it is going back)."""
        phase = self._going_back.get(export.id)
        if phase is None or export.state is not ExportState.COMPLETE or export.expired:
            return self._representation(export, origin)
        if phase == "armed":
            self._going_back[export.id] = "back"
            return self._representation(export, origin)
        del self._going_back[export.id]
        return {
            **self._representation(export, origin, with_refs=False),
            "state": ExportState.PROCESSING.value,
        }

    def _file_of(self, export: _Export, file_id: int | None) -> _File:
        if self._going_back.get(export.id) == "back":
            raise _ApiError(
                PardotErrorCode.INVALID_EXPORT_STATE, f"the export is {ExportState.PROCESSING.value}."
            )
        if export.state is not ExportState.COMPLETE or export.expired:
            reason = "the export has expired" if export.expired else f"the export is {export.state.value}"
            raise _ApiError(PardotErrorCode.INVALID_EXPORT_STATE, f"{reason}.")
        for candidate in export.files:
            if candidate.file_id == file_id:
                return candidate
        raise _ApiError(PardotErrorCode.RECORD_NOT_FOUND)

    def _file_response(self, export: _Export, file: _File) -> Response:
        request = export.request
        zone = ZoneInfo(export.timezone)
        terminator = self.line_terminator
        if file.length is None:
            file.length = sum(len(c) for c in self._csv_chunks(request, file.records, zone, terminator))
        length = file.length
        truncate = max(0, min(length - 1, length // 2)) if self.truncate_downloads else None
        return Response(
            200,
            {
                "Content-Type": "text/csv; charset=utf-8",
                "Content-Disposition": f'attachment; filename="export-{export.id}-{file.file_id}.csv"',
            },
            self._csv_chunks(request, file.records, zone, terminator),
            content_length=length,
            truncate_after=truncate,
            framing=self.download_framing,
        )

    def _sign(self, path: str, expires: int) -> str:
        mac = hmac.new(self._signing_key, f"{path}\n{expires}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")

    def _storage(self, request: Request) -> Response:
        for header in ("Authorization", "Pardot-Business-Unit-Id"):
            if header in request.headers:
                return _s3_error(
                    400,
                    "InvalidArgument",
                    "Only one auth mechanism allowed; only the signature query string parameters should be "
                    f"specified (unexpected {header} header)",
                )
        if request.method not in ("GET", "HEAD"):
            return _s3_error(
                405, "MethodNotAllowed", "The specified method is not allowed against this resource."
            )
        expires = _int_or_none(request.query.get("expires", ""))
        signature = request.query.get("sig", "")
        if expires is None or not hmac.compare_digest(signature, self._sign(request.path, expires)):
            return _s3_error(
                403, "SignatureDoesNotMatch", "The request signature we calculated does not match."
            )
        if self.clock.now().timestamp() > expires:
            return _s3_error(403, "AccessDenied", "Request has expired")
        name = request.path[len(STORAGE_PREFIX) :]
        export_part, _, file_part = name.partition("/")
        with self._lock:
            self._advance()
            export = self._exports.get(_int_or_none(export_part) or -1)
            try:
                if export is None:
                    raise _ApiError(PardotErrorCode.RECORD_NOT_FOUND)
                found = self._file_of(export, _int_or_none(file_part.removesuffix(".csv")))
            except _ApiError:
                return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
        return self._file_response(export, found)

    # ---- synthetic data -------------------------------------------------------------------------

    def _spacing(self, object_name: str) -> int:
        spacing = self.record_spacing_seconds
        value = spacing.get(object_name, 600) if isinstance(spacing, Mapping) else spacing
        return max(1, int(value))

    def _record(self, object_name: str, slot: int, spacing: int) -> _Record | None:
        digest = hashlib.blake2b(
            f"{object_name}:{slot}".encode(), key=str(self.seed).encode()[:64], digest_size=32
        ).digest()

        def u32(offset: int) -> int:
            return int.from_bytes(digest[offset : offset + 4], "big")

        if u32(0) / 2**32 >= self.record_fill:
            return None
        created = EPOCH0 + slot * spacing + u32(4) % spacing
        updated = created if digest[8] < 77 else created + 1 + u32(9) % _LAGS["updatedAt"][1]
        activity = created - u32(13) % (-_LAGS["activityDate"][0] + 1)
        prospect_updated = created + u32(17) % (_LAGS["prospect.updatedAt"][1] + 1)
        supports_deleted = object_name not in ("externalActivity", "visitorActivity")
        return _Record(
            id=_OBJECT_ID_BASE[object_name] + slot * 8 + digest[21] % 8,
            created=created,
            updated=updated,
            activity=activity,
            prospect_updated=prospect_updated,
            is_deleted=supports_deleted and digest[22] < 26,
            prospect_deleted=digest[23] < 38,
            has_prospect=object_name in ("externalActivity", "listMembership", "prospect")
            or digest[24] < 166,
            va_type=_VA_TYPES[digest[25] % len(_VA_TYPES)],
            rng_seed=int.from_bytes(digest[26:32], "big"),
        )

    def _select(self, request: ExportRequest, created_at: datetime) -> list[_Record]:
        """Records an export of ``request`` created at ``created_at`` contains, ordered by id."""
        closed = self.bounds == "inclusive"
        return self._scan(
            request.object.name,
            request.procedure,
            request.extra,
            request.after.timestamp(),
            request.window_end.timestamp(),
            created_at.timestamp(),
            closed_low=closed,
            closed_high=closed,
        )

    def _scan(
        self,
        name: str,
        procedure: Procedure,
        extra: Mapping[str, ArgValue],
        low: float,
        high: float,
        cutoff: float,
        *,
        closed_low: bool,
        closed_high: bool,
    ) -> list[_Record]:
        """Records of ``name`` existing before ``cutoff`` (epoch seconds) whose ``procedure`` timestamp is
        between ``low`` and ``high`` (each bound closed or open) and that pass ``extra``, ordered by id."""
        filter_on = procedure.filter_on
        lag_min, lag_max = _LAGS[filter_on]
        spacing = self._spacing(name)
        first = max(0, math.floor((low - lag_max - EPOCH0) / spacing))
        last = math.floor((min(high - lag_min, cutoff) - EPOCH0) / spacing)
        deleted = extra.get("deleted")
        prospect_deleted = extra.get("prospect_deleted")
        types = extra.get("type")
        prospect_only = extra.get("prospect_only") is True
        by_prospect = filter_on == "prospect.updatedAt"
        selected: list[_Record] = []
        for slot in range(first, last + 1):
            rec = self._record(name, slot, spacing)
            if rec is None or rec.created >= cutoff:
                continue
            stamp = rec.timestamp(filter_on)
            if stamp >= cutoff:
                continue
            if not (stamp >= low if closed_low else stamp > low):
                continue
            if not (stamp <= high if closed_high else stamp < high):
                continue
            if deleted is not None and not _tri_state_match(deleted, rec.is_deleted):
                continue
            if by_prospect and (
                not rec.has_prospect or not _tri_state_match(prospect_deleted, rec.prospect_deleted)
            ):
                continue
            if prospect_only and not rec.has_prospect:
                continue
            if isinstance(types, tuple) and rec.va_type not in types:
                continue
            selected.append(rec)
        return selected

    @staticmethod
    def _values(obj: PardotObject, rec: _Record) -> dict[str, Any]:
        """Every field value of a record (typed; DateTime values as epoch seconds)."""
        rng = random.Random(rec.rng_seed)
        first, last = rng.randrange(len(_FIRST)), rng.randrange(len(_LAST))
        fixed: dict[str, Any] = {
            "id": rec.id,
            "createdAt": rec.created,
            "updatedAt": rec.updated,
            "activityDate": rec.activity,
            "isDeleted": rec.is_deleted,
            "firstName": _FIRST[first],
            "lastName": _LAST[last],
            "email": f"{_ASCII[first]}.{_ASCII_LAST[last]}{rec.id % 1000}@example.com",
        }
        values: dict[str, Any] = {}
        for name, ftype in obj.fields.items():
            draw = rng.random()
            values[name] = fixed[name] if name in fixed else _value(obj.name, name, ftype, rec, rng, draw)
        return values

    def _typed_row(self, request: _Columns, rec: _Record, zone: ZoneInfo) -> dict[str, Any]:
        values = self._values(request.object, rec)
        row: dict[str, Any] = {}
        for name in request.fields:
            value = values[name]
            if request.object.fields[name] is FieldType.DATETIME and value is not None:
                value = datetime.fromtimestamp(value, zone)
            row[name] = value
        return row

    def _parsed_row(self, request: _Columns, rec: _Record, zone: ZoneInfo) -> dict[str, str]:
        values = self._values(request.object, rec)
        return {
            name: _cell(request.object.fields[name], values[name], zone, quoted=False)
            for name in request.fields
        }

    def _csv_chunks(
        self, request: ExportRequest, records: list[_Record], zone: ZoneInfo, terminator: str
    ) -> Iterator[bytes]:
        """The CSV file for ``records``, in chunks of about 64 KiB."""
        types = [request.object.fields[name] for name in request.fields]
        buffer = [",".join(request.fields) + terminator]
        size = len(buffer[0])
        for rec in records:
            values = self._values(request.object, rec)
            line = ",".join(_cell(t, values[n], zone) for n, t in zip(request.fields, types, strict=True))
            buffer.append(line + terminator)
            size += len(line)
            if size >= 65536:
                yield "".join(buffer).encode("utf-8")
                buffer, size = [], 0
        if buffer:
            yield "".join(buffer).encode("utf-8")

    def _validate_for_expectation(
        self,
        object_name: str,
        procedure: str,
        arguments: Mapping[str, Any],
        fields: Sequence[str] | None,
        created_at: datetime | None,
        zone: ZoneInfo,
    ) -> tuple[ExportRequest, datetime]:
        created = created_at or self.clock.now()
        request = validate_export_request(
            object_name,
            list(fields) if fields is not None else None,
            procedure,
            dict(arguments),
            now=created,
            tz=zone,
            parse_date=parse_date_argument,
            after_within_year_of_creation=self.after_within_year_of_creation,
        )
        return request, created


class _Once:
    """Call a function at most once (a concurrency slot must be released exactly once)."""

    def __init__(self, func: Any) -> None:
        self._func = func
        self._lock = threading.Lock()
        self._done = False

    def __call__(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        self._func()


def _value(
    object_name: str, name: str, ftype: FieldType, rec: _Record, rng: random.Random, draw: float
) -> Any:
    """A synthetic value for a field without a record-level value (``draw`` decides nulls and pools)."""
    if name == "prospectId":
        return 30_000_000 + rng.randrange(10**7) if rec.has_prospect else None
    if object_name == "visitorActivity" and name == "type":
        return rec.va_type
    if object_name == "visitorActivity" and name == "typeName":
        return VISITOR_ACTIVITY_TYPES[rec.va_type]
    if object_name == "externalActivity" and name == "type":
        return _EXTERNAL_TYPES[rng.randrange(len(_EXTERNAL_TYPES))]
    if name == "extension":
        return _EXTENSIONS[rng.randrange(len(_EXTENSIONS))]
    if name in _SF_PREFIX or name == "salesforceId":
        if draw < 0.25 and name not in ("extensionSalesforceId", "typeSalesforceId"):
            return None
        body = "".join(_BASE62[rng.randrange(62)] for _ in range(12))
        return f"{_SF_PREFIX.get(name, '00Q')}8b{body}AAA"[:18]
    if ftype is FieldType.INTEGER:
        if name in ("score", "pageViewCount"):
            return rng.randrange(0, 500)
        return None if draw < 0.3 else 1_000 + rng.randrange(10**7)
    if ftype is FieldType.BOOLEAN:
        return draw < 0.2
    if ftype is FieldType.DATETIME:
        return None if draw < 0.4 else rec.created - rng.randrange(90 * 86400)
    if ftype is FieldType.DATE:
        return (
            None
            if draw < 0.4
            else datetime.fromtimestamp(rec.created - rng.randrange(90 * 86400), UTC).date()
        )
    if draw < 0.12:
        return None
    if draw < 0.45:
        return _AWKWARD[rng.randrange(len(_AWKWARD))]
    return f"{_WORDS[rng.randrange(len(_WORDS))]} {name} {rng.randrange(1000)}"


def _cell(ftype: FieldType, value: Any, zone: ZoneInfo, *, quoted: bool = True) -> str:
    """One CSV cell as the export writes it (``quoted=False``: as a CSV reader returns it)."""
    if value is None:
        return ""
    if ftype is FieldType.STRING:
        text = str(value)
        if text[:1] in ("=", "+", "@"):
            text = "\\" + text
        return '"' + text.replace('"', '""') + '"' if quoted else text
    if ftype is FieldType.BOOLEAN:
        return "true" if value else "false"
    if ftype is FieldType.DATETIME:
        return datetime.fromtimestamp(int(value), zone).strftime("%Y-%m-%d %H:%M:%S")
    if ftype is FieldType.DATE:
        return value.isoformat() if isinstance(value, date) else str(value)
    return str(int(value))


def _sort_key(export: _Export, sort_by: str) -> tuple[float, int]:
    if sort_by == "created_at":
        return export.created_at.timestamp(), export.id
    if sort_by == "updated_at":
        return export.updated_at.timestamp(), export.id
    return float(export.id), export.id


def _tri_state_match(wanted: object, flag: bool) -> bool:
    return wanted == "all" or (wanted == "true") is flag


def _between(value: datetime, after: datetime | None, before: datetime | None) -> bool:
    return (after is None or value > after) and (before is None or value < before)


def _file_sizes(total: int, rows_per_file: int, file_count: int | None, rng: random.Random) -> list[int]:
    """How many rows go to each file: exactly ``file_count`` files, or files of varying size."""
    if total == 0:
        return []
    if file_count is not None:
        count = max(1, min(file_count, total))
        return [total // count + (1 if i < total % count else 0) for i in range(count)]
    per_file = max(1, rows_per_file)
    sizes: list[int] = []
    remaining = total
    while remaining > 0:
        size = min(remaining, rng.randint(max(1, (per_file + 1) // 2), per_file))
        sizes.append(size)
        remaining -= size
    return sizes


def _int_or_none(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _oauth_error(error: str, description: str) -> Response:
    return Response.json(400, {"error": error, "error_description": description})


def _s3_error(status: int, code: str, message: str) -> Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{secrets.token_hex(8).upper()}</RequestId></Error>"
    )
    return Response.text(status, body, "application/xml")
