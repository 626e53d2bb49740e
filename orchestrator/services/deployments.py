"""Deployments: create one from a plan, see it, pause, resume, cancel, retry its failures.

A deployment is created from :func:`orchestrator.services.deploy_plan.plan`
(the same targets, gates and exclusions, so ``deploy create`` never does what
``deploy plan`` did not show), and is refused at creation when it could not
run as asked:

* a building it reaches has no maintenance window, or none before the
  deadline (or within a year);
* the artifact's effective sunset comes before a building's first window: it
  would be cancelled before it ever started;
* the start (not before) or deadline is in the past, or the deadline is not
  after the start; limits or the failure threshold out of range.

Each included client gets a row in its wave (:func:`orchestrator.domain.rollout.plan_waves`:
the pilot first, then building by building); each excluded client a
``skipped`` row with the plan's reason, so ``deploy show`` accounts for every
client the targets reached.

The deployment's state moves only through the rollout's deployment table
(:mod:`orchestrator.domain.rollout`), persisted compare-and-set; every action
is audited. Who may act: whoever could create it, i.e. IT, or a building's
tech when every building it reaches is theirs. Building staff who may read a
building see the deployments that reach it; others are told it does not
exist.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator.db.models import Building, Client, Deployment, DeploymentClient, Releasable
from orchestrator.db.session import transaction
from orchestrator.domain import rollout
from orchestrator.domain import windows as window_rules
from orchestrator.domain.policy import Action, Actor, authorize, may
from orchestrator.domain.rollout import ClientState, DeploymentEvent, DeploymentState
from orchestrator.domain.states import Kind
from orchestrator.errors import Conflict, InvalidInput, NotFound, SunsetReached
from orchestrator.services import audit, catalog, deploy_plan, releasables, transitions, windows
from orchestrator.services.context import Context

PLAYBOOK_OF = {Kind.PACKAGE: "install_package"}
"""The play that delivers each kind; images use apply_image."""
_CHUNK = 500


@dataclass(frozen=True)
class DeploymentSpec:
    """What ``deploy create`` was asked for."""

    package: str | None = None
    image: str | None = None
    buildings: Sequence[str] = ()
    groups: Sequence[str] = ()
    rooms: Sequence[str] = ()
    clients: Sequence[str] = ()
    not_before: datetime | None = None
    deadline: datetime | None = None
    pilot_names: Sequence[str] = ()
    pilot_per_building: int = 0
    per_building_limit: int = 10
    district_limit: int = 50
    failure_threshold_pct: float = 10.0


@dataclass(frozen=True)
class DeploymentClientView:
    hostname: str
    building: str
    wave: int
    pilot: bool
    state: str
    attempts: int
    step: str | None
    reason: str | None


@dataclass(frozen=True)
class WaveView:
    number: int
    label: str
    counts: dict[str, int]


@dataclass(frozen=True)
class DeploymentView:
    id: int
    ref: str
    playbook: str
    owner: str
    state: str
    reason: str
    buildings: list[str]
    not_before: datetime | None
    deadline: datetime | None
    first_windows: dict[str, datetime]
    """Per building, when its next window opens (for deployments not yet ended);
    now, when one is open."""
    counts: dict[str, int]
    waves: list[WaveView]
    clients: list[DeploymentClientView] = field(default_factory=list)
    created_at: datetime | None = None
    window_ends: dict[str, datetime] = field(default_factory=dict)
    """Per building, when the window of :attr:`first_windows` closes."""
    shown_at: datetime | None = None
    """The time the view was read: a window that opens at it is open now."""


# ---------------------------------------------------------------------------
# Creating
# ---------------------------------------------------------------------------


def _check_spec(spec: DeploymentSpec, now: datetime) -> None:
    for name, moment in (("not_before", spec.not_before), ("deadline", spec.deadline)):
        if moment is not None and moment.tzinfo is None:
            raise InvalidInput(f"{name} must carry its time zone", field=name)
    if spec.not_before is not None and spec.not_before < now - timedelta(minutes=1):
        raise InvalidInput(
            f"the start {spec.not_before:%Y-%m-%d %H:%M} UTC is in the past; leave it out to "
            "start at the next window",
            field="not_before",
        )
    if spec.deadline is not None:
        if spec.deadline <= now:
            raise InvalidInput(
                f"the deadline {spec.deadline:%Y-%m-%d %H:%M} UTC is in the past", field="deadline"
            )
        if spec.not_before is not None and spec.deadline <= spec.not_before:
            raise InvalidInput(
                "the deadline must be after the start "
                f"({spec.deadline:%Y-%m-%d %H:%M} is not after {spec.not_before:%Y-%m-%d %H:%M})",
                field="deadline",
            )
    if spec.per_building_limit < 1 or spec.district_limit < 1:
        raise InvalidInput("concurrency limits are whole numbers of 1 or more", field="limits")
    if not 0 <= spec.failure_threshold_pct <= 100:
        raise InvalidInput(
            f"the failure threshold {spec.failure_threshold_pct}% is not between 0 and 100",
            field="failure_threshold",
        )


def _sunset_instant(ctx: Context, session: Session, row: Releasable) -> datetime | None:
    effective = catalog.effective_sunset_of(session, row)
    if effective is None:
        return None
    return window_rules.resolve_local(datetime.combine(effective, time()), ctx.zone)


def _first_windows(
    ctx: Context,
    session: Session,
    buildings: Iterable[str],
    start: datetime,
) -> tuple[dict[str, window_rules.Interval], list[str]]:
    """Each building's next opening from ``start``; and the buildings without windows."""
    found: dict[str, window_rules.Interval] = {}
    bare: list[str] = []
    for number in sorted(set(buildings)):
        b = session.exec(select(Building).where(Building.number == number)).one()
        assert b.id is not None
        rules, blackouts = windows.rules_for(session, b.id)
        if not rules:
            bare.append(number)
            continue
        opening = window_rules.next_opening(rules, blackouts, ctx.zone, start)
        if opening is not None:
            found[number] = opening
    return found, bare


def create_once(
    ctx: Context, actor: Actor, spec: DeploymentSpec, idempotency_key: str
) -> tuple[DeploymentView, bool]:
    """:func:`create`, at most once per ``idempotency_key`` of the actor's.

    A replay of the same request with the same key returns the deployment the
    first one made (and False: nothing was created), however often and however
    late it comes; two replays racing each other still make one.

    Raises:
        InvalidInput: a malformed key.
        Conflict: the key was already used by the actor for a different request.
        Everything :func:`create` raises.
    """
    if not (1 <= len(idempotency_key) <= 200 and idempotency_key.isprintable()):
        raise InvalidInput("must be 1 to 200 printable characters", field="Idempotency-Key")
    asked = _request_digest(spec)
    earlier = _by_key(ctx, actor, idempotency_key, asked)
    if earlier is not None:
        return earlier, False
    try:
        return create(ctx, actor, spec, _key=(idempotency_key, asked)), True
    except sa.exc.IntegrityError:
        # Another request with the same key committed first.
        again = _by_key(ctx, actor, idempotency_key, asked)
        if again is None:
            raise
        return again, False


def _request_digest(spec: DeploymentSpec) -> str:
    fields = {
        k: (v.isoformat() if isinstance(v, datetime) else list(v) if isinstance(v, tuple) else v)
        for k, v in asdict(spec).items()
    }
    return "sha256:" + hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _by_key(ctx: Context, actor: Actor, key: str, asked: str) -> DeploymentView | None:
    with transaction(ctx.engine) as session:
        dep = session.exec(
            select(Deployment).where(
                Deployment.owner == actor.username, Deployment.idempotency_key == key
            )
        ).first()
        if dep is None:
            return None
        if dep.request_digest != asked:
            raise Conflict(
                f"Idempotency-Key {key!r} was already used for another request "
                f"(deployment #{dep.id}); use a new key for a new deployment"
            )
        return _view(ctx, session, dep, with_clients=False)


def create(
    ctx: Context,
    actor: Actor,
    spec: DeploymentSpec,
    *,
    _key: tuple[str, str] | None = None,
) -> DeploymentView:
    """Create a deployment exactly as :func:`deploy_plan.plan` shows it, scheduled.

    Raises:
        Everything :func:`deploy_plan.plan` raises; and
        InvalidInput: times in the past or in the wrong order, bad limits, every
            client excluded, a building without a window (before the deadline).
        SunsetReached: a building's first window opens on or after the sunset.
    """
    now = ctx.now()
    _check_spec(spec, now)
    plan = deploy_plan.plan(
        ctx,
        actor,
        package=spec.package,
        image=spec.image,
        buildings=spec.buildings,
        groups=spec.groups,
        rooms=spec.rooms,
        clients=spec.clients,
    )
    if not plan.included:
        raise InvalidInput(f"nothing to deploy: {plan.summary()}", field="targets")
    start = max(now, spec.not_before or now)
    with transaction(ctx.engine) as session:
        kind = plan.kind
        row = releasables.resolve(session, actor, kind, plan.ref)
        reached = sorted({c.building for c in plan.included})
        firsts, bare = _first_windows(ctx, session, reached, start)
        if bare:
            raise InvalidInput(
                f"building(s) {', '.join(bare)} have no maintenance window: add one with "
                "'orchestrator windows add' first",
                field="targets",
            )
        never = [b for b in reached if b not in firsts]
        if never:
            raise InvalidInput(
                f"no window of building(s) {', '.join(never)} opens within a year",
                field="targets",
            )
        local = ctx.zone
        if spec.deadline is not None:
            late = [b for b in reached if firsts[b].start >= spec.deadline]
            if late:
                b = late[0]
                opens = firsts[b].start.astimezone(local)
                raise InvalidInput(
                    f"building {b}'s next window opens {opens:%Y-%m-%d %H:%M}, after the deadline",
                    field="deadline",
                )
        sunset_at = _sunset_instant(ctx, session, row)
        if sunset_at is not None:
            late = [b for b in reached if firsts[b].start >= sunset_at]
            if late:
                b = late[0]
                raise SunsetReached(
                    f"{plan.ref} reaches its sunset on {sunset_at.astimezone(local):%Y-%m-%d}, "
                    f"before building {b}'s first window opens "
                    f"({firsts[b].start.astimezone(local):%Y-%m-%d %H:%M}): it would never start"
                )
        ids = _client_ids(session, [c.hostname for c in plan.included + plan.excluded])
        waves = rollout.plan_waves(
            [rollout.TargetClient(ids[c.hostname], c.hostname, c.building) for c in plan.included],
            pilot_names=tuple(spec.pilot_names),
            pilot_per_building=spec.pilot_per_building,
        )
        dep = Deployment(
            releasable_id=row.id or 0,
            ref=plan.ref,
            digest=row.digest,
            playbook=PLAYBOOK_OF.get(kind, "apply_image"),
            owner=actor.username,
            role=actor.role.value,
            state=rollout.DEPLOYMENT_INITIAL.value,
            targets={
                k: list(v)
                for k, v in (
                    ("buildings", spec.buildings),
                    ("groups", spec.groups),
                    ("rooms", spec.rooms),
                    ("clients", spec.clients),
                )
                if v
            },
            not_before=spec.not_before,
            deadline=spec.deadline,
            pilot_names=list(spec.pilot_names),
            pilot_per_building=spec.pilot_per_building,
            per_building_limit=spec.per_building_limit,
            district_limit=spec.district_limit,
            failure_threshold_pct=spec.failure_threshold_pct,
            created_at=now,
            updated_at=now,
            idempotency_key=_key[0] if _key else None,
            request_digest=_key[1] if _key else None,
        )
        session.add(dep)
        session.flush()
        assert dep.id is not None
        rows: list[dict[str, Any]] = []
        for wave in waves:
            for c in wave.clients:
                rows.append(
                    _client_row(dep.id, c.id, c.hostname, c.building, wave.number, now)
                    | {"pilot": wave.pilot, "state": ClientState.PENDING.value}
                )
        for x in plan.excluded:
            rows.append(
                _client_row(dep.id, ids[x.hostname], x.hostname, x.building, 0, now)
                | {"state": ClientState.SKIPPED.value, "reason": x.text[:2000]}
            )
        for i in range(0, len(rows), _CHUNK):
            session.execute(sa.insert(DeploymentClient), rows[i : i + _CHUNK])
        audit.append(
            session,
            at=now,
            actor=actor,
            action="deployment.create",
            subject=_subject(dep, reached),
            after={
                "ref": plan.ref,
                "clients": len(plan.included),
                "excluded": len(plan.excluded),
                "waves": len(waves),
                "first_window": min(i.start for i in firsts.values()).isoformat(),
            },
            digest=row.digest,
        )
        return _view(ctx, session, dep, with_clients=False)


def _client_row(
    deployment_id: int, client_id: int, hostname: str, building: str, wave: int, now: datetime
) -> dict[str, Any]:
    return {
        "deployment_id": deployment_id,
        "client_id": client_id,
        "hostname": hostname,
        "building": building,
        "wave": wave,
        "pilot": False,
        "attempts": 0,
        "reason": None,
        "step": None,
        "retry_at": None,
        "run_id": None,
        "updated_at": now,
    }


def _client_ids(session: Session, hostnames: Sequence[str]) -> dict[str, int]:
    ids: dict[str, int] = {}
    for i in range(0, len(hostnames), _CHUNK):
        part = hostnames[i : i + _CHUNK]
        for cid, name in session.exec(
            select(Client.id, Client.hostname).where(col(Client.hostname).in_(part))
        ):
            ids[name] = cid or 0
    return ids


def _subject(dep: Deployment, buildings: Sequence[str]) -> audit.Subject:
    return audit.Subject(
        "deployment",
        f"deployment {dep.id}: {dep.ref}",
        dep.id,
        buildings[0] if len(buildings) == 1 else None,
    )


# ---------------------------------------------------------------------------
# Seeing
# ---------------------------------------------------------------------------


def _buildings_of(session: Session, dep_id: int) -> list[str]:
    return sorted(
        set(
            session.exec(
                select(DeploymentClient.building)
                .where(DeploymentClient.deployment_id == dep_id)
                .distinct()
            )
        ),
        key=lambda b: (len(b), b),
    )


def visible(session: Session, actor: Actor, dep_id: int) -> tuple[Deployment, list[str]]:
    """The deployment and the buildings it reaches, if the actor may see one of them.

    Raises: NotFound (no such deployment, or none of its buildings is the actor's).
    """
    dep = session.get(Deployment, dep_id)
    buildings = _buildings_of(session, dep_id) if dep is not None else []
    if dep is None or not any(may(actor, Action.READ_CATALOG, building=b) for b in buildings):
        raise NotFound(f"no deployment {dep_id} (see 'orchestrator deploy list')")
    return dep, buildings


def _view(ctx: Context, session: Session, dep: Deployment, *, with_clients: bool) -> DeploymentView:
    assert dep.id is not None
    rows = sorted(
        session.exec(select(DeploymentClient).where(DeploymentClient.deployment_id == dep.id)),
        key=lambda r: (r.wave == 0, r.wave, r.hostname),  # waves in order, excluded last
    )
    buildings = sorted({r.building for r in rows}, key=lambda b: (len(b), b))
    counts = Counter(r.state for r in rows)
    waves: dict[int, list[DeploymentClient]] = {}
    for r in rows:
        if r.wave:
            waves.setdefault(r.wave, []).append(r)
    wave_views = []
    for number, members in sorted(waves.items()):
        places = sorted({m.building for m in members})
        label = (
            f"wave {number} (pilot)"
            if members[0].pilot
            else f"wave {number} (building {', '.join(places)})"
        )
        wave_views.append(WaveView(number, label, dict(Counter(m.state for m in members))))
    firsts: dict[str, datetime] = {}
    ends: dict[str, datetime] = {}
    if DeploymentState(dep.state) not in rollout.DEPLOYMENT_TERMINAL:
        start = max(ctx.now(), dep.not_before or ctx.now())
        opened, _bare = _first_windows(ctx, session, buildings, start)
        firsts = {b: i.start for b, i in opened.items()}
        ends = {b: i.end for b, i in opened.items()}
    assert dep.id is not None
    return DeploymentView(
        id=dep.id,
        ref=dep.ref,
        playbook=dep.playbook,
        owner=dep.owner,
        state=dep.state,
        reason=dep.reason,
        buildings=buildings,
        not_before=dep.not_before,
        deadline=dep.deadline,
        first_windows=firsts,
        window_ends=ends,
        shown_at=ctx.now(),
        counts=dict(counts),
        waves=wave_views,
        clients=[
            DeploymentClientView(
                r.hostname, r.building, r.wave, r.pilot, r.state, r.attempts, r.step, r.reason
            )
            for r in rows
        ]
        if with_clients
        else [],
        created_at=dep.created_at,
    )


def show(ctx: Context, actor: Actor, deployment_id: int) -> DeploymentView:
    """One deployment with every client's outcome. Raises: NotFound."""
    with transaction(ctx.engine) as session:
        dep, _ = visible(session, actor, deployment_id)
        return _view(ctx, session, dep, with_clients=True)


@dataclass(frozen=True)
class ProgressCell:
    """One building's clients in one wave, counted by client state."""

    building: str
    wave: int
    """1, 2, …; 0 for the clients the plan excluded (skipped from the start)."""
    pilot: bool
    counts: dict[str, int]
    """Clients by state, only the states present."""
    total: int
    done: int
    """Clients in a final state (succeeded, failed, skipped, cancelled)."""
    next_retry: datetime | None
    """When the first of its unreachable clients is tried again."""


@dataclass(frozen=True)
class FailedClientView:
    hostname: str
    building: str
    wave: int
    step: str | None
    """The step that failed, when a step failed (else the reason says why)."""
    reason: str | None
    at: datetime


@dataclass(frozen=True)
class Opening:
    start: datetime
    end: datetime


@dataclass(frozen=True)
class DeploymentProgress:
    """How far one deployment has come, at ``at``: what ``deploy watch`` draws."""

    id: int
    ref: str
    state: str
    final: bool
    """It ended (completed, cancelled or failed): nothing will change any more."""
    reason: str
    at: datetime
    not_before: datetime | None
    deadline: datetime | None
    current_wave: int | None
    """The lowest wave with clients not yet final; None when every client is final."""
    next_windows: dict[str, Opening]
    """Per building with clients not yet final, its window in force or the next one
    (from its start-not-before); empty once it ended."""
    next_start: datetime | None
    """When the earliest of those windows opens: the soonest it may start (again)."""
    counts: dict[str, int]
    cells: list[ProgressCell]
    """By building (as numbers sort), then wave (excluded clients last)."""
    failures: list[FailedClientView]
    """The latest failed clients, newest first."""


def progress(
    ctx: Context, actor: Actor, deployment_id: int, *, failures: int = 5
) -> DeploymentProgress:
    """One deployment's progress per building and wave, and its latest failures.

    Seen exactly as :func:`show` sees it (another building's deployment is not
    found), but counted in the database: one grouped query for the counts, one
    for the ``failures`` newest failed clients, so it stays cheap to ask for
    every few seconds however many clients it reaches.

    Raises: NotFound; InvalidInput for a negative ``failures``.
    """
    if failures < 0:
        raise InvalidInput("the number of failures shown cannot be negative", field="failures")
    now = ctx.now()
    dc = DeploymentClient
    with transaction(ctx.engine) as session:
        dep, _ = visible(session, actor, deployment_id)
        assert dep.id is not None
        keys = (col(dc.building), col(dc.wave), col(dc.pilot), col(dc.state))
        grouped = session.execute(
            sa.select(*keys, sa.func.count(), sa.func.min(col(dc.retry_at)))
            .where(col(dc.deployment_id) == dep.id)
            .group_by(*keys)
        ).all()
        cells: dict[tuple[str, int], dict[str, Any]] = {}
        for building, wave, pilot, client_state, n, retry in grouped:
            cell = cells.setdefault(
                (building, wave), {"pilot": False, "counts": Counter(), "retry": None}
            )
            cell["pilot"] = cell["pilot"] or bool(pilot)
            cell["counts"][client_state] += n
            if client_state == ClientState.UNREACHABLE.value and retry is not None:
                cell["retry"] = retry if cell["retry"] is None else min(cell["retry"], retry)
        terminal = {s.value for s in rollout.CLIENT_TERMINAL}
        views = [
            ProgressCell(
                building=b,
                wave=w,
                pilot=c["pilot"],
                counts=dict(c["counts"]),
                total=sum(c["counts"].values()),
                done=sum(n for s, n in c["counts"].items() if s in terminal),
                next_retry=c["retry"],
            )
            for (b, w), c in sorted(
                cells.items(),
                key=lambda kv: (len(kv[0][0]), kv[0][0], kv[0][1] == 0, kv[0][1]),
            )
        ]
        failed = session.exec(
            select(dc)
            .where(dc.deployment_id == dep.id, dc.state == ClientState.FAILED.value)
            .order_by(col(dc.updated_at).desc(), col(dc.hostname))
            .limit(failures)
        ).all()
        final = DeploymentState(dep.state) in rollout.DEPLOYMENT_TERMINAL
        open_cells = [v for v in views if v.done < v.total]
        opened: dict[str, window_rules.Interval] = {}
        if not final:
            places = {v.building for v in open_cells} or {v.building for v in views}
            opened, _bare = _first_windows(ctx, session, places, max(now, dep.not_before or now))
        counts: Counter[str] = Counter()
        for v in views:
            counts.update(v.counts)
        return DeploymentProgress(
            id=dep.id,
            ref=dep.ref,
            state=dep.state,
            final=final,
            reason=dep.reason,
            at=now,
            not_before=dep.not_before,
            deadline=dep.deadline,
            current_wave=min((v.wave for v in open_cells if v.wave), default=None),
            next_windows={b: Opening(i.start, i.end) for b, i in opened.items()},
            next_start=min((i.start for i in opened.values()), default=None),
            counts=dict(counts),
            cells=views,
            failures=[
                FailedClientView(r.hostname, r.building, r.wave, r.step, r.reason, r.updated_at)
                for r in failed
            ],
        )


def list_deployments(ctx: Context, actor: Actor, *, limit: int = 20) -> list[DeploymentView]:
    """The newest deployments reaching a building the actor may see."""
    with transaction(ctx.engine) as session:
        found: list[DeploymentView] = []
        for dep in session.exec(select(Deployment).order_by(col(Deployment.id).desc())):
            assert dep.id is not None
            if any(
                may(actor, Action.READ_CATALOG, building=b) for b in _buildings_of(session, dep.id)
            ):
                found.append(_view(ctx, session, dep, with_clients=False))
            if len(found) >= limit:
                break
        return found


# ---------------------------------------------------------------------------
# Acting on one
# ---------------------------------------------------------------------------


def _move(
    session: Session, dep: Deployment, event: DeploymentEvent, at: datetime, reason: str
) -> DeploymentState:
    current = DeploymentState(dep.state)
    target = rollout.next_deployment_state(current, event)
    values = {"state": target.value, "reason": reason[:500], "updated_at": at}
    transitions.compare_and_set(session, dep, current.value, values, what=f"deployment {dep.id}")
    return target


def _act(
    ctx: Context,
    actor: Actor,
    deployment_id: int,
    event: DeploymentEvent,
    reason: str,
    *,
    action: str,
) -> DeploymentView:
    reason = reason.strip()
    if event in (DeploymentEvent.PAUSE, DeploymentEvent.CANCEL) and not reason:
        raise InvalidInput(f"say why you {event.value} it (--reason)", field="reason")
    now = ctx.now()
    with transaction(ctx.engine) as session:
        dep, buildings = visible(session, actor, deployment_id)
        for b in buildings:
            authorize(actor, Action.RUN_PLAYBOOK, building=b)
        before = dep.state
        _move(session, dep, event, now, reason)
        changed = 0
        if event is DeploymentEvent.CANCEL:
            changed = _cancel_clients(session, dep, now, f"cancelled by {actor.username}: {reason}")
        elif event is DeploymentEvent.RETRY_FAILED:
            changed = _retry_failed(session, dep, now)
        audit.append(
            session,
            at=now,
            actor=actor,
            action=action,
            subject=_subject(dep, buildings),
            before={"state": before},
            after={"state": dep.state} | ({"clients": changed} if changed else {}),
            reason=reason,
        )
        return _view(ctx, session, dep, with_clients=False)


def _cancel_clients(session: Session, dep: Deployment, now: datetime, reason: str) -> int:
    """Clients not yet being changed are cancelled; one mid-apply finishes its step."""
    cancellable = [
        s for s in ClientState if (s, rollout.ClientEvent.CANCEL) in rollout.CLIENT_TRANSITIONS
    ]
    result = session.execute(
        sa.update(DeploymentClient)
        .where(
            col(DeploymentClient.deployment_id) == dep.id,
            col(DeploymentClient.state).in_([s.value for s in cancellable]),
        )
        .values(state=ClientState.CANCELLED.value, reason=reason[:2000], updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _retry_failed(session: Session, dep: Deployment, now: datetime) -> int:
    """Each failed client starts again as a new attempt run (failed itself is final)."""
    result = session.execute(
        sa.update(DeploymentClient)
        .where(
            col(DeploymentClient.deployment_id) == dep.id,
            col(DeploymentClient.state) == ClientState.FAILED.value,
        )
        .values(
            state=ClientState.PENDING.value,
            attempts=0,
            reason=None,
            step=None,
            retry_at=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def pause(ctx: Context, actor: Actor, deployment_id: int, *, reason: str) -> DeploymentView:
    """Hold it: nothing new starts; clients mid-step finish. Raises: InvalidTransition, …"""
    return _act(ctx, actor, deployment_id, DeploymentEvent.PAUSE, reason, action="deployment.pause")


def resume(ctx: Context, actor: Actor, deployment_id: int, *, reason: str = "") -> DeploymentView:
    """Back to scheduled: it goes on at its building's next window, never at once."""
    return _act(
        ctx, actor, deployment_id, DeploymentEvent.RESUME, reason, action="deployment.resume"
    )


def cancel(ctx: Context, actor: Actor, deployment_id: int, *, reason: str) -> DeploymentView:
    """End it: every client not being changed is cancelled, with the reason."""
    return _act(
        ctx, actor, deployment_id, DeploymentEvent.CANCEL, reason, action="deployment.cancel"
    )


def retry_failed(
    ctx: Context, actor: Actor, deployment_id: int, *, reason: str = ""
) -> DeploymentView:
    """From paused: its failed clients start over at the next window."""
    return _act(
        ctx,
        actor,
        deployment_id,
        DeploymentEvent.RETRY_FAILED,
        reason,
        action="deployment.retry_failed",
    )


def active_ids(ctx: Context) -> list[int]:
    """Deployments the scheduler must keep an eye on: scheduled or running."""
    live = [DeploymentState.SCHEDULED.value, DeploymentState.RUNNING.value]
    with transaction(ctx.engine) as session:
        return [
            i
            for i in session.exec(
                select(Deployment.id)
                .where(col(Deployment.state).in_(live))
                .order_by(col(Deployment.id))
            )
            if i is not None
        ]
