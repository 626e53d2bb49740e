"""Creating a deployment from its plan, and the owner's controls, on both databases.

The test district's clock is Monday 2026-03-02, 10:00 in New York (15:00 UTC).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from orchestrator.clock import FixedClock
from orchestrator.db.models import DeploymentClient
from orchestrator.db.session import transaction
from orchestrator.domain.states import State
from orchestrator.errors import (
    Conflict,
    InvalidInput,
    InvalidTransition,
    NotFound,
    Refused,
    SunsetReached,
)
from orchestrator.services import audit, deployments, inventory, windows
from orchestrator.services.deployments import DeploymentSpec
from tests.factories import District
from tests.support.fixtures import release_scratch

ASSETS = (
    "Hostname,Building,Room,Platform,Model,Serial,MAC,IP\n"
    "lab-01,101,lab-a,pc,Latitude 3420,SN0001,02:00:00:00:00:01,127.0.0.11\n"
    'cart-01,101,cart,mac,"MacBookAir10,1",SN0003,02:00:00:00:00:03,127.0.0.13\n'
    'cart-02,101,cart,mac,"MacBookAir10,1",SN0005,02:00:00:00:00:05,127.0.0.15\n'
    'cart-03,101,cart,mac,"MacBookAir10,1",SN0006,02:00:00:00:00:06,127.0.0.16\n'
    'hs-01,301,stem,mac,"MacBookAir10,1",SN0004,02:00:00:00:00:04,127.0.0.14\n'
)
TONIGHT = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)  # 18:00 EST


@pytest.fixture
def lincoln(district: District, tmp_path: Path) -> District:
    """Building 101 with a cart of three Macs, a PC, weeknight windows, and Scratch released."""
    path = tmp_path / "assets.csv"
    path.write_text(ASSETS)
    inventory.import_clients(district.ctx, district["it.ana"], path)
    windows.add_window(
        district.ctx, district["btc.lincoln"], building="101", days="mon-thu", start="18:00",
        end="06:00",
    )  # fmt: skip
    release_scratch(district, "3.29", tmp_path)
    return district


def _create(d: District, who: str = "btc.lincoln", **kw: Any) -> deployments.DeploymentView:
    spec = DeploymentSpec(**({"package": "scratch@3.29", "buildings": ("101",)} | kw))
    return deployments.create(d.ctx, d[who], spec)


def test_a_deployment_is_created_as_its_plan_showed_waiting_for_tonights_window(
    lincoln: District,
) -> None:
    dep = _create(lincoln, pilot_per_building=1)

    assert dep.state == "scheduled" and dep.ref == "scratch@3.29"
    assert dep.playbook == "install_package"
    assert dep.first_windows == {"101": TONIGHT}
    assert dep.counts == {"pending": 3, "skipped": 1}
    assert [(w.label, w.counts) for w in dep.waves] == [
        ("wave 1 (pilot)", {"pending": 1}),
        ("wave 2 (building 101)", {"pending": 2}),
    ]
    shown = deployments.show(lincoln.ctx, lincoln["principal.lincoln"], dep.id)
    by_host = {c.hostname: c for c in shown.clients}
    assert by_host["cart-01"].pilot and by_host["cart-01"].wave == 1
    assert by_host["lab-01"].state == "skipped"
    assert by_host["lab-01"].reason == "a PC; this is for Macs"
    (entry,) = audit.entries(lincoln.ctx, lincoln["it.ana"], object_kind="deployment")
    assert entry.action == "deployment.create" and entry.after is not None
    assert entry.after["first_window"] == TONIGHT.isoformat()


def test_a_building_without_a_window_is_refused_at_creation(lincoln: District) -> None:
    with pytest.raises(InvalidInput, match="301 have no maintenance window"):
        _create(lincoln, "it.ana", buildings=("101", "301"))
    assert deployments.list_deployments(lincoln.ctx, lincoln["it.ana"]) == []


def test_times_in_the_past_or_out_of_order_are_refused(lincoln: District) -> None:
    now = lincoln.ctx.now()
    with pytest.raises(InvalidInput, match="deadline .* is in the past"):
        _create(lincoln, deadline=now - timedelta(hours=1))
    with pytest.raises(InvalidInput, match="start .* is in the past"):
        _create(lincoln, not_before=now - timedelta(days=1))
    with pytest.raises(InvalidInput, match="deadline must be after the start"):
        _create(lincoln, not_before=now + timedelta(days=2), deadline=now + timedelta(days=1))
    with pytest.raises(InvalidInput, match="after the deadline"):
        _create(lincoln, deadline=now + timedelta(hours=2))  # before tonight's window
    with pytest.raises(InvalidInput, match="between 0 and 100"):
        _create(lincoln, failure_threshold_pct=150)
    assert deployments.list_deployments(lincoln.ctx, lincoln["it.ana"]) == []


def test_a_sunset_before_the_first_window_is_refused_at_creation(lincoln: District) -> None:
    windows.remove_window(lincoln.ctx, lincoln["it.ana"], 1)
    windows.add_window(
        lincoln.ctx, lincoln["it.ana"], building="101", days="wed", start="18:00", end="22:00"
    )
    lincoln.base("mac", "elementary", "2026.1", sunset_in=1)  # sunset Tuesday
    image = lincoln.custom(base="mac-elementary@2026.1", to=State.PUBLISHED)

    with pytest.raises(SunsetReached, match="before building 101's first window"):
        _create(lincoln, package=None, image=image)


def test_a_plan_that_excludes_every_client_creates_nothing(lincoln: District) -> None:
    with pytest.raises(InvalidInput, match="nothing to deploy"):
        _create(lincoln, clients=("lab-01",), buildings=())


def test_pause_resume_cancel_are_the_owners_audited_and_follow_the_table(
    lincoln: District,
) -> None:
    dep = _create(lincoln)
    tech = lincoln["btc.lincoln"]

    with pytest.raises(InvalidInput, match="say why"):
        deployments.pause(lincoln.ctx, tech, dep.id, reason=" ")
    assert deployments.pause(lincoln.ctx, tech, dep.id, reason="lab in use").state == "paused"
    assert deployments.resume(lincoln.ctx, tech, dep.id).state == "scheduled"
    with pytest.raises(InvalidTransition):
        deployments.retry_failed(lincoln.ctx, tech, dep.id)  # only from paused
    cancelled = deployments.cancel(lincoln.ctx, tech, dep.id, reason="wrong version")
    assert cancelled.state == "cancelled"
    assert cancelled.counts == {"cancelled": 3, "skipped": 1}
    assert cancelled.first_windows == {}
    with pytest.raises(InvalidTransition):
        deployments.resume(lincoln.ctx, tech, dep.id)
    shown = deployments.show(lincoln.ctx, tech, dep.id)
    assert {c.reason for c in shown.clients if c.state == "cancelled"} == {
        "cancelled by btc.lincoln: wrong version"
    }
    actions = [
        e.action for e in audit.entries(lincoln.ctx, lincoln["it.ana"], object_kind="deployment")
    ]
    assert actions == [
        "deployment.create",
        "deployment.pause",
        "deployment.resume",
        "deployment.cancel",
    ]


def test_others_see_it_only_where_they_may_and_cannot_act_on_it(lincoln: District) -> None:
    dep = _create(lincoln)

    with pytest.raises(NotFound):
        deployments.show(lincoln.ctx, lincoln["btc.garcia"], dep.id)
    assert deployments.list_deployments(lincoln.ctx, lincoln["btc.garcia"]) == []
    assert [
        d.id for d in deployments.list_deployments(lincoln.ctx, lincoln["principal.lincoln"])
    ] == [dep.id]
    with pytest.raises(Refused):
        deployments.pause(lincoln.ctx, lincoln["principal.lincoln"], dep.id, reason="why not")
    assert (
        deployments.pause(lincoln.ctx, lincoln["it.ana"], dep.id, reason="assist").state == "paused"
    )


def test_a_building_tech_cannot_deploy_to_another_building(lincoln: District) -> None:
    with pytest.raises(NotFound, match="unknown target"):
        _create(lincoln, buildings=("301",))
    assert deployments.list_deployments(lincoln.ctx, lincoln["it.ana"]) == []


def test_retry_failed_starts_the_failed_clients_again_at_the_next_window(
    lincoln: District,
) -> None:
    dep = _create(lincoln)
    with transaction(lincoln.ctx.engine) as s:  # what the rollout leaves after a bad night
        row = s.exec(select(DeploymentClient).where(DeploymentClient.hostname == "cart-02")).one()
        row.state, row.attempts, row.reason, row.step = (
            "failed",
            3,
            "disk full",
            "Run the installer",
        )
        s.add(row)
    tech = lincoln["btc.lincoln"]
    deployments.pause(lincoln.ctx, tech, dep.id, reason="look at cart-02")

    again = deployments.retry_failed(lincoln.ctx, tech, dep.id, reason="disk cleaned")

    assert again.state == "scheduled" and again.counts == {"pending": 3, "skipped": 1}
    cart = next(
        c for c in deployments.show(lincoln.ctx, tech, dep.id).clients if c.hostname == "cart-02"
    )
    assert (cart.state, cart.attempts, cart.reason, cart.step) == ("pending", 0, None, None)
    last = audit.entries(lincoln.ctx, lincoln["it.ana"], object_kind="deployment")[-1]
    assert last.action == "deployment.retry_failed" and last.after == {
        "state": "scheduled",
        "clients": 1,
    }


def test_a_replayed_idempotency_key_returns_the_first_deployment_and_creates_no_second(
    lincoln: District, clock: FixedClock
) -> None:
    spec = DeploymentSpec(package="scratch@3.29", buildings=("101",))
    first, made = deployments.create_once(lincoln.ctx, lincoln["btc.lincoln"], spec, "req-7f3a")
    clock.advance(hours=1)
    again, made_again = deployments.create_once(
        lincoln.ctx, lincoln["btc.lincoln"], spec, "req-7f3a"
    )
    assert (made, made_again) == (True, False) and again.id == first.id
    assert len(deployments.list_deployments(lincoln.ctx, lincoln["it.ana"])) == 1
    # The key is the owner's: another person's same key is another request.
    other, made_other = deployments.create_once(lincoln.ctx, lincoln["it.ana"], spec, "req-7f3a")
    assert made_other and other.id != first.id


def test_an_idempotency_key_reused_for_another_request_is_a_conflict_and_creates_nothing(
    lincoln: District,
) -> None:
    spec = DeploymentSpec(package="scratch@3.29", buildings=("101",))
    deployments.create_once(lincoln.ctx, lincoln["btc.lincoln"], spec, "req-1")
    other = DeploymentSpec(package="scratch@3.29", buildings=("101",), pilot_per_building=1)
    with pytest.raises(Conflict, match="already used for another request"):
        deployments.create_once(lincoln.ctx, lincoln["btc.lincoln"], other, "req-1")
    with pytest.raises(InvalidInput, match="Idempotency-Key"):
        deployments.create_once(lincoln.ctx, lincoln["btc.lincoln"], spec, "")
    assert len(deployments.list_deployments(lincoln.ctx, lincoln["it.ana"])) == 1
