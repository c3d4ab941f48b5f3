"""The small interface every upstream client implements, and the normalised upstream state."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from exportpipe.config import Settings
from exportpipe.models.definition import DefinitionBase, Window


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
    created_at: str | None = None  # as the upstream wrote it (its own timezone and offset, if any)


@dataclass(frozen=True)
class ResultStream:
    """An open result download: its byte chunks and what the server announced about them."""

    chunks: Iterator[bytes]
    content_length: int | None
    content_type: str


D = TypeVar("D", bound=DefinitionBase, contravariant=True)


class SourceClient(Protocol[D]):
    """The small interface every upstream client implements, for its source's definition ``D``."""

    source: str
    file_extension: str
    # What the copier checks each result file against and counts its records by: a name in
    # exportpipe.formats.CHECKERS (the extension, or a dialect of it such as "csv-terminated").
    file_format: str
    content_type: str

    def create_export(self, definition: D, window: Window) -> UpstreamExport: ...

    def get_export(self, upstream_id: str) -> UpstreamExport: ...

    # Ask the upstream to stop an export nothing waits for any more; False when it had already ended.
    def cancel_export(self, upstream_id: str) -> bool: ...

    def open_result(self, url: str) -> AbstractContextManager[ResultStream]: ...

    def files_timezone(self, definition: D) -> str | None: ...

    def close(self) -> None: ...


JsonDict = dict[str, Any]


@dataclass(frozen=True)
class ClientContext:
    """What a source's client is built from, per invocation."""

    settings: Settings
    credentials: dict[str, Any]  # the connection's secret (JSON)
    allowed_hosts: tuple[str, ...]  # the source's own download hosts, then the deployment's extra ones
    remaining_seconds: Callable[[], float] | None = None


@dataclass(frozen=True)
class SourceSpec:
    """A source as a plug-in: what the services need to know of it, declared in its own folder.

    - ``definition``: its definition model (a member of the union :func:`parse_definition` builds);
    - ``make_client``: its client, from the connection's credentials and the settings;
    - ``connection_setting``: the setting (environment variable) naming its connection (a secret);
    - ``allowed_hosts``: hosts its result downloads may come from or redirect to.
    """

    source: str
    definition: type[DefinitionBase]
    make_client: Callable[[ClientContext], SourceClient[Any]]
    connection_setting: str
    allowed_hosts: tuple[str, ...] = ()
