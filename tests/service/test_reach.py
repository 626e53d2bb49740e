"""Probing clients and pinning SSH host keys, with the fake hosts that ship
beside the real SSH adapter (the real sshd hosts are in tests/remote/).

Every test runs on SQLite and PostgreSQL (the ``district`` fixture)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import event
from sqlmodel import select

from orchestrator.db.models import Client
from orchestrator.db.session import transaction
from orchestrator.errors import Conflict, HostUnreachable, InvalidInput, NotFound, Refused
from orchestrator.remote.ssh import FakeHosts, fingerprint
from orchestrator.services import audit, inventory, reach
from tests.factories import District

pytestmark = pytest.mark.db

ASSETS = (
    "Hostname,Building,Room,Platform,Model,Serial,MAC,IP\n"
    'cart-01,101,cart,mac,"MacBookAir10,1",SN0001,02:00:00:00:00:01,127.0.0.21\n'
    'cart-02,101,cart,mac,"MacBookAir10,1",SN0002,02:00:00:00:00:02,127.0.0.22\n'
    "lab-01,101,lab-a,pc,Latitude 3420,SN0003,02:00:00:00:00:03,127.0.0.23\n"
    'lib-01,102,library,mac,"MacBookAir10,1",SN0004,02:00:00:00:00:04,127.0.0.24\n'
)
CART_01, CART_02, LAB_01, LIB_01 = (
    ("127.0.0.21", 22),
    ("127.0.0.22", 22),
    ("127.0.0.23", 5985),
    ("127.0.0.24", 22),
)


def new_key() -> str:
    public = Ed25519PrivateKey.generate().public_key()
    line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return line.decode()


@pytest.fixture
def clients(district: District, tmp_path: Path) -> District:
    path = tmp_path / "assets.csv"
    path.write_text(ASSETS)
    inventory.import_clients(district.ctx, district["it.ana"], path)
    return district


@pytest.fixture
def hosts() -> FakeHosts:
    return FakeHosts(
        {CART_01: new_key(), CART_02: new_key(), LIB_01: new_key()}, open_ports={LAB_01}
    )


def _probe(d: District, hosts: FakeHosts, who: str = "btc.lincoln", **kw: Any) -> dict[str, Any]:
    kw.setdefault("building", "101")
    results = reach.probe(
        d.ctx, d[who], fetch=hosts.fetch_host_key, connect=hosts.tcp_connect, **kw
    )
    return {r.hostname: r for r in results}


def _client(d: District, hostname: str) -> Client:
    with transaction(d.ctx.engine) as s:
        return s.exec(select(Client).where(Client.hostname == hostname)).one()


def _client_audit(d: District) -> list[Any]:
    return list(audit.entries(d.ctx, d["it.ana"], object_kind="client"))


def _listed(d: District, hostname: str) -> inventory.ClientView:
    return next(c for c in inventory.list_clients(d.ctx, d["it.ana"]) if c.hostname == hostname)


def _change_key(d: District, hosts: FakeHosts) -> str:
    """cart-02 pinned, then offering another key (as a swapped machine would)."""
    _probe(d, hosts)
    hosts.keys[CART_02] = new_key()
    return hosts.keys[CART_02]


# ---------------------------------------------------------------------------
# probe
# ---------------------------------------------------------------------------


def test_the_first_probe_pins_each_macs_key_and_audits_its_fingerprint(
    clients: District, hosts: FakeHosts
) -> None:
    assert _listed(clients, "cart-01").flags == ["host key not pinned"]
    assert _listed(clients, "lab-01").flags == []  # a PC has no SSH host key

    results = _probe(clients, hosts)

    assert {h: r.result for h, r in results.items()} == {
        "cart-01": "pinned",
        "cart-02": "pinned",
        "lab-01": "reachable",
    }
    assert results["cart-01"].fingerprint == fingerprint(hosts.keys[CART_01])
    assert _client(clients, "cart-01").host_key == hosts.keys[CART_01]
    assert _client(clients, "cart-02").host_key == hosts.keys[CART_02]
    assert _listed(clients, "cart-01").flags == [] and _listed(clients, "cart-01").flag is None
    pins = [e for e in _client_audit(clients) if e.action == "client.pin_host_key"]
    assert {(e.object_ref, e.actor, e.building) for e in pins} == {
        ("cart-01", "btc.lincoln", "101"),
        ("cart-02", "btc.lincoln", "101"),
    }
    by_ref = {e.object_ref: e for e in pins}
    assert by_ref["cart-02"].after == {
        "fingerprint": fingerprint(hosts.keys[CART_02]),
        "key_type": "ssh-ed25519",
    }
    assert _client(clients, "lib-01").host_key is None  # building 102 was not probed


def test_the_same_key_again_is_reachable_and_sets_last_seen(
    clients: District, hosts: FakeHosts
) -> None:
    _probe(clients, hosts)
    entries = len(_client_audit(clients))
    clients.ctx.clock.advance(hours=2)  # type: ignore[attr-defined]

    results = _probe(clients, hosts)

    assert {h: r.result for h, r in results.items()} == {
        "cart-01": "reachable",
        "cart-02": "reachable",
        "lab-01": "reachable",
    }
    assert results["cart-01"].message == "the pinned key"
    for name in ("cart-01", "cart-02", "lab-01"):
        assert _client(clients, name).last_seen == clients.ctx.now()
    assert len(_client_audit(clients)) == entries  # nothing changed, nothing audited


def test_a_changed_key_is_refused_the_pinned_one_kept_and_the_offer_stored_for_review(
    clients: District, hosts: FakeHosts
) -> None:
    _probe(clients, hosts)
    pinned = _client(clients, "cart-02").host_key
    seen_before = _client(clients, "cart-02").last_seen
    offered = new_key()
    hosts.keys[CART_02] = offered
    clients.ctx.clock.advance(hours=1)  # type: ignore[attr-defined]

    results = _probe(clients, hosts)

    changed = results["cart-02"]
    assert changed.result == "host key changed" and not changed.ok
    assert changed.fingerprint == fingerprint(offered)
    assert changed.pinned_fingerprint == fingerprint(pinned or "")
    assert changed.message == "refused, kept for review"
    row = _client(clients, "cart-02")
    assert row.host_key == pinned  # never overwritten
    assert row.host_key_offered == offered
    assert row.last_seen == seen_before  # a host we no longer trust was not "seen"
    assert results["cart-01"].result == "reachable"
    refused = [e for e in _client_audit(clients) if e.action == "client.refuse_host_key"]
    assert len(refused) == 1 and refused[0].object_ref == "cart-02"
    assert refused[0].before == {"fingerprint": fingerprint(pinned or "")}
    assert refused[0].after == {"offered_fingerprint": fingerprint(offered)}
    assert refused[0].reason.startswith("refused")
    listed = _listed(clients, "cart-02")
    assert listed.flags == ["host key changed: refused"] and listed.host_key_refused
    assert listed.flag == "host key changed: refused"


def test_probing_a_refused_key_again_stays_refused_and_is_audited_once(
    clients: District, hosts: FakeHosts
) -> None:
    offered = _change_key(clients, hosts)
    _probe(clients, hosts)

    again = _probe(clients, hosts)["cart-02"]

    assert again.result == "host key changed"
    assert again.message == "the same refused key, kept for review"
    assert _client(clients, "cart-02").host_key_offered == offered
    actions = [e.action for e in _client_audit(clients)]
    assert actions.count("client.refuse_host_key") == 1


def test_a_host_offering_its_pinned_key_again_sets_the_refused_one_aside_audited(
    clients: District, hosts: FakeHosts
) -> None:
    _probe(clients, hosts)
    original = hosts.keys[CART_02]
    hosts.keys[CART_02] = new_key()
    _probe(clients, hosts)
    hosts.keys[CART_02] = original  # e.g. an impostor gone again

    back = _probe(clients, hosts)["cart-02"]

    assert back.result == "reachable" and "set aside" in back.message
    row = _client(clients, "cart-02")
    assert row.host_key == original and row.host_key_offered is None
    cleared = [e for e in _client_audit(clients) if e.action == "client.clear_refused_key"]
    assert len(cleared) == 1 and cleared[0].after == {"fingerprint": fingerprint(original)}


def test_unreachable_clients_are_reported_unpinned_and_not_seen(
    clients: District, hosts: FakeHosts
) -> None:
    hosts.down[CART_02] = HostUnreachable("timed out connecting after 5s", host="127.0.0.22:22")
    hosts.open_ports.clear()  # the PC's WinRM port is closed

    results = _probe(clients, hosts)

    assert results["cart-02"].result == "unreachable"
    assert results["cart-02"].message == "timed out connecting after 5s"
    assert results["lab-01"].result == "unreachable"
    assert results["lab-01"].message == "connection refused"
    assert results["cart-01"].result == "pinned"
    for name in ("cart-02", "lab-01"):
        row = _client(clients, name)
        assert row.last_seen is None and row.host_key is None
    assert ("tcp", *LAB_01) in hosts.calls  # PCs: a TCP connect to the WinRM port


def test_probing_without_pinning_reports_the_key_and_stores_nothing(
    clients: District, hosts: FakeHosts
) -> None:
    results = _probe(clients, hosts, pin=False)

    assert results["cart-01"].result == "not pinned"
    assert results["cart-01"].fingerprint == fingerprint(hosts.keys[CART_01])
    assert _client(clients, "cart-01").host_key is None
    assert _client_audit(clients) == []


def test_unknown_hostnames_are_all_named_and_nothing_is_probed_or_changed(
    clients: District, hosts: FakeHosts
) -> None:
    with pytest.raises(NotFound) as caught:
        _probe(clients, hosts, building=None, hostnames=["cart-01", "nope-02", "NOPE-01"])

    assert "'nope-01', 'nope-02'" in str(caught.value)
    assert "cart-01" not in str(caught.value)
    assert hosts.calls == []
    assert _client(clients, "cart-01").host_key is None
    assert _client_audit(clients) == []


def test_another_buildings_host_is_not_found_for_a_tech_and_not_probed(
    clients: District, hosts: FakeHosts
) -> None:
    with pytest.raises(NotFound) as caught:
        _probe(clients, hosts, who="btc.garcia", building=None, hostnames=["cart-01"])
    with pytest.raises(NotFound) as unknown:
        _probe(clients, hosts, who="btc.garcia", building=None, hostnames=["cart-99"])

    assert str(caught.value) == str(unknown.value).replace("cart-99", "cart-01")
    with pytest.raises(Refused, match="building 101"):
        _probe(clients, hosts, who="btc.garcia", building="101")
    assert hosts.calls == []


def test_without_a_building_a_tech_probes_only_the_buildings_they_manage(
    clients: District, hosts: FakeHosts
) -> None:
    results = _probe(clients, hosts, who="btc.garcia", building=None)

    assert set(results) == {"lib-01"}
    assert _client(clients, "cart-01").host_key is None


@pytest.mark.parametrize("who", ["principal.lincoln", "edtech.grace"])
def test_principals_and_edtech_may_not_probe(clients: District, hosts: FakeHosts, who: str) -> None:
    with pytest.raises(Refused, match="cannot manage client computers"):
        _probe(clients, hosts, who=who)
    assert hosts.calls == []


def test_hosts_are_contacted_in_parallel_within_the_bound_and_outside_transactions(
    clients: District, tmp_path: Path
) -> None:
    more = "".join(
        f'cart-{i:02d},101,cart,mac,"MacBookAir10,1",SN01{i:02d},02:00:00:00:01:{i:02x},'
        f"127.0.1.{i}\n"
        for i in range(10, 16)
    )
    path = tmp_path / "more.csv"
    path.write_text(ASSETS.splitlines(keepends=True)[0] + more)
    inventory.import_clients(clients.ctx, clients["it.ana"], path)
    keys = {(f"127.0.1.{i}", 22): new_key() for i in range(10, 16)}
    open_transactions = 0
    lock = threading.Lock()
    busy = peak = 0
    during: list[int] = []

    def begun(_conn: Any) -> None:
        nonlocal open_transactions
        open_transactions += 1

    def ended(_conn: Any) -> None:
        nonlocal open_transactions
        open_transactions -= 1

    def on_call(_address: str, _port: int) -> None:
        nonlocal busy, peak
        during.append(open_transactions)
        with lock:
            busy += 1
            peak = max(peak, busy)
        time.sleep(0.05)
        with lock:
            busy -= 1

    fake = FakeHosts(keys, open_ports={LAB_01}, on_call=on_call)
    heard: list[str] = []
    engine = clients.ctx.engine
    for name, fn in (("begin", begun), ("commit", ended), ("rollback", ended)):
        event.listen(engine, name, fn)
    try:
        results = reach.probe(
            clients.ctx,
            clients["it.ana"],
            hostnames=sorted(f"cart-{i:02d}" for i in range(10, 16)),
            fetch=fake.fetch_host_key,
            connect=fake.tcp_connect,
            workers=3,
            on_result=lambda r: heard.append(r.hostname),
        )
    finally:
        for name, fn in (("begin", begun), ("commit", ended), ("rollback", ended)):
            event.remove(engine, name, fn)

    assert [r.result for r in results] == ["pinned"] * 6
    assert peak == 3  # parallel, never more than the bound
    assert during == [0] * 6  # no transaction open while a host was contacted
    assert sorted(heard) == [f"cart-{i:02d}" for i in range(10, 16)]


def test_pinning_after_an_import_probes_only_the_files_unpinned_macs(
    clients: District, hosts: FakeHosts, tmp_path: Path
) -> None:
    path = tmp_path / "cart3.csv"
    path.write_text(
        ASSETS.splitlines(keepends=True)[0]
        + 'cart-03,101,cart,mac,"MacBookAir10,1",SN0005,02:00:00:00:00:05,127.0.0.25\n'
        + "lab-02,101,lab-a,pc,Latitude 3420,SN0006,02:00:00:00:00:06,127.0.0.26\n"
    )
    inventory.import_clients(clients.ctx, clients["it.ana"], path)
    hosts.keys[("127.0.0.25", 22)] = new_key()

    results = reach.pin_imported(
        clients.ctx, clients["btc.lincoln"], path, fetch=hosts.fetch_host_key
    )

    assert [(r.hostname, r.result) for r in results] == [("cart-03", "pinned")]
    assert hosts.calls == [("ssh", "127.0.0.25", 22)]  # not the PC, not the older Macs
    assert _client(clients, "cart-01").host_key is None


# ---------------------------------------------------------------------------
# repin
# ---------------------------------------------------------------------------


def test_repin_by_the_buildings_btc_with_a_reason_pins_the_offered_key_audited(
    clients: District, hosts: FakeHosts
) -> None:
    old = hosts.keys[CART_02]
    offered = _change_key(clients, hosts)
    _probe(clients, hosts)
    clients.ctx.clock.advance(minutes=30)  # type: ignore[attr-defined]

    done = reach.repin(
        clients.ctx,
        clients["btc.lincoln"],
        "cart-02",
        reason="logic board replaced under warranty, ticket 4411",
        fetch=hosts.fetch_host_key,
    )

    assert done.changed and (done.before, done.after) == (fingerprint(old), fingerprint(offered))
    row = _client(clients, "cart-02")
    assert row.host_key == offered and row.host_key_offered is None
    assert row.last_seen == clients.ctx.now()
    entry = [e for e in _client_audit(clients) if e.action == "client.repin_host_key"][-1]
    assert (entry.actor, entry.object_ref, entry.building) == ("btc.lincoln", "cart-02", "101")
    assert entry.before == {"fingerprint": fingerprint(old)}
    assert entry.after == {"fingerprint": fingerprint(offered), "key_type": "ssh-ed25519"}
    assert entry.reason == "logic board replaced under warranty, ticket 4411"
    assert _listed(clients, "cart-02").flags == []
    assert _probe(clients, hosts)["cart-02"].result == "reachable"


def test_repin_by_another_buildings_tech_is_refused_and_the_host_not_revealed(
    clients: District, hosts: FakeHosts
) -> None:
    _change_key(clients, hosts)
    _probe(clients, hosts)
    before = _client(clients, "cart-02")

    with pytest.raises(NotFound) as caught:
        reach.repin(
            clients.ctx, clients["btc.garcia"], "cart-02", reason="swap", fetch=hosts.fetch_host_key
        )
    with pytest.raises(NotFound) as unknown:
        reach.repin(
            clients.ctx, clients["btc.garcia"], "cart-98", reason="swap", fetch=hosts.fetch_host_key
        )

    assert str(caught.value) == str(unknown.value).replace("cart-98", "cart-02")
    after = _client(clients, "cart-02")
    assert (after.host_key, after.host_key_offered) == (before.host_key, before.host_key_offered)


@pytest.mark.parametrize("who", ["principal.lincoln", "edtech.grace"])
def test_principals_and_edtech_may_not_repin(clients: District, hosts: FakeHosts, who: str) -> None:
    _change_key(clients, hosts)
    _probe(clients, hosts)
    calls = len(hosts.calls)

    with pytest.raises(Refused, match="cannot manage client computers"):
        reach.repin(clients.ctx, clients[who], "cart-02", reason="swap", fetch=hosts.fetch_host_key)
    assert len(hosts.calls) == calls
    assert _client(clients, "cart-02").host_key_offered is not None


@pytest.mark.parametrize("reason", ["", "   \n"])
def test_a_blank_reason_is_refused_with_a_clear_message(
    clients: District, hosts: FakeHosts, reason: str
) -> None:
    _change_key(clients, hosts)
    _probe(clients, hosts)

    with pytest.raises(InvalidInput) as caught:
        reach.repin(
            clients.ctx,
            clients["btc.lincoln"],
            "cart-02",
            reason=reason,
            fetch=hosts.fetch_host_key,
        )

    assert caught.value.field == "reason"
    assert "say why the key is re-pinned" in str(caught.value)
    assert _client(clients, "cart-02").host_key_offered is not None


def test_repin_refuses_a_key_that_changed_again_since_the_refusal_and_changes_nothing(
    clients: District, hosts: FakeHosts
) -> None:
    _change_key(clients, hosts)
    _probe(clients, hosts)
    before = _client(clients, "cart-02")
    entries = len(_client_audit(clients))
    hosts.keys[CART_02] = new_key()  # a third key, never reviewed

    with pytest.raises(Conflict) as caught:
        reach.repin(
            clients.ctx,
            clients["it.ana"],
            "cart-02",
            reason="reinstalled",
            fetch=hosts.fetch_host_key,
        )

    assert "the key changed again since it was refused; probe again and review" in str(caught.value)
    after = _client(clients, "cart-02")
    assert (after.host_key, after.host_key_offered, after.last_seen) == (
        before.host_key,
        before.host_key_offered,
        before.last_seen,
    )
    assert len(_client_audit(clients)) == entries


def test_repin_of_an_unreachable_mac_changes_nothing_and_names_the_client(
    clients: District, hosts: FakeHosts
) -> None:
    _change_key(clients, hosts)
    _probe(clients, hosts)
    hosts.down[CART_02] = HostUnreachable("connection refused", host="127.0.0.22:22")

    with pytest.raises(HostUnreachable) as caught:
        reach.repin(
            clients.ctx, clients["it.ana"], "cart-02", reason="swap", fetch=hosts.fetch_host_key
        )

    assert str(caught.value).startswith("cart-02: connection refused at 127.0.0.22:22")
    assert _client(clients, "cart-02").host_key_offered is not None


def test_a_pc_has_no_host_key_to_repin(clients: District, hosts: FakeHosts) -> None:
    with pytest.raises(InvalidInput, match="no SSH host key"):
        reach.repin(
            clients.ctx, clients["it.ana"], "lab-01", reason="swap", fetch=hosts.fetch_host_key
        )
    assert hosts.calls == []
