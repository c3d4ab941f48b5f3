"""The poll workflow's task outputs, and what starting an export comes to.

The state machine (statemachine/export_poll.asl.json) routes on :class:`TaskAnswer`'s fields; they are
a contract with every execution already running, so a field is only ever added. The task inputs are
the services' own pydantic models (``CheckStatusEvent``, ``CopyResultEvent``, ``StartExportEvent``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NotRequired, TypedDict


class TaskAnswer(TypedDict):
    """What check_status and copy_result return: the job's status, the turn's number, and how long
    the workflow waits before the next turn (0: go on now)."""

    job_id: str
    status: str
    attempt: int
    # One more than ``attempt``: the Route's attempt guard (kept for executions started on an
    # earlier definition) never ends a wait by count.
    max_attempts: int
    wait_seconds: int
    manifest_key: NotRequired[str | None]  # a delivery's
    files: NotRequired[int]


@dataclass(frozen=True)
class StartOutcome:
    """What starting (or resuming) an export came to: a job's status, or why no job started
    (``UP_TO_DATE``, ``SKIPPED``: another export of the definition is in flight, ``GAVE_UP``)."""

    status: str
    job_id: str | None = None
    reason: str | None = None
    definition: str | None = None
    duplicate: bool | None = None
    upstream_id: str | None = None
    window: dict[str, Any] | None = None
    execution_arn: str | None = None

    def output(self) -> dict[str, Any]:
        """The start function's JSON answer: the fields that apply."""
        return {k: v for k, v in asdict(self).items() if v is not None}
