"""Export definitions: the payload every schedule carries (contract 1 of the architecture brief).

A definition is a pydantic model, a discriminated union on ``source``. ``name`` identifies it: job
ids, watermarks and S3 folders are derived from it. :func:`parse_definition` turns any invalid
payload into :class:`~exportpipe.errors.InvalidDefinitionError` naming each field and the reason,
before any upstream call is made.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from exportpipe.errors import InvalidDefinitionError
from exportpipe.sources import pardot_catalog as catalog

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


class _DefinitionBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

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


PardotArgument = bool | int | str | list[int]


def _argument_problem(kind: catalog.ArgKind, value: PardotArgument) -> str | None:
    """Why ``value`` is not acceptable for an argument of ``kind`` (None when it is)."""
    if kind is catalog.ArgKind.TRI_STATE:
        ok = isinstance(value, bool) or (isinstance(value, str) and value.lower() in catalog.DELETED_VALUES)
        return None if ok else f'must be true, false or "all", got {value!r}'
    if kind is catalog.ArgKind.BOOLEAN:
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
    if kind is catalog.ArgKind.TYPE_IDS:
        if not isinstance(value, list) or not value:
            return f"must be a non-empty list of visitor activity type ids, got {value!r}"
        unknown = [t for t in value if t not in catalog.VISITOR_ACTIVITY_TYPES or t == 5]
        return f"unknown visitor activity type id(s) {unknown}" if unknown else None
    return f"cannot be set in a definition ({kind.value} argument)"


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class PardotDefinition(_DefinitionBase):
    """One Account Engagement (Pardot) Export API v5 export: object × procedure, run per window.

    The procedure's date arguments (``*_after`` / ``*_before``) come from the window and must not be
    given here; ``arguments`` holds the others (``deleted``, ``type``, ``prospect_only`` …).
    """

    source: Literal["pardot"]
    object: str = Field(description="Export object, e.g. visitorActivity, prospect.")
    procedure: str = Field(description="Procedure name, e.g. filter_by_created_at.")
    fields: list[str] | None = Field(
        default=None, description="Fields to export (at most 150); all of the object's fields when omitted."
    )
    arguments: dict[str, PardotArgument] = Field(default_factory=dict)
    timezone: str = Field(
        default="UTC",
        description="IANA timezone of the Account Engagement user the export runs as (the CSV's dates).",
    )
    max_window_days: int = Field(
        default=364,
        ge=1,
        le=364,
        description="Longest window one export may cover (the API allows one year).",
    )

    @property
    def max_window(self) -> timedelta:
        return timedelta(days=self.max_window_days)

    @property
    def lag(self) -> timedelta:
        return timedelta(minutes=self.lag_minutes)

    @property
    def dataset_name(self) -> str:
        return self.dataset or _snake(self.object)

    @property
    def spec(self) -> catalog.Procedure:
        return catalog.OBJECTS[self.object].procedures[self.procedure]

    @model_validator(mode="after")
    def _against_catalog(self) -> PardotDefinition:
        problems: list[str] = []
        obj = catalog.OBJECTS.get(self.object)
        if obj is None:
            raise ValueError(
                f"object: unknown object {self.object!r}; expected one of {sorted(catalog.OBJECTS)}"
            )
        proc = obj.procedures.get(self.procedure)
        if proc is None:
            raise ValueError(
                f"procedure: {self.procedure!r} is not a procedure of {self.object}; "
                f"expected one of {sorted(obj.procedures)}"
            )
        if self.fields is not None:
            if not self.fields:
                problems.append("fields: must not be empty (omit it to export every field)")
            if len(self.fields) > catalog.MAX_FIELDS:
                problems.append(
                    f"fields: {len(self.fields)} fields given, at most {catalog.MAX_FIELDS} allowed"
                )
            unknown = [f for f in self.fields if f not in obj.fields]
            if unknown:
                problems.append(f"fields: unknown field(s) of {self.object}: {', '.join(unknown)}")
            dupes = sorted({f for f in self.fields if self.fields.count(f) > 1})
            if dupes:
                problems.append(f"fields: duplicated field(s): {', '.join(dupes)}")
        for arg, value in self.arguments.items():
            if arg in (proc.after_arg, proc.before_arg):
                problems.append(
                    f"arguments.{arg}: set by the export window; do not give it in the definition"
                )
            elif arg not in proc.extra_args:
                problems.append(
                    f"arguments.{arg}: not an argument of {self.object}.{self.procedure}; "
                    f"expected one of {sorted(proc.extra_args) or 'none'}"
                )
            else:
                reason = _argument_problem(proc.extra_args[arg], value)
                if reason:
                    problems.append(f"arguments.{arg}: {reason}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"timezone: unknown IANA timezone {self.timezone!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


ExportDefinition = Annotated[PardotDefinition, Field(discriminator="source")]
_ADAPTER: TypeAdapter[PardotDefinition] = TypeAdapter(ExportDefinition)

SOURCES = ("pardot",)


def parse_definition(payload: Any) -> PardotDefinition:
    """Validate a definition payload; raise InvalidDefinitionError naming every bad field."""
    if not isinstance(payload, dict):
        raise InvalidDefinitionError([("definition", "must be a JSON object")])
    source = payload.get("source")
    if source not in SOURCES:
        raise InvalidDefinitionError([("source", f"must be one of {list(SOURCES)}, got {source!r}")])
    try:
        return _ADAPTER.validate_python(payload)
    except ValidationError as exc:
        raise InvalidDefinitionError(_describe(exc)) from exc


def _describe(exc: ValidationError) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"] if str(p) not in SOURCES]
        msg = err["msg"]
        if not loc and msg.startswith("Value error, "):
            # model-level checks report "field: reason; field: reason"
            for part in msg.removeprefix("Value error, ").split("; "):
                field, _, reason = part.partition(": ")
                out.append((field, reason or part))
            continue
        out.append((".".join(loc) or "definition", msg.removeprefix("Value error, ")))
    return out
