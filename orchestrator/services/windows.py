"""Each building's maintenance windows and the district calendar's blackouts.

A building tech (or IT) says when the building's computers may be worked on:
weekly windows in the district's local time (``Mon-Thu 18:00-06:00``). IT
imports the district calendar (an iCalendar file of breaks, state testing
weeks and summer) as blackouts for every building; a building's tech may
import a calendar of the building's own. Re-importing a file of the same
name replaces what it brought before, so a corrected calendar is simply
imported again.

Blackouts are stored as UTC instants, read in the district's zone at import;
the window arithmetic itself is in :mod:`orchestrator.domain.windows`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from pathlib import Path

from sqlmodel import Session, col, or_, select

from orchestrator.db.models import Blackout as BlackoutRow
from orchestrator.db.models import Building, MaintenanceWindow
from orchestrator.db.session import transaction
from orchestrator.domain import validation
from orchestrator.domain import windows as rules
from orchestrator.domain.policy import Action, Actor, authorize, may
from orchestrator.errors import InvalidInput, NotFound
from orchestrator.services import audit
from orchestrator.services.calendar import parse_ics
from orchestrator.services.context import Context

_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_TIME = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")
MAX_CALENDAR_BYTES = 2_000_000


@dataclass(frozen=True)
class WindowView:
    id: int
    building: str
    window: str
    """As people read it: 'Mon,Tue,Wed,Thu 18:00-06:00 (+1 day)'."""


@dataclass(frozen=True)
class BlackoutView:
    id: int
    building: str | None
    """None: district-wide."""
    name: str
    source: str
    starts_at: datetime
    ends_at: datetime


@dataclass(frozen=True)
class Schedule:
    """When a building's computers may be worked on, from ``since`` on."""

    building: str
    windows: list[WindowView]
    blackouts: list[BlackoutView]
    open: list[rules.Interval]
    """The open stretches in the days asked for (UTC)."""
    next_opening: rules.Interval | None


@dataclass(frozen=True)
class CalendarImport:
    source: str
    building: str | None
    imported: int
    replaced: int


def parse_days(text: str) -> frozenset[int]:
    """``mon-thu``, ``sat,sun``, ``Monday,wed-fri`` (case-insensitive) as weekday numbers.

    Raises: InvalidInput naming the part that is not a day.
    """
    days: set[int] = set()
    for part in (p.strip().lower() for p in text.split(",")):
        first, sep, last = part.partition("-")
        a = _day(first, part)
        b = _day(last, part) if sep else a
        if b < a:
            raise InvalidInput(f"{part!r} runs backwards; write it as {last}-{first}", field="days")
        days.update(range(a, b + 1))
    return frozenset(days)


def _day(word: str, part: str) -> int:
    word = word.strip()
    for i, full in enumerate(_FULL_DAYS):
        if len(word) >= 3 and full.startswith(word):
            return i
    raise InvalidInput(
        f"{part!r} is not a day or a range of days (e.g. mon-thu, sat,sun)", field="days"
    )


def parse_time(text: str, *, field: str) -> time:
    """``18:00`` as a time. Raises: InvalidInput."""
    m = _TIME.fullmatch(text.strip())
    if m is None:
        raise InvalidInput(f"{text!r} is not a time of day HH:MM (e.g. 18:00)", field=field)
    return time(int(m[1]), int(m[2]))


def _building(session: Session, number: str) -> Building:
    b = session.exec(select(Building).where(Building.number == number)).first()
    if b is None:
        raise NotFound(f"no building {number!r} (see 'orchestrator buildings')")
    return b


def _window(row: MaintenanceWindow) -> rules.Window:
    return rules.Window(
        frozenset(row.days),
        time.fromisoformat(row.start),
        time.fromisoformat(row.end),
        row.end_day,
    )


def _window_view(row: MaintenanceWindow, building: str) -> WindowView:
    assert row.id is not None
    return WindowView(row.id, building, _window(row).describe())


def _blackout_view(row: BlackoutRow, building: str | None) -> BlackoutView:
    assert row.id is not None
    return BlackoutView(row.id, building, row.name, row.source, row.starts_at, row.ends_at)


def add_window(
    ctx: Context,
    actor: Actor,
    *,
    building: str,
    days: str,
    start: str,
    end: str,
    end_day: int | None = None,
) -> WindowView:
    """Add a weekly window to a building.

    Raises:
        Refused: not IT nor the building's tech. NotFound: no such building.
        InvalidInput: bad days or times, a zero-length window, the same window twice.
    """
    validation.building_number(building)
    authorize(actor, Action.MANAGE_WINDOWS, building=building)
    window = rules.Window(
        parse_days(days),
        parse_time(start, field="start"),
        parse_time(end, field="end"),
        end_day,
    )
    now = ctx.now()
    with transaction(ctx.engine) as session:
        b = _building(session, building)
        for other in session.exec(
            select(MaintenanceWindow).where(MaintenanceWindow.building_id == b.id)
        ):
            if _window(other).describe() == window.describe():
                raise InvalidInput(
                    f"building {building} already has the window {window.describe()} (#{other.id})",
                    field="days",
                )
        row = MaintenanceWindow(
            building_id=b.id or 0,
            days=sorted(window.days),
            start=window.start.strftime("%H:%M"),
            end=window.end.strftime("%H:%M"),
            end_day=window.closes_after_days,
            created_by=actor.username,
            created_at=now,
        )
        session.add(row)
        session.flush()
        assert row.id is not None
        audit.append(
            session,
            at=now,
            actor=actor,
            action="window.add",
            subject=audit.Subject("maintenance_window", f"window {row.id}", row.id, building),
            after={"window": window.describe()},
        )
        return _window_view(row, building)


def remove_window(ctx: Context, actor: Actor, window_id: int) -> WindowView:
    """Raises: NotFound (also for another building's window), Refused."""
    now = ctx.now()
    with transaction(ctx.engine) as session:
        row = session.get(MaintenanceWindow, window_id)
        b = session.get(Building, row.building_id) if row is not None else None
        if row is None or b is None or not _may_see(actor, b.number):
            raise NotFound(f"no window #{window_id} (see 'orchestrator windows show')")
        authorize(actor, Action.MANAGE_WINDOWS, building=b.number)
        view = _window_view(row, b.number)
        session.delete(row)
        audit.append(
            session,
            at=now,
            actor=actor,
            action="window.remove",
            subject=audit.Subject("maintenance_window", f"window {window_id}", window_id, b.number),
            before={"window": view.window},
        )
        return view


def _may_see(actor: Actor, building: str) -> bool:
    return may(actor, Action.READ_CATALOG, building=building)


def import_calendar(
    ctx: Context, actor: Actor, path: Path, *, building: str | None = None
) -> CalendarImport:
    """Import an iCalendar file's events as blackouts, all or nothing.

    District-wide (no ``building``) is IT's; a building's own calendar its
    tech's too. A file of the same name imported before for the same scope is
    replaced.

    Raises:
        Refused. NotFound: no such building. InvalidInput: unreadable or
            malformed calendar (the message names the file, event and line).
    """
    if building is not None:
        validation.building_number(building)
    authorize(actor, Action.MANAGE_WINDOWS, building=building)
    try:
        if path.stat().st_size > MAX_CALENDAR_BYTES:
            raise InvalidInput(f"{path}: larger than {MAX_CALENDAR_BYTES} bytes", field="file")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{path}: not a UTF-8 text file", field="file") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}", field="file") from exc
    source = path.name
    blackouts = parse_ics(text, zone=ctx.zone, source=source)
    now = ctx.now()
    with transaction(ctx.engine) as session:
        building_id = _building(session, building).id if building is not None else None
        same = (
            col(BlackoutRow.building_id).is_(None)
            if building_id is None
            else BlackoutRow.building_id == building_id
        )
        old = session.exec(select(BlackoutRow).where(same, BlackoutRow.source == source)).all()
        for row in old:
            session.delete(row)
        session.flush()
        for blackout in blackouts:
            span = blackout.interval(ctx.zone)
            session.add(
                BlackoutRow(
                    building_id=building_id,
                    name=blackout.name[:200],
                    source=source[:200],
                    starts_at=span.start,
                    ends_at=span.end,
                    created_by=actor.username,
                    created_at=now,
                )
            )
        audit.append(
            session,
            at=now,
            actor=actor,
            action="calendar.import",
            subject=audit.Subject("calendar", source[:200], None, building),
            before={"blackouts": len(old)} if old else None,
            after={"blackouts": len(blackouts)},
        )
    return CalendarImport(source, building, len(blackouts), len(old))


def rules_for(
    session: Session, building_id: int
) -> tuple[list[rules.Window], list[rules.Blackout]]:
    """A building's windows, and the blackouts that apply to it (its own and the district's)."""
    windows = [
        _window(w)
        for w in session.exec(
            select(MaintenanceWindow).where(MaintenanceWindow.building_id == building_id)
        )
    ]
    blackouts = [
        rules.Blackout(b.starts_at, b.ends_at, b.name)
        for b in session.exec(
            select(BlackoutRow).where(
                or_(
                    col(BlackoutRow.building_id).is_(None),
                    BlackoutRow.building_id == building_id,
                )
            )
        )
    ]
    return windows, blackouts


def schedule(ctx: Context, actor: Actor, building: str, *, days: int = 14) -> Schedule:
    """The building's windows, the blackouts still to come, and when it is open.

    Raises: NotFound (also for a building the actor may not see), InvalidInput.
    """
    validation.building_number(building)
    if not 1 <= days <= 400:
        raise InvalidInput(f"{days} is not between 1 and 400 days", field="days")
    now = ctx.now()
    with transaction(ctx.engine) as session:
        b = session.exec(select(Building).where(Building.number == building)).first()
        if b is None or not _may_see(actor, building):
            raise NotFound(f"no building {building!r} (see 'orchestrator buildings')")
        assert b.id is not None
        window_rows = session.exec(
            select(MaintenanceWindow)
            .where(MaintenanceWindow.building_id == b.id)
            .order_by(col(MaintenanceWindow.id))
        ).all()
        blackout_rows = session.exec(
            select(BlackoutRow)
            .where(
                or_(col(BlackoutRow.building_id).is_(None), BlackoutRow.building_id == b.id),
                col(BlackoutRow.ends_at) > now,
            )
            .order_by(col(BlackoutRow.starts_at))
        ).all()
        windows, blackouts = rules_for(session, b.id)
        return Schedule(
            building=building,
            windows=[_window_view(w, building) for w in window_rows],
            blackouts=[
                _blackout_view(r, building if r.building_id is not None else None)
                for r in blackout_rows
            ],
            open=rules.open_intervals(windows, blackouts, ctx.zone, now, now + timedelta(days=days))
            if windows
            else [],
            next_opening=rules.next_opening(windows, blackouts, ctx.zone, now) if windows else None,
        )
