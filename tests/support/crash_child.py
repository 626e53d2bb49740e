"""An orchestrator process that stops dead at a named point of a deployment.

The crash tests (tests/remote/test_rollout_sshd.py) start it as
``python -m tests.support.crash_child '<json>'`` in a session of its own. It
ticks one deployment as the scheduler's service does (again and again while
the tick says more may start now), with the real runner, and when it reaches
the named point it writes a marker file and waits there to be SIGKILLed. If it
never reaches the point it exits, which the test reports as a failure: a kill
point that is not reached tests nothing.

The points, each with an optional ``#n`` (the n-th time it is reached, 1 by
default):

``decided``
    The tick's first transaction is committed (the window opened, retries
    due moved to pending) and the batch's run is about to be written.
``staged``
    The batch's rows are staging and its run row is ``running``, both
    committed; ansible-runner is not started yet.
``downloading``
    The play is changing the hosts: the first host asks the run's
    distribution server for the package (its download folder is made). That
    request and every later one are held unanswered, and every process under
    this one (ansible-playbook, its workers, ssh) is stopped with SIGSTOP, so
    no host gets past its download and no installer runs anywhere.
``task:<name>``
    The play is going: the first host event of the task ``<name>`` as this
    process reads it (ansible-playbook may be a little ahead). Every process
    under this one is stopped with SIGSTOP first, so the play goes no further.
``runner_finished``
    ansible-runner returned: the play ended and its private data dir (the
    run's artifacts) is still on disk; nothing of its results is written.
``results_written``
    The run's host results and its end are committed; the deployment's
    client rows have not been moved by them yet.
``between_ticks``
    A tick ended (a wave done, say the pilot) and the next has not begun.

The hooks wrap functions in this process only; production code has none.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

POINTS = (
    "decided",
    "staged",
    "downloading",
    "task:",
    "runner_finished",
    "results_written",
    "between_ticks",
)


def _children() -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        found.setdefault(ppid, []).append(int(entry.name))
    return found


def _freeze_descendants() -> list[int]:
    """SIGSTOP every process under this one (parents first), until no new one appears."""
    frozen: list[int] = []
    while True:
        tree = _children()
        todo, new = [os.getpid()], []
        while todo:
            for child in tree.get(todo.pop(0), []):
                todo.append(child)
                if child not in frozen:
                    new.append(child)
        if not new:
            return frozen
        for pid in new:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                continue
            frozen.append(pid)


class _Hook:
    def __init__(self, point: str, marker: Path) -> None:
        name, _, nth = point.partition("#")
        if not name.startswith(POINTS):
            raise SystemExit(f"unknown kill point {point!r}; known: {', '.join(POINTS)}")
        self.name, self.nth, self.marker, self.seen = name, int(nth or 1), marker, 0
        self.facts: dict[str, Any] = {}
        """Known so far and written with the marker (the run's private data dir)."""

    def reached(self, name: str, **facts: Any) -> None:
        """At ``name``: the n-th time, write the marker and wait to be killed."""
        if name != self.name:
            return
        self.seen += 1
        if self.seen == self.nth:
            self._stop_here(facts)

    def _stop_here(self, facts: dict[str, Any]) -> NoReturn:
        frozen = _freeze_descendants() if self.name.startswith(("task:", "downloading")) else []
        tmp = self.marker.with_name(self.marker.name + ".tmp")
        tmp.write_text(json.dumps({"point": self.name, "frozen": frozen, **self.facts, **facts}))
        tmp.rename(self.marker)  # the test sees the whole marker or none
        while True:
            time.sleep(60)


def _install(hook: _Hook) -> None:
    import ansible_runner

    from orchestrator.remote import distribution
    from orchestrator.remote.ansible import AnsibleRunner, HostEvent, PlaybookRequest, RunOutcome
    from orchestrator.services import runs

    real_run_playbook = runs.run_playbook

    def run_playbook(*args: Any, **kwargs: Any) -> runs.RunView:
        hook.reached("decided", hosts=sorted(kwargs.get("hostnames") or ()))
        view = real_run_playbook(*args, **kwargs)
        hook.reached("results_written", run=view.id, status=view.status)
        return view

    real_runner_run = AnsibleRunner.run

    def runner_run(
        self: AnsibleRunner,
        request: PlaybookRequest,
        on_event: Callable[[HostEvent], None] = lambda _e: None,
        should_cancel: Callable[[], bool] = lambda: False,
    ) -> RunOutcome:
        hook.reached("staged", hosts=sorted(h.name for h in request.hosts))

        def spy(event: HostEvent) -> None:
            hook.reached(f"task:{event.task}", host=event.host, result=event.result)
            on_event(event)

        return real_runner_run(self, request, spy, should_cancel)

    real_ansible_run = ansible_runner.run

    def ansible_run(**kwargs: Any) -> Any:
        hook.facts["private_data_dir"] = kwargs["private_data_dir"]
        result = real_ansible_run(**kwargs)
        hook.reached("runner_finished", status=result.status)
        hook.facts.clear()
        return result

    real_do_get = distribution._Handler.do_GET

    def do_get(self: distribution._Handler) -> None:
        hook.reached("downloading", path=self.path)
        if hook.name == "downloading":  # stopped at the first; every other waits too
            while True:
                time.sleep(60)
        real_do_get(self)

    distribution._Handler.do_GET = do_get  # type: ignore[method-assign]
    runs.run_playbook = run_playbook
    AnsibleRunner.run = runner_run  # type: ignore[method-assign]
    ansible_runner.run = ansible_run


def main(argv: list[str]) -> int:
    from orchestrator.clock import FixedClock
    from orchestrator.db.session import make_engine
    from orchestrator.services import rollout_runner, runs
    from orchestrator.services.context import Context

    a = json.loads(argv[1])
    kw: dict[str, Any] = {}
    if a["search_path"]:
        kw["connect_args"] = {"options": "-csearch_path=" + a["search_path"]}
    now = datetime.fromisoformat(a["now"])
    ctx = Context(
        engine=make_engine(a["url"], **kw),
        zone=ZoneInfo(a["zone"]),
        clock=FixedClock(now),
    )
    hook = _Hook(a["point"], Path(a["marker"]))
    _install(hook)
    credentials = runs.Credentials(ssh_key=Path(a["key"]).read_text())
    while True:
        result = rollout_runner.tick(ctx, a["deployment"], credentials=credentials)
        hook.reached("between_ticks", state=result.state, runs=list(result.runs))
        if result.next_at is None or result.next_at > now:
            break
    print(f"the deployment stands {result.state} and {a['point']!r} was never reached")
    return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv))
