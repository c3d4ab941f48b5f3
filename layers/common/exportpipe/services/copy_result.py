"""copy_result: stream every result file into S3, then commit the delivery (services.delivery).

Each landed part is recorded on the job as it completes, so a copy that is retried (an outage, a
broken download) or resumed after a rate-limit wait copies only the files still missing: a refused
call never costs the downloads that already succeeded. If the upstream's files expired before the
copy, the export is recovered as its source declares (created again or replayed: a re-export,
bounded) and the job goes back to EXPORTING; an export canceled upstream ends the job CANCELED. A
rate-limit refusal answers COPYING with a wait, so the workflow waits it out instead of failing. The
files land as the definition's result format says (extension, content type, record count). A
retried copy of a job whose manifest is already written only finishes what follows the delivery.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from datetime import datetime, timedelta
from typing import Any

from exportpipe.errors import (
    CopySupersededError,
    DownloadIncompleteError,
    ExportCanceledError,
    ExportExpiredError,
    TransitionError,
    UpstreamError,
    UpstreamRateLimitedError,
    UpstreamUnavailableError,
)
from exportpipe.models.job import UNDELIVERED, Job, JobStatus, ResultFile
from exportpipe.models.layout import part_key
from exportpipe.models.tasks import CopyResultEvent, TaskAnswer
from exportpipe.observability import logger
from exportpipe.runtime import Deps
from exportpipe.services.common import (
    COPY_BUDGET,
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
from exportpipe.services.delivery import (
    abort_uploads,
    commit,
    discard,
    finish_if_committed,
    folder_of,
    hand_over_next_window,
)
from exportpipe.sources.base import SourceClient, UpstreamState
from exportpipe.sources.registry import parse_definition

# A broken download or an upstream outage during the copy is tried again this many times in a row
# (a file landed resets the count), after the poll loop's growing backoff, before the job fails; each
# try copies only the files still missing.
MAX_COPY_RETRIES = 4
# How long a copy holds the job when the invocation's own deadline is unknown (copy_result's timeout).
DEFAULT_COPY_SECONDS = 900


def copy_result(event: Any, deps: Deps) -> TaskAnswer:
    request = parse_event(CopyResultEvent, event)
    result = _copy_job(deps, request)
    if not request.workflow_starts_next_window:
        hand_over_next_window(deps, result)
    return result


def _copy_job(deps: Deps, request: CopyResultEvent) -> TaskAnswer:
    logger.append_keys(job_id=request.job_id)
    job = deps.store.get(request.job_id)
    done = finish_if_committed(deps, job)  # a retry after the delivery was decided
    if done is not None:
        return _delivered(deps, done)
    if job.status not in (JobStatus.READY, JobStatus.COPYING):
        raise TransitionError(job.job_id, job.status.value, JobStatus.COPYING)
    owner = uuid.uuid4().hex
    try:
        job = deps.store.take_copy(job.job_id, owner, _invocation_end(deps))
    except TransitionError:
        return _busy(deps, deps.store.get(job.job_id))
    logger.append_keys(copy_owner=owner)
    if past_deadline(deps, job):
        failed = end_unsuccessfully(
            deps,
            job.job_id,
            JobStatus.FAILED,
            f"copy not finished {COPY_BUDGET.total_seconds() / 3600:g} h after the poll timeout "
            "(POLL_TIMEOUT_SECONDS)",
        )
        if failed.status in UNDELIVERED:
            discard(deps, failed)
        return answer(deps, failed, 0)
    try:
        return _copy(deps, job, owner)
    finally:
        _release(deps, job, owner)


def _copy(deps: Deps, job: Job, owner: str) -> TaskAnswer:
    """Land every file still missing, then commit the delivery; any other outcome is an answer
    the workflow waits on (or an error its failure recorder takes)."""
    abort_uploads(deps, job)  # a copy that died mid-file (or timed out) left its upload open
    definition = parse_definition(job.definition)
    fmt = definition.result_format
    folder = folder_of(deps, job)
    client = deps.client_for(job.connection_ref)
    landed = {f.key: f for f in job.files}  # parts an earlier try of this copy already landed
    files: list[ResultFile] = []
    try:
        for n, url in enumerate(job.result_urls, start=1):
            key = part_key(folder, n, fmt.extension)
            if key not in landed:
                landed[key] = _copy_one(deps, client, job, url, key)
                job = _record_part(deps, job, owner, [*files, landed[key]], key)
            files.append(landed[key])
    except CopySupersededError as exc:
        logger.warning("this copy was superseded; it stops without touching the folder", reason=str(exc))
        return _busy(deps, deps.store.get(job.job_id))
    except UpstreamRateLimitedError as exc:
        return _rate_limited(deps, job, exc)
    except (UpstreamUnavailableError, DownloadIncompleteError) as exc:
        return _interrupted(deps, job, exc, landed=len(files))
    except ExportExpiredError as exc:
        return _reexport(deps, job, exc, landed=len(files))
    finally:
        client.close()
    try:
        delivered = commit(
            deps,
            job,
            owner,
            files,
            fmt=fmt.extension,
            timezone=client.files_timezone(definition),
            time_format=definition.time_format,
        )
    except TransitionError:
        # superseded, or ended (the failure recorder, a re-export) before the delivery was decided
        current = deps.store.get(job.job_id)
        finished = finish_if_committed(deps, current)
        return _delivered(deps, finished) if finished is not None else _busy(deps, current)
    return _delivered(deps, delivered)


def _reexport(deps: Deps, job: Job, exc: ExportExpiredError, *, landed: int) -> TaskAnswer:
    """The files expired before the copy: export again as the source recovers (bounded), the job back
    to EXPORTING; a source that cannot recover one says so in the reason."""
    try:
        again = recover_upstream(deps, job, why=str(exc), counter="reexports")
    except UpstreamRateLimitedError as limited:  # copy again later: it will find the files expired again
        return _rate_limited(deps, job, limited)
    except UpstreamUnavailableError as unavailable:
        return _interrupted(deps, job, unavailable, landed=landed)
    if again is None:
        reason = unrecoverable(job)
        if reason is not None:
            raise ExportExpiredError(f"{exc}; {reason}") from exc
        raise exc
    return answer(deps, again, 0, poll_policy(job).first(deps.settings))


def _invocation_end(deps: Deps) -> datetime:
    """Until when this invocation may run: no other copy takes the job over before."""
    left = deps.remaining_seconds() if deps.remaining_seconds is not None else DEFAULT_COPY_SECONDS
    return deps.clock() + timedelta(seconds=left)


def _release(deps: Deps, job: Job, owner: str) -> None:
    """This invocation is done with the job: the next copy need not wait for its deadline."""
    with contextlib.suppress(TransitionError):
        deps.store.update(
            job.job_id,
            JobStatus.COPYING,
            {"copy_owner_until": deps.clock().isoformat()},
            where={"copy_owner": owner},
        )


def _record_part(deps: Deps, job: Job, owner: str, files: list[ResultFile], key: str) -> Job:
    """Record the parts landed so far, while this copy still holds the job for this upstream export.

    A copy that lost the job (taken over after its invocation's end, or the job ended) records
    nothing; if the job ended undelivered, the part it just wrote is removed (nobody else writes
    an ended job's folder), otherwise the copy that holds the job overwrites or removes it.
    """
    try:
        return deps.store.update(
            job.job_id,
            JobStatus.COPYING,
            {"files": [f.model_dump(mode="json") for f in files], "rate_limited": 0, "copy_retries": 0},
            where={"upstream_id": job.upstream_id, "copy_owner": owner},
        )
    except TransitionError as exc:
        current = deps.store.get(job.job_id)
        if current.status in UNDELIVERED:
            deps.bucket.delete([key])
        raise CopySupersededError(f"job {job.job_id} is no longer this copy's: {exc}") from exc


def _busy(deps: Deps, job: Job) -> TaskAnswer:
    """Another copy holds the job (or it moved on): come back when that copy's invocation is over."""
    if job.status is not JobStatus.COPYING:
        return answer(deps, job, 0)
    until = job.copy_owner_until or deps.clock()
    wait = max(1, math.ceil((until - deps.clock()).total_seconds()) + 1)
    logger.info("another copy of this job is running; waiting for it", wait_seconds=wait)
    return answer(deps, job, 0, wait)


def _rate_limited(deps: Deps, job: Job, exc: UpstreamRateLimitedError) -> TaskAnswer:
    """Wait the limit out; if it has refused too often in a row, the job failed: empty its folder."""
    result = wait_out_rate_limit(deps, job, 0, exc)
    ended = deps.store.get(job.job_id)
    if ended.status in UNDELIVERED:
        discard(deps, ended)
    return result


def _interrupted(
    deps: Deps, job: Job, exc: UpstreamError | DownloadIncompleteError, *, landed: int
) -> TaskAnswer:
    """An outage or a broken download: copy the files still missing after a growing wait, a bounded
    number of times in a row (progress resets the count); then fail (the workflow's failure
    recorder empties the folder)."""
    if job.copy_retries >= MAX_COPY_RETRIES:
        raise exc
    retries = job.copy_retries + 1
    wait = backoff_seconds(retries, deps.settings, poll_policy(job))
    logger.warning(
        "copy interrupted; the files still missing are copied after a wait",
        error=str(exc),
        landed=landed,
        retry=retries,
        wait_seconds=wait,
    )
    job = deps.store.update(job.job_id, JobStatus.COPYING, {"copy_retries": retries})
    return answer(deps, job, 0, wait)


def _copy_one(deps: Deps, client: SourceClient[Any], job: Job, url: str, key: str) -> ResultFile:
    fmt = parse_definition(job.definition).result_format  # the job's own, whoever copies it
    try:
        with client.open_result(url) as stream:
            return deps.bucket.upload(
                key,
                stream.chunks,
                content_type=fmt.content_type,
                expected_length=stream.content_length,
                file_format=fmt.checker,
                part_size=deps.settings.part_size,
            )
    except UpstreamUnavailableError:
        raise
    except UpstreamError as exc:
        # A refused download is most often an export that expired (or was canceled) before we
        # copied it: ask the upstream which.
        state = client.get_export(str(job.upstream_id)).state
        if state is UpstreamState.EXPIRED:
            raise ExportExpiredError(
                f"upstream export {job.upstream_id} expired before it was copied"
            ) from exc
        if state is UpstreamState.CANCELED:
            raise ExportCanceledError(
                f"upstream export {job.upstream_id} was canceled before it was copied"
            ) from exc
        raise


def _delivered(deps: Deps, job: Job) -> TaskAnswer:
    return answer(deps, job, 0, delivered=True)
