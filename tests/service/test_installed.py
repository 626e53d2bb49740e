"""What a client is known to have installed: recorded when a package install
succeeds there, kept or dropped by later gathers, and read by ``deploy plan``."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select

from orchestrator.db.models import Client, ClientSoftware
from orchestrator.db.session import transaction
from orchestrator.remote.ansible import FakePlaybookRunner
from orchestrator.services import deploy_plan, gather, installed, inventory, runs
from orchestrator.services.deploy_plan import Reason
from tests.factories import District
from tests.support.fixtures import SCRATCH_RECEIPT, release_scratch

MACS = ("cart-01", "cart-02", "cart-03")
ASSETS = "Hostname,Building,Room,Platform,Model,Serial,MAC,IP\n" + "".join(
    f'{h},101,cart,mac,"MacBookAir10,1",SN20{i},02:00:00:00:02:{i:02x},127.0.0.{40 + i}\n'
    for i, h in enumerate(MACS, 1)
)
RECEIPT = SCRATCH_RECEIPT


@pytest.fixture
def cart(district: District, tmp_path: Path) -> District:
    """Three Macs in building 101 and Scratch 3.29 and 3.30 released."""
    path = tmp_path / "assets.csv"
    path.write_text(ASSETS)
    inventory.import_clients(district.ctx, district["it.ana"], path)
    for version in ("3.29", "3.30"):
        release_scratch(district, version, tmp_path)
    return district


def _install(d: District, version: str, **results: str) -> runs.RunView:
    return runs.run_playbook(
        d.ctx,
        d["btc.lincoln"],
        "install_package",
        building="101",
        credentials=runs.Credentials(),
        runner=FakePlaybookRunner(results),
        package=f"scratch@{version}",
    )


def _installed(d: District) -> dict[str, list[str]]:
    return {c.hostname: c.installed for c in inventory.list_clients(d.ctx, d["it.ana"])}


def _gather(d: District, software: dict[str, list[str]]) -> None:
    facts = {h: {"orchestrator_software": items} for h, items in software.items()}
    gather.gather(
        d.ctx,
        d["btc.lincoln"],
        building="101",
        credentials=runs.Credentials(),
        runner=FakePlaybookRunner(facts=facts),
    )


def _why(p: deploy_plan.Plan) -> dict[str, Reason]:
    return {c.hostname: c.reason for c in p.excluded}


def test_a_successful_install_puts_the_release_on_the_client_record_and_only_there(
    cart: District,
) -> None:
    _install(cart, "3.29", **{"cart-02": "failed", "cart-03": "unreachable"})

    assert _installed(cart) == {"cart-01": ["scratch@3.29"], "cart-02": [], "cart-03": []}


def test_a_mac_that_got_the_release_is_already_current_though_pkgutil_names_no_version(
    cart: District,
) -> None:
    _gather(cart, {h: ["com.apple.pkg.core", RECEIPT] for h in MACS})  # bare receipts
    _install(cart, "3.30", **{"cart-02": "failed", "cart-03": "failed"})

    p = deploy_plan.plan(cart.ctx, cart["btc.lincoln"], package="scratch@3.30", buildings=["101"])

    assert _why(p) == {"cart-01": Reason.ALREADY_CURRENT}
    assert [c.hostname for c in p.included] == ["cart-02", "cart-03"]


def test_an_upgrade_replaces_the_older_release_on_the_record(cart: District) -> None:
    _install(cart, "3.29")
    _install(cart, "3.30", **{"cart-03": "failed"})

    assert _installed(cart) == {
        "cart-01": ["scratch@3.30"],
        "cart-02": ["scratch@3.30"],
        "cart-03": ["scratch@3.29"],
    }
    p = deploy_plan.plan(cart.ctx, cart["btc.lincoln"], package="scratch@3.29", buildings=["101"])
    # 3.29 is no longer what cart-01 holds: planning the older release includes it.
    assert _why(p) == {"cart-03": Reason.ALREADY_CURRENT}


def test_a_gather_of_a_mac_without_the_receipt_drops_the_record_and_one_with_it_keeps_it(
    cart: District,
) -> None:
    _install(cart, "3.30")

    _gather(cart, {"cart-01": ["com.apple.pkg.core"], "cart-02": ["com.apple.pkg.core", RECEIPT]})

    assert _installed(cart) == {
        "cart-01": [],  # removed from the Mac since
        "cart-02": ["scratch@3.30"],
        "cart-03": ["scratch@3.30"],  # not gathered: nothing new is known
    }


def test_a_gather_replaces_the_gathered_list_lower_cased_and_a_gather_without_one_keeps_it(
    cart: District,
) -> None:
    _gather(cart, {"cart-01": ["Org.Mozilla.Firefox", "EDU.MIT.SCRATCH@3.30", " "]})
    with transaction(cart.ctx.engine) as s:
        client = s.exec(select(Client).where(Client.hostname == "cart-01")).one()
        first = set(
            s.exec(select(ClientSoftware.marker).where(ClientSoftware.client_id == client.id))
        )
        installed.record_gathered(s, client, "not a list", cart.ctx.now())
    assert first == {"org.mozilla.firefox", "edu.mit.scratch@3.30"}

    _gather(cart, {"cart-01": ["org.mozilla.firefox"]})
    with transaction(cart.ctx.engine) as s:
        after = set(
            s.exec(select(ClientSoftware.marker).where(ClientSoftware.client_id == client.id))
        )
    assert after == {"org.mozilla.firefox"}


def test_the_plan_calls_a_versioned_receipt_gathered_in_any_case_current(cart: District) -> None:
    _gather(cart, {"cart-01": ["EDU.MIT.SCRATCH@3.30"], "cart-02": ["Scratch@3.30"]})

    p = deploy_plan.plan(cart.ctx, cart["btc.lincoln"], package="scratch@3.30", buildings=["101"])

    assert _why(p) == {"cart-01": Reason.ALREADY_CURRENT, "cart-02": Reason.ALREADY_CURRENT}
