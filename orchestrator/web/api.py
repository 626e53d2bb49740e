"""The REST API under ``/api/v1``: each route parses, calls one service, returns its view.

No rule lives here. Who may see or do what is the services' to decide (another
building's objects are not found, as they are everywhere); the routes only
carry the caller (:mod:`orchestrator.web.auth`) and turn the services' errors
into statuses (:mod:`orchestrator.web.app`). Every operation has a stable
``operationId``, the name scripts and generated clients will use.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.domain.states import Kind, Level, Platform, State, Step
from orchestrator.errors import InvalidInput
from orchestrator.services import (
    accounts,
    audit,
    catalog,
    chain,
    deploy_plan,
    deployments,
    directory,
    inventory,
    staging,
    sunset,
)
from orchestrator.services.catalog import ReleasableView
from orchestrator.services.deploy_plan import Plan
from orchestrator.services.deployments import DeploymentProgress, DeploymentSpec, DeploymentView
from orchestrator.services.inventory import ClientView
from orchestrator.services.staging import DeliveryStaging
from orchestrator.services.sunset import SunsetReport
from orchestrator.web.auth import ActorDep, ContextDep

NUL = "\x00"


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return NUL in value
    if isinstance(value, list | tuple):
        return any(_holds_nul(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    return False


def no_nul_in_parameters(request: Request) -> None:
    """Raises: InvalidInput, for a NUL character in a path or query parameter.

    No name, reference or reason the orchestrator keeps may hold one, and PostgreSQL
    answers one in a query with an error instead of "no such thing".
    """
    for name, value in [*request.path_params.items(), *request.query_params.multi_items()]:
        if _holds_nul(value):
            raise InvalidInput("must not contain a NUL character", field=name)


router = APIRouter(prefix="/api/v1", dependencies=[Depends(no_nul_in_parameters)])


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": words}
    for status, words in (
        (400, "The body could not be read: not JSON, or not UTF-8"),
        (401, "Not signed in, or the token is unknown, revoked or expired"),
        (403, "The role, building scope or approval chain does not allow it"),
        (404, "No such thing, or nothing the caller may see"),
        (409, "Its state does not allow it, or it already exists"),
        (422, "A value is malformed or out of range (the message names it)"),
    )
}


MAX_ID = 2**31 - 1
"""The largest id a row can have: PostgreSQL's ``integer`` (a larger one is an error there)."""
DeploymentId = Annotated[int, Path(ge=1, le=MAX_ID)]


class Strict(BaseModel):
    """A request body: no field it does not name, no NUL character in any text."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if _holds_nul(value):
            raise ValueError("must not contain a NUL character")
        return value


# -- who, where ----------------------------------------------------------------------


class Me(BaseModel):
    username: str
    role: str
    buildings: list[str]
    describe: str


@router.get("/me", operation_id="get_me", response_model=Me, responses=ERRORS)
def get_me(actor: ActorDep) -> Me:
    return Me(
        username=actor.username,
        role=actor.role.value,
        buildings=sorted(actor.buildings),
        describe=actor.describe(),
    )


class BuildingOut(BaseModel):
    number: str
    name: str
    level: Level
    staff: list[str]


@router.get(
    "/buildings",
    operation_id="list_buildings",
    response_model=list[BuildingOut],
    responses=ERRORS,
)
def list_buildings(ctx: ContextDep, actor: ActorDep) -> list[BuildingOut]:
    return [
        BuildingOut(number=b.number, name=b.name, level=b.level, staff=list(b.staff))
        for b in directory.buildings(ctx, actor)
    ]


@router.get(
    "/buildings/{number}/clients",
    operation_id="list_building_clients",
    response_model=list[ClientView],
    responses=ERRORS,
)
def list_building_clients(
    ctx: ContextDep,
    actor: ActorDep,
    number: str,
    room: Annotated[str | None, Query(max_length=40)] = None,
) -> list[ClientView]:
    directory.visible_building(ctx, actor, number)
    return inventory.list_clients(ctx, actor, building=number, room=room)


# -- the catalog and its chain -----------------------------------------------------------


@router.get(
    "/catalog",
    operation_id="list_catalog",
    response_model=list[ReleasableView],
    responses=ERRORS,
)
def list_catalog(
    ctx: ContextDep,
    actor: ActorDep,
    kind: Kind | None = None,
    state: State | None = None,
    platform: Platform | None = None,
    level: Level | None = None,
    building: Annotated[str | None, Query(max_length=6)] = None,
) -> list[ReleasableView]:
    if building is not None:
        directory.visible_building(ctx, actor, building)
    return catalog.list_releasables(
        ctx, actor, kind, state=state, building=building, platform=platform, level=level
    )


@router.get(
    "/catalog/{kind}/{ref:path}",
    operation_id="get_catalog_item",
    response_model=ReleasableView,
    responses=ERRORS,
)
def get_catalog_item(ctx: ContextDep, actor: ActorDep, kind: Kind, ref: str) -> ReleasableView:
    return catalog.show(ctx, actor, kind, ref)


class StepOut(BaseModel):
    step: Step
    status: str
    who: str
    decided_by: str | None
    at: datetime | None
    reason: str


class TestRunOut(BaseModel):
    id: int
    persona: str
    account: str
    passed: bool
    actor: str
    at: datetime
    current: bool
    counts: bool
    client: str | None


class ChainOut(BaseModel):
    item: ReleasableView
    steps: list[StepOut]
    tests: list[TestRunOut]


@router.get(
    "/chain/{kind}/{ref:path}",
    operation_id="get_chain_status",
    response_model=ChainOut,
    responses=ERRORS,
)
def get_chain_status(ctx: ContextDep, actor: ActorDep, kind: Kind, ref: str) -> ChainOut:
    s = chain.status(ctx, actor, kind, ref)
    return ChainOut(
        item=s.item,
        steps=[
            StepOut(
                step=x.step,
                status=x.status,
                who=x.who,
                decided_by=x.decided_by,
                at=x.at,
                reason=x.reason,
            )
            for x in s.steps
        ],
        tests=[
            TestRunOut(
                id=t.id,
                persona=t.persona.value,
                account=t.account,
                passed=t.passed,
                actor=t.actor,
                at=t.at,
                current=t.current,
                counts=t.counts,
                client=t.client,
            )
            for t in s.tests
        ],
    )


class QueueItem(BaseModel):
    item: ReleasableView
    step: Step


@router.get(
    "/queue", operation_id="list_my_queue", response_model=list[QueueItem], responses=ERRORS
)
def list_my_queue(ctx: ContextDep, actor: ActorDep) -> list[QueueItem]:
    """What awaits the caller's decision now (review, test or publish)."""
    return [QueueItem(item=v, step=s) for v, s in chain.queue(ctx, actor)]


class DecisionIn(Strict):
    kind: Kind
    ref: str = Field(min_length=1, max_length=200)
    step: Step
    outcome: Literal["approve", "reject"]
    reason: str = Field(default="", max_length=2000)
    override_checks: list[Annotated[str, Field(max_length=120)]] = Field(
        default_factory=list, max_length=50
    )


@router.post(
    "/decisions",
    operation_id="decide_step",
    response_model=ReleasableView,
    responses=ERRORS,
)
def decide_step(ctx: ContextDep, actor: ActorDep, body: DecisionIn) -> ReleasableView:
    """Approve or reject the step the caller judged (review or test)."""
    if body.outcome == "reject":
        return chain.reject(ctx, actor, body.kind, body.ref, body.reason, step=body.step)
    override = chain.Override(body.override_checks, body.reason) if body.override_checks else None
    return chain.approve(
        ctx, actor, body.kind, body.ref, body.reason, step=body.step, override=override
    )


@router.get(
    "/sunset", operation_id="get_sunset_report", response_model=SunsetReport, responses=ERRORS
)
def get_sunset_report(
    ctx: ContextDep,
    actor: ActorDep,
    within_days: Annotated[int | None, Query(ge=0, le=3650)] = None,
) -> SunsetReport:
    return sunset.report(ctx, actor, within_days=within_days)


# -- deployments ---------------------------------------------------------------------------


class TargetsIn(Strict):
    package: str | None = Field(default=None, max_length=200)
    image: str | None = Field(default=None, max_length=200)
    buildings: list[Annotated[str, Field(max_length=6)]] = Field(
        default_factory=list, max_length=500
    )
    rooms: list[Annotated[str, Field(max_length=60)]] = Field(default_factory=list, max_length=500)
    clients: list[Annotated[str, Field(max_length=63)]] = Field(
        default_factory=list, max_length=5000
    )


@router.post(
    "/deployment-plans",
    operation_id="plan_deployment",
    response_model=Plan,
    responses=ERRORS,
)
def plan_deployment(ctx: ContextDep, actor: ActorDep, body: TargetsIn) -> Plan:
    """Who a deployment would reach and who not, with the reasons; nothing is created."""
    return deploy_plan.plan(
        ctx,
        actor,
        package=body.package,
        image=body.image,
        buildings=body.buildings,
        rooms=body.rooms,
        clients=body.clients,
    )


class DeploymentIn(TargetsIn):
    not_before: datetime | None = None
    deadline: datetime | None = None
    pilot_per_building: int = Field(default=0, ge=0, le=1000)
    per_building_limit: int = Field(default=10, ge=1, le=1000)
    district_limit: int = Field(default=50, ge=1, le=10000)
    failure_threshold_pct: float = Field(default=10.0, ge=0, le=100)


@router.post(
    "/deployments",
    operation_id="create_deployment",
    response_model=DeploymentView,
    status_code=201,
    responses=ERRORS | {200: {"model": DeploymentView, "description": "A replay"}},
)
def create_deployment(
    ctx: ContextDep,
    actor: ActorDep,
    body: DeploymentIn,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> DeploymentView:
    """Create a deployment as its plan shows it. With ``Idempotency-Key``, a replay of
    the same request returns the first deployment (200) instead of making another."""
    spec = DeploymentSpec(
        package=body.package,
        image=body.image,
        buildings=tuple(body.buildings),
        rooms=tuple(body.rooms),
        clients=tuple(body.clients),
        not_before=body.not_before,
        deadline=body.deadline,
        pilot_per_building=body.pilot_per_building,
        per_building_limit=body.per_building_limit,
        district_limit=body.district_limit,
        failure_threshold_pct=body.failure_threshold_pct,
    )
    if idempotency_key is None:
        return deployments.create(ctx, actor, spec)
    view, made = deployments.create_once(ctx, actor, spec, idempotency_key)
    if not made:
        response.status_code = 200
    return view


@router.get(
    "/deployments",
    operation_id="list_deployments",
    response_model=list[DeploymentView],
    responses=ERRORS,
)
def list_deployments(
    ctx: ContextDep, actor: ActorDep, limit: Annotated[int, Query(ge=1, le=200)] = 20
) -> list[DeploymentView]:
    return deployments.list_deployments(ctx, actor, limit=limit)


@router.get(
    "/deployments/{deployment_id}",
    operation_id="get_deployment",
    response_model=DeploymentView,
    responses=ERRORS,
)
def get_deployment(ctx: ContextDep, actor: ActorDep, deployment_id: DeploymentId) -> DeploymentView:
    return deployments.show(ctx, actor, deployment_id)


@router.get(
    "/deployments/{deployment_id}/progress",
    operation_id="get_deployment_progress",
    response_model=DeploymentProgress,
    responses=ERRORS,
)
def get_deployment_progress(
    ctx: ContextDep, actor: ActorDep, deployment_id: DeploymentId
) -> DeploymentProgress:
    return deployments.progress(ctx, actor, deployment_id)


@router.get(
    "/deployments/{deployment_id}/stagings",
    operation_id="list_deployment_stagings",
    response_model=list[DeliveryStaging],
    responses=ERRORS,
)
def list_deployment_stagings(
    ctx: ContextDep, actor: ActorDep, deployment_id: DeploymentId
) -> list[DeliveryStaging]:
    """Per building it reaches, whether its distribution point holds what it delivers."""
    return staging.deployment_stagings(ctx, actor, deployment_id)


class ControlIn(Strict):
    action: Literal["pause", "resume", "cancel"]
    reason: str = Field(default="", max_length=500)


@router.post(
    "/deployments/{deployment_id}/control",
    operation_id="control_deployment",
    response_model=DeploymentView,
    responses=ERRORS,
)
def control_deployment(
    ctx: ContextDep,
    actor: ActorDep,
    deployment_id: DeploymentId,
    body: ControlIn,
) -> DeploymentView:
    if body.action == "pause":
        return deployments.pause(ctx, actor, deployment_id, reason=body.reason)
    if body.action == "resume":
        return deployments.resume(ctx, actor, deployment_id, reason=body.reason)
    return deployments.cancel(ctx, actor, deployment_id, reason=body.reason)


# -- the audit trail -----------------------------------------------------------------------


class AuditOut(BaseModel):
    seq: int
    at: datetime
    actor: str
    role: str
    action: str
    object_kind: str
    object_ref: str
    building: str | None
    reason: str


@router.get(
    "/audit", operation_id="list_audit_entries", response_model=list[AuditOut], responses=ERRORS
)
def list_audit_entries(
    ctx: ContextDep,
    actor: ActorDep,
    object_kind: Annotated[str | None, Query(max_length=40)] = None,
    object_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    building: Annotated[str | None, Query(max_length=6)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditOut]:
    if building is not None:
        directory.visible_building(ctx, actor, building)
    return [
        AuditOut(
            seq=e.seq,
            at=e.at,
            actor=e.actor,
            role=e.role,
            action=e.action,
            object_kind=e.object_kind,
            object_ref=e.object_ref,
            building=e.building,
            reason=e.reason,
        )
        for e in audit.entries(
            ctx, actor, object_kind=object_kind, object_id=object_id, building=building, limit=limit
        )
    ]


# -- API tokens ----------------------------------------------------------------------------


class TokenOut(BaseModel):
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked: bool


class NewTokenOut(TokenOut):
    token: str = Field(description="The secret: shown this once, never again")


class TokenIn(Strict):
    name: str = Field(min_length=1, max_length=64)
    days: int | None = Field(default=90, ge=1, le=366)


def _token_out(t: accounts.TokenView) -> dict[str, Any]:
    return {
        "name": t.name,
        "prefix": t.prefix,
        "created_at": t.created_at,
        "expires_at": t.expires_at,
        "last_used_at": t.last_used_at,
        "revoked": t.revoked,
    }


@router.get("/tokens", operation_id="list_tokens", response_model=list[TokenOut], responses=ERRORS)
def list_tokens(ctx: ContextDep, actor: ActorDep) -> list[TokenOut]:
    return [TokenOut(**_token_out(t)) for t in accounts.tokens(ctx, actor)]


@router.post(
    "/tokens",
    operation_id="create_token",
    response_model=NewTokenOut,
    status_code=201,
    responses=ERRORS,
)
def create_token(ctx: ContextDep, actor: ActorDep, body: TokenIn) -> NewTokenOut:
    view, secret = accounts.create_token(ctx, actor, body.name, days=body.days)
    return NewTokenOut(**_token_out(view), token=secret)


@router.delete("/tokens/{name}", operation_id="revoke_token", status_code=204, responses=ERRORS)
def revoke_token(ctx: ContextDep, actor: ActorDep, name: str) -> Response:
    accounts.revoke_token(ctx, actor, name)
    return Response(status_code=204)
