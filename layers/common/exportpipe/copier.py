"""Stream one result file into S3 with a SHA-256, a byte count and (for CSV) a record count.

The upload is boto3's managed transfer (``upload_fileobj``): multipart above the threshold, parts
uploaded on worker threads while the next part downloads, each part sent with its own SHA-256
checksum, and the multipart upload aborted if anything fails. Memory is bounded by
``part_size × (max_concurrency + max_in_memory_upload_chunks)`` whatever the file's size.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from boto3.s3.transfer import TransferConfig
from requests.exceptions import ChunkedEncodingError, ConnectionError, ContentDecodingError
from urllib3.exceptions import ProtocolError

from exportpipe.errors import DownloadIncompleteError
from exportpipe.jobs import ResultFile

MIB = 1024 * 1024
CHUNK = 256 * 1024


class CsvRecordCounter:
    """Counts CSV records in a byte stream fed in arbitrary chunks.

    A record ends at a newline outside quotes; a doubled quote inside a quoted field toggles the
    quote state twice and so changes nothing. The header row is not a record.
    """

    def __init__(self) -> None:
        self._in_quotes = False
        self._newlines = 0
        self._last: int | None = None
        self._bytes = 0

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        self._bytes += len(chunk)
        self._last = chunk[-1]
        if b'"' not in chunk:
            if not self._in_quotes:
                self._newlines += chunk.count(b"\n")
            return
        # Pieces between quotes alternate outside/inside; count the outside ones in one C-level pass.
        pieces = chunk.split(b'"')
        outside = pieces[1::2] if self._in_quotes else pieces[0::2]
        self._newlines += b"".join(outside).count(b"\n")
        if len(pieces) % 2 == 0:  # an odd number of quotes flips the state
            self._in_quotes = not self._in_quotes

    @property
    def records(self) -> int:
        if self._bytes == 0:
            return 0
        lines = self._newlines + (0 if self._last == ord("\n") else 1)
        return max(lines - 1, 0)


class MeasuringReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks that hashes, counts, and checks the length.

    ``read(n)`` returns exactly ``n`` bytes until the end (the transfer manager treats a short read
    as the last part). A stream that breaks, or ends before ``expected_length``, raises
    DownloadIncompleteError, which makes the transfer abort the multipart upload.
    """

    def __init__(self, chunks: Iterable[bytes], *, expected_length: int | None, count_csv: bool) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buffer = bytearray()
        self._done = False
        self.sha256 = hashlib.sha256()
        self.bytes = 0
        self.expected_length = expected_length
        self.counter = CsvRecordCounter() if count_csv else None

    def readable(self) -> bool:
        return True

    def _pull(self) -> bool:
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self._done = True
            if self.expected_length is not None and self.bytes != self.expected_length:
                raise DownloadIncompleteError(
                    f"download ended after {self.bytes} of {self.expected_length} bytes"
                ) from None
            return False
        except (ChunkedEncodingError, ConnectionError, ContentDecodingError, ProtocolError) as exc:
            raise DownloadIncompleteError(f"download broke after {self.bytes} bytes: {exc}") from exc
        if chunk:
            self.sha256.update(chunk)
            self.bytes += len(chunk)
            if self.counter is not None:
                self.counter.feed(chunk)
            self._buffer += chunk
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while not self._done:
                self._pull()
            out = bytes(self._buffer)
            self._buffer.clear()
            return out
        while len(self._buffer) < size and not self._done:
            self._pull()
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        return out

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


@dataclass(frozen=True)
class CopyTuning:
    part_size: int = 8 * MIB
    max_concurrency: int = 4
    max_in_memory_chunks: int = 2

    def transfer_config(self) -> TransferConfig:
        return TransferConfig(
            multipart_threshold=self.part_size,
            multipart_chunksize=self.part_size,
            max_concurrency=self.max_concurrency,
            max_io_queue=self.max_in_memory_chunks,
            use_threads=True,
        )


def stream_to_s3(
    s3: Any,
    chunks: Iterable[bytes],
    *,
    bucket: str,
    key: str,
    content_type: str,
    expected_length: int | None,
    count_csv: bool,
    tuning: CopyTuning | None = None,
) -> ResultFile:
    """Upload the stream to ``s3://bucket/key``; verify the stored size; return what the manifest lists."""
    tuning = tuning or CopyTuning()
    reader = MeasuringReader(chunks, expected_length=expected_length, count_csv=count_csv)
    config = tuning.transfer_config()
    # Bound the non-seekable upload's read-ahead buffer (s3transfer default: 10 parts).
    config.max_in_memory_upload_chunks = tuning.max_in_memory_chunks
    s3.upload_fileobj(
        reader,
        bucket,
        key,
        ExtraArgs={"ContentType": content_type, "ChecksumAlgorithm": "SHA256"},
        Config=config,
    )
    digest = reader.sha256.digest()
    head = s3.head_object(Bucket=bucket, Key=key)
    if int(head["ContentLength"]) != reader.bytes:
        raise DownloadIncompleteError(
            f"s3://{bucket}/{key} holds {head['ContentLength']} bytes, {reader.bytes} were sent"
        )
    return ResultFile(
        key=key,
        bytes=reader.bytes,
        sha256=digest.hex(),
        records=reader.counter.records if reader.counter is not None else None,
        content_type=content_type,
    )
