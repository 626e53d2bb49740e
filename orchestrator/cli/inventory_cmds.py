"""``orchestrator clients`` and ``orchestrator inventory``: the district's computers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from orchestrator.cli import render
from orchestrator.cli.app import JSON_OPTION, HandledGroup, console, print_json, state
from orchestrator.services import inventory

clients_app = typer.Typer(
    cls=HandledGroup, help="Client computers in the buildings.", no_args_is_help=True
)
inventory_app = typer.Typer(
    cls=HandledGroup, help="The Ansible inventory of the district.", no_args_is_help=True
)


@clients_app.command("list")
def clients_list(
    building: Annotated[str | None, typer.Option(help="Only this building.")] = None,
    room: Annotated[str | None, typer.Option(help="Only this room, lab or cart.")] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Clients you may see, by building and room, with hardware flags."""
    rows = inventory.list_clients(state.ctx, state.actor(), building=building, room=room)
    if as_json:
        print_json(rows)
        return
    t = Table(title=f"clients ({len(rows)})", **render.TABLE_STYLE)
    for heading in ("host", "building", "room", "platform", "model", "address", "image", "flag"):
        t.add_column(heading, no_wrap=heading in ("host", "address"))
    for c in rows:
        t.add_row(
            c.hostname,
            c.building,
            escape(c.room),
            c.platform.value,
            escape(c.model),
            f"{c.address}:{c.port}",
            c.current_image or "-",
            f"[red]{escape(c.flag)}[/]" if c.flag else "",
        )
    console.print(t if rows else "no clients")


@clients_app.command("import")
def clients_import(
    file: Annotated[Path, typer.Argument(help="CSV asset export, or Ansible INI/YAML inventory.")],
    format: Annotated[
        str | None, typer.Option(help="csv, ini or yaml (default: from the file name).")
    ] = None,
) -> None:
    """Import clients: all rows or none; duplicates are refused, never merged."""
    result = inventory.import_clients(state.ctx, state.actor(), file, format=format)
    console.print(
        f"imported {result.imported} clients into building(s) {', '.join(result.buildings)}"
    )
    if result.off_list:
        console.print(
            f"[yellow]{len(result.off_list)} on models off the Approved Technology List or past "
            f"end of support:[/] {', '.join(result.off_list)}"
        )


@inventory_app.command("export")
def inventory_export(
    output: Annotated[Path, typer.Option(help="Where to write the YAML inventory.")] = Path(
        "inventory/district.yml"
    ),
    building: Annotated[str | None, typer.Option(help="Only this building.")] = None,
) -> None:
    """Write a standard Ansible YAML inventory (groups per building, level, platform, room)."""
    count = inventory.export_inventory(state.ctx, state.actor(), output, building=building)
    console.print(f"wrote {count} hosts to {output} (try: ansible-inventory -i {output} --list)")
