"""Carrying a scheduled deployment out: one step at a time, and again after a crash.

:func:`tick` is one step of one deployment at ``ctx.now()``; the scheduler
calls it again and again, and it never sleeps. Each tick, in order:

1. the gates at each start: the thing is still released and not sunset (at
   its sunset the deployment is cancelled with that reason, audited as
   ``deployment.cancel`` by the system), and its deadline has not passed
   (else the deployment fails, audited as ``deployment.fail``);
2. the window: when no building of the current wave may start now, a running
   deployment goes back to scheduled (``window_closed``) and
   :attr:`TickResult.next_at` says when the next window opens; a scheduled
   one whose window is open starts running (``window_opened``);
3. retries: unreachable clients whose backoff has run out go back to pending
   (``retry_due``) or fail (``give_up``, after :data:`rollout.MAX_ATTEMPTS`);
4. the current wave (the lowest with clients not yet terminal; so the pilot
   runs alone first): :func:`rollout.pick_next` chooses whom to start under
   the deployment's limits, among the wave's pending clients in open buildings;
5. one playbook run per building of that batch. The batch's rows move to
   staging in the very transaction that writes the run row (compare-and-set:
   a racing tick that wanted the same clients writes nothing and runs
   nothing); each host's result then moves its row through the client table;
6. after it, :func:`rollout.wave_verdict` pauses the deployment
   (``threshold_exceeded``) or lets it go on, and when every client is
   terminal the deployment is completed (``all_done``).

Every move is asked of :mod:`orchestrator.domain.rollout`; nothing here decides
whether a move is legal. :func:`reconcile` runs at service start: runs left
``running`` by a killed orchestrator are failed, in-flight clients are settled
from their run's recorded host results or resumed as the client table allows,
and running deployments go back to scheduled.

Clients a restart resumes keep their in-flight state with no run attached
(``run_id`` empty); the next tick runs them again without counting an
attempt (the plays check their receipts and markers first, so a run again
changes nothing already done).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator.db.models import (
    Building,
    Deployment,
    DeploymentClient,
    HostResult,
    Releasable,
    Run,
)
from orchestrator.db.session import transaction
from orchestrator.domain import rollout
from orchestrator.domain import windows as window_rules
from orchestrator.domain.policy import SYSTEM_ACTOR, Actor
from orchestrator.domain.rollout import (
    ClientEvent,
    ClientRun,
    ClientState,
    DeploymentEvent,
    DeploymentState,
)
from orchestrator.errors import NotFound, OrchestratorError, Refused, StaleState, SunsetReached
from orchestrator.remote.ansible import PlaybookRunner
from orchestrator.services import audit, delivery, requests, runs, windows
from orchestrator.services.context import Context

# The deployments service owns the deployment's compare-and-set move and the
# owner's cancel of its clients; the runner uses the very same ones.
from orchestrator.services.deployments import _buildings_of, _cancel_clients, _move, _subject

STOPPED_DURING_RUN = "the orchestrator stopped during the run"

_C = ClientState
_SUCCESS_PATH: dict[ClientState, tuple[ClientEvent, ...]] = {
    _C.STAGING: (ClientEvent.STAGED, ClientEvent.APPLIED, ClientEvent.VERIFIED),
    _C.APPLYING: (ClientEvent.APPLIED, ClientEvent.VERIFIED),
    _C.VERIFYING: (ClientEvent.VERIFIED,),
}
"""The client table's events from each in-flight state to succeeded, for a host that ran clean."""


@dataclass(frozen=True)
class TickResult:
    """What one tick did, and when the next one is worth making."""

    deployment_id: int
    state: str
    """The deployment's state after the tick."""
    events: tuple[str, ...] = ()
    """Deployment events fired, in order (``window_opened``, ``all_done``, …)."""
    client_events: tuple[tuple[str, str], ...] = ()
    """(hostname, event) for clients moved outside a run: ``retry_due``, ``give_up``."""
    started: tuple[str, ...] = ()
    """Hostnames given to the runner, in the order started."""
    runs: tuple[int, ...] = ()
    next_at: datetime | None = None
    """When to tick again: the next window's opening, a retry's time, or now when
    more clients wait; None when nothing will happen until a person acts (paused)
    or ever again (ended)."""
    reason: str = ""
    """Why it stands as it does, or why this tick started nothing."""


@dataclass(frozen=True)
class Reconciled:
    """One thing :func:`reconcile` settled."""

    kind: str
    """run, client or deployment"""
    id: int
    name: str
    outcome: str
    reason: str


@dataclass
class _Log:
    events: list[str] = field(default_factory=list)
    client_events: list[tuple[str, str]] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    runs: list[int] = field(default_factory=list)
    next_at: datetime | None = None
    reason: str = ""


@dataclass(frozen=True)
class _Item:
    """A client picked to start, as the tick saw its row (the compare-and-set's expectation)."""

    row_id: int
    hostname: str
    state: ClientState
    attempts: int
    reason: str | None
    run_id: int | None


@dataclass(frozen=True)
class _Batch:
    building: str
    items: tuple[_Item, ...]


# ---------------------------------------------------------------------------
# One tick
# ---------------------------------------------------------------------------


def tick(
    ctx: Context,
    deployment_id: int,
    *,
    credentials: runs.Credentials,
    runner: PlaybookRunner | None = None,
    distribution: runs.DistributionPoint = runs.DistributionPoint(),
    system_actor: Actor = SYSTEM_ACTOR,
) -> TickResult:
    """One step of the deployment at ``ctx.now()``; safe to call again at any time.

    A runner that raises does not escape: the run is recorded as failed and
    each client it was given fails with the runner's message.

    Raises:
        NotFound: no such deployment.
        StaleState: the deployment was changed by someone else in the middle
            of this tick's own move (nothing half-done is left; tick again).
    """
    now = ctx.now()
    log = _Log()
    with transaction(ctx.engine) as session:
        dep = session.get(Deployment, deployment_id)
        if dep is None:
            raise NotFound(f"no deployment {deployment_id} (see 'orchestrator deploy list')")
        batches = _decide(ctx, session, dep, now, system_actor, log)
        playbook, ref = dep.playbook, dep.ref
    for batch in batches:
        if not _run_batch(
            ctx,
            deployment_id,
            playbook,
            ref,
            batch,
            credentials=credentials,
            runner=runner,
            distribution=distribution,
            actor=system_actor,
            log=log,
        ):
            break
    with transaction(ctx.engine) as session:
        dep = session.get(Deployment, deployment_id)
        assert dep is not None
        state = DeploymentState(dep.state)
        next_at: datetime | None = None
        if state is DeploymentState.SCHEDULED:
            next_at = log.next_at
        elif state is DeploymentState.RUNNING:
            next_at = _next_at(session, dep, ctx.now())
        return TickResult(
            deployment_id=deployment_id,
            state=dep.state,
            events=tuple(log.events),
            client_events=tuple(log.client_events),
            started=tuple(log.started),
            runs=tuple(log.runs),
            next_at=next_at,
            reason=log.reason or dep.reason,
        )


def _decide(
    ctx: Context,
    session: Session,
    dep: Deployment,
    now: datetime,
    actor: Actor,
    log: _Log,
) -> list[_Batch]:
    """Gates, window, retries, verdict; then the batch to start. Inside one transaction."""
    assert dep.id is not None
    state = DeploymentState(dep.state)
    if state in rollout.DEPLOYMENT_TERMINAL:
        log.reason = dep.reason or f"deployment {dep.id} is {dep.state}"
        return []
    rows = _rows(session, dep.id)
    open_rows = [r for r in rows if _C(r.state) not in rollout.CLIENT_TERMINAL]

    if _gates(ctx, session, dep, rows, open_rows, now, actor, log):
        return []
    if DeploymentState(dep.state) is DeploymentState.PAUSED:
        log.reason = dep.reason or "paused"
        return []

    current = min((r.wave for r in open_rows), default=None)
    wave_rows = [r for r in open_rows if r.wave == current]
    check = sorted({r.building for r in wave_rows} or {r.building for r in rows})
    open_buildings, next_opening = _open_buildings(ctx, session, dep, check, now)
    if not open_buildings:
        log.next_at = next_opening
        log.reason = (
            f"no building of the current wave may start now; the next window opens "
            f"{next_opening:%Y-%m-%d %H:%M} UTC"
            if next_opening is not None
            else "no window of its buildings opens within a year"
        )
        if DeploymentState(dep.state) is DeploymentState.RUNNING:
            _fire(session, dep, DeploymentEvent.WINDOW_CLOSED, now, log.reason, log)
        return []
    if DeploymentState(dep.state) is DeploymentState.SCHEDULED:
        _fire(session, dep, DeploymentEvent.WINDOW_OPENED, now, "", log)

    # Retries whose backoff has run out, in every wave that has them.
    gave_up: set[int] = set()
    for r in open_rows:
        if _C(r.state) is _C.UNREACHABLE and r.retry_at is not None and r.retry_at <= now:
            run = _client_run(r)
            event = (
                ClientEvent.GIVE_UP
                if run.attempts >= rollout.MAX_ATTEMPTS
                else ClientEvent.RETRY_DUE
            )
            new = rollout.advance(run, event)
            if _cas_client(session, r, new, now, retry_at=None):
                log.client_events.append((r.hostname, event.value))
                if new.state is _C.FAILED:
                    gave_up.add(r.wave)
    if gave_up and _settle(session, dep, now, actor, gave_up, log):
        return []

    rows = _rows(session, dep.id)
    open_rows = [r for r in rows if _C(r.state) not in rollout.CLIENT_TERMINAL]
    if not open_rows:
        _settle(session, dep, now, actor, set(), log)
        return []
    current = min(r.wave for r in open_rows)
    candidates = sorted(
        (
            r
            for r in open_rows
            if r.wave == current and r.building in open_buildings and _startable(r)
        ),
        key=lambda r: (_building_key(r.building), r.hostname.casefold(), r.id),
    )
    if not candidates:
        log.reason = f"waiting for clients of wave {current} in flight or to be retried"
        return []
    by_id = {r.id: r for r in candidates}
    picked = rollout.pick_next(
        [rollout.TargetClient(r.id or 0, r.hostname, r.building) for r in candidates],
        _in_flight_by_building(session),
        per_building=dep.per_building_limit,
        district_wide=dep.district_limit,
    )
    if not picked:
        log.reason = "every slot under the concurrency limits is taken"
        return []
    grouped: dict[str, list[_Item]] = {}
    for t in picked:
        r = by_id[t.id]
        grouped.setdefault(r.building, []).append(
            _Item(r.id or 0, r.hostname, _C(r.state), r.attempts, r.reason, r.run_id)
        )
    return [_Batch(b, tuple(items)) for b, items in grouped.items()]


def _gates(
    ctx: Context,
    session: Session,
    dep: Deployment,
    rows: Sequence[DeploymentClient],
    open_rows: Sequence[DeploymentClient],
    now: datetime,
    actor: Actor,
    log: _Log,
) -> bool:
    """The gates at each start; True when the deployment was stopped by one."""
    row = session.get(Releasable, dep.releasable_id)
    assert row is not None
    places = sorted({r.building for r in open_rows} or {r.building for r in rows if r.wave})
    try:
        for building in places:
            delivery.check_released(session, actor, row, building=building, today=ctx.today())
        if row.digest != dep.digest:
            raise Refused(
                f"{dep.ref} changed since the deployment was created (its approvals start over)"
            )
    except SunsetReached as exc:
        _sunset_cancel(session, dep, now, actor, str(exc), log)
        return True
    except Refused as exc:
        if DeploymentState(dep.state) is not DeploymentState.PAUSED:
            _stop(
                session, dep, DeploymentEvent.PAUSE, now, actor, str(exc), "deployment.pause", log
            )
        return True
    if dep.deadline is not None and now >= dep.deadline:
        left = len(open_rows)
        reason = (
            f"the deadline {dep.deadline.astimezone(UTC):%Y-%m-%d %H:%M} UTC passed with "
            f"{left} client{'' if left == 1 else 's'} not done"
        )
        _stop(
            session,
            dep,
            DeploymentEvent.DEADLINE_PASSED,
            now,
            actor,
            reason,
            "deployment.fail",
            log,
        )
        return True
    return False


def _sunset_cancel(
    session: Session, dep: Deployment, now: datetime, actor: Actor, reason: str, log: _Log
) -> None:
    _stop(
        session, dep, DeploymentEvent.SUNSET_REACHED, now, actor, reason, "deployment.cancel", log
    )


def _stop(
    session: Session,
    dep: Deployment,
    event: DeploymentEvent,
    now: datetime,
    actor: Actor,
    reason: str,
    action: str,
    log: _Log,
) -> None:
    """A move the owner is told about: with its reason, audited as the system's."""
    assert dep.id is not None
    before = dep.state
    _fire(session, dep, event, now, reason, log)
    changed = 0
    if DeploymentState(dep.state) in (DeploymentState.CANCELLED, DeploymentState.FAILED):
        # Clients not yet being changed end with it; one mid-apply finishes its step.
        changed = _cancel_clients(session, dep, now, reason)
    audit.append(
        session,
        at=now,
        actor=actor,
        action=action,
        subject=_subject(dep, _buildings_of(session, dep.id)),
        before={"state": before},
        after={"state": dep.state, "event": event.value}
        | ({"clients": changed} if changed else {}),
        reason=reason[:2000],
        digest=dep.digest,
    )
    log.reason = reason


def _fire(
    session: Session, dep: Deployment, event: DeploymentEvent, now: datetime, reason: str, log: _Log
) -> None:
    _move(session, dep, event, now, reason)
    log.events.append(event.value)


def _settle(
    session: Session,
    dep: Deployment,
    now: datetime,
    actor: Actor,
    waves: Iterable[int],
    log: _Log,
) -> bool:
    """After clients moved: the verdict of the waves they are in, then completion.

    True when the deployment stopped running (paused or completed).
    """
    assert dep.id is not None
    session.refresh(dep)
    if DeploymentState(dep.state) is not DeploymentState.RUNNING:
        return True
    rows = _rows(session, dep.id)
    for number in sorted(set(waves)):
        members = [r for r in rows if r.wave == number]
        if not members:
            continue
        wave = rollout.Wave(
            number=number,
            clients=tuple(rollout.TargetClient(r.id or 0, r.hostname, r.building) for r in members),
            building=None if members[0].pilot else members[0].building,
            pilot=members[0].pilot,
        )
        counts = rollout.WaveCounts.tally(wave, (_C(r.state) for r in members))
        verdict = rollout.wave_verdict(counts, threshold_pct=dep.failure_threshold_pct)
        if isinstance(verdict, rollout.Pause):
            _stop(
                session,
                dep,
                DeploymentEvent.THRESHOLD_EXCEEDED,
                now,
                actor,
                verdict.reason,
                "deployment.pause",
                log,
            )
            return True
    if all(_C(r.state) in rollout.CLIENT_TERMINAL for r in rows):
        counts_all = Counter(r.state for r in rows)
        reason = "every client is done: " + ", ".join(
            f"{n} {s}" for s, n in sorted(counts_all.items())
        )
        _stop(
            session, dep, DeploymentEvent.ALL_DONE, now, actor, reason, "deployment.complete", log
        )
        # The requests it answers close with it, where it did all they asked.
        requests.deployment_ended(session, dep.id, now)
        return True
    return False


def _run_batch(
    ctx: Context,
    deployment_id: int,
    playbook: str,
    ref: str,
    batch: _Batch,
    *,
    credentials: runs.Credentials,
    runner: PlaybookRunner | None,
    distribution: runs.DistributionPoint,
    actor: Actor,
    log: _Log,
) -> bool:
    """One run for one building's share of the batch; False when the tick should stop."""
    started: list[int] = []

    def stage(session: Session, run_id: int) -> None:
        # Locks the deployment's row on PostgreSQL, so a pause or cancel committed
        # meanwhile is seen here rather than after the clients started.
        dep = session.exec(
            select(Deployment).where(Deployment.id == deployment_id).with_for_update()
        ).one()
        if DeploymentState(dep.state) is not DeploymentState.RUNNING:
            raise StaleState(f"deployment {deployment_id} is {dep.state} now: nothing started")
        now = ctx.now()
        for item in batch.items:
            run = ClientRun(item.state, item.attempts, item.reason)
            # A pending client starts an attempt; one a restart left in flight goes on
            # in place, as the client table's resume_after_restart put it.
            new = (
                rollout.advance(run, ClientEvent.START_STAGING) if item.state is _C.PENDING else run
            )
            result = session.execute(
                sa.update(DeploymentClient)
                .where(
                    col(DeploymentClient.id) == item.row_id,
                    col(DeploymentClient.state) == item.state.value,
                    col(DeploymentClient.attempts) == item.attempts,
                    _same_run(item.run_id),
                )
                .values(
                    state=new.state.value,
                    attempts=new.attempts,
                    run_id=run_id,
                    retry_at=None,
                    step=None,
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise StaleState(
                    f"{item.hostname} was started by another tick of deployment {deployment_id}"
                )
        started.append(run_id)

    refs = {"package": ref} if delivery.needs_reference(playbook) == "package" else {"image": ref}
    hostnames = [i.hostname for i in batch.items]
    try:
        view = runs.run_playbook(
            ctx,
            actor,
            playbook,
            building=batch.building,
            credentials=credentials,
            runner=runner,
            distribution=distribution,
            hostnames=hostnames,
            on_start=stage,
            **refs,  # type: ignore[arg-type]
        )
    except StaleState as exc:
        if started:
            raise
        log.reason = str(exc)
        return False
    except OrchestratorError as exc:
        if started:
            _record_broken(ctx, deployment_id, batch, started[0], exc, actor, log)
            return False
        # A gate refused the run before anything started: stop the deployment so a
        # person sees why, rather than trying again every tick.
        with transaction(ctx.engine) as session:
            dep = session.get(Deployment, deployment_id)
            assert dep is not None
            now = ctx.now()
            if isinstance(exc, SunsetReached):
                _sunset_cancel(session, dep, now, actor, str(exc), log)
            elif DeploymentState(dep.state) is DeploymentState.RUNNING:
                reason = f"could not start in building {batch.building}: {exc}"
                _stop(
                    session, dep, DeploymentEvent.PAUSE, now, actor, reason, "deployment.pause", log
                )
        return False
    except Exception as exc:  # the runner itself broke; the run row is already ended
        if not started:
            raise
        _record_broken(ctx, deployment_id, batch, started[0], exc, actor, log)
        return False
    log.started.extend(hostnames)
    log.runs.append(view.id)
    results = {h.hostname: h for h in view.hosts}
    with transaction(ctx.engine) as session:
        now = ctx.now()
        waves: set[int] = set()
        for item in batch.items:
            row = session.get(DeploymentClient, item.row_id)
            if row is None or row.run_id != view.id or _C(row.state) not in rollout.IN_FLIGHT:
                continue  # moved meanwhile (cancelled by its owner): its state stands
            h = results.get(item.hostname)
            status: str | None = h.status if h else None
            task = h.failed_task if h else None
            message = h.message if h else _no_result(view.status, view.reason)
            new, step, retry_at = _after_outcome(_client_run(row), status, task, message, now)
            if _cas_client(session, row, new, now, step=step, retry_at=retry_at):
                waves.add(row.wave)
        dep = session.get(Deployment, deployment_id)
        assert dep is not None
        stopped = _settle(session, dep, now, actor, waves, log)
    return not stopped


def _record_broken(
    ctx: Context,
    deployment_id: int,
    batch: _Batch,
    run_id: int,
    exc: BaseException,
    actor: Actor,
    log: _Log,
) -> None:
    """The run broke after its clients started: each fails with the runner's message."""
    log.started.extend(i.hostname for i in batch.items)
    log.runs.append(run_id)
    log.reason = f"run {run_id} broke: {exc}"
    with transaction(ctx.engine) as session:
        now = ctx.now()
        waves: set[int] = set()
        for item in batch.items:
            row = session.get(DeploymentClient, item.row_id)
            if row is None or row.run_id != run_id or _C(row.state) not in rollout.IN_FLIGHT:
                continue
            new = rollout.advance(
                _client_run(row),
                ClientEvent.STEP_FAILED,
                reason=f"run {run_id} broke before it reported this client: {exc}"[:2000],
            )
            if _cas_client(session, row, new, now, step=None, retry_at=None):
                waves.add(row.wave)
        dep = session.get(Deployment, deployment_id)
        assert dep is not None
        _settle(session, dep, now, actor, waves, log)


def _no_result(status: str, reason: str) -> str:
    why = f": {reason}" if reason else ""
    return f"the run ended {status} without a result for this client{why}"


def _after_outcome(
    run: ClientRun,
    status: str | None,
    failed_task: str | None,
    message: str | None,
    now: datetime,
) -> tuple[ClientRun, str | None, datetime | None]:
    """The client's standing after its host's result: (run, failing step, retry at)."""
    if status in ("ok", "changed"):
        for event in _SUCCESS_PATH[run.state]:
            run = rollout.advance(run, event)
        return run, None, None
    if status == "unreachable":
        run = rollout.advance(
            run, ClientEvent.HOST_UNREACHABLE, reason=message or "the host could not be reached"
        )
        # No wait when every attempt is used: the next tick gives up at once.
        wait = rollout.next_retry(run.attempts) or timedelta(0)
        return run, None, now + wait
    if status == "failed":
        reason = message or f"{failed_task or 'a step'} failed"
    elif status == "skipped":
        reason = "the play ran no task on it (every task was skipped)"
    else:
        reason = message or "the run left no result for it"
    return rollout.advance(run, ClientEvent.STEP_FAILED, reason=reason[:2000]), failed_task, None


# ---------------------------------------------------------------------------
# Rows and windows
# ---------------------------------------------------------------------------


def _rows(session: Session, deployment_id: int) -> list[DeploymentClient]:
    """The deployment's clients in waves (excluded clients, wave 0, take no part)."""
    return list(
        session.exec(
            select(DeploymentClient)
            .where(DeploymentClient.deployment_id == deployment_id, col(DeploymentClient.wave) > 0)
            .order_by(col(DeploymentClient.wave), col(DeploymentClient.hostname))
            # Rows this session read before were moved by compare-and-set updates
            # since; read them as they stand now.
            .execution_options(populate_existing=True)
        )
    )


def _client_run(row: DeploymentClient) -> ClientRun:
    return ClientRun(_C(row.state), row.attempts, row.reason)


def _startable(row: DeploymentClient) -> bool:
    # Pending, or left in flight by a restart with no run attached.
    state = _C(row.state)
    return state is _C.PENDING or (state in rollout.IN_FLIGHT and row.run_id is None)


def _same_run(run_id: int | None) -> sa.ColumnElement[bool]:
    if run_id is None:
        return col(DeploymentClient.run_id).is_(None)
    return col(DeploymentClient.run_id) == run_id


def _cas_client(
    session: Session,
    row: DeploymentClient,
    new: ClientRun,
    now: datetime,
    *,
    step: str | None = None,
    retry_at: datetime | None = None,
    detach: bool = False,
) -> bool:
    """Write ``new`` over ``row`` only if the row still stands as it was read.

    ``detach`` takes its run off it: a restart left it with no run going.
    """
    values: dict[str, object] = {
        "state": new.state.value,
        "attempts": new.attempts,
        "reason": new.reason[:2000] if new.reason else None,
        "step": step[:200] if step else None,
        "retry_at": retry_at,
        "updated_at": now,
    }
    if detach:
        values["run_id"] = None
    result = session.execute(
        sa.update(DeploymentClient)
        .where(
            col(DeploymentClient.id) == row.id,
            col(DeploymentClient.state) == row.state,
            col(DeploymentClient.attempts) == row.attempts,
            _same_run(row.run_id),
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def _in_flight_by_building(session: Session) -> dict[str, int]:
    """Clients being worked on now, per building, across the district's deployments."""
    found = session.exec(
        select(DeploymentClient.building, sa.func.count())
        .where(
            col(DeploymentClient.state).in_([s.value for s in rollout.IN_FLIGHT]),
            col(DeploymentClient.run_id).is_not(None),
        )
        .group_by(col(DeploymentClient.building))
    ).all()
    return {b: int(n) for b, n in found}


def _building_key(building: str) -> tuple[int, int, str]:
    if building.isdigit():
        return (0, int(building), building)
    return (1, 0, building.casefold())


def _open_buildings(
    ctx: Context, session: Session, dep: Deployment, buildings: Sequence[str], now: datetime
) -> tuple[list[str], datetime | None]:
    """Which buildings may start now; and else when the first of them opens next."""
    opened: list[str] = []
    soonest: datetime | None = None
    start = max(now, dep.not_before or now)
    for number in buildings:
        b = session.exec(select(Building).where(Building.number == number)).first()
        if b is None or b.id is None:
            continue
        rules, blackouts = windows.rules_for(session, b.id)
        if not rules:
            continue
        if window_rules.may_start(
            rules, blackouts, ctx.zone, now, deadline=dep.deadline, not_before=dep.not_before
        ):
            opened.append(number)
            continue
        opening = window_rules.next_opening(rules, blackouts, ctx.zone, start)
        if opening is not None and (dep.deadline is None or opening.start < dep.deadline):
            soonest = opening.start if soonest is None else min(soonest, opening.start)
    return opened, soonest


def _next_at(session: Session, dep: Deployment, now: datetime) -> datetime | None:
    """For a running deployment after its batch: now if more may start, else the first retry."""
    assert dep.id is not None
    open_rows = [r for r in _rows(session, dep.id) if _C(r.state) not in rollout.CLIENT_TERMINAL]
    if not open_rows:
        return None
    current = min(r.wave for r in open_rows)
    if any(_startable(r) for r in open_rows if r.wave == current):
        return now
    retries = [r.retry_at for r in open_rows if r.retry_at is not None]
    return min(retries) if retries else None


# ---------------------------------------------------------------------------
# After a crash
# ---------------------------------------------------------------------------


def reconcile(ctx: Context, *, system_actor: Actor = SYSTEM_ACTOR) -> list[Reconciled]:
    """Settle what a killed orchestrator left behind; call it at service start.

    * every run still ``running`` ends as failed (:data:`STOPPED_DURING_RUN`);
    * every client in flight takes its run's recorded host result if there is
      one; else it is resumed as the client table allows (``resume_after_restart``:
      the next tick runs it again, counted as another attempt), or failed with
      why (``fail_after_restart``) when its deployment has ended or all its
      attempts are used (a client whose runs stop the orchestrator each time
      is not run forever);
    * every running deployment goes back to scheduled (``restarted``), after
      the wave verdict of any clients settled from results (which may
      complete or pause it: that is returned too).

    Nothing is left running; a client that succeeded is never touched.
    """
    now = ctx.now()
    done: list[Reconciled] = []
    with transaction(ctx.engine) as session:
        for run in session.exec(select(Run).where(Run.status == "running").order_by(col(Run.id))):
            assert run.id is not None
            result = session.execute(
                sa.update(Run)
                .where(col(Run.id) == run.id, col(Run.status) == "running")
                .values(status="failed", reason=STOPPED_DURING_RUN, finished_at=now)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                continue
            audit.append(
                session,
                at=now,
                actor=system_actor,
                action="run.finish",
                subject=audit.Subject("run", f"run {run.id}: {run.playbook}", run.id, run.building),
                after={"status": "failed"},
                reason=STOPPED_DURING_RUN,
            )
            done.append(Reconciled("run", run.id, f"run {run.id}", "failed", STOPPED_DURING_RUN))

        touched: dict[int, set[int]] = {}
        in_flight = session.exec(
            select(DeploymentClient)
            .where(col(DeploymentClient.state).in_([s.value for s in rollout.IN_FLIGHT]))
            .order_by(col(DeploymentClient.id))
        ).all()
        for row in in_flight:
            assert row.id is not None
            dep = session.get(Deployment, row.deployment_id)
            assert dep is not None
            name = f"{row.hostname} in deployment {row.deployment_id}"
            result_row = (
                session.exec(
                    select(HostResult).where(
                        HostResult.run_id == row.run_id, HostResult.client_id == row.client_id
                    )
                ).first()
                if row.run_id is not None
                else None
            )
            if result_row is not None:
                new, step, retry_at = _after_outcome(
                    _client_run(row),
                    result_row.status,
                    result_row.failed_task,
                    result_row.message,
                    now,
                )
                if _cas_client(session, row, new, now, step=step, retry_at=retry_at):
                    touched.setdefault(row.deployment_id, set()).add(row.wave)
                    why = f"from run {row.run_id}'s result: {result_row.status}"
                    done.append(Reconciled("client", row.id, name, new.state.value, why))
                continue
            cannot = None
            if DeploymentState(dep.state) in rollout.DEPLOYMENT_TERMINAL:
                cannot = (
                    f"the orchestrator stopped during its run and deployment {dep.id} has "
                    f"{dep.state}: it cannot be checked again"
                )
            elif row.attempts >= rollout.MAX_ATTEMPTS:
                cannot = (
                    f"the orchestrator stopped during run {row.run_id}, and all "
                    f"{rollout.MAX_ATTEMPTS} attempts of this client are used"
                )
            if cannot is not None:
                new = rollout.advance(
                    _client_run(row), ClientEvent.FAIL_AFTER_RESTART, reason=cannot
                )
                if _cas_client(session, row, new, now, detach=True):
                    done.append(Reconciled("client", row.id, name, new.state.value, cannot))
                continue
            reason = (
                f"the orchestrator stopped during run {row.run_id}; it is run again at the "
                "next tick (the play checks what is already done first)"
                if row.run_id is not None
                else "the orchestrator stopped before its run; it is run again at the next tick"
            )
            new = rollout.advance(_client_run(row), ClientEvent.RESUME_AFTER_RESTART, reason=reason)
            if _cas_client(session, row, new, now, detach=True):
                done.append(Reconciled("client", row.id, name, new.state.value, reason))

        log = _Log()
        for dep_id, waves in sorted(touched.items()):
            dep = session.get(Deployment, dep_id)
            assert dep is not None
            if DeploymentState(dep.state) is DeploymentState.RUNNING and _settle(
                session, dep, now, system_actor, waves, log
            ):
                # Completed or paused by what the results said: told like every other move.
                name = f"deployment {dep_id}"
                done.append(Reconciled("deployment", dep_id, name, dep.state, log.reason))
        running = session.exec(
            select(Deployment)
            .where(Deployment.state == DeploymentState.RUNNING.value)
            .order_by(col(Deployment.id))
        ).all()
        reason = "the orchestrator started again; it goes on at its next window check"
        for dep in running:
            assert dep.id is not None
            _stop(
                session, dep, DeploymentEvent.RESTARTED, now, system_actor, reason,
                "deployment.restart", log,
            )  # fmt: skip
            done.append(Reconciled("deployment", dep.id, f"deployment {dep.id}", dep.state, reason))
    return done
