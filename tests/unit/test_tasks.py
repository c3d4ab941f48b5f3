"""The workflow's task shapes: a Catch's Error/Cause decoded once, answers as the Route reads them."""

from __future__ import annotations

import json

from exportpipe.models.tasks import CheckStatusEvent, StartOutcome, WorkflowError


def test_a_lambda_error_caught_by_the_workflow_is_read_from_its_cause() -> None:
    cause = json.dumps({"errorType": "ExportExpiredError", "errorMessage": "files gone", "stackTrace": []})
    event = CheckStatusEvent.model_validate(
        {"job_id": "j", "attempt": 3, "error": {"Error": "ExportExpiredError", "Cause": cause}}
    )
    assert event.error is not None
    assert (event.error.error_type, event.error.message) == ("ExportExpiredError", "files gone")


def test_a_states_error_without_a_json_cause_keeps_its_name_and_text() -> None:
    error = WorkflowError.model_validate({"Error": "States.Timeout", "Cause": "task timed out"})
    assert (error.error_type, error.message) == ("States.Timeout", "task timed out")
    assert WorkflowError.model_validate({"Error": "States.Runtime", "Cause": "[1, 2]"}).message == "[1, 2]"


def test_a_start_outcome_answers_only_the_fields_that_apply() -> None:
    assert StartOutcome("UP_TO_DATE", definition="d").output() == {"status": "UP_TO_DATE", "definition": "d"}
    assert StartOutcome("EXPORTING", job_id="j", duplicate=True).output() == {
        "status": "EXPORTING",
        "job_id": "j",
        "duplicate": True,
    }
