"""``orchestrator windows``: when a building's computers may be worked on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from orchestrator.cli import render
from orchestrator.cli.app import JSON_OPTION, HandledGroup, console, print_json, state
from orchestrator.services import windows

windows_app = typer.Typer(
    cls=HandledGroup,
    help="Maintenance windows per building, and blackouts from the district calendar.",
    no_args_is_help=True,
)

BUILDING = Annotated[str, typer.Option(help="Building number.")]


@windows_app.command("show")
def windows_show(
    building: BUILDING,
    days: Annotated[int, typer.Option(help="How many days ahead to show.")] = 14,
    as_json: bool = JSON_OPTION,
) -> None:
    """A building's windows, the blackouts to come, and when it is open."""
    view = windows.schedule(state.ctx, state.actor(), building, days=days)
    if as_json:
        print_json(view)
        return
    zone = state.settings.zone
    t = Table(title=f"maintenance windows of building {building}", **render.TABLE_STYLE)
    t.add_column("#")
    t.add_column("window (district time)")
    for w in view.windows:
        t.add_row(str(w.id), w.window)
    console.print(t if view.windows else f"building {building} has no maintenance windows yet")
    if view.blackouts:
        b = Table(title="blackouts to come", **render.TABLE_STYLE)
        for heading in ("from", "until", "name", "for", "source"):
            b.add_column(heading)
        for x in view.blackouts:
            b.add_row(
                render.when(x.starts_at, zone),
                render.when(x.ends_at, zone),
                x.name,
                x.building or "district",
                x.source,
            )
        console.print(b)
    if view.open:
        o = Table(title=f"open in the next {days} days", **render.TABLE_STYLE)
        o.add_column("from")
        o.add_column("until")
        o.add_column("hours", justify="right")
        for i in view.open:
            o.add_row(
                render.when(i.start, zone),
                render.when(i.end, zone),
                f"{i.duration.total_seconds() / 3600:.1f}",
            )
        console.print(o)
    if view.next_opening is not None:
        console.print(f"next opening: {render.when(view.next_opening.start, zone)}")
    elif view.windows:
        console.print("no opening within the next 400 days")


@windows_app.command("add")
def windows_add(
    building: BUILDING,
    days: Annotated[str, typer.Option(help="Days it opens on: mon-thu, sat,sun, …")],
    start: Annotated[str, typer.Option("--from", help="Opens at HH:MM, district time.")],
    end: Annotated[str, typer.Option("--to", help="Closes at HH:MM (earlier: the next day).")],
    end_day: Annotated[
        int | None,
        typer.Option(help="Closes this many days after it opens (e.g. 3: Friday to Monday)."),
    ] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Add a weekly maintenance window to a building."""
    view = windows.add_window(
        state.ctx,
        state.actor(),
        building=building,
        days=days,
        start=start,
        end=end,
        end_day=end_day,
    )
    if as_json:
        print_json(view)
    else:
        console.print(f"added window #{view.id} to building {building}: {view.window}")


@windows_app.command("remove")
def windows_remove(window_id: Annotated[int, typer.Argument(help="The window's number.")]) -> None:
    """Remove a maintenance window."""
    view = windows.remove_window(state.ctx, state.actor(), window_id)
    console.print(f"removed window #{view.id} of building {view.building}: {view.window}")


@windows_app.command("import-calendar")
def windows_import_calendar(
    file: Annotated[Path, typer.Argument(help="An iCalendar (.ics) file.")],
    building: Annotated[
        str | None, typer.Option(help="Only this building (default: the whole district, IT).")
    ] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Import a calendar's events as blackouts; the same file again replaces them."""
    view = windows.import_calendar(state.ctx, state.actor(), file, building=building)
    if as_json:
        print_json(view)
        return
    scope = f"building {building}" if building else "the whole district"
    replaced = f", replacing {view.replaced} from the earlier import" if view.replaced else ""
    console.print(f"imported {view.imported} blackouts from {view.source} for {scope}{replaced}")
