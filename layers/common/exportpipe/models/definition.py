"""Export definitions: the payload every schedule carries (contract 1 of the architecture brief).

A definition is a pydantic model, a discriminated union on ``source`` (each source refines
:class:`DefinitionBase`). ``name`` identifies it: job ids, watermarks and S3 folders are derived from
it. ``exportpipe.sources.registry.parse_definition`` turns any invalid payload into
:class:`~exportpipe.errors.InvalidDefinitionError` naming each field and the reason, before any
upstream call is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, ClassVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from exportpipe.errors import ConfigurationError
from exportpipe.formats import CHECKERS
from exportpipe.models.connection import Connection, ConnectionName

DefinitionName = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$",
        description="Identifies the definition: lower-case letters, digits, '-' and '_', at most 40 chars.",
    ),
]
DatasetName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_]{0,62}$")]


class Window(BaseModel):
    """A half-open time range [start, end) in UTC."""

    model_config = ConfigDict(frozen=True)

    start: AwareDatetime
    end: AwareDatetime

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)  # windows are compared and stored as ISO strings: always UTC

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self

    @classmethod
    def of(cls, start: datetime, end: datetime) -> Window:
        return cls(start=start.astimezone(UTC), end=end.astimezone(UTC))

    @property
    def length(self) -> timedelta:
        return self.end - self.start


@dataclass(frozen=True)
class ResultFormat:
    """What a definition's result files are: how they are named, typed and checked in S3.

    - ``extension``: the parts' file extension (``part-00001.<extension>``) and the manifest's ``format``;
    - ``content_type``: the S3 objects' ``Content-Type``;
    - ``checker``: the name in :data:`exportpipe.formats.CHECKERS` the copier checks each file's end
      and counts its records by (the extension, or a dialect of it such as ``csv-terminated``);
      None: the files are not checked and their records not counted.
    """

    extension: str
    content_type: str
    checker: str | None = None

    def __post_init__(self) -> None:
        if self.checker is not None and self.checker not in CHECKERS:
            raise ConfigurationError(
                f"result format {self.extension!r}: unknown checker {self.checker!r}; "
                f"expected one of {sorted(CHECKERS)}"
            )


class TimeFormat(BaseModel):
    """How the dates inside a definition's files are written, for the manifest's consumers (its
    ``time_format``): ``encoding`` (``epoch_ms``: integer milliseconds since 1970-01-01T00:00:00Z),
    the ``columns`` known to hold such dates, and ``column_pattern``, a regular expression any other
    column holding them matches (where the upstream documents no full column list)."""

    model_config = ConfigDict(frozen=True)

    encoding: str
    timezone: str = "UTC"
    columns: list[str] = Field(default_factory=list)
    column_pattern: str | None = None


class DefinitionBase(BaseModel):
    """What every source's definition has: a name, a dataset, a lag, a start, the longest window one
    export may cover, and the window planning built on them (:meth:`latest_end`,
    :meth:`plan_window`, :meth:`window_problems`). A source refines them in its folder under
    ``exportpipe.sources``: its own fields, default dataset and longest window, and, where its
    upstream exports in another grain (whole days in the account's zone, say), its own planning."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str

    name: DefinitionName
    dataset: DatasetName | None = Field(
        default=None, description="Name of the dataset folder in S3; defaults per source."
    )
    lag_minutes: int = Field(
        default=5,
        ge=0,
        le=1440,
        description="Windows end at least this long before now: rows written late still land in them.",
    )
    start: AwareDatetime = Field(
        description="Where the first window starts while the definition has no watermark (with an offset)."
    )
    # Left out of the dump when absent, so a definition without one is stored (on its jobs) exactly
    # as before connections existed.
    connection: ConnectionName | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="The connection (secret) the export runs with; absent: the source's default one.",
    )

    # The longest window one export may cover: each source sets its upstream's limit.
    longest_window: ClassVar[timedelta]

    @property
    def max_window(self) -> timedelta:
        return self.longest_window

    @property
    def lag(self) -> timedelta:
        return timedelta(minutes=self.lag_minutes)

    @property
    def connection_ref(self) -> Connection:
        """The connection this definition's exports run with (credentials, allowances, quotas)."""
        return Connection.of(self.source, self.connection)

    @property
    def dataset_name(self) -> str:
        return self.dataset or self.default_dataset()

    def default_dataset(self) -> str:
        """The dataset folder when the definition names none."""
        return self.source

    def latest_end(self, now: datetime) -> datetime:
        """The latest a window may end at ``now``: now minus the lag, rounded down to the minute
        (rows may still arrive for the last minutes)."""
        return (now - self.lag).replace(second=0, microsecond=0)

    def plan_window(self, watermark: datetime | None, until: datetime) -> Window | None:
        """The next window to export up to ``until``: [watermark or ``start``, until) with ``until``
        rounded down to the minute, at most :attr:`max_window` long; None when up to date."""
        end = until.replace(second=0, microsecond=0)
        start = watermark or self.start
        if start >= end:
            return None
        return Window.of(start, min(end, start + self.max_window))

    def window_problems(self, window: Window, now: datetime) -> list[tuple[str, str]]:
        """Why an explicit window (a re-run) cannot be exported as one export at ``now``, as
        (field, reason) pairs; empty when it can."""
        if window.length > self.max_window:
            return [("window", f"longer than {self.max_window.days} days; give until instead to backfill")]
        latest = self.latest_end(now)
        if window.end > latest:
            return [("window", f"ends after {latest.isoformat()} (now minus the lag)")]
        return []

    @property
    def time_format(self) -> TimeFormat | None:
        """How dates are written inside this definition's files (the manifest's ``time_format``);
        None: nothing is said beyond the manifest's ``timezone``."""
        return None

    @property
    def result_format(self) -> ResultFormat:
        """The format of this definition's result files (a source may let each definition choose).

        Derived from the definition's fields, so a job record's ``definition`` parses back to the
        format its files were copied in."""
        raise ConfigurationError(f"source {self.source!r} declares no result format for its definitions")
