"""A scheduled deployment carried out by ticks against real sshd hosts.

The whole path the scheduler takes: the deployment's rows, the window, the
rollout rules, the run with its batch staged first, ansible-runner and the
project's install_package play on each host (macOS commands stood in for on
Linux hosts), and the clients' rows moved by each host's result.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import select

from orchestrator.clock import FixedClock
from orchestrator.db.models import Client
from orchestrator.db.session import transaction
from orchestrator.domain.states import State
from orchestrator.remote.ansible import AnsibleRunner, HostEvent, PlaybookRequest, RunOutcome
from orchestrator.services import deployments, inventory, rollout_runner, runs, windows
from orchestrator.services.deployments import DeploymentSpec
from tests.factories import District
from tests.support.sshd import SSHHost, start_hosts

INSIDE_TONIGHTS_WINDOW = datetime(2026, 3, 2, 23, 30, tzinfo=UTC)  # 18:30 in New York
SIGNER = "Developer ID Installer: MIT Scratch (ABCDE12345)"


@pytest.fixture(scope="module")
def macs() -> Iterator[list[SSHHost]]:
    """Three hosts of this module's own, since the play changes what is installed."""
    with start_hosts(3) as hosts:
        yield hosts


@pytest.fixture
def cart(district: District, macs: list[SSHHost], tmp_path: Path) -> District:
    lines = ["Hostname,Building,Room,Platform,Model,Serial,MAC,IP"]
    for i, h in enumerate(macs, 1):
        lines.append(
            f'{h.name},101,cart-7,mac,"MacBookAir10,1",RLT{i:04d},02:00:00:00:0e:{i:02x},127.0.0.1'
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
    windows.add_window(
        district.ctx, district["btc.lincoln"], building="101", days="mon-thu", start="18:00",
        end="06:00",
    )  # fmt: skip
    return district


class CountingRunner(AnsibleRunner):
    """The real runner, remembering which hosts each run was given."""

    def __init__(self) -> None:
        super().__init__()
        self.given: list[list[str]] = []

    def run(
        self,
        request: PlaybookRequest,
        on_event: Callable[[HostEvent], None] = lambda _e: None,
        should_cancel: Callable[[], bool] = lambda: False,
    ) -> RunOutcome:
        self.given.append(sorted(h.name for h in request.hosts))
        return super().run(request, on_event, should_cancel)


def _installs(host: SSHHost, ident: str) -> list[str]:
    log = host.root / "var/log/standins.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line for line in lines if line.startswith("installer") and ident in line]


def test_a_deployment_of_a_released_package_is_carried_out_by_ticks_inside_the_window(
    cart: District, macs: list[SSHHost], tmp_path: Path
) -> None:
    ident = f"edu.mit.scratch.roll.{tmp_path.name[-8:]}"
    installer = tmp_path / f"{ident}-3.29.pkg"
    installer.write_text(
        json.dumps(
            {
                "identifier": ident,
                "version": "3.29",
                "signer": SIGNER,
                "payload": {f"Applications/{ident}/VERSION": "3.29"},
            }
        )
    )
    ref = cart.package(
        "scratch",
        "3.29",
        platform="mac",
        installer=str(installer),
        detection_rule=f"pkgutil:{ident}>=3.29",
        to=State.PUBLISHED,
    )
    dep = deployments.create(
        cart.ctx, cart["btc.lincoln"], DeploymentSpec(package=ref, buildings=("101",))
    )
    clock = cart.ctx.clock
    assert isinstance(clock, FixedClock)
    clock.now = INSIDE_TONIGHTS_WINDOW
    runner = CountingRunner()
    credentials = runs.Credentials(ssh_key=macs[0].key_file.read_text())

    first = rollout_runner.tick(cart.ctx, dep.id, credentials=credentials, runner=runner)

    assert first.events == ("window_opened", "all_done"), first
    assert first.state == "completed"
    assert sorted(first.started) == sorted(h.name for h in macs)
    shown = deployments.show(cart.ctx, cart["btc.lincoln"], dep.id)
    assert {c.hostname: (c.state, c.attempts) for c in shown.clients} == {
        h.name: ("succeeded", 1) for h in macs
    }
    (run_id,) = first.runs
    run = runs.show(cart.ctx, cart["it.ana"], run_id)
    assert run.status == "successful" and {h.status for h in run.hosts} == {"changed"}
    for h in macs:
        assert (h.root / "var/db/receipts" / f"{ident}.plist").exists()
        assert (h.root / f"Applications/{ident}/VERSION").read_text() == "3.29"
        assert len(_installs(h, ident)) == 1

    again = rollout_runner.tick(cart.ctx, dep.id, credentials=credentials, runner=runner)

    assert again.state == "completed" and again.started == () and again.runs == ()
    assert runner.given == [sorted(h.name for h in macs)]
    for h in macs:
        assert len(_installs(h, ident)) == 1  # the installer was never called again
