"""The command line against ten real sshd hosts on loopback: ``clients gather``,
``run`` and ``runs show`` as a building tech types them (macOS steps verified
on Linux hosts with stand-in commands)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import select

from orchestrator.db.models import Client
from orchestrator.db.session import transaction
from tests.support.cli import Invoke
from tests.support.fixtures import empty_building, ssh_hosts  # noqa: F401  (fixture)
from tests.support.sshd import SSHHost


@pytest.fixture
def cart(
    orchestrator: Invoke,
    engine: sa.Engine,
    ssh_hosts: list[SSHHost],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Invoke:
    """The sample district with building 101's clients replaced by the ten hosts."""
    empty_building(engine, "101")
    lines = ["Hostname,Building,Room,Platform,Model,Serial,MAC,IP"]
    for i, h in enumerate(ssh_hosts, 1):
        lines.append(
            f'{h.name},101,cart-9,mac,"MacBookAir10,1",IMPORTED{i:04d},'
            f"02:00:00:00:09:{i:02x},127.0.0.1"
        )
    assets = tmp_path / "cart.csv"
    assets.write_text("\n".join(lines) + "\n")
    orchestrator("--as", "it.rivera", "clients", "import", str(assets))
    by_name = {h.name: h for h in ssh_hosts}
    with transaction(engine) as s:
        for c in s.exec(select(Client).where(Client.room == "cart-9")):
            h = by_name[c.hostname]
            c.port, c.login_user, c.host_key = h.port, h.username, h.host_key
            c.host_vars = {
                "orchestrator_root": str(h.root),
                "ansible_python_interpreter": "/usr/bin/python3",
            }
            s.add(c)
    monkeypatch.setenv("ORCHESTRATOR_SSH_KEY_FILE", str(ssh_hosts[0].key_file))
    return orchestrator


def test_gather_from_the_command_line_updates_serials_os_and_images(
    cart: Invoke,
    ssh_hosts: list[SSHHost],  # noqa: F811
) -> None:
    out = cart("--as", "btc.lincoln", "clients", "gather", "--building", "101")

    assert "gather_facts on building 101" in out.stdout
    for h in ssh_hosts:
        assert f"{h.name}: ok" in out.stdout  # one progress line per host step
    listed = json.loads(
        cart("--as", "btc.lincoln", "clients", "list", "--building", "101", "--json").stdout
    )
    by_name = {c["hostname"]: c for c in listed}
    assert by_name["mac-03"]["serial"] == "C02TEST0003"  # the machine's own, not the import's
    assert by_name["mac-03"]["os"] == "macOS 15.3"
    assert by_name["mac-03"]["current_image"] == "101/lab@1.3"
    assert by_name["mac-03"]["software"] == 1
    assert by_name["mac-03"]["disk_free_kb"] > 0


def test_a_run_prints_per_host_results_and_is_shown_again_later(
    cart: Invoke,
    ssh_hosts: list[SSHHost],  # noqa: F811
) -> None:
    listed = cart("--as", "it.rivera", "runs", "list", "--json").stdout
    before = {r["id"] for r in json.loads(listed)}
    out = cart("--as", "btc.lincoln", "run", "ping", "--building", "101", "--room", "cart-9")

    found = re.search(r"run (\d+): ping on building 101 — successful", out.stdout)
    assert found, out.stdout
    runs = json.loads(cart("--as", "btc.lincoln", "runs", "list", "--json").stdout)
    new = [(r["id"], r["status"], len(r["hosts"])) for r in runs if r["id"] not in before]
    assert new == [(int(found.group(1)), "successful", 10)]
    again = cart("--as", "it.rivera", "runs", "show", found.group(1))
    for h in ssh_hosts:
        assert h.name in again.stdout


def test_a_tech_may_not_run_on_another_building_and_nothing_is_recorded(cart: Invoke) -> None:
    before = json.loads(cart("--as", "it.rivera", "runs", "list", "--json").stdout)
    refused = cart("--as", "btc.lincoln", "run", "ping", "--building", "102", expect=3)

    assert "refused" in refused.stderr
    assert json.loads(cart("--as", "it.rivera", "runs", "list", "--json").stdout) == before
