"""The real ansible-runner driver, on hosts that need no server: local
connections, and a loopback port where nothing listens."""

from __future__ import annotations

from orchestrator.remote.ansible import (
    AnsibleRunner,
    HostEvent,
    HostTarget,
    PlaybookRequest,
    playbook_path,
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
