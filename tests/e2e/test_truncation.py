"""End-to-end: downloads cut short under every framing a server may use, through the local stack.

A close-delimited download (no Content-Length, no chunking: the body ends when the connection
closes) that stops halfway looks complete to HTTP; only the CSV can tell (Pardot ends every record
with a line break). Before the format checks, the cut files landed and the manifest listed them as
complete with wrong record counts. Here no file
of such a job is ever recorded as landed; the copy is retried and delivers the sandbox's ground truth
once the downloads are whole again, or the job fails with nothing left in S3.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from exportpipe_dev.local import LocalStack
from exportpipe_dev.sandbox.base import Framing
from exportpipe_dev.sandbox.pardot import PardotSandbox

from exportpipe.adapters.store import DynamoJobStore
from exportpipe.models.job import Job, JobStatus
from exportpipe.services.copy_result import MAX_COPY_RETRIES
from tests.conftest import ground_truth, load_event

pytestmark = pytest.mark.e2e


@pytest.fixture
def cut_downloads(pardot: PardotSandbox) -> Iterator[PardotSandbox]:
    """The sandbox with its download knobs put back after the test (the shared fixture restores
    the others)."""
    saved = pardot.download_framing, pardot.truncate_downloads
    yield pardot
    pardot.download_framing, pardot.truncate_downloads = saved


def _event(name: str) -> dict[str, Any]:
    event = load_event("start_export_schedule")
    event["definition"] = {**event["definition"], "name": name}
    return event


def _keys(stack: LocalStack, job_id: str) -> list[str]:
    listed = stack.client("s3").list_objects_v2(Bucket=stack.bucket, Prefix="exports/").get("Contents", [])
    return [o["Key"] for o in listed if f"/export={job_id}/" in o["Key"]]


def _no_upload_in_flight(stack: LocalStack) -> bool:
    return not stack.client("s3").list_multipart_uploads(Bucket=stack.bucket).get("Uploads")


def _cut_is_visible(body: bytes) -> bool:
    """Where the sandbox cut this file (half its length) the bytes show it: the cut is not right
    after a record's line break (read with Python's csv module). Pardot ends every record with one."""
    prefix = body[: max(0, min(len(body) - 1, len(body) // 2))]
    try:
        list(csv.reader(io.StringIO(prefix.decode("utf-8", "replace"), newline=""), strict=True))
    except csv.Error:
        return True  # inside a quoted field
    return not prefix.endswith(b"\n")


def _delivered(stack: LocalStack, pardot: PardotSandbox, job: Job) -> list[bytes]:
    """The job's landed files, checked against its manifest and the sandbox's ground truth."""
    assert job.status is JobStatus.DELIVERED and job.manifest_key is not None
    s3 = stack.client("s3")
    manifest = json.loads(s3.get_object(Bucket=stack.bucket, Key=job.manifest_key)["Body"].read())
    bodies, rows = [], []
    for f in manifest["files"]:
        body = s3.get_object(Bucket=stack.bucket, Key=f["key"])["Body"].read()
        parsed = list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))
        assert len(body) == f["bytes"] and f["records"] == len(parsed)
        bodies.append(body)
        rows += parsed
    assert sorted(rows, key=lambda r: int(r["id"])) == ground_truth(pardot, job) != []
    assert sorted(_keys(stack, job.job_id)) == sorted(
        [*(f["key"] for f in manifest["files"]), job.manifest_key]
    )
    return bodies


def test_a_close_delimited_download_cut_halfway_is_copied_again_and_lands_whole(
    stack: LocalStack, cut_downloads: PardotSandbox
) -> None:
    pardot = cut_downloads
    pardot.file_count = 3
    pardot.download_framing = "close"
    pardot.truncate_downloads = True
    store = DynamoJobStore(stack.client("dynamodb"), stack.table)
    started = stack.invoke("StartExportFunction", _event("e2e-close-cut"))
    job_id = started["job_id"]

    # WHILE every download is cut halfway by a clean close: no file is recorded as landed, none is
    # stored, no upload is left open; the copy is interrupted and will be tried again
    deadline = time.monotonic() + 60
    while True:
        job = store.get(job_id)
        assert job.files == [] and job.manifest_key is None, "a cut file was taken for a whole one"
        assert _keys(stack, job_id) == []
        if job.copy_retries >= 1:
            break
        assert job.status not in (JobStatus.DELIVERED, JobStatus.FAILED), job.status
        assert time.monotonic() < deadline, "the cut download was never refused"
        time.sleep(0.05)
    assert _no_upload_in_flight(stack)

    # WHEN the downloads are whole again (still close-delimited)
    pardot.truncate_downloads = False
    # THEN the retried copy delivers exactly the sandbox's records, counted right in the manifest
    execution = stack.wait_for_execution(job_id, timeout=120)
    assert execution["status"] == "SUCCEEDED"
    job = store.get(job_id)
    bodies = _delivered(stack, pardot, job)
    assert len(bodies) == 3 and all(_cut_is_visible(b) for b in bodies)
    states = stack.execution_states(job_id)
    assert states.count("CopyResult") >= 2 and "WaitBeforeCopy" in states
    assert _no_upload_in_flight(stack)


@pytest.mark.parametrize("framing", ["close", "chunked"])
def test_a_download_that_stays_cut_fails_the_job_and_leaves_nothing(
    stack: LocalStack, cut_downloads: PardotSandbox, framing: Framing
) -> None:
    pardot = cut_downloads
    pardot.download_framing = framing
    pardot.truncate_downloads = True
    started = stack.invoke("StartExportFunction", _event(f"e2e-{framing}-cut-always"))
    execution = stack.wait_for_execution(started["job_id"], timeout=180)
    assert execution["status"] == "FAILED"
    states = stack.execution_states(started["job_id"])
    assert states.count("CopyResult") == 1 + MAX_COPY_RETRIES
    job = DynamoJobStore(stack.client("dynamodb"), stack.table).get(started["job_id"])
    assert job.status is JobStatus.FAILED and job.files == []
    assert (job.reason or "").startswith("DownloadIncompleteError")
    assert _keys(stack, job.job_id) == []
    assert _no_upload_in_flight(stack)
