"""Running the project's playbooks through ansible-runner.

Only ansible-runner's Python API is used: a fresh private data dir per run,
``event_handler`` for per-host progress, ``status_handler`` for the run's
state, ``cancel_callback`` to stop it. Ansible's stdout is never parsed.

Secrets (SSH keys, WinRM passwords) are handed to the run in memory through
runner's ``ssh_key`` and extra variables kept out of artifacts: runner's
``suppress_env_files`` stops them landing in ``env/`` files, and the private
data dir is removed after the run.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from orchestrator.errors import InvalidInput
from orchestrator.remote.winrm import REBOOT_CODES

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"

RunStatus = str
"""successful | failed | timeout | canceled (ansible-runner's words)."""


@dataclass(frozen=True)
class HostTarget:
    """One client as Ansible sees it."""

    name: str
    address: str
    port: int
    connection: str
    """ssh or winrm"""
    user: str
    variables: Mapping[str, Any] = field(default_factory=dict)
    host_key: str | None = None
    """The pinned SSH host key ('ssh-ed25519 AAAA…'); SSH refuses any other."""


@dataclass(frozen=True)
class PlaybookRequest:
    playbook: Path
    hosts: Sequence[HostTarget]
    forks: int = 10
    extravars: Mapping[str, Any] = field(default_factory=dict)
    ssh_key: str | None = field(default=None, repr=False)
    """Private key text for SSH clients (never written to the artifacts)."""
    winrm_password: str | None = field(default=None, repr=False)
    timeout: int | None = None
    ssh_retries: int = 2
    """Bounded reconnection attempts on a dropped SSH connection."""
    connect_timeout: int = 10


@dataclass
class HostOutcome:
    host: str
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    failed_task: str | None = None
    message: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    reboot_required: bool = False
    """An installer exited 3010/1641, or a module (win_package, …) said a reboot is due."""

    @property
    def status(self) -> str:
        if self.unreachable:
            return "unreachable"
        if self.failed:
            return "failed"
        if self.changed:
            return "changed"
        if self.ok:
            return "ok"
        return "skipped"


@dataclass
class RunOutcome:
    status: RunStatus
    rc: int | None
    hosts: dict[str, HostOutcome]
    reason: str = ""


@dataclass(frozen=True)
class HostEvent:
    """A per-host step, for live progress."""

    host: str
    task: str
    result: str
    """ok, changed, failed, unreachable, skipped"""
    message: str = ""


class PlaybookRunner(Protocol):
    def run(
        self,
        request: PlaybookRequest,
        on_event: Callable[[HostEvent], None] = ...,
        should_cancel: Callable[[], bool] = ...,
    ) -> RunOutcome: ...


def playbook_path(name: str) -> Path:
    """One of the project's playbooks, by name ('gather_facts' or 'gather_facts.yml').

    Raises:
        InvalidInput: not one of the project's playbooks.
    """
    stem = name.removesuffix(".yml").removesuffix(".yaml")
    if not stem or "/" in stem or "\\" in stem or stem.startswith("."):
        raise InvalidInput(f"{name!r} is not a playbook name", field="playbook")
    path = PLAYBOOKS / f"{stem}.yml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PLAYBOOKS.glob("*.yml")))
        raise InvalidInput(
            f"no playbook {name!r} (the project's playbooks: {known})", field="playbook"
        )
    return path


def known_hosts_for(hosts: Sequence[HostTarget]) -> str:
    """known_hosts lines for the pinned keys (unpinned hosts get none, so SSH refuses them)."""
    lines = []
    for h in hosts:
        if h.connection == "ssh" and h.host_key:
            where = h.address if h.port == 22 else f"[{h.address}]:{h.port}"
            lines.append(f"{where} {h.host_key}")
    return "\n".join(lines) + "\n"


def inventory_for(hosts: Sequence[HostTarget], known_hosts: Path | None = None) -> dict[str, Any]:
    entries: dict[str, Any] = {}
    for h in hosts:
        hv: dict[str, Any] = {
            "ansible_host": h.address,
            "ansible_port": h.port,
            "ansible_connection": h.connection,
            "ansible_user": h.user,
        }
        if h.connection == "ssh" and known_hosts is not None:
            hv["ansible_ssh_common_args"] = (
                f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes"
            )
        if h.connection == "winrm":
            hv |= {
                "ansible_winrm_transport": "ntlm",
                "ansible_winrm_message_encryption": "always",
                "ansible_winrm_scheme": "http",
            }
        hv |= dict(h.variables)
        entries[h.name] = hv
    return {"all": {"hosts": entries}}


def needs_reboot(res: Mapping[str, Any]) -> bool:
    """Whether a task result says the machine must restart to finish."""
    return bool(res.get("reboot_required")) or res.get("rc") in REBOOT_CODES


_RESULT_OF = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}


WORKDIR_PREFIX = "orchestrator-run-"
OWNER_FILE = "owner.pid"
"""In each run's working folder: the process it belongs to."""


def remove_abandoned_workdirs(parent: Path | None = None) -> list[Path]:
    """Remove the working folders of runs whose process is gone (killed mid-run:
    a normal end removes its own). Folders of live processes, and folders
    without an owner file, are left alone. Returns the folders removed."""
    removed = []
    for folder in sorted(Path(parent or tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*")):
        try:
            pid = int((folder / OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue
        if pid == os.getpid() or _alive(pid):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class AnsibleRunner:
    """The real runner: ansible-runner over the ``ansible`` package."""

    def run(
        self,
        request: PlaybookRequest,
        on_event: Callable[[HostEvent], None] = lambda _e: None,
        should_cancel: Callable[[], bool] = lambda: False,
    ) -> RunOutcome:
        import ansible_runner

        if not request.hosts:
            return RunOutcome("failed", None, {}, "no hosts matched: nothing to run on")
        outcomes = {h.name: HostOutcome(h.name) for h in request.hosts}
        workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
        try:
            (workdir / OWNER_FILE).write_text(str(os.getpid()))
            (workdir / "inventory").mkdir()
            known_hosts = workdir / "known_hosts"
            known_hosts.write_text(known_hosts_for(request.hosts))
            inventory = inventory_for(request.hosts, known_hosts)
            if request.winrm_password is not None:
                # --ask-pass (below) gives every host the WinRM password as its
                # connection password; SSH clients keep logging in with their key.
                for h in request.hosts:
                    if h.connection != "winrm":
                        inventory["all"]["hosts"][h.name].setdefault("ansible_password", "")
            (workdir / "inventory" / "hosts.yml").write_text(yaml.safe_dump(inventory))
            (workdir / "project").mkdir()
            shutil.copytree(PLAYBOOKS, workdir / "project", dirs_exist_ok=True)
            if request.playbook.parent != PLAYBOOKS:  # a play of the tests' or benchmarks'
                shutil.copy(request.playbook, workdir / "project" / request.playbook.name)

            def handle(event: dict[str, Any]) -> bool:
                kind = event.get("event", "")
                data = event.get("event_data") or {}
                host = data.get("host")
                if kind in _RESULT_OF and host in outcomes:
                    out = outcomes[host]
                    res = data.get("res") or {}
                    result = _RESULT_OF[kind]
                    if result == "ok" and res.get("changed"):
                        result = "changed"
                    if kind == "runner_on_failed" and data.get("ignore_errors"):
                        result = "ok"
                    message = str(res.get("msg") or res.get("stderr") or "").strip()
                    if result != "failed" and needs_reboot(res):
                        out.reboot_required = True
                        rc = res.get("rc")
                        note = f"exit code {rc}: reboot required" if rc else "reboot required"
                        out.message = f"{data.get('task') or 'task'}: {note}"
                    if result in ("failed", "unreachable"):
                        out.failed_task = str(data.get("task") or "")
                        out.message = message[:2000]
                    facts = res.get("ansible_facts")
                    if isinstance(facts, dict):
                        out.facts.update(facts)
                    on_event(HostEvent(host, str(data.get("task") or ""), result, message[:500]))
                if kind == "playbook_on_stats":
                    for key, attr in (
                        ("ok", "ok"),
                        ("changed", "changed"),
                        ("failures", "failed"),
                        ("dark", "unreachable"),
                        ("skipped", "skipped"),
                    ):
                        for h, n in (data.get(key) or {}).items():
                            if h in outcomes:
                                setattr(outcomes[h], attr, int(n))
                return True

            envvars = {
                "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
                "ANSIBLE_HOST_KEY_CHECKING": "True",
                "ANSIBLE_RETRY_FILES_ENABLED": "False",
                "ANSIBLE_SSH_RETRIES": str(request.ssh_retries),
                "ANSIBLE_TIMEOUT": str(request.connect_timeout),
                "ANSIBLE_NOCOLOR": "True",
                # A connection kept from an earlier run must never stand in for a new
                # one: each run has its own control sockets, which die with it.
                "ANSIBLE_SSH_CONTROL_PATH_DIR": str(workdir / "cp"),
                "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=5s",
                # The ansible-playbook installed beside this Python, whatever PATH says.
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            }
            # The WinRM password is typed at ansible-playbook's connection-password
            # prompt (--ask-pass) through runner's pexpect ``passwords``: never on the
            # command line or in the environment, both of which runner writes to
            # artifacts/<ident>/command.
            passwords: dict[str, str] = {}
            if request.winrm_password is not None:
                passwords[r"^SSH password:\s*?$"] = request.winrm_password
            runner = ansible_runner.run(
                private_data_dir=str(workdir),
                playbook=request.playbook.name,
                inventory=str(workdir / "inventory" / "hosts.yml"),
                envvars=envvars,
                extravars=dict(request.extravars),
                passwords=passwords,
                cmdline="--ask-pass" if passwords else None,
                ssh_key=request.ssh_key,
                forks=request.forks,
                timeout=request.timeout,
                event_handler=handle,
                cancel_callback=should_cancel,
                quiet=True,
                suppress_env_files=True,
                json_mode=False,
            )
            status = str(runner.status)
            rc = runner.rc
            reason = ""
            if status == "successful" and not any(
                o.ok or o.changed or o.failed or o.unreachable or o.skipped
                for o in outcomes.values()
            ):
                status, reason = "failed", "no hosts matched: the play ran on nothing"
            elif status == "failed":
                bad = [o.host for o in outcomes.values() if o.status in ("failed", "unreachable")]
                reason = (
                    f"{len(bad)} host(s) failed or unreachable"
                    if bad
                    else (f"ansible-playbook exited {rc}")
                )
            return RunOutcome(status, rc, outcomes, reason)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


class FakePlaybookRunner:
    """A runner for unit tests: each host gets the outcome (and facts) it was given.

    Outcomes are Ansible's (ok, changed, failed, unreachable, skipped), or
    ``reboot``: changed, with an installer asking for a restart (exit 3010).
    """

    def __init__(
        self,
        results: Mapping[str, str] | None = None,
        facts: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.results = dict(results or {})
        self.facts = {host: dict(f) for host, f in (facts or {}).items()}
        self.requests: list[PlaybookRequest] = []

    def run(
        self,
        request: PlaybookRequest,
        on_event: Callable[[HostEvent], None] = lambda _e: None,
        should_cancel: Callable[[], bool] = lambda: False,
    ) -> RunOutcome:
        self.requests.append(request)
        outcomes: dict[str, HostOutcome] = {}
        for h in request.hosts:
            if should_cancel():
                return RunOutcome("canceled", None, outcomes, "canceled")
            result = self.results.get(h.name, "ok")
            out = HostOutcome(h.name, facts=dict(self.facts.get(h.name, {})))
            if result == "reboot":
                result, out.reboot_required = "changed", True
                out.message = "fake installer: exit code 3010: reboot required"
            setattr(
                out,
                {
                    "ok": "ok",
                    "changed": "changed",
                    "failed": "failed",
                    "unreachable": "unreachable",
                    "skipped": "skipped",
                }[result],
                1,
            )
            if result in ("failed", "unreachable"):
                out.failed_task, out.message = "fake task", f"{result} by the fake runner"
            outcomes[h.name] = out
            on_event(HostEvent(h.name, "fake task", result))
        failed = any(o.status in ("failed", "unreachable") for o in outcomes.values())
        return RunOutcome("failed" if failed else "successful", 2 if failed else 0, outcomes)
