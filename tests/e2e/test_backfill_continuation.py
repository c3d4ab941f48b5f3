"""A backfill's next window is started by the lifecycle function: the poll workflow's Delivered state
invokes start_export with ``{"continue_after": <job id>}`` once the job is delivered; check_status and
copy_result start nothing. Through the local stack's real state machine against the sandbox."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from exportpipe_dev.local import LocalStack
from exportpipe_dev.sandbox.pardot import PardotSandbox

from exportpipe.adapters.store import DynamoJobStore
from exportpipe.models.job import Job, JobStatus, job_id_for
from exportpipe.sources.registry import parse_definition

pytestmark = pytest.mark.e2e

UNTIL = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    sandbox = PardotSandbox(pickup_seconds=0.0, processing_seconds=0.2, seed=31, record_spacing_seconds=86400)
    with LocalStack(sandboxes={"pardot": sandbox}) as running:
        yield running


def _definition(name: str) -> dict[str, Any]:
    """Two windows: [UNTIL - 400 d, +364 d) and the 36 days after it."""
    return {
        "source": "pardot",
        "name": name,
        "object": "listMembership",
        "procedure": "filter_by_created_at",
        "fields": ["id", "listId", "prospectId", "createdAt"],
        "timezone": "UTC",
        "start": (UNTIL - timedelta(days=400)).isoformat(),
    }


def _job_ids(definition: dict[str, Any]) -> list[str]:
    parsed = parse_definition(definition)
    ids, mark = [], None
    while (w := parsed.plan_window(mark, UNTIL)) is not None:
        ids.append(job_id_for(definition["name"], w))
        mark = w.end
    assert len(ids) == 2
    return ids


def _store(stack: LocalStack) -> DynamoJobStore:
    return DynamoJobStore(stack.client("dynamodb"), stack.table)


def _wait_for_job(stack: LocalStack, job_id: str, timeout: float = 30) -> Job | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = _store(stack).find(job_id)
        if job is not None:
            return job
        time.sleep(0.2)
    return None


def test_the_delivered_state_starts_a_backfills_next_window(stack: LocalStack) -> None:
    definition = _definition("continue-by-workflow")
    first_id, second_id = _job_ids(definition)
    # GIVEN a backfill longer than one window
    first = stack.invoke("StartExportFunction", {"definition": definition, "until": UNTIL.isoformat()})
    assert first["job_id"] == first_id
    # WHEN its first window is delivered
    execution = stack.wait_for_execution(first_id)
    assert execution["status"] == "SUCCEEDED"
    # THEN the workflow's Delivered state asked start_export, which started the next window
    assert stack.execution_states(first_id)[-3:] == ["CopyResult", "Route", "Delivered"]
    output = json.loads(execution["output"])
    assert output["status"] == "DELIVERED"
    assert output["next_window"]["answer"]["job_id"] == second_id
    assert output["next_window"]["answer"]["after"] == first_id
    second = stack.wait_for_execution(second_id)
    assert second["status"] == "SUCCEEDED"
    # AND the last window's Delivered state found no window after it
    last = json.loads(second["output"])["next_window"]["answer"]
    assert last == {"status": "NO_NEXT_WINDOW", "after": second_id}
    assert _store(stack).watermark(definition["name"]) == UNTIL
    # AND a repeat of the continuation (a retry) starts nothing more
    again = stack.invoke("StartExportFunction", {"continue_after": first_id})
    assert again["status"] == "UP_TO_DATE" and again["after"] == first_id


def test_a_failed_continuation_does_not_fail_the_delivered_execution(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    import exportpipe.services.start_export as start_service

    definition = _definition("continue-fails")
    first_id, second_id = _job_ids(definition)

    def broken(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("the job store is unavailable")

    # GIVEN a backfill whose continuation fails (every retry of the Delivered state)
    first = stack.invoke("StartExportFunction", {"definition": definition, "until": UNTIL.isoformat()})
    monkeypatch.setattr(start_service, "start_next_window", broken)
    execution = stack.wait_for_execution(first["job_id"], timeout=120)
    monkeypatch.undo()
    # THEN the delivered execution still succeeds, saying why the next window did not start
    assert execution["status"] == "SUCCEEDED"
    assert stack.execution_states(first_id)[-2:] == ["Delivered", "DeliveredNextWindowNotStarted"]
    output = json.loads(execution["output"])
    assert "the job store is unavailable" in json.dumps(output["next_window_error"])
    assert _store(stack).get(first_id).status is JobStatus.DELIVERED
    assert _store(stack).find(second_id) is None
    # AND the next start (here the operator's continuation; a schedule tick alike) starts it
    resumed = stack.invoke("StartExportFunction", {"continue_after": first_id})
    assert resumed["job_id"] == second_id and resumed["status"] == "EXPORTING"
    assert stack.wait_for_execution(second_id)["status"] == "SUCCEEDED"


def test_a_continuation_before_the_delivery_starts_nothing(stack: LocalStack) -> None:
    definition = _definition("continue-early")
    first_id, second_id = _job_ids(definition)
    stack.invoke("StartExportFunction", {"definition": definition, "until": UNTIL.isoformat()})
    early = stack.invoke("StartExportFunction", {"continue_after": first_id})
    assert early["status"] == "NOT_DELIVERED" and early["after"] == first_id
    assert stack.wait_for_execution(first_id)["status"] == "SUCCEEDED"
    assert _wait_for_job(stack, second_id) is not None
    # a repeat finds the next window started (or, if it was delivered meanwhile, nothing left to
    # start): either way it starts no other job
    repeat = stack.invoke("StartExportFunction", {"continue_after": first_id})
    if repeat["status"] == "UP_TO_DATE":
        assert _store(stack).get(second_id).status is JobStatus.DELIVERED
    else:
        assert repeat["job_id"] == second_id and repeat["duplicate"] is True
    assert stack.wait_for_execution(second_id)["status"] == "SUCCEEDED"
