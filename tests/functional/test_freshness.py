"""Freshness: every start_export tick reports how long ago its definition's delivered data ends
(``WatermarkAgeSeconds``, dimension ``definition``), whatever the tick then does, so the
definition's freshness alarm (template.yaml) sees one that stops landing data."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from exportpipe_dev.local import LocalStack
from exportpipe_dev.sandbox.pardot import PardotSandbox

from exportpipe.observability import MetricUnit
from exportpipe.services.start_export import report_watermark_age
from functions.check_status.app import lambda_handler as check_status
from functions.copy_result.app import lambda_handler as copy_result
from functions.start_export.app import lambda_handler as start_export
from tests.conftest import load_event

Ctx = Callable[[str], Any]


def _ages(out: str) -> list[tuple[dict[str, str], float]]:
    """The WatermarkAgeSeconds metrics among the EMF lines printed: (dimensions, value)."""
    found = []
    for line in out.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if not isinstance(doc, dict) or "_aws" not in doc:
            continue
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                if metric["Name"] == "WatermarkAgeSeconds":
                    assert directive["Namespace"] == "ExportPipe"
                    assert metric["Unit"] == MetricUnit.Seconds.value
                    (dims,) = directive["Dimensions"]
                    value = doc["WatermarkAgeSeconds"]
                    (value,) = value if isinstance(value, list) else [value]
                    found.append(({d: doc[d] for d in dims}, float(value)))
    return found


def _event(name: str, scheduled_time: str = "2026-11-25T06:05:00Z") -> dict[str, Any]:
    event = load_event("start_export_schedule", scheduled_time=scheduled_time)
    event["definition"] = {**event["definition"], "name": name}
    return event


def _seconds_since(moment: str, before: float, after: float) -> tuple[float, float]:
    at = datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()
    return before - at, after - at


def test_each_tick_reports_the_age_of_the_definitions_data_also_when_it_skips(
    context: Ctx, capsys: pytest.CaptureFixture[str]
) -> None:
    start = load_event("start_export_schedule")["definition"]["start"]
    before = time.time()
    first = start_export(_event("fresh-skip"), context("StartExportFunction"))
    after = time.time()
    assert first["status"] == "EXPORTING"
    ((dims, age),) = _ages(capsys.readouterr().out)
    # nothing delivered yet: the age counts from the definition's start
    assert dims == {"service": "exportpipe", "definition": "fresh-skip"}
    low, high = _seconds_since(start, before, after)
    assert low - 1 <= age <= high + 1
    # a later tick skips (an export is in flight) and still reports, older by then
    second = start_export(_event("fresh-skip", "2026-11-25T07:05:00Z"), context("StartExportFunction"))
    assert second["status"] == "SKIPPED"
    ((dims, later),) = _ages(capsys.readouterr().out)
    assert dims["definition"] == "fresh-skip" and later >= age


def test_after_a_delivery_the_age_counts_from_the_delivered_windows_end(
    stack: LocalStack, pardot: PardotSandbox, context: Ctx, capsys: pytest.CaptureFixture[str]
) -> None:
    started = start_export(_event("fresh-delivered"), context("StartExportFunction"))
    for attempt in range(50):
        ready = check_status(
            {**load_event("check_status"), "job_id": started["job_id"], "attempt": attempt},
            context("CheckStatusFunction"),
        )
        if ready["status"] != "EXPORTING":
            break
        time.sleep(0.1)
    assert ready["status"] == "READY"
    delivered = copy_result({"job_id": started["job_id"]}, context("CopyResultFunction"))
    assert delivered["status"] == "DELIVERED"
    capsys.readouterr()
    before = time.time()
    start_export(_event("fresh-delivered", "2026-11-25T07:05:00Z"), context("StartExportFunction"))
    after = time.time()
    ((dims, age),) = _ages(capsys.readouterr().out)
    assert dims["definition"] == "fresh-delivered"
    low, high = _seconds_since(started["window"]["end"], before, after)
    assert low - 1 <= age <= high + 1


def test_the_age_is_never_negative_and_metrics_can_be_turned_off(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from exportpipe.sources.registry import parse_definition

    definition = parse_definition({**load_event("start_export_schedule")["definition"], "name": "fresh-unit"})
    now = datetime(2026, 11, 25, 6, 5, 30, tzinfo=UTC)
    report_watermark_age(definition, datetime(2026, 11, 25, 5, 0, tzinfo=UTC), now)
    report_watermark_age(definition.model_copy(update={"start": datetime(2027, 1, 1, tzinfo=UTC)}), None, now)
    assert [age for _, age in _ages(capsys.readouterr().out)] == [3930.0, 0.0]
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    report_watermark_age(definition, None, now)
    assert capsys.readouterr().out == ""
