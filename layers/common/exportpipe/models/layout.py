"""S3 layout and the manifest (contract 4).

``<prefix>/source=<source>/dataset=<dataset>/dt=<YYYY-MM-DD>/export=<job id>/part-<NNNNN>.<ext>``
plus ``_manifest.json`` in the same folder, written last: a folder without a manifest is not a delivery.
``dt`` is the UTC date of the window's start.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from exportpipe.models.definition import TimeFormat, Window
from exportpipe.models.job import Job, ResultFile

MANIFEST_NAME = "_manifest.json"
SCHEMA_VERSION: Literal["1"] = "1"


def export_prefix(prefix: str, job: Job) -> str:
    parts = [
        f"source={job.source}",
        f"dataset={job.dataset}",
        f"dt={job.window.start.strftime('%Y-%m-%d')}",
        f"export={job.job_id}",
    ]
    head = prefix.strip("/")
    return "/".join([head, *parts]) if head else "/".join(parts)


def part_key(folder: str, number: int, ext: str) -> str:
    return f"{folder}/part-{number:05d}.{ext}"


def manifest_key(folder: str) -> str:
    return f"{folder}/{MANIFEST_NAME}"


class Totals(BaseModel):
    model_config = ConfigDict(frozen=True)

    files: int
    bytes: int
    records: int | None


class Manifest(BaseModel):
    """What landed, written as ``_manifest.json`` after every file is complete."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal["1"] = SCHEMA_VERSION
    job_id: str
    definition_name: str
    source: str
    dataset: str
    window: Window
    upstream_id: str | None
    format: str
    timezone: str | None = None  # timezone of dates inside the files, where the source says
    # when the upstream export was created, as the upstream wrote it: a source that writes it in the
    # exporting user's timezone shows by its offset the zone the files' dates are in
    upstream_created_at: str | None = None
    # how the files write their dates (epoch ms, which columns), where the source says: left out
    # when absent, so other sources' manifests are as before
    time_format: TimeFormat | None = Field(default=None, exclude_if=lambda value: value is None)
    files: list[ResultFile]
    totals: Totals
    delivered_at: AwareDatetime

    @classmethod
    def build(
        cls,
        job: Job,
        files: list[ResultFile],
        *,
        fmt: str,
        timezone: str | None,
        delivered_at: AwareDatetime,
        time_format: TimeFormat | None = None,
    ) -> Manifest:
        counts = [f.records for f in files]
        records = None if any(c is None for c in counts) else sum(c for c in counts if c is not None)
        return cls(
            job_id=job.job_id,
            definition_name=job.definition_name,
            source=job.source,
            dataset=job.dataset,
            window=job.window,
            upstream_id=job.upstream_id,
            format=fmt,
            timezone=timezone,
            upstream_created_at=job.upstream_created_at,
            time_format=time_format,
            files=files,
            totals=Totals(files=len(files), bytes=sum(f.bytes for f in files), records=records),
            delivered_at=delivered_at,
        )
