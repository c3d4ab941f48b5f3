"""check_status: one turn of the poll workflow's wait loop, and the workflow's failure recorder.

Returns what the state machine's Choice reads: ``status`` (the job's), ``attempt``, ``max_attempts``
and ``wait_seconds`` (a growing backoff for the next Wait, from ``POLL_BASE_SECONDS`` doubling up to
``POLL_MAX_SECONDS``).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from exportpipe.config import Settings
from exportpipe.errors import UpstreamError, UpstreamUnavailableError
from exportpipe.jobs import Job, JobStatus
from exportpipe.observability import logger
from exportpipe.runtime import Deps
from exportpipe.services.common import end_unsuccessfully, parse_event
from exportpipe.sources.base import UpstreamState


class WorkflowError(BaseModel):
    """What a Step Functions Catch puts at ``ResultPath``."""

    model_config = ConfigDict(populate_by_name=True)

    error: str = Field(alias="Error")
    cause: str = Field(default="", alias="Cause")


class CheckStatusEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    job_id: str = Field(min_length=1)
    attempt: int = Field(default=0, ge=0)
    error: WorkflowError | None = None


def backoff_seconds(attempt: int, settings: Settings) -> int:
    return int(min(settings.poll_base_seconds * 2 ** max(attempt - 1, 0), settings.poll_max_seconds))


def _answer(job: Job, attempt: int, settings: Settings, wait: int = 0) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "status": job.status.value,
        "attempt": attempt,
        "max_attempts": settings.poll_max_attempts,
        "wait_seconds": wait,
    }


def check_status(event: Any, deps: Deps) -> dict[str, Any]:
    request = parse_event(CheckStatusEvent, event)
    settings = deps.settings
    logger.append_keys(job_id=request.job_id)
    if request.error is not None:
        return _record_workflow_failure(deps, request.job_id, request.error, request.attempt)

    job = deps.store.get(request.job_id)
    attempt = request.attempt + 1
    if job.status is not JobStatus.EXPORTING:
        # READY by webhook, or already ended: the Choice routes on the job's own status.
        return _answer(job, request.attempt, settings)
    if attempt > settings.poll_max_attempts:
        job = end_unsuccessfully(
            deps, job.job_id, JobStatus.FAILED, f"export not ready after {settings.poll_max_attempts} checks"
        )
        return _answer(job, attempt, settings)

    client = deps.client_for(job.source)
    try:
        upstream = client.get_export(str(job.upstream_id))
    except UpstreamUnavailableError as exc:
        logger.warning("upstream unavailable while polling; will check again", error=str(exc))
        job = deps.store.update(
            job.job_id,
            JobStatus.EXPORTING,
            {"poll_attempts": attempt, "upstream_state": f"unavailable: {exc}"},
        )
        return _answer(job, attempt, settings, backoff_seconds(attempt, settings))
    except UpstreamError as exc:
        job = end_unsuccessfully(
            deps, job.job_id, JobStatus.FAILED, f"reading the upstream export failed: {exc}"
        )
        return _answer(job, attempt, settings)
    finally:
        client.close()

    if upstream.state is UpstreamState.PENDING:
        job = deps.store.update(
            job.job_id, JobStatus.EXPORTING, {"poll_attempts": attempt, "upstream_state": upstream.raw_state}
        )
        return _answer(job, attempt, settings, backoff_seconds(attempt, settings))
    if upstream.state is UpstreamState.READY:
        job = deps.store.transition(
            job.job_id,
            JobStatus.READY,
            updates={
                "poll_attempts": attempt,
                "upstream_state": upstream.raw_state,
                "result_urls": upstream.result_urls,
            },
        )
        logger.info("upstream export ready", files=len(upstream.result_urls))
        return _answer(job, attempt, settings)
    target = {
        UpstreamState.FAILED: JobStatus.FAILED,
        UpstreamState.CANCELED: JobStatus.CANCELED,
        UpstreamState.EXPIRED: JobStatus.EXPIRED,
    }[upstream.state]
    job = end_unsuccessfully(
        deps, job.job_id, target, f"upstream export {upstream.upstream_id} is {upstream.raw_state}"
    )
    return _answer(job, attempt, settings)


def _record_workflow_failure(deps: Deps, job_id: str, error: WorkflowError, attempt: int) -> dict[str, Any]:
    message = error.cause
    error_type = error.error
    try:
        cause = json.loads(error.cause)
        if isinstance(cause, dict):
            message = str(cause.get("errorMessage", message))
            error_type = str(cause.get("errorType", error_type))
    except ValueError:
        pass
    status = JobStatus.EXPIRED if error_type == "ExportExpiredError" else JobStatus.FAILED
    job = end_unsuccessfully(deps, job_id, status, f"{error_type}: {message}"[:1000])
    return _answer(job, attempt, deps.settings)
