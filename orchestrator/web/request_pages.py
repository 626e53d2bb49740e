"""Requests for technical work on the web: the one intake form, the lists, and a
request's page where its technician takes, escalates or closes it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from orchestrator.services import directory, requests
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


@router.get("/requests/{request_id}", response_class=HTMLResponse)
def request_page(request: Request, caller: CallerDep, request_id: int) -> HTMLResponse:
    r = requests.show(context(request), caller.actor, request_id)
    return render(request, "request.html", {"r": r}, caller=caller)


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
