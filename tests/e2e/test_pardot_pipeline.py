from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from exportpipe_dev.local import LocalStack
from exportpipe_dev.local.template import substitute_definition
from exportpipe_dev.sandbox.pardot import PardotSandbox

from exportpipe.adapters.store import DynamoJobStore
from exportpipe.models.job import JobStatus
from exportpipe.services.copy_result import MAX_COPY_RETRIES
from tests.conftest import ROOT, ground_truth, load_event

pytestmark = pytest.mark.e2e

SCHEDULE = "StartExportFunctionPardotVisitorActivity"
TICK = datetime(2026, 11, 25, 6, 5, tzinfo=UTC)


def _store(stack: LocalStack) -> DynamoJobStore:
    return DynamoJobStore(stack.client("dynamodb"), stack.table)


def _event(name: str, **definition: Any) -> dict[str, Any]:
    event = load_event("start_export_schedule")
    event["definition"] = {**event["definition"], "name": name, **definition}
    return event


def _landed(stack: LocalStack, manifest_key: str) -> tuple[dict[str, Any], list[dict[str, str]]]:
    s3 = stack.client("s3")
    manifest = json.loads(s3.get_object(Bucket=stack.bucket, Key=manifest_key)["Body"].read())
    rows: list[dict[str, str]] = []
    for f in manifest["files"]:
        body = s3.get_object(Bucket=stack.bucket, Key=f["key"])["Body"].read()
        assert hashlib.sha256(body).hexdigest() == f["sha256"]
        assert len(body) == f["bytes"]
        assert not body.startswith(b"\xef\xbb\xbf")
        parsed = list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))
        assert len(parsed) == f["records"]
        rows += parsed
    return manifest, rows


def test_the_executed_state_machine_is_the_file_the_template_deploys(stack: LocalStack) -> None:
    (sm,) = stack.template.of_type("AWS::Serverless::StateMachine").values()
    text = (ROOT / sm["Properties"]["DefinitionUri"]).read_text()
    # each <Function>Arn placeholder is that function's ARN
    subs = {
        name: stack.functions[name.removesuffix("Arn")].arn
        for name in sm["Properties"]["DefinitionSubstitutions"]
    }
    deployed = stack.client("stepfunctions").describe_state_machine(stateMachineArn=stack.state_machine_arn)
    assert json.loads(deployed["definition"]) == json.loads(substitute_definition(text, subs))


def test_scheduled_export_lands_complete_and_is_announced(stack: LocalStack, pardot: PardotSandbox) -> None:
    # GIVEN the template's hourly visitor-activity schedule WHEN it fires
    started = stack.fire(SCHEDULE, TICK)
    assert started["status"] == "EXPORTING"
    execution = stack.wait_for_execution(started["job_id"], timeout=90)
    # THEN the real state machine polled, copied and succeeded
    assert execution["status"] == "SUCCEEDED"
    states = stack.execution_states(started["job_id"])
    assert states[:2] == ["CheckStatus", "Route"] and states[-3:] == ["CopyResult", "Route", "Delivered"]
    job = _store(stack).get(started["job_id"])
    assert job.status is JobStatus.DELIVERED
    assert [t.status for t in job.history] == [
        JobStatus.REQUESTED,
        JobStatus.EXPORTING,
        JobStatus.READY,
        JobStatus.COPYING,
        JobStatus.DELIVERED,
    ]
    # AND every row the sandbox produced arrived, once, with checksums that match
    assert job.manifest_key is not None
    manifest, rows = _landed(stack, job.manifest_key)
    assert sorted(rows, key=lambda r: int(r["id"])) == ground_truth(pardot, job) != []
    assert manifest["upstream_id"] == started["upstream_id"] and manifest["schema_version"] == "1"
    # AND the manifest was written after the files
    s3 = stack.client("s3")
    listed = s3.list_objects_v2(Bucket=stack.bucket, Prefix=job.manifest_key.rsplit("/", 1)[0])["Contents"]
    stamps = {o["Key"].rsplit("/", 1)[1]: o["LastModified"] for o in listed}
    assert stamps["_manifest.json"] >= max(v for k, v in stamps.items() if k != "_manifest.json")
    # AND consumers got one Export Delivered event naming the manifest
    events = [e for e in stack.consumer_events(wait_seconds=2) if e["detail"]["job_id"] == job.job_id]
    assert [e["detail-type"] for e in events] == ["Export Delivered"]
    assert events[0]["detail"]["manifest_uri"] == f"s3://{stack.bucket}/{job.manifest_key}"
    # AND the watermark moved to the window's end: the next tick starts where this one ended
    assert _store(stack).watermark("pardot-visitor-activity") == job.window.end
    nxt = stack.fire(SCHEDULE, datetime(2026, 11, 25, 7, 5, tzinfo=UTC))
    assert nxt["window"]["start"] == job.window.end.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert stack.wait_for_execution(nxt["job_id"], timeout=90)["status"] == "SUCCEEDED"


def test_a_schedule_event_delivered_twice_starts_one_export(stack: LocalStack, pardot: PardotSandbox) -> None:
    creates = lambda: sum(1 for e in pardot.request_log if e.method == "POST" and e.path == "/api/v5/exports")  # noqa: E731
    before = creates()
    event = _event("e2e-twice")
    first = stack.invoke("StartExportFunction", event)
    second = stack.invoke("StartExportFunction", event)
    assert second["duplicate"] is True and second["job_id"] == first["job_id"]
    assert stack.wait_for_execution(first["job_id"], timeout=90)["status"] == "SUCCEEDED"
    third = stack.invoke("StartExportFunction", event)  # re-delivered after the delivery
    assert third["status"] in ("UP_TO_DATE", "DELIVERED")
    assert creates() - before == 1
    executions = stack.client("stepfunctions").list_executions(stateMachineArn=stack.state_machine_arn)[
        "executions"
    ]
    assert sum(1 for e in executions if e["name"] == first["job_id"]) == 1


@pytest.mark.parametrize(
    ("file_count", "fill", "shape"), [(None, 0.0, "absent"), (1, 0.75, "string"), (4, 0.75, "array")]
)
def test_result_refs_absent_string_and_array(
    stack: LocalStack, pardot: PardotSandbox, file_count: int | None, fill: float, shape: str
) -> None:
    pardot.file_count = file_count
    pardot.record_fill = fill
    started = stack.invoke(
        "StartExportFunction",
        _event(
            f"e2e-refs-{shape}",
            object="prospect",
            procedure="filter_by_updated_at",
            fields=None,
            arguments={"deleted": "all"},
        ),
    )
    assert stack.wait_for_execution(started["job_id"], timeout=90)["status"] == "SUCCEEDED"
    job = _store(stack).get(started["job_id"])
    assert job.manifest_key is not None
    manifest, rows = _landed(stack, job.manifest_key)
    assert manifest["totals"]["files"] == {"absent": 0, "string": 1, "array": 4}[shape]
    assert sorted(rows, key=lambda r: int(r["id"])) == ground_truth(pardot, job)
    keys = [f["key"].rsplit("/", 1)[1] for f in manifest["files"]]
    assert keys == [f"part-{n:05d}.csv" for n in range(1, len(keys) + 1)]


def test_a_failed_upstream_export_is_created_again(stack: LocalStack, pardot: PardotSandbox) -> None:
    pardot.fail_next(1)
    started = stack.invoke("StartExportFunction", _event("e2e-failed-once"))
    assert stack.wait_for_execution(started["job_id"], timeout=90)["status"] == "SUCCEEDED"
    job = _store(stack).get(started["job_id"])
    assert job.status is JobStatus.DELIVERED and job.recreates == 1
    assert job.upstream_id != started["upstream_id"]
    restarted = [t for t in job.history if t.status is JobStatus.EXPORTING][1]
    assert f"upstream export {started['upstream_id']} is Failed" in (restarted.reason or "")
    assert job.manifest_key is not None
    _, rows = _landed(stack, job.manifest_key)
    assert sorted(rows, key=lambda r: int(r["id"])) == ground_truth(pardot, job)


def test_an_upstream_export_that_keeps_failing_fails_the_job(
    stack: LocalStack, pardot: PardotSandbox
) -> None:
    pardot.fail_next(3)  # the first export and both re-creations
    started = stack.invoke("StartExportFunction", _event("e2e-failed"))
    execution = stack.wait_for_execution(started["job_id"], timeout=90)
    assert execution["status"] == "FAILED"
    assert "RecordFailure" not in stack.execution_states(started["job_id"])  # check_status recorded it
    job = _store(stack).get(started["job_id"])
    assert job.status is JobStatus.FAILED and job.recreates == 2
    assert "is Failed; gave up after 3 upstream export(s)" in (job.reason or "")
    failed = [e for e in stack.consumer_events(wait_seconds=2) if e["detail"]["job_id"] == job.job_id]
    assert [e["detail-type"] for e in failed] == ["Export Failed"]
    assert _store(stack).watermark("e2e-failed") is None  # nothing delivered: the window will be retried


def test_truncated_download_is_never_delivered(stack: LocalStack, pardot: PardotSandbox) -> None:
    pardot.truncate_downloads = True
    started = stack.invoke("StartExportFunction", _event("e2e-truncated"))
    execution = stack.wait_for_execution(started["job_id"], timeout=120)
    assert execution["status"] == "FAILED"
    # the copy was tried again after growing waits, a bounded number of times, then failed
    states = stack.execution_states(started["job_id"])
    assert states.count("CopyResult") == 1 + MAX_COPY_RETRIES
    assert states.count("WaitBeforeCopy") == MAX_COPY_RETRIES
    job = _store(stack).get(started["job_id"])
    assert job.status is JobStatus.FAILED and (job.reason or "").startswith("DownloadIncompleteError")
    s3 = stack.client("s3")
    prefix = f"exports/source=pardot/dataset=visitor_activity/dt=2026-11-24/export={job.job_id}/"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=stack.bucket, Prefix=prefix).get("Contents", [])]
    assert not [k for k in keys if k.endswith("_manifest.json")]
    assert not s3.list_multipart_uploads(Bucket=stack.bucket).get("Uploads")


def test_redirected_downloads_never_carry_upstream_credentials(
    stack: LocalStack, pardot: PardotSandbox
) -> None:
    pardot.redirect_downloads = True
    started = stack.invoke("StartExportFunction", _event("e2e-redirect"))
    assert stack.wait_for_execution(started["job_id"], timeout=90)["status"] == "SUCCEEDED"
    storage = [e for e in pardot.request_log if e.path.startswith("/storage/")]
    assert storage and all(e.status == 200 for e in storage)
    assert not [e for e in storage if "Authorization" in e.headers or "Pardot-Business-Unit-Id" in e.headers]
    # and asked for the bytes as stored, so Content-Length can tell a truncated body
    assert all(e.headers.get("Accept-Encoding") == "identity" for e in storage)
    job = _store(stack).get(started["job_id"])
    assert job.manifest_key is not None
    _, rows = _landed(stack, job.manifest_key)
    assert sorted(rows, key=lambda r: int(r["id"])) == ground_truth(pardot, job) != []


def test_front_door_turns_http_into_api_gateway_events(stack: LocalStack) -> None:
    import requests

    resp = requests.post(
        f"{stack.webhook_url}/webhooks/advocate", json={"type": "export.completed"}, timeout=10
    )
    assert resp.status_code == 404
    assert resp.json() == {"message": "no webhook receiver for source 'advocate'"}
    missing = requests.post(f"{stack.webhook_url}/webhooks/unknown", json={}, timeout=10)
    assert missing.status_code == 403 and missing.json() == {"message": "Missing Authentication Token"}


def test_an_export_refused_creation_by_the_daily_limit_is_created_by_its_workflow_when_the_wait_is_over(
    stack: LocalStack, pardot: PardotSandbox
) -> None:
    # GIVEN a create refused with 122 (no later schedule tick will come: think of a backfill's window)
    def creates() -> list[int]:
        return [e.status for e in pardot.request_log if e.method == "POST" and e.path == "/api/v5/exports"]

    before = len(creates())
    pardot.force_error(122, times=1)
    started = stack.invoke("StartExportFunction", _event("e2e-122-create"))
    assert started["status"] == "REQUESTED"
    # THEN its workflow waits out the limit (RateLimitWaitSeconds, 1 s here), creates the export once
    # and delivers it, with no further invocation from outside
    execution = stack.wait_for_execution(started["job_id"], timeout=90)
    assert execution["status"] == "SUCCEEDED"
    job = _store(stack).get(started["job_id"])
    assert job.status is JobStatus.DELIVERED
    assert [t.status for t in job.history][:2] == [JobStatus.REQUESTED, JobStatus.EXPORTING]
    assert creates()[before:] == [429, 200]  # one refusal, then one create: no call spent in between
    assert stack.execution_states(started["job_id"])[:3] == ["CheckStatus", "Route", "WaitForExport"]
