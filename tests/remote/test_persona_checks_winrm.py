"""A test plan's checks run as the student and the staff test account on a PC
over WinRM: real pywinrm (NTLM as each persona, messages encrypted) against
the WS-Management protocol responder on loopback. Verified against a WinRM
protocol responder, not Windows: the responder answers each PowerShell script
from its per-user table, so these tests prove what reaches the PC, as whom,
and how the answers become outcomes, not what PowerShell would print."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping

import pytest

from orchestrator.errors import HostUnreachable
from orchestrator.remote.persona_checks import (
    Check,
    CheckOutcome,
    Login,
    PersonaResult,
    RemotePersonaChecker,
    SignInFailed,
    Target,
    command_for,
    run_check,
    sign_in_pc,
)
from orchestrator.remote.winrm import WinRMClient, WinRMEndpoint
from tests.support.winrm_responder import (
    HANGS,
    NET_SESSION_ADMIN,
    NET_SESSION_REFUSED,
    Answer,
    WinRMResponder,
    free_port,
)

STUDENT = Login("student", "stu101", "Stud3nt-Lab!")
STAFF = Login("staff", "staff101", "St4ff-Lab!")
HOSTNAME = "PC-LAB-01"
SCRATCH = r"C:\Program Files\Scratch 3\Scratch 3.exe"

EVERYDAY = [
    Check("signs-in", "sign_in"),
    Check("home", "home_folder"),
    Check("scratch", "app_present", {"path": SCRATCH, "start": f"& '{SCRATCH}' --version"}),
    Check("printer", "reachable", {"host": "127.0.0.1", "port": 9100}),
    Check(
        "echo",
        "command",
        {"command": 'Write-Output "hello $env:USERNAME"', "expect_output": "hello"},
    ),
]
NOT_ADMIN = Check("not-admin", "not_admin")


def _script(check: Check, login: Login) -> str:
    return command_for(check, login.username, "pc")[0]


def _everyday_answers(login: Login) -> dict[str, Answer]:
    """What a PC built right shows ``login`` for each everyday check."""
    u = login.username
    shown = [
        Answer(f"{HOSTNAME.lower()}\\{u}\r\n"),
        Answer(f"C:\\Users\\{u}\r\n"),
        Answer("3.30.0\r\n"),
        Answer(),
        Answer(f"hello {u}\r\n"),
    ]
    return {_script(c, login): a for c, a in zip(EVERYDAY, shown, strict=True)}


def _table(login: Login, *extra: tuple[Check, Answer]) -> dict[str, Answer]:
    return _everyday_answers(login) | {_script(c, login): a for c, a in extra}


@pytest.fixture
def lab_pc() -> Iterator[WinRMResponder]:
    """A PC with both personas' accounts; student and staff see different things."""
    with WinRMResponder(
        {STUDENT.username: STUDENT.password, STAFF.username: STAFF.password},
        hostname=HOSTNAME,
        user_commands={
            STUDENT.username: _table(STUDENT, (NOT_ADMIN, NET_SESSION_REFUSED))
            | {"net session": NET_SESSION_REFUSED},
            STAFF.username: _table(STAFF, (NOT_ADMIN, NET_SESSION_ADMIN))
            | {"net session": NET_SESSION_ADMIN},
        },
    ) as responder:
        yield responder


def _target(r: WinRMResponder, port: int | None = None) -> Target:
    return Target(HOSTNAME, "pc", "127.0.0.1", r.port if port is None else port)


def _run(r: WinRMResponder, login: Login, checks: Iterable[Check]) -> PersonaResult:
    seen: list[CheckOutcome] = []
    result = RemotePersonaChecker(connect_timeout=10).run(
        _target(r), login, list(checks), seen.append
    )
    assert list(result.outcomes) == seen, "every outcome was reported as it came"
    return result


def _scripts_run_by(r: WinRMResponder) -> Mapping[str | None, list[str | None]]:
    by_user: dict[str | None, list[str | None]] = {}
    for rec in r.requests:
        if rec.action == "Command":
            by_user.setdefault(rec.user, []).append(rec.script or rec.command_line)
    return by_user


@pytest.mark.parametrize("login", [STUDENT, STAFF], ids=lambda login: login.persona)
def test_the_everyday_checks_pass_for_both_personas_each_signed_in_as_itself(
    lab_pc: WinRMResponder, login: Login
) -> None:
    result = _run(lab_pc, login, EVERYDAY)

    assert (result.signed_in, result.message) == (True, "")
    assert [(o.name, o.persona, o.passed, o.message) for o in result.outcomes] == [
        (c.name, login.persona, True, "passed") for c in EVERYDAY
    ]
    assert f"\\{login.username}" in result.outcomes[0].output
    # Every connection was NTLM-authenticated as the persona itself...
    assert set(lab_pc.authenticated_users) == {login.username}
    # ...the sign-in probe, then each check's script, decoded from -EncodedCommand...
    assert _scripts_run_by(lab_pc) == {
        login.username: ["hostname", *(_script(c, login) for c in EVERYDAY)]
    }
    assert all(
        rec.command_line.startswith("powershell.exe -NoProfile -NonInteractive -EncodedCommand ")
        for rec in lab_pc.requests
        if rec.action == "Command" and rec.script is not None and rec.command_line
    )
    # ...and not one body came in the clear.
    assert lab_pc.plaintext_bodies == []


def test_net_session_refused_to_the_student_passes_not_admin_and_staff_fails_it_showing_exit_0(
    lab_pc: WinRMResponder,
) -> None:
    student = _run(lab_pc, STUDENT, [NOT_ADMIN]).outcomes[0]
    staff = _run(lab_pc, STAFF, [NOT_ADMIN]).outcomes[0]

    assert (student.passed, student.exit_code, student.message) == (True, 2, "passed")
    assert "System error 5 has occurred." in student.output
    assert "Access is denied." in student.output
    # Staff may administer the PC: the check fails, showing what staff saw.
    assert (staff.passed, staff.exit_code) == (False, 0)
    assert staff.message == "exited 0: it ran, expected it to be refused"
    assert "There are no entries in the list." in staff.output
    assert "net session" in staff.command
    assert set(lab_pc.authenticated_users) == {STUDENT.username, STAFF.username}
    assert lab_pc.plaintext_bodies == []


def test_the_responder_answers_net_session_per_user_as_windows_does(
    lab_pc: WinRMResponder,
) -> None:
    endpoint = WinRMEndpoint("127.0.0.1", lab_pc.port)
    student = WinRMClient(endpoint, STUDENT.username, STUDENT.password).run("net", ["session"])
    staff = WinRMClient(endpoint, STAFF.username, STAFF.password).run("net", ["session"])

    assert (student.exit_code, student.stdout) == (2, "")
    assert student.stderr == "System error 5 has occurred.\r\n\r\nAccess is denied.\r\n\r\n"
    assert (staff.exit_code, staff.stdout) == (0, "There are no entries in the list.\r\n\r\n")


def test_a_failing_check_shows_what_the_persona_saw(lab_pc: WinRMResponder) -> None:
    share = Check(
        "share",
        "command",
        {"command": r"Get-ChildItem -LiteralPath 'S:\Reports'", "expect_output": "report.docx"},
    )
    printer = Check("printer-2", "reachable", {"host": "127.0.0.1", "port": 9101})
    lab_pc.add_answers(
        STUDENT.username,
        {
            _script(share, STUDENT): Answer(
                stderr="Get-ChildItem : Cannot find path 'S:\\Reports' because it does not "
                "exist.\r\n",
                exit_code=1,
            ),
            _script(printer, STUDENT): Answer(
                "No connection could be made because the target machine actively refused it "
                "127.0.0.1:9101\r\n",
                exit_code=1,
            ),
        },
    )

    seen, down = _run(lab_pc, STUDENT, [share, printer]).outcomes

    assert (seen.passed, seen.exit_code, seen.message) == (False, 1, "exited 1, expected 0")
    assert "Cannot find path 'S:\\Reports'" in seen.output
    assert seen.command == _script(share, STUDENT)
    assert (down.passed, down.exit_code) == (False, 1)
    assert "actively refused" in down.output


def test_a_hanging_check_fails_at_its_timeout_and_the_next_one_still_runs() -> None:
    hung_check = Check("hangs", "command", {"command": "Start-Sleep -Seconds 600"}, timeout=1)
    with WinRMResponder(
        {STAFF.username: STAFF.password},
        hostname=HOSTNAME,
        user_commands={STAFF.username: _table(STAFF, (hung_check, HANGS))},
    ) as r:
        endpoint = WinRMEndpoint("127.0.0.1", r.port)
        with sign_in_pc(endpoint, STAFF, timeout=10) as session:
            hung = run_check(session, hung_check, STAFF, platform="pc")
            after = run_check(session, Check("after", "sign_in"), STAFF, platform="pc")

    assert (hung.passed, hung.exit_code) == (False, None)
    assert hung.message == "no answer within 1s: stopped"
    assert after.passed is True
    hung_line = next(
        rec.command_line for rec in r.requests if rec.script == _script(hung_check, STAFF)
    )
    assert r.count("Signal", hung_line) == 1, "the hung command was stopped on the PC"
    assert r.shells == {}, "its shell was closed"


def test_a_wrong_persona_password_is_a_failed_sign_in_not_a_crash(
    lab_pc: WinRMResponder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = Login("student", STUDENT.username, "Wr0ng-Lab!")

    with pytest.raises(
        SignInFailed, match="sign-in failed for student test account stu101"
    ) as info:
        sign_in_pc(WinRMEndpoint("127.0.0.1", lab_pc.port), wrong, timeout=10)
    result = _run(lab_pc, wrong, [*EVERYDAY, NOT_ADMIN])

    assert result.signed_in is False
    assert result.message.startswith("sign-in failed for student test account stu101")
    assert [o.passed for o in result.outcomes] == [False] * (len(EVERYDAY) + 1)
    assert result.outcomes[1].message.startswith("not run: sign-in failed for student")
    assert lab_pc.requests == [] and lab_pc.authenticated_users == [], "nothing ran"
    assert lab_pc.auth_failures >= 2
    shown = " ".join([str(info.value), repr(info.value), repr(wrong), repr(result), caplog.text])
    assert "Wr0ng-Lab!" not in shown


def test_a_session_never_shows_the_persona_password(lab_pc: WinRMResponder) -> None:
    session = sign_in_pc(WinRMEndpoint("127.0.0.1", lab_pc.port), STUDENT, timeout=10)
    assert STUDENT.password not in repr(session)
    assert "********" in repr(session)


def test_an_unreachable_pc_is_a_failed_sign_in_saying_so(lab_pc: WinRMResponder) -> None:
    closed = free_port()

    with pytest.raises(HostUnreachable):
        sign_in_pc(WinRMEndpoint("127.0.0.1", closed), STUDENT, timeout=5)
    result = RemotePersonaChecker(connect_timeout=5).run(
        _target(lab_pc, port=closed), STUDENT, EVERYDAY
    )

    assert result.signed_in is False
    assert result.message.startswith(f"could not sign in to {HOSTNAME} as student: ")
    assert "cannot connect" in result.message
    assert [o.passed for o in result.outcomes] == [False] * len(EVERYDAY)
    assert lab_pc.requests == []
