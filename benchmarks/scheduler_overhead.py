"""Scheduler overhead: from a maintenance window opening to the first client, and
the orchestrator's share of a scheduled deployment's wall time against Ansible's.

Starts ``--clients`` real sshd hosts on loopback (the test hosts of
tests/support/sshd.py, standing in for the Macs of building 101), then on each
backend (a SQLite file in a temporary folder; a schema of its own on the
PostgreSQL test database, dropped afterwards):

1. imports the hosts as building 101's clients, releases a stand-in Scratch
   package through the real chain, gives building 101 a maintenance window
   opening at the next whole minute at least ``--lead`` seconds away (district
   time) and creates the deployment (``deploy create``: the defaults, so
   batches of 10 clients, forks 10);
2. runs the orchestrator service exactly as ``orchestrator serve`` does
   (:func:`orchestrator.scheduler.service.serve`, in a thread of this
   process: the SQLAlchemy job store on the project's database, the job of
   the deployment moved to the time each tick names), on the real clock, with
   the real Ansible runner wrapped in a timing subclass;
3. waits until the deployment is final, and reports

   * the latency from the window's opening instant to the job firing, to the
     runner being called, to ansible-runner starting, to ansible-playbook
     starting the playbook, and to the first host's first task event;
   * the wall time from that firing to the deployment's completion, split
     into the runner calls (Ansible) and the rest (orchestrator code in the
     ticks, and the scheduler between ticks), and per tick.

Before each deployment, the same play runs on the same hosts with plain
``ansible-playbook`` (a static inventory, the same forks, pinned host keys and
SSH settings, the package served by a plain HTTP server): once over all the
hosts, and once in the deployment's batches of 10, so the reader sees what
Ansible alone costs. Every run installs a package of its own identifier, so
no run finds the work already done.

Timing is by :func:`time.perf_counter`; wall-clock instants (the window's
opening, Ansible's event times) are put on the same time line through one
reading of both clocks taken just before each deployment.

Usage (as root, with openssh-server; PostgreSQL on 127.0.0.1:5432 for the
``postgresql`` backend)::

    .venv/bin/python -m benchmarks.scheduler_overhead [--clients 30] [--backend both]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib
import importlib.metadata
import itertools
import json
import logging
import math
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import yaml
from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
)
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from benchmarks import databases
from orchestrator.config import Settings
from orchestrator.db.models import Run
from orchestrator.db.session import transaction
from orchestrator.domain.states import State
from orchestrator.remote import distribution
from orchestrator.remote.ansible import (
    PLAYBOOKS,
    AnsibleRunner,
    HostEvent,
    HostTarget,
    PlaybookRequest,
    RunOutcome,
    inventory_for,
    known_hosts_for,
)
from orchestrator.scheduler import service
from orchestrator.services import bootstrap, deployments, rollout_runner, runs, windows
from orchestrator.services.context import Context
from orchestrator.services.deployments import DeploymentSpec
from orchestrator.services.rollout_runner import TickResult
from tests.support.sshd import SSHHost, start_hosts

ZONE = "America/New_York"
BIN = Path(sys.executable).parent
SIGNER = "Developer ID Installer: MIT Scratch (ABCDE12345)"
BATCH = DeploymentSpec().per_building_limit
FORKS = 10  # runs.run_playbook's default, which the deployments use
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
FINAL = {"completed", "failed", "cancelled", "paused"}
"""States after which the deployment does nothing more on its own (paused: until a person acts)."""


def _test_helpers() -> tuple[Callable[[Context], Any], Callable[..., None]]:
    """tests.factories.make_district and tests.support.fixtures.import_as_clients, imported
    when run: tests/ is not among the packages mypy checks, and a static import here would
    make it check them too."""
    factories = importlib.import_module("tests.factories")
    fixtures = importlib.import_module("tests.support.fixtures")
    return factories.make_district, fixtures.import_as_clients


# ---------------------------------------------------------------------------
# Time line and records
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Timeline:
    """One reading of the wall clock and of perf_counter, to put wall instants on the latter."""

    wall: float = field(default_factory=time.time)
    perf: float = field(default_factory=time.perf_counter)

    def of(self, instant: datetime) -> float:
        return self.perf + (instant.timestamp() - self.wall)

    def of_iso(self, text: object) -> float | None:
        """An event's ``created`` (ISO 8601, UTC when it carries no zone)."""
        if not isinstance(text, str) or not text:
            return None
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return self.of(moment)


@dataclass
class AnsibleCall:
    """One runner call: the orchestrator's AnsibleRunner.run, and ansible_runner.run in it."""

    hosts: int
    start: float
    end: float = math.nan
    inner_start: float = math.nan
    inner_end: float = math.nan
    handler_s: float = 0.0
    """Time spent in the orchestrator's event handler, called by ansible-runner."""
    events: int = 0
    status: str = ""
    playbook_start: float | None = None
    playbook_start_created: float | None = None
    task_start: float | None = None
    task_start_created: float | None = None
    first_result: float | None = None
    first_result_created: float | None = None


@dataclass
class TickRecord:
    start: float
    end: float = math.nan
    result: TickResult | None = None
    error: str = ""
    playbook_enter: list[float] = field(default_factory=list)
    playbook_exit: list[float] = field(default_factory=list)
    calls: list[AnsibleCall] = field(default_factory=list)
    server_up_s: float = 0.0
    """Starting the run's artifact server (inside "prepare")."""
    server_down_s: float = 0.0
    """Stopping it (inside "record")."""


class Probe:
    """Times the ticks, the runs in them and the runner calls in those."""

    def __init__(self, timeline: Timeline, data_dirs: list[str]) -> None:
        self.timeline = timeline
        self.ticks: list[TickRecord] = []
        self.stray_calls: list[AnsibleCall] = []
        self.data_dirs = data_dirs
        """ansible-runner's private data dirs, appended to as runs start."""
        self.scheduler_events: list[tuple[str, float]] = []
        self.done = threading.Event()
        self.overlapping_ticks = 0
        self._local = threading.local()
        self._lock = threading.Lock()
        self._in_tick = 0

    def current_tick(self) -> TickRecord | None:
        return getattr(self._local, "tick", None)

    def current_call(self) -> AnsibleCall | None:
        return getattr(self._local, "call", None)

    def set_call(self, call: AnsibleCall | None) -> None:
        self._local.call = call

    def wrap_tick(self, original: Callable[..., TickResult]) -> Callable[..., TickResult]:
        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> TickResult:
            rec = TickRecord(time.perf_counter())
            with self._lock:
                self.ticks.append(rec)
                self._in_tick += 1
                if self._in_tick > 1:
                    self.overlapping_ticks += 1
            self._local.tick = rec
            try:
                result = original(*args, **kwargs)
                rec.result = result
                return result
            except BaseException as exc:
                rec.error = f"{type(exc).__name__}: {exc}"
                raise
            finally:
                rec.end = time.perf_counter()
                self._local.tick = None
                with self._lock:
                    self._in_tick -= 1
                if rec.result is not None and rec.result.state in FINAL:
                    self.done.set()

        return timed

    def wrap_run_playbook(self, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            rec = self.current_tick()
            if rec is not None:
                rec.playbook_enter.append(time.perf_counter())
            try:
                return original(*args, **kwargs)
            finally:
                if rec is not None:
                    rec.playbook_exit.append(time.perf_counter())

        return timed

    def wrap_serve_files(
        self, original: Callable[..., AbstractContextManager[Any]]
    ) -> Callable[..., AbstractContextManager[Any]]:
        @contextmanager
        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            rec = self.current_tick()
            began = time.perf_counter()
            stopping = [math.nan]

            def stopped() -> None:
                if rec is not None:
                    rec.server_down_s += time.perf_counter() - stopping[0]

            with ExitStack() as stack:
                stack.callback(stopped)  # runs last, after the server stopped
                server = stack.enter_context(original(*args, **kwargs))
                if rec is not None:
                    rec.server_up_s += time.perf_counter() - began
                try:
                    yield server
                finally:
                    stopping[0] = time.perf_counter()

        return timed

    def wrap_ansible_runner_run(self, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            call = self.current_call()
            if call is None:
                return original(*args, **kwargs)
            self.data_dirs.append(str(kwargs.get("private_data_dir", "")))
            handler = kwargs.get("event_handler")
            timeline = self.timeline

            def handle(event: dict[str, Any]) -> Any:
                began = time.perf_counter()
                kind = event.get("event", "")
                call.events += 1
                if kind == "playbook_on_start" and call.playbook_start is None:
                    call.playbook_start = began
                    call.playbook_start_created = timeline.of_iso(event.get("created"))
                elif kind == "runner_on_start" and call.task_start is None:
                    call.task_start = began
                    call.task_start_created = timeline.of_iso(event.get("created"))
                elif (
                    kind in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable")
                    or kind == "runner_on_skipped"
                ) and call.first_result is None:
                    call.first_result = began
                    call.first_result_created = timeline.of_iso(event.get("created"))
                try:
                    return handler(event) if handler is not None else True
                finally:
                    call.handler_s += time.perf_counter() - began

            kwargs["event_handler"] = handle
            call.inner_start = time.perf_counter()
            try:
                result = original(*args, **kwargs)
                call.status = str(getattr(result, "status", ""))
                return result
            finally:
                call.inner_end = time.perf_counter()

        return timed

    def on_scheduler_event(self, event: JobEvent) -> None:
        names = {
            EVENT_JOB_ERROR: "job error",
            EVENT_JOB_MAX_INSTANCES: "job skipped: maximum running instances reached",
            EVENT_JOB_MISSED: "job missed",
        }
        self.scheduler_events.append(
            (f"{names.get(event.code, event.code)} ({event.job_id})", time.perf_counter())
        )


class TimingRunner(AnsibleRunner):
    """The real runner, timing each call (and cancelling it when the benchmark aborts)."""

    def __init__(self, probe: Probe, abort: threading.Event) -> None:
        super().__init__()
        self.probe = probe
        self.abort = abort

    def run(
        self,
        request: PlaybookRequest,
        on_event: Callable[[HostEvent], None] = lambda _e: None,
        should_cancel: Callable[[], bool] = lambda: False,
    ) -> RunOutcome:
        call = AnsibleCall(len(request.hosts), time.perf_counter())
        tick = self.probe.current_tick()
        (tick.calls if tick is not None else self.probe.stray_calls).append(call)
        self.probe.set_call(call)
        try:
            return super().run(request, on_event, lambda: self.abort.is_set() or should_cancel())
        finally:
            call.end = time.perf_counter()
            self.probe.set_call(None)


@contextmanager
def _instrumented(probe: Probe) -> Iterator[None]:
    """Timing wrappers around the tick, the run in it and ansible_runner.run; undone after."""
    import ansible_runner

    patched = [
        (rollout_runner, "tick", probe.wrap_tick),
        (runs, "run_playbook", probe.wrap_run_playbook),
        (distribution, "serve_files", probe.wrap_serve_files),
        (ansible_runner, "run", probe.wrap_ansible_runner_run),
    ]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in patched]
    try:
        for owner, name, wrap in patched:
            setattr(owner, name, wrap(getattr(owner, name)))
        yield
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------


@dataclass
class DeploymentFigures:
    backend: str
    clients: int
    window_opens_at: datetime
    opening: float
    """The window's opening instant on the perf_counter time line."""
    ticks: list[TickRecord]
    state: str
    reason: str
    scheduler_events: list[tuple[str, float]]
    overlapping_ticks: int
    reference_one_run_s: list[float]
    """Plain ansible-playbook over all the hosts at once: before the deployment and after."""
    reference_batches_s: list[float]
    """The same in the deployment's batches, each summed: before and after."""

    @property
    def working(self) -> list[TickRecord]:
        """The ticks from the one the window's opening fired on."""
        return [t for t in self.ticks if t.start >= self.opening - 0.5]

    def milestones(self) -> list[tuple[str, float | None]]:
        """From the window's opening to the first client's first task, in seconds after it."""
        work = self.working
        tick = work[0] if work else None
        enter = next((t.playbook_enter[0] for t in work if t.playbook_enter), None)
        call = self.calls[0] if self.calls else None

        def after(at: float | None) -> float | None:
            return None if at is None else at - self.opening

        return [
            ("the deployment's job fires (its tick starts)", after(tick.start if tick else None)),
            ("the batch is picked: runs.run_playbook called", after(enter)),
            (
                "run and staging rows committed, file server up: the runner is called",
                after(call.start if call else None),
            ),
            (
                "ansible-runner starts (ansible_runner.run called)",
                after(call.inner_start if call else None),
            ),
            (
                "ansible-playbook starts the playbook (playbook_on_start, Ansible's clock)",
                after(call.playbook_start_created if call else None),
            ),
            (
                "first host's first task starts (runner_on_start, Ansible's clock)",
                after(call.task_start_created if call else None),
            ),
            (
                "... that event reaches the orchestrator's event handler",
                after(call.task_start if call else None),
            ),
            (
                "first task result reaches the handler",
                after(call.first_result if call else None),
            ),
        ]

    @property
    def calls(self) -> list[AnsibleCall]:
        return [c for t in self.working for c in t.calls]

    @property
    def wall_s(self) -> float:
        w = self.working
        return w[-1].end - w[0].start

    @property
    def runner_s(self) -> float:
        return sum(c.end - c.start for c in self.calls)

    @property
    def inner_s(self) -> float:
        return sum(c.inner_end - c.inner_start for c in self.calls)

    @property
    def handler_s(self) -> float:
        return sum(c.handler_s for c in self.calls)

    @property
    def in_ticks_s(self) -> float:
        return sum((t.end - t.start) for t in self.working) - self.runner_s

    @property
    def between_ticks_s(self) -> float:
        w = self.working
        return sum(b.start - a.end for a, b in itertools.pairwise(w))


def _segments(t: TickRecord) -> dict[str, float] | None:
    """decide / prepare / record / map, in seconds, for a tick whose runs all reached the runner."""
    if not t.calls:
        return None
    if not (len(t.calls) == len(t.playbook_enter) == len(t.playbook_exit)):
        return None
    seg = {"decide": t.playbook_enter[0] - t.start, "prepare": 0.0, "record": 0.0, "map": 0.0}
    for i, call in enumerate(t.calls):
        seg["prepare"] += call.start - t.playbook_enter[i]
        seg["record"] += t.playbook_exit[i] - call.end
        after = t.playbook_enter[i + 1] if i + 1 < len(t.calls) else t.end
        seg["map"] += after - t.playbook_exit[i]
    return seg


# ---------------------------------------------------------------------------
# Plain ansible-playbook, the reference
# ---------------------------------------------------------------------------


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _static_server(folder: Path) -> Iterator[str]:
    """A plain HTTP server for ``folder`` on loopback, as an administrator might run one."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="reference-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _package_file(folder: Path, ident: str) -> Path:
    """A stand-in signed package (see tests/support/sshd.py's pkgutil and installer)."""
    path = folder / f"{ident}-3.29.pkg"
    path.write_text(
        json.dumps(
            {
                "identifier": ident,
                "version": "3.29",
                "signer": SIGNER,
                "payload": {f"Applications/{ident}/VERSION": "3.29"},
            }
        )
    )
    return path


def _targets(hosts: list[SSHHost]) -> list[HostTarget]:
    return [
        HostTarget(
            h.name,
            h.address,
            h.port,
            "ssh",
            h.username,
            {
                "orchestrator_root": str(h.root),
                "ansible_python_interpreter": "/usr/bin/python3",
                "orchestrator_become": "false",
            },
            host_key=h.host_key,
        )
        for h in hosts
    ]


def _installed(hosts: list[SSHHost], ident: str) -> list[str]:
    """The hosts lacking the receipt of ``ident``."""
    return [h.name for h in hosts if not (h.root / "var/db/receipts" / f"{ident}.plist").exists()]


class Plain:
    """The same play with plain ansible-playbook on the same hosts."""

    def __init__(self, hosts: list[SSHHost], work: Path) -> None:
        self.hosts = hosts
        self.work = work
        self.served = work / "served"
        self.served.mkdir()
        known = work / "known_hosts"
        known.write_text(known_hosts_for(_targets(hosts)))
        self.inventory = work / "hosts.yml"
        self.inventory.write_text(yaml.safe_dump(inventory_for(_targets(hosts), known)))
        self.runs = 0

    def _env(self) -> dict[str, str]:
        # What the orchestrator's runner sets, but each run's control sockets of its own.
        return {
            **os.environ,
            "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_SSH_RETRIES": "2",
            "ANSIBLE_TIMEOUT": "10",
            "ANSIBLE_NOCOLOR": "True",
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.work / f"cp-{self.runs}"),
            "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=5s",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def run(self, batches: list[list[SSHHost]]) -> list[float]:
        """One ansible-playbook per batch, in turn; their wall times."""
        ident = f"edu.mit.scratch.plain.{uuid.uuid4().hex[:8]}"
        package = _package_file(self.served, ident)
        extravars = self.work / f"vars-{ident}.json"
        times: list[float] = []
        with _static_server(self.served) as base_url:
            extravars.write_text(
                json.dumps(
                    {
                        "package_name": "scratch",
                        "package_version": "3.29",
                        "package_url": f"{base_url}/{package.name}",
                        "package_sha256": hashlib.sha256(package.read_bytes()).hexdigest(),
                        "package_receipt": ident,
                        "package_signer": "",
                    }
                )
            )
            for batch in batches:
                self.runs += 1
                started = time.perf_counter()
                done = subprocess.run(
                    [
                        str(BIN / "ansible-playbook"),
                        "-i",
                        str(self.inventory),
                        "-f",
                        str(FORKS),
                        "--limit",
                        ",".join(h.name for h in batch),
                        "--private-key",
                        str(batch[0].key_file),
                        "-e",
                        f"@{extravars}",
                        str(PLAYBOOKS / "install_package.yml"),
                    ],
                    env=self._env(),
                    capture_output=True,
                    text=True,
                )
                times.append(time.perf_counter() - started)
                if done.returncode != 0:
                    raise SystemExit(f"plain ansible-playbook failed:\n{done.stdout[-3000:]}")
        missing = _installed([h for b in batches for h in b], ident)
        if missing:
            raise SystemExit(f"plain ansible-playbook left no receipt on {', '.join(missing)}")
        return times


# ---------------------------------------------------------------------------
# The deployment through the orchestrator's service
# ---------------------------------------------------------------------------


def _opening(zone: ZoneInfo, lead: float) -> datetime:
    """The next whole minute (windows are HH:MM) at least ``lead`` seconds from now."""
    soon = datetime.now(zone) + timedelta(seconds=lead)
    whole = soon.replace(second=0, microsecond=0)
    return whole if whole == soon else whole + timedelta(minutes=1)


def _deployment(
    backend: str,
    engine: Engine,
    hosts: list[SSHHost],
    work: Path,
    args: argparse.Namespace,
    data_dirs: list[str],
) -> tuple[str, Probe, datetime, float, list[int]]:
    """One deployment carried out by the service; (final state and reason, probe, opening,
    its perf_counter instant, run ids). ``data_dirs`` gets ansible-runner's data dirs."""
    zone = ZoneInfo(ZONE)
    ctx = Context(
        engine=engine,
        zone=zone,
        evidence_dir=work / "evidence",
        secret_key_file=work / "secret.key",
    )
    bootstrap.init_database(ctx)
    make_district, import_as_clients = _test_helpers()
    district = make_district(ctx)
    import_as_clients(district, hosts, room="cart-1", serial="BENCH", mac_byte=0x0B)
    ident = f"edu.mit.scratch.{backend}.{uuid.uuid4().hex[:8]}"
    ref = district.package(
        "scratch",
        "3.29",
        platform="mac",
        installer=str(_package_file(work, ident)),
        detection_rule=f"pkgutil:{ident}>=3.29",
        to=State.PUBLISHED,
    )
    opening_local = _opening(zone, args.lead)
    windows.add_window(
        ctx,
        district["btc.lincoln"],
        building="101",
        days=DAYS[opening_local.weekday()],
        start=f"{opening_local:%H:%M}",
        end=f"{opening_local + timedelta(hours=2):%H:%M}",
    )
    dep = deployments.create(
        ctx, district["btc.lincoln"], DeploymentSpec(package=ref, buildings=("101",))
    )
    opening = opening_local.astimezone(UTC)
    if dep.first_windows.get("101") != opening:
        raise SystemExit(f"the window opens at {dep.first_windows}, not at {opening}")
    timeline = Timeline()
    probe = Probe(timeline, data_dirs)
    abort = threading.Event()
    runner = TimingRunner(probe, abort)
    settings = Settings(
        data_dir=work,
        district_timezone=ZONE,
        ssh_key_file=hosts[0].key_file,
        secret_key_file=work / "secret.key",
        distribution_address="127.0.0.1",
        distribution_port=0,
    )
    stop = threading.Event()
    ready = threading.Event()
    failure: list[BaseException] = []

    def on_ready(_sunset: datetime | None, _housekeeping: datetime | None) -> None:
        rt = service._runtime
        assert rt is not None
        rt.runner = runner  # the real runner, timed
        rt.scheduler.add_listener(
            probe.on_scheduler_event, EVENT_JOB_ERROR | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED
        )
        ready.set()

    def serve() -> None:
        try:
            service.serve(ctx, settings, on_ready=on_ready, stop=stop)
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            probe.done.set()

    thread = threading.Thread(target=serve, name=f"orchestrator-serve-{backend}")
    with _instrumented(probe):
        thread.start()
        try:
            ready.wait(120)
            if failure:
                raise SystemExit(f"the service did not start: {failure[0]!r}")
            print(
                f"{backend}: deployment {dep.id} of {ref} to {len(hosts)} clients; the window "
                f"opens at {opening_local:%H:%M:%S %Z} "
                f"(in {opening.timestamp() - time.time():.1f} s)",
                file=sys.stderr,
                flush=True,
            )
            deadline = timeline.of(opening) + args.timeout
            while not probe.done.wait(1.0):
                if time.perf_counter() > deadline:
                    break
                if not thread.is_alive():
                    break
        finally:
            abort.set()
            stop.set()
            thread.join(300)
    if failure:
        raise SystemExit(f"the service failed: {failure[0]!r}")
    shown = deployments.show(ctx, district["btc.lincoln"], dep.id)
    with transaction(engine) as s:
        run_ids = [r.id or 0 for r in s.exec(select(Run).order_by(col(Run.id)))]
    if not probe.done.is_set():
        stuck = ", ".join(n for n, _ in probe.scheduler_events) or "no scheduler event"
        raise SystemExit(
            f"{backend}: deployment {dep.id} not final after {args.timeout:.0f} s: it is "
            f"{shown.state} ({shown.reason}); counts {shown.counts}; {stuck}"
        )
    before = probe.ticks[0]
    if not (
        before.result is not None
        and before.result.next_at == opening
        and before.end < timeline.of(opening)
    ):
        raise SystemExit(
            f"{backend}: the service's first tick did not move the job to the window's opening "
            f"before it came ({before}); give more --lead"
        )
    missing = _installed(hosts, ident)
    if shown.state == "completed" and missing:
        raise SystemExit(f"{backend}: completed, but no receipt on {', '.join(missing)}")
    calls = sum(len(t.calls) for t in probe.ticks) + len(probe.stray_calls)
    if calls != len(run_ids) or probe.stray_calls:
        raise SystemExit(
            f"{backend}: {len(run_ids)} runs recorded but {calls} runner calls timed "
            f"({len(probe.stray_calls)} outside a tick)"
        )
    return f"{shown.state}: {shown.reason}", probe, opening, timeline.of(opening), run_ids


# ---------------------------------------------------------------------------
# Machine and output
# ---------------------------------------------------------------------------


class LoadSampler:
    """The 1-minute load average every few seconds, while the benchmark runs."""

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(self.every)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _versions(backends: list[str]) -> str:
    parts = [
        f"Python {platform.python_version()}",
        f"{os.cpu_count()} cores",
        f"ansible-core {importlib.metadata.version('ansible-core')}",
        f"ansible-runner {importlib.metadata.version('ansible-runner')}",
        f"APScheduler {importlib.metadata.version('apscheduler')}",
        f"SQLAlchemy {sa.__version__}",
    ]
    if "sqlite" in backends:
        parts.append(f"SQLite {sqlite3.sqlite_version}")
    if "postgresql" in backends:
        admin = sa.create_engine(databases.POSTGRES_URL)
        try:
            with admin.connect() as conn:
                parts.append(f"PostgreSQL {conn.exec_driver_sql('SHOW server_version').scalar()}")
        finally:
            admin.dispose()
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True)
    parts.append((ssh.stderr or ssh.stdout).strip().split(",")[0])
    repo = Path(__file__).resolve().parents[1]
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    changed = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain", "--", "orchestrator"],
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    edited = sum(1 for line in changed if line.strip())
    parts.append(
        f"commit {head or '?'}"
        + (f" with {edited} uncommitted change(s) under orchestrator/" if edited else "")
    )
    return ", ".join(parts)


def _s(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _ms(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{1000 * value:.0f}"


def _startup(call: AnsibleCall) -> float | None:
    """From ansible_runner.run being called to ansible-playbook starting the playbook."""
    if call.playbook_start_created is None:
        return None
    return call.playbook_start_created - call.inner_start


def _spread(samples: list[float]) -> str:
    return f"{statistics.fmean(samples):.2f} ({', '.join(f'{x:.2f}' for x in samples)})"


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole > 0 else "—"


def _print_tables(figures: list[DeploymentFigures]) -> None:
    names = [f.backend for f in figures]
    head = "| | " + " | ".join(names) + " |"
    rule = "|---|" + "---:|" * len(names)

    print("\nWindow opening to the first client: seconds after the window's opening instant\n")
    print(head.replace("| |", "| milestone |", 1))
    print(rule)

    marks = [f.milestones() for f in figures]
    for i, (label, _at) in enumerate(marks[0]):
        print(f"| {label} | " + " | ".join(_s(m[i][1]) for m in marks) + " |")

    print(
        f"\nWhole deployment: {figures[0].clients} clients in batches of {BATCH}, forks {FORKS}, "
        "from the job firing at the window's opening to the deployment completed\n"
    )
    print(head.replace("| |", "| seconds (share of the deployment's wall time) |", 1))
    print(rule)

    def both(value: Callable[[DeploymentFigures], float]) -> str:
        return " | ".join(f"{_s(value(f), 2)} ({_pct(value(f), f.wall_s)})" for f in figures)

    lines: list[tuple[str, str]] = [
        ("deployment wall time", " | ".join(_s(f.wall_s, 2) for f in figures)),
        ("Ansible: the runner calls (AnsibleRunner.run)", both(lambda f: f.runner_s)),
        ("… of which ansible-runner and ansible-playbook (ansible_runner.run)", both(lambda f: f.inner_s)),  # noqa: E501
        ("… of which the orchestrator's runner around it (data dir, inventory, copy of the plays)", both(lambda f: f.runner_s - f.inner_s)),  # noqa: E501
        ("orchestrator: in the ticks, outside the runner", both(lambda f: f.in_ticks_s)),
        ("… of which starting and stopping the run's artifact server", both(lambda f: sum(t.server_up_s + t.server_down_s for t in f.working))),  # noqa: E501
        ("orchestrator: the scheduler between ticks", both(lambda f: f.between_ticks_s)),
        ("orchestrator: all (wall time minus runner calls)", both(lambda f: f.wall_s - f.runner_s)),
        ("orchestrator's event handler, inside ansible_runner.run (overlaps Ansible)", " | ".join(f"{_s(f.handler_s)} ({_pct(f.handler_s, f.wall_s)})" for f in figures)),  # noqa: E501
        (f"reference: plain ansible-playbook, {math.ceil(figures[0].clients / BATCH)} runs of {BATCH} hosts (the batches), summed: mean (before, after)", " | ".join(_spread(f.reference_batches_s) for f in figures)),  # noqa: E501
        (f"reference: plain ansible-playbook, all {figures[0].clients} hosts in one run: mean (before, after)", " | ".join(_spread(f.reference_one_run_s) for f in figures)),  # noqa: E501
        ("deployment wall time over the batched reference's mean", " | ".join(f"{100 * (f.wall_s - statistics.fmean(f.reference_batches_s)) / statistics.fmean(f.reference_batches_s):+.1f}%" for f in figures)),  # noqa: E501
        ("Ansible's runner calls over the batched reference's mean", " | ".join(f"{100 * (f.runner_s - statistics.fmean(f.reference_batches_s)) / statistics.fmean(f.reference_batches_s):+.1f}%" for f in figures)),  # noqa: E501
    ]  # fmt: skip
    for label, cells in lines:
        print(f"| {label} | {cells} |")

    print(
        "\nPer tick, in ms unless said (tick 0: at the service's start, before the window; "
        "in brackets: starting and stopping the run's artifact server)\n"
    )
    print(
        "| backend | tick | starts, s after the opening | clients | scheduler gap before "
        "| decide: gates, window, batch | prepare: gates, run and staging rows (server up) "
        "| runner s | of which ansible_runner.run s | of which ansible-playbook's start-up s "
        "| record: host results, audit (server down) | map: client rows, verdict | tick s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for f in figures:
        previous: float | None = None
        for n, t in enumerate(f.ticks):
            seg = _segments(t)
            gap = None if previous is None else t.start - previous
            if previous is not None and previous < f.opening <= t.start:
                gap = t.start - f.opening  # the first tick in the window: from the opening
            row = [f.backend, str(n), _s(t.start - f.opening, 2)]
            row += [str(sum(c.hosts for c in t.calls)), _ms(gap)]
            if seg is None:
                row += [_ms(t.end - t.start) if not t.calls else "—", *["—"] * 6]
            else:
                row += [
                    _ms(seg["decide"]),
                    f"{_ms(seg['prepare'])} ({_ms(t.server_up_s)})",
                    _s(sum(c.end - c.start for c in t.calls), 2),
                    _s(sum(c.inner_end - c.inner_start for c in t.calls), 2),
                    _s(_startup(t.calls[0]), 2),
                    f"{_ms(seg['record'])} ({_ms(t.server_down_s)})",
                    _ms(seg["map"]),
                ]
            row.append(_s(t.end - t.start, 2))
            print("| " + " | ".join(row) + " |")
            previous = t.end
    for f in figures:
        for what, _at in f.scheduler_events:
            print(f"\n{f.backend}: scheduler: {what}")
        if f.overlapping_ticks:
            print(f"\n{f.backend}: {f.overlapping_ticks} ticks overlapped another tick")


def _leftovers(paths: list[str]) -> list[int]:
    """Processes (ours: ssh control masters, ansible) whose command line names one of ``paths``."""
    found = []
    wanted = [p for p in paths if p]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(p in cmdline for p in wanted):
            found.append(int(entry.name))
    return found


def _end_leftovers(paths: list[str]) -> None:
    deadline = time.monotonic() + 8  # ControlPersist=5s
    while (pids := _leftovers(paths)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def _say_reference(batched: list[float], one_run: list[float], batches: int, hosts: int) -> None:
    print(
        f"plain ansible-playbook: {batches} runs of {BATCH} in {batched[-1]:.1f} s; all {hosts} "
        f"in one run {one_run[-1]:.1f} s",
        file=sys.stderr,
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=int, default=30, help="sshd hosts, all in building 101")
    parser.add_argument(
        "--backend", choices=("sqlite", "postgresql", "both"), default="both", help="default: both"
    )
    parser.add_argument(
        "--lead",
        type=float,
        default=10.0,
        help="the window opens at the next whole minute at least this many seconds away",
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds after the opening to give up"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 60:
        parser.error("--clients: between 1 and 60")
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    logging.getLogger("orchestrator.scheduler").setLevel(logging.INFO)
    versions = _versions(backends)
    started = time.perf_counter()
    figures: list[DeploymentFigures] = []
    dirs: list[str] = []
    with ExitStack() as stack:
        stack.callback(_end_leftovers, dirs)
        load = stack.enter_context(LoadSampler())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scheduler-bench-")))
        dirs.append(str(tmp))
        hosts = stack.enter_context(start_hosts(args.clients))
        print(
            f"{len(hosts)} sshd hosts on 127.0.0.1 (ports {hosts[0].port}…{hosts[-1].port})",
            file=sys.stderr,
            flush=True,
        )
        if any(h.address != "127.0.0.1" for h in hosts):
            raise SystemExit("every host must be on loopback")
        (tmp / "plain").mkdir()
        plain = Plain(hosts, tmp / "plain")
        batches = [hosts[i : i + BATCH] for i in range(0, len(hosts), BATCH)]
        for backend in backends:
            work = tmp / backend
            work.mkdir()
            batched = [sum(plain.run(batches))]
            one_run = [plain.run([hosts])[0]]
            _say_reference(batched, one_run, len(batches), len(hosts))
            way = databases.backend(backend, work, "bench_sched")
            with way as engine:
                outcome, probe, opening, opening_perf, _run_ids = _deployment(
                    backend, engine, hosts, work, args, dirs
                )
            # And again after it, so drift on the machine shows in the reference too.
            batched.append(sum(plain.run(batches)))
            one_run.append(plain.run([hosts])[0])
            _say_reference(batched[-1:], one_run[-1:], len(batches), len(hosts))
            print(f"{backend}: {outcome}", file=sys.stderr, flush=True)
            figures.append(
                DeploymentFigures(
                    backend,
                    len(hosts),
                    opening,
                    opening_perf,
                    probe.ticks,
                    outcome.split(":", 1)[0],
                    outcome,
                    probe.scheduler_events,
                    probe.overlapping_ticks,
                    one_run,
                    batched,
                )
            )
    samples = load.samples or [os.getloadavg()[0]]
    print(
        f"\n{figures[0].clients} loopback sshd hosts (standing in for Macs), one building; "
        f"{versions}; load average (1 min) during the run "
        f"{min(samples):.2f} to {max(samples):.2f}, mean {statistics.fmean(samples):.2f}; "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; "
        f"whole run {time.perf_counter() - started:.0f} s"
    )
    _print_tables(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
