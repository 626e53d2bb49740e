"""The project's playbooks pass Ansible's own syntax check and ansible-lint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.remote.ansible import PLAYBOOKS

BIN = Path(sys.executable).parent
PLAYS = sorted(PLAYBOOKS.glob("*.yml"))


def test_there_are_playbooks_to_check() -> None:
    assert {p.stem for p in PLAYS} >= {"ping", "gather_facts"}


@pytest.mark.parametrize("playbook", PLAYS, ids=lambda p: p.name)
def test_playbook_passes_the_syntax_check(playbook: Path) -> None:
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), "--syntax-check", "-i", "localhost,", str(playbook)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_playbooks_pass_ansible_lint() -> None:
    result = subprocess.run(
        [str(BIN / "ansible-lint"), "--nocolor", *[p.name for p in PLAYS]],
        capture_output=True,
        text=True,
        cwd=PLAYBOOKS,
        env={"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(Path.home())},
    )
    assert result.returncode == 0, result.stdout + result.stderr
