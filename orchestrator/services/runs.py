"""Running one of the project's playbooks against a building's clients, and
remembering what happened on every host.

The run row is written (status ``running``) before Ansible starts, so a run
is visible while it goes; each host's result and the run's end are written
when Ansible reports them. The playbook itself runs outside any database
transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlmodel import Session, col, func, select

from orchestrator.db.models import Building, Client, HostResult, Releasable, Run
from orchestrator.db.session import transaction
from orchestrator.domain import validation
from orchestrator.domain.policy import Action, Actor, authorize, may
from orchestrator.domain.states import Kind
from orchestrator.errors import InvalidInput, NotFound, Refused
from orchestrator.remote import ansible
from orchestrator.remote import distribution as distribution_server
from orchestrator.remote.ansible import (
    AnsibleRunner,
    HostEvent,
    HostOutcome,
    HostTarget,
    PlaybookRequest,
    PlaybookRunner,
    playbook_path,
)
from orchestrator.services import (
    agent_bundle,
    audit,
    delivery,
    image_store,
    installed,
    inventory,
    releasables,
    staging,
)
from orchestrator.services.context import Context
from orchestrator.services.credentials import Credentials as Credentials  # re-exported


@dataclass(frozen=True)
class HostResultView:
    hostname: str
    status: str
    ok: int
    changed: int
    failed: int
    unreachable: int
    skipped: int
    failed_task: str | None
    message: str | None
    reboot_required: bool = False


@dataclass(frozen=True)
class RunView:
    id: int
    playbook: str
    delivered: str | None
    building: str | None
    actor: str
    status: str
    reason: str
    started_at: datetime
    finished_at: datetime | None
    hosts: list[HostResultView]


@dataclass(frozen=True)
class DistributionPoint:
    """Where the orchestrator serves a run's artifacts to the clients."""

    address: str = "127.0.0.1"
    port: int = 0
    """0: a free port for each run."""


def run_playbook(
    ctx: Context,
    actor: Actor,
    playbook: str,
    *,
    building: str,
    credentials: Credentials,
    runner: PlaybookRunner | None = None,
    room: str | None = None,
    package: str | None = None,
    image: str | None = None,
    distribution: DistributionPoint = DistributionPoint(),
    forks: int = 10,
    on_event: Callable[[HostEvent], None] = lambda _e: None,
    should_cancel: Callable[[], bool] = lambda: False,
    hostnames: Collection[str] | None = None,
    on_start: Callable[[Session, int], None] | None = None,
    trial_of: str | None = None,
) -> RunView:
    """Run ``playbook`` on the clients of ``building`` (optionally one room).

    ``hostnames`` narrows the run to exactly those clients of the building
    (a scheduled deployment's batch); every one must be there. ``on_start`` is
    called with the session and the new run's id inside the transaction that
    writes the run row, before Ansible starts, so the caller's own rows
    (a batch moved to staging) are committed together with the run, or not
    at all if it raises.

    ``install_package`` needs ``package`` and ``apply_image`` / ``smoke_checks``
    need ``image``: a released one, for this building (see
    :mod:`orchestrator.services.delivery`); only clients of its platform are
    targeted, and its files are served from ``distribution`` for the run.
    ``runner`` defaults to the real Ansible runner.

    Raises:
        Refused: not IT, nor a tech of that building; the package or image is
            not released for it. SunsetReached: it is past its sunset.
        InvalidInput: unknown playbook, a missing or unexpected reference, an
            artifact that changed since approval. NotFound: unknown building or
            reference, or no clients there (an empty target is an error), or a
            client of ``hostnames`` that is not one of the building's (of the
            thing's platform).
        Whatever ``on_start`` raises; nothing of the run is written then.

    ``trial_of``: an image test of that image puts it, still in the chain's test
    step, and its packages on test clients (``hostnames``, each marked a test
    client): the test step's permission (:func:`delivery.check_under_test`)
    stands in for the building's run permission, since EdTech tests every
    building's images on IT's test clients.
    """
    validation.building_number(building)
    trial = trial_of is not None
    if trial:
        if not hostnames:
            raise InvalidInput("an image test names its test client", field="client")
    else:
        authorize(actor, Action.RUN_PLAYBOOK, building=building)
    path = playbook_path(playbook)
    # install_agent is handed the pull agent's bundle; none built yet: nothing runs.
    agent = agent_bundle.extravars(ctx) if path.stem == "install_agent" else {}
    now = ctx.now()
    with transaction(ctx.engine) as session:
        b = session.exec(select(Building).where(Building.number == building)).first()
        if b is None:
            raise NotFound(f"no building {building!r} (see 'orchestrator buildings')")
        shipment = delivery.prepare(
            session,
            actor,
            path.stem,
            building=building,
            package=package,
            image=image,
            today=ctx.today(),
            trial_of=trial_of,
        )
        # Artifacts the building's distribution point holds are pulled from it.
        pulls = staging.pull_sources(session, b, shipment.artifacts) if shipment else {}
        if shipment is not None:
            shipment.verify(pulled=pulls)  # what the orchestrator serves, not what is pulled
        district_keys = image_store.keys_file(session) if pulls else ""
        q = select(Client).where(Client.building_id == b.id).order_by(col(Client.hostname))
        if room is not None:
            q = q.where(func.lower(Client.room) == room.lower())
        if shipment is not None:
            q = q.where(Client.platform == shipment.platform)
        if hostnames is not None:
            q = q.where(col(Client.hostname).in_(sorted(set(hostnames))))
        clients = list(session.exec(q))
        if hostnames is not None:
            missing = sorted(set(hostnames) - {c.hostname for c in clients})
            if missing:
                which = f"{shipment.platform.upper()} clients" if shipment else "clients"
                raise NotFound(
                    f"not {which} of building {building}: {', '.join(missing)}; nothing was run"
                )
        if trial:
            untested = sorted(c.hostname for c in clients if not c.test_client)
            if untested:
                raise Refused(
                    f"{', '.join(untested)}: not test clients; an image under test goes only "
                    "to test clients (IT marks them: 'orchestrator testing clients mark')"
                )
        if not clients:
            where = f"room {room!r} of building {building}" if room else f"building {building}"
            which = f"{shipment.platform.upper()} clients" if shipment else "clients"
            raise NotFound(f"no {which} in {where}: nothing to run on")
        run = Run(
            playbook=path.stem,
            delivered=shipment.ref if shipment else None,
            building=building,
            actor=actor.username,
            role=actor.role.value,
            status="running",
            started_at=now,
        )
        session.add(run)
        session.flush()
        assert run.id is not None
        run_id = run.id
        audit.append(
            session,
            at=now,
            actor=actor,
            action="run.start",
            subject=audit.Subject("run", f"run {run_id}: {path.stem}", run_id, building),
            after={"playbook": path.stem, "hosts": len(clients)}
            | ({"delivered": shipment.ref} if shipment else {}),
        )
        if on_start is not None:
            on_start(session, run_id)
        ids = {c.hostname: c.id or 0 for c in clients}
        targets = [
            HostTarget(
                name=c.hostname,
                address=c.address,
                port=c.port,
                connection=c.transport,
                user=c.login_user
                or (credentials.ssh_user if c.transport == "ssh" else credentials.winrm_user),
                variables=dict(c.host_vars),
                host_key=c.host_key,
            )
            for c in clients
        ]
    try:
        with ExitStack() as stack:
            base_url = None
            served = shipment.served(pulled=pulls) if shipment is not None else {}
            if served:
                point = stack.enter_context(
                    distribution_server.serve_files(
                        served, address=distribution.address, port=distribution.port
                    )
                )
                base_url = point.url
            request = PlaybookRequest(
                playbook=path,
                hosts=targets,
                forks=forks,
                extravars=(
                    shipment.extravars(base_url, pulls, district_keys=district_keys)
                    if shipment
                    else agent
                ),
                ssh_key=credentials.ssh_key,
                winrm_password=credentials.winrm_password,
            )
            outcome = (runner or AnsibleRunner()).run(request, on_event, should_cancel)
    except Exception as exc:  # a crash of the runner itself still ends the run record
        _finish(ctx, actor, run_id, building, "failed", None, f"the run broke: {exc}", {}, ids)
        raise
    return _finish(
        ctx,
        actor,
        run_id,
        building,
        outcome.status,
        outcome.rc,
        outcome.reason,
        dict(outcome.hosts),
        ids,
    )


def remove_abandoned_workdirs() -> list[Path]:
    """At service start: remove what runs killed with their process left in the
    temporary folder (inventory, known hosts, Ansible's output; never secrets)."""
    return ansible.remove_abandoned_workdirs()


def _installed_package(session: Session, actor: Actor, run: Run) -> Releasable | None:
    """The package release an ``install_package`` run put on its clients."""
    if run.playbook != "install_package" or not run.delivered:
        return None
    try:
        return releasables.resolve(session, actor, Kind.PACKAGE, run.delivered)
    except (InvalidInput, NotFound):  # the run's record matters more than this one
        return None


def _finish(
    ctx: Context,
    actor: Actor,
    run_id: int,
    building: str,
    status: str,
    rc: int | None,
    reason: str,
    hosts: dict[str, HostOutcome],
    ids: dict[str, int],
) -> RunView:
    now = ctx.now()
    restart = sorted(h for h, o in hosts.items() if o.reboot_required)
    if restart:
        due = f"{len(restart)} host(s) must restart to finish: {', '.join(restart)}"
        reason = f"{reason}; {due}" if reason else due
    with transaction(ctx.engine) as session:
        run = session.get(Run, run_id)
        assert run is not None
        run.status, run.rc, run.reason, run.finished_at = status, rc, reason[:500], now
        package = _installed_package(session, actor, run)
        installed_on: list[int] = []
        session.add(run)
        for hostname, o in hosts.items():
            message = o.message or None
            client = session.get(Client, ids[hostname])
            if client is not None and o.status == "unreachable":
                message = _why_unreachable(client, message)
            finished = o.status in ("ok", "changed")
            if client is not None and o.facts and finished:
                note = inventory.apply_facts(session, client, o.facts, now)
                message = "; ".join(m for m in (message, note) if m) or None
            if client is not None and finished and run.playbook == "apply_image":
                # The play wrote this image's marker on the client as its last step.
                client.current_image, client.last_seen = run.delivered, now
                session.add(client)
            if client is not None and finished and package is not None:
                installed_on.append(ids[hostname])
            session.add(
                HostResult(
                    run_id=run_id,
                    client_id=ids[hostname],
                    hostname=hostname,
                    status=o.status,
                    ok=o.ok,
                    changed=o.changed,
                    failed=o.failed,
                    unreachable=o.unreachable,
                    skipped=o.skipped,
                    failed_task=(o.failed_task or None),
                    message=message[:2000] if message else None,
                    reboot_required=o.reboot_required,
                )
            )
        if package is not None:
            installed.record_installed(session, installed_on, package, now)
        session.flush()
        audit.append(
            session,
            at=now,
            actor=actor,
            action="run.finish",
            subject=audit.Subject("run", f"run {run_id}: {run.playbook}", run_id, building),
            after={"status": status, "hosts": len(hosts)},
            reason=reason[:500],
        )
    return show(ctx, actor, run_id)


def _why_unreachable(client: Client, message: str | None) -> str | None:
    """Ansible passes on SSH's banner ("REMOTE HOST IDENTIFICATION HAS CHANGED", …);
    say what the orchestrator knows instead, and the command that helps."""
    if client.transport != "ssh":
        return message
    refused = bool(message) and "Host key verification failed" in (message or "")
    if client.host_key_offered or (client.host_key and refused):
        why = (
            "its SSH host key is not the pinned one, so it was refused (see the key it offers "
            f"with 'orchestrator clients probe --host {client.hostname}'; after a known reinstall: "
            f"'orchestrator clients repin {client.hostname} --reason …')"
        )
    elif not client.host_key:
        why = (
            "its SSH host key is not pinned yet "
            f"(run 'orchestrator clients probe --host {client.hostname}')"
        )
    else:
        return message
    if refused:
        return f"{why}: Host key verification failed."
    return f"{why}: {message}" if message else why


def _view(session: Session, run: Run) -> RunView:
    results = session.exec(
        select(HostResult).where(HostResult.run_id == run.id).order_by(col(HostResult.hostname))
    ).all()
    assert run.id is not None
    return RunView(
        id=run.id,
        playbook=run.playbook,
        delivered=run.delivered,
        building=run.building,
        actor=run.actor,
        status=run.status,
        reason=run.reason,
        started_at=run.started_at,
        finished_at=run.finished_at,
        hosts=[
            HostResultView(
                r.hostname,
                r.status,
                r.ok,
                r.changed,
                r.failed,
                r.unreachable,
                r.skipped,
                r.failed_task,
                r.message,
                r.reboot_required,
            )
            for r in results
        ],
    )


def show(ctx: Context, actor: Actor, run_id: int) -> RunView:
    """Raises: NotFound (also for runs in buildings the actor may not see)."""
    with transaction(ctx.engine) as session:
        run = session.get(Run, run_id)
        if run is None or not may(actor, Action.READ_CATALOG, building=run.building):
            raise NotFound(f"no run {run_id} (see 'orchestrator runs list')")
        return _view(session, run)


def list_runs(ctx: Context, actor: Actor, *, limit: int = 20) -> list[RunView]:
    """The newest runs the actor may see."""
    with transaction(ctx.engine) as session:
        visible = [
            r
            for r in session.exec(select(Run).order_by(col(Run.id).desc()))
            if may(actor, Action.READ_CATALOG, building=r.building)
        ][:limit]
        return [_view(session, r) for r in visible]
