"""The small interface every upstream client implements, and the normalised upstream state."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from exportpipe.definitions import PardotDefinition, Window


class UpstreamState(StrEnum):
    PENDING = "PENDING"  # queued or running upstream
    READY = "READY"  # files can be downloaded
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"  # the export's files are gone


@dataclass(frozen=True)
class UpstreamExport:
    upstream_id: str
    state: UpstreamState
    raw_state: str
    result_urls: list[str] = field(default_factory=list)
    detail: str | None = None
    created_at: str | None = None  # as the upstream wrote it (Pardot: in the user's timezone, with offset)


@dataclass(frozen=True)
class ResultStream:
    """An open result download: its byte chunks and what the server announced about them."""

    chunks: Iterator[bytes]
    content_length: int | None
    content_type: str


class SourceClient(Protocol):
    source: str
    file_extension: str
    # What the copier checks each result file against and counts its records by: a name in
    # exportpipe.formats.CHECKERS (the extension, or a dialect of it such as "csv-terminated").
    file_format: str
    content_type: str
    count_records: bool

    def create_export(self, definition: PardotDefinition, window: Window) -> UpstreamExport: ...

    def get_export(self, upstream_id: str) -> UpstreamExport: ...

    # Ask the upstream to stop an export nothing waits for any more; False when it had already ended.
    def cancel_export(self, upstream_id: str) -> bool: ...

    def open_result(self, url: str) -> AbstractContextManager[ResultStream]: ...

    def files_timezone(self, definition: PardotDefinition) -> str | None: ...

    def close(self) -> None: ...


JsonDict = dict[str, Any]
