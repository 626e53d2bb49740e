"""Released packages and images delivered by the real runner to real sshd hosts.

The whole path a building tech's run takes: the catalog's gates, the
orchestrator's distribution server, ansible-runner, the project's playbooks,
and the stand-in macOS commands on each host (macOS steps verified on Linux
hosts with stand-in commands). The package is a released one with a local
installer file, served for the run and checked on each host as it downloads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from orchestrator.db.models import Client
from orchestrator.db.session import transaction
from orchestrator.domain.states import State
from orchestrator.services import inventory, runs
from tests.factories import District
from tests.support.sshd import SSHHost, start_hosts


@pytest.fixture(scope="module")
def macs() -> Iterator[list[SSHHost]]:
    """Three hosts of this module's own, since the plays change what is installed."""
    with start_hosts(3) as hosts:
        yield hosts


@pytest.fixture
def cart(district: District, macs: list[SSHHost], tmp_path: Path) -> District:
    lines = ["Hostname,Building,Room,Platform,Model,Serial,MAC,IP"]
    for i, h in enumerate(macs, 1):
        lines.append(
            f'{h.name},101,cart-9,mac,"MacBookAir10,1",DLV{i:04d},02:00:00:00:0d:{i:02x},127.0.0.1'
        )
    assets = tmp_path / "cart.csv"
    assets.write_text("\n".join(lines) + "\n")
    inventory.import_clients(district.ctx, district["it.ana"], assets)
    by_name = {h.name: h for h in macs}
    with transaction(district.ctx.engine) as s:
        for c in s.exec(select(Client)):
            h = by_name[c.hostname]
            c.port, c.login_user, c.host_key = h.port, h.username, h.host_key
            c.host_vars = {
                "orchestrator_root": str(h.root),
                "ansible_python_interpreter": "/usr/bin/python3",
                # The test hosts' users install into their own folder, without sudo.
                "orchestrator_become": "false",
            }
            s.add(c)
    return district


def _pkg(tmp_path: Path, identifier: str, version: str, signer: str | None) -> Path:
    path = tmp_path / f"{identifier}-{version}.pkg"
    path.write_text(
        json.dumps(
            {
                "identifier": identifier,
                "version": version,
                "signer": signer,
                "payload": {f"Applications/{identifier}/VERSION": version},
            }
        )
    )
    return path


def _credentials(macs: list[SSHHost]) -> runs.Credentials:
    return runs.Credentials(ssh_key=macs[0].key_file.read_text())


SIGNER = "Developer ID Installer: MIT Scratch (ABCDE12345)"


def test_a_released_package_is_installed_on_every_mac_and_a_rerun_changes_nothing(
    cart: District, macs: list[SSHHost], tmp_path: Path
) -> None:
    ident = f"edu.mit.scratch.{tmp_path.name[-8:]}"
    installer = _pkg(tmp_path, ident, "3.29", SIGNER)
    ref = cart.package(
        "scratch",
        "3.29",
        platform="mac",
        installer=str(installer),
        detection_rule=f"pkgutil:{ident}>=3.29",
        to=State.PUBLISHED,
    )

    first = runs.run_playbook(
        cart.ctx,
        cart["btc.lincoln"],
        "install_package",
        building="101",
        package=ref,
        credentials=_credentials(macs),
    )

    assert first.status == "successful", first
    assert {h.hostname: h.status for h in first.hosts} == {h.name: "changed" for h in macs}
    for h in macs:
        assert (h.root / "var/db/receipts" / f"{ident}.plist").exists()
        assert (h.root / f"Applications/{ident}/VERSION").read_text() == "3.29"

    again = runs.run_playbook(
        cart.ctx,
        cart["btc.lincoln"],
        "install_package",
        building="101",
        package=ref,
        credentials=_credentials(macs),
    )
    assert again.status == "successful", again
    assert {h.status for h in again.hosts} == {"ok"}
    for h in macs:
        log = (h.root / "var/log/standins.log").read_text()
        installs = [
            line for line in log.splitlines() if line.startswith("installer") and ident in line
        ]
        assert len(installs) == 1, installs  # the re-run never called the installer


def test_an_unsigned_released_package_is_refused_on_the_mac_before_it_installs(
    cart: District, macs: list[SSHHost], tmp_path: Path
) -> None:
    ident = f"org.example.unsigned.{tmp_path.name[-8:]}"
    installer = _pkg(tmp_path, ident, "1.0", None)
    ref = cart.package(
        "unsigned",
        "1.0",
        platform="mac",
        installer=str(installer),
        detection_rule=f"pkgutil:{ident}",
        to=State.PUBLISHED,
    )

    view = runs.run_playbook(
        cart.ctx,
        cart["it.ana"],
        "install_package",
        building="101",
        package=ref,
        credentials=_credentials(macs),
    )

    assert view.status == "failed"
    assert {h.status for h in view.hosts} == {"failed"}
    assert all("sign" in (h.message or "").lower() for h in view.hosts), view.hosts
    for h in macs:
        assert not (h.root / "var/db/receipts" / f"{ident}.plist").exists()


def test_a_mac_thin_image_is_applied_then_passes_its_smoke_checks(
    cart: District, macs: list[SSHHost], tmp_path: Path
) -> None:
    ident = f"edu.mit.scratch.img.{tmp_path.name[-8:]}"
    pkg = cart.package(
        "scratch-img",
        "3.30",
        platform="mac",
        installer=str(_pkg(tmp_path, ident, "3.30", SIGNER)),
        detection_rule=f"pkgutil:{ident}>=3.30",
        to=State.PUBLISHED,
    )
    cart.base("mac", "elementary", "2026.1")  # macOS 15.3, which the hosts run
    image = cart.custom(
        base="mac-elementary@2026.1",
        packages=[pkg],
        settings={"wallpaper": "lions"},
        to=State.PUBLISHED,
    )

    applied = runs.run_playbook(
        cart.ctx,
        cart["btc.lincoln"],
        "apply_image",
        building="101",
        image=image,
        credentials=_credentials(macs),
    )

    assert applied.status == "successful", applied
    for h in macs:
        assert (h.root / "var/orchestrator/image-marker").read_text().strip() == image
        assert (h.root / "var/db/receipts" / f"{ident}.plist").exists()
    checked = runs.run_playbook(
        cart.ctx,
        cart["btc.lincoln"],
        "smoke_checks",
        building="101",
        image=image,
        credentials=_credentials(macs),
    )
    assert checked.status == "successful", checked
    gathered = runs.run_playbook(
        cart.ctx,
        cart["btc.lincoln"],
        "gather_facts",
        building="101",
        credentials=_credentials(macs),
    )
    assert gathered.status == "successful", gathered
    listed = inventory.list_clients(cart.ctx, cart["btc.lincoln"], building="101")
    assert {c.current_image for c in listed} == {image}
