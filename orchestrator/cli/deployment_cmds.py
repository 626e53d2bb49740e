"""``orchestrator deploy create | list | show | pause | resume | cancel | retry-failed``.

Registered on the ``deploy`` group beside ``deploy plan`` (see cli/main.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from orchestrator.cli import render
from orchestrator.cli.app import JSON_OPTION, console, print_json, state, to_jsonable
from orchestrator.domain import windows as window_rules
from orchestrator.errors import InvalidInput
from orchestrator.services import deployments, staging

ID = Annotated[int, typer.Argument(help="The deployment's number.")]
REASON = Annotated[str, typer.Option(help="Why, for the audit log and the owner.")]


def moment(value: str | None, field: str) -> datetime | None:
    """``2026-12-03 18:00`` (district time) or an ISO time with its offset."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace(" ", "T", 1))
    except ValueError:
        raise InvalidInput(
            f"{value!r} is not a date and time (YYYY-MM-DD HH:MM, district time)", field=field
        ) from None
    if parsed.tzinfo is None:
        return window_rules.resolve_local(parsed, state.settings.zone)
    return parsed


def summary(v: deployments.DeploymentView) -> Table:
    zone = state.settings.zone
    t = Table(
        title=f"deployment {v.id}: {v.ref} — {v.state}", show_header=False, **render.TABLE_STYLE
    )
    t.add_column("field", style="bold")
    t.add_column("value")
    t.add_row("owner", v.owner)
    t.add_row("play", v.playbook)
    t.add_row("buildings", ", ".join(v.buildings))
    t.add_row("clients", ", ".join(f"{n} {s}" for s, n in sorted(v.counts.items())))
    if v.reason:
        t.add_row("reason", escape(v.reason))
    if v.not_before:
        t.add_row("not before", render.when(v.not_before, zone))
    if v.deadline:
        t.add_row("deadline", render.when(v.deadline, zone))
    for building, opens in sorted(v.first_windows.items()):
        until = v.window_ends.get(building)
        if v.shown_at is not None and opens <= v.shown_at and until is not None:
            t.add_row(f"window {building}", f"open now, until {render.when(until, zone)}")
        else:
            t.add_row(f"next window {building}", render.when(opens, zone))
    for w in v.waves:
        t.add_row(w.label, ", ".join(f"{n} {s}" for s, n in sorted(w.counts.items())))
    return t


def _clients(v: deployments.DeploymentView) -> Table:
    t = Table(title="clients", **render.TABLE_STYLE)
    for heading in ("host", "building", "wave", "state", "tries", "failing step: message"):
        t.add_column(heading, no_wrap=heading == "host")
    for c in v.clients:
        t.add_row(
            c.hostname,
            c.building,
            (f"{c.wave} (pilot)" if c.pilot else str(c.wave)) if c.wave else "-",
            c.state,
            str(c.attempts or ""),
            escape(f"{c.step}: {c.reason}" if c.step else (c.reason or "")),
        )
    return t


def deploy_create(
    package: Annotated[
        str | None, typer.Option(help="A released package, e.g. scratch@3.30.")
    ] = None,
    image: Annotated[str | None, typer.Option(help="A released image, e.g. 101/lab@1.2.")] = None,
    building: Annotated[list[str] | None, typer.Option(help="Building number; repeatable.")] = None,
    group: Annotated[list[str] | None, typer.Option(help="Inventory group; repeatable.")] = None,
    room: Annotated[list[str] | None, typer.Option(help="BUILDING/ROOM; repeatable.")] = None,
    client: Annotated[list[str] | None, typer.Option(help="Host name; repeatable.")] = None,
    not_before: Annotated[
        str | None, typer.Option(help="Start no earlier than YYYY-MM-DD HH:MM (district time).")
    ] = None,
    deadline: Annotated[
        str | None, typer.Option(help="Start nothing after YYYY-MM-DD HH:MM (district time).")
    ] = None,
    pilot: Annotated[list[str] | None, typer.Option(help="A pilot client; repeatable.")] = None,
    pilot_per_building: Annotated[int, typer.Option(help="Pilot clients per building.")] = 0,
    per_building: Annotated[int, typer.Option(help="Clients at once per building.")] = 10,
    district_wide: Annotated[int, typer.Option(help="Clients at once district-wide.")] = 50,
    failure_threshold: Annotated[
        float, typer.Option(help="Pause when more than this % of a wave fails.")
    ] = 10.0,
    as_json: bool = JSON_OPTION,
) -> None:
    """Schedule a deployment exactly as 'deploy plan' shows it, in the buildings' windows."""
    view = deployments.create(
        state.ctx,
        state.actor(),
        deployments.DeploymentSpec(
            package=package,
            image=image,
            buildings=tuple(building or ()),
            groups=tuple(group or ()),
            rooms=tuple(room or ()),
            clients=tuple(client or ()),
            not_before=moment(not_before, "not_before"),
            deadline=moment(deadline, "deadline"),
            pilot_names=tuple(pilot or ()),
            pilot_per_building=pilot_per_building,
            per_building_limit=per_building,
            district_limit=district_wide,
            failure_threshold_pct=failure_threshold,
        ),
    )
    if as_json:
        print_json(view)
        return
    console.print(summary(view))
    console.print(
        f"created deployment {view.id}; follow it with 'orchestrator deploy show {view.id}'"
    )


def deploy_list(as_json: bool = JSON_OPTION) -> None:
    """Recent deployments reaching buildings you may see."""
    views = deployments.list_deployments(state.ctx, state.actor())
    if as_json:
        print_json(views)
        return
    t = Table(title="deployments", **render.TABLE_STYLE)
    for heading in ("#", "what", "state", "buildings", "clients", "owner", "created"):
        t.add_column(heading)
    for v in views:
        t.add_row(
            str(v.id),
            v.ref,
            v.state,
            ", ".join(v.buildings),
            ", ".join(f"{n} {s}" for s, n in sorted(v.counts.items())),
            v.owner,
            render.when(v.created_at, state.settings.zone),
        )
    console.print(t if views else "no deployments yet")


def deploy_show(deployment_id: ID, as_json: bool = JSON_OPTION) -> None:
    """One deployment: its waves, and every client's outcome with the failing step."""
    view = deployments.show(state.ctx, state.actor(), deployment_id)
    if as_json:
        held = staging.deployment_stagings(state.ctx, state.actor(), deployment_id)
        print_json({**to_jsonable(view), "stagings": held})
        return
    for part in show_parts(view):
        console.print(part)


def show_parts(view: deployments.DeploymentView) -> list[Table]:
    """What ``deploy show`` prints (and ``deploy watch`` when the deployment ends)."""
    held = staging.deployment_stagings(state.ctx, state.actor(), view.id)
    return [summary(view), *([_stagings(held)] if has_points(held) else []), _clients(view)]


def has_points(held: list[staging.DeliveryStaging]) -> bool:
    """Whether some building it reaches has a point (a district without points: no noise)."""
    return any(s.state != "no point" for s in held)


def _stagings(held: list[staging.DeliveryStaging]) -> Table:
    t = Table(title="distribution points", **render.TABLE_STYLE)
    for heading in ("building", "delivers", "on its point", "chunks", "since", "note"):
        t.add_column(heading)
    for s in held:
        t.add_row(
            s.building,
            s.ref,
            s.state,
            f"{s.chunks_sent} of {s.chunks_total}" if s.at else "-",
            render.when(s.at, state.settings.zone) if s.at else "-",
            escape(s.message),
        )
    return t


def deploy_pause(deployment_id: ID, reason: REASON) -> None:
    """Hold it: nothing new starts; a client in the middle of a step finishes it."""
    v = deployments.pause(state.ctx, state.actor(), deployment_id, reason=reason)
    console.print(f"deployment {v.id} is {v.state}")


def deploy_resume(deployment_id: ID, reason: REASON = "") -> None:
    """Go on at the buildings' next window (never at once, in school hours)."""
    v = deployments.resume(state.ctx, state.actor(), deployment_id, reason=reason)
    console.print(f"deployment {v.id} is {v.state} again")


def deploy_cancel(deployment_id: ID, reason: REASON) -> None:
    """End it: every client not being changed right now is cancelled."""
    v = deployments.cancel(state.ctx, state.actor(), deployment_id, reason=reason)
    console.print(
        f"deployment {v.id} is {v.state}: {v.counts.get('cancelled', 0)} clients cancelled"
    )


def deploy_retry_failed(deployment_id: ID, reason: REASON = "") -> None:
    """From paused: the failed clients start again at the next window."""
    v = deployments.retry_failed(state.ctx, state.actor(), deployment_id, reason=reason)
    console.print(f"deployment {v.id} is {v.state}: its failed clients wait for the next window")


COMMANDS: dict[str, Callable[..., None]] = {
    "create": deploy_create,
    "list": deploy_list,
    "show": deploy_show,
    "pause": deploy_pause,
    "resume": deploy_resume,
    "cancel": deploy_cancel,
    "retry-failed": deploy_retry_failed,
}
