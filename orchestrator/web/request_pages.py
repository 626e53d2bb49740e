"""Requests for technical work on the web: the one intake form, the lists, and a
request's page where its technician takes, escalates or closes it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from orchestrator.domain.states import Kind, Role, State
from orchestrator.errors import InvalidInput
from orchestrator.services import catalog, directory, requests
from orchestrator.services.deployments import DeploymentSpec
from orchestrator.web.auth import context
from orchestrator.web.pages import CallerDep, FormCallerDep, render

router = APIRouter(include_in_schema=False)


@router.get("/requests", response_class=HTMLResponse)
def requests_page(request: Request, caller: CallerDep, all: str = "") -> HTMLResponse:
    ctx, actor = context(request), caller.actor
    return render(
        request,
        "requests.html",
        {
            "rows": requests.list_requests(ctx, actor, open_only=not all),
            "showing_all": bool(all),
        },
        caller=caller,
    )


@router.get("/requests/new", response_class=HTMLResponse)
def new_request_page(request: Request, caller: CallerDep, building: str = "") -> HTMLResponse:
    ctx, actor = context(request), caller.actor
    return render(
        request,
        "request_new.html",
        {
            "categories": requests.categories(ctx),
            "buildings": directory.buildings(ctx, actor),
            "building": building or next(iter(sorted(actor.buildings)), ""),
        },
        caller=caller,
    )


@router.post("/requests")
def file_request(
    request: Request,
    caller: FormCallerDep,
    building: Annotated[str, Form(max_length=6)],
    category: Annotated[str, Form(max_length=40)],
    description: Annotated[str, Form(max_length=requests.MAX_DESCRIPTION + 100)],
    urgency: Annotated[str, Form(max_length=8)] = "normal",
    room: Annotated[str, Form(max_length=40)] = "",
    clients: Annotated[str, Form(max_length=4000)] = "",
) -> Response:
    made = requests.file_request(
        context(request),
        caller.actor,
        requests.RequestSpec(
            building=building,
            category=category,
            description=description,
            urgency=urgency,
            room=room.strip() or None,
            clients=[c.strip() for c in clients.replace(",", " ").split() if c.strip()],
        ),
    )
    return RedirectResponse(f"/requests/{made.id}?filed=1", status_code=303)


@router.get("/requests/categories", response_class=HTMLResponse)
def categories_page(request: Request, caller: CallerDep) -> HTMLResponse:
    manage = caller.actor.role is Role.IT
    return render(
        request,
        "request_categories.html",
        {"rows": requests.categories(context(request), include_retired=manage), "manage": manage},
        caller=caller,
    )


@router.post("/requests/categories")
def add_category(
    request: Request,
    caller: FormCallerDep,
    key: Annotated[str, Form(max_length=40)],
    label: Annotated[str, Form(max_length=120)],
    queue: Annotated[str, Form(max_length=10)],
    department: Annotated[str, Form(max_length=120)] = "",
    why: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    requests.add_category(
        context(request),
        caller.actor,
        key,
        requests.CategorySpec(label=label, queue=queue, department=department, why=why),
    )
    return RedirectResponse("/requests/categories", status_code=303)


@router.post("/requests/categories/{key}")
def edit_category(
    request: Request,
    caller: FormCallerDep,
    key: Annotated[str, Path(max_length=40)],
    label: Annotated[str, Form(max_length=120)],
    queue: Annotated[str, Form(max_length=10)],
    department: Annotated[str, Form(max_length=120)] = "",
    why: Annotated[str, Form(max_length=500)] = "",
    active: Annotated[str, Form(max_length=3)] = "",
) -> Response:
    """The whole row as the form shows it; an unticked box retires the category."""
    requests.edit_category(
        context(request),
        caller.actor,
        key,
        requests.CategorySpec(
            label=label, queue=queue, department=department, why=why, active=active == "yes"
        ),
    )
    return RedirectResponse("/requests/categories", status_code=303)


@router.get("/requests/{request_id}", response_class=HTMLResponse)
def request_page(request: Request, caller: CallerDep, request_id: int) -> HTMLResponse:
    ctx, actor = context(request), caller.actor
    r = requests.show(ctx, actor, request_id)
    answers = (
        r.state.value != "closed"
        and r.queue.value == "technician"
        and actor.role in (Role.IT, Role.SECTEC, Role.BTC)
    )
    released = (
        [
            v
            for v in catalog.list_releasables(ctx, actor)
            if v.state is State.PUBLISHED and v.kind is not Kind.BASE_IMAGE
        ]
        if answers
        else []
    )
    return render(
        request,
        "request.html",
        {"r": r, "answers": answers, "released": released},
        caller=caller,
    )


@router.post("/requests/{request_id}/deploy")
def deploy_for_request(
    request: Request,
    caller: FormCallerDep,
    request_id: int,
    what: Annotated[str, Form(max_length=220)],
    pilot_per_building: Annotated[int, Form(ge=0, le=1000)] = 0,
) -> Response:
    """Deploy a released item to what the request names, and link the deployment."""
    kind, _, ref = what.partition(":")
    if kind not in ("image", "package") or not ref:
        raise InvalidInput("choose an image or a package to deploy", field="what")
    made, _ = requests.deploy(
        context(request),
        caller.actor,
        request_id,
        DeploymentSpec(
            image=ref if kind == "image" else None,
            package=ref if kind == "package" else None,
            pilot_per_building=pilot_per_building,
        ),
    )
    return RedirectResponse(f"/deployments/{made.id}", status_code=303)


@router.post("/requests/{request_id}/link")
def link_change(
    request: Request,
    caller: FormCallerDep,
    request_id: int,
    kind: Annotated[str, Form(pattern="^(custom_image|package|deployment)$")],
    ref: Annotated[str, Form(min_length=1, max_length=200)],
) -> Response:
    """Link the customized image, package or deployment that answers the request."""
    ctx, actor = context(request), caller.actor
    if kind == "deployment":
        number = ref.strip().lstrip("#")
        if not (number.isascii() and number.isdigit() and 0 < int(number) < 2**31):
            raise InvalidInput(f"{ref!r} is not a deployment's number", field="ref")
        requests.link_deployment(ctx, actor, request_id, int(number))
    else:
        requests.link_item(ctx, actor, request_id, Kind(kind), ref)
    return RedirectResponse(f"/requests/{request_id}", status_code=303)


@router.post("/requests/{request_id}/act")
def act(
    request: Request,
    caller: FormCallerDep,
    request_id: int,
    action: Annotated[str, Form(pattern="^(take|escalate|close)$")],
    text: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    ctx, actor = context(request), caller.actor
    if action == "take":
        requests.take(ctx, actor, request_id)
    elif action == "escalate":
        requests.escalate(ctx, actor, request_id, reason=text)
    else:
        requests.close(ctx, actor, request_id, note=text)
    return RedirectResponse(f"/requests/{request_id}", status_code=303)
