"""``orchestrator deploy plan`` on the sample district (whose clients were never gathered)."""

from __future__ import annotations

from tests.support.cli import Invoke, as_json


def test_plan_shows_who_would_get_it_who_not_and_why(orchestrator: Invoke) -> None:
    out = orchestrator(
        "--as", "btc.lincoln", "deploy", "plan", "--package", "scratch@3.29", "--building", "101"
    ).stdout

    assert "would get scratch@3.29 (4)" in out
    assert "101 Lincoln Elementary" in out and "cart-1 (4)" in out
    assert "excluded (6)" in out
    assert "101-lab-a-01" in out and "wrong_platform" in out and "this is for Macs" in out
    assert "gates passed: software package scratch@3.29 is published" in out
    assert out.rstrip().endswith(
        "4 clients in 1 building would get scratch@3.29 (4 never seen yet); "
        "6 excluded: 6 wrong platform"
    )


def test_plan_takes_groups_rooms_and_clients_together(orchestrator: Invoke) -> None:
    out = orchestrator(
        "--as",
        "it.rivera",
        "deploy",
        "plan",
        "--image",
        "pc-high@2026.1",
        "--group",
        "level_high",
        "--room",
        "101/lab-a",
        "--client",
        "102-lab-01",
    ).stdout

    assert "301 Kennedy High" in out and "302 Madison High" in out
    assert "building 101 is elementary; this is for high buildings" in out
    assert "302-newsroom-01" in out and "model_not_approved" in out
    # The bench's high-school PC already runs the image its image test put on it.
    assert "301-stem-lab-05" in out and "already runs pc-high@2026.1" in out
    assert (
        "7 clients in 2 buildings would get pc-high@2026.1 (7 never seen yet); 12 excluded" in out
    )


def test_plan_as_json_lists_every_client(orchestrator: Invoke) -> None:
    data = as_json(
        orchestrator(
            "--as",
            "it.rivera",
            "deploy",
            "plan",
            "--package",
            "finance-client@7.2",
            "--group",
            "all",
            "--json",
        )
    )

    assert data["ref"] == "finance-client@7.2" and data["kind"] == "package"
    hosts = {c["hostname"] for c in data["included"]}
    assert "900-front-office-01" in hosts and "101-lab-a-01" in hosts
    # The bench's high-school PC was last seen at its image test in the sample's past.
    assert {c["reason"] for c in data["excluded"]} == {
        "wrong_platform",
        "model_not_approved",
        "offline",
    }
    offline = [c["hostname"] for c in data["excluded"] if c["reason"] == "offline"]
    assert offline == ["301-stem-lab-05"]
    assert sum(b["included"] for b in data["buildings"]) == len(data["included"])
    places = len({c["building"] for c in data["included"]})
    assert data["summary"].startswith(f"{len(data['included'])} clients in {places} buildings")


def test_a_bad_reference_or_target_exits_with_a_clear_message(orchestrator: Invoke) -> None:
    missing = orchestrator(
        "--as",
        "it.rivera",
        "deploy",
        "plan",
        "--package",
        "nope@1.0",
        "--building",
        "101",
        expect=4,
    )
    assert "no software package 'nope@1.0'" in missing.stderr

    malformed = orchestrator(
        "--as", "it.rivera", "deploy", "plan", "--package", "nope", "--building", "101", expect=2
    )
    assert "is not a software package reference" in malformed.stderr

    unknown = orchestrator(
        "--as",
        "it.rivera",
        "deploy",
        "plan",
        "--package",
        "scratch@3.29",
        "--group",
        "lab",
        expect=2,
    )
    assert "not a target: group 'lab'" in unknown.stderr

    elsewhere = orchestrator(
        "--as",
        "btc.lincoln",
        "deploy",
        "plan",
        "--package",
        "scratch@3.29",
        "--building",
        "102",
        expect=4,
    )
    assert "unknown target(s): building 102" in elsewhere.stderr

    draft = orchestrator(
        "--as",
        "btc.garcia",
        "deploy",
        "plan",
        "--image",
        "102/library@1.0",
        "--building",
        "102",
        expect=3,
    )
    assert "draft, not released" in draft.stderr
