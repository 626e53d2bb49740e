"""What an artifact is, and whether it is safe to take in, decided from its bytes.

Before the store (or any tool) reads an artifact as an image, its first bytes
say what it is, and some kinds carry references that a later tool would
follow: a qcow2 image's *backing file* or *external data file* (``qemu-img``
would open that path on the host), an archive's member paths (``../`` or an
absolute path would be written outside the folder it is unpacked into, and a
link member can point anywhere). Those are refused here, by reading headers
only with the standard library, before anything else touches the file.

Kinds recognised: qcow2, WIM, tar (plain), zip, xar (macOS ``.pkg``) and,
for anything else, ``raw`` (a disk or file system image, an installer): raw
bytes carry no references to follow.
"""

from __future__ import annotations

import struct
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from orchestrator.imagestore.errors import StoreError

QCOW2_MAGIC = b"QFI\xfb"
WIM_MAGIC = b"MSWIM\x00\x00\x00"
XAR_MAGIC = b"xar!"
ZIP_MAGIC = b"PK\x03\x04"
_QCOW2_EXT_DATA_FILE = 0x44415441
_QCOW2_EXT_END = 0


class UnsafeArtifact(StoreError):
    """An artifact that refers outside itself, or is not what its header says."""

    code = "unsafe_artifact"
    http_status = 422
    exit_code = 2


def kind_of(path: Path) -> str:
    """``qcow2``, ``wim``, ``xar``, ``zip``, ``tar`` or ``raw``."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(QCOW2_MAGIC):
        return "qcow2"
    if head.startswith(WIM_MAGIC):
        return "wim"
    if head.startswith(XAR_MAGIC):
        return "xar"
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return "raw"


def check(path: Path) -> str:
    """The artifact's kind, when nothing in it points outside it.

    Raises: UnsafeArtifact, naming the file and what it refers to.
    """
    kind = kind_of(path)
    if kind == "qcow2":
        _check_qcow2(path)
    elif kind == "tar":
        _check_tar(path)
    elif kind == "zip":
        _check_zip(path)
    return kind


def _check_qcow2(path: Path) -> None:
    with open(path, "rb") as f:
        header = f.read(112)
        if len(header) < 72:
            raise UnsafeArtifact(f"{path.name}: a qcow2 header cut short ({len(header)} bytes)")
        version = struct.unpack(">I", header[4:8])[0]
        backing_offset, backing_size = struct.unpack(">QI", header[8:20])
        if backing_offset or backing_size:
            f.seek(backing_offset)
            name = f.read(min(backing_size, 1023)).decode("utf-8", "replace")
            raise UnsafeArtifact(
                f"{path.name}: a qcow2 image with a backing file ({name!r}); "
                "flatten it first (qemu-img convert -O qcow2)"
            )
        if version < 3:
            return
        header_length = struct.unpack(">I", header[100:104])[0] if len(header) >= 104 else 104
        f.seek(header_length)
        for _ in range(64):  # header extensions: (type, length, data padded to 8)
            ext = f.read(8)
            if len(ext) < 8:
                return
            ext_type, ext_len = struct.unpack(">II", ext)
            if ext_type == _QCOW2_EXT_END:
                return
            if ext_type == _QCOW2_EXT_DATA_FILE:
                name = f.read(min(ext_len, 1023)).decode("utf-8", "replace")
                raise UnsafeArtifact(
                    f"{path.name}: a qcow2 image with an external data file ({name!r}); "
                    "convert it to a self-contained image first"
                )
            f.seek((ext_len + 7) // 8 * 8, 1)


def _unsafe_member(name: str) -> str | None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in p.parts:
        return "a '..' path"
    if "\x00" in name:
        return "a NUL in its name"
    return None


def _check_tar(path: Path) -> None:
    try:
        with tarfile.open(path, mode="r|") as archive:  # streamed: headers only
            for member in archive:
                why = _unsafe_member(member.name)
                if why is None and (member.issym() or member.islnk()):
                    why = _unsafe_member(member.linkname) and f"a link to {member.linkname!r}"
                if why is None and (member.isdev() or member.isfifo()):
                    why = "a device or FIFO"
                if why:
                    raise UnsafeArtifact(
                        f"{path.name}: archive member {member.name!r} has {why}: refused"
                    )
    except tarfile.TarError as exc:
        raise UnsafeArtifact(f"{path.name}: not a readable tar archive ({exc})") from exc


def _check_zip(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                why = _unsafe_member(info.filename)
                if why:
                    raise UnsafeArtifact(
                        f"{path.name}: archive member {info.filename!r} has {why}: refused"
                    )
    except zipfile.BadZipFile as exc:
        raise UnsafeArtifact(f"{path.name}: not a readable zip archive ({exc})") from exc
