"""Stream one result file into S3 with a SHA-256, a byte count and a record count where the format has one.

The upload is boto3's managed transfer (``upload_fileobj``): multipart above the threshold, parts
uploaded on worker threads while the next part downloads, each part sent with its own SHA-256
checksum, and the multipart upload aborted if anything fails. Memory is bounded by
``part_size × (max_concurrency + max_in_memory_upload_chunks)`` whatever the file's size.

A file that ends early never lands: the stream is checked against its framing (an announced
``Content-Length``; a chunked body that breaks surfaces from ``requests`` as an error) and against its
format (:mod:`exportpipe.formats`: a CSV that ends inside quotes, JSON or XML that does not close, a
ZIP without its central directory), at the end of the stream, before the last part reaches the
transfer, so the upload is aborted and nothing is stored.
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
from exportpipe.formats import FormatChecker, checker_for
from exportpipe.models.job import ResultFile

MIB = 1024 * 1024
CHUNK = 256 * 1024


class MeasuringReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks that hashes, counts, and checks the end.

    ``read(n)`` returns exactly ``n`` bytes until the end (the transfer manager treats a short read
    as the last part). A stream that breaks, ends before ``expected_length``, or ends where its
    format (``file_format``, the file extension: see :func:`exportpipe.formats.checker_for`) says
    it is cut short, raises DownloadIncompleteError when the end is read, which is before the last
    bytes are returned (a read looks one byte ahead): the transfer aborts the multipart upload and
    nothing lands.
    """

    def __init__(
        self,
        chunks: Iterable[bytes],
        *,
        expected_length: int | None,
        file_format: str | None = None,
    ) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buffer = bytearray()
        self._done = False
        self.sha256 = hashlib.sha256()
        self.bytes = 0
        self.expected_length = expected_length
        self.checker: FormatChecker | None = checker_for(file_format)

    @property
    def records(self) -> int | None:
        """The file's record count where its format counts them, else None."""
        return self.checker.records if self.checker is not None else None

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
            if self.checker is not None:
                self.checker.finish()
            return False
        except (ChunkedEncodingError, ConnectionError, ContentDecodingError, ProtocolError) as exc:
            raise DownloadIncompleteError(f"download broke after {self.bytes} bytes: {exc}") from exc
        if chunk:
            self.sha256.update(chunk)
            self.bytes += len(chunk)
            if self.checker is not None:
                self.checker.feed(chunk)
            self._buffer += chunk
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while not self._done:
                self._pull()
            out = bytes(self._buffer)
            self._buffer.clear()
            return out
        # One byte more than asked for (or the end): the last bytes of the stream are never handed on
        # before the end was read and checked, even when the size is a multiple of ``size``.
        while len(self._buffer) <= size and not self._done:
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
    file_format: str | None = None,
    tuning: CopyTuning | None = None,
) -> ResultFile:
    """Upload the stream to ``s3://bucket/key``; verify the stored size; return what the manifest lists.

    ``file_format`` (the file extension) picks the end-of-file check and the record count; a format
    without a checker is uploaded unchecked, with ``records`` None.
    """
    tuning = tuning or CopyTuning()
    reader = MeasuringReader(chunks, expected_length=expected_length, file_format=file_format)
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
        records=reader.records,
        content_type=content_type,
    )
