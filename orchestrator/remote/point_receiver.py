"""The receiving end of a staging: run on a distribution point's host, it writes
the chunks the orchestrator streams to it into the point's store.

Sending each chunk as its own SFTP file costs several round trips and, in
paramiko, a few milliseconds of the orchestrator's processor; one stream of
chunks over one SSH command costs neither. The orchestrator runs this file's
source with the host's ``python3 -c`` (so the point needs nothing installed
beyond the Python its point server runs on), with the store's folder as the
one argument, and writes to its standard input, for each chunk::

    32 bytes   the chunk's id
     4 bytes   the length of its stored (compressed) bytes, big-endian
     n bytes   those bytes

then closes it. Each chunk goes into a ``.tmp-`` file beside its final name;
every :data:`BATCH` chunks (and at the end) the files are flushed to disk with
one ``syncfs`` of the store's file system (``sync`` off Linux), then renamed
into place, and the count of chunks in place so far is written to standard
output as ``in-place N``. So a chunk is never
visible partial, one seen in place survives a power cut, and a stream cut
short leaves only ``.tmp-`` files, which the next prune of the point removes.
At the end ``done N`` is written and the exit code is 0; on malformed input
the reason goes to standard error, with exit code 2.

Run with ``--list STORE-FOLDER`` instead, it writes what the store holds, one
line each: ``index <name> <sha256 hex>`` for an index file, ``chunk <64 hex>``
for a chunk, ``tmp <4 hex>/<name>`` for a temporary file in a chunk folder,
then ``listed N`` (the chunks). A prune uses it to find chunks no index names
any more, reading only the indexes that differ from the orchestrator's.

Standard library only, and no imports from the project: the point's host runs
the source as it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
from collections.abc import Callable
from typing import BinaryIO, TextIO

ID_SIZE = 32
MAX_CHUNK = 64 << 20
"""Larger than any stored chunk (the chunker's maximum is 256 KiB uncompressed)."""
BATCH = 256
TEMP_PREFIX = ".tmp-"


def _read(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    while 0 < len(data) < n:
        more = stream.read(n - len(data))
        if not more:
            break
        data += more
    return data


def _load_syncfs() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (ImportError, OSError, AttributeError):
        return None
    syncfs.argtypes = [ctypes.c_int]
    syncfs.restype = ctypes.c_int
    return syncfs


class _Flusher:
    """Makes every file written so far under a folder durable: Linux's
    syncfs(2) of that folder's file system, where it is offered, so a staging
    does not flush every other disk of the point's host as sync(2) would;
    sync(2) elsewhere. The folder is opened at the first flush."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.syncfs = _load_syncfs()
        self.fd: int | None = None

    def __call__(self) -> None:
        if self.syncfs is None:
            os.sync()
            return
        if self.fd is None:
            self.fd = os.open(self.folder, os.O_RDONLY)
        if self.syncfs(self.fd) != 0:
            import ctypes

            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _commit(
    pending: list[tuple[str, str]], placed: int, out: TextIO, flush: Callable[[], None]
) -> int:
    if not pending:
        return placed
    flush()
    for tmp, final in pending:
        os.replace(tmp, final)
    placed += len(pending)
    pending.clear()
    out.write(f"in-place {placed}\n")
    out.flush()
    return placed


def receive(root: str, stream: BinaryIO, out: TextIO) -> int:
    """Write the chunks read from ``stream`` under ``root``/chunks; the number placed."""
    chunks = os.path.join(root, "chunks")
    pending: list[tuple[str, str]] = []
    placed = 0
    made: set[str] = set()
    flush = _Flusher(chunks)
    try:
        while True:
            header = _read(stream, ID_SIZE + 4)
            if not header:
                break
            if len(header) < ID_SIZE + 4:
                raise ValueError("the stream ended inside a chunk's header")
            hexid = header[:ID_SIZE].hex()
            size = int.from_bytes(header[ID_SIZE:], "big")
            if not 0 < size <= MAX_CHUNK:
                raise ValueError(f"chunk {hexid} claims {size} bytes")
            data = _read(stream, size)
            if len(data) < size:
                raise ValueError(f"the stream ended inside chunk {hexid}")
            folder = os.path.join(chunks, hexid[:4])
            if folder not in made:
                os.makedirs(folder, exist_ok=True)
                made.add(folder)
            fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".partial", dir=folder)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            except BaseException:
                os.unlink(tmp)
                raise
            pending.append((tmp, os.path.join(folder, hexid + ".cacnk")))
            if len(pending) >= BATCH:
                placed = _commit(pending, placed, out, flush)
        placed = _commit(pending, placed, out, flush)
    finally:
        for tmp, _ in pending:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        flush.close()
    return placed


def inventory(root: str, out: TextIO) -> int:
    """Write a line for each chunk and each temporary in the store; the chunks' count."""
    hexdigits = set("0123456789abcdef")
    count = 0
    try:
        indexes = sorted(os.scandir(os.path.join(root, "indexes")), key=lambda e: e.name)
    except FileNotFoundError:
        indexes = []
    for entry in indexes:
        if entry.name.endswith(".caibx") and not entry.name.startswith(".") and entry.is_file():
            digest = hashlib.sha256()
            with open(entry.path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            out.write(f"index {entry.name[: -len('.caibx')]} {digest.hexdigest()}\n")
    try:
        folders = sorted(os.scandir(os.path.join(root, "chunks")), key=lambda e: e.name)
    except FileNotFoundError:
        return 0
    for folder in folders:
        if len(folder.name) != 4 or not set(folder.name) <= hexdigits or not folder.is_dir():
            continue
        for entry in os.scandir(folder.path):
            name = entry.name
            if name.startswith(TEMP_PREFIX):
                out.write(f"tmp {folder.name}/{name}\n")
            elif name.endswith(".cacnk") and len(name) == 70 and set(name[:64]) <= hexdigits:
                out.write(f"chunk {name[:64]}\n")
                count += 1
    return count


def main(argv: list[str]) -> int:
    listing = len(argv) == 3 and argv[1] == "--list"
    root = argv[-1]
    if not (len(argv) == 2 or listing) or not os.path.isabs(root):
        sys.stderr.write("usage: point_receiver.py [--list] STORE-FOLDER (an absolute path)\n")
        return 2
    if not os.path.isdir(root):
        sys.stderr.write(f"no folder {root} on the point's host\n")
        return 2
    if listing:
        sys.stdout.write(f"listed {inventory(root, sys.stdout)}\n")
        sys.stdout.flush()
        return 0
    try:
        placed = receive(root, sys.stdin.buffer, sys.stdout)
    except ValueError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    sys.stdout.write(f"done {placed}\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
