"""Maintenance windows per building and the district calendar's blackouts, stored.

The window arithmetic has its own tests (tests/unit/test_windows.py); these
prove who may set what, that imports are all or nothing and replace
themselves, and that a building's schedule joins its windows with its own and
the district's blackouts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator.errors import InvalidInput, NotFound, Refused
from orchestrator.services import audit, windows
from tests.factories import District

# The test district's clock: Monday 2026-03-02, 10:00 in New York.
CALENDAR = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//Test District//EN
BEGIN:VEVENT
UID:spring@district
SUMMARY:Spring break
DTSTART;VALUE=DATE:20260303
DTEND;VALUE=DATE:20260305
END:VEVENT
END:VCALENDAR
"""


def _ics(tmp_path: Path, text: str = CALENDAR, name: str = "district.ics") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_a_building_tech_sets_weeknight_windows_and_sees_when_the_building_is_open(
    district: District,
) -> None:
    view = windows.add_window(
        district.ctx, district["btc.lincoln"], building="101", days="mon-thu", start="18:00",
        end="06:00",
    )  # fmt: skip

    assert view.window == "Mon,Tue,Wed,Thu 18:00-06:00 (+1 day)"
    seen = windows.schedule(district.ctx, district["principal.lincoln"], "101", days=3)
    # 18:00 EST is 23:00 UTC; the night ends 06:00 EST, 11:00 UTC.
    assert [(i.start, i.end) for i in seen.open] == [
        (_utc(2026, 3, 2, 23), _utc(2026, 3, 3, 11)),
        (_utc(2026, 3, 3, 23), _utc(2026, 3, 4, 11)),
        (_utc(2026, 3, 4, 23), _utc(2026, 3, 5, 11)),
    ]
    assert seen.next_opening is not None and seen.next_opening.start == _utc(2026, 3, 2, 23)
    entry = audit.entries(district.ctx, district["it.ana"], object_kind="maintenance_window")[0]
    assert entry.action == "window.add" and entry.building == "101"


def test_the_same_window_twice_and_bad_days_or_times_are_refused(district: District) -> None:
    tech = district["btc.lincoln"]
    windows.add_window(
        district.ctx, tech, building="101", days="mon-thu", start="18:00", end="06:00"
    )
    with pytest.raises(InvalidInput, match="already has the window"):
        windows.add_window(
            district.ctx, tech, building="101", days="Monday-Thursday", start="18:00", end="6:00"
        )
    with pytest.raises(InvalidInput, match="'fri-mon' runs backwards"):
        windows.add_window(
            district.ctx, tech, building="101", days="fri-mon", start="18:00", end="06:00"
        )
    with pytest.raises(InvalidInput, match="not a day"):
        windows.add_window(
            district.ctx, tech, building="101", days="weeknights", start="18:00", end="06:00"
        )
    with pytest.raises(InvalidInput, match="not a time of day"):
        windows.add_window(district.ctx, tech, building="101", days="mon", start="6pm", end="06:00")
    with pytest.raises(InvalidInput):
        windows.add_window(
            district.ctx, tech, building="101", days="mon", start="18:00", end="18:00"
        )
    assert len(windows.schedule(district.ctx, tech, "101").windows) == 1


def test_only_it_and_the_buildings_tech_set_its_windows(district: District) -> None:
    for who in ("btc.garcia", "principal.lincoln", "edtech.grace"):
        with pytest.raises(Refused):
            windows.add_window(
                district.ctx, district[who], building="101", days="sat", start="08:00", end="17:00"
            )
    view = windows.add_window(
        district.ctx, district["it.ana"], building="101", days="sat", start="08:00", end="17:00"
    )
    with pytest.raises(NotFound):  # another building's tech is not told it exists
        windows.remove_window(district.ctx, district["btc.garcia"], view.id)
    with pytest.raises(NotFound):
        windows.schedule(district.ctx, district["btc.garcia"], "101")
    windows.remove_window(district.ctx, district["btc.lincoln"], view.id)
    assert windows.schedule(district.ctx, district["it.ana"], "101").windows == []


def test_the_district_calendar_closes_every_buildings_windows_on_its_days(
    district: District, tmp_path: Path
) -> None:
    windows.add_window(
        district.ctx,
        district["btc.lincoln"],
        building="101",
        days="mon-thu",
        start="18:00",
        end="06:00",
    )

    done = windows.import_calendar(district.ctx, district["it.ana"], _ics(tmp_path))

    assert (done.imported, done.replaced, done.building) == (1, 0, None)
    seen = windows.schedule(district.ctx, district["btc.lincoln"], "101", days=4)
    (blackout,) = seen.blackouts
    assert blackout.name == "Spring break" and blackout.building is None
    # The break is Tuesday and Wednesday (DTEND is exclusive): Monday night is
    # open until it starts at midnight, Tuesday night is gone, Wednesday night
    # opens when it ends at Thursday midnight, Thursday night is whole.
    assert [(i.start, i.end) for i in seen.open] == [
        (_utc(2026, 3, 2, 23), _utc(2026, 3, 3, 5)),
        (_utc(2026, 3, 5, 5), _utc(2026, 3, 5, 11)),
        (_utc(2026, 3, 5, 23), _utc(2026, 3, 6, 11)),
    ]


def test_importing_the_same_calendar_again_replaces_it(district: District, tmp_path: Path) -> None:
    windows.import_calendar(district.ctx, district["it.ana"], _ics(tmp_path))
    moved = CALENDAR.replace("20260305", "20260307")

    again = windows.import_calendar(district.ctx, district["it.ana"], _ics(tmp_path, moved))

    assert (again.imported, again.replaced) == (1, 1)
    (blackout,) = windows.schedule(district.ctx, district["it.ana"], "101").blackouts
    assert blackout.ends_at == _utc(2026, 3, 7, 5)  # midnight EST


def test_a_malformed_calendar_changes_nothing_and_says_where(
    district: District, tmp_path: Path
) -> None:
    windows.import_calendar(district.ctx, district["it.ana"], _ics(tmp_path))
    broken = CALENDAR.replace("DTEND;VALUE=DATE:20260305", "DTEND;VALUE=DATE:20260301")

    with pytest.raises(InvalidInput, match=r"district\.ics.*Spring break.*before"):
        windows.import_calendar(district.ctx, district["it.ana"], _ics(tmp_path, broken))
    with pytest.raises(InvalidInput, match="cannot read"):
        windows.import_calendar(district.ctx, district["it.ana"], tmp_path / "missing.ics")
    (blackout,) = windows.schedule(district.ctx, district["it.ana"], "101").blackouts
    assert blackout.ends_at == _utc(2026, 3, 5, 5)  # the earlier import stands


def test_the_district_calendar_is_its_but_a_building_tech_imports_the_buildings_own(
    district: District, tmp_path: Path
) -> None:
    with pytest.raises(Refused, match="whole district"):
        windows.import_calendar(district.ctx, district["btc.lincoln"], _ics(tmp_path))
    with pytest.raises(Refused):
        windows.import_calendar(
            district.ctx, district["btc.lincoln"], _ics(tmp_path), building="102"
        )

    own = windows.import_calendar(
        district.ctx, district["btc.lincoln"], _ics(tmp_path, name="lincoln.ics"), building="101"
    )

    assert own.building == "101"
    assert [
        b.building for b in windows.schedule(district.ctx, district["it.ana"], "101").blackouts
    ] == ["101"]
    assert windows.schedule(district.ctx, district["it.ana"], "102").blackouts == []
