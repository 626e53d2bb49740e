"""Ansible's winrm connection (through the orchestrator's ansible-runner
driver) against the WS-Management protocol responder: NTLM, message
encryption, ``raw`` commands. Verified against a WinRM protocol responder,
not Windows: PowerShell modules (win_ping, win_package) cannot run here."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.remote.ansible import (
    AnsibleRunner,
    HostEvent,
    HostTarget,
    PlaybookRequest,
    playbook_path,
)
from tests.support.fixtures import ssh_hosts  # noqa: F401  (fixture)
from tests.support.sshd import SSHHost
from tests.support.winrm_fixtures import (  # noqa: F401  (fixtures)
    WINRM_PASSWORD,
    WINRM_USER,
    make_winrm_responder,
    winrm_responder,
)
from tests.support.winrm_responder import WinRMResponder

Make = Callable[..., WinRMResponder]


def _pc(name: str, r: WinRMResponder) -> HostTarget:
    return HostTarget(name, "127.0.0.1", r.port, "winrm", WINRM_USER)


def test_ansible_raw_over_winrm_logs_in_with_ntlm_and_encrypts_every_message(
    winrm_responder: WinRMResponder,  # noqa: F811
) -> None:
    events: list[HostEvent] = []
    outcome = AnsibleRunner().run(
        PlaybookRequest(
            playbook_path("winrm_probe"),
            [_pc("pc-01", winrm_responder)],
            winrm_password=WINRM_PASSWORD,
            timeout=120,
        ),
        on_event=events.append,
    )

    assert outcome.status == "successful", outcome
    assert outcome.hosts["pc-01"].status == "ok"
    assert [(e.host, e.result) for e in events] == [("pc-01", "ok")]
    assert winrm_responder.authenticated_users == [WINRM_USER]
    commands = [r for r in winrm_responder.requests if r.action == "Command"]
    # Ansible sends raw commands as PowerShell -EncodedCommand; the responder decoded it.
    assert [c.script for c in commands] == ["hostname"]
    assert commands[0].command_line is not None
    assert "-EncodedCommand" in commands[0].command_line
    assert winrm_responder.actions == ["Create", "Command", "Receive", "Signal", "Delete"]
    assert winrm_responder.plaintext_bodies == []


def test_a_wrong_password_fails_that_pc_only_with_a_clear_message(
    make_winrm_responder: Make,  # noqa: F811
) -> None:
    good = make_winrm_responder(hostname="PC-LAB-01")
    other = make_winrm_responder(users={"orchestrator": "An0ther-Password"}, hostname="PC-LAB-02")
    outcome = AnsibleRunner().run(
        PlaybookRequest(
            playbook_path("winrm_probe"),
            [_pc("pc-01", good), _pc("pc-02", other)],
            winrm_password=WINRM_PASSWORD,
            timeout=120,
        )
    )

    assert outcome.status == "failed"
    assert outcome.hosts["pc-01"].status == "ok"
    refused = outcome.hosts["pc-02"]
    assert refused.status == "unreachable"
    assert "credentials were rejected" in (refused.message or "")
    assert WINRM_PASSWORD not in (refused.message or "")
    assert other.auth_failures >= 1 and other.requests == []
    assert good.plaintext_bodies == [] and other.plaintext_bodies == []


def test_the_winrm_password_is_in_no_file_of_the_run(
    winrm_responder: WinRMResponder,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The run's private data dir (inventory, env/, artifacts/<ident>/command,
    # job events, stdout) is made under tmp_path; read every file while it runs.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    scanned: dict[str, bytes] = {}

    def scan(_event: HostEvent) -> None:
        for path in tmp_path.rglob("*"):
            if path.is_file():
                scanned[str(path.relative_to(tmp_path))] = path.read_bytes()

    outcome = AnsibleRunner().run(
        PlaybookRequest(
            playbook_path("winrm_probe"),
            [_pc("pc-01", winrm_responder)],
            winrm_password=WINRM_PASSWORD,
            timeout=120,
        ),
        on_event=scan,
    )

    assert outcome.status == "successful", outcome  # so the password did reach Ansible
    names = {Path(n).name for n in scanned}
    assert {"command", "hosts.yml", "winrm_probe.yml"} <= names, sorted(names)
    leaked = [name for name, data in scanned.items() if WINRM_PASSWORD.encode() in data]
    assert leaked == []
    assert list(tmp_path.iterdir()) == [], "the private data dir is removed after the run"


def test_a_run_with_macs_and_pcs_logs_macs_in_with_their_key(
    winrm_responder: WinRMResponder,  # noqa: F811
    ssh_hosts: list[SSHHost],  # noqa: F811
    tmp_path: Path,
) -> None:
    """The WinRM password is the run's connection password; SSH must not try it."""
    play = tmp_path / "raw_hostname.yml"
    play.write_text(
        "- name: Host names\n"
        "  hosts: all\n"
        "  gather_facts: false\n"
        "  tasks:\n"
        "    - name: Ask for the host name\n"
        "      ansible.builtin.raw: hostname\n"
        "      changed_when: false\n"
    )
    mac = ssh_hosts[0]
    outcome = AnsibleRunner().run(
        PlaybookRequest(
            play,
            [
                HostTarget(mac.name, mac.address, mac.port, "ssh", mac.username, {}, mac.host_key),
                _pc("pc-01", winrm_responder),
            ],
            ssh_key=mac.key_file.read_text(),
            winrm_password=WINRM_PASSWORD,
            timeout=120,
        )
    )

    assert {h: o.status for h, o in outcome.hosts.items()} == {mac.name: "ok", "pc-01": "ok"}, (
        outcome
    )
    assert winrm_responder.plaintext_bodies == []


def test_an_installer_exiting_3010_is_a_success_that_asks_for_a_reboot(
    make_winrm_responder: Make,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Windows installers say "installed, restart to finish" with exit code 3010."""
    play = tmp_path / "installer.yml"
    play.write_text(
        "- name: Run an installer\n"
        "  hosts: all\n"
        "  gather_facts: false\n"
        "  tasks:\n"
        "    - name: Install\n"
        "      ansible.builtin.raw: cmd /c exit {{ exit_code[inventory_hostname] }}\n"
        "      register: installer\n"
        "      changed_when: true\n"
        "      failed_when: installer.rc not in [0, 3010, 1641]\n"
    )
    pcs = {name: make_winrm_responder(hostname=name.upper()) for name in ("pc-01", "pc-02")}
    pcs["pc-03"] = make_winrm_responder(hostname="PC-03")
    outcome = AnsibleRunner().run(
        PlaybookRequest(
            play,
            [_pc(name, r) for name, r in pcs.items()],
            extravars={"exit_code": {"pc-01": 3010, "pc-02": 0, "pc-03": 1}},
            winrm_password=WINRM_PASSWORD,
            timeout=120,
        )
    )

    by_host = outcome.hosts
    assert by_host["pc-01"].status == "changed" and by_host["pc-01"].reboot_required
    assert "reboot required" in (by_host["pc-01"].message or "")
    assert by_host["pc-02"].status == "changed" and not by_host["pc-02"].reboot_required
    assert by_host["pc-03"].status == "failed" and not by_host["pc-03"].reboot_required
    assert all(r.plaintext_bodies == [] for r in pcs.values())
