"""The poll loop is bounded by elapsed time, not by a count of checks: an export that takes a day
upstream (Pardot runs an account's exports one at a time) is waited for and delivered; one that never
finishes ends FAILED at the poll timeout, exactly, with the reason.

The services run with the template's default poll settings on a clock shared with the sandbox, which
the test moves forward by each wait the workflow would sleep."""

from __future__ import annotations

import dataclasses
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from exportpipe_dev.local import LocalStack
from exportpipe_dev.sandbox.pardot import PardotSandbox

from exportpipe.config import load_settings
from exportpipe.models.job import JobStatus
from exportpipe.runtime import Deps, build_deps
from exportpipe.services.check_status import check_status
from exportpipe.services.copy_result import copy_result
from exportpipe.services.start_export import start_export
from tests.conftest import load_event

TICK = datetime(2026, 11, 25, 6, 5, tzinfo=UTC)


@pytest.fixture
def deps(stack: LocalStack, pardot: PardotSandbox) -> Deps:
    # the template's defaults, not the local stack's short waits
    defaults = {
        name: str(stack.template.parameters[param]["Default"])
        for name, param in {
            "POLL_BASE_SECONDS": "PollBaseSeconds",
            "POLL_MAX_SECONDS": "PollMaxSeconds",
            "POLL_MAX_ATTEMPTS": "PollMaxAttempts",
            "POLL_TIMEOUT_SECONDS": "PollTimeoutSeconds",
        }.items()
        if param in stack.template.parameters
    }
    settings = load_settings({**os.environ, **defaults})
    pardot.clock.freeze(TICK + timedelta(minutes=10))
    return dataclasses.replace(build_deps(settings), clock=pardot.clock.now)


def _poll(deps: Deps, pardot: PardotSandbox, job_id: str, limit: int = 2000) -> tuple[dict[str, Any], int]:
    """Run the workflow's loop: check, sleep the answered wait (on the shared clock), until it ends."""
    attempt, checks = 0, 0
    while checks < limit:
        answer = check_status({"job_id": job_id, "attempt": attempt}, deps)
        checks += 1
        if answer["status"] not in ("EXPORTING", "REQUESTED"):
            return answer, checks
        assert answer["attempt"] < answer["max_attempts"], "the Route would give up by count"
        attempt = answer["attempt"]
        pardot.clock.advance(answer["wait_seconds"])
    raise AssertionError(f"still waiting after {limit} checks")


def _start(deps: Deps, name: str) -> dict[str, Any]:
    event = load_event("start_export_schedule", scheduled_time=TICK.isoformat())
    event["definition"] = {**event["definition"], "name": name}
    started = start_export(event, deps)
    assert started["status"] == "EXPORTING"
    return started


def test_an_export_that_takes_a_day_upstream_is_waited_for_and_delivered(
    deps: Deps, pardot: PardotSandbox
) -> None:
    # GIVEN an export Pardot takes 24 hours to prepare
    pardot.processing_seconds = 24 * 3600
    started = _start(deps, "timeout-24h")
    began = pardot.clock.now()
    # WHEN the workflow polls it with the default backoff
    answer, checks = _poll(deps, pardot, started["job_id"])
    # THEN it is seen ready soon after it is (within max(2 min, 10 % of its time)), and delivered
    waited = pardot.clock.now() - began
    assert answer["status"] == "READY", answer
    assert timedelta(hours=24) <= waited <= timedelta(hours=24) + max(timedelta(minutes=2), waited / 10)
    assert checks < 150
    assert copy_result({"job_id": started["job_id"]}, deps)["status"] == "DELIVERED"


def test_an_export_that_never_finishes_fails_at_the_poll_timeout_with_the_reason(
    deps: Deps, pardot: PardotSandbox
) -> None:
    # GIVEN an export that stays Processing for longer than the poll timeout (7 days)
    pardot.processing_seconds = 8 * 24 * 3600
    started = _start(deps, "timeout-never")
    recorded = deps.store.get(started["job_id"]).created_at
    # WHEN the workflow polls it
    answer, _ = _poll(deps, pardot, started["job_id"])
    # THEN the job ends FAILED at the timeout itself (the last wait stops there), saying why
    job = deps.store.get(started["job_id"])
    assert answer["status"] == "FAILED" and job.status is JobStatus.FAILED
    assert pardot.clock.now() - recorded == timedelta(seconds=deps.settings.poll_timeout_seconds)
    assert job.reason is not None and "POLL_TIMEOUT_SECONDS" in job.reason and "168 h" in job.reason
    # AND the export nothing waits for any more is canceled upstream
    assert pardot.export_state(int(started["upstream_id"])).value == "Canceled"
