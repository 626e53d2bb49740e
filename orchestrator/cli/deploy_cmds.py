"""``orchestrator deploy``: deployments of released images and packages."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from orchestrator.cli import render
from orchestrator.cli.app import (
    JSON_OPTION,
    HandledGroup,
    console,
    print_json,
    state,
    to_jsonable,
)
from orchestrator.services import deploy_plan

deploy_app = typer.Typer(
    cls=HandledGroup,
    help="Deployments of released images and packages to clients.",
    no_args_is_help=True,
)

EXCLUDED_SHOWN = 50
"""Excluded clients listed one per row; the summary counts them all."""


def _included_table(p: deploy_plan.Plan) -> Table:
    t = Table(title=f"would get {p.ref} ({len(p.included)})", **render.TABLE_STYLE)
    for heading in ("building", "clients", "rooms", "never seen"):
        t.add_column(heading, justify="right" if heading in ("clients", "never seen") else "left")
    names = {b.building: b.name for b in p.buildings}
    rooms: dict[str, dict[str, int]] = {}
    never: dict[str, int] = {}
    for c in p.included:
        per_room = rooms.setdefault(c.building, {})
        per_room[c.room] = per_room.get(c.room, 0) + 1
        never[c.building] = never.get(c.building, 0) + c.never_seen
    for number, per_room in rooms.items():
        t.add_row(
            f"{number} {escape(names[number])}",
            str(sum(per_room.values())),
            escape(", ".join(f"{room} ({n})" for room, n in sorted(per_room.items()))),
            str(never[number] or ""),
        )
    return t


def _excluded_table(p: deploy_plan.Plan) -> Table:
    t = Table(title=f"excluded ({len(p.excluded)})", **render.TABLE_STYLE)
    for heading in ("host", "building", "room", "reason", "why"):
        t.add_column(heading, no_wrap=heading in ("host", "reason"))
    for c in p.excluded[:EXCLUDED_SHOWN]:
        t.add_row(c.hostname, c.building, escape(c.room), c.reason.value, escape(c.text))
    return t


@deploy_app.command("plan")
def plan_command(
    package: Annotated[
        str | None, typer.Option(help="A released package, e.g. firefox@128.0.")
    ] = None,
    image: Annotated[
        str | None, typer.Option(help="A released image, e.g. 101/lab@1.2 or pc-high@2026.1.")
    ] = None,
    building: Annotated[
        list[str] | None, typer.Option("--building", help="A building number (repeatable).")
    ] = None,
    group: Annotated[
        list[str] | None,
        typer.Option(
            "--group",
            help="An inventory group: building_101, level_high, platform_mac, room_101_lab_a, "
            "all (repeatable).",
        ),
    ] = None,
    room: Annotated[
        list[str] | None, typer.Option("--room", help="BUILDING/ROOM, e.g. 101/lab-a (repeatable).")
    ] = None,
    client: Annotated[
        list[str] | None, typer.Option("--client", help="A client host name (repeatable).")
    ] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Dry run: which clients would get a package or image, and which not and why.

    Nothing is changed. The targets are the union of the buildings, groups,
    rooms and clients given.
    """
    p = deploy_plan.plan(
        state.ctx,
        state.actor(),
        package=package,
        image=image,
        buildings=building or (),
        groups=group or (),
        rooms=room or (),
        clients=client or (),
    )
    if as_json:
        print_json(to_jsonable(p) | {"summary": p.summary()})
        return
    if p.included:
        console.print(_included_table(p))
    if p.excluded:
        console.print(_excluded_table(p))
        more = len(p.excluded) - EXCLUDED_SHOWN
        if more > 0:
            console.print(f"… and {more} more excluded (--json lists every one)", highlight=False)
    console.print("gates passed: " + escape("; ".join(p.gates)), highlight=False)
    console.print(escape(p.summary()), highlight=False)
