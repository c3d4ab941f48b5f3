"""Procedure date arguments as the Pardot sandbox reads them: the page's keywords and GNU date input syntax.

The v5 page says every ``*_after`` / ``*_before`` "can be ``today``, ``yesterday``, ``last_7_days``,
``this_month``, ``last_month``, or a custom time specified in GNU Date Input Syntax format".
:func:`parse_date_argument` resolves such a value against the export's creation time (the sandbox clock)
and the user's timezone; anything it refuses is, for the API, an invalid argument (177). Development
only: the pipeline never parses these values, it writes ISO 8601 instants with an offset.

GNU date input syntax is what gnulib's ``parse_datetime`` accepts (``date -d``, coreutils' "Date input
formats" chapter). :func:`parse_gnu_date` follows that parser step for step, not just the chapter's
prose: its tokens and word tables (month and day names and their abbreviations, units with an ignored
``s``, ordinals ``last``/``this``/``next``/``first``/``third``…``twelfth``, ``ago``/``hence``, meridians,
``DST``, the universal, military and listed zone abbreviations, and the user's own zone abbreviations,
which select standard or daylight time rather than a fixed offset: in New York ``2026-07-01 10:00 EST``
is refused, as ``date -d`` refuses it), its grammar with bison's preference for the longest item, and
its arithmetic on top of glibc's ``mktime``:

- Items: calendar dates (``2026-11-01``, ``26-11-1``, ``11/01/2026``, ``2026/11/01``, ``1 Nov 2026``,
  ``Nov 1, 2026``, ``1-nov-2026``, ``20261101``; a missing year is the current one; two-digit years are
  1969-2068), times of day (``10:00``, ``10:00:00.5`` or ``,5``, ``10am``, ``10:30 p.m.``, ``1030``),
  ``T``-combined ISO 8601 date-times, zones (``Z``, ``UTC``, ``GMT``, ``UT``, military letters, ``EST``
  and the other listed abbreviations, ``CEST``-style daylight names, ``EST DST``, offsets ``+05:00``,
  ``-0800``, ``+5`` after a time, ``UTC+05:30``), days of the week (``monday``, ``next friday``, ``last
  sunday``, ``third monday``: forward to that day if needed, ``last``/``next`` one week before/after),
  relative items (``+1 day``, ``-2 weeks``, ``3 hours ago``, ``last month``, ``next year``,
  ``fortnight``, ``tomorrow``, ``yesterday``, ``today``, ``now``, ``1.5 seconds``), ``@<seconds since
  the epoch>`` (fraction allowed; nothing may be combined with it), a leading ``TZ="<zone>"``
  (``America/New_York``, ``:Europe/Paris``, ``UTC0``, ``""`` for UTC) that replaces the user's timezone
  for that one value, comments in parentheses. Case is ignored; at most one item of each of the kinds
  time of day, date, day of week, zone and ``DST``.
- Without a date, time or day of week the starting point is now; with a date or day of week but no time,
  midnight; relative years, months and days are added to the calendar fields and the result normalised,
  so ``2026-01-31 +1 month`` is 2026-03-03 and ``2024-02-29 +1 year`` 2025-03-01; hours, minutes and
  seconds are added to the instant last.
- DST follows glibc: when the value names no date, time or day, the calendar arithmetic keeps *now's*
  daylight-saving flag, so on 2026-03-10 11:00 EDT ``3 days ago`` is 2026-03-07 10:00 EST (exactly 72
  hours) and ``last month`` 2026-02-10 10:00 EST; with an explicit date the wall clock is kept
  (``2026-03-10 11:00 3 days ago`` is 11:00 EST). A local time that does not exist (2026-03-08 02:30 in
  New York) is refused unless a zone or offset is given; of an ambiguous one, the occurrence glibc's
  search finds first when it starts from offset zero, as in a fresh ``date -d`` process: in New York the
  daylight-saving one (2026-11-01 01:30 is EDT), in Paris or London the standard one; ``EST``/``EDT``
  choose.
- The grammar's surprises are kept: after a time of day a signed number is a UTC offset, so ``2026-11-01
  10:00 -1 day`` is 10:00 at UTC−1 plus one day (write ``-1 day 2026-11-01 10:00`` or ``1 day ago``); ``1
  year 2 months ago`` is +1 year −2 months (``ago`` negates the item before it only); ``Nov 1 2026`` takes
  2026 as the year but ``+1 day Nov 1 2026`` as 20:26.

Where GNU, PHP's ``strtotime`` (Pardot is a PHP application) and the page disagree or are silent:

- The page's keywords come first, matched exactly (case ignored, surrounding blanks stripped): ``today``
  is midnight today, ``yesterday`` midnight yesterday, ``last_7_days`` midnight seven days ago,
  ``this_month`` / ``last_month`` midnight on the first of this / the previous month, in the user's
  timezone (how ``strtotime`` reads ``today`` and ``yesterday``, and what a range keyword means). Alone,
  GNU reads ``today`` as now and ``yesterday`` as now minus a day; inside a longer value (``yesterday
  10:00``, ``today noon``) they are GNU items.
- Hour 24 of a 24-hour time rolls over to the next day (``2020-12-25 24:59:59`` is 2020-12-26
  00:59:59): ``strtotime`` does this and Pardot's own v3/v4 example uses it; GNU refuses it.
- ``noon`` and ``midnight`` are times of day (12:00, 00:00) as in ``strtotime``; GNU has no such words.
- Refused although GNU accepts them: the empty or blank value (GNU: midnight today; ``strtotime``
  refuses it, and an empty argument is a client's mistake), a ``TZ="..."`` naming no known zone (glibc
  silently uses UTC; a POSIX rule with daylight-saving rules is not read either), a NUL character,
  instants outside years 1-9999.
- ``ago``, DST and the grammar cases above are GNU's, not ``strtotime``'s; PHP-only forms (``first day
  of next month``, ``Nov 1st``, ``+1 weekday``) are refused. The result has microseconds: excess digits
  are dropped toward the past, as GNU drops digits past nanoseconds. It is an aware datetime in the zone
  the value was read in (compare instants, not fields: Python never finds two datetimes of different
  zones equal inside a repeated hour).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Final
from zoneinfo import ZoneInfo

__all__ = ["DateSyntaxError", "parse_date_argument", "parse_gnu_date"]


class DateSyntaxError(ValueError):
    """A date argument that is neither one of the page's keywords nor a GNU date the sandbox accepts."""


# ---- Pardot's keywords ------------------------------------------------------------------------------


def _midnight(day: date, tz: tzinfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz)


def _last_month(today: date) -> date:
    return (today.replace(day=1) - timedelta(days=1)).replace(day=1)


_KEYWORDS: Final[dict[str, Callable[[date], date]]] = {
    "today": lambda today: today,
    "yesterday": lambda today: today - timedelta(days=1),
    "last_7_days": lambda today: today - timedelta(days=7),
    "this_month": lambda today: today.replace(day=1),
    "last_month": _last_month,
}


def parse_date_argument(value: str, *, now: datetime, tz: tzinfo) -> datetime:
    """Resolve a procedure date argument to an aware datetime.

    ``now`` is the reference instant (the export's creation time), ``tz`` the user's timezone: the
    keywords and every value without a zone of its own resolve in it. Raises :class:`DateSyntaxError`.
    """
    text = value.strip()
    day_of = _KEYWORDS.get(text.lower())
    if day_of is not None:
        return _midnight(day_of(now.astimezone(tz).date()), tz)
    return parse_gnu_date(value, now=now, tz=tz)


# ---- GNU date input syntax ----------------------------------------------------------------------------

_BILLION: Final = 1_000_000_000
_TIME_T_MAX: Final = 2**63 - 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_SPACE: Final = frozenset(" \t\n\v\f\r")
_DIGITS: Final = frozenset("0123456789")
_ALPHA: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_HOUR: Final = 3600
_MER_AM, _MER_PM, _MER_24 = 0, 1, 2

# Token kinds (single characters such as ":" "/" "," "@" stand for themselves).
_UNUMBER, _SNUMBER, _UDECIMAL, _SDECIMAL = "unumber", "snumber", "udecimal", "sdecimal"
_MERIDIAN, _MONTH, _DAY, _ORDINAL, _AGO, _DST = "meridian", "month", "day", "ordinal", "ago", "dst"
_YEAR_UNIT, _MONTH_UNIT, _DAY_UNIT = "year_unit", "month_unit", "day_unit"
_HOUR_UNIT, _MINUTE_UNIT, _SEC_UNIT = "hour_unit", "minute_unit", "sec_unit"
_DAY_SHIFT, _ZONE, _DAYZONE, _LOCAL_ZONE = "day_shift", "zone", "dayzone", "local_zone"
_CLOCK = "clock"  # noon / midnight (strtotime's words, not GNU's)
_EOF, _ERROR = "end", "error"
_UNITS: Final = frozenset({_YEAR_UNIT, _MONTH_UNIT, _DAY_UNIT, _HOUR_UNIT, _MINUTE_UNIT, _SEC_UNIT})

_MERIDIANS: Final = {"AM": _MER_AM, "A.M.": _MER_AM, "PM": _MER_PM, "P.M.": _MER_PM}
_MONTHS_AND_DAYS: Final = (
    ("JANUARY", _MONTH, 1),
    ("FEBRUARY", _MONTH, 2),
    ("MARCH", _MONTH, 3),
    ("APRIL", _MONTH, 4),
    ("MAY", _MONTH, 5),
    ("JUNE", _MONTH, 6),
    ("JULY", _MONTH, 7),
    ("AUGUST", _MONTH, 8),
    ("SEPTEMBER", _MONTH, 9),
    ("SEPT", _MONTH, 9),
    ("OCTOBER", _MONTH, 10),
    ("NOVEMBER", _MONTH, 11),
    ("DECEMBER", _MONTH, 12),
    ("SUNDAY", _DAY, 0),
    ("MONDAY", _DAY, 1),
    ("TUESDAY", _DAY, 2),
    ("TUES", _DAY, 2),
    ("WEDNESDAY", _DAY, 3),
    ("WEDNES", _DAY, 3),
    ("THURSDAY", _DAY, 4),
    ("THUR", _DAY, 4),
    ("THURS", _DAY, 4),
    ("FRIDAY", _DAY, 5),
    ("SATURDAY", _DAY, 6),
)
_TIME_UNITS: Final = {
    "YEAR": (_YEAR_UNIT, 1),
    "MONTH": (_MONTH_UNIT, 1),
    "FORTNIGHT": (_DAY_UNIT, 14),
    "WEEK": (_DAY_UNIT, 7),
    "DAY": (_DAY_UNIT, 1),
    "HOUR": (_HOUR_UNIT, 1),
    "MINUTE": (_MINUTE_UNIT, 1),
    "MIN": (_MINUTE_UNIT, 1),
    "SECOND": (_SEC_UNIT, 1),
    "SEC": (_SEC_UNIT, 1),
}
_RELATIVE_WORDS: Final = {
    "TOMORROW": (_DAY_SHIFT, 1),
    "YESTERDAY": (_DAY_SHIFT, -1),
    "TODAY": (_DAY_SHIFT, 0),
    "NOW": (_DAY_SHIFT, 0),
    "LAST": (_ORDINAL, -1),
    "THIS": (_ORDINAL, 0),
    "NEXT": (_ORDINAL, 1),
    "FIRST": (_ORDINAL, 1),
    "THIRD": (_ORDINAL, 3),
    "FOURTH": (_ORDINAL, 4),
    "FIFTH": (_ORDINAL, 5),
    "SIXTH": (_ORDINAL, 6),
    "SEVENTH": (_ORDINAL, 7),
    "EIGHTH": (_ORDINAL, 8),
    "NINTH": (_ORDINAL, 9),
    "TENTH": (_ORDINAL, 10),
    "ELEVENTH": (_ORDINAL, 11),
    "TWELFTH": (_ORDINAL, 12),
    "AGO": (_AGO, -1),
    "HENCE": (_AGO, 1),
}
_CLOCK_WORDS: Final = {"NOON": 12, "MIDNIGHT": 0}
_UNIVERSAL_ZONES: Final = {"GMT": 0, "UT": 0, "UTC": 0}
# Listed abbreviations: (kind, seconds east of UTC); a daylight zone's value is its standard offset.
_ZONES: Final = {
    "WET": (_ZONE, 0),
    "WEST": (_DAYZONE, 0),
    "BST": (_DAYZONE, 0),
    "ART": (_ZONE, -3 * _HOUR),
    "BRT": (_ZONE, -3 * _HOUR),
    "BRST": (_DAYZONE, -3 * _HOUR),
    "NST": (_ZONE, -(3 * _HOUR + 1800)),
    "NDT": (_DAYZONE, -(3 * _HOUR + 1800)),
    "AST": (_ZONE, -4 * _HOUR),
    "ADT": (_DAYZONE, -4 * _HOUR),
    "CLT": (_ZONE, -4 * _HOUR),
    "CLST": (_DAYZONE, -4 * _HOUR),
    "EST": (_ZONE, -5 * _HOUR),
    "EDT": (_DAYZONE, -5 * _HOUR),
    "CST": (_ZONE, -6 * _HOUR),
    "CDT": (_DAYZONE, -6 * _HOUR),
    "MST": (_ZONE, -7 * _HOUR),
    "MDT": (_DAYZONE, -7 * _HOUR),
    "PST": (_ZONE, -8 * _HOUR),
    "PDT": (_DAYZONE, -8 * _HOUR),
    "AKST": (_ZONE, -9 * _HOUR),
    "AKDT": (_DAYZONE, -9 * _HOUR),
    "HST": (_ZONE, -10 * _HOUR),
    "HAST": (_ZONE, -10 * _HOUR),
    "HADT": (_DAYZONE, -10 * _HOUR),
    "SST": (_ZONE, -12 * _HOUR),
    "WAT": (_ZONE, 1 * _HOUR),
    "CET": (_ZONE, 1 * _HOUR),
    "CEST": (_DAYZONE, 1 * _HOUR),
    "MET": (_ZONE, 1 * _HOUR),
    "MEZ": (_ZONE, 1 * _HOUR),
    "MEST": (_DAYZONE, 1 * _HOUR),
    "MESZ": (_DAYZONE, 1 * _HOUR),
    "EET": (_ZONE, 2 * _HOUR),
    "EEST": (_DAYZONE, 2 * _HOUR),
    "CAT": (_ZONE, 2 * _HOUR),
    "SAST": (_ZONE, 2 * _HOUR),
    "EAT": (_ZONE, 3 * _HOUR),
    "MSK": (_ZONE, 3 * _HOUR),
    "MSD": (_DAYZONE, 3 * _HOUR),
    "IST": (_ZONE, 5 * _HOUR + 1800),
    "SGT": (_ZONE, 8 * _HOUR),
    "KST": (_ZONE, 9 * _HOUR),
    "JST": (_ZONE, 9 * _HOUR),
    "GST": (_ZONE, 10 * _HOUR),
    "NZST": (_ZONE, 12 * _HOUR),
    "NZDT": (_DAYZONE, 12 * _HOUR),
}
# Military zones, the right way round (RFC 5322); J is local time, T also the ISO 8601 separator.
_MILITARY: Final = {
    **{letter: (_ZONE, (i + 1) * _HOUR) for i, letter in enumerate("ABCDEFGHI")},
    "J": ("J", 0),
    **{letter: (_ZONE, (i + 10) * _HOUR) for i, letter in enumerate("KLM")},
    **{letter: (_ZONE, -(i + 1) * _HOUR) for i, letter in enumerate("NOPQRS")},
    "T": ("T", 0),
    **{letter: (_ZONE, -(i + 8) * _HOUR) for i, letter in enumerate("UVWXY")},
    "Z": (_ZONE, 0),
}
# A POSIX TZ rule without daylight saving time (UTC0, EST5, <+0530>-5:30): name, then hours west of UTC.
_POSIX_FIXED: Final = re.compile(
    r"(?:[A-Za-z]{3,}|<[A-Za-z0-9+-]{3,}>)([+-]?)(\d{1,2})(?::(\d{1,2})(?::(\d{1,2}))?)?"
)


class _Invalid(Exception):
    """Internal: the value is refused, for ``reason``."""

    def __init__(self, reason: str = "is not a date in the GNU date input syntax") -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class _Token:
    kind: str
    value: int = 0  # the number (signed), a table value, or a decimal's whole seconds
    digits: int = 0  # how many digits a number was written with
    negative: bool = False
    ns: int = 0  # a decimal's nanoseconds (0 <= ns < 10**9, timespec convention)


_END: Final = _Token(_EOF)


def _lookup_word(word: str, local_zones: dict[str, int]) -> _Token | None:
    """gnulib's ``lookup_word``: the tables in its order, abbreviations and plurals included."""
    upper = word.upper()
    if upper in _MERIDIANS:
        return _Token(_MERIDIAN, _MERIDIANS[upper])
    abbrev = len(upper) == 3 or (len(upper) == 4 and upper[3] == ".")
    for name, kind, value in _MONTHS_AND_DAYS:
        if (upper[:3] == name[:3]) if abbrev else upper == name:
            return _Token(kind, value)
    zone = _lookup_zone(upper, local_zones)
    if zone is not None:
        return zone
    if upper == "DST":
        return _Token(_DST)
    unit = _TIME_UNITS.get(upper) or (_TIME_UNITS.get(upper[:-1]) if upper.endswith("S") else None)
    if unit is not None:  # a plural s is ignored
        return _Token(*unit)
    if upper in _RELATIVE_WORDS:
        kind, value = _RELATIVE_WORDS[upper]
        return _Token(kind, value)
    if upper in _CLOCK_WORDS:
        return _Token(_CLOCK, _CLOCK_WORDS[upper])
    if len(upper) == 1 and upper in _MILITARY:
        kind, value = _MILITARY[upper]
        return _Token(kind, value)
    if "." in upper:
        return _lookup_zone(upper.replace(".", ""), local_zones)
    return None


def _lookup_zone(upper: str, local_zones: dict[str, int]) -> _Token | None:
    if upper in _UNIVERSAL_ZONES:
        return _Token(_ZONE, _UNIVERSAL_ZONES[upper])
    if upper in local_zones:  # the user's zone's own names: they say standard or daylight time
        return _Token(_LOCAL_ZONE, local_zones[upper])
    if upper in _ZONES:
        kind, value = _ZONES[upper]
        return _Token(kind, value)
    return None


def _lex(text: str, local_zones: dict[str, int]) -> list[_Token]:
    """gnulib's ``yylex`` over the whole value: signs, decimals, words, comments, single characters."""
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _SPACE:
            i += 1
        if i >= n:
            tokens.append(_END)
            return tokens
        c = text[i]
        if c in _DIGITS or c in "+-":
            p, sign = i, 0
            if c in "+-":
                sign = -1 if c == "-" else 1
                p += 1
                while p < n and text[p] in _SPACE:
                    p += 1
                i = p
                if p >= n or text[p] not in _DIGITS:
                    continue  # a sign not followed by a digit is ignored
            value = 0
            while p < n and text[p] in _DIGITS:
                value = value * 10 + (int(text[p]) if sign >= 0 else -int(text[p]))
                if abs(value) > _TIME_T_MAX:
                    tokens.append(_Token(_ERROR))
                    return tokens
                p += 1
            if p + 1 < n and text[p] in ".," and text[p + 1] in _DIGITS:
                p += 1
                ns = int(text[p])
                p += 1
                for _ in range(8):
                    ns *= 10
                    if p < n and text[p] in _DIGITS:
                        ns += int(text[p])
                        p += 1
                if sign < 0:  # excess digits truncate toward minus infinity
                    rest = p
                    while rest < n and text[rest] in _DIGITS:
                        if text[rest] != "0":
                            ns += 1
                            break
                        rest += 1
                while p < n and text[p] in _DIGITS:
                    p += 1
                seconds = value
                if sign < 0 and ns:
                    seconds, ns = seconds - 1, _BILLION - ns
                tokens.append(_Token(_SDECIMAL if sign else _UDECIMAL, seconds, ns=ns))
            else:
                tokens.append(_Token(_SNUMBER if sign else _UNUMBER, value, p - i, sign < 0))
            i = p
            continue
        if c in _ALPHA:
            p = i
            while p < n and (text[p] in _ALPHA or text[p] == "."):
                p += 1
            found = _lookup_word(text[i:p][:19], local_zones)
            if found is None:
                tokens.append(_Token(_ERROR))
                return tokens
            tokens.append(found)
            i = p
            continue
        if c != "(":
            tokens.append(_Token(c))
            i += 1
            continue
        depth = 0
        while True:  # a comment; an unclosed one ends the value
            if i >= n:
                tokens.append(_END)
                return tokens
            c = text[i]
            i += 1
            depth += (c == "(") - (c == ")")
            if depth == 0:
                break


@dataclass
class _Relative:
    year: int = 0
    month: int = 0
    day: int = 0
    hour: int = 0
    minutes: int = 0
    seconds: int = 0
    ns: int = 0


@dataclass
class _Year:
    value: int
    digits: int = 0


@dataclass
class _Control:
    """gnulib's ``parser_control``: what the items said, starting from now's local fields."""

    year: _Year
    month: int
    day: int
    hour: int
    minutes: int
    seconds: int
    ns: int
    meridian: int = _MER_24
    rel: _Relative = field(default_factory=_Relative)
    day_ordinal: int = 0
    day_number: int = 0
    local_isdst: int = 0
    time_zone: int = 0  # seconds east of UTC
    timespec_seen: bool = False
    rels_seen: bool = False
    dates_seen: int = 0
    days_seen: int = 0
    j_zones_seen: int = 0
    local_zones_seen: int = 0
    dsts_seen: int = 0
    times_seen: int = 0
    zones_seen: int = 0


def _ctrunc(a: int, b: int) -> int:
    """C's integer division (toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


class _Parser:
    """The grammar of gnulib's ``parse-datetime.y``; where bison may shift or reduce, it shifts."""

    def __init__(self, tokens: list[_Token], pc: _Control) -> None:
        self.tokens = tokens
        self.pos = 0
        self.pc = pc

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        if token.kind in (_EOF, _ERROR):
            raise _Invalid()
        self.pos += 1
        return token

    def expect(self, *kinds: str) -> _Token:
        token = self.take()
        if token.kind not in kinds:
            raise _Invalid()
        return token

    def spec(self) -> None:
        if self.peek().kind == "@":
            self.take()
            stamp = self.expect(_UNUMBER, _SNUMBER, _UDECIMAL, _SDECIMAL)
            if self.peek().kind != _EOF:
                raise _Invalid("combines @seconds with other items")
            self.pc.seconds, self.pc.ns, self.pc.timespec_seen = stamp.value, stamp.ns, True
            return
        while self.peek().kind != _EOF:
            self.item()

    # ---- items ----------------------------------------------------------------------------------

    def item(self) -> None:
        pc, token = self.pc, self.take()
        kind = token.kind
        if kind == _UNUMBER:
            self.number_item(token)
        elif kind == _SNUMBER:
            self.relative(self.relunit(token.value, self.expect(*_UNITS)))
        elif kind in (_UDECIMAL, _SDECIMAL):
            self.expect(_SEC_UNIT)
            self.relative(_Relative(seconds=token.value, ns=token.ns))
        elif kind == _ORDINAL:
            follower = self.expect(_DAY, *_UNITS)
            if follower.kind == _DAY:
                self.day(token.value, follower.value)
            else:
                self.relative(self.relunit(token.value, follower))
        elif kind in _UNITS:
            self.relative(self.relunit(1, token))
        elif kind == _DAY_SHIFT:
            self.apply(_Relative(day=token.value))
        elif kind == _DAY:
            if self.peek().kind == ",":
                self.take()
            self.day(0, token.value)
        elif kind == _MONTH:
            self.month_item(token.value)
        elif kind in (_ZONE, "T"):
            self.zone_item(token)
        elif kind == _DAYZONE:
            pc.time_zone = token.value + _HOUR
            pc.zones_seen += 1
        elif kind == _LOCAL_ZONE:
            pc.local_isdst = token.value
            if self.peek().kind == _DST:
                self.take()
                pc.local_isdst = 1
                pc.dsts_seen += 1
            pc.local_zones_seen += 1
        elif kind == "J":
            pc.j_zones_seen += 1
        elif kind == _CLOCK:
            self.set_time(token.value, 0, 0, 0, _MER_24)
            pc.times_seen += 1
        else:
            raise _Invalid()

    def number_item(self, first: _Token) -> None:
        pc, follower = self.pc, self.peek()
        kind = follower.kind
        if kind == _MERIDIAN:  # 10am
            self.take()
            self.set_time(first.value, 0, 0, 0, follower.value)
            pc.times_seen += 1
        elif kind == ":":  # 10:30[:00[.5]] [pm | offset]
            self.take()
            minutes = self.expect(_UNUMBER).value
            seconds, ns = 0, 0
            if self.peek().kind == ":":
                self.take()
                stamp = self.expect(_UNUMBER, _UDECIMAL)
                seconds, ns = stamp.value, stamp.ns
            if self.peek().kind == _MERIDIAN:
                meridian = self.take().value
            else:
                meridian = _MER_24
                self.optional_zone_offset()
            self.set_time(first.value, minutes, seconds, ns, meridian)
            pc.times_seen += 1
        elif kind == _SNUMBER:
            sign = self.take()
            after = self.peek().kind
            if after == _SNUMBER:  # ISO 8601 date, maybe T and a time
                day = self.take()
                pc.year, pc.month, pc.day = _Year(first.value, first.digits), -sign.value, -day.value
                pc.dates_seen += 1
                if self.peek().kind == "T":
                    self.take()
                    self.iso_time()
                    pc.times_seen += 1
            elif after in _UNITS:  # 20261101 -1 day
                self.digits_to_date_time(first)
                self.apply(self.relunit(sign.value, self.take()))
            else:  # 10 -0500: an hour and an offset
                self.zone_offset(sign)
                self.set_time(first.value, 0, 0, 0, _MER_24)
                pc.times_seen += 1
        elif kind == _DAY:  # 2 monday
            self.take()
            self.day(first.value, follower.value)
        elif kind == "/":
            self.take()
            second = self.expect(_UNUMBER)
            if self.peek().kind == "/":
                self.take()
                third = self.expect(_UNUMBER)
                if first.digits >= 4:  # YYYY/MM/DD
                    pc.year, pc.month, pc.day = _Year(first.value, first.digits), second.value, third.value
                else:  # MM/DD/YY[YY]
                    pc.month, pc.day, pc.year = first.value, second.value, _Year(third.value, third.digits)
            else:
                pc.month, pc.day = first.value, second.value
            pc.dates_seen += 1
        elif kind == _MONTH:  # 1 Nov [2026], 1-nov-2026
            self.take()
            pc.day, pc.month = first.value, follower.value
            year = self.peek()
            if year.kind in (_SNUMBER, _UNUMBER):
                self.take()
                pc.year = _Year(-year.value if year.kind == _SNUMBER else year.value, year.digits)
            pc.dates_seen += 1
        elif kind in _UNITS:
            self.relative(self.relunit(first.value, self.take()))
        else:
            self.digits_to_date_time(first)

    def month_item(self, month: int) -> None:
        pc, follower = self.pc, self.expect(_SNUMBER, _UNUMBER)
        pc.month = month
        if follower.kind == _SNUMBER:  # JUN-17-1992
            year = self.expect(_SNUMBER)
            pc.day, pc.year = -follower.value, _Year(-year.value, year.digits)
        else:  # Nov 1[, 2026]
            pc.day = follower.value
            if self.peek().kind == ",":
                self.take()
                year = self.expect(_UNUMBER)
                pc.year = _Year(year.value, year.digits)
        pc.dates_seen += 1

    def zone_item(self, token: _Token) -> None:
        pc = self.pc
        pc.time_zone = token.value if token.kind == _ZONE else -7 * _HOUR
        if self.peek().kind == _SNUMBER:
            sign = self.take()
            if self.peek().kind in _UNITS:  # UTC -1 day: a zone and a relative item
                self.apply(self.relunit(sign.value, self.take()))
            elif token.kind == "T":
                raise _Invalid()
            else:  # UTC+05:30
                base = pc.time_zone
                self.time_zone_hhmm(sign, self.colon_minutes())
                pc.time_zone += base
        elif token.kind == _ZONE and self.peek().kind == _DST:
            self.take()
            pc.time_zone += _HOUR
        pc.zones_seen += 1

    def iso_time(self) -> None:
        hour = self.expect(_UNUMBER).value
        if self.peek().kind == _SNUMBER:
            self.zone_offset(self.take())
            self.set_time(hour, 0, 0, 0, _MER_24)
            return
        self.expect(":")
        minutes = self.expect(_UNUMBER).value
        seconds, ns = 0, 0
        if self.peek().kind == ":":
            self.take()
            stamp = self.expect(_UNUMBER, _UDECIMAL)
            seconds, ns = stamp.value, stamp.ns
        self.optional_zone_offset()
        self.set_time(hour, minutes, seconds, ns, _MER_24)

    def optional_zone_offset(self) -> None:
        if self.peek().kind == _SNUMBER:
            self.zone_offset(self.take())

    def zone_offset(self, sign: _Token) -> None:
        self.time_zone_hhmm(sign, self.colon_minutes())
        self.pc.zones_seen += 1

    def colon_minutes(self) -> int:
        if self.peek().kind != ":":
            return -1
        self.take()
        return self.expect(_UNUMBER).value

    def time_zone_hhmm(self, sign: _Token, minutes: int) -> None:
        value = sign.value * 100 if sign.digits <= 2 and minutes < 0 else sign.value
        if minutes < 0:
            total = _ctrunc(value, 100) * 60 + (value - _ctrunc(value, 100) * 100)
        else:
            total = value * 60 + (-minutes if sign.negative else minutes)
        if not -24 * 60 <= total <= 24 * 60:
            raise _Invalid("has a UTC offset beyond 24 hours")
        self.pc.time_zone = total * 60

    def day(self, ordinal: int, number: int) -> None:
        self.pc.day_ordinal, self.pc.day_number = ordinal, number
        self.pc.days_seen += 1

    def set_time(self, hour: int, minutes: int, seconds: int, ns: int, meridian: int) -> None:
        pc = self.pc
        pc.hour, pc.minutes, pc.seconds, pc.ns, pc.meridian = hour, minutes, seconds, ns, meridian

    def digits_to_date_time(self, number: _Token) -> None:
        pc = self.pc
        if pc.dates_seen and not pc.year.digits and not pc.rels_seen and (pc.times_seen or number.digits > 2):
            pc.year = _Year(number.value, number.digits)
        elif number.digits > 4:  # YYYYMMDD
            pc.dates_seen += 1
            pc.day, pc.month = number.value % 100, number.value // 100 % 100
            pc.year = _Year(number.value // 10000, number.digits - 4)
        else:  # HH or HHMM
            pc.times_seen += 1
            hour, minutes = (number.value, 0) if number.digits <= 2 else divmod(number.value, 100)
            self.set_time(hour, minutes, 0, 0, _MER_24)

    @staticmethod
    def relunit(multiplier: int, unit: _Token) -> _Relative:
        kind = unit.kind
        if kind == _YEAR_UNIT:
            return _Relative(year=multiplier)
        if kind == _MONTH_UNIT:
            return _Relative(month=multiplier)
        if kind == _DAY_UNIT:
            return _Relative(day=multiplier * unit.value)
        if kind == _HOUR_UNIT:
            return _Relative(hour=multiplier)
        if kind == _MINUTE_UNIT:
            return _Relative(minutes=multiplier)
        return _Relative(seconds=multiplier)

    def relative(self, rel: _Relative) -> None:
        """A relative unit, and ``ago``/``hence`` right after it (that item only)."""
        factor = self.take().value if self.peek().kind == _AGO else 1
        self.apply(rel, factor)

    def apply(self, rel: _Relative, factor: int = 1) -> None:
        total = self.pc.rel
        for name in ("year", "month", "day", "hour", "minutes", "seconds", "ns"):
            setattr(total, name, getattr(total, name) + factor * getattr(rel, name))
        self.pc.rels_seen = True


# ---- glibc's mktime and localtime ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Tm:
    year: int
    mon: int  # 0-11
    mday: int
    hour: int
    min: int
    sec: int
    wday: int  # Sunday = 0
    isdst: bool
    gmtoff: int
    zone: str


def _localtime(t: int, tz: tzinfo) -> _Tm:
    try:
        local = (_EPOCH + timedelta(seconds=t)).astimezone(tz)
    except (OverflowError, ValueError) as exc:
        raise _Invalid("is out of range") from exc
    offset, dst = local.utcoffset(), local.dst()
    return _Tm(
        year=local.year,
        mon=local.month - 1,
        mday=local.day,
        hour=local.hour,
        min=local.minute,
        sec=local.second,
        wday=(local.weekday() + 1) % 7,
        isdst=bool(dst),
        gmtoff=int(offset.total_seconds()) if offset is not None else 0,
        zone=local.tzname() or "",
    )


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a proleptic Gregorian date (any year; ``day`` may be out of range)."""
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468 + day - 1


@dataclass
class _Mktime:
    """glibc's ``mktime`` in a zone, with its process-wide guess of the last offset found."""

    guess: int = 0  # glibc's localtime_offset (minus the UTC offset), zero in a fresh process

    def __call__(
        self, tz: tzinfo, fields: tuple[int, int, int, int, int, int], isdst: int
    ) -> tuple[int, _Tm]:
        year, mon, mday, hour, minute, sec = fields
        year, mon = year + mon // 12, mon % 12
        wall = (_days_from_civil(year, mon + 1, 1) + mday - 1) * 86400 + hour * 3600 + minute * 60 + sec
        t0 = wall + self.guess
        t = t1 = t2 = t0
        dst2 = False
        probes = 6
        while True:
            tm = _localtime(t, tz)
            guessed = wall - tm.gmtoff
            if t == guessed:
                break
            if t == t1 and t != t2 and (dst2 <= tm.isdst if isdst < 0 else bool(isdst) != tm.isdst):
                # Oscillating across a gap: glibc keeps this candidate (without a requested DST flag,
                # the one whose own flag is set, unless the previous one's was and this one's is not).
                self.guess += t - t0
                return t, tm
            probes -= 1
            if probes == 0:
                raise _Invalid("is out of range")
            t1, t2, t, dst2 = t2, t, guessed, tm.isdst
        if isdst >= 0 and bool(isdst) != tm.isdst:
            # The wall clock is at the other DST setting: use the offset of the nearest instant that has
            # the requested one (probing a week at a time, as glibc does).
            stride, bound = 601200, 457243200 // 2 + 601200
            for delta in range(stride, bound, stride):
                for direction in (-1, 1):
                    other = _localtime(t + delta * direction, tz)
                    if other.isdst == bool(isdst):
                        t = wall - other.gmtoff
                        tm = _localtime(t, tz)
                        self.guess += t - t0
                        return t, tm
            t += _HOUR * (int(isdst == 0) - int(not tm.isdst))
            tm = _localtime(t, tz)
        self.guess += t - t0
        return t, tm


def _same_fields(requested: tuple[int, int, int, int, int, int], tm: _Tm) -> bool:
    """glibc's ``mktime_ok``: normalisation changed nothing (the date and time exist)."""
    return requested == (tm.year, tm.mon, tm.mday, tm.hour, tm.min, tm.sec)


def _to_hour(hour: int, meridian: int) -> int:
    if meridian == _MER_24:
        return hour if 0 <= hour <= 24 else -1  # 24: strtotime's rollover, see the module docstring
    if not 0 < hour <= 12:
        return -1
    return (hour % 12) + (12 if meridian == _MER_PM else 0)


def _to_year(year: _Year) -> int:
    if year.value >= 0 and year.digits == 2:
        return year.value + (2000 if year.value < 69 else 1900)
    return abs(year.value) if year.value < 0 else year.value  # GNU reads 17-JUN--5 as year 5


# ---- the TZ="..." prefix and the user's zone names ---------------------------------------------------


def _tz_prefix(text: str) -> tuple[str | None, str]:
    """The rule of a leading ``TZ="..."`` (backslash escapes ``\\`` and ``"``) and the rest of the value."""
    if not text.startswith('TZ="'):
        return None, text
    rule: list[str] = []
    i = 4
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 >= len(text) or text[i + 1] not in '\\"':
                return None, text
            rule.append(text[i + 1])
            i += 2
        elif c == '"':
            return "".join(rule), text[i + 1 :].lstrip("".join(_SPACE))
        else:
            rule.append(c)
            i += 1
    return None, text


def _zone_of_rule(rule: str) -> tzinfo:
    """A ``TZ`` value: a tz database name (optionally after ``:``), ``""`` (UTC) or a fixed POSIX rule."""
    if rule == "":
        return UTC
    name = rule[1:] if rule.startswith(":") else rule
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):
        pass
    posix = _POSIX_FIXED.fullmatch(rule)
    if posix is not None:
        sign, hours, minutes, seconds = posix.groups()
        west = timedelta(hours=int(hours), minutes=int(minutes or 0), seconds=int(seconds or 0))
        if west < timedelta(hours=24) and int(minutes or 0) < 60 and int(seconds or 0) < 60:
            name = rule[: posix.start(1)].strip("<>")
            return timezone(west if sign == "-" else -west, name)
    raise _Invalid(f"names a time zone the sandbox does not know ({rule!r})")


def _local_zone_names(now: int, tz: tzinfo) -> dict[str, int]:
    """The zone's abbreviations near now (now's, and the next three quarters'), with their DST flag."""
    current = _localtime(now, tz)
    names = {current.zone: int(current.isdst)} if current.zone else {}
    for quarter in (1, 2, 3):
        probe = _localtime(now + quarter * 90 * 86400, tz)
        if probe.zone and probe.isdst != current.isdst:
            if probe.zone in names:  # one name for both: it says nothing about DST
                names[probe.zone] = -1
            else:
                names[probe.zone] = int(probe.isdst)
            break
    return names


# ---- putting it together ------------------------------------------------------------------------------


def _seconds_of(instant: datetime) -> tuple[int, int]:
    since = instant - _EPOCH
    return since.days * 86400 + since.seconds, since.microseconds * 1000


def parse_gnu_date(value: str, *, now: datetime, tz: tzinfo) -> datetime:
    """Resolve ``value`` the way GNU ``date -d`` does with ``TZ`` set to ``tz`` at the instant ``now``.

    Returns an aware datetime (microseconds) in the zone the value was read in. Raises
    :class:`DateSyntaxError` for a value GNU refuses, and for the cases the module docstring lists.
    """
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    try:
        return _parse(value, now, tz)
    except _Invalid as exc:
        raise DateSyntaxError(f"{value!r} {exc.reason}") from None


def _parse(value: str, now: datetime, tz: tzinfo) -> datetime:
    if "\x00" in value:
        raise _Invalid("contains a NUL character")
    text = value.lstrip("".join(_SPACE))
    if not text:
        raise _Invalid("is empty")
    rule, text = _tz_prefix(text)
    zone = tz if rule is None else _zone_of_rule(rule)
    start, start_ns = _seconds_of(now)
    current = _localtime(start, zone)
    pc = _Control(
        year=_Year(current.year),
        month=current.mon + 1,
        day=current.mday,
        hour=current.hour,
        minutes=current.min,
        seconds=current.sec,
        ns=start_ns,
    )
    _Parser(_lex(text or "0", _local_zone_names(start, zone)), pc).spec()
    if pc.timespec_seen:
        seconds, ns = pc.seconds, pc.ns
    else:
        seconds, ns = _resolve(pc, current, zone)
    try:
        result = _EPOCH + timedelta(seconds=seconds, microseconds=ns // 1000)
        return result.astimezone(zone)
    except (OverflowError, ValueError) as exc:
        raise _Invalid("is out of range") from exc


def _resolve(pc: _Control, current: _Tm, zone: tzinfo) -> tuple[int, int]:
    """gnulib's ``parse_datetime_body`` after the parse: fields → mktime → day of week → relative."""
    for count, kind in (
        (pc.times_seen, "time of day"),
        (pc.dates_seen, "calendar date"),
        (pc.days_seen, "day of the week"),
        (pc.dsts_seen, "DST"),
        (pc.j_zones_seen + pc.local_zones_seen + pc.zones_seen, "time zone"),
    ):
        if count > 1:
            raise _Invalid(f"has more than one {kind} item")
    year, mon, mday = _to_year(pc.year), pc.month - 1, pc.day
    ns = pc.ns
    if pc.times_seen or (pc.rels_seen and not pc.dates_seen and not pc.days_seen):
        hour = _to_hour(pc.hour, pc.meridian)
        if hour < 0:
            raise _Invalid("has an invalid hour")
        minute, sec = pc.minutes, pc.seconds
        if hour == 24:  # strtotime's reading of 24:MM:SS, on a date that exists
            try:
                following = date(year, mon + 1, mday) + timedelta(days=1)
            except (ValueError, OverflowError) as exc:
                raise _Invalid("is not a valid calendar date or time of day") from exc
            year, mon, mday, hour = following.year, following.month - 1, following.day, 0
    else:
        hour = minute = sec = ns = 0
    isdst = int(current.isdst)
    if pc.dates_seen or pc.days_seen or pc.times_seen:
        isdst = -1
    if pc.local_zones_seen:
        isdst = pc.local_isdst
    requested = (year, mon, mday, hour, minute, sec)
    mktime = _Mktime()
    t, tm = mktime(zone, requested, isdst)
    if not _same_fields(requested, tm):
        repaired = False
        if pc.zones_seen and abs(pc.time_zone) < 86400:
            # The local zone may skip that wall clock; glibc retries in a fixed zone (TZ="XXX<offset>",
            # POSIX sign, so west for a positive offset: only the fields' validity matters there).
            t, tm = mktime(timezone(timedelta(seconds=-pc.time_zone)), requested, isdst)
            repaired = _same_fields(requested, tm)
        if not repaired:
            raise _Invalid(_why_not(requested, zone, pc.local_isdst if pc.local_zones_seen else -1))
    if pc.days_seen and not pc.dates_seen:
        ordinal = pc.day_ordinal - (pc.day_ordinal > 0 and tm.wday != pc.day_number)
        shift = ordinal * 7 + (pc.day_number - tm.wday + 7) % 7
        t, tm = mktime(zone, (tm.year, tm.mon, tm.mday + shift, tm.hour, tm.min, tm.sec), -1)
    rel = pc.rel
    if rel.year or rel.month or rel.day:
        moved = (tm.year + rel.year, tm.mon + rel.month, tm.mday + rel.day, hour, minute, sec)
        t, tm = mktime(zone, moved, isdst)
    if pc.zones_seen:
        t -= pc.time_zone - tm.gmtoff
    total_ns = ns + rel.ns
    carry, ns = divmod(total_ns, _BILLION)
    return t + rel.hour * 3600 + rel.minutes * 60 + rel.seconds + carry, ns


def _why_not(requested: tuple[int, int, int, int, int, int], zone: tzinfo, isdst: int) -> str:
    """Why mktime normalised the fields: not a calendar date, or not a wall clock the zone shows."""
    year, mon, mday, hour, minute, sec = requested
    try:
        datetime(year, mon + 1, mday, hour, minute, sec)
    except (ValueError, OverflowError):
        return "is not a valid calendar date or time of day"
    name = getattr(zone, "key", None) or str(zone)
    if isdst < 0:
        return f"is a local time that does not exist in {name} (the clocks skip it)"
    setting = "daylight saving time" if isdst else "standard time"
    return f"is a local time that does not exist in {name} as {setting}"
