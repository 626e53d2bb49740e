"""The pull agent installed on a test host as on a client: its own virtual
environment of the system's Python (the test hosts' users cannot run the
project's, which lives under root's home), installed from the agent's bundle
(services/agent_bundle.py) as ``install_agent.yml`` installs it: the project's
wheel without its dependencies, and only what the agent imports beside it.

The libraries' wheels come from :data:`WHEELS`, which ``.ci/run`` fills before
the tests, so no test reaches a package index."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.services import agent_bundle

PROJECT = Path(__file__).resolve().parents[2]
WHEELS = Path(os.environ.get("ORCHESTRATOR_TEST_AGENT_WHEELS", PROJECT / ".venv/agent-wheels"))
"""The agent's libraries' wheels for this machine, fetched by ``.ci/run``."""


def agent_wheels() -> Path:
    """:data:`WHEELS`, or a failure saying how to fill it."""
    if not any(WHEELS.glob("*.whl")):
        raise RuntimeError(
            f"no wheels in {WHEELS}: 'bash .ci/run' fetches the pull agent's libraries there "
            "(or set ORCHESTRATOR_TEST_AGENT_WHEELS to a folder of them)"
        )
    return WHEELS


def agent_wheels_without(library: str, folder: Path) -> Path:
    """A folder of :func:`agent_wheels` but ``library``'s, as for a platform with no
    wheel of it (macOS and fastcdc): links made in ``folder``, which is returned."""
    folder.mkdir(parents=True)
    for wheel in agent_wheels().iterdir():
        if not wheel.name.lower().startswith(f"{library}-"):
            (folder / wheel.name).symlink_to(wheel)
    return folder


def build_bundle(dest: Path) -> agent_bundle.Bundle:
    """The agent's bundle for this machine, built without a package index."""
    return agent_bundle.build_wheelhouse(dest, find_links=agent_wheels(), no_index=True)


def install_pull_agent(folder: Path, python: str = "/usr/bin/python3") -> Path:
    """Install the agent under ``folder`` (readable by every user); returns its
    ``orchestrator-pull`` script."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    bundle = build_bundle(folder / "bundle")
    venv = folder / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, capture_output=True)
    pip = [
        *(str(venv / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"),
        *("--no-index", "--find-links", str(bundle.folder)),
    ]
    for args in (
        ["--no-deps", str(bundle.folder / bundle.agent_wheel)],
        ["--requirement", str(bundle.folder / agent_bundle.REQUIREMENTS_FILE)],
        ["--requirement", str(bundle.folder / agent_bundle.OPTIONAL_FILE)],
    ):
        done = subprocess.run([*pip, *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"installing the pull agent ({' '.join(args)}): {done.stderr}")
    agent = venv / "bin/orchestrator-pull"
    check = subprocess.run([str(agent), "--help"], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"the installed pull agent does not start: {check.stderr}")
    return agent


@pytest.fixture(scope="module")
def pull_agent() -> Iterator[Path]:
    """The pull agent, installed as on a client where the test hosts' users can run it."""
    folder = Path(tempfile.mkdtemp(prefix="orchestrator-agent-"))
    try:
        yield install_pull_agent(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    print(install_pull_agent(Path(sys.argv[1])))
