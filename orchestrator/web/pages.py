"""The pages: server-rendered (Jinja2, autoescaped), one per piece of a role's daily work.

Like the API, a page parses, calls the services and renders; what the caller
may see or do is the services' decision, and their refusals are shown in the
page in their own words. Every form carries the session's CSRF token; the
sign-in form, made before there is a session, carries a token bound to a
short-lived cookie of its own (double submit).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from orchestrator.domain.policy import Actor
from orchestrator.domain.states import Kind, Role, State, Step
from orchestrator.errors import InvalidInput, OrchestratorError, Refused, SignInFailed
from orchestrator.services import (
    accounts,
    audit,
    catalog,
    chain,
    deploy_plan,
    deployments,
    directory,
    inventory,
    reports,
    staging,
    sunset,
    windows,
)
from orchestrator.services.context import Context
from orchestrator.web import charts
from orchestrator.web.auth import SESSION_COOKIE, Caller, check_csrf, context, identify

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
SIGN_IN_COOKIE = "orch_sign_in"
_COOKIE = {"httponly": True, "secure": True, "samesite": "strict", "path": "/"}


def _local(ctx: Context, moment: datetime | None, fmt: str = "%a %b %d %H:%M") -> str:
    return moment.astimezone(ctx.zone).strftime(fmt) if moment else "—"


def render(
    request: Request,
    name: str,
    values: Mapping[str, Any],
    *,
    caller: Caller | None = None,
    status: int = 200,
) -> HTMLResponse:
    ctx = context(request)
    return templates.TemplateResponse(
        request,
        name,
        {
            "caller": caller,
            "actor": caller.actor if caller else None,
            "csrf": caller.csrf_token if caller else None,
            "local": lambda m, fmt="%a %b %d %H:%M": _local(ctx, m, fmt),
            "zone": str(ctx.zone),
            "Role": Role,
            **values,
        },
        status_code=status,
    )


_CLI_HINT = re.compile(r" \(see 'orchestrator [^']*'\)")


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    # The services' messages point CLI users at a command; on a page that is noise.
    message = _CLI_HINT.sub("", message)
    try:
        caller = identify(request)
    except OrchestratorError:
        caller = None
    return render(
        request, "error.html", {"status": status, "message": message}, caller=caller, status=status
    )


def page_caller(request: Request) -> Caller:
    """The signed-in browser; no session sends the browser to the sign-in page."""
    caller = identify(request)
    if caller is None:
        raise SignInFailed("sign in to continue")
    return caller


CallerDep = Annotated[Caller, Depends(page_caller)]


def _form_caller(caller: CallerDep, csrf_token: Annotated[str, Form()] = "") -> Caller:
    check_csrf(caller, csrf_token)
    return caller


FormCallerDep = Annotated[Caller, Depends(_form_caller)]


# -- signing in ------------------------------------------------------------------------


@router.get("/sign-in", response_class=HTMLResponse)
def sign_in_page(request: Request, next: str = "/", why: str = "") -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = render(
        request, "sign_in.html", {"next": _safe_next(next), "why": why[:200], "token": token}
    )
    response.set_cookie(SIGN_IN_COOKIE, token, max_age=900, **_COOKIE)  # type: ignore[arg-type]
    return response


def _safe_next(target: str) -> str:
    # Only a path on this site: never //elsewhere or a scheme.
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@router.post("/sign-in", response_class=HTMLResponse)
def sign_in(
    request: Request,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=256)],
    csrf_token: Annotated[str, Form(max_length=64)] = "",
    next: Annotated[str, Form(max_length=500)] = "/",
) -> Response:
    expected = request.cookies.get(SIGN_IN_COOKIE, "")
    if not expected or not accounts.csrf_matches(expected, csrf_token):
        return _sign_in_again(request, next, "the sign-in form expired: try again", 403)
    try:
        signed = accounts.sign_in(context(request), username, password)
    except OrchestratorError as exc:
        return _sign_in_again(request, next, exc.message, exc.http_status, username)
    response = RedirectResponse(_safe_next(next), status_code=303)
    max_age = int((signed.expires_at - context(request).now()).total_seconds())
    response.set_cookie(SESSION_COOKIE, signed.session_token, max_age=max_age, **_COOKIE)  # type: ignore[arg-type]
    response.delete_cookie(SIGN_IN_COOKIE, path="/")
    return response


def _sign_in_again(
    request: Request, next: str, why: str, status: int, username: str = ""
) -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = render(
        request,
        "sign_in.html",
        {"next": _safe_next(next), "why": why, "token": token, "username": username},
        status=status,
    )
    response.set_cookie(SIGN_IN_COOKIE, token, max_age=900, **_COOKIE)  # type: ignore[arg-type]
    return response


@router.post("/sign-out")
def sign_out(request: Request, caller: FormCallerDep) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        accounts.sign_out(context(request), token)
    response = RedirectResponse("/sign-in?why=" + quote("signed out"), status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# -- home: each role's day ------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def home(request: Request, caller: CallerDep) -> HTMLResponse:
    ctx, actor = context(request), caller.actor
    values: dict[str, Any] = {
        "queue": chain.queue(ctx, actor),
        "buildings": directory.buildings(ctx, actor),
        "deployments": deployments.list_deployments(ctx, actor, limit=10),
    }
    if actor.role in (Role.IT, Role.EDTECH):
        bases = catalog.list_releasables(ctx, actor, Kind.BASE_IMAGE)
        values["base_grid"] = _base_grid(bases)
        values["sunsets"] = sunset.report(ctx, actor, within_days=365).items[:12]
    else:
        values["my_images"] = [
            (v, chain.status(ctx, actor, v.kind, v.ref).steps)
            for v in catalog.list_releasables(ctx, actor, Kind.CUSTOM_IMAGE)
            if v.building in actor.buildings and v.state != State.RETIRED
        ]
    if actor.role is Role.PRINCIPAL:
        values["status_words"] = _principal_words(ctx, actor, values)
    return render(request, "home.html", values, caller=caller)


def _base_grid(
    bases: list[catalog.ReleasableView],
) -> dict[tuple[str, str], list[catalog.ReleasableView]]:
    grid: dict[tuple[str, str], list[catalog.ReleasableView]] = {}
    for v in bases:
        if v.state is State.RETIRED:
            continue
        grid.setdefault((v.platform.value, v.level.value if v.level else "—"), []).append(v)
    return grid


def _principal_words(ctx: Context, actor: Actor, values: Mapping[str, Any]) -> list[str]:
    """What a principal wants to know, in sentences: when is the lab ready, what is pending."""
    words: list[str] = []
    for dep in values["deployments"]:
        if dep.state in ("scheduled", "running", "paused"):
            # Computers the deployment leaves out (a PC for a Mac package) are not counted.
            done = sum(n for s, n in dep.counts.items() if s in ("succeeded", "failed"))
            left_out = dep.counts.get("skipped", 0) + dep.counts.get("cancelled", 0)
            total = sum(dep.counts.values()) - left_out
            failed = dep.counts.get("failed", 0)
            when = min(dep.first_windows.values()) if dep.first_windows else None
            opens = (
                f" Work starts {_local(ctx, when)}." if when and dep.state == "scheduled" else ""
            )
            trouble = f" {failed} failed and will need the technician." if failed else ""
            words.append(
                f"{dep.ref} is {dep.state} for building(s) {', '.join(dep.buildings)}: "
                f"{done} of {total} computers done.{trouble}{opens}"
            )
    for v, steps in values.get("my_images", []):
        pending = next((s for s in steps if s.status == "pending"), None)
        if pending is not None:
            words.append(f"{v.ref} is waiting for its {pending.step.value} step ({pending.who}).")
    if not words:
        words.append("Nothing is pending for your building right now.")
    return words


# -- a building --------------------------------------------------------------------------


@router.get("/buildings/{number}", response_class=HTMLResponse)
def building_page(request: Request, caller: CallerDep, number: str) -> HTMLResponse:
    ctx, actor = context(request), caller.actor
    b = directory.visible_building(ctx, actor, number)
    rooms: dict[str, list[inventory.ClientView]] = {}
    for c in inventory.list_clients(ctx, actor, building=number):
        rooms.setdefault(c.room, []).append(c)
    by_image = reports.clients_by_image(ctx, actor, building=number)
    near = reports.clients_near_sunset(ctx, actor, building=number)
    return render(
        request,
        "building.html",
        {
            "b": b,
            "rooms": rooms,
            "images": catalog.list_releasables(ctx, actor, Kind.CUSTOM_IMAGE, building=number),
            "schedule": windows.schedule(ctx, actor, number, days=7),
            "deployments": [
                d for d in deployments.list_deployments(ctx, actor) if number in d.buildings
            ],
            "chart_images": charts.stacked_bar_chart(charts.clients_by_image_figure(by_image)),
            "chart_sunset": charts.bar_chart(charts.near_sunset_figure(near)),
            "near_table": charts.near_sunset_table(near),
            "point": staging.point_of(ctx, actor, number),
            "stagings": staging.stagings(ctx, actor, number)[:20],
        },
        caller=caller,
    )


# -- an image or package, its chain and its decision form ----------------------------------


@router.get("/items/{kind}/{ref:path}", response_class=HTMLResponse)
def item_page(request: Request, caller: CallerDep, kind: Kind, ref: str) -> HTMLResponse:
    ctx, actor = context(request), caller.actor
    status = chain.status(ctx, actor, kind, ref)
    pending = next((s for s in status.steps if s.status == "pending"), None)
    failing = sorted(
        {
            f"{t.persona.value}:{c.get('name')}"
            for t in status.tests
            if t.current and t.counts and not t.passed
            for c in t.checks
            if not c.get("passed", True)
        }
    )
    return render(
        request,
        "item.html",
        {"s": status, "pending": pending, "failing": failing, "kind": kind},
        caller=caller,
    )


@router.post("/items/{kind}/{ref:path}/decide")
def decide(
    request: Request,
    caller: FormCallerDep,
    kind: Kind,
    ref: str,
    step: Annotated[Step, Form()],
    outcome: Annotated[str, Form(pattern="^(approve|reject)$")],
    reason: Annotated[str, Form(max_length=2000)] = "",
    override: Annotated[list[str] | None, Form(max_length=50)] = None,
) -> Response:
    ctx, actor = context(request), caller.actor
    if outcome == "reject":
        chain.reject(ctx, actor, kind, ref, reason, step=step)
    else:
        chosen = [c for c in (override or []) if c]
        chain.approve(
            ctx,
            actor,
            kind,
            ref,
            reason,
            step=step,
            override=chain.Override(chosen, reason) if chosen else None,
        )
    return RedirectResponse(f"/items/{kind.value}/{quote(ref)}?done={outcome}", status_code=303)


# -- scheduling a deployment -------------------------------------------------------------


@router.get("/deploy", response_class=HTMLResponse)
def deploy_form(
    request: Request, caller: CallerDep, image: str = "", package: str = "", building: str = ""
) -> HTMLResponse:
    ctx, actor = context(request), caller.actor
    released = [
        v
        for v in catalog.list_releasables(ctx, actor)
        if v.state is State.PUBLISHED and v.kind is not Kind.BASE_IMAGE
    ]
    return render(
        request,
        "deploy.html",
        {
            "released": released,
            "image": image,
            "package": package,
            "building": building or next(iter(sorted(actor.buildings)), ""),
            "plan": None,
        },
        caller=caller,
    )


def _targets(what: str) -> dict[str, str | None]:
    kind, _, ref = what.partition(":")
    if kind not in ("image", "package") or not ref:
        raise InvalidInput("choose an image or a package to deploy", field="what")
    return {
        "image": ref if kind == "image" else None,
        "package": ref if kind == "package" else None,
    }


@router.post("/deploy", response_class=HTMLResponse)
def deploy(
    request: Request,
    caller: FormCallerDep,
    what: Annotated[str, Form(max_length=220)],
    building: Annotated[str, Form(max_length=6)],
    rooms: Annotated[str, Form(max_length=400)] = "",
    pilot_per_building: Annotated[int, Form(ge=0, le=1000)] = 0,
    confirm: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    """Preview first (the plan and the windows it will use); create on confirmation."""
    ctx, actor = context(request), caller.actor
    directory.visible_building(ctx, actor, building)
    targets = _targets(what)
    room_list = tuple(r.strip() for r in rooms.split(",") if r.strip())
    if confirm == "yes":
        view = deployments.create(
            ctx,
            actor,
            deployments.DeploymentSpec(
                image=targets["image"],
                package=targets["package"],
                buildings=() if room_list else (building,),
                rooms=tuple(f"{building}/{r}" for r in room_list),
                pilot_per_building=pilot_per_building,
            ),
        )
        return RedirectResponse(f"/deployments/{view.id}", status_code=303)
    plan = deploy_plan.plan(
        ctx,
        actor,
        image=targets["image"],
        package=targets["package"],
        buildings=() if room_list else (building,),
        rooms=tuple(f"{building}/{r}" for r in room_list),
    )
    return render(
        request,
        "deploy.html",
        {
            "released": [],
            "plan": plan,
            "what": what,
            "building": building,
            "rooms": rooms,
            "pilot_per_building": pilot_per_building,
            "schedule": windows.schedule(ctx, actor, building, days=7),
        },
        caller=caller,
    )


@router.get("/deployments/{deployment_id}", response_class=HTMLResponse)
def deployment_page(request: Request, caller: CallerDep, deployment_id: int) -> HTMLResponse:
    ctx, actor = context(request), caller.actor
    return render(
        request,
        "deployment.html",
        {
            "d": deployments.show(ctx, actor, deployment_id),
            "p": deployments.progress(ctx, actor, deployment_id),
            "stagings": staging.deployment_stagings(ctx, actor, deployment_id),
        },
        caller=caller,
    )


@router.post("/deployments/{deployment_id}/control")
def control(
    request: Request,
    caller: FormCallerDep,
    deployment_id: int,
    action: Annotated[str, Form(pattern="^(pause|resume|cancel)$")],
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    ctx, actor = context(request), caller.actor
    if action == "pause":
        deployments.pause(ctx, actor, deployment_id, reason=reason or "paused from the web page")
    elif action == "resume":
        deployments.resume(ctx, actor, deployment_id, reason=reason)
    else:
        deployments.cancel(
            ctx, actor, deployment_id, reason=reason or "cancelled from the web page"
        )
    return RedirectResponse(f"/deployments/{deployment_id}", status_code=303)


# -- everyone: audit trails, charts, one's own account ----------------------------------------


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    caller: CallerDep,
    object_kind: str | None = None,
    object_id: int | None = None,
    building: str | None = None,
) -> HTMLResponse:
    ctx, actor = context(request), caller.actor
    if building:
        directory.visible_building(ctx, actor, building)
    entries = audit.entries(
        ctx,
        actor,
        object_kind=object_kind or None,
        object_id=object_id,
        building=building or None,
        limit=200,
    )
    return render(
        request,
        "audit.html",
        {"entries": list(reversed(entries)), "object_kind": object_kind, "building": building},
        caller=caller,
    )


@router.get("/reports", response_class=HTMLResponse)
def reports_page(request: Request, caller: CallerDep) -> HTMLResponse:
    ctx, actor = context(request), caller.actor
    by_image = charts.clients_by_image_figure(reports.clients_by_image(ctx, actor))
    near = reports.clients_near_sunset(ctx, actor)
    success = charts.deployment_success_figure(reports.deployment_success(ctx, actor))
    return render(
        request,
        "reports.html",
        {
            "chart_images": charts.stacked_bar_chart(by_image),
            "table_images": charts.table(by_image),
            "chart_sunset": charts.bar_chart(charts.near_sunset_figure(near)),
            "near_table": charts.near_sunset_table(near),
            "chart_success": charts.column_chart(success),
            "table_success": charts.table(success),
        },
        caller=caller,
    )


@router.get("/account", response_class=HTMLResponse)
def account_page(request: Request, caller: CallerDep, new_token: str = "") -> HTMLResponse:
    return render(
        request,
        "account.html",
        {"tokens": accounts.tokens(context(request), caller.actor), "new_token": None},
        caller=caller,
    )


@router.post("/account/tokens", response_class=HTMLResponse)
def account_new_token(
    request: Request, caller: FormCallerDep, name: Annotated[str, Form(max_length=64)]
) -> HTMLResponse:
    ctx = context(request)
    _, secret = accounts.create_token(ctx, caller.actor, name)
    return render(
        request,
        "account.html",
        {"tokens": accounts.tokens(ctx, caller.actor), "new_token": secret},
        caller=caller,
    )


@router.post("/account/password", response_class=HTMLResponse)
def account_password(
    request: Request,
    caller: FormCallerDep,
    current: Annotated[str, Form(max_length=256)],
    new: Annotated[str, Form(max_length=256)],
) -> Response:
    ctx = context(request)
    try:
        accounts.authenticate(ctx, caller.actor.username, current)
    except SignInFailed:
        raise Refused("the current password is not right") from None
    accounts.set_password(ctx, caller.actor, caller.actor.username, new)
    response = RedirectResponse("/sign-in?why=" + quote("password changed: sign in again"), 303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
