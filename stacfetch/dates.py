"""Dates in many forms -> one aware UTC closed :class:`~stacfetch.query.Interval`.

Every value denotes a span of time; the interval runs from the first instant of the
start's span to the last instant of the end's span:

* a date (``2022-01-20``, ``2022/01/20``, ``20.01.2022``, ``20220120``, ``20 Jan 2022``,
  ``datetime.date``) is the whole UTC day: as a start it means 00:00:00 UTC, as an end
  23:59:59.999999 UTC, so **the end day is always included**;
* a month ``2022-01`` or a year ``2022`` is the whole month / year (as in pystac-client);
* a date-time (``2022-01-20T10:00``, ``...Z``, ``...+02:00``, ``20220120T100000``,
  ``datetime.datetime``) is that instant; **a date-time without a zone is UTC**.

``end=None`` means the start's own span (one date = that whole day). ``"A/B"`` in ``start``
with no ``end`` is read as the interval A..B. Rejected with :class:`InvalidDateError`:
impossible dates, day/month orders that cannot be told apart (``01/02/2022``,
``02-01-2022``), 2-digit years, reversed ranges, ranges wholly in the future or wholly
before Sentinel-2 (:data:`SENTINEL2_START`, 2015-06-23); a range partly before it is
clipped with a warning. ``now`` is injectable for tests.
"""

from __future__ import annotations

import calendar
import logging
import re
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, TypeAlias

from .errors import InvalidDateError
from .query import Interval

log = logging.getLogger(__name__)

DateLike: TypeAlias = str | date | datetime
"""A date string in an accepted form, a ``datetime.date`` or a ``datetime.datetime``."""

UTC = timezone.utc
SENTINEL2_START = datetime(2015, 6, 23, tzinfo=UTC)
"""Launch of Sentinel-2A; no Sentinel-2 scene is older."""
END_OF_DAY = time(23, 59, 59, 999999)
"""A date-only end means this time (UTC) on that day: the whole day is included."""

ACCEPTED_FORMS = (
    "2022-01-20, 2022/01/20, 20.01.2022, 20220120, 20 Jan 2022, 2022-01 (month), 2022 (year), "
    "2022-01-20T10:00[:00][Z|+02:00] (no zone = UTC)"
)

_MONTHS = {
    name: i
    for i in range(1, 13)
    for name in (calendar.month_name[i].lower(), calendar.month_abbr[i].lower())
}
_MONTHS["sept"] = 9

_TIME = r"(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:[.,](?P<F>\d{1,9}))?)?"
_ZONE = r"\s*(?P<Z>[zZ]|[+-]\d{2}(?::?\d{2})?)?"
_ISO = re.compile(
    r"(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})(?:[Tt ]\s*" + _TIME + _ZONE + r")?"
)
_BASIC = re.compile(
    r"(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})"
    r"(?:[Tt](?P<H>\d{2})(?P<M>\d{2})(?:(?P<S>\d{2})(?:[.,](?P<F>\d{1,9}))?)?" + _ZONE + r")?"
)
_SLASH_YMD = re.compile(r"(?P<y>\d{4})/(?P<m>\d{1,2})/(?P<d>\d{1,2})")
_DOT_YMD = re.compile(r"(?P<y>\d{4})\.(?P<m>\d{1,2})\.(?P<d>\d{1,2})")
_DOT_DMY = re.compile(r"(?P<d>\d{1,2})\.(?P<m>\d{1,2})\.(?P<y>\d{4})")
_MONTH = re.compile(r"(?P<y>\d{4})-(?P<m>\d{1,2})")
_YEAR = re.compile(r"(?P<y>\d{4})")
_NAMED_DMY = re.compile(r"(?P<d>\d{1,2})(?:st|nd|rd|th)?[ -](?P<mon>[A-Za-z]+)\.?,?[ -](?P<y>\d{4})")
_NAMED_MDY = re.compile(r"(?P<mon>[A-Za-z]+)\.? (?P<d>\d{1,2})(?:st|nd|rd|th)?,? (?P<y>\d{4})")
_AMBIGUOUS = re.compile(r"(?P<a>\d{1,2})(?P<sep>[/-])(?P<b>\d{1,2})(?P=sep)(?P<y>\d{4})")
_TWO_DIGIT_YEAR = re.compile(r"\d{1,2}([/.-])\d{1,2}\1\d{2}|\d{6}")


# --- public API -------------------------------------------------------------------------
def to_interval(
    start: DateLike, end: DateLike | None = None, *, now: datetime | None = None
) -> Interval:
    """The closed UTC interval from ``start`` to ``end`` (inclusive; see the module docs).

    ``end=None`` means the start's own span: a single date is that whole day.
    """
    now = _aware(now) if now is not None else datetime.now(UTC)
    if start is None:
        raise InvalidDateError(
            "no start date was given", hint="e.g. --start 2022-01-20 --end 2022-01-25"
        )
    if end is None and isinstance(start, str) and start.count("/") == 1:
        left, right = (p.strip() for p in start.split("/"))
        if _ISO.fullmatch(left) or _ISO.fullmatch(right) or ".." in (left, right):
            if ".." in (left, right):
                raise InvalidDateError(
                    f"open-ended range {start!r} is not supported",
                    hint="give both ends, e.g. --start 2022-01-20 --end 2022-01-25",
                )
            start, end = left, right
    s_first, s_last, s_exact = _span(start, "start")
    if end is None:
        e_first, e_last, e_exact = s_first, s_last, s_exact
        if s_exact:
            log.warning(
                "only a start instant (%s) was given: that matches only scenes taken at exactly "
                "that time; give an end, or a date without a time for the whole day",
                _iso(s_first),
            )
    else:
        e_first, e_last, e_exact = _span(end, "end")
    begin, finish = s_first, e_last
    if begin > finish:
        raise InvalidDateError(
            f"the start ({_show_value(start)} = {_iso(begin)}) is after the end "
            f"({_show_value(end)} = {_iso(finish)})",
            hint=f"did you mean --start {_show_value(end)} --end {_show_value(start)}?",
        )
    if begin > now:
        raise InvalidDateError(
            f"the time window {_iso(begin)} to {_iso(finish)} is entirely in the future "
            f"(now is {_iso(now)})",
            hint="check the year; Sentinel-2 only has scenes up to now",
        )
    if finish < SENTINEL2_START:
        raise InvalidDateError(
            f"the time window {_iso(begin)} to {_iso(finish)} ends before Sentinel-2's first "
            f"scenes ({SENTINEL2_START.date().isoformat()})",
            hint="check the year; Sentinel-2 data start on 2015-06-23",
        )
    if begin < SENTINEL2_START:
        log.warning(
            "the start %s is before Sentinel-2's first scenes; searching from %s instead",
            _iso(begin), _iso(SENTINEL2_START),
        )
        begin = SENTINEL2_START
    return Interval(begin, finish)


# --- parsing ----------------------------------------------------------------------------
def _span(value: Any, role: str) -> tuple[datetime, datetime, bool]:
    """``(first instant, last instant, is_exact_instant)`` of one value, all aware UTC."""
    if isinstance(value, datetime):
        moment = _aware(value)
        return moment, moment, True
    if isinstance(value, date):
        return _day_span(value)
    if type(value).__name__ == "datetime64":  # numpy; its str() is ISO 8601
        value = str(value)
    if not isinstance(value, str):
        raise InvalidDateError(
            f"the {role} must be a date string, a datetime.date or a datetime.datetime, "
            f"got {type(value).__name__} {_show(value)}",
            hint=_type_hint(value),
        )
    text = value.strip()
    if not text:
        raise InvalidDateError(
            f"the {role} is an empty string", hint=f"write it like 2022-01-20; accepted: {ACCEPTED_FORMS}"
        )
    if len(text) > 64:
        raise InvalidDateError(f"the {role} {_show(text)} is too long to be a date", hint=_forms_hint())
    return _parse_text(text, role)


def _parse_text(text: str, role: str) -> tuple[datetime, datetime, bool]:
    for pattern in (_ISO, _BASIC):
        m = pattern.fullmatch(text)
        if m:
            d = _make_date(text, role, m["y"], m["m"], m["d"])
            if m["H"] is None:
                return _day_span(d)
            moment = _make_instant(text, role, d, m)
            return moment, moment, True
    for pattern in (_SLASH_YMD, _DOT_YMD, _DOT_DMY):
        m = pattern.fullmatch(text)
        if m:
            return _day_span(_make_date(text, role, m["y"], m["m"], m["d"]))
    for pattern in (_NAMED_DMY, _NAMED_MDY):
        m = pattern.fullmatch(text)
        if m and m["mon"].lower() in _MONTHS:
            month = _MONTHS[m["mon"].lower()]
            return _day_span(_make_date(text, role, m["y"], str(month), m["d"]))
    m = _MONTH.fullmatch(text)
    if m:
        year, month = int(m["y"]), int(m["m"])
        if not 1 <= month <= 12 or year < 1:
            raise InvalidDateError(
                f"the {role} {text!r} is not a valid month (YYYY-MM)", hint=_forms_hint()
            )
        last = calendar.monthrange(year, month)[1]
        return _first(date(year, month, 1)), _last(date(year, month, last)), False
    m = _YEAR.fullmatch(text)
    if m:
        year = int(m["y"])
        if year < 1:
            raise InvalidDateError(f"the {role} {text!r} is not a valid year", hint=_forms_hint())
        return _first(date(year, 1, 1)), _last(date(year, 12, 31)), False
    m = _AMBIGUOUS.fullmatch(text)
    if m:
        raise _ambiguous(text, role, int(m["a"]), int(m["b"]), int(m["y"]))
    if _TWO_DIGIT_YEAR.fullmatch(text):
        raise InvalidDateError(
            f"the {role} {text!r} has a 2-digit year (or an unknown order of day, month, year)",
            hint="write the year with 4 digits, year first: e.g. 2022-01-20",
        )
    raise InvalidDateError(
        f"the {role} {text!r} is not a date stacfetch understands", hint=_forms_hint()
    )


def _make_date(text: str, role: str, y: str, m: str, d: str) -> date:
    year, month, day = int(y), int(m), int(d)
    try:
        return date(year, month, day)
    except ValueError:
        pass
    if not 1 <= month <= 12:
        why = f"there is no month {month}"
    elif year < 1:
        why = "there is no year 0"
    else:
        days = calendar.monthrange(year, month)[1]
        why = f"{calendar.month_name[month]} {year} has {days} days"
    raise InvalidDateError(
        f"the {role} {text!r} is not a real date: {why}",
        hint="write an existing date as YYYY-MM-DD, e.g. 2022-02-28",
    )


def _make_instant(text: str, role: str, d: date, m: re.Match[str]) -> datetime:
    hour, minute = int(m["H"]), int(m["M"])
    second = int(m["S"]) if m["S"] else 0
    micro = int((m["F"] or "0")[:6].ljust(6, "0"))
    if hour > 23 or minute > 59 or second > 59:
        raise InvalidDateError(
            f"the {role} {text!r} has an impossible time of day {m['H']}:{m['M']}"
            + (f":{m['S']}" if m["S"] else ""),
            hint="hours 00-23, minutes and seconds 00-59, e.g. 2022-01-20T10:30:00Z",
        )
    tz = _zone(text, role, m["Z"])
    try:
        return datetime.combine(d, time(hour, minute, second, micro), tzinfo=tz).astimezone(UTC)
    except OverflowError:
        raise InvalidDateError(
            f"the {role} {text!r} is out of the supported range of dates", hint=_forms_hint()
        ) from None


def _zone(text: str, role: str, zone: str | None) -> timezone:
    if zone is None or zone in "zZ":
        return UTC
    sign = -1 if zone[0] == "-" else 1
    digits = zone[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 23 or minutes > 59:
        raise InvalidDateError(
            f"the {role} {text!r} has an impossible UTC offset {zone}",
            hint="offsets look like +02:00 or -05:30; or use Z for UTC",
        )
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _ambiguous(text: str, role: str, a: int, b: int, year: int) -> InvalidDateError:
    readings = []
    for day, month, label in ((a, b, "day first"), (b, a, "month first")):
        try:
            readings.append((date(year, month, day), label))
        except ValueError:
            continue
    if len(readings) == 2 and readings[0][0] != readings[1][0]:
        (d1, l1), (d2, l2) = readings
        hint = (
            f"write it as YYYY-MM-DD: {d1.isoformat()} ({d1:%d %B %Y}, {l1}) or "
            f"{d2.isoformat()} ({d2:%d %B %Y}, {l2})"
        )
        what = "could be day/month or month/day"
    elif readings:
        d1, l1 = readings[0]
        hint = f"write it as YYYY-MM-DD: {d1.isoformat()} (the only real date here, {l1})"
        what = "uses a day/month order stacfetch does not guess"
    else:
        hint = "write the date as YYYY-MM-DD, e.g. 2022-01-20"
        what = "is not a real date in either day/month order"
    return InvalidDateError(f"the {role} {text!r} {what}", hint=hint)


def _day_span(d: date) -> tuple[datetime, datetime, bool]:
    return _first(d), _last(d), False


def _first(d: date) -> datetime:
    return datetime.combine(d, time(0, 0), tzinfo=UTC)


def _last(d: date) -> datetime:
    return datetime.combine(d, END_OF_DAY, tzinfo=UTC)


def _aware(value: datetime) -> datetime:
    """Naive datetimes are UTC; aware ones are converted to UTC."""
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidDateError(
            f"{value!r} is out of the supported range of dates", hint=_forms_hint()
        ) from None


# --- messages ---------------------------------------------------------------------------
def _forms_hint() -> str:
    return f"write it like --start 2022-01-20 --end 2022-01-25; accepted forms: {ACCEPTED_FORMS}"


def _type_hint(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and len(str(value)) == 8:
        return f"pass it as a string: '{value}' (YYYYMMDD) or as '{str(value)[:4]}-{str(value)[4:6]}-{str(value)[6:]}'"
    return _forms_hint()


def _iso(value: datetime) -> str:
    text = value.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


def _show_value(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, datetime):
        return _iso(_aware(value))
    if isinstance(value, date):
        return value.isoformat()
    return _show(value)


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
