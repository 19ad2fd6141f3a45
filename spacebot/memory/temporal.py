"""Relative dates resolved against the time a text was said.

"I went there yesterday", said on 8 May 2023, means 7 May 2023; a later question "what happened
on 7 May?" shares no word with it. :func:`resolve` finds the English relative date expressions of
a text and returns the absolute day, or the week / weekend / month / year span they mean, counted
from a reference date (when the text was said, not when it is processed). The memory engine adds
them to a memory's indexed text and metadata at save time (:func:`annotate`) and to a recall query
(:func:`expand_query`).

This is a small matcher of its own rather than ``dateparser.search.search_dates``: measured on
LoCoMo turns, ``search_dates`` took about 2.5 ms per turn (this one about 30 µs), matched ordinary
words ("we" as Wednesday, "now", "one's", "18th") and turned "last week" / "last month" into the
single day a week / a month back instead of the span meant. Only expressions whose meaning is fixed by
the reference date are matched; vague ones ("recently", "the other day", "a few weeks ago"),
bare weekdays ("on Friday": past or future?) and dates relative to other events ("two weeks before
the trip") are left alone.
"""

from __future__ import annotations

import calendar
import re
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

_MONTHS = [calendar.month_name[m] for m in range(1, 13)]
_MONTH_NUMBER = {name.lower(): m for m, name in enumerate(_MONTHS, start=1)}
_MONTH_NUMBER |= {name[:3].lower(): m for name, m in list(_MONTH_NUMBER.items())} | {"sept": 9}
_WEEKDAYS = {name.lower(): d for d, name in enumerate(calendar.day_name)}
# Abbreviations that are also words ("this sat on", "last sun") are left out.
_WEEKDAYS |= {"tue": 1, "tues": 1, "thu": 3, "thur": 3, "thurs": 3, "fri": 4}
_NUMBER_WORDS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "a couple of": 2,
    "a couple": 2,
    "couple of": 2,
}
_DIRECTION = {"last": -1, "past": -1, "this past": -1, "next": 1, "coming": 1, "this coming": 1, "this": 0}

_NUM = rf"(?P<n>\d{{1,3}}|{'|'.join(sorted(_NUMBER_WORDS, key=len, reverse=True))})"
_WEEKDAY = "|".join(sorted(_WEEKDAYS, key=len, reverse=True))
_MONTH = "|".join(_MONTHS)
_PATTERN = re.compile(
    r"\b(?:"
    r"the day (?P<around>before yesterday|after tomorrow)"
    r"|(?P<word>yesterday|last night|today|tonight|this (?:morning|afternoon|evening)|tomorrow)"
    rf"|{_NUM}\s+(?P<unit>day|week(?:end)?|month|year)s?\s+(?P<way>ago|from now)"
    r"|(?P<rel>this past|this coming|last|next|this|past|coming)\s+"
    rf"(?P<what>{_WEEKDAY}|weekend|week|month|year|(?-i:{_MONTH}))"
    r")\b",
    re.IGNORECASE,
)
# "past" and "coming", and any direction after "the", read as durations with week / month / year
# ("the past year", "over the last week", "in the next month").
_ONLY_DAYS_AND_WEEKENDS = {"past", "coming"}
_DURATION_UNITS = {"week", "month", "year"}
# Same-day words add nothing to a memory whose text already shows its date.
SAME_DAY = frozenset({"today", "tonight", "this morning", "this afternoon", "this evening"})


class DateSpan(NamedTuple):
    """One relative expression and what it means."""

    said: str
    """The expression as written, lower-cased, spaces collapsed ("last week")."""
    first: date
    """First day meant."""
    last: date
    """Last day meant (``first`` for a single day)."""
    unit: str
    """``day``, ``week`` (Monday to Sunday), ``weekend``, ``month`` or ``year``."""

    def iso(self) -> str:
        """``2023-05-07``, or an ISO 8601 interval ``2023-05-01/2023-05-07`` for a span."""
        if self.first == self.last:
            return self.first.isoformat()
        return f"{self.first.isoformat()}/{self.last.isoformat()}"

    def label(self) -> str:
        """Words a question would use: ``7 May 2023``, ``week of 1 May 2023``, ``May 2023``, ``2022``."""
        day = f"{self.first.day} {_MONTHS[self.first.month - 1]} {self.first.year}"
        match self.unit:
            case "week" | "weekend":
                return f"{self.unit} of {day}"
            case "month":
                return f"{_MONTHS[self.first.month - 1]} {self.first.year}"
            case "year":
                return str(self.first.year)
            case _:
                return day


def _month_span(year: int, month: int) -> tuple[date, date]:
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])


def _span(unit: str, ref: date, steps: int, said: str) -> DateSpan:
    """The ``unit`` ``steps`` units away from the one holding ``ref`` (days count from ``ref``)."""
    if unit == "day":
        d = ref + timedelta(days=steps)
        return DateSpan(said, d, d, "day")
    if unit in ("week", "weekend"):
        monday = ref - timedelta(days=ref.weekday()) + timedelta(weeks=steps)
        if unit == "weekend":
            return DateSpan(said, monday + timedelta(days=5), monday + timedelta(days=6), "weekend")
        return DateSpan(said, monday, monday + timedelta(days=6), "week")
    if unit == "month":
        return DateSpan(said, *_month_span(ref.year, ref.month + steps), "month")
    return DateSpan(said, date(ref.year + steps, 1, 1), date(ref.year + steps, 12, 31), "year")


def _meaning(m: re.Match[str], ref: date, said: str, after_the: bool) -> DateSpan | None:
    if m["around"]:
        return _span("day", ref, -2 if m["around"].startswith("before") else 2, said)
    if m["word"]:
        word = said
        steps = -1 if word in ("yesterday", "last night") else 1 if word == "tomorrow" else 0
        return _span("day", ref, steps, said)
    if m["unit"]:
        n = int(m["n"]) if m["n"].isdigit() else _NUMBER_WORDS[m["n"].lower()]
        steps = -n if m["way"].lower() == "ago" else n
        unit = m["unit"].lower()
        # "two weeks ago" is a day (about that day), not the calendar week.
        return _span("day", ref, 7 * steps, said) if unit == "week" else _span(unit, ref, steps, said)
    rel = " ".join(m["rel"].lower().split())
    what = m["what"].lower()
    direction = _DIRECTION[rel]
    if what in _WEEKDAYS:
        wd = _WEEKDAYS[what]
        if direction < 0:
            return _span("day", ref, -((ref.weekday() - wd) % 7 or 7), said)
        if direction > 0:
            return _span("day", ref, (wd - ref.weekday()) % 7 or 7, said)
        return _span("day", ref, wd - ref.weekday(), said)
    if what in _DURATION_UNITS and (rel in _ONLY_DAYS_AND_WEEKENDS or after_the):
        return None
    if what in ("week", "weekend", "month", "year"):
        return _span(what, ref, direction, said)
    month = _MONTH_NUMBER[what]
    # "last May": the most recent May before this month; "next May": the first one after it.
    if direction < 0:
        year = ref.year if month < ref.month else ref.year - 1
    elif direction > 0:
        year = ref.year if month > ref.month else ref.year + 1
    else:
        year = ref.year
    return DateSpan(said, *_month_span(year, month), "month")


def resolve(text: str, reference: date | datetime) -> list[DateSpan]:
    """The relative date expressions of ``text``, in order, resolved against ``reference`` (the day
    the text was said). Repeated expressions are returned once."""
    ref = reference.date() if isinstance(reference, datetime) else reference
    out: list[DateSpan] = []
    seen: set[str] = set()
    for m in _PATTERN.finditer(text):
        said = " ".join(m[0].lower().split())
        if said in seen:
            continue
        after_the = text[max(0, m.start() - 4) : m.start()].lower() == "the "
        span = _meaning(m, ref, said, after_the)
        if span is not None:
            seen.add(said)
            out.append(span)
    return out


_DAY_MONTH_YEAR = re.compile(r"\b(\d{1,2})(?:st|nd|rd|th)?\s+([A-Za-z]+)\.?,?\s+(\d{4})\b")
_MONTH_DAY_YEAR = re.compile(r"\b([A-Za-z]+)\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})\b")
_ISO_DAY = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})(?!\d)")


def parse_day(value: str) -> date | None:
    """The calendar day a date string names (``2023-05-08``, ``8 May, 2023``, ``1:56 pm on 8 May,
    2023``, ``May 8, 2023``), or ``None``."""
    try:
        if m := _ISO_DAY.search(value):
            return date(int(m[1]), int(m[2]), int(m[3]))
        if (m := _DAY_MONTH_YEAR.search(value)) and m[2].lower() in _MONTH_NUMBER:
            return date(int(m[3]), _MONTH_NUMBER[m[2].lower()], int(m[1]))
        if (m := _MONTH_DAY_YEAR.search(value)) and m[1].lower() in _MONTH_NUMBER:
            return date(int(m[3]), _MONTH_NUMBER[m[1].lower()], int(m[2]))
    except ValueError:  # 31 February
        return None
    return None


def day_of(timestamp: float, timezone: str = "") -> date:
    """The calendar day of a Unix time in ``timezone`` (IANA name; empty: the machine's zone)."""
    if timezone:
        return datetime.fromtimestamp(timestamp, ZoneInfo(timezone)).date()
    return datetime.fromtimestamp(timestamp).date()


def annotate(
    content: str, metadata: dict[str, Any], said_at: float | None, timezone: str = ""
) -> dict[str, Any]:
    """``metadata`` with ``dates`` set to ``{expression: ISO day or interval}`` for the relative
    dates of ``content`` (unchanged when there are none).

    The reference day is the memory's ``date`` metadata when it names a day, else ``said_at`` (Unix
    time, read in ``timezone``); with neither, nothing is resolved. A memory with a ``date``
    already shows its day, so same-day words ("today") are skipped for it.
    """
    stated = metadata.get("date")
    ref = parse_day(stated) if isinstance(stated, str) else None
    if ref is None:
        if said_at is None:
            return metadata
        ref = day_of(said_at, timezone)
    spans = resolve(content, ref)
    if stated:
        spans = [s for s in spans if s.said not in SAME_DAY]
    if not spans:
        return metadata
    return {**metadata, "dates": {s.said: s.iso() for s in spans}}


def _label_of(iso: str) -> str:
    first, _, last = iso.partition("/")
    try:
        a = date.fromisoformat(first)
        b = date.fromisoformat(last) if last else a
    except ValueError:
        return iso
    if a == b:
        unit = "day"
    elif (b - a).days == 6 and a.weekday() == 0:
        unit = "week"
    elif (b - a).days == 1 and a.weekday() == 5:
        unit = "weekend"
    elif a.day == 1 and (a.year, a.month) == (b.year, b.month):
        unit = "month"
    elif (a.month, a.day, b.month, b.day) == (1, 1, 12, 31) and a.year == b.year:
        unit = "year"
    else:
        return f"{a.isoformat()} to {b.isoformat()}"
    return DateSpan("", a, b, unit).label()


def notes(metadata: dict[str, Any]) -> str:
    """The indexed form of ``metadata["dates"]``: ``(yesterday = 7 May 2023; last week = week of
    1 May 2023)``; empty when there are none."""
    dates = metadata.get("dates")
    if not isinstance(dates, dict) or not dates:
        return ""
    parts = [f"{k} = {_label_of(v)}" for k, v in dates.items() if isinstance(v, str)]
    return f"({'; '.join(parts)})" if parts else ""


def expand_query(query: str, reference: date | datetime) -> str:
    """``query`` followed by the absolute dates its relative expressions mean ("what did Ana do last
    week" → "… (last week = week of 1 May 2023)")."""
    spans = resolve(query, reference)
    if not spans:
        return query
    return f"{query} ({'; '.join(f'{s.said} = {s.label()}' for s in spans)})"
