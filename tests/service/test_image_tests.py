"""Image test runs through the service, with fakes of our Ansible runner and persona
checker (the real ones against loopback sshd hosts are in tests/remote/): the gates
before anything is written, what a run records, and how the chain's test step
depends on it (both databases)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from orchestrator.db.models import Client, ImageTest, TestRun
from orchestrator.db.session import transaction
from orchestrator.domain.states import Kind, State, Step
from orchestrator.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    OrchestratorError,
    Refused,
    SunsetReached,
)
from orchestrator.remote.ansible import FakePlaybookRunner
from orchestrator.services import audit, catalog, chain, image_tests, runs, test_plans, testing
from orchestrator.services.catalog import Revision
from orchestrator.services.chain import Override
from tests.factories import District
from tests.support.persona_fakes import FakePersonaChecker

PRINTER = test_plans.CheckSpec(
    name="lab-printer", kind="reachable", persona="both", host="print-101.example.org", port=631
)


@pytest.fixture
def lab(district: District) -> str:
    """101/lab@1.0 in testing, its bench and accounts ready, with a printer check."""
    district.base()
    ref = district.custom(to=State.TESTING)
    test_plans.add_check(district.ctx, district["btc.lincoln"], ref, PRINTER)
    district.test_bench(ref, "edtech.grace")
    return ref


def _run(
    d: District,
    ref: str,
    who: str = "edtech.grace",
    *,
    client: str = "test-pc-102",
    checker: FakePersonaChecker | None = None,
    runner: FakePlaybookRunner | None = None,
    progress: list[image_tests.Progress] | None = None,
) -> image_tests.ImageTestView:
    return image_tests.run_image_test(
        d.ctx,
        d[who],
        ref,
        client=client,
        credentials=runs.Credentials(),
        runner=runner or FakePlaybookRunner(),
        checker=checker or FakePersonaChecker(),
        on_progress=(progress.append if progress is not None else lambda _p: None),
    )


def _count(d: District) -> tuple[int, int, int]:
    with transaction(d.ctx.engine) as s:
        tests = len(s.exec(select(ImageTest)).all())
        results = len(s.exec(select(TestRun).where(col(TestRun.image_test_id).is_not(None))).all())
    return tests, results, len(audit.entries(d.ctx, d["it.ana"]))


def _sign_off(d: District, ref: str, who: str = "edtech.grace", **kw: Any) -> State:
    return chain.approve(
        d.ctx, d[who], Kind.CUSTOM_IMAGE, ref, "tests pass", step=Step.TEST, **kw
    ).state


# -- a run and what it records -------------------------------------------------------


def test_a_passing_run_puts_the_image_on_the_bench_then_records_both_personas_bound_to_it(
    district: District, lab: str
) -> None:
    runner, checker = FakePlaybookRunner(), FakePersonaChecker()
    progress: list[image_tests.Progress] = []

    view = _run(district, lab, runner=runner, checker=checker, progress=progress)

    assert view.status == "passed" and view.current and view.reason == ""
    [apply] = runner.requests
    assert apply.playbook.stem == "apply_image" and [h.name for h in apply.hosts] == ["test-pc-102"]
    assert apply.extravars["image_marker"] == lab
    # Each persona signed in with its own building's account and ran the plan's checks.
    assert [(login.persona, login.username) for _, login, _ in checker.calls] == [
        ("student", "student101"),
        ("staff", "staff101"),
    ]
    assert [c.name for c in checker.calls[0][2]] == ["sign-in", "lab-printer"]
    plan = test_plans.show_plan(district.ctx, district["edtech.grace"], lab)
    status = chain.status(district.ctx, district["edtech.grace"], Kind.CUSTOM_IMAGE, lab)
    runs_ = [t for t in status.tests if t.image_test == view.id]
    assert {(t.persona.value, t.passed, t.client, t.plan_digest, t.current) for t in runs_} == {
        ("student", True, "test-pc-102", plan.digest, True),
        ("staff", True, "test-pc-102", plan.digest, True),
    }
    assert [a for a in (e.action for e in status.history) if "test_run" in a] == [
        "custom_image.test_run.start",
        "custom_image.test_run.finish",
    ]
    assert progress[0].stage == "deliver" and progress[-1].stage == "done"
    assert {p.message for p in progress if p.stage == "check"} >= {"lab-printer: passed"}
    with transaction(district.ctx.engine) as s:
        bench = s.exec(select(Client).where(Client.hostname == "test-pc-102")).one()
        assert bench.current_image == lab
    assert _sign_off(district, lab) is State.APPROVED


def test_a_failed_check_keeps_what_the_persona_saw_and_the_sign_off_names_it(
    district: District, lab: str
) -> None:
    view = _run(district, lab, checker=FakePersonaChecker({"student": {"lab-printer"}}))

    assert view.status == "failed" and view.reason == "student: lab-printer failed"
    assert view.failing == [("student", "lab-printer")]
    [row] = [c for p in view.personas for c in p.checks if not c.passed]
    assert (row.exit_code, row.output, row.message) == (1, "denied", "exited 1, expected 0")
    with pytest.raises(Conflict, match=r"checks failed .*\(student:lab-printer\)"):
        _sign_off(district, lab)


def test_a_persona_that_cannot_sign_in_fails_the_run_saying_so(
    district: District, lab: str
) -> None:
    view = _run(district, lab, checker=FakePersonaChecker(refused={"staff"}))

    assert view.status == "failed"
    assert view.reason == "sign-in failed for staff test account staff101"
    staff = next(p for p in view.personas if p.persona.value == "staff")
    assert not staff.signed_in and not staff.passed


def test_an_unreachable_test_client_fails_the_run_before_any_persona_signs_in(
    district: District, lab: str
) -> None:
    checker = FakePersonaChecker()
    view = _run(
        district, lab, runner=FakePlaybookRunner({"test-pc-102": "unreachable"}), checker=checker
    )

    assert view.status == "failed" and view.reason.startswith(
        "test client test-pc-102 could not be reached"
    )
    assert view.personas == [] and checker.calls == []
    with pytest.raises(Conflict, match="no student image test run is recorded"):
        _sign_off(district, lab)


def test_a_pc_customized_image_goes_on_the_bench_with_its_packages_after_the_image(
    district: District,
) -> None:
    district.base()
    pkg = district.package("mathlab", "3.1", to=State.TESTING)
    ref = district.custom(packages=[pkg], to=State.TESTING)
    district.test_bench(ref, "edtech.grace")
    runner = FakePlaybookRunner()

    view = _run(district, ref, runner=runner)

    assert view.status == "passed"
    assert [(r.playbook.stem, r.extravars.get("package_name")) for r in runner.requests] == [
        ("apply_image", None),
        ("install_package", "mathlab"),
    ]


# -- the gates: refused before anything is written -----------------------------------


def _refused(
    d: District, call: Callable[[], object], error: type[OrchestratorError], match: str
) -> None:
    before = _count(d)
    with pytest.raises(error, match=match):
        call()
    assert _count(d) == before, "a refused image test must write nothing"


def test_a_btc_or_the_images_author_may_not_run_its_test(district: District, lab: str) -> None:
    for who in ("btc.lincoln", "btc.garcia", "principal.lincoln", "it.ana"):
        with pytest.raises((Refused, NotFound)):
            _run(district, lab, who, client="test-pc-102")
    _refused(district, lambda: _run(district, lab, "btc.lincoln"), Refused, "run image tests")


def test_a_sectec_tests_its_own_buildings_image_on_its_own_bench_and_not_its_own_work(
    district: District,
) -> None:
    district.base("pc", "high")
    ref = district.custom("301", base="pc-high@2026.1", to=State.TESTING, by="sectec.kim")
    bench = district.test_bench(ref, "sectec.lee")
    assert bench == "test-pc-301"

    assert _run(district, ref, "sectec.lee", client=bench).status == "passed"
    _refused(
        district, lambda: _run(district, ref, "sectec.kim", client=bench), Refused, "their own"
    )
    _refused(district, lambda: _run(district, ref, "sectec.patel", client=bench), NotFound, "no ")


@pytest.mark.parametrize(
    ("setup", "error", "match"),
    [
        ("not_test_client", Conflict, "is not a test client"),
        (
            "mac_client",
            InvalidInput,
            "is a Mac and 101/lab@1.0 is a PC image: choose a PC test client",
        ),
        (
            "other_level",
            InvalidInput,
            "is in high building 302 and 101/lab@1.0 is for elementary schools",
        ),
        ("no_accounts", NotFound, "has no student test account"),
        ("unknown_client", NotFound, "no client 'nobody'"),
    ],
)
def test_a_bench_that_does_not_fit_is_refused_with_why(
    district: District, lab: str, setup: str, error: type[OrchestratorError], match: str
) -> None:
    client = "test-pc-102"
    if setup == "not_test_client":
        testing.mark_test_client(district.ctx, district["it.ana"], client, test_client=False)
    elif setup == "mac_client":
        client = district.test_client("mac", "102")
    elif setup == "other_level":
        client = district.test_client("pc", "302")
    elif setup == "no_accounts":
        testing.remove_test_account(
            district.ctx, district["it.ana"], building="101", persona="student"
        )
    elif setup == "unknown_client":
        client = "nobody"
    _refused(district, lambda: _run(district, lab, client=client), error, match)


def test_an_image_not_in_testing_or_past_its_sunset_is_refused(district: District) -> None:
    district.base()
    draft = district.custom(to=State.DRAFT)
    district.test_bench(draft, "edtech.grace")
    _refused(district, lambda: _run(district, draft), Conflict, "is draft: image tests run")
    soon = district.base("pc", "middle", sunset_in=1, to=State.TESTING)
    district.test_bench(soon, "edtech.grace")
    district.ctx.clock.advance(days=2)  # type: ignore[attr-defined]
    _refused(district, lambda: _run(district, soon, client="test-pc-201"), SunsetReached, "sunset")


def test_a_mac_bench_without_a_pinned_host_key_is_refused(district: District) -> None:
    district.base("mac", "elementary")
    ref = district.custom(base="mac-elementary@2026.1", to=State.TESTING)
    bench = district.test_bench(ref, "edtech.grace")
    with transaction(district.ctx.engine) as s:
        c = s.exec(select(Client).where(Client.hostname == bench)).one()
        c.host_key = None
        s.add(c)
    _refused(district, lambda: _run(district, ref, client=bench), Conflict, "not pinned yet")


def test_one_test_at_a_time_per_bench_and_a_dead_runs_row_is_closed_as_interrupted(
    district: District, lab: str
) -> None:
    first = _run(district, lab)
    with transaction(district.ctx.engine) as s:
        row = s.get(ImageTest, first.id)
        assert row is not None
        row.status, row.finished_at = "running", None
        s.add(row)
    # Its owner is this process, still alive: the bench is busy.
    _refused(district, lambda: _run(district, lab), Conflict, "test-pc-102 is busy: image test")
    with transaction(district.ctx.engine) as s:
        row = s.get(ImageTest, first.id)
        assert row is not None
        row.owner = f"{row.owner.rpartition(':')[0]}:999999999"  # a process that ended
        s.add(row)

    assert _run(district, lab).status == "passed"
    closed = image_tests.show(district.ctx, district["edtech.grace"], first.id)
    assert closed.status == "error" and closed.reason.startswith("interrupted")


def test_the_database_keeps_one_running_test_per_bench(district: District, lab: str) -> None:
    first = _run(district, lab)
    with transaction(district.ctx.engine) as s:
        row = s.get(ImageTest, first.id)
        assert row is not None
        copy = ImageTest(**{k: v for k, v in row.model_dump().items() if k != "id"})
        row.status = copy.status = "running"
        s.add(row)
    with pytest.raises(sa.exc.IntegrityError), transaction(district.ctx.engine) as s:
        s.add(copy)


# -- the chain's test step -----------------------------------------------------------


def test_a_hand_recorded_test_of_an_image_is_a_note_that_does_not_sign_off(
    district: District, lab: str
) -> None:
    for persona in ("student", "staff"):
        chain.record_test(
            district.ctx,
            district["edtech.grace"],
            Kind.CUSTOM_IMAGE,
            lab,
            persona=persona,
            checks=[chain.CheckResult("looked fine", True)],
        )
    status = chain.status(district.ctx, district["edtech.grace"], Kind.CUSTOM_IMAGE, lab)
    assert [t.counts for t in status.tests] == [False, False]
    with pytest.raises(Conflict, match="no student image test run is recorded"):
        _sign_off(district, lab)


def test_evidence_no_longer_counts_once_the_image_or_its_plan_changed(
    district: District, lab: str
) -> None:
    _run(district, lab)
    test_plans.add_check(
        district.ctx,
        district["edtech.grace"],
        lab,
        test_plans.CheckSpec(name="home", kind="home_folder", persona="both"),
    )
    with pytest.raises(Conflict, match="its test plan changed after its latest student test run"):
        _sign_off(district, lab)
    _run(district, lab)
    catalog.revise(
        district.ctx,
        district["btc.lincoln"],
        Kind.CUSTOM_IMAGE,
        lab,
        Revision(settings={"wallpaper": "new"}),
    )
    chain.submit(district.ctx, district["btc.lincoln"], Kind.CUSTOM_IMAGE, lab)
    chain.approve(district.ctx, district["edtech.marco"], Kind.CUSTOM_IMAGE, lab, step=Step.REVIEW)
    with pytest.raises(Conflict, match="the evidence no longer matches the digest"):
        _sign_off(district, lab)
    listed = image_tests.list_for(district.ctx, district["edtech.grace"], lab)
    assert [t.current for t in listed] == [False, False]


def test_edtech_may_sign_off_over_failing_checks_only_naming_each_and_why(
    district: District, lab: str
) -> None:
    view = _run(
        district,
        lab,
        checker=FakePersonaChecker(
            {"student": {"lab-printer"}, "staff": {"lab-printer", "sign-in"}}
        ),
    )
    assert view.status == "failed"

    def over(
        names: list[str], who: str = "edtech.grace", reason: str = "printer replaced Monday"
    ) -> State:
        return _sign_off(district, lab, who, override=Override(names, reason))

    with pytest.raises(InvalidInput, match="not named: staff:sign-in"):
        over(["lab-printer"])
    with pytest.raises(InvalidInput, match="'home' did not fail"):
        over(["lab-printer", "sign-in", "home"])
    with pytest.raises(InvalidInput, match="reason"):
        over(["lab-printer", "sign-in"], reason="  ")
    assert over(["lab-printer", "staff:sign-in"]) is State.APPROVED
    decisions = chain.status(
        district.ctx, district["edtech.grace"], Kind.CUSTOM_IMAGE, lab
    ).decisions
    assert {(o["persona"], o["check"]) for o in decisions[-1]["overridden"]} == {
        ("student", "lab-printer"),
        ("staff", "lab-printer"),
        ("staff", "sign-in"),
    }
    [entry] = [
        e
        for e in audit.entries(district.ctx, district["it.ana"])
        if e.action.endswith("test.override")
    ]
    assert entry.actor == "edtech.grace" and entry.reason == "printer replaced Monday"


def test_a_sectec_may_not_sign_off_over_failing_checks(district: District) -> None:
    district.base("pc", "high")
    ref = district.custom("301", base="pc-high@2026.1", to=State.TESTING, by="sectec.kim")
    bench = district.test_bench(ref, "sectec.lee")
    failing = FakePersonaChecker({"student": {"sign-in"}})
    assert _run(district, ref, "sectec.lee", client=bench, checker=failing).status == "failed"

    with pytest.raises(Refused, match="only EdTech may override a failing image test run"):
        _sign_off(district, ref, "sectec.lee", override=Override(["sign-in"], "kiosk account"))
    assert _sign_off(district, ref, "edtech.grace", override=Override(["sign-in"], "kiosk")) is (
        State.APPROVED
    )


def test_an_override_with_nothing_failing_or_for_a_package_is_refused(
    district: District, lab: str
) -> None:
    _run(district, lab)
    with pytest.raises(InvalidInput, match="nothing to override"):
        _sign_off(district, lab, override=Override(["lab-printer"], "why"))
    pkg = district.package("mathlab", "3.1", to=State.TESTING)
    district.record_passing_tests(Kind.PACKAGE, pkg, "edtech.marco")
    with pytest.raises(InvalidInput, match="an override is for image test runs"):
        chain.approve(
            district.ctx,
            district["edtech.marco"],
            Kind.PACKAGE,
            pkg,
            step=Step.TEST,
            override=Override(["x"], "why"),
        )


def test_the_persona_passwords_are_in_no_row_of_the_run(district: District, lab: str) -> None:
    _run(district, lab)
    with district.ctx.engine.connect() as conn:
        dump = "\n".join(
            repr(row)
            for table in sa.inspect(district.ctx.engine).get_table_names()
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"'))
        )
    assert "student101" in dump  # the account name is shown; its password never
    assert "student-101-Pw!" not in dump and "staff-101-Pw!" not in dump


def test_a_run_stopped_with_ctrl_c_is_closed_at_once_and_frees_the_bench(
    district: District, lab: str
) -> None:
    class Interrupted(FakePersonaChecker):
        def run(self, *args: Any, **kwargs: Any) -> Any:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(district, lab, checker=Interrupted())

    [stopped] = image_tests.list_for(district.ctx, district["edtech.grace"], lab)
    assert stopped.status == "error"
    assert stopped.reason == "the checks could not run: stopped by the person running it"
    assert _run(district, lab).status == "passed"
