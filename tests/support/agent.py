"""The pull agent installed on a test host as on a client: its own virtual
environment of the system's Python (the test hosts' users cannot run the
project's, which lives under root's home), the project installed into it with
pip, and only what the agent imports beside it (its chunking, compression and
signature libraries), at the versions the project's environment runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
AGENT_LIBRARIES = ("zstandard", "cryptography", "fastcdc", "click")
"""What ``python -m orchestrator.imagestore.pull`` imports beyond the standard library."""


def install_pull_agent(folder: Path, python: str = "/usr/bin/python3") -> Path:
    """Install the agent under ``folder`` (readable by every user); returns its
    ``orchestrator-pull`` script."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    venv = folder / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, capture_output=True)
    pins = [f"{name}=={metadata.version(name)}" for name in AGENT_LIBRARIES]
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for args in ([*pins], ["--no-deps", str(PROJECT)]):
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
