"""Maintenance-window arithmetic (orchestrator.domain.windows): pure, clock as a parameter."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from orchestrator.domain.windows import (
    FRI,
    MON,
    SAT,
    SUN,
    THU,
    TUE,
    WED,
    Blackout,
    Interval,
    Window,
    may_start,
    next_opening,
    occurrences,
    open_intervals,
    resolve_local,
    start_refusal,
)
from orchestrator.errors import InvalidInput

NEW_YORK = ZoneInfo("America/New_York")
WEEKNIGHTS = Window(frozenset({MON, TUE, WED, THU}), time(18), time(6))
EVERY_NIGHT = Window(frozenset(range(7)), time(18), time(6))


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """An instant given by New York wall-clock time (first occurrence if repeated)."""
    return resolve_local(datetime(year, month, day, hour, minute), NEW_YORK)


# ---------------------------------------------------------------------------
# Windows and blackouts in ordinary weeks
# ---------------------------------------------------------------------------


def test_weeknight_window_opens_at_18_local_and_closes_at_06_next_day_in_utc() -> None:
    # Week of Monday 12 January 2026 (EST, UTC-5).
    found = open_intervals([WEEKNIGHTS], [], NEW_YORK, utc(2026, 1, 12), utc(2026, 1, 19))
    assert found == [
        Interval(utc(2026, 1, 12, 23), utc(2026, 1, 13, 11)),
        Interval(utc(2026, 1, 13, 23), utc(2026, 1, 14, 11)),
        Interval(utc(2026, 1, 14, 23), utc(2026, 1, 15, 11)),
        Interval(utc(2026, 1, 15, 23), utc(2026, 1, 16, 11)),
    ]


def test_the_same_window_in_summer_time_is_an_hour_earlier_in_utc() -> None:
    found = open_intervals([WEEKNIGHTS], [], NEW_YORK, utc(2026, 6, 1), utc(2026, 6, 2, 12))
    assert found == [Interval(utc(2026, 6, 1, 22), utc(2026, 6, 2, 10))]


def test_a_weekend_window_can_run_from_friday_evening_to_monday_morning() -> None:
    weekend = Window(frozenset({FRI}), time(18), time(6), end_day=3)
    found = open_intervals([weekend], [], NEW_YORK, local(2026, 1, 12, 12), local(2026, 1, 26, 12))
    assert found == [
        Interval(local(2026, 1, 16, 18), local(2026, 1, 19, 6)),
        Interval(local(2026, 1, 23, 18), local(2026, 1, 26, 6)),
    ]
    assert found[0].duration == timedelta(hours=60)


def test_windows_that_touch_are_one_opening() -> None:
    evenings = Window(frozenset({SAT}), time(8), time(18))
    nights = Window(frozenset({SAT}), time(18), time(23))
    found = open_intervals([evenings, nights], [], NEW_YORK, local(2026, 1, 17), local(2026, 1, 18))
    assert found == [Interval(local(2026, 1, 17, 8), local(2026, 1, 17, 23))]


def test_a_blackout_week_removes_those_nights() -> None:
    spring_break = Blackout.for_days(date(2026, 4, 6), date(2026, 4, 10), "Spring break")
    found = open_intervals(
        [WEEKNIGHTS], [spring_break], NEW_YORK, local(2026, 3, 30), local(2026, 4, 20)
    )
    opening_days = [i.start.astimezone(NEW_YORK).date() for i in found]
    assert opening_days == [
        date(2026, 3, 30),
        date(2026, 3, 31),
        date(2026, 4, 1),
        date(2026, 4, 2),
        # Mon 6 - Thu 9 April are gone, and the night into Monday 6 April is
        # cut at local midnight: Sunday is not a weeknight anyway.
        date(2026, 4, 13),
        date(2026, 4, 14),
        date(2026, 4, 15),
        date(2026, 4, 16),
    ]


def test_a_blackout_starting_at_midnight_cuts_the_night_before_it() -> None:
    testing = Blackout(datetime(2026, 4, 21, 0, 0), datetime(2026, 4, 24, 17, 0), "State testing")
    found = open_intervals(
        [WEEKNIGHTS], [testing], NEW_YORK, local(2026, 4, 20), local(2026, 4, 25)
    )
    assert found == [Interval(local(2026, 4, 20, 18), local(2026, 4, 21, 0))]


def test_a_blackout_given_as_instants_is_taken_as_it_is() -> None:
    outage = Blackout(utc(2026, 1, 13, 1), utc(2026, 1, 13, 3), "Network work")
    found = open_intervals([WEEKNIGHTS], [outage], NEW_YORK, utc(2026, 1, 12), utc(2026, 1, 13, 12))
    assert found == [
        Interval(utc(2026, 1, 12, 23), utc(2026, 1, 13, 1)),
        Interval(utc(2026, 1, 13, 3), utc(2026, 1, 13, 11)),
    ]


# ---------------------------------------------------------------------------
# next_opening and may_start
# ---------------------------------------------------------------------------


def test_next_opening_from_inside_a_window_gives_the_rest_of_it() -> None:
    at = local(2026, 1, 13, 1, 15)  # Tuesday 01:15, inside Monday night's window
    assert next_opening([WEEKNIGHTS], [], NEW_YORK, at) == Interval(at, local(2026, 1, 13, 6))


def test_next_opening_from_school_hours_is_this_evening() -> None:
    at = local(2026, 1, 13, 10)
    assert next_opening([WEEKNIGHTS], [], NEW_YORK, at) == Interval(
        local(2026, 1, 13, 18), local(2026, 1, 14, 6)
    )


def test_next_opening_skips_the_weekend_and_a_blackout() -> None:
    mlk_day = Blackout.for_days(date(2026, 1, 19), date(2026, 1, 19), "MLK day")
    at = local(2026, 1, 16, 9)  # Friday: no weeknight window until Monday, a holiday
    assert next_opening([WEEKNIGHTS], [mlk_day], NEW_YORK, at) == Interval(
        local(2026, 1, 20, 0), local(2026, 1, 20, 6)
    )


def test_next_opening_is_none_when_nothing_opens_within_the_horizon() -> None:
    year = Blackout.for_days(date(2026, 1, 1), date(2026, 12, 31), "Closed")
    at = local(2026, 1, 1)
    assert next_opening([WEEKNIGHTS], [year], NEW_YORK, at, horizon=timedelta(days=300)) is None
    assert next_opening([WEEKNIGHTS], [year], NEW_YORK, at) == Interval(
        local(2027, 1, 1), local(2027, 1, 1, 6)
    )


def test_after_an_outage_that_ran_into_school_hours_no_start_until_the_evening() -> None:
    # The orchestrator was down from Monday 22:00 to Tuesday 07:30: the night's
    # window closed at 06:00, so the run waits for Tuesday evening.
    back = local(2026, 1, 13, 7, 30)
    assert not may_start([WEEKNIGHTS], [], NEW_YORK, back)
    assert start_refusal([WEEKNIGHTS], [], NEW_YORK, back) == (
        "outside every maintenance window (or in a blackout)"
    )
    evening = next_opening([WEEKNIGHTS], [], NEW_YORK, back)
    assert evening is not None and evening.start == local(2026, 1, 13, 18)
    assert may_start([WEEKNIGHTS], [], NEW_YORK, evening.start)
    assert not may_start([WEEKNIGHTS], [], NEW_YORK, local(2026, 1, 13, 6))
    assert may_start([WEEKNIGHTS], [], NEW_YORK, local(2026, 1, 13, 5, 59))


def test_no_start_before_not_before_nor_at_or_after_the_deadline() -> None:
    at = local(2026, 1, 13, 20)
    windows = [WEEKNIGHTS]
    assert may_start(windows, [], NEW_YORK, at, not_before=at)
    assert not may_start(windows, [], NEW_YORK, at, not_before=at + timedelta(seconds=1))
    assert may_start(windows, [], NEW_YORK, at, deadline=at + timedelta(seconds=1))
    assert not may_start(windows, [], NEW_YORK, at, deadline=at)
    refusal = start_refusal(windows, [], NEW_YORK, at, deadline=local(2026, 1, 13, 19))
    assert refusal == "the deadline 2026-01-14 00:00 UTC has passed"


def test_no_start_when_less_than_min_remaining_is_left_in_the_window() -> None:
    windows = [WEEKNIGHTS]
    two_hours = timedelta(hours=2)
    assert may_start(windows, [], NEW_YORK, local(2026, 1, 13, 4), min_remaining=two_hours)
    assert not may_start(windows, [], NEW_YORK, local(2026, 1, 13, 4, 1), min_remaining=two_hours)
    refusal = start_refusal(windows, [], NEW_YORK, local(2026, 1, 13, 5), min_remaining=two_hours)
    assert refusal == "only 1:00:00 left in the window, 2:00:00 needed"


def test_min_remaining_counts_a_blackout_as_the_end_of_the_window() -> None:
    cut = Blackout(datetime(2026, 1, 12, 20), datetime(2026, 1, 12, 23), "Board meeting")
    at = local(2026, 1, 12, 18, 30)
    assert not may_start([WEEKNIGHTS], [cut], NEW_YORK, at, min_remaining=timedelta(hours=2))
    assert may_start([WEEKNIGHTS], [cut], NEW_YORK, at, min_remaining=timedelta(hours=1))


# ---------------------------------------------------------------------------
# Daylight saving in America/New_York, 2026
# ---------------------------------------------------------------------------


def test_a_start_time_skipped_by_spring_forward_opens_at_the_change() -> None:
    # 8 March 2026: at 02:00 EST the clocks go to 03:00 EDT (07:00 UTC).
    early = Window(frozenset({SUN}), time(2, 30), time(5))
    [occ] = occurrences(early, NEW_YORK, utc(2026, 3, 8), utc(2026, 3, 9))
    assert occ.start == utc(2026, 3, 8, 7)
    assert occ.start.astimezone(NEW_YORK).replace(tzinfo=None) == datetime(2026, 3, 8, 3, 0)
    assert occ.end == utc(2026, 3, 8, 9)  # 05:00 EDT


def test_a_window_wholly_inside_the_skipped_hour_does_not_open_that_day() -> None:
    lost = Window(frozenset({SUN}), time(2, 10), time(2, 40))
    assert occurrences(lost, NEW_YORK, utc(2026, 3, 8), utc(2026, 3, 9)) == []
    assert len(occurrences(lost, NEW_YORK, utc(2026, 3, 15), utc(2026, 3, 16))) == 1


def test_a_start_time_repeated_by_fall_back_opens_once_at_its_first_occurrence() -> None:
    # 1 November 2026: at 02:00 EDT the clocks go back to 01:00 EST; 01:30
    # happens at 05:30 UTC and again at 06:30 UTC. APScheduler 3.x fires a
    # 01:30 cron at both; the window opens once, at the first.
    late = Window(frozenset({SUN}), time(1, 30), time(4))
    found = occurrences(late, NEW_YORK, utc(2026, 10, 31), utc(2026, 11, 3))
    assert found == [Interval(utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 9))]
    assert found[0].duration == timedelta(hours=3, minutes=30)


def test_a_night_window_over_fall_back_lasts_13_hours() -> None:
    [night] = occurrences(EVERY_NIGHT, NEW_YORK, local(2026, 10, 31, 20), local(2026, 10, 31, 21))
    assert night == Interval(utc(2026, 10, 31, 22), utc(2026, 11, 1, 11))
    assert night.duration == timedelta(hours=13)


def test_a_night_window_over_spring_forward_lasts_11_hours() -> None:
    [night] = occurrences(EVERY_NIGHT, NEW_YORK, local(2026, 3, 7, 20), local(2026, 3, 7, 21))
    assert night == Interval(utc(2026, 3, 7, 23), utc(2026, 3, 8, 10))
    assert night.duration == timedelta(hours=11)


def test_each_window_opens_once_per_local_day_across_both_changes() -> None:
    hourly_risk = Window(frozenset(range(7)), time(1, 30), time(2, 30))
    for first, last in (
        (date(2026, 3, 5), date(2026, 3, 11)),
        (date(2026, 10, 29), date(2026, 11, 4)),
    ):
        found = occurrences(
            hourly_risk,
            NEW_YORK,
            local(first.year, first.month, first.day),
            local(last.year, last.month, last.day),
        )
        days = [o.start.astimezone(NEW_YORK).date() for o in found]
        assert len(days) == len(set(days)) == (last - first).days


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


def test_a_window_needs_at_least_one_day() -> None:
    with pytest.raises(InvalidInput, match="at least one day") as err:
        Window(frozenset(), time(18), time(6))
    assert err.value.field == "days"


def test_a_window_day_is_a_weekday_number() -> None:
    with pytest.raises(InvalidInput, match=r"0 \(Monday\) to 6 \(Sunday\), not \[7\]") as err:
        Window(frozenset({1, 7}), time(18), time(6))
    assert err.value.field == "days"


def test_a_zero_length_window_is_refused() -> None:
    with pytest.raises(InvalidInput, match="from 18:00 to 18:00 has no length") as err:
        Window(frozenset({MON}), time(18), time(18))
    assert err.value.field == "end"
    with pytest.raises(InvalidInput, match="same day has no length"):
        Window(frozenset({MON}), time(18), time(6), end_day=0)
    assert Window(frozenset({MON}), time(18), time(18), end_day=1).closes_after_days == 1


def test_window_times_are_local_not_zoned() -> None:
    with pytest.raises(InvalidInput, match="carries a zone") as err:
        Window(frozenset({MON}), time(18, tzinfo=UTC), time(6))
    assert err.value.field == "start"


def test_a_blackout_ending_before_it_starts_is_refused() -> None:
    with pytest.raises(InvalidInput, match="'Winter break' ends .* before it starts") as err:
        Blackout(date(2027, 1, 2), date(2026, 12, 21), "Winter break")
    assert err.value.field == "end"
    with pytest.raises(InvalidInput, match="blocks nothing"):
        Blackout(date(2026, 12, 21), date(2026, 12, 21), "Winter break")
    with pytest.raises(InvalidInput, match="starts with a date but ends with a local time"):
        Blackout(date(2026, 12, 21), datetime(2026, 12, 22), "Winter break")


def test_naive_instants_are_refused() -> None:
    with pytest.raises(InvalidInput, match="timezone-aware") as err:
        may_start([WEEKNIGHTS], [], NEW_YORK, datetime(2026, 1, 13, 20))
    assert err.value.field == "at"
    with pytest.raises(InvalidInput, match="ends .* before it starts"):
        open_intervals([WEEKNIGHTS], [], NEW_YORK, utc(2026, 1, 2), utc(2026, 1, 1))


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

ZONES = st.sampled_from(
    [
        NEW_YORK,
        ZoneInfo("Europe/London"),
        ZoneInfo("America/Los_Angeles"),
        ZoneInfo("Australia/Lord_Howe"),  # a half-hour daylight-saving change
        ZoneInfo("UTC"),
    ]
)
# Days around both changes of 2026 in the northern and southern hemispheres,
# and ordinary days.
AROUND = st.sampled_from(
    [
        datetime(2026, 1, 10, tzinfo=UTC),
        datetime(2026, 3, 5, tzinfo=UTC),
        datetime(2026, 3, 26, tzinfo=UTC),
        datetime(2026, 4, 2, tzinfo=UTC),
        datetime(2026, 10, 1, tzinfo=UTC),
        datetime(2026, 10, 22, tzinfo=UTC),
        datetime(2026, 10, 29, tzinfo=UTC),
    ]
)
OFFSETS = st.integers(0, 10 * 24 * 60).map(lambda m: timedelta(minutes=m))
LENGTHS = st.integers(1, 12 * 24 * 60).map(lambda m: timedelta(minutes=m))
WALL_TIMES = st.builds(time, st.integers(0, 23), st.sampled_from([0, 10, 15, 30, 45]))


@st.composite
def windows(draw: st.DrawFn) -> Window:
    days = draw(st.frozensets(st.integers(0, 6), min_size=1))
    start, end = draw(WALL_TIMES), draw(WALL_TIMES)
    end_day = draw(st.none() | st.integers(0, 3))
    try:
        return Window(days, start, end, end_day)
    except InvalidInput:
        assume(False)
        raise


@st.composite
def blackouts(draw: st.DrawFn, base: datetime) -> Blackout:
    kind = draw(st.sampled_from(["dates", "local", "utc"]))
    offset = draw(st.integers(-2 * 24 * 60, 12 * 24 * 60).map(lambda m: timedelta(minutes=m)))
    length = draw(st.integers(1, 4 * 24 * 60).map(lambda m: timedelta(minutes=m)))
    start = base.replace(tzinfo=None) + offset
    if kind == "dates":
        first = start.date()
        return Blackout(first, first + timedelta(days=1 + length.days), "days")
    if kind == "local":
        return Blackout(start, start + length, "local")
    return Blackout(start.replace(tzinfo=UTC), start.replace(tzinfo=UTC) + length, "utc")


@st.composite
def scenarios(
    draw: st.DrawFn,
) -> tuple[list[Window], list[Blackout], ZoneInfo, datetime, datetime]:
    base = draw(AROUND)
    start = base + draw(OFFSETS)
    end = start + draw(LENGTHS)
    return (
        draw(st.lists(windows(), min_size=1, max_size=3)),
        draw(st.lists(blackouts(base), max_size=3)),
        draw(ZONES),
        start,
        end,
    )


def _occurs(windows_: list[Window], zone: ZoneInfo, t: datetime) -> bool:
    return any(
        occ.contains(t)
        for w in windows_
        for occ in occurrences(w, zone, t, t + timedelta(microseconds=1))
    )


def _blocked(blackouts_: list[Blackout], zone: ZoneInfo, t: datetime) -> bool:
    return any(b.interval(zone).contains(t) for b in blackouts_)


@settings(max_examples=150, deadline=None)
@given(scenarios(), st.lists(st.floats(0, 1), min_size=1, max_size=8))
def test_open_intervals_are_sorted_disjoint_inside_windows_and_outside_blackouts(
    scenario: tuple[list[Window], list[Blackout], ZoneInfo, datetime, datetime],
    fractions: list[float],
) -> None:
    ws, bs, zone, start, end = scenario
    found = open_intervals(ws, bs, zone, start, end)
    for a, b in itertools.pairwise(found):
        assert a.end < b.start, "sorted, disjoint and not touching"
    for interval in found:
        assert start <= interval.start < interval.end <= end
        assert interval.start.utcoffset() == timedelta(0)
        for t in (interval.start, interval.end - timedelta(microseconds=1)):
            assert _occurs(ws, zone, t)
            assert not _blocked(bs, zone, t)
    # Both ways, at sampled instants: open exactly when in a window and not blacked out.
    for f in fractions:
        t = start + (end - start) * f
        if t >= end:
            continue
        in_found = any(i.contains(t) for i in found)
        assert in_found == (_occurs(ws, zone, t) and not _blocked(bs, zone, t))


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_every_blackout_boundary_is_respected(
    scenario: tuple[list[Window], list[Blackout], ZoneInfo, datetime, datetime],
) -> None:
    ws, bs, zone, start, end = scenario
    found = open_intervals(ws, bs, zone, start, end)
    for b in bs:
        blocked = b.interval(zone)
        for interval in found:
            assert interval.end <= blocked.start or interval.start >= blocked.end


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_next_opening_starts_at_or_after_at_and_is_the_first_open_interval(
    scenario: tuple[list[Window], list[Blackout], ZoneInfo, datetime, datetime],
) -> None:
    ws, bs, zone, at, _ = scenario
    horizon = timedelta(days=20)
    nxt = next_opening(ws, bs, zone, at, horizon=horizon)
    found = open_intervals(ws, bs, zone, at, at + horizon)
    if not found:
        assert nxt is None
        return
    assert nxt == found[0]
    assert nxt.start >= at


@settings(max_examples=150, deadline=None)
@given(windows(), ZONES, AROUND, st.integers(1, 40))
def test_a_window_opens_at_most_once_per_local_day(
    window: Window, zone: ZoneInfo, start: datetime, days: int
) -> None:
    found = occurrences(window, zone, start, start + timedelta(days=days))
    opening_days = [o.start.astimezone(zone).date() for o in found]
    assert len(opening_days) == len(set(opening_days))
    assert all(d.weekday() in window.days for d in opening_days)
    assert found == sorted(found, key=lambda o: o.start)


@settings(max_examples=300, deadline=None)
@given(
    ZONES,
    st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31)),
)
def test_a_local_time_means_the_first_instant_the_clocks_read_it_or_later(
    zone: ZoneInfo, wall: datetime
) -> None:
    at = resolve_local(wall, zone)
    reads = at.astimezone(zone).replace(tzinfo=None)
    before = (at - timedelta(microseconds=1)).astimezone(zone).replace(tzinfo=None)
    assert reads >= wall
    assert before < wall
    skipped = (
        wall.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(tzinfo=None) != wall
    )
    if not skipped:
        assert reads == wall


@settings(max_examples=150, deadline=None)
@given(
    scenarios(),
    st.floats(0, 1),
    st.none() | OFFSETS,
    st.none() | OFFSETS,
    st.integers(0, 10 * 60).map(lambda m: timedelta(minutes=m)),
)
def test_may_start_exactly_when_in_an_open_interval_and_the_limits_allow_it(
    scenario: tuple[list[Window], list[Blackout], ZoneInfo, datetime, datetime],
    f: float,
    not_before_offset: timedelta | None,
    deadline_offset: timedelta | None,
    min_remaining: timedelta,
) -> None:
    ws, bs, zone, start, end = scenario
    at = start + (end - start) * f
    assume(at < end)
    not_before = None if not_before_offset is None else start + not_before_offset
    deadline = None if deadline_offset is None else start + deadline_offset
    # Far enough ahead to see the whole rest of the opening at ``at``.
    found = open_intervals(ws, bs, zone, at - timedelta(days=1), at + timedelta(days=20))
    in_force = next((i for i in found if i.contains(at)), None)
    expected = (
        in_force is not None
        and in_force.end - at >= min_remaining
        and (not_before is None or at >= not_before)
        and (deadline is None or at < deadline)
    )
    allowed = may_start(
        ws,
        bs,
        zone,
        at,
        deadline=deadline,
        not_before=not_before,
        min_remaining=min_remaining,
    )
    assert allowed is expected


@given(st.integers(-14 * 60, 14 * 60))
def test_open_intervals_do_not_depend_on_how_the_range_is_written(offset_minutes: int) -> None:
    elsewhere = timezone(timedelta(minutes=offset_minutes))
    start, end = utc(2026, 10, 26), utc(2026, 11, 9)
    assert open_intervals([WEEKNIGHTS], [], NEW_YORK, start, end) == open_intervals(
        [WEEKNIGHTS], [], NEW_YORK, start.astimezone(elsewhere), end.astimezone(elsewhere)
    )
