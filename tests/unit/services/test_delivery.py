"""delivery: after the manifest, everything is finished by a retry, never undone (the DELIVERED record,
the event, the next window of a backfill); a folder's manifest is never overwritten."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from exportpipe_dev.fakes import fake_definition

from exportpipe.errors import ManifestConflictError, TransitionError
from exportpipe.models.job import STALE_CLAIM, JobStatus
from exportpipe.models.layout import Manifest, manifest_key
from exportpipe.services.delivery import discard, finish_if_committed
from tests.unit.services.conftest import CSV_1, CSV_2, DELIVERED, World

BACKFILL = fake_definition("fake-backfill", start="2026-11-01T00:00:00Z")  # 23 days: 4 windows of ≤ 7


def test_a_backfill_goes_on_window_after_window_until_it_is_done(world: World) -> None:
    job_id = world.started(BACKFILL)
    windows = []
    for _ in range(4):
        job = world.job(job_id)
        windows.append((job.window.start, job.window.end))
        world.deliver(job_id, CSV_1)
        active = world.store.definition_state("fake-backfill").get("active_job")
        if active is None:
            break
        job_id = str(active)
        assert world.job(job_id).status is JobStatus.EXPORTING  # started by the delivery, no tick
    day = timedelta(days=7)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    end = datetime(2026, 11, 24, 11, 55, tzinfo=UTC)
    bounds = [start, start + day, start + 2 * day, start + 3 * day, end]
    assert windows == list(pairwise(bounds))
    assert world.store.watermark("fake-backfill") == end
    assert len(world.events.details(DELIVERED)) == 4 and world.client.count("create_export") == 4


def test_a_next_window_that_fails_to_start_is_resumed_by_the_next_tick(world: World) -> None:
    first = world.started(BACKFILL)
    world.client.fail("create_export", RuntimeError("the next window's create broke"))
    world.deliver(first, CSV_1)  # the delivery stands
    [pending] = [j for j in world.store.jobs() if j.status is JobStatus.REQUESTED]
    assert pending.window.start == world.job(first).window.end
    world.clock.advance(STALE_CLAIM + timedelta(minutes=1))
    out = world.start(BACKFILL)
    assert (out["status"], out["job_id"]) == ("EXPORTING", pending.job_id)


def test_an_event_that_failed_after_the_manifest_is_sent_by_the_retry(world: World) -> None:
    job_id = world.ready(CSV_1)
    world.events.fail("delivered", RuntimeError("EventBridge timed out"))
    with pytest.raises(RuntimeError):
        world.copy(job_id)
    job = world.job(job_id)
    assert job.status is JobStatus.DELIVERED and not job.event_sent
    assert world.store.watermark("fake-things") == job.window.end
    assert world.copy(job_id)["status"] == "DELIVERED"
    world.copy(job_id)
    assert len(world.events.details(DELIVERED)) == 1 and world.job(job_id).event_sent


def test_a_manifest_of_another_export_in_the_folder_is_never_overwritten(world: World) -> None:
    job_id = world.ready(CSV_1)
    key = manifest_key(world.folder(job_id))
    earlier = world.job(job_id).model_copy(update={"upstream_id": "fake-0"})  # of an earlier export
    foreign = Manifest.build(earlier, [], fmt="csv", timezone=None, delivered_at=world.clock())
    world.bucket.put_new(key, foreign.model_dump_json().encode(), content_type="application/json")
    with pytest.raises(ManifestConflictError):
        world.copy(job_id)
    foreign = foreign.model_dump_json().encode()
    assert world.bucket.body(key) == foreign and world.events.details(DELIVERED) == []


def test_a_manifest_written_by_code_that_predates_commits_is_the_delivery(world: World) -> None:
    job_id = world.ready(CSV_1)
    job = world.store.transition(job_id, JobStatus.COPYING)  # the earlier code's copy, no commit recorded
    manifest = Manifest.build(job, [], fmt="csv", timezone="UTC", delivered_at=world.clock())
    world.bucket.put_new(
        manifest_key(world.folder(job_id)), manifest.model_dump_json().encode(), content_type="x"
    )
    finished = finish_if_committed(world.deps, world.job(job_id))
    assert finished is not None and finished.status is JobStatus.DELIVERED
    assert len(world.events.details(DELIVERED)) == 1


def test_a_manifest_of_an_earlier_export_of_the_job_is_not_its_delivery(world: World) -> None:
    job_id = world.ready(CSV_1)
    job = world.store.transition(job_id, JobStatus.COPYING)
    earlier = job.model_copy(update={"upstream_id": "fake-0"})
    stale = Manifest.build(earlier, [], fmt="csv", timezone=None, delivered_at=world.clock())
    world.bucket.put_new(
        manifest_key(world.folder(job_id)), stale.model_dump_json().encode(), content_type="x"
    )
    assert finish_if_committed(world.deps, world.job(job_id)) is None


def test_only_a_job_that_ended_undelivered_has_its_folder_emptied(world: World) -> None:
    job_id = world.ready(CSV_1, CSV_2)
    world.copy(job_id)
    with pytest.raises(TransitionError):
        discard(world.deps, world.job(job_id))
    assert world.landed(job_id) == ["_manifest.json", "part-00001.csv", "part-00002.csv"]
