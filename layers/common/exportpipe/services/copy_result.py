"""copy_result: stream every result file into S3, then commit the delivery (services.delivery).

If the upstream's files expired before the copy, the export is created again (a re-export, bounded)
and the job goes back to EXPORTING. A rate-limit refusal answers COPYING with a wait, so the workflow
waits it out instead of failing. A retried copy of a job whose manifest is already written only
finishes what follows the delivery.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from exportpipe.copier import MIB, CopyTuning, stream_to_s3
from exportpipe.definitions import parse_definition
from exportpipe.errors import (
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
from exportpipe.services.common import answer, parse_event, recreate_upstream
from exportpipe.services.delivery import commit, finish_if_committed, folder_of
from exportpipe.sources.base import SourceClient, UpstreamState


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
    try:
        files = [
            _copy_one(deps, client, job, url, part_key(folder, n, client.file_extension), tuning)
            for n, url in enumerate(job.result_urls, start=1)
        ]
    except UpstreamRateLimitedError as exc:
        logger.warning("rate limited while copying; will copy again after a wait", error=str(exc))
        return answer(job, 0, settings, exc.retry_after)
    except ExportExpiredError as exc:
        try:
            again = recreate_upstream(deps, job, why=str(exc), counter="reexports")
        except UpstreamRateLimitedError as limited:  # copy again later: it will find the files expired again
            return answer(job, 0, settings, limited.retry_after)
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
                count_csv=client.count_records,
                tuning=tuning,
            )
    except UpstreamUnavailableError:
        raise
    except UpstreamError as exc:
        # A refused download is most often an export that expired before we copied it.
        if client.get_export(str(job.upstream_id)).state is UpstreamState.EXPIRED:
            raise ExportExpiredError(
                f"upstream export {job.upstream_id} expired before it was copied"
            ) from exc
        raise


def _delivered(deps: Deps, job: Job) -> dict[str, Any]:
    return answer(job, 0, deps.settings, manifest_key=job.manifest_key, files=len(job.files))
