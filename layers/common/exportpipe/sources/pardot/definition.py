"""The Account Engagement (Pardot) Export API v5 export definition: object × procedure, per window,
validated against the catalog before any call."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, model_validator

from exportpipe.models.definition import DefinitionBase, ResultFormat
from exportpipe.sources.pardot import catalog

PardotArgument = bool | int | str | list[int]

# Every export is CSV, and every row ends with a line break (PHP's fputcsv; the sandbox's reading of
# the [U] format), so a file that does not end with one was cut, even where the cut left whole fields.
CSV = ResultFormat(extension="csv", content_type="text/csv", checker="csv-terminated")


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


class PardotDefinition(DefinitionBase):
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

    def default_dataset(self) -> str:
        return _snake(self.object)

    @property
    def result_format(self) -> ResultFormat:
        return CSV

    @property
    def spec(self) -> catalog.Procedure:
        return catalog.OBJECTS[self.object].procedures[self.procedure]

    @model_validator(mode="after")
    def _against_catalog(self) -> PardotDefinition:
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
        problems = [*self._field_problems(obj), *self._argument_problems(proc)]
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"timezone: unknown IANA timezone {self.timezone!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _field_problems(self, obj: catalog.PardotObject) -> list[str]:
        if self.fields is None:
            return []
        problems: list[str] = []
        if not self.fields:
            problems.append("fields: must not be empty (omit it to export every field)")
        if len(self.fields) > catalog.MAX_FIELDS:
            problems.append(f"fields: {len(self.fields)} fields given, at most {catalog.MAX_FIELDS} allowed")
        unknown = [f for f in self.fields if f not in obj.fields]
        if unknown:
            problems.append(f"fields: unknown field(s) of {self.object}: {', '.join(unknown)}")
        dupes = sorted({f for f in self.fields if self.fields.count(f) > 1})
        if dupes:
            problems.append(f"fields: duplicated field(s): {', '.join(dupes)}")
        return problems

    def _argument_problems(self, proc: catalog.Procedure) -> list[str]:
        problems: list[str] = []
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
            elif reason := _argument_problem(proc.extra_args[arg], value):
                problems.append(f"arguments.{arg}: {reason}")
        return problems
