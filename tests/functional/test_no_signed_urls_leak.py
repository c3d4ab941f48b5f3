"""A download whose connection fails on a signed URL (issue 12, item 3): its query string reaches
none of the places a message goes — the raised error (the Lambda ``errorMessage`` Step Functions
keeps), the logs, the job record, the ``Export Failed`` event."""

from __future__ import annotations

import io
import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from exportpipe_dev.local import LocalStack
from exportpipe_dev.local.stack import FunctionFailedError
from exportpipe_dev.sandbox.pardot import PardotSandbox

from exportpipe.adapters.events import EventPublisher
from exportpipe.adapters.store import DynamoJobStore
from exportpipe.http import make_session
from exportpipe.models.job import JobStatus
from exportpipe.observability import logger
from exportpipe.services.copy_result import MAX_COPY_RETRIES
from functions.check_status.app import lambda_handler as check_status
from functions.start_export.app import lambda_handler as start_export
from tests.conftest import load_event

Ctx = Callable[[str], Any]
SECRET = "c2lnbmF0dXJlLXNlY3JldA"


def _signed_url_nobody_answers() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]  # nothing listens there once the socket is closed
    return (
        f"http://127.0.0.1:{closed}/storage/exports/1/2.csv"
        f"?X-Amz-Credential=AKIA{SECRET}&X-Amz-Signature={SECRET}&X-Amz-Expires=900"
    )


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    captured = io.StringIO()
    previous = handler.setStream(captured)
    try:
        yield captured
    finally:
        handler.setStream(previous)


@pytest.fixture
def no_http_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "exportpipe.sources.pardot.client.make_session", lambda: make_session(total_retries=0)
    )


def _ready(stack: LocalStack, context: Ctx, name: str) -> str:
    event = load_event("start_export_schedule")
    event["definition"] = {**event["definition"], "name": name}
    job_id = str(start_export(event, context("StartExportFunction"))["job_id"])
    attempt = 0
    for _ in range(50):
        answer = check_status({"job_id": job_id, "attempt": attempt}, context("CheckStatusFunction"))
        if answer["status"] != "EXPORTING":
            break
        attempt = answer["attempt"]
        time.sleep(0.1)
    assert answer["status"] == "READY"
    return job_id


@pytest.mark.usefixtures("no_http_retries")
def test_a_signed_url_that_cannot_be_reached_leaks_nowhere(
    stack: LocalStack, pardot: PardotSandbox, context: Ctx, log_output: io.StringIO
) -> None:
    pardot.file_count = 1
    job_id = _ready(stack, context, "leak-connection")
    store = DynamoJobStore(stack.client("dynamodb"), stack.table)
    # GIVEN the upstream hands out a signed storage URL whose host does not answer
    store.update(job_id, JobStatus.READY, {"result_urls": [_signed_url_nobody_answers()]})
    # WHEN the copy runs until it gives up (through Lambda, as the workflow would call it)
    for _ in range(MAX_COPY_RETRIES):
        assert stack.invoke("CopyResultFunction", {"job_id": job_id})["status"] == "COPYING"
    with pytest.raises(FunctionFailedError) as info:
        stack.invoke("CopyResultFunction", {"job_id": job_id})
    error = info.value.payload
    assert error["errorType"] == "UpstreamUnavailableError" and "failed" in error["errorMessage"]
    # AND the workflow's failure recorder gets that error, as Step Functions passes it on
    cause = json.dumps({"errorMessage": error["errorMessage"], "errorType": error["errorType"]})
    failure = {"job_id": job_id, "attempt": 0, "error": {"Error": error["errorType"], "Cause": cause}}
    assert check_status(failure, context("CheckStatusFunction"))["status"] == "FAILED"
    # THEN the signature is nowhere: not in the error, the logs, the job record or the event
    assert SECRET not in json.dumps(error)
    logs = log_output.getvalue()
    assert "copy interrupted" in logs and "export not delivered" in logs and SECRET not in logs
    # the tracer logs the failed handler's exception with its causes (the requests error): scrubbed too
    assert "Exception received from lambda_handler" in logs and "ConnectionError" in logs
    item = stack.client("dynamodb").get_item(TableName=stack.table, Key={"pk": {"S": f"JOB#{job_id}"}})[
        "Item"
    ]
    job = store.get(job_id)
    assert job.status is JobStatus.FAILED and job.reason and "?…" in job.reason
    assert SECRET not in job.reason and SECRET not in json.dumps(item["history"])
    failed = [
        e["detail"]
        for e in stack.consumer_events(wait_seconds=2)
        if e["detail-type"] == "Export Failed" and e["detail"]["job_id"] == job_id
    ]
    assert len(failed) == 1 and failed[0]["reason"] == job.reason and SECRET not in json.dumps(failed[0])


def test_the_store_and_the_event_scrub_text_from_anywhere(
    stack: LocalStack, pardot: PardotSandbox, context: Ctx
) -> None:
    # text that did not come from a domain error (a library's message, say) is scrubbed on write too
    pardot.file_count = 1
    job_id = _ready(stack, context, "leak-store")
    store = DynamoJobStore(stack.client("dynamodb"), stack.table)
    signed = f"https://storage.example/x.csv?sig={SECRET}"
    store.update(job_id, JobStatus.READY, {"upstream_state": f"unavailable: GET {signed} timed out"})
    failed = store.transition(job_id, JobStatus.FAILED, reason=f"ReadTimeout: {signed}")
    item = stack.client("dynamodb").get_item(TableName=stack.table, Key={"pk": {"S": f"JOB#{job_id}"}})[
        "Item"
    ]
    assert SECRET not in json.dumps(item) and failed.reason == "ReadTimeout: https://storage.example/x.csv?…"
    publisher = EventPublisher(stack.client("events"), stack.event_bus)
    detail = publisher.failed(failed.model_copy(update={"reason": f"ReadTimeout: {signed}"}))
    assert SECRET not in json.dumps(detail)
    sent = [e for e in stack.consumer_events(wait_seconds=2) if e["detail"].get("job_id") == job_id]
    assert sent and SECRET not in json.dumps(sent)
