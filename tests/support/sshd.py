"""Real OpenSSH servers on loopback, standing in for the district's Macs.

Each host is its own ``sshd`` process on its own port, with its own host key,
its own local login user (created here, removed afterwards) and its own
simulated machine: a folder holding the facts a Mac would report, package
receipts and the orchestrator's image marker. macOS commands (``sw_vers``,
``system_profiler``, ``pkgutil``, ``installer``, ``defaults``) are small
stand-ins first on the session's PATH that read and write that folder and log
each call to its var/log/standins.log: macOS steps verified on Linux hosts
with stand-in commands. Test packages are JSON files (see ``pkgutil`` below).

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
    # A test "pkg" is a small JSON file: {"identifier", "version", "signer" (null
    # when unsigned), "payload": {relative path: text}}. Receipts are plists
    # under var/db/receipts; the hosts' first receipt holds just "receipt".
    "pkgutil": """#!/usr/bin/python3
import json, os, plistlib, sys
root = os.environ["ORCH_ROOT"]
with open(os.path.join(root, "var/log/standins.log"), "a") as log:
    log.write(" ".join(["pkgutil", *sys.argv[1:]]) + "\\n")
receipts = os.path.join(root, "var/db/receipts")
args = sys.argv[1:]
if args == ["--pkgs"]:
    if os.path.isdir(receipts):
        for name in sorted(os.listdir(receipts)):
            if name.endswith(".plist"):
                print(name[: -len(".plist")])
elif len(args) == 2 and args[0] == "--pkg-info":
    path = os.path.join(receipts, os.path.basename(args[1]) + ".plist")
    if not os.path.isfile(path):
        sys.exit(f"No receipt for '{args[1]}' found at '/'.")
    try:
        with open(path, "rb") as f:
            receipt = plistlib.load(f)
    except Exception:  # an old-style receipt that records no version
        receipt = {}
    print(f"package-id: {args[1]}")
    print(f"version: {receipt.get('PackageVersion', '0')}")
    print("volume: /")
    print(f"location: {receipt.get('InstallPrefixPath', '/')}")
    print(f"install-time: {receipt.get('InstallTime', 0)}")
elif len(args) == 2 and args[0] == "--check-signature":
    print(f'Package "{os.path.basename(args[1])}":')
    try:
        with open(args[1]) as f:
            signer = json.load(f)["signer"]
    except Exception:
        print("   Status: package is invalid (checksum did not verify)")
        sys.exit(1)
    if not signer:
        print("   Status: no signature")
        sys.exit(1)
    print("   Status: signed by a developer certificate issued by Apple for distribution")
    print("   Signed with a trusted timestamp on: 2025-01-06 17:21:03 +0000")
    print("   Certificate Chain:")
    print(f"    1. {signer}")
    print("       Expires: 2027-02-01 22:12:15 +0000")
    print("       ------------------------------------------------------------------------")
    print("    2. Developer ID Certification Authority")
    print("       Expires: 2031-09-17 00:00:00 +0000")
    print("       ------------------------------------------------------------------------")
    print("    3. Apple Root CA")
    print("       Expires: 2035-02-09 21:40:36 +0000")
else:
    sys.exit("Usage: pkgutil [options] [commands]  (stand-in: --pkgs, --pkg-info ID, "
             "--check-signature FILE)")
""",
    # installer -pkg FILE -target T: T is "/" or the simulated machine's folder.
    "installer": """#!/usr/bin/python3
import json, os, plistlib, sys, time
root = os.environ["ORCH_ROOT"]
with open(os.path.join(root, "var/log/standins.log"), "a") as log:
    log.write(" ".join(["installer", *sys.argv[1:]]) + "\\n")
args = sys.argv[1:]
if len(args) != 4 or args[0] != "-pkg" or args[2] != "-target":
    sys.exit("Usage: installer -pkg <pathToPackage> -target <device>")
package, target = args[1], args[3]
if target != "/" and os.path.realpath(target) != os.path.realpath(root):
    sys.exit(f"installer: Error - the target volume {target!r} is not valid.")
try:
    with open(package) as f:
        pkg = json.load(f)
    identifier, version = pkg["identifier"], pkg["version"]
except Exception:
    sys.exit(f"installer: Error - the package path specified was invalid: '{package}'.")
print(f"installer: Package name is {identifier}")
print("installer: Installing at base path /")
for relative, text in pkg.get("payload", {}).items():
    dest = os.path.realpath(os.path.join(root, relative.lstrip("/")))
    if not dest.startswith(os.path.realpath(root) + os.sep):
        sys.exit(f"installer: Error - payload path {relative!r} leaves the volume.")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with open(dest, "w") as f:
        f.write(text)
receipts = os.path.join(root, "var/db/receipts")
os.makedirs(receipts, exist_ok=True)
with open(os.path.join(receipts, identifier + ".plist"), "wb") as f:
    plistlib.dump({
        "PackageIdentifier": identifier,
        "PackageVersion": version,
        "PackageFileName": os.path.basename(package),
        "InstallPrefixPath": "/",
        "InstallProcessName": "installer",
        "InstallTime": int(time.time()),
    }, f)
print("installer: The install was successful.")
""",
    # defaults write DOMAIN KEY [-TYPE] VALUE / defaults read DOMAIN [KEY], kept as
    # JSON in Library/Preferences/DOMAIN.json (a path domain keeps its last part).
    "defaults": """#!/usr/bin/python3
import json, os, sys
root = os.environ["ORCH_ROOT"]
with open(os.path.join(root, "var/log/standins.log"), "a") as log:
    log.write(" ".join(["defaults", *sys.argv[1:]]) + "\\n")
args = sys.argv[1:]
if len(args) < 2 or args[0] not in ("read", "write"):
    sys.exit("Command line interface to a user's defaults. (stand-in: read, write)")
domain = os.path.basename(args[1]).removesuffix(".plist")
path = os.path.join(root, "Library/Preferences", domain + ".json")
try:
    with open(path) as f:
        prefs = json.load(f)
except FileNotFoundError:
    prefs = {}
def shown(value):
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value).removesuffix(".0")
    return str(value)
if args[0] == "read":
    if len(args) == 2:
        if not prefs:
            sys.exit(f"\\nDomain {args[1]} does not exist")
        print("{")
        for key, value in prefs.items():
            print(f'    {key} = "{shown(value)}";')
        print("}")
    elif args[2] in prefs:
        print(shown(prefs[args[2]]))
    else:
        sys.exit(f"\\nThe domain/default pair of ({args[1]}, {args[2]}) does not exist")
    sys.exit(0)
if len(args) == 4:
    kind, raw = "-string", args[3]
elif len(args) == 5:
    kind, raw = args[3], args[4]
else:
    sys.exit("defaults write DOMAIN KEY [-TYPE] VALUE")
try:
    if kind == "-string":
        value = raw
    elif kind in ("-int", "-integer"):
        value = int(raw)
    elif kind == "-float":
        value = float(raw)
    elif kind in ("-bool", "-boolean"):
        if raw.lower() not in ("true", "yes", "1", "false", "no", "0"):
            raise ValueError(raw)
        value = raw.lower() in ("true", "yes", "1")
    else:
        sys.exit(f"Unexpected argument {kind}; leaving defaults unchanged.")
except ValueError:
    sys.exit(f"Could not parse: {raw}.  Try single-quoting it.")
prefs[args[2]] = value
os.makedirs(os.path.dirname(path), exist_ok=True)
with open(path, "w") as f:
    json.dump(prefs, f, indent=2, sort_keys=True)
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
    personas: dict[str, Persona] = field(default_factory=dict)
    """Local accounts added by :func:`add_personas`, by persona."""


@dataclass
class Persona:
    """A test account on a host: a real local user with its own password."""

    persona: str
    username: str
    password: str = field(repr=False)


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
    for user in (host.username, *(p.username for p in host.personas.values())):
        subprocess.run(["pkill", "-KILL", "-u", user], capture_output=True)


ADMIN_TOOL = "Applications/Utilities/Admin Tool.app/Contents/MacOS/Admin Tool"
"""Under the machine's folder: runs for staff (its group), not for students."""
CLASSROOM_APP = "Applications/Scratch.app/Contents/MacOS/Scratch"
"""Under the machine's folder: runs for everyone."""


def add_personas(host: SSHHost) -> dict[str, Persona]:
    """Give ``host`` a student and a staff test account, each a real local user
    signing in with its own password over SSH, and the machine an app everyone
    may run and an admin tool only staff may (a group of their own); sshd is
    restarted to let them in. Removed with the host by :func:`start_hosts`."""
    kill_host(host)
    group = f"{host.username}g"
    subprocess.run(["groupdel", group], capture_output=True)
    _run("groupadd", group)
    for persona, suffix in (("student", "s"), ("staff", "t")):
        user = f"{host.username}{suffix}"
        subprocess.run(["userdel", "-r", user], capture_output=True)
        extra = ["--groups", group] if persona == "staff" else []
        _run("useradd", "--create-home", "--shell", "/bin/sh", *extra, user)
        password = f"{persona}-{os.urandom(6).hex()}"
        _run("chpasswd", stdin=f"{user}:{password}\n")
        host.personas[persona] = Persona(persona, user, password)
    for relative, owner_group, mode, text in (
        (CLASSROOM_APP, None, 0o755, "#!/bin/sh\necho scratch started\n"),
        (ADMIN_TOOL, group, 0o750, "#!/bin/sh\necho admin tool started\n"),
    ):
        path = host.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if owner_group is not None:
            shutil.chown(path, group=owner_group)
        path.chmod(mode)
    for folder in host.root.rglob("*"):
        if folder.is_dir():
            folder.chmod(0o755)
    users = " ".join([host.username, *(p.username for p in host.personas.values())])
    config = host.config.read_text()
    host.config.write_text(
        "\n".join(
            f"AllowUsers {users}" if line.startswith("AllowUsers ") else line
            for line in config.splitlines()
        )
        + "\n"
    )
    start(host)
    return host.personas


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
            for user in (host.username, *(p.username for p in host.personas.values())):
                subprocess.run(["userdel", "-r", user], capture_output=True)
            if host.personas:
                subprocess.run(["groupdel", f"{host.username}g"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def restart_with_new_host_key(host: SSHHost, key_type: str = "ed25519") -> str:
    """Stop the host's sshd, give it a freshly generated host key (as a reinstalled
    or swapped machine has), start it again; returns the new key line, also in
    ``host.host_key``. Only for hosts a test started itself, never shared ones."""
    kill_host(host)
    key = host.config.parent / "host_key"
    key.unlink(missing_ok=True)
    key.with_suffix(".pub").unlink(missing_ok=True)
    _run("ssh-keygen", "-q", "-t", key_type, "-N", "", "-f", str(key))
    host.host_key = " ".join(key.with_suffix(".pub").read_text().split()[:2])
    start(host)
    return host.host_key
