"""impact.com Advocate (SaaSquatch) Export API client.

HTTP Basic with the tenant's API key as the password and no username, the tenant alias a path
segment: ``{base_url}/api/v1/{tenant_alias}/export…``. Create (``POST /export``: 201 + Export),
lookup (``GET /export/{id}``), list (``GET /export/history/list?limit&offset``: the last resort for
an export whose id was lost, see :meth:`AdvocateClient.find_export`) and download (``GET
/export/{id}/download``: 303 to a signed storage URL; the Authorization header goes to the API host
only, never to the storage host). There is no cancel endpoint.

"Zipped XLSX" (the older spec's words; the packaging is undocumented [U]) is read as the sandbox
does: the ``.xlsx`` package itself, which is a zip. A download that is instead a zip *holding* the
workbook (its first entry named ``*.xlsx``) is unwrapped as it streams (:func:`unwrap_workbook`), so
the ``.xlsx`` lands either way: its entry's CRC-32 is checked, and the wrapper's announced length.

States: ``PENDING`` → PENDING, ``COMPLETED`` → READY (its one file: the download URL, which is
followed at copy time, so the short-lived signed URL is never stored), ``ABORTED`` → FAILED (the
services create it again, a bounded number of times), ``EXPIRED`` → EXPIRED.

Tolerances where the public record is open: create answers 200 or 201; a status in another case is
read upper-cased; ``base_url`` may be the origin or end in ``/api/v1``; a 429 or 5xx (none is
documented: API-key calls are "not rate limited") goes through the shared mechanisms (retries of
idempotent calls within the call's wait budget, ``Retry-After`` handed to the workflow).

Window bounds: the reference leaves the inclusiveness of ``*Since``/``*Before`` open [U]; the sandbox
(like the platform's GraphQL ``_gte``/``_lt``) reads since inclusive and before exclusive, the
default here (``window_bounds: "since-inclusive"`` in the secret). Dates are whole milliseconds, so
the half-open window [start, end) is sent as since = ⌈start⌉, before = ⌈end⌉ under that reading and
shifted by 1 ms on the end a reading excludes/includes otherwise (``inclusive``: both ends included,
``exclusive``: both excluded, ``before-inclusive``: since excluded, before included); consecutive
windows neither overlap nor leave a gap under any of them. A REWARD export's window goes into its
reward filter (``_gte`` start, ``_lt`` end: GraphQL's own bounds), which the setting does not change.
"""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

import requests
from pydantic import Field

from exportpipe.errors import (
    DownloadIncompleteError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamUnavailableError,
    scrub,
)
from exportpipe.http import (
    exact_hosts,
    guard_session,
    host_of,
    in_call_waits,
    json_object,
    make_session,
    open_download,
    request_timeout,
    upstream_refusal,
)
from exportpipe.models.definition import Window
from exportpipe.sources.advocate.catalog import TIMESTAMP_PARAMS
from exportpipe.sources.advocate.definition import (
    WINDOW_END,
    XLSX,
    AdvocateDefinition,
    ceil_ms,
    epoch_ms,
    iter_reward_window,
)
from exportpipe.sources.base import ConnectionCredentials, ResultStream, UpstreamExport, UpstreamState
from exportpipe.zipstream import ZipStreamWalker

DEFAULT_BASE_URL = "https://app.referralsaasquatch.com"
LIST_PAGE = 100  # exports per page when listing
LIST_PAGES = 10  # pages read at most looking for a lost export (the newest 1000)

_STATES = {
    "PENDING": UpstreamState.PENDING,
    "COMPLETED": UpstreamState.READY,
    "ABORTED": UpstreamState.FAILED,
    "EXPIRED": UpstreamState.EXPIRED,
}
# (since shift, before shift) in ms from the half-open [⌈start⌉, ⌈end⌉), per reading of the bounds
_BOUND_SHIFTS = {
    "since-inclusive": (0, 0),
    "inclusive": (0, -1),
    "exclusive": (-1, 0),
    "before-inclusive": (-1, -1),
}


class AdvocateCredentials(ConnectionCredentials):
    """The Secrets Manager secret's JSON."""

    label = "Advocate"

    tenant_alias: str = Field(pattern=r"^[A-Za-z0-9_-]{1,100}$")
    api_key: str = Field(min_length=1)
    base_url: str = DEFAULT_BASE_URL
    window_bounds: Literal["since-inclusive", "inclusive", "exclusive", "before-inclusive"] = (
        "since-inclusive"
    )


@dataclass(frozen=True)
class ListedExport:
    """An export of the history: its state, and what it was created as."""

    export: UpstreamExport
    name: str | None
    type: str | None


@dataclass(frozen=True)
class ExportPage:
    """One page of the export history, newest first."""

    exports: list[ListedExport]
    total: int  # exports the tenant has in all (``totalCount``)


class AdvocateClient:
    source = "advocate"

    def __init__(
        self,
        credentials: AdvocateCredentials,
        *,
        session: requests.Session | None = None,
        timeout: float = 30.0,
        allowed_hosts: tuple[str, ...] = (),
        sleep: Callable[[float], None] = time.sleep,
        remaining_seconds: Callable[[], float] | None = None,
    ) -> None:
        self._creds = credentials
        self._session = session or make_session()
        self._timeout = timeout
        self._allowed = allowed_hosts
        self._sleep = sleep
        self._remaining = remaining_seconds
        base = credentials.base_url.rstrip("/")
        base = base.removesuffix("/api/v1")
        self._api = f"{base}/api/v1/{quote(credentials.tenant_alias, safe='')}"
        self._auth_hosts = frozenset({host_of(base)})
        guard_session(self._session, {*self._auth_hosts, *exact_hosts(allowed_hosts)})
        key = base64.b64encode(f":{credentials.api_key}".encode()).decode("ascii")
        self._auth = {"Authorization": f"Basic {key}"}

    # ---- plumbing ----------------------------------------------------------------------------

    def _call(
        self, method: str, path: str, *, json_body: Any = None, params: dict[str, int] | None = None
    ) -> dict[str, Any]:
        what = f"Advocate {method} {path}"
        with in_call_waits(self._sleep):
            try:
                resp = self._session.request(
                    method,
                    f"{self._api}{path}",
                    json=json_body,
                    params=params,
                    headers={**self._auth, "Accept": "application/json"},
                    timeout=request_timeout(self._timeout, self._remaining),
                    allow_redirects=False,  # the API does not redirect; a redirect would take the key
                )
            except requests.RequestException as exc:
                raise UpstreamUnavailableError(f"{what} failed: {scrub(str(exc))}") from exc
        body = json_object(resp)
        status = resp.status_code
        code = body.get("apiErrorCode")
        if status == 429 or status >= 500:
            raise upstream_refusal(
                status, resp.headers, f"{what} answered {status}: {_message(body)}", code=code
            )
        if status in (401, 403) or (status == 404 and code == "TENANT_NOT_FOUND"):
            raise UpstreamAuthError(
                f"{what}: the API key or tenant alias was refused ({status} {code}): {_message(body)}",
                status=status,
                code=code,
            )
        if 300 <= status < 400:
            raise UpstreamError(
                f"{what} answered {status} (to {scrub(resp.headers.get('Location', ''))!r}); "
                "API calls follow no redirects",
                status=status,
                code=code,
            )
        if status >= 400:
            raise UpstreamError(
                f"{what} answered {status} {code}: {_message(body)}", status=status, code=code
            )
        return body

    # ---- the SourceClient protocol -----------------------------------------------------------

    def export_body(self, definition: AdvocateDefinition, window: Window) -> dict[str, Any]:
        """The ExportStub that exports ``window`` of ``definition``."""
        start, end = ceil_ms(window.start), ceil_ms(window.end)
        params: dict[str, Any] = {
            key: epoch_ms(value) if key in TIMESTAMP_PARAMS else value
            for key, value in definition.params.items()
        }
        names = definition.window_params()
        if names is not None:
            since_shift, before_shift = _BOUND_SHIFTS[self._creds.window_bounds]
            params[names[0]] = start + since_shift
            params[names[1]] = end + before_shift
        if definition.type == "REWARD":
            conditions = dict(iter_reward_window(definition, start, end))
            given = params.get("filter")
            if conditions:
                params["filter"] = {"AND": [given, conditions]} if given else conditions
            if "at" in params:
                params["at"] = end if params["at"] == WINDOW_END else epoch_ms(params["at"])
        return {
            "type": definition.type,
            "format": definition.format,
            "name": export_name(definition, window),
            "params": params or None,
        }

    def create_export(self, definition: AdvocateDefinition, window: Window) -> UpstreamExport:
        body = self._call("POST", "/export", json_body=self.export_body(definition, window))
        return self._export(body)

    def get_export(self, upstream_id: str) -> UpstreamExport:
        return self._export(self._call("GET", f"/export/{quote(upstream_id, safe='')}"))

    def list_exports(self, *, limit: int = LIST_PAGE, offset: int = 0) -> ExportPage:
        """One page of the tenant's exports, newest first (``GET /export/history/list``)."""
        body = self._call("GET", "/export/history/list", params={"limit": limit, "offset": offset})
        data = body.get("data")
        if not isinstance(data, list):
            raise UpstreamError(f"Advocate export list lacks data: {str(body)[:300]}")
        exports = [
            ListedExport(self._export(item), _text(item.get("name")), _text(item.get("type")))
            for item in data
            if isinstance(item, dict)
        ]
        total = body.get("totalCount")
        return ExportPage(exports, total if isinstance(total, int) else offset + len(exports))

    def find_export(
        self, definition: AdvocateDefinition, window: Window, *, pages: int = LIST_PAGES
    ) -> UpstreamExport | None:
        """The newest export this client created for ``window`` of ``definition`` (by its name), from
        the newest ``pages`` × :data:`LIST_PAGE` of the history; None when none is there. The last
        resort for an export whose id was lost (no service uses it yet)."""
        name = export_name(definition, window)
        offset = 0
        for _ in range(pages):
            page = self.list_exports(limit=LIST_PAGE, offset=offset)
            for listed in page.exports:
                if listed.name == name and listed.type == definition.type:
                    return listed.export
            offset += len(page.exports)
            if not page.exports or offset >= page.total:
                return None
        return None

    def cancel_export(self, upstream_id: str) -> bool:
        """Always False, without a call: the Export API has no cancel or delete endpoint (none in
        any spec version), so an export nothing waits for runs to its end and expires upstream."""
        return False

    @contextmanager
    def open_result(self, url: str) -> Iterator[ResultStream]:
        with in_call_waits(self._sleep):
            resp = open_download(
                self._session,
                url,
                auth_headers=self._auth,
                auth_hosts=self._auth_hosts,
                allowed_hosts=self._allowed,
                timeout=request_timeout(self._timeout, self._remaining),
            )
        try:
            length = resp.headers.get("Content-Length")
            announced = int(length) if length and length.isdigit() else None
            chunks, wrapped = unwrap_workbook(resp.iter_content(chunk_size=256 * 1024), announced)
            content_type = resp.headers.get("Content-Type", "application/octet-stream").split(";")[0]
            yield ResultStream(
                chunks=chunks,
                content_length=None if wrapped else announced,
                content_type=XLSX.content_type if wrapped else content_type,
            )
        finally:
            resp.close()

    def files_timezone(self, definition: AdvocateDefinition) -> str | None:
        return "UTC"  # every date in the files is epoch ms (the manifest's time_format)

    def close(self) -> None:
        self._session.close()

    # ---- exports -----------------------------------------------------------------------------

    def download_url(self, upstream_id: str) -> str:
        return f"{self._api}/export/{quote(upstream_id, safe='')}/download"

    def _export(self, data: dict[str, Any]) -> UpstreamExport:
        if "id" not in data or "status" not in data:
            raise UpstreamError(f"Advocate export response lacks id/status: {str(data)[:300]}")
        upstream_id = str(data["id"])
        raw = str(data["status"])
        state = _STATES.get(raw.upper())
        if state is None:
            raise UpstreamError(f"Advocate export {upstream_id}: unknown status {raw!r}")
        return UpstreamExport(
            upstream_id=upstream_id,
            state=state,
            raw_state=raw,
            result_urls=[self.download_url(upstream_id)] if state is UpstreamState.READY else [],
            created_at=_iso(data.get("dateCreated")),
        )


class _Pieces:
    """The sink of the wrapped workbook: its bytes, taken by the generator as they inflate."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.pieces.append(data)

    def close(self) -> None:
        self.closed = True


def unwrap_workbook(chunks: Iterator[bytes], announced: int | None) -> tuple[Iterator[bytes], bool]:
    """``chunks`` as they are, or, when they are a zip whose first entry is a ``.xlsx`` file, that
    entry's bytes as they inflate (and True). The wrapper must be whole: its length as announced, the
    entry complete with its CRC-32, else DownloadIncompleteError when the stream ends."""
    head = b""
    for chunk in chunks:
        head += chunk
        name = _first_entry_name(head)
        if name is not None or len(head) >= 64 * 1024:
            break
    name = _first_entry_name(head)
    if name is None or not name.lower().endswith(".xlsx"):
        return _chained(head, chunks), False
    return _unwrapped(head, chunks, announced), True


def _first_entry_name(head: bytes) -> str | None:
    """The name in the zip local file header ``head`` starts with; "" when it is no zip; None when
    more bytes are needed."""
    if len(head) < 4:
        return None
    if not head.startswith(b"PK\x03\x04"):
        return ""
    if len(head) < 30:
        return None
    flags, name_len = struct.unpack_from("<H", head, 6)[0], struct.unpack_from("<H", head, 26)[0]
    if len(head) < 30 + name_len:
        return None
    return head[30 : 30 + name_len].decode("utf-8" if flags & 0x800 else "cp437", "replace")


def _chained(head: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if head:
        yield head
    yield from rest


def _unwrapped(head: bytes, rest: Iterator[bytes], announced: int | None) -> Iterator[bytes]:
    sink = _Pieces()
    taken: list[str] = []

    def sink_for(name: str) -> _Pieces | None:
        taken.append(name)
        return sink if len(taken) == 1 else None

    walker = ZipStreamWalker(sink_for)
    received = 0
    for chunk in _chained(head, rest):
        received += len(chunk)
        walker.feed(chunk)
        yield from sink.pieces
        sink.pieces.clear()
    if walker.damage is not None or walker.unreadable is not None:
        raise DownloadIncompleteError(f"zipped workbook: {walker.damage or walker.unreadable}")
    if not sink.closed or (announced is not None and received != announced):
        raise DownloadIncompleteError(
            f"zipped workbook ended after {received} of {announced or 'an unknown number of'} bytes, "
            "inside its workbook"
        )


def export_name(definition: AdvocateDefinition, window: Window) -> str:
    """The ``name`` of the export of ``window`` of ``definition``: how a lost export is found again."""
    return f"exportpipe {definition.name} {ceil_ms(window.start)}-{ceil_ms(window.end)}"


def _iso(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return datetime.fromtimestamp(value / 1000, UTC).isoformat(timespec="milliseconds")


def _message(body: dict[str, Any]) -> str:
    message = str(body.get("message", ""))
    errors = body.get("validationErrors")
    if isinstance(errors, list) and errors:
        message += " (" + "; ".join(str(e) for e in errors[:20]) + ")"
    return message


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
