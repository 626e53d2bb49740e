"""The pull agent's bundle (services/agent_bundle.py): built by IT from a folder
of wheels, replaced only by a build that succeeded, and handed to install_agent."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from sqlmodel import select

from orchestrator.db.models import Run
from orchestrator.db.session import transaction
from orchestrator.errors import InvalidInput, Refused
from orchestrator.services import agent_bundle, runs
from tests.factories import District
from tests.support.agent import agent_wheels, agent_wheels_without


def _build(d: District, who: str = "it.ana", **kw: object) -> agent_bundle.Bundle:
    options: dict[str, object] = {"find_links": agent_wheels(), "no_index": True} | kw
    return agent_bundle.build(d.ctx, d[who], **options)  # type: ignore[arg-type]


def test_it_builds_a_bundle_of_the_project_and_the_agent_libraries_only(
    district: District,
) -> None:
    built = _build(district)

    assert built.folder == district.ctx.image_store_dir / "agent"
    assert agent_bundle.current(district.ctx) == built
    names = {w.split("-")[0].lower() for w in built.wheels}
    assert {"orchestrator", "zstandard", "cryptography", "fastcdc", "click"} <= names
    # The project's wheel carries the agent; none of the server's own dependencies come along.
    assert not names & {"sqlmodel", "ansible", "fastapi", "paramiko", "pywinrm"}
    with zipfile.ZipFile(built.folder / built.agent_wheel) as wheel:
        assert "orchestrator/imagestore/pull.py" in wheel.namelist()
    pins = (built.folder / agent_bundle.REQUIREMENTS_FILE).read_text().split()
    assert pins == agent_bundle.pins()
    optional = (built.folder / agent_bundle.OPTIONAL_FILE).read_text().split()
    assert optional == agent_bundle.pins(agent_bundle.OPTIONAL_LIBRARIES)
    assert built.without == {}
    assert agent_bundle.extravars(district.ctx) == {
        "agent_bundle": str(built.folder.resolve()),
        "agent_bundle_id": built.bundle_id,
        "agent_wheel": built.agent_wheel,
    }


def test_a_building_tech_may_not_build_the_bundle_and_nothing_is_written(
    district: District,
) -> None:
    with pytest.raises(Refused, match="BTC cannot manage the image store"):
        _build(district, "btc.lincoln")
    assert not district.ctx.image_store_dir.exists()


def test_a_failed_build_leaves_the_last_bundle_in_place(district: District, tmp_path: Path) -> None:
    before = _build(district)
    empty = tmp_path / "no-wheels"
    empty.mkdir()

    with pytest.raises(agent_bundle.BundleFailed, match="pip could not get ") as failed:
        _build(district, find_links=empty)
    assert "No matching distribution found for" in str(failed.value)
    assert "from versions" not in str(failed.value)  # pip's list of versions is left out

    assert agent_bundle.current(district.ctx) == before
    assert sorted(p.name for p in before.folder.parent.iterdir()) == ["agent"]


def test_a_platform_with_no_chunker_wheel_gets_the_bundle_without_it_said_so(
    district: District, tmp_path: Path
) -> None:
    # As for macOS, where PyPI has no wheel of fastcdc 1.7.0.
    built = _build(district, find_links=agent_wheels_without("fastcdc", tmp_path / "w"))

    names = {w.split("-")[0].lower() for w in built.wheels}
    assert "fastcdc" not in names and {"zstandard", "cryptography"} <= names
    assert built.without == {"this machine": ("fastcdc",)}
    assert agent_bundle.current(district.ctx).without == built.without


def test_a_platform_with_no_wheel_of_a_library_the_agent_needs_gets_no_bundle(
    district: District, tmp_path: Path
) -> None:
    with pytest.raises(agent_bundle.BundleFailed, match="libraries for this machine: .*zstandard"):
        _build(district, find_links=agent_wheels_without("zstandard", tmp_path / "w"))
    assert not (district.ctx.image_store_dir / "agent").exists()


def test_without_the_index_a_folder_of_wheels_is_needed(district: District) -> None:
    with pytest.raises(InvalidInput, match="needs a folder of wheels"):
        _build(district, find_links=None)
    with pytest.raises(InvalidInput, match="is not a folder of wheels"):
        _build(district, find_links=district.ctx.image_store_dir / "absent")
    assert not (district.ctx.image_store_dir / "agent").exists()


@pytest.mark.parametrize("text", ["linux", "macosx_11_0_arm64", "macosx:2.7", "../x:3.11", ""])
def test_a_target_that_is_not_a_platform_and_a_python_is_refused_naming_it(text: str) -> None:
    with pytest.raises(InvalidInput, match=f"target {text!r}: not"):
        agent_bundle.Target.parse(text)


def test_a_target_names_what_pip_downloads_for() -> None:
    target = agent_bundle.Target.parse("macosx_11_0_arm64:3.9")
    assert (target.platform, target.python, str(target)) == (
        "macosx_11_0_arm64",
        "3.9",
        "macosx_11_0_arm64:3.9",
    )


def test_a_linux_target_asks_pip_for_every_older_glibc_its_wheels_may_carry() -> None:
    assert agent_bundle.Target.parse("manylinux_2_19_x86_64:3.11").platforms() == [
        "manylinux_2_19_x86_64",
        "manylinux_2_18_x86_64",
        "manylinux_2_17_x86_64",
        "manylinux2014_x86_64",
    ]
    assert agent_bundle.Target.parse("macosx_11_0_arm64:3.9.6").platforms() == [
        "macosx_11_0_arm64"  # pip widens macOS tags by itself
    ]


def test_install_agent_without_a_bundle_is_told_to_build_one(district: District) -> None:
    with pytest.raises(InvalidInput, match="no agent bundle in .*'orchestrator store agent'"):
        agent_bundle.extravars(district.ctx)


def test_a_bundle_missing_a_wheel_it_lists_is_not_handed_out(district: District) -> None:
    built = _build(district)
    (built.folder / built.wheels[0]).unlink()
    with pytest.raises(InvalidInput, match=f"lacks {built.wheels[0]}"):
        agent_bundle.current(district.ctx)
    (built.folder / agent_bundle.BUNDLE_FILE).write_text(json.dumps({"wheels": []}))
    with pytest.raises(InvalidInput, match="not a bundle description"):
        agent_bundle.current(district.ctx)


def test_running_install_agent_before_a_bundle_is_built_runs_nothing(district: District) -> None:
    with pytest.raises(InvalidInput, match="no agent bundle"):
        runs.run_playbook(
            district.ctx,
            district["btc.lincoln"],
            "install_agent",
            building="101",
            credentials=runs.Credentials(ssh_key="unused"),
        )
    with transaction(district.ctx.engine) as s:
        assert s.exec(select(Run)).all() == []
