"""The district calendar (.ics) as blackouts (orchestrator.services.calendar): no database."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from orchestrator.domain.windows import (
    MON,
    THU,
    TUE,
    WED,
    Blackout,
    Interval,
    Window,
    open_intervals,
    resolve_local,
)
from orchestrator.errors import InvalidInput
from orchestrator.services.calendar import parse_ics

NEW_YORK = ZoneInfo("America/New_York")
SOURCE = "district-2026-27.ics"


def ics(*events: str, head: str = "") -> str:
    """A calendar as the district's export writes it: CRLF lines, one VEVENT per event."""
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//Springfield Public Schools//District Calendar//EN",
        "CALSCALE:GREGORIAN",
        *([head] if head else []),
        *events,
        "END:VCALENDAR",
    ]
    return "\r\n".join(lines) + "\r\n"


def event(uid: str, summary: str, *props: str) -> str:
    return "\r\n".join(
        [
            "BEGIN:VEVENT",
            f"UID:{uid}",
            "DTSTAMP:20260801T120000Z",
            f"SUMMARY:{summary}",
            *props,
            "END:VEVENT",
        ]
    )


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return resolve_local(datetime(year, month, day, hour, minute), NEW_YORK)


def parse(text: str) -> list[Blackout]:
    return parse_ics(text, zone=NEW_YORK, source=SOURCE)


EASTERN = "\r\n".join(
    [
        "BEGIN:VTIMEZONE",
        "TZID:America/New_York",
        "BEGIN:DAYLIGHT",
        "TZOFFSETFROM:-0500",
        "TZOFFSETTO:-0400",
        "TZNAME:EDT",
        "DTSTART:19700308T020000",
        "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU",
        "END:DAYLIGHT",
        "BEGIN:STANDARD",
        "TZOFFSETFROM:-0400",
        "TZOFFSETTO:-0500",
        "TZNAME:EST",
        "DTSTART:19701101T020000",
        "RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU",
        "END:STANDARD",
        "END:VTIMEZONE",
    ]
)

DISTRICT = ics(
    event(
        "winter-break-2026@sps.k12",
        "Winter break",
        "DTSTART;VALUE=DATE:20261221",
        "DTEND;VALUE=DATE:20270102",
        "TRANSP:TRANSPARENT",
    ),
    event(
        "spring-break-2027@sps.k12",
        "Spring break",
        "DTSTART;VALUE=DATE:20270322",
        "DTEND;VALUE=DATE:20270327",
        "DESCRIPTION:No school. Buildings closed\\, no technology work.",
    ),
    event(
        "state-testing-2027@sps.k12",
        "State testing (grades 3-8)",
        "DTSTART;TZID=America/New_York:20270419T060000",
        "DTEND;TZID=America/New_York:20270423T170000",
        "BEGIN:VALARM",
        "ACTION:DISPLAY",
        "DESCRIPTION:Testing week starts",
        "TRIGGER:-P1D",
        "END:VALARM",
    ),
    event(
        "summer-2027@sps.k12",
        "Summer: buildings closed for floor work",
        "DTSTART;VALUE=DATE:20270621",
        "DTEND;VALUE=DATE:20270716",
    ),
    head=EASTERN,
)


# ---------------------------------------------------------------------------
# A realistic district calendar
# ---------------------------------------------------------------------------


def test_a_district_calendar_parses_to_its_blackouts_in_local_time() -> None:
    blackouts = parse(DISTRICT)
    assert [b.name for b in blackouts] == [
        "Winter break",
        "Spring break",
        "State testing (grades 3-8)",
        "Summer: buildings closed for floor work",
    ]
    intervals = [b.interval(NEW_YORK) for b in blackouts]
    assert intervals == [
        # All-day events: whole local days, DTEND exclusive (back on 2 January).
        Interval(local(2026, 12, 21), local(2027, 1, 2)),
        Interval(local(2027, 3, 22), local(2027, 3, 27)),
        # DATE-TIME with TZID: 06:00 Monday to 17:00 Friday, New York time.
        Interval(local(2027, 4, 19, 6), local(2027, 4, 23, 17)),
        Interval(local(2027, 6, 21), local(2027, 7, 16)),
    ]
    # Winter break is EST (UTC-5), state testing EDT (UTC-4).
    assert intervals[0].start == datetime(2026, 12, 21, 5, tzinfo=UTC)
    assert intervals[2].start == datetime(2027, 4, 19, 10, tzinfo=UTC)


def test_all_day_values_stay_local_dates() -> None:
    winter = parse(DISTRICT)[0]
    assert (winter.start, winter.end) == (date(2026, 12, 21), date(2027, 1, 2))


def test_utc_and_floating_times_are_read_as_the_rfc_says() -> None:
    text = ics(
        event(
            "network@sps.k12",
            "Core switch replacement",
            "DTSTART:20270110T020000Z",
            "DTEND:20270110T080000Z",
        ),
        event(
            "board@sps.k12",
            "Board meeting (floating)",
            "DTSTART:20270112T180000",
            "DURATION:PT3H",
        ),
    )
    switch, board = parse(text)
    assert switch.interval(NEW_YORK) == Interval(
        datetime(2027, 1, 10, 2, tzinfo=UTC), datetime(2027, 1, 10, 8, tzinfo=UTC)
    )
    # Floating: the district's zone.
    assert board.interval(NEW_YORK) == Interval(local(2027, 1, 12, 18), local(2027, 1, 12, 21))


def test_a_tzid_of_another_zone_is_read_in_that_zone() -> None:
    text = ics(
        event(
            "vendor@sps.k12",
            "Vendor maintenance (Chicago)",
            "DTSTART;TZID=America/Chicago:20270303T200000",
            "DTEND;TZID=America/Chicago:20270303T230000",
        )
    )
    [vendor] = parse(text)
    assert vendor.interval(NEW_YORK) == Interval(local(2027, 3, 3, 21), local(2027, 3, 4, 0))


def test_an_all_day_event_without_dtend_is_its_one_day() -> None:
    [day] = parse(ics(event("pd@sps.k12", "PD day", "DTSTART;VALUE=DATE:20261009")))
    assert (day.start, day.end) == (date(2026, 10, 9), date(2026, 10, 10))


def test_a_weekly_rule_with_count_repeats_and_keeps_local_time_across_dst() -> None:
    text = ics(
        event(
            "early@sps.k12",
            "Early release",
            "DTSTART;TZID=America/New_York:20261028T120000",
            "DTEND;TZID=America/New_York:20261028T160000",
            "RRULE:FREQ=WEEKLY;COUNT=3",
        )
    )
    found = [b.interval(NEW_YORK) for b in parse(text)]
    assert found == [
        Interval(local(2026, 10, 28, 12), local(2026, 10, 28, 16)),
        Interval(local(2026, 11, 4, 12), local(2026, 11, 4, 16)),
        Interval(local(2026, 11, 11, 12), local(2026, 11, 11, 16)),
    ]
    assert found[0].start.hour == 16 and found[1].start.hour == 17  # EDT, then EST


def test_a_daily_rule_with_until_stops_on_its_last_day() -> None:
    text = ics(
        event(
            "inventory@sps.k12",
            "Inventory count",
            "DTSTART;VALUE=DATE:20270607",
            "DTEND;VALUE=DATE:20270608",
            "RRULE:FREQ=DAILY;INTERVAL=2;UNTIL=20270611",
        )
    )
    assert [b.start for b in parse(text)] == [date(2027, 6, 7), date(2027, 6, 9), date(2027, 6, 11)]


def test_a_cancelled_event_is_not_a_blackout() -> None:
    text = ics(
        event("a@sps.k12", "Snow day", "DTSTART;VALUE=DATE:20270115", "STATUS:CANCELLED"),
        event("b@sps.k12", "MLK day", "DTSTART;VALUE=DATE:20270118"),
    )
    assert [b.name for b in parse(text)] == ["MLK day"]


def test_events_that_only_touch_do_not_overlap() -> None:
    text = ics(
        event(
            "a@sps.k12", "Winter break", "DTSTART;VALUE=DATE:20261221", "DTEND;VALUE=DATE:20270101"
        ),
        event("b@sps.k12", "New Year", "DTSTART;VALUE=DATE:20270101", "DTEND;VALUE=DATE:20270102"),
    )
    assert len(parse(text)) == 2


def test_folded_lines_and_a_byte_order_mark_are_read() -> None:
    text = "\ufeff" + ics(
        event(
            "long@sps.k12",
            "Summer: buildings closed for floor work and",
            " the network refresh",
            "DTSTART;VALUE=DATE:20270621",
            "DTEND;VALUE=DATE:20270716",
        ).replace("work and\r\n ", "work and\r\n  ")
    )
    [summer] = parse(text)
    assert summer.name == "Summer: buildings closed for floor work and the network refresh"


# ---------------------------------------------------------------------------
# Bad input: what is wrong, and where
# ---------------------------------------------------------------------------


def test_text_that_is_not_icalendar_is_refused_naming_the_line() -> None:
    with pytest.raises(InvalidInput) as err:
        parse("Date,Event\n2026-12-21,Winter break\n")
    assert str(err.value) == (
        f"{SOURCE}, line 1: not an iCalendar file: it should begin with BEGIN:VCALENDAR, "
        "not 'Date,Event'"
    )


def test_a_broken_line_inside_a_calendar_is_refused_naming_it() -> None:
    text = ics(event("a@sps.k12", "Winter break", "DTSTART;VALUE=DATE:20261221", "oops"))
    with pytest.raises(InvalidInput, match=rf"^{SOURCE}, line 10: 'oops' is not an iCalendar line"):
        parse(text)


def test_an_unterminated_calendar_is_refused() -> None:
    with pytest.raises(InvalidInput, match=rf"^{SOURCE}: not a readable iCalendar file"):
        parse("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nDTSTART:20270101T000000Z\r\n")


def test_an_empty_file_is_refused() -> None:
    with pytest.raises(InvalidInput, match=rf"^{SOURCE}: the calendar is empty$"):
        parse("  \r\n")


def test_a_calendar_without_events_is_refused() -> None:
    with pytest.raises(InvalidInput, match=rf"^{SOURCE}: the calendar has no events"):
        parse(ics())


def test_an_event_without_dtstart_is_refused_naming_it_and_its_line() -> None:
    text = ics(
        event("a@sps.k12", "Winter break", "DTSTART;VALUE=DATE:20261221"),
        event("spring@sps.k12", "Spring break", "DTEND;VALUE=DATE:20270327"),
    )
    with pytest.raises(InvalidInput) as err:
        parse(text)
    assert str(err.value) == (
        f"{SOURCE}, line 11: event 'Spring break' (UID spring@sps.k12): "
        "has no DTSTART: a blackout needs a start"
    )


def test_an_event_ending_before_it_starts_is_refused_naming_dtend() -> None:
    text = ics(
        event(
            "winter@sps.k12",
            "Winter break",
            "DTSTART;VALUE=DATE:20270102",
            "DTEND;VALUE=DATE:20261221",
        )
    )
    with pytest.raises(InvalidInput) as err:
        parse(text)
    assert str(err.value) == (
        f"{SOURCE}, line 10: event 'Winter break' (UID winter@sps.k12): "
        "DTEND 2026-12-21 is before DTSTART 2027-01-02"
    )
    assert err.value.field == "DTEND"


def test_a_timed_event_ending_before_it_starts_is_refused() -> None:
    text = ics(
        event(
            "t@sps.k12",
            "State testing",
            "DTSTART;TZID=America/New_York:20270423T170000",
            "DTEND;TZID=America/New_York:20270419T060000",
        )
    )
    with pytest.raises(InvalidInput, match=r"line 10: event 'State testing' .* is before DTSTART"):
        parse(text)


def test_overlapping_events_are_refused_naming_both() -> None:
    text = ics(
        event(
            "summer@sps.k12", "Summer", "DTSTART;VALUE=DATE:20270621", "DTEND;VALUE=DATE:20270820"
        ),
        event("july4@sps.k12", "Independence Day", "DTSTART;VALUE=DATE:20270705"),
    )
    with pytest.raises(InvalidInput) as err:
        parse(text)
    assert str(err.value) == (
        f"{SOURCE}: event 'Independence Day' (UID july4@sps.k12) on line 12 overlaps "
        "event 'Summer' (UID summer@sps.k12) on line 5; merge them or make one end "
        "when the other starts"
    )


def test_an_unreadable_date_is_refused_naming_its_line() -> None:
    text = ics(event("a@sps.k12", "Winter break", "DTSTART;VALUE=DATE:2026-12-21"))
    with pytest.raises(
        InvalidInput, match=r"line 9: event 'Winter break' .*DTSTART cannot be read"
    ):
        parse(text)


def test_an_unknown_time_zone_is_refused() -> None:
    text = ics(
        event("a@sps.k12", "Testing", "DTSTART;TZID=Mars/Olympus:20270419T060000", "DURATION:PT4H")
    )
    with pytest.raises(
        InvalidInput, match="names the time zone 'Mars/Olympus', which is not known"
    ):
        parse(text)


def test_a_timed_event_without_an_end_is_refused() -> None:
    text = ics(event("a@sps.k12", "Assembly", "DTSTART:20270419T090000"))
    with pytest.raises(InvalidInput, match="no DTEND or DURATION: it blocks nothing"):
        parse(text)


@pytest.mark.parametrize(
    ("rule", "why"),
    [
        ("FREQ=WEEKLY;BYDAY=MO,WE;COUNT=4", "is not supported"),
        ("FREQ=MONTHLY;COUNT=3", "is not supported"),
        ("FREQ=WEEKLY", "repeats forever: give COUNT or UNTIL"),
        ("FREQ=DAILY;UNTIL=20260101", "ends \\(UNTIL\\) before DTSTART"),
    ],
)
def test_a_repeat_rule_beyond_daily_or_weekly_with_an_end_is_refused(rule: str, why: str) -> None:
    text = ics(event("r@sps.k12", "Early release", "DTSTART;VALUE=DATE:20270106", f"RRULE:{rule}"))
    with pytest.raises(InvalidInput, match=rf"line 10: event 'Early release' .*RRULE.*{why}"):
        parse(text)


def test_exceptions_to_a_repeat_are_refused_rather_than_ignored() -> None:
    text = ics(
        event(
            "r@sps.k12",
            "Early release",
            "DTSTART;VALUE=DATE:20270106",
            "RRULE:FREQ=WEEKLY;COUNT=4",
            "EXDATE;VALUE=DATE:20270113",
        )
    )
    with pytest.raises(InvalidInput, match="line 11: .*EXDATE is not supported"):
        parse(text)


def test_a_repeat_whose_occurrences_overlap_is_refused() -> None:
    text = ics(
        event(
            "r@sps.k12",
            "Testing",
            "DTSTART;VALUE=DATE:20270106",
            "DTEND;VALUE=DATE:20270109",
            "RRULE:FREQ=DAILY;COUNT=2",
        )
    )
    with pytest.raises(
        InvalidInput, match="'Testing' .* on 2027-01-07 .* overlaps event 'Testing'"
    ):
        parse(text)


def test_state_testing_from_the_calendar_removes_that_week_s_nights() -> None:
    weeknights = Window(frozenset({MON, TUE, WED, THU}), time(18), time(6))
    found = open_intervals(
        [weeknights], parse(DISTRICT), NEW_YORK, local(2027, 4, 12), local(2027, 5, 1)
    )
    nights = [i.start.astimezone(NEW_YORK).date() for i in found]
    # Testing runs from 06:00 Monday 19 to 17:00 Friday 23 April: its four nights are gone.
    assert nights == [
        date(2027, 4, 12),
        date(2027, 4, 13),
        date(2027, 4, 14),
        date(2027, 4, 15),
        date(2027, 4, 26),
        date(2027, 4, 27),
        date(2027, 4, 28),
        date(2027, 4, 29),
    ]
