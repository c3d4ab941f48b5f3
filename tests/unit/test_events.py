"""The sample events in events/ (used by `sam local invoke -e` and the functional tests) stay valid."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from exportpipe.services.check_status import CheckStatusEvent
from exportpipe.services.copy_result import CopyResultEvent
from exportpipe.services.start_export import ContinueEvent, StartExportEvent
from exportpipe.sources.registry import parse_definition
from tests.conftest import EVENTS, load_event

MODELS: dict[str, type[BaseModel]] = {
    "start_export_schedule": StartExportEvent,
    "start_export_window": StartExportEvent,
    "start_export_backfill": StartExportEvent,
    "start_export_continue": ContinueEvent,
    "check_status": CheckStatusEvent,
    "check_status_failure": CheckStatusEvent,
    "copy_result": CopyResultEvent,
}


def test_every_sample_event_has_a_model() -> None:
    names = {p.stem for p in EVENTS.glob("*.json")}
    assert names - {"webhook_advocate"} == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_sample_event_is_valid(name: str) -> None:
    event = MODELS[name].model_validate(load_event(name))
    if isinstance(event, StartExportEvent):
        parse_definition(event.definition)


def test_the_backfill_sample_spans_more_than_one_window() -> None:
    event = StartExportEvent.model_validate(load_event("start_export_backfill"))
    definition = parse_definition(event.definition)
    assert event.until is not None and event.until - definition.start > definition.max_window
