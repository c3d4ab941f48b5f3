from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests
from exportpipe_dev.sandbox.base import FRAMINGS, Framing, Request, Response, Sandbox, SandboxServer
from moto import mock_aws

from exportpipe.adapters.copier import MIB, CopyTuning, MeasuringReader, stream_to_s3
from exportpipe.errors import DownloadIncompleteError
from exportpipe.formats import CsvRecordCounter, JsonChecker

AWKWARD = [
    ["id", "name", "note"],
    ["1", "plain", ""],
    ["2", 'The "Widget Co" CEO', "a,b"],
    ["3", "line\nbreak", "crlf\r\ninside"],
    ["4", "\\@handle", '""'],
    ["5", "Zoë, Łukasz", " "],
]


def _csv(rows: list[list[str]], terminator: str = "\n") -> bytes:
    buf = io.StringIO()
    csv.writer(buf, quoting=csv.QUOTE_MINIMAL, lineterminator=terminator).writerows(rows)
    return buf.getvalue().encode()


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _drain(reader: MeasuringReader, size: int) -> list[bytes]:
    parts = []
    while part := reader.read(size):
        parts.append(part)
    return parts


def test_reader_fills_every_read_and_measures() -> None:
    data = _csv(AWKWARD * 50)
    reader = MeasuringReader(_chunks(data, 7), expected_length=len(data), file_format="csv")
    parts = _drain(reader, 100)
    assert all(len(p) == 100 for p in parts[:-1])
    assert b"".join(parts) == data
    assert reader.bytes == len(data)
    assert reader.sha256.hexdigest() == hashlib.sha256(data).hexdigest()
    assert isinstance(reader.checker, CsvRecordCounter)
    assert reader.records == len(AWKWARD) * 50 - 1


def test_the_file_format_picks_the_checker() -> None:
    data = _csv(AWKWARD)
    reader = MeasuringReader([data], expected_length=None, file_format="csv")
    _drain(reader, 1000)
    assert isinstance(reader.checker, CsvRecordCounter) and reader.records == len(AWKWARD) - 1
    assert isinstance(MeasuringReader([], expected_length=None, file_format="json").checker, JsonChecker)
    unknown = MeasuringReader([b"\x00\x01"], expected_length=None, file_format="parquet")
    assert _drain(unknown, 10) == [b"\x00\x01"] and unknown.checker is None and unknown.records is None


def test_short_stream_is_an_incomplete_download() -> None:
    reader = MeasuringReader([b"abc"], expected_length=10)
    with pytest.raises(DownloadIncompleteError, match="3 of 10 bytes"):
        _drain(reader, 4)


@pytest.mark.parametrize(
    ("fmt", "data", "message"),
    [
        ("csv", b'id,name\n1,"cut inside quo', "closing quote is missing"),
        ("csv", b"id,name,note\n1,a,b\n2,cut", "2 of the header's 3 fields"),
        ("json", b'{"rows": [{"id": 1}, {"id": 2', "closing bracket(s) missing"),
        ("xml", b"<rows><row>1</row><row>2</ro", "root element <rows> is not closed"),
        ("zip", b"PK\x03\x04" + b"\x00" * 300, "End Of Central Directory record is missing"),
    ],
)
def test_a_file_cut_short_fails_before_its_last_bytes_are_handed_on(
    fmt: str, data: bytes, message: str
) -> None:
    # No Content-Length: only the format can tell. The error comes from the read that reaches the
    # end, so the transfer never receives the last (short) part and aborts the upload.
    reader = MeasuringReader(_chunks(data, 5), expected_length=None, file_format=fmt)
    handed: list[bytes] = []
    with pytest.raises(DownloadIncompleteError, match=message.replace("(", r"\(").replace(")", r"\)")):
        while part := reader.read(16):
            handed.append(part)
    assert all(len(p) == 16 for p in handed) and len(b"".join(handed)) < len(data)


def test_a_whole_file_of_each_format_passes() -> None:
    files = {
        "csv": _csv(AWKWARD),
        "json": json.dumps({"Clicks": [{"Id": str(i), "Note": ']}\\"'} for i in range(40)]}).encode(),
        "xml": b"<rows>" + b"<row><v>&amp;</v></row>" * 40 + b"</rows>",
    }
    expected = {"csv": len(AWKWARD) - 1, "json": 40, "xml": 40}
    for fmt, data in files.items():
        for size in (1, 3, 64, len(data)):
            reader = MeasuringReader(_chunks(data, size), expected_length=len(data), file_format=fmt)
            assert b"".join(_drain(reader, 50)) == data
            assert reader.records == expected[fmt], (fmt, size)


# ---- through S3 (moto in process) -------------------------------------------------------------------


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="results")
        yield client


def _big_csv(rows: int) -> bytes:
    row = b'201917,"The ""Widget Co"" CEO","a,b",2026-11-24 10:00:00,"multi\nline"\n'
    return b"id,name,note,created,text\n" + row * rows


def test_a_multipart_upload_cut_short_leaves_nothing(s3: Any) -> None:
    data = _big_csv(170_000)  # ~12 MiB: three parts of 5 MiB
    cut = data[: data.rindex(b'"multi\nline"') + 4]  # a clean close inside the last record's quotes
    assert len(cut) > 2 * 5 * MIB
    with pytest.raises(DownloadIncompleteError, match="closing quote is missing"):
        stream_to_s3(
            s3,
            _chunks(cut, 256 * 1024),
            bucket="results",
            key="exports/part-00001.csv",
            content_type="text/csv",
            expected_length=None,
            file_format="csv",
            tuning=CopyTuning(part_size=5 * MIB),
        )
    assert "Contents" not in s3.list_objects_v2(Bucket="results")
    assert not s3.list_multipart_uploads(Bucket="results").get("Uploads")


def test_a_whole_multipart_upload_lands_with_its_record_count(s3: Any) -> None:
    data = _big_csv(170_000)
    landed = stream_to_s3(
        s3,
        _chunks(data, 256 * 1024),
        bucket="results",
        key="exports/part-00001.csv",
        content_type="text/csv",
        expected_length=None,
        file_format="csv",
        tuning=CopyTuning(part_size=5 * MIB),
    )
    assert landed.records == 170_000 and landed.bytes == len(data)
    assert landed.sha256 == hashlib.sha256(data).hexdigest()
    body = s3.get_object(Bucket="results", Key="exports/part-00001.csv")["Body"].read()
    assert body == data


# ---- through real HTTP framings (the sandbox server on loopback, read with requests) -----------------


class _FileServer(Sandbox):
    """Serves one file per path, framed and cut as the test asks."""

    source = "files"

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[str, list[bytes]] = {}
        self.framing: Framing = "length"
        self.cut: int | None = None

    def credentials(self) -> dict[str, str]:
        return {}

    def handle(self, request: Request) -> Response:
        chunks = self.files[request.path]
        return Response(
            200,
            {"Content-Type": "application/octet-stream"},
            iter(chunks),
            content_length=sum(map(len, chunks)),
            truncate_after=self.cut,
            framing=self.framing,
        )


@pytest.fixture(scope="module")
def files() -> Iterator[tuple[_FileServer, str]]:
    app = _FileServer()
    with SandboxServer(app) as server:
        yield app, server.base_url


def _download(base_url: str, path: str, fmt: str) -> tuple[MeasuringReader, requests.Response]:
    resp = requests.get(f"{base_url}{path}", stream=True, timeout=10, headers={"Accept-Encoding": "identity"})
    length = resp.headers.get("Content-Length")
    reader = MeasuringReader(
        resp.iter_content(chunk_size=64 * 1024),
        expected_length=int(length) if length else None,
        file_format=fmt,
    )
    return reader, resp


CSV_FILE = _csv(AWKWARD * 30)
CSV_CHUNKS = _chunks(CSV_FILE, 1000)


@pytest.mark.parametrize("framing", FRAMINGS)
def test_every_framing_delivers_a_whole_file(files: tuple[_FileServer, str], framing: Framing) -> None:
    app, base_url = files
    app.files["/whole.csv"] = CSV_CHUNKS
    app.framing, app.cut = framing, None
    reader, resp = _download(base_url, "/whole.csv", "csv")
    with resp:
        assert ("Content-Length" in resp.headers) == (framing == "length")
        assert ("chunked" in resp.headers.get("Transfer-Encoding", "")) == (framing == "chunked")
        assert b"".join(_drain(reader, 4096)) == CSV_FILE
    assert reader.records == len(AWKWARD) * 30 - 1


# A cut inside a record (inside quotes), and one exactly at a chunk boundary of the body.
INSIDE_QUOTES = CSV_FILE.index(b"line\nbreak", len(CSV_FILE) // 2) + 4
AT_A_CHUNK_BOUNDARY = 2000


@pytest.mark.parametrize(
    ("framing", "cut", "message"),
    [
        ("length", INSIDE_QUOTES, "download broke|of .* bytes"),
        ("length", AT_A_CHUNK_BOUNDARY, "download broke|of .* bytes"),
        ("chunked", INSIDE_QUOTES, "download broke"),  # mid-chunk: urllib3 IncompleteRead
        ("chunked", AT_A_CHUNK_BOUNDARY, "download broke"),  # no last chunk: "Response ended prematurely"
        ("close", INSIDE_QUOTES, "closing quote is missing"),  # only the format can tell
    ],
)
def test_every_framing_reports_a_cut_as_an_incomplete_download(
    files: tuple[_FileServer, str], framing: Framing, cut: int, message: str
) -> None:
    app, base_url = files
    app.files["/cut.csv"] = CSV_CHUNKS
    app.framing, app.cut = framing, cut
    reader, resp = _download(base_url, "/cut.csv", "csv")
    with resp, pytest.raises(DownloadIncompleteError, match=message):
        _drain(reader, 4096)


def test_a_close_delimited_cut_at_a_record_boundary_cannot_be_seen(files: tuple[_FileServer, str]) -> None:
    # The limit of what a close-delimited CSV can tell: a cut right after a record's newline leaves
    # a well-formed shorter file. Content-Length or chunked framing would catch it (above).
    app, base_url = files
    app.files["/cut.csv"] = CSV_CHUNKS
    boundary = CSV_FILE.index(b"\n4,") + 1
    app.framing, app.cut = "close", boundary
    reader, resp = _download(base_url, "/cut.csv", "csv")
    with resp:
        assert b"".join(_drain(reader, 4096)) == CSV_FILE[:boundary]
    assert reader.records == 3
