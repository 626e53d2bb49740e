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

from orchestrator.domain.states import State
from orchestrator.services import inventory, runs
from tests.factories import District
from tests.support.fixtures import import_as_clients
from tests.support.sshd import SSHHost, start_hosts


@pytest.fixture(scope="module")
def macs() -> Iterator[list[SSHHost]]:
    """Three hosts of this module's own, since the plays change what is installed."""
    with start_hosts(3) as hosts:
        yield hosts


@pytest.fixture
def cart(district: District, macs: list[SSHHost], tmp_path: Path) -> District:
    import_as_clients(district, macs, room="cart-9", serial="DLV", mac_byte=0x0D)
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


def _run(cart: District, macs: list[SSHHost], who: str, playbook: str, **refs: str) -> runs.RunView:
    """The real runner, logging in with the hosts' key."""
    return runs.run_playbook(
        cart.ctx,
        cart[who],
        playbook,
        building="101",
        credentials=runs.Credentials(ssh_key=macs[0].key_file.read_text()),
        **refs,  # type: ignore[arg-type]
    )


def _released_pkg(
    cart: District, tmp_path: Path, name: str, ident: str, version: str, signer: str | None
) -> str:
    """A released Mac package of a stand-in installer file made here."""
    return cart.package(
        name,
        version,
        platform="mac",
        installer=str(_pkg(tmp_path, ident, version, signer)),
        detection_rule=f"pkgutil:{ident}>={version}",
        to=State.PUBLISHED,
    )


SIGNER = "Developer ID Installer: MIT Scratch (ABCDE12345)"


def test_a_released_package_is_installed_on_every_mac_and_a_rerun_changes_nothing(
    cart: District, macs: list[SSHHost], tmp_path: Path
) -> None:
    ident = f"edu.mit.scratch.{tmp_path.name[-8:]}"
    ref = _released_pkg(cart, tmp_path, "scratch", ident, "3.29", SIGNER)

    first = _run(cart, macs, "btc.lincoln", "install_package", package=ref)

    assert first.status == "successful", first
    assert {h.hostname: h.status for h in first.hosts} == {h.name: "changed" for h in macs}
    for h in macs:
        assert (h.root / "var/db/receipts" / f"{ident}.plist").exists()
        assert (h.root / f"Applications/{ident}/VERSION").read_text() == "3.29"

    again = _run(cart, macs, "btc.lincoln", "install_package", package=ref)
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
    ref = _released_pkg(cart, tmp_path, "unsigned", ident, "1.0", None)

    view = _run(cart, macs, "it.ana", "install_package", package=ref)

    assert view.status == "failed"
    assert {h.status for h in view.hosts} == {"failed"}
    assert all("sign" in (h.message or "").lower() for h in view.hosts), view.hosts
    for h in macs:
        assert not (h.root / "var/db/receipts" / f"{ident}.plist").exists()


def test_a_mac_thin_image_is_applied_then_passes_its_smoke_checks(
    cart: District, macs: list[SSHHost], tmp_path: Path
) -> None:
    ident = f"edu.mit.scratch.img.{tmp_path.name[-8:]}"
    pkg = _released_pkg(cart, tmp_path, "scratch-img", ident, "3.30", SIGNER)
    cart.base("mac", "elementary", "2026.1")  # macOS 15.3, which the hosts run
    image = cart.custom(
        base="mac-elementary@2026.1",
        packages=[pkg],
        settings={"wallpaper": "lions"},
        to=State.PUBLISHED,
    )

    applied = _run(cart, macs, "btc.lincoln", "apply_image", image=image)

    assert applied.status == "successful", applied
    for h in macs:
        assert (h.root / "var/orchestrator/image-marker").read_text().strip() == image
        assert (h.root / "var/db/receipts" / f"{ident}.plist").exists()
    checked = _run(cart, macs, "btc.lincoln", "smoke_checks", image=image)
    assert checked.status == "successful", checked
    gathered = _run(cart, macs, "btc.lincoln", "gather_facts")
    assert gathered.status == "successful", gathered
    listed = inventory.list_clients(cart.ctx, cart["btc.lincoln"], building="101")
    assert {c.current_image for c in listed} == {image}
