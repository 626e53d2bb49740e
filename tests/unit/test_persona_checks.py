"""The commands a test plan's checks become, and malformed checks refused
before anything reaches a client."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.errors import InvalidInput, RemoteError, RemoteTimeout
from orchestrator.remote.persona_checks import KINDS, Check, Login, command_for, run_check
from orchestrator.remote.ssh import CommandResult

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
        ("format_disk", {}, "kind"),
    ],
)
def test_a_malformed_check_is_refused_naming_the_check_and_its_field(
    kind: str, params: dict[str, Any], field: str
) -> None:
    session = _Session(CommandResult(0, "", ""))
    with pytest.raises(InvalidInput) as info:
        run_check(session, Check("lab-check", kind, params), LOGIN)
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
