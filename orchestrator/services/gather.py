"""``clients gather``: the ``gather_facts`` playbook on one building or all of
the actor's, each client's record updated from what it reports (see
:func:`orchestrator.services.inventory.apply_facts`) and flagged when its
model is off the Approved Technology List or past end of support.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlmodel import col, select

from orchestrator.db.models import Building, Client
from orchestrator.db.session import transaction
from orchestrator.domain import validation
from orchestrator.domain.policy import Action, Actor, authorize, authorize_role, may
from orchestrator.errors import InvalidInput, NotFound
from orchestrator.remote.ansible import HostEvent, PlaybookRunner
from orchestrator.services import inventory, runs
from orchestrator.services.context import Context


@dataclass(frozen=True)
class GatherView:
    """One ``gather_facts`` run per building, and the clients as they now stand."""

    runs: list[runs.RunView]
    clients: list[inventory.ClientView]


def gather(
    ctx: Context,
    actor: Actor,
    *,
    credentials: runs.Credentials,
    building: str | None = None,
    room: str | None = None,
    runner: PlaybookRunner | None = None,
    forks: int = 10,
    on_event: Callable[[HostEvent], None] = lambda _e: None,
    should_cancel: Callable[[], bool] = lambda: False,
) -> GatherView:
    """Gather facts from one building's clients (or one room of it), or from every
    building the actor may run on.

    Raises:
        Refused: the building is not the actor's, or the role runs no playbooks.
        NotFound: unknown building, no clients to gather from.
    """
    if room is not None and building is None:
        raise InvalidInput("a room is in a building: give --building too", field="room")
    if building is not None:
        validation.building_number(building)
        authorize(actor, Action.RUN_PLAYBOOK, building=building)
        numbers = [building]
    else:
        authorize_role(actor, Action.RUN_PLAYBOOK)
        with transaction(ctx.engine) as session:
            having_clients = session.exec(
                select(Building.number)
                .join(Client, col(Client.building_id) == col(Building.id))
                .distinct()
                .order_by(col(Building.number))
            ).all()
        numbers = [n for n in having_clients if may(actor, Action.RUN_PLAYBOOK, building=n)]
        if not numbers:
            raise NotFound("no clients in any building you may run playbooks on")
    done = []
    for number in numbers:
        if should_cancel():
            break
        done.append(
            runs.run_playbook(
                ctx,
                actor,
                "gather_facts",
                building=number,
                room=room,
                credentials=credentials,
                runner=runner,
                forks=forks,
                on_event=on_event,
                should_cancel=should_cancel,
            )
        )
    seen = [
        c
        for number in numbers
        for c in inventory.list_clients(ctx, actor, building=number, room=room)
    ]
    return GatherView(done, seen)
