"""The fakes keep the ports' contracts: each test runs against the AWS adapter (on moto, in process)
and against its in-memory fake, with the same expectations (the job store, the results bucket, the
workflow; the event bus fake publishes through the real EventPublisher). This is what keeps the
fakes honest: a unit test of a service that passes against a fake would pass against AWS."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import TypeDeserializer
from exportpipe_dev.fakes import (
    FakeClock,
    FakeSourceClient,
    InMemoryBucket,
    InMemoryJobStore,
    RecordingWorkflow,
    fake_deps,
    fake_settings,
    fake_spec,
    registered,
)
from exportpipe_dev.local.template import Template
from moto import mock_aws

from exportpipe.adapters.bucket import S3ResultsBucket
from exportpipe.adapters.secrets import clear_secret_cache
from exportpipe.adapters.store import DynamoJobStore
from exportpipe.adapters.workflow import StepFunctionsWorkflow
from exportpipe.errors import ConfigurationError, DownloadIncompleteError, JobNotFoundError, TransitionError
from exportpipe.models.connection import Connection
from exportpipe.models.definition import Window
from exportpipe.models.job import STALE_CLAIM, TRANSITIONS, Job, JobStatus, Transition, job_id_for
from exportpipe.ports import JobStore, ResultsBucket, Workflow
from exportpipe.sources.base import ClientContext, Recovery
from exportpipe.sources.registry import build_client
from tests.conftest import ROOT

START = datetime(2026, 11, 24, tzinfo=UTC)
SIGNED = "https://files.example/x.csv?X-Amz-Signature=abc123"
MIB = 1024 * 1024
_names = itertools.count(1)


@pytest.fixture(scope="module")
def aws() -> Iterator[None]:
    """moto in this process, for the module (a fresh table or bucket for each test)."""
    with pytest.MonkeyPatch.context() as env:
        env.delenv("AWS_ENDPOINT_URL", raising=False)  # one a local stack may have left
        with mock_aws():
            yield


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START + timedelta(days=1))


class Raw:
    """A store and a way to read its raw items (what the table holds)."""

    def __init__(self, store: JobStore, item: Callable[[str], dict[str, Any] | None]) -> None:
        self.store = store
        self.item = item


def _dynamo(clock: FakeClock) -> Iterator[Raw]:
    """The state table as the template declares it (its index included), in moto."""
    client = boto3.client("dynamodb", region_name="us-east-1")
    props = Template.load(ROOT / "template.yaml").resources["StateTable"]["Properties"]
    table = f"jobs-{next(_names)}"
    client.create_table(
        TableName=table,
        AttributeDefinitions=props["AttributeDefinitions"],
        KeySchema=props["KeySchema"],
        BillingMode=props["BillingMode"],
        GlobalSecondaryIndexes=props["GlobalSecondaryIndexes"],
    )
    de = TypeDeserializer()

    def item(key: str) -> dict[str, Any] | None:
        found = client.get_item(TableName=table, Key={"pk": {"S": key}}, ConsistentRead=True).get("Item")
        return {k: de.deserialize(v) for k, v in found.items()} if found else None

    yield Raw(DynamoJobStore(client, table, ttl_days=30, clock=clock), item)
    client.delete_table(TableName=table)


def _memory(clock: FakeClock) -> Iterator[Raw]:
    store = InMemoryJobStore(ttl_days=30, clock=clock)
    yield Raw(store, store.item)


STORES = {"dynamodb": _dynamo, "memory": _memory}


@pytest.fixture(params=sorted(STORES))
def raw(request: pytest.FixtureRequest, aws: None, clock: FakeClock) -> Iterator[Raw]:
    yield from STORES[request.param](clock)


@pytest.fixture
def store(raw: Raw) -> JobStore:
    return raw.store


def _job(clock: FakeClock, name: str = "contract", *, days: int = 1, attempt: int = 1, **fields: Any) -> Job:
    window = Window.of(START, START + timedelta(days=days))
    now = clock()
    values: dict[str, Any] = {
        "job_id": job_id_for(name, window, attempt),
        "definition_name": name,
        "source": "stub",
        "dataset": "stub",
        "definition": {"source": "stub", "name": name, "start": START.isoformat(), "lag_minutes": 5},
        "window": window,
        "attempt": attempt,
        "status": JobStatus.REQUESTED,
        "created_at": now,
        "updated_at": now,
        "history": [Transition(status=JobStatus.REQUESTED, at=now)],
        **fields,
    }
    return Job(**values)


# The way to each status from REQUESTED, one allowed move at a time.
PATHS: dict[JobStatus, list[JobStatus]] = {
    JobStatus.REQUESTED: [],
    JobStatus.EXPORTING: [JobStatus.EXPORTING],
    JobStatus.READY: [JobStatus.EXPORTING, JobStatus.READY],
    JobStatus.COPYING: [JobStatus.EXPORTING, JobStatus.READY, JobStatus.COPYING],
    JobStatus.DELIVERED: [JobStatus.EXPORTING, JobStatus.READY, JobStatus.COPYING, JobStatus.DELIVERED],
    JobStatus.FAILED: [JobStatus.FAILED],
    JobStatus.EXPIRED: [JobStatus.EXPORTING, JobStatus.EXPIRED],
    JobStatus.CANCELED: [JobStatus.CANCELED],
}


def _at(store: JobStore, clock: FakeClock, status: JobStatus, name: str) -> Job:
    job = _job(clock, name)
    assert store.create(job).result == "created"
    for step in PATHS[status]:
        job = store.transition(job.job_id, step)
    assert job.status is status
    return job


# ---- job store -----------------------------------------------------------------------------------


def test_create_records_the_job_and_takes_the_lease(store: JobStore, clock: FakeClock) -> None:
    job = _job(clock)
    outcome = store.create(job)
    assert outcome.result == "created" and outcome.job == job
    assert store.get(job.job_id) == job
    assert store.definition_state("contract")["active_job"] == job.job_id
    assert store.find("nope") is None
    with pytest.raises(JobNotFoundError):
        store.get("nope")


def test_create_again_finds_the_job(store: JobStore, clock: FakeClock) -> None:
    job = _job(clock)
    store.create(job)
    store.transition(job.job_id, JobStatus.EXPORTING)
    again = store.create(job)
    assert again.result == "exists" and again.job is not None
    assert again.job.status is JobStatus.EXPORTING


def test_another_job_of_the_definition_is_busy(store: JobStore, clock: FakeClock) -> None:
    first, second = _job(clock), _job(clock, days=2)
    store.create(first)
    outcome = store.create(second)
    assert (outcome.result, outcome.active_job_id, outcome.job) == ("busy", first.job_id, None)
    assert store.find(second.job_id) is None
    # a re-run of an explicit window needs the lease too
    rerun = _job(clock, days=3, moves_watermark=False)
    assert store.create(rerun).result == "busy"


def test_a_plan_from_a_watermark_that_moved_is_stale(store: JobStore, clock: FakeClock) -> None:
    first = _at(store, clock, JobStatus.DELIVERED, "contract")
    store.settle(first)
    end = first.window.end
    later = _job(clock, days=2)
    assert store.create(later, planned_from=None).result == "stale"  # planned before any delivery
    assert store.create(later, planned_from=end - timedelta(hours=1)).result == "stale"
    assert store.find(later.job_id) is None and "active_job" not in store.definition_state("contract")
    assert store.create(later, planned_from=end).result == "created"


def test_a_rerun_does_not_look_at_the_watermark(store: JobStore, clock: FakeClock) -> None:
    delivered = _at(store, clock, JobStatus.DELIVERED, "contract")
    store.settle(delivered)
    rerun = _job(clock, days=5, moves_watermark=False)
    assert store.create(rerun, planned_from=None).result == "created"


def test_each_transition_is_allowed_or_refused_as_the_table_says(store: JobStore, clock: FakeClock) -> None:
    names = (f"t{n}" for n in itertools.count())
    for current in JobStatus:
        job = _at(store, clock, current, next(names))
        for target in JobStatus:
            if target in TRANSITIONS[current]:
                fresh = _at(store, clock, current, next(names))
                moved = store.transition(fresh.job_id, target, reason=f"to {target}")
                assert moved.status is target and moved.reason == f"to {target}"
                assert moved.history[-1].status is target and len(moved.history) == len(fresh.history) + 1
                continue
            with pytest.raises(TransitionError) as refused:
                store.transition(job.job_id, target, reason="no")
            assert refused.value.current == (None if target is JobStatus.REQUESTED else current.value)
            assert store.get(job.job_id) == job


def test_a_transition_of_a_missing_job_is_not_found(store: JobStore) -> None:
    with pytest.raises(JobNotFoundError):
        store.transition("nope", JobStatus.EXPORTING)
    with pytest.raises(JobNotFoundError):
        store.update("nope", JobStatus.EXPORTING, {"poll_attempts": 1})


def test_a_committed_delivery_can_only_be_delivered(store: JobStore, clock: FakeClock) -> None:
    job = _at(store, clock, JobStatus.READY, "contract")
    store.take_copy(job.job_id, "me", clock() + timedelta(minutes=15))
    intent = {"owner": "me", "delivered_at": clock().isoformat(), "format": "csv", "timezone": "UTC"}
    committed = store.claim_commit(job.job_id, "me", intent, [])
    assert committed.commit is not None and committed.commit.owner == "me"
    for target in (JobStatus.FAILED, JobStatus.EXPIRED, JobStatus.CANCELED, JobStatus.EXPORTING):
        with pytest.raises(TransitionError, match="its delivery is committed"):
            store.transition(job.job_id, target, reason="late failure")
    with pytest.raises(TransitionError, match="its delivery is committed"):
        store.take_copy(job.job_id, "me", clock() + timedelta(minutes=15))
    with pytest.raises(TransitionError, match="its delivery is committed"):
        store.claim_commit(job.job_id, "me", intent, [])
    assert store.update(job.job_id, JobStatus.COPYING, {"copy_retries": 1}).copy_retries == 1
    assert store.transition(job.job_id, JobStatus.DELIVERED).status is JobStatus.DELIVERED


def test_only_the_copy_that_holds_the_job_commits(store: JobStore, clock: FakeClock) -> None:
    job = _at(store, clock, JobStatus.READY, "contract")
    store.take_copy(job.job_id, "me", clock() + timedelta(minutes=15))
    intent = {"owner": "you", "delivered_at": clock().isoformat(), "format": "csv"}
    with pytest.raises(TransitionError, match="no longer"):
        store.claim_commit(job.job_id, "you", intent, [])
    assert store.get(job.job_id).commit is None


def test_a_copy_holds_the_job_until_its_time_is_over(store: JobStore, clock: FakeClock) -> None:
    job = _at(store, clock, JobStatus.READY, "contract")
    mine = store.take_copy(job.job_id, "me", clock() + timedelta(minutes=15))
    assert (mine.status, mine.copy_owner) == (JobStatus.COPYING, "me")
    with pytest.raises(TransitionError):
        store.take_copy(job.job_id, "you", clock() + timedelta(minutes=15))
    assert store.take_copy(job.job_id, "me", clock() + timedelta(minutes=20)).copy_owner == "me"  # my retry
    clock.advance(minutes=21)
    yours = store.take_copy(job.job_id, "you", clock() + timedelta(minutes=15))
    assert yours.copy_owner == "you" and len(yours.history) == len(mine.history) + 2


def test_a_job_ready_again_can_be_taken_whoever_held_it(store: JobStore, clock: FakeClock) -> None:
    job = _at(store, clock, JobStatus.READY, "contract")
    store.take_copy(job.job_id, "me", clock() + timedelta(hours=1))
    store.transition(job.job_id, JobStatus.EXPORTING, reason="re-export")
    store.transition(job.job_id, JobStatus.READY)
    assert store.take_copy(job.job_id, "you", clock() + timedelta(minutes=15)).copy_owner == "you"


def test_take_copy_needs_a_ready_or_copying_job(store: JobStore, clock: FakeClock) -> None:
    for status in (JobStatus.EXPORTING, JobStatus.DELIVERED, JobStatus.FAILED):
        job = _at(store, clock, status, f"c-{status.value.lower()}")
        with pytest.raises(TransitionError) as refused:
            store.take_copy(job.job_id, "me", clock() + timedelta(minutes=15))
        assert refused.value.current == status.value


def test_update_checks_the_status_and_where(store: JobStore, clock: FakeClock) -> None:
    job = _at(store, clock, JobStatus.EXPORTING, "contract")
    with pytest.raises(TransitionError) as wrong:
        store.update(job.job_id, JobStatus.READY, {"poll_attempts": 3})
    assert wrong.value.current == "EXPORTING"
    updated = store.update(job.job_id, [JobStatus.READY, JobStatus.EXPORTING], {"poll_attempts": 3})
    assert updated.poll_attempts == 3 and updated.status is JobStatus.EXPORTING
    store.update(job.job_id, JobStatus.EXPORTING, {"upstream_id": "u-1"})
    assert store.update(job.job_id, JobStatus.EXPORTING, {"rate_limited": 2}, where={"upstream_id": "u-1"})
    with pytest.raises(TransitionError, match="no longer"):
        store.update(job.job_id, JobStatus.EXPORTING, {"rate_limited": 3}, where={"upstream_id": "u-2"})
    other = _at(store, clock, JobStatus.EXPORTING, "other")
    with pytest.raises(TransitionError, match="no longer"):  # an attribute never set is no match
        store.update(other.job_id, JobStatus.EXPORTING, {"rate_limited": 1}, where={"copy_owner": "me"})
    assert store.get(job.job_id).rate_limited == 2


def test_values_dynamodb_cannot_hold_are_refused(store: JobStore, clock: FakeClock) -> None:
    job = _at(store, clock, JobStatus.EXPORTING, "contract")
    with pytest.raises(TypeError):
        store.update(job.job_id, JobStatus.EXPORTING, {"poll_attempts": 1.5})
    assert store.get(job.job_id).poll_attempts == 0


def test_a_requested_job_is_claimed_once_its_claim_is_stale(store: JobStore, clock: FakeClock) -> None:
    job = _job(clock)
    store.create(job)
    assert store.claim_stale(job.job_id) is None  # its starter may still be creating the export
    assert store.claimable_at(job) == clock() + STALE_CLAIM
    clock.advance(STALE_CLAIM + timedelta(seconds=1))
    claimed = store.claim_stale(job.job_id)
    assert claimed is not None and claimed.status is JobStatus.REQUESTED
    assert store.claim_stale(job.job_id) is None  # claimed now: nobody else
    store.transition(job.job_id, JobStatus.EXPORTING)
    clock.advance(STALE_CLAIM * 2)
    assert store.claim_stale(job.job_id) is None
    assert store.claim_stale("nope") is None


def test_a_deferred_job_is_claimable_when_its_wait_is_over(store: JobStore, clock: FakeClock) -> None:
    job = _job(clock)
    store.create(job)
    due = clock() + timedelta(minutes=30)
    deferred = store.defer(job.job_id, due, {"reason": f"rate limited {SIGNED}", "rate_limited": 1})
    assert deferred.rate_limited == 1 and deferred.reason == "rate limited https://files.example/x.csv?…"
    assert store.claimable_at(job) == due
    clock.advance(minutes=29)
    assert store.claim_stale(job.job_id) is None
    clock.advance(minutes=2)
    assert store.claim_stale(job.job_id) is not None
    exporting = _at(store, clock, JobStatus.EXPORTING, "other")
    with pytest.raises(TransitionError):
        store.defer(exporting.job_id, due, {})


def test_settle_moves_the_watermark_only_for_a_delivery_that_moves_it(
    store: JobStore, clock: FakeClock
) -> None:
    rerun = _at(store, clock, JobStatus.DELIVERED, "contract")
    store.settle(rerun.model_copy(update={"moves_watermark": False}))
    assert store.watermark("contract") is None
    assert "active_job" not in store.definition_state("contract")
    delivered = store.get(_at(store, clock, JobStatus.DELIVERED, "moving").job_id)
    store.settle(delivered)
    store.settle(delivered)  # idempotent
    state = store.definition_state("moving")
    assert store.watermark("moving") == delivered.window.end
    assert state["watermark_job"] == delivered.job_id and "active_job" not in state


def test_settle_never_moves_the_watermark_back(store: JobStore, clock: FakeClock) -> None:
    later = _job(clock, days=3)
    store.create(later)
    for step in PATHS[JobStatus.DELIVERED]:
        later = store.transition(later.job_id, step)
    store.settle(later)
    earlier = _job(clock, days=1).model_copy(update={"status": JobStatus.DELIVERED})
    store.settle(earlier)
    assert store.watermark("contract") == later.window.end


def test_settle_counts_failed_attempts_per_window_start_forward_only(
    store: JobStore, clock: FakeClock
) -> None:
    second = _job(clock, attempt=2).model_copy(update={"status": JobStatus.FAILED})
    first = _job(clock, attempt=1).model_copy(update={"status": JobStatus.EXPIRED})
    store.settle(second)
    store.settle(first)  # late: does not lower the count
    assert store.failed_attempts("contract", START) == 2
    assert store.failed_attempts("contract", START + timedelta(days=1)) == 0
    later_start = first.model_copy(
        update={"window": Window.of(START + timedelta(days=1), START + timedelta(days=2)), "attempt": 1}
    )
    store.settle(later_start)
    assert store.failed_attempts("contract", START + timedelta(days=1)) == 1
    assert store.failed_attempts("contract", START) == 0
    store.settle(second)  # an older window's late settle does not take the count back
    assert store.failed_attempts("contract", START + timedelta(days=1)) == 1
    store.settle(first.model_copy(update={"moves_watermark": False, "attempt": 4}))  # a re-run: not counted
    assert store.failed_attempts("contract", START + timedelta(days=1)) == 1
    assert store.retry_generation("contract") == 0
    store.forget_failed_attempts("contract")
    assert store.failed_attempts("contract", START + timedelta(days=1)) == 0
    assert store.retry_generation("contract") == 1
    store.forget_failed_attempts("contract")
    assert store.retry_generation("contract") == 2
    store.forget_failed_attempts("never-ran")
    assert store.failed_attempts("never-ran", START) == 0
    assert store.retry_generation("never-ran") == 1


def test_the_lease_is_released_only_by_its_holder(store: JobStore, clock: FakeClock) -> None:
    job = _job(clock)
    store.create(job)
    store.release_lease("contract", "someone-else")
    assert store.definition_state("contract")["active_job"] == job.job_id
    store.settle(_job(clock, days=9).model_copy(update={"status": JobStatus.FAILED}))
    assert store.definition_state("contract")["active_job"] == job.job_id
    store.release_lease("contract", job.job_id)
    assert "active_job" not in store.definition_state("contract")
    store.release_lease("contract", job.job_id)  # again: fine
    store.release_lease("unknown", job.job_id)


def test_a_job_is_found_by_its_upstream_export(store: JobStore, clock: FakeClock) -> None:
    job = _job(clock)
    store.create(job)
    assert store.find_by_upstream("stub", "u-1") is None
    store.transition(
        job.job_id, JobStatus.EXPORTING, updates={"upstream_id": "u-1", "upstream_ref": "stub#u-1"}
    )
    found = store.find_by_upstream("stub", "u-1")
    assert found is not None and found.job_id == job.job_id
    assert store.find_by_upstream("other", "u-1") is None
    recorded = _job(clock, "recorded", upstream_id="u-9")  # created knowing its export
    store.create(recorded)
    assert getattr(store.find_by_upstream("stub", "u-9"), "job_id", None) == recorded.job_id


def test_text_that_may_quote_a_signed_url_is_scrubbed_on_every_write(raw: Raw, clock: FakeClock) -> None:
    store = raw.store
    job = _job(clock, reason=f"planned {SIGNED}", upstream_state=f"queued {SIGNED}")
    store.create(job)
    item = raw.item(f"JOB#{job.job_id}")
    assert item is not None and "abc123" not in repr(item)
    store.update(job.job_id, JobStatus.REQUESTED, {"upstream_state": f"rate limited: {SIGNED}"})
    failed = store.transition(job.job_id, JobStatus.FAILED, reason=f"download failed: {SIGNED}")
    assert failed.reason == "download failed: https://files.example/x.csv?…"
    assert failed.history[-1].reason == failed.reason
    assert "abc123" not in repr(raw.item(f"JOB#{job.job_id}"))


def test_a_job_record_expires_after_its_ttl(raw: Raw, clock: FakeClock) -> None:
    job = _job(clock)
    raw.store.create(job)
    item = raw.item(f"JOB#{job.job_id}")
    assert item is not None
    assert int(item["expires_at"]) == int((job.created_at + timedelta(days=30)).timestamp())
    assert item["claimed_at"] == clock().isoformat()
    assert "upstream_ref" not in item and "commit" not in item  # absent, not null


def test_both_stores_answer_a_whole_lifecycle_alike(aws: None, clock: FakeClock) -> None:
    """The same calls on both stores give the same jobs and definition records, value for value."""

    def lifecycle(store: JobStore) -> list[Any]:
        seen: list[Any] = []
        job = _job(clock)
        seen.append(store.create(job).result)
        clock.advance(STALE_CLAIM * 2)
        seen.append(store.claim_stale(job.job_id))
        seen.append(store.transition(job.job_id, JobStatus.EXPORTING, updates={"upstream_id": "u-1"}))
        seen.append(
            store.update(job.job_id, JobStatus.EXPORTING, {"poll_attempts": 2, "upstream_state": "Pending"})
        )
        seen.append(store.transition(job.job_id, JobStatus.READY, updates={"result_urls": ["https://a/1"]}))
        seen.append(store.take_copy(job.job_id, "me", clock() + timedelta(minutes=15)))
        files = [{"key": "k", "bytes": 3, "sha256": "00", "records": 1, "content_type": "text/csv"}]
        seen.append(store.update(job.job_id, JobStatus.COPYING, {"files": files}, where={"copy_owner": "me"}))
        intent = {"owner": "me", "delivered_at": clock().isoformat(), "format": "csv", "timezone": None}
        seen.append(store.claim_commit(job.job_id, "me", intent, files))
        delivered = store.transition(job.job_id, JobStatus.DELIVERED, updates={"manifest_key": "m"})
        seen.append(delivered)
        store.settle(delivered)
        seen.append(store.definition_state("contract"))
        seen.append(store.find_by_upstream("stub", "u-1"))
        return seen

    runs = []
    for make in STORES.values():
        start = clock()
        for raw in make(clock):
            runs.append(lifecycle(raw.store))
        clock.set(start)
    assert runs[0] == runs[1]


# ---- results bucket ------------------------------------------------------------------------------


class Bucket:
    """A bucket, and a way to leave a multipart upload open in it (a copy that died mid-file)."""

    def __init__(self, bucket: ResultsBucket, open_upload: Callable[[str], object]) -> None:
        self.bucket = bucket
        self.open_upload = open_upload


def _s3() -> Iterator[Bucket]:
    client = boto3.client("s3", region_name="us-east-1")
    name = f"results-{next(_names)}"
    client.create_bucket(Bucket=name)
    yield Bucket(
        S3ResultsBucket(client, name), lambda key: client.create_multipart_upload(Bucket=name, Key=key)
    )


def _memory_bucket() -> Iterator[Bucket]:
    bucket = InMemoryBucket("results")
    yield Bucket(bucket, bucket.open_upload)


@pytest.fixture(params=["s3", "memory"])
def buckets(request: pytest.FixtureRequest, aws: None) -> Iterator[Bucket]:
    yield from (_s3 if request.param == "s3" else _memory_bucket)()


@pytest.fixture
def bucket(buckets: Bucket) -> ResultsBucket:
    return buckets.bucket


def test_put_new_writes_once(bucket: ResultsBucket) -> None:
    assert bucket.read("a/_manifest.json") is None
    assert bucket.put_new("a/_manifest.json", b"first", content_type="application/json") is True
    assert bucket.put_new("a/_manifest.json", b"second", content_type="application/json") is False
    assert bucket.read("a/_manifest.json") == b"first"


def test_keys_lists_a_prefix_and_delete_removes(bucket: ResultsBucket) -> None:
    for key in ("a/2", "a/1", "ab/1", "b/1"):
        bucket.put_new(key, b"x", content_type="text/plain")
    assert bucket.keys("a/") == ["a/1", "a/2"]
    bucket.delete(["a/1", "a/missing"])
    assert bucket.keys("a") == ["a/2", "ab/1"]
    bucket.delete([])
    assert bucket.read("a/1") is None and bucket.read("b/1") == b"x"


def test_abort_uploads_ends_the_open_uploads_under_a_prefix(buckets: Bucket) -> None:
    buckets.open_upload("job-1/part-00001.csv")
    buckets.open_upload("job-1/part-00002.csv")
    buckets.open_upload("job-2/part-00001.csv")
    assert buckets.bucket.abort_uploads("job-1/") == 2
    assert buckets.bucket.abort_uploads("job-1/") == 0
    assert buckets.bucket.abort_uploads("") == 1


def test_upload_measures_what_it_stored(bucket: ResultsBucket) -> None:
    body = b'id,name\n1,"a, b"\n2,c\n'
    landed = bucket.upload(
        "job/part-00001.csv",
        [body[:5], body[5:]],
        content_type="text/csv",
        expected_length=len(body),
        file_format="csv",
        part_size=5 * MIB,
    )
    assert (landed.key, landed.bytes, landed.records) == ("job/part-00001.csv", len(body), 2)
    assert landed.sha256 == hashlib.sha256(body).hexdigest() and landed.content_type == "text/csv"
    assert bucket.read("job/part-00001.csv") == body and bucket.abort_uploads("") == 0


@pytest.mark.parametrize(
    ("body", "expected_length", "message"),
    [
        (b'id,name\n1,"cut inside quo', None, "closing quote"),
        (b"id,name\n1,a\n", 40, "of 40 bytes"),
    ],
)
def test_an_upload_that_ends_early_lands_nothing(
    bucket: ResultsBucket, body: bytes, expected_length: int | None, message: str
) -> None:
    with pytest.raises(DownloadIncompleteError, match=message):
        bucket.upload(
            "job/part-00001.csv",
            [body],
            content_type="text/csv",
            expected_length=expected_length,
            file_format="csv",
            part_size=5 * MIB,
        )
    assert bucket.keys("job/") == [] and bucket.abort_uploads("") == 0


def test_a_multipart_upload_lands_whole_or_is_aborted(bucket: ResultsBucket) -> None:
    row = b"1,abcdefghijklmnopqrstuvwxyz\n"
    body = b"id,letters\n" + row * (6 * MIB // len(row))
    chunks = [body[i : i + MIB] for i in range(0, len(body), MIB)]
    landed = bucket.upload(
        "job/big.csv",
        chunks,
        content_type="text/csv",
        expected_length=len(body),
        file_format="csv",
        part_size=5 * MIB,
    )
    assert landed.bytes == len(body) and landed.records == 6 * MIB // len(row)
    assert bucket.read("job/big.csv") == body
    with pytest.raises(DownloadIncompleteError):
        bucket.upload(
            "job/cut.csv",
            chunks,
            content_type="text/csv",
            expected_length=len(body) + 1,
            file_format="csv",
            part_size=5 * MIB,
        )
    assert bucket.read("job/cut.csv") is None and bucket.abort_uploads("") == 0


# ---- workflow ------------------------------------------------------------------------------------


class Flows:
    """A workflow, and a way to end one of its executions from outside (aborted, timed out)."""

    def __init__(self, workflow: Workflow, stop: Callable[[str], object]) -> None:
        self.workflow = workflow
        self.stop = stop


def _sfn() -> Iterator[Flows]:
    client = boto3.client("stepfunctions", region_name="us-east-1")
    definition = '{"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 3600, "End": true}}}'
    arn = client.create_state_machine(
        name=f"export-poll-{next(_names)}",
        definition=definition,
        roleArn="arn:aws:iam::123456789012:role/export-poll",
    )["stateMachineArn"]
    yield Flows(
        StepFunctionsWorkflow(client, arn), lambda execution: client.stop_execution(executionArn=execution)
    )


def _recording() -> Iterator[Flows]:
    workflow = RecordingWorkflow()
    yield Flows(workflow, workflow.stop)


@pytest.fixture(params=["stepfunctions", "memory"])
def flows(request: pytest.FixtureRequest, aws: None) -> Iterator[Flows]:
    yield from (_sfn if request.param == "stepfunctions" else _recording)()


def test_an_execution_is_started_once_per_name(flows: Flows) -> None:
    workflow = flows.workflow
    first = workflow.start("job-1", "job-1")
    assert workflow.start("job-1", "job-1") == first
    assert workflow.running(first) is True
    other = workflow.start("job-1-r1", "job-1")
    assert other != first and workflow.running(other) is True
    flows.stop(first)
    assert workflow.running(first) is False and workflow.running(other) is True
    assert workflow.start("job-1", "job-1") == first and workflow.running(first) is False  # not again
    assert workflow.running(first.replace("job-1", "job-9")) is None


# ---- clients by connection -----------------------------------------------------------------------


def test_fake_deps_builds_a_connections_client_as_the_registry_does(aws: None) -> None:
    """The same spec, the same secrets: fake_deps hands the spec's client the context build_client
    does (credentials by connection, hosts), and refuses what it refuses."""
    secrets = {"arn:fake-default": {"user": "default"}, "exportpipe/fake/emea": {"user": "emea"}}
    manager = boto3.client("secretsmanager", region_name="us-east-1")
    for name, value in secrets.items():
        manager.create_secret(Name=name, SecretString=json.dumps(value))
    contexts: list[ClientContext] = []
    client = FakeSourceClient()
    spec = dataclasses.replace(fake_spec(client), make_client=lambda c: contexts.append(c) or client)
    settings = fake_settings(
        secret_arns={"FAKE_SECRET_ARN": "arn:fake-default"}, download_hosts="extra.example"
    )
    deps = fake_deps(secrets=secrets, **settings.model_dump())
    connections = [Connection("fake"), Connection("fake", "emea")]
    with registered(spec):
        try:
            for connection in connections:
                build_client(connection, settings, manager)
                deps.client_for(connection)
            for build in (lambda c: build_client(c, settings, manager), deps.client_for):
                with pytest.raises(ConfigurationError, match="does not exist"):
                    build(Connection("fake", "nowhere"))
        finally:
            clear_secret_cache()
    real, fake = contexts[0::2], contexts[1::2]
    assert (
        [c.credentials for c in fake]
        == [c.credentials for c in real]
        == [{"user": "default"}, {"user": "emea"}]
    )
    assert [c.allowed_hosts for c in fake] == [c.allowed_hosts for c in real]
    assert real[0].allowed_hosts == ("files.fake.example", "extra.example")
    assert deps.read_secret("exportpipe/fake/emea") == {"user": "emea"}
    closed: list[str] = []

    class CannotReplay:
        source = "fake"

        def close(self) -> None:
            closed.append("closed")

    with registered(
        dataclasses.replace(spec, recovery=Recovery.REPLAY, make_client=lambda c: CannotReplay())
    ):
        for build in (lambda c: build_client(c, settings, manager), deps.client_for):
            with pytest.raises(ConfigurationError, match="replay"):
                build(Connection("fake"))
    assert closed == ["closed", "closed"]
