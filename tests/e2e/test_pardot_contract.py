"""The Pardot Export API contract end to end: every object x procedure, token expiry mid-export,
66 and 122, a canceled export, an expired one, and a two-year backfill, each through the local
stack's real state machine against the sandbox."""

from __future__ import annotations

import csv
import io
import itertools
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from exportpipe_dev.local import LocalStack
from exportpipe_dev.local.stack import LOCAL_PARAMETERS
from exportpipe_dev.sandbox.pardot import PardotSandbox

from exportpipe.adapters.store import DynamoJobStore
from exportpipe.models.job import Job, JobStatus, job_id_for
from exportpipe.sources.pardot.catalog import OBJECTS
from exportpipe.sources.registry import parse_definition
from tests.conftest import ground_truth

pytestmark = pytest.mark.e2e

NOW = datetime.now(UTC).replace(second=0, microsecond=0)


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    sandbox = PardotSandbox(pickup_seconds=0.0, processing_seconds=0.3, seed=23, record_spacing_seconds=3600)
    with LocalStack(sandboxes={"pardot": sandbox}) as running:
        yield running


def _store(stack: LocalStack) -> DynamoJobStore:
    return DynamoJobStore(stack.client("dynamodb"), stack.table)


def _definition(
    name: str, obj: str = "prospect", procedure: str = "filter_by_updated_at", **extra: Any
) -> dict:
    return {
        "source": "pardot",
        "name": name,
        "object": obj,
        "procedure": procedure,
        "timezone": "America/New_York",
        "start": (NOW - timedelta(days=3)).isoformat(),
        **extra,
    }


def _start(stack: LocalStack, definition: dict[str, Any], until: datetime = NOW) -> dict[str, Any]:
    return stack.invoke("StartExportFunction", {"definition": definition, "until": until.isoformat()})


def _rows(stack: LocalStack, job: Job) -> list[dict[str, str]]:
    assert job.manifest_key is not None
    s3 = stack.client("s3")
    manifest = json.loads(s3.get_object(Bucket=stack.bucket, Key=job.manifest_key)["Body"].read())
    rows: list[dict[str, str]] = []
    for f in manifest["files"]:
        body = s3.get_object(Bucket=stack.bucket, Key=f["key"])["Body"].read().decode()
        part = list(csv.DictReader(io.StringIO(body, newline="")))
        assert len(part) == f["records"]
        rows += part
    assert manifest["totals"]["records"] == len(rows)
    return sorted(rows, key=lambda r: int(r["id"]))


def _delivered(stack: LocalStack, job_id: str, timeout: float = 90) -> Job:
    execution = stack.wait_for_execution(job_id, timeout=timeout)
    job = _store(stack).get(job_id)
    assert execution["status"] == "SUCCEEDED", (job.status, job.reason)
    assert job.status is JobStatus.DELIVERED
    return job


def _api_calls(sandbox: PardotSandbox, status: int, method: str, prefix: str = "/api/v5/exports") -> int:
    return sum(
        1
        for e in sandbox.request_log
        if e.status == status and e.method == method and e.path.startswith(prefix)
    )


PAIRS = [(o, p) for o, obj in sorted(OBJECTS.items()) for p in sorted(obj.procedures)]


def test_every_object_and_procedure_lands_exactly_its_rows(stack: LocalStack, pardot: PardotSandbox) -> None:
    # GIVEN one definition per object x procedure, all fields WHEN they are all started at once
    started = {
        (o, p): _start(
            stack,
            _definition(f"all-{o.lower()[:12]}-{p.removeprefix('filter_by_')[:18]}".replace("_", "-"), o, p),
        )
        for o, p in PAIRS
    }
    assert len(started) == sum(len(obj.procedures) for obj in OBJECTS.values()) >= 11
    # THEN each lands exactly the records stamped in its window [start, end), with all the object's fields
    for (o, p), result in started.items():
        job = _delivered(stack, result["job_id"])
        assert job.window.start == NOW - timedelta(days=3) and job.window.end <= NOW
        rows = _rows(stack, job)
        assert rows, (o, p)  # every pair has data, so no check below is vacuous
        assert rows == ground_truth(pardot, job), (o, p)
        assert list(rows[0]) == list(OBJECTS[o].fields)


def test_token_expiry_mid_export_is_renewed_without_failing(stack: LocalStack, pardot: PardotSandbox) -> None:
    pardot.processing_seconds = 2.0
    logins_before = sum(1 for e in pardot.request_log if e.path == "/services/oauth2/token")
    started = _start(stack, _definition("token-expiry"))
    pardot.expire_tokens()  # every issued token dies while the export is running
    job = _delivered(stack, started["job_id"])
    assert _api_calls(pardot, 401, "GET") >= 1  # the next poll was refused...
    assert (
        sum(1 for e in pardot.request_log if e.path == "/services/oauth2/token") > logins_before
    )  # ...and renewed
    assert _rows(stack, job) == ground_truth(pardot, job)


def test_concurrency_limit_66_is_retried_with_backoff(stack: LocalStack, pardot: PardotSandbox) -> None:
    seen = len(pardot.request_log)
    pardot.force_error(66, times=2)
    started = _start(stack, _definition("limit-66"))
    assert started["status"] == "EXPORTING"  # the create got through on its third try
    creates = [e for e in pardot.request_log[seen:] if (e.method, e.path) == ("POST", "/api/v5/exports")]
    assert [e.status for e in creates] == [429, 429, 200]
    # and it waited before each retry, longer the second time (backoff, then twice that)
    backoff = float(LOCAL_PARAMETERS["UpstreamBackoffSeconds"])
    waits = [b.received - a.received for a, b in itertools.pairwise(creates)]
    assert waits[0] >= backoff and waits[1] >= 2 * backoff, waits
    _delivered(stack, started["job_id"])


def test_daily_limit_122_on_create_waits_without_spending_calls_and_keeps_the_window(
    stack: LocalStack, pardot: PardotSandbox
) -> None:
    # a fixed until (not "now"), so every delivery below plans exactly the same window
    until = NOW - timedelta(minutes=30)

    def creates() -> list[int]:
        return [e.status for e in pardot.request_log if e.method == "POST" and e.path == "/api/v5/exports"]

    before = len(creates())
    pardot.force_error(122, times=1)
    first = _start(stack, _definition("limit-122-create"), until=until)
    assert first["status"] == "REQUESTED" and "122" in first["reason"]
    job = _store(stack).get(first["job_id"])
    assert job.status is JobStatus.REQUESTED and job.upstream_id is None
    # a re-delivery right away (within RateLimitWaitSeconds, 1 s here) spends no call
    again = _start(stack, _definition("limit-122-create"), until=until)
    assert again["job_id"] == first["job_id"] and again["status"] == "REQUESTED"
    assert creates()[before:] == [429]
    # after the wait the same job and window go on — created once, by its workflow or by a later
    # delivery, whichever comes first — and are delivered
    time.sleep(1.5)
    later = _start(stack, _definition("limit-122-create"), until=until)
    assert later["job_id"] == first["job_id"]  # (REQUESTED still if the workflow is creating it now)
    delivered = _delivered(stack, first["job_id"])
    assert delivered.window == job.window
    assert creates()[before:] == [429, 200]


def test_daily_limit_122_while_polling_waits_and_goes_on(stack: LocalStack, pardot: PardotSandbox) -> None:
    pardot.processing_seconds = 1.5
    refused_before = _api_calls(pardot, 429, "GET")
    started = _start(stack, _definition("limit-122-poll"))
    pardot.force_error(122, times=1)  # the workflow's next call is its first status check
    job = _delivered(stack, started["job_id"])
    assert _api_calls(pardot, 429, "GET") - refused_before == 1
    assert job.poll_attempts >= 1


def _cancel(stack: LocalStack, sandbox: PardotSandbox, export_id: str) -> requests.Response:
    headers = {
        "Authorization": f"Bearer {sandbox.issue_access_token()}",
        "Pardot-Business-Unit-Id": sandbox.business_unit_id,
    }
    return requests.post(
        f"{stack.sandbox_url('pardot')}/api/v5/exports/{export_id}/do/cancel", headers=headers, timeout=10
    )


def test_an_export_canceled_upstream_ends_canceled(stack: LocalStack, pardot: PardotSandbox) -> None:
    pardot.processing_seconds = 30.0
    started = _start(stack, _definition("canceled"))
    assert _cancel(stack, pardot, started["upstream_id"]).json()["state"] == "Canceled"
    execution = stack.wait_for_execution(started["job_id"], timeout=60)
    assert execution["status"] == "FAILED"
    job = _store(stack).get(started["job_id"])
    assert job.status is JobStatus.CANCELED and "was canceled" in (job.reason or "")
    events = [e for e in stack.consumer_events(wait_seconds=2) if e["detail"]["job_id"] == job.job_id]
    assert [(e["detail-type"], e["detail"]["status"]) for e in events] == [("Export Failed", "CANCELED")]


def test_an_export_expired_before_the_copy_is_exported_again(
    stack: LocalStack, pardot: PardotSandbox
) -> None:
    # GIVEN the sandbox clock stands still while the workflow polls
    pardot.clock.freeze()
    started = _start(stack, _definition("expired"))
    time.sleep(2.5)  # the workflow has polled at least once: the export is still Waiting
    assert _store(stack).get(started["job_id"]).status is JobStatus.EXPORTING
    # WHEN eight days pass before the next check: the export completed, then its data expired
    pardot.clock.advance(timedelta(days=8))
    deadline = time.monotonic() + 30
    while _store(stack).get(started["job_id"]).reexports == 0:
        assert time.monotonic() < deadline, "no re-export"
        time.sleep(0.2)
    pardot.clock.advance(5)  # the re-export completes
    # THEN the job delivers the new export's files, and its history says why it started over
    job = _delivered(stack, started["job_id"])
    assert job.upstream_id != started["upstream_id"] and job.reexports == 1
    assert any("expired before it was copied" in (t.reason or "") for t in job.history)
    assert _rows(stack, job) == ground_truth(pardot, job)


def test_a_two_year_backfill_runs_as_contiguous_jobs(stack: LocalStack, pardot: PardotSandbox) -> None:
    until = datetime(2026, 11, 1, tzinfo=UTC)
    start = until - timedelta(days=730)
    definition = _definition(
        "backfill-2y",
        "listMembership",
        "filter_by_created_at",
        start=start.isoformat(),
        fields=["id", "listId", "prospectId", "createdAt"],
    )
    first = _start(stack, definition, until=until)
    assert first["status"] == "EXPORTING"
    # the windows the API accepts, back to back: [start, +364 d), [+364 d, +728 d), [+728 d, until)
    parsed = parse_definition(definition)
    windows, mark = [], None
    while (w := parsed.plan_window(mark, until)) is not None:
        windows.append(w)
        mark = w.end
    assert len(windows) >= 2 and windows[0].start == start and windows[-1].end == until
    assert all(a.end == b.start for a, b in itertools.pairwise(windows))
    jobs = [_delivered(stack, job_id_for("backfill-2y", w), timeout=120) for w in windows]
    assert [j.window for j in jobs] == windows
    assert first["job_id"] == jobs[0].job_id
    landed: list[dict[str, str]] = []
    for job in jobs:
        rows = _rows(stack, job)
        assert rows == ground_truth(pardot, job)
        landed += rows
    # together the jobs land every record of [start, until) once: a gap or an overlap between two
    # windows (even one hour) fails here even if each job matched its own window
    ids = [r["id"] for r in landed]
    assert len(ids) == len(set(ids)) > 0
    everything = pardot.csv_records_in(
        "listMembership", "filter_by_created_at", start, until, fields=definition["fields"]
    )
    assert sorted(landed, key=lambda r: int(r["id"])) == everything
    assert _store(stack).watermark("backfill-2y") == until
