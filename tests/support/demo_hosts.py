"""Loopback Macs to try the orchestrator on: the test suite's sshd hosts, kept running.

The sample district's computers sit at loopback addresses where nothing
answers, so a run on them shows every host unreachable. To watch runs
succeed, start a few real OpenSSH servers standing in for Macs (macOS steps
verified on Linux hosts with stand-in commands) and import them::

    sudo .venv/bin/python -m tests.support.demo_hosts --count 4 --building 101 --room demo-cart

It writes an Ansible inventory of the hosts and the orchestrator's private
key into ``--out`` (default ``./demo-hosts``), prints the commands that import
them and store the key, and keeps the hosts running until Ctrl-C, when their
users and folders are removed. Needs root (it creates a local user per host)
and Debian's openssh-server.

With ``--personas``, the first host also gets a student and a staff test
account (real local users, each with its own random password, as
:func:`tests.support.sshd.add_personas` makes them), so it can serve as a
test client for ``orchestrator image test``: their passwords are written to
``student.pw`` and ``staff.pw`` in ``--out`` (mode 0600, removed on exit) and
the commands that mark the host and set the building's test accounts are
printed.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
from pathlib import Path
from types import FrameType

import yaml

from tests.support.sshd import SSHHost, add_personas, start_hosts


def inventory(hosts: list[SSHHost], *, building: str, room: str) -> dict[str, object]:
    """An Ansible YAML inventory the orchestrator imports as it is."""
    entries = {}
    for i, h in enumerate(hosts, 1):
        entries[f"{building}-{room}-{h.name}"] = {
            "ansible_host": h.address,
            "ansible_port": h.port,
            "ansible_user": h.username,
            "serial": f"C02TEST{i:04d}",
            "mac": f"02:00:00:de:{int(building) % 256:02x}:{i:02x}",
            # The stand-in machine's folder, and no sudo: each host's user owns it.
            "orchestrator_root": str(h.root),
            "orchestrator_become": "false",
            "ansible_python_interpreter": "/usr/bin/python3",
        }
    return {
        "all": {
            "vars": {
                "building": building,
                "room": room,
                "platform": "mac",
                "model": "MacBookAir10,1",
            },
            "hosts": entries,
        }
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=4, help="how many Macs (default 4)")
    parser.add_argument("--building", default="101", help="their building number")
    parser.add_argument("--room", default="demo-cart", help="their room, lab or cart")
    parser.add_argument("--out", type=Path, default=Path("demo-hosts"), help="where to write")
    parser.add_argument(
        "--personas",
        action="store_true",
        help="give the first Mac a student and a staff test account (a test client)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 30:
        parser.error("--count must be between 1 and 30")
    args.out.mkdir(parents=True, exist_ok=True)
    with start_hosts(args.count) as hosts:
        listing = args.out / "inventory.yml"
        listing.write_text(yaml.safe_dump(inventory(hosts, building=args.building, room=args.room)))
        key = args.out / "orchestrator_key"
        shutil.copy(hosts[0].key_file, key)
        key.chmod(0o600)
        print(
            f"{len(hosts)} Macs running on 127.0.0.1, ports {', '.join(str(h.port) for h in hosts)}"
        )
        print("In another terminal:")
        print(f"  orchestrator --as it.rivera clients import {listing}")
        print(f"  orchestrator --as it.rivera credentials set ssh-key --file {key}")
        print(
            f"  orchestrator --as btc.lincoln clients gather --building {args.building} "
            f"--room {args.room}"
        )
        password_files: list[Path] = []
        if args.personas:
            first = hosts[0]
            personas = add_personas(first)
            print(f"test accounts on {args.building}-{args.room}-{first.name}:")
            print(
                f"  orchestrator --as it.rivera testing clients mark "
                f"{args.building}-{args.room}-{first.name}"
            )
            for persona in ("student", "staff"):
                found = personas[persona]
                pw = args.out / f"{persona}.pw"
                pw.touch(mode=0o600)
                pw.chmod(0o600)
                pw.write_text(found.password + "\n")
                password_files.append(pw)
                print(
                    f"  orchestrator --as it.rivera testing accounts set --building "
                    f"{args.building} --persona {persona} --username {found.username} "
                    f"--password-file {pw}"
                )
        print("Ctrl-C stops them.", flush=True)

        def stop(_signum: int, _frame: FrameType | None) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)
        try:
            signal.pause()
        except KeyboardInterrupt:
            print("stopping the Macs", file=sys.stderr)
        finally:
            for pw in password_files:
                pw.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
