"""start_export: windows planned from the watermark, one export in flight per definition, duplicates
finding their job, refused creates deferred (and bounded), failed windows tried again (and bounded)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from exportpipe_dev.fakes import CrashError, fake_definition

from exportpipe.errors import (
    InvalidDefinitionError,
    UpstreamError,
    UpstreamRateLimitedError,
    UpstreamUnavailableError,
)
from exportpipe.models.job import STALE_CLAIM, JobStatus
from tests.unit.services.conftest import CSV_1, FAILED, World

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
START = datetime(2026, 11, 20, tzinfo=UTC)


def test_the_first_tick_exports_from_the_start_up_to_now_minus_the_lag(world: World) -> None:
    out = world.start()
    job = world.job(out["job_id"])
    assert out["status"] == "EXPORTING" and out["upstream_id"] == "fake-1" == job.upstream_id
    assert (job.window.start, job.window.end) == (START, NOW - timedelta(minutes=5))
    assert job.status is JobStatus.EXPORTING and job.moves_watermark and job.attempt == 1
    assert world.client.calls == [("create_export", f"{START.isoformat()}/{job.window.end.isoformat()}")]
    # its poll workflow, named after the job, is started and recorded on it
    [execution] = world.workflow.of_job(job.job_id)
    assert execution.name == job.job_id and job.execution_arn == execution.arn == out["execution_arn"]
    assert world.store.definition_state("fake-things")["active_job"] == job.job_id


def test_the_next_tick_starts_where_the_last_delivery_ended(world: World) -> None:
    first = world.started()
    world.deliver(first, CSV_1)
    world.clock.advance(hours=1)
    second = world.job(world.started())
    assert second.window.start == world.job(first).window.end == world.store.watermark("fake-things")
    assert second.window.end == NOW + timedelta(hours=1) - timedelta(minutes=5)


def test_a_tick_with_nothing_new_is_up_to_date(world: World) -> None:
    world.deliver(world.started(), CSV_1)
    out = world.start()
    assert out == {"status": "UP_TO_DATE", "definition": "fake-things"}
    assert world.client.count("create_export") == 1


def test_a_window_never_ends_after_now_minus_the_lag(world: World) -> None:
    job = world.job(world.started(scheduled_time=(NOW + timedelta(days=2)).isoformat()))
    assert job.window.end == NOW - timedelta(minutes=5)


def test_a_schedule_event_delivered_twice_finds_the_job_it_started(world: World) -> None:
    event = {"scheduled_time": NOW.isoformat()}
    first = world.start(**event)
    again = world.start(**event)
    assert again == {"status": "EXPORTING", "job_id": first["job_id"], "duplicate": True}
    assert world.client.count("create_export") == 1 and len(world.store.jobs()) == 1
    assert len(world.workflow.executions) == 1


def test_a_tick_while_an_export_is_in_flight_skips(world: World) -> None:
    first = world.started()
    world.clock.advance(hours=1)
    out = world.start()
    assert (out["status"], out["job_id"]) == ("SKIPPED", first)
    assert "in flight" in out["reason"] and len(world.store.jobs()) == 1


def test_a_tick_restarts_the_workflow_of_the_job_in_flight_if_it_died(world: World) -> None:
    first = world.started()
    world.workflow.stop(first)  # aborted, or timed out
    world.clock.advance(hours=1)
    assert world.start()["status"] == "SKIPPED"
    assert [e.name for e in world.workflow.of_job(first)] == [first, f"{first}-r1"]
    job = world.job(first)
    assert job.workflow_restarts == 1 and job.execution_arn == world.workflow.executions[f"{first}-r1"].arn


def test_a_lease_held_by_a_job_that_ended_is_freed_and_its_window_tried_again(world: World) -> None:
    first = world.started()
    # the job ended, but whoever ended it died before freeing the definition
    world.store.transition(first, JobStatus.FAILED, reason="upstream said no")
    world.clock.advance(hours=1)
    out = world.start()
    job = world.job(out["job_id"])
    assert out["status"] == "EXPORTING" and job.attempt == 2 and job.job_id.endswith("-a2")
    assert job.window.start == START and world.store.failed_attempts("fake-things", START) == 1


def test_a_redelivered_event_of_a_window_whose_job_ended_tries_the_window_again(world: World) -> None:
    event = {"scheduled_time": NOW.isoformat()}
    first = world.start(**event)["job_id"]
    world.store.fail("settle", RuntimeError("throttled"))  # the end is recorded, the rest is not
    with pytest.raises(RuntimeError):
        world.record_failure(first, "States.Timeout")
    out = world.start(**event)  # the same window: its first attempt's job exists, and ended
    assert out["status"] == "EXPORTING" and world.job(out["job_id"]).attempt == 2
    assert world.store.failed_attempts("fake-things", START) == 1


def test_a_lease_whose_job_record_expired_is_freed(world: World) -> None:
    first = world.started()
    world.store.expire(first)
    world.clock.advance(hours=1)
    out = world.start()
    assert out["status"] == "EXPORTING" and out["job_id"] != first


def test_a_job_whose_starter_died_before_creating_its_export_is_resumed(world: World) -> None:
    world.client.fail("create_export", CrashError())
    with pytest.raises(CrashError):
        world.start()
    [job] = world.store.jobs()
    assert job.status is JobStatus.REQUESTED
    # a re-delivery soon after: the starter may still be running, so nothing is called
    assert world.start()["status"] == "REQUESTED"
    assert world.client.count("create_export") == 1
    # a later tick: the claim is stale, the same job (the same window) is resumed
    world.clock.advance(STALE_CLAIM + timedelta(minutes=1))
    out = world.start()
    assert (out["status"], out["job_id"]) == ("EXPORTING", job.job_id)
    assert world.job(job.job_id).window == job.window and world.client.count("create_export") == 2


@pytest.mark.parametrize(
    ("refusal", "wait"),
    [
        (UpstreamRateLimitedError("daily allowance spent", code=122, retry_after=600), 600),
        (UpstreamRateLimitedError("too many concurrent calls", code=66), 30),  # the poll backoff
        (UpstreamUnavailableError("503 from upstream", status=503), 30),
    ],
)
def test_a_refused_create_waits_keeping_its_job_and_lease(
    world: World, refusal: UpstreamUnavailableError, wait: int
) -> None:
    world.client.fail("create_export", refusal)
    out = world.start()
    job = world.job(out["job_id"])
    assert out["status"] == "REQUESTED" and "waiting to create the upstream export" in out["reason"]
    assert job.status is JobStatus.REQUESTED and job.rate_limited == 1
    assert world.store.claimable_at(job) == NOW + timedelta(seconds=wait)
    assert world.store.definition_state("fake-things")["active_job"] == job.job_id
    # its workflow is started anyway: it creates the export when the wait is over
    assert [e.name for e in world.workflow.of_job(job.job_id)] == [job.job_id]
    # a tick (or a re-delivery) before then calls nothing; one after resumes the same job
    world.clock.advance(wait - 1)
    assert world.start()["status"] in {"REQUESTED", "SKIPPED"}
    assert world.client.count("create_export") == 1 and world.job(job.job_id).status is JobStatus.REQUESTED
    world.clock.advance(2)
    resumed = world.start()
    assert (resumed["status"], resumed["job_id"]) == ("EXPORTING", job.job_id)
    assert world.job(job.job_id).rate_limited == 0


def test_refusals_in_a_row_end_the_job_failed(world: World) -> None:
    world.configure(poll_max_attempts=2)
    limit = UpstreamRateLimitedError("daily allowance spent", code=122, retry_after=60)
    world.client.fail("create_export", limit, limit, limit)
    for _ in range(2):
        assert world.start()["status"] == "REQUESTED"
        world.clock.advance(minutes=30)
    out = world.start()
    job = world.job(out["job_id"])
    assert out["status"] == "FAILED" == job.status.value
    assert "refused to create the export 3 times in a row" in str(job.reason)
    assert [d["status"] for d in world.events.details(FAILED)] == ["FAILED"]
    assert "active_job" not in world.store.definition_state("fake-things")
    assert world.store.failed_attempts("fake-things", START) == 1


def test_a_create_refused_for_good_fails_the_job(world: World) -> None:
    world.client.fail("create_export", UpstreamError("unknown field 'x'", status=400))
    out = world.start()
    assert (
        out["status"] == "FAILED"
        and out["reason"] == "creating the upstream export failed: unknown field 'x'"
    )
    [event] = world.events.details(FAILED)
    assert event["job_id"] == out["job_id"] and event["reason"] == out["reason"]
    assert world.workflow.executions == {}


def test_an_invalid_definition_fails_before_any_call(world: World) -> None:
    with pytest.raises(InvalidDefinitionError, match="lag_minutes"):
        world.start(fake_definition(lag_minutes=-1))
    assert world.store.jobs() == [] and world.client.calls == []


def test_a_rerun_of_an_explicit_window_does_not_move_the_watermark(world: World) -> None:
    window = {"start": "2026-11-21T00:00:00Z", "end": "2026-11-22T00:00:00Z"}
    job_id = world.started(window=window)
    assert world.job(job_id).moves_watermark is False
    world.deliver(job_id, CSV_1)
    assert world.store.watermark("fake-things") is None
    assert world.job(world.started()).window.start == START  # the schedule goes on from where it was


@pytest.mark.parametrize(
    ("window", "problem"),
    [
        ({"start": "2026-11-01T00:00:00Z", "end": "2026-11-09T00:00:00Z"}, "longer than 7 days"),
        ({"start": "2026-11-24T00:00:00Z", "end": "2026-11-24T11:58:00Z"}, "now minus the lag"),
    ],
)
def test_an_explicit_window_one_export_cannot_cover_is_refused(
    world: World, window: dict[str, str], problem: str
) -> None:
    with pytest.raises(InvalidDefinitionError, match=problem):
        world.start(window=window)
    assert world.client.calls == []


def test_a_window_that_ended_undelivered_is_tried_again_up_to_five_times(world: World) -> None:
    ids = []
    for _ in range(5):
        world.client.fail("create_export", UpstreamError("export refused", status=400))
        out = world.start()
        assert out["status"] == "FAILED"
        ids.append(out["job_id"])
        world.clock.advance(hours=1)  # the next tick: same start, a later end
    assert [world.job(i).attempt for i in ids] == [1, 2, 3, 4, 5]
    assert {world.job(i).window.start for i in ids} == {START}
    gave_up = world.start()
    assert gave_up["status"] == "GAVE_UP" and world.client.count("create_export") == 5
    # until an operator retries: the window's attempts are forgotten
    retried = world.start(retry=True)
    assert retried["status"] == "EXPORTING" and world.job(retried["job_id"]).attempt == 1


def test_an_operator_retry_tries_a_capped_window_again_under_new_job_ids(world: World) -> None:
    # GIVEN a definition catching up: its window is capped at the longest one export covers, so
    # every tick plans exactly the same window (same start, same end, same job ids)
    behind = fake_definition(start="2026-11-01T00:00:00Z")
    ids = []
    for _ in range(5):
        world.client.fail("create_export", UpstreamError("export refused", status=400))
        out = world.start(behind)
        assert out["status"] == "FAILED"
        ids.append(out["job_id"])
        world.clock.advance(hours=1)
    assert {(world.job(i).window.start, world.job(i).window.end) for i in ids} == {
        (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 8, tzinfo=UTC))
    }
    assert world.start(behind)["status"] == "GAVE_UP"
    # WHEN an operator retries after fixing the cause
    retried = world.start(behind, retry=True)
    # THEN the window is exported again, as attempt 1 of a new retry generation with an id of its own
    assert retried["status"] == "EXPORTING" and retried["job_id"] not in ids
    job = world.job(retried["job_id"])
    assert (job.attempt, job.generation, job.window.start) == (1, 1, datetime(2026, 11, 1, tzinfo=UTC))
    # AND the ended attempts keep their records
    assert all(world.job(i).status is JobStatus.FAILED for i in ids)
