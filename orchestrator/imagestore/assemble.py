"""Rebuild a file from an index: chunks from a seed where it has them, the rest fetched.

A seed is a file already at hand (on a client, the image it runs now). It
is chunked with the index's own chunk sizes and digest (or described by an
index of its own), and any chunk it holds is copied from it instead of
fetched: only the chunks the seed lacks come from the ``ChunkSource``.
Every byte is checked before it is written: seed bytes are re-hashed as they
are read (a seed that changed since it was indexed just falls back to the
source), fetched chunks are checked by the source.

Chunks of zeros are not written at all: the output is created at its full
size first, so they stay holes (sparse) and read back as zeros.

The output is built in a temporary file beside the destination, fsynced and
renamed over it: an interrupted extraction never leaves a partial image
under the destination's name.

:class:`PartialOutput` is that temporary file for a writer that fills it from
several threads at once (a pull writes seed chunks and fetched chunks side by
side). Its name, ``.orchestrator-partial.<destination name>.<random>``, says
whose it is, and the file is ``flock``-ed while it is being written, so the
next writer to the same destination can tell a file left by a killed process
(removed) from one still in flight (left alone): :func:`remove_stale_partials`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from orchestrator.imagestore import chunker, names
from orchestrator.imagestore.caibx import Index
from orchestrator.imagestore.errors import StoreError
from orchestrator.imagestore.store import TEMP_PREFIX, ChunkSource, _fsync_dir

log = logging.getLogger(__name__)

PARTIAL_PREFIX = ".orchestrator-partial."
"""How a :class:`PartialOutput`'s name begins: ``<prefix><destination name>.<8 random>``."""


@dataclass(frozen=True)
class Seed:
    """A file to take chunks from; ``index`` describes it, or it is chunked on the fly."""

    path: Path
    index: Index | None = None


@dataclass(frozen=True)
class ExtractReport:
    size: int
    bytes_from_seed: int
    bytes_from_source: int
    bytes_zero: int
    bytes_repeated: int
    chunks_fetched: int
    seed_mismatches: int


def seed_locations(index: Index, seed: Seed) -> dict[bytes, tuple[int, int]]:
    """Where in the seed file each chunk ``index`` needs can be found: id -> (offset, length).

    Raises:
        StoreError: the seed cannot be read.
    """
    wanted = index.unique_ids()
    found: dict[bytes, tuple[int, int]] = {}
    if seed.index is not None and seed.index.digest is index.digest:
        for start, length, chunk_id in seed.index.chunks():
            if chunk_id in wanted:
                found.setdefault(chunk_id, (start, length))
        return found
    path = names.plain_file(seed.path)
    try:
        with open(path, "rb", buffering=0) as f:
            for c in chunker.chunks(f, sizes=index.sizes, digest=index.digest):
                if c.id in wanted and c.id not in found:
                    found[c.id] = (c.offset, c.length)
    except OSError as exc:
        raise StoreError(f"seed {path}: cannot read: {exc}") from exc
    return found


def missing_chunks(index: Index, seed: Seed | None) -> set[bytes]:
    """The chunks extraction would fetch: those neither in the seed nor all zeros."""
    have = set(seed_locations(index, seed)) if seed is not None else set()
    zero = _zero_id(index)
    return {i for i in index.unique_ids() if i not in have and i != zero}


def _repeated_ids(index: Index) -> set[bytes]:
    seen: set[bytes] = set()
    repeated: set[bytes] = set()
    for _start, _length, chunk_id in index.chunks():
        if chunk_id in seen:
            repeated.add(chunk_id)
        else:
            seen.add(chunk_id)
    return repeated


def _zero_id(index: Index) -> bytes:
    # Content-defined chunkers (FastCDC and casync's buzhash alike) cut a run
    # of zeros at the maximum chunk size: that one chunk is the zero chunk.
    return chunker.zero_chunk_id(index.digest, index.sizes.max)


def extract(
    index: Index,
    source: ChunkSource,
    destination: Path | str,
    *,
    seed: Seed | None = None,
) -> ExtractReport:
    """Write the file ``index`` describes to ``destination``.

    Raises:
        ChunkMissing, ChunkCorrupt: from the source; nothing is left at ``destination``.
        StoreError: the seed or the destination could not be read or written.
    """
    dest = names.plain_file(destination)
    locations = seed_locations(index, seed) if seed is not None else {}
    hash_ = index.digest.hasher()
    zero = _zero_id(index)
    zero_len = index.sizes.max
    max_size = index.sizes.max
    # Where a chunk that occurs more than once was first written, to copy it from there.
    repeats = _repeated_ids(index)
    written: dict[bytes, int] = {}
    from_seed = from_source = zero_bytes = repeated = fetched = mismatches = 0

    seed_fd = -1
    try:
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".partial", dir=dest.parent)
    except OSError as exc:
        raise StoreError(f"cannot create a file beside {dest}: {exc}") from exc
    try:
        if seed is not None and locations:
            seed_fd = os.open(names.plain_file(seed.path), os.O_RDONLY)
        os.ftruncate(fd, index.size)
        for start, length, chunk_id in index.chunks():
            if length == zero_len and chunk_id == zero:
                zero_bytes += length
                continue
            at = written.get(chunk_id)
            if at is not None:
                data = os.pread(fd, length, at)
                if hash_(data) == chunk_id:
                    os.pwrite(fd, data, start)
                    repeated += length
                    continue
            data = b""
            where = locations.get(chunk_id)
            if where is not None and where[1] == length:
                data = os.pread(seed_fd, length, where[0])
                if len(data) == length and hash_(data) == chunk_id:
                    from_seed += length
                else:
                    mismatches += 1
                    data = b""
            if not data:
                data = source.get(chunk_id, digest=index.digest, max_size=max_size)
                if len(data) != length:
                    raise StoreError(
                        f"chunk {chunk_id.hex()} is {len(data)} bytes, the index says {length}"
                    )
                from_source += length
                fetched += 1
            os.pwrite(fd, data, start)
            if chunk_id in repeats:
                written.setdefault(chunk_id, start)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except BaseException as exc:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise StoreError(f"cannot write {dest}: {exc}") from exc
        raise
    finally:
        if seed_fd >= 0:
            os.close(seed_fd)
    return ExtractReport(
        index.size, from_seed, from_source, zero_bytes, repeated, fetched, mismatches
    )


def _partial_pattern(dest: Path) -> re.Pattern[str]:
    # mkstemp's random part: 8 characters of [a-z0-9_].
    return re.compile(re.escape(f"{PARTIAL_PREFIX}{dest.name}.") + r"[a-z0-9_]{8}\Z")


def remove_stale_partials(destination: Path | str) -> list[Path]:
    """Remove the partial outputs for ``destination`` that no live process is writing.

    Only regular files named as :class:`PartialOutput` names them for this
    destination, in its folder, are considered, and one is removed only when
    an exclusive ``flock`` on it is granted at once (its writer holds one until
    it is done, so a file in flight is never taken). Returns what was removed.
    """
    dest = names.plain_file(destination)
    pattern = _partial_pattern(dest)
    removed: list[Path] = []
    try:
        entries = [e.name for e in os.scandir(dest.parent) if pattern.match(e.name)]
    except OSError:
        return removed
    for name in entries:
        path = dest.parent / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # being written
            # Still the file that was locked under this name: remove it.
            now = os.lstat(path)
            if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                os.unlink(path)
                removed.append(path)
                log.info("removed %s, left by an interrupted pull", path)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


class PartialOutput:
    """A file of ``size`` bytes (holes) beside ``destination``, renamed over it by :meth:`finish`.

    Written with :meth:`write` from any number of threads (each at its own
    offsets). The file is ``flock``-ed for as long as it is open, which is how
    :func:`remove_stale_partials` tells it is in flight. :meth:`discard` (or
    leaving the ``with`` block without :meth:`finish`) removes it.

    Raises (when made): StoreError: the file cannot be created.
    """

    def __init__(self, destination: Path | str, size: int) -> None:
        self.destination = names.plain_file(destination)
        self.fd = -1
        self.path: Path | None = None
        prefix = f"{PARTIAL_PREFIX}{self.destination.name}."
        try:
            for _attempt in range(100):
                fd, tmp = tempfile.mkstemp(prefix=prefix, suffix="", dir=self.destination.parent)
                fcntl.flock(fd, fcntl.LOCK_EX)
                # A clean-up that locked it first (between the two calls) removed it.
                st, now = os.fstat(fd), None
                with contextlib.suppress(FileNotFoundError):
                    now = os.lstat(tmp)
                if now is not None and (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                    break
                os.close(fd)
            else:
                raise OSError("a partial file kept being removed")
            self.fd, self.path = fd, Path(tmp)
            os.ftruncate(fd, size)
        except OSError as exc:
            self.discard()
            raise StoreError(f"cannot create a file beside {self.destination}: {exc}") from exc

    def __enter__(self) -> PartialOutput:
        return self

    def __exit__(self, *_: object) -> None:
        self.discard()

    def write(self, data: bytes | memoryview, at: int) -> None:
        """Raises StoreError."""
        view = memoryview(data)
        try:
            while view:
                written = os.pwrite(self.fd, view, at)
                view, at = view[written:], at + written
        except OSError as exc:
            raise StoreError(f"cannot write {self.path}: {exc}") from exc

    def finish(self) -> None:
        """Make the file durable and rename it over the destination.

        Raises:
            StoreError: it could not be synced or renamed (it is removed).
        """
        try:
            os.fsync(self.fd)
            os.replace(str(self.path), self.destination)
            self.path = None
            _fsync_dir(self.destination.parent)
        except OSError as exc:
            self.discard()
            raise StoreError(f"cannot write {self.destination}: {exc}") from exc
        finally:
            self._close()

    def discard(self) -> None:
        """Remove the file unless it was finished (nothing of it is left)."""
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            self.path = None
        self._close()

    def _close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
