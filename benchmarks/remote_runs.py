"""The orchestrator's overhead over plain ``ansible-playbook``, side by side.

Starts ten real sshd hosts on loopback (the test hosts of tests/support/sshd.py),
then runs the same plays against them, alternately, through

* **plain** ``ansible-playbook`` (a static inventory, the same forks, pinned
  host keys and SSH settings), and
* **the orchestrator**: ``runs.run_playbook`` on a SQLite district, i.e.
  reading the clients, writing the run, ansible-runner with a fresh private
  data dir, per-host events, and recording every host's result and facts.

and prints the median wall time, seconds per host-task and the overhead.

Usage (as root, with openssh-server installed)::

    .venv/bin/python -m benchmarks.remote_runs [--repeat 7] [--hosts 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from orchestrator.db.models import Building, Client, Person, PersonBuilding
from orchestrator.db.session import make_engine, transaction
from orchestrator.domain.policy import Role
from orchestrator.remote.ansible import PLAYBOOKS, HostTarget, inventory_for, known_hosts_for
from orchestrator.services import bootstrap, directory, runs
from orchestrator.services.context import Context
from tests.support.sshd import SSHHost, start_hosts

BIN = Path(sys.executable).parent
PLAYS = ("ping", "gather_facts")


def tasks_in(play: str) -> int:
    """The play's tasks per host, run or skipped (its PC tasks are skipped on Macs)."""
    return sum(
        len(p.get("tasks", [])) for p in yaml.safe_load((PLAYBOOKS / f"{play}.yml").read_text())
    )


@dataclass
class Figure:
    play: str
    way: str
    hosts: int
    tasks: int
    median_s: float
    min_s: float
    max_s: float
    per_host_task_ms: float


def _targets(hosts: list[SSHHost]) -> list[HostTarget]:
    return [
        HostTarget(
            h.name,
            h.address,
            h.port,
            "ssh",
            h.username,
            {"orchestrator_root": str(h.root), "ansible_python_interpreter": "/usr/bin/python3"},
            host_key=h.host_key,
        )
        for h in hosts
    ]


def _plain(hosts: list[SSHHost], work: Path, forks: int) -> Callable[[str], None]:
    """ansible-playbook as an administrator would run it by hand."""
    known = work / "known_hosts"
    known.write_text(known_hosts_for(_targets(hosts)))
    inventory = work / "hosts.yml"
    inventory.write_text(yaml.safe_dump(inventory_for(_targets(hosts), known)))
    env = {
        **os.environ,
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_SSH_RETRIES": "2",
        "ANSIBLE_TIMEOUT": "10",
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "cp"),
        "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=5s",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }

    def run(play: str) -> None:
        done = subprocess.run(
            [
                str(BIN / "ansible-playbook"),
                "-i",
                str(inventory),
                "-f",
                str(forks),
                "--private-key",
                str(hosts[0].key_file),
                str(PLAYBOOKS / f"{play}.yml"),
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"plain ansible-playbook {play} failed:\n{done.stdout[-2000:]}")

    return run


def _orchestrator(hosts: list[SSHHost], work: Path, forks: int) -> Callable[[str], None]:
    """The same plays through the orchestrator's service, recorded in SQLite."""
    ctx = Context(engine=make_engine(f"sqlite:///{work / 'bench.db'}"))
    bootstrap.init_database(ctx)
    with transaction(ctx.engine) as s:
        building = Building(number="101", name="Lincoln Elementary", level="elementary")
        tech = Person(username="btc.lincoln", display_name="Lincoln BTC", role=Role.BTC.value)
        s.add(building)
        s.add(tech)
        s.flush()
        assert building.id is not None and tech.id is not None
        s.add(PersonBuilding(person_id=tech.id, building_id=building.id))
        for i, h in enumerate(hosts, 1):
            s.add(
                Client(
                    hostname=h.name,
                    building_id=building.id,
                    room="cart-1",
                    platform="mac",
                    model="MacBookAir10,1",
                    serial=f"C02TEST{i:04d}",
                    mac=f"02:00:00:00:01:{i:02x}",
                    address=h.address,
                    port=h.port,
                    transport="ssh",
                    login_user=h.username,
                    host_key=h.host_key,
                    host_vars={
                        "orchestrator_root": str(h.root),
                        "ansible_python_interpreter": "/usr/bin/python3",
                    },
                    created_at=ctx.now(),
                )
            )
    actor = directory.actor(ctx, "btc.lincoln")
    creds = runs.Credentials(ssh_key=hosts[0].key_file.read_text())

    def run(play: str) -> None:
        view = runs.run_playbook(ctx, actor, play, building="101", credentials=creds, forks=forks)
        if view.status != "successful":
            raise SystemExit(f"orchestrator {play} failed: {view.reason}")

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    forks = args.hosts
    figures: list[Figure] = []
    with start_hosts(args.hosts) as hosts, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ways = {
            "ansible-playbook": _plain(hosts, work, forks),
            "orchestrator": _orchestrator(hosts, work, forks),
        }
        for play in PLAYS:
            tasks = tasks_in(play)
            times: dict[str, list[float]] = {way: [] for way in ways}
            for run in ways.values():  # one warm-up each, not counted
                run(play)
            for _ in range(args.repeat):
                for way, run in ways.items():  # alternate, so drift hits both alike
                    started = time.perf_counter()
                    run(play)
                    times[way].append(time.perf_counter() - started)
            for way, samples in times.items():
                median = statistics.median(samples)
                figures.append(
                    Figure(
                        play,
                        way,
                        args.hosts,
                        tasks,
                        round(median, 3),
                        round(min(samples), 3),
                        round(max(samples), 3),
                        round(1000 * median / (args.hosts * tasks), 1),
                    )
                )
    if args.json:
        print(json.dumps([asdict(f) for f in figures], indent=2))
        return 0
    print(f"{args.hosts} loopback sshd hosts, forks {forks}, median of {args.repeat} runs\n")
    print("| play | way | median s | min s | max s | ms per host-task | overhead |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for f in figures:
        plain = next(p for p in figures if p.play == f.play and p.way == "ansible-playbook")
        overhead = (
            f"{100 * (f.median_s - plain.median_s) / plain.median_s:+.1f}%"
            if f.way == "orchestrator"
            else "—"
        )
        print(
            f"| {f.play} | {f.way} | {f.median_s:.2f} | {f.min_s:.2f} | {f.max_s:.2f} "
            f"| {f.per_host_task_ms:.1f} | {overhead} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
