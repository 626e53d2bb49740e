"""``orchestrator deploy create | list | show | pause | resume | cancel`` on the sample district."""

from __future__ import annotations

import json

import sqlalchemy as sa

from orchestrator.remote.ansible import FakePlaybookRunner
from orchestrator.services import directory, runs, staging
from orchestrator.services.context import Context
from orchestrator.services.staging import PointSpec
from tests.support.cli import Invoke

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def _windows(orchestrator: Invoke) -> None:
    orchestrator(
        "--as", "btc.lincoln", "windows", "add", "--building", "101", "--days", "mon-sun",
        "--from", "18:00", "--to", "06:00",
    )  # fmt: skip


def test_a_tech_schedules_a_deployment_then_pauses_resumes_and_cancels_it(
    orchestrator: Invoke,
) -> None:
    _windows(orchestrator)
    made = orchestrator(
        "--as", "btc.lincoln", "deploy", "create", "--package", "scratch@3.29", "--building",
        "101", "--pilot-per-building", "1",
    )  # fmt: skip
    assert "deployment 1: scratch@3.29 — scheduled" in made.stdout
    assert "wave 1 (pilot)" in made.stdout

    shown = json.loads(
        orchestrator("--as", "principal.lincoln", "deploy", "show", "1", "--json").stdout
    )
    states = {c["hostname"]: c["state"] for c in shown["clients"]}
    assert states["101-cart-1-01"] == "pending" and states["101-lab-a-01"] == "skipped"
    assert shown["stagings"] == [
        {
            "building": "101",
            "ref": "scratch@3.29",
            "state": "no point",
            "chunks_sent": 0,
            "chunks_total": 0,
            "message": "no distribution point: its computers fetch from the orchestrator",
            "at": None,
        }
    ]
    # No building of the sample district has a distribution point: nothing to say.
    assert (
        "distribution points"
        not in orchestrator("--as", "btc.lincoln", "deploy", "show", "1").stdout
    )

    orchestrator("--as", "btc.lincoln", "deploy", "pause", "1", "--reason", "lab in use")
    refused = orchestrator("--as", "principal.lincoln", "deploy", "resume", "1", expect=3)
    assert "refused" in refused.stderr
    orchestrator("--as", "btc.lincoln", "deploy", "resume", "1")
    done = orchestrator("--as", "btc.lincoln", "deploy", "cancel", "1", "--reason", "wrong version")
    assert "cancelled: 4 clients cancelled" in done.stdout
    again = orchestrator("--as", "btc.lincoln", "deploy", "resume", "1", expect=5)
    assert "cancelled is final" in again.stderr
    listed = json.loads(orchestrator("--as", "it.rivera", "deploy", "list", "--json").stdout)
    assert [(d["id"], d["state"]) for d in listed] == [(1, "cancelled")]


def test_bad_deployments_exit_with_the_reason_and_create_nothing(orchestrator: Invoke) -> None:
    no_window = orchestrator(
        "--as", "btc.lincoln", "deploy", "create", "--package", "scratch@3.29", "--building", "101",
        expect=2,
    )  # fmt: skip
    assert "no maintenance window" in no_window.stderr
    _windows(orchestrator)
    bad_time = orchestrator(
        "--as", "btc.lincoln", "deploy", "create", "--package", "scratch@3.29", "--building", "101",
        "--deadline", "tomorrow", expect=2,
    )  # fmt: skip
    assert "is not a date and time" in bad_time.stderr
    # Another building is not found, as one that does not exist would be.
    other = orchestrator(
        "--as", "btc.lincoln", "deploy", "create", "--package", "scratch@3.29", "--building", "102",
        expect=4,
    )  # fmt: skip
    assert "unknown target(s): building 102" in other.stderr
    missing = orchestrator("--as", "btc.lincoln", "deploy", "show", "7", expect=4)
    assert "no deployment 7" in missing.stderr
    assert json.loads(orchestrator("--as", "it.rivera", "deploy", "list", "--json").stdout) == []


def test_clients_list_shows_the_release_a_successful_install_left_on_each_client(
    orchestrator: Invoke, engine: sa.Engine
) -> None:
    ctx = Context(engine=engine)
    runs.run_playbook(
        ctx,
        directory.actor(ctx, "btc.lincoln"),
        "install_package",
        building="101",
        room="cart-1",
        credentials=runs.Credentials(),
        runner=FakePlaybookRunner({"101-cart-1-02": "failed"}),
        package="scratch@3.29",
    )

    out = orchestrator("--as", "btc.lincoln", "clients", "list", "--building", "101").stdout
    rows = {line.split()[0]: line for line in out.splitlines() if "101-cart-1-0" in line}
    assert "installed" in out
    assert "scratch@3.29" in rows["101-cart-1-01"]
    assert "scratch@3.29" not in rows["101-cart-1-02"]
    listed = json.loads(orchestrator("--as", "btc.lincoln", "clients", "list", "--json").stdout)
    assert {c["hostname"]: c["installed"] for c in listed}["101-cart-1-01"] == ["scratch@3.29"]


def test_deploy_show_says_whether_the_buildings_point_holds_what_it_delivers(
    orchestrator: Invoke, engine: sa.Engine
) -> None:
    _windows(orchestrator)
    orchestrator("--as", "btc.lincoln", "deploy", "create", "--package", "scratch@3.29",
                 "--building", "101")  # fmt: skip
    ctx = Context(engine=engine)
    staging.add_point(
        ctx,
        directory.actor(ctx, "it.rivera"),
        PointSpec("101", "dp-101", "images", "/srv/images", "https://dp-101:8443", host_key=KEY),
    )

    shown = " ".join(orchestrator("--as", "btc.lincoln", "deploy", "show", "1").stdout.split())

    assert "distribution points" in shown
    assert "101 scratch@3.29 not stored" in shown  # released, but never imported
    assert "its released bytes are not in the image store" in shown
    data = json.loads(orchestrator("--as", "btc.lincoln", "deploy", "show", "1", "--json").stdout)
    assert [(s["building"], s["ref"], s["state"]) for s in data["stagings"]] == [
        ("101", "scratch@3.29", "not stored")
    ]
    assert data["ref"] == "scratch@3.29" and len(data["clients"]) == 10  # the rest as it was
