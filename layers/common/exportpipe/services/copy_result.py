"""copy_result: stream every result file into S3, then the manifest, then DELIVERED, then the event.

If the upstream's files expired before the copy, the export is created again (a re-export, bounded)
and the job goes back to EXPORTING. A rate-limit refusal answers COPYING with a wait, so the workflow
waits it out instead of failing. When the job's window had to stop short of its ``until`` (a
backfill or a catch-up), delivering it starts the next window at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from exportpipe.copier import MIB, CopyTuning, stream_to_s3
from exportpipe.definitions import parse_definition
from exportpipe.errors import (
    ExportExpiredError,
    ExportPipeError,
    TransitionError,
    UpstreamError,
    UpstreamRateLimitedError,
    UpstreamUnavailableError,
)
from exportpipe.jobs import Job, JobStatus, ResultFile
from exportpipe.layout import Manifest, export_prefix, manifest_key, part_key
from exportpipe.observability import logger, metrics
from exportpipe.runtime import Deps
from exportpipe.services.common import answer, parse_event, recreate_upstream
from exportpipe.services.start_export import start_export
from exportpipe.sources.base import SourceClient, UpstreamState


class CopyResultEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    job_id: str = Field(min_length=1)


def copy_result(event: Any, deps: Deps) -> dict[str, Any]:
    request = parse_event(CopyResultEvent, event)
    settings = deps.settings
    logger.append_keys(job_id=request.job_id)
    job = deps.store.get(request.job_id)
    if job.status is JobStatus.DELIVERED:
        _announce(deps, job)  # a retried copy after the manifest: only the event may be missing
        return _delivered(job, deps)
    if job.status not in (JobStatus.READY, JobStatus.COPYING):
        raise TransitionError(job.job_id, job.status.value, JobStatus.COPYING)
    job = deps.store.transition(job.job_id, JobStatus.COPYING)

    definition = parse_definition(job.definition)
    folder = export_prefix(settings.results_prefix, job)
    tuning = CopyTuning(part_size=settings.part_size_mib * MIB)
    client = deps.client_for(job.source)
    try:
        files = [
            _copy_one(deps, client, job, url, part_key(folder, n, client.file_extension), tuning)
            for n, url in enumerate(job.result_urls, start=1)
        ]
        manifest = Manifest.build(
            job,
            files,
            fmt=client.file_extension,
            timezone=client.files_timezone(definition),
            delivered_at=deps.clock(),
        )
    except UpstreamRateLimitedError as exc:
        logger.warning("rate limited while copying; will copy again after a wait", error=str(exc))
        return answer(job, 0, settings, exc.retry_after)
    except ExportExpiredError as exc:
        again = recreate_upstream(deps, job, why=str(exc), counter="reexports")
        if again is None:
            raise
        return answer(again, 0, settings, settings.poll_base_seconds)
    finally:
        client.close()

    _check_timezone(job, manifest.timezone)
    key = manifest_key(folder)
    deps.s3.put_object(
        Bucket=settings.results_bucket,
        Key=key,
        Body=manifest.model_dump_json(indent=2).encode(),
        ContentType="application/json",
        ChecksumAlgorithm="SHA256",
    )
    job = deps.store.transition(
        job.job_id,
        JobStatus.DELIVERED,
        updates={"manifest_key": key, "files": [f.model_dump(mode="json") for f in files]},
    )
    deps.store.settle(job)
    metrics.add_metric(name="ExportsDelivered", unit="Count", value=1)
    metrics.add_metric(name="BytesDelivered", unit="Bytes", value=manifest.totals.bytes)
    logger.info("export delivered", manifest_key=key, files=len(files), bytes=manifest.totals.bytes)
    _announce(deps, job, manifest)
    return _delivered(job, deps, next_job=_continue(deps, job))


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


def _check_timezone(job: Job, declared: str | None) -> None:
    """Warn when the upstream wrote its timestamps at another offset than the declared timezone's."""
    if not declared or not job.upstream_created_at:
        return
    try:
        created = datetime.fromisoformat(job.upstream_created_at)
    except ValueError:
        return
    expected = created.astimezone(ZoneInfo(declared)).utcoffset()
    if created.utcoffset() is not None and created.utcoffset() != expected:
        logger.warning(
            "the definition's timezone does not match the exporting user's: dates in the files are at "
            "the offset of upstream_created_at",
            declared=declared,
            upstream_created_at=job.upstream_created_at,
        )


def _continue(deps: Deps, job: Job) -> str | None:
    """Start the next window now if this one stopped short of the job's ``until``."""
    if job.until is None or job.window.end >= job.until or not job.moves_watermark:
        return None
    try:
        result = start_export({"definition": job.definition, "until": job.until.isoformat()}, deps)
    except ExportPipeError as exc:  # the next schedule tick continues anyway
        logger.warning("could not start the next window", error=str(exc))
        return None
    logger.info("next window started", next_job=result.get("job_id"), status=result.get("status"))
    return str(result.get("job_id")) if result.get("job_id") else None


def _announce(deps: Deps, job: Job, manifest: Manifest | None = None) -> None:
    if job.event_sent or job.manifest_key is None:
        return
    if manifest is None:
        body = deps.s3.get_object(Bucket=deps.settings.results_bucket, Key=job.manifest_key)["Body"].read()
        manifest = Manifest.model_validate_json(body)
    deps.publisher.delivered(job, deps.settings.results_bucket, job.manifest_key, manifest)
    deps.store.update(job.job_id, JobStatus.DELIVERED, {"event_sent": True})


def _delivered(job: Job, deps: Deps, next_job: str | None = None) -> dict[str, Any]:
    return answer(
        job, 0, deps.settings, manifest_key=job.manifest_key, files=len(job.files), next_job_id=next_job
    )
