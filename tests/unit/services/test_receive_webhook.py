"""receive_webhook: a verified completion moves its job to READY; unknown exports are acknowledged,
duplicates and late ones change nothing."""

from __future__ import annotations

from exportpipe.models.job import JobStatus
from exportpipe.services.receive_webhook import receive_completion
from exportpipe.webhooks import Completion
from tests.unit.services.conftest import CSV_1, World

URLS = ["https://files.fake.example/fake-1/1"]


def test_a_completion_for_an_unknown_export_is_acknowledged_and_ignored(world: World) -> None:
    job_id = world.started()
    outcome = receive_completion(world.deps, "fake", Completion("evt-1", "someone-elses", URLS))
    assert (outcome.status_code, outcome.message, outcome.job_id) == (202, "unknown export; ignored", None)
    assert world.job(job_id).status is JobStatus.EXPORTING


def test_a_completion_makes_its_job_ready_and_the_next_check_goes_on_to_the_copy(world: World) -> None:
    job_id = world.started()
    world.client.finish(CSV_1)  # the files the webhook announces
    outcome = receive_completion(world.deps, "fake", Completion("evt-1", "fake-1", URLS))
    assert (outcome.status_code, outcome.job_id) == (202, job_id)
    job = world.job(job_id)
    assert job.status is JobStatus.READY and job.result_urls == URLS
    assert job.upstream_state == "completed (webhook)"
    assert world.check(job_id, 2)["status"] == "READY"
    assert world.copy(job_id)["status"] == "DELIVERED"


def test_a_duplicate_or_late_completion_changes_nothing(world: World) -> None:
    job_id = world.started()
    receive_completion(world.deps, "fake", Completion("evt-1", "fake-1", URLS))
    again = receive_completion(world.deps, "fake", Completion("evt-1", "fake-1", ["https://elsewhere/x"]))
    assert (again.status_code, again.message) == (200, "job already READY")
    assert world.job(job_id).result_urls == URLS
    world.client.finish(CSV_1)
    world.copy(job_id)
    late = receive_completion(world.deps, "fake", Completion("evt-2", "fake-1", URLS))
    assert late.status_code == 200 and late.message.startswith("job already DELIVERED")


def test_a_completion_of_another_source_with_the_same_id_is_not_this_job(world: World) -> None:
    job_id = world.started()
    outcome = receive_completion(world.deps, "other", Completion("evt-1", "fake-1", URLS))
    assert outcome.status_code == 202 and outcome.job_id is None
    assert world.job(job_id).status is JobStatus.EXPORTING
