from __future__ import annotations

import csv
import hashlib
import io
import random

import pytest

from exportpipe.copier import CsvRecordCounter, MeasuringReader
from exportpipe.errors import DownloadIncompleteError

AWKWARD = [
    ["id", "name", "note"],
    ["1", "plain", ""],
    ["2", 'The "Widget Co" CEO', "a,b"],
    ["3", "line\nbreak", "crlf\r\ninside"],
    ["4", "\\@handle", '""'],
    ["5", "Zoë, Łukasz", " "],
]


def _csv(rows: list[list[str]], terminator: str) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, quoting=csv.QUOTE_MINIMAL, lineterminator=terminator).writerows(rows)
    return buf.getvalue().encode()


@pytest.mark.parametrize("terminator", ["\n", "\r\n"])
@pytest.mark.parametrize("trailing_newline", [True, False])
def test_counts_records_across_any_chunking(terminator: str, trailing_newline: bool) -> None:
    data = _csv(AWKWARD, terminator)
    if not trailing_newline:
        data = data[: -len(terminator)]
    rng = random.Random(7)
    for _ in range(200):
        counter = CsvRecordCounter()
        i = 0
        while i < len(data):
            step = rng.randint(1, 9)
            counter.feed(data[i : i + step])
            i += step
        assert counter.records == len(AWKWARD) - 1


def test_header_only_and_empty_files() -> None:
    header_only = CsvRecordCounter()
    header_only.feed(b"id,name\n")
    assert header_only.records == 0
    assert CsvRecordCounter().records == 0


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_reader_fills_every_read_and_measures() -> None:
    data = _csv(AWKWARD * 50, "\n")
    reader = MeasuringReader(_chunks(data, 7), expected_length=len(data), count_csv=True)
    parts = []
    while part := reader.read(100):
        parts.append(part)
    assert all(len(p) == 100 for p in parts[:-1])
    assert b"".join(parts) == data
    assert reader.bytes == len(data)
    assert reader.sha256.hexdigest() == hashlib.sha256(data).hexdigest()
    assert reader.counter is not None and reader.counter.records == len(AWKWARD) * 50 - 1


def test_short_stream_is_an_incomplete_download() -> None:
    reader = MeasuringReader([b"abc"], expected_length=10, count_csv=False)
    with pytest.raises(DownloadIncompleteError, match="3 of 10 bytes"):
        while reader.read(4):
            pass
