"""Test plans per image: checks, inheritance from the base, who may edit, when, and
the plan's digest (services/test_plans.py), on both backends."""

from __future__ import annotations

import itertools
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event
from sqlmodel import Session, col, func, select

from orchestrator.db.models import AuditEntry, TestCheck
from orchestrator.db.session import transaction
from orchestrator.domain.states import Kind, State
from orchestrator.errors import Conflict, Duplicate, InvalidInput, NotFound, Refused
from orchestrator.services import audit, catalog, releasables, test_plans
from orchestrator.services.test_plans import CheckKind, CheckSpec, Origin, Personas
from tests.factories import District

BASE = "pc-elementary@2026.1"
BASE_CHECKS = [
    CheckSpec(name="sign-in", kind="sign_in", persona="both"),
    CheckSpec(name="home-folder", kind="home_folder", persona="both", timeout=45),
    CheckSpec(name="not-admin", kind="not_admin", persona="student"),
    CheckSpec(
        name="firefox",
        kind="app_present",
        persona="both",
        path=r"C:\Program Files\Mozilla Firefox\firefox.exe",
    ),
]
PRINTER = CheckSpec(
    name="lab-printer", kind="reachable", persona="staff", host="print-101.test", port=631
)


def _planned_base(
    d: District, version: str = "2026.1", checks: list[CheckSpec] = BASE_CHECKS
) -> str:
    """A published PC elementary base whose plan EdTech and IT wrote while it was a draft."""
    ref = d.base(version=version, to=State.DRAFT)
    for i, spec in enumerate(checks):
        test_plans.add_check(d.ctx, d["edtech.grace" if i % 2 else "it.ana"], ref, spec)
    d.walk(Kind.BASE_IMAGE, ref, State.PUBLISHED)
    return ref


def _audit_count(d: District) -> int:
    with transaction(d.ctx.engine) as s:
        return s.exec(select(func.count()).select_from(AuditEntry)).one()


def _rows(d: District) -> list[tuple[int, str, str | None]]:
    with transaction(d.ctx.engine) as s:
        return [
            (r.releasable_id, r.name, r.disabled_reason)
            for r in s.exec(select(TestCheck).order_by(col(TestCheck.id)))
        ]


def test_a_customized_image_runs_its_base_plan_minus_what_it_disabled_then_its_own(
    district: District,
) -> None:
    d = district
    base = _planned_base(d)
    lab = d.custom(base=base)  # 101/lab@1.0, a draft by btc.lincoln
    plan = test_plans.effective_plan(d.ctx, d["btc.lincoln"], lab)
    assert [(c.name, c.origin, c.source) for c in plan] == [
        ("sign-in", Origin.BASE, base),
        ("home-folder", Origin.BASE, base),
        ("not-admin", Origin.BASE, base),
        ("firefox", Origin.BASE, base),
    ]
    inherited_digest = test_plans.show_plan(d.ctx, d["btc.lincoln"], lab).digest

    test_plans.add_check(d.ctx, d["btc.lincoln"], lab, PRINTER)
    view = test_plans.disable_check(
        d.ctx, d["edtech.grace"], lab, "firefox", "the lab uses Chrome; Firefox is not installed"
    )
    assert [(c.name, c.origin) for c in view.checks] == [
        ("sign-in", Origin.BASE),
        ("home-folder", Origin.BASE),
        ("not-admin", Origin.BASE),
        ("lab-printer", Origin.OWN),
    ]
    assert view.disabled == [
        test_plans.DisabledCheck(
            "firefox", "the lab uses Chrome; Firefox is not installed", "edtech.grace", base
        )
    ]
    assert view.digest != inherited_digest
    printer = view.checks[-1]
    assert printer.personas is Personas.STAFF and printer.kind is CheckKind.REACHABLE
    assert printer.params == {"host": "print-101.test", "port": 631}
    assert printer.timeout_s == 30 and printer.source == lab
    not_admin = view.checks[2]
    assert not_admin.params == {"command": "net session"}
    assert not_admin.expect == {"exit": "nonzero"}
    assert view.checks[1].timeout_s == 45
    # The base's own plan is unchanged by what the building did.
    assert [c.name for c in test_plans.effective_plan(d.ctx, d["it.ana"], base)] == [
        "sign-in",
        "home-folder",
        "not-admin",
        "firefox",
    ]

    # Every change is in the audit log, with the plan digest it left behind.
    entries = audit.entries(d.ctx, d["it.ana"], object_kind=Kind.CUSTOM_IMAGE.value)
    plan_entries = [e for e in entries if e.action.startswith("test_plan.")]
    assert [(e.action, e.actor) for e in plan_entries] == [
        ("test_plan.add", "btc.lincoln"),
        ("test_plan.disable", "edtech.grace"),
    ]
    assert plan_entries[-1].digest == view.digest
    assert plan_entries[-1].reason == "the lab uses Chrome; Firefox is not installed"
    assert plan_entries[-1].before is not None and plan_entries[-1].before["name"] == "firefox"

    # Taking the disabling back makes the inherited check apply again, at its place.
    back, enabled = test_plans.remove_check(d.ctx, d["btc.lincoln"], lab, "firefox")
    assert enabled
    assert [c.name for c in back.checks] == [
        "sign-in",
        "home-folder",
        "not-admin",
        "firefox",
        "lab-printer",
    ]
    gone, enabled = test_plans.remove_check(d.ctx, d["btc.lincoln"], lab, "lab-printer")
    assert not enabled and gone.digest == inherited_digest


def test_the_digest_is_stable_and_covers_every_field_of_every_check(district: District) -> None:
    d = district
    base = _planned_base(d)
    lab = d.custom(base=base)
    plan = test_plans.effective_plan(d.ctx, d["btc.lincoln"], lab)
    assert test_plans.plan_digest(plan) == test_plans.plan_digest(list(plan))
    assert test_plans.plan_digest(plan).startswith("sha256:")
    assert len(test_plans.plan_digest(plan)) == 71
    first = plan[0]
    variants: list[dict[str, Any]] = [
        {"name": "sign-in-2"},
        {"personas": Personas.STAFF},
        {"kind": CheckKind.HOME_FOLDER},
        {"params": {"x": 1}},
        {"expect": {"exit": 1}},
        {"timeout_s": 31},
        {"origin": Origin.OWN},
    ]
    digests = {test_plans.plan_digest(plan)}
    for change in variants:
        changed = test_plans.PlanCheck(**{**first.__dict__, **change})
        digests.add(test_plans.plan_digest([changed, *plan[1:]]))
    digests.add(test_plans.plan_digest(list(reversed(plan))))
    digests.add(test_plans.plan_digest(plan[1:]))
    assert len(digests) == len(variants) + 3
    # The source ref is for people; the origin is what is bound.
    same = test_plans.PlanCheck(**{**first.__dict__, "source": "elsewhere"})
    assert test_plans.plan_digest([same, *plan[1:]]) == test_plans.plan_digest(plan)


def test_checks_are_kept_as_the_check_runner_takes_them(district: District) -> None:
    d = district
    d.base()
    lab = d.custom()
    chrome = r"C:\Program Files\Google\Chrome\Application\chrome.exe"
    who = d["btc.lincoln"]
    test_plans.add_check(
        d.ctx,
        who,
        lab,
        CheckSpec(
            name="chrome", kind="app_present", persona="both", path=chrome, command="chrome -v"
        ),
    )
    test_plans.add_check(
        d.ctx, who, lab, _spec(name="whoami", expect_exit=3, expect_output="stu.test101")
    )
    view = test_plans.add_check(d.ctx, who, lab, _spec(name="no-admin", kind="not_admin"))
    app, command, not_admin = view.checks
    assert app.params == {"path": chrome, "start": "chrome -v"} and app.expect == {"exit": 0}
    assert app.runner_params() == {"path": chrome, "start": "chrome -v", "expect_exit": 0}
    assert command.runner_params() == {
        "command": "whoami",
        "expect_exit": 3,
        "expect_output": "stu.test101",
    }
    assert not_admin.runner_params() == {"command": "net session"}
    assert app.describe == f"{chrome} exists; `chrome -v` exits 0"
    assert command.describe == "`whoami` exits 3, output holds 'stu.test101'"


def test_a_released_image_keeps_its_plan_and_one_in_the_chain_changes_it_audited(
    district: District,
) -> None:
    d = district
    base = _planned_base(d)
    with pytest.raises(Conflict, match=r"pc-elementary@2026.1 is published; its test plan is"):
        test_plans.add_check(d.ctx, d["edtech.grace"], base, PRINTER)
    with pytest.raises(Conflict, match="frozen"):
        test_plans.remove_check(d.ctx, d["it.ana"], base, "sign-in")
    released = d.custom(base=base, name="library", to=State.PUBLISHED)
    with pytest.raises(Conflict, match="101/library@1.0 is released"):
        test_plans.disable_check(d.ctx, d["btc.lincoln"], released, "sign-in", "no")
    assert test_plans.show_plan(d.ctx, d["it.ana"], released).editable is False

    in_review = d.custom(base=base, to=State.IN_REVIEW)
    before = _audit_count(d)
    view = test_plans.add_check(d.ctx, d["edtech.grace"], in_review, PRINTER)
    assert view.state is State.IN_REVIEW and view.editable
    assert _audit_count(d) == before + 1
    testing_ref = d.custom(base=base, name="carts", to=State.TESTING)
    test_plans.disable_check(d.ctx, d["btc.lincoln"], testing_ref, "not-admin", "kiosk carts")
    # A plan change is not content: the image stays where it is in the chain.
    assert test_plans.show_plan(d.ctx, d["it.ana"], testing_ref).state is State.TESTING


def test_who_may_edit_which_plan(district: District) -> None:
    d = district
    draft_base = d.base(level="middle", to=State.DRAFT)
    test_plans.add_check(d.ctx, d["it.ana"], draft_base, BASE_CHECKS[0])
    test_plans.add_check(d.ctx, d["edtech.marco"], draft_base, BASE_CHECKS[1])
    for who in ("sectec.kim", "btc.lincoln", "principal.lincoln"):
        with pytest.raises(Refused, match="cannot change a base image's test plan"):
            test_plans.add_check(d.ctx, d[who], draft_base, PRINTER)

    d.base()
    kennedy = d.custom(building="301", base=d.base(level="high"))
    lincoln = d.custom(building="101")
    test_plans.add_check(d.ctx, d["sectec.lee"], kennedy, PRINTER)
    test_plans.add_check(d.ctx, d["edtech.grace"], lincoln, PRINTER)
    with pytest.raises(Refused, match="IT cannot change a customized image's test plan"):
        test_plans.add_check(d.ctx, d["it.ana"], lincoln, BASE_CHECKS[0])
    with pytest.raises(Refused):
        test_plans.remove_check(d.ctx, d["principal.lincoln"], lincoln, "lab-printer")
    # Another building's images are not found, as everywhere in the catalog.
    with pytest.raises(NotFound, match="no customized image '101/lab@1.0'"):
        test_plans.add_check(d.ctx, d["btc.garcia"], lincoln, BASE_CHECKS[0])
    with pytest.raises(NotFound):
        test_plans.show_plan(d.ctx, d["sectec.kim"], lincoln)
    assert [c.name for c in test_plans.effective_plan(d.ctx, d["principal.lincoln"], lincoln)] == [
        "lab-printer"
    ]


def _spec(**kw: Any) -> CheckSpec:
    data: dict[str, Any] = {"name": "probe", "kind": "command", "persona": "student"}
    data.update(kw)
    data.setdefault("command", "whoami")
    if data["kind"] != "command" and "command" not in kw:
        data.pop("command")
    return CheckSpec(**data)


BAD_CHECKS = [
    ("bad name", _spec(name="Probe One"), "name", "is not a check name"),
    ("unknown kind", _spec(kind="ping"), "kind", "no kind 'ping'"),
    ("unknown persona", _spec(persona="teacher"), "persona", "no persona 'teacher'"),
    ("missing path", _spec(kind="app_absent"), "path", "app_absent checks need path"),
    ("missing port", _spec(kind="reachable", host="fs.test"), "port", "reachable checks need port"),
    ("missing command", _spec(command=None), "command", "command checks need command"),
    ("wrong-typed port", _spec(kind="reachable", host="fs", port="445"), "port", "not a whole"),
    ("wrong-typed exit", _spec(expect_exit="0"), "expect_exit", "is not a whole number"),
    ("a bool is no number", _spec(expect_exit=True), "expect_exit", "is not a whole number"),
    ("inapplicable", _spec(kind="sign_in", host="x"), "host", "does not apply to sign_in checks"),
    ("relative path", _spec(kind="app_absent", path="Windows\\regedit.exe"), "path", "absolute"),
    ("a Mac path on a PC", _spec(kind="app_absent", path="/Applications/X.app"), "path", "pc"),
    ("port 0", _spec(kind="reachable", host="fs", port=0), "port", "out of range (1-65535)"),
    ("port 65536", _spec(kind="reachable", host="fs", port=65536), "port", "out of range"),
    ("bad host", _spec(kind="reachable", host="fs share", port=445), "host", "not a host name"),
    ("timeout 0", _spec(timeout=0), "timeout", "0 is out of range (1-600)"),
    ("timeout 601", _spec(timeout=601), "timeout", "601 is out of range (1-600)"),
    ("multi-line command", _spec(command="ls\nrm -rf /"), "command", "one line"),
    ("exit 256", _spec(expect_exit=256), "expect_exit", "out of range (0-255)"),
]


@pytest.mark.parametrize(
    ("spec", "field", "message"), [b[1:] for b in BAD_CHECKS], ids=[b[0] for b in BAD_CHECKS]
)
def test_a_bad_check_is_refused_naming_its_field_and_nothing_changes(
    district: District, spec: CheckSpec, field: str, message: str
) -> None:
    d = district
    d.base()
    lab = d.custom()
    before = (_rows(d), _audit_count(d))
    with pytest.raises(InvalidInput) as info:
        test_plans.add_check(d.ctx, d["btc.lincoln"], lab, spec)
    assert info.value.field == field
    assert message in str(info.value)
    if spec.name == "probe":
        assert str(info.value).startswith(f"check 'probe': {field}: ")
    assert (_rows(d), _audit_count(d)) == before


def test_bad_references_names_and_disables_change_nothing(district: District) -> None:
    d = district
    base = _planned_base(d)
    lab = d.custom(base=base)
    pkg = d.package()
    test_plans.add_check(d.ctx, d["btc.lincoln"], lab, PRINTER)
    before = (_rows(d), _audit_count(d))
    lincoln = d["btc.lincoln"]
    with pytest.raises(NotFound, match="no customized image '101/nope@1.0'"):
        test_plans.add_check(d.ctx, lincoln, "101/nope@1.0", PRINTER)
    with pytest.raises(NotFound, match="no base image 'pc-middle@2026.1'"):
        test_plans.show_plan(d.ctx, lincoln, "pc-middle@2026.1")
    with pytest.raises(InvalidInput, match="firefox@128.0 is a software package, not an image"):
        test_plans.show_plan(d.ctx, lincoln, pkg)
    pkg_id = _package_id(d, pkg)
    with pytest.raises(InvalidInput, match=f"#{pkg_id} is a software package"):
        test_plans.add_check(d.ctx, d["edtech.grace"], f"#{pkg_id}", PRINTER)
    with pytest.raises(InvalidInput, match="is not an image reference"):
        test_plans.show_plan(d.ctx, lincoln, "lab")
    with pytest.raises(Duplicate, match="101/lab@1.0 has a check named 'lab-printer'"):
        test_plans.add_check(d.ctx, lincoln, lab, PRINTER)
    with pytest.raises(Duplicate, match="'sign-in' is inherited from pc-elementary@2026.1"):
        test_plans.add_check(d.ctx, lincoln, lab, _spec(name="sign-in"))
    with pytest.raises(InvalidInput, match="own check, not inherited: remove it instead"):
        test_plans.disable_check(d.ctx, lincoln, lab, "lab-printer", "not needed")
    with pytest.raises(InvalidInput, match="inherits no check 'nope' from pc-elementary@2026.1"):
        test_plans.disable_check(d.ctx, lincoln, lab, "nope", "not needed")
    with pytest.raises(InvalidInput, match="reason"):
        test_plans.disable_check(d.ctx, lincoln, lab, "sign-in", "  ")
    with pytest.raises(InvalidInput, match="inherited from pc-elementary@2026.1; disable it"):
        test_plans.remove_check(d.ctx, lincoln, lab, "sign-in")
    with pytest.raises(NotFound, match="has no check 'nope'"):
        test_plans.remove_check(d.ctx, lincoln, lab, "nope")
    assert (_rows(d), _audit_count(d)) == before

    test_plans.disable_check(d.ctx, lincoln, lab, "sign-in", "kiosk logs in by itself")
    with pytest.raises(InvalidInput, match="'sign-in' is already disabled"):
        test_plans.disable_check(d.ctx, lincoln, lab, "sign-in", "again")
    with pytest.raises(Duplicate, match="named 'sign-in' \\(disabled there\\)"):
        test_plans.add_check(d.ctx, lincoln, lab, _spec(name="sign-in"))
    draft = d.base(level="middle", to=State.DRAFT)
    test_plans.add_check(d.ctx, d["it.ana"], draft, _spec())
    with pytest.raises(InvalidInput, match="is a base image: it inherits no checks"):
        test_plans.disable_check(d.ctx, d["it.ana"], draft, "probe", "no")


def _package_id(d: District, ref: str) -> int:
    return catalog.show(d.ctx, d["it.ana"], Kind.PACKAGE, ref).id


def test_an_import_adds_every_check_or_none(district: District) -> None:
    d = district
    d.base()
    lab = d.custom()
    good: list[Any] = [
        {"name": "sign-in", "kind": "sign_in", "persona": "both"},
        {"name": "share", "kind": "reachable", "persona": "staff", "host": "fs-101", "port": 445},
        {
            "name": "whoami",
            "kind": "command",
            "persona": "student",
            "command": "whoami",
            "expect_output": "stu",
            "timeout": 10,
        },
    ]
    bad: dict[str, Any] = {
        "timeout": {**good[2], "timeout": 900},
        "kind": {"name": "x", "kind": "ping", "persona": "both"},
        "port": {"name": "y", "kind": "reachable", "persona": "both", "host": "h"},
        "nameless": {"kind": "sign_in", "persona": "both"},
        "colour": {"name": "z", "kind": "sign_in", "persona": "both", "colour": "red"},
    }
    bad_lists: list[tuple[Any, type[Exception], str]] = [
        ([*good[:2], bad["timeout"]], InvalidInput, "entry 3, check 'whoami': timeout: 900"),
        ([*good, {**good[0]}], Duplicate, "entry 4, check 'sign-in': name: the name is used"),
        ([*good, bad["kind"]], InvalidInput, "entry 4, check 'x': kind: no kind 'ping'"),
        ([*good, bad["port"]], InvalidInput, "check 'y': port: reachable checks need port"),
        ([*good, bad["nameless"]], InvalidInput, "entry 4: name: is missing"),
        ([*good, bad["colour"]], InvalidInput, "check 'z': colour: unknown field"),
        ([*good, "sign_in"], InvalidInput, "entry 4: must be a mapping"),
        ({"checks": good}, InvalidInput, "a non-empty list of checks"),
        ([], InvalidInput, "a non-empty list of checks"),
    ]
    before = (_rows(d), _audit_count(d))
    for entries, error, message in bad_lists:
        with pytest.raises(error) as info:
            test_plans.import_checks(d.ctx, d["btc.lincoln"], lab, entries, source="plan.yml")
        assert message in str(info.value), str(info.value)
        assert (_rows(d), _audit_count(d)) == before

    view = test_plans.import_checks(d.ctx, d["btc.lincoln"], lab, good, source="plan.yml")
    assert [c.name for c in view.checks] == ["sign-in", "share", "whoami"]
    assert view.checks[2].expect == {"exit": 0, "output": "stu"}
    assert view.checks[2].timeout_s == 10
    entries = audit.entries(d.ctx, d["it.ana"], object_kind=Kind.CUSTOM_IMAGE.value)
    imported = [e for e in entries if e.action == "test_plan.add"]
    assert len(imported) == 3 and {e.reason for e in imported} == {"imported from plan.yml"}
    # A second import of one of them is refused whole.
    with pytest.raises(Duplicate, match="entry 2, check 'share'"):
        test_plans.import_checks(
            d.ctx,
            d["btc.lincoln"],
            lab,
            [{"name": "new", "kind": "sign_in", "persona": "staff"}, good[1]],
        )
    assert [c.name for c in test_plans.effective_plan(d.ctx, d["it.ana"], lab)] == [
        "sign-in",
        "share",
        "whoami",
    ]


# ---------------------------------------------------------------------------
# The inheritance rule, for any base plan, own checks and disables
# ---------------------------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "c", "d"])
TIMEOUTS = st.sampled_from([10, 30, 60])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), NAMES, TIMEOUTS),
        st.tuples(st.just("disable"), NAMES, st.just(0)),
        st.tuples(st.just("remove"), NAMES, st.just(0)),
    ),
    max_size=8,
)
_SERIAL = itertools.count(1)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    base_checks=st.lists(st.tuples(NAMES, TIMEOUTS), unique_by=lambda t: t[0], max_size=4),
    ops=OPS,
)
def test_the_effective_plan_is_the_base_minus_disabled_then_own_and_its_digest_follows_it(
    district: District, base_checks: list[tuple[str, int]], ops: list[tuple[str, str, int]]
) -> None:
    d = district
    n = next(_SERIAL)
    base = d.base(version=f"2030.{n}", to=State.DRAFT)
    for name, timeout in base_checks:
        test_plans.add_check(d.ctx, d["it.ana"], base, _spec(name=name, timeout=timeout))
    d.walk(Kind.BASE_IMAGE, base, State.PUBLISHED)
    lab = d.custom(name=f"lab-{n}", base=base)
    who = d["btc.lincoln"]

    # The model: what the plan must be after each step.
    disabled: set[str] = set()
    own: list[tuple[str, int]] = []

    def expected() -> list[tuple[str, int, Origin]]:
        return [(nm, t, Origin.BASE) for nm, t in base_checks if nm not in disabled] + [
            (nm, t, Origin.OWN) for nm, t in own
        ]

    def actual() -> tuple[list[tuple[str, int, Origin]], list[test_plans.PlanCheck], str]:
        view = test_plans.show_plan(d.ctx, who, lab)
        return [(c.name, c.timeout_s, c.origin) for c in view.checks], view.checks, view.digest

    seen: list[tuple[list[test_plans.PlanCheck], str]] = []
    got, checks, digest = actual()
    assert got == expected()
    seen.append((checks, digest))
    base_names = {nm for nm, _ in base_checks}
    for op, name, timeout in ops:
        own_names = [nm for nm, _ in own]
        if op == "add":
            if name in base_names or name in own_names:
                with pytest.raises(Duplicate):
                    test_plans.add_check(d.ctx, who, lab, _spec(name=name, timeout=timeout))
            else:
                test_plans.add_check(d.ctx, who, lab, _spec(name=name, timeout=timeout))
                own.append((name, timeout))
        elif op == "disable":
            if name in base_names and name not in disabled:
                test_plans.disable_check(d.ctx, who, lab, name, f"not on lab {n}")
                disabled.add(name)
            else:
                with pytest.raises(InvalidInput):
                    test_plans.disable_check(d.ctx, who, lab, name, f"not on lab {n}")
        else:
            if name in own_names:
                test_plans.remove_check(d.ctx, who, lab, name)
                own[:] = [(nm, t) for nm, t in own if nm != name]
            elif name in disabled:
                test_plans.remove_check(d.ctx, who, lab, name)
                disabled.discard(name)
            elif name in base_names:
                with pytest.raises(InvalidInput):
                    test_plans.remove_check(d.ctx, who, lab, name)
            else:
                with pytest.raises(NotFound):
                    test_plans.remove_check(d.ctx, who, lab, name)
        got, checks, digest = actual()
        assert got == expected()
        names = [c.name for c in checks]
        assert len(names) == len(set(names))
        seen.append((checks, digest))
    # Then each own check once with another timeout, and back: a changed plan, then
    # the same plan again.
    for name, timeout in list(own):
        for t in (timeout + 1, timeout):
            test_plans.remove_check(d.ctx, who, lab, name)
            test_plans.add_check(d.ctx, who, lab, _spec(name=name, timeout=t))
            own[:] = [(nm, tt) for nm, tt in own if nm != name] + [(name, t)]
            got, checks, digest = actual()
            assert got == expected()
            seen.append((checks, digest))
    for (plan_a, digest_a), (plan_b, digest_b) in itertools.combinations(seen, 2):
        assert (plan_a == plan_b) is (digest_a == digest_b)


# ---------------------------------------------------------------------------
# Two people adding the same check at once
# ---------------------------------------------------------------------------


def test_two_techs_adding_the_same_check_at_once_one_wins_the_other_gets_the_duplicate_error(
    district: District,
) -> None:
    """Both add 'lab-printer' to 101/lab@1.0 at the same moment, in two sessions.

    On PostgreSQL both transactions have checked that the name is free before
    either writes its row (they meet at a barrier as the row is about to be
    written), so the database's unique constraint is what stops the second.
    SQLite's writers take the write lock as their transaction begins, so there
    the second waits for the first to commit and meets the ordinary check; a
    barrier inside the transaction would wait for a thread that cannot get there.
    """
    d = district
    d.base()
    lab = d.custom()
    overlap = d.ctx.engine.dialect.name == "postgresql"
    start = threading.Barrier(2)
    both_checked = threading.Barrier(2)
    waited: set[int] = set()

    def write_after_both_checked(session: Session, *_: object) -> None:
        new_check = any(isinstance(o, TestCheck) for o in session.new)
        if overlap and new_check and threading.get_ident() not in waited:
            waited.add(threading.get_ident())
            both_checked.wait()

    outcomes: dict[str, object] = {}

    def add(username: str) -> None:
        start.wait()
        try:
            test_plans.add_check(d.ctx, d[username], lab, PRINTER)
            outcomes[username] = "added"
        except Exception as exc:
            both_checked.abort()  # the other thread fails instead of waiting for this one
            outcomes[username] = exc

    threads = [threading.Thread(target=add, args=(u,)) for u in ("btc.lincoln", "edtech.grace")]
    event.listen(Session, "before_flush", write_after_both_checked)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        event.remove(Session, "before_flush", write_after_both_checked)

    assert list(outcomes.values()).count("added") == 1, outcomes
    (loser,) = [o for o in outcomes.values() if o != "added"]
    assert isinstance(loser, Duplicate), repr(loser)
    assert str(loser) == (
        "check 'lab-printer': name: 101/lab@1.0 has a check named 'lab-printer' (already there)"
    )
    assert loser.field == "name"
    assert [(name, reason) for _, name, reason in _rows(d)] == [("lab-printer", None)]
    entries = audit.entries(d.ctx, d["it.ana"], object_kind=Kind.CUSTOM_IMAGE.value)
    assert [e.action for e in entries if e.action.startswith("test_plan.")] == ["test_plan.add"]
    view = test_plans.show_plan(d.ctx, d["btc.lincoln"], lab)
    assert [c.name for c in view.checks] == ["lab-printer"]


# ---------------------------------------------------------------------------
# A rebase carries the building's plan to the new version
# ---------------------------------------------------------------------------


def _released_lab_with_its_plan(d: District, base: str) -> str:
    """101/lab@1.0 on ``base``: its printer and wifi checks, Firefox and not-admin
    disabled with reasons by EdTech and the building's tech; then released."""
    lab = d.custom(base=base)
    test_plans.add_check(d.ctx, d["btc.lincoln"], lab, PRINTER)
    test_plans.disable_check(d.ctx, d["edtech.grace"], lab, "firefox", "the lab uses Chrome")
    test_plans.add_check(d.ctx, d["edtech.grace"], lab, _spec(name="wifi", command="netsh wlan"))
    test_plans.disable_check(d.ctx, d["btc.lincoln"], lab, "not-admin", "kiosk accounts")
    d.walk(Kind.CUSTOM_IMAGE, lab, State.PUBLISHED, author="btc.lincoln")
    return lab


def _carry_entries(d: District) -> list[Any]:
    entries = audit.entries(d.ctx, d["it.ana"], object_kind=Kind.CUSTOM_IMAGE.value)
    return [e for e in entries if e.action == "test_plan.carry"]


def test_a_rebase_carries_the_buildings_own_checks_and_disablings_with_their_reasons(
    district: District,
) -> None:
    d = district
    old_base = _planned_base(d)
    lab = _released_lab_with_its_plan(d, old_base)
    before = test_plans.show_plan(d.ctx, d["btc.lincoln"], lab)
    new_base = _planned_base(d, version="2026.2")

    result = catalog.rebase(d.ctx, d["btc.lincoln"], lab)

    assert result.view.ref == "101/lab@1.1"
    assert result.plan == test_plans.CarriedPlan(
        source=lab, checks=["lab-printer", "wifi"], disabled=["firefox", "not-admin"]
    )
    after = test_plans.show_plan(d.ctx, d["principal.lincoln"], "101/lab@1.1")
    assert (after.base, after.state, after.editable) == (new_base, State.DRAFT, True)
    assert [(c.name, c.origin, c.source) for c in after.checks] == [
        ("sign-in", Origin.BASE, new_base),
        ("home-folder", Origin.BASE, new_base),
        ("lab-printer", Origin.OWN, "101/lab@1.1"),
        ("wifi", Origin.OWN, "101/lab@1.1"),
    ]
    assert [(c.params, c.timeout_s) for c in after.checks[2:]] == [
        (c.params, c.timeout_s) for c in before.checks[2:]
    ]
    assert after.disabled == [
        test_plans.DisabledCheck("not-admin", "kiosk accounts", "btc.lincoln", new_base),
        test_plans.DisabledCheck("firefox", "the lab uses Chrome", "edtech.grace", new_base),
    ]
    # The same checks in the same places: the same plan, whichever version runs it.
    assert after.digest == before.digest
    # The released version keeps its plan as it was.
    assert test_plans.show_plan(d.ctx, d["btc.lincoln"], lab) == before

    (carry,) = _carry_entries(d)
    assert (carry.actor, carry.object_ref) == ("btc.lincoln", "101/lab@1.1")
    assert carry.reason == "carried from 101/lab@1.0"
    assert carry.digest == after.digest
    assert carry.before == {"from": lab, "digest": before.digest}
    assert carry.after is not None
    assert [(c["name"], c.get("disabled_reason")) for c in carry.after["checks"]] == [
        ("lab-printer", None),
        ("firefox", "the lab uses Chrome"),
        ("wifi", None),
        ("not-admin", "kiosk accounts"),
    ]
    assert carry.after["not_carried"] == []
    # The carried plan is the new draft's to change, like any other.
    test_plans.remove_check(d.ctx, d["btc.lincoln"], "101/lab@1.1", "wifi")
    assert [c.name for c in test_plans.effective_plan(d.ctx, d["it.ana"], lab)][-1] == "wifi"


def test_a_rebase_leaves_behind_what_the_new_base_makes_impossible_and_says_so(
    district: District,
) -> None:
    """The new base dropped 'not-admin' (which the lab disabled) and took up a
    'lab-printer' check of its own (the lab's own check's name)."""
    d = district
    lab = _released_lab_with_its_plan(d, _planned_base(d))
    base_printer = CheckSpec(
        name="lab-printer", kind="reachable", persona="both", host="print.test", port=9100
    )
    new_checks = [c for c in BASE_CHECKS if c.name != "not-admin"] + [base_printer]
    new_base = _planned_base(d, version="2026.2", checks=new_checks)

    result = catalog.rebase(d.ctx, d["btc.lincoln"], lab)

    gone_disabling = test_plans.NotCarried(
        "not-admin",
        "disabled",
        f"{new_base} has no check 'not-admin'; the reason was: kiosk accounts",
    )
    gone_own = test_plans.NotCarried(
        "lab-printer",
        "own",
        f"{new_base} has a check of that name, which it now inherits",
    )
    assert result.plan == test_plans.CarriedPlan(
        source=lab, checks=["wifi"], disabled=["firefox"], not_carried=[gone_own, gone_disabling]
    )
    view = test_plans.show_plan(d.ctx, d["btc.lincoln"], result.view.ref)
    assert [(c.name, c.origin) for c in view.checks] == [
        ("sign-in", Origin.BASE),
        ("home-folder", Origin.BASE),
        ("lab-printer", Origin.BASE),
        ("wifi", Origin.OWN),
    ]
    assert view.checks[2].params == {"host": "print.test", "port": 9100}
    assert [(x.name, x.reason) for x in view.disabled] == [("firefox", "the lab uses Chrome")]
    # Nothing of the old plan is left in the new one's rows but what applies.
    new_id = catalog.show(d.ctx, d["it.ana"], Kind.CUSTOM_IMAGE, result.view.ref).id
    assert sorted((n, r) for i, n, r in _rows(d) if i == new_id) == [
        ("firefox", "the lab uses Chrome"),
        ("wifi", None),
    ]

    (carry,) = _carry_entries(d)
    assert carry.actor == "btc.lincoln"
    assert carry.reason == (
        "carried from 101/lab@1.0; not carried: 'lab-printer' "
        f"({new_base} has a check of that name, which it now inherits); disabling of "
        f"'not-admin' ({new_base} has no check 'not-admin'; the reason was: kiosk accounts)"
    )
    assert carry.after is not None
    assert carry.after["not_carried"] == [
        {"name": "lab-printer", "entry": "own", "why": gone_own.why},
        {"name": "not-admin", "entry": "disabled", "why": gone_disabling.why},
    ]


def test_a_rebase_of_an_image_with_no_plan_of_its_own_writes_no_plan_entry(
    district: District,
) -> None:
    d = district
    old_base = _planned_base(d)
    lab = d.custom(base=old_base, to=State.PUBLISHED)
    _planned_base(d, version="2026.2")
    result = catalog.rebase(d.ctx, d["btc.lincoln"], lab)
    assert result.plan == test_plans.CarriedPlan(source=lab)
    assert _carry_entries(d) == []
    assert [c.name for c in test_plans.effective_plan(d.ctx, d["btc.lincoln"], "101/lab@1.1")] == [
        "sign-in",
        "home-folder",
        "not-admin",
        "firefox",
    ]


def test_a_plan_is_never_carried_onto_a_frozen_image_a_planned_one_or_by_an_outsider(
    district: District,
) -> None:
    d = district
    lab = _released_lab_with_its_plan(d, _planned_base(d))
    _planned_base(d, version="2026.2")
    catalog.rebase(d.ctx, d["btc.lincoln"], lab)
    newer = "101/lab@1.1"
    d.walk(Kind.CUSTOM_IMAGE, newer, State.PUBLISHED, author="btc.lincoln")
    other = d.custom(base="pc-elementary@2026.2", name="library")
    rows_before, audit_before = _rows(d), _audit_count(d)

    def carry(username: str, old_ref: str, new_ref: str) -> None:
        with transaction(d.ctx.engine) as s:
            old = releasables.resolve(s, d["btc.lincoln"], Kind.CUSTOM_IMAGE, old_ref)
            new = releasables.resolve(s, d["btc.lincoln"], Kind.CUSTOM_IMAGE, new_ref)
            test_plans.carry_plan(s, d.ctx, d[username], old, new)

    with pytest.raises(Conflict, match="101/lab@1.1 is released; its test plan is frozen"):
        carry("btc.lincoln", lab, newer)
    with pytest.raises(InvalidInput, match="101/library@1.0 is not a new version of .*lab@1.0"):
        carry("btc.lincoln", lab, other)
    draft = catalog.rebase(d.ctx, d["btc.lincoln"], lab, version="1.2").view.ref
    rows_before, audit_before = _rows(d), _audit_count(d)
    with pytest.raises(Conflict, match="101/lab@1.2 has a test plan of its own already"):
        carry("btc.lincoln", lab, draft)
    for outsider in ("edtech.grace", "btc.garcia", "principal.lincoln"):
        with pytest.raises(Refused):
            carry(outsider, lab, draft)
    assert (_rows(d), _audit_count(d)) == (rows_before, audit_before)
