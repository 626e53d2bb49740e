"""The approval chain driven at random through the real services, on both backends.

A Hypothesis state machine lets any of the test district's people try any move
of the chain (submit, approve, reject, record a test, publish, revise) on a
published base image, one customized image and one software package, and moves
the clock past sunset dates. Each call must either succeed or raise one of the
orchestrator's own errors, and it must succeed exactly when the rules of
shared/DOMAIN.md say it may. The oracle below (``_Oracle``) is written from
DOMAIN.md by hand, not computed from ``orchestrator.domain.policy``.

After every step the database is compared with the model and checked for the
chain's promises: no skipped step, no self-approval, every rejection recorded
with its reason, nothing approved or published at or after its effective
sunset, and an audit log that verifies.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from orchestrator.clock import FixedClock
from orchestrator.db.models import Decision, Releasable, TestRun
from orchestrator.db.session import make_engine, transaction
from orchestrator.domain.lifecycle import DEPLOYABLE, REVISABLE
from orchestrator.domain.policy import Actor
from orchestrator.domain.states import Audience, Kind, Persona, Role, State, Step
from orchestrator.domain.sunset import district_today
from orchestrator.errors import (
    Conflict,
    InvalidInput,
    InvalidTransition,
    NotFound,
    OrchestratorError,
    Refused,
    SunsetReached,
)
from orchestrator.services import audit, catalog, chain, releasables
from orchestrator.services.catalog import CustomImageSpec, PackageSpec, Revision
from orchestrator.services.chain import CheckResult
from orchestrator.services.context import Context
from tests.conftest import NOW, ZONE, _empty_postgres, postgres_engine
from tests.factories import PEOPLE, District, make_district, sha

T = TypeVar("T")
Expected = frozenset[type[OrchestratorError]]

USERNAMES = [username for username, _, _ in PEOPLE]
WHO = st.sampled_from(USERNAMES) | st.none()
"""A named person, or None: someone the rules allow (so that items get somewhere)."""
ITEMS = ["custom", "custom", "package", "package", "base"]
"""Which item a rule acts on: mostly the two drafts, sometimes the published base."""

# The chains as DOMAIN.md states them ("The collaboration chain").
CHAIN_STEPS = {
    Kind.BASE_IMAGE: (Step.REVIEW, Step.TEST, Step.PUBLISH),
    Kind.CUSTOM_IMAGE: (Step.REVIEW, Step.TEST, Step.PUBLISH),
    Kind.PACKAGE: (Step.TEST, Step.PUBLISH),
}
WAITING = {State.IN_REVIEW: Step.REVIEW, State.TESTING: Step.TEST, State.APPROVED: Step.PUBLISH}
AFTER = {Step.REVIEW: State.TESTING, Step.TEST: State.APPROVED, Step.PUBLISH: State.PUBLISHED}

BACKENDS = ["sqlite", "postgresql"]

SETTINGS = settings(
    max_examples=20,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---------------------------------------------------------------------------
# A fresh database per example
# ---------------------------------------------------------------------------


class Databases:
    """Fresh, migrated databases: a copied SQLite template, or an emptied PostgreSQL schema."""

    def __init__(self, backend: str, request: pytest.FixtureRequest, folder: Path) -> None:
        self.folder = folder
        self.count = 0
        self.template: Path | None = None
        self.shared: Engine | None = None
        if backend == "sqlite":
            self.template = request.getfixturevalue("sqlite_template")
        else:
            self.shared = postgres_engine(request.getfixturevalue("postgres_schema"))

    def fresh(self) -> Engine:
        if self.shared is not None:
            _empty_postgres(self.shared)
            return self.shared
        assert self.template is not None
        self.count += 1
        path = self.folder / f"example-{self.count}.db"
        shutil.copy(self.template, path)
        return make_engine(f"sqlite:///{path}")

    def release(self, engine: Engine) -> None:
        if engine is not self.shared:
            engine.dispose()
            database = Path(str(engine.url.database))
            for suffix in ("", "-wal", "-shm"):
                database.with_name(database.name + suffix).unlink(missing_ok=True)

    def close(self) -> None:
        if self.shared is not None:
            self.shared.dispose()


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Decided:
    step: str
    outcome: str
    actor_id: int
    reason: str
    digest: str


@dataclass
class Item:
    key: str
    kind: Kind
    ref: str
    id: int
    building: str | None
    audience: Audience | None
    author_id: int
    state: State
    digest: str
    content: tuple[Any, ...]
    """What the stored digest was computed from (settings and package digest, etc.)."""
    sunset: date | None
    """Effective sunset: the item's own, or its base's if earlier."""
    revised_by: int | None = None
    runs: list[tuple[str, bool, str]] = field(default_factory=list)
    decisions: list[Decided] = field(default_factory=list)
    authors_when_decided: list[frozenset[int]] = field(default_factory=list)
    digests: dict[tuple[Any, ...], str] = field(default_factory=dict)

    @property
    def steps(self) -> tuple[Step, ...]:
        return CHAIN_STEPS[self.kind]

    @property
    def authors(self) -> frozenset[int]:
        return frozenset({self.author_id} | ({self.revised_by} if self.revised_by else set()))

    @property
    def pending(self) -> Step | None:
        step = WAITING.get(self.state)
        return step if step in self.steps else None

    def evidence_ok(self) -> bool:
        for persona in Persona:
            latest = [p for (who, p, d) in self.runs if who == persona.value and d == self.digest]
            if not latest or not latest[-1]:
                return False
        return True


class _Oracle:
    """Who may do what, from shared/DOMAIN.md."""

    @staticmethod
    def own(actor: Actor, item: Item) -> bool:
        return item.building is not None and item.building in actor.buildings

    @classmethod
    def can_see(cls, actor: Actor, item: Item) -> bool:
        return item.building is None or actor.role in (Role.IT, Role.EDTECH) or cls.own(actor, item)

    @classmethod
    def may_maintain(cls, actor: Actor, item: Item) -> bool:
        role, own = actor.role, cls.own(actor, item)
        if item.kind is Kind.BASE_IMAGE:
            return role is Role.IT
        if item.kind is Kind.CUSTOM_IMAGE:
            return role in (Role.SECTEC, Role.BTC) and own
        if item.audience is Audience.ADMIN_STAFF:
            return role is Role.IT
        if item.audience is Audience.INSTRUCTIONAL:
            return role in (Role.IT, Role.EDTECH)
        return role is Role.EDTECH or (role is Role.SECTEC and own)

    @classmethod
    def may_decide(cls, actor: Actor, item: Item, step: Step) -> bool:
        role, own = actor.role, cls.own(actor, item)
        if step in (Step.REVIEW, Step.TEST) and actor.person_id in item.authors:
            return False  # no one approves a review or test step of their own work
        if step is Step.REVIEW:
            return role is Role.EDTECH
        if step is Step.TEST:
            if item.kind is Kind.BASE_IMAGE:
                return role is Role.EDTECH
            return role is Role.EDTECH or (role is Role.SECTEC and own)
        if item.kind is Kind.BASE_IMAGE:
            return role is Role.IT
        if item.kind is Kind.PACKAGE and item.building is None:
            return role is Role.IT
        return role in (Role.SECTEC, Role.BTC) and own


def _ask(expected: set[type[OrchestratorError]]) -> Expected:
    return frozenset(expected)


# ---------------------------------------------------------------------------
# The state machine
# ---------------------------------------------------------------------------


class ChainMachine(RuleBasedStateMachine):
    databases: ClassVar[Databases]
    stats: ClassVar[Counter[str]]

    def __init__(self) -> None:
        super().__init__()
        self.engine: Engine | None = None
        self.items: dict[str, Item] = {}
        self.audit_entries = 0
        self.carries = False
        self.clock_targets: list[datetime] = []

    # -- setup --------------------------------------------------------------

    @staticmethod
    def key_file() -> Path:
        """The installation key the test accounts are encrypted with, out of the user's data."""
        return Path(tempfile.gettempdir()) / f"chain-machine-{os.getpid()}.key"

    @initialize(
        building=st.sampled_from(["101", "301"]),
        package_kind=st.sampled_from(["instructional", "admin_staff", "building_local"]),
        carries=st.booleans(),
        custom_sunset_in=st.sampled_from([None, 30, 400]),
        package_sunset_in=st.sampled_from([None, 60]),
    )
    def setup(
        self,
        building: str,
        package_kind: str,
        carries: bool,
        custom_sunset_in: int | None,
        package_sunset_in: int | None,
    ) -> None:
        self.engine = self.databases.fresh()
        self.clock = FixedClock(NOW)
        self.ctx = Context(
            engine=self.engine, zone=ZONE, clock=self.clock, secret_key_file=self.key_file()
        )
        self.district: District = make_district(self.ctx)
        d = self.district
        level = "elementary" if building == "101" else "high"
        base_ref = d.base(level=level)
        base = catalog.show(self.ctx, d["it.ana"], Kind.BASE_IMAGE, base_ref)

        audience = Audience(package_kind)
        pkg_building = building if audience is Audience.BUILDING_LOCAL else None
        pkg_author = {
            Audience.INSTRUCTIONAL: "edtech.grace",
            Audience.ADMIN_STAFF: "it.ana",
            Audience.BUILDING_LOCAL: "sectec.lee" if building == "301" else "edtech.marco",
        }[audience]
        pkg = catalog.create_package(
            self.ctx,
            d[pkg_author],
            PackageSpec(
                name="mathlab",
                version="3.1",
                platform="pc",
                audience=audience.value,
                installer="https://dist.test/mathlab-3.1.msi",
                installer_sha256=sha("mathlab-3.1"),
                building=pkg_building,
                detection_rule="msi:{mathlab-3.1}",
                sunset_date=d.days(package_sunset_in) if package_sunset_in else None,
            ),
        )
        self.carries = carries
        custom_author = "btc.lincoln" if building == "101" else "sectec.kim"
        custom = catalog.create_custom_image(
            self.ctx,
            d[custom_author],
            CustomImageSpec(
                building=building,
                name="lab",
                version="1.0",
                base=base_ref,
                packages=[pkg.ref] if carries else [],
                settings={"wallpaper": "school"},
                sunset_date=d.days(custom_sunset_in) if custom_sunset_in else None,
            ),
        )
        assert base.sunset_date is not None
        custom_sunset = min(
            base.sunset_date, custom.sunset_date if custom.sunset_date else base.sunset_date
        )
        self.items = {
            "base": self._item("base", base, d["it.ana"], ("fixed",), base.sunset_date),
            "package": self._item(
                "package", pkg, d[pkg_author], (pkg.detection_rule,), pkg.sunset_date
            ),
            "custom": self._item(
                "custom",
                custom,
                d[custom_author],
                ("school", pkg.digest if carries else None),
                custom_sunset,
            ),
        }
        self._load_history(self.items["base"])
        assert custom.effective_sunset == custom_sunset
        # The test bench every image test run uses: test clients and accounts.
        for tester in ("edtech.grace", "sectec.lee"):
            for ref in (base_ref, custom.ref):
                with contextlib.suppress(OrchestratorError):  # a SecTec sees no other bench
                    d.test_bench(ref, tester)
        self.audit_entries = audit.verify(self.ctx, d["it.ana"]).entries

        sunsets = {i.sunset for i in self.items.values() if i.sunset is not None}
        targets = set()
        for s in sunsets:
            targets.add(datetime.combine(s - timedelta(days=1), time(23, 59, 59), tzinfo=ZONE))
            targets.add(datetime.combine(s, time(0, 0), tzinfo=ZONE))
            targets.add(datetime.combine(s + timedelta(days=1), time(12, 0), tzinfo=ZONE))
        self.clock_targets = sorted(targets)

    def _item(
        self,
        key: str,
        view: catalog.ReleasableView,
        author: Actor,
        content: tuple[Any, ...],
        sunset: date | None,
    ) -> Item:
        item = Item(
            key=key,
            kind=view.kind,
            ref=view.ref,
            id=view.id,
            building=view.building,
            audience=view.audience,
            author_id=author.person_id,
            state=view.state,
            digest=view.digest,
            content=content,
            sunset=sunset,
        )
        item.digests[content] = view.digest
        return item

    def _load_history(self, item: Item) -> None:
        """Take an item's decisions and test runs so far (the base's walk) into the model."""
        with transaction(self._engine) as s:
            for dec in s.exec(
                select(Decision).where(Decision.releasable_id == item.id).order_by(col(Decision.id))
            ):
                item.decisions.append(
                    Decided(dec.step, dec.outcome, dec.actor_id, dec.reason, dec.digest)
                )
                item.authors_when_decided.append(item.authors)
            for run in s.exec(
                select(TestRun).where(TestRun.releasable_id == item.id).order_by(col(TestRun.id))
            ):
                item.runs.append((run.persona, run.passed, run.digest))

    def teardown(self) -> None:
        if self.engine is not None:
            self.databases.release(self.engine)
            self.engine = None

    @property
    def _engine(self) -> Engine:
        assert self.engine is not None
        return self.engine

    # -- helpers ------------------------------------------------------------

    @property
    def today(self) -> date:
        return district_today(self.clock(), ZONE)

    def at_sunset(self, item: Item) -> bool:
        return item.sunset is not None and self.today >= item.sunset

    def _pick(
        self, data: st.DataObject, who: str | None, suitable: Callable[[Actor], bool]
    ) -> Actor:
        """The named person, or (who=None) someone the rules allow, if there is anyone."""
        if who is None:
            fits = [u for u in USERNAMES if suitable(self.district[u])]
            who = data.draw(st.sampled_from(fits or USERNAMES), label="actor")
        return self.district[who]

    def _call(self, name: str, expected: Expected, fn: Callable[[], T]) -> T | None:
        """Run one service call; it must fail (with one of ``expected``) or succeed as predicted."""
        try:
            result = fn()
        except OrchestratorError as exc:
            assert expected, f"{name} should have succeeded but raised {exc!r}"
            assert isinstance(exc, tuple(expected)), (
                f"{name} raised {type(exc).__name__} ({exc}); expected one of "
                f"{sorted(e.__name__ for e in expected)}"
            )
            self.stats[type(exc).__name__] += 1
            return None
        assert not expected, (
            f"{name} succeeded but should have been refused with one of "
            f"{sorted(e.__name__ for e in expected)}"
        )
        self.stats[f"{name}.ok"] += 1
        self.audit_entries += 1
        return result

    def _decided(self, item: Item, step: Step, outcome: str, actor: Actor, reason: str) -> None:
        item.decisions.append(
            Decided(step.value, outcome, actor.person_id, reason.strip(), item.digest)
        )
        item.authors_when_decided.append(item.authors)

    # -- the moves, each with its predicted outcome -------------------------

    def do_submit(self, actor: Actor, item: Item) -> None:
        expected: set[type[OrchestratorError]] = set()
        if not _Oracle.can_see(actor, item):
            expected.add(NotFound)
        if not _Oracle.may_maintain(actor, item):
            expected.add(Refused)
        if self.at_sunset(item):
            expected.add(SunsetReached)
        if item.state is not State.DRAFT:
            expected.add(InvalidTransition)
        view = self._call(
            "submit", _ask(expected), lambda: chain.submit(self.ctx, actor, item.kind, item.ref)
        )
        if view is not None:
            item.state = State.IN_REVIEW if Step.REVIEW in item.steps else State.TESTING
            assert view.state is item.state

    def do_approve(self, actor: Actor, item: Item, step: Step) -> None:
        expected: set[type[OrchestratorError]] = set()
        pending = item.pending
        if step is Step.PUBLISH:
            expected = {InvalidInput}
        else:
            if not _Oracle.can_see(actor, item):
                expected.add(NotFound)
            if pending is None or step is not pending:
                expected.add(Conflict)
            elif pending is Step.PUBLISH:
                expected.add(Conflict)  # published with publish/release, not approve
            else:
                if not _Oracle.may_decide(actor, item, pending):
                    expected.add(Refused)
                if self.at_sunset(item):
                    expected.add(SunsetReached)
                if pending is Step.TEST and not item.evidence_ok():
                    expected.add(Conflict)
        view = self._call(
            "approve",
            _ask(expected),
            lambda: chain.approve(self.ctx, actor, item.kind, item.ref, "looks right", step=step),
        )
        if view is not None:
            assert pending is not None
            self._decided(item, pending, "approve", actor, "looks right")
            item.state = AFTER[pending]
            assert view.state is item.state

    def do_reject(self, actor: Actor, item: Item, reason: str, step: Step | None) -> None:
        expected: set[type[OrchestratorError]] = set()
        pending = item.pending
        if not reason.strip():
            expected = {InvalidInput}
        else:
            if not _Oracle.can_see(actor, item):
                expected.add(NotFound)
            if pending is None or (step is not None and step is not pending):
                expected.add(Conflict)
            elif not _Oracle.may_decide(actor, item, pending):
                expected.add(Refused)
        view = self._call(
            "reject",
            _ask(expected),
            lambda: chain.reject(self.ctx, actor, item.kind, item.ref, reason, step=step),
        )
        if view is not None:
            assert pending is not None
            self._decided(item, pending, "reject", actor, reason)
            item.state = State.DRAFT
            assert view.state is State.DRAFT
            with transaction(self._engine) as s:
                last = s.exec(
                    select(Decision)
                    .where(Decision.releasable_id == item.id)
                    .order_by(col(Decision.id).desc())
                    .limit(1)
                ).one()
                assert (last.step, last.outcome, last.reason) == (
                    pending.value,
                    "reject",
                    reason.strip(),
                ), "a rejection must be recorded with its step and reason"
                row = s.get(Releasable, item.id)
                assert row is not None and row.state == State.DRAFT.value

    def do_record_test(self, actor: Actor, item: Item, persona: Persona, passed: bool) -> None:
        if item.kind is not Kind.PACKAGE:
            self.do_image_test(actor, item, persona, passed)
            return
        expected: set[type[OrchestratorError]] = set()
        if not _Oracle.can_see(actor, item):
            expected.add(NotFound)
        if item.state is not State.TESTING:
            expected.add(Conflict)
        elif not _Oracle.may_decide(actor, item, Step.TEST):
            expected.add(Refused)
        checks = [CheckResult("sign-in succeeds", True), CheckResult("apps start", passed)]
        run = self._call(
            "record_test",
            _ask(expected),
            lambda: chain.record_test(
                self.ctx,
                actor,
                item.kind,
                item.ref,
                persona=persona.value,
                checks=checks,
                evidence=f"{persona.value} login checked",
            ),
        )
        if run is not None:
            item.runs.append((persona.value, passed, item.digest))
            assert run.passed is passed and run.digest == item.digest and run.current

    def do_image_test(self, actor: Actor, item: Item, persona: Persona, passed: bool) -> None:
        """An image test run (fakes of our runner and persona checker): ``persona``'s
        checks pass or not, the other persona's pass."""
        expected: set[type[OrchestratorError]] = set()
        if not _Oracle.can_see(actor, item):
            expected.add(NotFound)
        if self.at_sunset(item):
            expected.add(SunsetReached)
        if item.state is not State.TESTING:
            expected.add(Conflict)
        elif not _Oracle.may_decide(actor, item, Step.TEST):
            expected.add(Refused)
        package = self.items["package"]
        if item.kind is Kind.CUSTOM_IMAGE and self.carries and not expected:
            # The image's package goes on the test client after it, unless retired.
            if self.at_sunset(package):
                expected.add(SunsetReached)
            if package.state is State.RETIRED:
                expected.add(Conflict)
        failing = {} if passed else {persona.value: {"sign-in"}}
        view = self._call(
            "image_test",
            _ask(expected),
            lambda: self.district.run_image_test(item.ref, actor.username, failing=failing),
        )
        # A run writes its start, the delivery runs and its end; a refusal before it
        # started writes nothing.
        entries = audit.verify(self.ctx, self.district["it.ana"]).entries
        if view is not None:
            assert entries >= self.audit_entries + 3
        self.audit_entries = entries
        if view is not None:
            for who in Persona:
                item.runs.append((who.value, passed or who is not persona, item.digest))
            assert view.status == ("passed" if passed else "failed") and view.current
            assert view.digest == item.digest

    def do_publish(self, actor: Actor, item: Item) -> None:
        expected: set[type[OrchestratorError]] = set()
        pending = item.pending
        if not _Oracle.can_see(actor, item):
            expected.add(NotFound)
        if pending is not Step.PUBLISH:
            expected.add(Conflict)
        else:
            if not _Oracle.may_decide(actor, item, Step.PUBLISH):
                expected.add(Refused)
            if self.at_sunset(item):
                expected.add(SunsetReached)
            if (
                item.kind is Kind.CUSTOM_IMAGE
                and self.carries
                and self.items["package"].state not in DEPLOYABLE
            ):
                expected.add(Conflict)  # its package is not released yet
        view = self._call(
            "publish", _ask(expected), lambda: chain.publish(self.ctx, actor, item.kind, item.ref)
        )
        if view is not None:
            self._decided(item, Step.PUBLISH, "approve", actor, "")
            item.state = State.PUBLISHED
            assert view.state is State.PUBLISHED

    def do_revise(self, actor: Actor, item: Item, value: str) -> None:
        if item.kind is Kind.CUSTOM_IMAGE:
            rev = Revision(settings={"wallpaper": value})
            package = self.items["package"]
            content: tuple[Any, ...] = (value, package.digest if self.carries else None)
        elif item.kind is Kind.PACKAGE:
            rev = Revision(detection_rule=value)
            content = (value,)
        else:
            rev = Revision(notes=f"note {value}")  # not content: a published base takes notes
            content = item.content
        expected: set[type[OrchestratorError]] = set()
        if not _Oracle.can_see(actor, item):
            expected.add(NotFound)
        if not _Oracle.may_maintain(actor, item):
            expected.add(Refused)
        if item.kind is not Kind.BASE_IMAGE and item.state not in REVISABLE:
            expected.add(Conflict)  # published content is frozen
        before = item.state
        result = self._call(
            "revise",
            _ask(expected),
            lambda: catalog.revise(self.ctx, actor, item.kind, item.ref, rev),
        )
        if result is None:
            return
        changed = content != item.content
        assert result.digest_changed is changed, "the digest changes exactly when content does"
        assert result.chain_restarted is (changed and before is not State.DRAFT)
        if content in item.digests:
            assert result.view.digest == item.digests[content], "the digest is not deterministic"
        else:
            assert result.view.digest not in item.digests.values(), "different content, same digest"
            item.digests[content] = result.view.digest
        item.content = content
        if changed:
            item.digest = result.view.digest
            item.revised_by = actor.person_id
            item.state = State.DRAFT
        assert result.view.state is item.state
        if changed and item.kind is Kind.PACKAGE and self.carries:
            self._package_changed_under_the_image()

    def _package_changed_under_the_image(self) -> None:
        """The image carrying a changed package carries new content: its digest
        follows, and if it was in the chain the chain starts over (its authors
        stay who they were)."""
        custom, package = self.items["custom"], self.items["package"]
        if custom.state not in REVISABLE:
            return
        content = (custom.content[0], package.digest)
        view = catalog.show(self.ctx, self.district["it.ana"], Kind.CUSTOM_IMAGE, custom.ref)
        if content in custom.digests:
            assert view.digest == custom.digests[content], "the digest is not deterministic"
        else:
            assert view.digest not in custom.digests.values(), "different content, same digest"
            custom.digests[content] = view.digest
        custom.content = content
        custom.digest = view.digest
        custom.state = State.DRAFT
        assert view.state is State.DRAFT
        self.audit_entries += 1  # the image's own revise entry

    # -- rules --------------------------------------------------------------

    @rule(data=st.data(), who=WHO, key=st.sampled_from(ITEMS))
    def submit(self, data: st.DataObject, who: str | None, key: str) -> None:
        item = self.items[key]
        actor = self._pick(
            data, who, lambda a: _Oracle.can_see(a, item) and _Oracle.may_maintain(a, item)
        )
        self.do_submit(actor, item)

    @rule(
        data=st.data(),
        who=WHO,
        key=st.sampled_from(ITEMS),
        step=st.sampled_from([Step.REVIEW, Step.TEST, Step.PUBLISH]),
    )
    def approve(self, data: st.DataObject, who: str | None, key: str, step: Step) -> None:
        item = self.items[key]
        pending = item.pending
        actor = self._pick(
            data, who, lambda a: pending is not None and _Oracle.may_decide(a, item, pending)
        )
        self.do_approve(actor, item, step)

    @rule(
        data=st.data(),
        who=WHO,
        key=st.sampled_from(ITEMS),
        reason=st.sampled_from(
            ["wallpaper is wrong", "  needs the content filter  ", "bad driver", "", "  "]
        ),
        step=st.sampled_from([Step.REVIEW, Step.TEST, Step.PUBLISH]),
    )
    def reject(
        self, data: st.DataObject, who: str | None, key: str, reason: str, step: Step | None
    ) -> None:
        item = self.items[key]
        pending = item.pending
        actor = self._pick(
            data, who, lambda a: pending is not None and _Oracle.may_decide(a, item, pending)
        )
        self.do_reject(actor, item, reason, step)

    @rule(
        data=st.data(),
        who=WHO,
        key=st.sampled_from(ITEMS),
        persona=st.sampled_from(list(Persona)),
        passed=st.sampled_from([True, True, True, False]),
    )
    def record_test(
        self, data: st.DataObject, who: str | None, key: str, persona: Persona, passed: bool
    ) -> None:
        item = self.items[key]
        actor = self._pick(data, who, lambda a: _Oracle.may_decide(a, item, Step.TEST))
        self.do_record_test(actor, item, persona, passed)

    @rule(data=st.data(), who=WHO, key=st.sampled_from(ITEMS))
    def publish(self, data: st.DataObject, who: str | None, key: str) -> None:
        item = self.items[key]
        actor = self._pick(data, who, lambda a: _Oracle.may_decide(a, item, Step.PUBLISH))
        self.do_publish(actor, item)

    @rule(data=st.data(), who=WHO, key=st.sampled_from(ITEMS), n=st.integers(0, 2))
    def revise(self, data: st.DataObject, who: str | None, key: str, n: int) -> None:
        item = self.items[key]
        value = {
            "custom": ["school", "district", "lab"],
            "package": ["msi:{mathlab-3.1}", "msi:{mathlab-3.2}", "msi:{mathlab-3.3}"],
            "base": ["a", "b", "c"],
        }[key][n]
        actor = self._pick(
            data, who, lambda a: _Oracle.can_see(a, item) and _Oracle.may_maintain(a, item)
        )
        self.do_revise(actor, item, value)

    @rule(
        data=st.data(),
        key=st.sampled_from(["custom", "package"]),
        moves=st.integers(1, 6),
        then_reject=st.booleans(),
    )
    def push_along(self, data: st.DataObject, key: str, moves: int, then_reject: bool) -> None:
        """Someone allowed does the next moves of the happy path (so that items get far),
        and perhaps then rejects the step it stopped at."""
        item = self.items[key]
        for _ in range(moves):
            pending = item.pending
            if item.state is State.DRAFT:
                self.submit(data, None, key)
            elif pending is Step.TEST and not item.evidence_ok():
                actor = self._pick(data, None, lambda a: _Oracle.may_decide(a, item, Step.TEST))
                for persona in Persona:
                    self.do_record_test(actor, item, persona, True)
            elif pending is Step.PUBLISH:
                self.publish(data, None, key)
            elif pending is not None:
                self.approve(data, None, key, pending)
            else:
                break
        if then_reject and item.pending is not None:
            self.reject(data, None, key, "found a problem", None)

    @rule(index=st.integers(0, 8))
    def advance_clock(self, index: int) -> None:
        """Move the district's clock forward: to just before, on or after a sunset date,
        or (more often) by a day."""
        if index < len(self.clock_targets):
            target = self.clock_targets[index]
        else:
            target = self.clock.now + timedelta(days=1)
        if target > self.clock.now:
            self.clock.now = target
            self.stats["clock"] += 1

    # -- invariants ---------------------------------------------------------

    @invariant()
    def audit_log_verifies(self) -> None:
        if self.engine is None:
            return
        report = audit.verify(self.ctx, self.district["it.ana"])
        assert report.entries == self.audit_entries, (
            "every successful move appends one audit entry and a refused one none"
        )

    @invariant()
    def database_matches_the_model_and_keeps_the_chains_promises(self) -> None:
        if self.engine is None:
            return
        with transaction(self._engine) as s:
            for item in self.items.values():
                row = s.get(Releasable, item.id)
                assert row is not None
                decisions = list(
                    s.exec(
                        select(Decision)
                        .where(Decision.releasable_id == item.id)
                        .order_by(col(Decision.id))
                    )
                )
                runs = list(
                    s.exec(
                        select(TestRun)
                        .where(TestRun.releasable_id == item.id)
                        .order_by(col(TestRun.id))
                    )
                )
                self._matches_model(item, row, decisions, runs)
                self._no_skipped_step(item, decisions, runs)
                self._no_self_approval(item)
                self._nothing_approved_at_sunset(item, decisions)
            custom = self.items["custom"]
            if custom.state is State.PUBLISHED and self.carries:
                assert self.items["package"].state in DEPLOYABLE, (
                    "a customized image was released with a package that is not released"
                )

    def _matches_model(
        self, item: Item, row: Releasable, decisions: list[Decision], runs: list[TestRun]
    ) -> None:
        assert State(row.state) is item.state, f"{item.ref} is {row.state}, model {item.state}"
        assert row.digest == item.digest
        assert row.revised_by_id == item.revised_by
        assert [
            Decided(d.step, d.outcome, d.actor_id, d.reason, d.digest) for d in decisions
        ] == item.decisions, "decisions differ from the successful calls"
        assert [(r.persona, r.passed, r.digest) for r in runs] == item.runs

    def _no_skipped_step(self, item: Item, decisions: list[Decision], runs: list[TestRun]) -> None:
        """Each step already passed has an approval bound to the current digest, in chain order,
        since the last rejection; a passed test step has passing student and staff runs."""
        steps = item.steps
        if item.state in (State.PUBLISHED, State.DEPRECATED, State.SUNSET):
            passed = len(steps)
        elif item.pending is not None:
            passed = steps.index(item.pending)
        else:
            return
        last_reject = max((i for i, d in enumerate(decisions) if d.outcome == "reject"), default=-1)
        since = decisions[last_reject + 1 :]
        assert len(since) >= passed, f"{item.ref} is {item.state.value} with too few decisions"
        tail = since[len(since) - passed :] if passed else []
        assert [(d.step, d.outcome, d.digest) for d in tail] == [
            (s.value, "approve", item.digest) for s in steps[:passed]
        ], f"{item.ref} is {item.state.value} without every earlier step approved for its digest"
        if Step.TEST in steps[:passed]:
            for persona in Persona:
                latest = [r for r in runs if r.persona == persona.value and r.digest == item.digest]
                assert latest and latest[-1].passed, (
                    f"{item.ref} passed its test step without a passing {persona.value} run"
                )

    def _no_self_approval(self, item: Item) -> None:
        for decided, authors in zip(item.decisions, item.authors_when_decided, strict=True):
            if decided.outcome == "approve" and decided.step in (Step.REVIEW, Step.TEST):
                assert decided.actor_id not in authors, (
                    f"{item.ref}: the {decided.step} step was approved by its own author"
                )

    def _nothing_approved_at_sunset(self, item: Item, decisions: list[Decision]) -> None:
        if item.sunset is None:
            return
        for d in decisions:
            if d.outcome == "approve":
                assert district_today(d.at, ZONE) < item.sunset, (
                    f"{item.ref}: {d.step} approved on {district_today(d.at, ZONE)}, at or after "
                    f"its effective sunset {item.sunset}"
                )


def _machine(backend: str, databases: Databases) -> type[ChainMachine]:
    return type(
        "ChainMachineOn" + backend.title(),
        (ChainMachine,),
        {"databases": databases, "stats": Counter()},
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_chain_moves_by_anyone_never_skip_a_step_self_approve_or_pass_a_sunset(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    databases = Databases(backend, request, tmp_path)
    machine = _machine(backend, databases)
    try:
        run_state_machine_as_test(machine, settings=SETTINGS)
    finally:
        databases.close()
    succeeded = sum(n for k, n in machine.stats.items() if k.endswith(".ok"))
    refused = sum(n for k, n in machine.stats.items() if not k.endswith(".ok") and k != "clock")
    assert succeeded and refused, f"the run made no real calls: {dict(machine.stats)}"


# ---------------------------------------------------------------------------
# The same machine, on a fixed script: its oracle and checks are live
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_scripted_run_through_the_model_meets_every_refusal_and_release(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    databases = Databases(backend, request, tmp_path)
    m = _machine(backend, databases)()
    try:
        m.setup(
            building="301",
            package_kind="building_local",
            carries=True,
            custom_sunset_in=30,
            package_sunset_in=None,
        )
        custom, package = m.items["custom"], m.items["package"]
        who = m.district

        def step(outcome: str, move: Callable[[], None]) -> None:
            before = Counter(m.stats)
            move()
            m.audit_log_verifies()
            m.database_matches_the_model_and_keeps_the_chains_promises()
            assert list(m.stats - before) == [outcome]

        student, staff = Persona.STUDENT, Persona.STAFF
        step("Conflict", lambda: m.do_approve(who["edtech.grace"], custom, Step.REVIEW))
        step("NotFound", lambda: m.do_submit(who["btc.lincoln"], custom))
        step("Refused", lambda: m.do_submit(who["edtech.grace"], custom))
        step("submit.ok", lambda: m.do_submit(who["sectec.kim"], custom))
        step("InvalidTransition", lambda: m.do_submit(who["sectec.kim"], custom))
        step("Refused", lambda: m.do_approve(who["sectec.lee"], custom, Step.REVIEW))
        step("Conflict", lambda: m.do_approve(who["edtech.grace"], custom, Step.TEST))
        step("InvalidInput", lambda: m.do_reject(who["edtech.grace"], custom, "  ", None))
        step("approve.ok", lambda: m.do_approve(who["edtech.grace"], custom, Step.REVIEW))
        step("Refused", lambda: m.do_record_test(who["sectec.kim"], custom, student, True))
        step("NotFound", lambda: m.do_record_test(who["sectec.patel"], custom, student, True))
        step("submit.ok", lambda: m.do_submit(who["sectec.lee"], package))
        assert package.state is State.TESTING
        step("image_test.ok", lambda: m.do_record_test(who["sectec.lee"], custom, staff, False))
        step("Conflict", lambda: m.do_approve(who["sectec.lee"], custom, Step.TEST))
        step("image_test.ok", lambda: m.do_record_test(who["edtech.marco"], custom, staff, True))
        step("Refused", lambda: m.do_approve(who["sectec.kim"], custom, Step.TEST))
        step("approve.ok", lambda: m.do_approve(who["sectec.lee"], custom, Step.TEST))
        step("Conflict", lambda: m.do_approve(who["sectec.lee"], custom, Step.TEST))
        step("Conflict", lambda: m.do_publish(who["sectec.kim"], custom))  # package unreleased
        step("reject.ok", lambda: m.do_reject(who["sectec.kim"], custom, "package first", None))
        assert custom.state is State.DRAFT

        step("Refused", lambda: m.do_record_test(who["sectec.lee"], package, student, True))
        step("record_test.ok", lambda: m.do_record_test(who["sectec.kim"], package, student, True))
        step("record_test.ok", lambda: m.do_record_test(who["edtech.grace"], package, staff, True))
        step("approve.ok", lambda: m.do_approve(who["edtech.grace"], package, Step.TEST))
        step("Refused", lambda: m.do_publish(who["it.ana"], package))
        step("publish.ok", lambda: m.do_publish(who["sectec.lee"], package))
        step("Conflict", lambda: m.do_revise(who["sectec.lee"], package, "msi:{mathlab-4}"))

        step("revise.ok", lambda: m.do_revise(who["sectec.lee"], custom, "district"))
        assert custom.revised_by == who["sectec.lee"].person_id
        step("submit.ok", lambda: m.do_submit(who["sectec.kim"], custom))
        step("approve.ok", lambda: m.do_approve(who["edtech.marco"], custom, Step.REVIEW))
        step("Refused", lambda: m.do_record_test(who["sectec.lee"], custom, student, True))
        step("Conflict", lambda: m.do_approve(who["edtech.grace"], custom, Step.TEST))  # old runs
        step("image_test.ok", lambda: m.do_record_test(who["edtech.grace"], custom, student, True))
        step("approve.ok", lambda: m.do_approve(who["edtech.grace"], custom, Step.TEST))

        step("clock", lambda: m.advance_clock(1))  # the custom image's sunset date, 00:00
        assert m.today == custom.sunset
        step("SunsetReached", lambda: m.do_publish(who["sectec.kim"], custom))
        step("reject.ok", lambda: m.do_reject(who["sectec.kim"], custom, "too late", Step.PUBLISH))
        step("SunsetReached", lambda: m.do_submit(who["sectec.kim"], custom))
        step("Conflict", lambda: m.do_publish(who["it.wei"], m.items["base"]))
        step("revise.ok", lambda: m.do_revise(who["it.wei"], m.items["base"], "a"))
        assert package.state is State.PUBLISHED and custom.state is State.DRAFT
    finally:
        m.teardown()
        databases.close()


# ---------------------------------------------------------------------------
# Directed checks on both backends
# ---------------------------------------------------------------------------


def test_btc_cannot_sign_off_image_tests_on_either_backend(district: District) -> None:
    district.base()
    ref = district.custom(building="101", to=State.TESTING)
    district.record_passing_tests(Kind.CUSTOM_IMAGE, ref, "edtech.grace")
    btc = district["btc.lincoln"]
    with pytest.raises(Refused) as info:
        chain.approve(district.ctx, btc, Kind.CUSTOM_IMAGE, ref, "fine", step=Step.TEST)
    assert str(info.value) == (
        "refused: BTC cannot sign off image tests "
        "(the chain gives testing to EdTech or a SecTec of the building)"
    )
    with pytest.raises(Refused, match=r"the chain gives testing to EdTech or a SecTec"):
        chain.record_test(
            district.ctx,
            btc,
            Kind.CUSTOM_IMAGE,
            ref,
            persona="student",
            checks=[CheckResult("sign-in succeeds", True)],
        )
    view = catalog.show(district.ctx, btc, Kind.CUSTOM_IMAGE, ref)
    assert view.state is State.TESTING


def test_released_image_has_approvals_for_the_package_content_it_carries(
    district: District,
) -> None:
    """A customized image's digest covers the packages it carries (domain/digest.py):
    when a carried package changes after the image was reviewed and tested, the
    image's approvals must start over before it can be released."""
    d, ctx = district, district.ctx
    d.base(level="high")
    pkg = d.package("mathlab", "3.1", audience="building_local", building="301", by="sectec.lee")
    image = d.custom(building="301", base="pc-high@2026.1", packages=[pkg], to=State.APPROVED)

    changed = catalog.revise(
        ctx, d["sectec.lee"], Kind.PACKAGE, pkg, Revision(detection_rule="msi:{mathlab-3.2}")
    )
    assert changed.digest_changed
    chain.submit(ctx, d["sectec.lee"], Kind.PACKAGE, pkg)
    d.record_passing_tests(Kind.PACKAGE, pkg, "edtech.grace")
    chain.approve(ctx, d["edtech.grace"], Kind.PACKAGE, pkg, step=Step.TEST)
    chain.publish(ctx, d["sectec.kim"], Kind.PACKAGE, pkg)

    with contextlib.suppress(OrchestratorError):
        chain.publish(ctx, d["sectec.kim"], Kind.CUSTOM_IMAGE, image)

    with transaction(ctx.engine) as s:
        row = releasables.resolve(s, d["sectec.kim"], Kind.CUSTOM_IMAGE, image)
        content = catalog.compute_digest(s, row)
        approved_for_content = {
            dec.step
            for dec in s.exec(select(Decision).where(Decision.releasable_id == row.id))
            if dec.outcome == "approve" and dec.digest == content
        }
        state = row.state
    assert state != State.PUBLISHED.value or approved_for_content >= {"review", "test"}, (
        f"{image} was released on approvals of content it no longer has: its package changed "
        f"after review and tests; approvals for its current content: {approved_for_content}"
    )
