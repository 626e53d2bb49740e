"""Maintenance-window arithmetic: when a deployment may run in a building.

Pure functions of their arguments: the district's zone is passed in, and so
is the instant (``at``); nothing here reads the clock.

A :class:`Window` recurs every week in the building's local time: it opens on
each of its days at ``start`` and closes at ``end``, on the same day when
``end`` is after ``start`` and on the next day when it is before (weeknights
Mon-Thu 18:00-06:00). A longer span says on which day after the opening day it
closes (``end_day``): a weekend from Friday 18:00 to Monday 06:00 is
``Window(frozenset({FRI}), time(18), time(6), end_day=3)``. Each window opens
at most once per local day, whatever the clocks do that day.

A :class:`Blackout` is a stretch of the district calendar when nothing may
run (breaks, state testing, summer): whole local days, local wall-clock
times, or exact instants.

Local times become instants by :func:`resolve_local`: the first instant at
which the district's clocks read that time or later. So a time skipped by
the spring change (02:30 in New York on 2026-03-08) means the change itself
(03:00 EDT), and a time the autumn change repeats (01:30 on 2026-11-01)
means its first occurrence. A night window over the autumn change therefore
lasts an hour longer in UTC, and one over the spring change an hour shorter.

Every interval returned is in aware UTC datetimes and half-open: ``[start, end)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from orchestrator.errors import InvalidInput

MON, TUE, WED, THU, FRI, SAT, SUN = range(7)
"""Days of the week as :meth:`datetime.date.weekday` numbers them (Monday is 0)."""

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

DEFAULT_HORIZON = timedelta(days=400)
"""How far ahead :func:`next_opening` looks: past a school year and its summer."""

_MAX_END_DAY = 7
_TICK = timedelta(microseconds=1)
# How many days are searched at a time by next_opening: a week and a bit, so a
# weekly window is usually found in the first step.
_STEP = timedelta(days=8)


@dataclass(frozen=True)
class Interval:
    """A half-open stretch of time ``[start, end)`` in aware UTC datetimes."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        _require_aware(self.start, "start")
        _require_aware(self.end, "end")
        if self.end <= self.start:
            raise InvalidInput(
                f"an interval must end after it starts ({self.start} .. {self.end})", field="end"
            )

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    def contains(self, at: datetime) -> bool:
        """True when ``at`` lies in ``[start, end)``."""
        return self.start <= at < self.end


@dataclass(frozen=True)
class Window:
    """A weekly maintenance window in local time.

    ``days`` are the weekdays it opens on (0 = Monday .. 6 = Sunday), ``start``
    and ``end`` naive local times. ``end_day`` is the day, counted from the
    opening day, on which it closes: by default 0 when ``end`` is after
    ``start`` and 1 when it is before. ``start == end`` needs an explicit
    ``end_day`` (``end_day=1`` is a whole day).

    Raises :class:`InvalidInput` for an empty or out-of-range day set, a time
    that carries a zone, a window of no length, or an ``end_day`` outside 0..7.
    """

    days: frozenset[int]
    start: time
    end: time
    end_day: int | None = None

    def __post_init__(self) -> None:
        if not self.days:
            raise InvalidInput("a maintenance window needs at least one day", field="days")
        wrong = sorted(d for d in self.days if not isinstance(d, int) or not 0 <= d <= 6)
        if wrong:
            raise InvalidInput(f"days are 0 (Monday) to 6 (Sunday), not {wrong}", field="days")
        for name, value in (("start", self.start), ("end", self.end)):
            if value.tzinfo is not None:
                raise InvalidInput(
                    f"{value} carries a zone; window times are local to the district",
                    field=name,
                )
        if self.end_day is None:
            if self.end == self.start:
                raise InvalidInput(
                    f"the window from {self.start:%H:%M} to {self.end:%H:%M} has no length "
                    "(for a whole day say end_day=1)",
                    field="end",
                )
        elif not 0 <= self.end_day <= _MAX_END_DAY:
            raise InvalidInput(
                f"end_day must be 0..{_MAX_END_DAY} days after the opening day, not {self.end_day}",
                field="end_day",
            )
        elif self.end_day == 0 and self.end <= self.start:
            raise InvalidInput(
                f"the window from {self.start:%H:%M} to {self.end:%H:%M} on the same day "
                "has no length",
                field="end",
            )

    @property
    def closes_after_days(self) -> int:
        """The day, counted from the opening day, on which an occurrence closes."""
        if self.end_day is not None:
            return self.end_day
        return 0 if self.end > self.start else 1

    def describe(self) -> str:
        """For people: ``Mon,Tue,Wed,Thu 18:00-06:00 (+1 day)``."""
        days = ",".join(DAY_NAMES[d] for d in sorted(self.days))
        after = self.closes_after_days
        plus = "" if after == 0 else f" (+{after} day{'s' if after > 1 else ''})"
        return f"{days} {self.start:%H:%M}-{self.end:%H:%M}{plus}"


@dataclass(frozen=True)
class Blackout:
    """A stretch of the district calendar when nothing may run.

    ``start`` and ``end`` are of one kind:

    - dates: whole local days, ``end`` exclusive as in iCalendar (a break
      from Monday to Friday ends on Saturday; see :meth:`for_days`);
    - naive datetimes: local wall-clock times in the district's zone;
    - aware datetimes: exact instants.

    Raises :class:`InvalidInput` when the two are of different kinds or the
    blackout ends before (or when) it starts.
    """

    start: date | datetime
    end: date | datetime
    name: str = ""

    def __post_init__(self) -> None:
        if _kind(self.start) != _kind(self.end):
            raise InvalidInput(
                f"blackout {self.name!r} starts with a {_kind(self.start)} "
                f"but ends with a {_kind(self.end)}",
                field="end",
            )
        # The kinds match, so the comparison is between like values.
        if self.end < self.start:
            raise InvalidInput(
                f"blackout {self.name!r} ends ({self.end}) before it starts ({self.start})",
                field="end",
            )
        if self.end == self.start:
            raise InvalidInput(
                f"blackout {self.name!r} ends when it starts ({self.start}): it blocks nothing",
                field="end",
            )

    @classmethod
    def for_days(cls, first: date, last: date, name: str = "") -> Blackout:
        """Whole local days from ``first`` to ``last``, both included."""
        return cls(first, last + timedelta(days=1), name)

    def interval(self, zone: tzinfo) -> Interval:
        """The blackout in UTC, local values read in ``zone``."""
        return Interval(_instant(self.start, zone), _instant(self.end, zone))


# ---------------------------------------------------------------------------
# Local time to instants
# ---------------------------------------------------------------------------


def resolve_local(wall: datetime, zone: tzinfo) -> datetime:
    """The first instant (aware UTC) at which clocks in ``zone`` read ``wall`` or later.

    ``wall`` is naive. A time the clocks skip resolves to the moment of the
    change; a time they repeat resolves to its first occurrence.

    Raises :class:`InvalidInput` if ``wall`` carries a zone.
    """
    if wall.tzinfo is not None:
        raise InvalidInput(f"{wall} must be a local (naive) time", field="wall")
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if _wall(first, zone) == wall:
        return first
    # Skipped by a change: fold=0 reads it with the offset before the change
    # (an instant after it), fold=1 with the offset after (an instant before
    # it). The change lies between; find the first instant whose wall clock
    # is at or past ``wall``.
    other = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    lo, hi = min(first, other), max(first, other)
    if _wall(lo, zone) >= wall:  # pragma: no cover - not a gap after all
        return lo
    while hi - lo > _TICK:
        mid = lo + (hi - lo) / 2
        if _wall(mid, zone) >= wall:
            hi = mid
        else:
            lo = mid
    return hi


def occurrences(window: Window, zone: tzinfo, start: datetime, end: datetime) -> list[Interval]:
    """Each opening of ``window`` that overlaps ``[start, end)``, whole and sorted.

    One per local day the window opens on; the intervals are not cut at
    ``start`` or ``end``.

    Raises :class:`InvalidInput` for naive ``start``/``end`` or ``end`` before ``start``.
    """
    _check_range(start, end)
    found: list[Interval] = []
    first_day = start.astimezone(zone).date() - timedelta(days=window.closes_after_days + 1)
    last_day = end.astimezone(zone).date() + timedelta(days=1)
    day = first_day
    while day <= last_day:
        if day.weekday() in window.days:
            occ = _occurrence(window, day, zone)
            if occ is not None and occ.end > start and occ.start < end:
                found.append(occ)
        day += timedelta(days=1)
    return found


# ---------------------------------------------------------------------------
# When running is allowed
# ---------------------------------------------------------------------------


def open_intervals(
    windows: Iterable[Window],
    blackouts: Iterable[Blackout],
    zone: tzinfo,
    start: datetime,
    end: datetime,
) -> list[Interval]:
    """The sorted, disjoint UTC intervals within ``[start, end)`` when running is allowed.

    The union of the windows' occurrences, less every blackout, cut to
    ``[start, end)``. Intervals that touch are merged into one.

    Raises :class:`InvalidInput` for naive ``start``/``end`` or ``end`` before ``start``.
    """
    _check_range(start, end)
    return _open_between(list(windows), _blackout_intervals(blackouts, zone), zone, start, end)


def next_opening(
    windows: Iterable[Window],
    blackouts: Iterable[Blackout],
    zone: tzinfo,
    at: datetime,
    *,
    horizon: timedelta = DEFAULT_HORIZON,
) -> Interval | None:
    """The opening in force at ``at`` (the rest of it) or else the next one.

    None when nothing opens before ``at + horizon``; an opening that runs past
    the horizon is cut there.

    Raises :class:`InvalidInput` for a naive ``at`` or a horizon that is not positive.
    """
    _require_aware(at, "at")
    if horizon <= timedelta(0):
        raise InvalidInput(f"the horizon must be positive, not {horizon}", field="horizon")
    window_list = list(windows)
    blocked = _blackout_intervals(blackouts, zone)
    limit = at + horizon
    found: Interval | None = None
    lo = at
    while lo < limit:
        hi = min(lo + _STEP, limit)
        for interval in _open_between(window_list, blocked, zone, lo, hi):
            if found is None:
                found = interval
            elif interval.start == found.end:
                found = Interval(found.start, interval.end)
            else:
                return found
        if found is not None and found.end < hi:
            return found
        lo = hi
    return found


def start_refusal(
    windows: Iterable[Window],
    blackouts: Iterable[Blackout],
    zone: tzinfo,
    at: datetime,
    *,
    deadline: datetime | None = None,
    not_before: datetime | None = None,
    min_remaining: timedelta = timedelta(0),
) -> str | None:
    """Why a run may not start at ``at``, or None when it may.

    A run starts only inside an opening (never late into school hours after
    an outage: it waits for the next window), not before ``not_before``,
    strictly before ``deadline``, and only when at least ``min_remaining`` of
    the opening is left.

    Raises :class:`InvalidInput` for naive datetimes or a negative ``min_remaining``.
    """
    _require_aware(at, "at")
    if min_remaining < timedelta(0):
        raise InvalidInput(
            f"min_remaining cannot be negative ({min_remaining})", field="min_remaining"
        )
    if not_before is not None:
        _require_aware(not_before, "not_before")
        if at < not_before:
            return f"not before {not_before.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    if deadline is not None:
        _require_aware(deadline, "deadline")
        if at >= deadline:
            return f"the deadline {deadline.astimezone(UTC):%Y-%m-%d %H:%M} UTC has passed"
    span = max(min_remaining, _TICK)
    found = open_intervals(windows, blackouts, zone, at, at + span)
    if not found or found[0].start != at:
        return "outside every maintenance window (or in a blackout)"
    if found[0].end < at + span:
        left = found[0].end - at
        return f"only {left} left in the window, {min_remaining} needed"
    return None


def may_start(
    windows: Iterable[Window],
    blackouts: Iterable[Blackout],
    zone: tzinfo,
    at: datetime,
    *,
    deadline: datetime | None = None,
    not_before: datetime | None = None,
    min_remaining: timedelta = timedelta(0),
) -> bool:
    """True when a run may start at ``at``; see :func:`start_refusal` for the rules.

    Raises :class:`InvalidInput` as :func:`start_refusal` does.
    """
    return (
        start_refusal(
            windows,
            blackouts,
            zone,
            at,
            deadline=deadline,
            not_before=not_before,
            min_remaining=min_remaining,
        )
        is None
    )


# ---------------------------------------------------------------------------
# Internals
# ---------------------------------------------------------------------------


def _kind(value: date | datetime) -> str:
    if not isinstance(value, datetime):
        return "date"
    return "local time" if value.tzinfo is None else "zoned time"


def _require_aware(value: datetime, field: str) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{value!r} must be a timezone-aware datetime", field=field)


def _check_range(start: datetime, end: datetime) -> None:
    _require_aware(start, "start")
    _require_aware(end, "end")
    if end < start:
        raise InvalidInput(f"the range ends ({end}) before it starts ({start})", field="end")


def _wall(instant: datetime, zone: tzinfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None, fold=0)


def _instant(value: date | datetime, zone: tzinfo) -> datetime:
    if not isinstance(value, datetime):
        return resolve_local(datetime.combine(value, time(0)), zone)
    if value.tzinfo is None:
        return resolve_local(value, zone)
    return value.astimezone(UTC)


def _occurrence(window: Window, day: date, zone: tzinfo) -> Interval | None:
    opens = resolve_local(datetime.combine(day, window.start), zone)
    closes_on = day + timedelta(days=window.closes_after_days)
    closes = resolve_local(datetime.combine(closes_on, window.end), zone)
    # A short window wholly inside a skipped hour (02:10-02:40 on the spring
    # change) does not happen that day.
    return Interval(opens, closes) if closes > opens else None


def _blackout_intervals(blackouts: Iterable[Blackout], zone: tzinfo) -> list[Interval]:
    return _merge(b.interval(zone) for b in blackouts)


def _open_between(
    windows: Sequence[Window],
    blocked: Sequence[Interval],
    zone: tzinfo,
    start: datetime,
    end: datetime,
) -> list[Interval]:
    if end <= start:
        return []
    occurring = _merge(occ for w in windows for occ in occurrences(w, zone, start, end))
    result: list[Interval] = []
    for interval in _subtract(occurring, blocked):
        lo, hi = max(interval.start, start), min(interval.end, end)
        if lo < hi:
            result.append(Interval(lo.astimezone(UTC), hi.astimezone(UTC)))
    return result


def _merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, disjoint, with touching intervals joined."""
    merged: list[Interval] = []
    for interval in sorted(intervals, key=lambda i: (i.start, i.end)):
        if merged and interval.start <= merged[-1].end:
            if interval.end > merged[-1].end:
                merged[-1] = Interval(merged[-1].start, interval.end)
        else:
            merged.append(interval)
    return merged


def _subtract(intervals: Sequence[Interval], blocked: Sequence[Interval]) -> list[Interval]:
    """``intervals`` less ``blocked``; both sorted and disjoint."""
    result: list[Interval] = []
    j = 0
    for interval in intervals:
        lo = interval.start
        while j < len(blocked) and blocked[j].end <= lo:
            j += 1
        k = j
        while k < len(blocked) and blocked[k].start < interval.end:
            if blocked[k].start > lo:
                result.append(Interval(lo, blocked[k].start))
            lo = max(lo, blocked[k].end)
            k += 1
        if lo < interval.end:
            result.append(Interval(lo, interval.end))
    return result
