"""Pytest fixtures for the loopback test hosts; import them where needed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.sshd import SSHHost, start_hosts


@pytest.fixture(scope="session")
def ssh_hosts() -> Iterator[list[SSHHost]]:
    """Ten running sshd hosts, shared by the session (tests must leave them running)."""
    with start_hosts(10) as hosts:
        yield hosts
