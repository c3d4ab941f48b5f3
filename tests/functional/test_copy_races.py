"""Copies that race: with each other, with the workflow's failure recorder, and with their own stale
selves. Each test pauses one party at an exact S3 call (a botocore hook on the handlers' shared S3
client) while the other runs to its end, then checks what a consumer relies on: a delivered job has
its manifest and every file it lists; a failed job has nothing left in its folder."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from exportpipe_dev.local import LocalStack
from exportpipe_dev.sandbox.pardot import PardotSandbox

from exportpipe.adapters.aws import aws_clients
from exportpipe.adapters.store import DynamoJobStore
from exportpipe.models.job import JobStatus
from functions.check_status.app import lambda_handler as check_status
from functions.copy_result.app import lambda_handler as copy_result
from functions.start_export.app import lambda_handler as start_export
from tests.conftest import load_event

Ctx = Callable[[str], Any]


def _ready(stack: LocalStack, pardot: PardotSandbox, context: Ctx, name: str, files: int = 2) -> str:
    pardot.file_count = files
    event = load_event("start_export_schedule")
    event["definition"] = {**event["definition"], "name": name}
    job_id = str(start_export(event, context("StartExportFunction"))["job_id"])
    for attempt in range(60):
        answer = check_status({"job_id": job_id, "attempt": attempt}, context("CheckStatusFunction"))
        if answer["status"] == "READY":
            return job_id
        threading.Event().wait(0.1)
    raise AssertionError(f"{job_id} never became ready")


@contextmanager
def paused_at(
    operation: str, match: Callable[[dict[str, Any]], bool], *, after: bool = False
) -> Iterator[tuple[threading.Event, threading.Event]]:
    """Pause the first S3 ``operation`` whose parameters ``match`` (in whichever thread makes it) until
    the test sets ``go``; ``reached`` is set when it is paused: before the request is built, or with
    ``after``, once its answer came back (before the caller sees it). Once only."""
    reached, go = threading.Event(), threading.Event()
    used = threading.Lock()
    armed = threading.local()
    s3 = aws_clients().s3

    def pause() -> None:
        reached.set()
        assert go.wait(60), "the paused call was never released"

    def before(params: dict[str, Any], **_: Any) -> None:
        if match(params) and used.acquire(blocking=False):
            if after:
                armed.on = True
            else:
                pause()

    def answered(**_: Any) -> None:
        if getattr(armed, "on", False):
            armed.on = False
            pause()

    hooks = [(f"before-parameter-build.s3.{operation}", before), (f"after-call.s3.{operation}", answered)]
    for event, hook in hooks:
        s3.meta.events.register(event, hook)
    try:
        yield reached, go
    finally:
        go.set()
        for event, hook in hooks:
            s3.meta.events.unregister(event, hook)


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except Exception as exc:
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _check_invariants(stack: LocalStack, job_id: str) -> JobStatus:
    """A delivered job: its manifest lists exactly the folder's files, each present with its bytes.
    An undelivered one: nothing in its folder, no open upload."""
    job = DynamoJobStore(stack.client("dynamodb"), stack.table).get(job_id)
    s3 = stack.client("s3")
    prefix = f"exports/source=pardot/dataset=visitor_activity/dt=2026-11-24/export={job_id}/"
    keys = {
        o["Key"]: o["Size"]
        for o in s3.list_objects_v2(Bucket=stack.bucket, Prefix=prefix).get("Contents", [])
    }
    uploads = s3.list_multipart_uploads(Bucket=stack.bucket, Prefix=prefix).get("Uploads", [])
    assert not uploads, f"open multipart uploads left: {uploads}"
    if job.status is JobStatus.DELIVERED:
        manifest = json.loads(
            s3.get_object(Bucket=stack.bucket, Key=prefix + "_manifest.json")["Body"].read()
        )
        listed = {f["key"]: f["bytes"] for f in manifest["files"]}
        assert listed and {k: v for k, v in keys.items() if not k.endswith("_manifest.json")} == listed
    else:
        assert job.status.terminal, job.status
        assert keys == {}, f"objects of an undelivered job left: {sorted(keys)}"
    return job.status


def _failure(job_id: str) -> dict[str, Any]:
    return {**load_event("check_status_failure"), "job_id": job_id}


def test_a_failure_recorder_that_checked_for_a_manifest_before_the_commit_does_not_empty_a_delivery(
    stack: LocalStack, pardot: PardotSandbox, context: Ctx
) -> None:
    # GIVEN a copy under way (held at its first file's upload) when the failure recorder starts
    job_id = _ready(stack, pardot, context, "race-recorder-first")
    first_part = lambda p: p.get("Key", "").endswith(f"{job_id}/part-00001.csv")  # noqa: E731
    manifest = lambda p: p.get("Key", "").endswith(f"{job_id}/_manifest.json")  # noqa: E731
    with paused_at("PutObject", first_part) as (copy_reached, copy_go):
        copier, copied = _in_thread(lambda: copy_result({"job_id": job_id}, context("CopyResultFunction")))
        assert copy_reached.wait(30)
        # WHEN the recorder is held right after it looked for the manifest, and the copy commits
        with paused_at("GetObject", manifest, after=True) as (rec_reached, rec_go):
            recorder, recorded = _in_thread(
                lambda: check_status(_failure(job_id), context("CheckStatusFunction"))
            )
            assert rec_reached.wait(30)
            copy_go.set()
            copier.join(30)
            rec_go.set()
            recorder.join(30)
    # THEN the delivery stands, with every file its manifest lists
    assert copied.get("result", {}).get("status") == "DELIVERED", copied
    assert recorded.get("result", {}).get("status") == "DELIVERED", recorded
    assert _check_invariants(stack, job_id) is JobStatus.DELIVERED


def test_a_commit_decided_before_the_failure_recorder_runs_is_finished_by_it(
    stack: LocalStack, pardot: PardotSandbox, context: Ctx
) -> None:
    # GIVEN a copy held just before it writes the manifest
    job_id = _ready(stack, pardot, context, "race-copy-first")
    with paused_at("PutObject", lambda p: p.get("Key", "").endswith(f"{job_id}/_manifest.json")) as (
        reached,
        go,
    ):
        copier, out = _in_thread(lambda: copy_result({"job_id": job_id}, context("CopyResultFunction")))
        assert reached.wait(30)
        # WHEN the failure recorder runs meanwhile
        recorded = check_status(_failure(job_id), context("CheckStatusFunction"))
        go.set()
        copier.join(30)
    # THEN it does not fail the job: the delivery was decided, and is finished once, by either
    assert recorded["status"] == "DELIVERED"
    assert out.get("result", {}).get("status") == "DELIVERED", out
    assert _check_invariants(stack, job_id) is JobStatus.DELIVERED
    events = [e for e in stack.consumer_events(wait_seconds=2) if e["detail"]["job_id"] == job_id]
    assert [e["detail-type"] for e in events] == ["Export Delivered"]


def test_a_job_failed_while_its_copy_runs_keeps_nothing_in_its_folder(
    stack: LocalStack, pardot: PardotSandbox, context: Ctx
) -> None:
    # GIVEN a copy held before its second file, and the job failed meanwhile (the recorder won)
    job_id = _ready(stack, pardot, context, "race-fail-midway", files=2)
    second = lambda p: p.get("Key", "").endswith(f"{job_id}/part-00002.csv")  # noqa: E731
    with paused_at("PutObject", second) as (reached, go):
        copier, out = _in_thread(lambda: copy_result({"job_id": job_id}, context("CopyResultFunction")))
        assert reached.wait(30)
        assert check_status(_failure(job_id), context("CheckStatusFunction"))["status"] == "FAILED"
        go.set()
        copier.join(30)
    # THEN the copy can neither record its file nor deliver; nothing of the failed job is left
    assert out.get("result", {}).get("status") == "FAILED", out
    assert _check_invariants(stack, job_id) is JobStatus.FAILED


def test_a_second_copy_of_a_job_waits_for_the_first_instead_of_writing_beside_it(
    stack: LocalStack, pardot: PardotSandbox, context: Ctx
) -> None:
    # GIVEN a copy held mid-way (its first file's upload not yet sent)
    job_id = _ready(stack, pardot, context, "race-two-copies")
    downloads_before = sum(1 for e in pardot.request_log if e.method == "GET" and "/results/" in e.path)
    with paused_at("PutObject", lambda p: job_id in p.get("Key", "")) as (reached, go):
        first, out = _in_thread(lambda: copy_result({"job_id": job_id}, context("CopyResultFunction")))
        assert reached.wait(30)
        # WHEN another copy of the same job starts (a Lambda retry while the first still runs)
        second = copy_result({"job_id": job_id}, context("CopyResultFunction"))
        go.set()
        first.join(30)
    # THEN it downloads nothing and waits for the first copy's invocation to be over
    assert second["status"] == "COPYING" and second["wait_seconds"] > 1
    assert out["result"]["status"] == "DELIVERED"
    downloads = sum(1 for e in pardot.request_log if e.method == "GET" and "/results/" in e.path)
    assert downloads - downloads_before == 2  # each of the two files once
    assert _check_invariants(stack, job_id) is JobStatus.DELIVERED


def test_a_stale_copy_taken_over_after_its_deadline_cannot_record_or_remove_parts(
    stack: LocalStack, pardot: PardotSandbox, context: Ctx
) -> None:
    # GIVEN a copy that outlives its invocation's deadline (held before its first upload)
    job_id = _ready(stack, pardot, context, "race-stale-copy")
    store = DynamoJobStore(stack.client("dynamodb"), stack.table)
    with paused_at("PutObject", lambda p: job_id in p.get("Key", "")) as (reached, go):
        stale, out = _in_thread(lambda: copy_result({"job_id": job_id}, context("CopyResultFunction")))
        assert reached.wait(30)
        job = store.get(job_id)
        stale_owner = job.copy_owner
        # its deadline passes (Lambda would have stopped it): the workflow's next copy takes over
        store.update(job_id, JobStatus.COPYING, {"copy_owner_until": "2000-01-01T00:00:00+00:00"})
        delivered = copy_result({"job_id": job_id}, context("CopyResultFunction"))
        assert delivered["status"] == "DELIVERED"
        go.set()
        stale.join(30)
    # THEN the stale copy recorded nothing, removed nothing, and the delivery is intact
    job = store.get(job_id)
    assert job.copy_owner != stale_owner and job.status is JobStatus.DELIVERED
    assert out.get("result", {}).get("status") == "DELIVERED", out  # it found the job delivered
    assert _check_invariants(stack, job_id) is JobStatus.DELIVERED


@pytest.fixture(autouse=True)
def _drain(stack: LocalStack) -> Iterator[None]:
    yield
    list(stack.consumer_events())
