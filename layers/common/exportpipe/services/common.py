"""Pieces the use cases share: task answers, ending a job unsuccessfully, re-creating an upstream
export, and parsing task inputs."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from exportpipe.adapters.store import STALE_CLAIM, upstream_ref
from exportpipe.config import Settings
from exportpipe.errors import (
    ExportPipeError,
    InvalidEventError,
    TransitionError,
    UpstreamRateLimitedError,
    UpstreamUnavailableError,
)
from exportpipe.models.definition import parse_definition
from exportpipe.models.job import IN_WORKFLOW, Job, JobStatus
from exportpipe.observability import logger, metrics
from exportpipe.runtime import Deps

M = TypeVar("M", bound=BaseModel)

# How long the copy of a READY export may take, waits for rate limits and interruptions included,
# beyond the poll timeout. statemachine/export_poll.asl.json's TimeoutSeconds exceeds the largest
# POLL_TIMEOUT_SECONDS plus this, with a day to spare for the last copy and the failure recorder.
COPY_BUDGET = timedelta(days=1)


def parse_event(model: type[M], event: Any) -> M:
    try:
        return model.model_validate(event)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise InvalidEventError(f"bad {model.__name__}: {problems}") from exc


def backoff_seconds(attempt: int, settings: Settings) -> int:
    """The poll loop's wait after ``attempt`` checks: doubling from the base, capped."""
    return int(min(settings.poll_base_seconds * 2 ** max(attempt - 1, 0), settings.poll_max_seconds))


def deadline_of(job: Job, settings: Settings) -> datetime:
    """When the job stops waiting: ``POLL_TIMEOUT_SECONDS`` after it was recorded for everything up
    to READY (creating, polling, re-creating the upstream export, rate limits), and
    :data:`COPY_BUDGET` more for the copy. The state machine's own ``TimeoutSeconds`` is above the
    largest sum (``tests/unit/test_template.py``), so the job's failure is always recorded by us, never
    cut short by the execution's timeout."""
    end = job.created_at + timedelta(seconds=settings.poll_timeout_seconds)
    return end + COPY_BUDGET if job.status is JobStatus.COPYING else end


def past_deadline(deps: Deps, job: Job) -> bool:
    return deps.clock() >= deadline_of(job, deps.settings)


def answer(deps: Deps, job: Job, attempt: int, wait: float = 0, **extra: Any) -> dict[str, Any]:
    """What every workflow task returns: the state machine's Route reads these fields.

    A wait never reaches past the job's deadline (:func:`deadline_of`): the task that runs then ends
    the job with the reason. ``max_attempts`` is one more than ``attempt``, so the Route's attempt
    guard (kept for executions started on an earlier definition) never ends a wait by count.
    """
    if wait > 0:
        left = (deadline_of(job, deps.settings) - deps.clock()).total_seconds()
        wait = max(1, min(wait, math.ceil(left)))
    return {
        "job_id": job.job_id,
        "status": job.status.value,
        "attempt": attempt,
        "max_attempts": attempt + 1,
        "wait_seconds": int(wait),
        **extra,
    }


def refusal_wait(deps: Deps, job: Job, exc: UpstreamUnavailableError) -> tuple[int, float | None]:
    """The policy for upstream refusals in a row (rate limits; outages on create): this refusal's
    number, and how long to wait before calling again — the upstream's own ``retry_after`` or the
    poll backoff for that many refusals, whichever is longer, so a refusal that does not clear is
    asked less and less often. None once more than ``POLL_MAX_ATTEMPTS`` refusals came in a row:
    the caller ends the job FAILED with the reason instead of holding its definition forever."""
    refusals = job.rate_limited + 1
    if refusals > deps.settings.poll_max_attempts:
        return refusals, None
    retry_after = exc.retry_after if isinstance(exc, UpstreamRateLimitedError) else 0
    return refusals, max(retry_after, backoff_seconds(refusals, deps.settings))


def wait_out_rate_limit(deps: Deps, job: Job, attempt: int, exc: UpstreamRateLimitedError) -> dict[str, Any]:
    """A rate-limit refusal while polling or copying: wait it out (:func:`refusal_wait`) without
    counting a poll attempt, or end the job FAILED once the refusals in a row are too many."""
    refusals, wait = refusal_wait(deps, job, exc)
    if wait is None:
        job = end_unsuccessfully(
            deps,
            job.job_id,
            JobStatus.FAILED,
            f"the upstream rate limit refused {refusals} turns in a row; last: {exc}",
        )
        return answer(deps, job, attempt)
    logger.warning(
        "upstream rate limit; waiting before calling again",
        error=str(exc),
        refusals=refusals,
        wait_seconds=wait,
    )
    job = deps.store.update(
        job.job_id, job.status, {"rate_limited": refusals, "upstream_state": f"rate limited: {exc}"}
    )
    return answer(deps, job, attempt, wait)


def end_unsuccessfully(deps: Deps, job_id: str, status: JobStatus, reason: str) -> Job:
    """Move a job to FAILED / EXPIRED / CANCELED, release its definition, tell consumers.

    Idempotent and resumable: a job that already ended keeps its status (a duplicate or late failure
    report never overwrites a delivery), and a retry finishes what an interrupted call left undone
    (the lease, the ``Export Failed`` event).
    """
    try:
        job = deps.store.transition(job_id, status, reason=reason)
        logger.error("export not delivered", job_id=job_id, status=status.value, reason=reason)
        metrics.add_metric(name=f"Exports{status.value.title()}", unit="Count", value=1)
    except TransitionError as exc:
        job = deps.store.get(job_id)
        logger.warning("job already ended; failure report ignored", job_id=job_id, current=exc.current)
        if job.status is JobStatus.DELIVERED or not job.status.terminal:
            return job
    deps.store.settle(job)
    if not job.event_sent:
        deps.publisher.failed(job)
        job = deps.store.update(job.job_id, job.status, {"event_sent": True})
    return job


def abandon_upstream(deps: Deps, job: Job) -> None:
    """Cancel the job's upstream export now that nothing will copy it (best effort: a refusal is
    logged, never raised, since the job's own outcome is already decided)."""
    if not job.upstream_id:
        return
    client = deps.client_for(job.connection_ref)
    try:
        canceled = client.cancel_export(job.upstream_id)
        logger.info("abandoned upstream export", upstream_id=job.upstream_id, canceled=canceled)
    except ExportPipeError as exc:
        logger.warning(
            "could not cancel the abandoned upstream export", upstream_id=job.upstream_id, error=str(exc)
        )
    finally:
        client.close()


def start_workflow(deps: Deps, job: Job, name: str) -> str:
    """Start the poll workflow for ``job`` as execution ``name`` (an existing one is fine)."""
    arn = deps.settings.poll_state_machine_arn
    sfn = deps.sfn
    try:
        resp = sfn.start_execution(
            stateMachineArn=arn, name=name, input=json.dumps({"job_id": job.job_id, "attempt": 0})
        )
        return str(resp["executionArn"])
    except sfn.exceptions.ExecutionAlreadyExists:
        return arn.replace(":stateMachine:", ":execution:") + f":{name}"


def ensure_workflow(deps: Deps, job: Job) -> Job:
    """Start the job's workflow again if it died (timed out, aborted, or never started).

    A job in EXPORTING / READY / COPYING is only ever moved on by its workflow; without one it would
    hold its definition's lease for good. A job younger than a Lambda's lifetime with no execution
    yet may still be getting one from its starter, so it is left alone.
    """
    if job.status not in IN_WORKFLOW:
        return job
    if job.execution_arn:
        try:
            status = deps.sfn.describe_execution(executionArn=job.execution_arn)["status"]
        except deps.sfn.exceptions.ExecutionDoesNotExist:
            status = None
        if status == "RUNNING":
            return job
    elif deps.clock() - job.updated_at < STALE_CLAIM:
        return job
    restarts = job.workflow_restarts + 1
    if restarts > 9:
        logger.error("workflow died too often; leaving the job for an operator", job_id=job.job_id)
        return job
    arn = start_workflow(deps, job, f"{job.job_id}-r{restarts}")
    logger.warning("restarted a dead workflow", job_id=job.job_id, execution_arn=arn)
    try:
        return deps.store.update(
            job.job_id, IN_WORKFLOW, {"execution_arn": arn, "workflow_restarts": restarts}
        )
    except TransitionError:
        return deps.store.get(job.job_id)


def recreate_upstream(
    deps: Deps, job: Job, *, why: str, counter: Literal["recreates", "reexports"]
) -> Job | None:
    """Create a new upstream export for the job's window and go back to EXPORTING.

    Used when the upstream export Failed (``recreates``) or its files expired before the copy
    (``reexports``). Returns None once ``UPSTREAM_RECREATE_ATTEMPTS`` is used up. Upstream errors
    (a rate limit, say) propagate: the job keeps its old export, and the next check tries again.
    """
    used = job.recreates if counter == "recreates" else job.reexports
    limit = deps.settings.max_recreates
    if used >= limit:
        return None
    client = deps.client_for(job.connection_ref)
    try:
        upstream = client.create_export(parse_definition(job.definition), job.window)
    finally:
        client.close()
    logger.warning("upstream export created again", why=why, new_upstream_id=upstream.upstream_id)
    metrics.add_metric(name="UpstreamExportsRecreated", unit="Count", value=1)
    return deps.store.transition(
        job.job_id,
        JobStatus.EXPORTING,
        reason=f"{why}; created again as {upstream.upstream_id} ({used + 1}/{limit})",
        updates={
            "upstream_id": upstream.upstream_id,
            "upstream_ref": upstream_ref(job.source, upstream.upstream_id),
            "upstream_state": upstream.raw_state,
            "result_urls": [],
            "files": [],
            "poll_attempts": 0,
            "rate_limited": 0,
            "copy_retries": 0,
            counter: used + 1,
        },
    )
