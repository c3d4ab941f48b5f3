"""start_export: validate the definition, plan the window, record the job, create the upstream export,
and start the poll workflow. Re-delivered schedule events find the job they already started."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict

from exportpipe.definitions import PardotDefinition, Window, parse_definition
from exportpipe.errors import ExportPipeError
from exportpipe.jobs import Job, JobStatus, Transition, job_id_for
from exportpipe.observability import logger, metrics
from exportpipe.runtime import Deps
from exportpipe.services.common import end_unsuccessfully, parse_event
from exportpipe.store import STALE_CLAIM, upstream_ref


class StartExportEvent(BaseModel):
    """What a schedule delivers: the definition and the scheduled time (``<aws.scheduler.scheduled-time>``).

    ``window`` may be given instead to export one explicit range (a re-run or a backfill step).
    """

    model_config = ConfigDict(extra="forbid")

    definition: dict[str, Any]
    scheduled_time: AwareDatetime | None = None
    window: Window | None = None


def plan_window(definition: PardotDefinition, watermark: datetime | None, until: datetime) -> Window | None:
    """[watermark or definition.start, until) rounded down to the minute, at most ``max_window`` long."""
    end = until.replace(second=0, microsecond=0)
    start = watermark or definition.start
    if start >= end:
        return None
    end = min(end, start + definition.max_window)
    return Window.of(start, end)


def start_export(event: Any, deps: Deps) -> dict[str, Any]:
    request = parse_event(StartExportEvent, event)
    definition = parse_definition(request.definition)  # fails before any upstream call
    store = deps.store
    window = request.window or plan_window(
        definition, store.watermark(definition.name), request.scheduled_time or deps.clock()
    )
    if window is None:
        logger.info("definition is up to date; nothing to export", definition=definition.name)
        return {"status": "UP_TO_DATE", "definition": definition.name}

    now = deps.clock()
    job = Job(
        job_id=job_id_for(definition.name, window),
        definition_name=definition.name,
        source=definition.source,
        dataset=definition.dataset_name,
        definition=definition.model_dump(mode="json"),
        window=window,
        status=JobStatus.REQUESTED,
        created_at=now,
        updated_at=now,
        history=[Transition(status=JobStatus.REQUESTED, at=now)],
    )
    logger.append_keys(job_id=job.job_id, definition=definition.name)
    outcome = store.create(job)
    if outcome.result == "busy":
        if not _reclaim_lease(deps, outcome.active_job_id):
            logger.info("another export of this definition is in flight", active_job=outcome.active_job_id)
            return {
                "status": "SKIPPED",
                "reason": f"job {outcome.active_job_id} is in flight",
                "job_id": job.job_id,
            }
        outcome = store.create(job)
        if outcome.result == "busy":
            return {
                "status": "SKIPPED",
                "reason": f"job {outcome.active_job_id} is in flight",
                "job_id": job.job_id,
            }
    if outcome.result == "exists" and outcome.job is not None:
        existing = outcome.job
        resumed = store.claim_stale(existing.job_id) if existing.status is JobStatus.REQUESTED else None
        if resumed is None:
            logger.info("duplicate schedule event: job already started", status=existing.status.value)
            return {"job_id": existing.job_id, "status": existing.status.value, "duplicate": True}
        job = resumed
    metrics.add_metric(name="ExportsRequested", unit="Count", value=1)
    return _create_upstream(deps, job, definition)


def _reclaim_lease(deps: Deps, active_job_id: str | None) -> bool:
    """Free a lease whose job has ended, or whose starter died before creating the export."""
    if not active_job_id:
        return False
    active = deps.store.find(active_job_id)
    if active is None:
        return False
    if active.status.terminal:
        deps.store.settle(active)
        return True
    if active.status is JobStatus.REQUESTED and deps.clock() - active.updated_at > STALE_CLAIM:
        end_unsuccessfully(
            deps, active.job_id, JobStatus.FAILED, "start_export died before creating the export"
        )
        return True
    return False


def _create_upstream(deps: Deps, job: Job, definition: PardotDefinition) -> dict[str, Any]:
    try:
        client = deps.client_for(definition.source)
        try:
            upstream = client.create_export(definition, job.window)
        finally:
            client.close()
    except ExportPipeError as exc:
        failed = end_unsuccessfully(
            deps, job.job_id, JobStatus.FAILED, f"creating the upstream export failed: {exc}"
        )
        return {"job_id": job.job_id, "status": failed.status.value, "reason": failed.reason}

    job = deps.store.transition(
        job.job_id,
        JobStatus.EXPORTING,
        updates={
            "upstream_id": upstream.upstream_id,
            "upstream_ref": upstream_ref(job.source, upstream.upstream_id),
            "upstream_state": upstream.raw_state,
        },
    )
    logger.info("upstream export created", upstream_id=upstream.upstream_id, state=upstream.raw_state)
    execution_arn = _start_workflow(deps, job.job_id)
    deps.store.update(job.job_id, JobStatus.EXPORTING, {"execution_arn": execution_arn})
    return {
        "job_id": job.job_id,
        "status": JobStatus.EXPORTING.value,
        "upstream_id": upstream.upstream_id,
        "window": job.window.model_dump(mode="json"),
        "execution_arn": execution_arn,
    }


def _start_workflow(deps: Deps, job_id: str) -> str:
    arn = deps.settings.poll_state_machine_arn
    sfn = deps.sfn
    try:
        resp = sfn.start_execution(
            stateMachineArn=arn, name=job_id, input=json.dumps({"job_id": job_id, "attempt": 0})
        )
        return str(resp["executionArn"])
    except sfn.exceptions.ExecutionAlreadyExists:
        # Same name, same input: the workflow for this job is already running.
        return arn.replace(":stateMachine:", ":execution:") + f":{job_id}"
