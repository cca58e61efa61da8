"""stacfetch.dates: accepted forms, inclusive ends, every failsafe, and property tests."""

from __future__ import annotations

import logging
import os
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stacfetch.dates import SENTINEL2_START, to_interval
from stacfetch.errors import InvalidDateError, UsageError
from stacfetch.query import Interval

UTC = timezone.utc
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
EXAMPLES = int(os.environ.get("STACFETCH_HYPOTHESIS_EXAMPLES", "200"))
PROPS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


DAY_START = utc(2022, 1, 20)
DAY_END = datetime(2022, 1, 20, 23, 59, 59, 999999, tzinfo=UTC)


# --- accepted forms ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        pytest.param("2022-01-20", id="iso-date"),
        pytest.param("  2022-01-20\n", id="surrounding-whitespace"),
        pytest.param("2022-1-20", id="iso-date-unpadded-month"),
        pytest.param("2022/01/20", id="slashes-year-first"),
        pytest.param("2022.01.20", id="dots-year-first"),
        pytest.param("20.01.2022", id="dd-mm-yyyy-dots"),
        pytest.param("20220120", id="yyyymmdd"),
        pytest.param("20 Jan 2022", id="day-month-name"),
        pytest.param("20-January-2022", id="day-month-name-dashes"),
        pytest.param("January 20, 2022", id="month-name-day"),
    ],
)
def test_date_forms_mean_the_whole_day(text: str) -> None:
    assert to_interval(text, now=NOW) == Interval(DAY_START, DAY_END)


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        pytest.param("2022-01-20T10:00", utc(2022, 1, 20, 10), id="naive-is-utc"),
        pytest.param("2022-01-20 10:00:30", utc(2022, 1, 20, 10, 0, 30), id="space-separator"),
        pytest.param("2022-01-20T10:00:00Z", utc(2022, 1, 20, 10), id="zulu"),
        pytest.param("2022-01-20t10:00:00z", utc(2022, 1, 20, 10), id="lowercase-t-z"),
        pytest.param("2022-01-20T10:00:00+02:00", utc(2022, 1, 20, 8), id="plus-offset"),
        pytest.param("2022-01-20T10:00-0530", utc(2022, 1, 20, 15, 30), id="minus-offset-no-colon"),
        pytest.param("2022-01-20T01:00+02", utc(2022, 1, 19, 23), id="offset-changes-utc-day"),
        pytest.param("2022-01-20T10:00:00.123456789Z", datetime(2022, 1, 20, 10, 0, 0, 123456, tzinfo=UTC), id="nanoseconds-truncated"),
        pytest.param("20220120T103421Z", utc(2022, 1, 20, 10, 34, 21), id="basic-iso-like-product-names"),
    ],
)
def test_datetime_forms_are_instants_in_utc(text: str, instant: datetime) -> None:
    assert to_interval(text, now=NOW) == Interval(instant, instant)


def test_date_only_end_includes_the_whole_end_day() -> None:
    interval = to_interval("2022-01-20", "2022-01-25", now=NOW)
    assert interval.start == utc(2022, 1, 20)
    assert interval.end == datetime(2022, 1, 25, 23, 59, 59, 999999, tzinfo=UTC)
    assert interval.to_stac() == "2022-01-20T00:00:00Z/2022-01-25T23:59:59.999999Z"


def test_datetime_end_is_used_as_given() -> None:
    interval = to_interval("2022-01-20", "2022-01-25T06:00Z", now=NOW)
    assert interval.end == utc(2022, 1, 25, 6)


def test_single_date_is_that_whole_day() -> None:
    assert to_interval("2022-01-20", now=NOW) == Interval(DAY_START, DAY_END)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        pytest.param(date(2022, 1, 20), date(2022, 1, 20), Interval(DAY_START, DAY_END), id="date-objects"),
        pytest.param(datetime(2022, 1, 20, 10), None, Interval(utc(2022, 1, 20, 10), utc(2022, 1, 20, 10)), id="naive-datetime-is-utc"),
        pytest.param(
            datetime(2022, 1, 20, 10, tzinfo=timezone(timedelta(hours=2))),
            datetime(2022, 1, 21, tzinfo=UTC),
            Interval(utc(2022, 1, 20, 8), utc(2022, 1, 21)),
            id="aware-datetime-converted",
        ),
        pytest.param("2022-02", None, Interval(utc(2022, 2, 1), datetime(2022, 2, 28, 23, 59, 59, 999999, tzinfo=UTC)), id="month"),
        pytest.param("2020", None, Interval(utc(2020, 1, 1), datetime(2020, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)), id="year"),
        pytest.param("2022-01-20/2022-01-25", None, Interval(DAY_START, datetime(2022, 1, 25, 23, 59, 59, 999999, tzinfo=UTC)), id="slash-interval"),
        pytest.param("2024-05-20", "2024-12-31", Interval(utc(2024, 5, 20), datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)), id="end-after-now-kept"),
    ],
)
def test_other_accepted_values(start: Any, end: Any, expected: Interval) -> None:
    assert to_interval(start, end, now=NOW) == expected


def test_now_defaults_to_the_clock() -> None:
    today = datetime.now(UTC).date()
    assert to_interval(today).start == datetime.combine(today, datetime.min.time(), tzinfo=UTC)


# --- safe corrections and warnings -------------------------------------------------------
def test_range_partly_before_sentinel2_is_clipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="stacfetch.dates"):
        interval = to_interval("2014-01-01", "2016-01-01", now=NOW)
    assert interval.start == SENTINEL2_START
    assert "before Sentinel-2" in caplog.text


def test_single_instant_warns_that_it_is_exact(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="stacfetch.dates"):
        interval = to_interval("2022-01-20T10:00Z", now=NOW)
    assert interval.start == interval.end == utc(2022, 1, 20, 10)
    assert "exactly that time" in caplog.text


# --- failsafes ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        pytest.param("2022-02-30", None, ["'2022-02-30' is not a real date", "February 2022 has 28 days"], id="impossible-day"),
        pytest.param("2022-13-01", None, ["there is no month 13"], id="impossible-month"),
        pytest.param("0000-01-01", None, ["no year 0"], id="year-zero"),
        pytest.param("2022-13", None, ["not a valid month"], id="impossible-year-month"),
        pytest.param("2022-01-25", "2022-01-20", ["start (2022-01-25", "is after the end", "did you mean --start 2022-01-20 --end 2022-01-25?"], id="reversed-range"),
        pytest.param("2022-01-20T12:00Z", "2022-01-20T11:00Z", ["is after the end"], id="reversed-instants"),
        pytest.param("2030-01-01", "2030-02-01", ["entirely in the future", "now is 2024-06-01T12:00:00Z"], id="future-range"),
        pytest.param("2010-01-01", "2012-12-31", ["ends before Sentinel-2", "2015-06-23"], id="before-sentinel2"),
        pytest.param("01/02/2022", None, ["could be day/month or month/day", "2022-02-01", "2022-01-02"], id="ambiguous-slashes"),
        pytest.param("02-01-2022", None, ["could be day/month or month/day", "YYYY-MM-DD"], id="ambiguous-dashes"),
        pytest.param("25/01/2022", None, ["does not guess", "2022-01-25"], id="day-month-slashes-not-guessed"),
        pytest.param("31/31/2022", None, ["not a real date in either"], id="slashes-impossible"),
        pytest.param("22-01-20", None, ["2-digit year"], id="two-digit-year-dashes"),
        pytest.param("20.01.22", None, ["2-digit year"], id="two-digit-year-dots"),
        pytest.param("1/20/22", None, ["2-digit year"], id="two-digit-year-us"),
        pytest.param("220120", None, ["2-digit year"], id="yymmdd"),
        pytest.param("", None, ["the start is an empty string"], id="empty-start"),
        pytest.param("2022-01-20", "   ", ["the end is an empty string"], id="blank-end"),
        pytest.param(None, None, ["no start date"], id="none-start"),
        pytest.param(20220120, None, ["got int 20220120", "'2022-01-20'"], id="int-yyyymmdd"),
        pytest.param(1.5, None, ["got float"], id="float"),
        pytest.param(True, None, ["got bool"], id="bool"),
        pytest.param(["2022-01-20"], None, ["got list"], id="list"),
        pytest.param("2022-01-20T25:00", None, ["impossible time of day 25:00"], id="hour-25"),
        pytest.param("2022-01-20T10:61", None, ["impossible time of day"], id="minute-61"),
        pytest.param("2022-01-20T10:00+25:00", None, ["impossible UTC offset"], id="offset-25h"),
        pytest.param("2022-01-20Z", None, ["not a date stacfetch understands"], id="zone-without-time"),
        pytest.param("yesterday", None, ["not a date stacfetch understands", "accepted forms"], id="words"),
        pytest.param("2022-01-20/..", None, ["open-ended"], id="open-ended"),
        pytest.param("9999-12-31T23:00-05:00", None, ["out of the supported range"], id="overflow"),
        pytest.param("x" * 100, None, ["too long"], id="too-long"),
    ],
)
def test_failsafes(start: Any, end: Any, expected: list[str]) -> None:
    with pytest.raises(InvalidDateError) as info:
        to_interval(start, end, now=NOW)
    assert isinstance(info.value, UsageError)
    for fragment in expected:
        assert fragment in str(info.value)


# --- properties ---------------------------------------------------------------------------
def valid_or_our_error(start: Any, end: Any = None) -> None:
    try:
        interval = to_interval(start, end, now=NOW)
    except InvalidDateError as exc:
        assert isinstance(exc, UsageError)
        assert exc.message.strip() and str(exc).strip()
    else:
        assert isinstance(interval, Interval)
        assert interval.start <= interval.end
        assert interval.start.utcoffset() == timedelta(0) and interval.end.utcoffset() == timedelta(0)
        assert SENTINEL2_START <= interval.start <= NOW


date_texts = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"\s*\d{1,4}[-/. ]\d{1,2}[-/. ]\d{1,4}([T ]\d{1,2}:\d{1,2}(:\d{1,2})?([Zz]|[+-]\d{1,2}(:?\d{2})?)?)?\s*", fullmatch=True),
    st.from_regex(r"\d{4,8}(T\d{4,6}Z?)?", fullmatch=True),
)
anything = st.one_of(
    date_texts,
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.dates(),
    st.datetimes(),
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))])),
    st.lists(st.integers(), max_size=3),
)
valid_days = st.dates(min_value=SENTINEL2_START.date(), max_value=NOW.date())


@PROPS
@given(date_texts, st.one_of(st.none(), date_texts))
def test_property_any_text(start: str, end: str | None) -> None:
    valid_or_our_error(start, end)


@PROPS
@given(anything, anything)
def test_property_any_value(start: Any, end: Any) -> None:
    valid_or_our_error(start, end)


MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
FORMS = {
    "iso": lambda d: d.isoformat(),
    "slashes": lambda d: f"{d.year:04d}/{d.month:02d}/{d.day:02d}",
    "dots-dmy": lambda d: f"{d.day:02d}.{d.month:02d}.{d.year:04d}",
    "dots-ymd": lambda d: f"{d.year:04d}.{d.month}.{d.day}",
    "basic": lambda d: f"{d.year:04d}{d.month:02d}{d.day:02d}",
    "named": lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",
    "noon-naive": lambda d: f"{d.isoformat()}T12:00",
    "noon-z": lambda d: f"{d.isoformat()}T12:00:00Z",
    "noon-offset": lambda d: f"{d.isoformat()}T12:00:00+02:00",
    "date-object": lambda d: d,
    "datetime-object": lambda d: datetime(d.year, d.month, d.day, 12),
}


@PROPS
@given(valid_days, st.sampled_from(sorted(FORMS)))
def test_property_every_form_gives_the_same_day(day: date, form: str) -> None:
    value = FORMS[form](day)
    interval = to_interval(value, now=NOW)
    moment, date_only = interval.start, interval.end != interval.start
    assert moment.date() == day
    assert date_only == (form not in ("noon-naive", "noon-z", "noon-offset", "datetime-object"))
    if date_only:
        assert to_interval(value, now=NOW) == to_interval(day.isoformat(), now=NOW)


@PROPS
@given(valid_days, valid_days)
def test_property_inclusive_days_or_reversed_error(a: date, b: date) -> None:
    if a <= b:
        interval = to_interval(a.isoformat(), b.isoformat(), now=NOW)
        assert interval.start == datetime.combine(a, datetime.min.time(), tzinfo=UTC)
        assert interval.end.date() == b and interval.end.hour == 23  # end day included
    else:
        with pytest.raises(InvalidDateError, match=f"did you mean --start {b.isoformat()} --end {a.isoformat()}"):
            to_interval(a.isoformat(), b.isoformat(), now=NOW)
