"""In-memory fakes of the ports (:mod:`exportpipe.ports`), for unit tests of the services: no moto, no
network, no threads of their own, a clock the test moves.

- :class:`InMemoryJobStore`: :class:`~exportpipe.ports.JobStore` with the conditions of
  :class:`~exportpipe.adapters.store.DynamoJobStore` (the contract tests in
  ``tests/unit/test_fakes_contract.py`` run both against the same expectations). Values are stored as
  DynamoDB stores them (through boto3's type serializer: numbers come back as ``Decimal``, ``None``
  fields are absent from a created item), and compared as its conditions compare them (ISO strings);
- :class:`InMemoryBucket`: :class:`~exportpipe.ports.ResultsBucket`, whose ``upload`` streams through
  the copier's own :class:`~exportpipe.adapters.copier.MeasuringReader` (framing, format check, record
  count, SHA-256), and whose open multipart uploads :meth:`~InMemoryBucket.abort_uploads` sees;
- :class:`RecordingWorkflow`, :class:`RecordingEventBus` (the real event details, through
  :class:`~exportpipe.adapters.events.EventPublisher`), :class:`FakeClock`;
- :class:`FakeSourceClient`: a small scripted upstream; :class:`FakeDefinition` (source ``fake``,
  CSV or JSON per definition), :func:`fake_spec` and :func:`registered` to plug a source into the
  registry for a test;
- :func:`fake_deps`: a :class:`~exportpipe.runtime.Deps` of fakes (``client_for`` by connection,
  ``read_secret`` from a dict).

Every fake can be told to fail: ``fake.fail("operation", error)`` makes its next call of that
operation (a method of the port) raise ``error``; with ``after=True``, once the call has done its
work, like a process that dies before it hears the answer. A :class:`CrashError` is a
``BaseException``: the invocation dies there (a Lambda timeout), no ``except Exception`` of the
services catches it, and a multipart upload it interrupts stays open, as a killed process leaves it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import json
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, Literal, ParamSpec, TypeVar

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from exportpipe.adapters.copier import MeasuringReader
from exportpipe.adapters.events import EventPublisher
from exportpipe.config import Settings
from exportpipe.errors import ConfigurationError, JobNotFoundError, TransitionError, UpstreamError, scrub
from exportpipe.models.connection import Connection
from exportpipe.models.definition import DefinitionBase, ResultFormat, Window
from exportpipe.models.job import (
    STALE_CLAIM,
    CreateOutcome,
    Job,
    JobStatus,
    ResultFile,
    Transition,
    sources_of,
    upstream_ref,
)
from exportpipe.models.layout import Manifest
from exportpipe.ports import EventBus, JobStore, ResultsBucket, Workflow
from exportpipe.runtime import Deps
from exportpipe.sources import registry
from exportpipe.sources.base import (
    ClientContext,
    Recovery,
    Replayable,
    ResultStream,
    SourceClient,
    SourceSpec,
    UpstreamExport,
    UpstreamState,
)

__all__ = [
    "CrashError",
    "Execution",
    "FakeClock",
    "FakeDefinition",
    "FakeExport",
    "FakeFile",
    "FakeSourceClient",
    "InMemoryBucket",
    "InMemoryJobStore",
    "NoSuchUploadError",
    "RecordedEvent",
    "RecordingEventBus",
    "RecordingWorkflow",
    "StoredObject",
    "fake_definition",
    "fake_deps",
    "fake_settings",
    "fake_spec",
    "registered",
]

P = ParamSpec("P")
R = TypeVar("R")

START = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


class CrashError(BaseException):
    """The invocation dies here (a Lambda timeout, the process killed): nothing of the services
    handles it, and an upload it interrupts stays open."""


# ---- failures on demand --------------------------------------------------------------------------


class Faults:
    """Failures a test plants, per operation, each raised once, in order."""

    def __init__(self) -> None:
        self._before: dict[str, list[BaseException]] = {}
        self._after: dict[str, list[BaseException]] = {}
        self._lock = threading.Lock()

    def plant(self, operation: str, errors: Iterable[BaseException], *, after: bool) -> None:
        with self._lock:
            (self._after if after else self._before).setdefault(operation, []).extend(errors)

    def pop(self, operation: str, *, after: bool) -> BaseException | None:
        with self._lock:
            queue = (self._after if after else self._before).get(operation)
            return queue.pop(0) if queue else None


class _CanFail:
    faults: Faults

    def fail(self, operation: str, *errors: BaseException, after: bool = False) -> None:
        """The next calls of ``operation`` (a method name) raise ``errors``, one each: before they do
        anything, or with ``after`` once they have done their work."""
        if not callable(getattr(self, operation, None)):
            raise AttributeError(f"{type(self).__name__} has no operation {operation!r}")
        self.faults.plant(operation, errors, after=after)


def _faulty(method: Callable[P, R]) -> Callable[P, R]:
    """Raise the failures planted for this method (by its name) before or after it runs."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        faults: Faults = args[0].faults  # type: ignore[attr-defined]
        error = faults.pop(name, after=False)
        if error is not None:
            raise error
        result = method(*args, **kwargs)
        error = faults.pop(name, after=True)
        if error is not None:
            raise error
        return result

    return wrapper


# ---- clock ---------------------------------------------------------------------------------------


class FakeClock:
    """A clock that moves only when told: ``deps.clock`` and the store's clock."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, delta: timedelta | float = 0, **parts: float) -> datetime:
        """Move on by ``delta`` (seconds, or a timedelta) plus ``timedelta(**parts)``; the new time."""
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        with self._lock:
            self.now += step + timedelta(**parts)
            return self.now

    def set(self, moment: datetime) -> None:
        with self._lock:
            self.now = moment


# ---- job store -----------------------------------------------------------------------------------

_ser = TypeSerializer()
_de = TypeDeserializer()

# Free text that may quote an upstream URL: scrubbed on every write, as adapters.store does.
_TEXT_FIELDS = ("reason", "upstream_state")


def _stored(value: Any) -> Any:
    """``value`` as DynamoDB gives it back (numbers as Decimal; a float or a datetime is refused
    with TypeError, as boto3's serializer refuses it)."""
    return _de.deserialize(_ser.serialize(value))


def _same(item: Mapping[str, Any], key: str, value: Any) -> bool:
    """DynamoDB's ``key = :value``: the attribute exists and has the same type and value."""
    return key in item and _ser.serialize(item[key]) == _ser.serialize(value)


def _before(item: Mapping[str, Any], key: str, value: str) -> bool:
    """DynamoDB's ``key < :value`` on strings: false when the attribute is absent or not a string."""
    current = item.get(key)
    return isinstance(current, str) and current < value


def _scrubbed(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: scrub(v) if k in _TEXT_FIELDS and isinstance(v, str) else v for k, v in values.items()}


def utcnow() -> datetime:
    return datetime.now(UTC)


class InMemoryJobStore(_CanFail):
    """:class:`exportpipe.ports.JobStore` in memory, with DynamoJobStore's conditions.

    ``JOB#<id>`` and ``DEF#<name>`` items as the table holds them (:meth:`item` shows one); the
    ``ByUpstreamId`` index is every item's ``upstream_ref``. Thread-safe: each call is atomic, as each
    conditional write (and the create's transaction) is.
    """

    def __init__(self, *, ttl_days: int = 400, clock: Callable[[], datetime] = utcnow) -> None:
        self._items: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()
        self._ttl = timedelta(days=ttl_days)
        self._now = clock
        self.faults = Faults()

    # ---- what tests look at ------------------------------------------------------------------

    def item(self, key: str) -> dict[str, Any] | None:
        """A copy of the raw item (``JOB#<id>`` or ``DEF#<name>``), as the table would hold it."""
        with self._lock:
            found = self._items.get(key)
            return copy.deepcopy(found) if found is not None else None

    def jobs(self) -> list[Job]:
        """Every job recorded, in the order they were created."""
        with self._lock:
            return [_job(v) for k, v in self._items.items() if k.startswith("JOB#")]

    def expire(self, job_id: str) -> None:
        """The table's TTL removed the job's record."""
        with self._lock:
            self._items.pop(f"JOB#{job_id}", None)

    # ---- reads -------------------------------------------------------------------------------

    @_faulty
    def find(self, job_id: str) -> Job | None:
        return self._find(job_id)

    @_faulty
    def get(self, job_id: str) -> Job:
        job = self._find(job_id)
        if job is None:
            raise JobNotFoundError(f"no job {job_id!r}")
        return job

    @_faulty
    def find_by_upstream(self, source: str, upstream_id: str) -> Job | None:
        ref = upstream_ref(source, upstream_id)
        with self._lock:
            for item in self._items.values():
                if item.get("upstream_ref") == ref:
                    return self._find(str(item["job_id"]))
        return None

    @_faulty
    def definition_state(self, name: str) -> dict[str, Any]:
        return self._state(name)

    @_faulty
    def watermark(self, name: str) -> datetime | None:
        value = self._state(name).get("watermark")
        return datetime.fromisoformat(str(value)) if value else None

    # ---- writes ------------------------------------------------------------------------------

    @_faulty
    def create(self, job: Job, *, planned_from: datetime | None = None) -> CreateOutcome:
        now = self._now()
        values = self._job_values(job)
        values["claimed_at"] = now.isoformat()
        with self._lock:
            key = f"JOB#{job.job_id}"
            definition = self._items.get(f"DEF#{job.definition_name}", {})
            lease_free = "active_job" not in definition or _same(definition, "active_job", job.job_id)
            if not job.moves_watermark:
                plan_holds = True
            elif planned_from is None:
                plan_holds = "watermark" not in definition
            else:
                plan_holds = _same(definition, "watermark", planned_from.isoformat())
            if key in self._items or not (lease_free and plan_holds):
                if key in self._items:
                    return CreateOutcome("exists", _job(self._items[key]))
                active = definition.get("active_job")
                if active and active != job.job_id:
                    return CreateOutcome("busy", None, str(active))
                return CreateOutcome("stale")
            self._items[key] = {k: _stored(v) for k, v in values.items() if v is not None}
            self._def(job.definition_name).update({"active_job": job.job_id, "active_since": now.isoformat()})
        return CreateOutcome("created", job)

    @_faulty
    def claim_stale(self, job_id: str) -> Job | None:
        now = self._now()
        stale = (now - STALE_CLAIM).isoformat()
        with self._lock:
            item = self._items.get(f"JOB#{job_id}")
            if item is None or item.get("status") != JobStatus.REQUESTED.value:
                return None
            if not _before(item, "claimed_at", stale):
                return None
            item["claimed_at"] = now.isoformat()
            return _job(item)

    @_faulty
    def defer(self, job_id: str, not_before: datetime, updates: Mapping[str, Any]) -> Job:
        claimed_at = not_before - STALE_CLAIM
        sets = {"updated_at": self._now().isoformat(), **updates, "claimed_at": claimed_at.isoformat()}
        return self._update(
            job_id, sets, statuses=[JobStatus.REQUESTED], history=None, target=JobStatus.REQUESTED
        )

    @_faulty
    def claimable_at(self, job: Job) -> datetime:
        with self._lock:
            claimed = self._items.get(f"JOB#{job.job_id}", {}).get("claimed_at")
        return (datetime.fromisoformat(str(claimed)) if claimed else self._now() - STALE_CLAIM) + STALE_CLAIM

    @_faulty
    def transition(
        self,
        job_id: str,
        target: JobStatus,
        *,
        reason: str | None = None,
        updates: Mapping[str, Any] | None = None,
    ) -> Job:
        allowed = sources_of(target)
        if not allowed:
            raise TransitionError(job_id, None, target)
        now = self._now()
        reason = scrub(reason) if reason is not None else None
        entry = Transition(status=target, at=now, reason=reason).model_dump(mode="json", exclude_none=True)
        sets = {"status": target.value, "updated_at": now.isoformat(), **(updates or {})}
        if reason is not None:
            sets["reason"] = reason
        return self._update(
            job_id,
            sets,
            statuses=allowed,
            history=entry,
            target=target,
            uncommitted=target is not JobStatus.DELIVERED,
        )

    @_faulty
    def take_copy(self, job_id: str, owner: str, until: datetime) -> Job:
        now = self._now()
        entry = Transition(status=JobStatus.COPYING, at=now).model_dump(mode="json", exclude_none=True)

        def free(item: Mapping[str, Any]) -> bool:
            return (
                item.get("status") == JobStatus.READY.value
                or "copy_owner_until" not in item
                or _before(item, "copy_owner_until", now.isoformat())
                or _same(item, "copy_owner", owner)
            )

        return self._update(
            job_id,
            {
                "status": JobStatus.COPYING.value,
                "updated_at": now.isoformat(),
                "copy_owner": owner,
                "copy_owner_until": until.isoformat(),
            },
            statuses=[JobStatus.READY, JobStatus.COPYING],
            history=entry,
            target=JobStatus.COPYING,
            uncommitted=True,
            extra=free,
        )

    @_faulty
    def claim_commit(self, job_id: str, owner: str, intent: Mapping[str, Any], files: list[Any]) -> Job:
        return self._update(
            job_id,
            {"updated_at": self._now().isoformat(), "commit": dict(intent), "files": files},
            statuses=[JobStatus.COPYING],
            history=None,
            target=JobStatus.DELIVERED,
            where={"copy_owner": owner},
            uncommitted=True,
        )

    @_faulty
    def update(
        self,
        job_id: str,
        expected: JobStatus | Collection[JobStatus],
        updates: Mapping[str, Any],
        *,
        where: Mapping[str, Any] | None = None,
    ) -> Job:
        statuses = [expected] if isinstance(expected, JobStatus) else list(expected)
        sets = {"updated_at": self._now().isoformat(), **updates}
        return self._update(job_id, sets, statuses=statuses, history=None, target=statuses[0], where=where)

    @_faulty
    def forget_failed_attempts(self, name: str) -> None:
        with self._lock:
            state = self._def(name)
            state.pop("failed_start", None)
            state.pop("failed_attempts", None)
            state["retry_generation"] = int(state.get("retry_generation", 0)) + 1

    @_faulty
    def retry_generation(self, name: str) -> int:
        return int(self._state(name).get("retry_generation", 0))

    @_faulty
    def failed_attempts(self, name: str, start: datetime) -> int:
        state = self._state(name)
        return int(state.get("failed_attempts", 0)) if state.get("failed_start") == start.isoformat() else 0

    @_faulty
    def settle(self, job: Job) -> None:
        with self._lock:
            if job.status is not JobStatus.DELIVERED and job.moves_watermark:
                state = self._def(job.definition_name)
                start, attempt = job.window.start.isoformat(), Decimal(job.attempt)
                # only forward: a late settle of an older window's job must not reset the count
                if (
                    "failed_start" not in state
                    or _before(state, "failed_start", start)
                    or (
                        _same(state, "failed_start", start)
                        and "failed_attempts" in state
                        and state["failed_attempts"] < attempt
                    )
                ):
                    state.update({"failed_start": start, "failed_attempts": attempt})
            if job.status is JobStatus.DELIVERED and job.moves_watermark:
                state = self._def(job.definition_name)
                end = job.window.end.isoformat()
                if "watermark" not in state or _before(state, "watermark", end):
                    state.update({"watermark": end, "watermark_job": job.job_id})
            self._release(job.definition_name, job.job_id)

    @_faulty
    def release_lease(self, definition_name: str, job_id: str) -> None:
        with self._lock:
            self._release(definition_name, job_id)

    # ---- internals ---------------------------------------------------------------------------

    def _find(self, job_id: str) -> Job | None:
        with self._lock:
            item = self._items.get(f"JOB#{job_id}")
            return _job(item) if item is not None else None

    def _state(self, name: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._items.get(f"DEF#{name}", {}))

    def _release(self, definition_name: str, job_id: str) -> None:
        state = self._items.get(f"DEF#{definition_name}")
        if state is not None and _same(state, "active_job", job_id):
            state.pop("active_job", None)
            state.pop("active_since", None)

    def _def(self, name: str) -> dict[str, Any]:
        """The definition's item, created empty (as an UpdateItem creates it) if absent."""
        return self._items.setdefault(f"DEF#{name}", {"pk": f"DEF#{name}"})

    def _job_values(self, job: Job) -> dict[str, Any]:
        values = _scrubbed(job.model_dump(mode="json"))
        values["pk"] = f"JOB#{job.job_id}"
        values["expires_at"] = int((job.created_at + self._ttl).timestamp())
        if job.upstream_id:
            values["upstream_ref"] = upstream_ref(job.source, job.upstream_id)
        return values

    def _update(
        self,
        job_id: str,
        sets: Mapping[str, Any],
        *,
        statuses: list[JobStatus],
        history: dict[str, Any] | None,
        target: JobStatus,
        where: Mapping[str, Any] | None = None,
        uncommitted: bool = False,
        extra: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> Job:
        values = {k: _stored(v) for k, v in _scrubbed(sets).items()}  # a bad value fails before any write
        entry = _stored(history) if history is not None else None
        allowed = {s.value for s in statuses}
        with self._lock:
            item = self._items.get(f"JOB#{job_id}")
            if item is None:
                raise JobNotFoundError(f"no job {job_id!r}")
            current = item.get("status")
            holds = (
                current in allowed
                and all(_same(item, k, v) for k, v in (where or {}).items())
                and not (uncommitted and "commit" in item)
                and (extra is None or extra(item))
            )
            if not holds:
                if uncommitted and item.get("commit"):
                    raise TransitionError(job_id, f"{current} (its delivery is committed)", target)
                if where and current in allowed:
                    raise TransitionError(job_id, f"{current} (no longer {dict(where)})", target)
                raise TransitionError(job_id, str(current), target)
            item.update(values)
            if entry is not None:
                item["history"] = [*item.get("history", []), entry]
            return _job(item)


def _job(item: Mapping[str, Any]) -> Job:
    return Job.model_validate(copy.deepcopy(dict(item)))


# ---- results bucket ------------------------------------------------------------------------------


class NoSuchUploadError(Exception):
    """S3's ``NoSuchUpload``: the multipart upload was aborted (by another copy) before it completed.
    Not an ExportPipeError, as botocore's ClientError is not."""


@dataclass(frozen=True)
class StoredObject:
    body: bytes
    content_type: str


class InMemoryBucket(_CanFail):
    """:class:`exportpipe.ports.ResultsBucket` in memory.

    ``objects`` by key; ``uploads``: the multipart uploads still open (upload id → key), which an
    upload keeps open while it streams and :meth:`abort_uploads` ends; ``writes``: every key that
    landed, in order (so a test sees that the manifest came last).

    :meth:`upload` reads the chunks through the copier's MeasuringReader, as S3's managed transfer
    does: one part of ``part_size`` first (a smaller file is a single PUT, no multipart upload), then
    a multipart upload, aborted when the stream fails (a format that ends early, a short body); a
    :class:`CrashError` leaves it open.
    """

    def __init__(self, name: str = "exportpipe-results") -> None:
        self.name = name
        self.objects: dict[str, StoredObject] = {}
        self.uploads: dict[str, str] = {}
        self.writes: list[str] = []
        self.faults = Faults()
        self._ids = itertools.count(1)
        self._lock = threading.RLock()

    def open_upload(self, key: str) -> str:
        """Open a multipart upload of ``key`` (one a copy that died mid-file left); its id."""
        with self._lock:
            upload_id = f"upload-{next(self._ids)}"
            self.uploads[upload_id] = key
            return upload_id

    def open_uploads(self, prefix: str = "") -> list[str]:
        """The keys of the multipart uploads open under ``prefix``."""
        with self._lock:
            return sorted(k for k in self.uploads.values() if k.startswith(prefix))

    def body(self, key: str) -> bytes:
        """The object's bytes (KeyError if there is none)."""
        with self._lock:
            return self.objects[key].body

    @_faulty
    def read(self, key: str) -> bytes | None:
        with self._lock:
            found = self.objects.get(key)
            return found.body if found is not None else None

    @_faulty
    def put_new(self, key: str, body: bytes, *, content_type: str) -> bool:
        with self._lock:
            if key in self.objects:
                return False
            self._land(key, bytes(body), content_type)
            return True

    @_faulty
    def keys(self, prefix: str) -> list[str]:
        with self._lock:
            return sorted(k for k in self.objects if k.startswith(prefix))

    @_faulty
    def delete(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self.objects.pop(key, None)

    @_faulty
    def abort_uploads(self, prefix: str) -> int:
        with self._lock:
            ids = [i for i, k in self.uploads.items() if k.startswith(prefix)]
            for upload_id in ids:
                del self.uploads[upload_id]
            return len(ids)

    @_faulty
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
        reader = MeasuringReader(chunks, expected_length=expected_length, file_format=file_format)
        parts = [reader.read(part_size)]
        if len(parts[0]) >= part_size:
            upload_id = self.open_upload(key)
            try:
                while part := reader.read(part_size):
                    parts.append(part)
            except Exception:
                with self._lock:
                    self.uploads.pop(upload_id, None)
                raise
            with self._lock:
                if self.uploads.pop(upload_id, None) is None:
                    raise NoSuchUploadError(f"the multipart upload of {key} was aborted meanwhile")
        with self._lock:
            self._land(key, b"".join(parts), content_type)
        return ResultFile(
            key=key,
            bytes=reader.bytes,
            sha256=reader.sha256.hexdigest(),
            records=reader.records,
            content_type=content_type,
        )

    def _land(self, key: str, body: bytes, content_type: str) -> None:
        self.objects[key] = StoredObject(body, content_type)
        self.writes.append(key)


# ---- workflow and events -------------------------------------------------------------------------


@dataclass
class Execution:
    name: str
    job_id: str
    arn: str
    running: bool = True


class RecordingWorkflow(_CanFail):
    """:class:`exportpipe.ports.Workflow` that records executions (by name) and runs nothing: the test
    calls the tasks. Starting a name already started returns its id and starts nothing, as Step
    Functions does for the same name and input."""

    def __init__(
        self, state_machine_arn: str = "arn:aws:states:us-east-1:123456789012:stateMachine:export-poll"
    ) -> None:
        self.state_machine_arn = state_machine_arn
        self.executions: dict[str, Execution] = {}
        self.starts: list[str] = []  # every start asked for, by name, repeats included
        self.faults = Faults()

    @_faulty
    def start(self, name: str, job_id: str) -> str:
        self.starts.append(name)
        if name not in self.executions:
            arn = self.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"
            self.executions[name] = Execution(name, job_id, arn)
        return self.executions[name].arn

    @_faulty
    def running(self, execution_id: str) -> bool | None:
        for execution in self.executions.values():
            if execution_id in (execution.arn, execution.name):
                return execution.running
        return None

    def stop(self, name_or_arn: str) -> None:
        """The execution ended without its tasks' say (aborted, timed out)."""
        for execution in self.executions.values():
            if name_or_arn in (execution.arn, execution.name):
                execution.running = False

    def of_job(self, job_id: str) -> list[Execution]:
        return [e for e in self.executions.values() if e.job_id == job_id]


@dataclass(frozen=True)
class RecordedEvent:
    detail_type: str
    detail: dict[str, Any]
    bus: str


class _EventsClient:
    """The one EventBridge call EventPublisher makes, in memory."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.refusals = 0

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        if self.refusals:
            self.refusals -= 1
            return {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "InternalFailure"}]}
        self.entries.extend(Entries)
        return {"FailedEntryCount": 0, "Entries": [{"EventId": str(len(self.entries))}]}


class RecordingEventBus(_CanFail):
    """:class:`exportpipe.ports.EventBus`: the real :class:`EventPublisher` (the same details), over an
    in-memory bus that keeps what it accepted."""

    def __init__(self, bus: str = "exportpipe-events") -> None:
        self._client = _EventsClient()
        self._publisher = EventPublisher(self._client, bus)
        self.faults = Faults()

    def refuse(self, times: int = 1) -> None:
        """EventBridge refuses the next ``times`` events (``FailedEntryCount``): EventPublishError."""
        self._client.refusals += times

    @property
    def events(self) -> list[RecordedEvent]:
        """Every event the bus accepted, in order."""
        return [
            RecordedEvent(e["DetailType"], json.loads(e["Detail"]), e["EventBusName"])
            for e in self._client.entries
        ]

    def details(self, detail_type: str) -> list[dict[str, Any]]:
        """The details of the events of ``detail_type`` (``Export Delivered``, ``Export Failed``)."""
        return [e.detail for e in self.events if e.detail_type == detail_type]

    @_faulty
    def delivered(self, job: Job, bucket: str, manifest_key: str, manifest: Manifest) -> dict[str, Any]:
        return self._publisher.delivered(job, bucket, manifest_key, manifest)

    @_faulty
    def failed(self, job: Job) -> dict[str, Any]:
        return self._publisher.failed(job)


# ---- a source ------------------------------------------------------------------------------------


@dataclass
class FakeExport:
    upstream_id: str
    window: Window
    state: UpstreamState = UpstreamState.PENDING
    raw_state: str = "Pending"
    result_urls: list[str] = field(default_factory=list)
    created_at: str | None = None

    def snapshot(self) -> UpstreamExport:
        return UpstreamExport(
            upstream_id=self.upstream_id,
            state=self.state,
            raw_state=self.raw_state,
            result_urls=list(self.result_urls),
            created_at=self.created_at,
        )


@dataclass
class FakeFile:
    """A result file: its bytes, the length announced (None: close-delimited), and the chunks' size;
    ``on_read`` runs once, when its first chunk is read (for a test to act mid-copy)."""

    body: bytes
    content_length: int | None
    chunk_size: int = 64 * 1024
    on_read: Callable[[], None] | None = None


class FakeSourceClient(_CanFail):
    """A source client over a scripted upstream (:class:`~exportpipe.sources.base.SourceClient`).

    Exports are created PENDING, with ids ``<source>-1``, ``<source>-2``…; the test moves them on with
    :meth:`finish` (READY with its files) or :meth:`set_state`; :meth:`replay_export` runs one again
    (PENDING, same id). A download of an export that is no longer READY is refused (UpstreamError
    404), as an expired or canceled export's is. ``calls``
    lists every call as (operation, argument), failed ones included; one client serves every
    ``client_for`` (``closed`` counts its closes). Planted failures (:meth:`fail`) are raised when the
    call is made, before it does anything. ``created_at`` of an export is ``clock``'s time, if given.
    """

    def __init__(
        self,
        source: str = "fake",
        *,
        timezone: str | None = "UTC",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.source = source
        self.clock = clock
        self.timezone = timezone
        self.exports: dict[str, FakeExport] = {}
        self.files: dict[str, FakeFile] = {}
        self.calls: list[tuple[str, str]] = []
        self.closed = 0
        self.faults = Faults()
        self._ids = itertools.count(1)

    # ---- scripting ---------------------------------------------------------------------------

    @property
    def last(self) -> FakeExport:
        """The export created last."""
        return list(self.exports.values())[-1]

    def finish(
        self, *bodies: bytes, upstream_id: str | None = None, close_delimited: bool = False
    ) -> list[str]:
        """The export (the last one unless named) is READY with one file per body; their URLs."""
        export = self.exports[upstream_id] if upstream_id else self.last
        urls = [
            f"https://files.{self.source}.example/{export.upstream_id}/{n}" for n in range(1, len(bodies) + 1)
        ]
        for url, body in zip(urls, bodies, strict=True):
            self.serve(url, body, content_length=None if close_delimited else len(body))
        export.state, export.raw_state, export.result_urls = UpstreamState.READY, "Complete", urls
        return urls

    def serve(
        self, url: str, body: bytes, *, content_length: int | None = -1, chunk_size: int = 64 * 1024
    ) -> FakeFile:
        """Serve ``body`` at ``url``, announcing ``content_length`` (default: its length; None: none,
        a close-delimited download)."""
        length = len(body) if content_length == -1 else content_length
        self.files[url] = FakeFile(body, length, chunk_size)
        return self.files[url]

    def set_state(
        self, state: UpstreamState, *, upstream_id: str | None = None, raw_state: str | None = None
    ) -> None:
        """The export (the last one unless named) is in ``state`` upstream now."""
        export = self.exports[upstream_id] if upstream_id else self.last
        export.state, export.raw_state = state, raw_state or state.value.title()

    def count(self, operation: str) -> int:
        """How many calls of ``operation`` were made."""
        return sum(1 for op, _ in self.calls if op == operation)

    def _call(self, operation: str, argument: str) -> None:
        self.calls.append((operation, argument))
        error = self.faults.pop(operation, after=False)
        if error is not None:
            raise error

    # ---- the client --------------------------------------------------------------------------

    def create_export(self, definition: DefinitionBase, window: Window) -> UpstreamExport:
        self._call("create_export", f"{window.start.isoformat()}/{window.end.isoformat()}")
        upstream_id = f"{self.source}-{next(self._ids)}"
        created = self.clock().isoformat() if self.clock is not None else None
        self.exports[upstream_id] = FakeExport(upstream_id, window, created_at=created)
        return self.exports[upstream_id].snapshot()

    def get_export(self, upstream_id: str) -> UpstreamExport:
        self._call("get_export", upstream_id)
        if upstream_id not in self.exports:
            raise UpstreamError(f"no export {upstream_id}", status=404)
        return self.exports[upstream_id].snapshot()

    def replay_export(self, upstream_id: str) -> UpstreamExport:
        self._call("replay_export", upstream_id)
        export = self.exports[upstream_id]
        export.state, export.raw_state, export.result_urls = UpstreamState.PENDING, "Replayed", []
        return export.snapshot()

    def cancel_export(self, upstream_id: str) -> bool:
        self._call("cancel_export", upstream_id)
        export = self.exports.get(upstream_id)
        if export is None or export.state is not UpstreamState.PENDING:
            return False
        export.state, export.raw_state = UpstreamState.CANCELED, "Canceled"
        return True

    def open_result(self, url: str) -> AbstractContextManager[ResultStream]:
        self._call("open_result", url)
        owner = next((e for e in self.exports.values() if url in e.result_urls), None)
        served = self.files.get(url)
        if served is None or (owner is not None and owner.state is not UpstreamState.READY):
            raise UpstreamError(f"download refused: {url}", status=404)
        return nullcontext(
            ResultStream(
                chunks=self._chunks(served),
                content_length=served.content_length,
                content_type="application/octet-stream",
            )
        )

    @staticmethod
    def _chunks(served: FakeFile) -> Iterator[bytes]:
        if served.on_read is not None:
            hook, served.on_read = served.on_read, None
            hook()
        for i in range(0, len(served.body), served.chunk_size):
            yield served.body[i : i + served.chunk_size]

    def files_timezone(self, definition: DefinitionBase) -> str | None:
        return self.timezone

    def close(self) -> None:
        self.closed += 1


CSV = ResultFormat(extension="csv", content_type="text/csv", checker="csv")
JSON = ResultFormat(extension="json", content_type="application/json", checker="json")


class FakeDefinition(DefinitionBase):
    """The fake source's definition: the base's fields and a result format (CSV or JSON); one
    export covers a week."""

    source: Literal["fake"]
    format: Literal["csv", "json"] = "csv"
    longest_window: ClassVar[timedelta] = timedelta(days=7)

    @property
    def result_format(self) -> ResultFormat:
        return JSON if self.format == "json" else CSV


def fake_definition(
    name: str = "fake-things", *, start: str = "2026-11-20T00:00:00Z", **fields: Any
) -> dict[str, Any]:
    """A definition payload of the fake source."""
    return {"source": "fake", "name": name, "start": start, **fields}


def fake_spec(
    client: SourceClient[Any], *, definition: type[DefinitionBase] = FakeDefinition, **changes: Any
) -> SourceSpec:
    """The fake source's spec (its source id is ``client.source``), whose client, whatever the
    connection, is ``client``; ``changes``: other fields of the spec (``poll``, ``recovery``…)."""
    spec = SourceSpec(
        source=client.source,
        definition=definition,
        make_client=lambda _context: client,
        connection_setting=f"{client.source.upper()}_SECRET_ARN",
        allowed_hosts=(f"files.{client.source}.example",),
    )
    return dataclasses.replace(spec, **changes)


@contextmanager
def registered(*specs: SourceSpec) -> Iterator[None]:
    """The specs are sources of the registry (members of the definition union) inside the block only."""
    saved = dict(registry.SOURCES)
    registry.SOURCES.update({spec.source: spec for spec in specs})
    registry.definition_adapter.cache_clear()
    try:
        yield
    finally:
        registry.SOURCES.clear()
        registry.SOURCES.update(saved)
        registry.definition_adapter.cache_clear()


# ---- all of it -----------------------------------------------------------------------------------


def fake_settings(**settings: Any) -> Settings:
    """Settings with the template's defaults, by field name (``poll_max_attempts=3``)."""
    base = {
        "state_table": "exportpipe-jobs",
        "results_bucket": "exportpipe-results",
        "event_bus": "exportpipe-events",
    }
    return Settings.model_validate({**base, **settings})


def fake_deps(
    *,
    client: SourceClient[Any] | None = None,
    store: JobStore | None = None,
    bucket: ResultsBucket | None = None,
    workflow: Workflow | None = None,
    publisher: EventBus | None = None,
    clock: Callable[[], datetime] | None = None,
    remaining_seconds: Callable[[], float] | None = None,
    secrets: Mapping[str, dict[str, Any]] | None = None,
    **settings: Any,
) -> Deps:
    """Deps of fakes: each port given, or a new fake; the store on ``clock`` (a new FakeClock).

    ``client`` serves every connection. Without one, a connection's client is built by its source's
    registered spec, as :func:`~exportpipe.sources.registry.build_client` builds it: from the
    connection's secret in ``secrets`` (by the id the registry names; no ``secrets``: empty
    credentials), and a REPLAY source's client must be able to replay. ``read_secret`` reads
    ``secrets`` (ConfigurationError for a secret not there)."""
    clock = clock or FakeClock()
    bucket = bucket if bucket is not None else InMemoryBucket()
    resolved = fake_settings(**{"results_bucket": bucket.name, **settings})

    def read_secret(secret_id: str) -> dict[str, Any]:
        if secrets is None or secret_id not in secrets:
            raise ConfigurationError(f"secret {secret_id} does not exist")
        return dict(secrets[secret_id])

    def client_for(connection: Connection) -> SourceClient[Any]:
        if client is not None:
            return client
        spec = registry.spec_for(connection.source)
        secret = registry.connection_secret(connection, resolved)
        context = ClientContext(
            settings=resolved,
            credentials=read_secret(secret) if secrets is not None else {},
            allowed_hosts=(*spec.allowed_hosts, *resolved.allowed_download_hosts),
            remaining_seconds=remaining_seconds,
        )
        built = spec.make_client(context)
        if spec.recovery is Recovery.REPLAY and not isinstance(built, Replayable):
            built.close()
            raise ConfigurationError(
                f"source {connection.source!r} recovers by replay but its client cannot replay"
            )
        return built

    return Deps(
        settings=resolved,
        store=store if store is not None else InMemoryJobStore(ttl_days=resolved.job_ttl_days, clock=clock),
        bucket=bucket,
        workflow=workflow if workflow is not None else RecordingWorkflow(),
        publisher=publisher if publisher is not None else RecordingEventBus(resolved.event_bus),
        client_for=client_for,
        clock=clock,
        remaining_seconds=remaining_seconds,
        read_secret=read_secret,
    )
