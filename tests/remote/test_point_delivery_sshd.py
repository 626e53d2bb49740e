"""Clients pull what their building's distribution point holds: real sshd hosts as
the Macs and as the point's host, the project's point server in front of the
point's folder, the real runner and playbooks, and each Mac's pull agent
(``orchestrator-pull``) fetching over HTTP from the point; on both databases.
(macOS steps verified on Linux hosts with stand-in commands.)

What is proved: a staged package is pulled from the point, not served by the
orchestrator; the next version is seeded with the one pulled before, so a
Mac fetches only the chunks it lacks; a point that serves anything but
the signed bytes gets the package refused before the installer runs; and
install_agent puts the agent's bundle on the Macs (without a package index),
leaves a Mac's agent as it was when a bundle fails to install, and says which
Python a Mac lacks.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import col, select

from orchestrator.db.models import Client
from orchestrator.db.session import transaction
from orchestrator.domain.states import Kind, State
from orchestrator.imagestore.point import PointServer
from orchestrator.services import agent_bundle, image_store, runs, staging
from tests.factories import District
from tests.support.agent import agent_wheels, agent_wheels_without, pull_agent  # noqa: F401 (a fixture)
from tests.support.fixtures import import_as_clients
from tests.support.points import add_point, serving_point
from tests.support.sshd import SSHHost, start_hosts

SIGNER = "Developer ID Installer: MIT Scratch (ABCDE12345)"
RECEIPT = "edu.mit.scratch.point"


@pytest.fixture(scope="module")
def hosts() -> Iterator[list[SSHHost]]:
    """Two Macs and the point's host, this module's own."""
    with start_hosts(3) as started:
        yield started


@pytest.fixture
def point(hosts: list[SSHHost]) -> Iterator[PointServer]:
    with serving_point(hosts[2]) as server:
        yield server


@pytest.fixture
def cart(
    district: District,
    hosts: list[SSHHost],
    point: PointServer,
    pull_agent: Path,  # noqa: F811
) -> District:
    macs = hosts[:2]
    for h in macs:  # what earlier tests of this module left on the Macs
        shutil.rmtree(h.root / "var/orchestrator/store", ignore_errors=True)
        shutil.rmtree(h.root / "Applications" / RECEIPT, ignore_errors=True)
        (h.root / "var/db/receipts" / f"{RECEIPT}.plist").unlink(missing_ok=True)
    import_as_clients(district, macs, room="cart-8", serial="PNT", mac_byte=0x0E)
    with transaction(district.ctx.engine) as s:
        for c in s.exec(select(Client).where(col(Client.hostname).in_([h.name for h in macs]))):
            c.host_vars = dict(c.host_vars) | {"orchestrator_pull": str(pull_agent)}
            s.add(c)
    add_point(district, hosts[2], point)
    return district


def _released_pkg(d: District, folder: Path, version: str, payload: str) -> tuple[str, Path]:
    """A released, stored Mac package: a stand-in installer carrying ``payload``."""
    path = folder / f"scratch-{version}.pkg"
    path.write_text(
        json.dumps(
            {
                "identifier": RECEIPT,
                "version": version,
                "signer": SIGNER,
                "payload": {f"Applications/{RECEIPT}/VERSION": version, "blob": payload},
            }
        )
    )
    ref = d.package(
        "scratch",
        version,
        platform="mac",
        installer=str(path),
        detection_rule=f"pkgutil:{RECEIPT}>={version}",
        to=State.PUBLISHED,
    )
    image_store.import_artifact(d.ctx, d["it.ana"], Kind.PACKAGE, ref, path)
    return ref, path


def _stage(d: District, hosts: list[SSHHost], ref: str) -> staging.StagingView:
    point_host = hosts[2]
    return staging.stage(
        d.ctx,
        d["btc.lincoln"],
        Kind.PACKAGE,
        ref,
        "101",
        credentials=runs.Credentials(
            ssh_user=point_host.username, ssh_key=point_host.key_file.read_text()
        ),
    )


def _install(d: District, hosts: list[SSHHost], ref: str) -> runs.RunView:
    return runs.run_playbook(
        d.ctx,
        d["btc.lincoln"],
        "install_package",
        building="101",
        credentials=runs.Credentials(ssh_key=hosts[0].key_file.read_text()),
        package=ref,
    )


def _payload(seed: int, size: int = 3 * 2**20) -> str:
    return random.Random(seed).randbytes(size // 2).hex()


def test_a_staged_package_is_pulled_by_each_mac_from_the_point_and_installed(
    cart: District, hosts: list[SSHHost], point: PointServer, tmp_path: Path
) -> None:
    ref, installer = _released_pkg(cart, tmp_path, "3.29", _payload(1))
    staged = _stage(cart, hosts, ref)
    assert staged.state == "staged"
    before = point.health()["served"]

    view = _install(cart, hosts, ref)

    assert view.status == "successful", view
    assert {h.status for h in view.hosts} == {"changed"}
    served = point.health()["served"]
    assert isinstance(served, dict) and isinstance(before, dict)
    # Each Mac read the signed manifest from the point, then its chunks.
    assert served.get("manifest", 0) - before.get("manifest", 0) == 2
    assert served.get("chunk", 0) - before.get("chunk", 0) >= 2 * staged.chunks_total
    for h in hosts[:2]:
        files = h.root / "var/orchestrator/store/files"
        assert (files / f"{RECEIPT}.pkg").read_bytes() == installer.read_bytes()
        assert (h.root / f"Applications/{RECEIPT}/VERSION").read_text() == "3.29"
        # The file and its index: no partial output, no chunk cache beside them.
        assert sorted(p.name for p in files.iterdir()) == [f"{RECEIPT}.pkg", f"{RECEIPT}.pkg.caibx"]


def test_the_next_version_is_seeded_with_the_one_pulled_before(
    cart: District, hosts: list[SSHHost], point: PointServer, tmp_path: Path
) -> None:
    old = _payload(2)
    new = old[: len(old) // 2] + _payload(3, 100_000) + old[len(old) // 2 + 100_000 :]
    first, _ = _released_pkg(cart, tmp_path, "3.29", old)
    second, installer = _released_pkg(cart, tmp_path, "3.30", new)
    whole = _stage(cart, hosts, first)
    _stage(cart, hosts, second)
    assert _install(cart, hosts, first).status == "successful"
    before = point.health()["served"]
    assert isinstance(before, dict)

    view = _install(cart, hosts, second)

    assert view.status == "successful", view
    after = point.health()["served"]
    assert isinstance(after, dict)
    fetched = after.get("chunk", 0) - before.get("chunk", 0)
    assert 0 < fetched < 2 * whole.chunks_total / 4  # both Macs, a quarter of a whole copy
    for h in hosts[:2]:
        assert (h.root / f"Applications/{RECEIPT}/VERSION").read_text() == "3.30"
        pulled = h.root / "var/orchestrator/store/files" / f"{RECEIPT}.pkg"
        assert pulled.read_bytes() == installer.read_bytes()


def test_a_point_serving_other_bytes_gets_the_package_refused_before_the_installer(
    cart: District, hosts: list[SSHHost], point: PointServer, tmp_path: Path
) -> None:
    ref, _ = _released_pkg(cart, tmp_path, "3.29", _payload(4))
    _stage(cart, hosts, ref)
    (manifest,) = (point.root / "manifests").glob("*.json")
    envelope = json.loads(manifest.read_bytes())
    body = json.loads(base64.b64decode(envelope["manifest"]))
    body["sunset"] = "2099-12-31"  # a point stretching the sunset the district signed
    envelope["manifest"] = base64.b64encode(json.dumps(body).encode()).decode()
    manifest.write_text(json.dumps(envelope))
    logs = [h.root / "var/log/standins.log" for h in hosts[:2]]
    before = [len(log.read_text().splitlines()) if log.exists() else 0 for log in logs]

    view = _install(cart, hosts, ref)

    assert view.status == "failed"
    assert {h.status for h in view.hosts} == {"failed"}
    for h in view.hosts:
        assert "signature" in (h.message or "").lower() or "tamper" in (h.message or "").lower()
    for h, log, seen in zip(hosts[:2], logs, before, strict=True):
        assert not (h.root / "var/db/receipts" / f"{RECEIPT}.plist").exists()
        ran = log.read_text().splitlines()[seen:]
        assert ran and not [line for line in ran if line.startswith("installer")]


@pytest.fixture
def agentless_cart(district: District, hosts: list[SSHHost], point: PointServer) -> District:
    """The two Macs with no pull agent set in their variables, and IT's agent bundle."""
    macs = hosts[:2]
    for h in macs:
        for left in ("var/orchestrator", f"Applications/{RECEIPT}"):
            shutil.rmtree(h.root / left, ignore_errors=True)
        (h.root / "var/db/receipts" / f"{RECEIPT}.plist").unlink(missing_ok=True)
    import_as_clients(district, macs, room="cart-9", serial="AGT", mac_byte=0x0F)
    add_point(district, hosts[2], point)
    agent_bundle.build(district.ctx, district["it.ana"], find_links=agent_wheels(), no_index=True)
    return district


def _install_agent(d: District, hosts: list[SSHHost]) -> runs.RunView:
    return runs.run_playbook(
        d.ctx,
        d["btc.lincoln"],
        "install_agent",
        building="101",
        credentials=runs.Credentials(ssh_key=hosts[0].key_file.read_text()),
    )


def _agent_of(h: SSHHost) -> Path:
    return h.root / "var/orchestrator/agent/current"


def _assert_each_mac_pulls_and_installs(
    d: District, hosts: list[SSHHost], tmp_path: Path, version: str, *, seed: int
) -> None:
    """A package released, staged and installed: each Mac pulled it whole and right."""
    ref, installer = _released_pkg(d, tmp_path, version, _payload(seed))
    _stage(d, hosts, ref)
    installed = _install(d, hosts, ref)
    assert installed.status == "successful", installed
    for h in hosts[:2]:
        pulled = h.root / "var/orchestrator/store/files" / f"{RECEIPT}.pkg"
        assert pulled.read_bytes() == installer.read_bytes()


def test_install_agent_puts_the_bundle_on_each_mac_and_the_pulls_use_it(
    agentless_cart: District, hosts: list[SSHHost], tmp_path: Path
) -> None:
    bundle = agent_bundle.current(agentless_cart.ctx)

    view = _install_agent(agentless_cart, hosts)

    assert view.status == "successful", view
    assert {h.status for h in view.hosts} == {"changed"}
    for h in hosts[:2]:
        current = _agent_of(h)
        assert current.resolve().name == bundle.bundle_id
        assert json.loads((current / "bundle.json").read_text())["bundle_id"] == bundle.bundle_id
        assert not (current / "wheels").exists()  # installed, then dropped
    again = _install_agent(agentless_cart, hosts)
    assert again.status == "successful"
    assert {h.status for h in again.hosts} == {"ok"}  # the Macs run this bundle already

    # No orchestrator_pull in the Macs' variables: the pulls find the installed agent.
    _assert_each_mac_pulls_and_installs(agentless_cart, hosts, tmp_path, "3.31", seed=5)


def test_a_bundle_without_the_chunker_installs_and_its_agent_pulls(
    agentless_cart: District, hosts: list[SSHHost], tmp_path: Path
) -> None:
    # As for macOS, where PyPI has no wheel of fastcdc 1.7.0.
    wheels = agent_wheels_without("fastcdc", tmp_path / "wheels")
    agent_bundle.build(
        agentless_cart.ctx, agentless_cart["it.ana"], find_links=wheels, no_index=True
    )

    view = _install_agent(agentless_cart, hosts)

    assert view.status == "successful", view
    for h in hosts[:2]:
        python = _agent_of(h) / "venv/bin/python"
        assert subprocess.run([python, "-c", "import fastcdc"], capture_output=True).returncode
    _assert_each_mac_pulls_and_installs(agentless_cart, hosts, tmp_path, "3.32", seed=6)


def test_a_bundle_that_fails_to_install_leaves_the_agent_the_mac_had(
    agentless_cart: District, hosts: list[SSHHost]
) -> None:
    assert _install_agent(agentless_cart, hosts).status == "successful"
    had = [_agent_of(h).resolve() for h in hosts[:2]]
    bundle = agent_bundle.current(agentless_cart.ctx)
    with open(bundle.folder / agent_bundle.REQUIREMENTS_FILE, "a") as f:
        f.write("no-such-library==1.0\n")  # no wheel for it in the bundle
    described = json.loads((bundle.folder / agent_bundle.BUNDLE_FILE).read_text())
    (bundle.folder / agent_bundle.BUNDLE_FILE).write_text(
        json.dumps(described | {"bundle_id": "e" * 64})
    )

    view = _install_agent(agentless_cart, hosts)

    assert view.status == "failed"
    assert {h.status for h in view.hosts} == {"failed"}
    for h, before in zip(hosts[:2], had, strict=True):
        assert _agent_of(h).resolve() == before
        agent = _agent_of(h) / "venv/bin/orchestrator-pull"
        assert subprocess.run([agent, "--help"], capture_output=True).returncode == 0


def test_a_mac_without_a_usable_python_is_told_which_and_the_others_get_the_agent(
    agentless_cart: District, hosts: list[SSHHost]
) -> None:
    with transaction(agentless_cart.ctx.engine) as s:
        c = s.exec(select(Client).where(Client.hostname == hosts[1].name)).one()
        c.host_vars = dict(c.host_vars) | {"orchestrator_python": "/opt/no-python/bin/python3"}
        s.add(c)

    view = _install_agent(agentless_cart, hosts)

    by_name = {h.hostname: h for h in view.hosts}
    assert by_name[hosts[0].name].status == "changed"
    refused = by_name[hosts[1].name]
    assert refused.status == "failed"
    assert "/opt/no-python/bin/python3 on this client is missing" in (refused.message or "")
    assert not _agent_of(hosts[1]).exists()
