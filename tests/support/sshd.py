"""Real OpenSSH servers on loopback, standing in for the district's Macs.

Each host is its own ``sshd`` process on its own port, with its own host key,
its own local login user (created here, removed afterwards) and its own
simulated machine: a folder holding the facts a Mac would report, package
receipts and the orchestrator's image marker. macOS commands (``sw_vers``,
``system_profiler``, ``pkgutil``) are small stand-ins first on the session's
PATH that read that folder: macOS steps verified on Linux hosts with
stand-in commands.

Needs root (to create users and start sshd) and Debian's openssh-server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"

_STANDINS = {
    "sw_vers": """#!/bin/sh
echo "sw_vers $*" >> "$ORCH_ROOT/var/log/standins.log"
python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["os_version"])' \\
    "$ORCH_ROOT/etc/machine.json"
""",
    "system_profiler": """#!/bin/sh
echo "system_profiler $*" >> "$ORCH_ROOT/var/log/standins.log"
python3 - "$ORCH_ROOT/etc/machine.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(json.dumps({"SPHardwareDataType": [
    {"machine_model": m["model"], "serial_number": m["serial"]}]}))
PY
""",
    "pkgutil": """#!/bin/sh
echo "pkgutil $*" >> "$ORCH_ROOT/var/log/standins.log"
ls "$ORCH_ROOT/var/db/receipts" 2>/dev/null | sed 's/\\.plist$//'
""",
}


@dataclass
class SSHHost:
    name: str
    port: int
    username: str
    password: str = field(repr=False)
    key_file: Path
    host_key: str
    """The host's public key line, 'ssh-ed25519 AAAA…'."""
    root: Path
    """The simulated machine's folder."""
    config: Path
    log: Path
    address: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd on port {port} did not start")


def _run(*args: str, stdin: str | None = None) -> None:
    subprocess.run(args, input=stdin, text=True, check=True, capture_output=True)


def _make_host(base: Path, index: int, client_key: Path) -> SSHHost:
    name = f"mac-{index:02d}"
    # Unique per test session, so sessions running side by side never share a user.
    user = f"orch{base.name[-6:].lower().replace('_', 'x')}c{index:02d}"
    folder = base / name
    root = folder / "machine"
    (root / "etc").mkdir(parents=True)
    (root / "var" / "db" / "receipts").mkdir(parents=True)
    (root / "var" / "orchestrator").mkdir(parents=True)
    (root / "var" / "log").mkdir(parents=True)
    (root / "etc" / "machine.json").write_text(
        json.dumps(
            {"model": "MacBookAir10,1", "serial": f"C02TEST{index:04d}", "os_version": "15.3"}
        )
    )
    (root / "var" / "db" / "receipts" / "org.mozilla.firefox.plist").write_text("receipt")
    (root / "var" / "orchestrator" / "image-marker").write_text(f"101/lab@1.{index}\n")
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    for command, script in _STANDINS.items():
        path = bin_dir / command
        path.write_text(script)
        path.chmod(0o755)
    subprocess.run(["userdel", "-r", user], capture_output=True)
    _run("useradd", "--create-home", "--shell", "/bin/sh", user)
    password = f"pw-{user}-{os.urandom(4).hex()}"
    _run("chpasswd", stdin=f"{user}:{password}\n")
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "host_key"))
    (folder / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
    for path in (folder, folder.parent, root, *root.rglob("*")):
        shutil.chown(path, user=user) if path != folder.parent else None
    os.chmod(folder, 0o755)
    port = _free_port()
    config = folder / "sshd_config"
    config.write_text(
        f"""ListenAddress 127.0.0.1
Port {port}
HostKey {folder / "host_key"}
PidFile {folder / "sshd.pid"}
AuthorizedKeysFile {folder / "authorized_keys"}
PasswordAuthentication yes
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
StrictModes no
AllowUsers {user}
SetEnv PATH={bin_dir}:/usr/local/bin:/usr/bin:/bin ORCH_ROOT={root}
Subsystem sftp internal-sftp
"""
    )
    host_key = " ".join((folder / "host_key.pub").read_text().split()[:2])
    return SSHHost(
        name, port, user, password, client_key, host_key, root, config, folder / "sshd.log"
    )


def start(host: SSHHost) -> None:
    host.process = subprocess.Popen(
        [SSHD, "-D", "-f", str(host.config), "-E", str(host.log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_port(host.port)


def kill_host(host: SSHHost) -> None:
    """SIGKILL the host's sshd (and the sessions it forked)."""
    if host.process is not None:
        host.process.send_signal(signal.SIGKILL)
        host.process.wait()
        host.process = None
    subprocess.run(["pkill", "-KILL", "-u", host.username], capture_output=True)


@contextmanager
def start_hosts(n: int) -> Iterator[list[SSHHost]]:
    """``n`` running hosts; all stopped, their users and folders removed afterwards."""
    if os.geteuid() != 0:
        raise RuntimeError("the sshd test hosts need root (to create users and run sshd)")
    # Not under pytest's tmp folders: those are private to root, and each host's
    # user must reach its own folder.
    base = Path(tempfile.mkdtemp(prefix="orchestrator-hosts-", dir="/tmp"))
    os.chmod(base, 0o755)
    # sshd's privilege separation directory (a packaged service would create it).
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    hosts: list[SSHHost] = []
    # One key for every host, as a district deploys one orchestrator key to its Macs.
    client_key = base / "orchestrator_key"
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(client_key))
    try:
        for i in range(1, n + 1):
            host = _make_host(base, i, client_key)
            hosts.append(host)
            start(host)
        yield hosts
    finally:
        for host in hosts:
            kill_host(host)
            subprocess.run(["userdel", "-r", host.username], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
