"""The commands a test plan's checks become, and malformed checks refused
before anything reaches a client."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from orchestrator.errors import InvalidInput, RemoteError, RemoteTimeout
from orchestrator.remote.persona_checks import (
    KINDS,
    Check,
    Login,
    RemotePersonaChecker,
    Target,
    command_for,
    run_check,
)
from orchestrator.remote.ssh import CommandResult
from orchestrator.remote.winrm import clixml_text, powershell_command

LOGIN = Login("student", "stu101", "s3cret")


class _Session:
    def __init__(self, result: CommandResult | Exception) -> None:
        self.result = result
        self.commands: list[str] = []

    def run(self, command: str, *, timeout: float) -> CommandResult:
        self.commands.append(command)
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


@pytest.mark.parametrize("platform", ["mac", "pc"])
@pytest.mark.parametrize(
    ("kind", "params", "field"),
    [
        ("app_present", {}, "path"),
        ("app_absent", {"path": "  "}, "path"),
        ("reachable", {"host": "printer", "port": 0}, "port"),
        ("reachable", {"host": "printer", "port": "631"}, "port"),
        ("reachable", {"port": 631}, "host"),
        ("command", {"command": "true", "expect_exit": True}, "expect_exit"),
        ("command", {"command": "true", "expect_exit": 256}, "expect_exit"),
        ("command", {"command": "true", "expect_output": 3}, "expect_output"),
        ("app_present", {"path": "/Applications/X.app", "start": ""}, "start"),
        ("not_admin", {"command": " "}, "command"),
        ("format_disk", {}, "kind"),
    ],
)
def test_a_malformed_check_is_refused_naming_the_check_and_its_field(
    kind: str, params: dict[str, Any], field: str, platform: str
) -> None:
    session = _Session(CommandResult(0, "", ""))
    with pytest.raises(InvalidInput) as info:
        run_check(session, Check("lab-check", kind, params), LOGIN, platform=platform)
    assert info.value.field == f"lab-check.{field}"
    assert "lab-check" in str(info.value)
    assert session.commands == []  # nothing reached the client


def test_every_kind_has_a_command() -> None:
    params = {"path": "/Applications/Scratch.app", "host": "printer", "port": 631}
    for kind in KINDS:
        command, _, _ = command_for(Check("c", kind, params | {"command": "true"}), "stu101")
        assert command.strip()


def test_paths_and_hosts_are_quoted_for_the_shell() -> None:
    absent, _, _ = command_for(Check("c", "app_absent", {"path": "/Apps/A b;rm -rf ~"}), "u")
    reach, _, _ = command_for(Check("c", "reachable", {"host": "p$(reboot)", "port": 631}), "u")
    assert absent == "! test -x '/Apps/A b;rm -rf ~'"
    assert "$(reboot)" in reach and reach.startswith("/bin/bash -c '")
    assert "'\"'\"'" in reach  # the inner quotes survive the outer ones


def test_a_check_reads_its_expectations_exit_status_and_output() -> None:
    check = Check("c", "command", {"command": "lpstat", "expect_exit": 0, "expect_output": "hp"})

    passed = run_check(_Session(CommandResult(0, "hp-room-12 idle\n", "")), check, LOGIN)
    wrong_words = run_check(_Session(CommandResult(0, "no printers\n", "")), check, LOGIN)
    wrong_exit = run_check(_Session(CommandResult(1, "", "lpstat: denied\n")), check, LOGIN)

    assert (passed.passed, passed.message) == (True, "passed")
    assert (wrong_words.passed, wrong_words.message) == (
        False,
        "the output does not contain 'hp'",
    )
    assert (wrong_exit.passed, wrong_exit.output, wrong_exit.message) == (
        False,
        "lpstat: denied\n",
        "exited 1, expected 0",
    )


def test_a_timeout_or_a_lost_connection_is_a_failed_outcome_with_why() -> None:
    check = Check("c", "sign_in", timeout=5)
    hung = run_check(_Session(RemoteTimeout("sleep was still running")), check, LOGIN)
    lost = run_check(_Session(RemoteError("connection lost", host="h")), check, LOGIN)
    assert (hung.passed, hung.exit_code, hung.message) == (
        False,
        None,
        "no answer within 5s: stopped",
    )
    assert (lost.passed, lost.message) == (False, "the connection failed: h: connection lost")


def test_a_login_never_shows_its_password() -> None:
    assert "s3cret" not in repr(LOGIN)


def test_not_admin_tries_sudo_or_the_admin_command_the_plan_names() -> None:
    default, _, _ = command_for(Check("c", "not_admin"), "u")
    named, _, _ = command_for(
        Check("c", "not_admin", {"command": "dseditgroup -o checkmember admin"}), "u"
    )
    assert (default, named) == ("! sudo -n true", "! dseditgroup -o checkmember admin")


# -- PCs: PowerShell scripts -------------------------------------------------

PC_PARAMS = {"path": r"C:\Program Files\Scratch 3\Scratch 3.exe", "host": "printer", "port": 9100}


def _pc(kind: str, params: dict[str, Any] | None = None, **kw: Any) -> tuple[str, int, str | None]:
    return command_for(Check("c", kind, params or {}, **kw), "stu101", platform="pc")


def test_every_kind_has_a_powershell_script_sent_as_an_encoded_command() -> None:
    for kind in KINDS:
        script, _, _ = _pc(kind, PC_PARAMS | {"command": "Get-Date"})
        program, args = powershell_command(script)
        assert (program, args[:3]) == (
            "powershell.exe",
            ["-NoProfile", "-NonInteractive", "-EncodedCommand"],
        )
        assert base64.b64decode(args[3]).decode("utf-16-le") == script
        assert script.startswith("$ProgressPreference = 'SilentlyContinue'\n")


def test_pc_paths_are_single_quoted_with_quotes_doubled() -> None:
    path = "C:\\Program Files\\O'Brien\u2019s Lab\\$(Restart-Computer).exe"
    present, _, _ = _pc("app_present", {"path": path})
    absent, _, _ = _pc("app_absent", {"path": path})
    quoted = "'C:\\Program Files\\O''Brien\u2019\u2019s Lab\\$(Restart-Computer).exe'"
    assert f"Test-Path -LiteralPath {quoted}" in present
    assert f"Test-Path -LiteralPath {quoted}" in absent
    # The path appears nowhere outside its quotes.
    assert "Restart-Computer" not in present.replace(quoted, "")


def test_pc_hosts_are_single_quoted_and_the_connect_has_its_own_timeout() -> None:
    host = "x'; Restart-Computer; '"
    script, want_exit, _ = _pc("reachable", {"host": host, "port": 631}, timeout=4)
    assert "$client.ConnectAsync('x''; Restart-Computer; ''', 631)" in script
    assert "System.Net.Sockets.TcpClient" in script
    assert ".Wait(2000)" in script, "half the check's timeout, so it answers before being stopped"
    assert want_exit == 0


@pytest.mark.parametrize("port", [0, 65536, "9100", True, None])
def test_a_bad_port_is_refused_on_a_pc_before_anything_is_sent(port: object) -> None:
    with pytest.raises(InvalidInput) as info:
        _pc("reachable", {"host": "printer", "port": port})
    assert info.value.field == "c.port"


def test_sign_in_on_a_pc_compares_whoami_with_the_account_name_case_and_domain_aside() -> None:
    script, want_exit, want_output = command_for(
        Check("c", "sign_in"), "DISTRICT\\Stu101", platform="pc"
    )
    assert "$(whoami)" in script
    assert "$me.Split('\\')[-1] -ieq 'Stu101'" in script
    assert (want_exit, want_output) == (0, None)


def test_home_folder_on_a_pc_tests_the_user_profile() -> None:
    script, _, _ = _pc("home_folder")
    assert "$env:USERPROFILE" in script
    assert "Test-Path -LiteralPath $profileDir -PathType Container" in script


def test_a_pc_command_exits_with_its_own_status_for_the_plan_to_expect() -> None:
    script, want_exit, want_output = _pc(
        "command", {"command": "msiexec /i x.msi /qn", "expect_exit": 3, "expect_output": "ok"}
    )
    started, _, _ = _pc("app_present", PC_PARAMS | {"start": "& 'C:\\x.exe' --version"})
    assert "\nmsiexec /i x.msi /qn\n" in script and script.endswith("exit $code\n")
    assert (want_exit, want_output) == (3, "ok")
    assert "\n& 'C:\\x.exe' --version\n" in started


def test_not_admin_on_a_pc_passes_only_when_net_session_is_refused() -> None:
    check = Check("na", "not_admin")
    refused = CommandResult(2, "", "System error 5 has occurred.\r\n\r\nAccess is denied.\r\n")
    allowed = CommandResult(0, "There are no entries in the list.\r\n", "")
    student = run_check(_Session(refused), check, LOGIN, platform="pc")
    staff = run_check(_Session(allowed), check, LOGIN, platform="pc")
    named, _, _ = _pc("not_admin", {"command": "Get-LocalGroupMember Administrators"})

    assert "\nnet session\n" in student.command
    assert (student.passed, student.exit_code, student.message) == (True, 2, "passed")
    assert "Access is denied." in student.output
    assert (staff.passed, staff.exit_code) == (False, 0)
    assert staff.message == "exited 0: it ran, expected it to be refused"
    assert "\nGet-LocalGroupMember Administrators\n" in named


def test_a_script_too_long_for_a_command_line_is_refused() -> None:
    with pytest.raises(InvalidInput) as info:
        _pc("command", {"command": "Write-Output " + "x" * 4000})
    assert info.value.field == "c.command"


def test_an_unknown_platform_is_refused_before_signing_in() -> None:
    with pytest.raises(InvalidInput) as info:
        command_for(Check("c", "sign_in"), "u", platform="chromebook")
    assert info.value.field == "platform"
    with pytest.raises(InvalidInput):
        # No client at this address: refused before any connection is tried.
        RemotePersonaChecker().run(
            Target("cb-01", "chromebook", "192.0.2.1", 22), LOGIN, [Check("c", "sign_in")]
        )


def test_powershell_clixml_errors_are_shown_as_their_text() -> None:
    clixml = (
        "#< CLIXML\r\n"
        '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        '<Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject'
        "</T></TN></Obj>"
        '<S S="Error">Get-Item : Cannot find path_x000D__x000A_</S>'
        '<S S="Error">    + CategoryInfo : ObjectNotFound_x000D__x000A_</S></Objs>'
    )
    assert clixml_text(clixml) == (
        "Get-Item : Cannot find path\r\n    + CategoryInfo : ObjectNotFound\r\n"
    )
    assert clixml_text("plain error\r\n") == "plain error\r\n"
