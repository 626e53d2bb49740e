"""Image test runs: the image on a test client, then its test plan's checks as the
student and the staff test account, recorded as the evidence the chain's test
step needs.

``orchestrator image test IMAGE --client HOST`` comes here. In order:

1. **Gates**, before anything is written: the image is in the chain's test step
   (testing) and not past its sunset; the actor may decide that step
   (EdTech, or a SecTec for its own building's images; never a BTC, never one of
   the image's authors: :func:`delivery.check_under_test`); the client is a test
   client the actor may see, of the image's platform and level; a Mac's SSH host
   key is pinned; the building's student
   and staff test accounts are set. The accounts are the customized image's
   building's, or for a base image the test client's building's.
2. **The test row** (``image_test``, status ``running``) is written with the
   image's digest and the plan's digest, and audited on the image. One test
   client runs one test at a time (a partial unique index); a test left
   ``running`` by a process that has ended is closed as ``error`` when the
   client is next used.
3. **Delivery** through the deployment path: :func:`runs.run_playbook` with
   ``apply_image`` and ``trial_of``, so the same gates on the artifact, the
   same playbook, the same run record and host results as any deployment.
4. **Each persona** signs in with its own password (the run's first check, named
   ``sign-in`` unless the plan has a sign-in check of its own) and runs its checks
   (:mod:`orchestrator.remote.persona_checks`); every outcome is reported
   as it comes.
5. **The result**: one ``test_run`` row per persona (each check with the
   command, exit status and what the persona saw), bound to the image digest
   and plan digest the test started with and to the test client; the test row
   ``passed``, ``failed`` (a check failed, a sign-in failed, or the image could
   not be put on the client) or ``error`` (the run broke). Audited on the image,
   so it is in the image's history.

Passwords go from :func:`testing.persona_login` to the checker and nowhere else:
not into the run, its Ansible inventory or artifacts, a row, a message or a log.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator.db.models import Building, Client, ImageTest, Person, Releasable, TestRun
from orchestrator.db.session import transaction
from orchestrator.domain.policy import SYSTEM_ACTOR, Actor
from orchestrator.domain.states import Kind, Persona, Platform, State
from orchestrator.errors import Conflict, InvalidInput, NotFound, OrchestratorError
from orchestrator.remote import persona_checks
from orchestrator.remote.ansible import HostEvent, PlaybookRunner
from orchestrator.remote.persona_checks import (
    Check,
    CheckOutcome,
    Login,
    PersonaChecker,
    PersonaResult,
    RemotePersonaChecker,
    Target,
)
from orchestrator.services import (
    audit,
    catalog,
    delivery,
    inventory,
    releasables,
    runs,
    test_plans,
    testing,
)
from orchestrator.services.context import Context
from orchestrator.services.refs import ref_of

OUTPUT_KEPT = persona_checks.OUTPUT_KEPT

__all__ = [
    "CheckRow",
    "ImageTestView",
    "PersonaChecker",
    "PersonaView",
    "PlaybookRunner",
    "Progress",
    "list_for",
    "run_image_test",
    "show",
]
"""PersonaChecker and PlaybookRunner are named here for the command line, which
takes no import from remote/ (it may swap in fakes of both)."""


@dataclass(frozen=True)
class Progress:
    """One step of a running image test, for live progress."""

    stage: str
    """``deliver`` (the image goes on the client), ``sign_in``, ``check`` or ``done``."""
    message: str
    persona: str | None = None
    passed: bool | None = None


@dataclass(frozen=True)
class CheckRow:
    """One check as one persona ran it."""

    persona: str
    name: str
    passed: bool
    command: str
    exit_code: int | None
    output: str
    message: str


@dataclass(frozen=True)
class PersonaView:
    persona: Persona
    account: str
    signed_in: bool
    passed: bool
    checks: list[CheckRow]
    message: str = ""


@dataclass(frozen=True)
class ImageTestView:
    id: int
    image: str
    client: str
    accounts_building: str
    status: str
    """running, passed, failed or error."""
    reason: str
    digest: str
    plan_digest: str
    current: bool
    """Bound to the image's current digest and current plan: evidence the chain counts."""
    delivery_run: int | None
    actor: str
    started_at: datetime
    finished_at: datetime | None
    personas: list[PersonaView] = field(default_factory=list)

    @property
    def failing(self) -> list[tuple[str, str]]:
        """(persona, check) of every failed check."""
        return [(p.persona.value, c.name) for p in self.personas for c in p.checks if not c.passed]


@dataclass(frozen=True)
class _Started:
    test_id: int
    ref: str
    kind: Kind
    building: str
    """The test client's building (the run's)."""
    target: Target
    logins: dict[Persona, Login]
    checks: dict[Persona, list[Check]]
    packages: list[str]
    """Installed after the image: a PC's customized image's packages."""


_PLATFORM_WORD = {Platform.MAC.value: "Mac", Platform.PC.value: "PC"}


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_gone(owner: str) -> bool:
    """True when ``owner`` (host:pid) names a process of this machine that has ended."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _level_of(session: Session, row: Releasable) -> str | None:
    if row.level:
        return row.level
    base = session.get(Releasable, row.base_id) if row.base_id else None
    return base.level if base is not None else None


def _target(client: Client) -> Target:
    return Target(
        hostname=client.hostname,
        platform=client.platform,
        address=client.address,
        port=client.port,
        host_key=client.host_key,
        winrm_scheme=client.host_vars.get("ansible_winrm_scheme", "http"),
        winrm_ca_file=client.host_vars.get("ansible_winrm_ca_trust_path"),
    )


SIGN_IN = "sign-in"


def _persona_checks(plan: Sequence[test_plans.PlanCheck], who: Persona) -> list[Check]:
    """The plan's checks for ``who``; every run signs in first, so where the plan has no
    sign-in check of its own for the persona, one leads (named :data:`SIGN_IN`)."""
    mine = [
        Check(c.name, c.kind.value, c.runner_params(), float(c.timeout_s))
        for c in plan
        if c.personas.value in (who.value, "both")
    ]
    if not any(c.kind == "sign_in" for c in mine):
        taken = {c.name for c in plan}
        name = SIGN_IN if SIGN_IN not in taken else f"{SIGN_IN}-{who.value}"
        mine.insert(0, Check(name, "sign_in", {}, float(test_plans.DEFAULT_TIMEOUT)))
    return mine


def _close_abandoned(session: Session, ctx: Context, client: Client) -> None:
    """Refuse a busy test client; close a test whose process ended as ``error``.

    Raises: Conflict (another test runs on the client).
    """
    running = session.exec(
        select(ImageTest).where(ImageTest.client_id == client.id, ImageTest.status == "running")
    ).first()
    if running is None:
        return
    image = session.get(Releasable, running.releasable_id)
    ref = ref_of(image) if image is not None else f"#{running.releasable_id}"
    if not _owner_gone(running.owner):
        raise Conflict(
            f"test client {client.hostname} is busy: image test #{running.id} of {ref} "
            f"started at {running.started_at:%Y-%m-%d %H:%M} UTC; try again when it ends "
            "or use another test client"
        )
    running.status, running.finished_at = "error", ctx.now()
    running.reason = f"interrupted: the process running it ({running.owner}) ended"
    session.add(running)
    session.flush()
    if image is not None:
        audit.append(
            session,
            at=ctx.now(),
            actor=SYSTEM_ACTOR,
            action=f"{image.kind}.test_run.interrupted",
            subject=releasables.subject(image),
            digest=running.digest,
            after={"image_test": running.id, "client": running.client},
            reason=running.reason,
        )


def _start(ctx: Context, actor: Actor, ref: str, hostname: str) -> _Started:
    with transaction(ctx.engine) as session:
        row = test_plans.resolve_image(session, actor, ref)
        kind = Kind(row.kind)
        delivery.check_under_test(session, actor, row, today=ctx.today())
        client = inventory.get_client(session, actor, hostname)
        b = session.get(Building, client.building_id)
        assert b is not None
        image_ref = ref_of(row)
        if not client.test_client:
            raise Conflict(
                f"{client.hostname} is not a test client: images under test go only to test "
                f"clients (see 'orchestrator testing clients list --platform {row.platform}'; "
                "IT marks them)"
            )
        if client.platform != row.platform:
            have, want = _PLATFORM_WORD[client.platform], _PLATFORM_WORD[row.platform]
            raise InvalidInput(
                f"{client.hostname} is a {have} and {image_ref} is a {want} image: "
                f"choose a {want} test client",
                field="client",
            )
        level = _level_of(session, row)
        if level is not None and b.level != level:
            raise InvalidInput(
                f"{client.hostname} is in {b.level} building {b.number} and {image_ref} is "
                f"for {level} schools: choose a test client of a {level} building",
                field="client",
            )
        if client.transport == "ssh" and not client.host_key:
            raise Conflict(
                f"{client.hostname}'s SSH host key is not pinned yet "
                f"(run 'orchestrator clients probe --host {client.hostname}')"
            )
        plan = test_plans.plan_of(session, row)
        checks = {who: _persona_checks(plan.checks, who) for who in Persona}
        packages = (
            [ref_of(p) for p in catalog.package_rows(session, row.id)]
            if row.id is not None and kind is Kind.CUSTOM_IMAGE and row.platform == "pc"
            else []
        )
        accounts = catalog.building_of(row) or b.number
        target = _target(client)
        building, digest, plan_digest = b.number, row.digest, plan.digest
        assert row.id is not None and client.id is not None
        image_id, client_id = row.id, client.id
    # Outside the transaction: each reads its own (vault.reveal may read twice).
    logins = {}
    for who in Persona:
        found = testing.persona_login(ctx, accounts, who.value)
        logins[who] = Login(who.value, found.username, found.password)
    now = ctx.now()
    try:
        with transaction(ctx.engine) as session:
            fresh = session.get(Client, client_id)
            image = session.get(Releasable, image_id)
            assert fresh is not None and image is not None
            if image.digest != digest or image.state != State.TESTING.value:
                raise Conflict(f"{image_ref} changed while its test was being prepared: try again")
            _close_abandoned(session, ctx, fresh)
            test = ImageTest(
                releasable_id=image_id,
                client_id=client_id,
                client=fresh.hostname,
                accounts_building=accounts,
                digest=digest,
                plan_digest=plan_digest,
                status="running",
                owner=_owner(),
                actor_id=actor.person_id,
                role=actor.role.value,
                started_at=now,
            )
            session.add(test)
            session.flush()
            assert test.id is not None
            audit.append(
                session,
                at=now,
                actor=actor,
                action=f"{kind.value}.test_run.start",
                subject=releasables.subject(image),
                digest=digest,
                after={
                    "image_test": test.id,
                    "client": fresh.hostname,
                    "accounts": accounts,
                    "plan_digest": plan_digest,
                },
            )
            test_id = test.id
    except sa.exc.IntegrityError:
        raise Conflict(
            f"test client {hostname} is busy: another image test started on it just now"
        ) from None
    return _Started(test_id, image_ref, kind, building, target, logins, checks, packages)


def run_image_test(
    ctx: Context,
    actor: Actor,
    ref: str,
    *,
    client: str,
    credentials: runs.Credentials,
    runner: PlaybookRunner | None = None,
    checker: PersonaChecker | None = None,
    distribution: runs.DistributionPoint = runs.DistributionPoint(),
    on_progress: Callable[[Progress], None] = lambda _p: None,
) -> ImageTestView:
    """Put ``ref`` on test client ``client``, then sign in as the student and the
    staff test account and run the plan's checks as each (see the module).

    A check that fails, a persona that cannot sign in, or a client the image
    could not be put on is a ``failed`` test, returned, not raised.

    Raises (before anything is written): NotFound (image, client, building or a
        test account), Refused (not a tester of this image, or its author),
        Conflict (not in testing, not a test client, client busy, host key not
        pinned), InvalidInput (platform or level of the
        client), SunsetReached, SecretKeyProblem.
        After the test row is written, an error of the run itself (an artifact
        that no longer matches its approval, a malformed check, a runner that
        broke) ends the test as ``error`` and is raised.
    """
    started = _start(ctx, actor, ref, client)
    on_progress(Progress("deliver", f"putting {started.ref} on {client} (apply_image)"))

    def host_event(e: HostEvent) -> None:
        said = f" ({e.message})" if e.message and e.result in ("failed", "unreachable") else ""
        on_progress(Progress("deliver", f"{e.task}: {e.result}{said}"))

    steps: list[tuple[str, dict[str, str]]] = [("apply_image", {"image": started.ref})]
    steps += [("install_package", {"package": p}) for p in started.packages]
    first_run: int | None = None
    for playbook, refs in steps:
        try:
            run = runs.run_playbook(
                ctx,
                actor,
                playbook,
                building=started.building,
                credentials=credentials,
                runner=runner,
                distribution=distribution,
                hostnames=[started.target.hostname],
                on_event=host_event,
                trial_of=started.ref,
                **refs,  # type: ignore[arg-type]
            )
        except BaseException as exc:  # Ctrl-C too: the bench is freed at once
            why = f"the image could not be delivered ({playbook}): {_why(exc)}"
            _finish_error(ctx, actor, started, why, first_run)
            raise
        first_run = run.id if first_run is None else first_run
        host = next((h for h in run.hosts if h.hostname == started.target.hostname), None)
        if run.status == "successful" and host is not None and host.status in ("ok", "changed"):
            continue
        what = started.ref if playbook == "apply_image" else f"{refs['package']} (of the image)"
        if host is not None and host.status == "unreachable":
            why = f"test client {client} could not be reached: {host.message or run.reason}"
        elif host is not None:
            why = (
                f"{what} could not be put on {client}: {host.failed_task or 'the play'} "
                f"failed: {host.message or run.reason}"
            )
        else:
            why = f"{what} could not be put on {client}: {run.reason or run.status}"
        return _finish(ctx, actor, started, first_run, {}, failure=why, on_progress=on_progress)
    assert first_run is not None
    on_progress(Progress("deliver", f"{started.ref} is on {client} (run {first_run})", passed=True))
    results: dict[Persona, PersonaResult] = {}
    use = checker or RemotePersonaChecker()
    try:
        for who in Persona:
            login = started.logins[who]
            on_progress(Progress("sign_in", f"signing in as {login.username}", persona=who.value))

            def outcome(o: CheckOutcome, who: Persona = who) -> None:
                on_progress(Progress("check", f"{o.name}: {o.message}", who.value, o.passed))

            results[who] = use.run(started.target, login, started.checks[who], outcome)
    except BaseException as exc:
        _finish_error(ctx, actor, started, f"the checks could not run: {_why(exc)}", first_run)
        raise
    return _finish(ctx, actor, started, first_run, results, failure="", on_progress=on_progress)


def _why(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "stopped by the person running it"
    return str(exc) or type(exc).__name__


def _finish_error(
    ctx: Context, actor: Actor, started: _Started, reason: str, run_id: int | None
) -> None:
    with transaction(ctx.engine) as session:
        test = session.get(ImageTest, started.test_id)
        assert test is not None
        _close(session, ctx, actor, test, "error", reason[:2000], run_id, {})


def _close(
    session: Session,
    ctx: Context,
    actor: Actor,
    test: ImageTest,
    status: str,
    reason: str,
    run_id: int | None,
    failed: dict[str, list[str]],
) -> None:
    test.status, test.reason, test.finished_at = status, reason, ctx.now()
    test.delivery_run_id = run_id
    session.add(test)
    session.flush()
    image = session.get(Releasable, test.releasable_id)
    assert image is not None
    audit.append(
        session,
        at=ctx.now(),
        actor=actor,
        action=f"{image.kind}.test_run.finish",
        subject=releasables.subject(image),
        digest=test.digest,
        after={
            "image_test": test.id,
            "client": test.client,
            "status": status,
            "failed_checks": failed,
            "plan_digest": test.plan_digest,
        },
        reason=reason[:500],
    )


def _finish(
    ctx: Context,
    actor: Actor,
    started: _Started,
    run_id: int,
    results: dict[Persona, PersonaResult],
    *,
    failure: str,
    on_progress: Callable[[Progress], None],
) -> ImageTestView:
    now = ctx.now()
    with transaction(ctx.engine) as session:
        test = session.get(ImageTest, started.test_id)
        assert test is not None
        failed: dict[str, list[str]] = {}
        for who, result in results.items():
            rows = [_check_dict(o) for o in result.outcomes]
            passed = result.signed_in and bool(rows) and all(r["passed"] for r in rows)
            failed[who.value] = [r["name"] for r in rows if not r["passed"]]
            session.add(
                TestRun(
                    releasable_id=test.releasable_id,
                    persona=who.value,
                    account=result.username,
                    passed=passed,
                    checks=rows,
                    evidence=result.message
                    or f"{sum(r['passed'] for r in rows)} of {len(rows)} checks passed "
                    f"on {test.client}",
                    actor_id=actor.person_id,
                    role=actor.role.value,
                    digest=test.digest,
                    image_test_id=test.id,
                    plan_digest=test.plan_digest,
                    signed_in=result.signed_in,
                    client=test.client,
                    at=now,
                )
            )
        all_passed = not failure and all(not names for names in failed.values()) and bool(results)
        if failure:
            reason = failure
        elif all_passed:
            reason = ""
        else:
            reason = "; ".join(
                f"{p}: {', '.join(names)} failed" for p, names in failed.items() if names
            )
            unsigned = [r.message for r in results.values() if not r.signed_in]
            if unsigned:
                reason = "; ".join(unsigned)
        _close(
            session,
            ctx,
            actor,
            test,
            "passed" if all_passed else "failed",
            reason[:2000],
            run_id,
            failed,
        )
        view = _view(session, test)
    on_progress(Progress("done", view.reason or "every check passed", passed=all_passed))
    return view


def _check_dict(o: CheckOutcome) -> dict[str, Any]:
    return {
        "name": o.name,
        "passed": o.passed,
        "command": o.command,
        "exit_code": o.exit_code,
        "output": o.output[:OUTPUT_KEPT],
        "message": o.message,
    }


def _view(session: Session, test: ImageTest, current_plan: str | None = None) -> ImageTestView:
    """``current_plan``: the image's current plan digest, when the caller has it."""
    image = session.get(Releasable, test.releasable_id)
    assert image is not None and test.id is not None
    if current_plan is None:
        current_plan = test_plans.plan_of(session, image).digest
    person = session.get(Person, test.actor_id)
    personas = []
    for r in session.exec(
        select(TestRun).where(TestRun.image_test_id == test.id).order_by(col(TestRun.id))
    ):
        checks = [
            CheckRow(
                persona=r.persona,
                name=c["name"],
                passed=bool(c["passed"]),
                command=c.get("command", ""),
                exit_code=c.get("exit_code"),
                output=c.get("output", ""),
                message=c.get("message", ""),
            )
            for c in r.checks
        ]
        personas.append(
            PersonaView(
                Persona(r.persona), r.account, bool(r.signed_in), r.passed, checks, r.evidence
            )
        )
    return ImageTestView(
        id=test.id,
        image=ref_of(image),
        client=test.client,
        accounts_building=test.accounts_building,
        status=test.status,
        reason=test.reason,
        digest=test.digest,
        plan_digest=test.plan_digest,
        current=test.digest == image.digest and test.plan_digest == current_plan,
        delivery_run=test.delivery_run_id,
        actor=person.username if person is not None else "?",
        started_at=test.started_at,
        finished_at=test.finished_at,
        personas=personas,
    )


def show(ctx: Context, actor: Actor, test_id: int) -> ImageTestView:
    """One image test with every persona's checks.

    Raises: NotFound (also for tests of images the actor may not see).
    """
    with transaction(ctx.engine) as session:
        test = session.get(ImageTest, test_id)
        if test is not None:
            image = session.get(Releasable, test.releasable_id)
            assert image is not None
            try:
                releasables.resolve(session, actor, Kind(image.kind), f"#{image.id}")
            except OrchestratorError:
                test = None
        if test is None:
            raise NotFound(f"no image test {test_id} (see 'orchestrator image test-runs IMAGE')")
        return _view(session, test)


def list_for(ctx: Context, actor: Actor, ref: str) -> list[ImageTestView]:
    """The image's test runs, newest first.

    Raises: InvalidInput, NotFound (see :func:`test_plans.resolve_image`).
    """
    with transaction(ctx.engine) as session:
        image = test_plans.resolve_image(session, actor, ref)
        tests = session.exec(
            select(ImageTest)
            .where(ImageTest.releasable_id == image.id)
            .order_by(col(ImageTest.id).desc())
        ).all()
        plan = test_plans.plan_of(session, image).digest
        return [_view(session, t, plan) for t in tests]
