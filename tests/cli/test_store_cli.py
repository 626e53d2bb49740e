"""``orchestrator image import`` and ``orchestrator store`` on the sample district."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator.services import directory, staging
from orchestrator.services.context import Context
from orchestrator.services.staging import PointSpec
from tests.support.agent import agent_wheels, agent_wheels_without
from tests.support.cli import Invoke
from tests.support.sshd import SSHHost, start_hosts
from tests.support.winrm_responder import free_port

MIB = 2**20
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def test_it_imports_a_base_image_and_sees_it_in_the_store(
    orchestrator: Invoke, tmp_path: Path
) -> None:
    artifact = tmp_path / "pc-middle-2027.1.img"
    artifact.write_bytes(random.Random(1).randbytes(4 * MIB) + bytes(4 * MIB))
    orchestrator(
        "--as", "it.rivera", "base", "create", "--platform", "pc", "--level", "middle",
        "--version", "2027.1", "--os", "Windows 11 25H2", "--sunset", "2029-09-01",
        "--artifact", str(artifact), "--model", "Dell:Latitude 3420",
    )  # fmt: skip

    out = orchestrator(
        "--as", "it.rivera", "image", "import", str(artifact), "pc-middle@2027.1"
    ).stdout

    assert "imported pc-middle@2027.1 (raw, 8.0 MiB)" in out
    assert "signed when the chain releases it" in out
    assert (tmp_path / "images" / "indexes").is_dir()
    stats = json.loads(orchestrator("--as", "it.rivera", "store", "stats", "--json").stdout)
    assert stats["logical_bytes"] == 8 * MIB
    assert stats["stored_bytes"] < 5 * MIB  # the zero half costs almost nothing
    assert "image store (1 image)" in orchestrator("--as", "it.rivera", "store", "stats").stdout
    checked = orchestrator("--as", "it.rivera", "store", "verify").stdout
    assert re.search(r"^1 image, \d+ chunks checked: all good$", checked, re.M), checked
    again = orchestrator(
        "--as", "it.rivera", "image", "import", str(artifact), "pc-middle@2027.1", expect=5
    )
    assert "is in the image store already" in again.stderr


def test_import_refuses_other_bytes_and_verify_is_it_s(
    orchestrator: Invoke, tmp_path: Path
) -> None:
    other = tmp_path / "other.img"
    other.write_bytes(b"not the registered artifact")
    wrong = orchestrator(
        "--as", "it.rivera", "image", "import", str(other), "pc-middle@2026.1", expect=2
    )
    assert "was registered with" in wrong.stderr
    missing = orchestrator(
        "--as", "it.rivera", "image", "import", str(tmp_path / "nope.img"), "pc-middle@2026.1",
        expect=4,
    )  # fmt: skip
    assert "no file" in missing.stderr
    refused = orchestrator("--as", "btc.lincoln", "store", "verify", expect=3)
    assert "BTC cannot manage the image store and its distribution points" in refused.stderr
    empty = orchestrator("--as", "it.rivera", "store", "stats").stdout
    assert empty.strip() == "the store is empty"  # no empty table above it


def test_gc_lets_go_of_a_discarded_drafts_bytes_and_says_whose(
    orchestrator: Invoke, tmp_path: Path
) -> None:
    artifact = tmp_path / "pc-middle-2027.1.img"
    artifact.write_bytes(random.Random(2).randbytes(2 * MIB))
    orchestrator(
        "--as", "it.rivera", "base", "create", "--platform", "pc", "--level", "middle",
        "--version", "2027.1", "--os", "Windows 11 25H2", "--sunset", "2029-09-01",
        "--artifact", str(artifact), "--model", "Dell:Latitude 3420",
    )  # fmt: skip
    orchestrator("--as", "it.rivera", "image", "import", str(artifact), "pc-middle@2027.1")
    orchestrator("--as", "it.rivera", "base", "retire", "pc-middle@2027.1", "-r", "wrong build")

    kept = orchestrator("--as", "it.rivera", "store", "gc").stdout
    dry = orchestrator("--as", "it.rivera", "store", "gc", "--protect-hours", "0", "--dry-run")
    still = orchestrator("--as", "it.rivera", "store", "stats").stdout
    done = orchestrator("--as", "it.rivera", "store", "gc", "--protect-hours", "0").stdout

    assert "let go of" not in kept  # retired inside the default 24 hours
    assert "would let go of the bytes of 1 retired entry" in dry.stdout
    assert "pc-middle@2027.1" in dry.stdout and "pc-middle@2027.1" in still
    assert "let go of the bytes of 1 retired entry nothing delivers any more: " in done
    assert "pc-middle@2027.1" in done and "and 1 index file" in done
    empty = orchestrator("--as", "it.rivera", "store", "stats").stdout
    assert empty.strip() == "the store is empty"  # no empty table above it


def test_a_staging_that_cannot_start_prints_only_the_reason(orchestrator: Invoke) -> None:
    no_point = orchestrator(
        "--as", "btc.lincoln", "store", "stage", "pc-middle@2026.1", "--building", "101",
        expect=4,
    )  # fmt: skip

    assert "building 101 has no distribution point" in no_point.stderr
    assert no_point.stdout == ""  # no progress bar left behind in a pipe or a log


def test_prune_is_it_s_and_names_a_building_without_a_point(orchestrator: Invoke) -> None:
    refused = orchestrator("--as", "btc.lincoln", "store", "prune", "--building", "101", expect=3)
    no_point = orchestrator("--as", "it.rivera", "store", "prune", "--building", "101", expect=4)
    unknown = orchestrator("--as", "it.rivera", "store", "prune", "--building", "999", expect=4)

    assert "BTC cannot manage the image store" in refused.stderr
    assert "building 101 has no distribution point" in no_point.stderr
    assert "999" in unknown.stderr


def test_store_agent_builds_the_bundle_install_agent_hands_the_clients(
    orchestrator: Invoke, tmp_path: Path
) -> None:
    wheels = str(agent_wheels())
    early = orchestrator(
        "--as", "btc.lincoln", "run", "install_agent", "--building", "101", expect=2
    )
    assert "images/agent: build it first with 'orchestrator store agent'" in early.stderr
    assert "Ctrl-C" not in early.stdout  # refused before the run: no run's header
    refused = orchestrator(
        "--as", "btc.lincoln", "store", "agent", "--find-links", wheels, "--no-index", expect=3
    )
    assert "BTC cannot manage the image store" in refused.stderr
    bad = orchestrator("--as", "it.rivera", "store", "agent", "--target", "linux", expect=2)
    assert "target 'linux': not '<wheel platform tag>:<python version>'" in bad.stderr
    assert not (tmp_path / "images" / "agent").exists()

    out = orchestrator(
        "--as", "it.rivera", "store", "agent", "--find-links", wheels, "--no-index"
    ).stdout

    bundle = json.loads((tmp_path / "images" / "agent" / "bundle.json").read_text())
    assert f"agent bundle {bundle['bundle_id'][:12]} (orchestrator " in out
    assert f"{len(bundle['wheels'])} wheels" in out
    assert "for this machine" in out
    assert "'orchestrator run install_agent --building NUMBER'" in out
    assert "without" not in out


def test_store_agent_says_which_platform_gets_no_chunker(
    orchestrator: Invoke, tmp_path: Path
) -> None:
    wheels = str(agent_wheels_without("fastcdc", tmp_path / "wheels"))

    out = orchestrator(
        "--as", "it.rivera", "store", "agent", "--find-links", wheels, "--no-index"
    ).stdout

    assert "this machine: without fastcdc (no wheel for it): its clients pull whole" in out
    bundle = json.loads((tmp_path / "images" / "agent" / "bundle.json").read_text())
    assert bundle["without"] == {"this machine": ["fastcdc"]}


@pytest.fixture(scope="module")
def point_host() -> Iterator[SSHHost]:
    with start_hosts(1) as hosts:
        yield hosts[0]


def test_it_adds_a_point_pinning_its_key_and_a_bad_add_changes_nothing(
    orchestrator: Invoke, point_host: SSHHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = point_host
    add = ["points", "add", "--building", "101", "--address", h.address, "--ssh-user",
           h.username, "--root", "/srv/images", "--url", "https://dp-101:8443"]  # fmt: skip

    refused = orchestrator("--as", "btc.lincoln", *add, "--ssh-port", str(h.port), expect=3)
    assert "cannot manage the image store" in refused.stderr
    closed = orchestrator("--as", "it.rivera", *add, "--ssh-port", str(free_port()), expect=8)
    assert "cannot be fetched to pin it, so no point was added" in closed.stderr
    bad_root = [*add[:-4], "--root", "srv/../etc", *add[-2:]]
    escaped = orchestrator("--as", "it.rivera", *bad_root, "--ssh-port", str(h.port), expect=2)
    assert escaped.stderr.startswith("root: ")
    assert "no distribution points" in orchestrator("--as", "it.rivera", "points", "list").stdout

    added = orchestrator("--as", "it.rivera", *add, "--ssh-port", str(h.port),
                         "--bandwidth", "2048").stdout  # fmt: skip
    (listed,) = json.loads(orchestrator("--as", "it.rivera", "points", "list", "--json").stdout)
    assert listed["fingerprint"].startswith("SHA256:")
    assert added.strip() == (
        f"building 101: distribution point {h.username}@{h.address}:{h.port} "
        f"({listed['fingerprint']} pinned), store /srv/images, clients fetch from "
        "https://dp-101:8443, at most 2048 KiB/s"
    )
    again = orchestrator("--as", "it.rivera", *add, "--ssh-port", str(h.port), expect=5)
    assert "has a distribution point already" in again.stderr
    monkeypatch.setenv("COLUMNS", "72")
    narrow = orchestrator("--as", "it.rivera", "points", "list").stdout
    assert "…" not in narrow, narrow  # a narrow terminal folds the addresses, never cuts them
    assert "SHA256:" in narrow and "2048 KiB/s" in narrow


def test_it_changes_and_removes_a_point_and_bad_requests_exit_with_the_reason(
    orchestrator: Invoke, engine: sa.Engine
) -> None:
    ctx = Context(engine=engine)
    staging.add_point(
        ctx,
        directory.actor(ctx, "it.rivera"),
        PointSpec("101", "dp-101", "images", "/srv/images", "https://dp-101:8443", host_key=KEY),
    )
    point = ["points", "set", "--building", "101"]

    refused = orchestrator("--as", "btc.lincoln", *point, "--bandwidth", "9", "--reason", "x",
                           expect=3)  # fmt: skip
    assert "cannot manage the image store" in refused.stderr
    assert "say why" in orchestrator("--as", "it.rivera", *point, "--bandwidth", "9",
                                     expect=2).stderr  # fmt: skip
    assert "nothing to change" in orchestrator("--as", "it.rivera", *point, "--reason", "x",
                                               expect=2).stderr  # fmt: skip
    changed = orchestrator("--as", "it.rivera", *point, "--bandwidth", "4096", "--root",
                           "/srv/images2", "--reason", "bigger disk").stdout  # fmt: skip
    assert "store /srv/images2" in changed and "at most 4096 KiB/s" in changed
    listed = json.loads(orchestrator("--as", "it.rivera", "points", "list", "--json").stdout)
    assert [(p["root"], p["bandwidth_kib"]) for p in listed] == [("/srv/images2", 4096)]

    gone = orchestrator("--as", "it.rivera", "points", "remove", "--building", "101",
                        "--reason", "building closed").stdout  # fmt: skip
    assert "building 101 has no distribution point now; 0 stagings to it forgotten" in gone
    assert "no distribution points" in orchestrator("--as", "it.rivera", "points", "list").stdout
    again = orchestrator("--as", "it.rivera", "points", "remove", "--building", "101",
                         "--reason", "again", expect=4)  # fmt: skip
    assert "building 101 has no distribution point" in again.stderr
