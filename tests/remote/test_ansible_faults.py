"""Faults during real runs on the loopback sshd hosts: a host dying mid-play,
the wrong key, one host's play failing, a run cancelled half way.

These drive :class:`AnsibleRunner` directly (with a slow test play where
timing matters) and, where the record matters, the runs service.
"""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest

from orchestrator.remote.ansible import (
    AnsibleRunner,
    HostEvent,
    HostTarget,
    PlaybookRequest,
    playbook_path,
)
from tests.support.fixtures import ssh_hosts  # noqa: F401  (fixture)
from tests.support.sshd import SSHHost, kill_host, start

SLOW = Path(__file__).resolve().parents[1] / "support" / "playbooks" / "slow.yml"


def _target(h: SSHHost) -> HostTarget:
    return HostTarget(
        h.name,
        h.address,
        h.port,
        "ssh",
        h.username,
        {"orchestrator_root": str(h.root), "ansible_python_interpreter": "/usr/bin/python3"},
        host_key=h.host_key,
    )


def _key(hosts: list[SSHHost]) -> str:
    return hosts[0].key_file.read_text()


def test_a_host_killed_mid_play_is_unreachable_and_the_others_finish(
    ssh_hosts: list[SSHHost],  # noqa: F811
) -> None:
    hosts = ssh_hosts[:4]
    victim = hosts[1]
    killed = threading.Event()

    def on_event(e: HostEvent) -> None:
        # Once the victim has answered the first task, its machine goes away.
        if e.host == victim.name and not killed.is_set():
            killed.set()
            kill_host(victim)

    try:
        outcome = AnsibleRunner().run(
            PlaybookRequest(
                playbook=SLOW,
                hosts=[_target(h) for h in hosts],
                ssh_key=_key(hosts),
                ssh_retries=2,
                connect_timeout=3,
            ),
            on_event=on_event,
        )
    finally:
        start(victim)

    assert killed.is_set()
    assert outcome.status == "failed"
    assert outcome.hosts[victim.name].status == "unreachable"
    assert outcome.hosts[victim.name].ok >= 1  # it did answer before it died
    for h in hosts:
        if h is not victim:
            assert outcome.hosts[h.name].status == "ok", outcome.hosts[h.name]
            assert outcome.hosts[h.name].ok == 3


def test_a_host_back_within_the_retries_finishes_the_play(
    ssh_hosts: list[SSHHost],  # noqa: F811
) -> None:
    """Retries are real: a host whose sshd returns while Ansible retries recovers."""
    host = ssh_hosts[2]
    kill_host(host)
    timer = threading.Timer(1.0, start, args=(host,))
    timer.start()
    try:
        outcome = AnsibleRunner().run(
            PlaybookRequest(
                playbook=playbook_path("ping"),
                hosts=[_target(host)],
                ssh_key=_key(ssh_hosts),
                ssh_retries=5,
                connect_timeout=3,
            )
        )
    finally:
        timer.join()
    assert outcome.hosts[host.name].status == "ok", outcome.hosts[host.name]


def test_the_wrong_key_is_refused_on_every_host_with_sshs_reason(
    ssh_hosts: list[SSHHost],  # noqa: F811
    tmp_path: Path,
) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    hosts = ssh_hosts[:3]
    outcome = AnsibleRunner().run(
        PlaybookRequest(
            playbook=playbook_path("ping"),
            hosts=[_target(h) for h in hosts],
            ssh_key=stranger.read_text(),
            ssh_retries=0,
        )
    )
    assert outcome.status == "failed"
    for h in hosts:
        result = outcome.hosts[h.name]
        assert result.status == "unreachable"
        assert result.message is not None and "Permission denied" in result.message


def test_one_hosts_failing_task_fails_that_host_only_with_the_tasks_message(
    ssh_hosts: list[SSHHost],  # noqa: F811
) -> None:
    hosts = ssh_hosts[3:6]
    broken = hosts[0]
    machine = broken.root / "etc" / "machine.json"
    saved = machine.read_text()
    machine.write_text("{not json")
    try:
        outcome = AnsibleRunner().run(
            PlaybookRequest(
                playbook=playbook_path("gather_facts"),
                hosts=[_target(h) for h in hosts],
                ssh_key=_key(ssh_hosts),
            )
        )
    finally:
        machine.write_text(saved)
    assert outcome.status == "failed"
    failed = outcome.hosts[broken.name]
    assert failed.status == "failed"
    assert failed.failed_task == "Read the macOS version"
    assert failed.message
    for h in hosts[1:]:
        assert outcome.hosts[h.name].status == "ok"
        assert outcome.hosts[h.name].facts["orchestrator_serial"].startswith("C02TEST")


@pytest.mark.parametrize("after_events", [1, 4])
def test_cancelling_mid_run_stops_it_and_keeps_what_each_host_did(
    ssh_hosts: list[SSHHost],  # noqa: F811
    after_events: int,
) -> None:
    hosts = ssh_hosts[6:10]
    seen: list[HostEvent] = []
    outcome = AnsibleRunner().run(
        PlaybookRequest(
            playbook=SLOW,
            hosts=[_target(h) for h in hosts],
            ssh_key=_key(ssh_hosts),
            extravars={"wait_seconds": 20},
        ),
        on_event=seen.append,
        should_cancel=lambda: len(seen) >= after_events,
    )
    assert outcome.status == "canceled"
    assert len(seen) >= after_events
    # Nobody reached the last task: the wait was cut short.
    assert all(e.task != "Second answer" for e in seen)
    answered = {e.host for e in seen if e.task == "First answer" and e.result == "ok"}
    assert answered, json.dumps([e.__dict__ for e in seen])
