"""A source added in a test — a definition model, a client, a spec in the registry — runs through the
services unchanged: planned, created, polled pending then ready, copied and delivered, with the
fakes of the ports. Nothing in ``exportpipe.services`` knows it; once the test is over, neither does
the registry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from datetime import timedelta
from typing import Any, ClassVar, Literal

import pytest
from exportpipe_dev.fakes import (
    FakeClock,
    InMemoryBucket,
    InMemoryJobStore,
    RecordingEventBus,
    RecordingWorkflow,
    fake_deps,
    registered,
)

from exportpipe.errors import InvalidDefinitionError
from exportpipe.models.definition import DefinitionBase, ResultFormat, Window
from exportpipe.models.job import JobStatus
from exportpipe.models.layout import manifest_key
from exportpipe.services.check_status import check_status
from exportpipe.services.copy_result import copy_result
from exportpipe.services.start_export import start_export
from exportpipe.sources import registry
from exportpipe.sources.base import (
    ClientContext,
    PollPolicy,
    ResultStream,
    SourceSpec,
    UpstreamExport,
    UpstreamState,
)
from exportpipe.sources.registry import parse_definition

ENTRIES = [{"id": 1, "amount": "12.50"}, {"id": 2, "amount": "7.00"}, {"id": 3, "amount": "1.25"}]


class LedgerDefinition(DefinitionBase):
    """The ledger's entries of one account, as JSON; one export covers a day."""

    source: Literal["ledger"]
    account: str
    longest_window: ClassVar[timedelta] = timedelta(days=1)

    def default_dataset(self) -> str:
        return "entries"

    @property
    def result_format(self) -> ResultFormat:
        return ResultFormat(extension="json", content_type="application/json", checker="json")


class LedgerClient:
    """A ledger upstream that is ready on its second poll, with one JSON file per export."""

    source = "ledger"

    def __init__(self, context: ClientContext, upstream: dict[str, Any]) -> None:
        self.context = context
        self.upstream = upstream  # what the ledger holds, shared by every client built

    def create_export(self, definition: LedgerDefinition, window: Window) -> UpstreamExport:
        export_id = f"L{len(self.upstream['exports']) + 1}"
        self.upstream["exports"][export_id] = {"account": definition.account, "polls": 0}
        return UpstreamExport(export_id, UpstreamState.PENDING, "queued")

    def get_export(self, upstream_id: str) -> UpstreamExport:
        export = self.upstream["exports"][upstream_id]
        export["polls"] += 1
        if export["polls"] < 2:
            return UpstreamExport(upstream_id, UpstreamState.PENDING, "running")
        url = f"https://files.ledger.example/{upstream_id}.json"
        return UpstreamExport(upstream_id, UpstreamState.READY, "done", result_urls=[url])

    def cancel_export(self, upstream_id: str) -> bool:
        return False

    def open_result(self, url: str) -> AbstractContextManager[ResultStream]:
        body = json.dumps(ENTRIES).encode()
        return nullcontext(
            ResultStream(
                chunks=iter([body[:7], body[7:]]), content_length=len(body), content_type="application/json"
            )
        )

    def files_timezone(self, definition: LedgerDefinition) -> str | None:
        return "Europe/Paris"

    def close(self) -> None:
        self.upstream["closed"] += 1


@pytest.fixture
def ledger() -> Iterator[dict[str, Any]]:
    upstream: dict[str, Any] = {"exports": {}, "contexts": [], "closed": 0}

    def make_client(context: ClientContext) -> LedgerClient:
        upstream["contexts"].append(context)
        return LedgerClient(context, upstream)

    spec = SourceSpec(
        source="ledger",
        definition=LedgerDefinition,
        make_client=make_client,
        connection_setting="LEDGER_SECRET_ARN",
        allowed_hosts=("files.ledger.example",),
        poll=PollPolicy(base=10),
    )
    with registered(spec):
        yield upstream
    with pytest.raises(InvalidDefinitionError, match="source"):  # gone from the registry again
        parse_definition({"source": "ledger", "name": "x", "account": "a", "start": "2026-11-23T00:00:00Z"})
    assert "ledger" not in registry.SOURCES


def test_a_source_added_in_a_test_runs_through_the_services_unchanged(ledger: dict[str, Any]) -> None:
    clock = FakeClock()
    store, bucket, events = InMemoryJobStore(clock=clock), InMemoryBucket(), RecordingEventBus()
    deps = fake_deps(store=store, bucket=bucket, workflow=RecordingWorkflow(), publisher=events, clock=clock)
    definition = {
        "source": "ledger",
        "name": "ledger-acme",
        "account": "acme",
        "start": "2026-11-23T00:00:00Z",
    }

    started = start_export({"definition": definition, "scheduled_time": clock().isoformat()}, deps)
    assert (started["status"], started["upstream_id"]) == ("EXPORTING", "L1")
    job_id = started["job_id"]
    assert store.get(job_id).window.length == timedelta(days=1)  # the source's own longest window

    pending = check_status({"job_id": job_id, "attempt": 0}, deps)
    assert (pending["status"], pending["wait_seconds"]) == ("EXPORTING", 10)  # the source's own policy
    clock.advance(pending["wait_seconds"])
    ready = check_status({"job_id": job_id, "attempt": pending["attempt"]}, deps)
    assert ready["status"] == "READY"

    delivered = copy_result({"job_id": job_id}, deps)
    assert delivered["status"] == "DELIVERED"
    job = store.get(job_id)
    folder = "exports/source=ledger/dataset=entries/dt=2026-11-23/export=" + job_id
    assert job.status is JobStatus.DELIVERED and job.manifest_key == manifest_key(folder)
    assert bucket.keys(folder + "/") == [f"{folder}/_manifest.json", f"{folder}/part-00001.json"]
    assert json.loads(bucket.body(f"{folder}/part-00001.json")) == ENTRIES
    manifest = json.loads(bucket.body(manifest_key(folder)))
    assert (manifest["source"], manifest["format"], manifest["timezone"]) == (
        "ledger",
        "json",
        "Europe/Paris",
    )
    assert manifest["totals"]["records"] == len(ENTRIES)  # counted by the format the client names
    [event] = [e for e in events.events if e.detail_type == "Export Delivered"]
    assert event.detail["source"] == "ledger" and event.detail["dataset"] == "entries"
    assert store.watermark("ledger-acme") == job.window.end
    # every client came from the spec, with its download hosts, and was closed after use
    assert ledger["contexts"] and all(
        c.allowed_hosts == ("files.ledger.example",) for c in ledger["contexts"]
    )
    assert ledger["closed"] == len(ledger["contexts"])
