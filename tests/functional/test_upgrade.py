"""Upgrades are safe: job records written before copies owned jobs, deliveries were decided on the
job and jobs named their connection (no ``copy_owner``, ``copy_owner_until``, ``commit`` or
``connection``), and the task shapes executions started on
the earlier state machine send (``{"job_id", "attempt"}``, reading ``max_attempts``), are finished by
today's code."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from exportpipe_dev.local import LocalStack
from exportpipe_dev.sandbox.pardot import PardotSandbox

from exportpipe.models.job import JobStatus
from exportpipe.models.layout import Manifest, manifest_key
from functions.check_status.app import lambda_handler as check_status
from functions.copy_result.app import lambda_handler as copy_result
from functions.start_export.app import lambda_handler as start_export
from tests.conftest import ground_truth, load_event

Ctx = Callable[[str], Any]
NEW_ATTRIBUTES = ("copy_owner", "copy_owner_until", "commit", "connection")


def _as_written_before(stack: LocalStack, job_id: str) -> None:
    """Remove from the job's item what only today's code writes."""
    stack.client("dynamodb").update_item(
        TableName=stack.table,
        Key={"pk": {"S": f"JOB#{job_id}"}},
        UpdateExpression="REMOVE " + ", ".join(f"#n{i}" for i in range(len(NEW_ATTRIBUTES))),
        ExpressionAttributeNames={f"#n{i}": name for i, name in enumerate(NEW_ATTRIBUTES)},
    )
    item = stack.client("dynamodb").get_item(TableName=stack.table, Key={"pk": {"S": f"JOB#{job_id}"}})[
        "Item"
    ]
    assert not set(NEW_ATTRIBUTES) & set(item)


def _check(context: Ctx, job_id: str, attempt: int) -> dict[str, Any]:
    answer: dict[str, Any] = check_status(
        {"job_id": job_id, "attempt": attempt}, context("CheckStatusFunction")
    )
    return answer


def _started(context: Ctx, name: str) -> dict[str, Any]:
    event = load_event("start_export_schedule")
    event["definition"] = {**event["definition"], "name": name}
    started = start_export(event, context("StartExportFunction"))
    assert started["status"] == "EXPORTING"
    return started


def test_a_job_recorded_by_the_previous_code_is_polled_copied_and_delivered(
    stack: LocalStack, pardot: PardotSandbox, context: Ctx
) -> None:
    started = _started(context, "upgrade-old-record")
    _as_written_before(stack, started["job_id"])
    # the previous state machine's task input, and its Route's reading of the answer
    attempt, answer = 0, {"status": "EXPORTING"}
    for _ in range(60):
        answer = check_status(
            {"job_id": started["job_id"], "attempt": attempt}, context("CheckStatusFunction")
        )
        assert answer["attempt"] < answer["max_attempts"]  # the old Route goes on waiting
        if answer["status"] != "EXPORTING":
            break
        attempt = answer["attempt"]
        time.sleep(0.1)
    assert answer["status"] == "READY"
    _as_written_before(stack, started["job_id"])
    delivered = copy_result({"job_id": started["job_id"]}, context("CopyResultFunction"))
    assert delivered["status"] == "DELIVERED"
    from exportpipe.adapters.store import DynamoJobStore

    job = DynamoJobStore(stack.client("dynamodb"), stack.table).get(started["job_id"])
    assert job.manifest_key is not None
    s3 = stack.client("s3")
    manifest = json.loads(s3.get_object(Bucket=stack.bucket, Key=job.manifest_key)["Body"].read())
    assert manifest["job_id"] == job.job_id and manifest["totals"]["records"] == len(
        ground_truth(pardot, job)
    )


def test_a_manifest_the_previous_code_wrote_before_it_crashed_is_finished_as_a_delivery(
    stack: LocalStack, context: Ctx
) -> None:
    # GIVEN a job the previous code left COPYING with its manifest written (no commit on the job)
    started = _started(context, "upgrade-old-manifest")
    attempt = 0
    for _ in range(60):
        answer = check_status(
            {"job_id": started["job_id"], "attempt": attempt}, context("CheckStatusFunction")
        )
        if answer["status"] == "READY":
            break
        attempt = answer["attempt"]
        time.sleep(0.1)
    from exportpipe.adapters.store import DynamoJobStore

    store = DynamoJobStore(stack.client("dynamodb"), stack.table)
    job = store.transition(started["job_id"], JobStatus.COPYING)
    _as_written_before(stack, job.job_id)
    folder = manifest_key(f"exports/source=pardot/dataset=visitor_activity/dt=2026-11-24/export={job.job_id}")
    manifest = Manifest.build(
        store.get(job.job_id), [], fmt="csv", timezone="UTC", delivered_at=job.updated_at
    )
    stack.client("s3").put_object(Bucket=stack.bucket, Key=folder, Body=manifest.model_dump_json().encode())
    # WHEN the failure recorder of an execution on the previous definition runs
    event = {**load_event("check_status_failure"), "job_id": job.job_id}
    del event["workflow_starts_next_window"]  # not sent by the previous definition
    # THEN the written manifest is the delivery, as it was then
    assert check_status(event, context("CheckStatusFunction"))["status"] == "DELIVERED"
    assert store.get(job.job_id).status is JobStatus.DELIVERED


def _backfill(context: Ctx, name: str) -> tuple[str, str]:
    """A backfill of two windows started with today's event: the first job's id and the next one's."""
    from datetime import UTC, datetime, timedelta

    from exportpipe.models.job import job_id_for
    from exportpipe.sources.registry import parse_definition

    until = datetime(2026, 11, 1, tzinfo=UTC)
    definition = {
        "source": "pardot",
        "name": name,
        "object": "listMembership",
        "procedure": "filter_by_created_at",
        "timezone": "UTC",
        "start": (until - timedelta(days=400)).isoformat(),
    }
    started = start_export(
        {"definition": definition, "until": until.isoformat()}, context("StartExportFunction")
    )
    assert started["status"] == "EXPORTING"
    parsed = parse_definition(definition)
    first = parsed.plan_window(None, until)
    assert first is not None and started["job_id"] == job_id_for(name, first)
    second = parsed.plan_window(first.end, until)
    assert second is not None
    return started["job_id"], job_id_for(name, second)


def _ready(context: Ctx, job_id: str) -> None:
    attempt = 0
    for _ in range(60):
        answer = _check(context, job_id, attempt)
        if answer["status"] == "READY":
            return
        attempt = answer["attempt"]
        time.sleep(0.1)
    raise AssertionError(f"{job_id} not READY")


def _appears(stack: LocalStack, job_id: str, seconds: float) -> bool:
    from exportpipe.adapters.store import DynamoJobStore

    store = DynamoJobStore(stack.client("dynamodb"), stack.table)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if store.find(job_id) is not None:
            return True
        time.sleep(0.2)
    return False


def test_a_backfill_delivered_by_an_execution_on_the_previous_definition_still_gets_its_next_window(
    stack: LocalStack, context: Ctx
) -> None:
    # GIVEN a backfill's window run by an execution started on the previous state machine definition,
    # which has no Delivered state: its tasks send {"job_id", "attempt"} and {"job_id"} only
    first, second = _backfill(context, "upgrade-old-backfill")
    _ready(context, first)
    # WHEN its copy delivers it (invoked as Lambda does, so its calls are held to its IAM policy)
    assert stack.invoke("CopyResultFunction", {"job_id": first})["status"] == "DELIVERED"
    # THEN the copy hands the next window to start_export (invoked asynchronously), which starts it
    assert _appears(stack, second, 30)
    deadline = time.monotonic() + 30
    while not any(
        i.function == "StartExportFunction" and i.event == {"continue_after": first}
        for i in stack.bridge.invocations
    ):
        assert time.monotonic() < deadline, "no continuation reached start_export"
        time.sleep(0.1)


def test_a_copy_in_an_execution_on_todays_definition_leaves_the_next_window_to_the_workflow(
    stack: LocalStack, context: Ctx
) -> None:
    first, second = _backfill(context, "upgrade-new-backfill")
    _ready(context, first)
    delivered = copy_result(
        {"job_id": first, "workflow_starts_next_window": True}, context("CopyResultFunction")
    )
    assert delivered["status"] == "DELIVERED"
    # the copy started nothing: the workflow's Delivered state does (here, by hand)
    assert not _appears(stack, second, 2)
    assert not any(i.event == {"continue_after": first} for i in stack.bridge.invocations)
    nxt = start_export({"continue_after": first}, context("StartExportFunction"))
    assert nxt["job_id"] == second and nxt["status"] == "EXPORTING"
