"""The results bucket on S3: reads, conditional writes, listing, cleanup, and streamed uploads."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from botocore.exceptions import ClientError

from exportpipe.adapters.copier import CopyTuning, stream_to_s3
from exportpipe.models.job import ResultFile

# S3's answers to a conditional write that lost: 412, and 409 while another conditional write of
# the same key is in progress.
_CONDITION_FAILED = {"PreconditionFailed", "ConditionalRequestConflict"}


class S3ResultsBucket:
    """:class:`exportpipe.ports.ResultsBucket` on one S3 bucket."""

    def __init__(self, s3: Any, name: str) -> None:
        self._s3 = s3
        self.name = name

    def read(self, key: str) -> bytes | None:
        try:
            body = self._s3.get_object(Bucket=self.name, Key=key)["Body"]
        except self._s3.exceptions.NoSuchKey:
            return None
        return bytes(body.read())

    def put_new(self, key: str, body: bytes, *, content_type: str) -> bool:
        try:
            self._s3.put_object(
                Bucket=self.name,
                Key=key,
                Body=body,
                ContentType=content_type,
                ChecksumAlgorithm="SHA256",
                IfNoneMatch="*",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in _CONDITION_FAILED:
                raise
            return False
        return True

    def keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys

    def delete(self, keys: Iterable[str]) -> None:
        objects = [{"Key": k} for k in keys]
        for i in range(0, len(objects), 1000):
            self._s3.delete_objects(
                Bucket=self.name, Delete={"Objects": objects[i : i + 1000], "Quiet": True}
            )

    def abort_uploads(self, prefix: str) -> int:
        aborted = 0
        for page in self._s3.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.name, Prefix=prefix
        ):
            for upload in page.get("Uploads", []):
                with contextlib.suppress(self._s3.exceptions.NoSuchUpload):
                    self._s3.abort_multipart_upload(
                        Bucket=self.name, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted += 1
        return aborted

    def upload(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        content_type: str,
        expected_length: int | None,
        file_format: str | None,
        part_size: int,
    ) -> ResultFile:
        return stream_to_s3(
            self._s3,
            chunks,
            bucket=self.name,
            key=key,
            content_type=content_type,
            expected_length=expected_length,
            file_format=file_format,
            tuning=CopyTuning(part_size=part_size),
        )
