"""Catalog of the Account Engagement (Pardot) Export API v5: objects, procedures, arguments, fields.

This module is the single description of what an export request may contain. The pipeline uses it to
reject a bad export definition before any upstream call, and the development sandbox's request
validation (:mod:`exportpipe_dev.sandbox.pardot_requests`: error codes, argument values, the one-year
rules) builds on it as the API's truth, so both agree by construction. Standard library only (it ships
in the Lambda layer); the request-validation half does not.

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
  bounded or not) is the sandbox's ``validate_export_request(..., after_within_year_of_creation=True)``.
- The v3/v4 JSON example (``"created_after": "2019-12-25 10:00:00", "created_before": "2020-12-25
  24:59:59"``) is *refused*: hour 24 rolls over (the sandbox's date syntax reads it as PHP does), so it
  ends 2020-12-26 00:59:59, 14:59:59 past one calendar year. The public record does not say how the API
  itself treats its example; no leniency beyond the calendar year is invented.
- Date arguments: ``RELATIVE_DATES`` (``today``, ``yesterday``, ``last_7_days``, ``this_month``,
  ``last_month``) or "a custom time specified in GNU Date Input Syntax format". Reading them is not this
  module's business: the pipeline never parses such values (it sends ISO 8601 instants with the user's
  offset), so the sandbox's ``validate_export_request`` takes the parser (``parse_date``) from its caller, the
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
from enum import StrEnum
from types import MappingProxyType
from typing import Final

__all__ = [
    "DELETED_VALUES",
    "MAX_FIELDS",
    "OBJECTS",
    "VISITOR_ACTIVITY_TYPES",
    "ArgKind",
    "ArgValue",
    "FieldType",
    "PardotObject",
    "Procedure",
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


MAX_FIELDS: Final = 150
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
