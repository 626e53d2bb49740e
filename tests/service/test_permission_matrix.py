"""The whole permission matrix, walked through the service layer.

Every role (it, edtech, sectec, btc, principal) x every action x target scope is
one test case, on both database backends. The EXPECTED table below is written
from ``shared/DOMAIN.md`` and the two source documents beside it, by hand: it is
NOT computed from ``orchestrator/domain/policy.py``. The point is to check the
code against the district's rules, so a disagreement shows up as a failing cell.

How the expectations were derived (DOMAIN.md, "Who uses it" and "The
collaboration chain"):

* Base image: "IT builds it -> EdTech reviews it for instruction -> it is tested
  with a student and a staff login -> IT publishes it". Only IT creates, submits,
  revises and retires base images (IT owns them). Testing with student and staff
  logins is EdTech's duty in the chart; a SecTec tests only for its own building
  and a base image is district-wide, so EdTech alone signs off base image tests.
* Customized image: "the building's tech (SecTec or BTC) builds it from a
  published base -> EdTech reviews it -> it is tested (EdTech; or a SecTec for its
  own building, but never the author) -> the building's tech releases it". The
  chart does not give BTCs image testing. IT only *assists* deployment at schools.
* Software package: "its owner packages it (IT for admin-staff installers; EdTech
  or a SecTec for local applications) -> tested with student/staff logins ->
  released district-wide by IT or for one building by its tech". District-wide
  instructional applications: EdTech configures applications for school use and
  IT supports and rolls out district-wide software and its version upgrades, so
  both may package them; a building tech may not (it acts only in its own
  buildings, and a district-wide package is in none of them). A BTC does not
  configure local applications ("EdTech does that for them"). Releasing a
  building-local package is "for one building by its tech": not IT.
* Approved Technology List: the Hardware Standards Committee decides; IT (who
  designs and runs the infrastructure) records it. Everyone else gives input only.
* Reading: everyone sees district-wide items; building staff (SecTec, BTC,
  principal) see their own buildings ("sees its building's status") and no other.
  Verifying the audit log's integrity is infrastructure work: IT.
* Image test runs' means (the issue "Image test runs with student and staff
  logins"): IT keeps the pool of test clients, so only IT marks one; everyone who
  sees a building's inventory sees its test clients. The student and staff test
  accounts are exception accounts: IT maintains the district's exception-user
  tooling; a SecTec creates its site's exception accounts and tests images with
  student/staff logins, so it keeps its own building's; a BTC creates exception
  accounts too but the chart gives it no image testing, so it neither keeps nor
  sees them; EdTech tests with them (sees them) but does not administer the
  directory (does not set them). Principals never.
* Test plans (the checks run as the student and staff personas): the chart gives
  EdTech "test applications/images with student/staff logins" and has IT create
  base images with EdTech, so IT and EdTech write a base image's plan, no one
  else (a base image is district-wide, in no building tech's buildings). A
  customized image's own checks: the building's tech who builds it (SecTec or
  BTC, "collaborate with EdTech to create customized images") and EdTech; not IT
  (it only assists deployment at schools), never a principal. Everyone who sees
  an image sees its plan; another building's image is not found.
* "No one approves a review or test step of their own work. A building tech acts
  only in its own buildings." Principals never act.

Scopes (the third part of each test id):

* ``district``: a district-wide target (base image, admin or instructional package,
  the Approved Technology List, the whole audit log).
* ``own_building``: a target in a building the actor covers. IT and EdTech cover
  the whole district, so for them this is simply a building (Lincoln Elementary).
  The actor is never the item's author here: the SecTec is sectec.lee acting on
  sectec.kim's work in Kennedy High, the BTC is btc.rivera (a second BTC of Lincoln
  Elementary added below) acting on btc.lincoln's.
* ``own_building_author`` / ``district_author``: the same, but the actor IS the
  item's author (sectec.kim, btc.lincoln, edtech.grace, it.ana).
* ``other_building``: a target in a building the actor does not cover (only for
  building-scoped roles).

Outcomes: ``Y`` allowed (the call succeeds and its effect is checked), ``N`` denied
with :class:`Refused`, ``H`` denied with :class:`NotFound`.

Which cells are NotFound (``H``) and why: the services resolve a reference to an
existing catalog item through ``releasables.resolve``, which reports items in buildings
the actor may not see as not found rather than confirming they exist. So every
action by a SecTec, BTC or principal on an EXISTING item of another building
(submit, revise, rebase, review, record/sign off tests, release, read) is ``H``.
Creating something in another building names no existing item, so that is a plain
``N`` (Refused), and so is asking for another building's audit trail (the audit
reader checks the building filter up front).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import pytest
from sqlmodel import select

from orchestrator.db.models import Building, Person, PersonBuilding
from orchestrator.db.session import transaction
from orchestrator.domain.policy import Actor
from orchestrator.domain.states import Kind, Role, State, Step
from orchestrator.errors import NotFound, Refused
from orchestrator.services import (
    audit,
    catalog,
    chain,
    directory,
    hardware,
    inventory,
    test_plans,
    testing,
)
from orchestrator.services.catalog import BaseImageSpec, CustomImageSpec, PackageSpec, Revision
from orchestrator.services.chain import CheckResult
from tests.factories import PC, District, sha


class Expect(StrEnum):
    ALLOW = "allow"
    REFUSED = "refused"
    HIDDEN = "hidden"
    """Denied with NotFound: another building's item the service does not reveal."""


Y, N, H = Expect.ALLOW, Expect.REFUSED, Expect.HIDDEN
_ = None  # no such cell (the scope does not apply to the role)

ROLES = ("it", "edtech", "sectec", "btc", "principal")

DISTRICT = "district"
DISTRICT_AUTHOR = "district_author"
OWN = "own_building"
OWN_AUTHOR = "own_building_author"
OTHER = "other_building"

# fmt: off
# (action, scope):                               it  edtech sectec btc principal
EXPECTED: dict[tuple[str, str], tuple[Expect | None, ...]] = {
    # -- base images: IT builds, EdTech reviews and tests, IT publishes ------------------
    ("create_base", DISTRICT):                      (Y, N, N, N, N),
    ("submit_base", DISTRICT):                      (Y, N, N, N, N),
    ("revise_base", DISTRICT):                      (Y, N, N, N, N),
    ("retire_base", DISTRICT):                      (Y, N, N, N, N),
    ("review_base", DISTRICT):                      (N, Y, N, N, N),
    ("record_base_test", DISTRICT):                 (N, Y, N, N, N),
    ("record_base_test", DISTRICT_AUTHOR):          (N, _, _, _, _),
    ("sign_off_base_test", DISTRICT):               (N, Y, N, N, N),
    ("sign_off_base_test", DISTRICT_AUTHOR):        (N, _, _, _, _),
    ("publish_base", DISTRICT):                     (Y, N, N, N, N),
    ("publish_base", DISTRICT_AUTHOR):              (Y, _, _, _, _),
    # -- customized images: the building's tech builds and releases ----------------------
    ("create_custom", OWN):                         (N, N, Y, Y, N),
    ("create_custom", OTHER):                       (_, _, N, N, N),
    ("submit_custom", OWN):                         (N, N, Y, Y, N),
    ("submit_custom", OTHER):                       (_, _, H, H, H),
    ("revise_custom", OWN):                         (N, N, Y, Y, N),
    ("revise_custom", OTHER):                       (_, _, H, H, H),
    ("rebase_custom", OWN):                         (N, N, Y, Y, N),
    ("rebase_custom", OTHER):                       (_, _, H, H, H),
    ("review_custom", OWN):                         (N, Y, N, N, N),
    ("review_custom", OTHER):                       (_, _, H, H, H),
    ("reject_custom_review", OWN):                  (N, Y, N, N, N),
    ("reject_custom_review", OTHER):                (_, _, H, H, H),
    ("retire_custom", OWN):                         (N, N, Y, Y, N),
    ("retire_custom", OTHER):                       (_, _, H, H, H),
    # tested by EdTech, or a SecTec of the building who is not the author; never a BTC
    ("record_custom_test", OWN):                    (N, Y, Y, N, N),
    ("record_custom_test", OWN_AUTHOR):             (_, _, N, N, _),
    ("record_custom_test", OTHER):                  (_, _, H, H, H),
    ("sign_off_custom_test", OWN):                  (N, Y, Y, N, N),
    ("sign_off_custom_test", OWN_AUTHOR):           (_, _, N, N, _),
    ("sign_off_custom_test", OTHER):                (_, _, H, H, H),
    ("release_custom", OWN):                        (N, N, Y, Y, N),
    ("release_custom", OWN_AUTHOR):                 (_, _, Y, Y, _),
    ("release_custom", OTHER):                      (_, _, H, H, H),
    # -- software packages ---------------------------------------------------------------
    ("create_admin_package", DISTRICT):             (Y, N, N, N, N),
    ("create_instructional_package", DISTRICT):     (Y, Y, N, N, N),
    ("create_local_package", OWN):                  (N, Y, Y, N, N),
    ("create_local_package", OTHER):                (_, _, N, N, N),
    # district: an instructional package by edtech.grace; buildings: a local package
    ("record_package_test", DISTRICT):              (N, Y, N, N, N),
    ("record_package_test", DISTRICT_AUTHOR):       (_, N, _, _, _),
    ("record_package_test", OWN):                   (N, Y, Y, N, N),
    ("record_package_test", OWN_AUTHOR):            (_, N, N, _, _),
    ("record_package_test", OTHER):                 (_, _, H, H, H),
    ("sign_off_package_test", DISTRICT):            (N, Y, N, N, N),
    ("sign_off_package_test", DISTRICT_AUTHOR):     (_, N, _, _, _),
    ("sign_off_package_test", OWN):                 (N, Y, Y, N, N),
    ("sign_off_package_test", OWN_AUTHOR):          (_, N, N, _, _),
    ("sign_off_package_test", OTHER):               (_, _, H, H, H),
    # "released district-wide by IT or for one building by its tech": IT does not
    # release a building's local package. The code lets it, so that cell fails on purpose.
    ("release_package", DISTRICT):                  (Y, N, N, N, N),
    ("release_package", OWN):                       (N, N, Y, Y, N),
    ("release_package", OTHER):                     (_, _, H, H, H),
    # -- Approved Technology List ----------------------------------------------------------
    ("add_hardware_model", DISTRICT):               (Y, N, N, N, N),
    ("update_hardware_model", DISTRICT):            (Y, N, N, N, N),
    # -- reading ---------------------------------------------------------------------------
    ("read_catalog_item", DISTRICT):                (Y, Y, Y, Y, Y),
    ("read_catalog_item", OWN):                     (Y, Y, Y, Y, Y),
    ("read_catalog_item", OTHER):                   (_, _, H, H, H),
    ("read_audit_entries", DISTRICT):               (Y, Y, Y, Y, Y),
    ("read_audit_entries", OWN):                    (Y, Y, Y, Y, Y),
    ("read_audit_entries", OTHER):                  (_, _, N, N, N),
    ("verify_audit_log", DISTRICT):                 (Y, N, N, N, N),
    # -- what image test runs need: the test pool, the persona test accounts -------------
    ("mark_test_client", OWN):                      (Y, N, N, N, N),
    ("mark_test_client", OTHER):                    (_, _, N, N, N),
    ("list_test_clients", OWN):                     (Y, Y, Y, Y, Y),
    ("set_test_account", OWN):                      (Y, N, Y, N, N),
    ("set_test_account", OTHER):                    (_, _, N, N, N),
    ("read_test_accounts", OWN):                    (Y, Y, Y, N, N),
    ("read_test_accounts", OTHER):                  (_, _, N, N, N),
    # -- test plans: a base's by IT and EdTech, a building's image's by its tech and EdTech
    ("edit_base_test_plan", DISTRICT):              (Y, Y, N, N, N),
    ("edit_custom_test_plan", OWN):                 (N, Y, Y, Y, N),
    ("edit_custom_test_plan", OTHER):               (_, _, H, H, H),
    ("read_test_plan", DISTRICT):                   (Y, Y, Y, Y, Y),
    ("read_test_plan", OWN):                        (Y, Y, Y, Y, Y),
    ("read_test_plan", OTHER):                      (_, _, H, H, H),
}
# fmt: on

# Who acts in each role: never the item's author, except in the *_author scopes.
ACTOR = {
    "it": "it.wei",
    "edtech": "edtech.marco",
    "sectec": "sectec.lee",
    "btc": "btc.rivera",
    "principal": "principal.lincoln",
}
AUTHOR_ACTOR = {
    "it": "it.ana",
    "edtech": "edtech.grace",
    "sectec": "sectec.kim",
    "btc": "btc.lincoln",
}
HOME = {"it": "101", "edtech": "101", "sectec": "301", "btc": "101", "principal": "101"}
AWAY = {"sectec": "302", "btc": "102", "principal": "102"}
LEVEL = {"101": "elementary", "102": "elementary", "301": "high", "302": "high"}
# Who builds each building's customized images and local packages in these tests.
CUSTOM_AUTHOR = {
    "101": "btc.lincoln",
    "102": "btc.garcia",
    "301": "sectec.kim",
    "302": "sectec.patel",
}
PACKAGE_AUTHOR = {
    "101": "edtech.grace",
    "102": "edtech.grace",
    "301": "sectec.kim",
    "302": "sectec.patel",
}
DISTRICT_PACKAGE_AUTHOR = "edtech.grace"
BASE_AUTHOR = "it.ana"

CELLS = [
    pytest.param(role, action, scope, expect, id=f"{role}-{action}-{scope}")
    for (action, scope), row in EXPECTED.items()
    for role, expect in zip(ROLES, row, strict=True)
    if expect is not None
]


@pytest.fixture
def d(district: District) -> District:
    """The test district plus btc.rivera, a second BTC of Lincoln Elementary (101), so
    that a BTC who is not the author of a Lincoln image exists."""
    with transaction(district.ctx.engine) as s:
        lincoln = s.exec(select(Building).where(Building.number == "101")).one()
        p = Person(username="btc.rivera", display_name="Btc.Rivera", role=Role.BTC.value)
        s.add(p)
        s.flush()
        assert p.id is not None and lincoln.id is not None
        s.add(PersonBuilding(person_id=p.id, building_id=lincoln.id))
    district.actors["btc.rivera"] = directory.actor(district.ctx, "btc.rivera")
    return district


# ---------------------------------------------------------------------------
# Cells: set up fresh objects in the right state, then return the one call to judge
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    d: District
    actor: Actor
    building: str | None
    """The target's building; None for district-wide targets."""
    author_acts: bool

    @property
    def b(self) -> str:
        assert self.building is not None
        return self.building


Act = Callable[[], None]


def make_cell(d: District, role: str, scope: str) -> Cell:
    author_acts = scope in (DISTRICT_AUTHOR, OWN_AUTHOR)
    username = AUTHOR_ACTOR[role] if author_acts else ACTOR[role]
    building = {DISTRICT: None, DISTRICT_AUTHOR: None, OTHER: AWAY.get(role)}.get(scope, HOME[role])
    return Cell(d, d[username], building, author_acts)


def _check_author(cell: Cell, kind: Kind, ref: str) -> None:
    """Setup sanity: in *_author cells the actor really is the author, elsewhere not."""
    author = catalog.show(cell.d.ctx, cell.d["it.ana"], kind, ref).author
    assert (author == cell.actor.username) is cell.author_acts, (author, cell.actor.username)


CHECKS = [CheckResult("sign-in succeeds", True), CheckResult("apps start", True)]


# -- base images -------------------------------------------------------------


def _base_spec(cell: Cell) -> BaseImageSpec:
    return BaseImageSpec(
        platform="pc",
        level="middle",
        version="2026.1",
        os_version="Windows 11 24H2",
        sunset_date=cell.d.days(300),
        artifact="https://dist.test/pc-middle.wim",
        artifact_sha256=sha("pc-middle"),
        models=[PC],
    )


def create_base(cell: Cell) -> Act:
    def act() -> None:
        view = catalog.create_base_image(cell.d.ctx, cell.actor, _base_spec(cell))
        assert view.state is State.DRAFT

    return act


def _base(cell: Cell, to: State) -> str:
    ref = cell.d.base(to=to, by=BASE_AUTHOR)
    _check_author(cell, Kind.BASE_IMAGE, ref)
    return ref


def submit_base(cell: Cell) -> Act:
    ref = _base(cell, State.DRAFT)
    return lambda: _expect_state(
        chain.submit(cell.d.ctx, cell.actor, Kind.BASE_IMAGE, ref), State.IN_REVIEW
    )


def revise_base(cell: Cell) -> Act:
    ref = _base(cell, State.DRAFT)

    def act() -> None:
        result = catalog.revise(cell.d.ctx, cell.actor, Kind.BASE_IMAGE, ref, Revision(models=[PC]))
        assert result.digest_changed

    return act


def retire_base(cell: Cell) -> Act:
    ref = _base(cell, State.DRAFT)
    return lambda: _expect_state(
        chain.retire(cell.d.ctx, cell.actor, Kind.BASE_IMAGE, ref), State.RETIRED
    )


def review_base(cell: Cell) -> Act:
    ref = _base(cell, State.IN_REVIEW)
    return _approve(cell, Kind.BASE_IMAGE, ref, State.TESTING)


def record_base_test(cell: Cell) -> Act:
    return _record_test(cell, Kind.BASE_IMAGE, _base(cell, State.TESTING))


def sign_off_base_test(cell: Cell) -> Act:
    ref = _base(cell, State.TESTING)
    cell.d.record_passing_tests(Kind.BASE_IMAGE, ref, "edtech.grace")
    return _approve(cell, Kind.BASE_IMAGE, ref, State.APPROVED)


def publish_base(cell: Cell) -> Act:
    ref = _base(cell, State.APPROVED)
    return _publish(cell, Kind.BASE_IMAGE, ref)


# -- customized images ---------------------------------------------------------


def _published_base(cell: Cell, version: str = "2026.1") -> str:
    return cell.d.base(level=LEVEL[cell.b], version=version)


def _custom(cell: Cell, to: State) -> str:
    base = _published_base(cell)
    ref = cell.d.custom(building=cell.b, base=base, by=CUSTOM_AUTHOR[cell.b], to=to)
    _check_author(cell, Kind.CUSTOM_IMAGE, ref)
    return ref


def create_custom(cell: Cell) -> Act:
    base = _published_base(cell)

    def act() -> None:
        view = catalog.create_custom_image(
            cell.d.ctx,
            cell.actor,
            CustomImageSpec(building=cell.b, name="library", version="1.0", base=base),
        )
        assert view.state is State.DRAFT
        assert view.building == cell.b

    return act


def submit_custom(cell: Cell) -> Act:
    ref = _custom(cell, State.DRAFT)
    return lambda: _expect_state(
        chain.submit(cell.d.ctx, cell.actor, Kind.CUSTOM_IMAGE, ref), State.IN_REVIEW
    )


def revise_custom(cell: Cell) -> Act:
    ref = _custom(cell, State.DRAFT)

    def act() -> None:
        result = catalog.revise(
            cell.d.ctx,
            cell.actor,
            Kind.CUSTOM_IMAGE,
            ref,
            Revision(settings={"wallpaper": "district"}),
        )
        assert result.digest_changed

    return act


def rebase_custom(cell: Cell) -> Act:
    ref = _custom(cell, State.DRAFT)
    newer = _published_base(cell, version="2026.2")

    def act() -> None:
        result = catalog.rebase(cell.d.ctx, cell.actor, ref)
        assert result.view.base == newer
        assert result.view.state is State.DRAFT

    return act


def review_custom(cell: Cell) -> Act:
    ref = _custom(cell, State.IN_REVIEW)
    return _approve(cell, Kind.CUSTOM_IMAGE, ref, State.TESTING)


def reject_custom_review(cell: Cell) -> Act:
    ref = _custom(cell, State.IN_REVIEW)

    def act() -> None:
        view = chain.reject(cell.d.ctx, cell.actor, Kind.CUSTOM_IMAGE, ref, "wrong wallpaper")
        assert view.state is State.DRAFT

    return act


def retire_custom(cell: Cell) -> Act:
    ref = _custom(cell, State.DRAFT)
    return lambda: _expect_state(
        chain.retire(cell.d.ctx, cell.actor, Kind.CUSTOM_IMAGE, ref), State.RETIRED
    )


def record_custom_test(cell: Cell) -> Act:
    return _record_test(cell, Kind.CUSTOM_IMAGE, _custom(cell, State.TESTING))


def sign_off_custom_test(cell: Cell) -> Act:
    ref = _custom(cell, State.TESTING)
    cell.d.record_passing_tests(Kind.CUSTOM_IMAGE, ref, "edtech.grace")
    return _approve(cell, Kind.CUSTOM_IMAGE, ref, State.APPROVED)


def release_custom(cell: Cell) -> Act:
    ref = _custom(cell, State.APPROVED)
    return _publish(cell, Kind.CUSTOM_IMAGE, ref)


# -- software packages -----------------------------------------------------------


def _package_spec(audience: str, building: str | None = None) -> PackageSpec:
    return PackageSpec(
        name="notepadpp",
        version="8.6",
        platform="pc",
        audience=audience,
        installer="https://dist.test/notepadpp-8.6.msi",
        installer_sha256=sha("npp"),
        building=building,
        detection_rule="registry:notepadpp>=8.6",
    )


def _create_package(cell: Cell, audience: str) -> Act:
    def act() -> None:
        spec = _package_spec(audience, cell.building)
        view = catalog.create_package(cell.d.ctx, cell.actor, spec)
        assert view.state is State.DRAFT
        assert view.building == cell.building

    return act


def create_admin_package(cell: Cell) -> Act:
    return _create_package(cell, "admin_staff")


def create_instructional_package(cell: Cell) -> Act:
    return _create_package(cell, "instructional")


def create_local_package(cell: Cell) -> Act:
    return _create_package(cell, "building_local")


def _package(cell: Cell, to: State) -> str:
    if cell.building is None:
        ref = cell.d.package(audience="instructional", by=DISTRICT_PACKAGE_AUTHOR, to=to)
    else:
        ref = cell.d.package(
            name="mathlab",
            version="3.1",
            audience="building_local",
            building=cell.b,
            by=PACKAGE_AUTHOR[cell.b],
            to=to,
        )
    _check_author(cell, Kind.PACKAGE, ref)
    return ref


def record_package_test(cell: Cell) -> Act:
    return _record_test(cell, Kind.PACKAGE, _package(cell, State.TESTING))


def sign_off_package_test(cell: Cell) -> Act:
    ref = _package(cell, State.TESTING)
    author = DISTRICT_PACKAGE_AUTHOR if cell.building is None else PACKAGE_AUTHOR[cell.b]
    cell.d.record_passing_tests(Kind.PACKAGE, ref, cell.d.tester_for(Kind.PACKAGE, author))
    return _approve(cell, Kind.PACKAGE, ref, State.APPROVED)


def release_package(cell: Cell) -> Act:
    return _publish(cell, Kind.PACKAGE, _package(cell, State.APPROVED))


# -- Approved Technology List ------------------------------------------------------


def add_hardware_model(cell: Cell) -> Act:
    def act() -> None:
        m = hardware.add_model(
            cell.d.ctx,
            cell.actor,
            vendor="Acer",
            model="TravelMate B3",
            platform="pc",
            end_of_support=cell.d.days(700),
        )
        assert m.approved

    return act


def update_hardware_model(cell: Cell) -> Act:
    def act() -> None:
        m = hardware.update_model(cell.d.ctx, cell.actor, PC, end_of_support=cell.d.days(1000))
        assert m.end_of_support == cell.d.days(1000)

    return act


# -- reading -------------------------------------------------------------------------


def read_catalog_item(cell: Cell) -> Act:
    if cell.building is None:
        kind, ref = Kind.BASE_IMAGE, cell.d.base(to=State.DRAFT)
    else:
        kind, ref = Kind.CUSTOM_IMAGE, _custom(cell, State.DRAFT)

    def act() -> None:
        view = catalog.show(cell.d.ctx, cell.actor, kind, ref)
        assert view.ref == ref
        assert view.building == cell.building

    return act


def read_audit_entries(cell: Cell) -> Act:
    if cell.building is None:
        cell.d.base(to=State.DRAFT)
    else:
        _package(cell, State.DRAFT)

    def act() -> None:
        if cell.building is None:
            entries = audit.entries(cell.d.ctx, cell.actor, object_kind=Kind.BASE_IMAGE.value)
        else:
            entries = audit.entries(cell.d.ctx, cell.actor, building=cell.building)
        assert entries
        assert {e.building for e in entries} == {cell.building}

    return act


def verify_audit_log(cell: Cell) -> Act:
    def act() -> None:
        assert audit.verify(cell.d.ctx, cell.actor).entries > 0

    return act


# -- test clients and persona test accounts ---------------------------------------------


def _test_client(cell: Cell) -> str:
    """A client in the cell's building (imported by IT); its hostname."""
    host = f"c-{cell.b}"
    path = cell.d.ctx.evidence_dir.parent / f"assets-{cell.b}.csv"
    path.write_text(
        "Hostname,Building,Room,Platform,Model,Serial,MAC,IP\n"
        f"{host},{cell.b},lab,pc,Latitude 3420,SN{cell.b},02:00:00:00:0{cell.b[0]}:{cell.b[1:]},"
        f"127.0.0.{cell.b[2]}\n"
    )
    inventory.import_clients(cell.d.ctx, cell.d["it.ana"], path)
    return host


def mark_test_client(cell: Cell) -> Act:
    host = _test_client(cell)

    def act() -> None:
        view, changed = testing.mark_test_client(cell.d.ctx, cell.actor, host)
        assert changed and view.test_client and view.building == cell.building

    return act


def list_test_clients(cell: Cell) -> Act:
    host = _test_client(cell)
    testing.mark_test_client(cell.d.ctx, cell.d["it.ana"], host)

    def act() -> None:
        assert [c.hostname for c in testing.list_test_clients(cell.d.ctx, cell.actor)] == [host]

    return act


def _set_account(cell: Cell, actor: Actor) -> None:
    testing.set_test_account(
        cell.d.ctx,
        actor,
        building=cell.b,
        persona="student",
        username=f"stu.test{cell.b}",
        password="Matrix-Student-1!",
    )


def set_test_account(cell: Cell) -> Act:
    def act() -> None:
        _set_account(cell, cell.actor)
        login = testing.persona_login(cell.d.ctx, cell.b, "student")
        assert login.username == f"stu.test{cell.b}"

    return act


def read_test_accounts(cell: Cell) -> Act:
    _set_account(cell, cell.d["it.ana"])

    def act() -> None:
        views = testing.list_test_accounts(cell.d.ctx, cell.actor, building=cell.b)
        assert [(v.building, v.summary) for v in views] == [(cell.b, "password set")]

    return act


# -- test plans ------------------------------------------------------------------------

SIGN_IN = test_plans.CheckSpec(name="sign-in", kind="sign_in", persona="both")


def _add_sign_in(cell: Cell, ref: str) -> Act:
    def act() -> None:
        view = test_plans.add_check(cell.d.ctx, cell.actor, ref, SIGN_IN)
        assert [c.name for c in view.checks] == ["sign-in"]
        assert audit.entries(cell.d.ctx, cell.d["it.ana"])[-1].actor == cell.actor.username

    return act


def edit_base_test_plan(cell: Cell) -> Act:
    return _add_sign_in(cell, _base(cell, State.DRAFT))


def edit_custom_test_plan(cell: Cell) -> Act:
    return _add_sign_in(cell, _custom(cell, State.DRAFT))


def read_test_plan(cell: Cell) -> Act:
    ref = _base(cell, State.DRAFT) if cell.building is None else _custom(cell, State.DRAFT)
    test_plans.add_check(cell.d.ctx, cell.d["edtech.grace"], ref, SIGN_IN)

    def act() -> None:
        plan = test_plans.effective_plan(cell.d.ctx, cell.actor, ref)
        assert [(c.name, c.source) for c in plan] == [("sign-in", ref)]

    return act


# -- shared calls ---------------------------------------------------------------------


def _expect_state(view: catalog.ReleasableView, state: State) -> None:
    assert view.state is state


_STEP_BEFORE = {State.TESTING: Step.REVIEW, State.APPROVED: Step.TEST}


def _approve(cell: Cell, kind: Kind, ref: str, to: State) -> Act:
    return lambda: _expect_state(
        chain.approve(cell.d.ctx, cell.actor, kind, ref, "ok", step=_STEP_BEFORE[to]), to
    )


def _publish(cell: Cell, kind: Kind, ref: str) -> Act:
    return lambda: _expect_state(chain.publish(cell.d.ctx, cell.actor, kind, ref), State.PUBLISHED)


def _record_test(cell: Cell, kind: Kind, ref: str) -> Act:
    def act() -> None:
        run = chain.record_test(
            cell.d.ctx,
            cell.actor,
            kind,
            ref,
            persona="student",
            checks=CHECKS,
            evidence="student login fine",
        )
        assert run.passed and run.current
        assert run.actor == cell.actor.username

    return act


ACTIONS: dict[str, Callable[[Cell], Act]] = {
    f.__name__: f
    for f in (
        create_base,
        submit_base,
        revise_base,
        retire_base,
        review_base,
        record_base_test,
        sign_off_base_test,
        publish_base,
        create_custom,
        submit_custom,
        revise_custom,
        rebase_custom,
        review_custom,
        reject_custom_review,
        retire_custom,
        record_custom_test,
        sign_off_custom_test,
        release_custom,
        create_admin_package,
        create_instructional_package,
        create_local_package,
        record_package_test,
        sign_off_package_test,
        release_package,
        add_hardware_model,
        update_hardware_model,
        read_catalog_item,
        read_audit_entries,
        verify_audit_log,
        mark_test_client,
        list_test_clients,
        set_test_account,
        read_test_accounts,
        edit_base_test_plan,
        edit_custom_test_plan,
        read_test_plan,
    )
}


def test_every_action_of_the_matrix_has_a_setup() -> None:
    assert {action for action, _scope in EXPECTED} == set(ACTIONS)


@pytest.mark.parametrize(("role", "action", "scope", "expect"), CELLS)
def test_permission_cell_matches_the_domain(
    d: District, role: str, action: str, scope: str, expect: Expect
) -> None:
    cell = make_cell(d, role, scope)
    assert cell.actor.role is Role(role)
    act = ACTIONS[action](cell)
    if expect is Expect.ALLOW:
        act()
    elif expect is Expect.REFUSED:
        with pytest.raises(Refused):
            act()
    else:
        with pytest.raises(NotFound):
            act()


# ---------------------------------------------------------------------------
# Focused rules
# ---------------------------------------------------------------------------


def test_btc_cannot_sign_off_image_tests(d: District) -> None:
    message = (
        "refused: BTC cannot sign off image tests "
        "(the chain gives testing to EdTech or a SecTec of the building)"
    )
    d.base()
    ref = d.custom("101", to=State.TESTING)
    d.record_passing_tests(Kind.CUSTOM_IMAGE, ref, "edtech.grace")
    for btc in ("btc.rivera", "btc.lincoln"):  # a colleague of the author, and the author
        with pytest.raises(Refused) as err:
            chain.approve(d.ctx, d[btc], Kind.CUSTOM_IMAGE, ref, "looks fine", step=Step.TEST)
        assert str(err.value) == message
        with pytest.raises(Refused) as err:
            chain.record_test(d.ctx, d[btc], Kind.CUSTOM_IMAGE, ref, persona="staff", checks=CHECKS)
        assert str(err.value) == message.replace("sign off", "record")
    assert catalog.show(d.ctx, d["btc.lincoln"], Kind.CUSTOM_IMAGE, ref).state is State.TESTING


def test_building_tech_acts_only_in_its_own_buildings(d: District) -> None:
    d.base(level="high")
    d.base(level="middle")
    patel = d["sectec.patel"]  # covers Madison High (302) and Jefferson Middle (201)
    for building, base in (("302", "pc-high@2026.1"), ("201", "pc-middle@2026.1")):
        view = catalog.create_custom_image(
            d.ctx, patel, CustomImageSpec(building=building, name="lab", version="1.0", base=base)
        )
        assert view.building == building
    with pytest.raises(Refused, match="in building 301"):
        catalog.create_custom_image(
            d.ctx,
            patel,
            CustomImageSpec(building="301", name="lab", version="1.0", base="pc-high@2026.1"),
        )
    kennedy = d.custom("301", base="pc-high@2026.1")
    kim = d["sectec.kim"]
    # kim (301) neither sees nor touches Madison's image, in any service
    with pytest.raises(NotFound):
        catalog.show(d.ctx, kim, Kind.CUSTOM_IMAGE, "302/lab@1.0")
    with pytest.raises(NotFound):
        chain.submit(d.ctx, kim, Kind.CUSTOM_IMAGE, "302/lab@1.0")
    with pytest.raises(Refused):
        catalog.list_releasables(d.ctx, kim, Kind.CUSTOM_IMAGE, building="302")
    with pytest.raises(Refused):
        audit.entries(d.ctx, kim, building="302")
    listed = {v.ref for v in catalog.list_releasables(d.ctx, kim, Kind.CUSTOM_IMAGE)}
    assert listed == {kennedy}
    assert {e.building for e in audit.entries(d.ctx, kim)} <= {None, "301"}
    # and patel, who covers two buildings, sees both and nothing of 301
    listed = {v.ref for v in catalog.list_releasables(d.ctx, patel, Kind.CUSTOM_IMAGE)}
    assert listed == {"302/lab@1.0", "201/lab@1.0"}
    # a BTC likewise: btc.lincoln (101) cannot build for Washington Elementary (102)
    with pytest.raises(Refused, match="in building 102"):
        catalog.create_custom_image(
            d.ctx,
            d["btc.lincoln"],
            CustomImageSpec(building="102", name="lab", version="1.0", base="pc-elementary@2026.1"),
        )
    assert catalog.list_releasables(d.ctx, d["btc.lincoln"], Kind.CUSTOM_IMAGE) == []


def _author_then_colleague_custom(d: District) -> tuple[str, list[str], str]:
    d.base(level="high")
    ref = d.custom("301", base="pc-high@2026.1", to=State.TESTING)  # by sectec.kim
    return ref, ["sectec.kim"], "sectec.lee"


def _reviser_then_colleague_custom(d: District) -> tuple[str, list[str], str]:
    """sectec.lee revises kim's image: it is now lee's work too, and kim's still."""
    d.base(level="high")
    ref = d.custom("301", base="pc-high@2026.1", to=State.TESTING)  # by sectec.kim
    catalog.revise(
        d.ctx, d["sectec.lee"], Kind.CUSTOM_IMAGE, ref, Revision(settings={"wallpaper": "kennedy"})
    )
    chain.submit(d.ctx, d["sectec.lee"], Kind.CUSTOM_IMAGE, ref)
    chain.approve(
        d.ctx, d["edtech.marco"], Kind.CUSTOM_IMAGE, ref, "ok for instruction", step=Step.REVIEW
    )
    return ref, ["sectec.lee", "sectec.kim"], "edtech.grace"


def _author_then_colleague_package(d: District) -> tuple[str, list[str], str]:
    ref = d.package(audience="instructional", by="edtech.grace", to=State.TESTING)
    return ref, ["edtech.grace"], "edtech.marco"


def _author_then_colleague_local_package(d: District) -> tuple[str, list[str], str]:
    ref = d.package(
        name="mathlab",
        version="3.1",
        audience="building_local",
        building="301",
        by="sectec.kim",
        to=State.TESTING,
    )
    return ref, ["sectec.kim"], "sectec.lee"


@pytest.mark.parametrize(
    ("kind", "setup"),
    [
        pytest.param(
            Kind.CUSTOM_IMAGE, _author_then_colleague_custom, id="sectec-tests-own-customized-image"
        ),
        pytest.param(
            Kind.CUSTOM_IMAGE,
            _reviser_then_colleague_custom,
            id="sectec-tests-customized-image-they-revised",
        ),
        pytest.param(
            Kind.PACKAGE,
            _author_then_colleague_package,
            id="edtech-tests-own-instructional-package",
        ),
        pytest.param(
            Kind.PACKAGE, _author_then_colleague_local_package, id="sectec-tests-own-local-package"
        ),
    ],
)
def test_nobody_approves_review_or_test_of_their_own_work(
    d: District, kind: Kind, setup: Callable[[District], tuple[str, list[str], str]]
) -> None:
    ref, own_people, colleague = setup(d)
    for person in own_people:
        with pytest.raises(Refused, match="of their own"):
            chain.record_test(d.ctx, d[person], kind, ref, persona="student", checks=CHECKS)
    d.record_passing_tests(kind, ref, colleague)
    for person in own_people:
        with pytest.raises(Refused, match="of their own"):
            chain.approve(d.ctx, d[person], kind, ref, "my tests pass", step=Step.TEST)
    # a different person of the same standing may: the refusal was about authorship
    assert (
        chain.approve(d.ctx, d[colleague], kind, ref, "tests pass", step=Step.TEST).state
        is State.APPROVED
    )


def test_edtech_the_only_reviewer_can_never_author_what_it_reviews(d: District) -> None:
    """The review half of "no one approves their own work": EdTech alone reviews, and
    cannot create (or revise) a base or customized image, so its own work never reaches
    its review queue."""
    d.base()
    grace = d["edtech.grace"]
    with pytest.raises(Refused):
        catalog.create_base_image(
            d.ctx,
            grace,
            BaseImageSpec(
                platform="pc",
                level="high",
                version="2026.1",
                os_version="Windows 11",
                sunset_date=d.days(300),
                artifact="https://dist.test/x.wim",
                artifact_sha256=sha("x"),
                models=[PC],
            ),
        )
    with pytest.raises(Refused):
        catalog.create_custom_image(
            d.ctx,
            grace,
            CustomImageSpec(building="101", name="lab", version="1.0", base="pc-elementary@2026.1"),
        )
    ref = d.custom("101", to=State.IN_REVIEW)
    with pytest.raises(Refused):
        catalog.revise(d.ctx, grace, Kind.CUSTOM_IMAGE, ref, Revision(settings={"a": "b"}))
    assert (
        chain.approve(d.ctx, grace, Kind.CUSTOM_IMAGE, ref, "ok", step=Step.REVIEW).state
        is State.TESTING
    )


def test_principal_can_read_but_not_act(d: District) -> None:
    principal = d["principal.lincoln"]  # Lincoln Elementary (101)
    base = d.base()
    draft = d.custom("101", name="lab", version="1.0")
    in_review = d.custom("101", name="cart", version="1.0", to=State.IN_REVIEW)
    testing = d.custom("101", name="library", version="1.0", to=State.TESTING)
    d.record_passing_tests(Kind.CUSTOM_IMAGE, testing, "edtech.grace")
    approved = d.custom("101", name="office", version="1.0", to=State.APPROVED)
    washington = d.custom("102")
    # reads: its building, district-wide items, the status and history of its images
    assert catalog.show(d.ctx, principal, Kind.BASE_IMAGE, base).state is State.PUBLISHED
    assert chain.status(d.ctx, principal, Kind.CUSTOM_IMAGE, testing).history
    listed = {v.ref for v in catalog.list_releasables(d.ctx, principal, Kind.CUSTOM_IMAGE)}
    assert listed == {draft, in_review, testing, approved}
    assert audit.entries(d.ctx, principal, building="101")
    # ...but not another building's
    with pytest.raises(NotFound):
        catalog.show(d.ctx, principal, Kind.CUSTOM_IMAGE, washington)
    with pytest.raises(Refused):
        audit.entries(d.ctx, principal, building="102")
    # acts: none, not even in its own building
    refused: list[tuple[str, Callable[[], object]]] = [
        (
            "create",
            lambda: catalog.create_custom_image(
                d.ctx,
                principal,
                CustomImageSpec(building="101", name="hall", version="1.0", base=base),
            ),
        ),
        ("submit", lambda: chain.submit(d.ctx, principal, Kind.CUSTOM_IMAGE, draft)),
        (
            "revise",
            lambda: catalog.revise(
                d.ctx, principal, Kind.CUSTOM_IMAGE, draft, Revision(settings={"a": "b"})
            ),
        ),
        (
            "review",
            lambda: chain.approve(d.ctx, principal, Kind.CUSTOM_IMAGE, in_review, step=Step.REVIEW),
        ),
        (
            "record test",
            lambda: chain.record_test(
                d.ctx, principal, Kind.CUSTOM_IMAGE, testing, persona="staff", checks=CHECKS
            ),
        ),
        (
            "sign off",
            lambda: chain.approve(d.ctx, principal, Kind.CUSTOM_IMAGE, testing, step=Step.TEST),
        ),
        ("reject", lambda: chain.reject(d.ctx, principal, Kind.CUSTOM_IMAGE, in_review, "no")),
        ("release", lambda: chain.publish(d.ctx, principal, Kind.CUSTOM_IMAGE, approved)),
        ("retire", lambda: chain.retire(d.ctx, principal, Kind.CUSTOM_IMAGE, draft)),
        (
            "package",
            lambda: catalog.create_package(
                d.ctx, principal, _package_spec("building_local", "101")
            ),
        ),
        ("hardware", lambda: hardware.update_model(d.ctx, principal, PC, approved=False)),
        ("verify", lambda: audit.verify(d.ctx, principal)),
    ]
    for what, call in refused:
        try:
            call()
        except Refused:
            continue
        pytest.fail(f"a principal could {what}")
    states = {
        ref: catalog.show(d.ctx, principal, Kind.CUSTOM_IMAGE, ref).state
        for ref in (draft, in_review, testing, approved)
    }
    assert states == {
        draft: State.DRAFT,
        in_review: State.IN_REVIEW,
        testing: State.TESTING,
        approved: State.APPROVED,
    }
