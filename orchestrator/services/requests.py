"""Requests for technical work: one intake, routed by the category's duty scope.

Anyone in a building files its requests (a principal for the school; a building
tech on someone's behalf; IT and EdTech for any building). The category, from
the district's catalog (``request_category``, seeded from
:data:`orchestrator.domain.requests.DEFAULT_CATEGORIES`, IT's to change), decides
where it goes: the building technician's queue (SecTec or BTC), escalating to
IT; or the department that owns the work, never a technician's queue, with the
reason said to the person filing. A technician cannot take a request outside
their duties, whoever asks; the refusal is audited.

Every step (filed, taken, escalated, closed, refused) is in the audit log.
Descriptions are kept as typed (bounded, no control characters) and rendered
escaped by the pages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import CursorResult
from sqlmodel import Session, col, select

from orchestrator.db.models import Building, Client, Person, RequestCategory, ServiceRequest
from orchestrator.db.session import transaction
from orchestrator.domain import validation
from orchestrator.domain.policy import Action, Actor, authorize, may
from orchestrator.domain.requests import (
    DEFAULT_CATEGORIES,
    FINAL_STATES,
    Queue,
    RequestState,
    Urgency,
)
from orchestrator.domain.states import Role
from orchestrator.errors import Conflict, InvalidInput, NotFound, Refused, StaleState
from orchestrator.services import audit
from orchestrator.services.context import Context
from orchestrator.services.directory import visible_building_row

MAX_DESCRIPTION = 4000
MAX_CLIENTS = 200


def seed_categories(session: Session) -> None:
    """Store the district default categories where none are stored yet."""
    if session.exec(select(RequestCategory.id)).first() is not None:
        return
    for c in DEFAULT_CATEGORIES:
        session.add(
            RequestCategory(
                key=c.key, label=c.label, queue=c.queue.value, department=c.department, why=c.why
            )
        )


@dataclass(frozen=True)
class CategoryView:
    key: str
    label: str
    queue: Queue
    department: str
    why: str


def categories(ctx: Context) -> list[CategoryView]:
    with transaction(ctx.engine) as session:
        return [
            _category_view(c)
            for c in session.exec(
                select(RequestCategory)
                .where(col(RequestCategory.active))
                .order_by(col(RequestCategory.id))
            )
        ]


def _category_view(c: RequestCategory) -> CategoryView:
    return CategoryView(c.key, c.label, Queue(c.queue), c.department, c.why)


@dataclass(frozen=True)
class RequestSpec:
    building: str
    category: str
    description: str
    urgency: str = Urgency.NORMAL.value
    room: str | None = None
    clients: Sequence[str] = ()


@dataclass(frozen=True)
class RequestView:
    id: int
    building: str
    category: str
    category_label: str
    queue: Queue
    department: str
    routed_because: str
    """Why it went to a department and not the technician ('' when it did not)."""
    description: str
    urgency: Urgency
    room: str | None
    clients: list[str]
    state: RequestState
    filed_by: str
    assignee: str | None
    note: str
    created_at: datetime
    first_response_at: datetime | None
    closed_at: datetime | None

    @property
    def routed(self) -> str:
        if self.queue is Queue.DEPARTMENT:
            return f"sent to {self.department}"
        return "the building technician's queue"


def _subject(r: ServiceRequest, building: str) -> audit.Subject:
    return audit.Subject("request", f"request {r.id}", r.id, building)


def file_request(ctx: Context, actor: Actor, spec: RequestSpec) -> RequestView:
    """File a request for a building; it is routed by its category at once.

    Raises:
        NotFound: an unknown building (or one the actor may not see), an unknown
            category, a client that is not the building's.
        Refused: filing for a building that is not the actor's.
        InvalidInput: an empty or oversized description, a bad urgency or room,
            too many clients.
    """
    number = validation.building_number(spec.building)
    description = validation.text(
        spec.description, field="description", max_len=MAX_DESCRIPTION, required=True
    )
    try:
        urgency = Urgency(spec.urgency)
    except ValueError:
        raise InvalidInput(
            f"{spec.urgency!r} is not an urgency ({', '.join(u.value for u in Urgency)})",
            field="urgency",
        ) from None
    room = validation.label(spec.room, field="room", max_len=40) if spec.room else None
    if len(spec.clients) > MAX_CLIENTS:
        raise InvalidInput(f"at most {MAX_CLIENTS} clients per request", field="clients")
    now = ctx.now()
    with transaction(ctx.engine) as session:
        building = visible_building_row(session, actor, number)
        authorize(actor, Action.FILE_REQUEST, building=number)
        category = _category(session, spec.category)
        hostnames = sorted(set(spec.clients))
        if hostnames:
            found = {
                c.hostname
                for c in session.exec(
                    select(Client).where(
                        col(Client.hostname).in_(hostnames), Client.building_id == building.id
                    )
                )
            }
            missing = [h for h in hostnames if h not in found]
            if missing:
                raise NotFound(
                    f"no client {missing[0]!r} in building {number} (see 'orchestrator "
                    "clients list')"
                )
        assert building.id is not None and category.id is not None
        row = ServiceRequest(
            building_id=building.id,
            category_id=category.id,
            queue=category.queue,
            department=category.department,
            description=description,
            urgency=urgency.value,
            room=room,
            clients=hostnames,
            state=RequestState.OPEN.value,
            filed_by_id=actor.person_id,
            created_at=now,
        )
        session.add(row)
        session.flush()
        audit.append(
            session,
            at=now,
            actor=actor,
            action="request.file",
            subject=_subject(row, number),
            after={
                "category": category.key,
                "queue": category.queue,
                "department": category.department,
                "urgency": urgency.value,
            },
        )
        return _view(session, row)


def _category(session: Session, key: str) -> RequestCategory:
    c = session.exec(
        select(RequestCategory).where(
            RequestCategory.key == key.strip().lower(), col(RequestCategory.active)
        )
    ).first()
    if c is None:
        known = ", ".join(
            r.key
            for r in session.exec(
                select(RequestCategory)
                .where(col(RequestCategory.active))
                .order_by(col(RequestCategory.id))
            )
        )
        raise NotFound(f"no request category {key!r} (one of: {known})")
    return c


def _view(session: Session, r: ServiceRequest) -> RequestView:
    assert r.id is not None
    building = session.get(Building, r.building_id)
    category = session.get(RequestCategory, r.category_id)
    filer = session.get(Person, r.filed_by_id)
    assignee = session.get(Person, r.assignee_id) if r.assignee_id else None
    assert building is not None and category is not None and filer is not None
    return RequestView(
        id=r.id,
        building=building.number,
        category=category.key,
        category_label=category.label,
        queue=Queue(r.queue),
        department=r.department,
        routed_because=category.why if r.queue == Queue.DEPARTMENT.value else "",
        description=r.description,
        urgency=Urgency(r.urgency),
        room=r.room,
        clients=list(r.clients),
        state=RequestState(r.state),
        filed_by=filer.username,
        assignee=assignee.username if assignee else None,
        note=r.note,
        created_at=r.created_at,
        first_response_at=r.first_response_at,
        closed_at=r.closed_at,
    )


def _visible(session: Session, actor: Actor, request_id: int) -> tuple[ServiceRequest, str]:
    r = session.get(ServiceRequest, request_id) if 0 < request_id < 2**31 else None
    building = session.get(Building, r.building_id) if r is not None else None
    if (
        r is None
        or building is None
        or not may(actor, Action.READ_CATALOG, building=building.number)
    ):
        raise NotFound(f"no request {request_id} (see 'orchestrator requests list')")
    return r, building.number


def show(ctx: Context, actor: Actor, request_id: int) -> RequestView:
    """Raises: NotFound (also for another building's request)."""
    with transaction(ctx.engine) as session:
        r, _ = _visible(session, actor, request_id)
        return _view(session, r)


def list_requests(
    ctx: Context,
    actor: Actor,
    *,
    building: str | None = None,
    open_only: bool = False,
    limit: int = 200,
) -> list[RequestView]:
    """Requests the actor may see, newest first: building staff their buildings'.

    A building technician's list leaves out what was routed to a department:
    that is not their work (IT, EdTech and principals see everything filed).
    """
    if not 1 <= limit <= 1000:
        raise InvalidInput("must be between 1 and 1000", field="limit")
    with transaction(ctx.engine) as session:
        q = select(ServiceRequest, Building).where(
            col(ServiceRequest.building_id) == col(Building.id)
        )
        if building is not None:
            visible_building_row(session, actor, validation.building_number(building))
            q = q.where(Building.number == building)
        if open_only:
            q = q.where(col(ServiceRequest.state) != RequestState.CLOSED.value)
        if actor.role in (Role.SECTEC, Role.BTC):
            q = q.where(ServiceRequest.queue == Queue.TECHNICIAN.value)
        rows = [
            r
            for r, b in session.exec(q.order_by(col(ServiceRequest.id).desc()))
            if may(actor, Action.READ_CATALOG, building=b.number)
        ][:limit]
        return [_view(session, r) for r in rows]


def _move(
    session: Session,
    r: ServiceRequest,
    *,
    to: RequestState,
    expect: frozenset[RequestState],
    what: str,
    action: str,
    actor: Actor,
    building: str,
    now: datetime,
    reason: str = "",
) -> None:
    """Compare-and-set the request's state, count the first response, audit the step."""
    state = RequestState(r.state)
    if state not in expect:
        raise Conflict(f"request {r.id} is {state.value}: it cannot be {what}")
    read = r.state_version
    moved = session.execute(
        sa.update(ServiceRequest)
        .where(col(ServiceRequest.id) == r.id, col(ServiceRequest.state_version) == read)
        .values(state=to.value, state_version=read + 1)
    )
    if cast(CursorResult[Any], moved).rowcount != 1:
        raise StaleState(f"request {r.id} was changed by someone else just now: look again")
    session.refresh(r)
    r.first_response_at = r.first_response_at or now
    session.add(r)
    audit.append(
        session,
        at=now,
        actor=actor,
        action=action,
        subject=_subject(r, building),
        reason=reason,
    )


def take(ctx: Context, actor: Actor, request_id: int) -> RequestView:
    """The building's technician (or IT) takes a request to work on it.

    Raises:
        NotFound, Refused (not their building; a category outside a technician's
        duties: refused whoever asks, and the refusal is audited), Conflict.
    """
    now = ctx.now()
    with transaction(ctx.engine) as session:
        r, number = _visible(session, actor, request_id)
        outside = r.queue == Queue.DEPARTMENT.value
        why = ""
        if outside:
            category = session.get(RequestCategory, r.category_id)
            why = category.why if category else ""
    if outside:
        _audit_refusal(ctx, actor, request_id, number, why)
        raise Refused(
            f"request {request_id} is for {r.department}, not a building technician: {why}"
        )
    with transaction(ctx.engine) as session:
        r, number = _visible(session, actor, request_id)
        authorize(actor, Action.WORK_REQUEST, building=number)
        _move(
            session,
            r,
            to=RequestState.TAKEN,
            expect=frozenset({RequestState.OPEN, RequestState.ESCALATED}),
            what="taken",
            action="request.take",
            actor=actor,
            building=number,
            now=now,
        )
        r.assignee_id = actor.person_id
        session.add(r)
        return _view(session, r)


def _audit_refusal(ctx: Context, actor: Actor, request_id: int, number: str, why: str) -> None:
    with transaction(ctx.engine) as session:
        r = session.get(ServiceRequest, request_id)
        assert r is not None
        audit.append(
            session,
            at=ctx.now(),
            actor=actor,
            action="request.take_refused",
            subject=_subject(r, number),
            reason=why[:500],
        )


def escalate(ctx: Context, actor: Actor, request_id: int, *, reason: str) -> RequestView:
    """The building's technician passes a request to IT, with a reason.

    Raises: NotFound, Refused, InvalidInput (no reason), Conflict.
    """
    reason = validation.text(reason, field="reason", max_len=2000, required=True)
    now = ctx.now()
    with transaction(ctx.engine) as session:
        r, number = _visible(session, actor, request_id)
        authorize(actor, Action.WORK_REQUEST, building=number)
        if r.queue != Queue.TECHNICIAN.value:
            raise Conflict(f"request {request_id} is {r.department}'s, not the technicians'")
        _move(
            session,
            r,
            to=RequestState.ESCALATED,
            expect=frozenset({RequestState.OPEN, RequestState.TAKEN}),
            what="escalated",
            action="request.escalate",
            actor=actor,
            building=number,
            now=now,
            reason=reason,
        )
        r.assignee_id = None
        session.add(r)
        return _view(session, r)


def close(ctx: Context, actor: Actor, request_id: int, *, note: str) -> RequestView:
    """Close a request with a note: whoever works it, or whoever filed it (withdrawn).

    Raises: NotFound, Refused, InvalidInput (no note), Conflict (already closed).
    """
    note = validation.text(note, field="note", max_len=2000, required=True)
    now = ctx.now()
    with transaction(ctx.engine) as session:
        r, number = _visible(session, actor, request_id)
        if r.filed_by_id != actor.person_id:
            authorize(actor, Action.WORK_REQUEST, building=number)
            if r.queue == Queue.DEPARTMENT.value and actor.role is not Role.IT:
                raise Refused(f"request {request_id} is {r.department}'s to close")
        _move(
            session,
            r,
            to=RequestState.CLOSED,
            expect=frozenset(s for s in RequestState if s not in FINAL_STATES),
            what="closed",
            action="request.close",
            actor=actor,
            building=number,
            now=now,
            reason=note,
        )
        r.note, r.closed_at = note, now
        session.add(r)
        return _view(session, r)
