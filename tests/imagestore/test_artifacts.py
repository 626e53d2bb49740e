"""Artifacts that point outside themselves are refused from their headers, before any
tool opens them: qcow2 images made by the real ``qemu-img`` with a backing file or an
external data file, archives with ``../``, absolute or link members."""

from __future__ import annotations

import io
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from orchestrator.imagestore import artifacts
from orchestrator.imagestore.artifacts import UnsafeArtifact


def _qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def test_a_self_contained_qcow2_is_taken_in(tmp_path: Path) -> None:
    image = tmp_path / "lab.qcow2"
    _qemu_img("create", "-f", "qcow2", str(image), "16M")
    assert artifacts.check(image) == "qcow2"


def test_a_qcow2_with_a_backing_file_is_refused_naming_it(tmp_path: Path) -> None:
    base = tmp_path / "etc-shadow-stand-in.raw"
    base.write_bytes(b"\0" * 65536)
    overlay = tmp_path / "overlay.qcow2"
    _qemu_img("create", "-f", "qcow2", "-b", str(base), "-F", "raw", str(overlay))

    with pytest.raises(UnsafeArtifact, match="backing file .*etc-shadow-stand-in.raw"):
        artifacts.check(overlay)


def test_a_qcow2_with_an_external_data_file_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "split.qcow2"
    data = tmp_path / "split.data"
    _qemu_img("create", "-f", "qcow2", "-o", f"data_file={data}", str(image), "1M")

    with pytest.raises(UnsafeArtifact, match="external data file .*split.data"):
        artifacts.check(image)


def test_a_cut_short_qcow2_header_is_refused(tmp_path: Path) -> None:
    stub = tmp_path / "stub.qcow2"
    stub.write_bytes(artifacts.QCOW2_MAGIC + b"\0\0\0\3")
    with pytest.raises(UnsafeArtifact, match="cut short"):
        artifacts.check(stub)


def _tar(path: Path, *members: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w") as archive:
        for m in members:
            archive.addfile(m, io.BytesIO(b"x" * m.size) if m.isfile() else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, 1 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    ("member", "said"),
    [
        (_member("../../etc/cron.d/job"), "a '..' path"),
        (_member("/etc/passwd"), "an absolute path"),
        (_member("Applications/Tool.app/x", tarfile.SYMTYPE, "/etc/shadow"), "a link to"),
        (_member("lib/evil", tarfile.LNKTYPE, "../../root/.ssh/id_rsa"), "a link to"),
        (_member("dev/sda", tarfile.BLKTYPE), "a device"),
    ],
)
def test_a_tar_with_a_member_escaping_its_folder_is_refused(
    tmp_path: Path, member: tarfile.TarInfo, said: str
) -> None:
    path = _tar(tmp_path / "payload.tar", _member("ok/readme.txt"), member)
    with pytest.raises(UnsafeArtifact, match=said):
        artifacts.check(path)


def test_a_tar_whose_links_stay_inside_is_taken_in(tmp_path: Path) -> None:
    path = _tar(
        tmp_path / "app.tar",
        _member("app/bin/tool"),
        _member("app/current", tarfile.SYMTYPE, "bin/tool"),
    )
    assert artifacts.check(path) == "tar"


@pytest.mark.parametrize("name", ["../outside.txt", "/abs.txt", "C:/Windows/evil.dll"])
def test_a_zip_with_an_escaping_member_is_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / "installer.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("setup.exe", b"MZ")
        archive.writestr(zipfile.ZipInfo(name), b"x")
    with pytest.raises(UnsafeArtifact, match="archive member"):
        artifacts.check(path)


def test_raw_bytes_and_a_wim_header_are_taken_in_as_what_they_are(tmp_path: Path) -> None:
    raw = tmp_path / "disk.img"
    raw.write_bytes(b"\0" * 4096)
    wim = tmp_path / "base.wim"
    wim.write_bytes(artifacts.WIM_MAGIC + b"\0" * 200)
    assert (artifacts.check(raw), artifacts.check(wim)) == ("raw", "wim")
