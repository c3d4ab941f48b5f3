"""The poll workflow's task inputs and outputs, and what starting an export comes to.

The state machine (statemachine/export_poll.asl.json) passes :class:`CheckStatusEvent` and
:class:`CopyResultEvent` and routes on :class:`TaskAnswer`'s fields; they are a contract with every
execution already running (on an earlier definition too), so a field is only ever added. Step
Functions' own shapes (a Catch's ``Error``/``Cause``) are decoded here, not in the services.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, NotRequired, TypedDict

from pydantic import BaseModel, ConfigDict, Field


class WorkflowError(BaseModel):
    """What a Step Functions Catch puts at ``ResultPath``: ``Error`` (the error's name) and ``Cause``
    (for a Lambda task, the function's error as JSON: ``errorType``, ``errorMessage``, ...)."""

    model_config = ConfigDict(populate_by_name=True)

    error: str = Field(alias="Error")
    cause: str = Field(default="", alias="Cause")

    def _cause(self) -> dict[str, Any]:
        try:
            cause = json.loads(self.cause)
        except ValueError:
            return {}
        return cause if isinstance(cause, dict) else {}

    @property
    def error_type(self) -> str:
        """The failed function's error class (``errorType``), else ``Error``."""
        return str(self._cause().get("errorType", self.error))

    @property
    def message(self) -> str:
        """The failed function's message (``errorMessage``), else the whole ``Cause``."""
        return str(self._cause().get("errorMessage", self.cause))


class CheckStatusEvent(BaseModel):
    """check_status's input: the job, the turn's number, and the error a Catch caught, if any."""

    model_config = ConfigDict(extra="ignore")

    job_id: str = Field(min_length=1)
    attempt: int = Field(default=0, ge=0)
    error: WorkflowError | None = None
    # The execution this task runs in (``$$.Execution.Id``); absent from executions started on an
    # earlier definition.
    execution_arn: str | None = None
    # Sent by the workflow's current definition, whose Delivered state starts a backfill's next
    # window; without it (an earlier definition) a delivery hands that to start_export itself.
    workflow_starts_next_window: bool = False


class CopyResultEvent(BaseModel):
    """copy_result's input."""

    model_config = ConfigDict(extra="ignore")

    job_id: str = Field(min_length=1)
    # Sent by the workflow's current definition, whose Delivered state starts a backfill's next
    # window; without it (an earlier definition) a delivery hands that to start_export itself.
    workflow_starts_next_window: bool = False


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
    (``UP_TO_DATE``, ``SKIPPED``: another export of the definition is in flight, ``GAVE_UP``; after a
    delivery, ``NOT_DELIVERED`` / ``NO_NEXT_WINDOW``). ``after``: the delivered job a backfill's next
    window follows."""

    status: str
    job_id: str | None = None
    reason: str | None = None
    definition: str | None = None
    duplicate: bool | None = None
    upstream_id: str | None = None
    window: dict[str, Any] | None = None
    execution_arn: str | None = None
    after: str | None = None
    job_status: str | None = None

    def output(self) -> dict[str, Any]:
        """The start function's JSON answer: the fields that apply."""
        return {k: v for k, v in asdict(self).items() if v is not None}
