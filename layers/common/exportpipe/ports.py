"""The ports: what the services need of the world, as Protocols. ``exportpipe.adapters`` implements
them on AWS (DynamoDB, S3, Step Functions, EventBridge); tests implement them in memory
(``exportpipe_dev.fakes``). Nothing above the adapters calls boto3.

Every write a port offers is conditional or idempotent, and says so: the services' exactly-once
guarantees rest on these contracts, not on the adapters' internals, so a fake must keep them too.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

from exportpipe.models.job import CreateOutcome, Job, JobStatus, ResultFile
from exportpipe.models.layout import Manifest


class JobStore(Protocol):
    """Job records and each definition's watermark and lease (``adapters.store``). Writes are
    conditional: a move the job's current state does not allow raises ``TransitionError``."""

    def find(self, job_id: str) -> Job | None:
        """The job, or None if no record exists."""

    def get(self, job_id: str) -> Job:
        """The job; ``JobNotFoundError`` if no record exists."""

    def find_by_upstream(self, source: str, upstream_id: str) -> Job | None:
        """The job waiting for ``source``'s export ``upstream_id`` (eventually consistent)."""

    def definition_state(self, name: str) -> dict[str, Any]:
        """The definition's record: ``watermark``, ``active_job``, failed attempts per window."""

    def watermark(self, name: str) -> datetime | None:
        """The end of the definition's last delivered window, None before the first delivery."""

    def create(self, job: Job, *, planned_from: datetime | None = None) -> CreateOutcome:
        """Record a new job and take its definition's lease, unless the watermark moved from
        ``planned_from``, the job exists, or another job holds the lease (atomically)."""

    def claim_stale(self, job_id: str) -> Job | None:
        """Claim a REQUESTED job whose create is due (deferred wait over, or its starter died)."""

    def defer(self, job_id: str, not_before: datetime, updates: Mapping[str, Any]) -> Job:
        """Keep a REQUESTED job, not to be claimed before ``not_before``."""

    def claimable_at(self, job: Job) -> datetime:
        """When :meth:`claim_stale` would claim the job."""

    def transition(
        self,
        job_id: str,
        target: JobStatus,
        *,
        reason: str | None = None,
        updates: Mapping[str, Any] | None = None,
    ) -> Job:
        """Move the job forward to ``target`` (only along the allowed transitions; never an ended
        or committed job to an undelivered end), recording the transition."""

    def take_copy(self, job_id: str, owner: str, until: datetime) -> Job:
        """Make ``owner`` the job's copy until ``until`` (READY → COPYING, or a COPYING job whose
        previous owner's time is over)."""

    def claim_commit(self, job_id: str, owner: str, intent: Mapping[str, Any], files: list[Any]) -> Job:
        """Record the delivery's commit intent, while ``owner`` holds the copy and none is recorded."""

    def update(
        self,
        job_id: str,
        expected: JobStatus | Collection[JobStatus],
        updates: Mapping[str, Any],
        *,
        where: Mapping[str, Any] | None = None,
    ) -> Job:
        """Set fields of a job in one of the ``expected`` statuses (and matching ``where``)."""

    def forget_failed_attempts(self, name: str) -> None:
        """An operator's retry: the definition's failed attempts are forgotten, and its retry
        generation goes up by one (the retried window's attempts get job ids of their own)."""

    def retry_generation(self, name: str) -> int:
        """How many operator retries the definition had (0: none)."""

    def failed_attempts(self, name: str, start: datetime) -> int:
        """How many exports of the window starting at ``start`` ended undelivered."""

    def settle(self, job: Job) -> None:
        """After the job ended: move the watermark (a delivered window that moves it) and release
        the definition's lease held by the job; idempotent."""

    def release_lease(self, definition_name: str, job_id: str) -> None:
        """Free the definition's lease if ``job_id`` holds it."""


class ResultsBucket(Protocol):
    """The results bucket (``adapters.bucket``): where exports land."""

    name: str

    def read(self, key: str) -> bytes | None:
        """The object's bytes, None if there is no such object."""

    def put_new(self, key: str, body: bytes, *, content_type: str) -> bool:
        """Write the object unless one exists (If-None-Match); False when one was already there."""

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``."""

    def delete(self, keys: Iterable[str]) -> None:
        """Delete the objects (missing ones are fine)."""

    def abort_uploads(self, prefix: str) -> int:
        """Abort every multipart upload still open under ``prefix``; how many were."""

    def upload(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        content_type: str,
        expected_length: int | None,
        file_format: str | None,
        part_size: int,
    ) -> ResultFile:
        """Stream ``chunks`` to ``key``, checking the file's end by ``file_format`` and counting its
        records; verify the stored size; what the manifest lists of it."""


class Workflow(Protocol):
    """The poll workflow (``adapters.workflow``): one execution per job (Step Functions)."""

    def start(self, name: str, job_id: str) -> str:
        """Start the job's execution ``name``; one of that name already started is fine. Its id."""

    def running(self, execution_id: str) -> bool | None:
        """Whether the execution still runs; None if there is no such execution."""


class EventBus(Protocol):
    """Where consumers hear of deliveries and failures (``adapters.events``)."""

    def delivered(self, job: Job, bucket: str, manifest_key: str, manifest: Manifest) -> dict[str, Any]:
        """Publish ``Export Delivered``."""

    def failed(self, job: Job) -> dict[str, Any]:
        """Publish ``Export Failed``."""


class Lifecycle(Protocol):
    """The job lifecycle function (start_export), asked to go on after a delivery
    (``adapters.lifecycle``; only executions started on an earlier workflow definition need it)."""

    def continue_after(self, job_id: str) -> None:
        """Ask, asynchronously, for the next window of a backfill after the delivered ``job_id``."""
