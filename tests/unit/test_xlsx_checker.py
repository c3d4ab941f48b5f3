"""The XLSX checker counts the first worksheet's rows while the workbook streams past, as the CSV
checker counts the records of the same export; workbooks come from the Advocate sandbox (in process:
its request handler, no server), rewritten where a test needs another zip layout."""

from __future__ import annotations

import base64
import csv
import io
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from exportpipe_dev.sandbox.advocate import EXPORT_TYPES, AdvocateSandbox
from exportpipe_dev.sandbox.base import Clock, Headers, Request

from exportpipe.errors import DownloadIncompleteError
from exportpipe.formats import XlsxChecker, checker_for
from exportpipe.zipstream import MAX_PIECE, ZipStreamWalker

NOW = datetime(2025, 3, 1, tzinfo=UTC)
SHEET_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PKG_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
OFFICE_DOC = f"{REL_NS}/officeDocument"
WORKSHEET = f"{REL_NS}/worksheet"


def _call(sandbox: AdvocateSandbox, method: str, url: str, body: bytes = b"") -> tuple[int, Any, bytes]:
    parts = urlsplit(url)
    key = base64.b64encode(f":{sandbox.api_key}".encode()).decode()
    headers = {"Authorization": f"Basic {key}", "Content-Type": "application/json"}
    if parts.path.startswith("/tenant-files"):
        headers = {}
    response = sandbox.handle(
        Request(
            method,
            parts.path,
            dict(parse_qsl(parts.query)),
            Headers(headers),
            body,
            host=parts.netloc or "127.0.0.1",
        )
    )
    data = response.body if isinstance(response.body, bytes) else b"".join(response.body)
    return response.status, response.headers, data


def export_file(sandbox: AdvocateSandbox, clock: Clock, stub: dict[str, Any]) -> tuple[bytes, str]:
    """The file of a sandbox export of ``stub`` (created, completed, downloaded through its 303)."""
    import json

    base = f"/api/v1/{sandbox.tenant_alias}/export"
    status, _, body = _call(sandbox, "POST", base, json.dumps(stub).encode())
    assert status == 201, body
    export_id = json.loads(body)["id"]
    clock.advance(sandbox.processing_seconds + 1)
    status, headers, _ = _call(sandbox, "GET", f"{base}/{export_id}/download")
    assert status == 303
    status, _, data = _call(sandbox, "GET", headers["Location"])
    assert status == 200
    return data, export_id


@pytest.fixture(scope="module")
def sandbox() -> AdvocateSandbox:
    return AdvocateSandbox(clock=Clock(NOW), users_per_day=3.0, processing_seconds=1.0, seed=3)


def _checked(fmt: str, data: bytes, size: int) -> int | None:
    checker = checker_for(fmt)
    assert checker is not None
    for at in range(0, len(data), size):
        checker.feed(data[at : at + size])
    checker.finish()
    return checker.records


def _rezip(data: bytes, *, seekable: bool = True, order: list[str] | None = None, **options: Any) -> bytes:
    """The same workbook written again: another entry order, stored, ZIP64 or with data descriptors
    (zipfile writes those when its file cannot seek back to the local headers)."""
    source = zipfile.ZipFile(io.BytesIO(data))
    names = order or source.namelist()
    out = io.BytesIO() if seekable else _Unseekable()
    method = options.pop("compression", zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(out, "w", method) as book:
        for name in names:
            with book.open(name, "w", **options) as entry:
                entry.write(source.read(name))
    return out.getvalue()


class _Unseekable(io.RawIOBase):
    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.data += b
        return len(b)

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        raise OSError("not seekable")

    def getvalue(self) -> bytes:
        return bytes(self.data)


def _book(sheet: str, *, workbook: str | None = None, rels: str | None = None) -> bytes:
    """A hand-made package: one worksheet part of the given XML (and workbook / its rels if given)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as book:
        book.writestr(
            "_rels/.rels",
            f'<Relationships xmlns="{PKG_NS}"><Relationship Id="rId1" Type="{OFFICE_DOC}" '
            'Target="xl/workbook.xml"/></Relationships>',
        )
        book.writestr(
            "xl/workbook.xml",
            workbook
            or f'<workbook xmlns="{SHEET_NS}" xmlns:r="{REL_NS}"><sheets><sheet name="A" sheetId="1" '
            'r:id="rId1"/></sheets></workbook>',
        )
        book.writestr(
            "xl/_rels/workbook.xml.rels",
            rels
            or f'<Relationships xmlns="{PKG_NS}"><Relationship Id="rId1" Type="{WORKSHEET}" '
            'Target="worksheets/sheet1.xml"/></Relationships>',
        )
        book.writestr("xl/worksheets/sheet1.xml", sheet)
        book.writestr("xl/worksheets/sheet2.xml", f'<worksheet xmlns="{SHEET_NS}"><sheetData/></worksheet>')
    return out.getvalue()


def _sheet(rows: int, *, prefix: str = "", namespace: str = SHEET_NS, indexed: bool = True) -> str:
    p = f"{prefix}:" if prefix else ""
    xmlns = f"xmlns:{prefix}" if prefix else "xmlns"
    body = "".join(
        f"<{p}row{f' r={chr(34)}{n}{chr(34)}' if indexed else ''}><{p}c><{p}v>{n}</{p}v></{p}c></{p}row>"
        for n in range(1, rows + 1)
    )
    head = f'<?xml version="1.0"?><{p}worksheet {xmlns}="{namespace}">'
    return f"{head}<{p}sheetData>{body}</{p}sheetData></{p}worksheet>"


# ---- counts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("export_type", EXPORT_TYPES)
def test_the_first_worksheets_rows_count_like_the_csv_of_the_same_export(
    sandbox: AdvocateSandbox, export_type: str
) -> None:
    clock = sandbox.clock
    assert isinstance(clock, Clock)
    stub = {
        "type": export_type,
        "params": {"createdSince": int((NOW - timedelta(days=20)).timestamp() * 1000)},
    }
    if export_type == "REWARD":
        stub["params"] = {"fields": {"includeUserFields": True, "includeReferralFields": True}}
    book, book_id = export_file(sandbox, clock, {**stub, "format": "XLSX"})
    text, text_id = export_file(sandbox, clock, {**stub, "format": "CSV"})
    expected = len(sandbox.expected_rows(book_id))
    assert expected == len(sandbox.expected_rows(text_id)) > 0
    assert len(list(csv.reader(io.StringIO(text.decode(), newline="")))) - 1 == expected
    for size in (1, 7, 4096, len(book)):
        assert _checked("xlsx", book, size) == expected, size
    assert _checked("csv", text, 4096) == expected


def test_every_zip_layout_of_the_same_workbook_counts_the_same(sandbox: AdvocateSandbox) -> None:
    clock = sandbox.clock
    assert isinstance(clock, Clock)
    book, export_id = export_file(sandbox, clock, {"type": "USER", "format": "XLSX"})
    expected = len(sandbox.expected_rows(export_id))
    names = zipfile.ZipFile(io.BytesIO(book)).namelist()
    sheets_first = sorted(names, key=lambda n: "worksheets" not in n)  # as openpyxl writes them
    layouts = {
        "as served": book,
        "data descriptors": _rezip(book, seekable=False),
        "data descriptors, ZIP64": _rezip(book, seekable=False, force_zip64=True),
        "ZIP64": _rezip(book, force_zip64=True),
        "stored": _rezip(book, compression=zipfile.ZIP_STORED),
        "sheet before workbook": _rezip(book, order=sheets_first),
    }
    assert {
        flag.flag_bits & 8 for flag in zipfile.ZipFile(io.BytesIO(layouts["data descriptors"])).infolist()
    } == {8}
    for layout, data in layouts.items():
        assert zipfile.ZipFile(io.BytesIO(data)).testzip() is None
        for size in (3, 1000, 65536):
            assert _checked("xlsx", data, size) == expected, (layout, size)


@pytest.mark.parametrize(
    ("sheet", "records"),
    [
        (_sheet(0), 0),
        (_sheet(1), 0),  # the header alone
        (_sheet(5), 4),
        (_sheet(5, indexed=False), 4),
        (_sheet(5, prefix="x"), 4),  # a prefixed SpreadsheetML namespace
        (_sheet(5, namespace="http://purl.oclc.org/ooxml/spreadsheetml/main"), 4),  # ISO strict
        # rows 3 and 4 left out (empty): a CSV of the same data has them as empty records
        (_sheet(2).replace("</sheetData>", '<row r="5"><c><v>5</v></c></row></sheetData>'), 4),
        ("<worksheet/>", None),  # not SpreadsheetML's namespace
        ('{"rows": [1, 2]}', None),  # not XML at all
        (_sheet(5).replace("</sheetData>", ""), None),  # not well-formed
    ],
    ids=["empty", "header", "five", "no-r", "prefixed", "strict", "sparse", "no-ns", "json", "unclosed"],
)
def test_rows_and_what_is_not_counted(sheet: str, records: int | None) -> None:
    assert _checked("xlsx", _book(sheet), 5) == records


def test_the_first_sheet_is_the_workbooks_first_not_the_first_part() -> None:
    workbook = (
        f'<workbook xmlns="{SHEET_NS}" xmlns:r="{REL_NS}"><sheets><sheet name="B" sheetId="2" r:id="rId2"/>'
        '<sheet name="A" sheetId="1" r:id="rId1"/></sheets></workbook>'
    )
    rels = (
        f'<Relationships xmlns="{PKG_NS}">'
        f'<Relationship Id="rId1" Type="{WORKSHEET}" Target="worksheets/sheet1.xml"/>'
        f'<Relationship Id="rId2" Type="{WORKSHEET}" Target="/xl/worksheets/sheet2.xml"/></Relationships>'
    )
    assert _checked("xlsx", _book(_sheet(9), workbook=workbook, rels=rels), 64) == 0  # sheet2: no rows
    assert _checked("xlsx", _book(_sheet(9)), 64) == 8


def test_dtds_and_entities_are_never_expanded() -> None:
    laughs = (
        '<?xml version="1.0"?><!DOCTYPE w [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
        '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        f'<worksheet xmlns="{SHEET_NS}"><sheetData><row r="1"><c><is><t>&c;</t></is></c></row>'
        "</sheetData></worksheet>"
    )
    started = time.perf_counter()
    assert _checked("xlsx", _book(laughs), 64) is None
    assert time.perf_counter() - started < 1
    external = _sheet(3).replace(
        '<?xml version="1.0"?>', '<?xml version="1.0"?><!DOCTYPE w SYSTEM "file:///etc/passwd">'
    )
    assert _checked("xlsx", _book(external), 64) is None


def test_a_zip_that_is_no_workbook_is_checked_but_not_counted() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("data.csv", "id\n1\n")
    assert _checked("xlsx", out.getvalue(), 10) is None
    assert isinstance(checker_for("xlsx"), XlsxChecker)


def test_a_stored_entry_with_a_data_descriptor_cannot_be_walked_and_is_not_counted(
    sandbox: AdvocateSandbox,
) -> None:
    clock = sandbox.clock
    assert isinstance(clock, Clock)
    book, _ = export_file(sandbox, clock, {"type": "REFERRAL", "format": "XLSX"})
    data = _rezip(book, seekable=False, compression=zipfile.ZIP_STORED)
    assert zipfile.ZipFile(io.BytesIO(data)).testzip() is None
    assert _checked("xlsx", data, 4096) is None  # whole (its end checks pass), rows not counted


# ---- truncation and damage ------------------------------------------------------------------------


def test_a_cut_workbook_is_refused_wherever_it_is_cut(sandbox: AdvocateSandbox) -> None:
    clock = sandbox.clock
    assert isinstance(clock, Clock)
    book, _ = export_file(sandbox, clock, {"type": "REWARD_BALANCE", "format": "XLSX"})
    for data in (book, _rezip(book, seekable=False)):
        cuts = [*range(0, len(data), max(len(data) // 300, 1)), *range(len(data) - 80, len(data))]
        for n in cuts:
            with pytest.raises(DownloadIncompleteError, match=f"^xlsx file ended after {n} bytes"):
                _checked("xlsx", data[:n], 4096)


def test_a_damaged_sheet_is_refused_though_its_zip_ends_well(sandbox: AdvocateSandbox) -> None:
    clock = sandbox.clock
    assert isinstance(clock, Clock)
    book, _ = export_file(sandbox, clock, {"type": "USER", "format": "XLSX"})
    info = zipfile.ZipFile(io.BytesIO(book)).getinfo("xl/worksheets/sheet1.xml")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for at in (start + info.compress_size // 2, start + info.compress_size - 2):
        damaged = bytearray(book)
        damaged[at] ^= 0x5A
        with pytest.raises(DownloadIncompleteError, match="damaged"):
            _checked("xlsx", bytes(damaged), 4096)


# ---- the walker ---------------------------------------------------------------------------------


class _Collect:
    def __init__(self) -> None:
        self.pieces: list[int] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.pieces.append(len(data))

    def close(self) -> None:
        self.closed = True


def _walk(data: bytes, size: int) -> Iterator[tuple[str, _Collect]]:
    sinks: dict[str, _Collect] = {}

    def sink_for(name: str) -> _Collect:
        return sinks.setdefault(name, _Collect())

    walker = ZipStreamWalker(sink_for)
    for at in range(0, len(data), size):
        walker.feed(data[at : at + size])
    assert walker.done and walker.damage is None and walker.unreadable is None
    yield from sinks.items()


def test_an_entry_that_inflates_a_thousandfold_comes_out_in_bounded_pieces() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.bin", b"\0" * (8 * MAX_PIECE + 5))
    data = out.getvalue()
    assert len(data) < 64 * 1024
    ((name, sink),) = list(_walk(data, len(data)))
    assert name == "zeros.bin" and sink.closed
    assert sum(sink.pieces) == 8 * MAX_PIECE + 5 and max(sink.pieces) <= MAX_PIECE
