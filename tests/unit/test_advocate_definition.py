"""Advocate definitions: every type and format, every filter the reference lists where it applies (and
refused, naming the field and the reason, where it does not), windows in epoch ms under each reading
of the bounds, and the manifest's description of the files' dates."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from exportpipe.errors import InvalidDefinitionError
from exportpipe.http import host_allowed
from exportpipe.models.definition import Window
from exportpipe.models.job import CommitIntent
from exportpipe.sources.advocate import POLL, SPEC
from exportpipe.sources.advocate.catalog import APPLIES_TO, EXPORT_TYPES, WINDOW_FILTERS
from exportpipe.sources.advocate.client import AdvocateClient, AdvocateCredentials
from exportpipe.sources.advocate.definition import AdvocateDefinition
from exportpipe.sources.base import Recovery
from exportpipe.sources.registry import SOURCES, parse_definition

START = "2025-01-01T00:00:00Z"
JAN = datetime(2025, 1, 1, tzinfo=UTC)
MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z in epoch ms

#: A valid value of each parameter, for the types it applies to.
VALUES: dict[str, Any] = {
    "createdSince": MS,
    "createdBefore": "2026-01-01T00:00:00+01:00",
    "updatedSince": MS,
    "updatedBefore": MS + 1,
    "createdOrUpdatedSince": MS,
    "createdOrUpdatedBefore": MS + 1,
    "programId": "referral-program",
    "filter": {"type_eq": "CREDIT"},
    "at": "window_end",
}
FLAGS = {"USER": {"includeUserStatsFields": True}, "REWARD": {"includeUserFields": True}}


def _definition(**fields: Any) -> AdvocateDefinition:
    payload = {"source": "advocate", "name": "adv", "type": "USER", "start": START, **fields}
    parsed = parse_definition(payload)
    assert isinstance(parsed, AdvocateDefinition)
    return parsed


def _refused(**fields: Any) -> list[tuple[str, str]]:
    with pytest.raises(InvalidDefinitionError) as caught:
        _definition(**fields)
    return caught.value.errors


def _client(window_bounds: str = "since-inclusive") -> AdvocateClient:
    creds = {"tenant_alias": "test_t", "api_key": "TEST_K", "window_bounds": window_bounds}
    return AdvocateClient(AdvocateCredentials.parse(creds))


# ---- types, formats, the spec ---------------------------------------------------------------------


def test_the_source_is_registered_with_its_own_poll_policy_hosts_and_recovery() -> None:
    assert SOURCES["advocate"] is SPEC and SPEC.definition is AdvocateDefinition
    assert SPEC.recovery is Recovery.RECREATE and SPEC.poll is POLL and SPEC.webhook is None
    assert SPEC.allowed_hosts == ("*.storage.googleapis.com",)  # the reference's signed-URL host
    assert host_allowed("storage.googleapis.com", SPEC.allowed_hosts)
    assert not host_allowed("storage.googleapis.com.evil.example", SPEC.allowed_hosts)
    assert SPEC.connection_setting == "ADVOCATE_SECRET_ARN"


@pytest.mark.parametrize("export_type", EXPORT_TYPES)
@pytest.mark.parametrize(
    ("fmt", "extension", "content_type", "checker"),
    [
        ("CSV", "csv", "text/csv", "csv"),
        ("XLSX", "xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx"),
    ],
)
def test_every_type_in_both_formats(
    export_type: str, fmt: str, extension: str, content_type: str, checker: str
) -> None:
    definition = _definition(type=export_type, format=fmt)
    result = definition.result_format
    assert (result.extension, result.content_type, result.checker) == (extension, content_type, checker)
    assert definition.window_on is WINDOW_FILTERS[export_type][0]
    assert definition.max_window == timedelta(days=31)
    assert (
        definition.dataset_name
        == {
            "USER": "users",
            "USER_REFERRAL": "user_referrals",
            "REFERRAL": "referrals",
            "USER_REWARD_BALANCE": "user_reward_balances",
            "REWARD_BALANCE": "reward_balances",
            "REWARD": "rewards",
        }[export_type]
    )
    # a job's stored definition parses back to the same format
    again = parse_definition(definition.model_dump(mode="json"))
    assert again == definition and again.result_format == result


def test_the_format_and_type_are_the_apis_enums() -> None:
    assert _definition().format == "CSV"
    assert [f for f, _ in _refused(format="xlsx")] == ["format"]
    assert [f for f, _ in _refused(type="USERS")] == ["type"]
    assert [f for f, _ in _refused(max_window_days=400)] == ["max_window_days"]


# ---- filters per type -----------------------------------------------------------------------------


def _cases(applies: bool) -> list[tuple[str, str]]:
    return [(t, p) for p, types in APPLIES_TO.items() for t in EXPORT_TYPES if (t in types) is applies]


@pytest.mark.parametrize(("export_type", "param"), _cases(True))
def test_each_filter_is_accepted_for_the_types_it_applies_to(export_type: str, param: str) -> None:
    # the window sets its own pair: give the others with the window on another date (or none)
    window = "none" if param.startswith(("created", "updated")) else None
    value = FLAGS[export_type] if param == "fields" else VALUES[param]
    definition = _definition(type=export_type, window_filter=window, params={param: value})
    assert definition.params == {param: value}


@pytest.mark.parametrize(("export_type", "param"), _cases(False))
def test_each_filter_is_refused_for_the_types_it_does_not_apply_to(export_type: str, param: str) -> None:
    value = FLAGS["USER"] if param == "fields" else VALUES[param]
    ((field, reason),) = _refused(type=export_type, window_filter="none", params={param: value})
    assert field == f"params.{param}"
    assert reason.startswith(f"does not apply to {export_type} exports (only to ")


def test_filters_the_window_sets_are_refused() -> None:
    ((field, reason),) = _refused(params={"createdOrUpdatedSince": MS})
    assert (field, reason) == (
        "params.createdOrUpdatedSince",
        "set by the export window (window_filter createdOrUpdated), do not give it in the definition",
    )
    assert _refused(window_filter="created", params={"createdBefore": MS})[0][0] == "params.createdBefore"
    # the other dates stay fixed filters
    assert _definition(window_filter="created", params={"updatedSince": MS}).params == {"updatedSince": MS}
    ((field, reason),) = _refused(type="REWARD", params={"filter": {"AND": [{"dateModified_gte": MS}]}})
    assert field == "params.filter.AND[0].dateModified_gte" and reason.startswith("set by the export window")


def test_a_window_filter_the_type_lacks_is_refused() -> None:
    ((field, reason),) = _refused(type="REWARD_BALANCE", window_filter="updated")
    assert field == "window_filter"
    assert reason == "'updated' does not apply to REWARD_BALANCE exports, expected one of ['created', 'none']"
    assert [f for f, _ in _refused(window_filter="modified")] == ["window_filter"]


@pytest.mark.parametrize(
    ("params", "field", "reason"),
    [
        ({"createdSince": -1}, "params.createdSince", "must be epoch milliseconds or an ISO-8601"),
        ({"createdSince": 1.5}, "params.createdSince", "must be epoch milliseconds"),
        ({"createdSince": True}, "params.createdSince", "must be epoch milliseconds"),
        ({"createdSince": "2025-01-01T00:00:00"}, "params.createdSince", "must be epoch milliseconds"),
        ({"createdSince": "yesterday"}, "params.createdSince", "must be epoch milliseconds"),
        ({"createdSince": MS, "createdBefore": MS}, "params.createdBefore", "must be after createdSince"),
        ({"programId": ""}, "params.programId", "must be a non-empty string"),
        ({"colour": 1}, "params.colour", "unknown parameter, expected one of ["),
        ({"fields": {"includeUserFields": True}}, "params.fields", "includeUserFields applies to REWARD"),
        ({"fields": {"includeUserStatsFields": 1}}, "params.fields", "includeUserStatsFields must be true"),
        ({"fields": {"everything": True}}, "params.fields", "unknown flag 'everything'"),
        ({"fields": []}, "params.fields", "must be an object of boolean flags"),
    ],
)
def test_bad_values_name_the_field_and_the_reason(params: dict[str, Any], field: str, reason: str) -> None:
    errors = _refused(window_filter="none", params=params)
    assert len(errors) == 1 and errors[0][0] == field and errors[0][1].startswith(reason), errors


@pytest.mark.parametrize(
    ("reward_filter", "field", "reason"),
    [
        ({"colour_eq": "x"}, "params.filter.colour_eq", "not a RewardFilterInput field"),
        ({"userId_in": ["a"]}, "params.filter.userId_in", "not a RewardFilterInput field"),
        ({"type_eq": "GOLD"}, "params.filter.type_eq", "unknown reward type(s) ['GOLD']"),
        ({"type_in": "CREDIT"}, "params.filter.type_in", "must be a non-empty list of strings"),
        ({"dateGiven_exists": "yes"}, "params.filter.dateGiven_exists", "must be true or false"),
        ({"dateGiven_gte": "soon"}, "params.filter.dateGiven_gte", "must be epoch milliseconds"),
        ({"dateGiven_interval": "2025-01-01"}, "params.filter.dateGiven_interval", "must be an ISO-8601"),
        ({"statuses_eq": {"status": "GONE"}}, "params.filter.statuses_eq", "must be {status: PENDING|"),
        ({"statuses_in": {"status": "PENDING"}}, "params.filter.statuses_in", "must be a list of {status"),
        ({"OR": {"type_eq": "CREDIT"}}, "params.filter.OR", "must be a list of RewardFilterInput objects"),
        ({"OR": [{"unit_eq": 5}]}, "params.filter.OR[0].unit_eq", "must be a non-empty string"),
    ],
)
def test_the_reward_filter_is_checked_field_by_field(
    reward_filter: dict[str, Any], field: str, reason: str
) -> None:
    errors = _refused(type="REWARD", params={"filter": reward_filter})
    assert len(errors) == 1 and errors[0][0] == field and errors[0][1].startswith(reason), errors


def test_a_full_reward_filter_passes() -> None:
    reward_filter = {
        "AND": [{"type_in": ["CREDIT", "PCT_DISCOUNT"]}, {"OR": [{"unit_eq": "POINT"}, {"unit_nin": ["%"]}]}],
        "dateGiven_exists": True,
        "dateRedeemed_interval": "2025-01-01T00:00:00Z/2025-02-01T00:00:00Z",
        "dateExpires_timeframe": "next_30_days",
        "statuses_in": [{"status": "AVAILABLE", "at": MS}, {"status": "REDEEMED"}],
        "programId_exists": True,
        "rewardSource_eq": "FRIEND_SIGNUP",
        "dateCreated_lt": "2026-01-01T00:00:00Z",
    }
    definition = _definition(type="REWARD", params={"filter": reward_filter, "at": MS})
    assert definition.params["filter"] == reward_filter


def test_every_problem_is_reported_at_once() -> None:
    errors = _refused(type="REFERRAL", params={"filter": {}, "programId": 3, "fields": {}})
    assert sorted(f for f, _ in errors) == ["params.fields", "params.filter", "params.programId"]


# ---- windows in epoch ms --------------------------------------------------------------------------

# what each reading of the bounds selects: (since, before) → does a record at t match?
READINGS = {
    "since-inclusive": lambda s, b, t: s <= t < b,
    "inclusive": lambda s, b, t: s <= t <= b,
    "exclusive": lambda s, b, t: s < t < b,
    "before-inclusive": lambda s, b, t: s < t <= b,
}


@pytest.mark.parametrize("reading", sorted(READINGS))
def test_consecutive_windows_select_each_millisecond_once_under_every_reading(reading: str) -> None:
    client = _client(reading)
    definition = _definition(type="REFERRAL")
    edges = [
        JAN,
        JAN + timedelta(hours=1),
        JAN + timedelta(hours=1, microseconds=1500),
        JAN + timedelta(days=2),
    ]
    windows = [Window.of(a, b) for a, b in itertools.pairwise(edges)]
    bounds = []
    for window in windows:
        params = client.export_body(definition, window)["params"]
        bounds.append((params["createdOrUpdatedSince"], params["createdOrUpdatedBefore"]))
    selects = READINGS[reading]
    first = bounds[0][0]
    for t in [*range(first - 3, first + 3), *(b[1] + d for b in bounds for d in (-2, -1, 0, 1, 2))]:
        hits = [n for n, (s, b) in enumerate(bounds) if selects(s, b, t)]
        inside = MS <= t < int((edges[-1] - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(milliseconds=1))
        assert len(hits) == (1 if inside else 0), (reading, t, hits)
    # the default reading sends the window's own ends; a start within a millisecond rounds up
    if reading == "since-inclusive":
        assert bounds[0] == (MS, MS + 3_600_000) and bounds[1] == (MS + 3_600_000, MS + 3_600_002)


@pytest.mark.parametrize("export_type", ["USER_REWARD_BALANCE", "REWARD_BALANCE"])
def test_balances_are_windowed_on_creation_or_not_at_all(export_type: str) -> None:
    window = Window.of(JAN, JAN + timedelta(days=1))
    created = _client().export_body(_definition(type=export_type), window)
    assert created["params"] == {"createdSince": MS, "createdBefore": MS + 86_400_000}
    snapshot = _client().export_body(_definition(type=export_type, window_filter="none"), window)
    assert snapshot["params"] is None


def test_rewards_are_windowed_in_their_filter_with_graphqls_own_bounds() -> None:
    window = Window.of(JAN, JAN + timedelta(days=1))
    end = MS + 86_400_000
    for reading in READINGS:  # the setting is about *Since/*Before only
        body = _client(reading).export_body(_definition(type="REWARD", params={"at": "window_end"}), window)
        assert body["params"] == {"at": end, "filter": {"dateModified_gte": MS, "dateModified_lt": end}}
    given = {"type_eq": "CREDIT"}
    created = _definition(
        type="REWARD", window_filter="created", params={"filter": given, "at": "2025-01-01T01:00:00+01:00"}
    )
    body = _client().export_body(created, window)
    assert body == {
        "type": "REWARD",
        "format": "CSV",
        "name": f"exportpipe adv {MS}-{end}",
        "params": {"filter": {"AND": [given, {"dateCreated_gte": MS, "dateCreated_lt": end}]}, "at": MS},
    }


def test_fixed_bounds_are_sent_in_epoch_ms_besides_the_windows() -> None:
    window = Window.of(JAN, JAN + timedelta(days=1))
    definition = _definition(
        type="USER_REFERRAL",
        window_filter="updated",
        params={"createdSince": "2024-06-01T00:00:00Z", "programId": "partner-program"},
    )
    body = _client("inclusive").export_body(definition, window)
    assert body["format"] == "CSV" and body["type"] == "USER_REFERRAL"
    assert body["params"] == {
        "createdSince": 1_717_200_000_000,
        "programId": "partner-program",
        "updatedSince": MS,
        "updatedBefore": MS + 86_400_000 - 1,
    }


def test_windows_are_planned_up_to_the_longest_window() -> None:
    definition = _definition(max_window_days=7)
    window = definition.plan_window(None, JAN + timedelta(days=30))
    assert window == Window.of(JAN, JAN + timedelta(days=7))


# ---- dates in the manifest ------------------------------------------------------------------------


def test_the_files_dates_are_described_for_the_manifest() -> None:
    referral = _definition(type="REFERRAL").time_format
    assert referral.encoding == "epoch_ms" and referral.timezone == "UTC"
    assert "dateReferralStarted" in referral.columns and "dateModerated" in referral.columns
    plain = _definition(type="REWARD").time_format
    joined = _definition(type="REWARD", params={"fields": {"includeReferralFields": True}}).time_format
    assert set(joined.columns) - set(plain.columns) == {
        "referral.dateReferralStarted",
        "referral.dateConverted",
    }
    pattern = re.compile(plain.column_pattern or "")
    assert all(pattern.match(c) for c in joined.columns)
    assert not [c for c in ("id", "amount", "update", "dates", "email") if pattern.match(c)]


def test_a_commit_intent_without_a_time_format_is_recorded_as_before() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    plain = CommitIntent(owner="o", delivered_at=at, format="csv")
    assert plain.model_dump(mode="json") == {
        "owner": "o",
        "delivered_at": "2026-01-01T00:00:00Z",
        "format": "csv",
        "timezone": None,
    }
    described = CommitIntent(owner="o", delivered_at=at, format="csv", time_format=_definition().time_format)
    assert CommitIntent.model_validate(described.model_dump(mode="json")) == described
