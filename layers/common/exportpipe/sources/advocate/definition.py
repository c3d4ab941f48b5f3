"""The Advocate (SaaSquatch) export definition: one export type in one format, per window, with the
filters the type takes, validated against the catalog before any call."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from exportpipe.models.definition import DefinitionBase, ResultFormat, TimeFormat
from exportpipe.sources.advocate import catalog
from exportpipe.sources.advocate.catalog import ExportFormat, ExportType, WindowFilter

# The reference leaves the CSV dialect open [U] (the sandbox ends every row with CRLF): the lenient
# checker, which a last row without a line break passes.
CSV = ResultFormat(extension="csv", content_type="text/csv", checker="csv")
XLSX = ResultFormat(
    extension="xlsx",
    content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    checker="xlsx",
)
FORMATS: Mapping[str, ResultFormat] = {"CSV": CSV, "XLSX": XLSX}

WINDOW_END = "window_end"  # ``params.at``: the window's end (the rewards as they were then)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_ISO_WITH_OFFSET = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})", re.I)


def epoch_ms(value: Any) -> int | None:
    """Epoch milliseconds from a non-negative integer or an ISO-8601 date-time with an offset; None
    for anything else (a bool, a float, a naive or malformed date)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and _ISO_WITH_OFFSET.fullmatch(value.strip()):
        try:
            moment = datetime.fromisoformat(value.strip().replace("z", "Z"))
        except ValueError:
            return None
        return ceil_ms(moment)
    return None


def ceil_ms(moment: datetime) -> int:
    """The first whole millisecond at or after ``moment`` (integer-ms dates t >= moment: t >= it)."""
    delta = moment - _EPOCH
    whole = delta // _MS
    return whole + (1 if delta - whole * _MS else 0)


class AdvocateDefinition(DefinitionBase):
    """One Advocate export (``POST /api/v1/{tenant}/export``): ``type`` × ``format``, run per window.

    The window [start, end) goes into the filter ``window_filter`` names (default per type: the
    latest of creation and last change where the type has it, else creation): the ``*Since`` /
    ``*Before`` params, or for ``REWARD`` the reward filter's ``_gte`` / ``_lt``. ``params`` holds the
    type's other filters under the API's names (``programId``, ``filter``, ``at``, ``fields``, fixed
    ``*Since``/``*Before`` bounds on the other dates); timestamps are epoch ms or ISO-8601 with an
    offset. ``"at": "window_end"`` exports rewards as they were at the window's end.
    """

    source: Literal["advocate"]
    type: ExportType = Field(description="Export type: USER, USER_REFERRAL, REFERRAL, …, REWARD.")
    format: ExportFormat = Field(default="CSV", description="CSV, or XLSX (a .xlsx workbook).")
    window_filter: WindowFilter | None = Field(
        default=None,
        description="Which date the window selects records by: createdOrUpdated, created, updated, or "
        "none (every record, each window); default per type.",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="The type's other filters.")
    max_window_days: int = Field(
        default=31,
        ge=1,
        le=366,
        description="Longest window one export may cover (the API sets no limit; this bounds a file).",
    )

    longest_window: ClassVar[timedelta] = timedelta(days=31)

    @property
    def max_window(self) -> timedelta:
        return timedelta(days=self.max_window_days)

    @property
    def window_on(self) -> WindowFilter:
        """The window filter in effect (the definition's, or its type's default)."""
        return self.window_filter or catalog.WINDOW_FILTERS[self.type][0]

    def default_dataset(self) -> str:
        return catalog.DATASETS[self.type]

    @property
    def result_format(self) -> ResultFormat:
        return FORMATS[self.format]

    @property
    def time_format(self) -> TimeFormat:
        columns = list(catalog.DATE_COLUMNS[self.type])
        fields = self.params.get("fields") or {}
        if self.type == "REWARD" and fields.get("includeReferralFields"):
            columns += catalog.REWARD_REFERRAL_DATE_COLUMNS
        return TimeFormat(
            encoding="epoch_ms", timezone="UTC", columns=columns, column_pattern=catalog.DATE_COLUMN_PATTERN
        )

    def window_params(self) -> tuple[str, str] | None:
        """The (since, before) params the window sets, or None (REWARD, or no window filter)."""
        if self.type == "REWARD" or self.window_on is WindowFilter.NONE:
            return None
        prefix = self.window_on.value
        return f"{prefix}Since", f"{prefix}Before"

    @model_validator(mode="after")
    def _against_catalog(self) -> AdvocateDefinition:
        problems: list[str] = []
        allowed = catalog.WINDOW_FILTERS[self.type]
        if self.window_filter is not None and self.window_filter not in allowed:
            problems.append(
                f"window_filter: {self.window_filter.value!r} does not apply to {self.type} exports, "
                f"expected one of {[w.value for w in allowed]}"
            )
        else:
            problems += _param_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _param_problems(definition: AdvocateDefinition) -> list[str]:
    problems: list[str] = []
    set_by_window = definition.window_params() or ()
    for key, value in definition.params.items():
        where = f"params.{key}"
        types = catalog.APPLIES_TO.get(key)
        if types is None:
            problems.append(f"{where}: unknown parameter, expected one of {sorted(catalog.APPLIES_TO)}")
        elif definition.type not in types:
            problems.append(
                f"{where}: does not apply to {definition.type} exports (only to {', '.join(sorted(types))})"
            )
        elif key in set_by_window:
            problems.append(
                f"{where}: set by the export window (window_filter {definition.window_on.value}), "
                "do not give it in the definition"
            )
        elif reason := _value_problem(definition, key, value):
            problems.append(f"{where}: {reason}")
    problems += _bound_order_problems(definition.params)
    if definition.type == "REWARD" and isinstance(definition.params.get("filter"), dict):
        problems += _filter_problems(definition.params["filter"], "params.filter", definition)
    return problems


def _value_problem(definition: AdvocateDefinition, key: str, value: Any) -> str | None:
    if key in catalog.TIMESTAMP_PARAMS:
        ok = epoch_ms(value) is not None
        return (
            None
            if ok
            else f"must be epoch milliseconds or an ISO-8601 date-time with an offset, got {value!r}"
        )
    if key == "programId":
        return (
            None if isinstance(value, str) and value.strip() else f"must be a non-empty string, got {value!r}"
        )
    if key == "at":
        ok = value == WINDOW_END or epoch_ms(value) is not None
        return (
            None
            if ok
            else f'must be "{WINDOW_END}", epoch milliseconds or an ISO-8601 date-time, got {value!r}'
        )
    if key == "filter":
        return None if isinstance(value, dict) else "must be an object (a RewardFilterInput)"
    return _fields_problem(definition.type, value)


def _fields_problem(export_type: str, value: Any) -> str | None:
    if not isinstance(value, dict):
        return "must be an object of boolean flags"
    for flag, setting in value.items():
        owner = catalog.FIELD_FLAGS.get(flag)
        if owner is None:
            return f"unknown flag {flag!r}, expected one of {sorted(catalog.FIELD_FLAGS)}"
        if owner != export_type:
            return f"{flag} applies to {owner} exports only"
        if not isinstance(setting, bool):
            return f"{flag} must be true or false, got {setting!r}"
    return None


def _bound_order_problems(params: Mapping[str, Any]) -> list[str]:
    problems = []
    for prefix in ("created", "updated", "createdOrUpdated"):
        since, before = epoch_ms(params.get(f"{prefix}Since")), epoch_ms(params.get(f"{prefix}Before"))
        if since is not None and before is not None and before <= since:
            problems.append(f"params.{prefix}Before: must be after {prefix}Since")
    return problems


def _filter_problems(value: Mapping[str, Any], where: str, definition: AdvocateDefinition) -> list[str]:
    """What is wrong with a RewardFilterInput (recursively through AND / OR)."""
    problems: list[str] = []
    window_field = catalog.REWARD_WINDOW_FIELDS.get(definition.window_on)
    for key, item in value.items():
        path = f"{where}.{key}"
        if key in ("AND", "OR"):
            if not isinstance(item, list) or not all(isinstance(sub, dict) for sub in item):
                problems.append(f"{path}: must be a list of RewardFilterInput objects")
                continue
            for n, sub in enumerate(item):
                problems += _filter_problems(sub, f"{path}[{n}]", definition)
            continue
        name, _, op = key.rpartition("_")
        if op not in catalog.REWARD_FILTER_OPS.get(name, ()):
            problems.append(f"{path}: not a RewardFilterInput field (<field>_<operator>)")
        elif name == window_field and op in ("gte", "lt", "interval", "timeframe"):
            problems.append(
                f"{path}: set by the export window (window_filter {definition.window_on.value}), "
                "do not give it in the definition"
            )
        elif item is not None and (reason := _filter_value_problem(name, op, item)):
            problems.append(f"{path}: {reason}")
    return problems


def _filter_value_problem(name: str, op: str, value: Any) -> str | None:
    if op == "exists":
        return None if isinstance(value, bool) else "must be true or false"
    if name.startswith("date"):
        return _date_filter_problem(op, value)
    if name == "statuses":
        items = value if op in ("in", "all", "nin") else [value]
        if not isinstance(items, list) or not all(_status_ok(item) for item in items):
            shape = "a list of " if op in ("in", "all", "nin") else ""
            return f"must be {shape}{{status: {'|'.join(catalog.REWARD_STATUSES)}, at?: date}}"
        return None
    items = value if op in ("in", "nin") else [value]
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
        return "must be a non-empty list of strings" if op in ("in", "nin") else "must be a non-empty string"
    if name == "type" and (unknown := [v for v in items if v not in catalog.REWARD_TYPES]):
        return f"unknown reward type(s) {unknown}, expected {', '.join(catalog.REWARD_TYPES)}"
    return None


def _date_filter_problem(op: str, value: Any) -> str | None:
    if op == "timeframe":
        return None if isinstance(value, str) and value else "must be a relative timeframe (a string)"
    if op == "interval":
        start, sep, end = value.partition("/") if isinstance(value, str) else ("", "", "")
        ok = bool(sep) and epoch_ms(start) is not None and epoch_ms(end) is not None
        return None if ok else "must be an ISO-8601 interval <start>/<end> (each with an offset)"
    ok = epoch_ms(value) is not None
    return None if ok else "must be epoch milliseconds or an ISO-8601 date-time with an offset"


def _status_ok(item: Any) -> bool:
    if not isinstance(item, dict) or set(item) - {"status", "at"}:
        return False
    at = item.get("at")
    return item.get("status") in catalog.REWARD_STATUSES and (at is None or epoch_ms(at) is not None)


def iter_reward_window(
    definition: AdvocateDefinition, start_ms: int, end_ms: int
) -> Iterator[tuple[str, int]]:
    """The reward filter conditions a REWARD export's window sets (none with window_filter none)."""
    field = catalog.REWARD_WINDOW_FIELDS.get(definition.window_on)
    if field is not None:
        yield f"{field}_gte", start_ms
        yield f"{field}_lt", end_ms
