"""Delivering a job: the manifest is the commit point.

Once ``_manifest.json`` is in S3 the export *is* delivered: whatever fails after it (the DELIVERED
write, the watermark, the event, starting the next window) is finished by a retry — of the copy, of
the workflow's failure recorder, or of the next schedule tick — never undone. Before it, nothing
half-copied is visible: stray parts are removed, and the folder of an export that failed is emptied.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from exportpipe.errors import TransitionError
from exportpipe.jobs import Job, JobStatus
from exportpipe.layout import MANIFEST_NAME, Manifest, export_prefix, manifest_key
from exportpipe.observability import logger, metrics
from exportpipe.runtime import Deps
from exportpipe.services.start_export import start_export


def folder_of(deps: Deps, job: Job) -> str:
    return export_prefix(deps.settings.results_prefix, job)


def read_manifest(deps: Deps, job: Job) -> Manifest | None:
    """The job's manifest if it was written for the job's current upstream export."""
    s3 = deps.s3
    try:
        body = s3.get_object(Bucket=deps.settings.results_bucket, Key=manifest_key(folder_of(deps, job)))[
            "Body"
        ]
    except s3.exceptions.NoSuchKey:
        return None
    manifest = Manifest.model_validate_json(body.read())
    if manifest.job_id != job.job_id or manifest.upstream_id != job.upstream_id:
        return None
    return manifest


def remove_strays(deps: Deps, job: Job, keep: set[str]) -> int:
    """Delete objects in the job's folder that are not in ``keep`` (parts of an earlier try)."""
    s3 = deps.s3
    bucket = deps.settings.results_bucket
    stray: list[dict[str, str]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=folder_of(deps, job) + "/"
    ):
        stray += [{"Key": o["Key"]} for o in page.get("Contents", []) if o["Key"] not in keep]
    for i in range(0, len(stray), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": stray[i : i + 1000], "Quiet": True})
    if stray:
        logger.info("removed objects no manifest lists", count=len(stray))
    return len(stray)


def commit(deps: Deps, job: Job, manifest: Manifest, *, written: bool = False) -> Job:
    """Write the manifest (unless ``written``) and mark the job DELIVERED; then :func:`after_delivery`."""
    key = manifest_key(folder_of(deps, job))
    if job.status is not JobStatus.DELIVERED:
        if not written:
            remove_strays(deps, job, keep={f.key for f in manifest.files} | {key})
            deps.s3.put_object(
                Bucket=deps.settings.results_bucket,
                Key=key,
                Body=manifest.model_dump_json(indent=2).encode(),
                ContentType="application/json",
                ChecksumAlgorithm="SHA256",
            )
        try:
            job = deps.store.transition(
                job.job_id,
                JobStatus.DELIVERED,
                updates={"manifest_key": key, "files": [f.model_dump(mode="json") for f in manifest.files]},
            )
        except TransitionError:
            job = deps.store.get(job.job_id)
            if job.status is not JobStatus.DELIVERED:
                raise
        metrics.add_metric(name="ExportsDelivered", unit="Count", value=1)
        metrics.add_metric(name="BytesDelivered", unit="Bytes", value=manifest.totals.bytes)
        logger.info(
            "export delivered", manifest_key=key, files=len(manifest.files), bytes=manifest.totals.bytes
        )
    return after_delivery(deps, job, manifest)


def finish_if_committed(deps: Deps, job: Job) -> Job | None:
    """For a job that was COPYING: if its manifest is in S3, the delivery happened; finish it."""
    if job.status is JobStatus.DELIVERED:
        return after_delivery(deps, job)
    if job.status is not JobStatus.COPYING:
        return None
    manifest = read_manifest(deps, job)
    return commit(deps, job, manifest, written=True) if manifest is not None else None


def after_delivery(deps: Deps, job: Job, manifest: Manifest | None = None) -> Job:
    """Everything that follows a delivery, each step idempotent: watermark and lease, the event, the
    next window of a backfill."""
    deps.store.settle(job)
    if not job.event_sent:
        manifest = manifest or read_manifest(deps, job)
        if manifest is not None and job.manifest_key:
            _check_timezone(job, manifest.timezone)
            deps.publisher.delivered(job, deps.settings.results_bucket, job.manifest_key, manifest)
            job = deps.store.update(job.job_id, JobStatus.DELIVERED, {"event_sent": True})
    _continue(deps, job)
    return job


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


def _continue(deps: Deps, job: Job) -> dict[str, Any] | None:
    """Start the next window now if this one stopped short of the job's ``until`` (a backfill)."""
    if job.until is None or job.window.end >= job.until or not job.moves_watermark:
        return None
    try:
        result = start_export({"definition": job.definition, "until": job.until.isoformat()}, deps)
    except Exception as exc:  # the next schedule tick (or a re-invocation) continues anyway
        logger.warning("could not start the next window", error=str(exc))
        return None
    logger.info("next window", next_job=result.get("job_id"), status=result.get("status"))
    return result


__all__ = [
    "MANIFEST_NAME",
    "after_delivery",
    "commit",
    "finish_if_committed",
    "read_manifest",
    "remove_strays",
]
