"""A scheduled deployment carried out by ticks against real sshd hosts.

The whole path the scheduler takes: the deployment's rows, the window, the
rollout rules, the run with its batch staged first, ansible-runner and the
project's install_package play on each host (macOS commands stood in for on
Linux hosts), and the clients' rows moved by each host's result.

And the same path killed: a real orchestrator process stops dead at a named
point of a deployment's life (tests/support/crash_child.py: the window opened,
the batch staged, mid-play, the play ended, its results written, between the
waves, in a retry of an unreachable Mac) and is SIGKILLed there; reconcile and
ticks then finish the job without pushing a confirmed client again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from orchestrator.clock import FixedClock
from orchestrator.db.models import AuditEntry, Deployment, DeploymentClient, HostResult, Run
from orchestrator.db.session import transaction
from orchestrator.domain.states import State
from orchestrator.remote.ansible import AnsibleRunner, HostEvent, PlaybookRequest, RunOutcome
from orchestrator.services import audit, deployments, rollout_runner, runs, windows
from orchestrator.services.deployments import DeploymentSpec
from tests.factories import District
from tests.support import sshd
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


# ---------------------------------------------------------------------------
# Killed at any point: a real orchestrator process (tests/support/crash_child.py)
# stops dead at a named point of the deployment and is SIGKILLed there with its
# whole process group, as the service manager kills the service; then the
# service's start (reconcile) and ticks until the deployment is final.
# ---------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
INSTALLER = "task:Run the installer"


def _wait_for(what: str, ready: Callable[[], bool], proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while not ready():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(
                f"the orchestrator ended (rc {proc.returncode}) before {what}: "
                f"{out.decode()}{err.decode()}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within 90 s")
        time.sleep(0.02)


def _kill_at(
    cart: District,
    macs: list[SSHHost],
    deployment_id: int,
    point: str,
    tmp_path: Path,
    *,
    now: datetime = INSIDE_TONIGHTS_WINDOW,
) -> dict[str, Any]:
    """Tick the deployment in a process of its own until ``point``; SIGKILL it there.

    Returns what the process wrote at the point (see tests/support/crash_child.py).
    """
    engine = cart.ctx.engine
    search_path = None
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            search_path = conn.exec_driver_sql("SHOW search_path").scalar()
    marker = tmp_path / f"stopped-{len(list(tmp_path.glob('stopped-*.json')))}.json"
    args = {
        "url": engine.url.render_as_string(hide_password=False),
        "search_path": search_path,
        "zone": str(cart.ctx.zone),
        "now": now.isoformat(),
        "key": str(macs[0].key_file),
        "deployment": deployment_id,
        "point": point,
        "marker": str(marker),
    }
    # Its own session, so the kill takes ansible-playbook and ssh with it, as the
    # service manager kills the whole service.
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.crash_child", json.dumps(args)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _wait_for(f"it reached {point!r}", marker.exists, proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    stopped: dict[str, Any] = json.loads(marker.read_text())
    # ansible-runner starts ansible-playbook in a session (and pty) of its own; the
    # service manager kills those too (the service's whole control group).
    for pid in stopped["frozen"]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    # A killed run leaves its private data dir behind (nothing removes it after a
    # SIGKILL); the runner_finished test looks into it first.
    data_dir = stopped.get("private_data_dir")
    if data_dir and point != "runner_finished":
        shutil.rmtree(data_dir, ignore_errors=True)
    return stopped


def _clients(engine: Engine, deployment_id: int) -> dict[str, DeploymentClient]:
    with transaction(engine) as s:
        rows = s.exec(
            select(DeploymentClient).where(DeploymentClient.deployment_id == deployment_id)
        )
        return {r.hostname: r for r in rows}


def _runs(engine: Engine) -> list[Run]:
    with transaction(engine) as s:
        return list(s.exec(select(Run).order_by(col(Run.id))))


def _last_seq(engine: Engine) -> int:
    with transaction(engine) as s:
        return int(s.exec(select(sa.func.max(AuditEntry.seq))).one() or 0)


def _audit_since(engine: Engine, seq: int) -> list[tuple[str, str, int | None, str]]:
    with transaction(engine) as s:
        found = s.exec(select(AuditEntry).where(AuditEntry.seq > seq).order_by(col(AuditEntry.seq)))
        return [(e.action, e.object_kind, e.object_id, e.reason) for e in found]


def _reconcile(cart: District, now: datetime) -> list[tuple[str, str]]:
    """The service's start after the kill; then nothing may be left running."""
    cart.ctx.clock = FixedClock(now)
    settled = rollout_runner.reconcile(cart.ctx)
    with transaction(cart.ctx.engine) as s:
        assert s.exec(select(Run).where(Run.status == "running")).all() == []
        assert s.exec(select(Deployment).where(Deployment.state == "running")).all() == []
        attached = s.exec(
            select(DeploymentClient).where(
                col(DeploymentClient.state).in_(["staging", "applying", "verifying"]),
                col(DeploymentClient.run_id).is_not(None),
            )
        ).all()
        assert attached == []  # nothing in flight still counts as being run
    return [(r.kind, r.outcome) for r in settled]


def _tick_until_final(
    cart: District, macs: list[SSHHost], deployment_id: int, runner: CountingRunner
) -> rollout_runner.TickResult:
    """Tick as the service does, moving the clock to each next_at, until it ends."""
    clock = cart.ctx.clock
    assert isinstance(clock, FixedClock)
    credentials = runs.Credentials(ssh_key=macs[0].key_file.read_text())
    for _ in range(10):
        result = rollout_runner.tick(
            cart.ctx, deployment_id, credentials=credentials, runner=runner
        )
        if result.next_at is None:
            break
        clock.now = max(clock.now, result.next_at)
    assert result.state == "completed", result
    with transaction(cart.ctx.engine) as s:
        left = s.exec(
            select(DeploymentClient).where(
                col(DeploymentClient.state).in_(["pending", "staging", "applying", "verifying"])
            )
        ).all()
        assert left == []
    audit.verify(cart.ctx, cart["it.ana"])  # the chain holds across the kills
    return result


_STOPPED = "the orchestrator stopped"


@pytest.mark.parametrize(
    ("point", "installed_at_kill"),
    [
        pytest.param("decided", "none", id="after_its_window_opened_before_its_run_was_written"),
        pytest.param("staged", "none", id="after_staging_before_ansible_runner_started"),
        pytest.param("downloading", "none", id="mid_play_while_the_macs_download"),
        pytest.param(INSTALLER, "some", id="after_a_mac_installed"),
        pytest.param("runner_finished", "all", id="after_the_play_before_its_results_were_written"),
        pytest.param("results_written", "all", id="after_the_results_before_the_clients_moved"),
    ],
)
def test_an_orchestrator_killed_mid_run_is_reconciled_and_the_next_tick_finishes_the_job(
    cart: District, macs: list[SSHHost], tmp_path: Path, point: str, installed_at_kill: str
) -> None:
    ident = f"edu.mit.scratch.kill.{tmp_path.name[-8:]}"
    ref = _released(cart, tmp_path, ident)
    dep = deployments.create(
        cart.ctx, cart["btc.lincoln"], DeploymentSpec(package=ref, buildings=("101",))
    )
    engine = cart.ctx.engine
    names = sorted(h.name for h in macs)
    receipts = [h.root / "var/db/receipts" / f"{ident}.plist" for h in macs]

    stopped = _kill_at(cart, macs, dep.id, point, tmp_path)

    # What the kill leaves, point by point.
    installed_before = [p.exists() for p in receipts]
    assert {"none": not any(installed_before), "some": any(installed_before),
            "all": all(installed_before)}[installed_at_kill], installed_before  # fmt: skip
    rows = _clients(engine, dep.id)
    left = _runs(engine)
    with transaction(engine) as s:
        assert s.get(Deployment, dep.id).state == "running"  # type: ignore[union-attr]
        results = s.exec(select(HostResult)).all()
    if point == "decided":
        assert left == [] and {r.state for r in rows.values()} == {"pending"}
        assert stopped["hosts"] == names
    else:
        (killed,) = left
        assert {(r.state, r.run_id) for r in rows.values()} == {("staging", killed.id)}
        if point == "results_written":
            assert killed.status == "successful" and len(results) == 3
        else:
            assert killed.status == "running" and results == []
    if point == "downloading":  # a Mac was fetching the package from the run's server
        assert stopped["path"].startswith("/") and stopped["frozen"], stopped
    if point == "runner_finished":
        # The run's artifacts are on disk (nobody removed them); the database knows nothing.
        data_dir = Path(stopped["private_data_dir"])
        try:
            assert list(data_dir.glob("artifacts/*/job_events/*.json"))
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
    seq = _last_seq(engine)

    settled = _reconcile(cart, INSIDE_TONIGHTS_WINDOW)

    if point == "decided":
        assert settled == [("deployment", "scheduled")]
    elif point == "results_written":
        # Settled from the run's recorded results: nothing is left to do.
        assert settled == [*[("client", "succeeded")] * 3, ("deployment", "completed")]
        assert _clients(engine, dep.id)[names[0]].state == "succeeded"
    else:
        assert settled == [("run", "failed"), *[("client", "staging")] * 3,
                           ("deployment", "scheduled")]  # fmt: skip
        for r in _clients(engine, dep.id).values():
            assert r.run_id is None and _STOPPED in (r.reason or ""), r
    audited = _audit_since(engine, seq)
    if point not in ("decided", "results_written"):
        assert ("run.finish", "run", killed.id, rollout_runner.STOPPED_DURING_RUN) in audited
    if point == "results_written":
        assert [a for a, *_ in audited] == ["deployment.complete"]
    else:
        assert ("deployment.restart", "deployment", dep.id) in [a[:3] for a in audited]

    runner = CountingRunner()
    _tick_until_final(cart, macs, dep.id, runner)

    assert runner.given == ([] if point == "results_written" else [names])
    shown = deployments.show(cart.ctx, cart["btc.lincoln"], dep.id)
    # A client resumed after the kill was run once more: its second attempt.
    tries = 1 if point in ("decided", "results_written") else 2
    assert {c.hostname: (c.state, c.attempts, c.reason) for c in shown.clients} == {
        n: ("succeeded", tries, None) for n in names
    }
    for h, receipt, before in zip(macs, receipts, installed_before, strict=True):
        assert receipt.exists()
        if before or installed_at_kill != "some":
            # Installed before the kill: the re-run found its receipt and left it; not
            # yet: installed once, by the run after the restart.
            assert len(_installs(h, ident)) == 1, h.name
        else:  # its installer may have been under way when the kill came
            assert len(_installs(h, ident)) >= 1
    assert ("deployment.complete", "deployment", dep.id) in [
        a[:3] for a in _audit_since(engine, seq)
    ]


def test_an_orchestrator_killed_between_waves_and_again_never_pushes_its_pilot_again(
    cart: District, macs: list[SSHHost], tmp_path: Path
) -> None:
    ident = f"edu.mit.scratch.wave.{tmp_path.name[-8:]}"
    ref = _released(cart, tmp_path, ident)
    pilot, *rest = sorted(h.name for h in macs)
    dep = deployments.create(
        cart.ctx,
        cart["btc.lincoln"],
        DeploymentSpec(package=ref, buildings=("101",), pilot_names=(pilot,)),
    )
    engine = cart.ctx.engine

    # Killed between the waves: the pilot is done, the next wave not started.
    _kill_at(cart, macs, dep.id, "between_ticks", tmp_path)

    rows = _clients(engine, dep.id)
    assert (rows[pilot].state, rows[pilot].wave, rows[pilot].attempts) == ("succeeded", 1, 1)
    confirmed_at = rows[pilot].updated_at
    (first,) = _runs(engine)
    assert first.status == "successful"
    assert {rows[n].state for n in rest} == {"pending"}
    seq = _last_seq(engine)

    assert _reconcile(cart, INSIDE_TONIGHTS_WINDOW) == [("deployment", "scheduled")]

    assert ("deployment.restart", "deployment", dep.id) in [
        a[:3] for a in _audit_since(engine, seq)
    ]

    # Started again, and killed again: the next wave staged, its run not begun.
    stopped = _kill_at(cart, macs, dep.id, "staged", tmp_path)

    assert stopped["hosts"] == rest
    rows = _clients(engine, dep.id)
    _, killed = _runs(engine)
    assert killed.status == "running"
    assert {(rows[n].state, rows[n].run_id) for n in rest} == {("staging", killed.id)}
    seq = _last_seq(engine)

    settled = _reconcile(cart, INSIDE_TONIGHTS_WINDOW)

    assert settled == [("run", "failed"), ("client", "staging"), ("client", "staging"),
                       ("deployment", "scheduled")]  # fmt: skip
    rows = _clients(engine, dep.id)
    assert (rows[pilot].state, rows[pilot].updated_at) == ("succeeded", confirmed_at)
    for n in rest:
        assert _STOPPED in (rows[n].reason or ""), rows[n]
    audited = _audit_since(engine, seq)
    assert ("run.finish", "run", killed.id, rollout_runner.STOPPED_DURING_RUN) in audited
    assert ("deployment.restart", "deployment", dep.id) in [a[:3] for a in audited]

    runner = CountingRunner()
    _tick_until_final(cart, macs, dep.id, runner)

    assert runner.given == [rest]  # the pilot was not given to any run again
    shown = deployments.show(cart.ctx, cart["btc.lincoln"], dep.id)
    # The rest were resumed after the second kill: run again, their second attempt.
    assert {c.hostname: (c.state, c.attempts) for c in shown.clients} == {
        pilot: ("succeeded", 1)
    } | {n: ("succeeded", 2) for n in rest}
    for h in macs:
        assert len(_installs(h, ident)) == 1, h.name  # the pilot's installer ran once


def test_an_orchestrator_killed_while_retrying_an_unreachable_mac_retries_only_that_mac(
    cart: District, macs: list[SSHHost], tmp_path: Path
) -> None:
    ident = f"edu.mit.scratch.retry.{tmp_path.name[-8:]}"
    ref = _released(cart, tmp_path, ident)
    dep = deployments.create(
        cart.ctx, cart["btc.lincoln"], DeploymentSpec(package=ref, buildings=("101",))
    )
    engine = cart.ctx.engine
    *up, down = macs
    clock = cart.ctx.clock
    assert isinstance(clock, FixedClock)
    clock.now = INSIDE_TONIGHTS_WINDOW
    credentials = runs.Credentials(ssh_key=macs[0].key_file.read_text())
    sshd.kill_host(down)
    try:
        first = rollout_runner.tick(cart.ctx, dep.id, credentials=credentials)
    finally:
        sshd.start(down)  # back before its retry
    assert first.state == "running", first
    rows = _clients(engine, dep.id)
    assert {n: (r.state, r.attempts) for n, r in rows.items()} == {
        up[0].name: ("succeeded", 1),
        up[1].name: ("succeeded", 1),
        down.name: ("unreachable", 1),
    }
    retry_at = rows[down.name].retry_at
    assert retry_at is not None and retry_at > INSIDE_TONIGHTS_WINDOW

    # The retry's run is killed mid-play.
    _kill_at(cart, macs, dep.id, "downloading", tmp_path, now=retry_at)

    rows = _clients(engine, dep.id)
    _, killed = _runs(engine)
    assert killed.status == "running"
    assert (rows[down.name].state, rows[down.name].attempts) == ("staging", 2)
    confirmed = {h.name: rows[h.name].updated_at for h in up}
    seq = _last_seq(engine)

    settled = _reconcile(cart, retry_at)

    assert settled == [("run", "failed"), ("client", "staging"), ("deployment", "scheduled")]
    rows = _clients(engine, dep.id)
    assert _STOPPED in (rows[down.name].reason or ""), rows[down.name]
    assert {h.name: rows[h.name].updated_at for h in up} == confirmed
    audited = _audit_since(engine, seq)
    assert ("run.finish", "run", killed.id, rollout_runner.STOPPED_DURING_RUN) in audited
    assert ("deployment.restart", "deployment", dep.id) in [a[:3] for a in audited]

    runner = CountingRunner()
    _tick_until_final(cart, macs, dep.id, runner)

    assert runner.given == [[down.name]]  # the Macs that succeeded were not pushed again
    shown = deployments.show(cart.ctx, cart["btc.lincoln"], dep.id)
    assert {c.hostname: (c.state, c.attempts) for c in shown.clients} == {
        up[0].name: ("succeeded", 1),
        up[1].name: ("succeeded", 1),
        down.name: ("succeeded", 3),  # unreachable, the killed retry, the run after it
    }
    for h in macs:
        assert len(_installs(h, ident)) == 1, h.name
