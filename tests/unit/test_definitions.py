from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from exportpipe.errors import InvalidDefinitionError
from exportpipe.models.definition import Window
from exportpipe.sources.pardot.definition import PardotDefinition
from exportpipe.sources.registry import parse_definition
from tests.conftest import load_event


def _definition(**changes: Any) -> dict[str, Any]:
    base = dict(load_event("start_export_schedule")["definition"])
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def _errors(payload: Any) -> dict[str, str]:
    with pytest.raises(InvalidDefinitionError) as info:
        parse_definition(payload)
    found: dict[str, str] = {}
    for field, reason in info.value.errors:
        found[field] = f"{found[field]} | {reason}" if field in found else reason
    return found


def test_sample_definition_is_valid() -> None:
    d = parse_definition(_definition())
    assert isinstance(d, PardotDefinition)
    assert d.dataset_name == "visitor_activity"
    assert d.spec.after_arg == "created_after"


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"source": "salesforce"}, "source", "must be one of"),
        ({"name": "Has Spaces"}, "name", "String should match pattern"),
        ({"object": "opportunity"}, "object", "unknown object 'opportunity'"),
        (
            {"procedure": "filter_by_prospect_updated_at"},
            "procedure",
            "is not a procedure of visitorActivity",
        ),
        ({"fields": ["id", "nope"]}, "fields", "unknown field(s) of visitorActivity: nope"),
        ({"fields": []}, "fields", "must not be empty"),
        ({"fields": ["id", "id"]}, "fields", "duplicated field(s): id"),
        (
            {"arguments": {"created_after": "yesterday"}},
            "arguments.created_after",
            "set by the export window",
        ),
        ({"arguments": {"deleted": "all"}}, "arguments.deleted", "not an argument of visitorActivity"),
        ({"arguments": {"prospect_only": "maybe"}}, "arguments.prospect_only", "must be true or false"),
        ({"arguments": {"type": [1, 5]}}, "arguments.type", "unknown visitor activity type id(s) [5]"),
        ({"timezone": "Mars/Olympus"}, "timezone", "unknown IANA timezone"),
        ({"start": "2026-11-01T00:00:00"}, "start", "timezone"),
        ({"start": None}, "start", "Field required"),
        ({"max_window_days": 400}, "max_window_days", "less than or equal to 364"),
        ({"surprise": 1}, "surprise", "Extra inputs are not permitted"),
    ],
)
def test_invalid_definitions_name_the_field_and_the_reason(
    changes: dict[str, Any], field: str, reason: str
) -> None:
    # GIVEN a definition with one bad field WHEN it is parsed THEN the error names that field and why
    errors = _errors(_definition(**changes))
    assert field in errors, errors
    assert reason in errors[field]


def test_more_than_150_fields_is_refused() -> None:
    fields = [f"f{i}" for i in range(151)]
    errors = _errors(_definition(fields=fields))
    assert "151 fields given, at most 150" in errors["fields"]


def test_not_an_object_is_refused() -> None:
    assert _errors(["not", "a", "definition"]) == {"definition": "must be a JSON object"}


def test_plan_window_starts_at_watermark_and_is_capped() -> None:
    d = parse_definition(_definition(start="2024-01-01T00:00:00Z", max_window_days=30))
    until = datetime(2026, 11, 25, 6, 5, 42, tzinfo=UTC)
    first = d.plan_window(None, until)
    assert first == Window.of(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 31, tzinfo=UTC))
    assert first is not None
    nxt = d.plan_window(first.end, until)
    assert nxt is not None and nxt.start == first.end  # contiguous: no gap, no overlap
    last = d.plan_window(until - timedelta(hours=1), until)
    assert last is not None and last.end == until.replace(second=0)  # rounded down to the minute
    assert d.plan_window(until.replace(second=0), until) is None  # up to date


def test_window_rejects_empty_ranges() -> None:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="end must be after start"):
        Window.of(moment, moment)
