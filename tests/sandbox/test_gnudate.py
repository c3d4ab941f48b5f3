"""GNU date input syntax as the Pardot sandbox reads date arguments (``exportpipe_dev.sandbox.gnudate``).

Tables of inputs and the instants they resolve to on a frozen clock, in America/New_York unless said
otherwise; outputs of GNU ``date`` recorded in public sources; and, where GNU coreutils is installed,
a differential check against the real ``date -d`` on the machine's clock.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import pytest
from exportpipe_dev.sandbox.gnudate import DateSyntaxError, parse_date_argument, parse_gnu_date
from exportpipe_dev.sandbox.pardot_requests import RELATIVE_DATES

from .conftest import NOW

NEW_YORK = ZoneInfo("America/New_York")


def ny(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=NEW_YORK)  # type: ignore[arg-type]


def utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)  # type: ignore[arg-type]


def parse(value: str, now: datetime = NOW, tz: tzinfo = NEW_YORK) -> datetime:
    """The instant, in UTC: aware datetimes in different zones never compare equal in a repeated hour."""
    return parse_date_argument(value, now=now, tz=tz).astimezone(UTC)


def instant(value: datetime) -> datetime:
    return value.astimezone(UTC)


# NOW is Tuesday 2026-03-10 11:00:00 EDT (15:00 UTC); daylight saving time began on Sunday 2026-03-08.
TABLE = [
    # the page's keywords: midnight of that day / month in the user's timezone
    ("today", ny(2026, 3, 10)),
    ("yesterday", ny(2026, 3, 9)),
    ("last_7_days", ny(2026, 3, 3)),
    ("this_month", ny(2026, 3, 1)),
    ("last_month", ny(2026, 2, 1)),
    ("  Today ", ny(2026, 3, 10)),
    # calendar dates: midnight, in the user's timezone
    ("2026-11-01", ny(2026, 11, 1)),
    ("11/01/2026", ny(2026, 11, 1)),
    ("2026/11/01", ny(2026, 11, 1)),
    ("1 Nov 2026", ny(2026, 11, 1)),
    ("Nov 1, 2026", ny(2026, 11, 1)),
    ("Nov 1 2026", ny(2026, 11, 1)),
    ("november 1", ny(2026, 11, 1)),  # the current year
    ("1-nov-2026", ny(2026, 11, 1)),
    ("NOV-1-26", ny(2026, 11, 1)),
    ("26-11-1", ny(2026, 11, 1)),
    ("69-11-1", ny(1969, 11, 1)),
    ("20261101", ny(2026, 11, 1)),
    ("Sun, 1 Nov 2026", ny(2026, 11, 1)),  # a day of the week next to a date is ignored
    # combined ISO 8601 date and time, fractions
    ("2026-11-01T10:00:00", ny(2026, 11, 1, 10)),  # after the fall-back: EST
    ("2026-11-01T10:00", ny(2026, 11, 1, 10)),
    ("2026-11-01t10:00:00.25", ny(2026, 11, 1, 10, 0, 0, 250000)),
    ("2026-11-01T10:00:00,123456789Z", utc(2026, 11, 1, 10, 0, 0, 123456)),
    ("2026-11-01 10:20:30", ny(2026, 11, 1, 10, 20, 30)),
    # times of day: today
    ("10:00", ny(2026, 3, 10, 10)),
    ("10:00:00.5", ny(2026, 3, 10, 10, 0, 0, 500000)),
    ("10am", ny(2026, 3, 10, 10)),
    ("10:30 pm", ny(2026, 3, 10, 22, 30)),
    ("10:30:15 P.M.", ny(2026, 3, 10, 22, 30, 15)),
    ("12am", ny(2026, 3, 10, 0)),
    ("12pm", ny(2026, 3, 10, 12)),
    ("1030", ny(2026, 3, 10, 10, 30)),
    ("noon", ny(2026, 3, 10, 12)),  # strtotime's words
    ("midnight", ny(2026, 3, 10, 0)),
    # zones and offsets
    ("2026-11-01 10:00 Z", utc(2026, 11, 1, 10)),
    ("2026-11-01 10:00 UTC", utc(2026, 11, 1, 10)),
    ("2026-11-01 10:00 gmt", utc(2026, 11, 1, 10)),
    ("2026-11-01T10:00:00+05:00", utc(2026, 11, 1, 5)),
    ("2026-11-01 10:00 -0800", utc(2026, 11, 1, 18)),
    ("2026-11-01 10:00 -8", utc(2026, 11, 1, 18)),
    ("2026-11-01 10:00 PST", utc(2026, 11, 1, 18)),
    ("2026-11-08 10:00 EST", utc(2026, 11, 8, 15)),
    ("2026-07-01 10:00 EST DST", utc(2026, 7, 1, 14)),
    ("2026-07-01 10:00 CEST", utc(2026, 7, 1, 8)),
    ("2026-07-01 10:00 UTC+05:30", utc(2026, 7, 1, 4, 30)),
    ("2026-07-01 10:00 A", utc(2026, 7, 1, 9)),  # military Alpha: UTC+1, the right way round
    ('TZ="America/Los_Angeles" 2026-07-01 10:00', utc(2026, 7, 1, 17)),
    ('TZ=":Asia/Kolkata" 2026-07-01 10:00', utc(2026, 7, 1, 4, 30)),
    ('TZ="UTC0" 2026-07-01 10:00', utc(2026, 7, 1, 10)),
    ('TZ="<+0530>-5:30" 2026-07-01 10:00', utc(2026, 7, 1, 4, 30)),
    ('TZ="" 2026-07-01 10:00', utc(2026, 7, 1, 10)),
    ('TZ="Europe/Paris" tomorrow', utc(2026, 3, 11, 15)),  # now in Paris, plus a day
    # seconds since the epoch
    ("@1790000000", utc(2026, 9, 21, 14, 13, 20)),
    ("@1790000000.5", utc(2026, 9, 21, 14, 13, 20, 500000)),
    ("@ 1790000000,25", utc(2026, 9, 21, 14, 13, 20, 250000)),
    ("@0", utc(1970, 1, 1)),
    ("@-1", utc(1969, 12, 31, 23, 59, 59)),
    ("@-1.5", utc(1969, 12, 31, 23, 59, 58, 500000)),
    # relative items from now (the time of day is kept)
    ("now", NOW),
    ("+1 day", ny(2026, 3, 11, 11)),
    ("tomorrow", ny(2026, 3, 11, 11)),
    ("fortnight", ny(2026, 3, 24, 11)),
    ("2 days ago", ny(2026, 3, 8, 11)),
    ("3 hours ago", utc(2026, 3, 10, 12)),
    ("90 minutes", utc(2026, 3, 10, 16, 30)),
    ("1.5 seconds ago", NOW - timedelta(seconds=1.5)),
    ("2 days hence", ny(2026, 3, 12, 11)),
    ("next year", ny(2027, 3, 10, 10)),  # 2027-03-10 is before DST starts (03-14): see DST_HINT
    ("this month", NOW),
    # day of the week: forward to it (today counts), midnight; last / next: a week before / after
    ("monday", ny(2026, 3, 16)),
    ("tuesday", ny(2026, 3, 10)),
    ("tues", ny(2026, 3, 10)),
    ("next tuesday", ny(2026, 3, 17)),
    ("last tuesday", ny(2026, 3, 3)),
    ("next friday", ny(2026, 3, 13)),
    ("this thursday", ny(2026, 3, 12)),
    ("last sunday", ny(2026, 3, 8)),  # 00:00 EST, two hours before the clocks went forward
    ("third monday", ny(2026, 3, 30)),
    ("monday 10:00", ny(2026, 3, 16, 10)),
    ("friday noon", ny(2026, 3, 13, 12)),
    # combinations
    ("today 10:00", ny(2026, 3, 10, 10)),  # a GNU item inside a longer value: no longer the keyword
    ("12:00 today", ny(2026, 3, 10, 12)),
    ("today noon", ny(2026, 3, 10, 12)),
    ("yesterday 15:30", ny(2026, 3, 9, 15, 30)),
    ("tomorrow 10am", ny(2026, 3, 11, 10)),
    ("next friday 2 hours 10:00", ny(2026, 3, 13, 12)),
    ("2026-11-01 10:00 1 day ago", ny(2026, 10, 31, 10)),
    ("-1 day 2026-11-01 10:00", ny(2026, 10, 31, 10)),
    ("2026-11-01 (a comment) 10:00", ny(2026, 11, 1, 10)),
    # GNU's grammar: after a time of day a signed number is a UTC offset, then the unit stands alone
    ("2026-11-01 10:00 -1 day", utc(2026, 11, 2, 11)),  # 10:00 at UTC-1, plus one day
    ("2026-03-10 11:00 -3 days", ny(2026, 3, 11, 10)),  # 11:00 at UTC-3, plus one day: 10:00 EDT
    ("next friday 10:00 +2 hours", utc(2026, 3, 13, 9)),  # 10:00 at UTC+2, plus one hour
    # GNU's "ago" negates the item it follows, not the whole value (strtotime: -1 year -2 months)
    ("1 year 2 months ago", ny(2027, 1, 10, 10)),
    # hour 24 rolls over, as strtotime reads Pardot's own v3/v4 example
    ("2020-12-25 24:59:59", ny(2020, 12, 26, 0, 59, 59)),
    ("2026-02-28 24:00", ny(2026, 3, 1)),
]


@pytest.mark.parametrize(("value", "expected"), TABLE, ids=[row[0] for row in TABLE])
def test_inputs_resolve_to_the_instants_gnu_date_gives(value: str, expected: datetime) -> None:
    assert parse(value) == instant(expected)


# With no date, time or day in the value, calendar arithmetic keeps now's daylight-saving flag (glibc's
# mktime with tm_isdst from now): crossing a DST change, the result keeps now's UTC offset. With a date or
# a time the wall clock is kept.
DST_HINT = [
    # NOW is 11:00 EDT; these land in EST and so read 10:00 EST (whole days of 24 hours)
    ("3 days ago", NOW, ny(2026, 3, 7, 10)),
    ("-2 weeks", NOW, ny(2026, 2, 24, 10)),
    ("last month", NOW, ny(2026, 2, 10, 10)),
    ("next year", NOW, ny(2027, 3, 10, 10)),
    ("2026-03-10 11:00 3 days ago", NOW, ny(2026, 3, 7, 11)),  # wall clock kept: 73 hours
    ("72 hours ago", NOW, ny(2026, 3, 7, 10)),
    # Saturday 2026-10-31 12:00 EDT, the day before the fall-back
    ("tomorrow", utc(2026, 10, 31, 16), ny(2026, 11, 1, 11)),  # 24 hours: 11:00 EST
    ("+1 day 2026-10-31 12:00", utc(2026, 10, 31, 16), ny(2026, 11, 1, 12)),  # 25 hours
    ("24 hours", utc(2026, 10, 31, 16), ny(2026, 11, 1, 11)),
    # Saturday 2026-03-07 12:00 EST, the day before the spring-forward
    ("tomorrow", utc(2026, 3, 7, 17), ny(2026, 3, 8, 13)),  # 24 hours: 13:00 EDT
    ("tomorrow 12:00", utc(2026, 3, 7, 17), ny(2026, 3, 8, 12)),  # 23 hours
    # just after midnight, the day after a change: "yesterday" as GNU reads it is not yesterday's date
    ("1 day ago", utc(2026, 3, 9, 4, 15), ny(2026, 3, 7, 23, 15)),
    ("1 day ago 00:15", utc(2026, 3, 9, 4, 15), ny(2026, 3, 8, 0, 15)),
]


@pytest.mark.parametrize(("value", "now", "expected"), DST_HINT)
def test_relative_days_keep_nows_daylight_saving_flag_as_glibc_does(
    value: str, now: datetime, expected: datetime
) -> None:
    assert instant(parse_gnu_date(value, now=now, tz=NEW_YORK)) == instant(expected)


DST_EDGES = [
    # spring-forward 2026-03-08: 02:00-02:59 does not exist in New York
    ("2026-03-08 01:59:59", utc(2026, 3, 8, 6, 59, 59)),
    ("2026-03-08 03:00", utc(2026, 3, 8, 7)),
    ("2026-03-08 02:30 UTC", utc(2026, 3, 8, 2, 30)),  # a zone makes the wall clock valid again
    ("2026-03-08 02:30 -0500", utc(2026, 3, 8, 7, 30)),
    ("2026-03-08 02:30 PDT", utc(2026, 3, 8, 9, 30)),
    ("+30 minutes 2026-03-08 01:45", utc(2026, 3, 8, 7, 15)),  # 03:15 EDT: minutes are elapsed time
    ("2026-03-07 02:30 +1 day", utc(2026, 3, 8, 2, 30)),  # 02:30 at UTC+1, then a day (see TABLE)
    # fall-back 2026-11-01: 01:00-01:59 happens twice
    ("2026-11-01 01:30", utc(2026, 11, 1, 5, 30)),  # the first, daylight-saving one
    ("2026-11-01 01:30 EDT", utc(2026, 11, 1, 5, 30)),
    ("2026-11-01 01:30 EST", utc(2026, 11, 1, 6, 30)),
    ("2026-11-01 01:30 -0500", utc(2026, 11, 1, 6, 30)),
    ("+1 hour 2026-11-01 00:30", utc(2026, 11, 1, 5, 30)),  # 01:30 EDT
    ("+2 hours 2026-11-01 00:30", utc(2026, 11, 1, 6, 30)),  # 01:30 EST
    ("2026-11-01 00:30 EDT", utc(2026, 11, 1, 4, 30)),
    ("2026-11-01", utc(2026, 11, 1, 4)),  # midnight, still EDT
    ("2026-11-02", utc(2026, 11, 2, 5)),
]


@pytest.mark.parametrize(("value", "expected"), DST_EDGES)
def test_daylight_saving_edges_in_new_york(value: str, expected: datetime) -> None:
    assert parse(value) == instant(expected)


@pytest.mark.parametrize(
    "value", ["2026-03-08 02:30", "2026-03-08 02:00:00", "2026-03-08 02:30 EST", "2026-07-01 10:00 EST"]
)
def test_a_local_time_the_clocks_skip_is_refused(value: str) -> None:
    # EST and EDT are the user's zone's own abbreviations: they select standard or daylight time, not a
    # fixed offset, so they neither make 02:30 exist nor name 10:00 standard time in July (as with
    # TZ=America/New_York date -d '2026-07-01 10:00 EST': "non-existing due to daylight-saving time")
    with pytest.raises(DateSyntaxError, match="does not exist in America/New_York"):
        parse(value)


def test_an_ambiguous_hour_east_of_greenwich_is_the_standard_time_one() -> None:
    # glibc's search starts from offset zero (a fresh date -d process): it meets CET / GMT first
    assert parse("2026-10-25 02:30", tz=ZoneInfo("Europe/Paris")) == utc(2026, 10, 25, 1, 30)
    assert parse("2026-10-25 01:30", tz=ZoneInfo("Europe/London")) == utc(2026, 10, 25, 1, 30)
    assert parse("2026-10-25 02:30 CEST", tz=ZoneInfo("Europe/Paris")) == utc(2026, 10, 25, 0, 30)


def test_in_another_users_zone_est_is_a_fixed_offset() -> None:
    assert parse("2026-07-01 10:00 EST", tz=UTC) == utc(2026, 7, 1, 15)
    assert parse("2026-07-01 10:00 EST", tz=ZoneInfo("Europe/Paris")) == utc(2026, 7, 1, 15)


MONTH_ENDS = [
    # years, months and days go on the calendar fields together, then the date is normalised
    ("2026-01-31 +1 month", ny(2026, 3, 3)),  # 2026-02-31
    ("2026-03-31 -1 month", ny(2026, 3, 3)),
    ("2024-01-31 +1 month", ny(2024, 3, 2)),  # a leap year
    ("2024-02-29 +1 year", ny(2025, 3, 1)),
    ("2024-02-29 -4 years", ny(2020, 2, 29)),
    ("2026-01-31 +1 month -1 day", ny(2026, 3, 2)),
    ("2026-12-31 +2 months", ny(2027, 3, 3)),
    ("2026-05-31 next month", ny(2026, 7, 1)),
    ("2003-07-31 -1 month", ny(2003, 7, 1)),  # the GNU manual's example
    ("2026-03-15 -1 month", ny(2026, 2, 15)),  # ...and its advice: ask from the 15th
    ("+30 days 2026-01-31 12:00", ny(2026, 3, 2, 12)),
]


@pytest.mark.parametrize(("value", "expected"), MONTH_ENDS)
def test_month_end_arithmetic_overflows_into_the_next_month_as_gnu_does(
    value: str, expected: datetime
) -> None:
    assert parse(value) == instant(expected)


def test_next_month_from_the_31st_on_the_clock() -> None:
    now = utc(2026, 1, 31, 17)  # 12:00 EST
    assert parse("next month", now) == instant(ny(2026, 3, 3, 12))
    # from 12:00 EDT on 2026-03-31: 2026-02-31 is 03-03, in EST, so now's offset makes it 11:00 EST
    assert parse("last month", utc(2026, 3, 31, 16)) == instant(ny(2026, 3, 3, 11))


# What GNU date printed, as recorded in public sources (zones and clocks as described there).
RECORDED = [
    # https://www.baeldung.com/linux/dst-safe-relative-dates (America/Los_Angeles, 2022)
    ("tomorrow", "America/Los_Angeles", "2022-03-12T10:18:45-08:00", "2022-03-13T11:18:45-07:00"),
    ("3 days", "America/Los_Angeles", "2022-03-10T23:11:01-08:00", "2022-03-14T00:11:01-07:00"),
    # https://alext.mail.at/?p=210 (Central European time, 2014)
    ("yesterday", "Europe/Vienna", "2014-03-31T00:15:03+02:00", "2014-03-29T23:15:03+01:00"),
    ("2014-03-31 0:15 yesterday", "Europe/Vienna", "2014-03-31T00:15:03+02:00", "2014-03-30T00:15:00+01:00"),
    (
        "2014-03-31 0:15 24 hours ago",
        "Europe/Vienna",
        "2014-03-31T00:15:03+02:00",
        "2014-03-29T23:15:00+01:00",
    ),
    # the GNU manual ("Specifying time zone rules"), with TZ=America/New_York
    (
        'TZ="Europe/Paris" 2004-10-31 06:30',
        "America/New_York",
        "2004-10-31T12:00:00-05:00",
        "2004-10-31T01:30:00-04:00",
    ),
]


@pytest.mark.parametrize(("value", "zone", "now", "printed"), RECORDED)
def test_outputs_gnu_date_is_recorded_to_give(value: str, zone: str, now: str, printed: str) -> None:
    got = parse_gnu_date(value, now=datetime.fromisoformat(now), tz=ZoneInfo(zone))
    assert instant(got) == instant(datetime.fromisoformat(printed))
    # date prints in TZ: the offset it showed is the zone's at that instant
    assert got.astimezone(ZoneInfo(zone)).utcoffset() == datetime.fromisoformat(printed).utcoffset()


REFUSED = [
    "",
    "   ",
    "2026-02-30",
    "2026-02-29 24:00",  # the day before the rollover must exist
    "2026-13-01",
    "2026-00-10",
    "25:00",
    "10:60",
    "10:00:60",
    "13pm",
    "0am",
    "24:00 pm",
    "next blursday",
    "Nov 1st",  # strtotime's ordinal suffixes are not GNU
    "first day of next month",
    "1.5 days",  # only seconds take a fraction
    "@1790000000 +1 day",  # nothing combines with @seconds
    "2 days @1790000000",
    "monday tuesday",
    "10:00 11:00",
    "2026-11-01 2026-11-02",
    "UTC PST",
    "2026-11-01 10:00 +05:00 UTC",
    "EST DST DST",
    "2026-11-01T10",  # an hour alone after T needs an offset
    "tomorrow ago",
    "2 hence",
    "2026-11-01 10:00 +25",
    'TZ="Nowhere/Land" 2026-11-01',  # glibc would silently use UTC
    'TZ="EST5EDT,M3.2.0,M11.1.0" 2026-11-01',
    'TZ="America/New_York 2026-11-01',
    "2026-11-01\x00",
    "10001-01-01",
    "@99999999999999",
    "last_week",
    "créé",
]


@pytest.mark.parametrize("value", REFUSED)
def test_values_gnu_date_or_the_sandbox_refuses(value: str) -> None:
    with pytest.raises(DateSyntaxError) as caught:
        parse(value)
    assert isinstance(caught.value, ValueError)  # the catalog turns a ValueError into Pardot's 177
    assert repr(value) in str(caught.value)


def test_the_keywords_are_the_catalogs_and_only_the_bare_words_are_keywords() -> None:
    for keyword in RELATIVE_DATES:
        assert parse(keyword).astimezone(NEW_YORK).time() == datetime.min.time()
    # GNU alone reads "today" as now and "yesterday" as now minus a day
    assert instant(parse_gnu_date("today", now=NOW, tz=NEW_YORK)) == NOW
    assert instant(parse_gnu_date("yesterday", now=NOW, tz=NEW_YORK)) == instant(ny(2026, 3, 9, 11))
    assert parse("yesterday") == instant(ny(2026, 3, 9))


def test_the_forms_the_sandbox_read_before_resolve_as_before() -> None:
    now = datetime(2026, 3, 10, 3, 30, tzinfo=UTC)  # 2026-03-09 23:30 in New York

    assert parse("today", now) == instant(datetime(2026, 3, 9, tzinfo=NEW_YORK))
    assert parse("yesterday", now) == instant(datetime(2026, 3, 8, tzinfo=NEW_YORK))
    assert parse("last_7_days", now) == instant(datetime(2026, 3, 2, tzinfo=NEW_YORK))
    assert parse("this_month", now) == instant(datetime(2026, 3, 1, tzinfo=NEW_YORK))
    assert parse("last_month", now) == instant(datetime(2026, 2, 1, tzinfo=NEW_YORK))
    assert parse("2026-03-01", now) == instant(datetime(2026, 3, 1, tzinfo=NEW_YORK))
    assert parse("2026-03-01 10:20:30", now) == instant(datetime(2026, 3, 1, 10, 20, 30, tzinfo=NEW_YORK))
    assert parse("2026-03-01T10:20:30Z", now) == instant(datetime(2026, 3, 1, 10, 20, 30, tzinfo=UTC))
    assert parse("2026-03-01T10:20:30+05:30", now) == instant(datetime(2026, 3, 1, 4, 50, 30, tzinfo=UTC))
    assert parse("2026-03-01T10:20:30-0500", now) == instant(datetime(2026, 3, 1, 15, 20, 30, tzinfo=UTC))
    assert parse("2026-03-01 10:20:30 UTC", now) == instant(datetime(2026, 3, 1, 10, 20, 30, tzinfo=UTC))
    assert parse("2020-12-25 24:59:59", now) == instant(datetime(2020, 12, 26, 0, 59, 59, tzinfo=NEW_YORK))
    # what a pipeline client sends: ISO 8601 with the user's offset, microseconds and all
    sent = datetime(2026, 3, 9, 23, 59, 59, 999999, tzinfo=NEW_YORK)
    assert parse(sent.isoformat(), now) == instant(sent)


def test_the_result_is_in_the_zone_the_value_was_read_in() -> None:
    def raw(value: str) -> datetime:
        return parse_date_argument(value, now=NOW, tz=NEW_YORK)

    assert raw("2026-07-01 10:00").tzinfo is NEW_YORK
    assert raw('TZ="Europe/Paris" 2026-07-01 10:00').utcoffset() == timedelta(hours=2)
    assert raw("2026-07-01 10:00 UTC").utcoffset() == timedelta(hours=-4)  # the instant, shown in NY


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse_gnu_date("now", now=datetime(2026, 3, 10), tz=NEW_YORK)


# ---- against the real thing ------------------------------------------------------------------------


def _gnu_date() -> str | None:
    found = shutil.which("date")
    if found is None:
        return None
    version = subprocess.run([found, "--version"], capture_output=True, text=True, check=False).stdout
    return found if "GNU coreutils" in version else None


GNU_DATE = _gnu_date()

# Inputs whose reading every coreutils 8.x/9.x agrees on (J, hour 24, noon/midnight and the blank value
# are left out: newer gnulib, strtotime and the sandbox's refusals). Relative items resolve on the machine's
# real clock, so in some months they cross a DST change and in others not.
DIFFERENTIAL = [
    *(row[0] for row in TABLE if row[0] not in {"noon", "midnight", "friday noon", "today noon"}),
    *(row[0] for row in DST_EDGES),
    *(row[0] for row in MONTH_ENDS),
    *(f"{n} days ago" for n in range(1, 400, 9)),
    *(f"{n} months" for n in range(1, 13)),
    *(f"{n} weeks ago" for n in range(1, 30, 4)),
    "last month 3 days ago",
    "next monday 10:00 -1 week",
    *(
        value
        for value in REFUSED
        if value.strip() and "\x00" not in value and "TZ=" not in value and "24" not in value
    ),
]
DIFFERENTIAL = [v for v in DIFFERENTIAL if v.strip().lower() not in RELATIVE_DATES and "24:" not in v]


def _run_gnu(value: str, zone: str) -> tuple[int, int] | None:
    assert GNU_DATE is not None
    env = {"TZ": zone, "LC_ALL": "C", "PATH": os.environ.get("PATH", "")}
    done = subprocess.run(
        [GNU_DATE, "-d", value, "+%s %N"], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return None
    seconds, nanoseconds = done.stdout.split()
    if not -62135596800 <= int(seconds) <= 253402300799:
        return None  # outside years 1-9999, which the sandbox refuses on purpose
    return int(seconds), int(nanoseconds) // 1000


def _ours(value: str, zone: str, now: datetime) -> tuple[int, int] | None:
    try:
        got = parse_gnu_date(value, now=now, tz=ZoneInfo(zone))
    except DateSyntaxError:
        return None
    since = got - datetime(1970, 1, 1, tzinfo=UTC)
    return since.days * 86400 + since.seconds, since.microseconds


@pytest.mark.skipif(GNU_DATE is None, reason="GNU coreutils date is not installed")
@pytest.mark.parametrize("zone", ["America/New_York", "Europe/Paris", "Australia/Sydney"])
def test_agrees_with_the_installed_gnu_date(zone: str) -> None:
    disagreements = []
    for value in DIFFERENTIAL:
        before = datetime.now(UTC)
        theirs = _run_gnu(value, zone)
        after = datetime.now(UTC)
        early, late = _ours(value, zone, before), _ours(value, zone, after)
        if theirs is None or early is None or late is None:
            agree = theirs is None and early is None and late is None
        elif early == late:  # not relative to now
            agree = theirs == early
        else:  # relative to now: GNU's clock read lies between ours
            agree = early[0] <= theirs[0] <= late[0]
        if not agree:
            disagreements.append((value, theirs, early))
    assert not disagreements
