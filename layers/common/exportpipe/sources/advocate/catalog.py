"""Catalog of the impact.com Advocate (SaaSquatch) Export API: export types, formats, the filters
each type takes, the reward filter's fields, and the date columns of the files.

What the reference (``source-apis.md`` section 1) gives and what was chosen here:

- Six types and the filter applicability table are the current spec's (``ExportStub`` v13):
  ``created*`` for every type but ``REWARD``; ``updated*``, ``createdOrUpdated*`` and ``programId`` for
  ``USER``, ``USER_REFERRAL``, ``REFERRAL``; ``filter`` (GraphQL ``RewardFilterInput``) and ``at`` for
  ``REWARD``; each ``fields`` flag for the type it names. What the server does with a filter that does
  not apply is undocumented (the sandbox ignores it); a definition that gives one is refused before
  any call, so nobody believes an export filtered that is not.
- Timestamps are epoch milliseconds (every example; the files' dates are documented as "Unix
  timestamp (milliseconds)").
- The reward filter's fields and operators are the platform's GraphQL schema as the sandbox emulates
  it (``_eq``/``_in``/``_ne``/``_nin`` on keys, ``_gte``/``_lt``/``_timeframe``/``_interval`` (and
  ``_exists``) on dates, ``statuses_*`` with ``{status, at}``); relative timeframes are accepted here
  though the sandbox does not emulate them.
- Date columns: those the public Singer tap converts from epoch ms (``dateCreated``, ``dateReferral*``,
  ``dateModerated``, ``dateConverted``) plus the sandbox's chosen columns for the newer types; any
  column named ``date<Something>`` (after a ``user.``/``referral.`` prefix) is one too. Column lists
  of the newer types are not documented [U], so the manifest gives the rule as well as the list.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Literal

ExportType = Literal["USER", "USER_REFERRAL", "REFERRAL", "USER_REWARD_BALANCE", "REWARD_BALANCE", "REWARD"]
EXPORT_TYPES: tuple[str, ...] = (
    "USER",
    "USER_REFERRAL",
    "REFERRAL",
    "USER_REWARD_BALANCE",
    "REWARD_BALANCE",
    "REWARD",
)
ExportFormat = Literal["CSV", "XLSX"]

TIMESTAMP_PARAMS: tuple[str, ...] = (
    "createdSince",
    "createdBefore",
    "updatedSince",
    "updatedBefore",
    "createdOrUpdatedSince",
    "createdOrUpdatedBefore",
)
_PEOPLE = frozenset({"USER", "USER_REFERRAL", "REFERRAL"})
_NOT_REWARD = frozenset(EXPORT_TYPES) - {"REWARD"}

#: Which export types each ``params`` member works with (the spec's table).
APPLIES_TO: Mapping[str, frozenset[str]] = {
    "createdSince": _NOT_REWARD,
    "createdBefore": _NOT_REWARD,
    "updatedSince": _PEOPLE,
    "updatedBefore": _PEOPLE,
    "createdOrUpdatedSince": _PEOPLE,
    "createdOrUpdatedBefore": _PEOPLE,
    "programId": _PEOPLE,
    "filter": frozenset({"REWARD"}),
    "at": frozenset({"REWARD"}),
    "fields": frozenset({"USER", "REWARD"}),
}
#: ``params.fields`` flags and the type each works with.
FIELD_FLAGS: Mapping[str, str] = {
    "includeUserStatsFields": "USER",
    "includeUserFields": "REWARD",
    "includeReferralFields": "REWARD",
}


class WindowFilter(StrEnum):
    """Which of a record's dates the export window [start, end) selects it by."""

    CREATED_OR_UPDATED = "createdOrUpdated"  # the latest of creation and last change
    CREATED = "created"
    UPDATED = "updated"  # changed after its creation (never-changed records never match)
    NONE = "none"  # no window filter: every record as of the export (a snapshot per window)


#: The window filters each type can be exported by; the first is its default.
WINDOW_FILTERS: Mapping[str, tuple[WindowFilter, ...]] = {
    "USER": (WindowFilter.CREATED_OR_UPDATED, WindowFilter.CREATED, WindowFilter.UPDATED, WindowFilter.NONE),
    "USER_REFERRAL": (
        WindowFilter.CREATED_OR_UPDATED,
        WindowFilter.CREATED,
        WindowFilter.UPDATED,
        WindowFilter.NONE,
    ),
    "REFERRAL": (
        WindowFilter.CREATED_OR_UPDATED,
        WindowFilter.CREATED,
        WindowFilter.UPDATED,
        WindowFilter.NONE,
    ),
    # balances: only created* applies (the users created in the window, their balances as of the
    # export); "none" exports every balance each window
    "USER_REWARD_BALANCE": (WindowFilter.CREATED, WindowFilter.NONE),
    "REWARD_BALANCE": (WindowFilter.CREATED, WindowFilter.NONE),
    # rewards take no created* params: the window goes into the reward filter (dateModified /
    # dateCreated, _gte start, _lt end: GraphQL's own bounds, whatever window_bounds says)
    "REWARD": (WindowFilter.CREATED_OR_UPDATED, WindowFilter.CREATED, WindowFilter.NONE),
}
#: The reward filter field a window filter of a REWARD export sets.
REWARD_WINDOW_FIELDS: Mapping[WindowFilter, str] = {
    WindowFilter.CREATED_OR_UPDATED: "dateModified",
    WindowFilter.CREATED: "dateCreated",
}

_KEY_OPS = ("eq", "in")
_DATE_OPS = ("gte", "lt", "timeframe", "interval")
_OPTIONAL_DATE_OPS = (*_DATE_OPS, "exists")
#: RewardFilterInput: field → its operators (``<field>_<op>`` keys), besides ``AND`` / ``OR``.
REWARD_FILTER_OPS: Mapping[str, tuple[str, ...]] = {
    "id": _KEY_OPS,
    "type": _KEY_OPS,
    "unit": ("eq", "in", "ne", "nin"),
    "dateCreated": _DATE_OPS,
    "dateGiven": _OPTIONAL_DATE_OPS,
    "dateExpires": _OPTIONAL_DATE_OPS,
    "dateCancelled": _OPTIONAL_DATE_OPS,
    "dateScheduledFor": _OPTIONAL_DATE_OPS,
    "dateRedeemed": _OPTIONAL_DATE_OPS,
    "dateModified": _DATE_OPS,
    "rewardSource": _KEY_OPS,
    "userId": ("eq",),
    "accountId": ("eq",),
    "programId": ("eq", "in", "exists"),
    "programRewardKey": ("eq", "in", "exists"),
    "globalRewardKey": ("eq", "in", "exists"),
    "referralId": ("eq",),
    "statuses": ("eq", "ne", "in", "all", "nin"),
}
REWARD_TYPES: tuple[str, ...] = ("PCT_DISCOUNT", "CREDIT", "FUELTANK", "INTEGRATION")
REWARD_STATUSES: tuple[str, ...] = ("PENDING", "CANCELLED", "EXPIRED", "REDEEMED", "AVAILABLE")

#: The dataset folder of each type when a definition names none (the Singer tap's stream names).
DATASETS: Mapping[str, str] = {
    "USER": "users",
    "USER_REFERRAL": "user_referrals",
    "REFERRAL": "referrals",
    "USER_REWARD_BALANCE": "user_reward_balances",
    "REWARD_BALANCE": "reward_balances",
    "REWARD": "rewards",
}

#: Columns of each type known to hold epoch-ms dates (file order); see the module docstring.
DATE_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "USER": ("dateCreated", "dateModified"),
    "USER_REFERRAL": ("dateCreated", "dateModified", "dateReferralStarted", "dateConverted"),
    "REFERRAL": (
        "dateReferralStarted",
        "dateConverted",
        "dateReferralPaid",
        "dateReferralEnded",
        "dateModerated",
        "dateModified",
    ),
    "USER_REWARD_BALANCE": ("dateCreated",),
    "REWARD_BALANCE": (),
    "REWARD": (
        "dateCreated",
        "dateScheduledFor",
        "dateGiven",
        "dateExpires",
        "dateCancelled",
        "dateRedeemed",
        "dateModified",
    ),
}
#: Further date columns of REWARD exports with ``includeReferralFields``.
REWARD_REFERRAL_DATE_COLUMNS: tuple[str, ...] = ("referral.dateReferralStarted", "referral.dateConverted")
#: Any column whose name matches this holds epoch-ms dates (a regular expression).
DATE_COLUMN_PATTERN = r"^(?:[A-Za-z]+\.)?date[A-Z][A-Za-z]*$"
