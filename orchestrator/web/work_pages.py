"""Pages for the district's own work: IT's Approved Technology List, publishing a version,
IT's district-wide rollout of a base image upgrade, and recording a test by hand
(EdTech's or a SecTec's sign-off form per persona, with checks, evidence and attachments).

As everywhere, the services decide who may; these pages only collect the form.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import date
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from orchestrator.domain.states import Kind, Level, State
from orchestrator.errors import InvalidInput
from orchestrator.services import catalog, chain, deploy_plan, deployments, directory, hardware
from orchestrator.web.auth import context
from orchestrator.web.pages import CallerDep, FormCallerDep, render

router = APIRouter(include_in_schema=False)

MAX_ATTACHMENT = 20 * 1024 * 1024
"""Per file sent through the page; larger evidence goes through the command line."""


# -- the Approved Technology List -------------------------------------------------------------


@router.get("/hardware", response_class=HTMLResponse)
def hardware_page(request: Request, caller: CallerDep) -> HTMLResponse:
    ctx = context(request)
    return render(
        request,
        "hardware.html",
        {"models": hardware.list_models(ctx, caller.actor), "today": ctx.today()},
        caller=caller,
    )


@router.post("/hardware")
def hardware_add(
    request: Request,
    caller: FormCallerDep,
    vendor: Annotated[str, Form(max_length=60)],
    model: Annotated[str, Form(max_length=120)],
    platform: Annotated[str, Form(max_length=8)],
    end_of_support: Annotated[date | None, Form()] = None,
) -> Response:
    hardware.add_model(
        context(request),
        caller.actor,
        vendor=vendor,
        model=model,
        platform=platform,
        end_of_support=end_of_support,
    )
    return RedirectResponse("/hardware", status_code=303)


@router.post("/hardware/update")
def hardware_update(
    request: Request,
    caller: FormCallerDep,
    ref: Annotated[str, Form(max_length=200)],
    approved: Annotated[str, Form(pattern="^(yes|no)$")],
) -> Response:
    hardware.update_model(context(request), caller.actor, ref, approved=approved == "yes")
    return RedirectResponse("/hardware", status_code=303)


# -- publishing ---------------------------------------------------------------------------------


@router.post("/items/{kind}/{ref:path}/publish")
def publish(
    request: Request,
    caller: FormCallerDep,
    kind: Kind,
    ref: str,
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    chain.publish(context(request), caller.actor, kind, ref, reason)
    return RedirectResponse(f"/items/{kind.value}/{quote(ref)}?done=publish", status_code=303)


# -- a test recorded by hand, per persona ---------------------------------------------------------


def _checks(text: str) -> list[chain.CheckResult]:
    """One check per line: ``name: pass`` or ``name: fail — what was seen``."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, sep, rest = line.partition(":")
        verdict, _, output = rest.strip().partition(" ")
        if not sep or verdict.lower() not in ("pass", "fail"):
            raise InvalidInput(
                f"line {n} should read 'name: pass' or 'name: fail what was seen'", field="checks"
            )
        out.append(chain.CheckResult(name.strip(), verdict.lower() == "pass", output.strip()))
    return out


@router.post("/items/{kind}/{ref:path}/tests")
def record_test(
    request: Request,
    caller: FormCallerDep,
    kind: Kind,
    ref: str,
    persona: Annotated[str, Form(pattern="^(student|staff)$")],
    checks: Annotated[str, Form(max_length=8000)],
    evidence: Annotated[str, Form(max_length=4000)] = "",
    account: Annotated[str, Form(max_length=64)] = "",
    attachments: Annotated[list[UploadFile] | None, File()] = None,
) -> Response:
    ctx = context(request)
    with tempfile.TemporaryDirectory(prefix="orchestrator-upload-") as folder:
        paths = []
        for i, upload in enumerate(f for f in attachments or [] if f.filename):
            name = Path(upload.filename or "attachment").name or "attachment"
            target = Path(folder) / f"{i}-{name}"
            with target.open("wb") as out:
                shutil.copyfileobj(upload.file, out, 1024 * 1024)
            if target.stat().st_size > MAX_ATTACHMENT:
                raise InvalidInput(
                    f"{name} is over {MAX_ATTACHMENT // (1024 * 1024)} MiB: attach it with "
                    "'orchestrator image record-test --attach'",
                    field="attachments",
                )
            paths.append(str(target))
        chain.record_test(
            ctx,
            caller.actor,
            kind,
            ref,
            persona=persona,
            checks=_checks(checks),
            evidence=evidence,
            attachments=paths,
            account=account,
        )
    return RedirectResponse(
        f"/items/{kind.value}/{quote(ref)}?done=test+recorded+for+{persona}", status_code=303
    )


# -- IT: a district-wide rollout of a base image version -----------------------------------------


@router.get("/rollout", response_class=HTMLResponse)
def rollout_form(request: Request, caller: CallerDep, image: str = "") -> HTMLResponse:
    ctx, actor = context(request), caller.actor
    bases = [
        v
        for v in catalog.list_releasables(ctx, actor, Kind.BASE_IMAGE)
        if v.state is State.PUBLISHED
    ]
    return render(
        request,
        "rollout.html",
        {
            "bases": bases,
            "image": image,
            "buildings": directory.buildings(ctx, actor),
            "plan": None,
        },
        caller=caller,
    )


@router.post("/rollout", response_class=HTMLResponse)
def rollout(
    request: Request,
    caller: FormCallerDep,
    image: Annotated[str, Form(max_length=200)],
    buildings: Annotated[list[str] | None, Form(max_length=500)] = None,
    pilot_per_building: Annotated[int, Form(ge=0, le=1000)] = 1,
    per_building_limit: Annotated[int, Form(ge=1, le=1000)] = 10,
    confirm: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    """Every building of the base's level by default; a pilot per building first."""
    ctx, actor = context(request), caller.actor
    view = catalog.show(ctx, actor, Kind.BASE_IMAGE, image)
    level = view.level
    chosen = tuple(
        buildings
        or [b.number for b in directory.buildings(ctx, actor) if level is None or b.level == level]
    )
    if not chosen:
        raise InvalidInput(
            f"no building is of the {Level(level).value if level else ''} level", field="buildings"
        )
    if confirm == "yes":
        made = deployments.create(
            ctx,
            actor,
            deployments.DeploymentSpec(
                image=image,
                buildings=chosen,
                pilot_per_building=pilot_per_building,
                per_building_limit=per_building_limit,
            ),
        )
        return RedirectResponse(f"/deployments/{made.id}", status_code=303)
    plan = deploy_plan.plan(ctx, actor, image=image, buildings=chosen, listed=False)
    return render(
        request,
        "rollout.html",
        {
            "plan": plan,
            "image": image,
            "chosen": chosen,
            "pilot_per_building": pilot_per_building,
            "per_building_limit": per_building_limit,
        },
        caller=caller,
    )
