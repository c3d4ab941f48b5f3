"""Delivering a job: the manifest is the commit point.

Once ``_manifest.json`` is in S3 the export *is* delivered: whatever fails after it (the DELIVERED
write, the watermark, the event) is finished by a retry — of the copy, or of the workflow's failure
recorder — never undone. Before it, nothing half-copied is visible: stray parts are removed, and the
folder of an export that failed is emptied. A backfill's next window is not started here: the poll
workflow's Delivered state asks start_export for it (:func:`hand_over_next_window` does, for
executions started on an earlier definition of the workflow).
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from exportpipe.errors import ManifestConflictError, TransitionError
from exportpipe.models.definition import TimeFormat
from exportpipe.models.job import UNDELIVERED, CommitIntent, Job, JobStatus, ResultFile
from exportpipe.models.layout import MANIFEST_NAME, Manifest, export_prefix, manifest_key
from exportpipe.models.tasks import TaskAnswer
from exportpipe.observability import logger, metrics
from exportpipe.runtime import Deps


def folder_of(deps: Deps, job: Job) -> str:
    return export_prefix(deps.settings.results_prefix, job)


def read_manifest(deps: Deps, job: Job) -> Manifest | None:
    """The job's manifest if it was written for the job's current upstream export."""
    body = deps.bucket.read(manifest_key(folder_of(deps, job)))
    if body is None:
        return None
    manifest = Manifest.model_validate_json(body)
    if manifest.job_id != job.job_id or manifest.upstream_id != job.upstream_id:
        return None
    return manifest


def abort_uploads(deps: Deps, job: Job) -> int:
    """Abort every multipart upload still open in the job's folder (a copy that died or was taken
    over mid-file): its parts are never visible, but they are billed and would outlive the job."""
    aborted = deps.bucket.abort_uploads(folder_of(deps, job) + "/")
    if aborted:
        logger.info("aborted multipart uploads of another copy", count=aborted)
    return aborted


def remove_strays(deps: Deps, job: Job, keep: set[str]) -> int:
    """Delete objects in the job's folder that are not in ``keep`` (parts of an earlier try)."""
    stray = [k for k in deps.bucket.keys(folder_of(deps, job) + "/") if k not in keep]
    if stray:
        deps.bucket.delete(stray)
        logger.info("removed objects no manifest lists", count=len(stray))
    return len(stray)


def discard(deps: Deps, job: Job) -> None:
    """Empty the folder of a job that ended undelivered: open uploads first, then every object.

    Only for a job whose terminal status is already recorded (conditionally, so a committed
    delivery can no longer be ended): whatever runs after this can no longer deliver it.
    """
    if job.status not in UNDELIVERED:
        raise TransitionError(job.job_id, job.status.value, JobStatus.FAILED)
    abort_uploads(deps, job)
    remove_strays(deps, job, keep=set())


def manifest_of(job: Job) -> Manifest:
    """The manifest a committed job delivers, rebuilt from the intent recorded on it."""
    if job.commit is None:
        raise TransitionError(job.job_id, job.status.value, JobStatus.DELIVERED)
    return Manifest.build(
        job,
        list(job.files),
        fmt=job.commit.format,
        timezone=job.commit.timezone,
        delivered_at=job.commit.delivered_at,
        time_format=job.commit.time_format,
    )


def _put_manifest(deps: Deps, job: Job, manifest: Manifest) -> None:
    """Write the manifest unless one is there: a copy never overwrites another's (If-None-Match).
    One already written for this job and upstream export is the same delivery: fine."""
    key = manifest_key(folder_of(deps, job))
    body = manifest.model_dump_json(indent=2).encode()
    if deps.bucket.put_new(key, body, content_type="application/json"):
        return
    if read_manifest(deps, job) is None:
        raise ManifestConflictError(
            f"job {job.job_id}: a manifest for another upstream export is in its folder"
        )
    logger.info("manifest already written by another copy of this job")


def commit(
    deps: Deps,
    job: Job,
    owner: str,
    files: list[ResultFile],
    *,
    fmt: str,
    timezone: str | None,
    time_format: TimeFormat | None = None,
) -> Job:
    """Deliver: decide it on the job (only while ``owner`` holds the copy and nothing ended the job),
    then write the manifest and mark the job DELIVERED (:func:`finish_commit`)."""
    intent = CommitIntent(
        owner=owner, delivered_at=deps.clock(), format=fmt, timezone=timezone, time_format=time_format
    )
    job = deps.store.claim_commit(
        job.job_id,
        owner,
        intent.model_dump(mode="json"),
        [f.model_dump(mode="json") for f in files],
    )
    return finish_commit(deps, job)


def finish_commit(deps: Deps, job: Job) -> Job:
    """Write the committed job's manifest (the same bytes whoever writes it) after removing what it
    does not list, then DELIVERED; then :func:`after_delivery`. Idempotent: any retry may run it."""
    manifest = manifest_of(job)
    key = manifest_key(folder_of(deps, job))
    if job.status is not JobStatus.DELIVERED:
        abort_uploads(deps, job)
        remove_strays(deps, job, keep={f.key for f in manifest.files} | {key})
        _put_manifest(deps, job, manifest)
        job = _mark_delivered(deps, job, key, manifest)
    return after_delivery(deps, job, manifest)


def _mark_delivered(deps: Deps, job: Job, key: str, manifest: Manifest) -> Job:
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
        return job
    metrics.add_metric(name="ExportsDelivered", unit="Count", value=1)
    metrics.add_metric(name="BytesDelivered", unit="Bytes", value=manifest.totals.bytes)
    logger.info("export delivered", manifest_key=key, files=len(manifest.files), bytes=manifest.totals.bytes)
    return job


def finish_if_committed(deps: Deps, job: Job) -> Job | None:
    """If the job's delivery was decided (or, for a job recorded before commits were, its manifest
    is in S3), finish it; None when there is nothing to finish."""
    if job.status is JobStatus.DELIVERED:
        return after_delivery(deps, job)
    if job.status is not JobStatus.COPYING:
        return None
    if job.commit is not None:
        return finish_commit(deps, job)
    manifest = read_manifest(deps, job)  # written by a copy that predates the commit intent
    if manifest is None:
        return None
    return after_delivery(
        deps, _mark_delivered(deps, job, manifest_key(folder_of(deps, job)), manifest), manifest
    )


def after_delivery(deps: Deps, job: Job, manifest: Manifest | None = None) -> Job:
    """Everything that follows a delivery, each step idempotent: watermark and lease, the event."""
    deps.store.settle(job)
    if not job.event_sent:
        manifest = manifest or read_manifest(deps, job)
        if manifest is not None and job.manifest_key:
            _check_timezone(job, manifest.timezone)
            deps.publisher.delivered(job, deps.bucket.name, job.manifest_key, manifest)
            job = deps.store.update(job.job_id, JobStatus.DELIVERED, {"event_sent": True})
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


def hand_over_next_window(deps: Deps, answer: TaskAnswer) -> None:
    """For a task of an execution started on an earlier definition of the poll workflow (which has
    no Delivered task): if ``answer`` delivered a backfill's window that stopped short of its
    ``until``, ask start_export, asynchronously, to start the next one (idempotent, like the
    Delivered task; a failure leaves it to the definition's next schedule tick).

    Transitional: remove it, its task-input flag and the lambda:InvokeFunction grant of check_status
    and copy_result once no such execution can run (9 days after the deploy, the workflow's
    ``TimeoutSeconds``).
    """
    if answer["status"] != JobStatus.DELIVERED.value:
        return
    job = deps.store.get(answer["job_id"])
    if not job.has_next_window:
        return
    if deps.lifecycle is None:
        logger.warning("no start_export to hand the next window to; the next schedule tick starts it")
        return
    try:
        deps.lifecycle.continue_after(job.job_id)
    except Exception as exc:  # the delivery stands; the next schedule tick (or a re-invocation) continues
        logger.warning("could not hand the next window to start_export", error=str(exc))
        return
    logger.info("next window handed to start_export (an execution of an earlier workflow definition)")


__all__ = [
    "MANIFEST_NAME",
    "abort_uploads",
    "after_delivery",
    "commit",
    "discard",
    "finish_commit",
    "finish_if_committed",
    "hand_over_next_window",
    "read_manifest",
    "remove_strays",
]
