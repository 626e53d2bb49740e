"""install_package, apply_image and smoke_checks on the real sshd hosts, with
their artifacts downloaded from a DistributionServer on loopback (macOS
steps verified on Linux hosts with stand-in commands; WIMs are real, made and
applied with wimlib).

A test package is a small JSON file the stand-ins understand (see
tests/support/sshd.py). Every test uses its own receipt ids and puts the
hosts' machines back as it found them, so none depends on another's order.
"""

from __future__ import annotations

import json
import plistlib
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from orchestrator.imagestore.manifest import key_lines
from orchestrator.imagestore.point import PointServer
from orchestrator.imagestore.store import ImageStore
from orchestrator.remote.ansible import (
    AnsibleRunner,
    HostTarget,
    PlaybookRequest,
    RunOutcome,
    playbook_path,
)
from orchestrator.remote.distribution import DistributionServer, serve, sha256_file
from tests.imagestore.pointkit import TRUSTED, publish
from tests.support.agent import pull_agent  # noqa: F401  (fixture)
from tests.support.fixtures import ssh_hosts  # noqa: F401  (fixture)
from tests.support.sshd import SSHHost

SIGNER = "Developer ID Installer: Lincoln Unified School District (LUSD123456)"
LOG = Path("var") / "log" / "standins.log"


def _snapshot(root: Path) -> dict[Path, bytes | None]:
    """Every file (bytes) and folder (None) under a machine, but its log."""
    return {
        p.relative_to(root): (p.read_bytes() if p.is_file() else None)
        for p in root.rglob("*")
        if p.relative_to(root) != LOG
    }


def _restore(host: SSHHost, saved: Mapping[Path, bytes | None]) -> None:
    now = _snapshot(host.root)
    for rel in sorted(set(now) - set(saved), key=lambda r: len(r.parts), reverse=True):
        path = host.root / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    for rel, data in sorted(saved.items(), key=lambda item: len(item[0].parts)):
        path = host.root / rel
        if data is None:
            path.mkdir(exist_ok=True)
        elif now.get(rel) != data:
            path.write_bytes(data)
        shutil.chown(path, user=host.username)


@pytest.fixture
def hosts(ssh_hosts: list[SSHHost]) -> Iterator[list[SSHHost]]:  # noqa: F811
    """The shared hosts, each machine put back as it was after the test."""
    saved = {h.name: _snapshot(h.root) for h in ssh_hosts}
    yield ssh_hosts
    for h in ssh_hosts:
        _restore(h, saved[h.name])


@pytest.fixture
def dist(tmp_path: Path) -> Iterator[DistributionServer]:
    root = tmp_path / "dist"
    root.mkdir()
    with serve(root) as server:
        yield server


def _target(h: SSHHost) -> HostTarget:
    return HostTarget(
        h.name,
        h.address,
        h.port,
        "ssh",
        h.username,
        {
            "orchestrator_root": str(h.root),
            "ansible_python_interpreter": "/usr/bin/python3",
            # The test hosts' users own their simulated machines; no sudo there.
            "orchestrator_become": False,
        },
        host_key=h.host_key,
    )


def _run(
    playbook: str,
    hosts: list[SSHHost],
    extravars: Mapping[str, Any],
    per_host: Mapping[str, Mapping[str, Any]] | None = None,
) -> RunOutcome:
    """One run of a project playbook; ``per_host`` adds host variables."""
    targets = []
    for h in hosts:
        t = _target(h)
        extra = (per_host or {}).get(h.name, {})
        targets.append(
            HostTarget(
                t.name,
                t.address,
                t.port,
                t.connection,
                t.user,
                {**t.variables, **extra},
                host_key=t.host_key,
            )
        )
    return AnsibleRunner().run(
        PlaybookRequest(
            playbook=playbook_path(playbook),
            hosts=targets,
            ssh_key=hosts[0].key_file.read_text(),
            extravars=dict(extravars),
            timeout=240,
        )
    )


class Log:
    """What the hosts' stand-ins were asked from now on."""

    def __init__(self, hosts: list[SSHHost]) -> None:
        self.offsets = {
            h.name: (h.root / LOG).stat().st_size if (h.root / LOG).exists() else 0 for h in hosts
        }
        self.hosts = {h.name: h for h in hosts}

    def lines(self, host: SSHHost) -> list[str]:
        if not (host.root / LOG).exists():
            return []
        with open(host.root / LOG, "rb") as f:
            f.seek(self.offsets[host.name])
            return f.read().decode().splitlines()

    def calls(self, host: SSHHost, command: str) -> list[str]:
        return [line for line in self.lines(host) if line.split(" ", 1)[0] == command]


def _receipt_id() -> str:
    return f"org.lusd.test.{uuid.uuid4().hex[:10]}"


def _make_pkg(
    dist: DistributionServer,
    identifier: str,
    version: str,
    signer: str | None = SIGNER,
    payload: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """A test package on the server: (its URL, its SHA-256)."""
    name = f"{identifier}-{version}.pkg"
    path = dist.root / name
    path.write_text(
        json.dumps(
            {
                "identifier": identifier,
                "version": version,
                "signer": signer,
                "payload": dict(payload or {f"Applications/{identifier}.app/version": version}),
            }
        )
    )
    return dist.url_for(name), sha256_file(path)


def _package_vars(
    dist: DistributionServer, receipt: str, version: str = "2.1.0", **pkg: Any
) -> dict[str, Any]:
    url, sha = _make_pkg(dist, receipt, version, **pkg)
    return {
        "package_name": f"Test app {receipt}",
        "package_version": version,
        "package_url": url,
        "package_sha256": sha,
        "package_receipt": receipt,
        "package_signer": SIGNER,
    }


def _receipt_version(host: SSHHost, receipt: str) -> str | None:
    path = host.root / "var" / "db" / "receipts" / f"{receipt}.plist"
    if not path.exists():
        return None
    with open(path, "rb") as f:
        return str(plistlib.load(f)["PackageVersion"])


def _failures(outcome: RunOutcome) -> str:
    return json.dumps({h: o.__dict__ for h, o in outcome.hosts.items()}, default=str)


# -- install_package -----------------------------------------------------------


def test_install_package_installs_on_several_hosts_at_once(
    hosts: list[SSHHost], dist: DistributionServer
) -> None:
    group = hosts[0:4]
    receipt = _receipt_id()
    log = Log(group)

    outcome = _run("install_package", group, _package_vars(dist, receipt, "2.1.0"))

    assert outcome.status == "successful", _failures(outcome)
    for h in group:
        assert outcome.hosts[h.name].status == "changed"
        assert _receipt_version(h, receipt) == "2.1.0"
        app = h.root / "Applications" / f"{receipt}.app" / "version"
        assert app.read_text() == "2.1.0"
        installs = log.calls(h, "installer")
        assert len(installs) == 1, installs
        downloaded = Path(installs[0].split()[2])
        assert installs[0] == f"installer -pkg {downloaded} -target {h.root}"
        assert not downloaded.parent.exists(), "the download folder is removed"
        assert f"pkgutil --check-signature {downloaded}" in log.lines(h)


def test_a_rerun_is_ok_not_changed_and_never_calls_the_installer(
    hosts: list[SSHHost], dist: DistributionServer
) -> None:
    group = hosts[4:6]
    receipt = _receipt_id()
    # Any signer will do when none is named, as long as there is one.
    extravars = _package_vars(dist, receipt, "7.0") | {"package_signer": ""}
    first = _run("install_package", group, extravars)
    assert first.status == "successful", _failures(first)
    log = Log(group)

    again = _run("install_package", group, extravars)

    assert again.status == "successful", _failures(again)
    for h in group:
        assert again.hosts[h.name].status == "ok"
        assert again.hosts[h.name].changed == 0
        assert log.calls(h, "installer") == []
        assert log.calls(h, "pkgutil") == [f"pkgutil --pkg-info {receipt}"]
        assert _receipt_version(h, receipt) == "7.0"


def test_a_newer_version_is_installed_over_the_old_one(
    hosts: list[SSHHost], dist: DistributionServer
) -> None:
    host = hosts[6]
    receipt = _receipt_id()
    assert _run("install_package", [host], _package_vars(dist, receipt, "1.0")).status == (
        "successful"
    )
    log = Log([host])

    outcome = _run("install_package", [host], _package_vars(dist, receipt, "1.1"))

    assert outcome.hosts[host.name].status == "changed", _failures(outcome)
    assert len(log.calls(host, "installer")) == 1
    assert _receipt_version(host, receipt) == "1.1"


def test_a_wrong_checksum_fails_that_host_before_the_installer(
    hosts: list[SSHHost], dist: DistributionServer
) -> None:
    good, bad = hosts[0], hosts[1]
    receipt = _receipt_id()
    extravars = _package_vars(dist, receipt, "3.0")
    right = extravars.pop("package_sha256")
    wrong = "0" * 64
    log = Log([good, bad])

    outcome = _run(
        "install_package",
        [good, bad],
        extravars,
        per_host={good.name: {"package_sha256": right}, bad.name: {"package_sha256": wrong}},
    )

    assert outcome.hosts[good.name].status == "changed", _failures(outcome)
    assert _receipt_version(good, receipt) == "3.0"
    failed = outcome.hosts[bad.name]
    assert failed.status == "failed"
    assert failed.failed_task == "Download the package, checking its SHA-256"
    assert failed.message is not None and "checksum" in failed.message.lower()
    assert log.calls(bad, "installer") == []
    assert not any(line.startswith("pkgutil --check-signature") for line in log.lines(bad))
    assert _receipt_version(bad, receipt) is None


def test_an_unsigned_package_is_refused_and_never_installed(
    hosts: list[SSHHost], dist: DistributionServer
) -> None:
    host = hosts[2]
    receipt = _receipt_id()
    log = Log([host])

    outcome = _run(
        "install_package",
        [host],
        _package_vars(dist, receipt, "1.0", signer=None) | {"package_signer": ""},
    )

    result = outcome.hosts[host.name]
    assert result.status == "failed"
    assert result.failed_task == "Refuse an unsigned package"
    assert result.message is not None
    assert "not signed" in result.message and "Status: no signature" in result.message
    assert log.calls(host, "installer") == []
    assert _receipt_version(host, receipt) is None


def test_a_package_from_another_signer_is_refused(
    hosts: list[SSHHost], dist: DistributionServer
) -> None:
    host = hosts[3]
    receipt = _receipt_id()
    stranger = "Developer ID Installer: Someone Else (ZZZ9999999)"
    log = Log([host])

    outcome = _run("install_package", [host], _package_vars(dist, receipt, "1.0", signer=stranger))

    result = outcome.hosts[host.name]
    assert result.status == "failed"
    assert result.failed_task == "Refuse a package signed by anyone else"
    assert result.message is not None
    assert stranger in result.message and SIGNER in result.message
    assert log.calls(host, "installer") == []
    assert _receipt_version(host, receipt) is None


def test_missing_variables_fail_at_the_start_naming_them(
    hosts: list[SSHHost], dist: DistributionServer
) -> None:
    host = hosts[4]
    extravars = _package_vars(dist, _receipt_id())
    del extravars["package_receipt"]
    extravars["package_url"] = ""
    log = Log([host])

    outcome = _run("install_package", [host], extravars)

    result = outcome.hosts[host.name]
    assert result.status == "failed"
    assert result.failed_task == "Check the variables"
    assert result.message == (
        "install_package needs package_url, package_receipt (missing or empty) on Macs"
    )
    assert log.lines(host) == []  # nothing was run on the Mac


# -- apply_image: a thin image on a Mac -------------------------------------------


def _thin_image(dist: DistributionServer, marker: str, os_min: str = "14.0") -> dict[str, Any]:
    packages = []
    for name, version in (("Browser", "128.0"), ("Office", "16.90")):
        receipt = _receipt_id()
        url, sha = _make_pkg(dist, receipt, version)
        packages.append(
            {
                "name": name,
                "version": version,
                "url": url,
                "sha256": sha,
                "receipt": receipt,
                "signer": SIGNER,
            }
        )
    return {
        "image_name": "lab",
        "image_version": "2.0",
        "image_marker": marker,
        "image_kind": "mac_thin",
        "image_os_min": os_min,
        "image_packages": packages,
        "image_settings": [
            {
                "domain": "/Library/Preferences/com.apple.loginwindow",
                "key": "GuestEnabled",
                "type": "bool",
                "value": False,
            },
            {"domain": "org.lusd.lab", "key": "Room", "type": "string", "value": "101"},
            {"domain": "org.lusd.lab", "key": "Seats", "type": "int", "value": 28},
        ],
    }


def test_a_thin_image_needing_a_newer_macos_fails_saying_which(
    hosts: list[SSHHost], dist: DistributionServer
) -> None:
    host = hosts[5]
    marker = (host.root / "var" / "orchestrator" / "image-marker").read_text()
    log = Log([host])

    outcome = _run("apply_image", [host], _thin_image(dist, "101/lab@2.0", os_min="16.1"))

    result = outcome.hosts[host.name]
    assert result.status == "failed"
    assert result.message == "lab 2.0 requires macOS 16.1, this Mac runs 15.3"
    assert log.calls(host, "installer") == [] and log.calls(host, "defaults") == []
    assert (host.root / "var" / "orchestrator" / "image-marker").read_text() == marker


def test_a_thin_image_installs_its_packages_settings_and_marker_and_gather_reads_it(
    hosts: list[SSHHost], dist: DistributionServer
) -> None:
    group = hosts[6:8]
    image = _thin_image(dist, "101/lab@2.0")
    log = Log(group)

    outcome = _run("apply_image", group, image)

    assert outcome.status == "successful", _failures(outcome)
    for h in group:
        assert outcome.hosts[h.name].status == "changed"
        for pkg in image["image_packages"]:
            assert _receipt_version(h, pkg["receipt"]) == pkg["version"]
        assert len(log.calls(h, "installer")) == 2
        prefs = h.root / "Library" / "Preferences"
        assert json.loads((prefs / "com.apple.loginwindow.json").read_text()) == {
            "GuestEnabled": False
        }
        assert json.loads((prefs / "org.lusd.lab.json").read_text()) == {
            "Room": "101",
            "Seats": 28,
        }
        assert (h.root / "var" / "orchestrator" / "image-marker").read_text() == "101/lab@2.0\n"

    gathered = _run("gather_facts", group, {})
    assert gathered.status == "successful", _failures(gathered)
    for h in group:
        facts = gathered.hosts[h.name].facts
        assert facts["orchestrator_image"] == "101/lab@2.0"
        assert {p["receipt"] for p in image["image_packages"]} <= set(
            facts["orchestrator_software"]
        )

    again = Log(group)
    rerun = _run("apply_image", group, image)
    assert rerun.status == "successful", _failures(rerun)
    for h in group:
        assert rerun.hosts[h.name].status == "ok", "nothing left to change"
        assert again.calls(h, "installer") == []
        assert not any(c.startswith("defaults write") for c in again.calls(h, "defaults"))


# -- apply_image: a WIM from the imaging environment over SSH ---------------------


@pytest.fixture
def wim(tmp_path: Path, dist: DistributionServer) -> tuple[Path, str, str]:
    """A real WIM of a small Windows-like tree: (the tree, its URL, its SHA-256)."""
    tree = tmp_path / "volume"
    (tree / "Windows" / "System32").mkdir(parents=True)
    (tree / "Users" / "Public" / "Desktop").mkdir(parents=True)
    (tree / "Windows" / "System32" / "kernel.bin").write_bytes(bytes(range(256)) * 300)
    (tree / "Windows" / "win.ini").write_text("[fonts]\r\n")
    (tree / "Users" / "Public" / "Desktop" / "Welcome to Lincoln.txt").write_text("hello\n")
    (tree / "empty.dat").write_bytes(b"")
    image = dist.root / "lab-win11.wim"
    subprocess.run(
        ["wimcapture", str(tree), str(image), "Lab Windows 11"], check=True, capture_output=True
    )
    return tree, dist.url_for(image.name), sha256_file(image)


def _wim_vars(url: str, sha: str, target: Path) -> dict[str, Any]:
    return {
        "image_name": "lab-win11",
        "image_version": "24H2",
        "image_marker": "101/lab-win11@24H2",
        "image_kind": "wim",
        "image_url": url,
        "image_sha256": sha,
        "image_index": 1,
        "image_target": str(target),
    }


def _tree(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def test_a_wim_is_downloaded_checked_and_applied_with_wimapply(
    hosts: list[SSHHost], wim: tuple[Path, str, str]
) -> None:
    host = hosts[8]
    tree, url, sha = wim
    target = host.root / "mnt" / "windows"

    outcome = _run("apply_image", [host], _wim_vars(url, sha, target))

    assert outcome.hosts[host.name].status == "changed", _failures(outcome)
    applied = _tree(target)
    marker = applied.pop("ProgramData/Orchestrator/image-marker")
    assert marker == b"101/lab-win11@24H2\n"
    del applied["ProgramData/Orchestrator"], applied["ProgramData"]
    assert applied == _tree(tree)
    assert list(Path("/tmp").glob("ansible.*.wim")) == [], "the download is removed"


def test_a_tampered_wim_is_never_applied(
    hosts: list[SSHHost], wim: tuple[Path, str, str], dist: DistributionServer
) -> None:
    host = hosts[9]
    _, url, sha = wim
    image = dist.root / "lab-win11.wim"
    image.write_bytes(image.read_bytes() + b"appended by someone")
    target = host.root / "mnt" / "windows"

    outcome = _run("apply_image", [host], _wim_vars(url, sha, target))

    result = outcome.hosts[host.name]
    assert result.status == "failed"
    assert result.failed_task == "Download the image, checking its SHA-256"
    assert result.message is not None and "checksum" in result.message.lower()
    assert not target.exists()


# -- smoke_checks ----------------------------------------------------------------


def test_smoke_checks_pass_after_an_image_is_applied(
    hosts: list[SSHHost], dist: DistributionServer
) -> None:
    group = hosts[0:2]
    image = _thin_image(dist, "101/lab@2.1")
    applied = _run("apply_image", group, image)
    assert applied.status == "successful", _failures(applied)

    outcome = _run(
        "smoke_checks",
        group,
        {
            "expected_image_marker": "101/lab@2.1",
            "required_receipts": [p["receipt"] for p in image["image_packages"]],
        },
    )

    assert outcome.status == "successful", _failures(outcome)
    for h in group:
        assert outcome.hosts[h.name].status == "ok"
        assert outcome.hosts[h.name].changed == 0


@pytest.mark.parametrize(
    ("extravars", "expected"),
    [
        (
            {"expected_image_marker": "101/lab@9.9"},
            re.escape(
                'smoke checks failed: image marker: expected "101/lab@9.9", found "101/lab@1.3"'
            ),
        ),
        (
            {"required_receipts": ["org.mozilla.firefox", "org.lusd.test.absent"]},
            re.escape("smoke checks failed: receipts: no receipt for org.lusd.test.absent"),
        ),
        (
            {"min_free_disk_kb": 2**60},
            rf"smoke checks failed: free disk: [1-9]\d* KB free, {2**60} KB needed",
        ),
        (
            {"expected_image_marker": "101/lab@1.3", "required_receipts": ["org.lusd.x"]},
            re.escape("smoke checks failed: receipts: no receipt for org.lusd.x"),
        ),
    ],
    ids=["wrong-marker", "missing-receipt", "low-disk", "only-the-failing-check-is-named"],
)
def test_a_failing_smoke_check_fails_naming_the_check_and_what_it_found(
    hosts: list[SSHHost], extravars: dict[str, Any], expected: str
) -> None:
    host = hosts[2]  # mac-03: marker 101/lab@1.3, one receipt (org.mozilla.firefox)

    outcome = _run("smoke_checks", [host], extravars)

    result = outcome.hosts[host.name]
    assert result.status == "failed"
    assert result.failed_task == "Judge the smoke checks"
    assert re.fullmatch(expected, result.message or ""), result.message


def test_a_missing_marker_and_receipt_are_both_named(hosts: list[SSHHost]) -> None:
    host = hosts[3]
    (host.root / "var" / "orchestrator" / "image-marker").unlink()

    outcome = _run(
        "smoke_checks",
        [host],
        {"expected_image_marker": "101/lab@2.0", "required_receipts": ["org.lusd.gone"]},
    )

    assert outcome.hosts[host.name].message == (
        'smoke checks failed: image marker: expected "101/lab@2.0", found no marker; '
        "receipts: no receipt for org.lusd.gone"
    )


def test_a_wim_staged_on_the_point_is_pulled_verified_and_applied(
    hosts: list[SSHHost],
    wim: tuple[Path, str, str],
    dist: DistributionServer,
    pull_agent: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    host = hosts[8]
    tree, _, sha = wim
    root = tmp_path / "point"
    with ImageStore(root) as store:
        publish(
            store, "5-base-image-lab-win11-2026.1", dist.root / "lab-win11.wim",
            kind="base_image", scope="district", manifest_name="lab-win11", version="2026.1",
        )  # fmt: skip
    (dist.root / "lab-win11.wim").unlink()  # the orchestrator's copy is not reachable
    target = host.root / "mnt" / "windows"
    pulled = {
        "point": "",
        "image": "5-base-image-lab-win11-2026.1",
        "kind": "base_image",
        "scope": "district",
        "name": "lab-win11",
        "version": "2026.1",
    }
    keys = "".join(f"{line}\n" for line in key_lines(TRUSTED))
    with PointServer(root) as point:
        given = _wim_vars("", sha, target) | {
            "image_pull": pulled | {"point": point.url},
            "district_keys": keys,
        }
        outcome = _run(
            "apply_image", [host], given, {host.name: {"orchestrator_pull": str(pull_agent)}}
        )
        served = point.health()["served"]

    assert outcome.hosts[host.name].status == "changed", _failures(outcome)
    assert isinstance(served, dict) and served["manifest"] == 1 and served["chunk"] >= 1
    applied = _tree(target)
    assert applied.pop("ProgramData/Orchestrator/image-marker") == b"101/lab-win11@24H2\n"
    del applied["ProgramData/Orchestrator"], applied["ProgramData"]
    assert applied == _tree(tree)
    slot = host.root / "var/orchestrator/store/files/image.wim"
    assert sha256_file(slot) == sha  # the next pull's seed, with the index it saved
    assert (slot.parent / "image.wim.caibx").read_bytes() == (
        root / "indexes" / "5-base-image-lab-win11-2026.1.caibx"
    ).read_bytes()
