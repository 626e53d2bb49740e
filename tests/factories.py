"""A small district for tests, and helpers that walk items through the chain
with the real services."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from sqlmodel import select

from orchestrator.db.models import Building, Client, Person, PersonBuilding, Releasable
from orchestrator.db.session import transaction
from orchestrator.domain.policy import Actor
from orchestrator.domain.states import Kind, Level, Role, State, Step
from orchestrator.remote.ansible import FakePlaybookRunner
from orchestrator.services import (
    catalog,
    chain,
    directory,
    hardware,
    image_tests,
    runs,
    test_plans,
    testing,
)
from orchestrator.services.catalog import BaseImageSpec, CustomImageSpec, PackageSpec
from orchestrator.services.chain import CheckResult
from orchestrator.services.context import Context
from tests.support.persona_fakes import FakePersonaChecker

BUILDINGS = [
    ("101", "Lincoln Elementary", Level.ELEMENTARY),
    ("102", "Washington Elementary", Level.ELEMENTARY),
    ("201", "Jefferson Middle", Level.MIDDLE),
    ("301", "Kennedy High", Level.HIGH),
    ("302", "Madison High", Level.HIGH),
]

PEOPLE = [
    ("it.ana", Role.IT, []),
    ("it.wei", Role.IT, []),
    ("edtech.grace", Role.EDTECH, []),
    ("edtech.marco", Role.EDTECH, []),
    ("sectec.kim", Role.SECTEC, ["301"]),
    ("sectec.lee", Role.SECTEC, ["301"]),
    ("sectec.patel", Role.SECTEC, ["302", "201"]),
    ("btc.lincoln", Role.BTC, ["101"]),
    ("btc.garcia", Role.BTC, ["102"]),
    ("principal.lincoln", Role.PRINCIPAL, ["101"]),
]

PC = "Dell:Latitude 3420"
PC2 = "HP:ProBook 450 G8"
MAC = "Apple:MacBookAir10,1"
PC_OLD = "Dell:OptiPlex 7010"
PC_UNAPPROVED = "Lenovo:ThinkPad 11e"


def sha(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


@dataclass
class District:
    ctx: Context
    actors: dict[str, Actor] = field(default_factory=dict)

    def __getitem__(self, username: str) -> Actor:
        return self.actors[username]

    @property
    def today(self) -> date:
        return self.ctx.today()

    def days(self, n: int) -> date:
        return self.today + timedelta(days=n)

    # -- creating -----------------------------------------------------------

    def base(
        self,
        platform: str = "pc",
        level: str = "elementary",
        version: str = "2026.1",
        *,
        sunset_in: int = 365,
        models: list[str] | None = None,
        to: State = State.PUBLISHED,
        by: str = "it.ana",
        artifact: str | None = None,
    ) -> str:
        """A base image; ``artifact`` a local file (hashed) instead of a stand-in URL."""
        v = catalog.create_base_image(
            self.ctx,
            self[by],
            BaseImageSpec(
                platform=platform,
                level=level,
                version=version,
                os_version="Windows 11 24H2" if platform == "pc" else "macOS 15.3",
                sunset_date=self.days(sunset_in),
                artifact=artifact or f"https://dist.test/{platform}-{level}-{version}.wim",
                artifact_sha256=None if artifact else sha(f"{platform}-{level}-{version}"),
                models=models if models is not None else ([PC, PC2] if platform == "pc" else [MAC]),
            ),
        )
        self.walk(Kind.BASE_IMAGE, v.ref, to)
        return v.ref

    def custom(
        self,
        building: str = "101",
        name: str = "lab",
        version: str = "1.0",
        *,
        base: str | None = None,
        by: str | None = None,
        to: State = State.DRAFT,
        packages: list[str] | None = None,
        settings: dict[str, str] | None = None,
    ) -> str:
        author = by or {"101": "btc.lincoln", "102": "btc.garcia", "301": "sectec.kim"}.get(
            building, "sectec.patel"
        )
        v = catalog.create_custom_image(
            self.ctx,
            self[author],
            CustomImageSpec(
                building=building,
                name=name,
                version=version,
                base=base or "pc-elementary@2026.1",
                packages=packages or [],
                settings=settings or {"wallpaper": "school"},
            ),
        )
        self.walk(Kind.CUSTOM_IMAGE, v.ref, to, author=author)
        return v.ref

    def package(
        self,
        name: str = "firefox",
        version: str = "128.0",
        *,
        platform: str = "pc",
        audience: str = "instructional",
        building: str | None = None,
        by: str = "edtech.grace",
        to: State = State.DRAFT,
        installer: str | None = None,
        detection_rule: str | None = None,
    ) -> str:
        """A package; ``installer`` a local file (hashed) instead of a stand-in URL."""
        v = catalog.create_package(
            self.ctx,
            self[by],
            PackageSpec(
                name=name,
                version=version,
                platform=platform,
                audience=audience,
                installer=installer or f"https://dist.test/{name}-{version}.msi",
                installer_sha256=None if installer else sha(f"{name}-{version}"),
                building=building,
                detection_rule=detection_rule
                or (f"msi:{{{name}-{version}}}" if platform == "pc" else f"pkgutil:org.{name}"),
            ),
        )
        self.walk(Kind.PACKAGE, v.ref, to, author=by)
        return v.ref

    # -- walking the chain --------------------------------------------------

    def tester_for(self, kind: Kind, author: str) -> str:
        return "edtech.marco" if author == "edtech.grace" else "edtech.grace"

    # -- image tests ----------------------------------------------------------

    def person(self, username: str, role: Role, buildings: Sequence[str] = ()) -> Actor:
        """One more person, written directly (as make_district writes its people)."""
        with transaction(self.ctx.engine) as session:
            p = Person(username=username, display_name=username.title(), role=role.value)
            session.add(p)
            session.flush()
            for n in buildings:
                b = session.exec(select(Building).where(Building.number == n)).one()
                assert p.id is not None and b.id is not None
                session.add(PersonBuilding(person_id=p.id, building_id=b.id))
        self.actors[username] = directory.actor(self.ctx, username)
        return self.actors[username]

    def test_client(self, platform: str, building: str) -> str:
        """A test client of ``platform`` in ``building`` (made once), with a pinned key."""
        hostname = f"test-{platform}-{building}"
        with transaction(self.ctx.engine) as s:
            if s.exec(select(Client).where(Client.hostname == hostname)).first() is None:
                b = s.exec(select(Building).where(Building.number == building)).one()
                assert b.id is not None
                n = int(building) % 256
                mac_os = platform == "mac"
                s.add(
                    Client(
                        hostname=hostname,
                        building_id=b.id,
                        room="test-bench",
                        platform=platform,
                        model=MAC if mac_os else PC,
                        serial=f"TEST{platform.upper()}{building}",
                        mac=f"02:7e:57:{n:02x}:{0 if mac_os else 1:02x}:01",
                        address="127.0.0.1",
                        port=22 if mac_os else 5985,
                        transport="ssh" if mac_os else "winrm",
                        host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForServiceTestsOnly0"
                        if mac_os
                        else None,
                        test_client=True,
                        created_at=self.ctx.now(),
                    )
                )
        return hostname

    def test_accounts(self, building: str) -> None:
        """The building's student and staff test accounts (set once)."""
        shown = {
            (a.building, a.persona.value)
            for a in testing.list_test_accounts(self.ctx, self["it.ana"])
        }
        for persona in ("student", "staff"):
            if (building, persona) not in shown:
                testing.set_test_account(
                    self.ctx,
                    self["it.ana"],
                    building=building,
                    persona=persona,
                    username=f"{persona}{building}",
                    password=f"{persona}-{building}-Pw!",
                )

    def test_bench(self, ref: str, tester: str) -> str:
        """A test client for ``ref`` the tester may use, and the accounts it signs in with."""
        with transaction(self.ctx.engine) as s:
            row = test_plans.resolve_image(s, self[tester], ref)
            level = row.level
            if row.base_id is not None:
                base = s.get(Releasable, row.base_id)
                assert base is not None
                level = base.level
            platform, own = row.platform, catalog.building_of(row)
        # EdTech tests on a bench in the last building of the level (out of the way of
        # the buildings most tests run in); a SecTec on its own building's bench.
        bench = [n for n, _, lv in BUILDINGS if lv.value == level][-1]
        self.test_accounts(own or bench)
        if self[tester].role is not Role.EDTECH and own is not None:
            bench = own
        return self.test_client(platform, bench)

    def run_image_test(
        self,
        ref: str,
        tester: str,
        *,
        failing: dict[str, set[str]] | None = None,
        refused: set[str] | None = None,
        runner: FakePlaybookRunner | None = None,
    ) -> image_tests.ImageTestView:
        """An image test run through the real service, with fakes of our runner and
        persona checker: every check passes unless named in ``failing``."""
        client = self.test_bench(ref, tester)
        return image_tests.run_image_test(
            self.ctx,
            self[tester],
            ref,
            client=client,
            credentials=runs.Credentials(ssh_key="fake"),
            runner=runner or FakePlaybookRunner(),
            checker=FakePersonaChecker(failing or {}, refused or set()),
        )

    def record_passing_tests(self, kind: Kind, ref: str, tester: str) -> None:
        if kind is not Kind.PACKAGE:
            view = self.run_image_test(ref, tester)
            assert view.status == "passed", view
            return
        for persona in ("student", "staff"):
            chain.record_test(
                self.ctx,
                self[tester],
                kind,
                ref,
                persona=persona,
                checks=[CheckResult("sign-in succeeds", True), CheckResult("apps start", True)],
                evidence=f"{persona} login fine",
            )

    def walk(self, kind: Kind, ref: str, to: State, *, author: str = "it.ana") -> None:
        """Move a fresh draft along the happy path until it is in ``to``."""
        order = [State.DRAFT, State.IN_REVIEW, State.TESTING, State.APPROVED, State.PUBLISHED]
        if to not in order:
            raise ValueError(f"walk cannot reach {to}")
        target = order.index(to)
        if target == 0:
            return
        chain.submit(self.ctx, self[author], kind, ref)
        state = State(catalog.show(self.ctx, self[author], kind, ref).state)
        if state is State.IN_REVIEW and target > 1:
            chain.approve(
                self.ctx, self["edtech.marco"], kind, ref, "ok for instruction", step=Step.REVIEW
            )
        if target <= 2:
            return
        tester = self.tester_for(kind, author)
        self.record_passing_tests(kind, ref, tester)
        chain.approve(self.ctx, self[tester], kind, ref, "tests pass", step=Step.TEST)
        if target <= 3:
            return
        publisher = {
            Kind.BASE_IMAGE: "it.wei",
            Kind.CUSTOM_IMAGE: author,
            Kind.PACKAGE: "it.wei",
        }[kind]
        chain.publish(self.ctx, self[publisher], kind, ref)


def make_district(ctx: Context) -> District:
    """Buildings, people and the Approved Technology List, written directly."""
    with transaction(ctx.engine) as session:
        for number, name, level in BUILDINGS:
            session.add(Building(number=number, name=name, level=level.value))
        session.flush()
        ids = {b.number: b.id for b in session.exec(select(Building))}
        for username, role, numbers in PEOPLE:
            p = Person(username=username, display_name=username.title(), role=role.value)
            session.add(p)
            session.flush()
            for n in numbers:
                building_id = ids[n]
                assert p.id is not None and building_id is not None
                session.add(PersonBuilding(person_id=p.id, building_id=building_id))
    d = District(ctx)
    d.actors = {u: directory.actor(ctx, u) for u, *_ in PEOPLE}
    for ref, platform, eos, approved in (
        (PC, "pc", 900, True),
        (PC2, "pc", 900, True),
        (MAC, "mac", 900, True),
        (PC_OLD, "pc", -10, True),
        (PC_UNAPPROVED, "pc", 900, False),
    ):
        vendor, _, model = ref.partition(":")
        hardware.add_model(
            ctx,
            d["it.ana"],
            vendor=vendor,
            model=model,
            platform=platform,
            end_of_support=d.days(eos),
            approved=approved,
        )
    return d
