"""The streaming format checkers: whole files pass (however they are chunked) with the right record
counts; files cut short are caught wherever the format marks its end. Oracles are independent of the
checkers: Python's csv module, json.loads, ElementTree and zipfile."""

from __future__ import annotations

import csv
import io
import json
import random
import string
import zipfile
from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree

import pytest

from exportpipe.errors import DownloadIncompleteError
from exportpipe.formats import (
    CHECKERS,
    CsvRecordCounter,
    FormatChecker,
    JsonChecker,
    XmlChecker,
    ZipChecker,
    checker_for,
)


def _splits(data: bytes) -> Iterator[list[bytes]]:
    """The file in one piece, byte by byte, and cut in two at every position."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    for i in range(1, len(data)):
        yield [data[:i], data[i:]]


def _check(fmt: str, chunks: list[bytes]) -> FormatChecker:
    checker = checker_for(fmt)
    assert checker is not None
    for chunk in chunks:
        checker.feed(chunk)
    checker.finish()
    return checker


def _caught(fmt: str, data: bytes) -> str | None:
    """The error's message if the checker calls ``data`` cut short, else None."""
    try:
        _check(fmt, [data])
    except DownloadIncompleteError as exc:
        return str(exc)
    return None


# ---- registry -------------------------------------------------------------------------------------


def test_registry_maps_file_extensions_to_checkers() -> None:
    assert set(CHECKERS) == {"csv", "csv-terminated", "json", "xml", "zip", "xlsx"}
    lenient, terminated = checker_for("csv"), checker_for("csv-terminated")
    assert isinstance(lenient, CsvRecordCounter) and not lenient.rows_terminated
    assert isinstance(terminated, CsvRecordCounter) and terminated.rows_terminated
    assert isinstance(checker_for(".JSON"), JsonChecker)
    assert isinstance(checker_for("xml"), XmlChecker)
    xlsx = checker_for("xlsx")
    assert isinstance(xlsx, ZipChecker) and xlsx.format == "xlsx"
    assert checker_for("parquet") is None and checker_for(None) is None and checker_for("") is None
    assert checker_for("csv") is not checker_for("csv")  # a new one for every file


# ---- CSV ------------------------------------------------------------------------------------------

AWKWARD = [
    ["id", "name", "note"],
    ["1", "plain", ""],
    ["2", 'The "Widget Co" CEO', "a,b"],
    ["3", "line\nbreak", "crlf\r\ninside"],
    ["4", "\\@handle", '""'],
    ["5", "Zoë, Łukasz", " "],
    ["6", "", "last"],
]


def _csv(rows: list[list[str]], terminator: str = "\n", quoting: int = csv.QUOTE_MINIMAL) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, quoting=quoting, lineterminator=terminator).writerows(rows)
    return buf.getvalue().encode()


def _csv_cut_visible(prefix: bytes, header_fields: int) -> bool:
    """What a reader can tell of a prefix: it ends inside quotes, or in a record short of the
    header's fields (a cut inside the header itself leaves nothing to compare with)."""
    try:
        rows = list(csv.reader(io.StringIO(prefix.decode("utf-8", "replace"), newline=""), strict=True))
    except csv.Error:
        return True  # unexpected end of data: inside a quoted field
    return len(rows) > 1 and not prefix.endswith(b"\n") and len(rows[-1]) < header_fields


@pytest.mark.parametrize("terminator", ["\n", "\r\n"])
@pytest.mark.parametrize("trailing_newline", [True, False])
@pytest.mark.parametrize("quoting", [csv.QUOTE_MINIMAL, csv.QUOTE_ALL])
def test_csv_counts_records_at_every_chunk_boundary(
    terminator: str, trailing_newline: bool, quoting: int
) -> None:
    data = _csv(AWKWARD, terminator, quoting)
    if not trailing_newline:
        data = data[: -len(terminator)]
    for chunks in _splits(data):
        assert _check("csv", chunks).records == len(AWKWARD) - 1


def test_csv_counts_across_random_chunking() -> None:
    data = _csv(AWKWARD * 40)
    rng = random.Random(7)
    for _ in range(100):
        counter = CsvRecordCounter()
        i = 0
        while i < len(data):
            step = rng.randint(1, 9)
            counter.feed(data[i : i + step])
            i += step
        counter.finish()
        assert counter.records == len(AWKWARD) * 40 - 1


def test_csv_header_only_and_empty_files() -> None:
    assert _check("csv", [b"id,name\n"]).records == 0
    assert _check("csv", [b"id,name"]).records == 0
    assert _check("csv", []).records == 0


@pytest.mark.parametrize("quoting", [csv.QUOTE_MINIMAL, csv.QUOTE_ALL])
def test_csv_every_cut_a_reader_could_see_is_caught(quoting: int) -> None:
    data = _csv(AWKWARD, quoting=quoting)
    header = len(AWKWARD[0])
    caught = 0
    for n in range(1, len(data)):
        prefix = data[:n]
        visible = _csv_cut_visible(prefix, header)
        assert (_caught("csv", prefix) is not None) == visible, prefix
        caught += visible
    assert caught > len(data) // 2  # most cuts are visible in this file


def test_csv_messages_name_what_is_missing() -> None:
    assert "closing quote is missing" in (_caught("csv", b'id,name\n1,"Wid') or "")
    assert "record 1: it has 2 of the header's 3 fields" in (_caught("csv", b"id,name,note\n1,x") or "")
    assert "record 2" in (_caught("csv", b'id,name\n1,a\n2,"multi\nline') or "")


@pytest.mark.parametrize("terminator", ["\n", "\r\n"])
def test_csv_terminated_catches_every_cut_but_one_at_a_record_end(terminator: str) -> None:
    data = _csv(AWKWARD, terminator)
    for n in range(1, len(data)):
        prefix = data[:n]
        try:
            list(csv.reader(io.StringIO(prefix.decode("utf-8", "replace"), newline=""), strict=True))
            at_record_end = prefix.endswith(b"\n")
        except csv.Error:
            at_record_end = False  # inside a quoted field
        assert (_caught("csv-terminated", prefix) is None) == at_record_end, prefix
    for chunks in _splits(data):
        assert _check("csv-terminated", chunks).records == len(AWKWARD) - 1
    assert _check("csv-terminated", []).records == 0


def test_csv_cuts_the_format_cannot_see() -> None:
    # A cut at the end of a record leaves a shorter CSV that is well formed: only the framing
    # (Content-Length, chunked) can tell. A cut inside a last unquoted field, or right after the
    # last comma, is well formed too unless the source ends every record with a line break.
    data = b"id,name,created\n1,a,2026-11-24 10:00:00\n2,b,2026-11-24 11:00:00\n"
    at_record_end = data[: data.index(b"\n2,") + 1]
    in_last_field = data[: data.index(b"11:00")]
    after_last_comma = data[: data.index(b"2026-11-24 11")]
    assert _check("csv", [at_record_end]).records == 1
    assert _check("csv-terminated", [at_record_end]).records == 1
    assert _check("csv", [in_last_field]).records == 2
    assert _check("csv", [after_last_comma]).records == 2
    assert "does not end with a line break" in (_caught("csv-terminated", in_last_field) or "")
    assert "does not end with a line break" in (_caught("csv-terminated", after_last_comma) or "")


# ---- JSON -----------------------------------------------------------------------------------------

JSON_DOCS: list[bytes] = [
    b"[]",
    b"[ ]",
    b"[1]",
    b'["only"]',
    b"[[]]",
    b'[1, -2.5e+3, true, false, null, "x"]',
    b'[{"a": "x]"}, {"b": "\\\\"}, {"c": "\\"[{"}, {"d": "\\\\\\"]"}]',
    b'[{"id": 1, "tags": ["a", "b"], "nested": {"deep": [[1], {"x": "}"}]}}, {"id": 2}]',
    b'{"@page": "1", "@numpages": "1", "Clicks": [{"Id": "1"}, {"Id": "2", "Ref": "a\\\\b"}]}',
    b'{"Clicks": []}',
    b'{"Clicks": [7]}',
    b'{"meta": {"x": 1}, "records": [{"a": 1}, {"a": 2}, {"a": 3}]}',
    b'{"a": [1], "b": [2, 3]}',
    b'{"a": 1, "b": "two"}',
    b'{"url": "http:\\/\\/x\\/y", "u": "\\u005c\\u0022", "list": ["\\\\", "\\"", "]"]}',
    '\ufeff[{"name": "Zoë, Łukasz [ok]"}]'.encode(),
    b'  \n[\n  {"a": "{"},\n  {"b": "}"}\n]\n  ',
    b'"a lone string with ] and {"',
    b"12345",
]


def _json_records(doc: Any, text: bytes) -> int | None:
    """The records the module's docstring promises, from the parsed value."""
    if isinstance(doc, list):
        return len(doc)
    if isinstance(doc, dict):
        arrays = [v for v in doc.values() if isinstance(v, list)]
        return len(arrays[0]) if len(arrays) == 1 else None
    return None


@pytest.mark.parametrize("doc", JSON_DOCS, ids=range(len(JSON_DOCS)))
def test_json_whole_documents_pass_at_every_chunk_boundary(doc: bytes) -> None:
    expected = _json_records(json.loads(doc.decode("utf-8-sig")), doc)
    for chunks in _splits(doc):
        assert _check("json", chunks).records == expected, chunks


@pytest.mark.parametrize("doc", [d for d in JSON_DOCS if d.strip()[-1:] in (b"]", b"}", b'"')])
def test_json_every_cut_is_caught(doc: bytes) -> None:
    end = len(doc.rstrip())
    for n in range(end):
        message = _caught("json", doc[:n])
        assert message is not None, doc[:n]
        for chunks in ([doc[:n]], [doc[i : i + 1] for i in range(n)]):
            with pytest.raises(DownloadIncompleteError):
                _check("json", chunks)


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    alphabet = string.ascii_letters + '[]{},:"\\/ \n\t' + "é€𝄞\u2028"
    kind = rng.choice(["str", "num", "lit", "list", "dict"] if depth < 4 else ["str", "num", "lit"])
    if kind == "str":
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
    if kind == "num":
        return rng.choice([0, -1, 3.25, 1e21, 123456789])
    if kind == "lit":
        return rng.choice([True, False, None])
    if kind == "list":
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {
        "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6))): _random_json(rng, depth + 1)
        for _ in range(rng.randint(0, 4))
    }


def test_json_random_documents_and_random_chunks() -> None:
    rng = random.Random(12)
    for _ in range(300):
        value = [_random_json(rng) for _ in range(rng.randint(0, 6))]
        if rng.random() < 0.5:
            value = {"meta": _random_json(rng, 3), "rows": value}
        text = json.dumps(value, ensure_ascii=rng.random() < 0.5).encode()
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(0, 6))))
        chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        checker = _check("json", chunks)
        rows = value["rows"] if isinstance(value, dict) else value
        meta_is_array = isinstance(value, dict) and isinstance(value["meta"], list)
        assert checker.records == (None if meta_is_array else len(rows)), text
        cut = rng.randrange(len(text))
        assert _caught("json", text[:cut]) is not None, text[:cut]


def test_json_lines_count_one_record_per_line() -> None:
    lines = b'{"a": 1}\n{"a": [2, "]"]}\n{"a": {"b": 3}}\n'
    for chunks in _splits(lines):
        assert _check("json", chunks).records == 3
    assert _caught("json", lines[:-5]) is not None
    assert _check("json", [b"1\n2\n"]).records is None  # scalars on lines: not counted


def test_json_messages_name_what_is_missing() -> None:
    assert "3 closing bracket(s) missing (1 ']' and 2 '}')" in (_caught("json", b'{"rows": [{"a": 1') or "")
    assert "inside a string" in (_caught("json", b'[{"a": "unfinished') or "")
    assert "inside a string" in (_caught("json", b'["ends on an escape \\') or "")
    assert "no JSON value" in (_caught("json", b"") or "")
    assert "no JSON value" in (_caught("json", b"  \n") or "")


# ---- XML ------------------------------------------------------------------------------------------

IMPACT_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<ImpactRadiusResponse><Clicks page="1" numpages="1">'
    b"<Click><Id>1</Id><Referrer>a&amp;b</Referrer></Click><Click><Id>2</Id><Referrer/></Click>"
    b"<Click><Id>3</Id><Referrer>x</Referrer></Click></Clicks></ImpactRadiusResponse>"
)

XML_DOCS: list[tuple[bytes, int | None]] = [
    (IMPACT_XML, 3),
    (
        b'<?xml version="1.0"?>\n<!-- head -->\n<!DOCTYPE rows [<!ENTITY co "Widget Co">]>\n'
        b'<rows><row id="1" note="a>b"><name>&co;</name></row>\n<row id="2"/>\n'
        b"<row><name><![CDATA[<b>bold</b> ]]></name></row></rows>\n<!-- tail -->\n<?pi done?>\n",
        3,
    ),
    (b"<rows/>", 0),
    (b"<rows>\n</rows>", 0),
    (b"<rows>text only</rows >", 0),
    (b'\xef\xbb\xbf<feed xmlns="urn:x"><entry><t>1</t></entry><entry><t>2</t></entry></feed>', 2),
    (b"<r><row>1</row></r>", 1),
    (
        b"<root><!-- </root> <![CDATA[ --><row/><![CDATA[ </root> <!-- ]]><row>x</row></root>"
        b"<!-- </root> -->",
        2,
    ),
    (b"<r><r>nested like the root</r></r>", None),
]


@pytest.mark.parametrize(("doc", "records"), XML_DOCS, ids=range(len(XML_DOCS)))
def test_xml_whole_documents_pass_at_every_chunk_boundary(doc: bytes, records: int | None) -> None:
    ElementTree.fromstring(doc)  # the test documents are well formed
    for chunks in _splits(doc):
        assert _check("xml", chunks).records == records, chunks


@pytest.mark.parametrize(("doc", "records"), XML_DOCS[:-1], ids=range(len(XML_DOCS) - 1))
def test_xml_every_cut_is_caught(doc: bytes, records: int | None) -> None:
    for n in range(len(doc)):
        prefix = doc[:n]
        try:
            ElementTree.fromstring(prefix)
            whole = True
        except ElementTree.ParseError:
            whole = False
        assert (_caught("xml", prefix) is None) == whole, prefix
        if not whole and n % 7 == 0:
            with pytest.raises(DownloadIncompleteError):
                _check("xml", [prefix[i : i + 1] for i in range(n)])


def test_xml_messages_name_what_is_missing() -> None:
    cut = IMPACT_XML[: IMPACT_XML.index(b"</Clicks>")]
    assert "root element <ImpactRadiusResponse> is not closed" in (_caught("xml", cut) or "")
    assert "before the root element's start tag" in (_caught("xml", b'<?xml version="1.0"?>\n<Impa') or "")
    assert "inside a comment" in (_caught("xml", b"<r></r><!-- cut") or "")


def test_xml_heads_that_are_not_read_are_not_checked() -> None:
    utf16 = "<r><row/></r>".encode("utf-16")
    assert _check("xml", [utf16[:10]]).records is None  # UTF-16: not read here, so never refused
    assert _check("xml", [b"not xml at all"]).records is None


def _random_element(rng: random.Random, name: str, depth: int) -> str:
    attrs = "".join(f' a{i}="{rng.choice(["x", ">", "/>", "a&amp;b"])}"' for i in range(rng.randint(0, 2)))
    if depth > 3 or rng.random() < 0.3:
        text = rng.choice(["", "text", "--&gt;", "a]]b"])
        return f"<{name}{attrs}/>" if rng.random() < 0.5 else f"<{name}{attrs}>{text}</{name}>"
    misc = ["", " ", "\n", "<!-- </root> <![CDATA[ -->", "<![CDATA[ </root> <!-- ]]>", "<?pi x?>"]
    kids = "".join(
        rng.choice(misc) + _random_element(rng, rng.choice(["row", "f"]), depth + 1)
        for _ in range(rng.randint(0, 4))
    )
    return f"<{name}{attrs}>{kids}</{name}>"


def test_xml_random_documents_and_cuts() -> None:
    rng = random.Random(3)
    for _ in range(300):
        doc = (
            rng.choice(["", '<?xml version="1.0"?>\n'])
            + rng.choice(["", "<!-- lead -->"])
            + _random_element(rng, "root", 0)
            + rng.choice(["", "\n", "<!-- t -->", "<?p x?>\n", "<!-- </root> -->"])
        ).encode()
        cuts = sorted(rng.sample(range(1, len(doc)), min(len(doc) - 1, 5)))
        _check("xml", [doc[a:b] for a, b in zip([0, *cuts], [*cuts, len(doc)], strict=True)])
        for n in rng.sample(range(len(doc)), min(10, len(doc))):
            try:
                ElementTree.fromstring(doc[:n])
                whole = True
            except ElementTree.ParseError:
                whole = False
            assert (_caught("xml", doc[:n]) is None) == whole, doc[:n]


def test_xml_head_is_bounded() -> None:
    # A prolog longer than the 1 MiB the checker keeps: it stops reading the head, keeps no more of
    # it, and checks nothing (documented) rather than buffer an unbounded prolog.
    checker = XmlChecker()
    checker.feed(b"<!-- " + b"x" * (2 * 1024 * 1024))
    checker.feed(b" --><r><row/></r>")
    checker.finish()
    assert checker.records is None


def test_xml_records_in_a_large_wrapped_file() -> None:
    rows = b"".join(b"<Click><Id>%d</Id></Click>" % i for i in range(5000))
    doc = b"<ImpactRadiusResponse><Clicks>" + rows + b"</Clicks></ImpactRadiusResponse>"
    for size in (1, 7, 4096, 65536):
        assert _check("xml", [doc[i : i + size] for i in range(0, len(doc), size)]).records == 5000


# ---- ZIP / XLSX -----------------------------------------------------------------------------------


def _zip(comment: bytes = b"", entries: int = 3, prefix: bytes = b"") -> bytes:
    buf = io.BytesIO()
    buf.write(prefix)
    with zipfile.ZipFile(buf, "a" if prefix else "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(entries):
            z.writestr(f"xl/worksheets/sheet{i}.xml", f"<sheetData>{'<row/>' * (i * 50)}</sheetData>")
        z.comment = comment
    return buf.getvalue()


def _zip_whole(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return z.testzip() is None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError):
        return False


@pytest.mark.parametrize("fmt", ["zip", "xlsx"])
@pytest.mark.parametrize(
    "data",
    [_zip(), _zip(comment=b"made by a test"), _zip(entries=0), _zip(prefix=b"#!/bin/sh\nexit 0\n" * 3)],
    ids=["plain", "comment", "empty", "self-extracting"],
)
def test_zip_whole_archives_pass_and_every_cut_is_caught(fmt: str, data: bytes) -> None:
    assert _zip_whole(data)
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))], [data[:7], data[7:]]):
        assert _check(fmt, chunks).records is None
    comment = len(zipfile.ZipFile(io.BytesIO(data)).comment)
    for n in range(len(data)):
        if n < len(data) - comment:  # zipfile itself accepts a cut comment; the checker does not
            assert not _zip_whole(data[:n])
        message = _caught(fmt, data[:n])
        assert message is not None and message.startswith(f"{fmt} file ended after {n} bytes"), n


def test_zip64_end_records_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)  # zipfile then writes the ZIP64 records
    data = _zip(entries=3)
    assert b"PK\x06\x06" in data and b"PK\x06\x07" in data
    _check("zip", [data])
    for n in range(len(data) - 120, len(data)):
        assert _caught("zip", data[:n]) is not None


def test_zip_messages_name_what_is_missing() -> None:
    data = _zip(comment=b"a comment")
    assert "End Of Central Directory record is missing" in (_caught("zip", data[: len(data) // 2]) or "")
    assert "inside its End Of Central Directory record" in (_caught("zip", data[:-3]) or "")
    assert "missing" in (_caught("zip", b"") or "")
