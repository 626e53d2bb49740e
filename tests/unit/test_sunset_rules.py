"""Sunset arithmetic (orchestrator.domain.sunset): pure functions of dates."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.domain.sunset import (
    DEFAULT_LEAD_DAYS,
    days_to_sunset,
    district_today,
    effective_sunset,
    is_sunset,
    warning_due,
)

NEW_YORK = ZoneInfo("America/New_York")
SUNSET = date(2026, 6, 30)

dates = st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 12, 31))
maybe_dates = st.none() | dates
leads = st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=6)


# ---------------------------------------------------------------------------
# effective_sunset
# ---------------------------------------------------------------------------


def test_customized_image_never_outlives_its_base() -> None:
    assert effective_sunset(date(2027, 1, 1), date(2026, 6, 30)) == date(2026, 6, 30)
    assert effective_sunset(date(2026, 1, 1), date(2026, 6, 30)) == date(2026, 1, 1)


def test_effective_sunset_inherits_when_the_item_has_none_of_its_own() -> None:
    assert effective_sunset(None, SUNSET) == SUNSET
    assert effective_sunset(SUNSET) == SUNSET


def test_effective_sunset_is_none_only_when_no_date_is_given() -> None:
    assert effective_sunset(None) is None
    assert effective_sunset(None, None, None) is None


@given(maybe_dates, st.lists(maybe_dates, max_size=4))
def test_effective_sunset_is_never_later_than_any_given_date(
    own: date | None, inherited: list[date | None]
) -> None:
    given_dates = [d for d in (own, *inherited) if d is not None]
    eff = effective_sunset(own, *inherited)
    if not given_dates:
        assert eff is None
        return
    assert eff is not None
    assert eff in given_dates
    assert all(eff <= d for d in given_dates)


@given(maybe_dates, st.lists(maybe_dates, max_size=4), st.randoms(use_true_random=False))
def test_effective_sunset_does_not_depend_on_the_order_of_inherited_dates(
    own: date | None, inherited: list[date | None], rnd: random.Random
) -> None:
    shuffled = list(inherited)
    rnd.shuffle(shuffled)
    assert effective_sunset(own, *inherited) == effective_sunset(own, *shuffled)


# ---------------------------------------------------------------------------
# is_sunset and days_to_sunset
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("today", "sunset", "left"),
    [
        (SUNSET - timedelta(days=1), False, 1),
        (SUNSET, True, 0),
        (SUNSET + timedelta(days=1), True, -1),
        (SUNSET - timedelta(days=90), False, 90),
    ],
)
def test_sunset_starts_on_the_sunset_date_itself(today: date, sunset: bool, left: int) -> None:
    assert is_sunset(SUNSET, today) is sunset
    assert days_to_sunset(SUNSET, today) == left


def test_nothing_without_a_sunset_date_is_ever_sunset() -> None:
    assert is_sunset(None, date(2100, 1, 1)) is False
    assert days_to_sunset(None, date(2100, 1, 1)) is None


@given(maybe_dates, dates, st.integers(0, 5000))
def test_is_sunset_is_monotone_in_today(effective: date | None, day: date, wait: int) -> None:
    later = day + timedelta(days=wait)
    if is_sunset(effective, day):
        assert is_sunset(effective, later)


@given(dates, dates)
def test_is_sunset_exactly_when_no_days_are_left(effective: date, today: date) -> None:
    left = days_to_sunset(effective, today)
    assert left is not None
    assert today + timedelta(days=left) == effective
    assert is_sunset(effective, today) is (left <= 0)


# ---------------------------------------------------------------------------
# warning_due
# ---------------------------------------------------------------------------


def test_warning_is_due_on_each_default_lead_day() -> None:
    for lead in DEFAULT_LEAD_DAYS:
        assert warning_due(SUNSET, SUNSET - timedelta(days=lead)) == lead


def test_no_warning_before_the_longest_lead() -> None:
    assert warning_due(SUNSET, SUNSET - timedelta(days=max(DEFAULT_LEAD_DAYS) + 1)) is None


def test_a_scheduler_down_for_a_month_warns_once_with_the_shortest_crossed_lead() -> None:
    assert warning_due(SUNSET, SUNSET - timedelta(days=10)) == 14
    assert warning_due(SUNSET, SUNSET - timedelta(days=10), already_warned=[14]) is None


def test_no_warning_on_or_after_the_sunset_or_without_one() -> None:
    assert warning_due(SUNSET, SUNSET) is None
    assert warning_due(SUNSET, SUNSET + timedelta(days=3)) is None
    assert warning_due(None, SUNSET) is None


@given(maybe_dates, dates, st.lists(st.integers(0, 400), max_size=5), leads)
def test_warning_due_returns_only_a_configured_lead_not_yet_given(
    effective: date | None, today: date, already: list[int], lead_days: list[int]
) -> None:
    due = warning_due(effective, today, already, lead_days)
    if due is None:
        return
    assert due in lead_days
    assert due not in already
    left = days_to_sunset(effective, today)
    assert left is not None and 0 < left <= due
    assert due == min(lead for lead in lead_days if lead >= left)


@given(dates, st.integers(-400, 0), st.lists(st.integers(0, 400), max_size=5), leads)
def test_no_warning_on_or_after_the_sunset_date(
    effective: date, offset: int, already: list[int], lead_days: list[int]
) -> None:
    assert warning_due(effective, effective - timedelta(days=offset), already, lead_days) is None


@given(dates, leads, st.sets(st.integers(1, 420)))
def test_a_scheduler_that_remembers_its_warnings_never_warns_the_same_lead_twice(
    effective: date, lead_days: list[int], run_on_days_left: set[int]
) -> None:
    warned: list[int] = []
    for left in sorted(run_on_days_left, reverse=True):
        due = warning_due(effective, effective - timedelta(days=left), warned, lead_days)
        if due is not None:
            warned.append(due)
    assert len(warned) == len(set(warned))
    assert set(warned) <= set(lead_days)


@given(dates, leads)
def test_a_scheduler_running_every_day_gives_every_lead_exactly_once(
    effective: date, lead_days: list[int]
) -> None:
    warned: list[int] = []
    for left in range(max(lead_days) + 5, -3, -1):
        due = warning_due(effective, effective - timedelta(days=left), warned, lead_days)
        if due is not None:
            assert due == left, "a daily scheduler warns on the lead day itself"
            warned.append(due)
    assert sorted(warned) == sorted(set(lead_days))


# ---------------------------------------------------------------------------
# district_today
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instant", "today"),
    [
        # Winter (EST, UTC-5): midnight in the district is 05:00 UTC.
        (datetime(2026, 1, 15, 4, 59, 59, tzinfo=UTC), date(2026, 1, 14)),
        (datetime(2026, 1, 15, 5, 0, tzinfo=UTC), date(2026, 1, 15)),
        # Summer (EDT, UTC-4): midnight in the district is 04:00 UTC.
        (datetime(2026, 7, 15, 3, 59, 59, tzinfo=UTC), date(2026, 7, 14)),
        (datetime(2026, 7, 15, 4, 0, tzinfo=UTC), date(2026, 7, 15)),
        # Spring forward, Sunday 8 March 2026 at 02:00 local (07:00 UTC).
        (datetime(2026, 3, 8, 4, 59, 59, tzinfo=UTC), date(2026, 3, 7)),
        (datetime(2026, 3, 8, 5, 0, tzinfo=UTC), date(2026, 3, 8)),
        (datetime(2026, 3, 8, 7, 30, tzinfo=UTC), date(2026, 3, 8)),
        (datetime(2026, 3, 9, 3, 59, 59, tzinfo=UTC), date(2026, 3, 8)),
        (datetime(2026, 3, 9, 4, 0, tzinfo=UTC), date(2026, 3, 9)),
        # Fall back, Sunday 1 November 2026 at 02:00 local (06:00 UTC).
        (datetime(2026, 11, 1, 3, 59, 59, tzinfo=UTC), date(2026, 10, 31)),
        (datetime(2026, 11, 1, 4, 0, tzinfo=UTC), date(2026, 11, 1)),
        (datetime(2026, 11, 1, 6, 30, tzinfo=UTC), date(2026, 11, 1)),
        (datetime(2026, 11, 2, 4, 59, 59, tzinfo=UTC), date(2026, 11, 1)),
        (datetime(2026, 11, 2, 5, 0, tzinfo=UTC), date(2026, 11, 2)),
        # The same instant written in another zone is the same district day.
        (datetime(2026, 3, 2, 0, 30, tzinfo=timezone(timedelta(hours=1))), date(2026, 3, 1)),
    ],
)
def test_district_today_turns_over_at_midnight_in_new_york(instant: datetime, today: date) -> None:
    assert district_today(instant, NEW_YORK) == today


def test_district_today_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        district_today(datetime(2026, 3, 2, 12, 0), NEW_YORK)


@given(st.dates(min_value=date(1980, 1, 1), max_value=date(2090, 12, 31)))
def test_district_day_begins_at_local_midnight_every_day_of_the_year(day: date) -> None:
    midnight = datetime.combine(day, time(0), tzinfo=NEW_YORK).astimezone(UTC)
    assert district_today(midnight, NEW_YORK) == day
    assert district_today(midnight - timedelta(microseconds=1), NEW_YORK) == day - timedelta(days=1)
    next_midnight = datetime.combine(day + timedelta(days=1), time(0), tzinfo=NEW_YORK)
    assert district_today(next_midnight.astimezone(UTC) - timedelta(seconds=1), NEW_YORK) == day


@given(
    st.datetimes(
        min_value=datetime(1980, 1, 1),
        max_value=datetime(2090, 12, 31),
        timezones=st.just(UTC),
    ),
    st.integers(-14 * 60, 14 * 60),
)
def test_district_today_depends_on_the_instant_not_on_how_it_is_written(
    instant: datetime, offset_minutes: int
) -> None:
    elsewhere = instant.astimezone(timezone(timedelta(minutes=offset_minutes)))
    assert district_today(elsewhere, NEW_YORK) == district_today(instant, NEW_YORK)
