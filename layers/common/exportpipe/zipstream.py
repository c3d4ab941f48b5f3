"""A zip archive read as its bytes stream past: its local entries, one after the other, each entry's
uncompressed bytes handed to a sink chosen by its name, in bounded memory.

:mod:`zipfile` needs a seekable file (it starts from the central directory at the end); a download
streamed into S3 is not one. The local file headers come first, each right before its entry's data:

- an entry whose sizes are in its local header is read (or skipped) by its compressed size;
- an entry written with a data descriptor (flag bit 3: the sizes follow the data) is read to the end
  of its deflate stream, which marks its own end (``zlib``'s ``eof``, the rest of the chunk in
  ``unused_data``); the descriptor that follows (signature optional, 32- or 64-bit sizes) is told by
  the CRC-32 and size it must repeat. A *stored* entry with a data descriptor has no such end: the
  walk gives up there (``unreadable``);
- ZIP64 sizes come from the local header's ZIP64 extra field;
- inflated bytes go out in pieces of at most :data:`MAX_PIECE` bytes (a small compressed chunk may
  expand a thousandfold), and their CRC-32 and size are checked against the header or descriptor.

The walk stops at the central directory (``done``). Anything it cannot read (encryption, an unknown
compression method on an entry whose end it must find, bytes that are not a local header: a
self-extracting prefix, say) makes it give up with the reason in ``unreadable``: the archive may well
be fine, it is just not read here. An entry whose bytes contradict their own checks (a CRC-32, a size,
a deflate stream that ends early or does not decode) is damage, kept in ``damage``.
"""

from __future__ import annotations

import struct
import zlib
from typing import Protocol

__all__ = ["MAX_PIECE", "EntrySink", "ZipStreamWalker"]

MAX_PIECE = 1024 * 1024

_LOCAL = b"PK\x03\x04"
_DESCRIPTOR = b"PK\x07\x08"
# What may follow the last local entry: the central directory, or the records that precede or end it.
_AFTER_ENTRIES = (b"PK\x01\x02", b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07", b"PK\x05\x05", b"PK\x06\x08")
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_STORED, _DEFLATED = 0, 8
_ZIP64_EXTRA = 0x0001
_MASK32 = 0xFFFFFFFF


class EntrySink(Protocol):
    """Where one entry's uncompressed bytes go."""

    def write(self, data: bytes) -> None:
        """The next piece of the entry's uncompressed bytes."""

    def close(self) -> None:
        """The entry is complete and passed its checks (CRC-32, sizes)."""


class _Entry:
    """The local entry being read."""

    def __init__(self, name: str, method: int, crc: int, csize: int, usize: int) -> None:
        self.name = name
        self.method = method
        self.crc = crc  # from the header (0 when a descriptor follows)
        self.csize = csize
        self.usize = usize
        self.sized = True  # the compressed size is known from the header
        self.descriptor = False
        self.zip64 = False
        self.sink: EntrySink | None = None
        self.inflater: zlib._Decompress | None = None
        self.left = csize  # compressed bytes still to come (when sized)
        self.read = 0  # compressed bytes consumed
        self.out = 0  # uncompressed bytes produced
        self.out_crc = 0
        self.checked = False  # CRC-32 and size of the uncompressed bytes were computed


class ZipStreamWalker:
    """Fed an archive's bytes in arbitrary chunks; hands each local entry's bytes to the sink that
    ``sink_for(name)`` returns (None: the entry is skipped, inflated only if its end must be found).

    ``entries``: local entries read to their end; ``done``: the central directory was reached;
    ``unreadable``/``damage``: why the walk gave up / what was found broken (see the module).
    """

    def __init__(self, sink_for: _SinkFactory) -> None:
        self._sink_for = sink_for
        self._buf = bytearray()
        self._entry: _Entry | None = None
        self._in_descriptor = False
        self.entries = 0
        self.done = False
        self.unreadable: str | None = None
        self.damage: str | None = None

    @property
    def stopped(self) -> bool:
        return self.done or self.unreadable is not None or self.damage is not None

    def feed(self, chunk: bytes) -> None:
        if self.stopped or not chunk:
            return
        self._buf += chunk
        while not self.stopped and self._step():
            pass
        if self.stopped:
            self._buf = bytearray()

    @property
    def mid_entry(self) -> bool:
        """The bytes fed so far end inside a local entry (its header, data or descriptor)."""
        return not self.stopped and (self._entry is not None or bool(self._buf))

    def _step(self) -> bool:
        """Advance as far as the buffered bytes allow; False when more bytes are needed."""
        if self._entry is None:
            return self._header()
        if self._in_descriptor:
            return self._descriptor(self._entry)
        return self._data(self._entry)

    # ---- local headers ---------------------------------------------------------------------------

    def _header(self) -> bool:
        buf = self._buf
        if len(buf) < 4:
            return False
        signature = bytes(buf[:4])
        if signature in _AFTER_ENTRIES:
            self.done = True
            return False
        if signature != _LOCAL:
            self.unreadable = f"no local file header after {self.entries} entries"
            return False
        if len(buf) < _LOCAL_HEADER.size:
            return False
        _, _, flags, method, _, _, crc, csize, usize, name_len, extra_len = _LOCAL_HEADER.unpack_from(buf)
        end = _LOCAL_HEADER.size + name_len + extra_len
        if len(buf) < end:
            return False
        raw_name = bytes(buf[_LOCAL_HEADER.size : _LOCAL_HEADER.size + name_len])
        extra = bytes(buf[_LOCAL_HEADER.size + name_len : end])
        del buf[:end]
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", "replace")
        if flags & 0x1:
            self.unreadable = f"entry {name!r} is encrypted"
            return False
        entry = _Entry(name, method, crc, csize, usize)
        entry.descriptor = bool(flags & 0x8)
        self._zip64(entry, extra)
        entry.left = entry.csize
        entry.sized = not (entry.descriptor and entry.csize == 0)
        return self._begin(entry)

    def _begin(self, entry: _Entry) -> bool:
        """Decide how the entry is read (its sink, whether it is inflated); False when it cannot be."""
        name, method = entry.name, entry.method
        if method not in (_STORED, _DEFLATED):
            if not entry.sized:
                self.unreadable = f"entry {name!r}: compression method {method} and no size"
                return False
        elif not entry.sized and method == _STORED:
            self.unreadable = f"entry {name!r} is stored with its size after its data"
            return False
        else:
            entry.sink = self._sink_for(name)
        if method == _DEFLATED and (entry.sink is not None or not entry.sized):
            entry.inflater = zlib.decompressobj(-15)
        entry.checked = entry.sink is not None or entry.inflater is not None
        self._entry = entry
        return True

    @staticmethod
    def _zip64(entry: _Entry, extra: bytes) -> None:
        """Read the ZIP64 extra field's sizes (those the header marks 0xFFFFFFFF, in that order)."""
        pos = 0
        while pos + 4 <= len(extra):
            kind, size = struct.unpack_from("<HH", extra, pos)
            body = extra[pos + 4 : pos + 4 + size]
            pos += 4 + size
            if kind != _ZIP64_EXTRA:
                continue
            entry.zip64 = True
            at = 0
            if entry.usize == _MASK32 and at + 8 <= len(body):
                entry.usize = struct.unpack_from("<Q", body, at)[0]
                at += 8
            if entry.csize == _MASK32 and at + 8 <= len(body):
                entry.csize = struct.unpack_from("<Q", body, at)[0]
            return

    # ---- entry data ------------------------------------------------------------------------------

    def _data(self, entry: _Entry) -> bool:
        ended = self._sized(entry) if entry.sized else self._unsized(entry)
        if not ended or self.damage is not None:
            return False
        if entry.descriptor:
            self._in_descriptor = True
            return True
        return self._end(entry, entry.crc, entry.csize, entry.usize)

    def _sized(self, entry: _Entry) -> bool:
        """Take the entry's data by its compressed size; True once all of it was read."""
        buf = self._buf
        if entry.left and not buf:
            return False
        take = min(entry.left, len(buf))
        piece = bytes(buf[:take])
        del buf[:take]
        entry.left -= take
        entry.read += take
        if entry.inflater is not None:
            self._inflate(entry, piece)
        elif entry.sink is not None:
            self._emit(entry, piece)
        if entry.left:
            return False
        if entry.inflater is not None and not entry.inflater.eof and self.damage is None:
            self.damage = f"entry {entry.name!r}: its deflate stream ends before its compressed size"
        return True

    def _unsized(self, entry: _Entry) -> bool:
        """Inflate the entry's data to the end of its deflate stream; True once it ended (what
        follows it goes back to the buffer: the data descriptor)."""
        buf = self._buf
        inflater = entry.inflater
        if not buf or inflater is None:  # (an unsized entry is always inflated here)
            return False
        piece = bytes(buf)
        buf.clear()
        self._inflate(entry, piece)
        if not inflater.eof:
            entry.read += len(piece)
            return False
        rest = inflater.unused_data
        entry.read += len(piece) - len(rest)
        buf[:0] = rest
        return True

    def _inflate(self, entry: _Entry, data: bytes) -> None:
        inflater = entry.inflater
        if inflater is None or inflater.eof:
            if data and self.damage is None:
                self.damage = f"entry {entry.name!r}: data after the end of its deflate stream"
            return
        try:
            while True:
                out = inflater.decompress(data, MAX_PIECE)
                self._emit(entry, out)
                if inflater.eof:
                    return
                data = inflater.unconsumed_tail
                # a full piece with no input left may leave output inside zlib: drain it too
                if not data and len(out) < MAX_PIECE:
                    return
        except zlib.error as exc:
            self.damage = f"entry {entry.name!r} does not inflate: {exc}"

    def _emit(self, entry: _Entry, data: bytes) -> None:
        if not data:
            return
        entry.out += len(data)
        entry.out_crc = zlib.crc32(data, entry.out_crc)
        entry.checked = True
        if entry.sink is not None:
            entry.sink.write(data)

    # ---- the end of an entry ---------------------------------------------------------------------

    def _descriptor(self, entry: _Entry) -> bool:
        buf = self._buf
        if len(buf) < 4:
            return False
        skip = 4 if bytes(buf[:4]) == _DESCRIPTOR else 0
        layouts = [("<IQQ", 20), ("<III", 12)] if entry.zip64 else [("<III", 12), ("<IQQ", 20)]
        if len(buf) < skip + max(size for _, size in layouts):
            # a 32-bit descriptor may be the archive's last bytes before the central directory:
            # wait for enough bytes to tell both layouts apart
            return False
        for layout, size in layouts:
            crc, csize, usize = struct.unpack_from(layout, buf, skip)
            if not entry.checked or (crc, csize & _MASK32, usize & _MASK32) == (
                entry.out_crc,
                entry.read & _MASK32,
                entry.out & _MASK32,
            ):
                del buf[: skip + size]
                self._in_descriptor = False
                return self._end(entry, crc, csize, usize)
        self.damage = f"entry {entry.name!r}: its data descriptor does not match its data"
        return False

    def _end(self, entry: _Entry, crc: int, csize: int, usize: int) -> bool:
        if entry.checked and (entry.out_crc, entry.out) != (crc, usize):
            self.damage = f"entry {entry.name!r} fails its CRC-32 or size check (it is damaged)"
            return False
        if entry.sink is not None:
            entry.sink.close()
        self.entries += 1
        self._entry = None
        return True


class _SinkFactory(Protocol):
    def __call__(self, name: str) -> EntrySink | None:
        """The sink of the entry named ``name``, or None to skip it."""
