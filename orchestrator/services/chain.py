"""The approval chain: submit, record tests, approve, reject, publish/release,
deprecate, retire.

Every move asks the lifecycle table (:mod:`orchestrator.domain.lifecycle`)
whether it is legal and is written as a compare-and-set: ``UPDATE ... WHERE
state = <expected> AND state_version = <read>``. When two people decide the
same step at once, exactly one move happens and the other gets
:class:`~orchestrator.errors.StaleState` (or, if it read after the first
committed, a clear :class:`~orchestrator.errors.Conflict`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from orchestrator.db.models import AuditEntry, ChainStepRow, Decision, Releasable, TestRun
from orchestrator.db.session import transaction
from orchestrator.domain import lifecycle, sunset, validation
from orchestrator.domain.lifecycle import Event
from orchestrator.domain.policy import (
    DEFAULT_POLICIES,
    Action,
    Actor,
    ChainPolicy,
    ChainStep,
    authorize_step,
    may,
    may_decide,
)
from orchestrator.domain.states import Kind, Outcome, Persona, Role, State, Step
from orchestrator.errors import (
    Conflict,
    InvalidInput,
    Refused,
    SunsetReached,
)
from orchestrator.services import audit, catalog, image_store, notices, releasables, test_plans
from orchestrator.services import evidence as evidence_store
from orchestrator.services.context import Context
from orchestrator.services.transitions import claim, move

# ---------------------------------------------------------------------------
# Policies (data)
# ---------------------------------------------------------------------------


def load_policy(session: Session, kind: Kind) -> ChainPolicy:
    rows = session.exec(
        select(ChainStepRow)
        .where(ChainStepRow.kind == kind.value)
        .order_by(col(ChainStepRow.position))
    ).all()
    if not rows:
        return DEFAULT_POLICIES[kind]
    return ChainPolicy.from_data(
        {
            "kind": kind.value,
            "steps": [
                {
                    "step": r.step,
                    "roles": r.roles,
                    "author_may_act": r.author_may_act,
                    "needs_evidence": r.needs_evidence,
                }
                for r in rows
            ],
        }
    )


def seed_policies(session: Session) -> None:
    """Store the district default chains where no policy is stored yet."""
    for kind, policy in DEFAULT_POLICIES.items():
        if session.exec(select(ChainStepRow).where(ChainStepRow.kind == kind.value)).first():
            continue
        for i, s in enumerate(policy.steps):
            data = s.to_data()
            session.add(
                ChainStepRow(
                    kind=kind.value,
                    position=i,
                    step=data["step"],
                    roles=data["roles"],
                    author_may_act=s.author_may_act,
                    needs_evidence=s.needs_evidence,
                )
            )


def policies(ctx: Context) -> list[ChainPolicy]:
    with transaction(ctx.engine) as session:
        return [load_policy(session, k) for k in Kind]


# ---------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------


@dataclass
class CheckResult:
    name: str
    passed: bool
    output: str = ""


@dataclass(frozen=True)
class TestRunView:
    id: int
    ref: str
    persona: Persona
    account: str
    passed: bool
    checks: list[dict[str, Any]]
    evidence: str
    attachments: list[dict[str, Any]]
    actor: str
    role: Role
    digest: str
    current: bool
    """Bound to the item's current digest (and, for an image test run, its current
    test plan): older runs no longer count."""
    at: datetime
    image_test: int | None = None
    """The image test run that made it; None: recorded by hand."""
    client: str | None = None
    plan_digest: str | None = None
    counts: bool = True
    """Whether it can be the evidence the test step needs: for images only image
    test runs count (a hand-recorded test of an image is a note)."""


@dataclass(frozen=True)
class StepStatus:
    step: Step
    status: str
    """done, pending, waiting, rejected or skipped."""
    who: str
    decided_by: str | None = None
    at: datetime | None = None
    reason: str = ""


@dataclass(frozen=True)
class ChainStatus:
    item: catalog.ReleasableView
    steps: list[StepStatus]
    tests: list[TestRunView]
    decisions: list[dict[str, Any]]
    history: list[AuditEntry] = field(default_factory=list)


def _test_view(
    r: TestRun, row: Releasable, usernames: dict[int, str], plan_digest: str | None = None
) -> TestRunView:
    assert r.id is not None
    current = r.digest == row.digest
    if r.image_test_id is not None and plan_digest is not None:
        current = current and r.plan_digest == plan_digest
    return TestRunView(
        id=r.id,
        ref=catalog.ref_of(row),
        persona=Persona(r.persona),
        account=r.account,
        passed=r.passed,
        checks=list(r.checks),
        evidence=r.evidence,
        attachments=list(r.attachments),
        actor=usernames.get(r.actor_id, "?"),
        role=Role(r.role),
        digest=r.digest,
        current=current,
        at=r.at,
        image_test=r.image_test_id,
        client=r.client,
        plan_digest=r.plan_digest,
        counts=r.image_test_id is not None or row.kind == Kind.PACKAGE.value,
    )


def _usernames(session: Session) -> dict[int, str]:
    from orchestrator.db.models import Person

    return {p.id: p.username for p in session.exec(select(Person)) if p.id is not None}


def status(ctx: Context, actor: Actor, kind: Kind, ref: str) -> ChainStatus:
    """Where an item stands in its chain, its tests and its audit history.

    Raises:
        NotFound, InvalidInput.
    """
    with transaction(ctx.engine) as session:
        row = releasables.resolve(session, actor, kind, ref)
        policy = load_policy(session, kind)
        names = _usernames(session)
        decisions = session.exec(
            select(Decision).where(Decision.releasable_id == row.id).order_by(col(Decision.id))
        ).all()
        runs = session.exec(
            select(TestRun).where(TestRun.releasable_id == row.id).order_by(col(TestRun.id))
        ).all()
        plan = None if kind is Kind.PACKAGE else test_plans.plan_of(session, row).digest
        state = State(row.state)
        pending = policy.pending_step(state)
        passed_steps = _passed_steps(policy, state)
        steps = []
        for s in policy.steps:
            last = next(
                (
                    d
                    for d in reversed(decisions)
                    if d.step == s.step.value and d.digest == row.digest
                ),
                None,
            )
            if s.step in passed_steps:
                st = "done"
            elif pending is not None and s.step is pending.step:
                st = "pending"
            else:
                st = "waiting"
            steps.append(
                StepStatus(
                    step=s.step,
                    status=st,
                    who=s.who(),
                    decided_by=names.get(last.actor_id) if last and st == "done" else None,
                    at=last.at if last and st == "done" else None,
                    reason=last.reason if last and st == "done" else "",
                )
            )
        history = [
            e
            for e in session.exec(
                select(AuditEntry)
                .where(AuditEntry.object_kind == kind.value, AuditEntry.object_id == row.id)
                .order_by(col(AuditEntry.seq))
            )
        ]
        return ChainStatus(
            item=catalog.view_of(session, row, ctx.today()),
            steps=steps,
            tests=[_test_view(r, row, names, plan) for r in runs],
            decisions=[
                {
                    "step": d.step,
                    "outcome": d.outcome,
                    "by": names.get(d.actor_id, "?"),
                    "role": d.role,
                    "reason": d.reason,
                    "digest": d.digest,
                    "overridden": list(d.overridden),
                    "current": d.digest == row.digest,
                    "at": d.at,
                }
                for d in decisions
            ],
            history=history,
        )


def _passed_steps(policy: ChainPolicy, state: State) -> set[Step]:
    order = [s.step for s in policy.steps]
    if state in (State.PUBLISHED, State.DEPRECATED, State.SUNSET, State.RETIRED):
        return set(order) if state is not State.RETIRED else set()
    pending = policy.pending_step(state)
    if pending is None:
        return set()
    return set(order[: order.index(pending.step)])


def queue(ctx: Context, actor: Actor) -> list[tuple[catalog.ReleasableView, Step]]:
    """Everything whose pending step the actor may decide now: their work queue."""
    with transaction(ctx.engine) as session:
        rows = session.exec(
            select(Releasable)
            .where(
                col(Releasable.state).in_(
                    [State.IN_REVIEW.value, State.TESTING.value, State.APPROVED.value]
                )
            )
            .order_by(col(Releasable.updated_at))
        ).all()
        out: list[tuple[Releasable, Step]] = []
        for row in rows:
            if not may(actor, Action.READ_CATALOG, building=catalog.building_of(row)):
                continue
            policy = load_policy(session, Kind(row.kind))
            pending = policy.pending_step(State(row.state))
            if pending and may_decide(
                actor,
                policy,
                pending.step,
                building=catalog.building_of(row),
                authors=catalog.authors_of(row),
            ):
                out.append((row, pending.step))
        views = catalog.views(session, [r for r, _ in out], ctx.today())
        return [(v, step) for v, (_, step) in zip(views, out, strict=True)]


# ---------------------------------------------------------------------------
# Moving along the chain
# ---------------------------------------------------------------------------


def _check_sunset(session: Session, ctx: Context, row: Releasable, doing: str) -> None:
    eff = catalog.effective_sunset_of(session, row)
    if sunset.is_sunset(eff, ctx.today()):
        assert eff is not None
        raise SunsetReached(
            f"cannot {doing} {catalog.ref_of(row)}: it reached its effective sunset on "
            f"{eff.isoformat()}"
        )


def _record(
    session: Session,
    ctx: Context,
    actor: Actor,
    row: Releasable,
    action: str,
    before: dict[str, Any],
    reason: str = "",
) -> None:
    catalog.record_change(session, ctx, actor, row, action, before, reason)


def submit(ctx: Context, actor: Actor, kind: Kind, ref: str) -> catalog.ReleasableView:
    """Hand a draft to the first step of its chain.

    Raises:
        Refused, NotFound, InvalidTransition (not a draft), SunsetReached, StaleState.
    """
    with transaction(ctx.engine) as session:
        row = releasables.resolve(session, actor, kind, ref)
        releasables.authorize_maintain(actor, row)
        _check_sunset(session, ctx, row, "submit")
        before = catalog.snapshot(row)
        move(session, row, load_policy(session, kind).submit_event(), ctx.now())
        _record(session, ctx, actor, row, f"{kind.value}.submit", before)
        return catalog.view_of(session, row, ctx.today())


def _pending(policy: ChainPolicy, row: Releasable, doing: str) -> ChainStep:
    step = policy.pending_step(State(row.state))
    if step is None:
        raise Conflict(
            f"cannot {doing} {catalog.ref_of(row)}: it is {row.state} and no step of its "
            "chain is waiting"
        )
    return step


def record_test(
    ctx: Context,
    actor: Actor,
    kind: Kind,
    ref: str,
    *,
    persona: str,
    checks: Sequence[CheckResult],
    evidence: str = "",
    attachments: Sequence[str] = (),
    account: str = "",
) -> TestRunView:
    """Record one persona's test of an item in testing, bound to its digest, by hand.

    For a package this is the evidence its test step needs. For an image it is a
    note (what a person saw, screenshots): the test step of an image counts only
    image test runs (:func:`orchestrator.services.image_tests.run_image_test`).

    Raises:
        Refused (not a tester of this item, or its author), NotFound,
        InvalidInput (no checks, bad persona, missing attachment), Conflict (not in testing).
    """
    try:
        who = Persona(persona)
    except ValueError:
        raise InvalidInput(
            f"{persona!r} is not a persona (student or staff)", field="persona"
        ) from None
    if not checks:
        raise InvalidInput("record at least one check", field="check")
    clean_checks = []
    for c in checks:
        clean_checks.append(
            {
                "name": validation.label(c.name, field="check", max_len=120),
                "passed": bool(c.passed),
                "output": validation.text(c.output, field="check output", max_len=4000),
            }
        )
    evidence = validation.text(evidence, field="evidence", max_len=4000)
    account = validation.text(account, field="account", max_len=64)
    inspected = [evidence_store.inspect(p) for p in attachments]
    with transaction(ctx.engine) as session:
        row = releasables.resolve(session, actor, kind, ref)
        policy = load_policy(session, kind)
        if State(row.state) is not State.TESTING:
            raise Conflict(
                f"tests are recorded while an item is in testing; {catalog.ref_of(row)} is "
                f"{row.state}"
            )
        authorize_step(
            actor,
            policy,
            Step.TEST,
            building=catalog.building_of(row),
            authors=catalog.authors_of(row),
            doing=f"record {'package' if kind is Kind.PACKAGE else 'image'} tests",
        )
        claim(session, row)
        files = [evidence_store.store(ctx.evidence_dir, info) for info in inspected]
        assert row.id is not None
        run = TestRun(
            releasable_id=row.id,
            persona=who.value,
            account=account,
            passed=all(c["passed"] for c in clean_checks),
            checks=clean_checks,
            evidence=evidence,
            attachments=files,
            actor_id=actor.person_id,
            role=actor.role.value,
            digest=row.digest,
            at=ctx.now(),
        )
        session.add(run)
        session.flush()
        failed = [c["name"] for c in clean_checks if not c["passed"]]
        audit.append(
            session,
            at=ctx.now(),
            actor=actor,
            action=f"{kind.value}.test",
            subject=releasables.subject(row),
            digest=row.digest,
            after={
                "persona": who.value,
                "passed": run.passed,
                "failed_checks": failed,
                "attachments": [f["sha256"] for f in files],
            },
        )
        return _test_view(run, row, {actor.person_id: actor.username})


@dataclass(frozen=True)
class Override:
    """EdTech signing off an image's tests over failing checks: each one named
    (``check`` for every persona it failed for, or ``persona:check``), and why."""

    checks: Sequence[str]
    reason: str


def _latest_runs(session: Session, row: Releasable, *, image: bool) -> dict[Persona, TestRun]:
    found = {}
    for persona in Persona:
        q = select(TestRun).where(TestRun.releasable_id == row.id, TestRun.persona == persona.value)
        if image:
            q = q.where(col(TestRun.image_test_id).is_not(None))
        else:
            q = q.where(TestRun.digest == row.digest)
        latest = session.exec(q.order_by(col(TestRun.id).desc()).limit(1)).first()
        if latest is not None:
            found[persona] = latest
    return found


def _failed_names(run: TestRun) -> list[str]:
    return [c["name"] for c in run.checks if not c["passed"]]


def _require_evidence(
    session: Session, actor: Actor, row: Releasable, override: Override | None
) -> list[dict[str, Any]]:
    """Raise unless the current content has passing tests by both personas; for an
    image, image test runs of its current digest and plan (or an EdTech override of
    exactly their failing checks). Returns what was overridden."""
    ref = catalog.ref_of(row)
    image = row.kind != Kind.PACKAGE.value
    if override is not None and not image:
        raise InvalidInput(
            "an override is for image test runs; a package's tests are recorded by hand",
            field="override",
        )
    latest = _latest_runs(session, row, image=image)
    if not image:
        for persona in Persona:
            run = latest.get(persona)
            if run is None:
                raise Conflict(
                    f"cannot sign off tests of {ref}: no {persona.value} test is recorded for "
                    f"its current content ({row.digest[:19]}…)"
                )
            if not run.passed:
                raise Conflict(
                    f"cannot sign off tests of {ref}: the latest {persona.value} test failed "
                    f"({', '.join(_failed_names(run))})"
                )
        return []
    plan = test_plans.plan_of(session, row).digest
    failing: list[tuple[Persona, str, TestRun]] = []
    for persona in Persona:
        run = latest.get(persona)
        if run is None:
            raise Conflict(
                f"cannot sign off tests of {ref}: no {persona.value} image test run is recorded "
                f"(run 'orchestrator image test {ref} --client TESTCLIENT')"
            )
        if run.digest != row.digest:
            raise Conflict(
                f"cannot sign off tests of {ref}: the evidence no longer matches the digest: "
                f"its latest {persona.value} test run (image test #{run.image_test_id}) tested "
                f"{run.digest[:19]}…, and the image is now {row.digest[:19]}…; test it again"
            )
        if run.plan_digest != plan:
            raise Conflict(
                f"cannot sign off tests of {ref}: its test plan changed after its latest "
                f"{persona.value} test run (image test #{run.image_test_id}); test it again"
            )
        if not run.passed:
            failing += [(persona, name, run) for name in _failed_names(run)]
    if not failing:
        if override is not None:
            raise InvalidInput(
                f"nothing to override: the latest student and staff test runs of {ref} passed",
                field="override",
            )
        return []
    listed = ", ".join(f"{p.value}:{n}" for p, n, _ in failing)
    if override is None:
        raise Conflict(
            f"cannot sign off tests of {ref}: checks failed in its latest test runs ({listed}); "
            "fix them and test again, or EdTech may sign off over them with an override "
            "naming each failing check and why"
        )
    if actor.role is not Role.EDTECH:
        raise Refused(
            f"{actor.role.label} cannot sign off tests over failing checks "
            "(only EdTech may override a failing image test run)"
        )
    named: set[tuple[Persona, str]] = set()
    failing_keys = {(p, n) for p, n, _ in failing}
    for item in override.checks:
        text = item.strip()
        who, sep, name = text.partition(":")
        if sep:
            try:
                persona = Persona(who)
            except ValueError:
                raise InvalidInput(
                    f"{text!r}: {who!r} is not a persona (student or staff)", field="override"
                ) from None
            keys = {(persona, name)} & failing_keys
        else:
            keys = {(p, n) for p, n in failing_keys if n == text}
        if not keys:
            raise InvalidInput(
                f"{text!r} did not fail in the latest test runs of {ref} (failing: {listed})",
                field="override",
            )
        named |= keys
    missing = sorted(f"{p.value}:{n}" for p, n in failing_keys - named)
    if missing:
        raise InvalidInput(
            f"an override names every failing check; not named: {', '.join(missing)}",
            field="override",
        )
    return [
        {"persona": p.value, "check": n, "image_test": run.image_test_id} for p, n, run in failing
    ]


def _decide(
    ctx: Context,
    actor: Actor,
    kind: Kind,
    ref: str,
    *,
    outcome: Outcome,
    reason: str,
    expect: Step | None,
    override: Override | None = None,
) -> catalog.ReleasableView:
    if override is not None:
        reason = override.reason
    required = outcome is Outcome.REJECT or override is not None
    reason = validation.text(reason, field="reason", required=required)
    publish_verb = "publish" if kind is Kind.BASE_IMAGE else "release"
    if outcome is Outcome.REJECT:
        doing = "reject"
    else:
        doing = publish_verb if expect is Step.PUBLISH else "approve"
    with transaction(ctx.engine) as session:
        row = releasables.resolve(session, actor, kind, ref)
        policy = load_policy(session, kind)
        step = _pending(policy, row, doing)
        if expect is not None and step.step is not expect:
            raise Conflict(
                f"cannot {doing} the {expect.value} step of {catalog.ref_of(row)}: it is "
                f"{row.state}, waiting for its {step.step.value} step"
            )
        if outcome is Outcome.APPROVE and expect is not Step.PUBLISH and step.step is Step.PUBLISH:
            raise Conflict(
                f"{catalog.ref_of(row)} has passed review and tests; {publish_verb} it instead"
            )
        authorize_step(
            actor,
            policy,
            step.step,
            building=catalog.building_of(row),
            authors=catalog.authors_of(row),
        )
        if outcome is Outcome.APPROVE and catalog.compute_digest(session, row) != row.digest:
            # A backstop: approvals are only ever given to the content they judged.
            raise Conflict(
                f"cannot {doing} {catalog.ref_of(row)}: its content changed since its digest "
                "was recorded; revise it so the chain starts over"
            )
        before = catalog.snapshot(row)
        overridden: list[dict[str, Any]] = []
        if outcome is Outcome.REJECT:
            move(session, row, Event.REJECT, ctx.now())
        else:
            _check_sunset(session, ctx, row, doing)
            if step.needs_evidence:
                overridden = _require_evidence(session, actor, row, override)
            elif override is not None:
                raise InvalidInput(
                    f"the {step.step.value} step needs no test evidence: nothing to override",
                    field="override",
                )
            if step.step is Step.PUBLISH:
                _check_publishable(session, ctx, row)
            move(session, row, step.pass_event, ctx.now())
        assert row.id is not None
        session.add(
            Decision(
                releasable_id=row.id,
                step=step.step.value,
                outcome=outcome.value,
                actor_id=actor.person_id,
                role=actor.role.value,
                reason=reason,
                digest=row.digest,
                overridden=overridden,
                at=ctx.now(),
            )
        )
        action = f"{kind.value}.{step.step.value}.{outcome.value}"
        _record(session, ctx, actor, row, action, before, reason)
        if overridden:
            audit.append(
                session,
                at=ctx.now(),
                actor=actor,
                action=f"{kind.value}.test.override",
                subject=releasables.subject(row),
                digest=row.digest,
                after={"overridden": overridden},
                reason=reason,
            )
        if outcome is Outcome.APPROVE and step.step is Step.PUBLISH:
            _after_publish(session, ctx, actor, row)
        return catalog.view_of(session, row, ctx.today())


def approve(
    ctx: Context,
    actor: Actor,
    kind: Kind,
    ref: str,
    reason: str = "",
    *,
    step: Step,
    override: Override | None = None,
) -> catalog.ReleasableView:
    """Approve the review or test step.

    The test step needs passing student and staff tests of the current content:
    for an image, its latest image test run per persona, of its current digest
    and test plan; for a package, the latest recorded test per persona. EdTech
    may sign off an image over failing checks with an ``override`` naming every
    one and why (recorded with the decision and audited).

    ``step`` names the step the approver judged; if the item has moved on since,
    the approval is refused rather than applied to the next step.

    Raises:
        Refused (also: an override by anyone but EdTech), NotFound, Conflict (not
        waiting for that step, or missing, failing or outdated evidence),
        InvalidInput (an override naming other checks than those that failed, or
        no reason), SunsetReached, StaleState.
    """
    if step is Step.PUBLISH:
        raise InvalidInput("the publish step is decided with publish/release", field="step")
    return _decide(
        ctx,
        actor,
        kind,
        ref,
        outcome=Outcome.APPROVE,
        reason=reason,
        expect=step,
        override=override,
    )


def reject(
    ctx: Context, actor: Actor, kind: Kind, ref: str, reason: str, *, step: Step | None = None
) -> catalog.ReleasableView:
    """Reject the pending step (or, if given, only that step), with a reason:
    the item goes back to draft.

    Raises:
        Refused, NotFound, InvalidInput (no reason), Conflict, StaleState.
    """
    return _decide(ctx, actor, kind, ref, outcome=Outcome.REJECT, reason=reason, expect=step)


def publish(
    ctx: Context, actor: Actor, kind: Kind, ref: str, reason: str = ""
) -> catalog.ReleasableView:
    """Publish a base image or release a customized image or package.

    Older published versions of the same thing become deprecated; publishing a
    base flags the derivatives of older bases of its platform and level for rebase.

    Raises:
        Refused, NotFound, Conflict (not approved yet; base or packages not
        released), SunsetReached, StaleState.
    """
    return _decide(
        ctx, actor, kind, ref, outcome=Outcome.APPROVE, reason=reason, expect=Step.PUBLISH
    )


def _check_publishable(session: Session, ctx: Context, row: Releasable) -> None:
    if row.kind == Kind.CUSTOM_IMAGE.value:
        base = session.get(Releasable, row.base_id)
        assert base is not None
        if State(base.state) not in lifecycle.DEPLOYABLE:
            raise Conflict(
                f"cannot release {catalog.ref_of(row)}: its base {catalog.ref_of(base)} is "
                f"{base.state}"
            )
        assert row.id is not None
        unreleased = [
            catalog.ref_of(p)
            for p in catalog.package_rows(session, row.id)
            if State(p.state) not in lifecycle.DEPLOYABLE
        ]
        if unreleased:
            raise Conflict(
                f"cannot release {catalog.ref_of(row)}: packages not released yet: "
                f"{', '.join(sorted(unreleased))}"
            )


def _after_publish(session: Session, ctx: Context, actor: Actor, row: Releasable) -> None:
    ref = catalog.ref_of(row)
    # Released: its bytes in the store (if imported) get the district's signature.
    image_store.sign_release(session, ctx, row)
    older = session.exec(
        select(Releasable).where(
            Releasable.kind == row.kind,
            Releasable.scope_key == row.scope_key,
            Releasable.name == row.name,
            Releasable.version_key < row.version_key,
            col(Releasable.state).in_([State.PUBLISHED.value, State.DEPRECATED.value]),
        )
    ).all()
    for old in older:
        before = catalog.snapshot(old)
        if old.state == State.PUBLISHED.value:
            move(session, old, Event.DEPRECATE, ctx.now())
        if old.needs_rebase:
            old.needs_rebase = False
            session.add(old)
            session.flush()
        if before != catalog.snapshot(old):
            _record(
                session, ctx, actor, old, f"{old.kind}.deprecate", before, f"superseded by {ref}"
            )
    if row.kind != Kind.BASE_IMAGE.value:
        return
    older_bases = session.exec(
        select(Releasable.id).where(
            Releasable.kind == Kind.BASE_IMAGE.value,
            Releasable.platform == row.platform,
            Releasable.level == row.level,
            Releasable.version_key < row.version_key,
        )
    ).all()
    derivatives = session.exec(
        select(Releasable).where(
            Releasable.kind == Kind.CUSTOM_IMAGE.value,
            col(Releasable.base_id).in_(older_bases),
            col(Releasable.state).not_in([State.SUNSET.value, State.RETIRED.value]),
            col(Releasable.needs_rebase).is_(False),
        )
    ).all()
    for d in derivatives:
        # A derivative already superseded by a newer version of its own is not flagged.
        newer = session.exec(
            select(Releasable.id).where(
                Releasable.kind == d.kind,
                Releasable.scope_key == d.scope_key,
                Releasable.name == d.name,
                Releasable.version_key > d.version_key,
                col(Releasable.state).not_in([State.RETIRED.value]),
            )
        ).first()
        if newer is not None:
            continue
        before = catalog.snapshot(d)
        d.needs_rebase = True
        session.add(d)
        session.flush()
        _record(
            session,
            ctx,
            actor,
            d,
            "custom_image.flag_rebase",
            before,
            f"newer base {ref} published",
        )
        notices.post(
            session,
            ctx,
            key=f"rebase:{d.id}:{row.id}",
            releasable=d,
            recipients=notices.building_techs(session, d.scope_key),
            message=f"{catalog.ref_of(d)} must be rebased: newer base {ref} was published",
        )


def deprecate(
    ctx: Context, actor: Actor, kind: Kind, ref: str, reason: str = ""
) -> catalog.ReleasableView:
    """Mark a published item as superseded (still deployable until its sunset).

    Raises:
        Refused, NotFound, InvalidTransition, StaleState.
    """
    return _maintain_move(ctx, actor, kind, ref, Event.DEPRECATE, reason)


def retire(
    ctx: Context, actor: Actor, kind: Kind, ref: str, reason: str = ""
) -> catalog.ReleasableView:
    """Withdraw an item for good: a draft is discarded; a deprecated or sunset one retired.

    Raises:
        Refused, NotFound, InvalidTransition, StaleState.
    """
    return _maintain_move(ctx, actor, kind, ref, Event.RETIRE, reason)


def _maintain_move(
    ctx: Context, actor: Actor, kind: Kind, ref: str, event: Event, reason: str
) -> catalog.ReleasableView:
    reason = validation.text(reason, field="reason")
    with transaction(ctx.engine) as session:
        row = releasables.resolve(session, actor, kind, ref)
        releasables.authorize_maintain(actor, row)
        if event is Event.RETIRE and row.state == State.DRAFT.value:
            event = Event.DISCARD
        before = catalog.snapshot(row)
        move(session, row, event, ctx.now())
        _record(session, ctx, actor, row, f"{kind.value}.{event.value}", before, reason)
        return catalog.view_of(session, row, ctx.today())
