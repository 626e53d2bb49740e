"""``orchestrator requests``: the one intake for technical work, from the command line."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from orchestrator.cli import render
from orchestrator.cli.app import JSON_OPTION, HandledGroup, console, print_json, state
from orchestrator.cli.deployment_cmds import moment, summary
from orchestrator.domain.states import Kind
from orchestrator.errors import InvalidInput
from orchestrator.services import requests
from orchestrator.services.deployments import DeploymentSpec
from orchestrator.services.requests import RequestView

requests_app = typer.Typer(
    cls=HandledGroup,
    help="Requests for technical work: file one, see the queue, take, answer with a "
    "change, escalate, close.",
    no_args_is_help=True,
)

ID = Annotated[int, typer.Argument(help="The request's number.", min=1)]


def _said(r: RequestView) -> str:
    where = (
        f"request #{r.id} ({r.category_label}, building {r.building}): {r.state.value}, {r.routed}"
    )
    return f"{where}. {r.routed_because}" if r.routed_because else where


@requests_app.command("categories")
def categories_cmd(
    retired: Annotated[bool, typer.Option("--retired", help="Retired ones too.")] = False,
    as_json: bool = JSON_OPTION,
) -> None:
    """The district's request categories and where each is routed."""
    rows = requests.categories(state.checked_ctx(), include_retired=retired)
    if as_json:
        print_json(rows)
        return
    t = Table(title="request categories", **render.TABLE_STYLE)
    for heading in ("category", "what", "goes to"):
        t.add_column(heading)
    for c in rows:
        t.add_row(
            escape(c.key) + ("" if c.active else " (retired)"),
            escape(c.label),
            escape(c.department) if c.queue.value == "department" else "the building technician",
        )
    console.print(t)


category_app = typer.Typer(
    cls=HandledGroup,
    help="IT's catalog of request categories: add, change, retire.",
    no_args_is_help=True,
)
requests_app.add_typer(category_app, name="category")

QUEUE_HELP = "technician (the building's technician) or department (never a technician)."


def _category_said(c: requests.CategoryView) -> None:
    goes = f"sent to {c.department}" if c.queue.value == "department" else "the technician's queue"
    line = f"category {c.key} ({c.label}): {goes}" + ("" if c.active else ", retired")
    console.print(
        line + (f". {c.why}" if c.why else ""), highlight=False, markup=False, soft_wrap=True
    )


@category_app.command("add")
def category_add(
    key: Annotated[str, typer.Argument(help="e.g. printers")],
    label: Annotated[str, typer.Option(help="What people filing read.")],
    queue: Annotated[str, typer.Option(help=QUEUE_HELP)],
    department: Annotated[str, typer.Option(help="For department categories: who.")] = "",
    why: Annotated[
        str, typer.Option(help="For department categories: why, as said to the filer.")
    ] = "",
) -> None:
    """Add a request category (IT)."""
    _category_said(
        requests.add_category(
            state.ctx,
            state.actor(),
            key,
            requests.CategorySpec(label=label, queue=queue, department=department, why=why),
        )
    )


@category_app.command("edit")
def category_edit(
    key: Annotated[str, typer.Argument(help="e.g. printers")],
    label: Annotated[str | None, typer.Option(help="What people filing read.")] = None,
    queue: Annotated[str | None, typer.Option(help=QUEUE_HELP)] = None,
    department: Annotated[str | None, typer.Option(help="Who works it.")] = None,
    why: Annotated[str | None, typer.Option(help="Why, as said to the filer.")] = None,
    active: Annotated[
        bool | None, typer.Option("--active/--retired", help="Take requests, or no longer.")
    ] = None,
) -> None:
    """Change a request category (IT); requests already filed keep their routing."""
    _category_said(
        requests.edit_category(
            state.ctx,
            state.actor(),
            key,
            requests.CategorySpec(
                label=label, queue=queue, department=department, why=why, active=active
            ),
        )
    )


@requests_app.command("file")
def file_cmd(
    building: Annotated[str, typer.Option(help="The building it is for.")],
    category: Annotated[str, typer.Option(help="See 'orchestrator requests categories'.")],
    description: Annotated[str, typer.Option(help="What is wrong, or what is needed.")],
    urgency: Annotated[str, typer.Option(help="low, normal, high or urgent.")] = "normal",
    room: Annotated[str | None, typer.Option(help="The room it concerns.")] = None,
    client: Annotated[
        list[str] | None, typer.Option(help="A computer it concerns (repeatable).")
    ] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """File a request; it is routed by its category at once."""
    r = requests.file_request(
        state.ctx,
        state.actor(),
        requests.RequestSpec(
            building=building,
            category=category,
            description=description,
            urgency=urgency,
            room=room,
            clients=client or [],
        ),
    )
    if as_json:
        print_json(r)
    else:
        console.print(_said(r), highlight=False, soft_wrap=True)


@requests_app.command("list")
def list_cmd(
    building: Annotated[str | None, typer.Option(help="Only this building's.")] = None,
    open_only: Annotated[bool, typer.Option("--open", help="Only those not closed.")] = False,
    as_json: bool = JSON_OPTION,
) -> None:
    """Requests you may see; a building tech's list is their queue."""
    rows = requests.list_requests(state.ctx, state.actor(), building=building, open_only=open_only)
    if as_json:
        print_json(rows)
        return
    t = Table(title=f"requests ({len(rows)})", **render.TABLE_STYLE)
    for heading in (
        "#",
        "building",
        "category",
        "urgency",
        "state",
        "routed to",
        "filed by",
        "filed",
    ):
        t.add_column(heading)
    zone = state.ctx.zone
    for r in rows:
        t.add_row(
            str(r.id),
            r.building,
            r.category,
            r.urgency.value,
            r.state.value + (f" ({r.assignee})" if r.assignee else ""),
            r.department if r.queue.value == "department" else "technician",
            r.filed_by,
            render.when(r.created_at, zone),
        )
    console.print(t if rows else "no requests")


@requests_app.command("show")
def show_cmd(request_id: ID, as_json: bool = JSON_OPTION) -> None:
    """One request, as filed, and where it stands."""
    r = requests.show(state.ctx, state.actor(), request_id)
    if as_json:
        print_json(r)
        return
    console.print(_said(r), highlight=False, soft_wrap=True)
    console.print(
        f"filed by {r.filed_by}: {r.description}", highlight=False, markup=False, soft_wrap=True
    )
    _print_changes(r)


def _print_changes(r: RequestView) -> None:
    for c in r.changes:
        line = f"  answered by {c.ref}: {c.status}" + (f", {c.detail}" if c.detail else "")
        console.print(line, highlight=False, markup=False, soft_wrap=True)


@requests_app.command("take")
def take_cmd(request_id: ID) -> None:
    """Take a request of your building to work on it."""
    console.print(
        _said(requests.take(state.ctx, state.actor(), request_id)), highlight=False, soft_wrap=True
    )


@requests_app.command("escalate")
def escalate_cmd(
    request_id: ID, reason: Annotated[str, typer.Option(help="Why IT should take it.")]
) -> None:
    """Pass a request to IT, with the reason."""
    r = requests.escalate(state.ctx, state.actor(), request_id, reason=reason)
    console.print(_said(r), highlight=False, soft_wrap=True)


@requests_app.command("close")
def close_cmd(request_id: ID, note: Annotated[str, typer.Option(help="What was done.")]) -> None:
    """Close a request with a note (or withdraw one you filed)."""
    r = requests.close(state.ctx, state.actor(), request_id, note=note)
    console.print(_said(r), highlight=False, soft_wrap=True)


@requests_app.command("link")
def link_cmd(
    request_id: ID,
    image: Annotated[
        str | None, typer.Option(help="The building's customized image, e.g. 101/lab@1.2.")
    ] = None,
    package: Annotated[str | None, typer.Option(help="A package, e.g. scratch@3.30.")] = None,
    deployment: Annotated[int | None, typer.Option(help="A deployment's number.", min=1)] = None,
) -> None:
    """Link the customized image, package or deployment that answers a request.

    A linked deployment closes the request when it finishes on the clients it named.
    """
    given = [x for x in (image, package, deployment) if x is not None]
    if len(given) != 1:
        raise InvalidInput("give one of --image, --package or --deployment", field="link")
    ctx, actor = state.ctx, state.actor()
    if deployment is not None:
        r = requests.link_deployment(ctx, actor, request_id, deployment)
    elif image is not None:
        r = requests.link_item(ctx, actor, request_id, Kind.CUSTOM_IMAGE, image)
    else:
        assert package is not None
        r = requests.link_item(ctx, actor, request_id, Kind.PACKAGE, package)
    console.print(_said(r), highlight=False, soft_wrap=True)
    _print_changes(r)


@requests_app.command("deploy")
def deploy_cmd(
    request_id: ID,
    package: Annotated[
        str | None, typer.Option(help="A released package, e.g. scratch@3.30.")
    ] = None,
    image: Annotated[str | None, typer.Option(help="A released image, e.g. 101/lab@1.2.")] = None,
    not_before: Annotated[
        str | None, typer.Option(help="Start no earlier than YYYY-MM-DD HH:MM (district time).")
    ] = None,
    deadline: Annotated[
        str | None, typer.Option(help="Start nothing after YYYY-MM-DD HH:MM (district time).")
    ] = None,
    pilot_per_building: Annotated[int, typer.Option(help="Pilot clients first.")] = 0,
    failure_threshold: Annotated[
        float, typer.Option(help="Pause when more than this % of a wave fails.")
    ] = 10.0,
    as_json: bool = JSON_OPTION,
) -> None:
    """Deploy a released package or image to what the request names, and link it.

    Its clients, else its room, else its building, in the building's windows."""
    made, r = requests.deploy(
        state.ctx,
        state.actor(),
        request_id,
        DeploymentSpec(
            package=package,
            image=image,
            not_before=moment(not_before, "not_before"),
            deadline=moment(deadline, "deadline"),
            pilot_per_building=pilot_per_building,
            failure_threshold_pct=failure_threshold,
        ),
    )
    if as_json:
        print_json({"deployment": made, "request": r})
        return
    console.print(summary(made))
    console.print(_said(r), highlight=False, soft_wrap=True)
    _print_changes(r)
