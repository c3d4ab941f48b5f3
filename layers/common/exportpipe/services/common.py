"""Pieces the use cases share: task answers, ending a job unsuccessfully, re-creating an upstream
export, and parsing task inputs."""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from exportpipe.config import Settings
from exportpipe.definitions import parse_definition
from exportpipe.errors import InvalidEventError, TransitionError
from exportpipe.jobs import Job, JobStatus
from exportpipe.observability import logger, metrics
from exportpipe.runtime import Deps
from exportpipe.store import upstream_ref

M = TypeVar("M", bound=BaseModel)


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


def answer(job: Job, attempt: int, settings: Settings, wait: float = 0, **extra: Any) -> dict[str, Any]:
    """What every workflow task returns: the state machine's Route reads these fields."""
    return {
        "job_id": job.job_id,
        "status": job.status.value,
        "attempt": attempt,
        "max_attempts": settings.poll_max_attempts,
        "wait_seconds": int(wait),
        **extra,
    }


def end_unsuccessfully(deps: Deps, job_id: str, status: JobStatus, reason: str) -> Job:
    """Move a job to FAILED / EXPIRED / CANCELED, release its definition, tell consumers.

    Idempotent: a job that is already terminal is returned as it is (a duplicate or late failure
    report never overwrites a delivery).
    """
    try:
        job = deps.store.transition(job_id, status, reason=reason)
    except TransitionError as exc:
        job = deps.store.get(job_id)
        logger.warning("job already ended; failure report ignored", job_id=job_id, current=exc.current)
        return job
    logger.error("export not delivered", job_id=job_id, status=status.value, reason=reason)
    metrics.add_metric(name=f"Exports{status.value.title()}", unit="Count", value=1)
    deps.store.settle(job)
    deps.publisher.failed(job)
    return job


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
    client = deps.client_for(job.source)
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
            "poll_attempts": 0,
            counter: used + 1,
        },
    )
