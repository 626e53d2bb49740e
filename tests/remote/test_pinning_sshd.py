"""Host key pinning end to end, from the command line, on real sshd hosts:
keys pinned at import, a reinstalled Mac's new key refused by ``clients
probe`` and by Ansible, then re-pinned with a reason.

These tests start hosts of their own (one gets a new host key); the shared
``ssh_hosts`` are never changed."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import select

from orchestrator.db.models import Client
from orchestrator.db.session import transaction
from orchestrator.remote.ssh import fingerprint
from tests.support.cli import Invoke, as_json
from tests.support.fixtures import empty_building
from tests.support.sshd import SSHHost, kill_host, restart_with_new_host_key, start, start_hosts

pytestmark = pytest.mark.db


@pytest.fixture
def macs() -> Iterator[list[SSHHost]]:
    with start_hosts(3) as hosts:
        yield hosts


@pytest.fixture
def lincoln(
    orchestrator: Invoke,
    engine: sa.Engine,
    macs: list[SSHHost],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """The sample district with building 101's clients gone, and an Ansible
    inventory of the three Macs (a CSV export has no port or login column)."""
    empty_building(engine, "101")
    lines = ["[cart_3]"]
    for i, h in enumerate(macs, 1):
        lines.append(
            f"{h.name} ansible_host={h.address} ansible_port={h.port} ansible_user={h.username} "
            f'building=101 room=cart-3 platform=mac model="MacBookAir10,1" serial=C02PIN{i:04d} '
            f"mac=02:00:00:00:0a:{i:02x} orchestrator_root={h.root} "
            "ansible_python_interpreter=/usr/bin/python3"
        )
    path = tmp_path / "cart-3.ini"
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("ORCHESTRATOR_SSH_KEY_FILE", str(macs[0].key_file))
    return path


def _keys(engine: sa.Engine) -> dict[str, tuple[str | None, str | None]]:
    with transaction(engine) as s:
        rows = s.exec(select(Client).where(Client.room == "cart-3"))
        return {c.hostname: (c.host_key, c.host_key_offered) for c in rows}


def _run_id(printed: str) -> int:
    """The run a command printed ("run N: ping on …"); the sample district has runs of its own."""
    found = re.search(r"run (\d+): ", printed)
    assert found, printed
    return int(found.group(1))


def _results(orchestrator: Invoke, run_id: int) -> dict[str, tuple[str, str]]:
    shown = as_json(orchestrator("--as", "it.rivera", "runs", "show", str(run_id), "--json"))
    return {h["hostname"]: (h["status"], h["message"] or "") for h in shown["hosts"]}


def test_keys_pinned_at_import_a_changed_key_refused_then_repinned_with_a_reason(
    orchestrator: Invoke,
    engine: sa.Engine,
    lincoln: Path,
    macs: list[SSHHost],
) -> None:
    imported = orchestrator("--as", "it.rivera", "clients", "import", str(lincoln))

    assert "imported 3 clients into building(s) 101" in imported.stdout
    assert "pinned at first probe: 3 of 3 Macs" in imported.stdout
    assert _keys(engine) == {h.name: (h.host_key, None) for h in macs}

    # mac-02 is reinstalled: sshd comes back with a new host key.
    pinned = macs[1].host_key
    new_key = restart_with_new_host_key(macs[1])
    probed = orchestrator("--as", "btc.lincoln", "clients", "probe", "--building", "101", expect=8)

    assert f"mac-02: host key changed {fingerprint(new_key)}" in probed.stdout  # live line
    assert (
        f"host key changed: mac-02 offers {fingerprint(new_key)}, pinned is {fingerprint(pinned)}"
        in probed.stdout
    )
    assert _keys(engine)["mac-02"] == (pinned, new_key)  # the pinned key kept
    assert _keys(engine)["mac-01"] == (macs[0].host_key, None)
    listed = as_json(
        orchestrator("--as", "btc.lincoln", "clients", "list", "--room", "cart-3", "--json")
    )
    assert {c["hostname"]: c["flags"] for c in listed} == {
        "mac-01": [],
        "mac-02": ["host key changed: refused"],
        "mac-03": [],
    }

    failed = orchestrator("--as", "btc.lincoln", "run", "ping", "--building", "101", expect=9)
    assert "— failed" in failed.stdout
    first = _results(orchestrator, _run_id(failed.stdout))
    assert {h: status for h, (status, _) in first.items()} == {
        "mac-01": "ok",
        "mac-02": "unreachable",
        "mac-03": "ok",
    }
    assert "Host key verification failed" in first["mac-02"][1]

    blank = orchestrator("--as", "btc.lincoln", "clients", "repin", "mac-02", expect=2)
    assert "say why the key is re-pinned" in blank.stderr
    repinned = orchestrator(
        "--as",
        "btc.lincoln",
        "clients",
        "repin",
        "mac-02",
        "--reason",
        "reinstalled macOS after a disk failure, ticket 5120",
    )
    assert "mac-02 re-pinned" in repinned.stdout
    assert _keys(engine)["mac-02"] == (new_key, None)

    again = orchestrator("--as", "btc.lincoln", "run", "ping", "--building", "101")
    assert "— successful" in again.stdout
    second = _results(orchestrator, _run_id(again.stdout))
    assert {h: status for h, (status, _) in second.items()} == {h.name: "ok" for h in macs}
    audit = as_json(orchestrator("--as", "it.rivera", "audit", "--json"))
    repins = [e for e in audit if e["action"] == "client.repin_host_key"]
    assert [e["reason"] for e in repins] == ["reinstalled macOS after a disk failure, ticket 5120"]


def test_an_unreachable_mac_stays_imported_unpinned_and_is_pinned_at_its_first_probe(
    orchestrator: Invoke,
    engine: sa.Engine,
    lincoln: Path,
    macs: list[SSHHost],
) -> None:
    kill_host(macs[2])
    try:
        imported = orchestrator("--as", "it.rivera", "clients", "import", str(lincoln))
    finally:
        start(macs[2])

    assert "pinned at first probe: 2 of 3 Macs" in imported.stdout
    assert "not reached, left unpinned: mac-03" in imported.stdout
    assert _keys(engine)["mac-03"] == (None, None)  # imported all the same
    listed = as_json(
        orchestrator("--as", "it.rivera", "clients", "list", "--room", "cart-3", "--json")
    )
    assert {c["hostname"]: c["flag"] for c in listed}["mac-03"] == "host key not pinned"

    probed = orchestrator("--as", "btc.lincoln", "clients", "probe", "--host", "mac-03", "--json")
    results = json.loads(probed.stdout)
    assert [(r["hostname"], r["result"]) for r in results] == [("mac-03", "pinned")]
    assert _keys(engine)["mac-03"] == (macs[2].host_key, None)
