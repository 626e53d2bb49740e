"""A scheduled deployment carried out by ticks against real sshd hosts.

The whole path the scheduler takes: the deployment's rows, the window, the
rollout rules, the run with its batch staged first, ansible-runner and the
project's install_package play on each host (macOS commands stood in for on
Linux hosts), and the clients' rows moved by each host's result.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import select

from orchestrator.clock import FixedClock
from orchestrator.db.models import Deployment, DeploymentClient, Run
from orchestrator.db.session import transaction
from orchestrator.domain.states import State
from orchestrator.remote.ansible import AnsibleRunner, HostEvent, PlaybookRequest, RunOutcome
from orchestrator.services import deployments, rollout_runner, runs, windows
from orchestrator.services.deployments import DeploymentSpec
from tests.factories import District
from tests.support.fixtures import import_as_clients
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
    import_as_clients(district, macs, room="cart-7", serial="RLT", mac_byte=0x0E)
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


def _released(cart: District, tmp_path: Path, ident: str) -> str:
    """Scratch 3.29 released for the Macs, as a stand-in installer file made here."""
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
    return cart.package(
        "scratch",
        "3.29",
        platform="mac",
        installer=str(installer),
        detection_rule=f"pkgutil:{ident}>=3.29",
        to=State.PUBLISHED,
    )


def test_a_deployment_of_a_released_package_is_carried_out_by_ticks_inside_the_window(
    cart: District, macs: list[SSHHost], tmp_path: Path
) -> None:
    ident = f"edu.mit.scratch.roll.{tmp_path.name[-8:]}"
    ref = _released(cart, tmp_path, ident)
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


# One tick in a process of its own, as the scheduler's service would make it.
_TICK_IN_A_PROCESS = """
import json, sys
from datetime import datetime
from zoneinfo import ZoneInfo
from orchestrator.clock import FixedClock
from orchestrator.db.session import make_engine
from orchestrator.services import rollout_runner, runs
from orchestrator.services.context import Context
a = json.loads(sys.argv[1])
kw = {"connect_args": {"options": "-csearch_path=" + a["search_path"]}} if a["search_path"] else {}
ctx = Context(
    engine=make_engine(a["url"], **kw),
    zone=ZoneInfo(a["zone"]),
    clock=FixedClock(datetime.fromisoformat(a["now"])),
)
key = open(a["key"]).read()
rollout_runner.tick(ctx, a["deployment"], credentials=runs.Credentials(ssh_key=key))
"""


def _wait_for(what: str, ready: Callable[[], bool], proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while not ready():
        if proc.poll() is not None:
            _out, err = proc.communicate()
            pytest.fail(f"the tick ended (rc {proc.returncode}) before {what}: {err.decode()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within 90 s")
        time.sleep(0.02)


@pytest.mark.parametrize("kill_point", ["as_its_run_starts", "after_a_mac_installed"])
def test_an_orchestrator_killed_mid_run_is_reconciled_and_the_next_tick_finishes_the_job(
    cart: District, macs: list[SSHHost], tmp_path: Path, kill_point: str
) -> None:
    ident = f"edu.mit.scratch.kill.{tmp_path.name[-8:]}"
    ref = _released(cart, tmp_path, ident)
    dep = deployments.create(
        cart.ctx, cart["btc.lincoln"], DeploymentSpec(package=ref, buildings=("101",))
    )
    engine = cart.ctx.engine
    search_path = None
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            search_path = conn.exec_driver_sql("SHOW search_path").scalar()
    args = {
        "url": engine.url.render_as_string(hide_password=False),
        "search_path": search_path,
        "zone": str(cart.ctx.zone),
        "now": INSIDE_TONIGHTS_WINDOW.isoformat(),
        "key": str(macs[0].key_file),
        "deployment": dep.id,
    }
    # Its own session, so the kill takes ansible-playbook and ssh with it, as the
    # service manager kills the whole service.
    proc = subprocess.Popen(
        [sys.executable, "-c", _TICK_IN_A_PROCESS, json.dumps(args)],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    receipts = [h.root / "var/db/receipts" / f"{ident}.plist" for h in macs]

    def run_going() -> bool:
        with transaction(engine) as s:
            return s.exec(select(Run).where(Run.status == "running")).first() is not None

    try:
        _wait_for("its run started", run_going, proc)
        if kill_point == "after_a_mac_installed":
            _wait_for("a Mac installed", lambda: any(p.exists() for p in receipts), proc)
        installed_before = [p.exists() for p in receipts]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with transaction(engine) as s:
        (left,) = s.exec(select(Run)).all()
        assert left.status == "running"  # what the kill leaves
        assert {r.state for r in s.exec(select(DeploymentClient))} == {"staging"}

    cart.ctx.clock = FixedClock(INSIDE_TONIGHTS_WINDOW)
    settled = rollout_runner.reconcile(cart.ctx)

    assert [(r.kind, r.outcome) for r in settled] == [
        ("run", "failed"),
        ("client", "staging"),
        ("client", "staging"),
        ("client", "staging"),
        ("deployment", "scheduled"),
    ]
    with transaction(engine) as s:
        assert s.exec(select(Run).where(Run.status == "running")).all() == []
        assert s.exec(select(Deployment).where(Deployment.state == "running")).all() == []

    runner = CountingRunner()
    credentials = runs.Credentials(ssh_key=macs[0].key_file.read_text())
    again = rollout_runner.tick(cart.ctx, dep.id, credentials=credentials, runner=runner)

    assert again.state == "completed", again
    shown = deployments.show(cart.ctx, cart["btc.lincoln"], dep.id)
    assert {c.hostname: (c.state, c.attempts) for c in shown.clients} == {
        h.name: ("succeeded", 1) for h in macs
    }
    for h, receipt, before in zip(macs, receipts, installed_before, strict=True):
        assert receipt.exists()
        if before:  # installed before the kill: the re-run found its receipt and left it
            assert len(_installs(h, ident)) == 1
        else:
            assert len(_installs(h, ident)) >= 1
