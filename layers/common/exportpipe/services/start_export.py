"""start_export: validate the definition, plan the window, record the job, create the upstream export,
and start the poll workflow.

Exactly once: the job id is derived from (definition, window), so a re-delivered schedule event finds
the job it already started; one export per definition is in flight at a time, so windows never
overlap; a window is only left behind by delivering it, so none is skipped. A transient refusal to
create the export (rate limit, outage) leaves the job REQUESTED: the next delivery or schedule tick
resumes that same job instead of opening a new window.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from exportpipe.errors import (
    ExportPipeError,
    InvalidDefinitionError,
    TransitionError,
    UpstreamUnavailableError,
)
from exportpipe.models.definition import DefinitionBase, Window
from exportpipe.models.job import (
    IN_WORKFLOW,
    MAX_WINDOW_ATTEMPTS,
    UNDELIVERED,
    Job,
    JobStatus,
    Transition,
    job_id_for,
    upstream_ref,
)
from exportpipe.models.tasks import StartOutcome
from exportpipe.observability import MetricUnit, logger, metrics, put_single_metric
from exportpipe.runtime import Deps
from exportpipe.services.common import (
    abandon_upstream,
    end_unsuccessfully,
    ensure_workflow,
    parse_event,
    refusal_wait,
    start_workflow,
)
from exportpipe.sources.registry import parse_definition


class StartExportEvent(BaseModel):
    """What a schedule delivers: the definition and the scheduled time (``<aws.scheduler.scheduled-time>``).

    - ``until`` (or ``scheduled_time``): export up to this moment, from the definition's watermark (or
      ``start``). Longer than one window allows, it is covered by consecutive jobs: each delivery
      starts the next window at once (a backfill).
    - ``window``: export exactly this range once (a re-run); it must fit in one export, and it does
      not move the definition's watermark (incremental runs go on from where they were).
    - ``retry``: an operator's retry of a definition that gave up (``GAVE_UP``: its current window
      failed every attempt): its failed attempts are forgotten and the window is tried again.
    """

    model_config = ConfigDict(extra="forbid")

    definition: dict[str, Any]
    scheduled_time: AwareDatetime | None = None
    until: AwareDatetime | None = None
    window: Window | None = None
    retry: bool = False

    @model_validator(mode="after")
    def _one_end(self) -> StartExportEvent:
        if self.window is not None and (self.until is not None or self.scheduled_time is not None):
            raise ValueError("give either window, or until / scheduled_time, not both")
        return self


class ContinueEvent(BaseModel):
    """What follows a delivery: the poll workflow's Delivered state (or, for an execution started on
    an earlier definition, its check_status / copy_result) names the delivered job."""

    model_config = ConfigDict(extra="forbid")

    continue_after: str = Field(min_length=1)


def report_watermark_age(definition: DefinitionBase, watermark: datetime | None, now: datetime) -> None:
    """Emit ``WatermarkAgeSeconds`` (dimension ``definition``): how far behind ``now`` the definition's
    delivered data ends (its watermark, or ``start`` before the first delivery; 0 for a ``start`` still
    in the future). Emitted on every tick, also one that skips, so each definition's freshness alarm
    sees a definition that stops landing data, and (as missing data) one whose ticks stop."""
    age = max((now - (watermark or definition.start)).total_seconds(), 0.0)
    put_single_metric("WatermarkAgeSeconds", age, MetricUnit.Seconds, {"definition": definition.name})


def start_export(event: Any, deps: Deps) -> dict[str, Any]:
    """The start function's task: the outcome as its JSON answer (:meth:`StartOutcome.output`)."""
    return _start(event, deps).output()


def _start(event: Any, deps: Deps) -> StartOutcome:
    request = parse_event(StartExportEvent, event)
    definition = parse_definition(request.definition)  # fails before any upstream call
    now = deps.clock()
    if request.window is not None and (problems := definition.window_problems(request.window, now)):
        raise InvalidDefinitionError(problems)
    until = min(request.until or request.scheduled_time or now, definition.latest_end(now))
    until = until.replace(second=0, microsecond=0)
    if request.retry:
        deps.store.forget_failed_attempts(definition.name)
        logger.warning(
            "operator retry: the definition's failed attempts are forgotten", definition=definition.name
        )
    return _plan_and_start(deps, definition, until, request.window)


def continue_backfill(event: Any, deps: Deps) -> dict[str, Any]:
    """After a delivery: if the job was a backfill's window that stopped short of its ``until``, start
    the definition's next window (:func:`start_next_window`). Idempotent: a repeat finds the next job
    started (or, once it is delivered too, plans the one after it, as a tick would)."""
    request = parse_event(ContinueEvent, event)
    job = deps.store.get(request.continue_after)
    logger.append_keys(after_job=job.job_id, definition=job.definition_name)
    if job.status is not JobStatus.DELIVERED:
        return StartOutcome("NOT_DELIVERED", after=job.job_id, job_status=job.status.value).output()
    if not job.has_next_window or job.until is None:
        return StartOutcome("NO_NEXT_WINDOW", after=job.job_id).output()
    result = start_next_window(deps, parse_definition(job.definition), job.until)
    logger.info("next window", next_job=result.job_id, status=result.status)
    return dataclasses.replace(result, after=job.job_id).output()


def start_next_window(deps: Deps, definition: DefinitionBase, until: datetime) -> StartOutcome:
    """The job lifecycle's way on after a delivery that stopped short of ``until`` (a backfill): the
    definition's next window, planned from its watermark, as a tick up to ``until`` would start it."""
    until = min(until, definition.latest_end(deps.clock())).replace(second=0, microsecond=0)
    return _plan_and_start(deps, definition, until, None)


def _plan_and_start(
    deps: Deps, definition: DefinitionBase, until: datetime, explicit: Window | None
) -> StartOutcome:
    """Plan the window (``explicit``, or from the watermark up to ``until``) and start it; plan again
    if the watermark moves under us."""
    for _ in range(3):
        watermark = deps.store.watermark(definition.name)
        report_watermark_age(definition, watermark, deps.clock())
        window = explicit or definition.plan_window(watermark, until)
        if window is None:
            logger.info("definition is up to date; nothing to export", definition=definition.name)
            return StartOutcome("UP_TO_DATE", definition=definition.name)
        result = _start_window(deps, definition, window, until, watermark, explicit=explicit is not None)
        if result is not None:
            return result
    return StartOutcome("SKIPPED", reason="the definition's watermark kept moving; the next tick goes on")


def _start_window(
    deps: Deps,
    definition: DefinitionBase,
    window: Window,
    until: datetime,
    watermark: datetime | None,
    *,
    explicit: bool,
) -> StartOutcome | None:
    """Start the window's export, or find it started. None: the plan is stale, plan again.

    A window whose earlier exports ended undelivered is tried again as attempt 2, 3… — counted by
    the window's start, so a schedule's later ticks (same start, later end) count too.
    """
    first = 1 if explicit else deps.store.failed_attempts(definition.name, window.start) + 1
    generation = deps.store.retry_generation(definition.name)
    for attempt in range(first, MAX_WINDOW_ATTEMPTS + 1):
        now = deps.clock()
        job = Job(
            job_id=job_id_for(definition.name, window, attempt, generation),
            definition_name=definition.name,
            source=definition.source,
            dataset=definition.dataset_name,
            definition=definition.model_dump(mode="json"),
            window=window,
            until=max(until, window.end),
            moves_watermark=not explicit,
            attempt=attempt,
            generation=generation,
            status=JobStatus.REQUESTED,
            created_at=now,
            updated_at=now,
            history=[Transition(status=JobStatus.REQUESTED, at=now)],
        )
        logger.append_keys(job_id=job.job_id, definition=definition.name)
        outcome = deps.store.create(job, planned_from=watermark)
        if outcome.result == "stale":
            return None
        if outcome.result == "busy":
            return _take_over(deps, definition.name, outcome.active_job_id)
        if outcome.result == "exists" and outcome.job is not None:
            existing = outcome.job
            if existing.status in UNDELIVERED:
                continue  # that attempt ended without a delivery: this window gets another one
            if existing.status is JobStatus.REQUESTED:
                claimed = deps.store.claim_stale(existing.job_id)
                if claimed is not None:
                    return create_upstream(deps, claimed, definition)
            existing = ensure_workflow(deps, existing)
            logger.info("duplicate schedule event: job already started", status=existing.status.value)
            return StartOutcome(existing.status.value, job_id=existing.job_id, duplicate=True)
        metrics.add_metric(name="ExportsRequested", unit="Count", value=1)
        return create_upstream(deps, job, definition)
    logger.error("window failed every attempt; not tried again", attempts=MAX_WINDOW_ATTEMPTS)
    metrics.add_metric(name="WindowsGivenUp", unit="Count", value=1)
    return StartOutcome(
        "GAVE_UP",
        reason=f"{MAX_WINDOW_ATTEMPTS} exports of this window ended without a delivery; see those jobs",
        job_id=job_id_for(definition.name, window, MAX_WINDOW_ATTEMPTS, generation),
    )


def _take_over(deps: Deps, definition_name: str, active_job_id: str | None) -> StartOutcome | None:
    """The definition's lease is held by another job. Resume that job if it waits for its export,
    restart its workflow if that died, free the lease if the job has ended (then plan again: None)."""
    active = deps.store.find(active_job_id) if active_job_id else None
    if active is None:  # a lease whose job record is gone (expired by TTL): free it
        if active_job_id:
            deps.store.release_lease(definition_name, active_job_id)
        return None
    if active.status.terminal:
        deps.store.settle(active)
        return None
    if active.status is JobStatus.REQUESTED:
        claimed = deps.store.claim_stale(active.job_id)
        if claimed is not None:
            logger.info("resuming a job that waits for its upstream export", resumed_job=claimed.job_id)
            return create_upstream(deps, claimed, parse_definition(claimed.definition))
    else:
        ensure_workflow(deps, active)
    logger.info("another export of this definition is in flight", active_job=active.job_id)
    return StartOutcome("SKIPPED", reason=f"job {active.job_id} is in flight", job_id=active.job_id)


@dataclasses.dataclass(frozen=True)
class RunningWorkflow:
    """The poll workflow execution a caller runs in (check_status): the export is created in it, and
    no workflow is started. ``execution_arn``, when the task input gives it, is recorded on a job that
    has none yet; None for an execution started on an earlier definition (which did not pass it)."""

    execution_arn: str | None = None


def create_upstream(
    deps: Deps, job: Job, definition: DefinitionBase, *, running: RunningWorkflow | None = None
) -> StartOutcome:
    """Create the upstream export of a REQUESTED job the caller has claimed, and start its workflow
    (unless the caller runs in it: ``running``).

    Refused for now (a rate limit, an outage), the job stays REQUESTED, deferred until the
    upstream's wait is over, and its workflow is started anyway: the workflow tries again when the
    wait is over, so a job resumes even when no schedule tick comes (a backfill's next window).
    """
    try:
        client = deps.client_for(job.connection_ref)
        try:
            upstream = client.create_export(definition, job.window)
        finally:
            client.close()
    except UpstreamUnavailableError as exc:
        return _defer(deps, job, exc, running)
    except ExportPipeError as exc:
        failed = end_unsuccessfully(
            deps, job.job_id, JobStatus.FAILED, f"creating the upstream export failed: {exc}"
        )
        return StartOutcome(failed.status.value, job_id=job.job_id, reason=failed.reason)

    try:
        job = deps.store.transition(
            job.job_id,
            JobStatus.EXPORTING,
            updates={
                "upstream_id": upstream.upstream_id,
                "upstream_ref": upstream_ref(job.source, upstream.upstream_id),
                "upstream_state": upstream.raw_state,
                "rate_limited": 0,
            },
        )
    except TransitionError:
        # The job ended while we were creating its export (its workflow gave up on it): nothing will
        # copy the new export, so it must not hold up the upstream's queue.
        abandon_upstream(deps, job.model_copy(update={"upstream_id": upstream.upstream_id}))
        current = deps.store.get(job.job_id)
        return StartOutcome(current.status.value, job_id=job.job_id, reason=current.reason)
    logger.info("upstream export created", upstream_id=upstream.upstream_id, state=upstream.raw_state)
    execution_arn = _attach_workflow(deps, job, IN_WORKFLOW, running)
    return StartOutcome(
        JobStatus.EXPORTING.value,
        job_id=job.job_id,
        upstream_id=upstream.upstream_id,
        window=job.window.model_dump(mode="json"),
        execution_arn=execution_arn,
    )


def _attach_workflow(
    deps: Deps, job: Job, statuses: Collection[JobStatus], running: RunningWorkflow | None
) -> str | None:
    """Start the job's workflow (named after the job; one that runs already is fine) and record it;
    inside a workflow (``running``), record that one on a job that has none yet, start nothing."""
    if running is None:
        execution_arn = start_workflow(deps, job, job.job_id)
    elif job.execution_arn or not running.execution_arn:
        return job.execution_arn or running.execution_arn  # nothing to record
    else:
        execution_arn = running.execution_arn
    with contextlib.suppress(TransitionError):  # the workflow may already have moved the job on
        deps.store.update(job.job_id, statuses, {"execution_arn": execution_arn})
    return execution_arn


def _defer(
    deps: Deps, job: Job, exc: UpstreamUnavailableError, running: RunningWorkflow | None
) -> StartOutcome:
    """Refused for now (a rate limit, an outage): keep the job and its lease, and let it be resumed
    — by its workflow, a tick or a re-delivery — not before the wait :func:`refusal_wait` gives is
    over; too many refusals in a row end the job FAILED with the reason."""
    refusals, wait = refusal_wait(deps, job, exc)
    if wait is None:
        failed = end_unsuccessfully(
            deps,
            job.job_id,
            JobStatus.FAILED,
            f"the upstream refused to create the export {refusals} times in a row; last: {exc}",
        )
        return StartOutcome(failed.status.value, job_id=job.job_id, reason=failed.reason)
    reason = f"waiting to create the upstream export: {exc}"
    deps.store.defer(
        job.job_id, deps.clock() + timedelta(seconds=wait), {"reason": reason, "rate_limited": refusals}
    )
    logger.warning("upstream export not created yet; will resume", reason=reason, wait_seconds=wait)
    _attach_workflow(deps, job, {JobStatus.REQUESTED}, running)
    return StartOutcome(JobStatus.REQUESTED.value, job_id=job.job_id, reason=reason)
