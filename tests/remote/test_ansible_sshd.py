"""Playbook runs through the orchestrator against ten real sshd hosts on
loopback (macOS steps verified on Linux hosts with stand-in commands)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select

from orchestrator.db.models import Client
from orchestrator.db.session import transaction
from orchestrator.services import inventory, runs
from tests.factories import District
from tests.support.fixtures import ssh_hosts  # noqa: F401  (fixture)
from tests.support.sshd import SSHHost, kill_host, start


@pytest.fixture
def lab(district: District, ssh_hosts: list[SSHHost], tmp_path: Path) -> District:  # noqa: F811
    """The ten hosts as a cart of Macs in building 101, host keys pinned."""
    lines = ["Hostname,Building,Room,Platform,Model,Serial,MAC,IP"]
    for i, h in enumerate(ssh_hosts, 1):
        room = "cart-1" if i <= 8 else "cart-2"
        lines.append(
            f'{h.name},101,{room},mac,"MacBookAir10,1",C02TEST{i:04d},'
            f"02:00:00:00:01:{i:02x},127.0.0.1"
        )
    path = tmp_path / "macs.csv"
    path.write_text("\n".join(lines) + "\n")
    inventory.import_clients(district.ctx, district["it.ana"], path)
    by_name = {h.name: h for h in ssh_hosts}
    with transaction(district.ctx.engine) as s:
        for c in s.exec(select(Client)):
            h = by_name[c.hostname]
            c.port, c.login_user, c.host_key = h.port, h.username, h.host_key
            c.host_vars = {
                "orchestrator_root": str(h.root),
                "ansible_python_interpreter": "/usr/bin/python3",
            }
            s.add(c)
    return district


def _creds(hosts: list[SSHHost]) -> runs.Credentials:
    return runs.Credentials(ssh_key=hosts[0].key_file.read_text())


def test_gather_facts_on_ten_hosts_records_each_machines_facts(
    lab: District,
    ssh_hosts: list[SSHHost],  # noqa: F811
) -> None:
    events: list[runs.HostEvent] = []
    view = runs.run_playbook(
        lab.ctx,
        lab["btc.lincoln"],
        "gather_facts",
        building="101",
        credentials=_creds(ssh_hosts),
        on_event=events.append,
    )

    assert view.status == "successful", view
    assert {h.hostname: h.status for h in view.hosts} == {h.name: "ok" for h in ssh_hosts}
    assert {e.host for e in events} == {h.name for h in ssh_hosts}
    with transaction(lab.ctx.engine) as s:
        clients = {c.hostname: c for c in s.exec(select(Client))}
    first = clients["mac-01"]
    assert first.facts["orchestrator_os_version"] == "15.3"
    assert first.facts["orchestrator_serial"] == "C02TEST0001"
    assert first.facts["orchestrator_software"] == ["org.mozilla.firefox"]
    assert first.current_image == "101/lab@1.1"
    assert first.last_seen is not None
    log = (ssh_hosts[0].root / "var" / "log" / "standins.log").read_text()
    assert "sw_vers -productVersion" in log


def test_a_changed_host_key_is_refused_and_only_that_host_fails(
    lab: District,
    ssh_hosts: list[SSHHost],  # noqa: F811
) -> None:
    with transaction(lab.ctx.engine) as s:
        c = s.exec(select(Client).where(Client.hostname == "mac-09")).one()
        c.host_key = ssh_hosts[0].host_key  # what a swapped machine would present
        s.add(c)
    view = runs.run_playbook(
        lab.ctx,
        lab["it.ana"],
        "ping",
        building="101",
        room="cart-2",
        credentials=_creds(ssh_hosts),
    )
    results = {h.hostname: h for h in view.hosts}
    assert results["mac-10"].status == "ok"
    assert results["mac-09"].status == "unreachable"
    assert "Host key verification failed" in (results["mac-09"].message or "")
    assert view.status == "failed"


def test_a_host_whose_sshd_is_down_is_unreachable_and_the_others_finish(
    lab: District,
    ssh_hosts: list[SSHHost],  # noqa: F811
) -> None:
    down = ssh_hosts[9]
    kill_host(down)
    try:
        view = runs.run_playbook(
            lab.ctx,
            lab["it.ana"],
            "ping",
            building="101",
            room="cart-2",
            credentials=_creds(ssh_hosts),
        )
    finally:
        start(down)
    results = {h.hostname: h.status for h in view.hosts}
    assert results == {"mac-09": "ok", "mac-10": "unreachable"}
    shown = runs.show(lab.ctx, lab["btc.lincoln"], view.id)
    assert {h.hostname: h.status for h in shown.hosts} == results
