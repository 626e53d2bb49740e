"""``orchestrator image test | test-runs | test-run``, ``approve --override`` and the
tests in ``image status``, on the test district (tests/factories.py), with fakes of
our playbook runner and persona checker in the CLI's seams."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import select

from orchestrator.cli import image_test_cmds
from orchestrator.clock import FixedClock
from orchestrator.db.models import ImageTest
from orchestrator.db.session import transaction
from orchestrator.domain.states import State
from orchestrator.remote.ansible import FakePlaybookRunner
from orchestrator.services import image_tests, test_plans
from orchestrator.services.context import Context
from tests.conftest import ZONE
from tests.factories import District
from tests.support.cli import Invoke, as_json
from tests.support.persona_fakes import FakePersonaChecker


@pytest.fixture
def ctx(engine: sa.Engine, clock: FixedClock, tmp_path: Path) -> Context:
    """The services on the CLI's data folder (tests/support/cli.py), so both read the
    test accounts with the same key."""
    return Context(
        engine=engine,
        zone=ZONE,
        clock=clock,
        evidence_dir=tmp_path / "data" / "evidence",
        secret_key_file=tmp_path / "data" / "secret.key",
    )


@pytest.fixture
def cli(district: District, orchestrator: Invoke, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """The CLI on the test district (made first, so the sample district is not loaded)."""
    monkeypatch.setenv("ORCHESTRATOR_WINRM_PASSWORD", "not-a-real-one")
    monkeypatch.setattr(image_test_cmds, "_runner", FakePlaybookRunner())
    return orchestrator


def _checker(monkeypatch: pytest.MonkeyPatch, **failing: set[str]) -> FakePersonaChecker:
    checker = FakePersonaChecker(failing=failing)
    monkeypatch.setattr(image_test_cmds, "_checker", checker)
    return checker


def _lab_in_testing(district: District) -> str:
    """Lincoln's lab image in testing, its plan checking the student is no admin."""
    district.base()
    ref = district.custom(to=State.TESTING)
    test_plans.add_check(
        district.ctx,
        district["edtech.grace"],
        ref,
        test_plans.CheckSpec(name="not-admin", kind="not_admin", persona="student"),
    )
    return ref


def _checks_table(out: str) -> list[tuple[str, str, str, str, str]]:
    """(persona, check, result, exit, what was seen) of each row of the checks table;
    a blank persona is the row above's, wrapped lines join their row."""
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if "what was seen" in line)
    starts = [lines[head].index(h) for h in ("persona", "check", "result", "exit", "what was")]
    rows: list[list[str]] = []
    for line in lines[head + 2 :]:
        if not line.strip():
            break
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        if not cells[1]:
            rows[-1][4] += "\n" + cells[4]
            continue
        cells[0] = cells[0] or rows[-1][0]
        rows.append(cells)
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def _tests_of(district: District, ref: str) -> list[ImageTest]:
    """Every image test row of ``ref``."""
    with transaction(district.ctx.engine) as s:
        image = test_plans.resolve_image(s, district["it.ana"], ref)
        return list(s.exec(select(ImageTest).where(ImageTest.releasable_id == image.id)))


def test_a_passing_image_test_shows_every_check_and_exits_0(
    district: District, cli: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = _lab_in_testing(district)
    client = district.test_bench(ref, "edtech.grace")
    checker = _checker(monkeypatch)

    out = cli("--as", "edtech.grace", "image", "test", ref, "--client", client).stdout

    (test,) = image_tests.list_for(district.ctx, district["edtech.grace"], ref)
    assert f"putting {ref} on {client} (apply_image)" in out
    assert "student: signing in as student101" in out
    assert "staff: sign-in: passed" in out
    assert _checks_table(out) == [
        ("student (student101)", "sign-in", "pass", "0", "passed"),
        ("student (student101)", "not-admin", "pass", "0", "passed"),
        ("staff (staff101)", "sign-in", "pass", "0", "passed"),
    ]
    assert f"image test #{test.id} of {ref} on {client}: passed" in out
    assert f"next: 'orchestrator image approve {ref} --step test --reason ...'" in out
    assert [login.persona for _t, login, _c in checker.calls] == ["student", "staff"]


def test_a_failing_check_shows_what_the_persona_saw_and_exits_9(
    district: District, cli: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = _lab_in_testing(district)
    client = district.test_bench(ref, "edtech.grace")
    _checker(monkeypatch, student={"not-admin"})

    out = cli("--as", "edtech.grace", "image", "test", ref, "--client", client, expect=9).stdout

    (test,) = image_tests.list_for(district.ctx, district["edtech.grace"], ref)
    assert "student: not-admin: exited 1, expected 0 ✗" in out
    assert _checks_table(out)[1] == (
        "student (student101)",
        "not-admin",
        "FAIL",
        "1",
        "exited 1, expected 0\nsaw: denied\nran: fake not_admin",
    )
    assert f"image test #{test.id} of {ref} on {client}: failed: student: not-admin failed" in out
    assert "--override student:not-admin --reason" in out


def test_json_prints_the_image_test_and_keeps_its_exit_code(
    district: District, cli: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = _lab_in_testing(district)
    client = district.test_bench(ref, "edtech.grace")
    _checker(monkeypatch, student={"not-admin"})

    result = cli(
        "--as", "edtech.grace", "image", "test", ref, "--client", client, "--json", expect=9
    )

    view = as_json(result)
    assert (view["image"], view["client"], view["status"], view["current"]) == (
        ref,
        client,
        "failed",
        True,
    )
    student = next(p for p in view["personas"] if p["persona"] == "student")
    failed = [c for c in student["checks"] if not c["passed"]]
    assert [(c["name"], c["exit_code"], c["output"]) for c in failed] == [
        ("not-admin", 1, "denied")
    ]


def test_a_btc_is_refused_an_image_test_and_nothing_is_written(
    district: District, cli: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = _lab_in_testing(district)
    client = district.test_bench(ref, "edtech.grace")
    checker = _checker(monkeypatch)

    result = cli("--as", "btc.lincoln", "image", "test", ref, "--client", client, expect=3)

    assert result.stderr.startswith("refused: ")
    assert "BTC" in result.stderr
    assert result.stdout.strip() == "" or "signing in" not in result.stdout
    assert _tests_of(district, ref) == []
    assert checker.calls == []


def test_an_unknown_test_client_is_a_clear_error(
    district: District, cli: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = _lab_in_testing(district)
    district.test_bench(ref, "edtech.grace")
    _checker(monkeypatch)

    result = cli("--as", "edtech.grace", "image", "test", ref, "--client", "no-such-mac", expect=4)

    assert "no client 'no-such-mac' (see 'orchestrator clients list')" in result.stderr
    assert _tests_of(district, ref) == []


def test_test_runs_lists_newest_first_and_says_which_no_longer_count(
    district: District, cli: Invoke
) -> None:
    ref = _lab_in_testing(district)
    first = district.run_image_test(ref, "edtech.grace", failing={"student": {"not-admin"}})
    second = district.run_image_test(ref, "edtech.grace")
    test_plans.add_check(
        district.ctx,
        district["edtech.grace"],
        ref,
        test_plans.CheckSpec(name="home", kind="home_folder", persona="both"),
    )
    third = district.run_image_test(ref, "edtech.grace")

    out = cli("--as", "btc.lincoln", "image", "test-runs", ref).stdout
    listed = as_json(cli("--as", "btc.lincoln", "image", "test-runs", ref, "--json"))

    assert [v["id"] for v in listed] == [third.id, second.id, first.id]
    rows = {
        int(line.split()[0]): line
        for line in out.splitlines()
        if line.split()[:1] in ([str(first.id)], [str(second.id)], [str(third.id)])
    }
    assert "passed" in rows[third.id] and "current" in rows[third.id]
    assert "passed" in rows[second.id] and "plan changed" in rows[second.id]
    assert "failed" in rows[first.id] and "student:not-admin" in rows[first.id]
    assert "edtech.grace" in rows[first.id]


def test_test_run_shows_one_runs_checks_per_persona(district: District, cli: Invoke) -> None:
    ref = _lab_in_testing(district)
    view = district.run_image_test(ref, "edtech.grace", failing={"student": {"not-admin"}})

    out = cli("--as", "edtech.marco", "image", "test-run", str(view.id)).stdout

    assert f"image test #{view.id} of {ref} on {view.client}" in out
    assert "student (student101)" in out and "staff (staff101)" in out
    assert "saw: denied" in out
    assert f"{ref} on {view.client}: failed: student: not-admin failed" in out
    missing = cli("--as", "edtech.marco", "image", "test-run", "999", expect=4)
    assert "no image test 999" in missing.stderr


def test_edtech_signs_off_over_the_failing_checks_by_naming_each(
    district: District, cli: Invoke
) -> None:
    ref = _lab_in_testing(district)
    view = district.run_image_test(ref, "edtech.grace", failing={"student": {"not-admin"}})
    plain = cli("--as", "edtech.grace", "image", "approve", ref, "--step", "test", expect=5)
    assert "checks failed in its latest test runs (student:not-admin)" in plain.stderr

    out = cli(
        "--as", "edtech.grace", "image", "approve", ref, "--step", "test",
        "--override", "student:not-admin",
        "--reason", "the lab's kiosk account is an admin by design this term",
    ).stdout  # fmt: skip

    assert f"approved {ref}: now approved" in out
    status = cli("--as", "btc.lincoln", "image", "status", ref).stdout
    assert f"image test #{view.id} on {view.client}" in status
    assert f"student:not-admin (image test #{view.id})" in status
    assert "the lab's kiosk account is an admin by design this term" in status


def test_override_without_a_reason_is_refused_saying_so(district: District, cli: Invoke) -> None:
    ref = _lab_in_testing(district)
    district.run_image_test(ref, "edtech.grace", failing={"student": {"not-admin"}})

    result = cli(
        "--as", "edtech.grace", "image", "approve", ref, "--step", "test",
        "--override", "not-admin", expect=2,
    )  # fmt: skip

    assert "reason: --override needs --reason" in result.stderr
    assert as_json(cli("--as", "edtech.grace", "image", "show", ref, "--json"))["state"] == (
        "testing"
    )


def test_overriding_a_check_that_did_not_fail_is_a_clear_error(
    district: District, cli: Invoke
) -> None:
    ref = _lab_in_testing(district)
    district.run_image_test(ref, "edtech.grace", failing={"student": {"not-admin"}})

    result = cli(
        "--as", "edtech.grace", "image", "approve", ref, "--step", "test",
        "--override", "student:not-admin", "--override", "staff:sign-in",
        "--reason", "known", expect=2,
    )  # fmt: skip

    assert (
        f"override: 'staff:sign-in' did not fail in the latest test runs of {ref} "
        "(failing: student:not-admin)"
    ) in result.stderr


def test_a_sectec_may_not_sign_off_over_failing_checks(district: District, cli: Invoke) -> None:
    district.base("pc", "high")
    ref = district.custom("301", base="pc-high@2026.1", to=State.TESTING)
    test_plans.add_check(
        district.ctx,
        district["edtech.grace"],
        ref,
        test_plans.CheckSpec(name="not-admin", kind="not_admin", persona="student"),
    )
    district.run_image_test(ref, "sectec.lee", failing={"student": {"not-admin"}})

    result = cli(
        "--as", "sectec.lee", "image", "approve", ref, "--step", "test",
        "--override", "student:not-admin", "--reason", "fine by me", expect=3,
    )  # fmt: skip

    assert "only EdTech may override a failing image test run" in result.stderr
    assert as_json(cli("--as", "sectec.lee", "image", "show", ref, "--json"))["state"] == "testing"


def test_status_tells_image_test_runs_from_tests_recorded_by_hand(
    district: District, cli: Invoke
) -> None:
    ref = _lab_in_testing(district)
    view = district.run_image_test(ref, "edtech.grace")
    cli(
        "--as", "edtech.grace", "image", "record-test", ref, "--persona", "staff",
        "--check", "printer=pass", "--evidence", "printed a page",
    )  # fmt: skip

    out = cli("--as", "edtech.grace", "image", "status", ref).stdout

    assert f"image test #{view.id} on {view.client}" in out
    assert "recorded by hand (a note: does not count for images)" in out
    assert "no (not an image test run)" in out


def test_a_base_image_is_tested_under_base_too(
    district: District, cli: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = district.base(version="2026.2", to=State.TESTING)
    client = district.test_bench(ref, "edtech.grace")
    _checker(monkeypatch)

    out = cli("--as", "edtech.grace", "base", "test", ref, "--client", client).stdout

    assert f"of {ref} on {client}: passed" in out
    assert f"next: 'orchestrator base approve {ref} --step test" in out
    listed = as_json(cli("--as", "edtech.grace", "base", "test-runs", ref, "--json"))
    assert [(v["image"], v["status"]) for v in listed] == [(ref, "passed")]
    assert image_tests.list_for(district.ctx, district["edtech.grace"], ref)[0].current
