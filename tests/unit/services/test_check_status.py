"""check_status: the poll loop's turn (backoff, deadline, the upstream's answers, rate limits, bounded
re-creates, a deferred create) and the workflow's failure recorder (Error/Cause, the folder emptied,
a committed delivery finished instead)."""

from __future__ import annotations

import json

import pytest
from exportpipe_dev.fakes import fake_spec, registered

from exportpipe.errors import UpstreamError, UpstreamRateLimitedError, UpstreamUnavailableError
from exportpipe.models.job import JobStatus
from exportpipe.services.receive_webhook import receive_completion
from exportpipe.sources.base import PollPolicy, Recovery, UpstreamState
from exportpipe.webhooks import Completion
from tests.unit.services.conftest import CSV_1, CSV_2, FAILED, World


def test_a_pending_export_is_polled_with_a_doubling_backoff_up_to_its_cap(world: World) -> None:
    job_id = world.started()
    attempt, waits = 0, []
    for _ in range(7):
        out = world.check(job_id, attempt)
        assert out["status"] == "EXPORTING" and out["attempt"] == attempt + 1
        assert out["max_attempts"] == out["attempt"] + 1  # the Route's guard never ends a wait
        attempt = out["attempt"]
        waits.append(out["wait_seconds"])
    assert waits == [30, 60, 120, 240, 480, 900, 900]
    job = world.job(job_id)
    assert job.poll_attempts == 7 and job.upstream_state == "Pending"


def test_a_wait_never_reaches_past_the_deadline(world: World) -> None:
    world.configure(poll_timeout_seconds=3600)
    job_id = world.started()
    world.clock.advance(3600 - 10)
    assert world.check(job_id, 4)["wait_seconds"] == 10
    world.clock.advance(10)
    out = world.check(job_id, 5)
    job = world.job(job_id)
    assert out["status"] == "FAILED" == job.status.value
    assert "not ready (Pending) after 1 h, the poll timeout" in str(job.reason)
    # nothing waits for that export any more: it is canceled upstream
    assert world.client.count("cancel_export") == 1 and world.client.last.state is UpstreamState.CANCELED
    assert [d["job_id"] for d in world.events.details(FAILED)] == [job_id]


def test_a_ready_export_makes_the_job_ready_with_its_files(world: World) -> None:
    job_id = world.started()
    urls = world.client.finish(CSV_1, CSV_2)
    out = world.check(job_id, 2)
    job = world.job(job_id)
    assert (out["status"], out["attempt"], out["wait_seconds"]) == ("READY", 3, 0)
    assert job.status is JobStatus.READY and job.result_urls == urls
    assert job.upstream_created_at == world.client.last.created_at


def test_a_job_made_ready_by_a_webhook_is_not_polled(world: World) -> None:
    job_id = world.started()
    upstream_id = str(world.job(job_id).upstream_id)
    receive_completion(world.deps, "fake", Completion("evt-1", upstream_id, ["https://files.fake.example/x"]))
    polls = world.client.count("get_export")
    assert world.check(job_id, 1)["status"] == "READY" and world.client.count("get_export") == polls


def test_an_export_canceled_upstream_ends_the_job_canceled(world: World) -> None:
    job_id = world.started()
    world.client.set_state(UpstreamState.CANCELED)
    assert world.check(job_id)["status"] == "CANCELED"
    assert [d["status"] for d in world.events.details(FAILED)] == ["CANCELED"]
    assert "active_job" not in world.store.definition_state("fake-things")


@pytest.mark.parametrize(
    ("state", "counter", "ends"),
    [
        (UpstreamState.FAILED, "recreates", JobStatus.FAILED),
        (UpstreamState.EXPIRED, "reexports", JobStatus.EXPIRED),
    ],
)
def test_an_export_that_failed_or_expired_is_created_again_a_bounded_number_of_times(
    world: World, state: UpstreamState, counter: str, ends: JobStatus
) -> None:
    job_id = world.started()
    for n in (1, 2):
        world.client.set_state(state)
        out = world.check(job_id, 5)
        job = world.job(job_id)
        assert (out["status"], out["attempt"], out["wait_seconds"]) == ("EXPORTING", 0, 30)
        assert job.upstream_id == f"fake-{n + 1}" and getattr(job, counter) == n and job.poll_attempts == 0
        assert f"created again as fake-{n + 1} ({n}/2)" in str(job.history[-1].reason)
        assert world.store.find_by_upstream("fake", f"fake-{n + 1}") == job
    world.client.set_state(state)
    assert world.check(job_id, 1)["status"] == ends.value
    job = world.job(job_id)
    assert job.status is ends and "gave up after 3 upstream export(s)" in str(job.reason)
    assert world.client.count("create_export") == 3


def test_a_refused_re_create_keeps_the_old_export_and_waits(world: World) -> None:
    job_id = world.started()
    world.client.set_state(UpstreamState.FAILED)
    world.client.fail("create_export", UpstreamRateLimitedError("daily allowance spent", retry_after=1200))
    out = world.check(job_id, 2)
    job = world.job(job_id)
    assert (out["status"], out["attempt"], out["wait_seconds"]) == ("EXPORTING", 2, 1200)
    assert job.upstream_id == "fake-1" and job.recreates == 0 and job.rate_limited == 1
    world.client.fail("create_export", UpstreamUnavailableError("503"))
    assert world.check(job_id, 2)["wait_seconds"] == 120  # an outage: the backoff of the 3rd check


def test_a_rate_limited_poll_waits_without_counting_an_attempt(world: World) -> None:
    job_id = world.started()
    world.client.fail(
        "get_export",
        UpstreamRateLimitedError("daily allowance spent", code=122, retry_after=1800),
        UpstreamRateLimitedError("too many concurrent calls", code=66),
        UpstreamRateLimitedError("too many concurrent calls", code=66),
    )
    answers = [world.check(job_id, 4) for _ in range(3)]
    assert [(a["status"], a["attempt"]) for a in answers] == [("EXPORTING", 4)] * 3
    # the upstream's own wait, then the backoff of that many refusals in a row
    assert [a["wait_seconds"] for a in answers] == [1800, 60, 120]
    assert world.job(job_id).rate_limited == 3 and world.job(job_id).poll_attempts == 0
    assert world.check(job_id, 4)["attempt"] == 5  # answered: counted, and the refusals reset
    assert world.job(job_id).rate_limited == 0


def test_rate_limit_refusals_in_a_row_are_bounded(world: World) -> None:
    world.configure(poll_max_attempts=2)
    job_id = world.started()
    world.client.fail("get_export", *(UpstreamRateLimitedError("limit", code=66) for _ in range(3)))
    assert [world.check(job_id, 1)["status"] for _ in range(3)] == ["EXPORTING", "EXPORTING", "FAILED"]
    assert "rate limit refused 3 turns in a row" in str(world.job(job_id).reason)


def test_an_outage_while_polling_counts_an_attempt_and_backs_off(world: World) -> None:
    job_id = world.started()
    world.client.fail("get_export", UpstreamUnavailableError("502 from upstream", status=502))
    out = world.check(job_id, 2)
    assert (out["status"], out["attempt"], out["wait_seconds"]) == ("EXPORTING", 3, 120)
    assert world.job(job_id).upstream_state == "unavailable: 502 from upstream"


def test_an_upstream_error_while_polling_fails_the_job(world: World) -> None:
    job_id = world.started()
    world.client.fail("get_export", UpstreamError("export not found", status=404))
    assert world.check(job_id, 2)["status"] == "FAILED"
    assert world.job(job_id).reason == "reading the upstream export failed: export not found"


@pytest.mark.parametrize(("retry_after", "wait"), [(600, 600), (7200, 900)])
def test_a_deferred_create_is_made_by_the_workflow_when_its_wait_is_over(
    world: World, retry_after: int, wait: int
) -> None:
    world.client.fail(
        "create_export", UpstreamRateLimitedError("daily allowance spent", retry_after=retry_after)
    )
    job_id = world.start()["job_id"]
    out = world.check(job_id)
    assert (out["status"], out["attempt"], out["wait_seconds"]) == ("REQUESTED", 0, wait)
    assert world.client.count("create_export") == 1
    world.clock.advance(retry_after - 1)
    assert world.check(job_id)["wait_seconds"] == 1  # due in a second
    world.clock.advance(2)
    out = world.check(job_id)
    assert (out["status"], out["attempt"], out["wait_seconds"]) == ("EXPORTING", 0, 30)
    assert world.job(job_id).upstream_id == "fake-1" and world.client.count("create_export") == 2


def test_a_deferred_create_refused_again_waits_again(world: World) -> None:
    limit = UpstreamRateLimitedError("daily allowance spent", retry_after=600)
    world.client.fail("create_export", limit, limit)
    job_id = world.start()["job_id"]
    world.clock.advance(601)
    out = world.check(job_id)
    assert (out["status"], out["wait_seconds"]) == ("REQUESTED", 600)
    assert world.job(job_id).rate_limited == 2


def test_a_job_never_created_by_its_deadline_fails(world: World) -> None:
    world.configure(poll_timeout_seconds=3600)
    world.client.fail("create_export", UpstreamRateLimitedError("daily allowance spent", retry_after=600))
    job_id = world.start()["job_id"]
    world.clock.advance(3600)
    assert world.check(job_id, 2)["status"] == "FAILED"
    assert "upstream export not created after 1 h" in str(world.job(job_id).reason)
    assert world.client.count("cancel_export") == 0  # there is no export to cancel


# ---- the failure recorder ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error_type", "status"),
    [
        ("ExportExpiredError", JobStatus.EXPIRED),
        ("ExportCanceledError", JobStatus.CANCELED),
        ("DownloadIncompleteError", JobStatus.FAILED),
        ("Lambda.Unknown", JobStatus.FAILED),
    ],
)
def test_the_failure_recorder_maps_the_error_type_to_the_end(
    world: World, error_type: str, status: JobStatus
) -> None:
    job_id = world.ready(CSV_1)
    out = world.record_failure(job_id, error_type, "what went wrong")
    job = world.job(job_id)
    assert out["status"] == status.value == job.status.value
    assert job.reason == f"{error_type}: what went wrong"
    assert [d["status"] for d in world.events.details(FAILED)] == [status.value]


def test_the_failure_recorder_reads_a_cause_that_is_not_json_as_text(world: World) -> None:
    job_id = world.started()
    out = world.check(job_id, 9, error={"Error": "States.Timeout", "Cause": "the task timed out"})
    assert out["status"] == "FAILED" and world.job(job_id).reason == "States.Timeout: the task timed out"


def test_the_failure_recorder_keeps_reasons_short(world: World) -> None:
    job_id = world.started()
    world.record_failure(job_id, "UpstreamError", "x" * 5000)
    assert len(str(world.job(job_id).reason)) == 1000


def test_the_failure_recorder_empties_the_folder_and_cancels_a_waited_export(world: World) -> None:
    job_id = world.ready(CSV_1, CSV_2)
    folder = world.folder(job_id)
    world.bucket.put_new(f"{folder}/part-00001.csv", CSV_1, content_type="text/csv")  # an earlier try's
    world.bucket.open_upload(f"{folder}/part-00002.csv")  # a copy that died mid-file
    world.record_failure(job_id, "DownloadIncompleteError")
    assert world.landed(job_id) == [] and world.bucket.open_uploads(folder) == []
    assert world.client.count("cancel_export") == 0  # the export was ready: nothing to stop
    # a job that was still waiting for its export has it canceled upstream
    world.clock.advance(hours=1)
    waiting = world.started()
    world.record_failure(waiting, "States.Timeout")
    assert world.client.calls[-1] == ("cancel_export", world.job(waiting).upstream_id)


def test_the_failure_recorder_leaves_a_delivered_job_delivered(world: World) -> None:
    job_id = world.started()
    world.deliver(job_id, CSV_1)
    out = world.record_failure(job_id, "States.Timeout")
    assert out["status"] == "DELIVERED" and world.job(job_id).status is JobStatus.DELIVERED
    assert world.events.details(FAILED) == [] and world.landed(job_id) == ["_manifest.json", "part-00001.csv"]


def test_the_failure_recorder_reported_twice_tells_consumers_once(world: World) -> None:
    job_id = world.started()
    world.record_failure(job_id, "States.Timeout")
    world.record_failure(job_id, "States.Timeout")
    assert len(world.events.details(FAILED)) == 1


def test_a_failure_event_that_was_refused_is_sent_by_the_next_report(world: World) -> None:
    job_id = world.started()
    world.events.refuse()
    with pytest.raises(Exception, match="EventBridge refused"):
        world.record_failure(job_id, "States.Timeout")
    assert world.job(job_id).status is JobStatus.FAILED and not world.job(job_id).event_sent
    world.record_failure(job_id, "States.Timeout")
    assert [json.dumps(d["status"]) for d in world.events.details(FAILED)] == ['"FAILED"']
    assert world.job(job_id).event_sent


# ---- what the source's spec declares -------------------------------------------------------------


def test_the_waits_are_the_sources_poll_policy_within_the_deployments_ceiling(world: World) -> None:
    with registered(fake_spec(world.client, poll=PollPolicy(base=5, factor=3, max=100))):
        job_id = world.started()
        waits = [world.check(job_id, n)["wait_seconds"] for n in range(5)]
        assert waits == [5, 15, 45, 100, 100]
        world.configure(poll_max_seconds=20)
        assert world.check(job_id, 4)["wait_seconds"] == 20


def test_a_source_that_replays_runs_the_failed_export_again_instead_of_creating_one(world: World) -> None:
    with registered(fake_spec(world.client, recovery=Recovery.REPLAY)):
        job_id = world.started()
        world.client.set_state(UpstreamState.FAILED)
        out = world.check(job_id, 3)
        job = world.job(job_id)
        assert (out["status"], out["attempt"]) == ("EXPORTING", 0)
        assert job.upstream_id == "fake-1" and job.recreates == 1 and world.client.count("create_export") == 1
        assert world.client.count("replay_export") == 1 and "replayed as fake-1 (1/2)" in str(job.reason)
        world.deliver(job_id, CSV_1)


def test_a_source_that_cannot_recover_ends_the_job_with_the_reason(world: World) -> None:
    with registered(fake_spec(world.client, recovery=Recovery.NONE)):
        job_id = world.started()
        world.client.set_state(UpstreamState.EXPIRED)
        assert world.check(job_id, 3)["status"] == "EXPIRED"
        assert "cannot recover a failed or expired upstream export" in str(world.job(job_id).reason)
        assert world.client.count("create_export") == 1 and world.client.count("replay_export") == 0
