"""Lifecycle moves, persisted compare-and-set.

Every state change of a catalog entry goes through :func:`move`: the
lifecycle table (:mod:`orchestrator.domain.lifecycle`) says whether it is
legal, and the write is ``UPDATE ... WHERE state = <expected> AND
state_version = <read>``. The loser of a race gets
:class:`~orchestrator.errors.StaleState`, never a double move.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session

from orchestrator.db.models import Releasable
from orchestrator.domain import lifecycle
from orchestrator.domain.lifecycle import Event
from orchestrator.domain.states import State
from orchestrator.errors import StaleState
from orchestrator.services.refs import ref_of


class Versioned(Protocol):
    """A row with a state moved compare-and-set: ``id``, ``state``, ``state_version``."""

    id: int | None
    state: str
    state_version: int


def compare_and_set(
    session: Session, row: Versioned, expect: str, values: dict[str, Any], *, what: str
) -> None:
    """``UPDATE … SET values, state_version + 1 WHERE id, state = expect, state_version``.

    Raises:
        StaleState: someone else moved or changed ``what`` since it was read.
    """
    table = sa.inspect(type(row)).local_table
    result = session.execute(
        sa.update(table)
        .where(
            table.c.id == row.id,
            table.c.state == expect,
            table.c.state_version == row.state_version,
        )
        .values(state_version=row.state_version + 1, **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise StaleState(
            f"{what} was changed by someone else while you acted "
            f"(it is no longer {expect} as you saw it); look again and retry"
        )
    set_committed_value(row, "state_version", row.state_version + 1)
    for key, value in values.items():
        set_committed_value(row, key, value)


def _cas(session: Session, row: Releasable, expect: State, values: dict[str, Any]) -> None:
    compare_and_set(session, row, expect.value, values, what=ref_of(row))


def move(session: Session, row: Releasable, event: Event, at: datetime) -> State:
    """Fire ``event`` on ``row``: legal per the lifecycle table, persisted compare-and-set.

    Raises:
        InvalidTransition: no such move from the current state.
        StaleState: someone else moved or changed it since it was read.
    """
    current = State(row.state)
    target = lifecycle.next_state(current, event)
    values: dict[str, Any] = {"state": target.value, "updated_at": at}
    if event is Event.PUBLISH:
        values["published_at"] = at
    _cas(session, row, current, values)
    return target


def claim(session: Session, row: Releasable) -> None:
    """Compare-and-set the version without moving: no one else changes it until we commit.

    Raises:
        StaleState: it changed since it was read.
    """
    _cas(session, row, State(row.state), {})
