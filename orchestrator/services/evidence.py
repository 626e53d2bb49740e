"""Test evidence files (screenshots, logs), kept by content in the data folder.

An attachment is copied into ``<evidence_dir>/<sha[:2]>/<sha>``: written to a
temporary file, synced, checked against the digest read before, then renamed,
so a half-written file is never visible and moving or deleting the original
loses nothing.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from orchestrator.errors import InvalidInput, OrchestratorError

_BLOCK = 1 << 20
MAX_BYTES = 200 * 1024 * 1024


class EvidenceStoreError(OrchestratorError):
    code = "evidence_store"
    http_status = 500
    exit_code = 1


def inspect(path: str) -> dict[str, Any]:
    """Hash a file the user wants to attach.

    Raises:
        InvalidInput: not a regular file, unreadable, or over 200 MiB.
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidInput(f"{path}: no such file", field="attach")
    size = p.stat().st_size
    if size > MAX_BYTES:
        raise InvalidInput(f"{path}: {size} bytes; attachments are at most 200 MiB", field="attach")
    h = hashlib.sha256()
    try:
        with p.open("rb") as f:
            for block in iter(lambda: f.read(_BLOCK), b""):
                h.update(block)
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read it ({exc.strerror})", field="attach") from exc
    return {"name": p.name, "source": str(p.resolve()), "sha256": h.hexdigest(), "size": size}


def store(evidence_dir: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Copy an inspected file into the store; return ``info`` with its stored path.

    Raises:
        InvalidInput: the file changed since it was inspected.
        EvidenceStoreError: the store cannot be written.
    """
    sha = info["sha256"]
    target = evidence_dir / sha[:2] / sha
    if target.is_file():
        return info | {"stored": str(target)}
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out, open(info["source"], "rb") as src:
                for block in iter(lambda: src.read(_BLOCK), b""):
                    h.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            if h.hexdigest() != sha:
                raise InvalidInput(
                    f"{info['source']} changed while it was being attached; attach it again",
                    field="attach",
                )
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as exc:
        raise EvidenceStoreError(
            f"cannot keep the attachment in {evidence_dir}: {exc.strerror}"
        ) from exc
    return info | {"stored": str(target)}
