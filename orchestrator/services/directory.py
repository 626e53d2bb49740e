"""Buildings and people, and who a request acts as."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlmodel import Session, col, select

from orchestrator.db.models import Building, Person, PersonBuilding
from orchestrator.db.session import transaction
from orchestrator.domain.policy import Action, Actor, may
from orchestrator.domain.states import Level, Role
from orchestrator.errors import NotFound
from orchestrator.services.context import Context


def load_actor(session: Session, username: str) -> Actor:
    """The active person ``username`` as an actor with the building numbers it covers.

    Raises:
        NotFound: no such active person.
    """
    person = session.exec(select(Person).where(Person.username == username)).first()
    if person is None or not person.active:
        raise NotFound(f"no active person {username!r} (see 'orchestrator people')")
    numbers = session.exec(
        select(Building.number)
        .join(PersonBuilding, col(PersonBuilding.building_id) == col(Building.id))
        .where(PersonBuilding.person_id == person.id)
    ).all()
    assert person.id is not None
    return Actor(
        person_id=person.id,
        username=person.username,
        role=Role(person.role),
        buildings=frozenset(numbers),
    )


def actor(ctx: Context, username: str) -> Actor:
    with transaction(ctx.engine) as session:
        return load_actor(session, username)


def get_building(session: Session, number: str) -> Building:
    """Raises: NotFound."""
    b = session.exec(select(Building).where(Building.number == number)).first()
    if b is None:
        raise NotFound(f"no building {number!r} (see 'orchestrator buildings')")
    return b


@dataclass(frozen=True)
class BuildingView:
    number: str
    name: str
    level: Level
    staff: tuple[str, ...]


def visible_building_row(session: Session, actor: Actor, number: str) -> Building:
    """One building's row, if the actor may see it.

    Raises:
        NotFound: no such building, or one the actor may not see (building staff are
            not told whether another building's number exists).
    """
    if not may(actor, Action.READ_CATALOG, building=number):
        raise NotFound(f"no building {number!r} (see 'orchestrator buildings')")
    return get_building(session, number)


def visible_building(ctx: Context, actor: Actor, number: str) -> BuildingView:
    """One building, with the people who cover it, if the actor may see it.

    Raises:
        NotFound: as :func:`visible_building_row`.
    """
    with transaction(ctx.engine) as session:
        b = visible_building_row(session, actor, number)
        staff = session.exec(
            select(Person)
            .join(PersonBuilding, col(PersonBuilding.person_id) == col(Person.id))
            .where(PersonBuilding.building_id == b.id)
        ).all()
        return BuildingView(
            b.number,
            b.name,
            Level(b.level),
            tuple(sorted(f"{p.username} ({p.role})" for p in staff)),
        )


def buildings(ctx: Context, actor: Actor) -> Sequence[BuildingView]:
    """Buildings the actor may see, with the people who cover each."""
    with transaction(ctx.engine) as session:
        staff: dict[int, list[str]] = {}
        for pb, p in session.exec(
            select(PersonBuilding, Person).where(col(PersonBuilding.person_id) == col(Person.id))
        ):
            staff.setdefault(pb.building_id, []).append(f"{p.username} ({p.role})")
        return [
            BuildingView(b.number, b.name, Level(b.level), tuple(sorted(staff.get(b.id or 0, []))))
            for b in session.exec(select(Building).order_by(col(Building.number)))
            if may(actor, Action.READ_CATALOG, building=b.number)
        ]


@dataclass(frozen=True)
class PersonView:
    username: str
    display_name: str
    role: Role
    buildings: tuple[str, ...]


def people(ctx: Context) -> Sequence[PersonView]:
    """Everyone who can act in the orchestrator (hardware and software roles only)."""
    with transaction(ctx.engine) as session:
        numbers: dict[int, list[str]] = {}
        for pb, b in session.exec(
            select(PersonBuilding, Building).where(
                col(PersonBuilding.building_id) == col(Building.id)
            )
        ):
            numbers.setdefault(pb.person_id, []).append(b.number)
        return [
            PersonView(
                p.username, p.display_name, Role(p.role), tuple(sorted(numbers.get(p.id or 0, [])))
            )
            for p in session.exec(
                select(Person).where(col(Person.active)).order_by(col(Person.username))
            )
            if p.role != Role.SYSTEM.value
        ]
