"""The real ansible-runner driver, on hosts that need no server: local
connections, and a loopback port where nothing listens."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from orchestrator.remote.ansible import (
    OWNER_FILE,
    WORKDIR_PREFIX,
    AnsibleRunner,
    HostEvent,
    HostTarget,
    PlaybookRequest,
    playbook_path,
    remove_abandoned_workdirs,
)


def test_an_unreachable_host_is_reported_with_ansibles_reason_and_fails_the_run() -> None:
    events: list[HostEvent] = []
    outcome = AnsibleRunner().run(
        PlaybookRequest(
            playbook=playbook_path("ping"),
            hosts=[HostTarget("gone-01", "127.0.0.1", 1, "ssh", "nobody")],
            connect_timeout=3,
            ssh_retries=0,
        ),
        on_event=events.append,
    )
    assert outcome.status == "failed"
    host = outcome.hosts["gone-01"]
    assert host.status == "unreachable"
    assert host.message is not None and "Connection refused" in host.message
    assert [e.result for e in events] == ["unreachable"]


def test_a_play_that_touches_no_host_is_a_failure_not_a_success() -> None:
    outcome = AnsibleRunner().run(PlaybookRequest(playbook=playbook_path("ping"), hosts=[]))
    assert outcome.status == "failed"
    assert "no hosts matched" in outcome.reason


def test_cancelling_stops_the_run_and_says_so() -> None:
    outcome = AnsibleRunner().run(
        PlaybookRequest(
            playbook=playbook_path("ping"),
            hosts=[HostTarget("local-01", "127.0.0.1", 22, "local", "root")],
        ),
        should_cancel=lambda: True,
    )
    assert outcome.status == "canceled"


def test_the_working_folders_of_runs_whose_process_died_are_removed_and_no_others(
    tmp_path: Path,
) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    alive = subprocess.Popen(["sleep", "30"])
    try:
        for name, owner in [("dead", str(gone.pid)), ("live", str(alive.pid)), ("mine", None)]:
            folder = tmp_path / f"{WORKDIR_PREFIX}{name}"
            (folder / "inventory").mkdir(parents=True)
            if owner is not None:
                (folder / OWNER_FILE).write_text(owner)
        (tmp_path / f"{WORKDIR_PREFIX}mine" / OWNER_FILE).write_text(str(os.getpid()))
        (tmp_path / f"{WORKDIR_PREFIX}unowned").mkdir()
        (tmp_path / "something-else").mkdir()

        removed = remove_abandoned_workdirs(tmp_path)
    finally:
        alive.kill()
        alive.wait()

    assert removed == [tmp_path / f"{WORKDIR_PREFIX}dead"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"{WORKDIR_PREFIX}live",
        f"{WORKDIR_PREFIX}mine",
        f"{WORKDIR_PREFIX}unowned",
        "something-else",
    ]


def test_a_run_leaves_no_working_folder_behind_and_names_its_owner_while_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen: list[str] = []

    def look(_event: HostEvent) -> None:
        for folder in tmp_path.glob(f"{WORKDIR_PREFIX}*"):
            seen.append((folder / OWNER_FILE).read_text())

    AnsibleRunner().run(
        PlaybookRequest(
            playbook=playbook_path("ping"),
            hosts=[HostTarget("gone-01", "127.0.0.1", 1, "ssh", "nobody")],
            connect_timeout=3,
            ssh_retries=0,
        ),
        on_event=look,
    )

    assert seen and set(seen) == {str(os.getpid())}
    assert list(tmp_path.glob(f"{WORKDIR_PREFIX}*")) == []
