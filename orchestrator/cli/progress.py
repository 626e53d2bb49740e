"""Live per-host progress while a playbook runs, and Ctrl-C as "cancel the run".

On a terminal a Rich live table shows every host that has reported, its
latest task and result and its counts; elsewhere (pipes, logs, CI) each host
step is one printed line, so nothing is lost when no one is watching.

The first Ctrl-C asks the run to cancel: Ansible stops, the run is recorded
as canceled with every host's result so far. A second Ctrl-C interrupts at
once.
"""

from __future__ import annotations

import signal
import threading
from collections import Counter
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from orchestrator.cli import render
from orchestrator.services.reach import ProbeResult
from orchestrator.services.runs import HostEvent

STYLE = {
    "ok": "green",
    "changed": "yellow",
    "failed": "red",
    "unreachable": "red",
    "skipped": "dim",
}
RESULTS = ("ok", "changed", "failed", "unreachable", "skipped")


@dataclass
class _Host:
    task: str = ""
    result: str = ""
    message: str = ""
    counts: Counter[str] = field(default_factory=Counter)


class HostProgress:
    """Use as ``with HostProgress(console, title) as progress:`` and pass
    ``progress.on_event`` and ``progress.should_cancel`` to the run."""

    def __init__(self, console: Console, title: str, *, quiet: bool = False) -> None:
        self.console = console
        self.title = title
        self.quiet = quiet
        self.hosts: dict[str, _Host] = {}
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._live: Live | None = None
        self._previous_handler: Any = None
        self._titled = False
        """Whether the title line was printed (in a pipe or a log: at the first event,
        so a run refused before it starts prints only its refusal)."""

    # -- the run's callbacks ------------------------------------------------

    def on_event(self, event: HostEvent) -> None:
        with self._lock:
            host = self.hosts.setdefault(event.host, _Host())
            host.task, host.result, host.message = event.task, event.result, event.message
            host.counts[event.result] += 1
        if self.quiet:
            return
        if self._live is not None:
            self._live.update(self.table())
            return
        with self._lock:
            title, self._titled = not self._titled, True
        if title:
            self.console.print(f"{self.title} (Ctrl-C cancels the run)", highlight=False)
        line = f"  {event.host}: [{STYLE.get(event.result, 'white')}]{event.result}[/] "
        line += escape(event.task)
        if event.result in ("failed", "unreachable") and event.message:
            line += f" — {escape(event.message[:160])}"
        self.console.print(line, highlight=False)

    def should_cancel(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()

    # -- the live table -----------------------------------------------------

    def table(self) -> Table:
        with self._lock:
            totals: Counter[str] = Counter(h.result for h in self.hosts.values())
            t = Table(
                title=self.title,
                caption=f"{len(self.hosts)} host(s) reporting — "
                + ", ".join(f"{totals[r]} {r}" for r in RESULTS if totals[r])
                + (" — canceling…" if self._cancel.is_set() else "  (Ctrl-C cancels the run)"),
                **render.TABLE_STYLE,
            )
            for heading in ("host", "latest task", "result", *RESULTS):
                t.add_column(heading, no_wrap=heading == "host")
            for name in sorted(self.hosts):
                h = self.hosts[name]
                colour = STYLE.get(h.result, "white")
                t.add_row(
                    name,
                    escape(h.task[:60]),
                    f"[{colour}]{h.result}[/]",
                    *(str(h.counts[r]) for r in RESULTS),
                )
            return t

    # -- context manager: live display and Ctrl-C ---------------------------

    def _on_interrupt(self, _signum: int, _frame: FrameType | None) -> None:
        if self._cancel.is_set():
            raise KeyboardInterrupt
        self._cancel.set()
        if self._live is None and not self.quiet:
            self.console.print("[yellow]canceling the run (Ctrl-C again to interrupt)…[/]")

    def __enter__(self) -> HostProgress:
        if not self.quiet and self.console.is_terminal:
            self._live = Live(self.table(), console=self.console, refresh_per_second=4)
            self._live.__enter__()
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGINT, self._on_interrupt)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None
        if self._live is not None:
            self._live.update(self.table())
            self._live.__exit__(exc_type, exc, tb)
            self._live = None


# -- probing clients --------------------------------------------------------

PROBE_STYLE = {
    "pinned": "cyan",
    "reachable": "green",
    "not pinned": "yellow",
    "host key changed": "red",
    "unreachable": "red",
}


class ProbeProgress:
    """Live per-host lines while clients are probed: use as
    ``with ProbeProgress(console, title) as progress:`` and pass
    ``progress.on_result`` to the probe.

    Each host prints one line as it answers; on a terminal a status line below
    counts the answers so far.
    """

    def __init__(self, console: Console, title: str, *, quiet: bool = False) -> None:
        self.console = console
        self.title = title
        self.quiet = quiet
        self.counts: Counter[str] = Counter()
        self._status: Any = None

    def on_result(self, result: ProbeResult) -> None:
        self.counts[result.result] += 1
        if self.quiet:
            return
        colour = PROBE_STYLE.get(result.result, "white")
        line = f"  {result.hostname}: [{colour}]{result.result}[/]"
        if result.fingerprint:
            line += f" {result.fingerprint}"
        if not result.ok:
            line += f" — {escape(result.message[:300])}"
        if result.result == "host key changed":
            line += f" (pinned: {result.pinned_fingerprint})"
        self.console.print(line, highlight=False)
        if self._status is not None:
            self._status.update(self._summary())

    def _summary(self) -> str:
        done = sum(self.counts.values())
        parts = ", ".join(f"{n} {r}" for r, n in sorted(self.counts.items()))
        return f"{self.title}: {done} answered" + (f" ({parts})" if parts else "")

    def __enter__(self) -> ProbeProgress:
        if self.quiet:
            return self
        if self.console.is_terminal:
            self._status = self.console.status(self._summary())
            self._status.__enter__()
        else:
            self.console.print(self.title, highlight=False)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._status is not None:
            self._status.__exit__(exc_type, exc, tb)
            self._status = None
