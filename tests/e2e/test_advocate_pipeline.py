"""Advocate exports end to end, polled: the real state machine drives the real handlers through the
local stack against the Advocate sandbox (its credentials in the stack's AdvocateSecretArn secret).
Every type in both formats lands with a correct manifest; an ABORTED export is created again; an
export whose file expired before the copy is exported again."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from exportpipe_dev.local import LocalStack
from exportpipe_dev.sandbox.advocate import EXPORT_TYPES, AdvocateSandbox
from exportpipe_dev.sandbox.pardot import PardotSandbox

from exportpipe.adapters.aws import aws_clients
from exportpipe.adapters.store import DynamoJobStore
from exportpipe.models.job import Job, JobStatus
from tests.e2e.test_fault_matrix import Pause
from tests.sandbox.test_advocate_sandbox import xlsx_rows

pytestmark = pytest.mark.e2e

MARCH = (datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC))
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# the window filter each type is exported by when the definition names none, as the test reads it
WINDOW_PARAMS = {
    "USER": "createdOrUpdated",
    "USER_REFERRAL": "createdOrUpdated",
    "REFERRAL": "createdOrUpdated",
    "USER_REWARD_BALANCE": "created",
    "REWARD_BALANCE": "created",
}


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    advocate = AdvocateSandbox(processing_seconds=0.5, users_per_day=3.0, seed=13)
    pardot = PardotSandbox(pickup_seconds=0.0, processing_seconds=0.5, seed=5)
    with LocalStack(sandboxes={"pardot": pardot, "advocate": advocate}) as running:
        yield running


@pytest.fixture
def advocate(stack: LocalStack) -> AdvocateSandbox:
    sandbox = stack.sandboxes["advocate"]
    assert isinstance(sandbox, AdvocateSandbox)
    return sandbox


def _store(stack: LocalStack) -> DynamoJobStore:
    return DynamoJobStore(stack.client("dynamodb"), stack.table)


def _start(stack: LocalStack, **definition: Any) -> dict[str, Any]:
    payload = {
        "source": "advocate",
        "name": f"adv-{uuid.uuid4().hex[:10]}",
        "type": "USER",
        "start": MARCH[0].isoformat(),
        **definition,
    }
    # the tick right after March (plus the lag): one window, no backfill after it
    tick = MARCH[1] + timedelta(minutes=5)
    started = stack.invoke("StartExportFunction", {"scheduled_time": tick.isoformat(), "definition": payload})
    assert started["status"] == "EXPORTING", started
    assert started["window"]["start"] == "2025-03-01T00:00:00Z"
    assert started["window"]["end"] == "2025-04-01T00:00:00Z"  # the 31-day longest window
    return started


def _delivered(stack: LocalStack, job_id: str) -> Job:
    assert stack.wait_for_execution(job_id, timeout=90)["status"] == "SUCCEEDED"
    job = _store(stack).get(job_id)
    assert job.status is JobStatus.DELIVERED and job.manifest_key is not None
    return job


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def ground_truth(sandbox: AdvocateSandbox, job: Job) -> list[dict[str, str]]:
    """What exporting the job's window must land: the sandbox's rows for that window, built here from
    the job's window (not from what the client sent), as they were when the upstream export was made."""
    definition = job.definition
    start, end = _ms(job.window.start), _ms(job.window.end)
    params: dict[str, Any] = dict(definition.get("params") or {})
    if definition["type"] == "REWARD":
        params["filter"] = {"dateModified_gte": start, "dateModified_lt": end}
        if params.get("at") == "window_end":
            params["at"] = end
    else:
        prefix = WINDOW_PARAMS[definition["type"]]
        params |= {f"{prefix}Since": start, f"{prefix}Before": end}
    assert job.upstream_created_at is not None
    as_of = datetime.fromisoformat(job.upstream_created_at)
    return sandbox.rows_for({"type": definition["type"], "params": params}, as_of=as_of)


def _landed(stack: LocalStack, job: Job) -> tuple[dict[str, Any], list[dict[str, str]], dict[str, Any]]:
    """The manifest, the rows of its one file (checked against the manifest) and the file's S3 head."""
    s3 = stack.client("s3")
    assert job.manifest_key is not None
    manifest = json.loads(s3.get_object(Bucket=stack.bucket, Key=job.manifest_key)["Body"].read())
    (entry,) = manifest["files"]
    body = s3.get_object(Bucket=stack.bucket, Key=entry["key"])["Body"].read()
    head = s3.head_object(Bucket=stack.bucket, Key=entry["key"])
    assert hashlib.sha256(body).hexdigest() == entry["sha256"] and len(body) == entry["bytes"]
    if manifest["format"] == "xlsx":
        _, rows = xlsx_rows(body)
    else:
        rows = list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))
    return manifest, rows, head


CASES = [(t, f) for t in EXPORT_TYPES for f in ("CSV", "XLSX")]
EXTRAS: dict[tuple[str, str], dict[str, Any]] = {
    ("USER", "XLSX"): {"fields": {"includeUserStatsFields": True}, "programId": "partner-program"},
    ("REWARD", "CSV"): {
        "fields": {"includeReferralFields": True, "includeUserFields": True},
        "at": "window_end",
    },
}


def test_every_type_in_both_formats_lands_with_a_correct_manifest(
    stack: LocalStack, advocate: AdvocateSandbox
) -> None:
    # GIVEN a definition of every type in each format, March 2025 each, all started at once
    started = {
        case: _start(stack, type=case[0], format=case[1], params=EXTRAS.get(case, {})) for case in CASES
    }
    for (export_type, fmt), start in started.items():
        # WHEN the workflows have polled and copied them
        job = _delivered(stack, start["job_id"])
        manifest, rows, head = _landed(stack, job)
        # THEN each landed as its one part with its extension and content type, its records counted
        # (XLSX by streaming its sheet) as the sandbox's own rows for the window, every row as made
        ext, content_type = ("xlsx", XLSX_TYPE) if fmt == "XLSX" else ("csv", "text/csv")
        (entry,) = manifest["files"]
        assert entry["key"].endswith(f"/part-00001.{ext}") and manifest["format"] == ext
        assert entry["content_type"] == head["ContentType"] == content_type
        truth = ground_truth(advocate, job)
        assert rows == truth != [], (export_type, fmt)
        assert entry["records"] == manifest["totals"]["records"] == len(truth), (export_type, fmt)
        assert manifest["source"] == "advocate" and manifest["upstream_id"] == job.upstream_id
        dataset = {"USER_REFERRAL": "user_referrals", "USER_REWARD_BALANCE": "user_reward_balances"}.get(
            export_type, f"{export_type.lower()}s"
        )
        assert manifest["dataset"] == dataset and f"/dataset={dataset}/dt=2025-03-01/" in entry["key"]
        # AND the manifest says how the files write dates: epoch ms, in these columns
        assert manifest["timezone"] == "UTC"
        described = manifest["time_format"]
        assert described["encoding"] == "epoch_ms"
        pattern = re.compile(described["column_pattern"])
        assert set(described["columns"]) <= set(rows[0])
        dates = [c for c in rows[0] if pattern.match(c)]
        assert all(re.fullmatch(r"\d{13}|", row[c]) for row in rows for c in dates), (export_type, fmt)
        assert bool(dates) is (export_type != "REWARD_BALANCE") and set(dates) >= set(described["columns"])
    # AND the CSV and XLSX of a type count the same records
    for export_type in EXPORT_TYPES:
        counts = {
            _store(stack).get(started[(export_type, f)]["job_id"]).files[0].records for f in ("CSV", "XLSX")
        }
        if export_type not in ("USER", "REWARD"):  # those two differ in their params above
            assert len(counts) == 1, export_type


def test_an_aborted_export_is_created_again_then_delivered(
    stack: LocalStack, advocate: AdvocateSandbox
) -> None:
    advocate.fail_next(1)
    started = _start(stack, type="REFERRAL", format="XLSX")
    job = _delivered(stack, started["job_id"])
    assert job.recreates == 1 and job.upstream_id != started["upstream_id"]
    restarted = [t for t in job.history if t.status is JobStatus.EXPORTING][1]
    assert f"upstream export {started['upstream_id']} is ABORTED; created again as {job.upstream_id}" in (
        restarted.reason or ""
    )
    _, rows, _ = _landed(stack, job)
    assert rows == ground_truth(advocate, job) != []


def test_an_export_that_keeps_aborting_fails_the_job_with_the_reason(
    stack: LocalStack, advocate: AdvocateSandbox
) -> None:
    advocate.fail_next(3)  # the first export and both re-creations (UpstreamRecreateAttempts: 2)
    started = _start(stack, type="USER_REWARD_BALANCE")
    assert stack.wait_for_execution(started["job_id"], timeout=90)["status"] == "FAILED"
    job = _store(stack).get(started["job_id"])
    assert job.status is JobStatus.FAILED and job.recreates == 2
    assert "is ABORTED; gave up after 3 upstream export(s)" in (job.reason or "")


def test_an_export_expired_before_the_copy_is_exported_again(
    stack: LocalStack, advocate: AdvocateSandbox
) -> None:
    # GIVEN an export whose copy is held at its start
    started = _start(stack, type="USER", format="XLSX")
    job_id = started["job_id"]
    pause = Pause(
        aws_clients().s3, "ListMultipartUploads", lambda p: f"/export={job_id}/" in str(p.get("Prefix", ""))
    )
    with pause.armed():
        assert pause.reached.wait(30), "the copy never started"
        # WHEN its file expires before the copy downloads it
        advocate.clock.advance(timedelta(days=advocate.expiry_days + 1))
        assert advocate.export_status(started["upstream_id"]).value == "EXPIRED"
        pause.go()
    # THEN the job exports the window again and delivers the new export's file
    job = _delivered(stack, job_id)
    assert job.reexports == 1 and job.upstream_id != started["upstream_id"]
    assert any("expired before it was copied" in (t.reason or "") for t in job.history)
    refused = [e for e in advocate.request_log if e.path.endswith(f"{started['upstream_id']}/download")]
    assert [e.status for e in refused] == [404]
    _, rows, _ = _landed(stack, job)
    assert rows == ground_truth(advocate, job) != []
