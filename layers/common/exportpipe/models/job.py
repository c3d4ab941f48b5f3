"""The job record (contract 2): one per export attempt, forward-only status, every transition kept.

Job ids are deterministic: the same definition name and window always give the same id, so a
schedule event delivered twice finds the job it already started instead of starting a second export.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, computed_field

from exportpipe.models.connection import Connection
from exportpipe.models.definition import TimeFormat, Window


class JobStatus(StrEnum):
    REQUESTED = "REQUESTED"  # job recorded, upstream export not yet created
    EXPORTING = "EXPORTING"  # upstream is preparing the export
    READY = "READY"  # upstream files are ready to download
    COPYING = "COPYING"  # files are being streamed into S3
    DELIVERED = "DELIVERED"  # manifest written: the export is complete in S3
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"
    CANCELED = "CANCELED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.DELIVERED, JobStatus.FAILED, JobStatus.EXPIRED, JobStatus.CANCELED})
UNDELIVERED = TERMINAL - {JobStatus.DELIVERED}
# States in which the job's poll workflow must be running.
IN_WORKFLOW = frozenset({JobStatus.EXPORTING, JobStatus.READY, JobStatus.COPYING})
# A window whose export ended FAILED / EXPIRED / CANCELED is tried again as a new job (attempt 2, 3…)
# by the next schedule tick, at most this many times in all.
MAX_WINDOW_ATTEMPTS = 5

# Allowed moves. A status never goes back, with two deliberate, bounded exceptions that start a new
# upstream export for the same window (each recorded in the history with its reason):
# - EXPORTING → EXPORTING: the upstream export Failed and is created again;
# - READY / COPYING → EXPORTING: the upstream export's files expired before the copy (a re-export).
# COPYING may also be re-entered by a retried copy.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.REQUESTED: frozenset({JobStatus.EXPORTING, JobStatus.FAILED, JobStatus.CANCELED}),
    JobStatus.EXPORTING: frozenset(
        {JobStatus.EXPORTING, JobStatus.READY, JobStatus.FAILED, JobStatus.EXPIRED, JobStatus.CANCELED}
    ),
    JobStatus.READY: frozenset(
        {JobStatus.EXPORTING, JobStatus.COPYING, JobStatus.FAILED, JobStatus.EXPIRED, JobStatus.CANCELED}
    ),
    JobStatus.COPYING: frozenset(
        {
            JobStatus.EXPORTING,
            JobStatus.COPYING,
            JobStatus.DELIVERED,
            JobStatus.FAILED,
            JobStatus.EXPIRED,
            JobStatus.CANCELED,
        }
    ),
    JobStatus.DELIVERED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.EXPIRED: frozenset(),
    JobStatus.CANCELED: frozenset(),
}


def sources_of(target: JobStatus) -> list[JobStatus]:
    """Every status from which ``target`` may be reached."""
    return [s for s, nexts in TRANSITIONS.items() if target in nexts]


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def job_id_for(definition_name: str, window: Window, attempt: int = 1, generation: int = 0) -> str:
    """Deterministic id from (definition name, window, attempt, retry generation); valid as a Step
    Functions execution name.

    ``<name[:30]>_<start>_<end>_<hash8>[-a<attempt>]``: readable, at most 76 characters, leaving room
    for a workflow restart suffix (``-r<n>``) under Step Functions' 80. The hash covers the whole
    name, so two long names sharing their first 30 characters still differ, and the operator retry
    ``generation`` after the first (0), so a retried window's attempts get ids of their own.
    """
    if not 1 <= attempt <= 9:
        raise ValueError(f"attempt must be 1..9, got {attempt}")
    key = f"{definition_name}|{window.start.isoformat()}|{window.end.isoformat()}"
    if generation:
        key += f"|retry {generation}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    suffix = "" if attempt == 1 else f"-a{attempt}"
    return f"{definition_name[:30]}_{_stamp(window.start)}_{_stamp(window.end)}_{digest}{suffix}"


class Transition(BaseModel):
    model_config = ConfigDict(frozen=True)

    status: JobStatus
    at: AwareDatetime
    reason: str | None = None


class ResultFile(BaseModel):
    """One landed file, as listed in the manifest."""

    model_config = ConfigDict(frozen=True)

    key: str
    bytes: int
    sha256: str
    records: int | None = None
    content_type: str


class CommitIntent(BaseModel):
    """The decision to deliver, recorded on the job before the manifest is written.

    With the job's ``files`` it determines the manifest byte for byte, so whoever finds it (the copy
    that took it, a retry, the workflow's failure recorder) writes the same manifest. Once it is on
    the job, the only move left is to DELIVERED: no failure report can end the job any more.
    """

    model_config = ConfigDict(frozen=True)

    owner: str
    delivered_at: AwareDatetime
    format: str
    timezone: str | None = None
    # left out when absent: an intent is recorded as before for sources that say nothing of it
    time_format: TimeFormat | None = Field(default=None, exclude_if=lambda value: value is None)


class Job(BaseModel):
    model_config = ConfigDict(extra="ignore")

    job_id: str
    definition_name: str
    source: str
    dataset: str
    definition: dict[str, Any]
    window: Window
    # The end the definition is catching up to (the schedule's time): when the window had to be
    # capped below it, delivering this job starts the next window at once.
    until: AwareDatetime | None = None
    moves_watermark: bool = True  # False for a one-off re-run of an explicit window
    attempt: int = 1  # 2, 3… when earlier jobs for the same window ended without a delivery
    # operator retries of the definition before this job (``retry``): 0 for the first round
    generation: int = 0
    status: JobStatus
    created_at: AwareDatetime
    updated_at: AwareDatetime
    history: list[Transition] = Field(default_factory=list)
    reason: str | None = None
    upstream_id: str | None = None
    upstream_state: str | None = None
    upstream_created_at: str | None = None
    result_urls: list[str] = Field(default_factory=list)
    poll_attempts: int = 0
    # Upstream rate-limit refusals in a row (polling or copying); reset by the next answered call.
    rate_limited: int = 0
    copy_retries: int = 0  # copies interrupted by an outage or a broken download, then resumed
    recreates: int = 0  # upstream exports created again after the upstream reported Failed
    reexports: int = 0  # upstream exports created again after their files expired uncopied
    execution_arn: str | None = None
    workflow_restarts: int = 0  # executions started again after the job's workflow died
    # The copy attempt that may record parts (a stale copy cannot), and until when its invocation
    # can run: another copy takes over only after that (or once the job is READY again).
    copy_owner: str | None = None
    copy_owner_until: AwareDatetime | None = None
    commit: CommitIntent | None = None
    manifest_key: str | None = None
    files: list[ResultFile] = Field(default_factory=list)
    event_sent: bool = False

    @computed_field  # type: ignore[prop-decorator]
    @property
    def connection(self) -> str:
        """The id of the connection the job runs with (``<source>/<name>``), written on the job record. It
        is the definition's, so a record written before connections existed reads as its source's
        default connection."""
        return self.connection_ref.id

    @property
    def connection_ref(self) -> Connection:
        name = self.definition.get("connection")
        return Connection.of(self.source, name if isinstance(name, str) else None)

    @property
    def has_next_window(self) -> bool:
        """A backfill's window that stopped short of its ``until``: its delivery starts the next one."""
        return self.until is not None and self.window.end < self.until and self.moves_watermark


# A lease older than this whose job is still REQUESTED belongs to a crashed start: it may be resumed.
STALE_CLAIM = timedelta(minutes=16)


@dataclass(frozen=True)
class CreateOutcome:
    """What recording a new job found: ``created``; ``exists`` (this window's job, from an earlier
    delivery of the same event); ``busy`` (another job holds the definition's lease); ``stale`` (the
    definition's watermark moved since the window was planned: plan again)."""

    result: Literal["created", "exists", "busy", "stale"]
    job: Job | None = None  # the created or existing job
    active_job_id: str | None = None  # for "busy": the job holding the definition's lease


def upstream_ref(source: str, upstream_id: str) -> str:
    """The key of the ByUpstreamId index; store it with ``upstream_id`` when it becomes known."""
    return f"{source}#{upstream_id}"
