"""Sunset dates: the report people read, and the daily check the scheduler runs.

On and after an item's effective sunset no deployment of it may start; the
daily check moves published and deprecated items to ``sunset`` and warns
their owners at the configured lead times before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from sqlmodel import Session, col, select

from orchestrator.db.models import Notice, Releasable
from orchestrator.db.session import transaction
from orchestrator.domain import sunset as rules
from orchestrator.domain.lifecycle import Event
from orchestrator.domain.policy import SYSTEM_ACTOR, Action, Actor, authorize, may
from orchestrator.domain.states import Kind, Role, State
from orchestrator.services import catalog, image_store, notices
from orchestrator.services.context import Context
from orchestrator.services.transitions import move


@dataclass(frozen=True)
class SunsetRow:
    item: catalog.ReleasableView
    rebase: str | None = None
    """For a derivative that must be rebased: what is happening about it."""


@dataclass(frozen=True)
class SunsetReport:
    today: date
    items: list[SunsetRow]
    must_rebase: list[SunsetRow]


def report(ctx: Context, actor: Actor, *, within_days: int | None = None) -> SunsetReport:
    """Images and packages with a sunset, soonest first, and the derivatives to rebase."""
    today = ctx.today()
    with transaction(ctx.engine) as session:
        rows = [
            r
            for r in session.exec(
                select(Releasable).where(col(Releasable.state) != State.RETIRED.value)
            )
            if may(actor, Action.READ_CATALOG, building=catalog.building_of(r))
        ]
        views = catalog.views(session, rows, today)
        items = [
            SunsetRow(v)
            for v in views
            if v.days_to_sunset is not None
            and (within_days is None or v.days_to_sunset <= within_days)
        ]
        items.sort(key=lambda r: (r.item.days_to_sunset or 0, r.item.ref))
        rebase_rows = [
            SunsetRow(v, _rebase_status(session, v))
            for v in views
            if v.needs_rebase and v.state is not State.RETIRED
        ]
        return SunsetReport(today, items, rebase_rows)


def _rebase_status(session: Session, v: catalog.ReleasableView) -> str:
    successor = session.exec(
        select(Releasable)
        .where(
            Releasable.supersedes_id == v.id,
            col(Releasable.state) != State.RETIRED.value,
        )
        .order_by(col(Releasable.id).desc())
    ).first()
    if successor is None:
        return "rebase needed"
    return f"rebase in progress: {catalog.ref_of(successor)} ({successor.state})"


@dataclass
class DailyCheck:
    sunset: list[str] = field(default_factory=list)
    warned: list[str] = field(default_factory=list)


def run_daily_check(ctx: Context, actor: Actor = SYSTEM_ACTOR) -> DailyCheck:
    """Move items past their effective sunset to ``sunset`` and warn owners of
    items nearing it. Idempotent: running it twice a day changes nothing more.

    Raises:
        Refused: someone other than the system or IT asked for it.
    """
    authorize(actor, Action.RUN_SUNSET_CHECK, building=None)
    today = ctx.today()
    result = DailyCheck()
    with transaction(ctx.engine) as session:
        rows = session.exec(
            select(Releasable)
            .where(col(Releasable.state).in_([State.PUBLISHED.value, State.DEPRECATED.value]))
            .order_by(col(Releasable.id))
        ).all()
        for row in rows:
            eff = catalog.effective_sunset_of(session, row)
            if eff is None:
                continue
            ref = catalog.ref_of(row)
            owners = _owners(session, row)
            if rules.is_sunset(eff, today):
                before = catalog.snapshot(row)
                move(session, row, Event.SUNSET, ctx.now())
                catalog.record_change(
                    session,
                    ctx,
                    actor,
                    row,
                    f"{row.kind}.sunset",
                    before,
                    f"effective sunset {eff.isoformat()} reached",
                )
                notices.post(
                    session,
                    ctx,
                    key=f"sunset:{row.id}",
                    releasable=row,
                    recipients=owners,
                    message=f"{Kind(row.kind).label} {ref} reached its sunset on "
                    f"{eff.isoformat()}: no new deployment of it may start",
                )
                result.sunset.append(ref)
                continue
            warned = _warned_leads(session, row)
            due = rules.warning_due(eff, today, warned, ctx.lead_days)
            if due is not None:
                days = rules.days_to_sunset(eff, today)
                notices.post(
                    session,
                    ctx,
                    key=f"sunset-warning:{row.id}:{due}",
                    releasable=row,
                    recipients=owners,
                    message=f"{Kind(row.kind).label} {ref} reaches its sunset on "
                    f"{eff.isoformat()} ({days} days)",
                )
                result.warned.append(ref)
    # A sunset moved since a release makes its signed manifest stale: sign it anew.
    image_store.refresh_signatures(ctx)
    return result


def _warned_leads(session: Session, row: Releasable) -> set[int]:
    prefix = f"sunset-warning:{row.id}:"
    keys = session.exec(select(Notice.key).where(col(Notice.key).startswith(prefix))).all()
    return {int(k.removeprefix(prefix)) for k in keys}


def _owners(session: Session, row: Releasable) -> list[str]:
    if row.scope_key != catalog.DISTRICT_SCOPE:
        return notices.building_techs(session, row.scope_key)
    return notices.role_members(session, Role.IT, Role.EDTECH)
