"""Unit tests of the services against the in-memory fakes of the ports (``exportpipe_dev.fakes``): the
decision logic of each use case, with a clock the test moves and an upstream it scripts. The whole
tier runs in a few seconds; the moto-backed functional and end-to-end tiers check the same flows
through the AWS adapters and the real state machine.

Every test here uses the fake source (``exportpipe_dev.fakes.FakeDefinition``, CSV by default),
registered for the test: the services know it only through the registry, as they know Pardot.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from exportpipe_dev.fakes import (
    FakeClock,
    FakeSourceClient,
    InMemoryBucket,
    InMemoryJobStore,
    RecordingEventBus,
    RecordingWorkflow,
    fake_definition,
    fake_deps,
    fake_spec,
    registered,
)

from exportpipe.models.job import Job
from exportpipe.models.layout import export_prefix, manifest_key
from exportpipe.runtime import Deps
from exportpipe.services.check_status import check_status
from exportpipe.services.copy_result import copy_result
from exportpipe.services.start_export import continue_backfill, start_export

DELIVERED = "Export Delivered"
FAILED = "Export Failed"


@dataclass
class World:
    """The fakes behind one Deps, and the calls a workflow (or a schedule) would make."""

    clock: FakeClock
    client: FakeSourceClient
    store: InMemoryJobStore
    bucket: InMemoryBucket
    workflow: RecordingWorkflow
    events: RecordingEventBus
    deps: Deps
    continued: list[dict[str, Any]] = field(default_factory=list)

    def configure(self, **settings: Any) -> None:
        """The same fakes under other settings (``poll_max_attempts=2``...)."""
        self.deps = fake_deps(
            client=self.client,
            store=self.store,
            bucket=self.bucket,
            workflow=self.workflow,
            publisher=self.events,
            clock=self.clock,
            **settings,
        )

    # ---- the tasks -------------------------------------------------------------------------

    def start(self, definition: dict[str, Any] | None = None, **event: Any) -> dict[str, Any]:
        """A schedule tick now (or the event given)."""
        if not ({"window", "until", "scheduled_time"} & set(event)):
            event["scheduled_time"] = self.clock().isoformat()
        return start_export({"definition": definition or fake_definition(), **event}, self.deps)

    def check(self, job_id: str, attempt: int = 0, **event: Any) -> dict[str, Any]:
        task = {"job_id": job_id, "attempt": attempt, "workflow_starts_next_window": True, **event}
        return self._then(dict(check_status(task, self.deps)))

    def record_failure(self, job_id: str, error_type: str, message: str = "boom") -> dict[str, Any]:
        """The workflow's failure recorder, after a task failed with ``error_type``."""
        cause = json.dumps({"errorMessage": message, "errorType": error_type, "stackTrace": []})
        return self.check(job_id, 3, error={"Error": error_type, "Cause": cause})

    def copy(self, job_id: str) -> dict[str, Any]:
        return self._then(
            dict(copy_result({"job_id": job_id, "workflow_starts_next_window": True}, self.deps))
        )

    def _then(self, answer: dict[str, Any]) -> dict[str, Any]:
        """The workflow's Delivered state after a delivery: start_export continues a backfill (a
        failure is caught, as the state machine's Catch does: the next tick goes on)."""
        if answer["status"] == "DELIVERED":
            try:
                self.continued.append(continue_backfill({"continue_after": answer["job_id"]}, self.deps))
            except Exception as exc:
                self.continued.append({"error": repr(exc)})
        return answer

    # ---- getting somewhere -----------------------------------------------------------------

    def started(self, definition: dict[str, Any] | None = None, **event: Any) -> str:
        """A job whose upstream export is created (EXPORTING); its id."""
        out = self.start(definition, **event)
        assert out["status"] == "EXPORTING", out
        return str(out["job_id"])

    def ready(self, *bodies: bytes, definition: dict[str, Any] | None = None) -> str:
        """A job READY with one file per body; its id."""
        job_id = self.started(definition)
        self.client.finish(*bodies, upstream_id=self.job(job_id).upstream_id)
        assert self.check(job_id)["status"] == "READY"
        return job_id

    def deliver(self, job_id: str, *bodies: bytes) -> dict[str, Any]:
        """Finish the job's upstream export with ``bodies``, poll it READY and copy it."""
        self.client.finish(*bodies, upstream_id=self.job(job_id).upstream_id)
        assert self.check(job_id)["status"] == "READY"
        out = self.copy(job_id)
        assert out["status"] == "DELIVERED", out
        return out

    # ---- looking -----------------------------------------------------------------------------

    def job(self, job_id: str) -> Job:
        return self.store.get(job_id)

    def folder(self, job_id: str) -> str:
        return export_prefix(self.deps.settings.results_prefix, self.job(job_id))

    def landed(self, job_id: str) -> list[str]:
        """The keys in the job's folder, relative to it."""
        folder = self.folder(job_id) + "/"
        return [k.removeprefix(folder) for k in self.bucket.keys(folder)]

    def manifest(self, job_id: str) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.bucket.body(manifest_key(self.folder(job_id))))
        return body


CSV_1 = b"id,name\n1,ann\n2,bob\n"
CSV_2 = b'id,name\n3,"cy, the third"\n'
CSV_3 = b"id,name\n4,dee\n5,eve\n6,fay\n"


@pytest.fixture
def world() -> Iterator[World]:
    clock = FakeClock()
    client = FakeSourceClient(clock=clock)
    store = InMemoryJobStore(clock=clock)
    bucket = InMemoryBucket()
    workflow = RecordingWorkflow()
    events = RecordingEventBus()
    deps = fake_deps(
        client=client, store=store, bucket=bucket, workflow=workflow, publisher=events, clock=clock
    )
    with registered(fake_spec(client)):
        yield World(clock, client, store, bucket, workflow, events, deps)
