from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
from exportpipe_dev.local import LocalStack
from exportpipe_dev.sandbox.pardot import PardotSandbox

from exportpipe.adapters.store import DynamoJobStore
from exportpipe.errors import (
    InvalidDefinitionError,
    InvalidEventError,
    TransitionError,
    UpstreamRateLimitedError,
)
from exportpipe.http import make_session
from exportpipe.models.job import MAX_WINDOW_ATTEMPTS, JobStatus
from exportpipe.services.copy_result import MAX_COPY_RETRIES
from functions.check_status.app import lambda_handler as check_status
from functions.copy_result.app import lambda_handler as copy_result
from functions.start_export.app import lambda_handler as start_export
from functions.webhook.app import lambda_handler as webhook
from tests.conftest import ground_truth, load_event

Ctx = Callable[[str], Any]


def _creates(sandbox: PardotSandbox) -> int:
    return sum(1 for e in sandbox.request_log if e.method == "POST" and e.path == "/api/v5/exports")


def _schedule_event(name: str) -> dict[str, Any]:
    event = load_event("start_export_schedule")
    event["definition"] = {**event["definition"], "name": name}
    return event


def _until_ready(stack: LocalStack, job_id: str, context: Ctx) -> dict[str, Any]:
    answer: dict[str, Any] = {}
    attempt = 0
    for _ in range(50):
        answer = check_status(
            {**load_event("check_status"), "job_id": job_id, "attempt": attempt},
            context("CheckStatusFunction"),
        )
        if answer["status"] != "EXPORTING":
            return answer
        attempt = answer["attempt"]
        time.sleep(0.1)
    return answer


def test_start_export_records_the_job_and_starts_its_workflow(
    stack: LocalStack, pardot: PardotSandbox, context: Ctx
) -> None:
    # GIVEN the sample schedule event WHEN start_export handles it
    result = start_export(_schedule_event("fn-start"), context("StartExportFunction"))
    # THEN the job is EXPORTING with the upstream id, and its workflow execution is named after it
    assert result["status"] == "EXPORTING"
    assert result["window"] == {"start": "2026-11-24T00:00:00Z", "end": "2026-11-25T06:05:00Z"}
    job = DynamoJobStore(stack.client("dynamodb"), stack.table).get(result["job_id"])
    assert job.status is JobStatus.EXPORTING and job.upstream_id == result["upstream_id"]
    assert [t.status for t in job.history] == [JobStatus.REQUESTED, JobStatus.EXPORTING]
    desc = stack.client("stepfunctions").describe_execution(executionArn=result["execution_arn"])
    assert json.loads(desc["input"]) == {"job_id": result["job_id"], "attempt": 0}
    # AND the job is found by its upstream id (one index query, no scan)
    found = DynamoJobStore(stack.client("dynamodb"), stack.table).find_by_upstream(
        "pardot", result["upstream_id"]
    )
    assert found is not None and found.job_id == result["job_id"]


def test_a_schedule_event_delivered_twice_starts_one_export(pardot: PardotSandbox, context: Ctx) -> None:
    before = _creates(pardot)
    first = start_export(_schedule_event("fn-twice"), context("StartExportFunction"))
    second = start_export(_schedule_event("fn-twice"), context("StartExportFunction"))
    assert second == {"job_id": first["job_id"], "status": "EXPORTING", "duplicate": True}
    assert _creates(pardot) - before == 1


def test_a_new_window_waits_while_the_definition_has_an_export_in_flight(context: Ctx) -> None:
    first = start_export(_schedule_event("fn-busy"), context("StartExportFunction"))
    later = {**_schedule_event("fn-busy"), "scheduled_time": "2026-11-25T07:05:00Z"}
    second = start_export(later, context("StartExportFunction"))
    assert second["status"] == "SKIPPED" and first["job_id"] in second["reason"]


def test_invalid_definition_fails_before_any_upstream_call(pardot: PardotSandbox, context: Ctx) -> None:
    event = _schedule_event("fn-invalid")
    event["definition"]["fields"] = ["id", "notAField"]
    calls = len(pardot.request_log)
    with pytest.raises(InvalidDefinitionError, match="fields: unknown field"):
        start_export(event, context("StartExportFunction"))
    assert len(pardot.request_log) == calls


def test_malformed_event_names_the_field(context: Ctx) -> None:
    with pytest.raises(InvalidEventError, match="scheduled_time"):
        start_export({**_schedule_event("fn-bad"), "scheduled_time": "soon"}, context("StartExportFunction"))


def test_upstream_refusal_fails_the_job_with_the_reason(
    stack: LocalStack, pardot: PardotSandbox, context: Ctx
) -> None:
    pardot.fail_requests(status=400, times=1, path_prefix="/api/v5/exports")
    result = start_export(_schedule_event("fn-refused"), context("StartExportFunction"))
    assert result["status"] == "FAILED"
    assert "creating the upstream export failed" in result["reason"] and "400" in result["reason"]
    failed = [e for e in stack.consumer_events(wait_seconds=2) if e["detail-type"] == "Export Failed"]
    assert any(e["detail"]["job_id"] == result["job_id"] for e in failed)
    # the definition is free again: the next tick retries the same window start
    retry = start_export(
        {**_schedule_event("fn-refused"), "scheduled_time": "2026-11-25T07:05:00Z"},
        context("StartExportFunction"),
    )
    assert retry["status"] == "EXPORTING"
    assert retry["window"]["start"] == "2026-11-24T00:00:00Z"  # no gap after a failure


def test_check_then_copy_delivers_every_row(stack: LocalStack, pardot: PardotSandbox, context: Ctx) -> None:
    pardot.file_count = 3
    started = start_export(_schedule_event("fn-copy"), context("StartExportFunction"))
    ready = _until_ready(stack, started["job_id"], context)
    assert ready["status"] == "READY"
    delivered = copy_result(
        {**load_event("copy_result"), "job_id": started["job_id"]}, context("CopyResultFunction")
    )
    assert delivered["status"] == "DELIVERED" and delivered["files"] == 3

    s3 = stack.client("s3")
    manifest = json.loads(s3.get_object(Bucket=stack.bucket, Key=delivered["manifest_key"])["Body"].read())
    expected = ground_truth(pardot, _store(stack).get(started["job_id"]))
    assert manifest["totals"]["records"] == len(expected) > 0
    assert manifest["timezone"] == "America/New_York"
    created = datetime.fromisoformat(manifest["upstream_created_at"])  # as Pardot wrote it: the user's zone
    assert created.utcoffset() == created.astimezone(ZoneInfo("America/New_York")).utcoffset()
    assert manifest["window"] == started["window"]
    for f in manifest["files"]:
        body = s3.get_object(Bucket=stack.bucket, Key=f["key"])["Body"].read()
        assert hashlib.sha256(body).hexdigest() == f["sha256"] and len(body) == f["bytes"]
        assert f["key"].startswith(
            f"exports/source=pardot/dataset=visitor_activity/dt=2026-11-24/export={started['job_id']}/part-"
        )
    # a second copy of a delivered job changes nothing
    again = copy_result({"job_id": started["job_id"]}, context("CopyResultFunction"))
    assert again == delivered


def test_workflow_failure_is_recorded_once(stack: LocalStack, context: Ctx) -> None:
    started = start_export(_schedule_event("fn-fail"), context("StartExportFunction"))
    event = {**load_event("check_status_failure"), "job_id": started["job_id"]}
    answer = check_status(event, context("CheckStatusFunction"))
    assert answer["status"] == "FAILED"
    job = DynamoJobStore(stack.client("dynamodb"), stack.table).get(started["job_id"])
    assert job.reason == "DownloadIncompleteError: download ended after 1024 of 4096 bytes"
    # a duplicate failure report (a retried task) leaves the record as it was
    assert check_status(event, context("CheckStatusFunction"))["status"] == "FAILED"
    assert DynamoJobStore(stack.client("dynamodb"), stack.table).get(started["job_id"]).history == job.history


def test_webhook_route_answers_through_the_resolver(context: Ctx) -> None:
    response = webhook(load_event("webhook_advocate"), context("WebhookFunction"))
    assert response["statusCode"] == 404
    assert json.loads(response["body"]) == {"message": "no webhook receiver for source 'advocate'"}


def test_files_expired_before_the_copy_are_exported_again(
    stack: LocalStack, pardot: PardotSandbox, context: Ctx
) -> None:
    # GIVEN a job whose upstream export is READY
    pardot.clock.freeze()
    try:
        started = start_export(_schedule_event("fn-expired"), context("StartExportFunction"))
        pardot.clock.advance(2)
        assert _until_ready(stack, started["job_id"], context)["status"] == "READY"
        # WHEN eight days pass before the copy runs
        pardot.clock.advance(timedelta(days=8))
        answer = copy_result({"job_id": started["job_id"]}, context("CopyResultFunction"))
        # THEN the copy starts the export over instead of failing, and says so in the history
        assert answer["status"] == "EXPORTING" and answer["attempt"] == 0 and answer["wait_seconds"] > 0
        job = DynamoJobStore(stack.client("dynamodb"), stack.table).get(started["job_id"])
        assert job.reexports == 1 and job.upstream_id != started["upstream_id"]
        assert [t.status for t in job.history][-3:] == [
            JobStatus.READY,
            JobStatus.COPYING,
            JobStatus.EXPORTING,
        ]
        assert "expired before it was copied" in (job.history[-1].reason or "")
        # AND the new export is copied completely once it is ready
        pardot.clock.advance(2)
        assert _until_ready(stack, job.job_id, context)["status"] == "READY"
        delivered = copy_result({"job_id": job.job_id}, context("CopyResultFunction"))
        assert delivered["status"] == "DELIVERED"
    finally:
        pardot.clock.unfreeze()


def test_a_daily_limit_while_copying_waits_instead_of_failing(
    stack: LocalStack, pardot: PardotSandbox, context: Ctx
) -> None:
    started = start_export(_schedule_event("fn-copy-122"), context("StartExportFunction"))
    assert _until_ready(stack, started["job_id"], context)["status"] == "READY"
    pardot.force_error(122, times=1)
    answer = copy_result({"job_id": started["job_id"]}, context("CopyResultFunction"))
    assert answer["status"] == "COPYING" and answer["wait_seconds"] >= 1  # the workflow waits, then copies
    assert copy_result({"job_id": started["job_id"]}, context("CopyResultFunction"))["status"] == "DELIVERED"


# ---- regressions: crash windows and stuck leases ------------------------------------------------


def _store(stack: LocalStack) -> DynamoJobStore:
    return DynamoJobStore(stack.client("dynamodb"), stack.table)


def _deliver(stack: LocalStack, job_id: str, context: Ctx) -> dict[str, Any]:
    assert _until_ready(stack, job_id, context)["status"] == "READY"
    return copy_result({"job_id": job_id}, context("CopyResultFunction"))


def test_a_tick_after_an_unsettled_delivery_starts_where_it_ended(
    stack: LocalStack, context: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a delivery that died before it moved the watermark and freed the lease
    first = start_export(_schedule_event("fn-unsettled"), context("StartExportFunction"))
    monkeypatch.setattr(DynamoJobStore, "settle", lambda self, job: None)
    with pytest.raises(AttributeError):  # ... and before it could announce itself
        monkeypatch.setattr("exportpipe.services.delivery.after_delivery", _boom)
        _deliver(stack, first["job_id"], context)
    monkeypatch.undo()
    assert _store(stack).get(first["job_id"]).status is JobStatus.DELIVERED
    # WHEN the next tick comes THEN its window starts where the delivered one ended: no overlap
    later = {**_schedule_event("fn-unsettled"), "scheduled_time": "2026-11-25T06:20:00Z"}
    second = start_export(later, context("StartExportFunction"))
    assert second["status"] == "EXPORTING"
    assert second["window"] == {"start": first["window"]["end"], "end": "2026-11-25T06:20:00Z"}


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise AttributeError("simulated crash")


def test_a_manifest_written_before_a_crash_is_a_delivery(
    stack: LocalStack, context: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a copy that wrote the manifest, then died before recording DELIVERED
    started = start_export(_schedule_event("fn-committed"), context("StartExportFunction"))
    assert _until_ready(stack, started["job_id"], context)["status"] == "READY"
    real = DynamoJobStore.transition

    def crash_on_delivered(self: DynamoJobStore, job_id: str, target: JobStatus, **kw: Any) -> Any:
        if target is JobStatus.DELIVERED:
            raise RuntimeError("simulated crash after the manifest")
        return real(self, job_id, target, **kw)

    monkeypatch.setattr(DynamoJobStore, "transition", crash_on_delivered)
    with pytest.raises(RuntimeError):
        copy_result({"job_id": started["job_id"]}, context("CopyResultFunction"))
    monkeypatch.undo()
    # WHEN the workflow's failure recorder runs THEN it finishes the delivery instead of failing it
    event = {**load_event("check_status_failure"), "job_id": started["job_id"]}
    assert check_status(event, context("CheckStatusFunction"))["status"] == "DELIVERED"
    job = _store(stack).get(started["job_id"])
    assert job.status is JobStatus.DELIVERED and job.event_sent
    assert _store(stack).watermark("fn-committed") == job.window.end
    delivered = [e for e in stack.consumer_events(wait_seconds=2) if e["detail"]["job_id"] == job.job_id]
    assert [e["detail-type"] for e in delivered] == ["Export Delivered"]


def _downloads(sandbox: PardotSandbox, path: str) -> int:
    return sum(1 for e in sandbox.request_log if e.method == "GET" and e.path == path)


def _ready_export(
    stack: LocalStack, pardot: PardotSandbox, context: Ctx, name: str, files: int
) -> tuple[dict[str, Any], list[str]]:
    """A scheduled export of ``files`` files, polled until READY: its start answer and result paths."""
    pardot.file_count = files
    started = start_export(_schedule_event(name), context("StartExportFunction"))
    assert _until_ready(stack, started["job_id"], context)["status"] == "READY"
    urls = [urlsplit(u).path for u in _store(stack).get(started["job_id"]).result_urls]
    assert len(urls) == files
    return started, urls


@pytest.fixture
def no_http_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions that do not retry 5xx themselves, so each copy asks once per file."""
    monkeypatch.setattr(
        "exportpipe.sources.pardot.client.make_session", lambda: make_session(total_retries=0)
    )


@pytest.mark.usefixtures("no_http_retries")
def test_an_interrupted_copy_resumes_with_the_missing_files_and_leaves_no_parts_when_it_gives_up(
    stack: LocalStack, pardot: PardotSandbox, context: Ctx
) -> None:
    # GIVEN an export of three files whose third download keeps failing
    started, urls = _ready_export(stack, pardot, context, "fn-partial", files=3)
    pardot.fail_requests(status=503, times=100, path_prefix=urls[2])
    # WHEN the copy runs THEN it lands the first two, and waits (growing) before copying again
    waits = []
    for _ in range(MAX_COPY_RETRIES):
        answer = copy_result({"job_id": started["job_id"]}, context("CopyResultFunction"))
        assert answer["status"] == "COPYING"
        waits.append(answer["wait_seconds"])
    assert waits == sorted(waits) and waits[0] >= 1
    # AND each retry asked only for the file still missing
    assert [_downloads(pardot, u) for u in urls] == [1, 1, MAX_COPY_RETRIES]
    job = _store(stack).get(started["job_id"])
    assert [f.key.rsplit("/", 1)[1] for f in job.files] == ["part-00001.csv", "part-00002.csv"]
    # WHEN the retries are used up THEN the copy fails, and the failure recorder empties the folder
    with pytest.raises(Exception, match="503"):
        copy_result({"job_id": started["job_id"]}, context("CopyResultFunction"))
    event = {**load_event("check_status_failure"), "job_id": started["job_id"]}
    assert check_status(event, context("CheckStatusFunction"))["status"] == "FAILED"
    s3 = stack.client("s3")
    prefix = f"exports/source=pardot/dataset=visitor_activity/dt=2026-11-24/export={started['job_id']}/"
    assert not s3.list_objects_v2(Bucket=stack.bucket, Prefix=prefix).get("Contents")


@pytest.mark.usefixtures("no_http_retries")
def test_an_interrupted_copy_that_recovers_delivers_every_file_once(
    stack: LocalStack, pardot: PardotSandbox, context: Ctx
) -> None:
    started, urls = _ready_export(stack, pardot, context, "fn-resumed", files=3)
    pardot.fail_requests(status=502, times=1, path_prefix=urls[1])
    assert copy_result({"job_id": started["job_id"]}, context("CopyResultFunction"))["status"] == "COPYING"
    delivered = copy_result({"job_id": started["job_id"]}, context("CopyResultFunction"))
    assert delivered["status"] == "DELIVERED" and delivered["files"] == 3
    assert [_downloads(pardot, u) for u in urls] == [1, 2, 1]
    job = _store(stack).get(started["job_id"])
    assert job.copy_retries == 0  # the landed file reset the count of interruptions in a row
    rows = [r for f in job.files for r in csv.DictReader(io.StringIO(_body(stack, f.key), newline=""))]
    assert sorted(rows, key=lambda r: int(r["id"])) == ground_truth(pardot, job) != []


def _body(stack: LocalStack, key: str) -> str:
    return str(stack.client("s3").get_object(Bucket=stack.bucket, Key=key)["Body"].read().decode())


def test_a_rate_limit_that_never_clears_waits_longer_each_time_then_fails_the_job(
    stack: LocalStack, pardot: PardotSandbox, context: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLL_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("POLL_MAX_SECONDS", "60")
    started = start_export(_schedule_event("fn-66-forever"), context("StartExportFunction"))
    refused = sum(1 for e in pardot.request_log if e.status == 429)
    # each check tries five times in the call (growing pauses) before handing the wait to the workflow
    pardot.force_error(66, times=4 * 5)
    answers = [
        check_status({"job_id": started["job_id"], "attempt": 0}, context("CheckStatusFunction"))
        for _ in range(4)
    ]
    assert sum(1 for e in pardot.request_log if e.status == 429) - refused == 20
    # THEN the refusals do not count as poll attempts, the waits grow, and the fourth ends the job
    assert [a["status"] for a in answers] == ["EXPORTING"] * 3 + ["FAILED"]
    assert all(a["attempt"] == 0 for a in answers[:3])
    waits = [a["wait_seconds"] for a in answers[:3]]
    assert waits == sorted(waits) and waits[-1] > waits[0]
    job = _store(stack).get(started["job_id"])
    assert job.status is JobStatus.FAILED and "rate limit refused 4 turns in a row" in (job.reason or "")
    assert "(66)" in (job.reason or "")


def test_a_daily_limit_on_create_is_not_tried_again_before_its_wait(
    pardot: PardotSandbox, context: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RATE_LIMIT_WAIT_SECONDS", "4")
    pardot.force_error(122, times=1)
    first = start_export(_schedule_event("fn-122-create"), context("StartExportFunction"))
    assert first["status"] == "REQUESTED" and "122" in first["reason"]
    creates = _creates(pardot)
    # a re-delivery (or a retry by the scheduler) right away does not spend another call
    again = start_export(_schedule_event("fn-122-create"), context("StartExportFunction"))
    assert again["duplicate"] and again["status"] == "REQUESTED"
    assert _creates(pardot) == creates
    # once the wait is over, the next delivery resumes the same job
    time.sleep(4.1)
    resumed = start_export(_schedule_event("fn-122-create"), context("StartExportFunction"))
    assert resumed["job_id"] == first["job_id"] and resumed["status"] == "EXPORTING"
    assert _creates(pardot) == creates + 1


def test_a_scheduled_window_that_keeps_failing_is_given_up_after_the_attempt_limit(
    stack: LocalStack, pardot: PardotSandbox, context: Ctx
) -> None:
    # GIVEN an upstream that refuses every create of this definition's window
    pardot.fail_requests(status=400, times=MAX_WINDOW_ATTEMPTS, path_prefix="/api/v5/exports")
    results = []
    # WHEN the schedule ticks on (each tick plans the same start with a later end)
    for tick in range(MAX_WINDOW_ATTEMPTS + 2):
        event = {**_schedule_event("fn-give-up"), "scheduled_time": f"2026-11-25T{6 + tick:02d}:20:00Z"}
        results.append(start_export(event, context("StartExportFunction")))
    # THEN each tick is the window's next attempt, until the limit; then nothing more is asked
    assert [r["status"] for r in results] == ["FAILED"] * MAX_WINDOW_ATTEMPTS + ["GAVE_UP"] * 2
    suffixes = [r["job_id"].rpartition("_")[2].partition("-")[2] for r in results[:MAX_WINDOW_ATTEMPTS]]
    assert suffixes == ["", *(f"a{n}" for n in range(2, MAX_WINDOW_ATTEMPTS + 1))]
    assert (
        _store(stack).failed_attempts("fn-give-up", datetime.fromisoformat("2026-11-24T00:00:00+00:00")) == 5
    )
    # AND an operator's retry (after fixing the cause) tries the window again
    retry = {**_schedule_event("fn-give-up"), "scheduled_time": "2026-11-25T16:20:00Z", "retry": True}
    again = start_export(retry, context("StartExportFunction"))
    assert again["status"] == "EXPORTING" and again["window"]["start"] == "2026-11-24T00:00:00Z"


def test_an_export_canceled_before_its_copy_ends_canceled(stack: LocalStack, context: Ctx) -> None:
    started = start_export(_schedule_event("fn-canceled-copy"), context("StartExportFunction"))
    assert _until_ready(stack, started["job_id"], context)["status"] == "READY"
    cause = {"errorType": "ExportCanceledError", "errorMessage": "upstream export 1 was canceled"}
    event = {
        "job_id": started["job_id"],
        "error": {"Error": "ExportCanceledError", "Cause": json.dumps(cause)},
    }
    assert check_status(event, context("CheckStatusFunction"))["status"] == "CANCELED"
    assert (
        _store(stack).get(started["job_id"]).reason == "ExportCanceledError: upstream export 1 was canceled"
    )


def test_a_dead_workflow_is_restarted_by_the_next_tick(stack: LocalStack, context: Ctx) -> None:
    first = start_export(_schedule_event("fn-dead-workflow"), context("StartExportFunction"))
    sfn = stack.client("stepfunctions")
    sfn.stop_execution(executionArn=first["execution_arn"], error="Aborted", cause="operator")
    later = {**_schedule_event("fn-dead-workflow"), "scheduled_time": "2026-11-25T06:20:00Z"}
    second = start_export(later, context("StartExportFunction"))
    assert second["status"] == "SKIPPED" and second["job_id"] == first["job_id"]
    job = _store(stack).get(first["job_id"])
    assert job.workflow_restarts == 1 and job.execution_arn and job.execution_arn.endswith("-r1")
    assert sfn.describe_execution(executionArn=job.execution_arn)["status"] == "RUNNING"
    # a duplicate of the first event does not start a third workflow
    start_export(_schedule_event("fn-dead-workflow"), context("StartExportFunction"))
    assert _store(stack).get(first["job_id"]).workflow_restarts == 1


def test_a_window_whose_export_failed_gets_another_attempt(pardot: PardotSandbox, context: Ctx) -> None:
    event = {**load_event("start_export_window")}
    event["definition"] = {**event["definition"], "name": "fn-retry-window"}
    pardot.fail_requests(status=400, times=1, path_prefix="/api/v5/exports")
    first = start_export(event, context("StartExportFunction"))
    assert first["status"] == "FAILED"
    second = start_export(event, context("StartExportFunction"))
    assert second["status"] == "EXPORTING" and second["job_id"] == first["job_id"] + "-a2"
    assert second["window"] == event["window"]
    third = start_export(event, context("StartExportFunction"))  # a duplicate of the retry
    assert third == {"job_id": second["job_id"], "status": "EXPORTING", "duplicate": True}


def test_an_export_given_up_on_is_canceled_upstream_so_it_does_not_hold_up_the_queue(
    stack: LocalStack, pardot: PardotSandbox, context: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an export that stays Processing longer than the poll timeout (shortened for the test)
    monkeypatch.setenv("POLL_TIMEOUT_SECONDS", "60")
    pardot.processing_seconds = 600
    started = start_export(_schedule_event("fn-abandoned"), context("StartExportFunction"))
    answers = [
        check_status({"job_id": started["job_id"], "attempt": n}, context("CheckStatusFunction"))
        for n in range(2)
    ]
    _store(stack).update(  # a minute passes (the job was recorded a minute ago)
        started["job_id"],
        JobStatus.EXPORTING,
        {"created_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat()},
    )
    answers.append(check_status({"job_id": started["job_id"], "attempt": 2}, context("CheckStatusFunction")))
    # THEN the job fails with the reason, and the upstream export is canceled (Pardot runs an
    # account's exports one at a time: an abandoned one would hold up every later export)
    assert [a["status"] for a in answers] == ["EXPORTING", "EXPORTING", "FAILED"]
    assert pardot.export_state(int(started["upstream_id"])).value == "Canceled"
    # AND the workflow's failure recorder does the same for a job it finds still exporting
    second = start_export(_schedule_event("fn-abandoned-2"), context("StartExportFunction"))
    event = {
        "job_id": second["job_id"],
        "error": {"Error": "PollAttemptsExhausted", "Cause": '{"errorType": "PollAttemptsExhausted"}'},
    }
    assert check_status(event, context("CheckStatusFunction"))["status"] == "FAILED"
    assert pardot.export_state(int(second["upstream_id"])).value == "Canceled"


def test_under_the_literal_creation_year_rule_an_old_backfill_window_fails_with_the_reason(
    stack: LocalStack, pardot: PardotSandbox, context: Ctx
) -> None:
    # GIVEN Pardot read literally: every *_after must be within a year of the export's creation
    pardot.after_within_year_of_creation = True
    event = load_event("start_export_backfill")
    event["definition"] = {**event["definition"], "name": "fn-literal-year"}
    # WHEN a backfill starts two years back THEN its first window fails loudly, naming the rule,
    # instead of being skipped (the window stays the definition's next one: nothing is lost unseen)
    result = start_export(event, context("StartExportFunction"))
    assert result["status"] == "FAILED"
    assert "within a year of the creation date" in result["reason"] and "177" in result["reason"]
    assert _store(stack).watermark("fn-literal-year") is None
    failed = [e for e in stack.consumer_events(wait_seconds=2) if e["detail"]["job_id"] == result["job_id"]]
    assert [e["detail-type"] for e in failed] == ["Export Failed"]


def test_a_token_that_expires_before_the_copy_is_renewed_for_the_downloads(
    stack: LocalStack, pardot: PardotSandbox, context: Ctx
) -> None:
    started, _ = _ready_export(stack, pardot, context, "fn-token-copy", files=2)
    logins = sum(1 for e in pardot.request_log if e.path == "/services/oauth2/token")
    pardot.expire_tokens()
    delivered = copy_result({"job_id": started["job_id"]}, context("CopyResultFunction"))
    assert delivered["status"] == "DELIVERED" and delivered["files"] == 2
    downloads = [e for e in pardot.request_log if "/results/" in e.path]
    assert [e.status for e in downloads[-3:]] == [401, 200, 200]  # refused once, renewed, then both
    assert sum(1 for e in pardot.request_log if e.path == "/services/oauth2/token") == logins + 1


def test_an_outage_on_create_is_waited_out_with_growing_waits_then_fails_the_job(
    stack: LocalStack, pardot: PardotSandbox, context: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLL_MAX_ATTEMPTS", "2")
    pardot.fail_requests(status=503, times=3, path_prefix="/api/v5/exports")
    first = start_export(_schedule_event("fn-create-outage"), context("StartExportFunction"))
    assert first["status"] == "REQUESTED" and "503" in first["reason"]
    creates = _creates(pardot)
    # not before the backoff (1 s for the first refusal): a re-delivery spends no call
    start_export(_schedule_event("fn-create-outage"), context("StartExportFunction"))
    check = {"job_id": first["job_id"], "attempt": 0}
    waiting = check_status(check, context("CheckStatusFunction"))
    assert waiting["status"] == "REQUESTED" and waiting["attempt"] == 0 and waiting["wait_seconds"] >= 1
    assert _creates(pardot) == creates
    time.sleep(1.1)
    # the workflow's turn creates it: refused again, so it waits longer, and counts no poll attempt
    second = check_status(check, context("CheckStatusFunction"))
    assert second["status"] == "REQUESTED" and second["attempt"] == 0 and second["wait_seconds"] == 2
    assert _creates(pardot) == creates + 1
    time.sleep(2.1)
    # the third refusal in a row is one more than POLL_MAX_ATTEMPTS allows: the job fails, saying why
    third = check_status(check, context("CheckStatusFunction"))
    assert third["status"] == "FAILED"
    assert "refused to create the export 3 times in a row" in (
        _store(stack).get(first["job_id"]).reason or ""
    )
    assert _creates(pardot) == creates + 2


def test_the_workflow_creates_a_refused_export_in_its_own_execution_and_starts_none(
    stack: LocalStack, pardot: PardotSandbox, context: Ctx
) -> None:
    from exportpipe.adapters.aws import aws_clients

    # GIVEN a job the upstream refused to create for now, whose starter recorded no execution
    pardot.fail_requests(status=503, times=1, path_prefix="/api/v5/exports")
    first = start_export(_schedule_event("fn-create-in-workflow"), context("StartExportFunction"))
    assert first["status"] == "REQUESTED"
    stack.client("dynamodb").update_item(
        TableName=stack.table,
        Key={"pk": {"S": f"JOB#{first['job_id']}"}},
        UpdateExpression="REMOVE execution_arn",
    )
    started: list[dict[str, Any]] = []
    sfn = aws_clients().sfn  # the client the handlers use

    def record(**kwargs: Any) -> None:
        started.append(kwargs)

    sfn.meta.events.register("before-call.sfn.StartExecution", record, unique_id="test-no-start")
    try:
        time.sleep(1.1)  # the refusal's wait (the poll base)
        # WHEN its workflow's check runs, naming the execution it runs in
        execution = stack.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{first['job_id']}"
        answer = check_status(
            {"job_id": first["job_id"], "attempt": 0, "execution_arn": execution},
            context("CheckStatusFunction"),
        )
    finally:
        sfn.meta.events.unregister("before-call.sfn.StartExecution", unique_id="test-no-start")
    # THEN the export is created in that execution: recorded on the job, no workflow started
    assert answer["status"] == "EXPORTING"
    job = _store(stack).get(first["job_id"])
    assert job.upstream_id and job.execution_arn == execution
    assert started == []


def test_a_copy_the_rate_limit_keeps_refusing_fails_and_leaves_no_parts(
    stack: LocalStack, pardot: PardotSandbox, context: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    import exportpipe.services.copy_result as copy_service

    started, _ = _ready_export(stack, pardot, context, "fn-copy-limited", files=2)
    monkeypatch.setenv("POLL_MAX_ATTEMPTS", "1")
    real = copy_service._copy_one

    def second_file_refused(deps: Any, client: Any, job: Any, url: str, key: str) -> Any:
        if key.endswith("part-00002.csv"):
            raise UpstreamRateLimitedError("Pardot daily API limit met (122) on download", retry_after=1)
        return real(deps, client, job, url, key)

    monkeypatch.setattr(copy_service, "_copy_one", second_file_refused)
    prefix = f"exports/source=pardot/dataset=visitor_activity/dt=2026-11-24/export={started['job_id']}/"
    s3 = stack.client("s3")
    first = copy_result({"job_id": started["job_id"]}, context("CopyResultFunction"))
    assert first["status"] == "COPYING"  # part 1 landed, part 2 waits for the limit
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=stack.bucket, Prefix=prefix)["Contents"]] == [
        prefix + "part-00001.csv"
    ]
    second = copy_result({"job_id": started["job_id"]}, context("CopyResultFunction"))
    assert second["status"] == "FAILED"
    assert not s3.list_objects_v2(Bucket=stack.bucket, Prefix=prefix).get("Contents")


def test_a_copy_that_outlived_its_upstream_export_cannot_record_parts(
    stack: LocalStack, context: Ctx
) -> None:
    started = start_export(_schedule_event("fn-stale-copy"), context("StartExportFunction"))
    assert _until_ready(stack, started["job_id"], context)["status"] == "READY"
    store = _store(stack)
    store.transition(started["job_id"], JobStatus.COPYING)
    store.update(started["job_id"], JobStatus.COPYING, {"upstream_id": "999999"})  # a re-export meanwhile
    with pytest.raises(TransitionError, match="no longer"):
        store.update(
            started["job_id"], JobStatus.COPYING, {"files": []}, where={"upstream_id": started["upstream_id"]}
        )
