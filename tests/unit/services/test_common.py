"""services.common: the poll backoff, answers clipped to the job's deadline, the refusal policy, ending
a job unsuccessfully (idempotent, resumable), restarting a dead workflow, re-creating an export."""

from __future__ import annotations

from datetime import timedelta

import pytest
from exportpipe_dev.fakes import fake_settings

from exportpipe.errors import UpstreamRateLimitedError, UpstreamUnavailableError
from exportpipe.models.job import STALE_CLAIM, JobStatus
from exportpipe.services.common import (
    answer,
    backoff_seconds,
    end_unsuccessfully,
    ensure_workflow,
    recover_upstream,
    refusal_wait,
)
from tests.unit.services.conftest import CSV_1, FAILED, World


def test_the_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    settings = fake_settings(poll_base_seconds=5, poll_max_seconds=50)
    assert [backoff_seconds(n, settings) for n in range(7)] == [5, 5, 10, 20, 40, 50, 50]


def test_an_answer_waits_at_least_a_second_and_never_past_the_deadline(world: World) -> None:
    world.configure(poll_timeout_seconds=600)
    job = world.job(world.started())
    assert answer(world.deps, job, 3, 0.2)["wait_seconds"] == 1
    world.clock.advance(590.5)
    out = answer(world.deps, job, 3, 900)
    assert (out["attempt"], out["max_attempts"], out["wait_seconds"]) == (3, 4, 10)
    assert answer(world.deps, job, 3)["wait_seconds"] == 0


def test_the_refusal_wait_is_the_longer_of_the_upstreams_and_the_backoff(world: World) -> None:
    world.configure(poll_max_attempts=3)
    job = world.job(world.started())
    limited = UpstreamRateLimitedError("limit", retry_after=45)
    assert refusal_wait(world.deps, job, limited) == (1, 45)
    assert refusal_wait(world.deps, job.model_copy(update={"rate_limited": 2}), limited) == (3, 120)
    assert refusal_wait(world.deps, job, UpstreamUnavailableError("503")) == (1, 30)
    assert refusal_wait(world.deps, job.model_copy(update={"rate_limited": 3}), limited) == (4, None)


def test_ending_a_job_twice_tells_consumers_once_and_keeps_the_first_end(world: World) -> None:
    job_id = world.started()
    first = end_unsuccessfully(world.deps, job_id, JobStatus.CANCELED, "canceled upstream")
    again = end_unsuccessfully(world.deps, job_id, JobStatus.FAILED, "a late report")
    assert first.status is again.status is JobStatus.CANCELED and again.reason == "canceled upstream"
    assert len(world.events.details(FAILED)) == 1


def test_a_failure_report_never_ends_a_delivered_job(world: World) -> None:
    job_id = world.started()
    world.deliver(job_id, CSV_1)
    assert end_unsuccessfully(world.deps, job_id, JobStatus.FAILED, "late").status is JobStatus.DELIVERED
    assert world.events.details(FAILED) == []


def test_ending_a_job_whose_settle_failed_is_finished_by_the_retry(world: World) -> None:
    job_id = world.started()
    world.store.fail("settle", RuntimeError("DynamoDB throttled"))
    with pytest.raises(RuntimeError):
        end_unsuccessfully(world.deps, job_id, JobStatus.FAILED, "gave up")
    assert "active_job" in world.store.definition_state("fake-things") and world.events.details(FAILED) == []
    end_unsuccessfully(world.deps, job_id, JobStatus.FAILED, "gave up")
    assert "active_job" not in world.store.definition_state("fake-things")
    assert len(world.events.details(FAILED)) == 1


def test_a_dead_workflow_is_restarted_under_a_new_name_a_bounded_number_of_times(world: World) -> None:
    job = world.job(world.started())
    assert ensure_workflow(world.deps, job) == job  # still running: nothing to do
    for n in range(1, 10):
        world.workflow.stop(str(job.execution_arn))
        job = ensure_workflow(world.deps, job)
        assert (
            job.workflow_restarts == n
            and job.execution_arn == world.workflow.executions[f"{job.job_id}-r{n}"].arn
        )
    world.workflow.stop(str(job.execution_arn))
    assert ensure_workflow(world.deps, job).workflow_restarts == 9  # left for an operator
    assert len(world.workflow.of_job(job.job_id)) == 10


def test_a_job_without_a_workflow_gets_one_once_its_starter_is_surely_gone(world: World) -> None:
    job_id = world.started()
    job = world.store.update(job_id, JobStatus.EXPORTING, {"execution_arn": None})
    assert ensure_workflow(world.deps, job).workflow_restarts == 0  # its starter may be attaching it
    world.clock.advance(STALE_CLAIM + timedelta(seconds=1))
    assert ensure_workflow(world.deps, job).workflow_restarts == 1


def test_re_creating_an_export_is_bounded_by_the_setting(world: World) -> None:
    world.configure(max_recreates=1)
    job = world.job(world.started())
    again = recover_upstream(world.deps, job, why="upstream said Failed", counter="recreates")
    assert again is not None and again.upstream_id == "fake-2" and again.recreates == 1
    assert recover_upstream(world.deps, again, why="again", counter="recreates") is None
    assert recover_upstream(world.deps, again, why="expired", counter="reexports") is not None
    assert world.client.closed == world.client.count("create_export")  # each client closed after use
