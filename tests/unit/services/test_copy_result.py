"""copy_result: files first, the manifest last; one copy at a time; rate limits waited out, broken
downloads retried (copying only what is missing), expired files re-exported, a committed delivery
finished whoever finds it, and nothing left behind by a copy that did not deliver."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import timedelta

import pytest
from exportpipe_dev.fakes import CrashError, fake_definition

from exportpipe.errors import (
    DownloadIncompleteError,
    ExportCanceledError,
    ExportExpiredError,
    TransitionError,
    UpstreamRateLimitedError,
)
from exportpipe.models.job import JobStatus
from exportpipe.models.layout import manifest_key
from exportpipe.sources.base import UpstreamState
from tests.unit.services.conftest import CSV_1, CSV_2, CSV_3, DELIVERED, FAILED, World


def test_every_file_lands_then_the_manifest(world: World) -> None:
    job_id = world.ready(CSV_1, CSV_2)
    out = world.copy(job_id)
    folder = world.folder(job_id)
    key = manifest_key(folder)
    assert (out["status"], out["manifest_key"], out["files"], out["wait_seconds"]) == ("DELIVERED", key, 2, 0)
    assert world.bucket.writes == [f"{folder}/part-00001.csv", f"{folder}/part-00002.csv", key]
    assert world.bucket.body(f"{folder}/part-00002.csv") == CSV_2
    manifest = world.manifest(job_id)
    job = world.job(job_id)
    assert manifest["job_id"] == job_id and manifest["upstream_id"] == "fake-1"
    assert (manifest["format"], manifest["timezone"]) == ("csv", "UTC")
    assert manifest["window"] == job.window.model_dump(mode="json")
    assert [(f["bytes"], f["sha256"], f["records"]) for f in manifest["files"]] == [
        (len(CSV_1), hashlib.sha256(CSV_1).hexdigest(), 2),
        (len(CSV_2), hashlib.sha256(CSV_2).hexdigest(), 1),
    ]
    assert manifest["totals"] == {"files": 2, "bytes": len(CSV_1) + len(CSV_2), "records": 3}
    # then the job is delivered, the window done, the definition free, and consumers told
    assert job.status is JobStatus.DELIVERED and job.manifest_key == key and job.event_sent
    assert world.store.watermark("fake-things") == job.window.end
    assert "active_job" not in world.store.definition_state("fake-things")
    [event] = world.events.details(DELIVERED)
    assert event["manifest_uri"] == f"s3://{world.bucket.name}/{key}" and event["totals"]["records"] == 3


def test_an_export_without_files_is_delivered_with_an_empty_manifest(world: World) -> None:
    job_id = world.ready()
    assert world.copy(job_id)["status"] == "DELIVERED"
    assert world.manifest(job_id)["totals"] == {"files": 0, "bytes": 0, "records": 0}
    assert world.landed(job_id) == ["_manifest.json"]


def test_a_copy_retried_after_the_delivery_only_answers_it(world: World) -> None:
    job_id = world.ready(CSV_1)
    world.copy(job_id)
    writes = list(world.bucket.writes)
    again = world.copy(job_id)
    assert again["status"] == "DELIVERED" and again["files"] == 1
    assert world.bucket.writes == writes and len(world.events.details(DELIVERED)) == 1


def test_only_a_ready_or_copying_job_is_copied(world: World) -> None:
    job_id = world.started()
    with pytest.raises(TransitionError):
        world.copy(job_id)


def test_a_second_copy_waits_for_the_first_ones_invocation_to_end(world: World) -> None:
    job_id = world.ready(CSV_1)
    world.store.take_copy(job_id, "another-copy", world.clock() + timedelta(seconds=600))
    out = world.copy(job_id)
    assert (out["status"], out["wait_seconds"]) == ("COPYING", 601)
    assert world.client.count("open_result") == 0 and world.landed(job_id) == []
    world.clock.advance(601)
    assert world.copy(job_id)["status"] == "DELIVERED"


def test_a_copy_holds_the_job_for_its_invocations_time_and_frees_it_when_it_stops(world: World) -> None:
    world.deps = replace(world.deps, remaining_seconds=lambda: 120.0)
    job_id = world.ready(CSV_1, CSV_2)
    urls = world.job(job_id).result_urls
    holds = []
    world.client.files[urls[0]].on_read = lambda: holds.append(world.job(job_id).copy_owner_until)
    world.client.serve(urls[1], CSV_2[:10], content_length=len(CSV_2))  # this copy is interrupted
    assert world.copy(job_id)["status"] == "COPYING"
    assert holds == [world.clock() + timedelta(seconds=120)]
    assert world.job(job_id).copy_owner_until == world.clock()  # the next copy need not wait for it


def test_a_rate_limited_download_waits_and_the_copy_goes_on_with_the_missing_files(world: World) -> None:
    job_id = world.ready(CSV_1, CSV_2, CSV_3)
    urls = world.job(job_id).result_urls
    limit = UpstreamRateLimitedError("daily allowance spent", code=122, retry_after=900)
    world.client.files[urls[0]].on_read = lambda: world.client.fail("open_result", limit)
    out = world.copy(job_id)
    job = world.job(job_id)
    assert (out["status"], out["wait_seconds"]) == ("COPYING", 900)
    assert [f.key.rsplit("/", 1)[1] for f in job.files] == ["part-00001.csv"] and job.rate_limited == 1
    world.clock.advance(900)
    assert world.copy(job_id)["status"] == "DELIVERED"
    assert [world.client.calls.count(("open_result", u)) for u in urls] == [1, 2, 1]
    assert world.manifest(job_id)["totals"]["files"] == 3


def test_a_copy_the_rate_limit_keeps_refusing_fails_and_leaves_nothing(world: World) -> None:
    world.configure(poll_max_attempts=1)
    job_id = world.ready(CSV_1, CSV_2)
    urls = world.job(job_id).result_urls
    limit = UpstreamRateLimitedError("too many concurrent calls", code=66)
    world.client.files[urls[0]].on_read = lambda: world.client.fail("open_result", limit)
    out = world.copy(job_id)
    assert out["status"] == "COPYING"
    world.clock.advance(out["wait_seconds"])
    world.client.fail("open_result", limit)
    assert world.copy(job_id)["status"] == "FAILED"
    assert world.landed(job_id) == [] and [d["status"] for d in world.events.details(FAILED)] == ["FAILED"]


def test_a_broken_download_is_retried_copying_only_what_is_missing(world: World) -> None:
    job_id = world.ready(CSV_1, CSV_2)
    urls = world.job(job_id).result_urls
    world.client.serve(urls[1], CSV_2[:10], content_length=len(CSV_2))  # the connection drops
    out = world.copy(job_id)
    job = world.job(job_id)
    assert (out["status"], out["wait_seconds"]) == ("COPYING", 30) and job.copy_retries == 1
    assert world.landed(job_id) == ["part-00001.csv"] and world.bucket.open_uploads() == []
    world.client.serve(urls[1], CSV_2)
    world.clock.advance(30)
    assert world.copy(job_id)["status"] == "DELIVERED"
    assert [world.client.calls.count(("open_result", u)) for u in urls] == [1, 2]


def test_a_download_cut_where_its_format_shows_it_is_retried(world: World) -> None:
    job_id = world.ready(CSV_2)
    url = world.job(job_id).result_urls[0]
    world.client.serve(url, CSV_2[:15], content_length=None)  # close-delimited, cut inside quotes
    assert world.copy(job_id)["status"] == "COPYING" and world.landed(job_id) == []


def test_broken_downloads_in_a_row_are_bounded_then_the_folder_is_emptied(world: World) -> None:
    job_id = world.ready(CSV_1, CSV_2)
    world.client.serve(world.job(job_id).result_urls[1], CSV_2[:10], content_length=len(CSV_2))
    waits = []
    for _ in range(4):
        waits.append(world.copy(job_id)["wait_seconds"])
        world.clock.advance(waits[-1])
    assert waits == [30, 60, 120, 240]
    with pytest.raises(DownloadIncompleteError):
        world.copy(job_id)
    assert world.landed(job_id) == ["part-00001.csv"]  # until the workflow records the failure
    world.record_failure(job_id, "DownloadIncompleteError", "download ended after 10 of 26 bytes")
    assert world.job(job_id).status is JobStatus.FAILED and world.landed(job_id) == []


def test_files_that_expired_before_the_copy_are_exported_again(world: World) -> None:
    job_id = world.ready(CSV_1, CSV_2, CSV_3)
    urls = world.job(job_id).result_urls
    world.client.files[urls[1]].on_read = lambda: world.client.set_state(UpstreamState.EXPIRED)
    out = world.copy(job_id)
    job = world.job(job_id)
    assert (out["status"], out["attempt"], out["wait_seconds"]) == ("EXPORTING", 0, 30)
    assert job.upstream_id == "fake-2" and job.reexports == 1 and job.files == [] and job.result_urls == []
    # the new export has one file: what the first one left is not part of the delivery
    world.deliver(job_id, CSV_3)
    assert world.landed(job_id) == ["_manifest.json", "part-00001.csv"]
    assert world.bucket.body(f"{world.folder(job_id)}/part-00001.csv") == CSV_3
    assert world.manifest(job_id)["upstream_id"] == "fake-2"


def test_files_that_keep_expiring_end_the_copy_with_the_reason(world: World) -> None:
    world.configure(max_recreates=0)
    job_id = world.ready(CSV_1)
    world.client.set_state(UpstreamState.EXPIRED)
    with pytest.raises(ExportExpiredError):
        world.copy(job_id)
    world.record_failure(job_id, "ExportExpiredError", "gone")
    assert world.job(job_id).status is JobStatus.EXPIRED


def test_an_export_canceled_before_its_copy_ends_the_job_canceled(world: World) -> None:
    job_id = world.ready(CSV_1, CSV_2)
    world.client.files[world.job(job_id).result_urls[0]].on_read = lambda: world.client.set_state(
        UpstreamState.CANCELED
    )
    with pytest.raises(ExportCanceledError):
        world.copy(job_id)
    world.record_failure(job_id, "ExportCanceledError", "canceled")
    assert world.job(job_id).status is JobStatus.CANCELED and world.landed(job_id) == []


def test_a_copy_past_its_deadline_fails_and_leaves_nothing(world: World) -> None:
    world.configure(poll_timeout_seconds=3600)
    job_id = world.ready(CSV_1)
    world.bucket.put_new(f"{world.folder(job_id)}/part-00001.csv", CSV_1, content_type="text/csv")
    world.clock.advance(hours=1, days=1)
    assert world.copy(job_id)["status"] == "FAILED"
    assert "copy not finished 24 h after the poll timeout" in str(world.job(job_id).reason)
    assert world.landed(job_id) == []


def test_a_copy_aborts_the_upload_a_dead_copy_left_open(world: World) -> None:
    job_id = world.ready(CSV_1)
    world.bucket.open_upload(f"{world.folder(job_id)}/part-00001.csv")
    world.client.serve(world.job(job_id).result_urls[0], CSV_1[:5], content_length=len(CSV_1))
    assert world.copy(job_id)["status"] == "COPYING"  # even a copy that is interrupted itself
    assert world.bucket.open_uploads() == []
    world.bucket.open_upload(f"{world.folder(job_id)}/part-00001.csv")
    world.client.serve(world.job(job_id).result_urls[0], CSV_1)
    world.clock.advance(30)
    assert world.copy(job_id)["status"] == "DELIVERED" and world.bucket.open_uploads() == []


@pytest.mark.parametrize("finisher", ["failure recorder", "copy retry"])
def test_a_delivery_committed_before_a_crash_is_finished_not_failed(world: World, finisher: str) -> None:
    job_id = world.ready(CSV_1, CSV_2)
    world.bucket.fail("put_new", CrashError())  # the manifest's write: the invocation dies
    with pytest.raises(CrashError):
        world.copy(job_id)
    job = world.job(job_id)
    assert (
        job.status is JobStatus.COPYING
        and job.commit is not None
        and "_manifest.json" not in world.landed(job_id)
    )
    out = (
        world.record_failure(job_id, "States.Timeout")
        if finisher == "failure recorder"
        else world.copy(job_id)
    )
    assert out["status"] == "DELIVERED" == world.job(job_id).status.value
    assert world.manifest(job_id)["delivered_at"] == job.commit.delivered_at.isoformat().replace(
        "+00:00", "Z"
    )
    assert world.events.details(FAILED) == [] and len(world.events.details(DELIVERED)) == 1
    assert world.landed(job_id) == ["_manifest.json", "part-00001.csv", "part-00002.csv"]


def test_a_manifest_written_before_a_crash_is_the_delivery(world: World) -> None:
    job_id = world.ready(CSV_1)
    world.bucket.fail("put_new", CrashError(), after=True)  # written, then the invocation dies
    with pytest.raises(CrashError):
        world.copy(job_id)
    written = world.bucket.body(manifest_key(world.folder(job_id)))
    assert world.record_failure(job_id, "States.Timeout")["status"] == "DELIVERED"
    assert world.bucket.body(manifest_key(world.folder(job_id))) == written
    assert world.bucket.writes.count(manifest_key(world.folder(job_id))) == 1


def test_a_stale_copy_cannot_record_a_part_after_another_copy_delivered(world: World) -> None:
    job_id = world.ready(CSV_1)
    url = world.job(job_id).result_urls[0]
    inner: list[dict[str, object]] = []

    def meanwhile() -> None:  # the first copy's invocation outlives its time; another copy runs
        world.clock.advance(901)
        inner.append(world.copy(job_id))

    world.client.files[url].on_read = meanwhile
    out = world.copy(job_id)
    assert inner[0]["status"] == "DELIVERED" and out["status"] == "DELIVERED"
    assert len(world.events.details(DELIVERED)) == 1 and len(world.job(job_id).files) == 1
    assert world.landed(job_id) == ["_manifest.json", "part-00001.csv"]


def test_a_part_a_stale_copy_writes_into_a_failed_job_is_removed(world: World) -> None:
    job_id = world.ready(CSV_1)
    url = world.job(job_id).result_urls[0]
    world.client.files[url].on_read = lambda: world.record_failure(job_id, "States.Timeout")
    out = world.copy(job_id)
    assert out["status"] == "FAILED" and world.landed(job_id) == []


def test_the_files_land_in_the_format_the_definition_names(world: World) -> None:
    rows = b'[{"id": 1}, {"id": 2}]'
    job_id = world.ready(rows, definition=fake_definition(format="json"))
    assert world.copy(job_id)["status"] == "DELIVERED"
    assert world.landed(job_id) == ["_manifest.json", "part-00001.json"]
    manifest = world.manifest(job_id)
    assert (manifest["format"], manifest["files"][0]["content_type"]) == ("json", "application/json")
    assert manifest["totals"]["records"] == 2  # counted as JSON
