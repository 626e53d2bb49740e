"""``orchestrator windows`` as a building tech and IT type it (both backends)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.cli import Invoke

CALENDAR = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//Sample District//EN
BEGIN:VEVENT
UID:break@district
SUMMARY:Winter break
DTSTART;VALUE=DATE:20301223
DTEND;VALUE=DATE:20310102
END:VEVENT
END:VCALENDAR
"""


def test_a_tech_adds_windows_it_imports_the_calendar_and_both_show(
    orchestrator: Invoke, tmp_path: Path
) -> None:
    added = orchestrator(
        "--as", "btc.lincoln", "windows", "add", "--building", "101", "--days", "mon-thu",
        "--from", "18:00", "--to", "06:00",
    )  # fmt: skip
    assert "added window #1 to building 101: Mon,Tue,Wed,Thu 18:00-06:00 (+1 day)" in added.stdout
    ics = tmp_path / "district.ics"
    ics.write_text(CALENDAR)

    refused = orchestrator("--as", "btc.lincoln", "windows", "import-calendar", str(ics), expect=3)
    assert "whole district" in refused.stderr
    done = orchestrator("--as", "it.rivera", "windows", "import-calendar", str(ics))
    assert "imported 1 blackouts from district.ics for the whole district" in done.stdout

    shown = json.loads(
        orchestrator(
            "--as", "principal.lincoln", "windows", "show", "--building", "101", "--json"
        ).stdout
    )
    assert [w["window"] for w in shown["windows"]] == ["Mon,Tue,Wed,Thu 18:00-06:00 (+1 day)"]
    assert [b["name"] for b in shown["blackouts"]] == ["Winter break"]
    assert shown["next_opening"] is not None


def test_bad_windows_and_calendars_exit_2_with_the_reason(
    orchestrator: Invoke, tmp_path: Path
) -> None:
    bad = orchestrator(
        "--as", "btc.lincoln", "windows", "add", "--building", "101", "--days", "weeknights",
        "--from", "18:00", "--to", "06:00", expect=2,
    )  # fmt: skip
    assert "'weeknights' is not a day" in bad.stderr
    ics = tmp_path / "broken.ics"
    ics.write_text("Date,Event\n2030-12-23,Winter break\n")
    broken = orchestrator("--as", "it.rivera", "windows", "import-calendar", str(ics), expect=2)
    assert "broken.ics" in broken.stderr
