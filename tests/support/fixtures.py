"""Pytest fixtures for the loopback test hosts; import them where needed."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from orchestrator.db.models import (
    Building,
    Client,
    DistributionPoint,
    ImageManifest,
    ImageStaging,
)
from orchestrator.db.session import transaction
from orchestrator.domain.states import Kind, State
from orchestrator.services import deployments, image_store, inventory, windows
from orchestrator.services.deployments import DeploymentSpec
from tests.factories import District
from tests.support.sshd import SSHHost, start_hosts


@pytest.fixture(scope="session")
def ssh_hosts() -> Iterator[list[SSHHost]]:
    """Ten running sshd hosts, shared by the session (tests must leave them running)."""
    with start_hosts(10) as hosts:
        yield hosts


def import_as_clients(
    district: District, hosts: list[SSHHost], *, room: str, serial: str, mac_byte: int
) -> None:
    """Import ``hosts`` as Macs of building 101 (as IT would, from a CSV), then point
    each at its sshd: port, login, pinned host key, and the variables test hosts need."""
    lines = ["Hostname,Building,Room,Platform,Model,Serial,MAC,IP"]
    for i, h in enumerate(hosts, 1):
        lines.append(
            f'{h.name},101,{room},mac,"MacBookAir10,1",{serial}{i:04d},'
            f"02:00:00:00:{mac_byte:02x}:{i:02x},127.0.0.1"
        )
    with tempfile.TemporaryDirectory() as folder:
        assets = Path(folder) / "cart.csv"
        assets.write_text("\n".join(lines) + "\n")
        inventory.import_clients(district.ctx, district["it.ana"], assets)
    by_name = {h.name: h for h in hosts}
    with transaction(district.ctx.engine) as s:
        for c in s.exec(select(Client).where(col(Client.hostname).in_(list(by_name)))):
            h = by_name[c.hostname]
            c.port, c.login_user, c.host_key = h.port, h.username, h.host_key
            c.host_vars = {
                "orchestrator_root": str(h.root),
                "ansible_python_interpreter": "/usr/bin/python3",
                # The test hosts' users install into their own folder, without sudo.
                "orchestrator_become": "false",
            }
            s.add(c)


SCRATCH_RECEIPT = "edu.mit.scratch"


def release_scratch(district: District, version: str, folder: Path) -> str:
    """Scratch ``version`` for Macs, its installer a local file in ``folder``,
    published through the real chain; returns its reference."""
    installer = folder / f"Scratch-{version}.pkg"
    installer.write_text(f'{{"identifier": "{SCRATCH_RECEIPT}", "version": "{version}"}}')
    return district.package(
        "scratch",
        version,
        platform="mac",
        installer=str(installer),
        detection_rule=f"pkgutil:{SCRATCH_RECEIPT}>={version}",
        to=State.PUBLISHED,
    )


def empty_building(engine: sa.Engine, number: str, *, into: str = "900") -> None:
    """Move building ``number``'s clients to building ``into`` (the sample's district
    office), so a test has the building to itself. Moved, not deleted: the sample's
    history (the bench's runs and image tests) refers to them."""
    with transaction(engine) as s:
        src = s.exec(select(Building).where(Building.number == number)).one()
        dst = s.exec(select(Building).where(Building.number == into)).one()
        for c in s.exec(select(Client).where(Client.building_id == src.id)):
            assert dst.id is not None
            c.building_id = dst.id
            s.add(c)


def scratch_deployment(
    d: District, folder: Path, buildings: tuple[str, ...], *, stored: bool = True
) -> tuple[str, int]:
    """Scratch 3.29 released (and, with ``stored``, in the image store), deployed by
    IT to a cart Mac in each building, in a Monday-to-Thursday evening window.
    Returns the package's reference and the deployment's id."""
    assets = folder / "assets.csv"
    assets.write_text(
        "Hostname,Building,Room,Platform,Model,Serial,MAC,IP\n"
        + "".join(
            f'cart-{b},{b},cart,mac,"MacBookAir10,1",SN{b},02:00:00:00:{b[1:]}:01,'
            f"127.0.{int(b) - 100}.1\n"
            for b in buildings
        )
    )
    inventory.import_clients(d.ctx, d["it.ana"], assets)
    for b in buildings:
        windows.add_window(
            d.ctx, d["it.ana"], building=b, days="mon-thu", start="18:00", end="06:00"
        )
    scratch = release_scratch(d, "3.29", folder)
    if stored:
        image_store.import_artifact(
            d.ctx, d["it.ana"], Kind.PACKAGE, scratch, folder / "Scratch-3.29.pkg"
        )
    made = deployments.create(
        d.ctx, d["it.ana"], DeploymentSpec(package=scratch, buildings=buildings)
    )
    return scratch, made.id


def move_staging(engine: sa.Engine, state: str, sent: int, started: datetime) -> None:
    """Set the one point's staging of the one stored image, of 200 chunks, to
    ``state`` with ``sent`` sent, as a staging moves its row (made at the first call)."""
    with transaction(engine) as s:
        row = s.exec(select(ImageStaging)).first()
        if row is None:
            point = s.exec(select(DistributionPoint)).one()
            manifest = s.exec(select(ImageManifest)).one()
            assert point.id is not None and manifest.id is not None
            row = ImageStaging(
                point_id=point.id,
                manifest_id=manifest.id,
                state=state,
                chunks_total=200,
                started_at=started,
            )
        row.state, row.chunks_sent = state, sent
        s.add(row)
