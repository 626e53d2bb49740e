"""The district calendar as blackouts: breaks, state testing weeks, summer.

:func:`parse_ics` reads an iCalendar file (RFC 5545) exported from the
district's calendar and returns its events as
:class:`~orchestrator.domain.windows.Blackout` values, nothing stored (the
blackouts of each building are kept elsewhere).

The file is read with the ``icalendar`` package (PyPI). Before handing it over,
the text is scanned line by line here, so that an error can name the line:
``icalendar`` reports what is wrong but not where.

How values are read:

- all-day events (``VALUE=DATE``) are whole local days, ``DTEND`` exclusive as
  RFC 5545 says (an event without ``DTEND`` lasts its one day);
- ``DATE-TIME`` values with ``TZID`` are in that zone, with ``Z`` in UTC, and
  floating ones (neither) in the district's zone;
- ``SUMMARY`` is the blackout's name;
- ``RRULE`` is expanded when it is ``FREQ=DAILY`` or ``FREQ=WEEKLY`` with
  ``COUNT`` or ``UNTIL`` (and optionally ``INTERVAL``); any other rule, and
  ``RDATE``, ``EXDATE`` or ``RECURRENCE-ID``, is refused rather than half
  understood;
- cancelled events (``STATUS:CANCELLED``) are left out.

Refused with :class:`~orchestrator.errors.InvalidInput`, naming the source,
the event (its SUMMARY and UID) and the line: text that is not iCalendar, an
event without ``DTSTART``, one that ends before it starts, events that
overlap (both are named), and a calendar without events.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from icalendar import Calendar

from orchestrator.domain.windows import Blackout, resolve_local
from orchestrator.errors import InvalidInput

MAX_OCCURRENCES = 1000
"""The most occurrences one repeating event may expand to."""

# NAME, then parameters (quoted values may hold ':' or ';'), then ':'.
_CONTENT_LINE = re.compile(r'^[A-Za-z0-9-]+(?:;(?:[^":]|"[^"]*")*)?:')
_RULE_PARTS = frozenset({"FREQ", "COUNT", "UNTIL", "INTERVAL", "WKST"})
_STEP = {"DAILY": timedelta(days=1), "WEEKLY": timedelta(days=7)}


@dataclass
class _EventLines:
    """Where an event and its properties sit in the file (physical line numbers)."""

    begin: int
    props: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Found:
    blackout: Blackout
    label: str
    line: int
    starts: datetime
    ends: datetime


def parse_ics(text: str, *, zone: tzinfo, source: str) -> list[Blackout]:
    """The blackouts in an iCalendar text, sorted by start.

    ``zone`` is the district's zone (for all-day and floating times);
    ``source`` names the file in messages.

    Raises :class:`InvalidInput` for text that is not iCalendar, a malformed
    or unsupported event, an event that ends before it starts, overlapping
    events, or a calendar without events.
    """
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise InvalidInput(f"{source}: the calendar is empty")
    events_at = _scan(text, source)
    try:
        parsed = Calendar.from_ical(text)
    except ValueError as exc:
        raise InvalidInput(f"{source}: not a readable iCalendar file ({exc})") from exc
    if not isinstance(parsed, Calendar) or parsed.name != "VCALENDAR":
        raise InvalidInput(f"{source}, line 1: not an iCalendar calendar (no VCALENDAR)")

    vevents = parsed.walk("VEVENT")
    if len(vevents) != len(events_at):  # pragma: no cover - the scan and icalendar disagree
        events_at = [_EventLines(begin=0) for _ in vevents]
    found: list[_Found] = []
    for event, lines in zip(vevents, events_at, strict=True):
        found.extend(_read_event(event, lines, zone, source))
    if not found:
        raise InvalidInput(f"{source}: the calendar has no events (no VEVENT to read)")

    found.sort(key=lambda f: (f.starts, f.ends))
    latest = found[0]
    for item in found[1:]:
        if item.starts < latest.ends:
            raise InvalidInput(
                f"{source}: {item.label} on line {item.line} overlaps "
                f"{latest.label} on line {latest.line}; merge them or make one end "
                "when the other starts"
            )
        if item.ends > latest.ends:
            latest = item
    return [f.blackout for f in found]


def _scan(text: str, source: str) -> list[_EventLines]:
    """Check every content line and note where each VEVENT and its properties are."""
    events: list[_EventLines] = []
    current: _EventLines | None = None
    depth_in_event = 0
    first = True
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw[0] in " \t":
            continue  # blank, or the folded continuation of the line before
        if first:
            first = False
            if raw.strip().upper() != "BEGIN:VCALENDAR":
                raise InvalidInput(
                    f"{source}, line {number}: not an iCalendar file: it should begin "
                    f"with BEGIN:VCALENDAR, not {raw[:60]!r}"
                )
        if not _CONTENT_LINE.match(raw):
            raise InvalidInput(
                f"{source}, line {number}: {raw[:60]!r} is not an iCalendar line (NAME:value)"
            )
        name, _, value = raw.partition(":")
        name = name.split(";", 1)[0].upper()
        value = value.strip().upper()
        if name == "BEGIN" and value == "VEVENT" and current is None:
            current = _EventLines(begin=number)
            events.append(current)
            depth_in_event = 0
        elif current is not None and name == "BEGIN":
            depth_in_event += 1
        elif current is not None and name == "END":
            if depth_in_event == 0 and value == "VEVENT":
                current = None
            else:
                depth_in_event -= 1
        elif current is not None and depth_in_event == 0:
            current.props.setdefault(name, number)
    return events


def _read_event(event: Any, lines: _EventLines, zone: tzinfo, source: str) -> list[_Found]:
    summary = str(event.get("SUMMARY", "")).strip()
    uid = str(event.get("UID", "")).strip()
    label = f"event {summary or '(no SUMMARY)'!r}" + (f" (UID {uid})" if uid else "")

    def refuse(prop: str | None, message: str) -> InvalidInput:
        line = lines.props.get(prop, lines.begin) if prop else lines.begin
        where = f"{source}, line {line}" if line else source
        exc = InvalidInput(f"{where}: {label}: {message}")
        exc.field = prop
        return exc

    for prop, problem in getattr(event, "errors", []):
        raise refuse(str(prop).upper(), f"{prop} cannot be read ({problem})")
    if str(event.get("STATUS", "")).upper() == "CANCELLED":
        return []
    for prop in ("RDATE", "EXDATE", "RECURRENCE-ID"):
        if prop in event:
            raise refuse(prop, f"{prop} is not supported: list each date as its own event")

    if "DTSTART" not in event:
        raise refuse(None, "has no DTSTART: a blackout needs a start")
    start = _value(event, "DTSTART", refuse)
    if "DTEND" in event and "DURATION" in event:
        raise refuse("DURATION", "has both DTEND and DURATION; RFC 5545 allows one")
    if "DTEND" in event:
        end = _value(event, "DTEND", refuse)
        if _is_date(start) != _is_date(end):
            raise refuse(
                "DTEND",
                f"DTSTART {start} and DTEND {end} must both be dates or both date-times",
            )
        if _is_date(start) and _is_date(end):
            if end < start:
                raise refuse("DTEND", f"DTEND {end} is before DTSTART {start}")
        elif _instant(end, zone) < _instant(start, zone):
            raise refuse("DTEND", f"DTEND {end} is before DTSTART {start}")
    elif "DURATION" in event:
        length = event.decoded("DURATION")
        if not isinstance(length, timedelta) or length < timedelta(0):
            raise refuse("DURATION", f"DURATION {event['DURATION'].to_ical()!r} is negative")
        end = start + length
    elif _is_date(start):
        end = start + timedelta(days=1)
    else:
        raise refuse("DTSTART", "has a DTSTART time but no DTEND or DURATION: it blocks nothing")

    if (
        isinstance(start, datetime)
        and isinstance(end, datetime)
        and (start.tzinfo is None) != (end.tzinfo is None)
    ):
        # One floating, one zoned: read the floating one in the district's zone.
        start, end = _instant(start, zone), _instant(end, zone)
    if _instant(end, zone) <= _instant(start, zone):
        raise refuse("DTEND", f"ends when it starts ({start}): it blocks nothing")

    found: list[_Found] = []
    for n, (first, last) in enumerate(_repeats(event, start, end, zone, refuse)):
        occurrence = label if n == 0 else f"{label} on {first}"
        blackout = Blackout(first, last, summary)
        interval = blackout.interval(zone)
        found.append(_Found(blackout, occurrence, lines.begin, interval.start, interval.end))
    return found


def _value(event: Any, prop: str, refuse: Any) -> date | datetime:
    value = event.decoded(prop)
    if not isinstance(value, date):
        raise refuse(prop, f"{prop} {value!r} is not a date or date-time")
    tzid = event[prop].params.get("TZID")
    if isinstance(value, datetime) and tzid and value.tzinfo is None:
        raise refuse(prop, f"{prop} names the time zone {tzid!r}, which is not known")
    return value


def _repeats(
    event: Any, start: date | datetime, end: date | datetime, zone: tzinfo, refuse: Any
) -> list[tuple[Any, Any]]:
    """The (start, end) of each occurrence: one unless the event has a simple RRULE."""
    if "RRULE" not in event:
        return [(start, end)]
    rule = event["RRULE"]
    written = rule.to_ical().decode()
    unsupported = sorted(set(rule) - _RULE_PARTS)
    freq = (rule.get("FREQ") or [""])[0]
    if unsupported or freq not in _STEP:
        raise refuse(
            "RRULE",
            f"RRULE {written} is not supported (only FREQ=DAILY or FREQ=WEEKLY with COUNT "
            "or UNTIL and an optional INTERVAL): list the dates as separate events",
        )
    count = (rule.get("COUNT") or [None])[0]
    until = (rule.get("UNTIL") or [None])[0]
    if count is None and until is None:
        raise refuse("RRULE", f"RRULE {written} repeats forever: give COUNT or UNTIL")
    interval = int((rule.get("INTERVAL") or [1])[0])
    if interval < 1 or (count is not None and int(count) < 1):
        raise refuse("RRULE", f"RRULE {written}: COUNT and INTERVAL must be at least 1")
    step = _STEP[freq] * interval
    last_start = None if until is None else _instant(until, zone)
    length = end - start  # type: ignore[operator]
    found: list[tuple[Any, Any]] = []
    first = start
    while count is None or len(found) < int(count):
        if last_start is not None and _instant(first, zone) > last_start:
            break
        if len(found) == MAX_OCCURRENCES:
            raise refuse("RRULE", f"RRULE {written} repeats more than {MAX_OCCURRENCES} times")
        found.append((first, first + length))
        first = first + step
    if not found:
        raise refuse("RRULE", f"RRULE {written} ends (UNTIL) before DTSTART {start}")
    return found


def _is_date(value: date | datetime) -> bool:
    return not isinstance(value, datetime)


def _instant(value: date | datetime, zone: tzinfo) -> datetime:
    if not isinstance(value, datetime):
        return resolve_local(datetime.combine(value, time(0)), zone)
    if value.tzinfo is None:
        return resolve_local(value, zone)
    return value.astimezone(UTC)
