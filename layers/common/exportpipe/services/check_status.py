"""check_status: one turn of the poll workflow's wait loop, and the workflow's failure recorder.

Returns what the state machine's Choice reads: ``status`` (the job's), ``attempt``, ``max_attempts``
and ``wait_seconds`` (a growing backoff for the next Wait). A job still REQUESTED (the upstream
refused to create its export for now) gets its export created once the refusal's wait is over. A
rate-limit refusal waits (longer each time in a row) and does not count as an attempt; an upstream
export that Failed or expired is recovered as its source declares (created again, or replayed;
bounded) before the job gives up, and an export the job gives up waiting for is canceled upstream.
The waits are the job's source's poll policy (``SourceSpec.poll``, within the deployment's settings).
"""

from __future__ import annotations

import math
from typing import Any

from exportpipe.errors import UpstreamError, UpstreamRateLimitedError, UpstreamUnavailableError
from exportpipe.models.job import UNDELIVERED, Job, JobStatus
from exportpipe.models.tasks import CheckStatusEvent, TaskAnswer, WorkflowError
from exportpipe.observability import logger
from exportpipe.runtime import Deps
from exportpipe.services.common import (
    abandon_upstream,
    answer,
    backoff_seconds,
    end_unsuccessfully,
    parse_event,
    past_deadline,
    poll_policy,
    recover_upstream,
    unrecoverable,
    wait_out_rate_limit,
)
from exportpipe.services.delivery import discard, finish_if_committed, hand_over_next_window
from exportpipe.services.start_export import RunningWorkflow, create_upstream
from exportpipe.sources.base import UpstreamExport, UpstreamState
from exportpipe.sources.registry import parse_definition


def check_status(event: Any, deps: Deps) -> TaskAnswer:
    request = parse_event(CheckStatusEvent, event)
    result = _check(deps, request)
    if not request.workflow_starts_next_window:
        hand_over_next_window(deps, result)
    return result


def _check(deps: Deps, request: CheckStatusEvent) -> TaskAnswer:
    logger.append_keys(job_id=request.job_id)
    if request.error is not None:
        return _record_workflow_failure(deps, request.job_id, request.error, request.attempt)

    job = deps.store.get(request.job_id)
    attempt = request.attempt + 1
    if job.status is JobStatus.REQUESTED:
        return _create_when_due(deps, job, request.attempt, RunningWorkflow(request.execution_arn))
    if job.status is not JobStatus.EXPORTING:
        # READY by webhook, or already ended: the Choice routes on the job's own status.
        return answer(deps, job, request.attempt)
    if past_deadline(deps, job):
        return _give_up_waiting(deps, job, attempt)

    return _poll(deps, job, request.attempt)


def _poll(deps: Deps, job: Job, previous: int) -> TaskAnswer:
    """Read the upstream export once (check number ``previous + 1``) and act on its state."""
    settings = deps.settings
    attempt = previous + 1
    client = deps.client_for(job.connection_ref)
    try:
        upstream = client.get_export(str(job.upstream_id))
    except UpstreamRateLimitedError as exc:
        return wait_out_rate_limit(deps, job, previous, exc)
    except UpstreamUnavailableError as exc:
        logger.warning("upstream unavailable while polling; will check again", error=str(exc))
        job = deps.store.update(
            job.job_id,
            JobStatus.EXPORTING,
            {"poll_attempts": attempt, "upstream_state": f"unavailable: {exc}"},
        )
        return answer(deps, job, attempt, backoff_seconds(attempt, settings, poll_policy(job)))
    except UpstreamError as exc:
        job = end_unsuccessfully(
            deps, job.job_id, JobStatus.FAILED, f"reading the upstream export failed: {exc}"
        )
        return answer(deps, job, attempt)
    finally:
        client.close()

    return _on_state(deps, job, upstream, attempt)


def _on_state(deps: Deps, job: Job, upstream: UpstreamExport, attempt: int) -> TaskAnswer:
    """Still running: wait (backoff); ready: READY with its files; canceled: CANCELED; failed or
    expired: create it again (bounded)."""
    settings = deps.settings
    if upstream.state is UpstreamState.PENDING:
        job = deps.store.update(
            job.job_id,
            JobStatus.EXPORTING,
            {"poll_attempts": attempt, "upstream_state": upstream.raw_state, "rate_limited": 0},
        )
        return answer(deps, job, attempt, backoff_seconds(attempt, settings, poll_policy(job)))
    if upstream.state is UpstreamState.READY:
        job = deps.store.transition(
            job.job_id,
            JobStatus.READY,
            updates={
                "poll_attempts": attempt,
                "upstream_state": upstream.raw_state,
                "result_urls": upstream.result_urls,
                "upstream_created_at": upstream.created_at,
                "rate_limited": 0,
            },
        )
        logger.info("upstream export ready", files=len(upstream.result_urls))
        return answer(deps, job, attempt)
    if upstream.state is UpstreamState.CANCELED:
        job = end_unsuccessfully(
            deps, job.job_id, JobStatus.CANCELED, f"upstream export {upstream.upstream_id} was canceled"
        )
        return answer(deps, job, attempt)
    return _start_over(deps, job, upstream, attempt)


def _give_up_waiting(deps: Deps, job: Job, attempt: int) -> TaskAnswer:
    """The job reached its deadline still waiting for its upstream export: it ends FAILED with the
    reason, and the export nothing waits for any more is canceled upstream."""
    hours = deps.settings.poll_timeout_seconds / 3600
    state = "not created" if job.status is JobStatus.REQUESTED else f"not ready ({job.upstream_state})"
    job = end_unsuccessfully(
        deps,
        job.job_id,
        JobStatus.FAILED,
        f"upstream export {state} after {hours:g} h, the poll timeout (POLL_TIMEOUT_SECONDS); "
        f"{attempt - 1} checks",
    )
    abandon_upstream(deps, job)
    return answer(deps, job, attempt)


def _create_when_due(deps: Deps, job: Job, request_attempt: int, running: RunningWorkflow) -> TaskAnswer:
    """The upstream refused to create the export (a rate limit, an outage): once its wait is over,
    create it and go on polling; until then wait, without counting an attempt (the refusals are
    counted, and bounded, by :func:`create_upstream`). No workflow is started: this is the job's."""
    settings, policy = deps.settings, poll_policy(job)
    if past_deadline(deps, job):
        return _give_up_waiting(deps, job, request_attempt + 1)
    claimed = deps.store.claim_stale(job.job_id)
    if claimed is None:  # not due yet (or a schedule tick is creating it right now)
        due = (deps.store.claimable_at(job) - deps.clock()).total_seconds()
        return answer(deps, job, request_attempt, min(max(math.ceil(due), 1), policy.longest(settings)))
    result = create_upstream(deps, claimed, parse_definition(claimed.definition), running=running)
    job = deps.store.get(job.job_id)
    if result.status == JobStatus.REQUESTED.value:
        return _create_when_due(deps, job, request_attempt, running)  # deferred again: wait for the new time
    return answer(deps, job, 0, policy.first(settings))


def _start_over(deps: Deps, job: Job, upstream: UpstreamExport, attempt: int) -> TaskAnswer:
    """The upstream export Failed or expired uncopied: recover it as the source declares (create it
    again, replay it), or give up when used up or the source cannot recover one."""
    settings, policy = deps.settings, poll_policy(job)
    expired = upstream.state is UpstreamState.EXPIRED
    why = (
        f"upstream export {upstream.upstream_id} expired before it was copied"
        if expired
        else f"upstream export {upstream.upstream_id} is {upstream.raw_state}"
    )
    try:
        again = recover_upstream(deps, job, why=why, counter="reexports" if expired else "recreates")
    except UpstreamRateLimitedError as exc:
        return wait_out_rate_limit(deps, job, attempt - 1, exc)
    except UpstreamUnavailableError:
        return answer(deps, job, attempt, backoff_seconds(attempt, settings, policy))
    if again is not None:
        return answer(deps, again, 0, policy.first(settings))
    tries = (job.reexports if expired else job.recreates) + 1
    job = end_unsuccessfully(
        deps,
        job.job_id,
        JobStatus.EXPIRED if expired else JobStatus.FAILED,
        f"{why}; {unrecoverable(job) or f'gave up after {tries} upstream export(s)'}",
    )
    return answer(deps, job, attempt)


def _record_workflow_failure(deps: Deps, job_id: str, error: WorkflowError, attempt: int) -> TaskAnswer:
    """The workflow caught an error. If the manifest was written, the export was delivered: finish
    that. Otherwise end the job FAILED (EXPIRED for expired files) and empty its folder."""
    job = deps.store.get(job_id)
    finished = finish_if_committed(deps, job)
    if finished is not None:
        return answer(deps, finished, attempt)
    waiting_upstream = job.status is JobStatus.EXPORTING  # e.g. the poll attempts ran out
    message, error_type = error.message, error.error_type
    status = {"ExportExpiredError": JobStatus.EXPIRED, "ExportCanceledError": JobStatus.CANCELED}.get(
        error_type, JobStatus.FAILED
    )
    # The terminal status is recorded first, conditionally: a delivery committed meanwhile cannot
    # be ended, and is finished instead; only a job that did end undelivered has its folder emptied.
    job = end_unsuccessfully(deps, job_id, status, f"{error_type}: {message}"[:1000])
    if not job.status.terminal:
        finished = finish_if_committed(deps, job)
        return answer(deps, finished or job, attempt)
    if job.status in UNDELIVERED:
        discard(deps, job)
    if waiting_upstream and job.status is status:  # it did end here, not (say) delivered meanwhile
        abandon_upstream(deps, job)
    return answer(deps, job, attempt)
