"""Catalog of the Account Engagement (Pardot) Export API v5: objects, procedures, arguments, fields.

This module is the single description of what an export request may contain. The pipeline uses it to
reject a bad export definition before any upstream call, and the development sandbox uses it as the
API's truth, so both agree by construction. Standard library only (it ships in the Lambda layer).

What the public record says and what was chosen here:

- Objects use v5 lowerCamel names (``visitorActivity``, ``listMembership``, ``prospect``,
  ``prospectAccount``, ``visitor``, ``externalActivity``). ``lookup_object`` also accepts other casings
  (``VisitorActivity`` appears in third-party v3/v4 collections) and returns the canonical object.
- Procedure and argument names stay snake_case as in every published example (``filter_by_created_at``,
  ``created_after``). The v5 page spells the visitor-activity flag ``prospectOnly`` once, under visitor
  activity ``filter_by_updated_at``; it is accepted as an alias of ``prospect_only`` on that procedure
  only (``Procedure.arg_aliases``), elsewhere it is an unknown argument (175).
- The external-activity procedure over ``activityDate`` has no name in the v5 page; it is called
  ``filter_by_activity_date`` here (arguments ``activity_after`` / ``activity_before``).
- Fields are v5 camelCase names. External activity fields come from the v5 page; the other objects use
  the v5 object field names (``grade`` and ``notes`` are not exportable, per the 2020 export doc).
  Relationship fields (dot notation) are not modelled.
- Window semantics follow the v5 page: a record is selected when its timestamp is strictly greater than
  ``*_after`` and strictly less than ``*_before`` (exclusive on both ends). Without ``*_before`` the window
  ends at the creation time of the export.
- Limits: at most ``MAX_FIELDS`` (150) fields. The range "can't exceed 1 year", read as one *calendar*
  year: ``*_before <= one_year_after(*_after)``, so the v5 page's own example ("from December 25, 2019 to
  December 25, 2020", 366 days across a leap day) is accepted and one second more is refused (177).
  The year is added on the wall clock of the user's timezone (the zone relative dates resolve in,
  whatever offset the value itself was written with); 29 February plus one year is **1 March** (PHP's
  ``+1 year``, which overflows the day, rather than clamping to 28 February). When ``*_before`` is
  omitted the range is measured to the creation time (``now <= one_year_after(*_after)``), which is what
  "``*_after`` must be within a year of the creation date" means here: the page says it right after
  describing the omitted ``*_before`` ("the current date is used to gauge the interval"). A window with
  both bounds may lie further in the past (backfills). The literal reading (every ``*_before`` entry says
  "The ``created_after`` must be within a year of the creation date of the Export", so every request,
  bounded or not) is ``validate_export_request(..., after_within_year_of_creation=True)``.
- The v3/v4 JSON example (``"created_after": "2019-12-25 10:00:00", "created_before": "2020-12-25
  24:59:59"``) is *refused*: hour 24 rolls over (the sandbox's date syntax reads it as PHP does), so it
  ends 2020-12-26 00:59:59, 14:59:59 past one calendar year. The public record does not say how the API
  itself treats its example; no leniency beyond the calendar year is invented.
- Date arguments: ``RELATIVE_DATES`` (``today``, ``yesterday``, ``last_7_days``, ``this_month``,
  ``last_month``) or "a custom time specified in GNU Date Input Syntax format". Reading them is not this
  module's business: the pipeline never parses such values (it sends ISO 8601 instants with the user's
  offset), so :func:`validate_export_request` takes the parser (``parse_date``) from its caller, the
  development sandbox (:mod:`exportpipe_dev.sandbox.gnudate`, which documents how each form resolves), and
  no date parser ships in the Lambda layer.
- Extra arguments: ``deleted`` / ``prospect_deleted`` take ``true``, ``false`` or ``all`` (JSON booleans
  are accepted too) and default to ``false``; ``prospect_only`` takes a boolean (or ``"true"``/``"false"``)
  and defaults to ``false``; ``type`` is a list of visitor activity type ids (integers or digit strings,
  a single id is accepted) and defaults to all types. Type 5 (Session) is refused (177): the page says
  "Type ``Session`` is omitted", read as "never exported", so asking for it is an invalid value rather
  than an empty result. A JSON ``null`` argument counts as omitted.
- A ``*_after`` in the future is accepted (nothing in the page refuses it); the window is then empty.
- External activity ``activityDate`` is a DateTime, as the field table types it; the description's
  "must be in "YYYY-MM-DD" format" is read as the rule for creating an activity, not the export format.
- Error codes are the published Pardot codes: 174 unknown procedure, 175 unknown argument, 176 missing
  required argument, 177 invalid argument value, 180 invalid field, 153/154 missing/invalid property
  (used for an unknown object, a bad ``fields`` list and more than 150 fields: the public record does not
  say which code the API uses for those, 154 is the closest published text).
- Validation order: body shape, object, fields, procedure, unknown arguments, required arguments,
  argument values. The 150-field limit counts the fields as given ("The number of fields specified ...
  can't exceed 150"), duplicates included; after that check duplicate field names are collapsed (first
  occurrence kept). An empty ``fields`` list is rejected (omit ``fields`` to export every field).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import Final, Protocol

__all__ = [
    "DELETED_VALUES",
    "ERROR_MESSAGES",
    "MAX_FIELDS",
    "OBJECTS",
    "RELATIVE_DATES",
    "VISITOR_ACTIVITY_TYPES",
    "ArgKind",
    "ArgValue",
    "DateParser",
    "ExportDefinition",
    "ExportRequest",
    "ExportRequestError",
    "FieldType",
    "PardotErrorCode",
    "PardotObject",
    "Procedure",
    "error_message",
    "lookup_object",
    "one_year_after",
    "validate_definition",
    "validate_export_request",
]


class FieldType(StrEnum):
    """Type of an exportable field, as the v5 field tables name it."""

    INTEGER = "Integer"
    STRING = "String"
    BOOLEAN = "Boolean"
    DATETIME = "DateTime"
    DATE = "Date"


class ArgKind(StrEnum):
    """Kind of a procedure argument; decides how its value is parsed and normalised."""

    DATETIME = "datetime"  # window bound: relative keyword or explicit date
    TRI_STATE = "tri_state"  # "true" | "false" | "all"
    BOOLEAN = "boolean"  # true | false
    TYPE_IDS = "type_ids"  # list of visitor activity type ids


class PardotErrorCode(IntEnum):
    """Published Account Engagement error codes used by the Export API (v5 body ``{"code", "message"}``)."""

    INVALID_QUERY_PARAMETERS = 5
    INVALID_SORT_BY = 19
    INVALID_SORT_ORDER = 20
    INVALID_HTTP_METHOD = 60
    CONCURRENT_LIMIT = 66
    RECORD_NOT_FOUND = 109
    DAILY_LIMIT = 122
    INVALID_JSON = 150
    UNSUPPORTED_CONTENT_TYPE = 151
    EMPTY_BODY = 152
    MISSING_PROPERTY = 153
    INVALID_PROPERTY = 154
    UNKNOWN_PROCEDURE = 174
    UNKNOWN_ARGUMENT = 175
    MISSING_ARGUMENT = 176
    INVALID_ARGUMENT = 177
    INVALID_EXPORT_STATE = 178
    INVALID_FIELDS = 180
    MISSING_HEADER = 181
    INVALID_HEADER = 182
    INTERNAL_ERROR = 183
    INVALID_ACCESS_TOKEN = 184
    ENDPOINT_NOT_FOUND = 198
    BUSINESS_UNIT_NOT_FOUND = 201


#: The published message of each code (the API may append ``: <detail>`` or a sentence).
ERROR_MESSAGES: Final[Mapping[PardotErrorCode, str]] = MappingProxyType(
    {
        PardotErrorCode.INVALID_QUERY_PARAMETERS: "Invalid query parameters",
        PardotErrorCode.INVALID_SORT_BY: "Invalid value specified for sort_by",
        PardotErrorCode.INVALID_SORT_ORDER: "Invalid value specified for sort_order",
        PardotErrorCode.INVALID_HTTP_METHOD: "Invalid HTTP request method",
        PardotErrorCode.CONCURRENT_LIMIT: (
            "You have exceeded your concurrent request limit. Please wait, before trying again"
        ),
        PardotErrorCode.RECORD_NOT_FOUND: "The requested record was not found.",
        PardotErrorCode.DAILY_LIMIT: "Daily API rate limit met",
        PardotErrorCode.INVALID_JSON: "Input needs to be valid JSON",
        PardotErrorCode.UNSUPPORTED_CONTENT_TYPE: "Unsupported content-type",
        PardotErrorCode.EMPTY_BODY: "Request body can't be empty",
        PardotErrorCode.MISSING_PROPERTY: "Missing required property in request",
        PardotErrorCode.INVALID_PROPERTY: "Invalid property in request",
        PardotErrorCode.UNKNOWN_PROCEDURE: "Unknown procedure name.",
        PardotErrorCode.UNKNOWN_ARGUMENT: "Unknown procedure argument.",
        PardotErrorCode.MISSING_ARGUMENT: "Missing required argument.",
        PardotErrorCode.INVALID_ARGUMENT: "Invalid procedure argument.",
        PardotErrorCode.INVALID_EXPORT_STATE: "The current state of the export does not allow the operation",
        PardotErrorCode.INVALID_FIELDS: "One or more of the specified fields are invalid",
        PardotErrorCode.MISSING_HEADER: "A required header is missing",
        PardotErrorCode.INVALID_HEADER: "Invalid header value",
        PardotErrorCode.INTERNAL_ERROR: "An internal error occurred, please try your request again",
        PardotErrorCode.INVALID_ACCESS_TOKEN: "access_token is invalid, unknown, or malformed",
        PardotErrorCode.ENDPOINT_NOT_FOUND: "Endpoint not found.",
        PardotErrorCode.BUSINESS_UNIT_NOT_FOUND: (
            "Business Unit specified in Pardot-Business-Unit-Id header not found or inactive."
        ),
    }
)

MAX_FIELDS: Final = 150
RELATIVE_DATES: Final = ("today", "yesterday", "last_7_days", "this_month", "last_month")
DELETED_VALUES: Final = ("true", "false", "all")

#: Visitor activity type ids and names (v5 object field reference). ``Session`` (5) is never exported.
VISITOR_ACTIVITY_TYPES: Final[Mapping[int, str]] = MappingProxyType(
    {
        1: "Click",
        2: "View",
        3: "Error",
        4: "Success",
        5: "Session",
        6: "Sent",
        7: "Search",
        8: "New Opportunity",
        9: "Opportunity Won",
        10: "Opportunity Lost",
        11: "Open",
        12: "Unsubscribe Page",
        13: "Bounced",
        14: "Spam Complaint",
        15: "Email Preference Page",
        16: "Resubscribed",
        17: "Click (Third Party)",
        18: "Opportunity Reopened",
        19: "Opportunity Linked",
        20: "Visit",
        21: "Custom URL click",
        22: "Olark Chat",
        23: "Invited to Webinar",
        24: "Attended Webinar",
        25: "Registered for Webinar",
        26: "Social Post Click",
        27: "Video View",
        28: "Event Registered",
        29: "Event Checked In",
        30: "Video Conversion",
        31: "UserVoice Suggestion",
        32: "UserVoice Comment",
        33: "UserVoice Ticket",
        34: "Video Watched (≥ 75% watched)",
        35: "Indirect Unsubscribe Open",
        36: "Indirect Bounce Notification",
        37: "Indirect Resubscribed",
        38: "Opportunity Unlinked",
    }
)

#: Normalised value of an extra argument: tri-state string, boolean, or tuple of type ids.
ArgValue = str | bool | tuple[int, ...]


@dataclass(frozen=True)
class Procedure:
    """One export procedure: a window over one timestamp plus optional filters.

    ``filter_on`` names the timestamp the window applies to (a field of the object, or
    ``prospect.updatedAt`` for the procedures over the associated prospect). ``after_arg`` is required,
    ``before_arg`` optional; ``extra_args`` are optional filters with ``extra_defaults`` applied when absent.
    """

    name: str
    after_arg: str
    before_arg: str
    filter_on: str
    extra_args: Mapping[str, ArgKind] = field(default_factory=lambda: MappingProxyType({}))
    extra_defaults: Mapping[str, ArgValue] = field(default_factory=lambda: MappingProxyType({}))
    arg_aliases: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def required_args(self) -> tuple[str, ...]:
        """Arguments that must be present."""
        return (self.after_arg,)

    @property
    def argument_names(self) -> tuple[str, ...]:
        """Every canonical argument name this procedure accepts."""
        return (self.after_arg, self.before_arg, *self.extra_args)


@dataclass(frozen=True)
class PardotObject:
    """An exportable object: its fields (in export column order) and its procedures."""

    name: str
    fields: Mapping[str, FieldType]
    procedures: Mapping[str, Procedure]


def _procedure(
    name: str,
    after: str,
    before: str,
    filter_on: str,
    extra: Mapping[str, ArgKind] | None = None,
    defaults: Mapping[str, ArgValue] | None = None,
    aliases: Mapping[str, str] | None = None,
) -> Procedure:
    return Procedure(
        name=name,
        after_arg=after,
        before_arg=before,
        filter_on=filter_on,
        extra_args=MappingProxyType(dict(extra or {})),
        extra_defaults=MappingProxyType(dict(defaults or {})),
        arg_aliases=MappingProxyType(dict(aliases or {})),
    )


def _object(
    name: str, fields: Sequence[tuple[str, FieldType]], procedures: Sequence[Procedure]
) -> PardotObject:
    return PardotObject(
        name=name,
        fields=MappingProxyType(dict(fields)),
        procedures=MappingProxyType({p.name: p for p in procedures}),
    )


_I, _S, _B, _DT = FieldType.INTEGER, FieldType.STRING, FieldType.BOOLEAN, FieldType.DATETIME

_DELETED: Final = {"deleted": ArgKind.TRI_STATE}
_DELETED_DEFAULT: Final[Mapping[str, ArgValue]] = {"deleted": "false"}
_VA_EXTRA: Final = {"type": ArgKind.TYPE_IDS, "prospect_only": ArgKind.BOOLEAN}
_VA_DEFAULTS: Final[Mapping[str, ArgValue]] = {"prospect_only": False}
_VA_ALIASES: Final = {"prospectOnly": "prospect_only"}


def _by_created(extra: Mapping[str, ArgKind], defaults: Mapping[str, ArgValue], **kw: str) -> Procedure:
    return _procedure(
        "filter_by_created_at", "created_after", "created_before", "createdAt", extra, defaults, kw or None
    )


def _by_updated(extra: Mapping[str, ArgKind], defaults: Mapping[str, ArgValue], **kw: str) -> Procedure:
    return _procedure(
        "filter_by_updated_at", "updated_after", "updated_before", "updatedAt", extra, defaults, kw or None
    )


_BY_PROSPECT_UPDATED: Final = _procedure(
    "filter_by_prospect_updated_at",
    "prospect_updated_after",
    "prospect_updated_before",
    "prospect.updatedAt",
    {"prospect_deleted": ArgKind.TRI_STATE},
    {"prospect_deleted": "false"},
)

_AUDIT: Final = (("createdAt", _DT), ("updatedAt", _DT), ("createdById", _I), ("updatedById", _I))

OBJECTS: Final[Mapping[str, PardotObject]] = MappingProxyType(
    {
        o.name: o
        for o in (
            _object(
                "externalActivity",
                [
                    ("id", _I),
                    ("extension", _S),
                    ("extensionSalesforceId", _S),
                    ("type", _S),
                    ("typeSalesforceId", _S),
                    ("prospectId", _I),
                    ("value", _S),
                    ("activityDate", _DT),
                    ("createdAt", _DT),
                    ("createdById", _I),
                ],
                [
                    _by_created({}, {}),
                    _procedure(
                        "filter_by_activity_date", "activity_after", "activity_before", "activityDate"
                    ),
                ],
            ),
            _object(
                "visitorActivity",
                [
                    ("id", _I),
                    ("campaignId", _I),
                    ("customRedirectId", _I),
                    ("details", _S),
                    ("emailId", _I),
                    ("emailTemplateId", _I),
                    ("fileId", _I),
                    ("formHandlerId", _I),
                    ("formId", _I),
                    ("landingPageId", _I),
                    ("listEmailId", _I),
                    ("multivariateTestVariationId", _I),
                    ("opportunityId", _I),
                    ("paidSearchAdId", _I),
                    ("prospectId", _I),
                    ("siteSearchQueryId", _I),
                    ("type", _I),
                    ("typeName", _S),
                    ("visitId", _I),
                    ("visitorId", _I),
                    ("visitorPageViewId", _I),
                    ("createdAt", _DT),
                    ("updatedAt", _DT),
                ],
                [
                    _by_created(_VA_EXTRA, _VA_DEFAULTS),
                    _by_updated(_VA_EXTRA, _VA_DEFAULTS, **_VA_ALIASES),
                ],
            ),
            _object(
                "listMembership",
                [
                    ("id", _I),
                    ("listId", _I),
                    ("prospectId", _I),
                    ("optedOut", _B),
                    ("isDeleted", _B),
                    *_AUDIT,
                ],
                [_by_created(_DELETED, _DELETED_DEFAULT), _by_updated(_DELETED, _DELETED_DEFAULT)],
            ),
            _object(
                "prospect",
                [
                    ("id", _I),
                    ("salutation", _S),
                    ("firstName", _S),
                    ("lastName", _S),
                    ("email", _S),
                    ("company", _S),
                    ("jobTitle", _S),
                    ("department", _S),
                    ("website", _S),
                    ("phone", _S),
                    ("fax", _S),
                    ("addressOne", _S),
                    ("addressTwo", _S),
                    ("city", _S),
                    ("state", _S),
                    ("zip", _S),
                    ("country", _S),
                    ("territory", _S),
                    ("industry", _S),
                    ("annualRevenue", _S),
                    ("employees", _S),
                    ("yearsInBusiness", _S),
                    ("source", _S),
                    ("comments", _S),
                    ("score", _I),
                    ("campaignId", _I),
                    ("prospectAccountId", _I),
                    ("assignedToId", _I),
                    ("profileId", _I),
                    ("lifecycleStageId", _I),
                    ("salesforceId", _S),
                    ("salesforceLeadId", _S),
                    ("salesforceContactId", _S),
                    ("salesforceAccountId", _S),
                    ("salesforceOwnerId", _S),
                    ("salesforceLastSync", _DT),
                    ("optedOut", _B),
                    ("isDoNotEmail", _B),
                    ("isDoNotCall", _B),
                    ("doNotSell", _B),
                    ("isReviewed", _B),
                    ("isStarred", _B),
                    ("isEmailHardBounced", _B),
                    ("emailBouncedAt", _DT),
                    ("emailBouncedReason", _S),
                    ("firstActivityAt", _DT),
                    ("lastActivityAt", _DT),
                    ("firstAssignedAt", _DT),
                    ("firstReferrerUrl", _S),
                    ("firstReferrerType", _S),
                    ("firstReferrerQuery", _S),
                    ("convertedAt", _DT),
                    ("convertedFromObjectName", _S),
                    ("convertedFromObjectType", _S),
                    ("isDeleted", _B),
                    *_AUDIT,
                ],
                [_by_created(_DELETED, _DELETED_DEFAULT), _by_updated(_DELETED, _DELETED_DEFAULT)],
            ),
            _object(
                "prospectAccount",
                [
                    ("id", _I),
                    ("name", _S),
                    ("number", _S),
                    ("description", _S),
                    ("phone", _S),
                    ("fax", _S),
                    ("website", _S),
                    ("rating", _S),
                    ("site", _S),
                    ("type", _S),
                    ("annualRevenue", _S),
                    ("industry", _S),
                    ("sic", _S),
                    ("employees", _S),
                    ("ownership", _S),
                    ("tickerSymbol", _S),
                    ("billingAddressOne", _S),
                    ("billingAddressTwo", _S),
                    ("billingCity", _S),
                    ("billingState", _S),
                    ("billingZip", _S),
                    ("billingCountry", _S),
                    ("shippingAddressOne", _S),
                    ("shippingAddressTwo", _S),
                    ("shippingCity", _S),
                    ("shippingState", _S),
                    ("shippingZip", _S),
                    ("shippingCountry", _S),
                    ("salesforceId", _S),
                    ("assignedToId", _I),
                    ("isDeleted", _B),
                    *_AUDIT,
                ],
                [_BY_PROSPECT_UPDATED, _by_updated(_DELETED, _DELETED_DEFAULT)],
            ),
            _object(
                "visitor",
                [
                    ("id", _I),
                    ("prospectId", _I),
                    ("campaignId", _I),
                    ("pageViewCount", _I),
                    ("ipAddress", _S),
                    ("hostname", _S),
                    ("isIdentified", _B),
                    ("doNotSell", _B),
                    ("sourceParameter", _S),
                    ("mediumParameter", _S),
                    ("campaignParameter", _S),
                    ("contentParameter", _S),
                    ("termParameter", _S),
                    ("isDeleted", _B),
                    ("createdAt", _DT),
                    ("updatedAt", _DT),
                ],
                [_BY_PROSPECT_UPDATED, _by_updated(_DELETED, _DELETED_DEFAULT)],
            ),
        )
    }
)

_OBJECTS_FOLDED: Final = {name.casefold(): obj for name, obj in OBJECTS.items()}


def error_message(code: PardotErrorCode, detail: str = "") -> str:
    """The published message of ``code``, with ``detail`` appended the way the API appends it."""
    base = ERROR_MESSAGES[code]
    if not detail:
        return base
    return f"{base} {detail}" if base.endswith(".") else f"{base}: {detail}"


class ExportRequestError(ValueError):
    """An export request the API would refuse; ``code`` is the Pardot error code, ``message`` its text."""

    def __init__(self, code: PardotErrorCode, detail: str = "") -> None:
        self.code = code
        self.message = error_message(code, detail)
        super().__init__(self.message)


@dataclass(frozen=True)
class ExportDefinition:
    """What :func:`validate_definition` resolves: the window-independent part of an export request."""

    object: PardotObject
    fields: tuple[str, ...]
    procedure: Procedure
    extra: Mapping[str, ArgValue]


@dataclass(frozen=True)
class ExportRequest:
    """A validated export request with every argument resolved.

    ``after`` and ``before`` are aware datetimes (``before`` is ``None`` when omitted); ``window_end`` is
    ``before`` or, when omitted, the creation time the request was validated against. ``extra`` holds every
    extra argument of the procedure, defaults applied, normalised (``"true"``/``"false"``/``"all"``, bool, or
    a tuple of type ids; ``type`` is absent when every type is selected).
    """

    object: PardotObject
    fields: tuple[str, ...]
    procedure: Procedure
    after: datetime
    before: datetime | None
    window_end: datetime
    extra: Mapping[str, ArgValue]


def lookup_object(name: str) -> PardotObject | None:
    """The object called ``name`` (any casing), or ``None``."""
    return _OBJECTS_FOLDED.get(name.casefold())


class DateParser(Protocol):
    """Resolves a procedure date argument (in the user's timezone ``tz``, relative to ``now``).

    Returns an aware datetime; raises ``ValueError`` for a value the API refuses (177).
    """

    def __call__(self, value: str, *, now: datetime, tz: tzinfo) -> datetime: ...


def one_year_after(instant: datetime, tz: tzinfo) -> datetime:
    """``instant`` plus one calendar year on the wall clock of ``tz`` (the user's timezone).

    The latest ``*_before`` a window starting at ``instant`` may have, and the latest creation time an
    export with that ``*_after`` and no ``*_before`` may have. 29 February becomes 1 March of the next
    year (PHP's ``+1 year``).
    """
    local = instant.astimezone(tz)
    try:
        return local.replace(year=local.year + 1)
    except ValueError:  # 29 February, and the next year is not a leap year
        return local.replace(year=local.year + 1, month=3, day=1)


def _tri_state(name: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.strip().lower() in DELETED_VALUES:
        return value.strip().lower()
    raise ExportRequestError(PardotErrorCode.INVALID_ARGUMENT, f"{name} must be true, false or all.")


def _boolean(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ExportRequestError(PardotErrorCode.INVALID_ARGUMENT, f"{name} must be true or false.")


def _type_ids(name: str, value: object) -> tuple[int, ...]:
    items = value if isinstance(value, list) else [value]
    ids: list[int] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise ExportRequestError(PardotErrorCode.INVALID_ARGUMENT, f"{name} must be a list of type ids.")
        text = str(item).strip()
        if not text.isdigit() or int(text) not in VISITOR_ACTIVITY_TYPES or int(text) == 5:
            raise ExportRequestError(
                PardotErrorCode.INVALID_ARGUMENT,
                f"{name} contains an unknown visitor activity type {item!r}.",
            )
        ids.append(int(text))
    if not ids:
        raise ExportRequestError(PardotErrorCode.INVALID_ARGUMENT, f"{name} must not be empty.")
    return tuple(sorted(set(ids)))


def _date(name: str, value: object, now: datetime, tz: tzinfo, parse_date: DateParser) -> datetime:
    if not isinstance(value, str):
        raise ExportRequestError(PardotErrorCode.INVALID_ARGUMENT, f"{name} must be a date string.")
    try:
        return parse_date(value, now=now, tz=tz)
    except ValueError as exc:
        raise ExportRequestError(PardotErrorCode.INVALID_ARGUMENT, f"{name}: {exc}.") from exc


def _validate_fields(obj: PardotObject, fields: object) -> tuple[str, ...]:
    if fields is None:
        return tuple(obj.fields)
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise ExportRequestError(PardotErrorCode.INVALID_PROPERTY, "fields must be an array of strings.")
    if not fields:
        raise ExportRequestError(PardotErrorCode.INVALID_PROPERTY, "fields must not be empty.")
    if len(fields) > MAX_FIELDS:  # "The number of fields specified": as given, duplicates included
        raise ExportRequestError(
            PardotErrorCode.INVALID_PROPERTY, f"fields can't contain more than {MAX_FIELDS} fields."
        )
    unique = tuple(dict.fromkeys(str(f) for f in fields))
    unknown = [f for f in unique if f not in obj.fields]
    if unknown:
        raise ExportRequestError(PardotErrorCode.INVALID_FIELDS, f"{', '.join(unknown)} (object {obj.name}).")
    return unique


def _resolve(
    object_name: object, fields: object, procedure_name: object, arguments: object
) -> tuple[PardotObject, tuple[str, ...], Procedure, dict[str, object]]:
    """Object, fields, procedure and canonical argument names (no values checked yet)."""
    if object_name is None:
        raise ExportRequestError(PardotErrorCode.MISSING_PROPERTY, "object")
    if not isinstance(object_name, str) or (obj := lookup_object(object_name)) is None:
        raise ExportRequestError(
            PardotErrorCode.INVALID_PROPERTY, f"object {object_name!r} can't be exported."
        )
    selected = _validate_fields(obj, fields)
    if procedure_name is None:
        raise ExportRequestError(PardotErrorCode.MISSING_PROPERTY, "procedure.name")
    if not isinstance(procedure_name, str) or procedure_name not in obj.procedures:
        raise ExportRequestError(
            PardotErrorCode.UNKNOWN_PROCEDURE, f"{procedure_name!r} is not a procedure of {obj.name}."
        )
    procedure = obj.procedures[procedure_name]
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, Mapping):
        raise ExportRequestError(PardotErrorCode.INVALID_PROPERTY, "procedure.arguments must be an object.")
    args: dict[str, object] = {}
    for raw_name, value in arguments.items():
        name = procedure.arg_aliases.get(str(raw_name), str(raw_name))
        if name not in procedure.argument_names:
            raise ExportRequestError(
                PardotErrorCode.UNKNOWN_ARGUMENT, f"{raw_name!r} is not an argument of {procedure.name}."
            )
        if value is not None:
            args[name] = value
    return obj, selected, procedure, args


def _extra_values(procedure: Procedure, args: Mapping[str, object]) -> Mapping[str, ArgValue]:
    """The procedure's extra arguments, validated and normalised, defaults applied."""
    extra: dict[str, ArgValue] = dict(procedure.extra_defaults)
    for name, kind in procedure.extra_args.items():
        if name not in args:
            continue
        value = args[name]
        if kind is ArgKind.TRI_STATE:
            extra[name] = _tri_state(name, value)
        elif kind is ArgKind.BOOLEAN:
            extra[name] = _boolean(name, value)
        else:
            extra[name] = _type_ids(name, value)
    return MappingProxyType(extra)


def validate_definition(
    object_name: object, procedure_name: object, fields: object = None, arguments: object = None
) -> ExportDefinition:
    """Validate everything about an export that does not depend on its window.

    Checks the object, the fields, the procedure, the argument names and the values of the extra
    arguments, with the same codes as :func:`validate_export_request`. Window arguments (``*_after``,
    ``*_before``) may be present or not; their values are not checked (they depend on the creation time).
    """
    obj, selected, procedure, args = _resolve(object_name, fields, procedure_name, arguments)
    return ExportDefinition(
        object=obj, fields=selected, procedure=procedure, extra=_extra_values(procedure, args)
    )


def validate_export_request(
    object_name: object,
    fields: object,
    procedure_name: object,
    arguments: object,
    *,
    now: datetime,
    tz: tzinfo,
    parse_date: DateParser,
    after_within_year_of_creation: bool = False,
) -> ExportRequest:
    """Validate an export request the way the API does and resolve its arguments.

    ``now`` is the creation time of the export (the reference for relative dates, for an omitted
    ``*_before`` and for the one-year rules); ``tz`` is the user's timezone (dates without a zone, and the
    calendar the one-year rules count in: ``*_before`` at most :func:`one_year_after` ``*_after``, and
    without ``*_before`` ``now`` at most that); ``parse_date`` reads the date arguments (a
    ``ValueError`` from it is a 177). ``fields=None`` selects every field; ``arguments=None``
    means no arguments. ``after_within_year_of_creation`` applies the creation-date rule to windows with
    a ``*_before`` too (the literal reading of the page; by default only an open window is held to it).
    Raises ``ExportRequestError`` with the Pardot code (177 for the one-year rules).
    """
    obj, selected, procedure, args = _resolve(object_name, fields, procedure_name, arguments)
    for required in procedure.required_args:
        if required not in args:
            raise ExportRequestError(PardotErrorCode.MISSING_ARGUMENT, f"{required} is required.")

    after = _date(procedure.after_arg, args[procedure.after_arg], now, tz, parse_date)
    before = (
        _date(procedure.before_arg, args[procedure.before_arg], now, tz, parse_date)
        if procedure.before_arg in args
        else None
    )
    if before is not None and before <= after:
        raise ExportRequestError(
            PardotErrorCode.INVALID_ARGUMENT, f"{procedure.before_arg} must be after {procedure.after_arg}."
        )
    window_end = before if before is not None else now
    latest = one_year_after(after, tz)
    if (before is None or after_within_year_of_creation) and now > latest:
        raise ExportRequestError(
            PardotErrorCode.INVALID_ARGUMENT,
            f"The {procedure.after_arg} must be within a year of the creation date of the Export.",
        )
    if before is not None and before > latest:
        raise ExportRequestError(
            PardotErrorCode.INVALID_ARGUMENT,
            f"The range between {procedure.after_arg} and {procedure.before_arg} can't exceed 1 year.",
        )
    return ExportRequest(
        object=obj,
        fields=selected,
        procedure=procedure,
        after=after,
        before=before,
        window_end=window_end,
        extra=_extra_values(procedure, args),
    )
