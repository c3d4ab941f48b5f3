"""Pieces the use cases share: task answers, the job's source's poll policy, ending a job
unsuccessfully, recovering an upstream export (as its source declares), and parsing task inputs."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from exportpipe.config import Settings
from exportpipe.errors import (
    ConfigurationError,
    ExportPipeError,
    InvalidEventError,
    TransitionError,
    UpstreamRateLimitedError,
    UpstreamUnavailableError,
)
from exportpipe.models.job import IN_WORKFLOW, STALE_CLAIM, Job, JobStatus, upstream_ref
from exportpipe.models.tasks import TaskAnswer
from exportpipe.observability import logger, metrics
from exportpipe.runtime import Deps
from exportpipe.sources.base import PollPolicy, Recovery, Replayable, SourceClient, UpstreamExport
from exportpipe.sources.registry import parse_definition, spec_for

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


def poll_policy(job: Job) -> PollPolicy:
    """The poll policy of the job's source (its spec's; see :class:`PollPolicy` for how it and the
    deployment's ``POLL_BASE_SECONDS`` / ``POLL_MAX_SECONDS`` combine)."""
    return spec_for(job.source).poll


def backoff_seconds(attempt: int, settings: Settings, policy: PollPolicy | None = None) -> int:
    """The poll loop's wait after ``attempt`` checks: growing from the base, capped (by ``policy``,
    the job's source's: :func:`poll_policy`; without one, the settings' doubling)."""
    return (policy or PollPolicy()).backoff(attempt, settings)


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


def answer(
    deps: Deps,
    job: Job,
    attempt: int,
    wait: float = 0,
    *,
    delivered: bool = False,
) -> TaskAnswer:
    """What every workflow task returns: the state machine's Route reads these fields.

    A wait never reaches past the job's deadline (:func:`deadline_of`): the task that runs then ends
    the job with the reason. ``max_attempts`` is one more than ``attempt``, so the Route's attempt
    guard (kept for executions started on an earlier definition) never ends a wait by count.
    ``delivered``: the answer names the delivery's manifest and how many files it lists.
    """
    if wait > 0:
        left = (deadline_of(job, deps.settings) - deps.clock()).total_seconds()
        wait = max(1, min(wait, math.ceil(left)))
    result = TaskAnswer(
        job_id=job.job_id,
        status=job.status.value,
        attempt=attempt,
        max_attempts=attempt + 1,
        wait_seconds=int(wait),
    )
    if delivered:
        result["manifest_key"] = job.manifest_key
        result["files"] = len(job.files)
    return result


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
    return refusals, max(retry_after, backoff_seconds(refusals, deps.settings, poll_policy(job)))


def wait_out_rate_limit(deps: Deps, job: Job, attempt: int, exc: UpstreamRateLimitedError) -> TaskAnswer:
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
    return deps.workflow.start(name, job.job_id)


def ensure_workflow(deps: Deps, job: Job) -> Job:
    """Start the job's workflow again if it died (timed out, aborted, or never started).

    A job in EXPORTING / READY / COPYING is only ever moved on by its workflow; without one it would
    hold its definition's lease for good. A job younger than a Lambda's lifetime with no execution
    yet may still be getting one from its starter, so it is left alone.
    """
    if job.status not in IN_WORKFLOW:
        return job
    if job.execution_arn:
        if deps.workflow.running(job.execution_arn):
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


def recover_upstream(
    deps: Deps, job: Job, *, why: str, counter: Literal["recreates", "reexports"]
) -> Job | None:
    """Recover the job's upstream export that Failed (``recreates``) or whose files expired before
    the copy (``reexports``) the way its source declares (``SourceSpec.recovery``), back to EXPORTING.

    RECREATE creates a new export for the window; REPLAY asks the upstream to run the same export
    again (the job keeps its export and spends no create call). Both are counted and bounded the
    same way. None when the source cannot recover one (NONE; :func:`unrecoverable` says why) or
    ``UPSTREAM_RECREATE_ATTEMPTS`` is used up. Upstream errors (a rate limit, say) propagate: the job
    keeps its old export, and the next check tries again.
    """
    recovery = spec_for(job.source).recovery
    used = job.recreates if counter == "recreates" else job.reexports
    limit = deps.settings.max_recreates
    if recovery is Recovery.NONE or used >= limit:
        return None
    client = deps.client_for(job.connection_ref)
    try:
        if recovery is Recovery.REPLAY:
            upstream, done, metric = _replay(client, job), "replayed", "UpstreamExportsReplayed"
        else:
            upstream = client.create_export(parse_definition(job.definition), job.window)
            done, metric = "created again", "UpstreamExportsRecreated"
    finally:
        client.close()
    logger.warning(f"upstream export {done}", why=why, upstream_id=upstream.upstream_id)
    metrics.add_metric(name=metric, unit="Count", value=1)
    reason = f"{why}; {done} as {upstream.upstream_id} ({used + 1}/{limit})"
    return _back_to_exporting(deps, job, upstream, reason, {counter: used + 1})


def _replay(client: SourceClient[Any], job: Job) -> UpstreamExport:
    if not isinstance(client, Replayable):
        raise ConfigurationError(f"source {job.source!r} recovers by replay but its client cannot replay")
    return client.replay_export(str(job.upstream_id))


def unrecoverable(job: Job) -> str | None:
    """Why the job's source cannot recover a failed or expired upstream export at all (its recovery
    is NONE); None when it can (a job that cannot is ended by its caller with this reason)."""
    if spec_for(job.source).recovery is Recovery.NONE:
        return f"source {job.source!r} cannot recover a failed or expired upstream export (recovery: none)"
    return None


def _back_to_exporting(
    deps: Deps, job: Job, upstream: UpstreamExport, reason: str, counted: dict[str, int]
) -> Job:
    """The job follows ``upstream`` from its first check: what it copied or counted of the old
    export is forgotten."""
    return deps.store.transition(
        job.job_id,
        JobStatus.EXPORTING,
        reason=reason,
        updates={
            "upstream_id": upstream.upstream_id,
            "upstream_ref": upstream_ref(job.source, upstream.upstream_id),
            "upstream_state": upstream.raw_state,
            "result_urls": [],
            "files": [],
            "poll_attempts": 0,
            "rate_limited": 0,
            "copy_retries": 0,
            **counted,
        },
    )
