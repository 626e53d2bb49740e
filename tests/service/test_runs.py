"""Playbook runs: who may run what where, and what is remembered per host.

These use the fake runner that ships beside the real one; the real Ansible
runs against real sshd hosts are in tests/remote/.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import InvalidInput, NotFound, Refused
from orchestrator.remote.ansible import FakePlaybookRunner, HostEvent
from orchestrator.services import audit, inventory, runs
from tests.factories import District

ASSETS = (
    "Hostname,Building,Room,Platform,Model,Serial,MAC,IP\n"
    "lab-01,101,lab-a,pc,Latitude 3420,SN0001,02:00:00:00:00:01,127.0.0.11\n"
    "lab-02,101,lab-a,pc,Latitude 3420,SN0002,02:00:00:00:00:02,127.0.0.12\n"
    "cart-01,101,cart,mac,MacBookAir10,SN0003,02:00:00:00:00:03,127.0.0.13\n"
    "hs-01,301,stem,pc,Latitude 3420,SN0004,02:00:00:00:00:04,127.0.0.14\n"
)
CREDS = runs.Credentials(ssh_key="-----BEGIN KEY-----secret", winrm_password="s3cret!")


@pytest.fixture
def clients(district: District, tmp_path: Path) -> District:
    path = tmp_path / "assets.csv"
    path.write_text(ASSETS)
    inventory.import_clients(district.ctx, district["it.ana"], path)
    return district


def test_a_run_remembers_every_hosts_result_and_the_failing_message(clients: District) -> None:
    runner = FakePlaybookRunner({"lab-02": "failed", "cart-01": "unreachable"})
    events: list[HostEvent] = []

    view = runs.run_playbook(
        clients.ctx,
        clients["btc.lincoln"],
        "ping",
        building="101",
        runner=runner,
        credentials=CREDS,
        on_event=events.append,
    )

    assert view.status == "failed"
    by_host = {h.hostname: h for h in view.hosts}
    assert {h: r.status for h, r in by_host.items()} == {
        "lab-01": "ok",
        "lab-02": "failed",
        "cart-01": "unreachable",
    }
    assert by_host["lab-02"].message == "failed by the fake runner"
    assert by_host["cart-01"].message == (  # imported without contact: no key pinned yet
        "its SSH host key is not pinned yet (run 'orchestrator clients probe --host cart-01'): "
        "unreachable by the fake runner"
    )
    assert {e.host for e in events} == {"lab-01", "lab-02", "cart-01"}
    again = runs.show(clients.ctx, clients["principal.lincoln"], view.id)
    assert again == view
    actions = [e.action for e in audit.entries(clients.ctx, clients["it.ana"], object_kind="run")]
    assert actions == ["run.start", "run.finish"]


def test_a_host_that_must_restart_is_remembered_and_named_in_the_runs_reason(
    clients: District,
) -> None:
    runner = FakePlaybookRunner({"lab-01": "reboot"})

    view = runs.run_playbook(
        clients.ctx,
        clients["btc.lincoln"],
        "ping",
        building="101",
        runner=runner,
        credentials=CREDS,
    )

    assert view.status == "successful"
    by_host = {h.hostname: h for h in view.hosts}
    assert by_host["lab-01"].status == "changed" and by_host["lab-01"].reboot_required
    assert not by_host["lab-02"].reboot_required
    assert "1 host(s) must restart to finish: lab-01" in view.reason
    assert runs.show(clients.ctx, clients["it.ana"], view.id) == view


def test_credentials_reach_the_runner_but_never_the_run_record(clients: District) -> None:
    runner = FakePlaybookRunner()
    runs.run_playbook(
        clients.ctx,
        clients["it.ana"],
        "ping",
        building="101",
        runner=runner,
        credentials=CREDS,
    )
    request = runner.requests[0]
    assert request.ssh_key == CREDS.ssh_key and request.winrm_password == CREDS.winrm_password
    assert "s3cret" not in repr(request) and "secret" not in repr(CREDS)
    users = {h.name: (h.connection, h.user) for h in request.hosts}
    assert users["cart-01"] == ("ssh", "orchestrator")
    assert users["lab-01"] == ("winrm", "orchestrator")
    dump = repr(audit.entries(clients.ctx, clients["it.ana"]))
    assert "s3cret" not in dump and "BEGIN KEY" not in dump


def test_a_room_limits_the_run_and_an_empty_target_is_an_error(clients: District) -> None:
    runner = FakePlaybookRunner()
    view = runs.run_playbook(
        clients.ctx,
        clients["btc.lincoln"],
        "ping",
        building="101",
        room="cart",
        runner=runner,
        credentials=CREDS,
    )
    assert [h.hostname for h in view.hosts] == ["cart-01"]
    with pytest.raises(NotFound, match="no clients in room 'gym' of building 101"):
        runs.run_playbook(
            clients.ctx,
            clients["btc.lincoln"],
            "ping",
            building="101",
            room="gym",
            runner=runner,
            credentials=CREDS,
        )
    with pytest.raises(NotFound, match="no clients in building 102"):
        runs.run_playbook(
            clients.ctx,
            clients["it.ana"],
            "ping",
            building="102",
            runner=runner,
            credentials=CREDS,
        )


def test_building_techs_run_only_on_their_own_building(clients: District) -> None:
    runner = FakePlaybookRunner()
    with pytest.raises(Refused, match="in building 301"):
        runs.run_playbook(
            clients.ctx,
            clients["btc.lincoln"],
            "ping",
            building="301",
            runner=runner,
            credentials=CREDS,
        )
    for who in ("edtech.grace", "principal.lincoln"):
        with pytest.raises(Refused, match="cannot run playbooks"):
            runs.run_playbook(
                clients.ctx,
                clients[who],
                "ping",
                building="101",
                runner=runner,
                credentials=CREDS,
            )
    assert runner.requests == []
    view = runs.run_playbook(
        clients.ctx,
        clients["sectec.kim"],
        "ping",
        building="301",
        runner=runner,
        credentials=CREDS,
    )
    with pytest.raises(NotFound):
        runs.show(clients.ctx, clients["btc.lincoln"], view.id)


@pytest.mark.parametrize("name", ["../etc/passwd", "nope", ".hidden", "a/b"])
def test_only_the_projects_playbooks_run(clients: District, name: str) -> None:
    with pytest.raises(InvalidInput, match="playbook"):
        runs.run_playbook(
            clients.ctx,
            clients["it.ana"],
            name,
            building="101",
            runner=FakePlaybookRunner(),
            credentials=CREDS,
        )


def test_cancelling_a_run_records_it_as_canceled(clients: District) -> None:
    view = runs.run_playbook(
        clients.ctx,
        clients["it.ana"],
        "ping",
        building="101",
        runner=FakePlaybookRunner(),
        credentials=CREDS,
        should_cancel=lambda: True,
    )
    assert view.status == "canceled"
    assert view.finished_at is not None
