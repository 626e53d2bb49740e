"""A test plan's checks run as the student and the staff test account on a real
sshd host (a Linux stand-in for a Mac, with real local accounts): what passes,
what a student is really refused, and what a failing check shows."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from orchestrator.remote.persona_checks import (
    Check,
    CheckOutcome,
    Login,
    SignInFailed,
    run_check,
    sign_in,
)
from tests.support.sshd import ADMIN_TOOL, CLASSROOM_APP, SSHHost, add_personas, start_hosts


@pytest.fixture(scope="module")
def lab_mac() -> Iterator[tuple[SSHHost, dict[str, Login]]]:
    with start_hosts(1) as hosts:
        personas = add_personas(hosts[0])
        yield (
            hosts[0],
            {p.persona: Login(p.persona, p.username, p.password) for p in personas.values()},
        )


def _run(host: SSHHost, login: Login, check: Check) -> CheckOutcome:
    with sign_in(host.address, host.port, host_key=host.host_key, login=login) as session:
        return run_check(session, check, login)


@pytest.fixture(scope="module")
def printer() -> Iterator[int]:
    """A port that answers, as a building's printer would."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("who", ["student", "staff"])
def test_the_everyday_checks_pass_for_both_personas(
    lab_mac: tuple[SSHHost, dict[str, Login]], printer: int, who: str
) -> None:
    host, logins = lab_mac
    checks = [
        Check("signs-in", "sign_in"),
        Check("home", "home_folder"),
        Check(
            "scratch",
            "app_present",
            {"path": str(host.root / CLASSROOM_APP), "start": f"'{host.root / CLASSROOM_APP}'"},
        ),
        Check("printer", "reachable", {"host": "127.0.0.1", "port": printer}),
        Check("echo", "command", {"command": "echo hello $(id -un)", "expect_output": "hello"}),
    ]

    outcomes = [_run(host, logins[who], c) for c in checks]

    assert [(o.name, o.persona, o.passed) for o in outcomes] == [
        (c.name, who, True) for c in checks
    ]
    assert logins[who].username in outcomes[0].output


def test_admin_tools_are_refused_to_the_student_for_real_and_not_to_staff(
    lab_mac: tuple[SSHHost, dict[str, Login]],
) -> None:
    host, logins = lab_mac
    absent = Check("no-admin-tool", "app_absent", {"path": str(host.root / ADMIN_TOOL)})
    run_it = Check("admin-tool-runs", "command", {"command": f"'{host.root / ADMIN_TOOL}'"})

    student = [_run(host, logins["student"], c) for c in (absent, run_it, Check("na", "not_admin"))]
    staff = _run(host, logins["staff"], absent)

    assert [o.passed for o in student] == [True, False, True]
    assert "Permission denied" in student[1].output and student[1].exit_code != 0
    assert student[1].message.startswith("exited ")
    # For staff the admin tool is there: "absent" fails, showing what staff saw.
    assert staff.passed is False and staff.exit_code == 1


def test_a_failing_check_shows_what_the_persona_saw(
    lab_mac: tuple[SSHHost, dict[str, Login]],
) -> None:
    host, logins = lab_mac
    check = Check(
        "share",
        "command",
        {"command": "ls /no/such/share", "expect_output": "report.docx"},
    )
    unreachable = Check("printer", "reachable", {"host": "127.0.0.1", "port": _closed_port()})

    seen = _run(host, logins["student"], check)
    down = _run(host, logins["student"], unreachable)

    assert seen.passed is False and seen.exit_code not in (None, 0)
    assert "No such file or directory" in seen.output
    assert seen.message == f"exited {seen.exit_code}, expected 0"
    assert down.passed is False and down.exit_code != 0


def test_a_hanging_check_fails_at_its_timeout_and_the_next_one_still_runs(
    lab_mac: tuple[SSHHost, dict[str, Login]],
) -> None:
    host, logins = lab_mac
    login = logins["staff"]
    with sign_in(host.address, host.port, host_key=host.host_key, login=login) as session:
        hung = run_check(session, Check("hangs", "command", {"command": "sleep 30"}, 1), login)
        after = run_check(session, Check("after", "sign_in"), login)

    assert (hung.passed, hung.exit_code) == (False, None)
    assert hung.message == "no answer within 1s: stopped"
    assert after.passed is True


def test_a_wrong_persona_password_is_a_failed_sign_in_not_a_crash(
    lab_mac: tuple[SSHHost, dict[str, Login]],
) -> None:
    host, logins = lab_mac
    wrong = Login("student", logins["student"].username, "wrong-password")

    with pytest.raises(SignInFailed, match="sign-in failed for student test account") as info:
        sign_in(host.address, host.port, host_key=host.host_key, login=wrong)
    assert "wrong-password" not in str(info.value) and "wrong-password" not in repr(wrong)
