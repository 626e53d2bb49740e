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

A resumable one (``resume_key``, a pull's: the signed index's digest) is named
``.orchestrator-partial.<destination name>.resume-<key>`` instead and kept
when its writer fails or is killed, with a journal beside it (``<that
name>.journal``): the ids of the chunks already written and checked, appended
in batches by :meth:`PartialOutput.record` only after the file's data is
synced. The next writer with the same destination and key takes it up again
(:attr:`PartialOutput.journaled`, ids it must re-hash from the file before it
trusts them); one with another key removes it like any stale partial.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import stat
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.imagestore import chunker, names
from orchestrator.imagestore.caibx import Index
from orchestrator.imagestore.errors import StoreError
from orchestrator.imagestore.store import TEMP_PREFIX, ChunkSource, _fsync_dir

log = logging.getLogger(__name__)

PARTIAL_PREFIX = ".orchestrator-partial."
"""How a :class:`PartialOutput`'s name begins: ``<prefix><destination name>.<8 random>``
(or ``.resume-<key>`` for a resumable one)."""
JOURNAL_SUFFIX = ".journal"
JOURNAL_MAGIC = b"orchestrator partial journal 1\n"
"""A journal's first bytes; then the resume key (ASCII, newline) and 32-byte chunk ids."""
ID_SIZE = 32


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
    # mkstemp's random part: 8 characters of [a-z0-9_]; or a resumable one's key.
    return re.compile(
        re.escape(f"{PARTIAL_PREFIX}{dest.name}.") + r"(?:[a-z0-9_]{8}|resume-[0-9a-f]{16,64})\Z"
    )


def _journal_pattern(dest: Path) -> re.Pattern[str]:
    return re.compile(
        re.escape(f"{PARTIAL_PREFIX}{dest.name}.")
        + r"resume-[0-9a-f]{16,64}"
        + re.escape(JOURNAL_SUFFIX)
        + r"\Z"
    )


def remove_stale_partials(destination: Path | str) -> list[Path]:
    """Remove the partial outputs for ``destination`` that no live process is writing.

    Only regular files named as :class:`PartialOutput` names them for this
    destination, in its folder, are considered, and one is removed only when
    an exclusive ``flock`` on it is granted at once (its writer holds one until
    it is done, so a file in flight is never taken), with its journal; a
    journal whose partial file is gone goes too. Returns what was removed.
    """
    dest = names.plain_file(destination)
    pattern = _partial_pattern(dest)
    journals = _journal_pattern(dest)
    removed: list[Path] = []
    try:
        listed = [e.name for e in os.scandir(dest.parent)]
    except OSError:
        return removed
    entries = [name for name in listed if pattern.match(name)]
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
    for name in listed:
        # A journal is written only while its partial file is locked and there.
        journal = dest.parent / name
        if journals.match(name) and not os.path.lexists(
            journal.with_name(name[: -len(JOURNAL_SUFFIX)])
        ):
            with contextlib.suppress(OSError):
                os.unlink(journal)
                removed.append(journal)
    return removed


class PartialOutput:
    """A file of ``size`` bytes (holes) beside ``destination``, renamed over it by :meth:`finish`.

    Written with :meth:`write` from any number of threads (each at its own
    offsets). The file is ``flock``-ed for as long as it is open, which is how
    :func:`remove_stale_partials` tells it is in flight. :meth:`discard` removes
    it; so does leaving the ``with`` block without :meth:`finish`, unless it is
    resumable.

    With ``resume_key`` (hex, 16 to 64 digits, naming what the file will hold)
    it is resumable: named after the key, kept on failure with its journal, and
    taken up again by the next one made with the same destination and key,
    whose :attr:`journaled` then lists the chunk ids :meth:`record` was given
    (not yet checked: re-hash them from the file before trusting them). When
    another live process holds that file, a fresh unresumable one is made.

    Raises (when made): StoreError: the file cannot be created.
    """

    def __init__(
        self, destination: Path | str, size: int, *, resume_key: str | None = None
    ) -> None:
        self.destination = names.plain_file(destination)
        self.fd = -1
        self.path: Path | None = None
        self.journal_path: Path | None = None
        self.journaled: list[bytes] = []
        """Chunk ids an earlier writer recorded as written (resumed files only)."""
        self._journal = -1
        self._journal_end = 0
        self._journal_lock = threading.Lock()
        if resume_key is not None and not re.fullmatch(r"[0-9a-f]{16,64}", resume_key):
            raise ValueError(f"a resume key is 16 to 64 hex digits, not {resume_key!r}")
        try:
            if resume_key is not None:
                self._open_resumable(resume_key, size)
            if self.fd < 0:
                self._open_fresh(size)
        except OSError as exc:
            self.discard()
            raise StoreError(f"cannot create a file beside {self.destination}: {exc}") from exc

    @property
    def resumable(self) -> bool:
        return self._journal >= 0

    def _open_fresh(self, size: int) -> None:
        prefix = f"{PARTIAL_PREFIX}{self.destination.name}."
        for _attempt in range(100):
            fd, tmp = tempfile.mkstemp(prefix=prefix, suffix="", dir=self.destination.parent)
            fcntl.flock(fd, fcntl.LOCK_EX)
            # A clean-up that locked it first (between the two calls) removed it.
            if _still_named(fd, Path(tmp)):
                break
            os.close(fd)
        else:
            raise OSError("a partial file kept being removed")
        self.fd, self.path = fd, Path(tmp)
        os.ftruncate(fd, size)

    def _open_resumable(self, key: str, size: int) -> None:
        path = self.destination.with_name(f"{PARTIAL_PREFIX}{self.destination.name}.resume-{key}")
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        for _attempt in range(100):
            fd = os.open(path, flags, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                log.info("%s is being written by another process: not resuming it", path)
                return
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                return
            if _still_named(fd, path):
                break
            os.close(fd)
        else:
            return
        self.fd, self.path = fd, path
        journal = path.with_name(path.name + JOURNAL_SUFFIX)
        self._journal = os.open(journal, flags, 0o600)
        self.journal_path = journal
        header = JOURNAL_MAGIC + key.encode("ascii") + b"\n"
        held = b""
        if os.fstat(fd).st_size == size:
            held = _read_all(self._journal)
        if held.startswith(header):
            body = memoryview(held)[len(header) :]
            whole = len(body) - len(body) % ID_SIZE  # a record torn by a kill is dropped
            self.journaled = [bytes(body[at : at + ID_SIZE]) for at in range(0, whole, ID_SIZE)]
            self._journal_end = len(header) + whole
            if whole != len(body):
                os.ftruncate(self._journal, self._journal_end)
            if self.journaled:
                log.info("resuming %s: %d chunks recorded there", path, len(self.journaled))
            return
        # Not this key's, or not the right size: start it afresh, holes throughout.
        os.ftruncate(self._journal, 0)
        _write_all(self._journal, header, 0)
        self._journal_end = len(header)
        os.ftruncate(fd, 0)
        os.ftruncate(fd, size)

    def __enter__(self) -> PartialOutput:
        return self

    def __exit__(self, *_: object) -> None:
        if self.resumable:
            self._close()  # kept, with its journal, for the next writer to resume
        else:
            self.discard()

    def write(self, data: bytes | memoryview, at: int) -> None:
        """Raises StoreError."""
        try:
            _write_all(self.fd, data, at)
        except OSError as exc:
            raise StoreError(f"cannot write {self.path}: {exc}") from exc

    def read(self, at: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``at`` (fewer past the end). Raises StoreError."""
        try:
            return os.pread(self.fd, length, at)
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc}") from exc

    def record(self, chunk_ids: Sequence[bytes]) -> None:
        """Make everything written so far durable, then journal ``chunk_ids`` as written.

        A no-op unless the file is resumable. Call it only for chunks whose every
        place was written with checked data; a resuming writer re-hashes them anyway.

        Raises:
            StoreError: the file could not be synced or the journal written.
        """
        if self._journal < 0 or not chunk_ids:
            return
        data = b"".join(chunk_ids)
        try:
            _datasync(self.fd)
            with self._journal_lock:
                _write_all(self._journal, data, self._journal_end)
                self._journal_end += len(data)
        except OSError as exc:
            raise StoreError(f"cannot record progress beside {self.path}: {exc}") from exc

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
            self._drop_journal()
        except OSError as exc:
            self.discard()
            raise StoreError(f"cannot write {self.destination}: {exc}") from exc
        finally:
            self._close()

    def discard(self) -> None:
        """Remove the file (and its journal) unless it was finished: nothing of it is left."""
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            self.path = None
        self._drop_journal()
        self._close()

    def _drop_journal(self) -> None:
        if self.journal_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.journal_path)
            self.journal_path = None

    def _close(self) -> None:
        if self._journal >= 0:
            os.close(self._journal)
            self._journal = -1
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _still_named(fd: int, path: Path) -> bool:
    """Whether ``path`` is still the file open as ``fd`` (a clean-up may have removed it)."""
    st = os.fstat(fd)
    try:
        now = os.lstat(path)
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


def _write_all(fd: int, data: bytes | memoryview, at: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, at)
        view, at = view[written:], at + written


def _read_all(fd: int) -> bytes:
    pieces: list[bytes] = []
    at = 0
    while piece := os.pread(fd, 1 << 20, at):
        pieces.append(piece)
        at += len(piece)
    return b"".join(pieces)


def _datasync(fd: int) -> None:
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:  # pragma: no cover - not Linux
        os.fsync(fd)
