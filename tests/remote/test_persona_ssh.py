"""Test accounts sign in to a real sshd host as themselves, with their own
passwords, and what a student may not do really fails for the student.

The hosts are Linux sshd processes standing in for Macs (tests/support/sshd.py):
the persona accounts are real local users, the admin tool a file only the staff
account's group may run.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrator.remote import ssh
from orchestrator.remote.ssh import AuthenticationFailed, RemoteTimeout
from tests.support.sshd import (
    ADMIN_TOOL,
    CLASSROOM_APP,
    Persona,
    SSHHost,
    add_personas,
    start_hosts,
)


@pytest.fixture(scope="module")
def lab_mac() -> Iterator[tuple[SSHHost, dict[str, Persona]]]:
    with start_hosts(1) as hosts:
        yield hosts[0], add_personas(hosts[0])


def _session(host: SSHHost, persona: Persona, password: str | None = None) -> ssh.PinnedSession:
    return ssh.connect(
        host.address,
        host.port,
        host_key=host.host_key,
        username=persona.username,
        password=persona.password if password is None else password,
    )


@pytest.mark.parametrize("who", ["student", "staff"])
def test_each_persona_signs_in_with_its_own_password_and_has_its_home_folder(
    lab_mac: tuple[SSHHost, dict[str, Persona]], who: str
) -> None:
    host, personas = lab_mac
    with _session(host, personas[who]) as session:
        whoami = session.run("id -un", timeout=10)
        home = session.run('test -d "$HOME" && test -O "$HOME"', timeout=10)
        app = session.run(f"'{host.root / CLASSROOM_APP}'", timeout=10)

    assert whoami.stdout.strip() == personas[who].username
    assert home.exit_code == 0
    assert (app.exit_code, app.stdout.strip()) == (0, "scratch started")


def test_a_wrong_password_is_refused_as_a_failed_sign_in(
    lab_mac: tuple[SSHHost, dict[str, Persona]],
) -> None:
    host, personas = lab_mac
    with pytest.raises(AuthenticationFailed):
        _session(host, personas["student"], password="not-the-password")
    # Another persona's password is no better.
    with pytest.raises(AuthenticationFailed):
        _session(host, personas["student"], password=personas["staff"].password)


def test_the_admin_tool_runs_for_staff_and_really_fails_for_a_student(
    lab_mac: tuple[SSHHost, dict[str, Persona]],
) -> None:
    host, personas = lab_mac
    tool = f"'{host.root / ADMIN_TOOL}'"
    with _session(host, personas["staff"]) as staff:
        allowed = staff.run(tool, timeout=10)
    with _session(host, personas["student"]) as student:
        denied = student.run(tool, timeout=10)
        no_sudo = student.run("sudo -n true", timeout=10)

    assert (allowed.exit_code, allowed.stdout.strip()) == (0, "admin tool started")
    assert denied.exit_code != 0 and "Permission denied" in denied.stderr
    assert no_sudo.exit_code != 0


def test_a_check_that_hangs_is_stopped_at_its_timeout(
    lab_mac: tuple[SSHHost, dict[str, Persona]],
) -> None:
    host, personas = lab_mac
    with _session(host, personas["student"]) as session, pytest.raises(RemoteTimeout):
        session.run("sleep 30", timeout=1)
