"""copy_result: stream every result file into S3, then commit the delivery (services.delivery).

Each landed part is recorded on the job as it completes, so a copy that is retried (an outage, a
broken download) or resumed after a rate-limit wait copies only the files still missing: a refused
call never costs the downloads that already succeeded. If the upstream's files expired before the
copy, the export is created again (a re-export, bounded) and the job goes back to EXPORTING; an
export canceled upstream ends the job CANCELED. A rate-limit refusal answers COPYING with a wait, so
the workflow waits it out instead of failing. A retried copy of a job whose manifest is already
written only finishes what follows the delivery.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from exportpipe.copier import MIB, CopyTuning, stream_to_s3
from exportpipe.definitions import parse_definition
from exportpipe.errors import (
    DownloadIncompleteError,
    ExportCanceledError,
    ExportExpiredError,
    TransitionError,
    UpstreamError,
    UpstreamRateLimitedError,
    UpstreamUnavailableError,
)
from exportpipe.jobs import Job, JobStatus, ResultFile
from exportpipe.layout import Manifest, part_key
from exportpipe.observability import logger
from exportpipe.runtime import Deps
from exportpipe.services.common import (
    answer,
    backoff_seconds,
    parse_event,
    recreate_upstream,
    wait_out_rate_limit,
)
from exportpipe.services.delivery import commit, finish_if_committed, folder_of, remove_strays
from exportpipe.sources.base import SourceClient, UpstreamState

# A broken download or an upstream outage during the copy is tried again this many times in a row
# (a file landed resets the count), after the poll loop's growing backoff, before the job fails; each
# try copies only the files still missing.
MAX_COPY_RETRIES = 4


class CopyResultEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    job_id: str = Field(min_length=1)


def copy_result(event: Any, deps: Deps) -> dict[str, Any]:
    request = parse_event(CopyResultEvent, event)
    settings = deps.settings
    logger.append_keys(job_id=request.job_id)
    job = deps.store.get(request.job_id)
    done = finish_if_committed(deps, job)  # a retry after the manifest was written
    if done is not None:
        return _delivered(deps, done)
    if job.status not in (JobStatus.READY, JobStatus.COPYING):
        raise TransitionError(job.job_id, job.status.value, JobStatus.COPYING)
    job = deps.store.transition(job.job_id, JobStatus.COPYING)

    definition = parse_definition(job.definition)
    folder = folder_of(deps, job)
    tuning = CopyTuning(part_size=settings.part_size_mib * MIB)
    client = deps.client_for(job.source)
    landed = {f.key: f for f in job.files}  # parts an earlier try of this copy already landed
    files: list[ResultFile] = []
    try:
        for n, url in enumerate(job.result_urls, start=1):
            key = part_key(folder, n, client.file_extension)
            if key not in landed:
                landed[key] = _copy_one(deps, client, job, url, key, tuning)
                # Only while the job still waits for this upstream export: a copy that outlived its
                # workflow must not record parts over a re-export's.
                job = deps.store.update(
                    job.job_id,
                    JobStatus.COPYING,
                    {
                        "files": [f.model_dump(mode="json") for f in [*files, landed[key]]],
                        "rate_limited": 0,
                        "copy_retries": 0,
                    },
                    where={"upstream_id": job.upstream_id},
                )
            files.append(landed[key])
    except UpstreamRateLimitedError as exc:
        return _rate_limited(deps, job, exc)
    except (UpstreamUnavailableError, DownloadIncompleteError) as exc:
        return _interrupted(deps, job, exc, landed=len(files))
    except ExportExpiredError as exc:
        try:
            again = recreate_upstream(deps, job, why=str(exc), counter="reexports")
        except UpstreamRateLimitedError as limited:  # copy again later: it will find the files expired again
            return _rate_limited(deps, job, limited)
        except UpstreamUnavailableError as unavailable:
            return _interrupted(deps, job, unavailable, landed=len(files))
        if again is None:
            raise
        return answer(again, 0, settings, settings.poll_base_seconds)
    finally:
        client.close()

    manifest = Manifest.build(
        job,
        files,
        fmt=client.file_extension,
        timezone=client.files_timezone(definition),
        delivered_at=deps.clock(),
    )
    return _delivered(deps, commit(deps, job, manifest))


def _rate_limited(deps: Deps, job: Job, exc: UpstreamRateLimitedError) -> dict[str, Any]:
    """Wait the limit out; if it has refused too often in a row, the job failed: empty its folder."""
    result = wait_out_rate_limit(deps, job, 0, exc)
    if result["status"] != JobStatus.COPYING.value:
        remove_strays(deps, job, keep=set())
    return result


def _interrupted(
    deps: Deps, job: Job, exc: UpstreamError | DownloadIncompleteError, *, landed: int
) -> dict[str, Any]:
    """An outage or a broken download: copy the files still missing after a growing wait, a bounded
    number of times in a row (progress resets the count); then fail (the workflow's failure
    recorder empties the folder)."""
    if job.copy_retries >= MAX_COPY_RETRIES:
        raise exc
    retries = job.copy_retries + 1
    wait = backoff_seconds(retries, deps.settings)
    logger.warning(
        "copy interrupted; the files still missing are copied after a wait",
        error=str(exc),
        landed=landed,
        retry=retries,
        wait_seconds=wait,
    )
    job = deps.store.update(job.job_id, JobStatus.COPYING, {"copy_retries": retries})
    return answer(job, 0, deps.settings, wait)


def _copy_one(
    deps: Deps, client: SourceClient, job: Job, url: str, key: str, tuning: CopyTuning
) -> ResultFile:
    try:
        with client.open_result(url) as stream:
            return stream_to_s3(
                deps.s3,
                stream.chunks,
                bucket=deps.settings.results_bucket,
                key=key,
                content_type=client.content_type,
                expected_length=stream.content_length,
                file_format=client.file_format,
                tuning=tuning,
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


def _delivered(deps: Deps, job: Job) -> dict[str, Any]:
    return answer(job, 0, deps.settings, manifest_key=job.manifest_key, files=len(job.files))
