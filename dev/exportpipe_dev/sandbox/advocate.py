"""Emulator of the impact.com Advocate (formerly SaaSquatch) Export API and its signed export webhooks.

Serve it with :class:`~exportpipe_dev.sandbox.base.SandboxServer`; the origin stands in for
``https://app.referralsaasquatch.com``. Endpoints (``{tenant}`` is the tenant alias of the credentials):

- ``POST /api/v1/{tenant}/export`` creates an export (201, the Export object);
- ``GET /api/v1/{tenant}/export/{exportId}`` looks one up;
- ``GET /api/v1/{tenant}/export/history/list?limit=10&offset=0`` lists them (``data``, ``count``,
  ``totalCount``);
- ``GET /api/v1/{tenant}/export/{exportId}/download`` answers 303 to a signed storage URL;
- ``POST|GET /api/v1/{tenant}/subscription``, ``DELETE /api/v1/{tenant}/subscription/{url}`` and
  ``POST /api/v1/{tenant}/subscription/{url}/test`` manage webhook subscriptions;
- ``GET /.well-known/jwks.json`` is the JSON Web Key Set the webhook signatures verify against;
- ``GET /tenant-files.ssqt.io/exports/{tenant}/{exportId}.{csv|xlsx}?X-Goog-...`` is the signed storage
  URL (served on the other loopback host name, see Downloads).

Documented behaviour is followed as the reference (``source-apis.md`` section 1) gives it: HTTP Basic with
the API key as the password and no username, the tenant alias as a path segment, the
``{statusCode, message, apiErrorCode, rsCode}`` error body, 401 for a bad key and 404 for an unknown tenant
or export, the ExportStub (six types, ``CSV``/``XLSX``, ``name``, ``requester`` defaulting to ``"API"``,
``params`` AND-ed), the Export object (``id``, ``status``, ``dateCreated``/``dateCompleted``/
``dateExpires`` in epoch ms, ``mailtoEmail``), ``PENDING`` → ``COMPLETED`` | ``ABORTED``, later
``EXPIRED``, the 303 download, the list paging, the subscription endpoints ("duplicate endpoint urls
will simply result in one subscription"), the webhook envelope (``id``, ``type``, ``tenantAlias``,
``live``, ``created``, ``data``) with the export events' ``outputFormat`` where REST says ``format``,
delivery retried after any answer other than 200, and both signature headers.

Choices made where the public record is silent or contradictory (reference [U] items):

Credentials and paths
  - ``credentials()`` is ``{"tenant_alias", "api_key"}``: a test tenant (``test_`` prefix, so webhooks
    carry ``"live": false``; ``live`` overrides) and a ``TEST_`` + 20 character key (the documented
    shape). The username of Basic auth is ignored; a key sent as the *username* is refused (401): the
    documented scheme puts it in the password.
  - The tenant is checked before the key (unknown tenant → 404 ``TENANT_NOT_FOUND`` whatever the key),
    as the vendor SDK's tests observe; then the key (401 ``UNAUTHORIZED``, ``WWW-Authenticate: Basic``).
    Then the route (404 ``NOT_FOUND``, 405 ``METHOD_NOT_ALLOWED`` with ``Allow``), then validation (400).
    A trailing slash is ignored; ``HEAD`` works where ``GET`` does. Plain HTTP (the API is HTTPS only).
  - No rate limits: the docs say API-key requests are not rate limited.

Creating exports
  - The body must be JSON (``Content-Type: application/json`` or ``+json``, else 415) holding an object.
    Every problem is reported at once: 400 ``VALIDATION_FAILED``, ``message`` plus ``validationErrors``
    (the documented 400 example's list). Enum values are case-sensitive (Jackson's default). Unknown
    properties (top level, ``params``, ``params.fields``, ``params.filter``) are errors; the read-only
    Export fields (``id``, ``status``, ``date*``, ``mailtoEmail``) are ignored so an Export can be sent
    back as is.
  - Timestamps (``*Since``/``*Before``, ``at``, filter dates) accept epoch-ms integers, integral numbers,
    digit strings and ISO-8601 strings (with ``Z`` or an offset; naive and date-only mean UTC): the
    Singer tap sends ISO strings and ran in production. Responses echo them as epoch ms.
  - ``*Since`` is inclusive, ``*Before`` exclusive (the platform's GraphQL filters are ``_gte``/``_lt``).
    ``created*`` is the record's creation; ``updated*`` needs a change after creation (never-changed
    records have no update and never match); ``createdOrUpdated*`` is the latest of the two, so
    ``[since, before)`` windows on it are contiguous for incremental loads.
  - **Filters that do not apply to the type are ignored** (accepted, echoed, without effect), not
    rejected: the Singer tap sends ``createdOrUpdatedSince`` with ``REWARD_BALANCE``, which the spec says
    it does not work with, and those syncs ran for years. The applicability matrix is the spec's:
    ``created*`` for all but ``REWARD``; ``updated*``, ``createdOrUpdated*`` and ``programId`` for
    ``USER``, ``USER_REFERRAL``, ``REFERRAL``; ``filter`` and ``at`` for ``REWARD``; the ``fields`` flags
    for the type each names. An ignored ``filter`` is only checked to be an object; ignored timestamps,
    ``programId`` and ``fields`` are still validated, as they are echoed.
  - ``programId`` ("the program that each user's share links and referral code should be populated
    from"): for ``USER``/``USER_REFERRAL`` it picks the program of the ``referralCode`` and share link
    columns (default ``referral-program``; a program the tenant lacks leaves them empty); for ``REFERRAL``,
    whose rows have no share links, it keeps that program's referrals.
  - ``filter`` is GraphQL ``RewardFilterInput`` as the platform's schema defines it (``AND``/``OR``,
    ``id_eq``/``_in``, ``type_*``, ``unit_*``, ``date*_gte``/``_lt``/``_interval``/``_exists``,
    ``rewardSource_*``, ``userId_eq``, ``accountId_eq``, ``programId_*``, ``programRewardKey_*``,
    ``globalRewardKey_*``, ``referralId_eq``, ``statuses_eq``/``_ne``/``_in``/``_all``/``_nin`` with
    ``{status, at}``); ``*_timeframe`` (relative timeframes) is refused as not emulated, and
    ``_interval`` takes ``<instant>/<instant>`` only. ``at`` (clamped to the export's creation) gives the
    statuses, redeemed credit and filter values at that instant and leaves out rewards created after it.
  - ``name`` defaults to null; ``mailtoEmail`` is always null (no documented way to set it).

Lifecycle (all on the sandbox clock)
  - An export is PENDING for ``processing_seconds``, then COMPLETED (``dateCompleted``; ``dateExpires`` =
    completion + ``expiry_days``, 28 by default: the current spec's example; the webhook example's is 35),
    then EXPIRED at ``dateExpires`` (dates kept). ``fail_next(n)``: the next ``n`` exports end ABORTED at
    that instant (``dateCompleted``/``dateExpires`` stay null; an aborted export never expires).
    ``hang_next(n)``: the next ``n`` stay PENDING for ever. Exports run independently (no queue).
  - An export holds the records as they were at its ``dateCreated``; the data never changes afterwards.
  - The list is newest first (``dateCreated``, then id); ``limit`` (default 10) and ``offset`` (default 0)
    must be non-negative integers (else 400), no upper bound; ``count`` is the page's size.
  - Ids are 24-hex ObjectIds (creation second + deterministic bytes from ``seed``), as in every example.

Downloads
  - PENDING or ABORTED: 400 ``EXPORT_NOT_COMPLETED``; EXPIRED: 404 ``EXPORT_EXPIRED`` (the spec only
    says the status must be COMPLETED; these stay within the documented status codes).
  - COMPLETED: 303, ``Location: http://localhost:<port>/tenant-files.ssqt.io/exports/<tenant>/<id>.csv``
    (``127.0.0.1`` when the client used ``localhost``; ``.xlsx`` for XLSX), a GCS V4-style signed URL
    (``X-Goog-Algorithm``, ``-Credential``, ``-Date``, ``-Expires`` = ``signed_url_ttl`` (900 s, "a short
    period"), ``-SignedHeaders``, ``-Signature``). Storage needs no credentials and refuses any
    ``Authorization`` header (400 ``InvalidArgument``), so credentials never reach it; it answers GCS's
    XML errors: 403 ``SignatureDoesNotMatch``, 400 ``ExpiredToken`` after the URL's lifetime, 404
    ``NoSuchKey`` once the export expired, 405 for methods other than GET/HEAD.
  - ``truncate_downloads``: the full Content-Length is announced, half the body sent, the connection
    closed. ``fail_requests(status, times, path_prefix)``: the next matching requests answer that status
    with an HTML body before any other check (a load balancer's error page).

Files
  - CSV: UTF-8 without BOM, a header row, RFC 4180 quoting (minimal), CRLF (``csv_line_terminator``),
    served as ``text/csv``, streamed (its length computed once by a first pass). Dates are epoch-ms
    integers and amounts integers (the tap's conversions), booleans ``true``/``false``, null is empty.
  - XLSX ("zipped XLSX" read as the .xlsx package itself, which is a zip): one worksheet named after the
    type, a header row, inline strings (carriage returns as ``&#13;`` so they survive parsing), numbers
    for integers, ``t="b"`` booleans, no cell for null; built with the standard library's ``zipfile``.
  - Columns (``*_COLUMNS``): ``USER`` and ``REFERRAL`` start with the tap's schema columns in its order;
    ``REWARD_BALANCE`` is exactly the tap's. The rest are chosen: ``USER`` adds ``countryCode``,
    ``referralCode``, ``dateModified`` (+ ``referralCount``, ``convertedReferralCount``,
    ``rewardCount`` with ``includeUserStatsFields``); ``USER_REFERRAL`` is one row per user with the user
    columns and the referral that referred them; ``USER_REWARD_BALANCE`` one row per user with one
    column per balance; ``REWARD_BALANCE`` one row per user and (type, unit) the user has rewards in;
    ``REWARD`` flattens the schema's ``FlatReward`` (+ ``user.*`` and ``referral.*`` columns with
    ``includeUserFields``/``includeReferralFields``); ``statuses`` holds one status.
  - Data: a deterministic function of ``seed``, the tenant alias, ``data_start`` and ``users_per_day``
    (about that many sign-ups a UTC day, ±50 %), cached per combination: users in two programs, 40 %
    of them referred by an earlier user; referrals convert, are moderated, paid and ended over weeks;
    conversions give both sides a reward, some users get manual ones; rewards are scheduled, given,
    redeemed (fully or partly), cancelled or expire. Values include commas, quotes, CR/LF, leading
    ``=``/``@``/``+``, non-ASCII, surrounding spaces and empty strings. :meth:`AdvocateSandbox.expected_rows`
    computes what an export's file holds.

Webhooks
  - Subscriptions by API or with :meth:`AdvocateSandbox.subscribe`. Create answers 201 without a body;
    ``endpointUrl`` must be an absolute http(s) URL; a duplicate URL replaces the name. ``webhookTypes``
    may be given on create (default ``["*"]``) and restricts the event types sent. The ``{url}`` path
    segment is URL-decoded (an unencoded URL is accepted too); an unknown one is 404.
  - Events: ``export.created`` when an export is created, ``export.completed`` when it completes (not when
    it is ABORTED or EXPIRED: no such events are documented), ``test`` from the test endpoint (data
    ``{endpointUrl, name}``). ``created`` is the export's ``dateCreated``/``dateCompleted``. ``data`` is
    ``{id, name, requester, status, dateCreated, dateExpires, dateCompleted, type, outputFormat, params}``
    as in the documented examples; ``params`` always holds the six date filters (null when unset) plus
    ``programId``/``filter``/``at``/``fields`` when given. Bodies are compact JSON (UTF-8); subscriptions
    made later get no earlier events.
  - Each attempt is a POST with ``Content-Type: application/json``, ``User-Agent: SaaSquatch-Webhooks``,
    ``X-Hook-JWS-RFC-7797`` and ``X-Hook-Signature``, signed at the time of the attempt (so a redelivery
    after a key rotation carries the new ``kid``). Only 200 is a success (the docs: "a status code other
    than 200" fails; 201/204 and redirects fail too), as are timeouts (``webhook_timeout_seconds``) and
    refused connections. Failed attempts are repeated every ``webhook_retry_seconds`` of *real* time (the
    documented hour, compressed; 1 s by default) up to ``webhook_max_attempts`` (72) attempts in all.
  - ``duplicate_deliveries``: every successful delivery is sent once more (same body and event id).
    ``out_of_order_deliveries``: due deliveries are held until at least two are waiting (or the oldest
    waited ``reorder_hold_seconds``), then sent newest event first. :attr:`AdvocateSandbox.webhook_log`
    records every attempt.
  - ``X-Hook-JWS-RFC-7797`` is ``<header>..<signature>``: RS256 over ``<header>.<base64url(body)>``, the
    header ``{"alg":"RS256","typ":"JWT","kid":...}`` as in the vendor's fixtures (no ``b64``/``crit``:
    despite the name, the verifier inserts the base64url body between the dots, as the vendor's Java and
    Node code do). The ``kid`` is the standard base64 of the SHA-1 of the public key (the shape of the
    fixtures' kid); keys are 2048-bit RSA made at first use (not derived from ``seed``).
    :meth:`AdvocateSandbox.rotate_signing_key` starts signing with a new key and retires the old one
    from the JWKS (or keeps it until :meth:`AdvocateSandbox.retire_key`).
  - ``X-Hook-Signature`` is HMAC-SHA1 of the body keyed by the API key, standard base64 (the encoding is
    undocumented; ``hook_signature_encoding="hex"`` switches).

Not emulated: the other Advocate endpoints, GraphQL, relative timeframes, other event types, the portal's
delivery logs, HTTPS, tenant-level permissions.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import http.client
import io
import json
import random
import re
import secrets
import string
import sys
import threading
import time
import traceback
import unicodedata
import uuid
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar, Literal
from urllib.parse import quote, unquote, urlencode, urlsplit
from xml.sax.saxutils import escape

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from exportpipe_dev.sandbox.base import Clock, Request, Response, Sandbox

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_TENANT_ALIAS",
    "EXPORT_TYPES",
    "REFERRAL_COLUMNS",
    "REWARD_BALANCE_COLUMNS",
    "REWARD_COLUMNS",
    "USER_COLUMNS",
    "USER_REFERRAL_COLUMNS",
    "USER_REWARD_BALANCE_COLUMNS",
    "AdvocateSandbox",
    "ExportStatus",
    "Subscription",
    "WebhookAttempt",
    "columns_for",
]

DEFAULT_TENANT_ALIAS = "test_a2k9x7qm4vbze"
DEFAULT_API_KEY = "TEST_Q7N2K9XW4M1RB8ZC5TJ3"
API_PREFIX = "/api/v1/"
JWKS_PATH = "/.well-known/jwks.json"
STORAGE_BUCKET = "tenant-files.ssqt.io"
STORAGE_PREFIX = f"/{STORAGE_BUCKET}/exports/"
PROGRAMS = ("referral-program", "partner-program")
DEFAULT_PROGRAM = PROGRAMS[0]

EXPORT_TYPES = ("USER", "USER_REFERRAL", "REFERRAL", "USER_REWARD_BALANCE", "REWARD_BALANCE", "REWARD")
EXPORT_FORMATS = ("CSV", "XLSX")
TIMESTAMP_PARAMS = (
    "createdSince",
    "createdBefore",
    "updatedSince",
    "updatedBefore",
    "createdOrUpdatedSince",
    "createdOrUpdatedBefore",
)
_PEOPLE = frozenset({"USER", "USER_REFERRAL", "REFERRAL"})
#: Which export types each parameter works with (the spec's text).
APPLIES_TO: Mapping[str, frozenset[str]] = {
    "createdSince": frozenset(EXPORT_TYPES) - {"REWARD"},
    "createdBefore": frozenset(EXPORT_TYPES) - {"REWARD"},
    "updatedSince": _PEOPLE,
    "updatedBefore": _PEOPLE,
    "createdOrUpdatedSince": _PEOPLE,
    "createdOrUpdatedBefore": _PEOPLE,
    "programId": _PEOPLE,
    "filter": frozenset({"REWARD"}),
    "at": frozenset({"REWARD"}),
}
_FIELD_FLAGS = {
    "includeUserStatsFields": "USER",
    "includeUserFields": "REWARD",
    "includeReferralFields": "REWARD",
}
_STUB_KEYS = frozenset({"type", "format", "name", "requester", "params"})
_READ_ONLY = frozenset({"id", "status", "dateCreated", "dateCompleted", "dateExpires", "mailtoEmail"})
_PARAM_KEYS = (*TIMESTAMP_PARAMS, "programId", "filter", "at", "fields")
_CONTENT_TYPES = {
    "CSV": "text/csv; charset=utf-8",
    "XLSX": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
_EXTENSIONS = {"CSV": "csv", "XLSX": "xlsx"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = 1000
_HOUR = 3_600_000
_DAY = 86_400_000
_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_SIGNER = "tenant-files@ssqt-sandbox.iam.gserviceaccount.com"
_DIGITS_RE = re.compile(r"-?\d+")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")

# ---- columns -----------------------------------------------------------------------------------------

USER_COLUMNS: tuple[str, ...] = (
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
    "countryCode",
    "referralCode",
    "dateModified",
)
USER_STATS_COLUMNS: tuple[str, ...] = ("referralCount", "convertedReferralCount", "rewardCount")
USER_REFERRAL_COLUMNS: tuple[str, ...] = (
    *USER_COLUMNS,
    "referredByReferralId",
    "referredByUserId",
    "referredByAccountId",
    "referredByProgramId",
    "referredByCode",
    "dateReferralStarted",
    "dateConverted",
    "referredModerationStatus",
)
REFERRAL_COLUMNS: tuple[str, ...] = (
    "id",
    "programId",
    "referredUser",
    "referredAccount",
    "referredReward",
    "referredModerationStatus",
    "referrerUser",
    "referrerAccount",
    "referrerReward",
    "referrerModerationStatus",
    "dateReferralStarted",
    "dateConverted",
    "dateReferralPaid",
    "dateReferralEnded",
    "dateModerated",
    "referralCodeUsed",
    "dateModified",
)
#: Balance columns of USER_REWARD_BALANCE: (reward type, unit, column).
BALANCES: tuple[tuple[str, str, str], ...] = (
    ("CREDIT", "POINT", "balanceCreditPoint"),
    ("CREDIT", "CASH/USD", "balanceCreditCashUsd"),
    ("PCT_DISCOUNT", "%", "balancePctDiscount"),
)
USER_REWARD_BALANCE_COLUMNS: tuple[str, ...] = (
    "id",
    "accountId",
    "email",
    "firstName",
    "lastName",
    "dateCreated",
    *(column for _, _, column in BALANCES),
)
REWARD_BALANCE_COLUMNS: tuple[str, ...] = ("userId", "accountId", "type", "amount", "unit")
REWARD_COLUMNS: tuple[str, ...] = (
    "id",
    "userId",
    "accountId",
    "programId",
    "programRewardKey",
    "type",
    "value",
    "unit",
    "name",
    "currency",
    "assignedCredit",
    "redeemedCredit",
    "statuses",
    "rewardSource",
    "referralId",
    "dateCreated",
    "dateScheduledFor",
    "dateGiven",
    "dateExpires",
    "dateCancelled",
    "dateRedeemed",
    "dateModified",
)
REWARD_USER_COLUMNS: tuple[str, ...] = ("user.email", "user.firstName", "user.lastName", "user.referralCode")
REWARD_REFERRAL_COLUMNS: tuple[str, ...] = (
    "referral.referrerUserId",
    "referral.referredUserId",
    "referral.dateReferralStarted",
    "referral.dateConverted",
)

Cell = str | int | bool | None
Row = dict[str, Cell]


def columns_for(export_type: str, fields: Mapping[str, bool] | None = None) -> tuple[str, ...]:
    """The columns of an export of ``export_type`` with the given ``params.fields`` flags, in file order."""
    flags = fields or {}
    if export_type == "USER":
        return USER_COLUMNS + (USER_STATS_COLUMNS if flags.get("includeUserStatsFields") else ())
    if export_type == "REWARD":
        return (
            REWARD_COLUMNS
            + (REWARD_USER_COLUMNS if flags.get("includeUserFields") else ())
            + (REWARD_REFERRAL_COLUMNS if flags.get("includeReferralFields") else ())
        )
    return {
        "USER_REFERRAL": USER_REFERRAL_COLUMNS,
        "REFERRAL": REFERRAL_COLUMNS,
        "USER_REWARD_BALANCE": USER_REWARD_BALANCE_COLUMNS,
        "REWARD_BALANCE": REWARD_BALANCE_COLUMNS,
    }[export_type]


class ExportStatus(StrEnum):
    """The ``status`` of an export."""

    PENDING = "PENDING"
    COMPLETED = "COMPLETED"
    ABORTED = "ABORTED"
    EXPIRED = "EXPIRED"


class _ApiError(Exception):
    """An Advocate error answer: ``{statusCode, message, apiErrorCode, rsCode}`` with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        *,
        errors: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.errors = list(errors)
        self.headers = dict(headers or {})

    def response(self) -> Response:
        body: dict[str, Any] = {
            "statusCode": self.status,
            "message": self.message,
            "apiErrorCode": self.code,
            "rsCode": None,
        }
        if self.errors:
            body["validationErrors"] = self.errors
        return Response.json(self.status, body, self.headers)


# ---- time --------------------------------------------------------------------------------------------


def _ms(instant: datetime) -> int:
    return (instant - _EPOCH) // timedelta(milliseconds=1)


def _instant(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _timestamp(value: Any) -> int | None:
    """Epoch ms from an integer, an integral number, a digit string or an ISO-8601 string; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if _DIGITS_RE.fullmatch(text):
        return int(text)
    try:
        if _DATE_RE.fullmatch(text):
            return _ms(datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC))
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return _ms(parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC))


def _visible(ms: int | None, t: int) -> int | None:
    """``ms`` if it happened by ``t``."""
    return ms if ms is not None and ms <= t else None


def _object_id(rng: random.Random, ms: int) -> str:
    """A 24-hex ObjectId: the second of ``ms`` then 8 deterministic bytes."""
    return f"{max(0, ms // 1000) & 0xFFFFFFFF:08x}{rng.getrandbits(64):016x}"


# ---- synthetic tenant data ---------------------------------------------------------------------------

_FIRST_NAMES = (
    ("Mike", 6),
    ("Ava", 6),
    ("Noah", 6),
    ("Priya", 5),
    ("Lars", 4),
    ("Olusegun", 3),
    ("Aiko", 3),
    ("Zoë", 3),
    ("José", 3),
    ("Chloé", 2),
    ("Anne-Marie", 2),
    ("Seán", 2),
    ("李", 1),
    ("+Plus", 1),
    ("", 1),
)
_LAST_NAMES = (
    ("Keenerson", 6),
    ("Smith", 6),
    ("Okafor", 4),
    ("Tanaka", 4),
    ("Müller", 3),
    ("O'Brien", 3),
    ("van der Berg", 3),
    ("Nguyễn", 2),
    ("García, Jr.", 2),
    ('"Bobby" Tables', 1),
    ("=SUM(A1:A9)", 1),
    ("@handle", 1),
    ("Smith\r\nJones", 1),
    (" Spaces ", 1),
    ("", 1),
)
_DOMAINS = ("example.com", "example.org", "mail.example.net", "EXAMPLE.co.uk")
_LOCALES = (
    ("en_US", "US", 8),
    ("fr_CA", "CA", 2),
    ("de_DE", "DE", 2),
    ("pt_BR", "BR", 1),
    ("ja_JP", "JP", 1),
)
_MEDIA = ("FACEBOOK", "TWITTER", "EMAIL", "LINKEDIN", "DIRECT", "SMS")


def _weighted(rng: random.Random, pool: Sequence[tuple[str, int]]) -> str:
    return rng.choices([value for value, _ in pool], weights=[weight for _, weight in pool])[0]


def _ascii_letters(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return "".join(ch for ch in folded.upper() if "A" <= ch <= "Z")


@dataclass(frozen=True)
class _Identity:
    """A user as created: who they are, when they signed up, their codes and share links."""

    user_id: str
    account_id: str
    created: int
    first_name: str
    last_name: str
    email: str
    image_url: str
    first_ip: str
    last_ip: str | None
    locale: str
    country: str
    codes: Mapping[str, str]
    links: Mapping[str, tuple[str, str, str, str, str]]
    modifications: tuple[int, ...]

    def updated(self, t: int) -> int | None:
        """The latest change after creation that happened by ``t``."""
        seen = [m for m in self.modifications if m <= t]
        return seen[-1] if seen else None


@dataclass(frozen=True)
class _Reward:
    id: str
    owner: _Identity
    program_id: str | None
    program_reward_key: str | None
    type: str
    value: int
    unit: str
    name: str
    currency: str | None
    created: int
    scheduled: int | None
    expires: int | None
    cancelled: int | None
    redemptions: tuple[tuple[int, int], ...]
    source: str
    referral_id: str | None

    @property
    def given(self) -> int:
        return self.scheduled if self.scheduled is not None else self.created

    def redeemed_credit(self, t: int) -> int:
        return sum(amount for at, amount in self.redemptions if at <= t)

    def date_redeemed(self, t: int) -> int | None:
        total = 0
        for at, amount in self.redemptions:
            total += amount
            if total >= self.value:
                return at if at <= t else None
        return None

    def status(self, t: int) -> str:
        if self.cancelled is not None and self.cancelled <= t:
            return "CANCELLED"
        if self.given > t:
            return "PENDING"
        if self.date_redeemed(t) is not None:
            return "REDEEMED"
        if self.expires is not None and self.expires <= t:
            return "EXPIRED"
        return "AVAILABLE"

    def available(self, t: int) -> int:
        if self.status(t) != "AVAILABLE":
            return 0
        return self.value - self.redeemed_credit(t) if self.type == "CREDIT" else self.value

    def modified(self, t: int) -> int:
        moments = [
            self.created,
            self.given,
            self.cancelled,
            self.expires,
            *(at for at, _ in self.redemptions),
        ]
        return max(m for m in moments if m is not None and m <= t)


@dataclass(frozen=True)
class _Referral:
    id: str
    program_id: str
    referrer: _Identity
    referred: _Identity
    started: int
    converted: int | None
    moderated: int | None
    referred_outcome: str
    referrer_outcome: str
    paid: int | None
    ended: int | None
    code_used: str
    medium: str
    referrer_reward: _Reward | None
    referred_reward: _Reward | None

    def updated(self, t: int) -> int | None:
        seen = [
            m for m in (self.converted, self.moderated, self.paid, self.ended) if m is not None and m <= t
        ]
        return max(seen) if seen else None


@dataclass(frozen=True)
class _User:
    identity: _Identity
    referral: _Referral | None  # the referral that referred this user
    manual_rewards: tuple[_Reward, ...]


class _Population:
    """Every record of one tenant's synthetic program, generated day by day (immutable once made)."""

    def __init__(self, seed: int, tenant: str, start_ms: int, users_per_day: float) -> None:
        self.base = f"advocate:{seed}:{tenant}"
        self.start_ms = start_ms
        self.users_per_day = users_per_day
        self._lock = threading.Lock()
        self._identity_days: dict[int, list[_Identity]] = {}
        self.days = 0
        self.users: list[_User] = []
        self.referrals: list[_Referral] = []
        self.rewards: list[_Reward] = []
        self.rewards_by_owner: dict[str, list[_Reward]] = {}
        self.referrals_by_referrer: dict[str, list[_Referral]] = {}
        self.referrals_by_id: dict[str, _Referral] = {}

    def ensure(self, t: int) -> None:
        """Generate every day up to the one holding ``t``."""
        last = (t - self.start_ms) // _DAY
        with self._lock:
            if self.days > last:
                return
            while self.days <= last:
                self._generate_day(self.days)
                self.days += 1
            # later conversions land among earlier days' records; new lists, so readers keep a stable one
            self.rewards = sorted(self.rewards, key=lambda r: (r.created, r.id))
            self.referrals = sorted(self.referrals, key=lambda r: (r.started, r.id))

    # identities depend on nothing but (day, index), so a referrer can be drawn from any earlier day
    def _identities(self, day: int) -> list[_Identity]:
        cached = self._identity_days.get(day)
        if cached is not None:
            return cached
        rng = random.Random(f"{self.base}:day:{day}")
        count = max(0, round(self.users_per_day * rng.uniform(0.5, 1.5)))
        start = self.start_ms + day * _DAY
        stamps = sorted(start + rng.randrange(_DAY) for _ in range(count))
        identities = [self._identity(day, index, stamp) for index, stamp in enumerate(stamps)]
        self._identity_days[day] = identities
        return identities

    def _identity(self, day: int, index: int, created: int) -> _Identity:
        rng = random.Random(f"{self.base}:user:{day}:{index}")
        user_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        account_id = user_id if rng.random() < 0.75 else f"acct-{rng.randrange(10**7):07d}"
        first, last = _weighted(rng, _FIRST_NAMES), _weighted(rng, _LAST_NAMES)
        local = (_ascii_letters(first) or "USER").lower()
        if rng.random() < 0.2:
            local += "+referral"
        email = (
            f"{local}.{(_ascii_letters(last) or 'X').lower()}{rng.randrange(1000)}@{rng.choice(_DOMAINS)}"
            if rng.random() < 0.95
            else ""
        )
        locale, country, _ = rng.choices(_LOCALES, weights=[w for *_, w in _LOCALES])[0]
        if rng.random() < 0.05:
            locale, country = "", ""
        image = (
            f"https://images.example.com/u/{rng.getrandbits(48):012x}.png?size=64,64"
            if rng.random() < 0.3
            else ""
        )
        first_ip = (
            f"{rng.choice((10, 198, 203))}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        )
        last_ip = f"203.0.113.{rng.randrange(1, 255)}" if rng.random() < 0.6 else None
        stem = (_ascii_letters(first) + _ascii_letters(last))[:12] or "USER"
        codes = {
            PROGRAMS[0]: f"{stem}{rng.randrange(100)}",
            PROGRAMS[1]: f"{stem[:6]}{rng.randrange(1000):03d}P",
        }
        links = {
            program: tuple(
                f"https://ssqt.co/{prefix}{''.join(rng.choice(_BASE62) for _ in range(5))}"
                for prefix in ("m", "f", "t", "e", "l")
            )
            for program in PROGRAMS
        }
        changes = sorted(
            created + rng.randrange(_HOUR, 90 * _DAY) for _ in range(rng.choice((0, 0, 0, 1, 1, 2, 3)))
        )
        return _Identity(
            user_id=user_id,
            account_id=account_id,
            created=created,
            first_name=first,
            last_name=last,
            email=email,
            image_url=image,
            first_ip=first_ip,
            last_ip=last_ip,
            locale=locale,
            country=country,
            codes=codes,
            links={program: (v[0], v[1], v[2], v[3], v[4]) for program, v in links.items()},
            modifications=tuple(changes),
        )

    def _generate_day(self, day: int) -> None:
        day_referrals: list[_Referral] = []
        day_rewards: list[_Reward] = []
        for index, identity in enumerate(self._identities(day)):
            rng = random.Random(f"{self.base}:life:{day}:{index}")
            referral = None
            if rng.random() < 0.4:
                referrer = self._pick_referrer(rng, day, index)
                if referrer is not None:
                    referral = self._referral(rng, referrer, identity)
                    day_referrals.append(referral)
                    day_rewards.extend(r for r in (referral.referrer_reward, referral.referred_reward) if r)
            manual: list[_Reward] = []
            if rng.random() < 0.12:
                created = identity.created + rng.randrange(_DAY, 20 * _DAY)
                value = rng.choice((100, 250))
                manual.append(
                    self._reward(
                        rng,
                        identity,
                        created,
                        program=None,
                        key=None,
                        kind=("CREDIT", value, "POINT", f'Welcome "Bonus" {value} Points', None),
                        source="MANUAL",
                        referral_id=None,
                    )
                )
                day_rewards.extend(manual)
            self.users.append(_User(identity, referral, tuple(manual)))
        for referral in day_referrals:
            self.referrals.append(referral)
            self.referrals_by_id[referral.id] = referral
            self.referrals_by_referrer.setdefault(referral.referrer.user_id, []).append(referral)
        for reward in day_rewards:
            self.rewards.append(reward)
            self.rewards_by_owner.setdefault(reward.owner.user_id, []).append(reward)

    def _pick_referrer(self, rng: random.Random, day: int, index: int) -> _Identity | None:
        other = rng.randint(max(0, day - 120), day)
        pool = self._identities(other)
        if other == day:
            pool = pool[:index]
        if not pool:
            return None
        return pool[rng.randrange(len(pool))]

    def _referral(self, rng: random.Random, referrer: _Identity, referred: _Identity) -> _Referral:
        program = PROGRAMS[0] if rng.random() < 0.85 else PROGRAMS[1]
        started = referred.created + rng.randrange(50, 5000)
        referral_id = _object_id(rng, started)
        converted = started + rng.randrange(_HOUR, 30 * _DAY) if rng.random() < 0.65 else None
        moderated = paid = ended = None
        referred_outcome = referrer_outcome = "PENDING"
        referrer_reward = referred_reward = None
        if converted is not None:
            if rng.random() < 0.85:
                moderated = converted + rng.randrange(60 * _SECOND, 3 * _DAY)
                referred_outcome = "APPROVED" if rng.random() < 0.9 else "DENIED"
                referrer_outcome = "APPROVED" if rng.random() < 0.9 else "DENIED"
            if rng.random() < 0.5:
                paid = converted + rng.randrange(0, 2 * _DAY)
            if rng.random() < 0.08:
                ended = converted + rng.randrange(10 * _DAY, 120 * _DAY)
            partner = program == PROGRAMS[1]
            referrer_kind = (
                ("CREDIT", 2000, "CASH/USD", "$20.00 Credit", "USD")
                if partner
                else ("CREDIT", 1000, "POINT", "1,000 Points", None)
            )
            percent = rng.choice((10, 15))
            referred_kind = (
                ("CREDIT", 500, "POINT", "500 Points", None)
                if partner
                else ("PCT_DISCOUNT", percent, "%", f"Friend discount: {percent}% off", None)
            )
            created = converted + rng.randrange(0, 1000)
            referrer_reward = self._reward(
                rng, referrer, created, program, "referrerReward", referrer_kind, "FRIEND_SIGNUP", referral_id
            )
            referred_reward = self._reward(
                rng, referred, created + 1, program, "referredReward", referred_kind, "REFERRED", referral_id
            )
        return _Referral(
            id=referral_id,
            program_id=program,
            referrer=referrer,
            referred=referred,
            started=started,
            converted=converted,
            moderated=moderated,
            referred_outcome=referred_outcome,
            referrer_outcome=referrer_outcome,
            paid=paid,
            ended=ended,
            code_used=referrer.codes[program],
            medium=rng.choice(_MEDIA),
            referrer_reward=referrer_reward,
            referred_reward=referred_reward,
        )

    def _reward(
        self,
        rng: random.Random,
        owner: _Identity,
        created: int,
        program: str | None,
        key: str | None,
        kind: tuple[str, int, str, str, str | None],
        source: str,
        referral_id: str | None,
    ) -> _Reward:
        reward_type, value, unit, name, currency = kind
        scheduled = created + 7 * _DAY if program is not None and rng.random() < 0.2 else None
        given = scheduled if scheduled is not None else created
        lifetime = 365 * _DAY if reward_type == "CREDIT" else 90 * _DAY
        expires = given + lifetime if rng.random() < 0.5 else None
        cancelled = given + rng.randrange(_DAY, 30 * _DAY) if rng.random() < 0.05 else None
        end = min(m for m in (expires, cancelled, given + 400 * _DAY) if m is not None)
        redemptions: tuple[tuple[int, int], ...] = ()
        roll = rng.random()
        if roll < 0.45 and end - given > 2 * _DAY:
            redemptions = ((given + rng.randrange(_DAY, min(60 * _DAY, end - given)), value),)
        elif roll < 0.55 and reward_type == "CREDIT" and end - given > 2 * _DAY:
            redemptions = ((given + rng.randrange(_DAY, min(60 * _DAY, end - given)), value // 2),)
        return _Reward(
            id=_object_id(rng, created),
            owner=owner,
            program_id=program,
            program_reward_key=key,
            type=reward_type,
            value=value,
            unit=unit,
            name=name,
            currency=currency,
            created=created,
            scheduled=scheduled,
            expires=expires,
            cancelled=cancelled,
            redemptions=redemptions,
            source=source,
            referral_id=referral_id,
        )


_POPULATIONS: dict[tuple[int, str, int, float], _Population] = {}
_POPULATIONS_LOCK = threading.Lock()


def _population(seed: int, tenant: str, start_ms: int, users_per_day: float) -> _Population:
    key = (seed, tenant, start_ms, users_per_day)
    with _POPULATIONS_LOCK:
        population = _POPULATIONS.get(key)
        if population is None:
            if len(_POPULATIONS) >= 8:
                _POPULATIONS.pop(next(iter(_POPULATIONS)))
            population = _POPULATIONS[key] = _Population(seed, tenant, start_ms, users_per_day)
        return population


# ---- request parsing ---------------------------------------------------------------------------------

_REWARD_TYPES = ("PCT_DISCOUNT", "CREDIT", "FUELTANK", "INTEGRATION")
_REWARD_SOURCES = (
    "FRIEND_SIGNUP",
    "REFERRED",
    "MANUAL",
    "PROGRAM",
    "ACTIVATION",
    "ACQUISITION",
    "RETENTION",
    "REACTIVATION",
    "AUTOMATED",
)
_REWARD_STATUSES = ("PENDING", "CANCELLED", "EXPIRED", "REDEEMED", "AVAILABLE")
_DATE_OPS = ("gte", "lt", "timeframe", "interval")
#: RewardFilterInput: field → the operators the schema gives it.
_REWARD_FILTER_OPS: Mapping[str, tuple[str, ...]] = {
    "id": ("eq", "in"),
    "type": ("eq", "in"),
    "unit": ("eq", "in", "ne", "nin"),
    "dateCreated": _DATE_OPS,
    "dateGiven": (*_DATE_OPS, "exists"),
    "dateExpires": (*_DATE_OPS, "exists"),
    "dateCancelled": (*_DATE_OPS, "exists"),
    "dateScheduledFor": (*_DATE_OPS, "exists"),
    "dateRedeemed": (*_DATE_OPS, "exists"),
    "dateModified": _DATE_OPS,
    "rewardSource": ("eq", "in"),
    "userId": ("eq",),
    "accountId": ("eq",),
    "programId": ("eq", "in", "exists"),
    "programRewardKey": ("eq", "in", "exists"),
    "globalRewardKey": ("eq", "in", "exists"),
    "referralId": ("eq",),
    "statuses": ("eq", "ne", "in", "all", "nin"),
}
_ENUMS: Mapping[str, tuple[str, ...]] = {"type": _REWARD_TYPES, "rewardSource": _REWARD_SOURCES}


@dataclass(frozen=True)
class _RewardFilter:
    """A validated RewardFilterInput: conditions AND-ed, ``AND`` all of, ``OR`` any of (when given)."""

    conditions: tuple[tuple[str, str, Any], ...] = ()
    all_of: tuple[_RewardFilter, ...] = ()
    any_of: tuple[_RewardFilter, ...] | None = None

    def matches(self, reward: _Reward, t: int, as_of: int) -> bool:
        if not all(
            _reward_condition(reward, name, op, value, t, as_of) for name, op, value in self.conditions
        ):
            return False
        if not all(sub.matches(reward, t, as_of) for sub in self.all_of):
            return False
        return self.any_of is None or not self.any_of or any(s.matches(reward, t, as_of) for s in self.any_of)


def _reward_value(reward: _Reward, name: str, t: int) -> Any:
    dates: dict[str, int | None] = {
        "dateCreated": reward.created,
        "dateGiven": _visible(reward.given, t),
        "dateExpires": reward.expires,
        "dateCancelled": _visible(reward.cancelled, t),
        "dateScheduledFor": reward.scheduled,
        "dateRedeemed": reward.date_redeemed(t),
        "dateModified": reward.modified(t),
    }
    if name in dates:
        return dates[name]
    return {
        "id": reward.id,
        "type": reward.type,
        "unit": reward.unit,
        "rewardSource": reward.source,
        "userId": reward.owner.user_id,
        "accountId": reward.owner.account_id,
        "programId": reward.program_id,
        "programRewardKey": reward.program_reward_key,
        "globalRewardKey": None,
        "referralId": reward.referral_id,
    }[name]


def _reward_condition(reward: _Reward, name: str, op: str, value: Any, t: int, as_of: int) -> bool:
    if name == "statuses":
        items: list[tuple[str, int | None]] = value if isinstance(value, list) else [value]
        held = [reward.status(min(at, as_of) if at is not None else t) == status for status, at in items]
        if op in ("eq", "all"):
            return all(held)
        if op == "in":
            return any(held)
        return not any(held)  # ne, nin
    actual = _reward_value(reward, name, t)
    if op == "eq":
        return bool(actual == value)
    if op == "ne":
        return bool(actual != value)
    if op == "in":
        return actual in value
    if op == "nin":
        return actual not in value
    if op == "exists":
        return bool((actual is not None) == value)
    if actual is None:
        return False
    if op == "gte":
        return bool(actual >= value)
    if op == "lt":
        return bool(actual < value)
    start, end = value  # interval
    return bool(start <= actual < end)


def _parse_reward_filter(raw: Any, path: str, errors: list[str]) -> _RewardFilter:
    if not isinstance(raw, dict):
        errors.append(f"{path}: must be an object (RewardFilterInput)")
        return _RewardFilter()
    conditions: list[tuple[str, str, Any]] = []
    all_of: list[_RewardFilter] = []
    any_of: list[_RewardFilter] | None = None
    for key, value in raw.items():
        where = f"{path}.{key}"
        if key in ("AND", "OR"):
            if value is None:
                continue
            if not isinstance(value, list):
                errors.append(f"{where}: must be a list of RewardFilterInput")
                continue
            subs = [_parse_reward_filter(item, f"{where}[{i}]", errors) for i, item in enumerate(value)]
            if key == "AND":
                all_of.extend(subs)
            else:
                any_of = subs
            continue
        name, _, op = key.rpartition("_")
        if op not in _REWARD_FILTER_OPS.get(name, ()):
            errors.append(f"{where}: unknown RewardFilterInput field")
            continue
        if value is None:
            continue
        parsed = _filter_value(name, op, value, where, errors)
        if parsed is not None:
            conditions.append((name, op, parsed))
    return _RewardFilter(tuple(conditions), tuple(all_of), None if any_of is None else tuple(any_of))


def _filter_value(name: str, op: str, value: Any, where: str, errors: list[str]) -> Any:
    if op == "timeframe":
        errors.append(f"{where}: relative timeframes are not emulated by the sandbox; use _gte/_lt")
        return None
    if op == "exists":
        if not isinstance(value, bool):
            errors.append(f"{where}: must be a boolean")
            return None
        return value
    if name.startswith("date"):
        if op == "interval":
            start, sep, end = value.partition("/") if isinstance(value, str) else ("", "", "")
            bounds = (_timestamp(start), _timestamp(end)) if sep else (None, None)
            if bounds[0] is None or bounds[1] is None:
                errors.append(f"{where}: must be an ISO-8601 interval <start>/<end>")
                return None
            return bounds
        stamp = _timestamp(value)
        if stamp is None:
            errors.append(f"{where}: must be a date (epoch milliseconds or ISO-8601)")
        return stamp
    if name == "statuses":
        items = value if op in ("in", "all", "nin") else [value]
        if not isinstance(items, list):
            errors.append(f"{where}: must be a list of RewardStatusFilterInput")
            return None
        parsed: list[tuple[str, int | None]] = []
        for item in items:
            status = item.get("status") if isinstance(item, dict) else None
            at = item.get("at") if isinstance(item, dict) else None
            at_ms = _timestamp(at) if at is not None else None
            if (
                status not in _REWARD_STATUSES
                or (at is not None and at_ms is None)
                or set(item) - {"status", "at"}
            ):
                errors.append(f"{where}: must be {{status: {'|'.join(_REWARD_STATUSES)}, at?: date}}")
                return None
            parsed.append((status, at_ms))
        return parsed if op in ("in", "all", "nin") else parsed[0]
    allowed = _ENUMS.get(name)
    items = value if op in ("in", "nin") else [value]
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        errors.append(f"{where}: must be {'a list of strings' if op in ('in', 'nin') else 'a string'}")
        return None
    if allowed is not None and any(v not in allowed for v in items):
        errors.append(f"{where}: must be one of {', '.join(allowed)}")
        return None
    return list(items) if op in ("in", "nin") else items[0]


@dataclass(frozen=True)
class _Query:
    """What an export selects, as parsed from its ExportStub (filters that apply to its type only)."""

    type: str
    bounds: Mapping[str, int] = field(default_factory=dict)
    program_id: str | None = None
    reward_filter: _RewardFilter | None = None
    at: int | None = None
    fields: Mapping[str, bool] = field(default_factory=dict)

    @property
    def columns(self) -> tuple[str, ...]:
        return columns_for(self.type, self.fields)


@dataclass(frozen=True)
class _Stub:
    type: str
    format: str
    name: str | None
    requester: str
    params: dict[str, Any] | None  # as echoed in the Export object
    query: _Query


def _parse_stub(body: Any) -> _Stub:
    if not isinstance(body, dict):
        raise _ApiError(400, "The request body must be a JSON object (an ExportStub).", "VALIDATION_FAILED")
    errors = [f"{key}: unknown property" for key in body if key not in _STUB_KEYS | _READ_ONLY]
    export_type = body.get("type")
    if export_type is None:
        errors.append(f"type: is required (one of {', '.join(EXPORT_TYPES)})")
    elif export_type not in EXPORT_TYPES:
        errors.append(f"type: must be one of {', '.join(EXPORT_TYPES)}")
    fmt = body.get("format")
    if fmt is None:
        fmt = "CSV"
    elif fmt not in EXPORT_FORMATS:
        errors.append("format: must be CSV or XLSX")
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        errors.append("name: must be a string")
    requester = body.get("requester")
    if requester is None:
        requester = "API"
    elif not isinstance(requester, str):
        errors.append("requester: must be a string")
    raw_params = body.get("params")
    valid_type = export_type if export_type in EXPORT_TYPES else None
    params: dict[str, Any] | None = None
    query = _Query(type=valid_type or "USER")
    if raw_params is not None:
        if isinstance(raw_params, dict):
            params, query = _parse_params(raw_params, valid_type, errors)
        else:
            errors.append("params: must be an object")
    if errors:
        raise _ApiError(400, "The export request failed to validate.", "VALIDATION_FAILED", errors=errors)
    assert isinstance(export_type, str) and isinstance(fmt, str) and isinstance(requester, str)
    return _Stub(export_type, fmt, name, requester, params, query)


def _parse_params(
    raw: Mapping[str, Any], export_type: str | None, errors: list[str]
) -> tuple[dict[str, Any], _Query]:
    applies = {key: export_type is not None and export_type in types for key, types in APPLIES_TO.items()}
    errors.extend(f"params.{key}: unknown parameter" for key in raw if key not in _PARAM_KEYS)
    echo: dict[str, Any] = {}
    bounds: dict[str, int] = {}
    for key in TIMESTAMP_PARAMS:
        value = raw.get(key)
        if value is None:
            continue
        stamp = _timestamp(value)
        if stamp is None:
            errors.append(f"params.{key}: must be a timestamp (epoch milliseconds or ISO-8601)")
            continue
        echo[key] = stamp
        if applies[key]:
            bounds[key] = stamp
    program_id = raw.get("programId")
    if program_id is not None:
        if isinstance(program_id, str) and program_id:
            echo["programId"] = program_id
        else:
            errors.append("params.programId: must be a non-empty string")
    reward_filter = None
    raw_filter = raw.get("filter")
    if raw_filter is not None:
        if applies["filter"]:
            reward_filter = _parse_reward_filter(raw_filter, "params.filter", errors)
        elif not isinstance(raw_filter, dict):
            errors.append("params.filter: must be an object (RewardFilterInput)")
        echo["filter"] = raw_filter
    at = None
    if raw.get("at") is not None:
        at = _timestamp(raw["at"])
        if at is None:
            errors.append("params.at: must be a timestamp (epoch milliseconds or ISO-8601)")
        else:
            echo["at"] = at
    fields: dict[str, bool] = {}
    raw_fields = raw.get("fields")
    if raw_fields is not None:
        if not isinstance(raw_fields, dict):
            errors.append("params.fields: must be an object")
        else:
            for key, value in raw_fields.items():
                if key not in _FIELD_FLAGS:
                    errors.append(f"params.fields.{key}: unknown field setting")
                elif value is not None and not isinstance(value, bool):
                    errors.append(f"params.fields.{key}: must be a boolean")
                elif value is not None:
                    fields[key] = value
            echo["fields"] = dict(fields)
    query = _Query(
        type=export_type or "USER",
        bounds=bounds,
        program_id=echo.get("programId") if applies["programId"] else None,
        reward_filter=reward_filter,
        at=at if applies["at"] else None,
        fields={k: v for k, v in fields.items() if _FIELD_FLAGS[k] == export_type},
    )
    return echo, query


def _in_bounds(bounds: Mapping[str, int], created: int, updated: int | None) -> bool:
    latest = updated if updated is not None else created
    checks = (
        ("createdSince", created, True),
        ("createdBefore", created, False),
        ("updatedSince", updated, True),
        ("updatedBefore", updated, False),
        ("createdOrUpdatedSince", latest, True),
        ("createdOrUpdatedBefore", latest, False),
    )
    for name, value, since in checks:
        bound = bounds.get(name)
        if bound is None:
            continue
        if value is None or (value < bound if since else value >= bound):
            return False
    return True


# ---- rows --------------------------------------------------------------------------------------------


def _user_cells(user: _Identity, t: int, program: str | None, referral: _Referral | None) -> Row:
    links = user.links.get(program or DEFAULT_PROGRAM)
    return {
        "id": user.user_id,
        "accountId": user.account_id,
        "email": user.email,
        "firstName": user.first_name,
        "lastName": user.last_name,
        "imageUrl": user.image_url,
        "firstSeenIP": user.first_ip,
        "lastSeenIP": user.last_ip,
        "dateCreated": user.created,
        "emailHash": hashlib.md5(user.email.strip().lower().encode()).hexdigest() if user.email else None,
        "referralSource": referral.medium if referral is not None else None,
        "locale": user.locale or None,
        "shareLink": links[0] if links else None,
        "facebookShareLink": links[1] if links else None,
        "twitterShareLink": links[2] if links else None,
        "emailShareLink": links[3] if links else None,
        "linkedinShareLink": links[4] if links else None,
        "countryCode": user.country or None,
        "referralCode": user.codes.get(program or DEFAULT_PROGRAM),
        "dateModified": user.updated(t) or user.created,
    }


def _select_rows(population: _Population, query: _Query, t: int) -> Iterator[Row]:
    """The rows of an export made at ``t`` (epoch ms), in file order, as typed cells."""
    population.ensure(t)
    bounds = query.bounds
    kind = query.type
    if kind in ("USER", "USER_REFERRAL", "USER_REWARD_BALANCE", "REWARD_BALANCE"):
        for user in population.users:
            identity = user.identity
            if identity.created > t:
                break
            referral = user.referral if user.referral is not None and user.referral.started <= t else None
            updated = identity.updated(t)
            if kind == "USER_REFERRAL" and referral is not None:
                changes = [m for m in (updated, referral.updated(t)) if m is not None]
                updated = max(changes) if changes else None
            if not _in_bounds(bounds, identity.created, updated):
                continue
            if kind == "USER":
                row = _user_cells(identity, t, query.program_id, referral)
                if query.fields.get("includeUserStatsFields"):
                    made = [
                        r
                        for r in population.referrals_by_referrer.get(identity.user_id, [])
                        if r.started <= t
                    ]
                    row["referralCount"] = len(made)
                    row["convertedReferralCount"] = sum(
                        1 for r in made if _visible(r.converted, t) is not None
                    )
                    row["rewardCount"] = sum(
                        1 for r in population.rewards_by_owner.get(identity.user_id, []) if r.created <= t
                    )
                yield row
            elif kind == "USER_REFERRAL":
                row = _user_cells(identity, t, query.program_id, referral)
                row.update(
                    {
                        "referredByReferralId": referral.id if referral else None,
                        "referredByUserId": referral.referrer.user_id if referral else None,
                        "referredByAccountId": referral.referrer.account_id if referral else None,
                        "referredByProgramId": referral.program_id if referral else None,
                        "referredByCode": referral.code_used if referral else None,
                        "dateReferralStarted": referral.started if referral else None,
                        "dateConverted": _visible(referral.converted, t) if referral else None,
                        "referredModerationStatus": _moderation(referral, t, "referred")
                        if referral
                        else None,
                    }
                )
                yield row
            else:
                rewards = [r for r in population.rewards_by_owner.get(identity.user_id, []) if r.created <= t]
                balances: dict[tuple[str, str], int] = {}
                for reward in rewards:
                    slot = (reward.type, reward.unit)
                    balances[slot] = balances.get(slot, 0) + reward.available(t)
                if kind == "USER_REWARD_BALANCE":
                    row = {
                        "id": identity.user_id,
                        "accountId": identity.account_id,
                        "email": identity.email,
                        "firstName": identity.first_name,
                        "lastName": identity.last_name,
                        "dateCreated": identity.created,
                    }
                    for reward_type, unit, column in BALANCES:
                        row[column] = balances.get((reward_type, unit), 0)
                    yield row
                else:
                    for (reward_type, unit), amount in sorted(balances.items()):
                        yield {
                            "userId": identity.user_id,
                            "accountId": identity.account_id,
                            "type": reward_type,
                            "amount": amount,
                            "unit": unit,
                        }
    elif kind == "REFERRAL":
        for referral in population.referrals:
            if referral.started > t:
                break
            if query.program_id is not None and referral.program_id != query.program_id:
                continue
            if not _in_bounds(bounds, referral.started, referral.updated(t)):
                continue
            yield _referral_cells(referral, t)
    else:
        at = min(query.at, t) if query.at is not None else t
        for reward in population.rewards:
            if reward.created > at:
                break
            if query.reward_filter is not None and not query.reward_filter.matches(reward, at, t):
                continue
            yield _reward_cells(population, reward, at, query.fields)


def _moderation(referral: _Referral, t: int, side: str) -> str:
    if _visible(referral.moderated, t) is None:
        return "PENDING"
    return referral.referred_outcome if side == "referred" else referral.referrer_outcome


def _referral_cells(referral: _Referral, t: int) -> Row:
    def reward_id(reward: _Reward | None) -> str | None:
        return reward.id if reward is not None and reward.created <= t else None

    return {
        "id": referral.id,
        "programId": referral.program_id,
        "referredUser": referral.referred.user_id,
        "referredAccount": referral.referred.account_id,
        "referredReward": reward_id(referral.referred_reward),
        "referredModerationStatus": _moderation(referral, t, "referred"),
        "referrerUser": referral.referrer.user_id,
        "referrerAccount": referral.referrer.account_id,
        "referrerReward": reward_id(referral.referrer_reward),
        "referrerModerationStatus": _moderation(referral, t, "referrer"),
        "dateReferralStarted": referral.started,
        "dateConverted": _visible(referral.converted, t),
        "dateReferralPaid": _visible(referral.paid, t),
        "dateReferralEnded": _visible(referral.ended, t),
        "dateModerated": _visible(referral.moderated, t),
        "referralCodeUsed": referral.code_used,
        "dateModified": referral.updated(t) or referral.started,
    }


def _reward_cells(population: _Population, reward: _Reward, t: int, fields: Mapping[str, bool]) -> Row:
    credit = reward.type == "CREDIT"
    row: Row = {
        "id": reward.id,
        "userId": reward.owner.user_id,
        "accountId": reward.owner.account_id,
        "programId": reward.program_id,
        "programRewardKey": reward.program_reward_key,
        "type": reward.type,
        "value": reward.value,
        "unit": reward.unit,
        "name": reward.name,
        "currency": reward.currency,
        "assignedCredit": reward.value if credit else None,
        "redeemedCredit": reward.redeemed_credit(t) if credit else None,
        "statuses": reward.status(t),
        "rewardSource": reward.source,
        "referralId": reward.referral_id,
        "dateCreated": reward.created,
        "dateScheduledFor": reward.scheduled,
        "dateGiven": _visible(reward.given, t),
        "dateExpires": reward.expires,
        "dateCancelled": _visible(reward.cancelled, t),
        "dateRedeemed": reward.date_redeemed(t),
        "dateModified": reward.modified(t),
    }
    if fields.get("includeUserFields"):
        row["user.email"] = reward.owner.email
        row["user.firstName"] = reward.owner.first_name
        row["user.lastName"] = reward.owner.last_name
        row["user.referralCode"] = reward.owner.codes.get(reward.program_id or DEFAULT_PROGRAM)
    if fields.get("includeReferralFields"):
        referral = population.referrals_by_id.get(reward.referral_id or "")
        row["referral.referrerUserId"] = referral.referrer.user_id if referral else None
        row["referral.referredUserId"] = referral.referred.user_id if referral else None
        row["referral.dateReferralStarted"] = referral.started if referral else None
        row["referral.dateConverted"] = _visible(referral.converted, t) if referral else None
    return row


def _text(value: Cell) -> str:
    """A cell as the CSV writes it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ---- files -------------------------------------------------------------------------------------------


def _csv_chunks(columns: Sequence[str], rows: Iterable[Row], terminator: str) -> Iterator[bytes]:
    """The CSV file, a few hundred rows per chunk."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=terminator)
    writer.writerow(columns)
    pending = 0
    for row in rows:
        writer.writerow([_text(row.get(name)) for name in columns])
        pending += 1
        if pending >= 500:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    if buffer.getvalue():
        yield buffer.getvalue().encode("utf-8")


_SHEET_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
_XML_HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_XLSX_STATIC = {
    "[Content_Types].xml": (
        _XML_HEAD + '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
        '<Override PartName="/xl/worksheets/sheet1.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
        '<Override PartName="/xl/styles.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
        "</Types>"
    ),
    "_rels/.rels": (
        _XML_HEAD + f'<Relationships xmlns="{_PKG_REL_NS}">'
        f'<Relationship Id="rId1" Type="{_REL_NS}/officeDocument" Target="xl/workbook.xml"/>'
        "</Relationships>"
    ),
    "xl/_rels/workbook.xml.rels": (
        _XML_HEAD + f'<Relationships xmlns="{_PKG_REL_NS}">'
        f'<Relationship Id="rId1" Type="{_REL_NS}/worksheet" Target="worksheets/sheet1.xml"/>'
        f'<Relationship Id="rId2" Type="{_REL_NS}/styles" Target="styles.xml"/>'
        "</Relationships>"
    ),
    "xl/styles.xml": (
        _XML_HEAD + f'<styleSheet xmlns="{_SHEET_NS}">'
        '<fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts>'
        '<fills count="2"><fill><patternFill patternType="none"/></fill>'
        '<fill><patternFill patternType="gray125"/></fill></fills>'
        '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
        '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
        '<cellXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/></cellXfs>'
        "</styleSheet>"
    ),
}


def _column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _xlsx_cell(ref: str, value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return f'<c r="{ref}" t="b"><v>{int(value)}</v></c>'
    if isinstance(value, int):
        return f'<c r="{ref}"><v>{value}</v></c>'
    text = escape(value, {"\r": "&#13;", '"': "&quot;"})
    return f'<c r="{ref}" t="inlineStr"><is><t xml:space="preserve">{text}</t></is></c>'


def _xlsx_bytes(sheet_name: str, columns: Sequence[str], rows: Iterable[Row], stamp: datetime) -> bytes:
    """A minimal valid SpreadsheetML package: one worksheet, inline strings."""
    letters = [_column_letter(i) for i in range(len(columns))]
    moment = stamp.astimezone(UTC)
    date_time = (max(1980, moment.year), moment.month, moment.day, moment.hour, moment.minute, moment.second)
    output = io.BytesIO()
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) as archive:

        def entry(name: str) -> zipfile.ZipInfo:
            info = zipfile.ZipInfo(name, date_time)
            info.compress_type = zipfile.ZIP_DEFLATED
            return info

        archive.writestr(entry("[Content_Types].xml"), _XLSX_STATIC["[Content_Types].xml"])
        archive.writestr(entry("_rels/.rels"), _XLSX_STATIC["_rels/.rels"])
        archive.writestr(
            entry("xl/workbook.xml"),
            _XML_HEAD + f'<workbook xmlns="{_SHEET_NS}" xmlns:r="{_REL_NS}"><sheets>'
            f'<sheet name="{escape(sheet_name)}" sheetId="1" r:id="rId1"/></sheets></workbook>',
        )
        archive.writestr(entry("xl/_rels/workbook.xml.rels"), _XLSX_STATIC["xl/_rels/workbook.xml.rels"])
        archive.writestr(entry("xl/styles.xml"), _XLSX_STATIC["xl/styles.xml"])
        with archive.open(entry("xl/worksheets/sheet1.xml"), "w") as sheet:
            sheet.write(f'{_XML_HEAD}<worksheet xmlns="{_SHEET_NS}"><sheetData>'.encode())
            header = "".join(_xlsx_cell(f"{letters[i]}1", name) for i, name in enumerate(columns))
            sheet.write(f'<row r="1">{header}</row>'.encode())
            for number, row in enumerate(rows, start=2):
                cells = "".join(
                    _xlsx_cell(f"{letters[i]}{number}", row.get(name)) for i, name in enumerate(columns)
                )
                sheet.write(f'<row r="{number}">{cells}</row>'.encode())
            sheet.write(b"</sheetData></worksheet>")
    return output.getvalue()


# ---- exports and webhooks ----------------------------------------------------------------------------


@dataclass
class _Export:
    id: str
    stub: _Stub
    created: int
    completes: int | None  # None: stays PENDING
    aborts: bool
    expiry_ms: int
    announced: bool = False
    lengths: dict[str, int] = field(default_factory=dict)
    xlsx: bytes | None = None

    def status(self, now: int) -> ExportStatus:
        if self.completes is None or now < self.completes:
            return ExportStatus.PENDING
        if self.aborts:
            return ExportStatus.ABORTED
        if now >= self.completes + self.expiry_ms:
            return ExportStatus.EXPIRED
        return ExportStatus.COMPLETED

    def dates(self, now: int) -> tuple[int | None, int | None]:
        """(dateCompleted, dateExpires) as of ``now``."""
        if self.status(now) in (ExportStatus.COMPLETED, ExportStatus.EXPIRED):
            assert self.completes is not None
            return self.completes, self.completes + self.expiry_ms
        return None, None

    def body(self, now: int) -> dict[str, Any]:
        completed, expires = self.dates(now)
        stub = self.stub
        return {
            "id": self.id,
            "type": stub.type,
            "format": stub.format,
            "name": stub.name,
            "requester": stub.requester,
            "params": stub.params,
            "status": self.status(now).value,
            "dateCreated": self.created,
            "dateCompleted": completed,
            "dateExpires": expires,
            "mailtoEmail": None,
        }

    def event_data(self, now: int) -> dict[str, Any]:
        """The export as the webhook ``data`` shows it (``outputFormat``, six date params always)."""
        completed, expires = self.dates(now)
        given = self.stub.params or {}
        params: dict[str, Any] = {name: given.get(name) for name in TIMESTAMP_PARAMS}
        params.update({k: given[k] for k in ("programId", "filter", "at", "fields") if k in given})
        return {
            "id": self.id,
            "name": self.stub.name,
            "requester": self.stub.requester,
            "status": self.status(now).value,
            "dateCreated": self.created,
            "dateExpires": expires,
            "dateCompleted": completed,
            "type": self.stub.type,
            "outputFormat": self.stub.format,
            "params": params,
        }


@dataclass(frozen=True)
class Subscription:
    """A webhook subscription."""

    endpoint_url: str
    name: str | None = None
    webhook_types: tuple[str, ...] = ("*",)

    def wants(self, event_type: str) -> bool:
        return "*" in self.webhook_types or event_type in self.webhook_types

    def as_json(self) -> dict[str, Any]:
        return {
            "endpointUrl": self.endpoint_url,
            "name": self.name,
            "source": "MANUAL",
            "webhookTypes": list(self.webhook_types),
        }


@dataclass(frozen=True)
class WebhookAttempt:
    """One delivery attempt: ``status`` is the receiver's HTTP status (None when it did not answer)."""

    event_id: str
    event_type: str
    url: str
    attempt: int
    status: int | None
    error: str | None
    kid: str
    duplicate: bool
    body: bytes
    at: datetime


@dataclass
class _Delivery:
    seq: int
    event_id: str
    event_type: str
    created: int
    url: str
    body: bytes
    due: float
    attempts: int = 0
    duplicate: bool = False


@dataclass
class _SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey
    published: bool = True

    def jwk(self) -> dict[str, str]:
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "kid": self.kid,
            "use": "sig",
            "alg": "RS256",
            "n": _b64url(_int_bytes(numbers.n)),
            "e": _b64url(_int_bytes(numbers.e)),
        }


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")


class AdvocateSandbox(Sandbox):
    """A faithful, controllable Advocate Export API with signed webhooks (see the module docstring).

    Every constructor argument is also a public attribute that tests may change at any time; data knobs
    (``seed``, ``users_per_day``, ``data_start``, ``tenant_alias``) should be set before exports are created.
    Call :meth:`close` (the server does when it stops) to end webhook deliveries.
    """

    source: ClassVar[str] = "advocate"
    fault_path_prefix: ClassVar[str] = API_PREFIX

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        seed: int = 0,
        tenant_alias: str = DEFAULT_TENANT_ALIAS,
        api_key: str = DEFAULT_API_KEY,
        live: bool | None = None,
        users_per_day: float = 4.0,
        data_start: datetime = datetime(2025, 1, 1, tzinfo=UTC),
        processing_seconds: float = 2.0,
        expiry_days: float = 28.0,
        signed_url_ttl: float = 900.0,
        truncate_downloads: bool = False,
        csv_line_terminator: str = "\r\n",
        latency_seconds: float = 0.0,
        webhook_retry_seconds: float = 1.0,
        webhook_max_attempts: int = 72,
        webhook_timeout_seconds: float = 10.0,
        duplicate_deliveries: bool = False,
        out_of_order_deliveries: bool = False,
        reorder_hold_seconds: float = 0.5,
        hook_signature_encoding: Literal["base64", "hex"] = "base64",
        key_size: int = 2048,
    ) -> None:
        super().__init__(clock=clock)
        self.seed = seed
        self.tenant_alias = tenant_alias
        self.api_key = api_key
        self.live = live
        self.users_per_day = users_per_day
        self.data_start = data_start
        self.processing_seconds = processing_seconds
        self.expiry_days = expiry_days
        self.signed_url_ttl = signed_url_ttl
        self.truncate_downloads = truncate_downloads
        self.csv_line_terminator = csv_line_terminator
        self.latency_seconds = latency_seconds
        self.webhook_retry_seconds = webhook_retry_seconds
        self.webhook_max_attempts = webhook_max_attempts
        self.webhook_timeout_seconds = webhook_timeout_seconds
        self.duplicate_deliveries = duplicate_deliveries
        self.out_of_order_deliveries = out_of_order_deliveries
        self.reorder_hold_seconds = reorder_hold_seconds
        self.hook_signature_encoding = hook_signature_encoding
        self.key_size = key_size

        self._lock = threading.RLock()
        self._send_lock = threading.Lock()
        self._url_key = secrets.token_bytes(32)
        self._id_rng = random.Random(f"advocate-exports:{seed}")
        self._event_rng = random.Random(f"advocate-events:{seed}")
        self._exports: dict[str, _Export] = {}
        self._outcomes: list[str] = []  # "abort" / "hang", consumed by the next exports
        self._subscriptions: dict[str, Subscription] = {}
        self._queue: list[_Delivery] = []
        self._seq = 0
        self._in_flight = 0
        self._log_attempts: list[WebhookAttempt] = []
        self._keys: list[_SigningKey] = []
        self._dispatcher: threading.Thread | None = None
        self._stop = threading.Event()

    # ---- knobs and inspection ------------------------------------------------------------------------

    def credentials(self) -> dict[str, str]:
        """The handshake credentials: the tenant alias (a path segment) and the API key (Basic password)."""
        return {"tenant_alias": self.tenant_alias, "api_key": self.api_key}

    @property
    def is_live(self) -> bool:
        """The ``live`` flag of webhooks: ``live`` if set, else whether the alias lacks ``test_``."""
        return self.live if self.live is not None else not self.tenant_alias.startswith("test_")

    def fail_next(self, n: int = 1) -> None:
        """Make the next ``n`` exports created end ABORTED instead of COMPLETED."""
        with self._lock:
            self._outcomes.extend(["abort"] * n)

    def hang_next(self, n: int = 1) -> None:
        """Make the next ``n`` exports created stay PENDING for ever."""
        with self._lock:
            self._outcomes.extend(["hang"] * n)

    def export_ids(self) -> list[str]:
        """Ids of every export created so far, oldest first."""
        with self._lock:
            return list(self._exports)

    def export_status(self, export_id: str) -> ExportStatus:
        """The current status of an export (``KeyError`` when unknown)."""
        with self._lock:
            return self._exports[export_id].status(self._now())

    def expected_columns(self, export_id: str) -> tuple[str, ...]:
        """The header of an export's file."""
        with self._lock:
            return self._exports[export_id].stub.query.columns

    def expected_rows(self, export_id: str) -> list[dict[str, str]]:
        """What an export's file holds (or will), in file order, every value as the CSV writes it."""
        with self._lock:
            export = self._exports[export_id]
        columns = export.stub.query.columns
        return [
            {name: _text(row.get(name)) for name in columns}
            for row in _select_rows(self._data(), export.stub.query, export.created)
        ]

    def rows_for(self, stub: Mapping[str, Any], as_of: datetime | None = None) -> list[dict[str, str]]:
        """The rows an export created from ``stub`` (an ExportStub) at ``as_of`` (default now) would hold."""
        parsed = _parse_stub(dict(stub))
        t = _ms(as_of) if as_of is not None else self._now()
        columns = parsed.query.columns
        return [
            {name: _text(row.get(name)) for name in columns}
            for row in _select_rows(self._data(), parsed.query, t)
        ]

    def subscribe(self, url: str, name: str | None = None, webhook_types: Sequence[str] = ("*",)) -> None:
        """Subscribe ``url`` to webhook events, as the subscription endpoint does (a test knob)."""
        with self._lock:
            self._announce_completions()  # exports completed before now are no news to a new subscriber
            self._subscriptions[url] = Subscription(url, name, tuple(webhook_types))
        self._ensure_dispatcher()

    def unsubscribe(self, url: str) -> None:
        """Remove a subscription (``KeyError`` when unknown)."""
        with self._lock:
            del self._subscriptions[url]

    def subscriptions(self) -> list[Subscription]:
        """The subscriptions, in creation order."""
        with self._lock:
            return list(self._subscriptions.values())

    @property
    def webhook_log(self) -> list[WebhookAttempt]:
        """Every delivery attempt so far, oldest first."""
        with self._lock:
            return list(self._log_attempts)

    def wait_for_webhooks(self, timeout: float = 5.0) -> bool:
        """Wait until no delivery is queued or under way; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                self._announce_completions()
                idle = not self._queue and self._in_flight == 0
            if idle:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    @property
    def signing_kid(self) -> str:
        """The ``kid`` of the key that signs deliveries now."""
        return self._active_key().kid

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set served at ``/.well-known/jwks.json``."""
        self._active_key()
        with self._lock:
            return {"keys": [key.jwk() for key in self._keys if key.published]}

    def rotate_signing_key(self, retire_previous: bool = True) -> str:
        """Sign with a new key from now on and return its kid; the old one leaves the JWKS unless kept."""
        self._active_key()
        new = self._new_key()
        with self._lock:
            if retire_previous:
                for key in self._keys:
                    key.published = False
            self._keys.append(new)
        return new.kid

    def retire_key(self, kid: str) -> None:
        """Remove a key from the JWKS (``KeyError`` when unknown; the signing key cannot be retired)."""
        with self._lock:
            key = next((k for k in self._keys if k.kid == kid), None)
            if key is None:
                raise KeyError(kid)
            if key is self._keys[-1]:
                raise ValueError("the signing key cannot be retired; rotate first")
            key.published = False

    def close(self) -> None:
        """Stop the webhook dispatcher (it starts again when there is something to deliver)."""
        with self._lock:
            thread, self._dispatcher = self._dispatcher, None
            self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    # ---- HTTP entry point ----------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Route one request."""
        if request.path.rstrip("/") == JWKS_PATH:
            if request.method not in ("GET", "HEAD"):
                return _ApiError(
                    405, "Method Not Allowed", "METHOD_NOT_ALLOWED", headers={"Allow": "GET"}
                ).response()
            return Response.json(200, self.jwks())
        if request.path.startswith(STORAGE_PREFIX):
            return self._storage(request)
        if request.path.startswith(API_PREFIX):
            try:
                return self._api(request)
            except _ApiError as exc:
                return exc.response()
        return _ApiError(404, "Not Found", "NOT_FOUND").response()

    def _api(self, request: Request) -> Response:
        segments = request.path[len(API_PREFIX) :].rstrip("/").split("/")
        tenant, rest = unquote(segments[0]), segments[1:]
        if tenant != self.tenant_alias:
            raise _ApiError(404, f"Tenant not found: {tenant}", "TENANT_NOT_FOUND")
        self._authenticate(request)
        if self.latency_seconds > 0:
            time.sleep(self.latency_seconds)
        method = "GET" if request.method == "HEAD" else request.method
        lowered = rest  # fixed segments are case-sensitive (JAX-RS paths)
        if lowered == ["export"]:
            self._allow(method, ("POST",))
            return self._create(request)
        if lowered == ["export", "history", "list"]:
            self._allow(method, ("GET",))
            return self._list(request)
        if len(rest) == 2 and lowered[0] == "export":
            self._allow(method, ("GET",))
            return Response.json(200, self._find(rest[1]).body(self._now()))
        if len(rest) == 3 and lowered[0] == "export" and lowered[2] == "download":
            self._allow(method, ("GET",))
            return self._download(self._find(rest[1]), request)
        if lowered == ["subscription"]:
            self._allow(method, ("GET", "POST"))
            if method == "GET":
                return Response.json(200, [s.as_json() for s in self.subscriptions()])
            return self._subscribe(request)
        if len(rest) >= 2 and lowered[0] == "subscription":
            if lowered[-1] == "test" and method == "POST" and len(rest) >= 3:
                return self._test_subscription(unquote("/".join(rest[1:-1])))
            self._allow(method, ("DELETE",))
            url = unquote("/".join(rest[1:]))
            with self._lock:
                if url not in self._subscriptions:
                    raise _ApiError(404, f"No subscription for {url}", "NOT_FOUND")
                del self._subscriptions[url]
            return Response(204)
        raise _ApiError(404, "Not Found", "NOT_FOUND")

    @staticmethod
    def _allow(method: str, allowed: tuple[str, ...]) -> None:
        if method not in allowed:
            shown = ", ".join((*allowed, "HEAD") if "GET" in allowed else allowed)
            raise _ApiError(405, "Method Not Allowed", "METHOD_NOT_ALLOWED", headers={"Allow": shown})

    def _authenticate(self, request: Request) -> None:
        credentials = request.basic_credentials()
        if credentials is None or not hmac.compare_digest(credentials[1].encode(), self.api_key.encode()):
            raise _ApiError(
                401,
                "Unauthorized: send the tenant's API key as the HTTP Basic password.",
                "UNAUTHORIZED",
                headers={"WWW-Authenticate": 'Basic realm="SaaSquatch"'},
            )

    def _now(self) -> int:
        return _ms(self.clock.now())

    def _data(self) -> _Population:
        return _population(self.seed, self.tenant_alias, _ms(self.data_start), float(self.users_per_day))

    def _find(self, export_id: str) -> _Export:
        with self._lock:
            export = self._exports.get(export_id)
        if export is None:
            raise _ApiError(404, "Export NOT found", "NOT_FOUND")
        return export

    # ---- exports -------------------------------------------------------------------------------------

    def _create(self, request: Request) -> Response:
        media = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            raise _ApiError(
                415,
                "Unsupported Media Type: send the ExportStub as application/json.",
                "UNSUPPORTED_MEDIA_TYPE",
            )
        try:
            body = json.loads(request.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise _ApiError(400, f"The request body is not valid JSON: {exc}", "VALIDATION_FAILED") from exc
        stub = _parse_stub(body)
        with self._lock:
            now = self._now()
            outcome = self._outcomes.pop(0) if self._outcomes else ""
            export = _Export(
                id=_object_id(self._id_rng, now),
                stub=stub,
                created=now,
                completes=None if outcome == "hang" else now + round(self.processing_seconds * 1000),
                aborts=outcome == "abort",
                expiry_ms=round(self.expiry_days * _DAY),
            )
            self._exports[export.id] = export
            self._emit("export.created", export.event_data(now), now)
            return Response.json(201, export.body(now))

    def _list(self, request: Request) -> Response:
        errors = []
        values: dict[str, int] = {}
        for name, default in (("limit", 10), ("offset", 0)):
            text = request.query.get(name)
            if text is None or text == "":
                values[name] = default
            elif text.isascii() and text.isdigit():
                values[name] = int(text)
            else:
                errors.append(f"{name}: must be a non-negative integer")
        if errors:
            raise _ApiError(400, "The request failed to validate.", "VALIDATION_FAILED", errors=errors)
        with self._lock:
            now = self._now()
            exports = sorted(self._exports.values(), key=lambda e: (e.created, e.id), reverse=True)
            page = exports[values["offset"] : values["offset"] + values["limit"]]
            data = [e.body(now) for e in page]
        return Response.json(200, {"data": data, "count": len(data), "totalCount": len(exports)})

    def _download(self, export: _Export, request: Request) -> Response:
        with self._lock:
            now = self._now()
            status = export.status(now)
        if status is ExportStatus.EXPIRED:
            raise _ApiError(
                404, f"Export {export.id} has expired; its file is no longer available.", "EXPORT_EXPIRED"
            )
        if status is not ExportStatus.COMPLETED:
            raise _ApiError(
                400,
                f"Export {export.id} is {status.value}; only COMPLETED exports can be downloaded.",
                "EXPORT_NOT_COMPLETED",
            )
        path = f"{STORAGE_PREFIX}{quote(self.tenant_alias)}/{export.id}.{_EXTENSIONS[export.stub.format]}"
        goog_date = _instant(now).strftime("%Y%m%dT%H%M%SZ")
        expires = str(max(1, int(self.signed_url_ttl)))
        query = urlencode(
            {
                "X-Goog-Algorithm": "GOOG4-RSA-SHA256",
                "X-Goog-Credential": f"{_SIGNER}/{goog_date[:8]}/auto/storage/goog4_request",
                "X-Goog-Date": goog_date,
                "X-Goog-Expires": expires,
                "X-Goog-SignedHeaders": "host",
                "X-Goog-Signature": self._url_signature(path, goog_date, expires),
            }
        )
        location = f"{request.storage_origin}{path}?{query}"
        return Response(303, {"Location": location, "Content-Type": "text/plain; charset=utf-8"}, b"")

    def _url_signature(self, path: str, goog_date: str, expires: str) -> str:
        message = f"GET\n{path}\n{goog_date}\n{expires}".encode()
        return hmac.new(self._url_key, message, hashlib.sha256).hexdigest()

    def _storage(self, request: Request) -> Response:
        if "Authorization" in request.headers:
            return _gcs_error(
                400,
                "InvalidArgument",
                "Invalid argument.",
                "A signed URL must not be combined with an Authorization header.",
            )
        if request.method not in ("GET", "HEAD"):
            return _gcs_error(
                405, "MethodNotAllowed", "The specified method is not allowed against this resource."
            )
        goog_date = request.query.get("X-Goog-Date", "")
        expires = request.query.get("X-Goog-Expires", "")
        try:
            signed_at = datetime.strptime(goog_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            lifetime = int(expires)
        except ValueError:
            signed_at, lifetime = None, 0
        signature = request.query.get("X-Goog-Signature", "")
        if signed_at is None or not hmac.compare_digest(
            signature, self._url_signature(request.path, goog_date, expires)
        ):
            return _gcs_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. Check your "
                "Google secret key and signing method.",
            )
        if self.clock.now() > signed_at + timedelta(seconds=lifetime):
            end = (signed_at + timedelta(seconds=lifetime)).isoformat()
            return _gcs_error(
                400, "ExpiredToken", "The provided token has expired.", f"Request signature expired at: {end}"
            )
        tail = request.path[len(STORAGE_PREFIX) :].split("/")
        export_id = tail[1].rsplit(".", 1)[0] if len(tail) == 2 else ""
        with self._lock:
            export = self._exports.get(export_id)
            ready = export is not None and export.status(self._now()) is ExportStatus.COMPLETED
        if export is None or not ready:
            return _gcs_error(404, "NoSuchKey", "The specified key does not exist.")
        return self._file_response(export)

    def _file_response(self, export: _Export) -> Response:
        query = export.stub.query
        fmt = export.stub.format
        headers = {
            "Content-Type": _CONTENT_TYPES[fmt],
            "Content-Disposition": f'attachment; filename="{export.id}.{_EXTENSIONS[fmt]}"',
        }
        body: bytes | Iterator[bytes]
        if fmt == "XLSX":
            with self._lock:
                blob = export.xlsx
            if blob is None:
                rows = _select_rows(self._data(), query, export.created)
                blob = _xlsx_bytes(query.type, query.columns, rows, _instant(export.created))
                with self._lock:
                    export.xlsx = blob
            body, length = blob, len(blob)
        else:
            terminator = self.csv_line_terminator
            with self._lock:
                cached = export.lengths.get(terminator)
            if cached is None:
                chunks = _csv_chunks(
                    query.columns, _select_rows(self._data(), query, export.created), terminator
                )
                cached = sum(len(chunk) for chunk in chunks)
                with self._lock:
                    export.lengths[terminator] = cached
            length = cached
            body = _csv_chunks(query.columns, _select_rows(self._data(), query, export.created), terminator)
        truncate = max(0, min(length - 1, length // 2)) if self.truncate_downloads else None
        return Response(200, headers, body, content_length=length, truncate_after=truncate)

    # ---- subscriptions and events --------------------------------------------------------------------

    def _subscribe(self, request: Request) -> Response:
        try:
            body = json.loads(request.body.decode("utf-8") or "null")
        except (UnicodeDecodeError, ValueError) as exc:
            raise _ApiError(400, f"The request body is not valid JSON: {exc}", "VALIDATION_FAILED") from exc
        errors: list[str] = []
        if not isinstance(body, dict):
            raise _ApiError(
                400, "The request body must be a JSON object (a WebhookEndpoint).", "VALIDATION_FAILED"
            )
        errors.extend(
            f"{k}: unknown property"
            for k in body
            if k not in ("endpointUrl", "name", "source", "webhookTypes")
        )
        url = body.get("endpointUrl")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            errors.append("endpointUrl: must be an absolute http(s) URL")
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            errors.append("name: must be a string")
        types = body.get("webhookTypes")
        if types is None:
            types = ["*"]
        elif not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
            errors.append("webhookTypes: must be a non-empty list of event types")
        if errors:
            raise _ApiError(400, "The subscription failed to validate.", "VALIDATION_FAILED", errors=errors)
        assert isinstance(url, str)
        self.subscribe(url, name, types)
        return Response(201)

    def _test_subscription(self, url: str) -> Response:
        with self._lock:
            subscription = self._subscriptions.get(url)
            if subscription is None:
                raise _ApiError(404, f"No subscription for {url}", "NOT_FOUND")
            now = self._now()
            data = {"endpointUrl": subscription.endpoint_url, "name": subscription.name}
            self._emit("test", data, now, only=subscription)
        return Response(204)

    def _emit(
        self, event_type: str, data: Mapping[str, Any], created: int, only: Subscription | None = None
    ) -> None:
        """Queue one event for every subscription that wants it (call with the lock held)."""
        targets = (
            [only] if only is not None else [s for s in self._subscriptions.values() if s.wants(event_type)]
        )
        if not targets:
            return
        event_id = _object_id(self._event_rng, created)
        envelope = {
            "id": event_id,
            "type": event_type,
            "tenantAlias": self.tenant_alias,
            "live": self.is_live,
            "created": created,
            "data": data,
        }
        body = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        for target in targets:
            self._seq += 1
            self._queue.append(
                _Delivery(
                    self._seq, event_id, event_type, created, target.endpoint_url, body, time.monotonic()
                )
            )
        self._ensure_dispatcher()

    def _announce_completions(self) -> None:
        """Queue ``export.completed`` for exports that completed since the last look (lock held)."""
        now = self._now()
        for export in self._exports.values():
            if export.announced:
                continue
            status = export.status(now)
            if status is ExportStatus.PENDING:
                continue
            export.announced = True
            if status is not ExportStatus.ABORTED:
                assert export.completes is not None
                data = export.event_data(export.completes)  # as it was when it completed
                self._emit("export.completed", data, export.completes)

    # ---- delivery ------------------------------------------------------------------------------------

    def _ensure_dispatcher(self) -> None:
        with self._lock:
            if self._dispatcher is not None and self._dispatcher.is_alive():
                return
            self._stop = threading.Event()
            self._dispatcher = threading.Thread(
                target=self._run_dispatcher, args=(self._stop,), name="sandbox-advocate-webhooks", daemon=True
            )
            self._dispatcher.start()

    def _run_dispatcher(self, stop: threading.Event) -> None:
        while not stop.wait(0.02):
            try:
                self.pump()
            except Exception:  # keep delivering; the traceback goes to stderr
                traceback.print_exc(file=sys.stderr)

    def pump(self) -> int:
        """Queue completion events and make every delivery attempt that is due; returns how many."""
        with self._send_lock:
            with self._lock:
                self._announce_completions()
                batch = self._take_due(time.monotonic())
                self._in_flight += len(batch)
            for delivery in batch:
                try:
                    self._attempt(delivery)
                finally:
                    with self._lock:
                        self._in_flight -= 1
            return len(batch)

    def _take_due(self, now: float) -> list[_Delivery]:
        due = [d for d in self._queue if d.due <= now]
        if not due:
            return []
        if self.out_of_order_deliveries:
            if len(due) < 2 and now - min(d.due for d in due) < self.reorder_hold_seconds:
                return []
            due.sort(key=lambda d: (d.created, d.seq), reverse=True)
        else:
            due.sort(key=lambda d: (d.due, d.seq))
        taken = {id(d) for d in due}
        self._queue = [d for d in self._queue if id(d) not in taken]
        return due

    def _attempt(self, delivery: _Delivery) -> None:
        delivery.attempts += 1
        jws, kid = self._jws(delivery.body)
        digest = hmac.new(self.api_key.encode(), delivery.body, hashlib.sha1).digest()
        signature = (
            digest.hex() if self.hook_signature_encoding == "hex" else base64.b64encode(digest).decode()
        )
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "SaaSquatch-Webhooks",
            "X-Hook-JWS-RFC-7797": jws,
            "X-Hook-Signature": signature,
        }
        status, error = _post(delivery.url, delivery.body, headers, self.webhook_timeout_seconds)
        with self._lock:
            self._log_attempts.append(
                WebhookAttempt(
                    delivery.event_id,
                    delivery.event_type,
                    delivery.url,
                    delivery.attempts,
                    status,
                    error,
                    kid,
                    delivery.duplicate,
                    delivery.body,
                    self.clock.now(),
                )
            )
            if status == 200:
                if self.duplicate_deliveries and not delivery.duplicate:
                    self._seq += 1
                    copy = _Delivery(
                        self._seq,
                        delivery.event_id,
                        delivery.event_type,
                        delivery.created,
                        delivery.url,
                        delivery.body,
                        time.monotonic(),
                        duplicate=True,
                    )
                    self._queue.append(copy)
            elif delivery.attempts < self.webhook_max_attempts:
                delivery.due = time.monotonic() + self.webhook_retry_seconds
                self._queue.append(delivery)

    # ---- signing -------------------------------------------------------------------------------------

    def _new_key(self) -> _SigningKey:
        private = rsa.generate_private_key(public_exponent=65537, key_size=self.key_size)
        der = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return _SigningKey(base64.b64encode(hashlib.sha1(der).digest()).decode("ascii"), private)

    def _active_key(self) -> _SigningKey:
        with self._lock:
            if not self._keys:
                self._keys.append(self._new_key())
            return self._keys[-1]

    def _jws(self, body: bytes) -> tuple[str, str]:
        """``<header>..<signature>``: RS256 over ``<header>.<base64url(body)>`` (detached payload)."""
        key = self._active_key()
        header = _b64url(
            json.dumps({"alg": "RS256", "typ": "JWT", "kid": key.kid}, separators=(",", ":")).encode()
        )
        signing_input = f"{header}.{_b64url(body)}".encode("ascii")
        signature = key.private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{header}..{_b64url(signature)}", key.kid


def _post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> tuple[int | None, str | None]:
    """POST ``body`` without following redirects; (status, None) or (None, error)."""
    parts = urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parts.hostname or "", parts.port, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", target, body=body, headers=dict(headers))
        response = connection.getresponse()
        response.read()
        return response.status, None
    except (OSError, http.client.HTTPException) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        connection.close()


def _gcs_error(status: int, code: str, message: str, details: str | None = None) -> Response:
    detail = f"<Details>{escape(details)}</Details>" if details else ""
    body = (
        "<?xml version='1.0' encoding='UTF-8'?>"
        f"<Error><Code>{code}</Code><Message>{escape(message)}</Message>{detail}</Error>"
    )
    return Response.text(status, body, "application/xml; charset=UTF-8")
