"""An image test of a PC image: the student and the staff test account sign in over
WinRM with their own NTLM credentials and run the plan's checks, through the real
service and the real persona checker (pywinrm, messages encrypted).

Verified against a WinRM protocol responder, not Windows: the responder answers each
persona's PowerShell scripts from its per-user table. Putting the image on the PC
(apply_image's WIM and DISM steps) cannot run against it, since nothing behind it
runs Ansible's modules, so that step goes through our fake runner here; the Mac
tests (test_image_test_sshd.py) run it for real."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlmodel import select

from orchestrator.db.models import Client
from orchestrator.db.session import transaction
from orchestrator.domain.states import Kind, State, Step
from orchestrator.remote.ansible import FakePlaybookRunner
from orchestrator.remote.persona_checks import Check, command_for
from orchestrator.services import chain, image_tests, runs, test_plans, testing
from tests.factories import District
from tests.support.winrm_responder import (
    NET_SESSION_ADMIN,
    NET_SESSION_REFUSED,
    Answer,
    WinRMResponder,
)

HOSTNAME = "PC-BENCH-01"
USERS = {"student": ("stu101", "Stud3nt-Bench!"), "staff": ("staff101", "St4ff-Bench!")}
SIGN_IN = Check("sign-in", "sign_in", {}, 30.0)
HOME = Check("home", "home_folder", {}, 30.0)
NOT_ADMIN = Check("not-admin", "not_admin", {"command": "net session"}, 30.0)


def _answers(persona: str, *, admin: bool) -> dict[str, Answer]:
    user = USERS[persona][0]

    def script(check: Check) -> str:
        return command_for(check, user, "pc")[0]

    return {
        script(SIGN_IN): Answer(f"{HOSTNAME.lower()}\\{user}\r\n"),
        script(HOME): Answer(f"C:\\Users\\{user}\r\n"),
        script(NOT_ADMIN): NET_SESSION_ADMIN if admin else NET_SESSION_REFUSED,
    }


def _responder(*, student_is_admin: bool) -> WinRMResponder:
    return WinRMResponder(
        {user: password for user, password in USERS.values()},
        hostname=HOSTNAME,
        user_commands={
            USERS["student"][0]: _answers("student", admin=student_is_admin),
            USERS["staff"][0]: _answers("staff", admin=True),
        },
    )


@pytest.fixture
def bench(district: District) -> Iterator[tuple[District, str, str]]:
    district.base()
    ref = district.custom(to=State.TESTING)
    for spec in (
        test_plans.CheckSpec(name="home", kind="home_folder", persona="both"),
        test_plans.CheckSpec(name="not-admin", kind="not_admin", persona="student"),
    ):
        test_plans.add_check(district.ctx, district["btc.lincoln"], ref, spec)
    client = district.test_client("pc", "102")
    for persona, (user, password) in USERS.items():
        testing.set_test_account(
            district.ctx,
            district["it.ana"],
            building="101",
            persona=persona,
            username=user,
            password=password,
        )
    yield district, ref, client


def _point_at(d: District, client: str, responder: WinRMResponder) -> None:
    with transaction(d.ctx.engine) as s:
        c = s.exec(select(Client).where(Client.hostname == client)).one()
        c.address, c.port, c.host_vars = (
            "127.0.0.1",
            responder.port,
            {"ansible_winrm_scheme": "http"},
        )
        s.add(c)


def _test(d: District, ref: str, client: str) -> image_tests.ImageTestView:
    return image_tests.run_image_test(
        d.ctx,
        d["edtech.grace"],
        ref,
        client=client,
        credentials=runs.Credentials(),
        runner=FakePlaybookRunner(),
    )


def test_a_pc_image_test_signs_each_persona_in_over_winrm_as_itself_and_passes(
    bench: tuple[District, str, str],
) -> None:
    d, ref, client = bench
    with _responder(student_is_admin=False) as pc:
        _point_at(d, client, pc)
        view = _test(d, ref, client)

        assert view.status == "passed", view
        assert {
            (p.persona.value, p.account, tuple(c.name for c in p.checks)) for p in view.personas
        } == {
            ("student", "stu101", ("sign-in", "home", "not-admin")),
            ("staff", "staff101", ("sign-in", "home")),
        }
        assert {"stu101", "staff101"} <= set(pc.authenticated_users)
        assert pc.plaintext_bodies == []
    assert chain.approve(
        d.ctx, d["edtech.grace"], Kind.CUSTOM_IMAGE, ref, step=Step.TEST
    ).state is (State.APPROVED)


def test_a_student_who_may_use_admin_tools_on_the_pc_fails_the_test_showing_what_it_saw(
    bench: tuple[District, str, str],
) -> None:
    d, ref, client = bench
    with _responder(student_is_admin=True) as pc:
        _point_at(d, client, pc)
        view = _test(d, ref, client)

    assert view.status == "failed" and view.failing == [("student", "not-admin")]
    [seen] = [c for p in view.personas for c in p.checks if not c.passed]
    assert seen.exit_code == 0 and "it ran, expected it to be refused" in seen.message


def test_a_wrong_student_password_on_the_pc_fails_the_test_at_sign_in(
    bench: tuple[District, str, str],
) -> None:
    d, ref, client = bench
    testing.set_test_account(
        d.ctx, d["it.ana"], building="101", persona="student", username="stu101", password="wrong!"
    )
    with _responder(student_is_admin=False) as pc:
        _point_at(d, client, pc)
        view = _test(d, ref, client)

    assert view.status == "failed"
    assert view.reason == "sign-in failed for student test account stu101"
