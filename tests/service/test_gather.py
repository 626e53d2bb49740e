"""``clients gather``: what clients report updates their records and flags.

The fake runner stands in for Ansible here; the real gather against real
sshd hosts is in tests/remote/test_ansible_sshd.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select

from orchestrator.db.models import Client
from orchestrator.db.session import transaction
from orchestrator.errors import InvalidInput, NotFound, Refused
from orchestrator.remote.ansible import FakePlaybookRunner
from orchestrator.services import gather, inventory, runs
from tests.factories import District

ASSETS = (
    "Hostname,Building,Room,Platform,Model,Serial,MAC,IP\n"
    "lab-01,101,lab-a,pc,Latitude 3420,SN0001,02:00:00:00:00:01,127.0.0.11\n"
    "lab-02,101,lab-a,pc,Latitude 3420,SN0002,02:00:00:00:00:02,127.0.0.12\n"
    "cart-01,102,cart,mac,MacBookAir10,1,SN0003,02:00:00:00:00:03,127.0.0.13\n"
    "hs-01,301,stem,pc,Latitude 3420,SN0004,02:00:00:00:00:04,127.0.0.14\n"
).replace("MacBookAir10,1", '"MacBookAir10,1"')
CREDS = runs.Credentials(ssh_key="-----BEGIN KEY-----secret")


def _facts(model: str, serial: str, **more: object) -> dict[str, object]:
    return {
        "orchestrator_os": "Windows",
        "orchestrator_os_version": "11 23H2",
        "orchestrator_model": model,
        "orchestrator_serial": serial,
        "orchestrator_software": ["7zip", "chrome"],
        "orchestrator_disk_free_kb": "52428800",
        "orchestrator_image": "101/lab@2.0",
        **more,
    }


@pytest.fixture
def clients(district: District, tmp_path: Path) -> District:
    path = tmp_path / "assets.csv"
    path.write_text(ASSETS)
    inventory.import_clients(district.ctx, district["it.ana"], path)
    return district


def _client(d: District, hostname: str) -> Client:
    with transaction(d.ctx.engine) as s:
        return s.exec(select(Client).where(Client.hostname == hostname)).one()


def test_gathered_model_serial_os_disk_software_and_image_update_the_client(
    clients: District,
) -> None:
    runner = FakePlaybookRunner(facts={"lab-01": _facts("Latitude 3420", "SN0001-NEW")})

    view = gather.gather(
        clients.ctx, clients["btc.lincoln"], building="101", credentials=CREDS, runner=runner
    )

    assert [r.playbook for r in view.runs] == ["gather_facts"]
    shown = {c.hostname: c for c in view.clients}
    assert shown["lab-01"].os == "Windows 11 23H2"
    assert shown["lab-01"].disk_free_kb == 52428800
    assert shown["lab-01"].software == 2
    assert shown["lab-01"].current_image == "101/lab@2.0"
    assert shown["lab-01"].serial == "SN0001-NEW"
    assert shown["lab-01"].last_seen is not None
    assert shown["lab-02"].os is None  # it reported nothing, so nothing changed
    assert _client(clients, "lab-01").facts["orchestrator_software"] == ["7zip", "chrome"]


@pytest.mark.parametrize(
    ("reported", "flag"),
    [
        ("ThinkPad 11e", "model not approved"),
        ("OptiPlex 7010", "model past end of support"),
        ("Chromebook 9000", "model not on the Approved Technology List"),
        ("Latitude 3420", None),
    ],
)
def test_a_reported_model_off_the_approved_list_or_past_support_is_flagged(
    clients: District, reported: str, flag: str | None
) -> None:
    runner = FakePlaybookRunner(facts={"lab-02": _facts(reported, "SN0002")})

    view = gather.gather(
        clients.ctx, clients["it.ana"], building="101", credentials=CREDS, runner=runner
    )

    lab02 = next(c for c in view.clients if c.hostname == "lab-02")
    assert lab02.model == reported
    if flag is None:
        assert lab02.flag is None and lab02.approved_model
    else:
        assert lab02.flag is not None and lab02.flag.startswith(flag)


def test_a_serial_another_client_holds_is_kept_apart_and_said_in_the_run(
    clients: District,
) -> None:
    runner = FakePlaybookRunner(facts={"lab-01": _facts("Latitude 3420", "SN0002")})

    view = gather.gather(
        clients.ctx, clients["it.ana"], building="101", credentials=CREDS, runner=runner
    )

    assert _client(clients, "lab-01").serial == "SN0001"
    message = next(h.message for h in view.runs[0].hosts if h.hostname == "lab-01")
    assert message is not None and "SN0002" in message and "lab-02" in message


def test_facts_from_a_failed_host_are_not_taken(clients: District) -> None:
    runner = FakePlaybookRunner(
        results={"lab-01": "failed"}, facts={"lab-01": _facts("ThinkPad 11e", "SN9")}
    )

    gather.gather(clients.ctx, clients["it.ana"], building="101", credentials=CREDS, runner=runner)

    assert _client(clients, "lab-01").model == "Latitude 3420"


def test_without_a_building_it_gathers_every_building_the_actor_may_run_on(
    clients: District,
) -> None:
    runner = FakePlaybookRunner()

    it_view = gather.gather(clients.ctx, clients["it.ana"], credentials=CREDS, runner=runner)
    tech_view = gather.gather(clients.ctx, clients["btc.lincoln"], credentials=CREDS, runner=runner)

    assert sorted(r.building or "" for r in it_view.runs) == ["101", "102", "301"]
    assert [r.building for r in tech_view.runs] == ["101"]
    assert {c.building for c in tech_view.clients} == {"101"}


def test_a_tech_may_not_gather_another_building_and_nothing_runs(clients: District) -> None:
    runner = FakePlaybookRunner()

    with pytest.raises(Refused):
        gather.gather(
            clients.ctx, clients["btc.lincoln"], building="102", credentials=CREDS, runner=runner
        )
    with pytest.raises(Refused):
        gather.gather(clients.ctx, clients["edtech.grace"], credentials=CREDS, runner=runner)

    assert runner.requests == []


def test_a_building_without_clients_is_an_error_not_an_empty_success(
    clients: District,
) -> None:
    with pytest.raises(NotFound, match="no clients in building 201"):
        gather.gather(
            clients.ctx,
            clients["it.ana"],
            building="201",
            credentials=CREDS,
            runner=FakePlaybookRunner(),
        )


def test_a_room_limits_the_gather_and_needs_its_building(clients: District) -> None:
    runner = FakePlaybookRunner()

    view = gather.gather(
        clients.ctx,
        clients["it.ana"],
        building="102",
        room="cart",
        credentials=CREDS,
        runner=runner,
    )

    assert [h.hostname for h in view.runs[0].hosts] == ["cart-01"]
    with pytest.raises(InvalidInput, match="give --building too"):
        gather.gather(clients.ctx, clients["it.ana"], room="cart", credentials=CREDS, runner=runner)
