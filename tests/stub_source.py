"""A stub source for tests: a spec, its definition and a fake client over an in-memory upstream.

It differs from Pardot wherever the source seam lets a source differ: each definition chooses its
result format (JSON, or zipped XLSX), a failed or expired export is replayed (``Recovery.REPLAY``)
instead of created again, and its exports are checked on a fast poll policy of its own. A test
registers it with :func:`registered` (and takes it out after); nothing in the runtime package knows it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar, Literal

import pytest

from exportpipe.errors import UpstreamError
from exportpipe.models.definition import DefinitionBase, ResultFormat, Window
from exportpipe.sources import registry
from exportpipe.sources.base import (
    ClientContext,
    PollPolicy,
    Recovery,
    ResultStream,
    SourceSpec,
    UpstreamExport,
    UpstreamState,
)

JSON = ResultFormat(extension="json", content_type="application/json", checker="json")
XLSX = ResultFormat(
    extension="xlsx",
    content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    checker="xlsx",
)
FORMATS = {"json": JSON, "xlsx": XLSX}

# first check 2 s after a replay, then 3, 9, 20, 20 … (the settings' default: 30, 60 … 900)
FAST = PollPolicy(first_wait=2, base=3, max=20, factor=3)


class StubDefinition(DefinitionBase):
    source: Literal["stub"]
    things: list[str]
    format: Literal["json", "xlsx"] = "json"
    longest_window: ClassVar[timedelta] = timedelta(days=1)

    @property
    def result_format(self) -> ResultFormat:
        return FORMATS[self.format]


def xlsx_bytes(rows: list[list[str]]) -> bytes:
    """A small zip shaped like an XLSX workbook (what the ZIP/XLSX checker reads is the zip)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as book:
        book.writestr("[Content_Types].xml", "<Types/>")
        book.writestr("xl/worksheets/sheet1.xml", json.dumps(rows))
    return out.getvalue()


@dataclass
class StubExport:
    upstream_id: str
    definition: StubDefinition
    window: Window
    # the states its next reads answer, in order; the last one stays
    states: list[UpstreamState]
    files: list[bytes]
    replays: int = 0


@dataclass
class StubUpstream:
    """The upstream the fake client talks to; a test scripts each export's states and files."""

    exports: dict[str, StubExport] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (method, upstream id)
    # what a new export does: its states and its files, from its definition
    script: Callable[[StubDefinition], tuple[list[UpstreamState], list[bytes]]] = lambda d: (
        [UpstreamState.READY],
        [b"[]"],
    )
    # what a replayed export does next
    replay_script: Callable[[StubExport], list[UpstreamState]] = lambda e: [UpstreamState.READY]

    def called(self, method: str) -> list[str]:
        return [upstream_id for m, upstream_id in self.calls if m == method]

    def view(self, export: StubExport) -> UpstreamExport:
        state = export.states[0]
        if len(export.states) > 1:
            export.states.pop(0)
        urls = [f"https://files.stub.example/{export.upstream_id}/{n}" for n in range(len(export.files))]
        return UpstreamExport(
            upstream_id=export.upstream_id,
            state=state,
            raw_state=f"{state.value.lower()} ({export.replays} replays)",
            result_urls=urls if state is UpstreamState.READY else [],
        )


class StubClient:
    """A fake client (no network): every call is recorded on its upstream."""

    source = "stub"

    def __init__(self, context: ClientContext, upstream: StubUpstream | None = None) -> None:
        self.context = context
        self.upstream = upstream or StubUpstream()
        self.closed = False

    def create_export(self, definition: StubDefinition, window: Window) -> UpstreamExport:
        upstream_id = f"stub-{uuid.uuid4().hex[:12]}"  # unique in the stack's table, across tests
        self.upstream.calls.append(("create_export", upstream_id))
        states, files = self.upstream.script(definition)
        export = StubExport(upstream_id, definition, window, states, files)
        self.upstream.exports[upstream_id] = export
        return UpstreamExport(upstream_id=upstream_id, state=UpstreamState.PENDING, raw_state="queued")

    def get_export(self, upstream_id: str) -> UpstreamExport:
        self.upstream.calls.append(("get_export", upstream_id))
        return self.upstream.view(self.upstream.exports[upstream_id])

    def replay_export(self, upstream_id: str) -> UpstreamExport:
        self.upstream.calls.append(("replay_export", upstream_id))
        export = self.upstream.exports[upstream_id]
        export.replays += 1
        export.states = self.upstream.replay_script(export)
        return UpstreamExport(upstream_id=upstream_id, state=UpstreamState.PENDING, raw_state="queued again")

    def cancel_export(self, upstream_id: str) -> bool:
        self.upstream.calls.append(("cancel_export", upstream_id))
        return True

    @contextmanager
    def open_result(self, url: str) -> Iterator[ResultStream]:
        upstream_id, n = url.removeprefix("https://files.stub.example/").split("/")
        self.upstream.calls.append(("open_result", upstream_id))
        export = self.upstream.exports[upstream_id]
        if export.states[0] is UpstreamState.EXPIRED:
            raise UpstreamError(f"download of {url} refused: 410")
        data = export.files[int(n)]
        yield ResultStream(
            chunks=iter([data[i : i + 7] for i in range(0, len(data), 7)]),
            content_length=None,  # close-delimited: only the format shows a cut
            content_type="application/octet-stream",
        )

    def files_timezone(self, definition: StubDefinition) -> str | None:
        return "UTC"

    def close(self) -> None:
        self.closed = True


def stub_spec(upstream: StubUpstream | None = None, **changes: Any) -> SourceSpec:
    """The stub's spec, its clients all talking to ``upstream``."""
    spec = SourceSpec(
        source="stub",
        definition=StubDefinition,
        make_client=lambda context: StubClient(context, upstream),
        connection_setting="STUB_SECRET_ARN",
        allowed_hosts=("files.stub.example",),
        poll=FAST,
        recovery=Recovery.REPLAY,
    )
    return dataclasses.replace(spec, **changes)


@contextmanager
def registered(spec: SourceSpec) -> Iterator[SourceSpec]:
    """``spec`` in the registry (the definition union rebuilt with it) until the block ends."""
    with pytest.MonkeyPatch.context() as patched:
        patched.setitem(registry.SOURCES, spec.source, spec)
        registry.definition_adapter.cache_clear()
        try:
            yield spec
        finally:
            patched.undo()
            registry.definition_adapter.cache_clear()
