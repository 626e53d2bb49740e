"""A deployment's progress per building and wave (what ``deploy watch`` draws), on both databases.

The test district's clock is Monday 2026-03-02, 10:00 in New York (15:00 UTC);
buildings 101 and 301 have weeknight windows from 18:00 (23:00 UTC) to 06:00.
The clients move through real ticks of the rollout with the fake runner.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from orchestrator.clock import FixedClock
from orchestrator.db.models import DeploymentClient
from orchestrator.db.session import transaction
from orchestrator.domain import rollout
from orchestrator.errors import InvalidInput, NotFound
from orchestrator.remote.ansible import FakePlaybookRunner
from orchestrator.services import deployments, inventory, rollout_runner, runs, windows
from orchestrator.services.deployments import DeploymentSpec, Opening, ProgressCell
from tests.factories import District
from tests.support.fixtures import release_scratch

ASSETS = (
    "Hostname,Building,Room,Platform,Model,Serial,MAC,IP\n"
    "lab-01,101,lab-a,pc,Latitude 3420,SN0001,02:00:00:00:00:01,127.0.0.11\n"
    + "".join(
        f'{h},{b},cart,mac,"MacBookAir10,1",SN10{i},02:00:00:00:01:{i:02x},127.0.0.{20 + i}\n'
        for i, (h, b) in enumerate(
            [
                ("cart-01", "101"),
                ("cart-02", "101"),
                ("cart-03", "101"),
                ("cart-04", "101"),
                ("hs-01", "301"),
                ("hs-02", "301"),
            ],
            1,
        )
    )
)
TONIGHT = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)  # 18:00 EST
MORNING = TONIGHT + timedelta(hours=12)  # 06:00 EST, 11:00 UTC


@pytest.fixture
def district2(district: District, tmp_path: Path) -> District:
    """Macs in 101 (a cart of four, and a PC) and 301 (two), windows in both, Scratch out."""
    path = tmp_path / "assets.csv"
    path.write_text(ASSETS)
    inventory.import_clients(district.ctx, district["it.ana"], path)
    for building in ("101", "301"):
        windows.add_window(
            district.ctx, district["it.ana"], building=building, days="mon-thu", start="18:00",
            end="06:00",
        )  # fmt: skip
    release_scratch(district, "3.29", tmp_path)
    return district


def _create(d: District, who: str = "it.ana", **kw: Any) -> deployments.DeploymentView:
    spec = DeploymentSpec(**({"package": "scratch@3.29", "buildings": ("101", "301")} | kw))
    return deployments.create(d.ctx, d[who], spec)


def _clock(d: District) -> FixedClock:
    clock = d.ctx.clock
    assert isinstance(clock, FixedClock)
    return clock


def _tick(d: District, dep_id: int, runner: FakePlaybookRunner) -> str:
    return rollout_runner.tick(d.ctx, dep_id, credentials=runs.Credentials(), runner=runner).state


def _from_rows(d: District, dep_id: int) -> dict[tuple[str, int], dict[str, int]]:
    """The counts per (building, wave), straight from the client rows."""
    with transaction(d.ctx.engine) as s:
        rows = s.exec(select(DeploymentClient).where(DeploymentClient.deployment_id == dep_id))
        found: dict[tuple[str, int], Counter[str]] = {}
        for r in rows:
            found.setdefault((r.building, r.wave), Counter())[r.state] += 1
    return {k: dict(v) for k, v in found.items()}


def test_counts_per_building_and_wave_follow_the_ticks_with_the_latest_failure(
    district2: District,
) -> None:
    dep = _create(district2, pilot_per_building=1, failure_threshold_pct=50)
    runner = FakePlaybookRunner({"cart-02": "failed", "cart-03": "unreachable"})
    _clock(district2).now = TONIGHT
    assert _tick(district2, dep.id, runner) == "running"  # the pilot: cart-01 and hs-01
    _clock(district2).advance(minutes=1)
    assert _tick(district2, dep.id, runner) == "running"  # wave 2: the rest of 101

    p = deployments.progress(district2.ctx, district2["it.ana"], dep.id)

    assert (p.state, p.final, p.current_wave, p.at) == (
        "running",
        False,
        2,
        TONIGHT + timedelta(minutes=1),
    )
    retry = TONIGHT + timedelta(minutes=1) + rollout.retry_delay(1)
    assert p.cells == [
        ProgressCell("101", 1, True, {"succeeded": 1}, 1, 1, None),
        ProgressCell("101", 2, False, {"succeeded": 1, "failed": 1, "unreachable": 1}, 3, 2, retry),
        ProgressCell("101", 0, False, {"skipped": 1}, 1, 1, None),
        ProgressCell("301", 1, True, {"succeeded": 1}, 1, 1, None),
        ProgressCell("301", 3, False, {"pending": 1}, 1, 0, None),
    ]
    assert {(c.building, c.wave): c.counts for c in p.cells} == _from_rows(district2, dep.id)
    assert p.counts == {"succeeded": 3, "failed": 1, "unreachable": 1, "skipped": 1, "pending": 1}
    ((failed),) = p.failures
    assert (failed.hostname, failed.building, failed.wave, failed.step, failed.reason) == (
        "cart-02",
        "101",
        2,
        "fake task",
        "failed by the fake runner",
    )
    # Both buildings' windows are open now: in force until the morning.
    assert p.next_windows == {
        "101": Opening(p.at, MORNING),
        "301": Opening(p.at, MORNING),
    }


def test_a_waiting_deployment_says_when_it_may_start_and_an_ended_one_nothing(
    district2: District,
) -> None:
    later = TONIGHT + timedelta(days=1, hours=1)  # Tuesday 19:00 EST
    dep = _create(district2, not_before=later)
    ana = district2["it.ana"]

    waiting = deployments.progress(district2.ctx, ana, dep.id)
    assert (waiting.state, waiting.final, waiting.current_wave) == ("scheduled", False, 1)
    assert waiting.next_start == later
    assert waiting.next_windows == {
        "101": Opening(later, MORNING + timedelta(days=1)),
        "301": Opening(later, MORNING + timedelta(days=1)),
    }

    deployments.pause(district2.ctx, ana, dep.id, reason="lab in use")
    paused = deployments.progress(district2.ctx, ana, dep.id)
    assert (paused.state, paused.reason, paused.next_start) == ("paused", "lab in use", later)

    deployments.cancel(district2.ctx, ana, dep.id, reason="wrong version")
    ended = deployments.progress(district2.ctx, ana, dep.id)
    assert (ended.state, ended.final, ended.current_wave) == ("cancelled", True, None)
    assert ended.next_windows == {} and ended.next_start is None
    assert [(c.building, c.wave, c.counts, c.done) for c in ended.cells] == [
        ("101", 1, {"cancelled": 4}, 4),
        ("101", 0, {"skipped": 1}, 1),
        ("301", 2, {"cancelled": 2}, 2),
    ]


def test_the_latest_failures_come_newest_first_and_as_many_as_asked(district2: District) -> None:
    dep = _create(district2, buildings=("101",))
    with transaction(district2.ctx.engine) as s:
        for minutes, host in ((1, "cart-03"), (3, "cart-01"), (2, "cart-04")):
            row = s.exec(select(DeploymentClient).where(DeploymentClient.hostname == host)).one()
            row.state, row.step, row.reason = "failed", "Run the installer", f"{host}: disk full"
            row.updated_at = TONIGHT + timedelta(minutes=minutes)
            s.add(row)
    ana = district2["it.ana"]

    two = deployments.progress(district2.ctx, ana, dep.id, failures=2).failures

    assert [(f.hostname, f.at) for f in two] == [
        ("cart-01", TONIGHT + timedelta(minutes=3)),
        ("cart-04", TONIGHT + timedelta(minutes=2)),
    ]
    assert len(deployments.progress(district2.ctx, ana, dep.id).failures) == 3
    with pytest.raises(InvalidInput, match="cannot be negative"):
        deployments.progress(district2.ctx, ana, dep.id, failures=-1)


def test_someone_who_may_not_see_its_buildings_is_told_it_does_not_exist(
    district2: District,
) -> None:
    dep = _create(district2, who="btc.lincoln", buildings=("101",))

    with pytest.raises(NotFound, match=f"no deployment {dep.id}"):
        deployments.progress(district2.ctx, district2["btc.garcia"], dep.id)
    with pytest.raises(NotFound):
        deployments.progress(district2.ctx, district2["it.ana"], dep.id + 1)
    seen = deployments.progress(district2.ctx, district2["principal.lincoln"], dep.id)
    assert seen.id == dep.id
