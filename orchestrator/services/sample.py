"""The sample district: enough buildings, people, hardware and images in every
state to try each role's work from the command line.

Everything after the buildings and people goes through the real services,
with the clock set back in time where the story needs it (an image published
a year ago, now past its sunset), so the audit log and the chain are exactly
what real use would have produced. Dates are relative to today, so the sample
stays meaningful whenever it is loaded.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import date, datetime, time, timedelta
from pathlib import Path

from sqlmodel import col, select

from orchestrator.clock import FixedClock
from orchestrator.db.models import Building, Client, Person, PersonBuilding, Releasable
from orchestrator.db.session import transaction
from orchestrator.domain.policy import SYSTEM_ACTOR, Actor
from orchestrator.domain.states import Kind, Level, Role, Step
from orchestrator.remote.ansible import FakePlaybookRunner
from orchestrator.remote.persona_checks import Check, CheckOutcome, Login, PersonaResult, Target
from orchestrator.services import (
    accounts,
    audit,
    catalog,
    chain,
    directory,
    gather,
    hardware,
    image_tests,
    inventory,
    runs,
    sunset,
    test_plans,
    testing,
)
from orchestrator.services.catalog import BaseImageSpec, CustomImageSpec, PackageSpec
from orchestrator.services.chain import CheckResult
from orchestrator.services.context import Context

BUILDINGS = [
    ("101", "Lincoln Elementary", Level.ELEMENTARY),
    ("102", "Washington Elementary", Level.ELEMENTARY),
    ("205", "Jefferson Middle", Level.MIDDLE),
    ("206", "Roosevelt Middle", Level.MIDDLE),
    ("301", "Kennedy High", Level.HIGH),
    ("302", "Madison High", Level.HIGH),
    ("900", "District Office", Level.OFFICE),
]

SAMPLE_PASSWORD = "sample-district"
"""Every sample person's password: the sample is for trying the product, not for keeping."""

PEOPLE = [
    ("it.rivera", "Ana Rivera", Role.IT, []),
    ("it.chen", "Wei Chen", Role.IT, []),
    ("edtech.okafor", "Grace Okafor", Role.EDTECH, []),
    ("edtech.silva", "Marco Silva", Role.EDTECH, []),
    ("sectec.kim", "Daniel Kim", Role.SECTEC, ["301", "302"]),
    ("sectec.patel", "Priya Patel", Role.SECTEC, ["205", "206"]),
    ("btc.lincoln", "Sam Lincoln-Ortiz", Role.BTC, ["101"]),
    ("btc.garcia", "Lena Garcia", Role.BTC, ["102"]),
    ("principal.lincoln", "Dr. Ruth Adams", Role.PRINCIPAL, ["101"]),
    ("principal.kennedy", "Mr. Tom Baker", Role.PRINCIPAL, ["301"]),
]

# (vendor, model, platform, end of support in days from today, approved)
HARDWARE = [
    ("Dell", "Latitude 3420", "pc", 900, True),
    ("Dell", "OptiPlex 7090", "pc", 1200, True),
    ("HP", "ProBook 450 G8", "pc", 600, True),
    ("Apple", "MacBookAir10,1", "mac", 800, True),
    ("Apple", "iMac21,1", "mac", 1000, True),
    ("Dell", "OptiPlex 7010", "pc", -100, True),
    ("Lenovo", "ThinkPad 11e", "pc", 400, False),
]

# (building, room, platform, model, how many). Addresses come from a range reserved
# for documentation (RFC 5737), so the sample never reaches a real computer.
CLIENTS = [
    ("101", "lab-a", "pc", "Latitude 3420", 5),
    ("101", "cart-1", "mac", "MacBookAir10,1", 4),
    ("101", "library", "pc", "OptiPlex 7010", 1),
    ("102", "lab", "pc", "ProBook 450 G8", 4),
    ("102", "library", "mac", "iMac21,1", 2),
    ("205", "cart-2", "mac", "MacBookAir10,1", 4),
    ("205", "lab-114", "pc", "ThinkPad 11e", 3),
    ("206", "media-lab", "pc", "OptiPlex 7090", 4),
    ("301", "stem-lab", "pc", "Latitude 3420", 5),
    ("301", "journalism", "mac", "iMac21,1", 2),
    ("302", "library", "pc", "OptiPlex 7090", 3),
    ("302", "journalism", "mac", "iMac21,1", 2),
    ("302", "newsroom", "pc", "Acer C740", 1),
    ("900", "front-office", "pc", "Latitude 3420", 2),
]

PC_MODELS = ["Dell:Latitude 3420", "Dell:OptiPlex 7090", "HP:ProBook 450 G8"]
MAC_MODELS = ["Apple:MacBookAir10,1", "Apple:iMac21,1"]


def _sha(label: str) -> str:
    """A stand-in SHA-256 for an artifact that lives on a distribution point, not here."""
    return hashlib.sha256(label.encode()).hexdigest()


# The elementary PC base image's test plan (services/test_plans.py).
BASE_PLAN = [
    test_plans.CheckSpec(name="sign-in", kind="sign_in", persona="both"),
    test_plans.CheckSpec(name="home-folder", kind="home_folder", persona="both"),
    test_plans.CheckSpec(
        name="firefox-starts",
        kind="app_present",
        persona="both",
        path=r"C:\Program Files\Mozilla Firefox\firefox.exe",
        command='"C:\\Program Files\\Mozilla Firefox\\firefox.exe" --version',
        expect_exit=0,
    ),
    test_plans.CheckSpec(
        name="no-registry-editor",
        kind="app_absent",
        persona="student",
        path=r"C:\Windows\regedit.exe",
    ),
    test_plans.CheckSpec(name="not-admin", kind="not_admin", persona="student"),
]


# IT's test bench: one test client per platform and level.
TEST_CLIENTS = {
    ("pc", "elementary"): "101-library-01",
    ("mac", "elementary"): "102-library-02",
    ("pc", "middle"): "205-lab-114-03",
    ("mac", "middle"): "205-cart-2-04",
    ("pc", "high"): "301-stem-lab-05",
    ("mac", "high"): "302-journalism-02",
}


def _sample_host_key(hostname: str) -> str:
    """A made-up pinned Ed25519 host key for a sample test client (there is no host)."""
    blob = (
        b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + hashlib.sha256(hostname.encode()).digest()
    )
    return "ssh-ed25519 " + base64.b64encode(blob).decode()


class _SampleBench:
    """The sample district's recorded test history: every check passed on the bench.
    It signs in nowhere; the sample's computers are loopback addresses with nothing there."""

    def run(
        self,
        target: Target,
        login: Login,
        checks: Sequence[Check],
        on_outcome: Callable[[CheckOutcome], None] = lambda _o: None,
    ) -> PersonaResult:
        outcomes = tuple(
            CheckOutcome(
                c.name,
                login.persona,
                True,
                c.kind,
                0,
                "(sample district: recorded history, not run)",
                "passed",
            )
            for c in checks
        )
        return PersonaResult(login.persona, login.username, True, "", outcomes)


def load(ctx: Context) -> bool:
    """Load the sample district into an empty catalog. Returns False if the
    database already has buildings (nothing is changed then)."""
    with transaction(ctx.engine) as session:
        if session.exec(select(Building.id)).first() is not None:
            return False
        for number, name, level in BUILDINGS:
            session.add(Building(number=number, name=name, level=level.value))
        session.flush()
        ids = {b.number: b.id or 0 for b in session.exec(select(Building))}
        password = accounts.hash_password(SAMPLE_PASSWORD)
        for username, display, role, numbers in PEOPLE:
            p = Person(
                username=username, display_name=display, role=role.value, password_hash=password
            )
            session.add(p)
            session.flush()
            for n in numbers:
                assert p.id is not None
                session.add(PersonBuilding(person_id=p.id, building_id=ids[n]))
        audit.append(
            session,
            at=ctx.now() - timedelta(days=501),
            actor=SYSTEM_ACTOR,
            action="district.load_sample",
            subject=audit.Subject("district", "sample district"),
            after={"buildings": len(BUILDINGS), "people": len(PEOPLE)},
        )
    _Story(ctx).tell()
    return True


class _Story:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.today = ctx.today()
        self.who = {u: directory.actor(ctx, u) for u, *_ in PEOPLE}

    def at(self, days: int) -> Context:
        """The context as of ``days`` from now (negative: the past), at 10:00 local."""
        day = self.today + timedelta(days=days)
        moment = datetime.combine(day, time(10, 0), tzinfo=self.ctx.zone)
        return replace(self.ctx, clock=FixedClock(moment))

    def d(self, days: int) -> date:
        return self.today + timedelta(days=days)

    def a(self, username: str) -> Actor:
        return self.who[username]

    def tell(self) -> None:
        """The district's last sixteen months, in the order they happened."""
        it, kim, patel = self.a("it.rivera"), self.a("sectec.kim"), self.a("sectec.patel")
        btc = self.a("btc.lincoln")
        for vendor, model, platform, eos, approved in HARDWARE:
            hardware.add_model(
                self.at(-500),
                it,
                vendor=vendor,
                model=model,
                platform=platform,
                end_of_support=self.d(eos),
                approved=approved,
            )
        self.clients(-480)
        self.bench(-475)
        self.package(
            "edtech.okafor",
            "firefox",
            "128.0",
            "pc",
            "instructional",
            -460,
            "msi:{1F1A2B3C-4D5E-4F60-9A7B-FF1280000000}",
        )
        self.package(
            "it.rivera", "finance-client", "7.2", "pc", "admin_staff", -450, "msi:{0F1A2B3C}"
        )
        self.package(
            "edtech.okafor",
            "scratch",
            "3.29",
            "mac",
            "instructional",
            -440,
            "pkgutil:edu.mit.scratch>=3.29",
        )
        self.base("pc", "elementary", "2025.1", "Windows 11 23H2", -420, sunset_in=-12)
        # Lincoln's lab image on the 2025 base.
        self.custom(
            btc,
            "101",
            "lab",
            "1.0",
            "pc-elementary@2025.1",
            -380,
            packages=["firefox@128.0"],
            settings={"wallpaper": "lincoln-lions", "kiosk": "off"},
        )
        self.base("mac", "middle", "2025.2", "macOS 14.7", -330, sunset_in=21)
        # Jefferson's carts on the mac-middle base that sunsets within 30 days.
        self.custom(
            patel,
            "205",
            "carts",
            "1.0",
            "mac-middle@2025.2",
            -300,
            packages=["scratch@3.29"],
            settings={"dock": "student"},
        )
        # Madison High's journalism Macs, on a 2025 base that the 2026 one replaced:
        # flagged for rebase, nobody has started it yet.
        self.base("mac", "high", "2025.1", "macOS 14.6", -270, sunset_in=60)
        self.custom(
            kim, "302", "journalism", "1.0", "mac-high@2025.1", -260, packages=["scratch@3.29"]
        )
        self.base("mac", "elementary", "2026.1", "macOS 15.3", -150, sunset_in=540)
        self.base("mac", "high", "2026.1", "macOS 15.3", -140, sunset_in=560)
        self.base("pc", "middle", "2026.1", "Windows 11 24H2", -120, sunset_in=650)
        self.base("pc", "high", "2026.1", "Windows 11 24H2", -110, sunset_in=660)
        # Publishing this flags 101/lab@1.0 for rebase; the rebase is in testing.
        # EdTech writes its test plan before it is published; every elementary PC
        # image built on it inherits the plan.
        self.base(
            "pc", "elementary", "2026.1", "Windows 11 24H2", -90, sunset_in=700, plan=BASE_PLAN
        )
        catalog.rebase(self.at(-40), btc, "101/lab@1.0")
        self.through_chain(
            Kind.CUSTOM_IMAGE,
            "101/lab@1.1",
            -39,
            author="btc.lincoln",
            publisher="btc.lincoln",
            stop="testing",
        )
        # Lincoln's tech adds the lab's printer to the plan it inherits.
        test_plans.add_check(
            self.at(-38),
            btc,
            "101/lab@1.1",
            test_plans.CheckSpec(
                name="lab-printer",
                kind="reachable",
                persona="both",
                host="print-101.district.example.org",
                port=631,
            ),
        )
        # Kennedy High's robotics software, a building-local package in testing.
        self.package(
            "sectec.kim",
            "robotics-lab",
            "2.1",
            "pc",
            "building_local",
            -30,
            "registry:RoboticsLab>=2.1",
            building="301",
            stop="testing",
        )
        # Madison High's library image, rejected by EdTech back to draft.
        self.custom(kim, "302", "library", "1.0", "pc-high@2026.1", -20, stop="in_review")
        chain.reject(
            self.at(-18),
            self.a("edtech.okafor"),
            Kind.CUSTOM_IMAGE,
            "302/library@1.0",
            "catalog search shortcut missing from the student desktop",
        )
        # Roosevelt Middle: approved, waiting for its release.
        self.custom(
            patel,
            "206",
            "media-lab",
            "1.0",
            "pc-middle@2026.1",
            -15,
            packages=["firefox@128.0"],
            stop="approved",
        )
        # Kennedy High's STEM lab awaiting EdTech's review.
        self.custom(
            kim,
            "301",
            "stem-lab",
            "2.0",
            "pc-high@2026.1",
            -10,
            packages=["firefox@128.0"],
            settings={"power-plan": "lab"},
            stop="in_review",
        )
        # IT's next high-school PC base, in review.
        self.base("pc", "high", "2026.2", "Windows 11 24H2", -5, sunset_in=900, stop="in_review")
        # Washington's library Macs: a draft.
        self.custom(
            self.a("btc.garcia"),
            "102",
            "library",
            "1.0",
            "mac-elementary@2026.1",
            -3,
            packages=["scratch@3.29"],
            stop="draft",
        )
        # Last week IT gathered facts from the elementary and middle schools' PCs: what
        # each reports it carries (the Macs' host keys are not pinned yet, so they were
        # not reached). The image each lab still runs is what the charts draw.
        self.gathered(-7)
        # What the scheduler does every morning.
        sunset.run_daily_check(self.ctx)

    def gathered(self, days: int) -> None:
        """Facts gathered from the PCs of 101, 102, 205 and 206 (sample history, replayed
        through the real gather service with the shipped fake runner: nothing is reached)."""
        carries = {
            ("101", "lab-a"): ("101/lab@1.0", "23H2"),
            ("101", "library"): ("pc-elementary@2026.1", "24H2"),
            ("102", "lab"): ("pc-elementary@2025.1", "23H2"),
            ("205", "lab-114"): ("pc-middle@2026.1", "24H2"),
            ("206", "media-lab"): ("pc-middle@2026.1", "24H2"),
        }
        facts: dict[str, dict[str, str]] = {}
        for building, room, platform, _model, count in CLIENTS:
            if platform != "pc" or (building, room) not in carries:
                continue
            image, os_version = carries[(building, room)]
            for i in range(1, count + 1):
                facts[f"{building}-{room}-{i:02d}"] = {
                    "orchestrator_image": image,
                    "orchestrator_os": "Windows 11",
                    "orchestrator_os_version": os_version,
                }
        # One of 102's lab PCs was switched off that evening.
        facts.pop("102-lab-03")
        runner = FakePlaybookRunner(results={"102-lab-03": "unreachable"}, facts=facts)
        for building in ("101", "102", "205", "206"):
            gather.gather(
                self.at(days),
                self.a("it.rivera"),
                credentials=runs.Credentials(),
                building=building,
                runner=runner,
            )

    def clients(self, days: int) -> None:
        """The asset export IT imported when the district started with the orchestrator."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(
            [
                "Computer Name",
                "School",
                "Room",
                "OS",
                "Model",
                "Serial Number",
                "MAC Address",
                "IP Address",
            ]
        )
        n = 0
        for building, room, platform, model, count in CLIENTS:
            for i in range(1, count + 1):
                n += 1
                writer.writerow(
                    [
                        f"{building}-{room}-{i:02d}",
                        building,
                        room,
                        "Windows" if platform == "pc" else "macOS",
                        model,
                        f"SN{building}{n:04d}",
                        f"02:00:00:00:{n // 256:02x}:{n % 256:02x}",
                        # Loopback: trying a run on the sample district reaches
                        # nothing outside this machine.
                        f"127.1.{n // 256}.{n % 256}",
                    ]
                )
        with tempfile.TemporaryDirectory() as folder:
            export = Path(folder) / "asset-export.csv"
            export.write_text(out.getvalue())
            inventory.import_clients(self.at(days), self.a("it.rivera"), export)

    def bench(self, days: int) -> None:
        """IT's test clients (one per platform and level, their SSH keys pinned when the
        bench was set up) and every building's student and staff test accounts."""
        it = self.a("it.rivera")
        for hostname in TEST_CLIENTS.values():
            testing.mark_test_client(self.at(days), it, hostname)
        with transaction(self.ctx.engine) as session:
            for c in session.exec(
                select(Client).where(col(Client.hostname).in_(list(TEST_CLIENTS.values())))
            ):
                if c.platform == "mac":
                    c.host_key = _sample_host_key(c.hostname)
                    session.add(c)
        for number, _, level in BUILDINGS:
            if level is Level.OFFICE:
                continue
            for persona, prefix in (("student", "s"), ("staff", "t")):
                testing.set_test_account(
                    self.at(days),
                    it,
                    building=number,
                    persona=persona,
                    username=f"{prefix}.test{number}",
                    password=f"sample-{persona}-{number}-{_sha(number)[:8]}",
                )

    def image_test(self, ref: str, days: int, tester: str) -> None:
        """The test run EdTech made on the bench (sample history: nothing is reached)."""
        ctx = self.at(days)
        with transaction(ctx.engine) as session:
            row = test_plans.resolve_image(session, self.a(tester), ref)
            base = session.get(Releasable, row.base_id) if row.base_id else row
            assert base is not None and base.level is not None
            key = (row.platform, base.level)
        image_tests.run_image_test(
            ctx,
            self.a(tester),
            ref,
            client=TEST_CLIENTS[key],
            credentials=runs.Credentials(),
            runner=FakePlaybookRunner(),
            checker=_SampleBench(),
        )

    def package(
        self,
        author: str,
        name: str,
        version: str,
        platform: str,
        audience: str,
        days: int,
        detection: str,
        *,
        building: str | None = None,
        stop: str | None = None,
    ) -> None:
        catalog.create_package(
            self.at(days),
            self.a(author),
            PackageSpec(
                name=name,
                version=version,
                platform=platform,
                audience=audience,
                building=building,
                detection_rule=detection,
                installer=f"https://dist.example.org/packages/{name}-{version}."
                + ("msi" if platform == "pc" else "pkg"),
                installer_sha256=_sha(f"{name}-{version}"),
            ),
        )
        ref = f"{building}/{name}@{version}" if building else f"{name}@{version}"
        tester = "edtech.silva" if author == "edtech.okafor" else "edtech.okafor"
        publisher = "sectec.kim" if building else "it.chen"
        self.through_chain(
            Kind.PACKAGE,
            ref,
            days + 1,
            tester=tester,
            author=author,
            publisher=publisher,
            stop=stop,
        )

    def base(
        self,
        platform: str,
        level: str,
        version: str,
        os_version: str,
        days: int,
        *,
        sunset_in: int,
        stop: str | None = None,
        plan: list[test_plans.CheckSpec] | None = None,
    ) -> None:
        catalog.create_base_image(
            self.at(days),
            self.a("it.rivera"),
            BaseImageSpec(
                platform=platform,
                level=level,
                version=version,
                os_version=os_version,
                sunset_date=self.d(sunset_in),
                artifact=f"https://dist.example.org/base/{platform}-{level}-{version}."
                + ("wim" if platform == "pc" else "json"),
                artifact_sha256=_sha(f"{platform}-{level}-{version}"),
                models=PC_MODELS if platform == "pc" else MAC_MODELS,
            ),
        )
        for spec in plan or []:
            test_plans.add_check(
                self.at(days), self.a("edtech.okafor"), f"{platform}-{level}@{version}", spec
            )
        self.through_chain(
            Kind.BASE_IMAGE,
            f"{platform}-{level}@{version}",
            days + 1,
            author="it.rivera",
            publisher="it.chen",
            stop=stop,
        )

    def custom(
        self,
        author: Actor,
        building: str,
        name: str,
        version: str,
        base: str,
        days: int,
        *,
        packages: list[str] | None = None,
        settings: dict[str, str] | None = None,
        stop: str | None = None,
    ) -> None:
        catalog.create_custom_image(
            self.at(days),
            author,
            CustomImageSpec(
                building=building,
                name=name,
                version=version,
                base=base,
                packages=packages or [],
                settings=settings or {},
            ),
        )
        if stop == "draft":
            return
        self.through_chain(
            Kind.CUSTOM_IMAGE,
            f"{building}/{name}@{version}",
            days + 1,
            author=author.username,
            publisher=author.username,
            stop=stop,
        )

    def through_chain(
        self,
        kind: Kind,
        ref: str,
        days: int,
        *,
        tester: str = "edtech.okafor",
        reviewer: str = "edtech.silva",
        publisher: str,
        author: str,
        stop: str | None = None,
    ) -> None:
        """Walk ``ref`` through its chain, starting ``days`` from now, up to ``stop``."""
        chain.submit(self.at(days), self.a(author), kind, ref)
        if stop == "in_review":
            return
        if kind is not Kind.PACKAGE:
            chain.approve(
                self.at(days + 1),
                self.a(reviewer),
                kind,
                ref,
                "fits instruction",
                step=Step.REVIEW,
            )
        if stop == "testing":
            return
        if kind is Kind.PACKAGE:
            for persona, account in (("student", "s.test101"), ("staff", "t.test101")):
                chain.record_test(
                    self.at(days + 2),
                    self.a(tester),
                    kind,
                    ref,
                    persona=persona,
                    account=account,
                    checks=[
                        CheckResult("sign-in succeeds", True),
                        CheckResult("home folder created", True),
                        CheckResult("required applications start", True),
                    ],
                    evidence=f"signed in as {account} on the test bench",
                )
        else:
            self.image_test(ref, days + 2, tester)
        chain.approve(self.at(days + 3), self.a(tester), kind, ref, "tests pass", step=Step.TEST)
        if stop == "approved":
            return
        chain.publish(self.at(days + 4), self.a(publisher), kind, ref)
