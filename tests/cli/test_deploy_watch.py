"""``orchestrator deploy watch ID`` on the sample district, on both databases.

The command line's clock is fixed at Monday 2026-03-02, 10:00 in New York;
building 101 (and 102 where a test adds it) has a window every evening from
18:00. Clients are moved in their rows as the rollout would move them, and
the watch's wait between looks is replaced, so a test decides what changes
between two looks and the clock moves by exactly the interval asked for.
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from rich.console import Console
from sqlmodel import select

from orchestrator.cli import watch_cmds
from orchestrator.clock import FixedClock
from orchestrator.config import Settings
from orchestrator.db.models import (
    Deployment,
    DeploymentClient,
    ImageManifest,
    Person,
    Releasable,
)
from orchestrator.db.session import transaction
from orchestrator.services import directory, staging
from orchestrator.services.context import Context
from orchestrator.services.staging import PointSpec
from tests.support.cli import Invoke
from tests.support.fixtures import move_staging

Moves = list[Callable[[], None]]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@pytest.fixture
def fixed_clock(clock: FixedClock, monkeypatch: pytest.MonkeyPatch) -> FixedClock:
    """Every command's context reads this clock (the sample district is loaded at it too)."""
    made = Context.from_settings

    def from_settings(cls: type[Context], settings: Settings, *_: Any, **__: Any) -> Context:
        return made(settings, clock=clock)

    monkeypatch.setattr(Context, "from_settings", classmethod(from_settings))
    return clock


@pytest.fixture
def cli(fixed_clock: FixedClock, orchestrator: Invoke) -> Invoke:
    orchestrator(
        "--as", "it.rivera", "windows", "add", "--building", "101", "--days", "mon-sun",
        "--from", "18:00", "--to", "06:00",
    )  # fmt: skip
    return orchestrator


def _lincoln_deployment(cli: Invoke) -> None:
    """Deployment 1: Lincoln's four cart Macs, the first as the pilot; its six PCs excluded."""
    cli(
        "--as", "btc.lincoln", "deploy", "create", "--package", "scratch@3.29", "--building",
        "101", "--pilot-per-building", "1",
    )  # fmt: skip


def _client(
    engine: sa.Engine, host: str, state: str, step: str | None = None, why: str = ""
) -> None:
    with transaction(engine) as s:
        row = s.exec(select(DeploymentClient).where(DeploymentClient.hostname == host)).one()
        row.state, row.step, row.reason = state, step, why or None
        s.add(row)


def _deployment(engine: sa.Engine, state: str, reason: str = "") -> None:
    with transaction(engine) as s:
        dep = s.exec(select(Deployment)).one()
        dep.state, dep.reason = state, reason
        s.add(dep)


def _sleeps(monkeypatch: pytest.MonkeyPatch, clock: FixedClock, moves: Moves) -> list[float]:
    """Each wait moves the clock by the interval, then makes the next change; no more waits."""
    asked: list[float] = []

    def sleep(seconds: float) -> None:
        asked.append(seconds)
        assert moves, "the watch looked again after the deployment ended"
        clock.advance(seconds=seconds)
        moves.pop(0)()

    monkeypatch.setattr(watch_cmds, "_sleep", sleep)
    return asked


def _no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    def sleep(_seconds: float) -> None:
        raise AssertionError("the watch waited, but it should have stopped at once")

    monkeypatch.setattr(watch_cmds, "_sleep", sleep)


def test_once_shows_per_building_and_wave_counts_as_the_rows_stand(
    cli: Invoke, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli(
        "--as", "it.rivera", "windows", "add", "--building", "102", "--days", "mon-sun",
        "--from", "18:00", "--to", "06:00",
    )  # fmt: skip
    cli(
        "--as", "it.rivera", "deploy", "create", "--package", "scratch@3.29", "--building", "101",
        "--building", "102", "--pilot-per-building", "1",
    )  # fmt: skip
    _no_sleep(monkeypatch)
    _deployment(engine, "running")
    _client(engine, "101-cart-1-01", "succeeded")
    _client(engine, "102-library-01", "succeeded")
    _client(engine, "101-cart-1-02", "failed", "Run the installer", "disk full")
    _client(engine, "101-cart-1-03", "applying")

    data = json.loads(cli("--as", "it.rivera", "deploy", "watch", "1", "--once", "--json").stdout)
    out = cli("--as", "it.rivera", "deploy", "watch", "1", "--once").stdout

    with transaction(engine) as s:
        rows = s.exec(select(DeploymentClient)).all()
        expected: dict[tuple[str, int], Counter[str]] = {}
        for r in rows:
            expected.setdefault((r.building, r.wave), Counter())[r.state] += 1
    assert {(c["building"], c["wave"]): c["counts"] for c in data["cells"]} == {
        k: dict(v) for k, v in expected.items()
    }
    assert [
        (c["building"], c["wave"], c["pilot"], c["done"], c["total"]) for c in data["cells"]
    ] == [
        ("101", 1, True, 1, 1),
        ("101", 2, False, 1, 3),
        ("101", 0, False, 6, 6),
        ("102", 1, True, 1, 1),
        # 102-library-02, the bench's elementary Mac, was last seen at its image test
        # in the sample's past: offline, so excluded with the four PCs.
        ("102", 0, False, 5, 5),
    ]
    assert (data["state"], data["final"], data["current_wave"]) == ("running", False, 2)
    assert [(f["hostname"], f["step"], f["reason"]) for f in data["failures"]] == [
        ("101-cart-1-02", "Run the installer", "disk full")
    ]

    assert out.startswith("deployment 1: scratch@3.29 — running  at 2026-03-02 10:00\n")
    table = [line.split() for line in out.splitlines()]
    assert ["101", "wave", "1", "(pilot)", "█" * 24, "1/1", "1", "succeeded"] in table
    assert ["101", "wave", "2", "█" * 8 + "▒" * 8 + "░" * 8, "1/3", "1", "pending,", "1",
            "applying,", "1", "failed"] in table  # fmt: skip
    assert ["102", "excluded", "█" * 24, "5/5", "5", "skipped"] in table
    assert "latest failures" in out
    assert ["101-cart-1-02", "101", "2", "Run", "the", "installer:", "disk", "full"] in table
    assert "next window 101 2026-03-02 18:00 to 2026-03-03 06:00" in out


def test_a_scheduled_frame_says_when_it_may_start_and_a_paused_one_why_it_waits(
    cli: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    _lincoln_deployment(cli)
    _no_sleep(monkeypatch)

    waiting = cli("--as", "principal.lincoln", "deploy", "watch", "1", "--once").stdout
    assert (
        "scheduled: waiting for its next maintenance window; may start 2026-03-02 18:00" in waiting
    )
    assert "next window 101 2026-03-02 18:00 to 2026-03-03 06:00" in waiting

    cli("--as", "btc.lincoln", "deploy", "pause", "1", "--reason", "the lab is in use for testing")
    paused = cli("--as", "principal.lincoln", "deploy", "watch", "1", "--once").stdout

    assert paused.startswith("deployment 1: scratch@3.29 — paused")
    assert (
        "paused: the lab is in use for testing; nothing starts until it is resumed "
        "('orchestrator deploy resume 1'), then at its next window" in paused
    )
    assert "next window 101 2026-03-02 18:00" in paused
    assert "clients" not in paused.split("progress")[0]  # no final summary while it waits
    data = json.loads(cli("--as", "btc.lincoln", "deploy", "watch", "1", "--once", "--json").stdout)
    assert (data["state"], data["reason"]) == ("paused", "the lab is in use for testing")


def test_a_finished_deployment_ends_the_watch_at_once_with_the_show_summary(
    cli: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    _lincoln_deployment(cli)
    cli("--as", "btc.lincoln", "deploy", "cancel", "1", "--reason", "wrong version")
    _no_sleep(monkeypatch)

    watched = cli("--as", "btc.lincoln", "deploy", "watch", "1").stdout
    once = cli("--as", "btc.lincoln", "deploy", "watch", "1", "--once").stdout
    shown = cli("--as", "btc.lincoln", "deploy", "show", "1").stdout

    assert watched.endswith(shown) and once.endswith(shown)
    assert "deployment 1: scratch@3.29 — cancelled" in shown
    assert "cancelled by btc.lincoln: wrong version" in shown
    assert "10:00 deployment 1 is cancelled: wrong version" in watched
    assert "10:00 building 101 wave 2: 3 cancelled" in watched
    assert "Ctrl-C" not in watched + once


def test_off_a_terminal_each_change_is_one_line_until_the_deployment_ends(
    cli: Invoke, engine: sa.Engine, fixed_clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _lincoln_deployment(cli)

    def start() -> None:
        _deployment(engine, "running")
        _client(engine, "101-cart-1-01", "staging")

    def pilot_done() -> None:
        _client(engine, "101-cart-1-01", "succeeded")
        _client(engine, "101-cart-1-02", "applying")
        _client(engine, "101-cart-1-03", "applying")

    def quiet() -> None:
        pass  # nothing changed between these two looks: nothing is printed

    def one_fails() -> None:
        _client(engine, "101-cart-1-02", "failed", "Run the installer", "disk full")
        _client(engine, "101-cart-1-03", "succeeded")
        _client(engine, "101-cart-1-04", "staging")

    def done() -> None:
        _client(engine, "101-cart-1-04", "succeeded")
        _deployment(engine, "completed", "every client is done: 3 succeeded, 1 failed")

    asked = _sleeps(monkeypatch, fixed_clock, [start, pilot_done, quiet, one_fails, done])

    out = cli("--as", "btc.lincoln", "deploy", "watch", "1", "--interval", "60").stdout

    assert asked == [60.0] * 5  # it stopped at the final state: no sixth look
    changes, _, _rest = out.partition("\ndeployment 1: scratch@3.29 — completed")
    assert changes.splitlines() == [
        "10:00 deployment 1 is scheduled: waiting for its next maintenance window; "
        "may start 2026-03-02 18:00",
        "10:00 building 101 wave 1 (pilot): 1 pending",
        "10:00 building 101 wave 2: 3 pending",
        "10:00 building 101 excluded: 6 skipped",
        "10:01 deployment 1 is running",
        "10:01 building 101 wave 1 (pilot): 1 staging",
        "10:02 building 101 wave 1 (pilot): 1 succeeded",
        "10:02 building 101 wave 2: 1 pending, 2 applying",
        "10:04 building 101 wave 2: 1 staging, 1 succeeded, 1 failed",
        "10:04 101-cart-1-02 failed: Run the installer: disk full",
        "10:05 deployment 1 is completed: every client is done: 3 succeeded, 1 failed",
        "10:05 building 101 wave 2: 2 succeeded, 1 failed",
    ]
    shown = cli("--as", "btc.lincoln", "deploy", "show", "1").stdout
    assert out.endswith(shown)
    assert "\x1b[" not in out  # no cursor moves in a log


def test_on_a_terminal_the_frame_is_redrawn_in_place_and_ends_with_the_summary(
    cli: Invoke, engine: sa.Engine, fixed_clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _lincoln_deployment(cli)
    screen = io.StringIO()
    tty = Console(file=screen, force_terminal=True, color_system=None, width=150)
    monkeypatch.setattr(watch_cmds, "console", tty)
    asked = _sleeps(
        monkeypatch,
        fixed_clock,
        [
            lambda: _client(engine, "101-cart-1-01", "verifying"),
            lambda: _deployment(engine, "cancelled", "wrong version"),
        ],
    )

    result = cli("--as", "btc.lincoln", "deploy", "watch", "1")

    drawn = screen.getvalue()
    assert asked == [2.0, 2.0]  # the default interval
    assert result.stdout == ""  # everything went to the terminal
    assert "every 2s; Ctrl-C stops watching" in drawn
    assert "1 verifying" in drawn
    assert "\x1b[1A" in drawn  # the cursor went back up: the frame was redrawn in place
    assert "10:00 building" not in drawn  # no change lines on a terminal
    assert drawn.rstrip().endswith("a PC; this is for Macs")  # the summary's clients table
    assert "deployment 1: scratch@3.29 — cancelled" in drawn


def test_ctrl_c_stops_watching_quietly_and_says_the_deployment_goes_on(
    cli: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    _lincoln_deployment(cli)

    def interrupted(_seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(watch_cmds, "_sleep", interrupted)

    result = cli("--as", "btc.lincoln", "deploy", "watch", "1")

    assert result.stdout.splitlines()[-1] == (
        "stopped watching; deployment 1 goes on in the service ('orchestrator deploy show 1')"
    )
    assert result.stderr == "" and "Aborted" not in result.stdout
    state = json.loads(cli("--as", "btc.lincoln", "deploy", "show", "1", "--json").stdout)
    assert state["state"] == "scheduled"


def test_another_buildings_tech_is_told_it_does_not_exist_and_sees_nothing_of_it(
    cli: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    _lincoln_deployment(cli)
    _no_sleep(monkeypatch)

    for extra in ((), ("--once",), ("--once", "--json")):
        refused = cli("--as", "btc.garcia", "deploy", "watch", "1", *extra, expect=4)
        assert refused.stdout == ""
        assert refused.stderr.strip() == "no deployment 1 (see 'orchestrator deploy list')"
    missing = cli("--as", "btc.lincoln", "deploy", "watch", "9", "--once", expect=4)
    assert "no deployment 9" in missing.stderr and missing.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--interval", "0"), "interval: must be a number of seconds above 0, not 0"),
        (("--interval", "-1.5"), "interval: must be a number of seconds above 0, not -1.5"),
        (("--interval", "nan"), "interval: must be a number of seconds above 0, not nan"),
        (("--json",), "json: --json draws one frame: use it with --once"),
    ],
)
def test_a_bad_interval_or_json_without_once_is_a_clear_error(
    cli: Invoke, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], message: str
) -> None:
    _lincoln_deployment(cli)
    _no_sleep(monkeypatch)

    bad = cli("--as", "btc.lincoln", "deploy", "watch", "1", *args, expect=2)

    assert bad.stderr.strip() == message and bad.stdout == ""


def test_the_watch_reads_the_commands_clock(cli: Invoke, fixed_clock: FixedClock) -> None:
    _lincoln_deployment(cli)
    fixed_clock.now = datetime.fromisoformat("2026-03-02T23:30:00+00:00")  # 18:30 in New York

    data = json.loads(cli("--as", "btc.lincoln", "deploy", "watch", "1", "--once", "--json").stdout)
    out = cli("--as", "btc.lincoln", "deploy", "watch", "1", "--once").stdout

    assert data["at"] == "2026-03-02T23:30:00+00:00"
    assert data["next_start"] == data["at"]  # the window is open now
    assert "at 2026-03-02 18:30" in out
    assert "its window is open: the service starts it at its next look" in out
    assert "window 101 open until 2026-03-03 06:00" in out


def test_deploy_show_says_a_window_is_open_now_and_until_when(
    cli: Invoke, fixed_clock: FixedClock
) -> None:
    _lincoln_deployment(cli)
    before = cli("--as", "btc.lincoln", "deploy", "show", "1").stdout
    assert re.search(r"next window 101\s+2026-03-02 18:00", before)

    fixed_clock.now = datetime(2026, 3, 2, 23, 30, tzinfo=UTC)  # 18:30 in New York
    inside = cli("--as", "btc.lincoln", "deploy", "show", "1").stdout

    assert re.search(r"window 101\s+open now, until 2026-03-03 06:00", inside)
    assert "next window" not in inside


def _scratch_staged_on_a_point(engine: sa.Engine, clock: FixedClock) -> Callable[..., None]:
    """Building 101 gets a point and Scratch 3.29 a signed manifest, as an import and
    the chain's release would leave them; returns how to move the point's staging row."""
    ctx = Context(engine=engine, clock=clock)
    staging.add_point(
        ctx,
        directory.actor(ctx, "it.rivera"),
        PointSpec("101", "dp-101", "images", "/srv/images", "https://dp-101:8443", host_key=KEY),
    )
    with transaction(engine) as s:
        scratch = s.exec(
            select(Releasable).where(Releasable.name == "scratch", Releasable.version == "3.29")
        ).one()
        it = s.exec(select(Person).where(Person.username == "it.rivera")).one()
        assert scratch.id is not None and it.id is not None
        s.add(
            ImageManifest(
                releasable_id=scratch.id,
                index_name="scratch-3.29",
                index_sha256="0" * 64,
                artifact_sha256=scratch.artifact_sha256,
                size=200 << 15,
                chunks=200,
                unique_chunks=200,
                new_bytes=200 << 14,
                imported_by_id=it.id,
                imported_at=clock.now,
                signed=b"signed",
                key_id="k1",
                signed_at=clock.now,
            )
        )

    def move(state: str, sent: int) -> None:
        move_staging(engine, state, sent, clock.now)

    return move


def test_off_a_terminal_a_points_staging_is_one_line_per_change_and_ends_in_the_summary(
    cli: Invoke, engine: sa.Engine, fixed_clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _lincoln_deployment(cli)
    move = _scratch_staged_on_a_point(engine, fixed_clock)

    def end() -> None:
        move("staged", 200)
        _deployment(engine, "cancelled", "wrong version")

    _sleeps(
        monkeypatch,
        fixed_clock,
        [lambda: move("running", 0), lambda: move("running", 120), end],
    )

    out = cli("--as", "btc.lincoln", "deploy", "watch", "1", "--interval", "60").stdout

    point_lines = [line for line in out.splitlines() if "'s point:" in line]
    assert point_lines == [
        "10:00 building 101's point: scratch@3.29 waiting",
        "10:01 building 101's point: scratch@3.29 running, 0 of 200 chunks sent",
        "10:02 building 101's point: scratch@3.29 running, 120 of 200 chunks sent",
        "10:03 building 101's point: scratch@3.29 staged, 200 of 200 chunks sent",
    ]
    shown = cli("--as", "btc.lincoln", "deploy", "show", "1").stdout
    assert out.endswith(shown) and "distribution points" in shown


def test_a_frame_draws_each_points_staging_as_a_bar_of_the_chunks_sent(
    cli: Invoke, engine: sa.Engine, fixed_clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _lincoln_deployment(cli)
    _no_sleep(monkeypatch)
    assert "distribution points" not in cli("--as", "btc.lincoln", "deploy", "watch", "1",
                                             "--once").stdout  # fmt: skip
    move = _scratch_staged_on_a_point(engine, fixed_clock)
    move("running", 50)

    out = cli("--as", "btc.lincoln", "deploy", "watch", "1", "--once").stdout

    table = [line.split() for line in out.splitlines()]
    assert "distribution points" in out
    assert ["101", "scratch@3.29", "█" * 6 + "░" * 18, "50/200", "running"] in table
    data = json.loads(cli("--as", "btc.lincoln", "deploy", "watch", "1", "--once", "--json").stdout)
    assert [(s["state"], s["chunks_sent"], s["chunks_total"]) for s in data["stagings"]] == [
        ("running", 50, 200)
    ]
    assert data["state"] == "scheduled" and data["cells"]  # the progress, as it was
