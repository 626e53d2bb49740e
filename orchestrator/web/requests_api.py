"""``/api/v1/requests``: the request intake for scripts and other tools (one service call each)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from orchestrator.domain.states import Kind
from orchestrator.errors import InvalidInput
from orchestrator.services import requests
from orchestrator.services.deployments import DeploymentSpec, DeploymentView
from orchestrator.services.requests import CategoryView, RequestView
from orchestrator.web.api import ERRORS, Strict, no_nul_in_parameters
from orchestrator.web.auth import ActorDep, ContextDep

router = APIRouter(prefix="/api/v1", dependencies=[Depends(no_nul_in_parameters)])

RequestId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get(
    "/request-categories",
    operation_id="list_request_categories",
    response_model=list[CategoryView],
    responses=ERRORS,
)
def list_request_categories(ctx: ContextDep, actor: ActorDep) -> list[CategoryView]:
    """The district's categories and where each is routed."""
    return requests.categories(ctx)


class CategoryIn(Strict):
    key: str = Field(min_length=1, max_length=40)
    label: str = Field(min_length=1, max_length=120)
    queue: Literal["technician", "department"]
    department: str = Field(default="", max_length=120)
    why: str = Field(default="", max_length=500, description="said to whoever files under it")


@router.post(
    "/request-categories",
    operation_id="add_request_category",
    response_model=CategoryView,
    status_code=201,
    responses=ERRORS,
)
def add_request_category(ctx: ContextDep, actor: ActorDep, body: CategoryIn) -> CategoryView:
    """IT adds a category, with where its requests go and, for a department, why."""
    return requests.add_category(
        ctx,
        actor,
        body.key,
        requests.CategorySpec(
            label=body.label, queue=body.queue, department=body.department, why=body.why
        ),
    )


class CategoryChangeIn(Strict):
    label: str | None = Field(default=None, min_length=1, max_length=120)
    queue: Literal["technician", "department"] | None = None
    department: str | None = Field(default=None, max_length=120)
    why: str | None = Field(default=None, max_length=500)
    active: bool | None = None


@router.patch(
    "/request-categories/{key}",
    operation_id="edit_request_category",
    response_model=CategoryView,
    responses=ERRORS,
)
def edit_request_category(
    ctx: ContextDep,
    actor: ActorDep,
    key: Annotated[str, Path(min_length=1, max_length=40)],
    body: CategoryChangeIn,
) -> CategoryView:
    """IT changes or retires (``active: false``) a category; filed requests keep their routing."""
    return requests.edit_category(
        ctx,
        actor,
        key,
        requests.CategorySpec(
            label=body.label,
            queue=body.queue,
            department=body.department,
            why=body.why,
            active=body.active,
        ),
    )


class RequestIn(Strict):
    building: str = Field(min_length=1, max_length=6)
    category: str = Field(min_length=1, max_length=40)
    description: str = Field(min_length=1, max_length=requests.MAX_DESCRIPTION)
    urgency: Literal["low", "normal", "high", "urgent"] = "normal"
    room: str | None = Field(default=None, max_length=40)
    clients: list[Annotated[str, Field(max_length=63)]] = Field(
        default_factory=list, max_length=requests.MAX_CLIENTS
    )


@router.post(
    "/requests",
    operation_id="file_request",
    response_model=RequestView,
    status_code=201,
    responses=ERRORS,
)
def file_request(ctx: ContextDep, actor: ActorDep, body: RequestIn) -> RequestView:
    """File a request for a building; the answer says where it was routed and why."""
    return requests.file_request(
        ctx,
        actor,
        requests.RequestSpec(
            building=body.building,
            category=body.category,
            description=body.description,
            urgency=body.urgency,
            room=body.room,
            clients=body.clients,
        ),
    )


@router.get(
    "/requests", operation_id="list_requests", response_model=list[RequestView], responses=ERRORS
)
def list_requests(
    ctx: ContextDep,
    actor: ActorDep,
    building: Annotated[str | None, Query(max_length=6)] = None,
    open_only: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[RequestView]:
    return requests.list_requests(ctx, actor, building=building, open_only=open_only, limit=limit)


@router.get(
    "/requests/{request_id}",
    operation_id="get_request",
    response_model=RequestView,
    responses=ERRORS,
)
def get_request(ctx: ContextDep, actor: ActorDep, request_id: RequestId) -> RequestView:
    return requests.show(ctx, actor, request_id)


class RequestActionIn(Strict):
    action: Literal["take", "escalate", "close"]
    text: str = Field(default="", max_length=2000, description="the reason or the note")


@router.post(
    "/requests/{request_id}/actions",
    operation_id="act_on_request",
    response_model=RequestView,
    responses=ERRORS,
)
def act_on_request(
    ctx: ContextDep, actor: ActorDep, request_id: RequestId, body: RequestActionIn
) -> RequestView:
    """Take, escalate (with a reason) or close (with a note) a request."""
    if body.action == "take":
        return requests.take(ctx, actor, request_id)
    if body.action == "escalate":
        return requests.escalate(ctx, actor, request_id, reason=body.text)
    return requests.close(ctx, actor, request_id, note=body.text)


class ChangeIn(Strict):
    kind: Literal["custom_image", "package", "deployment"]
    ref: str = Field(
        min_length=1,
        max_length=200,
        description="101/lab@1.2, scratch@3.30, or a deployment's number",
    )


@router.post(
    "/requests/{request_id}/changes",
    operation_id="link_request_change",
    response_model=RequestView,
    responses=ERRORS,
)
def link_request_change(
    ctx: ContextDep, actor: ActorDep, request_id: RequestId, body: ChangeIn
) -> RequestView:
    """Link the customized image, package or deployment that answers a request.

    A linked deployment closes the request when it finishes on the clients the
    request named."""
    if body.kind != "deployment":
        return requests.link_item(ctx, actor, request_id, Kind(body.kind), body.ref)
    ref = body.ref.strip().lstrip("#")
    if not (ref.isascii() and ref.isdigit() and 0 < int(ref) < 2**31):
        raise InvalidInput(f"{body.ref!r} is not a deployment's number", field="ref")
    return requests.link_deployment(ctx, actor, request_id, int(ref))


class RequestDeploymentIn(Strict):
    package: str | None = Field(default=None, max_length=200)
    image: str | None = Field(default=None, max_length=200)
    not_before: datetime | None = None
    deadline: datetime | None = None
    pilot_per_building: int = Field(default=0, ge=0, le=1000)
    per_building_limit: int = Field(default=10, ge=1, le=1000)
    failure_threshold_pct: float = Field(default=10.0, ge=0, le=100)


class RequestDeploymentOut(BaseModel):
    deployment: DeploymentView
    request: RequestView


@router.post(
    "/requests/{request_id}/deployments",
    operation_id="deploy_for_request",
    response_model=RequestDeploymentOut,
    status_code=201,
    responses=ERRORS,
)
def deploy_for_request(
    ctx: ContextDep, actor: ActorDep, request_id: RequestId, body: RequestDeploymentIn
) -> RequestDeploymentOut:
    """Create the deployment that answers a request, aimed at the clients (or the
    room, or the building) it names, in the building's windows, and link it."""
    made, shown = requests.deploy(
        ctx,
        actor,
        request_id,
        DeploymentSpec(
            package=body.package,
            image=body.image,
            not_before=body.not_before,
            deadline=body.deadline,
            pilot_per_building=body.pilot_per_building,
            per_building_limit=body.per_building_limit,
            failure_threshold_pct=body.failure_threshold_pct,
        ),
    )
    return RequestDeploymentOut(deployment=made, request=shown)
