"""Opt-in lane: the WinRM adapter and Ansible against a real Windows PC.

Collected only when WINRM_ENDPOINT, WINRM_USERNAME and WINRM_PASSWORD are set
(see tests/remote/conftest.py), e.g.::

    WINRM_ENDPOINT=http://pc-lab-01.district.example:5985/wsman \\
    WINRM_USERNAME='PC-LAB-01\\orchestrator' WINRM_PASSWORD=... \\
    .venv/bin/pytest tests/remote/test_winrm_real.py -q

Optional: WINRM_TRANSPORT (ntlm, the default, or kerberos) and WINRM_CA_FILE
for an https endpoint signed by the district's CA.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest

from orchestrator.errors import AuthenticationFailed
from orchestrator.remote.ansible import AnsibleRunner, HostTarget, PlaybookRequest, playbook_path
from orchestrator.remote.winrm import WinRMClient, WinRMEndpoint

URL = urlsplit(os.environ["WINRM_ENDPOINT"])
USER = os.environ["WINRM_USERNAME"]
PASSWORD = os.environ["WINRM_PASSWORD"]


@pytest.fixture
def endpoint() -> WinRMEndpoint:
    scheme = URL.scheme or "http"
    return WinRMEndpoint(
        address=URL.hostname or "",
        port=URL.port or (5986 if scheme == "https" else 5985),
        scheme=scheme,
        transport=os.environ.get("WINRM_TRANSPORT", "ntlm"),
        ca_file=os.environ.get("WINRM_CA_FILE") or None,
        path=URL.path or "/wsman",
    )


def test_a_real_pc_answers_hostname_and_ipconfig(endpoint: WinRMEndpoint) -> None:
    client = WinRMClient(endpoint, USER, PASSWORD)
    name = client.probe()
    assert name
    ipconfig = client.run("ipconfig", ["/all"])
    assert ipconfig.exit_code == 0 and name.lower() in ipconfig.stdout.lower()
    assert client.run("cmd", ["/c", "exit", "3010"]).reboot_required


def test_a_real_pc_rejects_a_wrong_password(endpoint: WinRMEndpoint) -> None:
    with pytest.raises(AuthenticationFailed):
        WinRMClient(endpoint, USER, PASSWORD + "-wrong").probe()


def test_ansible_raw_reaches_a_real_pc(endpoint: WinRMEndpoint) -> None:
    host = HostTarget(
        "real-pc",
        endpoint.address,
        endpoint.port,
        "winrm",
        USER,
        {"ansible_winrm_scheme": endpoint.scheme, "ansible_winrm_path": endpoint.path},
    )
    outcome = AnsibleRunner().run(
        PlaybookRequest(playbook_path("winrm_probe"), [host], winrm_password=PASSWORD, timeout=300)
    )
    assert outcome.hosts["real-pc"].status == "ok", outcome
