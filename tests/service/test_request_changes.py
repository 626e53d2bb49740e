"""A request answered by a change: the customized image, package or deployment a
technician links to it, their status on the request, and the request closing when
the deployment finishes on the clients it named; on both databases.

The test district's clock is Monday 2026-03-02, 10:00 in New York; building
101's weeknight window opens at 18:00 (23:00 UTC). The runner is the fake one.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.clock import FixedClock
from orchestrator.domain.requests import RequestState
from orchestrator.domain.states import Kind, State
from orchestrator.errors import Conflict, InvalidInput, NotFound, Refused
from orchestrator.remote.ansible import FakePlaybookRunner
from orchestrator.services import (
    audit,
    catalog,
    deployments,
    inventory,
    requests,
    rollout_runner,
    runs,
)
from orchestrator.services import windows as window_service
from orchestrator.services.deployments import DeploymentSpec
from orchestrator.services.requests import RequestSpec
from tests.factories import District
from tests.support.fixtures import release_scratch

ASSETS = "Hostname,Building,Room,Platform,Model,Serial,MAC,IP\n" + "".join(
    f'{h},{b},{room},mac,"MacBookAir10,1",SN20{i},02:00:00:00:02:{i:02x},127.0.0.{40 + i}\n'
    for i, (h, b, room) in enumerate(
        [
            ("lab-01", "101", "lab-a"),
            ("lab-02", "101", "lab-a"),
            ("cart-01", "101", "cart"),
            ("cart-02", "101", "cart"),
            ("nor-01", "102", "lab-a"),
        ],
        1,
    )
)
TONIGHT = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)


@pytest.fixture
def lincoln(district: District, tmp_path: Path) -> District:
    """Building 101 with a lab and a cart of Macs, weeknight windows, Scratch released."""
    path = tmp_path / "assets.csv"
    path.write_text(ASSETS)
    inventory.import_clients(district.ctx, district["it.ana"], path)
    for building, tech in (("101", "btc.lincoln"), ("102", "btc.garcia")):
        window_service.add_window(
            district.ctx, district[tech], building=building, days="mon-thu", start="18:00",
            end="06:00",
        )  # fmt: skip
    release_scratch(district, "3.29", tmp_path)
    return district


def _file(d: District, **kw: Any) -> requests.RequestView:
    spec = {"building": "101", "category": "software_access", "description": "Scratch please"}
    return requests.file_request(d.ctx, d["principal.lincoln"], RequestSpec(**(spec | kw)))


def _run_to_the_end(d: District, dep_id: int, runner: FakePlaybookRunner) -> None:
    clock = d.ctx.clock
    assert isinstance(clock, FixedClock)
    clock.now = TONIGHT
    for _ in range(10):
        result = rollout_runner.tick(d.ctx, dep_id, credentials=runs.Credentials(), runner=runner)
        if result.state not in ("scheduled", "running"):
            return
        clock.now += timedelta(minutes=1)
    raise AssertionError(f"deployment {dep_id} did not end: {result.state}")


def _request_actions(d: District, request_id: int) -> list[str]:
    return [
        e.action
        for e in audit.entries(d.ctx, d["it.ana"], object_kind="request")
        if e.object_id == request_id
    ]


def test_a_deployment_made_from_a_request_aims_at_its_clients_and_closes_it_when_done(
    lincoln: District,
) -> None:
    r = _file(lincoln, clients=["lab-01", "cart-02"])

    dep, shown = requests.deploy(
        lincoln.ctx, lincoln["btc.lincoln"], r.id, DeploymentSpec(package="scratch@3.29")
    )

    assert sorted(c.hostname for c in deployments.show(lincoln.ctx, lincoln["it.ana"], dep.id)
                  .clients) == ["cart-02", "lab-01"]  # fmt: skip
    assert (shown.state, shown.assignee) == (RequestState.TAKEN, "btc.lincoln")
    (change,) = shown.changes
    assert (change.kind, change.id, change.status) == ("deployment", dep.id, "scheduled")
    assert change.detail == "0 of 2 clients done (cart-02 pending, lab-01 pending)"

    _run_to_the_end(lincoln, dep.id, FakePlaybookRunner())

    done = requests.show(lincoln.ctx, lincoln["principal.lincoln"], r.id)
    assert done.state is RequestState.CLOSED and done.closed_at is not None
    assert done.note == f"deployment {dep.id} (scratch@3.29) finished on cart-02, lab-01"
    assert done.changes[0].detail == "2 of 2 clients done"
    assert _request_actions(lincoln, r.id) == [
        "request.file",
        "request.take",
        "request.link",
        "request.close",
    ]


def test_a_request_about_a_room_is_answered_by_a_deployment_to_that_room(
    lincoln: District,
) -> None:
    r = _file(lincoln, room="LAB-A")
    dep, _ = requests.deploy(
        lincoln.ctx, lincoln["btc.lincoln"], r.id, DeploymentSpec(package="scratch@3.29")
    )
    hosts = sorted(c.hostname for c in deployments.show(lincoln.ctx, lincoln["it.ana"], dep.id)
                   .clients)  # fmt: skip
    assert hosts == ["lab-01", "lab-02"]


def test_a_deployment_that_fails_on_a_named_client_leaves_the_request_open_saying_which(
    lincoln: District,
) -> None:
    r = _file(lincoln, clients=["lab-01", "lab-02"])
    dep, _ = requests.deploy(
        lincoln.ctx,
        lincoln["btc.lincoln"],
        r.id,
        DeploymentSpec(package="scratch@3.29", failure_threshold_pct=100),
    )

    _run_to_the_end(lincoln, dep.id, FakePlaybookRunner({"lab-02": "failed"}))

    assert deployments.show(lincoln.ctx, lincoln["it.ana"], dep.id).state == "completed"
    still = requests.show(lincoln.ctx, lincoln["btc.lincoln"], r.id)
    assert still.state is RequestState.TAKEN
    assert still.changes[0].detail == "1 of 2 clients done (lab-02 failed)"
    (said,) = [
        e
        for e in audit.entries(lincoln.ctx, lincoln["it.ana"], object_kind="request")
        if e.action == "request.change_finished"
    ]
    assert said.actor == "system" and "lab-02 failed" in said.reason


def test_a_deployment_made_elsewhere_closes_the_request_only_for_the_clients_it_named(
    lincoln: District,
) -> None:
    r = _file(lincoln, clients=["cart-01"])
    dep = deployments.create(
        lincoln.ctx,
        lincoln["btc.lincoln"],
        DeploymentSpec(package="scratch@3.29", rooms=("101/lab-a",)),
    )
    linked = requests.link_deployment(lincoln.ctx, lincoln["btc.lincoln"], r.id, dep.id)
    assert linked.changes[0].detail == "0 of 1 clients done (cart-01 not in it)"

    _run_to_the_end(lincoln, dep.id, FakePlaybookRunner())

    assert requests.show(lincoln.ctx, lincoln["it.ana"], r.id).state is RequestState.TAKEN


def test_a_package_and_a_customized_image_are_linked_with_their_chain_state(
    lincoln: District,
) -> None:
    lincoln.base()
    image = lincoln.custom("101", "lab", "1.0")
    theirs = lincoln.custom("102", "lab", "1.0")
    r = _file(lincoln, category="imaging", description="lab image with Scratch")
    tech = lincoln["btc.lincoln"]

    requests.link_item(lincoln.ctx, tech, r.id, Kind.PACKAGE, "scratch@3.29")
    shown = requests.link_item(lincoln.ctx, tech, r.id, Kind.CUSTOM_IMAGE, image)

    assert [(c.kind, c.ref, c.status) for c in shown.changes] == [
        ("package", "scratch@3.29", "published"),
        ("custom_image", "101/lab@1.0", "draft"),
    ]
    with pytest.raises(Conflict, match="already linked"):
        requests.link_item(lincoln.ctx, tech, r.id, Kind.PACKAGE, "scratch@3.29")
    with pytest.raises(InvalidInput, match="is building 102's image"):
        requests.link_item(lincoln.ctx, lincoln["it.ana"], r.id, Kind.CUSTOM_IMAGE, theirs)
    assert len(requests.show(lincoln.ctx, lincoln["it.ana"], r.id).changes) == 2


def test_a_base_image_or_another_buildings_deployment_does_not_answer_a_request(
    lincoln: District,
) -> None:
    r = _file(lincoln)
    with pytest.raises(InvalidInput, match="not a base image"):
        requests.link_item(lincoln.ctx, lincoln["it.ana"], r.id, Kind.BASE_IMAGE, "mac-es@14.0")
    elsewhere = deployments.create(
        lincoln.ctx,
        lincoln["it.ana"],
        DeploymentSpec(package="scratch@3.29", buildings=("102",)),
    )
    with pytest.raises(InvalidInput, match="does not reach building 101"):
        requests.link_deployment(lincoln.ctx, lincoln["it.ana"], r.id, elsewhere.id)
    with pytest.raises(NotFound, match=f"no deployment {elsewhere.id}|not found|no such"):
        requests.link_deployment(lincoln.ctx, lincoln["btc.lincoln"], r.id, elsewhere.id)
    assert requests.show(lincoln.ctx, lincoln["it.ana"], r.id).changes == []


def test_a_department_request_is_never_answered_by_a_technicians_change_and_it_is_audited(
    lincoln: District,
) -> None:
    r = _file(lincoln, category="grading", description="gradebook export")
    with pytest.raises(Refused, match="Student Information Systems"):
        requests.deploy(
            lincoln.ctx, lincoln["btc.lincoln"], r.id, DeploymentSpec(package="scratch@3.29")
        )
    assert deployments.list_deployments(lincoln.ctx, lincoln["it.ana"]) == []
    assert _request_actions(lincoln, r.id) == ["request.file", "request.link_refused"]


def test_a_principal_or_another_buildings_tech_cannot_link_and_nothing_changes(
    lincoln: District,
) -> None:
    r = _file(lincoln)
    with pytest.raises(Refused):
        requests.link_item(
            lincoln.ctx, lincoln["principal.lincoln"], r.id, Kind.PACKAGE, "scratch@3.29"
        )
    with pytest.raises(NotFound):
        requests.link_item(lincoln.ctx, lincoln["btc.garcia"], r.id, Kind.PACKAGE, "scratch@3.29")
    shown = requests.show(lincoln.ctx, lincoln["it.ana"], r.id)
    assert (shown.state, shown.changes) == (RequestState.OPEN, [])


def test_a_closed_request_takes_no_more_changes(lincoln: District) -> None:
    r = _file(lincoln)
    requests.close(lincoln.ctx, lincoln["btc.lincoln"], r.id, note="done by hand")
    with pytest.raises(Conflict, match="closed"):
        requests.link_item(lincoln.ctx, lincoln["btc.lincoln"], r.id, Kind.PACKAGE, "scratch@3.29")


def test_a_customized_image_made_from_a_request_is_linked_and_must_be_its_buildings(
    lincoln: District,
) -> None:
    base = lincoln.base()
    r = _file(lincoln, category="imaging", description="the club needs its own image")
    spec = catalog.CustomImageSpec(
        building="101", name="club", version="1.0", base=base, settings={"wallpaper": "club"}
    )

    made, shown = requests.create_image_for(lincoln.ctx, lincoln["btc.lincoln"], r.id, spec)

    assert made.ref == "101/club@1.0" and made.state is State.DRAFT  # the chain starts as ever
    assert [(c.kind, c.ref) for c in shown.changes] == [("custom_image", "101/club@1.0")]
    with pytest.raises(InvalidInput, match="is building 101's"):
        requests.create_image_for(
            lincoln.ctx, lincoln["it.ana"], r.id, replace(spec, building="102", name="x")
        )
    grading = _file(lincoln, category="grading", description="gradebook")
    with pytest.raises(Refused):
        requests.create_image_for(
            lincoln.ctx, lincoln["btc.lincoln"], grading.id, replace(spec, name="y")
        )
    assert [v.ref for v in catalog.list_releasables(lincoln.ctx, lincoln["it.ana"],
            kind=Kind.CUSTOM_IMAGE)] == ["101/club@1.0"]  # fmt: skip
