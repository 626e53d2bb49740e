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
    t = Table(title=f"would get {p.ref} ({p.included_count})", **render.TABLE_STYLE)
    for heading in ("building", "clients", "rooms", "never seen"):
        t.add_column(heading, justify="right" if heading in ("clients", "never seen") else "left")
    names = {b.building: b.name for b in p.buildings}
    rooms: dict[str, list[deploy_plan.RoomCount]] = {}
    for r in p.rooms:
        if r.included:
            rooms.setdefault(r.building, []).append(r)
    for number, per_room in rooms.items():
        never = sum(r.never_seen for r in per_room)
        t.add_row(
            f"{number} {escape(names[number])}",
            str(sum(r.included for r in per_room)),
            escape(", ".join(f"{r.room} ({r.included})" for r in per_room)),
            str(never or ""),
        )
    return t


def _excluded_table(p: deploy_plan.Plan) -> Table:
    t = Table(title=f"excluded ({p.excluded_count})", **render.TABLE_STYLE)
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
        # A person reads counts and the first excluded; --json lists every client.
        listed=as_json,
        sample=EXCLUDED_SHOWN,
    )
    if as_json:
        print_json(to_jsonable(p) | {"summary": p.summary()})
        return
    if p.included_count:
        console.print(_included_table(p))
    if p.excluded_count:
        console.print(_excluded_table(p))
        more = p.excluded_count - EXCLUDED_SHOWN
        if more > 0:
            console.print(f"… and {more} more excluded (--json lists every one)", highlight=False)
    console.print("gates passed: " + escape("; ".join(p.gates)), highlight=False)
    console.print(escape(p.summary()), highlight=False)
