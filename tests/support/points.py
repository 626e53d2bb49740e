"""A building's distribution point for tests: a real sshd host's folder that the
orchestrator writes over SFTP, served to clients by the project's point server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from orchestrator.imagestore.point import PointServer
from orchestrator.services import staging
from orchestrator.services.staging import PointSpec
from tests.factories import District
from tests.support.sshd import SSHHost


@contextmanager
def serving_point(host: SSHHost) -> Iterator[PointServer]:
    """The point server over an empty ``store`` folder of ``host``, which its login owns."""
    root = host.root / "store"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    shutil.chown(root, user=host.username)
    with PointServer(root) as server:
        yield server


def add_point(d: District, host: SSHHost, server: PointServer, **changes: object) -> None:
    """IT gives building 101 that point (``changes`` replace fields of the spec)."""
    spec = {
        "building": "101",
        "address": host.address,
        "ssh_port": host.port,
        "ssh_user": host.username,
        "root": str(server.root),
        "url": server.url,
    }
    staging.add_point(d.ctx, d["it.ana"], PointSpec(**(spec | changes)))  # type: ignore[arg-type]
