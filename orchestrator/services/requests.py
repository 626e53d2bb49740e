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

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import CursorResult
from sqlmodel import Session, col, select

from orchestrator.db.models import (
    Building,
    Client,
    Deployment,
    DeploymentClient,
    Person,
    Releasable,
    RequestCategory,
    RequestChange,
    ServiceRequest,
)
from orchestrator.db.session import transaction
from orchestrator.domain import validation
from orchestrator.domain.policy import SYSTEM_ACTOR, Action, Actor, authorize, may
from orchestrator.domain.requests import (
    DEFAULT_CATEGORIES,
    FINAL_STATES,
    Queue,
    RequestState,
    Urgency,
)
from orchestrator.domain.rollout import ClientState, DeploymentState
from orchestrator.domain.states import Kind, Role
from orchestrator.errors import Conflict, InvalidInput, NotFound, Refused, StaleState
from orchestrator.services import audit, catalog, deployments, releasables
from orchestrator.services.context import Context
from orchestrator.services.directory import visible_building_row
from orchestrator.services.refs import building_of, ref_of

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
    active: bool = True


def categories(ctx: Context, *, include_retired: bool = False) -> list[CategoryView]:
    """The categories a request may be filed under (with ``include_retired``, all)."""
    with transaction(ctx.engine) as session:
        q = select(RequestCategory).order_by(col(RequestCategory.id))
        if not include_retired:
            q = q.where(col(RequestCategory.active))
        return [_category_view(c) for c in session.exec(q)]


def _category_view(c: RequestCategory) -> CategoryView:
    return CategoryView(c.key, c.label, Queue(c.queue), c.department, c.why, c.active)


_CATEGORY_KEY = re.compile(r"[a-z][a-z0-9_]{1,39}")


@dataclass(frozen=True)
class CategorySpec:
    """A category as IT writes it; ``None`` leaves a field as it is (on edit)."""

    label: str | None = None
    queue: str | None = None
    department: str | None = None
    why: str | None = None
    active: bool | None = None


def _one_line(value: str, *, field: str, max_len: int) -> str:
    value = validation.text(value, field=field, max_len=max_len, required=True)
    if "\n" in value or "\t" in value:
        raise InvalidInput("must be one line", field=field)
    return value


def _checked_category(row: RequestCategory, spec: CategorySpec) -> None:
    """Apply ``spec`` to ``row``, or raise without having changed it."""
    label = _one_line(spec.label, field="label", max_len=120) if spec.label is not None else None
    queue = row.queue
    if spec.queue is not None:
        try:
            queue = Queue(spec.queue.strip().lower()).value
        except ValueError:
            raise InvalidInput(
                f"{spec.queue!r} is not a queue (technician or department)", field="queue"
            ) from None
    department = row.department if spec.department is None else spec.department.strip()
    why = row.why if spec.why is None else spec.why
    if queue == Queue.TECHNICIAN.value:
        # The building's technician works it: no department, and nothing to explain.
        department, why = "", ""
    else:
        department = _one_line(department, field="department", max_len=120)
        why = validation.text(why, field="why", max_len=500, required=True)
    row.label = label if label is not None else row.label
    row.queue, row.department, row.why = queue, department, why
    if spec.active is not None:
        row.active = spec.active


def _category_subject(row: RequestCategory) -> audit.Subject:
    return audit.Subject("request_category", row.key, row.id)


def _category_state(row: RequestCategory) -> dict[str, Any]:
    return {
        "label": row.label,
        "queue": row.queue,
        "department": row.department,
        "why": row.why,
        "active": row.active,
    }


def add_category(ctx: Context, actor: Actor, key: str, spec: CategorySpec) -> CategoryView:
    """IT adds a category; requests filed under it are routed by its queue.

    A department's category needs the department and the reason said to the
    person filing (why it is not the building technician's work).

    Raises: Refused (not IT), InvalidInput, Conflict (the key exists, retired or not).
    """
    authorize(actor, Action.MANAGE_REQUEST_CATEGORIES, building=None)
    key = key.strip().lower()
    if not _CATEGORY_KEY.fullmatch(key):
        raise InvalidInput(
            f"{key!r} is not a category key (2-40 of a-z, 0-9 and _, starting with a letter)",
            field="key",
        )
    if spec.label is None or spec.queue is None:
        raise InvalidInput("a new category needs a label and a queue", field="label")
    with transaction(ctx.engine) as session:
        if session.exec(select(RequestCategory.id).where(RequestCategory.key == key)).first():
            raise Conflict(
                f"request category {key!r} exists already (change it with "
                "'orchestrator requests category edit')"
            )
        row = RequestCategory(key=key, label="", queue=Queue.TECHNICIAN.value)
        _checked_category(row, replace(spec, active=True))
        session.add(row)
        session.flush()
        audit.append(
            session,
            at=ctx.now(),
            actor=actor,
            action="request_category.add",
            subject=_category_subject(row),
            after=_category_state(row),
        )
        return _category_view(row)


def edit_category(ctx: Context, actor: Actor, key: str, spec: CategorySpec) -> CategoryView:
    """IT changes a category (or retires it, ``active=False``, or brings it back).

    Requests already filed keep the routing they were filed with; new ones take
    the category as it is now.

    Raises: Refused (not IT), NotFound, InvalidInput, Conflict (nothing to change).
    """
    authorize(actor, Action.MANAGE_REQUEST_CATEGORIES, building=None)
    with transaction(ctx.engine) as session:
        row = session.exec(
            select(RequestCategory).where(RequestCategory.key == key.strip().lower())
        ).first()
        if row is None:
            raise NotFound(f"no request category {key!r} (see 'orchestrator requests categories')")
        before = _category_state(row)
        _checked_category(row, spec)
        after = _category_state(row)
        if after == before:
            raise Conflict(f"request category {row.key!r} is like that already")
        session.add(row)
        audit.append(
            session,
            at=ctx.now(),
            actor=actor,
            action="request_category.edit",
            subject=_category_subject(row),
            before={k: v for k, v in before.items() if after[k] != v},
            after={k: v for k, v in after.items() if before[k] != v},
        )
        return _category_view(row)


@dataclass(frozen=True)
class RequestSpec:
    building: str
    category: str
    description: str
    urgency: str = Urgency.NORMAL.value
    room: str | None = None
    clients: Sequence[str] = ()


@dataclass(frozen=True)
class ChangeView:
    """A change linked to a request, and where it stands now."""

    kind: str
    """``custom_image``, ``package`` or ``deployment``."""
    id: int
    ref: str
    """``101/lab@1.2``, ``scratch@3.30`` or ``deployment 12 (scratch@3.30)``."""
    status: str
    """The item's chain state, or the deployment's state."""
    detail: str = ""
    """For a deployment: how the clients the request named stand in it."""


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
    changes: list[ChangeView] = field(default_factory=list)

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
        changes=_changes(session, r),
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
    _refuse_outside_duties(ctx, actor, request_id, action="request.take_refused")
    with transaction(ctx.engine) as session:
        r, number = _visible(session, actor, request_id)
        authorize(actor, Action.WORK_REQUEST, building=number)
        _take_it(session, r, actor, number, now)
        return _view(session, r)


def _take_it(
    session: Session, r: ServiceRequest, actor: Actor, number: str, now: datetime, reason: str = ""
) -> None:
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
        reason=reason,
    )
    r.assignee_id = actor.person_id
    session.add(r)


def _close_it(
    session: Session, r: ServiceRequest, actor: Actor, number: str, now: datetime, note: str
) -> None:
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


def _refuse_outside_duties(ctx: Context, actor: Actor, request_id: int, *, action: str) -> None:
    """Refuse, and audit the refusal, work on a request routed to a department.

    Whoever asks: a department's work is never a building technician's. The
    refusal is written in a transaction of its own, after the read has ended,
    so the error that follows does not undo it.

    Raises: NotFound (a request the actor may not see), Refused.
    """
    with transaction(ctx.engine) as session:
        r, number = _visible(session, actor, request_id)
        if r.queue != Queue.DEPARTMENT.value:
            return
        category = session.get(RequestCategory, r.category_id)
        why, department = (category.why if category else ""), r.department
    with transaction(ctx.engine) as session:
        row = session.get(ServiceRequest, request_id)
        assert row is not None
        audit.append(
            session,
            at=ctx.now(),
            actor=actor,
            action=action,
            subject=_subject(row, number),
            reason=why[:500],
        )
    raise Refused(f"request {request_id} is for {department}, not a building technician: {why}")


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
        _close_it(session, r, actor, number, now, note)
        return _view(session, r)


# ---------------------------------------------------------------------------
# The changes that answer a request
# ---------------------------------------------------------------------------

LINKABLE_KINDS = (Kind.CUSTOM_IMAGE, Kind.PACKAGE)
"""What a request links to besides deployments: a building's image or a package."""


def _named_clients(session: Session, r: ServiceRequest) -> list[str]:
    """The clients a request is about: those it named, else its room's (may be none)."""
    if r.clients:
        return list(r.clients)
    if r.room:
        return sorted(
            h
            for h in session.exec(
                select(Client.hostname).where(
                    Client.building_id == r.building_id,
                    sa.func.lower(Client.room) == r.room.lower(),
                    col(Client.test_client).is_(False),
                )
            )
        )
    return []


def _deployment_clients(session: Session, r: ServiceRequest, deployment_id: int) -> dict[str, str]:
    """Hostname → state of the deployment's clients the request is about.

    With nothing named, every client the deployment includes in the request's
    building (excluded ones, wave 0, are not its work).
    """
    building = session.get(Building, r.building_id)
    assert building is not None
    rows = session.exec(
        select(DeploymentClient.hostname, DeploymentClient.state, DeploymentClient.wave).where(
            DeploymentClient.deployment_id == deployment_id,
            DeploymentClient.building == building.number,
        )
    ).all()
    named = _named_clients(session, r)
    if named:
        states = {h: s for h, s, _ in rows}
        return {h: states.get(h, "not in it") for h in named}
    return {h: s for h, s, wave in rows if wave > 0}


def _deployment_detail(states: dict[str, str]) -> str:
    if not states:
        return "none of this building's clients are in it"
    done = sum(1 for s in states.values() if s == ClientState.SUCCEEDED.value)
    others = sorted(f"{h} {s}" for h, s in states.items() if s != ClientState.SUCCEEDED.value)
    text = f"{done} of {len(states)} clients done"
    if others:
        text += f" ({', '.join(others[:5])}{', …' if len(others) > 5 else ''})"
    return text


def _changes(session: Session, r: ServiceRequest) -> list[ChangeView]:
    out: list[ChangeView] = []
    for link in session.exec(
        select(RequestChange)
        .where(RequestChange.request_id == r.id)
        .order_by(col(RequestChange.id))
    ):
        if link.releasable_id is not None:
            item = session.get(Releasable, link.releasable_id)
            assert item is not None and item.id is not None
            out.append(ChangeView(item.kind, item.id, ref_of(item), item.state))
        else:
            assert link.deployment_id is not None
            dep = session.get(Deployment, link.deployment_id)
            assert dep is not None and dep.id is not None
            states = _deployment_clients(session, r, dep.id)
            out.append(
                ChangeView(
                    "deployment",
                    dep.id,
                    f"deployment {dep.id} ({dep.ref})",
                    dep.state,
                    _deployment_detail(states),
                )
            )
    return out


def _linkable(session: Session, actor: Actor, request_id: int) -> tuple[ServiceRequest, str]:
    """The request, when the actor may answer it with a change.

    Callers first call :func:`_refuse_outside_duties`, which audits that refusal.
    """
    r, number = _visible(session, actor, request_id)
    authorize(actor, Action.WORK_REQUEST, building=number)
    if r.queue == Queue.DEPARTMENT.value:  # checked (and audited) before the transaction
        raise Refused(f"request {request_id} is for {r.department}, not a building technician")
    if RequestState(r.state) in FINAL_STATES:
        raise Conflict(f"request {request_id} is closed: file a new one")
    return r, number


def _answered(
    session: Session,
    r: ServiceRequest,
    actor: Actor,
    number: str,
    now: datetime,
    *,
    link: RequestChange,
    what: str,
) -> None:
    """Record the link; an open or escalated request is taken by whoever answered it."""
    same = (
        RequestChange.releasable_id == link.releasable_id
        if link.releasable_id is not None
        else RequestChange.deployment_id == link.deployment_id
    )
    if session.exec(select(RequestChange.id).where(RequestChange.request_id == r.id, same)).first():
        raise Conflict(f"{what} is already linked to request {r.id}")
    session.add(link)
    if RequestState(r.state) in (RequestState.OPEN, RequestState.ESCALATED):
        _take_it(session, r, actor, number, now, reason=f"answered by {what}")
    audit.append(
        session,
        at=now,
        actor=actor,
        action="request.link",
        subject=_subject(r, number),
        after={"change": what},
    )


def link_item(ctx: Context, actor: Actor, request_id: int, kind: Kind, ref: str) -> RequestView:
    """Link the customized image or package that answers a request.

    A customized image must be the request's building's; a package serves any.

    Raises:
        NotFound: the request or the item (or one the actor may not see).
        Refused: not the actor's building to work; a department's request (audited).
        InvalidInput: a base image, or another building's customized image.
        Conflict: the request is closed, or the item is linked already.
    """
    if kind not in LINKABLE_KINDS:
        raise InvalidInput(
            f"a request is answered by a customized image, a package or a deployment, "
            f"not a {kind.label}",
            field="kind",
        )
    _refuse_outside_duties(ctx, actor, request_id, action="request.link_refused")
    now = ctx.now()
    with transaction(ctx.engine) as session:
        r, number = _linkable(session, actor, request_id)
        item = releasables.resolve(session, actor, kind, ref)
        if kind is Kind.CUSTOM_IMAGE and building_of(item) != number:
            raise InvalidInput(
                f"{ref_of(item)} is building {building_of(item)}'s image and request "
                f"{request_id} is building {number}'s",
                field="ref",
            )
        assert item.id is not None and actor.person_id is not None
        _answered(
            session,
            r,
            actor,
            number,
            now,
            link=RequestChange(
                request_id=request_id,
                releasable_id=item.id,
                linked_by_id=actor.person_id,
                linked_at=now,
            ),
            what=f"{kind.label} {ref_of(item)}",
        )
        return _view(session, r)


def link_deployment(ctx: Context, actor: Actor, request_id: int, deployment_id: int) -> RequestView:
    """Link a deployment that reaches the request's building; it closes the request
    when it finishes on the clients the request named.

    Raises: NotFound (the request or deployment), Refused, InvalidInput (it does
    not reach the request's building), Conflict (closed, or linked already).
    """
    _refuse_outside_duties(ctx, actor, request_id, action="request.link_refused")
    shown = deployments.show(ctx, actor, deployment_id)
    now = ctx.now()
    with transaction(ctx.engine) as session:
        r, number = _linkable(session, actor, request_id)
        if number not in shown.buildings:
            raise InvalidInput(
                f"deployment {deployment_id} does not reach building {number} "
                f"(it reaches {', '.join(shown.buildings) or 'no building'})",
                field="deployment",
            )
        assert actor.person_id is not None
        _answered(
            session,
            r,
            actor,
            number,
            now,
            link=RequestChange(
                request_id=request_id,
                deployment_id=deployment_id,
                linked_by_id=actor.person_id,
                linked_at=now,
            ),
            what=f"deployment {deployment_id}",
        )
        return _view(session, r)


def deployment_spec(ctx: Context, actor: Actor, request_id: int) -> deployments.DeploymentSpec:
    """The targets of a deployment that answers the request: the clients it named,
    else its room, else its whole building.

    Raises: NotFound, Refused, Conflict (as :func:`link_deployment`).
    """
    _refuse_outside_duties(ctx, actor, request_id, action="request.link_refused")
    with transaction(ctx.engine) as session:
        r, number = _linkable(session, actor, request_id)
        if r.clients:
            return deployments.DeploymentSpec(clients=tuple(r.clients))
        if r.room:
            return deployments.DeploymentSpec(rooms=(f"{number}/{r.room}",))
        return deployments.DeploymentSpec(buildings=(number,))


def deploy(
    ctx: Context,
    actor: Actor,
    request_id: int,
    spec: deployments.DeploymentSpec,
) -> tuple[deployments.DeploymentView, RequestView]:
    """Create the deployment that answers a request, aimed at what it names, and link it.

    ``spec`` says what to deploy and when (its targets are ignored: they are the
    request's, from :func:`deployment_spec`). The deployment is created exactly
    as ``deploy create`` would, windows, chain and sunset rules unchanged.

    Raises: whatever :func:`deployments.create` and :func:`link_deployment` raise.
    """
    targets = deployment_spec(ctx, actor, request_id)
    made = deployments.create(
        ctx,
        actor,
        replace(
            spec,
            buildings=targets.buildings,
            rooms=targets.rooms,
            clients=targets.clients,
            groups=(),
        ),
    )
    return made, link_deployment(ctx, actor, request_id, made.id)


def _check_answerable(ctx: Context, actor: Actor, request_id: int) -> str:
    """The request's building, when the actor may answer it with a change now."""
    _refuse_outside_duties(ctx, actor, request_id, action="request.link_refused")
    with transaction(ctx.engine) as session:
        _, number = _linkable(session, actor, request_id)
        return number


def create_image_for(
    ctx: Context, actor: Actor, request_id: int, spec: catalog.CustomImageSpec
) -> tuple[catalog.ReleasableView, RequestView]:
    """Create the customized image that answers a request (for the request's
    building), and link it. The approval chain applies to it as to any other.

    Raises: what :func:`catalog.create_custom_image` and :func:`link_item` raise;
    InvalidInput when the image is for another building than the request.
    """
    number = _check_answerable(ctx, actor, request_id)
    if validation.building_number(spec.building) != number:
        raise InvalidInput(
            f"request {request_id} is building {number}'s: make the image for it",
            field="building",
        )
    made = catalog.create_custom_image(ctx, actor, spec)
    return made, link_item(ctx, actor, request_id, Kind.CUSTOM_IMAGE, made.ref)


def create_package_for(
    ctx: Context, actor: Actor, request_id: int, spec: catalog.PackageSpec
) -> tuple[catalog.ReleasableView, RequestView]:
    """Create the software package that answers a request, and link it.

    Raises: what :func:`catalog.create_package` and :func:`link_item` raise.
    """
    _check_answerable(ctx, actor, request_id)
    made = catalog.create_package(ctx, actor, spec)
    return made, link_item(ctx, actor, request_id, Kind.PACKAGE, made.ref)


def deployment_ended(session: Session, deployment_id: int, now: datetime) -> list[int]:
    """A deployment completed: close the requests it answers where it succeeded on
    every client they are about; say in their audit what is left otherwise.

    Runs inside the scheduler's transaction that completes the deployment.
    Returns the ids of the requests it closed.
    """
    dep = session.get(Deployment, deployment_id)
    if dep is None or DeploymentState(dep.state) is not DeploymentState.COMPLETED:
        return []
    closed: list[int] = []
    for r in session.exec(
        select(ServiceRequest)
        .join(RequestChange, col(RequestChange.request_id) == col(ServiceRequest.id))
        .where(
            RequestChange.deployment_id == deployment_id,
            col(ServiceRequest.state) != RequestState.CLOSED.value,
        )
        .order_by(col(ServiceRequest.id))
    ):
        assert r.id is not None
        building = session.get(Building, r.building_id)
        assert building is not None
        states = _deployment_clients(session, r, deployment_id)
        left = {h: s for h, s in states.items() if s != ClientState.SUCCEEDED.value}
        if states and not left:
            hosts = ", ".join(sorted(states))
            note = f"deployment {deployment_id} ({dep.ref}) finished on {hosts}"
            note = note if len(note) <= 2000 else note[:1999] + "…"
            _close_it(session, r, SYSTEM_ACTOR, building.number, now, note)
            closed.append(r.id)
        else:
            audit.append(
                session,
                at=now,
                actor=SYSTEM_ACTOR,
                action="request.change_finished",
                subject=_subject(r, building.number),
                reason=(
                    f"deployment {deployment_id} completed; still open: "
                    + _deployment_detail(states)
                )[:2000],
            )
    return closed
