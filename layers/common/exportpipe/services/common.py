"""Pieces the use cases share: ending a job unsuccessfully, and parsing task inputs."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from exportpipe.errors import InvalidEventError, TransitionError
from exportpipe.jobs import Job, JobStatus
from exportpipe.observability import logger, metrics
from exportpipe.runtime import Deps

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
