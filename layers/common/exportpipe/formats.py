"""Streaming checks that a result file ended where its format says it ends, and its record counts.

A download whose framing says nothing about its length (no ``Content-Length``, no chunked encoding:
the body ends when the server closes the connection) looks complete when it stops halfway. Where the
format itself marks its end, a checker fed the chunks as they pass tells a cut file from a whole one:

- ``csv``: records are counted (a record ends at a newline outside quotes; the header row is not a
  record). Truncated: the file ends inside a quoted field, or it does not end with a newline and its
  last record has fewer fields than the header. A cut inside the last field of a record (or right
  after its last comma) leaves a well-formed shorter CSV: RFC 4180 lets the last record go without a
  line break. ``csv-terminated``, for sources whose writer ends every record with a line break (their
  client declares it), also calls a file that does not end with one truncated. Either way a cut exactly
  at the end of a record cannot be seen in the bytes: only the framing can tell.
- ``json``: the brackets outside strings (escapes handled across chunk boundaries) must be balanced
  at the end, and the file must not end inside a string or be empty. Records: the elements of the
  top-level array, or of the single array member of a top-level object (``{"@page": ..., "Clicks":
  [...]}``), or the top-level values of a file of several (JSON Lines); else None.
- ``xml``: the root element (named in the head, after the prolog, comments and doctype) must be closed
  at the end, followed only by whitespace, comments or processing instructions. Records: the number of
  elements named like the root's first child (``<rows><row>…``); when that child occurs once and
  holds elements itself (a wrapper, ``<ImpactRadiusResponse><Clicks><Click>…``), the number of
  elements named like *its* first child; else None. Elements are counted by name: an element of the
  same name nested deeper counts too.
- ``zip`` / ``xlsx``: the End Of Central Directory record must be in the last 64 KiB + 22 bytes, whole
  (with its comment), and consistent (the central directory it points to lies before it). Records:
  None for ``zip``. ``xlsx`` also walks the local entries as they stream past
  (:mod:`exportpipe.zipstream`: no seekable file needed, data descriptors handled), parses the
  package's XML parts with expat incrementally (no DTD, no entity declarations: such a part is not
  counted), and counts the rows of the workbook's first worksheet, the header row excluded (the
  last row's ``r`` index: rows left out for being empty count as in a CSV of the same data).
  Records are None when the archive is not a SpreadsheetML package the walk can read (no
  ``_rels/.rels`` → workbook → first sheet chain, an unreadable entry, a part that is not
  well-formed XML). An entry that fails its CRC-32 or whose deflate stream is broken is a damaged
  file: :meth:`FormatChecker.finish` raises, as for a cut one.

Every checker works in bounded memory (a tail, a short head, a few counters) and at C speed: it uses
``bytes.split``/``count``/``translate``/``replace`` and compiled regular expressions per chunk, never a
Python loop per byte. :meth:`FormatChecker.finish` raises :class:`~exportpipe.errors.DownloadIncompleteError`
naming what is missing. :func:`checker_for` maps a format name (the file extension, or a dialect of it such as
``csv-terminated``) to a new checker; an unknown format gets none (no check, records None).
"""

from __future__ import annotations

import posixpath
import re
import struct
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from itertools import accumulate, islice
from typing import Any, Literal
from urllib.parse import unquote

# expat is defused where its parsers are made (_XmlPart): no DTD, no entity declarations
from xml.parsers import expat  # nosec B407

from exportpipe.errors import DownloadIncompleteError
from exportpipe.zipstream import ZipStreamWalker

__all__ = [
    "CHECKERS",
    "CsvRecordCounter",
    "FormatChecker",
    "JsonChecker",
    "XlsxChecker",
    "XmlChecker",
    "ZipChecker",
    "checker_for",
]


class FormatChecker(ABC):
    """Fed a file's bytes in arbitrary chunks; at the end says whether the file is whole."""

    format: str = ""

    def __init__(self) -> None:
        self.bytes = 0

    @abstractmethod
    def feed(self, chunk: bytes) -> None:
        """Take the next chunk of the file."""

    @abstractmethod
    def finish(self) -> None:
        """The file ended here: raise DownloadIncompleteError if its format says it is cut short."""

    @property
    def records(self) -> int | None:
        """The number of records in what was fed (None: this format's records are not counted)."""
        return None

    def _incomplete(self, what: str) -> DownloadIncompleteError:
        return DownloadIncompleteError(f"{self.format} file ended after {self.bytes} bytes: {what}")


# ---- CSV ----------------------------------------------------------------------------------------


class CsvRecordCounter(FormatChecker):
    """Counts CSV records in a byte stream fed in arbitrary chunks, and tells a cut-off end.

    A record ends at a newline outside quotes; a doubled quote inside a quoted field toggles the
    quote state twice and so changes nothing. The header row is not a record. Commas outside quotes
    are counted in the header and in the record under way, so :meth:`finish` can tell a last record
    (one without a final newline) that has fewer fields than the header.

    ``rows_terminated``: the source ends every record with a line break (``csv-terminated``), so a
    file that does not end with one was cut, also inside a last field or right after a comma.
    """

    format = "csv"

    def __init__(self, *, rows_terminated: bool = False) -> None:
        super().__init__()
        self.rows_terminated = rows_terminated
        self._in_quotes = False
        self._newlines = 0
        self._last: int | None = None
        self._commas = 0  # commas outside quotes since the last newline outside quotes
        self._header_fields: int | None = None

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.bytes += len(chunk)
        self._last = chunk[-1]
        if b'"' not in chunk:
            if self._in_quotes:
                return
            outside = chunk
        else:
            # Pieces between quotes alternate outside/inside; join the outside ones in one C-level pass.
            pieces = chunk.split(b'"')
            outside = b"".join(pieces[1::2] if self._in_quotes else pieces[0::2])
            if len(pieces) % 2 == 0:  # an odd number of quotes flips the state
                self._in_quotes = not self._in_quotes
        newlines = outside.count(b"\n")
        if not newlines:
            self._commas += outside.count(b",")
            return
        if self._header_fields is None:
            self._header_fields = self._commas + outside.count(b",", 0, outside.find(b"\n")) + 1
        self._newlines += newlines
        self._commas = outside.count(b",", outside.rfind(b"\n") + 1)

    @property
    def records(self) -> int:
        if self.bytes == 0:
            return 0
        lines = self._newlines + (0 if self._last == ord("\n") else 1)
        return max(lines - 1, 0)

    def finish(self) -> None:
        if self._in_quotes:
            raise self._incomplete(
                f"inside a quoted field of record {self.records} (its closing quote is missing)"
            )
        if self.rows_terminated and self.bytes and self._last != ord("\n"):
            raise self._incomplete(f"inside record {self.records}: the file does not end with a line break")
        if self.bytes and self._last != ord("\n") and self._header_fields is not None:
            fields = self._commas + 1
            if fields < self._header_fields:
                raise self._incomplete(
                    f"inside record {self.records}: it has {fields} of the header's "
                    f"{self._header_fields} fields"
                )


# ---- JSON ---------------------------------------------------------------------------------------

# The skeleton of a JSON text: brackets, commas, ``v`` where a scalar value starts (a string, a
# number, true/false/null), ``o``/``a`` for an object/array already reduced away; ``A``/``O`` stand
# for the opening bracket of the first top-level array/object, so that it is never reduced.
_SCALAR_START = b"\x00-0123456789tfn"  # \x00 marks where a string was cut out
_TO_SKELETON = bytes.maketrans(_SCALAR_START, b"v" * len(_SCALAR_START))
_NOT_SKELETON = bytes(b for b in range(256) if b not in b"[]{}," + _SCALAR_START)
# Where a skeleton character sits is told by a nesting code: open arrays + _M × open objects. Up to
# depth 3 it names the path: under a top-level object ``O``, the code _M + 1 is "in an array member".
_M = 1 << 32
_DELTA = [0] * 256
for _c, _d in ((b"[", 1), (b"A", 1), (b"]", -1), (b"{", _M), (b"O", _M), (b"}", -_M)):
    _DELTA[_c[0]] = _d
# Complete innermost containers (no bracket inside), each reduced to one mark before counting.
_INNER_OBJECT = re.compile(rb"\{[^\[\]{}AO]*+\}")
_INNER_ARRAY = re.compile(rb"\[[^\[\]{}AO]*+\]")
_MARKS = re.compile(rb"vv+")
_A, _O, _RA = ord("A"), ord("O"), ord("a")


def _reduce(skeleton: bytes, *, arrays: bool) -> bytes:
    while True:
        skeleton, objects = _INNER_OBJECT.subn(b"o", skeleton)
        found = objects
        if arrays:
            skeleton, lists = _INNER_ARRAY.subn(b"a", skeleton)
            found += lists
        if not found:
            return skeleton


class JsonChecker(FormatChecker):
    """Brackets outside strings must balance at the end, outside a string; records where cheap.

    Per chunk, at C speed: escaped backslashes and quotes are removed (``bytes.replace``; an odd
    backslash at a chunk's end carries to the next), so the remaining quotes delimit strings; the
    text outside strings is joined (``split`` on quotes) and translated into a skeleton of brackets,
    commas and value marks; complete innermost containers are reduced to one mark by a regular
    expression; what is left is counted by (character, nesting code) in one pass of C iterators.
    Memory: that counter, bounded by the nesting depth.
    """

    format = "json"

    def __init__(self) -> None:
        super().__init__()
        self._in_string = False
        self._escape = False  # the previous chunk ended with an unpaired backslash (inside a string)
        self._arrays = 0  # open arrays
        self._objects = 0  # open objects
        self._top: int | None = None  # first byte of the skeleton: A (array), O (object) or v (scalar)
        self._seen = Counter[tuple[int, int]]()  # (skeleton character, nesting code after it)

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.bytes += len(chunk)
        outside = self._outside_strings(chunk)
        if outside is None:
            return
        skeleton = outside.translate(_TO_SKELETON, _NOT_SKELETON)
        if not skeleton:
            return
        if self._top is None:
            first = skeleton[:1]
            self._top = {b"[": _A, b"{": _O}.get(first, ord("v"))
            if first in (b"[", b"{"):
                skeleton = bytes([self._top]) + skeleton[1:]
        # Complete inner containers are reduced to a mark (an element is an element, whatever is
        # inside) and what is left is counted by (character, nesting code). Under a top-level
        # object, an array member reduced away would take the records with it: such a chunk is
        # counted again with its arrays kept.
        seen = self._counted(_reduce(skeleton, arrays=True))
        if self._top == _O and seen[(_RA, _M)]:
            seen = self._counted(_reduce(skeleton, arrays=False))
        self._seen.update(seen)
        self._arrays += skeleton.count(b"[") + skeleton.count(b"A") - skeleton.count(b"]")
        self._objects += skeleton.count(b"{") + skeleton.count(b"O") - skeleton.count(b"}")

    def _outside_strings(self, chunk: bytes) -> bytes | None:
        """The chunk's bytes outside JSON strings (each string a NUL mark), escapes handled across
        chunk boundaries; None when the whole chunk lies inside one string."""
        data = b"\\" + chunk if self._escape else chunk
        self._escape = False
        if data.endswith(b"\\"):  # an escape cut by the chunk's end: finish it with the next chunk
            stripped = data.rstrip(b"\\")
            self._escape = (len(data) - len(stripped)) % 2 == 1
            data = stripped
        if b'\\"' in data:
            # Within a string every backslash starts a two-byte escape and a run of backslashes starts
            # on an escape boundary, so pairing them left to right is exact; what is left of ``\"`` is
            # an escaped quote. Backslashes before anything but a quote change nothing here.
            data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
        if b'"' not in data:
            return None if self._in_string else data
        pieces = data.split(b'"')
        outside = b"\x00".join(pieces[1::2] if self._in_string else pieces[0::2])
        if len(pieces) % 2 == 0:
            self._in_string = not self._in_string
        if self._in_string:  # the last string opened in this chunk and runs on: mark it here
            outside += b"\x00"
        return outside

    def _counted(self, skeleton: bytes) -> Counter[tuple[int, int]]:
        """(character, nesting code after it) of every skeleton character.

        After the reduction only the edges of a chunk hold brackets (the closers of what an earlier
        chunk opened, the openers of what a later one closes): those are walked in one pass of C
        iterators; the run between them, all at one nesting code, is counted with ``bytes.count``.
        """
        if b"vv" in skeleton:  # a number leaves one mark per digit: one per value is enough
            skeleton = _MARKS.sub(b"v", skeleton)
        last_close = max(skeleton.rfind(b"]"), skeleton.rfind(b"}"))
        first_open = min(
            (at for at in (skeleton.find(c, last_close + 1) for c in (b"[", b"{", b"A", b"O")) if at >= 0),
            default=len(skeleton),
        )
        head, middle, tail = (
            skeleton[: last_close + 1],
            skeleton[last_close + 1 : first_open],
            skeleton[first_open:],
        )
        start = self._arrays + _M * self._objects
        codes = list(accumulate(map(_DELTA.__getitem__, head), initial=start))
        seen = Counter(zip(head, codes[1:], strict=True))
        code = codes[-1]
        for c in b",voa":
            if n := middle.count(c):
                seen[(c, code)] += n
        seen.update(
            zip(tail, islice(accumulate(map(_DELTA.__getitem__, tail), initial=code), 1, None), strict=False)
        )
        return seen

    def _count(self, chars: bytes, code: int) -> int:
        return sum(self._seen[(c, code)] for c in chars)

    @property
    def records(self) -> int | None:
        if self._top is None or self._in_string or self._arrays or self._objects:
            return None
        top_values = self._count(b"voa", 0) + self._count(b"[A", 1) + self._count(b"{O", _M)
        if top_values > 1:  # several top-level values (JSON Lines): one record each, if containers
            return top_values if not self._count(b"v", 0) else None
        if self._top == _A:
            return self._elements(1)
        if self._top == _O and self._count(b"[", _M + 1) + self._count(b"a", _M) == 1:
            return self._elements(_M + 1)  # the elements of the one array member
        return None

    def _elements(self, code: int) -> int:
        """How many values are directly inside the containers at nesting code ``code``."""
        commas = self._count(b",", code)
        present = self._count(b"voa", code) + self._count(b"[", code + 1) + self._count(b"{", code + _M)
        return commas + 1 if commas or present else 0

    def finish(self) -> None:
        if self._in_string or self._escape:
            raise self._incomplete("inside a string (its closing quote is missing)")
        if self._top is None:
            raise self._incomplete("no JSON value in it")
        if self._arrays < 0 or self._objects < 0:
            raise self._incomplete("more closing than opening brackets (not JSON)")
        if self._arrays or self._objects:
            raise self._incomplete(
                f"{self._arrays + self._objects} closing bracket(s) missing "
                f"({self._arrays} ']' and {self._objects} '}}')"
            )


# ---- XML ----------------------------------------------------------------------------------------

_XML_HEAD_LIMIT = 1024 * 1024
_XML_TAIL = 64 * 1024
_XML_NAME = re.compile(rb"<([^\s/>!?<]+)")
_XML_TAG_END = re.compile(rb"""(?:[^>"']|"[^"]*"|'[^']*')*>""")
_XML_SPACE = b" \t\r\n"


class XmlChecker(FormatChecker):
    """The root element must be closed at the end; records by element name where cheap.

    Keeps the head (at most 1 MiB, until the root's start tag and its first children are read) and
    the last 64 KiB; start tags of the record element are counted by ``bytes.count`` per chunk, with
    a carry of a few bytes across chunk boundaries. A head that is not XML as expected (a UTF-16
    file, text before the root, a prolog over 1 MiB) is not checked: records None, no error.
    """

    format = "xml"

    def __init__(self) -> None:
        super().__init__()
        self._head = bytearray()
        self._head_done = False
        self._unchecked = False
        self._root: bytes | None = None
        self._root_empty = False  # the root is <root/>
        self._root_end = 0  # where the root's start tag ends
        self._names: list[bytes] = []  # first child of the root, then its first child (if any)
        self._wrapper = False  # the root's first child holds elements
        self._no_children = False
        self._counts: dict[bytes, int] = {}
        self._carry = b""
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.bytes += len(chunk)
        self._tail = chunk[-_XML_TAIL:] if len(chunk) >= _XML_TAIL else (self._tail + chunk)[-_XML_TAIL:]
        if not self._head_done:
            self._head += chunk
            self._read_head(final=False)
            if self._head_done:
                data, self._head = bytes(self._head), bytearray()
                self._count_names(data)
            return
        self._count_names(chunk)

    def _count_names(self, chunk: bytes) -> None:
        if not self._names:
            return
        # A start tag cut by the chunk boundary is found with the carry; one wholly inside the carry
        # was counted with the previous chunk.
        carry = self._carry
        data = carry + chunk
        for name in self._names:
            self._counts[name] = (
                self._counts.get(name, 0) + _start_tags(data, name) - _start_tags(carry, name)
            )
        self._carry = data[-(max(len(n) for n in self._names) + 1) :]

    def _read_head(self, *, final: bool) -> None:
        """Find the root's name (and its first children's) in the head; set _head_done when known."""
        head = bytes(self._head)
        if len(head) < 4 and not final:
            return  # not enough to tell a byte order mark or an encoding
        if b"\xef\xbb\xbf".startswith(head):
            return  # nothing yet but (part of) a byte order mark
        pos = 3 if head.startswith(b"\xef\xbb\xbf") else 0
        if head[:2] in (b"\xff\xfe", b"\xfe\xff") or head[:1] == b"\x00" or head[1:2] == b"\x00":
            self._give_up()  # UTF-16/32: not read here
            return
        at = _skip_misc(head, pos)
        if at is None or at >= len(head):
            return self._need_more(final)
        pos = at
        if not head.startswith(b"<", pos):
            self._give_up()  # text before the root element: not XML
            return
        root = _start_tag(head, pos)
        if root is None:
            return self._need_more(final)
        self._root, end, self._root_empty = root
        self._root_end = end
        if self._root_empty:
            self._head_done = True
            return
        self._read_children(head, end, final)

    def _read_children(self, head: bytes, end: int, final: bool) -> None:
        """From the root's first child (and its first child), which element names are records."""
        first = _first_child(head, end)
        if first is None:
            return self._need_more(final)
        if first is False:  # the root has no element children
            self._no_children = True
            self._head_done = True
            return
        name, child_end, child_empty = first
        if name == self._root:  # nested like the root: element names do not tell records apart
            self._head_done = True
            return
        if child_empty:
            self._names = [name]
            self._head_done = True
            return
        inner = _first_child(head, child_end)
        if inner is None:
            return self._need_more(final)
        self._names = [name]
        if inner is not False and inner[0] not in (name, self._root):
            self._names.append(inner[0])
            self._wrapper = True
        self._head_done = True

    def _need_more(self, final: bool) -> None:
        if len(self._head) > _XML_HEAD_LIMIT and not final:
            self._give_up()

    def _give_up(self) -> None:
        self._unchecked = True
        self._head_done = True
        self._head = bytearray()
        self._names = []

    @property
    def records(self) -> int | None:
        if not self._head_done or self._unchecked or self._root is None:
            return None
        if self._root_empty or self._no_children:
            return 0
        if not self._names:
            return None
        first = self._counts.get(self._names[0], 0)
        if first == 1 and self._wrapper:
            return self._counts.get(self._names[1], 0)
        return first

    def finish(self) -> None:
        if not self._head_done:
            self._read_head(final=True)
            if not self._head_done:
                if self._root is None:
                    raise self._incomplete("it ends before the root element's start tag is complete")
                self._head_done = True  # the root tag was read; its children could not be
        if self._unchecked or self._root is None:  # no root: _read_head refused it already
            return
        root = _n(self._root)
        tail, base = self._tail, self.bytes - len(self._tail)
        if self._root_empty:
            rest = self._root_end - base
            if rest >= 0 and _after_misc(self._masked(tail[rest:]), 0) != len(tail) - rest:
                raise self._incomplete(f"it ends inside what follows the root element <{root}/>")
            return
        tail = self._masked(tail)
        at = tail.rfind(b"</" + self._root)
        end = (
            re.compile(rb"</" + re.escape(self._root) + rb"[ \t\r\n]*>").match(tail, at) if at >= 0 else None
        )
        if end is None:
            raise self._incomplete(f"the root element <{root}> is not closed")
        after = _after_misc(tail, end.end())
        if after is None:
            raise self._incomplete(f"it ends inside a processing instruction after </{root}>")
        if after < len(tail):
            raise self._incomplete(f"the root element <{root}> is not closed")

    def _masked(self, tail: bytes) -> bytes:
        """The tail with every comment and CDATA section blanked (their text may look like tags);
        raises if it ends inside one. Read from the tail's start, taken to be outside both."""
        out: list[bytes] = []
        pos = 0
        while True:
            comment, cdata = tail.find(b"<!--", pos), tail.find(b"<![CDATA[", pos)
            if comment < 0 and cdata < 0:
                out.append(tail[pos:])
                return b"".join(out)
            if cdata < 0 or 0 <= comment < cdata:
                start, closer, what = comment, b"-->", "a comment"
            else:
                start, closer, what = cdata, b"]]>", "a CDATA section"
            end = tail.find(closer, start + 4)
            if end < 0:
                raise self._incomplete(f"it ends inside {what}")
            out += (tail[pos:start], b" " * (end + len(closer) - start))
            pos = end + len(closer)


def _start_tags(data: bytes, name: bytes) -> int:
    """How many start tags (or empty-element tags) named ``name`` are in ``data``."""
    tag = b"<" + name
    if tag not in data:
        return 0
    return sum(data.count(tag + end) for end in (b">", b"/", b" ", b"\t", b"\n", b"\r"))


def _n(name: bytes) -> str:
    return name.decode("utf-8", "replace")


def _skip_misc(data: bytes, pos: int) -> int | None:
    """Skip whitespace, the XML declaration, processing instructions, comments and the doctype.

    Returns the position of the next markup, or None when a construct is not complete in ``data``.
    """
    while True:
        while pos < len(data) and data[pos] in _XML_SPACE:
            pos += 1
        after = _past_construct(data, pos)
        if after is None or after == pos:
            return after
        pos = after


_XML_PAIRS = ((b"<?", b"?>"), (b"<!--", b"-->"))
_DOCTYPE_SUBSET_END = re.compile(rb"\][ \t\r\n]*>")


def _past_construct(data: bytes, pos: int) -> int | None:
    """Where the processing instruction, comment or doctype at ``pos`` ends; ``pos`` when there is
    none there; None when it is not complete in ``data``."""
    for opener, closer in _XML_PAIRS:
        if data.startswith(opener, pos):
            end = data.find(closer, pos + len(opener))
            return None if end < 0 else end + len(closer)
    if not data.startswith(b"<!DOCTYPE", pos):
        return pos
    bracket, close = data.find(b"[", pos), data.find(b">", pos)
    if close < 0:
        return None
    if 0 <= bracket < close:  # an internal subset: it ends at "]" then ">"
        m = _DOCTYPE_SUBSET_END.search(data, bracket)
        return None if m is None else m.end()
    return close + 1


def _start_tag(data: bytes, pos: int) -> tuple[bytes, int, bool] | None:
    """(name, end, empty) of the start tag at ``pos``, or None when it is not complete in ``data``."""
    m = _XML_NAME.match(data, pos)
    if m is None or m.end() >= len(data):
        return None
    end = _XML_TAG_END.match(data, m.end())
    if end is None:
        return None
    return m.group(1), end.end(), data[end.end() - 2 : end.end()] == b"/>"


def _first_child(data: bytes, pos: int) -> tuple[bytes, int, bool] | Literal[False] | None:
    """The first child element's start tag after ``pos`` (skipping text, comments, CDATA, PIs);
    False when the parent closes first; None when ``data`` ends before either."""
    while True:
        pos = data.find(b"<", pos)
        if pos < 0 or pos + 1 >= len(data):
            return None
        if data.startswith(b"</", pos):
            return False
        for opener, closer in ((b"<!--", b"-->"), (b"<![CDATA[", b"]]>"), (b"<?", b"?>")):
            if data.startswith(opener, pos):
                end = data.find(closer, pos + len(opener))
                if end < 0:
                    return None
                pos = end + len(closer)
                break
            if len(data) - pos < len(opener) and opener.startswith(data[pos:]):
                return None
        else:
            return _start_tag(data, pos)


def _after_misc(data: bytes, pos: int) -> int | None:
    """Skip whitespace, comments and PIs from ``pos``; where they stop, or None inside one of them."""
    while True:
        while pos < len(data) and data[pos] in _XML_SPACE:
            pos += 1
        for opener, closer in ((b"<!--", b"-->"), (b"<?", b"?>")):
            if data.startswith(opener, pos) or (
                len(data) - pos < len(opener) and data[pos:] and opener.startswith(data[pos:])
            ):
                end = data.find(closer, pos + len(opener))
                if end < 0:
                    return None
                pos = end + len(closer)
                break
        else:
            return pos


# ---- ZIP / XLSX ---------------------------------------------------------------------------------

_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22
_ZIP_TAIL = 65535 + _EOCD_SIZE
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"
_CENTRAL_HEADER = b"PK\x01\x02"


class ZipChecker(FormatChecker):
    """The End Of Central Directory record must close the file, whole and consistent.

    Keeps the last 64 KiB + 22 bytes (the record and its longest comment). Consistent: one disk,
    its entry counts agree, and the central directory it points to ends where the record (or the
    ZIP64 record) starts, after a prefix of other data if any (a self-extracting archive); when the
    central directory starts inside the kept tail, its first header's signature is checked too.
    """

    format = "zip"

    def __init__(self, name: str = "zip") -> None:
        super().__init__()
        self.format = name
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.bytes += len(chunk)
        self._tail = chunk[-_ZIP_TAIL:] if len(chunk) >= _ZIP_TAIL else (self._tail + chunk)[-_ZIP_TAIL:]

    def finish(self) -> None:
        tail = self._tail
        base = self.bytes - len(tail)  # absolute offset of tail[0]
        at = tail.rfind(_EOCD)
        cut_inside = False
        while at >= 0:
            if len(tail) - at >= _EOCD_SIZE:
                comment = struct.unpack_from("<H", tail, at + 20)[0]
                if at + _EOCD_SIZE + comment == len(tail):
                    break
                cut_inside = cut_inside or at + _EOCD_SIZE + comment > len(tail)
            else:
                cut_inside = True
            at = tail.rfind(_EOCD, 0, at)
        if at < 0:
            if cut_inside:
                raise self._incomplete("it ends inside its End Of Central Directory record")
            raise self._incomplete("its End Of Central Directory record is missing (the file is cut short)")
        disk, cd_disk, on_disk, total, cd_size, cd_offset, _ = struct.unpack_from("<4H2LH", tail, at + 4)
        cd_end = base + at
        # A ZIP64 locator right before the record: the ZIP64 record holds the real figures and the
        # central directory ends where it starts (writers add it even when the figures would fit).
        if (at >= 20 and tail.startswith(_ZIP64_LOCATOR, at - 20)) or (
            0xFFFF in (on_disk, total) or 0xFFFFFFFF in (cd_size, cd_offset)
        ):
            on_disk, total, cd_size, cd_offset, cd_end = self._zip64(tail, at, base)
        if disk not in (0, 0xFFFF) or cd_disk not in (0, 0xFFFF) or on_disk != total:
            raise self._incomplete("its End Of Central Directory record describes a multi-disk archive")
        start = cd_end - cd_size  # where the central directory really starts
        if start < 0 or cd_offset > start or (total == 0) != (cd_size == 0):
            raise self._incomplete(
                "its End Of Central Directory record points outside the file (no central directory)"
            )
        if cd_size and start >= base and not tail.startswith(_CENTRAL_HEADER, start - base):
            raise self._incomplete("its central directory is missing where the End Of Central Directory says")

    def _zip64(self, tail: bytes, at: int, base: int) -> tuple[int, int, int, int, int]:
        locator = at - 20
        if locator < 0 or not tail.startswith(_ZIP64_LOCATOR, locator):
            raise self._incomplete("its ZIP64 end of central directory locator is missing")
        record = struct.unpack_from("<Q", tail, locator + 8)[0] - base
        if record < 0 or not tail.startswith(_ZIP64_EOCD, record):
            record = locator - 56  # a prefix shifted the offsets: the record is right before the locator
        if record < 0 or not tail.startswith(_ZIP64_EOCD, record):
            raise self._incomplete("its ZIP64 end of central directory record is missing")
        on_disk, total, cd_size, cd_offset = struct.unpack_from("<4Q", tail, record + 24)
        return on_disk, total, cd_size, cd_offset, base + record


# ---- XLSX rows ----------------------------------------------------------------------------------

_SHEET_NAMESPACES = frozenset(
    {
        "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
        "http://purl.oclc.org/ooxml/spreadsheetml/main",
    }
)
_RELATIONSHIP_ID = frozenset(
    {
        "http://schemas.openxmlformats.org/officeDocument/2006/relationships id",
        "http://purl.oclc.org/ooxml/officeDocument/relationships id",
    }
)
_OFFICE_DOCUMENT = "/officeDocument"  # the end of the package relationship type naming the workbook
_PACKAGE_RELS = "_rels/.rels"
_MAX_PARTS = 10_000  # XML parts followed per package (each keeps a few counters)
_MAX_RELATIONSHIPS = 10_000  # relationships kept per .rels part


class _NotCounted(Exception):
    """A part whose XML is refused (a DTD, an entity declaration) or not needed any further."""


def _refuse(*_: Any) -> None:
    raise _NotCounted("DTDs and entity declarations are not read")


class _XmlPart:
    """One XML part of the package, parsed as it inflates; what it says of the workbook's structure.

    ``kind`` (from its root element): ``worksheet`` (``last_row``: the last row's index, 1-based),
    ``workbook`` (``first_sheet``: the relationship id of its first sheet), ``rels``
    (``relationships``: id → (type, target, mode)) or ``other`` (parsing stops at the root).
    ``complete``: the entry passed its checks and its XML was well-formed to the end.
    """

    def __init__(self) -> None:
        self.kind: str | None = None
        self.last_row = 0
        self.first_sheet: str | None = None
        self.relationships: dict[str, tuple[str, str, str]] = {}
        self.complete = False
        self._row = ""
        self._sheet = ""
        self._stopped = False
        self._broken = False
        parser = expat.ParserCreate(namespace_separator=" ")  # nosec B407
        parser.ordered_attributes = True
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        parser.StartDoctypeDeclHandler = _refuse
        parser.EntityDeclHandler = _refuse
        parser.UnparsedEntityDeclHandler = _refuse
        parser.StartElementHandler = self._root
        self._parser = parser

    def _root(self, name: str, attrs: list[str]) -> None:
        namespace, _, local = name.rpartition(" ")
        if namespace in _SHEET_NAMESPACES and local == "worksheet":
            self.kind, self._row = "worksheet", f"{namespace} row"
            self._parser.StartElementHandler = self._rows
        elif namespace in _SHEET_NAMESPACES and local == "workbook":
            self.kind, self._sheet = "workbook", f"{namespace} sheet"
            self._parser.StartElementHandler = self._sheets
        elif local == "Relationships":
            self.kind = "rels"
            self._parser.StartElementHandler = self._relationship
        else:
            self.kind = "other"
            raise _NotCounted(local)

    def _rows(self, name: str, attrs: list[str]) -> None:
        if name != self._row:
            return
        index = self.last_row + 1
        for at in range(0, len(attrs) - 1, 2):
            if attrs[at] == "r":
                value = attrs[at + 1]
                index = int(value) if value.isdigit() and len(value) < 10 else index
                break
        self.last_row = max(self.last_row, index)

    def _sheets(self, name: str, attrs: list[str]) -> None:
        if name != self._sheet or self.first_sheet is not None:
            return
        values = dict(zip(attrs[0::2], attrs[1::2], strict=False))
        self.first_sheet = next((v for k, v in values.items() if k in _RELATIONSHIP_ID), "")

    def _relationship(self, name: str, attrs: list[str]) -> None:
        if not name.endswith("Relationship") or len(self.relationships) >= _MAX_RELATIONSHIPS:
            return
        values = dict(zip(attrs[0::2], attrs[1::2], strict=False))
        if "Id" in values and "Target" in values:
            mode = values.get("TargetMode", "Internal")
            self.relationships[values["Id"]] = (values.get("Type", ""), values["Target"], mode)

    def _parse(self, data: bytes, final: bool) -> None:
        if self._stopped:
            return
        try:
            self._parser.Parse(data, final)
        except _NotCounted:
            self._stopped = True
            self._broken = self.kind != "other"
        except expat.ExpatError:
            self._stopped = self._broken = True

    def write(self, data: bytes) -> None:
        self._parse(data, False)

    def close(self) -> None:
        self._parse(b"", True)
        self.complete = not self._broken


def _part_name(folder: str, target: str) -> str | None:
    """The zip entry name (lower case) a relationship's target names, from the folder of its source."""
    path = unquote(target)
    joined = path[1:] if path.startswith("/") else posixpath.join(folder, path)
    name = posixpath.normpath(joined)
    return None if name.startswith("..") or name == "." else name.lower()


def _rels_of(part: str) -> str:
    folder, base = posixpath.split(part)
    return posixpath.join(folder, "_rels", f"{base}.rels")


class XlsxChecker(ZipChecker):
    """The zip checks, and the rows of the workbook's first worksheet (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__("xlsx")
        self._parts: dict[str, _XmlPart] = {}
        self._walker = ZipStreamWalker(self._sink_for)

    def _sink_for(self, name: str) -> _XmlPart | None:
        lowered = name.lower()
        if not lowered.endswith((".xml", ".rels")) or len(self._parts) >= _MAX_PARTS:
            return None
        part = _XmlPart()
        self._parts[lowered] = part
        return part

    def feed(self, chunk: bytes) -> None:
        super().feed(chunk)
        self._walker.feed(chunk)

    def finish(self) -> None:
        super().finish()
        if self._walker.damage is not None:
            raise self._incomplete(f"it is damaged: {self._walker.damage}")

    def _complete(self, name: str | None, kind: str) -> _XmlPart | None:
        part = self._parts.get(name) if name is not None else None
        return part if part is not None and part.complete and part.kind == kind else None

    @property
    def records(self) -> int | None:
        walker = self._walker
        if not walker.done or walker.unreadable or walker.damage:
            return None
        package = self._complete(_PACKAGE_RELS, "rels")
        if package is None:
            return None
        targets = [t for kind, t, mode in package.relationships.values() if kind.endswith(_OFFICE_DOCUMENT)]
        workbook_name = _part_name("", targets[0]) if targets else None
        workbook = self._complete(workbook_name, "workbook")
        if workbook is None or workbook_name is None or not workbook.first_sheet:
            return None
        links = self._complete(_rels_of(workbook_name), "rels")
        link = links.relationships.get(workbook.first_sheet) if links is not None else None
        if link is None or link[2] != "Internal":
            return None
        sheet = self._complete(_part_name(posixpath.dirname(workbook_name), link[1]), "worksheet")
        return None if sheet is None else max(sheet.last_row - 1, 0)


# ---- registry -----------------------------------------------------------------------------------

#: Checker factories by format name (the file extension, or a dialect of it; lower case).
CHECKERS: dict[str, Callable[[], FormatChecker]] = {
    "csv": CsvRecordCounter,
    "csv-terminated": lambda: CsvRecordCounter(rows_terminated=True),
    "json": JsonChecker,
    "xml": XmlChecker,
    "zip": ZipChecker,
    "xlsx": XlsxChecker,
}


def checker_for(file_format: str | None) -> FormatChecker | None:
    """A new checker for ``file_format`` (``csv``, ``.json``, ``XML`` …); None for an unknown format."""
    if not file_format:
        return None
    factory = CHECKERS.get(file_format.lower().lstrip("."))
    return factory() if factory is not None else None
