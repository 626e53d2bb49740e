"""The real product in a process of its own: ``orchestrator serve``, the web
interface and the scheduler together, as a district runs it.

It is told where its database and data are through its ordinary settings
(``ORCHESTRATOR_*`` variables), asked for any free port, and its address is
read from the line it prints for people. Stopping it is SIGTERM, as a service
manager stops it; whatever it started that outlives it (ansible-playbook and
ssh run in sessions of their own) is killed after it, so nothing is left.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ADDRESS = re.compile(r"web interface and API at (http://127\.0\.0\.1:\d+)")
READY = "orchestrator service running"
STARTUP_SECONDS = 90


class ServiceFailed(RuntimeError):
    """The service did not start, or did not stop when asked."""


@dataclass
class Service:
    url: str
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    """Everything it printed so far (stdout and stderr)."""

    @property
    def output(self) -> str:
        return "".join(self.lines)


def _children(pid: int) -> list[int]:
    """Every live process descended from ``pid``, read from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: read after it.
        parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found.extend(kids)
        frontier.extend(kids)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


@contextlib.contextmanager
def running(
    env: Mapping[str, str], *, args: Sequence[str] = (), cwd: Path = REPO
) -> Iterator[Service]:
    """``orchestrator serve *args`` with ``env`` added to this process's environment,
    once its web interface answers and its scheduler has started; stopped afterwards.

    Raises: ServiceFailed when it ends or stays silent before it is ready.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "serve", *args],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    service = Service("", proc)
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            service.lines.append(line)
            found = ADDRESS.search(line)
            if found:
                service.url = found.group(1)
            if service.url and READY in service.output:
                ready.set()
        ready.set()  # ended: whoever waits looks at why

    reader = threading.Thread(target=read, name="serve-output", daemon=True)
    reader.start()
    try:
        if not ready.wait(STARTUP_SECONDS) or not service.url or proc.poll() is not None:
            raise ServiceFailed(
                f"orchestrator serve was not ready within {STARTUP_SECONDS} s "
                f"(exit status {proc.poll()}):\n{service.output}"
            )
        yield service
    finally:
        _stop(proc)
        reader.join(timeout=10)


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, as a service manager stops it; then SIGKILL for anything left of it."""
    started = _children(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in started:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.05)
