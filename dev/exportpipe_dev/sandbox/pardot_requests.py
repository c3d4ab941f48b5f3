"""The Pardot Export API v5's request validation, as the API applies it: error codes and messages,
argument values, the one-year rules. The sandbox answers with it; the runtime catalog
(:mod:`exportpipe.sources.pardot.catalog`: objects, procedures, arguments, fields) is the truth both
it and the pipeline's definition checks share, so they agree by construction. The choices made where
the public record is silent are listed in the catalog's docstring. Development only: it never ships.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from enum import IntEnum
from types import MappingProxyType
from typing import Final, Protocol

from exportpipe.sources.pardot.catalog import (
    DELETED_VALUES,
    MAX_FIELDS,
    OBJECTS,
    VISITOR_ACTIVITY_TYPES,
    ArgKind,
    ArgValue,
    PardotObject,
    Procedure,
)

__all__ = [
    "ERROR_MESSAGES",
    "RELATIVE_DATES",
    "DateParser",
    "ExportDefinition",
    "ExportRequest",
    "ExportRequestError",
    "PardotErrorCode",
    "error_message",
    "lookup_object",
    "one_year_after",
    "validate_definition",
    "validate_export_request",
]


class PardotErrorCode(IntEnum):
    """Published Account Engagement error codes used by the Export API (v5 body ``{"code", "message"}``)."""

    INVALID_QUERY_PARAMETERS = 5
    INVALID_SORT_BY = 19
    INVALID_SORT_ORDER = 20
    INVALID_HTTP_METHOD = 60
    CONCURRENT_LIMIT = 66
    RECORD_NOT_FOUND = 109
    DAILY_LIMIT = 122
    INVALID_JSON = 150
    UNSUPPORTED_CONTENT_TYPE = 151
    EMPTY_BODY = 152
    MISSING_PROPERTY = 153
    INVALID_PROPERTY = 154
    UNKNOWN_PROCEDURE = 174
    UNKNOWN_ARGUMENT = 175
    MISSING_ARGUMENT = 176
    INVALID_ARGUMENT = 177
    INVALID_EXPORT_STATE = 178
    INVALID_FIELDS = 180
    MISSING_HEADER = 181
    INVALID_HEADER = 182
    INTERNAL_ERROR = 183
    INVALID_ACCESS_TOKEN = 184
    ENDPOINT_NOT_FOUND = 198
    BUSINESS_UNIT_NOT_FOUND = 201


#: The published message of each code (the API may append ``: <detail>`` or a sentence).
ERROR_MESSAGES: Final[Mapping[PardotErrorCode, str]] = MappingProxyType(
    {
        PardotErrorCode.INVALID_QUERY_PARAMETERS: "Invalid query parameters",
        PardotErrorCode.INVALID_SORT_BY: "Invalid value specified for sort_by",
        PardotErrorCode.INVALID_SORT_ORDER: "Invalid value specified for sort_order",
        PardotErrorCode.INVALID_HTTP_METHOD: "Invalid HTTP request method",
        PardotErrorCode.CONCURRENT_LIMIT: (
            "You have exceeded your concurrent request limit. Please wait, before trying again"
        ),
        PardotErrorCode.RECORD_NOT_FOUND: "The requested record was not found.",
        PardotErrorCode.DAILY_LIMIT: "Daily API rate limit met",
        PardotErrorCode.INVALID_JSON: "Input needs to be valid JSON",
        PardotErrorCode.UNSUPPORTED_CONTENT_TYPE: "Unsupported content-type",
        PardotErrorCode.EMPTY_BODY: "Request body can't be empty",
        PardotErrorCode.MISSING_PROPERTY: "Missing required property in request",
        PardotErrorCode.INVALID_PROPERTY: "Invalid property in request",
        PardotErrorCode.UNKNOWN_PROCEDURE: "Unknown procedure name.",
        PardotErrorCode.UNKNOWN_ARGUMENT: "Unknown procedure argument.",
        PardotErrorCode.MISSING_ARGUMENT: "Missing required argument.",
        PardotErrorCode.INVALID_ARGUMENT: "Invalid procedure argument.",
        PardotErrorCode.INVALID_EXPORT_STATE: "The current state of the export does not allow the operation",
        PardotErrorCode.INVALID_FIELDS: "One or more of the specified fields are invalid",
        PardotErrorCode.MISSING_HEADER: "A required header is missing",
        PardotErrorCode.INVALID_HEADER: "Invalid header value",
        PardotErrorCode.INTERNAL_ERROR: "An internal error occurred, please try your request again",
        PardotErrorCode.INVALID_ACCESS_TOKEN: "access_token is invalid, unknown, or malformed",
        PardotErrorCode.ENDPOINT_NOT_FOUND: "Endpoint not found.",
        PardotErrorCode.BUSINESS_UNIT_NOT_FOUND: (
            "Business Unit specified in Pardot-Business-Unit-Id header not found or inactive."
        ),
    }
)


RELATIVE_DATES: Final = ("today", "yesterday", "last_7_days", "this_month", "last_month")

_OBJECTS_FOLDED: Final = {name.casefold(): obj for name, obj in OBJECTS.items()}


def error_message(code: PardotErrorCode, detail: str = "") -> str:
    """The published message of ``code``, with ``detail`` appended the way the API appends it."""
    base = ERROR_MESSAGES[code]
    if not detail:
        return base
    return f"{base} {detail}" if base.endswith(".") else f"{base}: {detail}"


class ExportRequestError(ValueError):
    """An export request the API would refuse; ``code`` is the Pardot error code, ``message`` its text."""

    def __init__(self, code: PardotErrorCode, detail: str = "") -> None:
        self.code = code
        self.message = error_message(code, detail)
        super().__init__(self.message)


@dataclass(frozen=True)
class ExportDefinition:
    """What :func:`validate_definition` resolves: the window-independent part of an export request."""

    object: PardotObject
    fields: tuple[str, ...]
    procedure: Procedure
    extra: Mapping[str, ArgValue]


@dataclass(frozen=True)
class ExportRequest:
    """A validated export request with every argument resolved.

    ``after`` and ``before`` are aware datetimes (``before`` is ``None`` when omitted); ``window_end`` is
    ``before`` or, when omitted, the creation time the request was validated against. ``extra`` holds every
    extra argument of the procedure, defaults applied, normalised (``"true"``/``"false"``/``"all"``, bool, or
    a tuple of type ids; ``type`` is absent when every type is selected).
    """

    object: PardotObject
    fields: tuple[str, ...]
    procedure: Procedure
    after: datetime
    before: datetime | None
    window_end: datetime
    extra: Mapping[str, ArgValue]


def lookup_object(name: str) -> PardotObject | None:
    """The object called ``name`` (any casing), or ``None``."""
    return _OBJECTS_FOLDED.get(name.casefold())


class DateParser(Protocol):
    """Resolves a procedure date argument (in the user's timezone ``tz``, relative to ``now``).

    Returns an aware datetime; raises ``ValueError`` for a value the API refuses (177).
    """

    def __call__(self, value: str, *, now: datetime, tz: tzinfo) -> datetime: ...


def one_year_after(instant: datetime, tz: tzinfo) -> datetime:
    """``instant`` plus one calendar year on the wall clock of ``tz`` (the user's timezone).

    The latest ``*_before`` a window starting at ``instant`` may have, and the latest creation time an
    export with that ``*_after`` and no ``*_before`` may have. 29 February becomes 1 March of the next
    year (PHP's ``+1 year``).
    """
    local = instant.astimezone(tz)
    try:
        return local.replace(year=local.year + 1)
    except ValueError:  # 29 February, and the next year is not a leap year
        return local.replace(year=local.year + 1, month=3, day=1)


def _tri_state(name: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.strip().lower() in DELETED_VALUES:
        return value.strip().lower()
    raise ExportRequestError(PardotErrorCode.INVALID_ARGUMENT, f"{name} must be true, false or all.")


def _boolean(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ExportRequestError(PardotErrorCode.INVALID_ARGUMENT, f"{name} must be true or false.")


def _type_ids(name: str, value: object) -> tuple[int, ...]:
    items = value if isinstance(value, list) else [value]
    ids: list[int] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise ExportRequestError(PardotErrorCode.INVALID_ARGUMENT, f"{name} must be a list of type ids.")
        text = str(item).strip()
        if not text.isdigit() or int(text) not in VISITOR_ACTIVITY_TYPES or int(text) == 5:
            raise ExportRequestError(
                PardotErrorCode.INVALID_ARGUMENT,
                f"{name} contains an unknown visitor activity type {item!r}.",
            )
        ids.append(int(text))
    if not ids:
        raise ExportRequestError(PardotErrorCode.INVALID_ARGUMENT, f"{name} must not be empty.")
    return tuple(sorted(set(ids)))


def _date(name: str, value: object, now: datetime, tz: tzinfo, parse_date: DateParser) -> datetime:
    if not isinstance(value, str):
        raise ExportRequestError(PardotErrorCode.INVALID_ARGUMENT, f"{name} must be a date string.")
    try:
        return parse_date(value, now=now, tz=tz)
    except ValueError as exc:
        raise ExportRequestError(PardotErrorCode.INVALID_ARGUMENT, f"{name}: {exc}.") from exc


def _validate_fields(obj: PardotObject, fields: object) -> tuple[str, ...]:
    if fields is None:
        return tuple(obj.fields)
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise ExportRequestError(PardotErrorCode.INVALID_PROPERTY, "fields must be an array of strings.")
    if not fields:
        raise ExportRequestError(PardotErrorCode.INVALID_PROPERTY, "fields must not be empty.")
    if len(fields) > MAX_FIELDS:  # "The number of fields specified": as given, duplicates included
        raise ExportRequestError(
            PardotErrorCode.INVALID_PROPERTY, f"fields can't contain more than {MAX_FIELDS} fields."
        )
    unique = tuple(dict.fromkeys(str(f) for f in fields))
    unknown = [f for f in unique if f not in obj.fields]
    if unknown:
        raise ExportRequestError(PardotErrorCode.INVALID_FIELDS, f"{', '.join(unknown)} (object {obj.name}).")
    return unique


def _resolve(
    object_name: object, fields: object, procedure_name: object, arguments: object
) -> tuple[PardotObject, tuple[str, ...], Procedure, dict[str, object]]:
    """Object, fields, procedure and canonical argument names (no values checked yet)."""
    if object_name is None:
        raise ExportRequestError(PardotErrorCode.MISSING_PROPERTY, "object")
    if not isinstance(object_name, str) or (obj := lookup_object(object_name)) is None:
        raise ExportRequestError(
            PardotErrorCode.INVALID_PROPERTY, f"object {object_name!r} can't be exported."
        )
    selected = _validate_fields(obj, fields)
    if procedure_name is None:
        raise ExportRequestError(PardotErrorCode.MISSING_PROPERTY, "procedure.name")
    if not isinstance(procedure_name, str) or procedure_name not in obj.procedures:
        raise ExportRequestError(
            PardotErrorCode.UNKNOWN_PROCEDURE, f"{procedure_name!r} is not a procedure of {obj.name}."
        )
    procedure = obj.procedures[procedure_name]
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, Mapping):
        raise ExportRequestError(PardotErrorCode.INVALID_PROPERTY, "procedure.arguments must be an object.")
    args: dict[str, object] = {}
    for raw_name, value in arguments.items():
        name = procedure.arg_aliases.get(str(raw_name), str(raw_name))
        if name not in procedure.argument_names:
            raise ExportRequestError(
                PardotErrorCode.UNKNOWN_ARGUMENT, f"{raw_name!r} is not an argument of {procedure.name}."
            )
        if value is not None:
            args[name] = value
    return obj, selected, procedure, args


def _extra_values(procedure: Procedure, args: Mapping[str, object]) -> Mapping[str, ArgValue]:
    """The procedure's extra arguments, validated and normalised, defaults applied."""
    extra: dict[str, ArgValue] = dict(procedure.extra_defaults)
    for name, kind in procedure.extra_args.items():
        if name not in args:
            continue
        value = args[name]
        if kind is ArgKind.TRI_STATE:
            extra[name] = _tri_state(name, value)
        elif kind is ArgKind.BOOLEAN:
            extra[name] = _boolean(name, value)
        else:
            extra[name] = _type_ids(name, value)
    return MappingProxyType(extra)


def validate_definition(
    object_name: object, procedure_name: object, fields: object = None, arguments: object = None
) -> ExportDefinition:
    """Validate everything about an export that does not depend on its window.

    Checks the object, the fields, the procedure, the argument names and the values of the extra
    arguments, with the same codes as :func:`validate_export_request`. Window arguments (``*_after``,
    ``*_before``) may be present or not; their values are not checked (they depend on the creation time).
    """
    obj, selected, procedure, args = _resolve(object_name, fields, procedure_name, arguments)
    return ExportDefinition(
        object=obj, fields=selected, procedure=procedure, extra=_extra_values(procedure, args)
    )


def validate_export_request(
    object_name: object,
    fields: object,
    procedure_name: object,
    arguments: object,
    *,
    now: datetime,
    tz: tzinfo,
    parse_date: DateParser,
    after_within_year_of_creation: bool = False,
) -> ExportRequest:
    """Validate an export request the way the API does and resolve its arguments.

    ``now`` is the creation time of the export (the reference for relative dates, for an omitted
    ``*_before`` and for the one-year rules); ``tz`` is the user's timezone (dates without a zone, and the
    calendar the one-year rules count in: ``*_before`` at most :func:`one_year_after` ``*_after``, and
    without ``*_before`` ``now`` at most that); ``parse_date`` reads the date arguments (a
    ``ValueError`` from it is a 177). ``fields=None`` selects every field; ``arguments=None``
    means no arguments. ``after_within_year_of_creation`` applies the creation-date rule to windows with
    a ``*_before`` too (the literal reading of the page; by default only an open window is held to it).
    Raises ``ExportRequestError`` with the Pardot code (177 for the one-year rules).
    """
    obj, selected, procedure, args = _resolve(object_name, fields, procedure_name, arguments)
    for required in procedure.required_args:
        if required not in args:
            raise ExportRequestError(PardotErrorCode.MISSING_ARGUMENT, f"{required} is required.")

    after = _date(procedure.after_arg, args[procedure.after_arg], now, tz, parse_date)
    before = (
        _date(procedure.before_arg, args[procedure.before_arg], now, tz, parse_date)
        if procedure.before_arg in args
        else None
    )
    if before is not None and before <= after:
        raise ExportRequestError(
            PardotErrorCode.INVALID_ARGUMENT, f"{procedure.before_arg} must be after {procedure.after_arg}."
        )
    window_end = before if before is not None else now
    latest = one_year_after(after, tz)
    if (before is None or after_within_year_of_creation) and now > latest:
        raise ExportRequestError(
            PardotErrorCode.INVALID_ARGUMENT,
            f"The {procedure.after_arg} must be within a year of the creation date of the Export.",
        )
    if before is not None and before > latest:
        raise ExportRequestError(
            PardotErrorCode.INVALID_ARGUMENT,
            f"The range between {procedure.after_arg} and {procedure.before_arg} can't exceed 1 year.",
        )
    return ExportRequest(
        object=obj,
        fields=selected,
        procedure=procedure,
        after=after,
        before=before,
        window_end=window_end,
        extra=_extra_values(procedure, args),
    )
