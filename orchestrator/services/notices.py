"""Warnings for people: sunset lead times, rebase needed. Written once per key,
so a check that runs twice (or a scheduler that restarts) warns once."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session, col, select

from orchestrator.db.models import Building, Notice, Person, PersonBuilding, Releasable
from orchestrator.db.session import transaction
from orchestrator.domain.policy import Action, Actor, may
from orchestrator.domain.states import BUILDING_TECH_ROLES, Role
from orchestrator.services.context import Context


def post(
    session: Session,
    ctx: Context,
    *,
    key: str,
    releasable: Releasable | None,
    recipients: Sequence[str],
    message: str,
) -> bool:
    """Write the notice unless one with ``key`` exists. Returns True if written."""
    if session.exec(select(Notice.id).where(Notice.key == key)).first() is not None:
        return False
    building = None
    if releasable is not None and releasable.scope_key != "*":
        building = releasable.scope_key
    session.add(
        Notice(
            key=key,
            at=ctx.now(),
            releasable_id=releasable.id if releasable else None,
            building=building,
            recipients=sorted(set(recipients)),
            message=message,
        )
    )
    session.flush()
    return True


def building_techs(session: Session, number: str) -> list[str]:
    return list(
        session.exec(
            select(Person.username)
            .join(PersonBuilding, col(PersonBuilding.person_id) == col(Person.id))
            .join(Building, col(Building.id) == col(PersonBuilding.building_id))
            .where(
                Building.number == number,
                col(Person.role).in_([r.value for r in BUILDING_TECH_ROLES]),
            )
        ).all()
    )


def role_members(session: Session, *roles: Role) -> list[str]:
    return list(
        session.exec(
            select(Person.username).where(col(Person.role).in_([r.value for r in roles]))
        ).all()
    )


def for_actor(ctx: Context, actor: Actor, *, limit: int = 50) -> list[Notice]:
    """Notices addressed to the actor, or about buildings and district items it may see."""
    with transaction(ctx.engine) as session:
        rows = session.exec(select(Notice).order_by(col(Notice.id).desc())).all()
        out = [
            n
            for n in rows
            if actor.username in n.recipients
            or (
                actor.role in (Role.IT, Role.EDTECH)
                and may(actor, Action.READ_CATALOG, building=n.building)
            )
        ]
        return out[:limit]
