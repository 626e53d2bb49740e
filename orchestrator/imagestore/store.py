"""The chunk store (casync's layout) and the image store around it.

::

    images/                    ImageStore root
      .lock                    flock: shared while open, exclusive to clean up
      chunks/                  a casync chunk store: `casync --store=images/chunks`
        1a2b/1a2b…(64 hex).cacnk   one zstd frame; id = digest of the *uncompressed* data
      indexes/
        <image name>.caibx     casync blob index

Crash safety: every file is written as a temporary file in its final
directory (named ``.tmp-…``), made durable, and renamed over its final name
only after the data's digest was checked; the renames are then made durable
too. An index is one fsynced file; an import's new chunks are flushed in
batches, one ``syncfs(2)`` per batch on Linux (each file fsynced on its own
elsewhere), each batch renamed only after its flush. A chunk or index under
its final name is therefore whole. A writer killed half way
leaves only ``.tmp-`` files, removed by the next open that finds no other
process using the store (an exclusive ``flock`` on ``.lock``: a live writer
holds it shared, so its files in flight are never taken from it). An index is
written only after every chunk it names is durable.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import fcntl
import hashlib
import io
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import zstandard

from orchestrator.imagestore import chunker, names
from orchestrator.imagestore.caibx import (
    CHUNK_SIZE_LIMIT,
    HEAD_SIZE,
    ChunkSizes,
    Digest,
    Index,
    chunk_id_hex,
    decode,
    decode_head,
)
from orchestrator.imagestore.errors import (
    ChunkCorrupt,
    ChunkMissing,
    MalformedIndex,
    SourceChanged,
    StoreBusy,
    StoreError,
    UnsafeName,
)

TEMP_PREFIX = ".tmp-"
CHUNK_SUFFIX = ".cacnk"
INDEX_SUFFIX = ".caibx"
# zstd's default level: ~4 GB/s on incompressible data, well compressed elsewhere.
ZSTD_LEVEL = 3
# A stored chunk file is never larger than its data plus zstd's frame overhead.
_MAX_COMPRESSED = CHUNK_SIZE_LIMIT + CHUNK_SIZE_LIMIT // 64 + 1024
_PIECE = 1024 * 1024
# An index file this large would describe more than a petabyte.
_MAX_INDEX_FILE = 1 << 30
PROGRESS_STEP = 8 * 1024 * 1024
"""How many bytes an import reads between two calls of its ``progress``."""


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_syncfs() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    syncfs.argtypes = [ctypes.c_int]
    syncfs.restype = ctypes.c_int
    return syncfs


# Linux's syncfs(2) makes every file written so far on the file system durable
# in one journal commit: a batch of chunk files is flushed together before any
# of them is renamed, instead of one fsync (~1 ms) per chunk. Elsewhere each
# chunk file is fsynced on its own.
_SYNCFS = _load_syncfs()


@dataclass(frozen=True)
class StagedChunk:
    """A chunk written under a temporary name in its final directory, not yet renamed."""

    temporary: str
    final: Path
    stored_bytes: int


def atomic_write(directory: Path, name: str, data: bytes | memoryview) -> None:
    """Write ``directory/name`` so it appears whole or not at all.

    Raises:
        StoreError: the file could not be written.
    """
    try:
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".partial", dir=directory)
    except OSError as exc:
        raise StoreError(f"cannot create a file in {directory}: {exc}") from exc
    try:
        with os.fdopen(fd, "wb", closefd=True) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / name)
        _fsync_dir(directory)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise StoreError(f"cannot write {directory / name}: {exc}") from exc
        raise


def read_index(path: Path | str) -> Index:
    """Read and check a .caibx file.

    Raises:
        MalformedIndex: the file is not a valid casync blob index.
        StoreError: the file could not be read.
    """
    path = names.plain_file(path)
    try:
        data = _read_at_most(path, _MAX_INDEX_FILE)
    except FileNotFoundError as exc:
        raise StoreError(f"{path}: no such index") from exc
    except OSError as exc:
        raise StoreError(f"{path}: cannot read: {exc}") from exc
    if data is None:
        raise MalformedIndex("larger than any index this store writes", offset=_MAX_INDEX_FILE)
    return decode(data, source=str(path))


def _read_at_most(path: Path, limit: int) -> bytes | None:
    """The file's bytes, or None when it holds more than ``limit``.

    (``read(limit + 1)`` would allocate ``limit`` bytes up front, for every read.)
    """
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size > limit:
            return None
        data = f.read()
    return data if len(data) <= limit else None


MAX_COMPRESSED = _MAX_COMPRESSED
"""No stored chunk file is larger: its data's maximum plus zstd's frame overhead."""


def decode_chunk(
    chunk_id: bytes,
    compressed: bytes,
    *,
    digest: Digest,
    max_size: int = CHUNK_SIZE_LIMIT,
    zstd: zstandard.ZstdDecompressor | None = None,
) -> bytes:
    """A chunk file's bytes decompressed (never past ``max_size``) and checked against its id.

    ``zstd`` is a decompressor of the calling thread's (they are not thread-safe).

    Raises:
        ChunkCorrupt: it does not decompress, is larger than ``max_size``, or does
            not hash to its id.
    """
    hex_id = chunk_id.hex()
    pieces: list[bytes] = []
    total = 0
    try:
        reader = (zstd or zstandard.ZstdDecompressor()).stream_reader(
            io.BytesIO(compressed), read_across_frames=True
        )
        # In pieces, so a chunk claiming to inflate past max_size stops there.
        while piece := reader.read(min(_PIECE, max_size + 1 - total)):
            pieces.append(piece)
            total += len(piece)
            if total > max_size:
                raise ChunkCorrupt(hex_id, f"it decompresses to more than {max_size} bytes")
    except zstandard.ZstdError as exc:
        raise ChunkCorrupt(hex_id, f"it does not decompress: {exc}") from exc
    data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    if digest.hasher()(data) != chunk_id:
        raise ChunkCorrupt(hex_id, f"its data does not hash to its id ({digest.value})")
    return data


def write_index(path: Path | str, index: Index) -> None:
    """Write a .caibx file atomically (temp file, fsync, rename).

    Raises:
        StoreError: the file could not be written.
    """
    path = names.plain_file(path)
    atomic_write(path.parent, path.name, index.encode())


class ChunkSource(Protocol):
    """Where assembly gets chunks it cannot find in a seed: the local store, later a
    building's distribution point over HTTP."""

    def get(self, chunk_id: bytes, *, digest: Digest, max_size: int = CHUNK_SIZE_LIMIT) -> bytes:
        """The chunk's uncompressed data, its digest checked.

        Raises:
            ChunkMissing, ChunkCorrupt
        """
        ...


class ChunkStore:
    """A casync chunk store directory: ``<root>/<4 hex>/<64 hex>.cacnk``."""

    def __init__(self, root: Path | str, *, level: int = ZSTD_LEVEL) -> None:
        self.root = names.plain_file(root)
        self.level = level
        self._local = threading.local()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the chunk store {self.root}: {exc}") from exc

    def _compressor(self) -> zstandard.ZstdCompressor:
        # zstandard's (de)compressors are not safe to share between threads.
        c: zstandard.ZstdCompressor | None = getattr(self._local, "c", None)
        if c is None:
            c = self._local.c = zstandard.ZstdCompressor(level=self.level)
        return c

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        d: zstandard.ZstdDecompressor | None = getattr(self._local, "d", None)
        if d is None:
            d = self._local.d = zstandard.ZstdDecompressor()
        return d

    def path(self, chunk_id: bytes | str) -> Path:
        """Where a chunk lives. Raises UnsafeName for anything but a 32-byte id."""
        text = chunk_id if isinstance(chunk_id, str) else chunk_id.hex()
        if isinstance(chunk_id, bytes) and len(chunk_id) != 32:
            raise UnsafeName(f"a chunk id is 32 bytes, not {len(chunk_id)}")
        chunk_id_hex(text)
        return self.root / text[:4] / f"{text}{CHUNK_SUFFIX}"

    def has(self, chunk_id: bytes) -> bool:
        return self.path(chunk_id).is_file()

    def stored_size(self, chunk_id: bytes) -> int | None:
        """The compressed size on disk, or None when the chunk is absent."""
        try:
            return self.path(chunk_id).stat().st_size
        except FileNotFoundError:
            return None

    def put(self, chunk_id: bytes, data: bytes | memoryview, *, digest: Digest) -> int:
        """Store a chunk unless present; return the compressed bytes written (0 if present).

        Raises:
            ChunkCorrupt: ``data`` does not hash to ``chunk_id`` (nothing is written).
            StoreError: the chunk could not be written.
        """
        staged = self.stage(chunk_id, data, digest=digest)
        if staged is None:
            return 0
        self.commit([staged])
        self.sync([staged.final.parent])
        return staged.stored_bytes

    def stage(
        self,
        chunk_id: bytes,
        data: bytes | memoryview,
        *,
        digest: Digest,
        compressed: bytes | None = None,
        hashed: bool = False,
    ) -> StagedChunk | None:
        """Check, compress and write a chunk under a temporary name beside its final one.

        None when the store already has it. ``commit`` makes it visible.
        ``compressed``, when given, is ``data`` already compressed (a chunk file
        fetched and decompressed by the caller), written as it is. ``hashed``
        says the caller has just computed ``chunk_id`` from these very bytes
        (the chunker, or ``decode_chunk``), so they are not hashed a second time.

        Raises:
            ChunkCorrupt: ``data`` does not hash to ``chunk_id`` (nothing is written).
            StoreError: the chunk could not be written.
        """
        target = self.path(chunk_id)
        if target.is_file():
            return None
        if not hashed and digest.hasher()(data) != chunk_id:
            raise ChunkCorrupt(chunk_id.hex(), f"the data does not hash to it ({digest.value})")
        if compressed is None:
            compressed = self._compressor().compress(data)
        directory = target.parent
        tmp = ""
        try:
            directory.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".partial", dir=directory)
            with os.fdopen(fd, "wb", closefd=True) as f:
                f.write(compressed)
                if _SYNCFS is None:
                    f.flush()
                    os.fsync(f.fileno())
        except OSError as exc:
            if tmp:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise StoreError(f"cannot write chunk {chunk_id.hex()}: {exc}") from exc
        return StagedChunk(tmp, target, len(compressed))

    def commit(self, staged: Iterable[StagedChunk]) -> None:
        """Make staged chunks durable, then rename each to its final name.

        Raises:
            StoreError: the file system could not be synced or a rename failed
                (the chunks not yet renamed are removed).
        """
        todo = list(staged)
        try:
            if _SYNCFS is not None and todo:
                self._syncfs()
            while todo:
                item = todo[0]
                os.replace(item.temporary, item.final)
                todo.pop(0)
        except OSError as exc:
            for item in todo:
                with contextlib.suppress(OSError):
                    os.unlink(item.temporary)
            raise StoreError(f"cannot commit chunks to {self.root}: {exc}") from exc

    def sync(self, directories: Iterable[Path] = ()) -> None:
        """Make renames done so far durable (before an index that names the chunks)."""
        try:
            if _SYNCFS is not None:
                self._syncfs()
            else:
                for directory in set(directories):
                    _fsync_dir(directory)
        except OSError as exc:
            raise StoreError(f"cannot sync {self.root}: {exc}") from exc

    def _syncfs(self) -> None:
        assert _SYNCFS is not None
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if _SYNCFS(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
        finally:
            os.close(fd)

    def get(self, chunk_id: bytes, *, digest: Digest, max_size: int = CHUNK_SIZE_LIMIT) -> bytes:
        """A chunk's data, decompressed and re-hashed.

        Raises:
            ChunkMissing: no such chunk in the store.
            ChunkCorrupt: it does not decompress, is larger than ``max_size``, or
                does not hash to its id.
        """
        hex_id = chunk_id.hex()
        target = self.path(chunk_id)
        try:
            compressed = _read_at_most(target, _MAX_COMPRESSED)
        except FileNotFoundError as exc:
            raise ChunkMissing(hex_id) from exc
        except OSError as exc:
            raise StoreError(f"cannot read chunk {hex_id}: {exc}") from exc
        if compressed is None:
            raise ChunkCorrupt(hex_id, "the file is larger than any chunk")
        return decode_chunk(
            chunk_id, compressed, digest=digest, max_size=max_size, zstd=self._decompressor()
        )

    def ids(self) -> Iterator[bytes]:
        """Every chunk id stored (temporary files skipped)."""
        for sub in sorted(os.scandir(self.root), key=lambda e: e.name):
            if not (sub.is_dir(follow_symlinks=False) and len(sub.name) == 4):
                continue
            for entry in os.scandir(sub.path):
                name = entry.name
                if name.endswith(CHUNK_SUFFIX) and len(name) == 64 + len(CHUNK_SUFFIX):
                    try:
                        yield bytes.fromhex(chunk_id_hex(name[:64]))
                    except (UnsafeName, ValueError):
                        continue

    def clean_temporaries(self) -> int:
        """Remove ``.tmp-`` files left by killed writers; return how many."""
        removed = 0
        for sub in os.scandir(self.root):
            if sub.is_dir(follow_symlinks=False):
                for entry in os.scandir(sub.path):
                    if entry.name.startswith(TEMP_PREFIX):
                        with contextlib.suppress(OSError):
                            os.unlink(entry.path)
                            removed += 1
            elif sub.name.startswith(TEMP_PREFIX):
                with contextlib.suppress(OSError):
                    os.unlink(sub.path)
                    removed += 1
        return removed


@dataclass(frozen=True)
class ImportReport:
    name: str
    size: int
    chunks: int
    new_chunks: int
    new_stored_bytes: int
    zero_bytes: int


@dataclass(frozen=True)
class VerifyReport:
    checked: int
    missing: list[str] = field(default_factory=list)
    corrupt: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.corrupt


@dataclass(frozen=True)
class IndexStats:
    logical_bytes: int
    chunks: int
    unique_chunks: int
    unique_logical_bytes: int
    stored_bytes: int


@dataclass(frozen=True)
class SharedStats:
    logical_bytes: int
    shared_logical_bytes: int
    own_unique_chunks: int
    own_stored_bytes: int


class ImageStore:
    """Images stored as casync indexes over one deduplicated chunk store.

    Open it as a context manager; while open, the process holds a shared
    lock on the store, so no other process's clean-up removes its files in flight.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        digest: Digest | None = None,
        sizes: ChunkSizes | None = None,
        workers: int = 4,
        batch: int = 256,
    ) -> None:
        self.root = names.plain_file(root)
        self._digest = digest
        self._sizes = sizes
        self._cut: tuple[Digest, ChunkSizes] | None = None
        self.workers = max(1, workers)
        # New chunks made durable together (one syncfs), then renamed, per batch.
        self.batch = max(1, batch)
        self.chunks = ChunkStore(self.root / "chunks")
        self.indexes = self.root / "indexes"
        self.cleaned = 0
        try:
            self.indexes.mkdir(parents=True, exist_ok=True)
            self._lock = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot open the image store at {self.root}: {exc}") from exc
        self._recover()

    def _recover(self) -> None:
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StoreError(f"cannot lock {self.root}: {exc}") from exc
            # Another process has the store open: its temporary files may be in flight.
            fcntl.flock(self._lock, fcntl.LOCK_SH)
            return
        try:
            self.cleaned = self.chunks.clean_temporaries()
            for entry in os.scandir(self.indexes):
                if entry.name.startswith(TEMP_PREFIX):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                        self.cleaned += 1
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_SH)

    @contextlib.contextmanager
    def alone(self) -> Iterator[None]:
        """Hold the store alone for a clean-up: no other process has it open, and
        none opens it until the block ends (their opening waits).

        An import skips the chunks the store holds already, so a clean-up running
        beside it could remove a chunk its index is about to name.

        Raises: StoreBusy (another process has it open).
        """
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StoreError(f"cannot lock {self.root}: {exc}") from exc
            raise StoreBusy(
                f"the image store at {self.root} is in use by another process (an import, "
                "a staging or a check): try again when it is done"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_SH)

    def close(self) -> None:
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    def __enter__(self) -> ImageStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- indexes ---------------------------------------------------------------

    # A chunk is shared only between images cut alike (same digest, same sizes):
    # with none given, new images are cut as the store's images were.

    @property
    def digest(self) -> Digest:
        """The digest naming new images' chunks: the one given, else the store's."""
        return self._digest if self._digest is not None else self._cut_in_use()[0]

    @property
    def sizes(self) -> ChunkSizes:
        """The chunk sizes new images are cut with: those given, else the store's."""
        return self._sizes if self._sizes is not None else self._cut_in_use()[1]

    def _cut_in_use(self) -> tuple[Digest, ChunkSizes]:
        """What the first readable index's header declares, else a new store's defaults."""
        if self._cut is None:
            self._cut = (Digest.SHA512_256, ChunkSizes())
            for name in self.names():
                path = self.index_path(name)
                try:
                    with open(path, "rb") as f:
                        self._cut = decode_head(f.read(HEAD_SIZE), source=str(path))
                    break
                except (OSError, MalformedIndex):
                    continue  # unreadable: `store verify` reports it; try the next
        return self._cut

    def index_path(self, name: str) -> Path:
        return self.indexes / f"{names.image_name(name)}{INDEX_SUFFIX}"

    def names(self) -> list[str]:
        found = []
        for entry in os.scandir(self.indexes):
            stem = entry.name.removesuffix(INDEX_SUFFIX)
            if entry.name.endswith(INDEX_SUFFIX) and not entry.name.startswith(TEMP_PREFIX):
                try:
                    found.append(names.image_name(stem))
                except UnsafeName:
                    continue
        return sorted(found)

    def index(self, name: str) -> Index:
        """Raises StoreError (no such image) or MalformedIndex."""
        return read_index(self.index_path(name))

    def has_index(self, name: str) -> bool:
        return self.index_path(name).is_file()

    # -- writing ---------------------------------------------------------------

    def make_index(self, path: Path | str) -> Index:
        """Chunk a file into an index without storing anything (e.g. to describe a seed)."""
        return self._chunk(path, store=False)[0]

    def import_file(
        self,
        name: str,
        path: Path | str,
        *,
        replace: bool = False,
        progress: Callable[[int], None] | None = None,
        expect_sha256: str | None = None,
    ) -> ImportReport:
        """Chunk a file, store the chunks the store lacks, write ``indexes/<name>.caibx``.

        ``progress``, when given, is called with the bytes of the file chunked so
        far, every ``PROGRESS_STEP`` bytes and once at the end. ``expect_sha256``,
        when given, is the whole file's SHA-256 as hex: the bytes chunked are
        hashed as they go, and no index is written unless they match it.

        Raises:
            UnsafeName: the name is outside the allow-list.
            SourceChanged: the bytes read do not hash to ``expect_sha256``.
            StoreError: the image exists (without ``replace``), or a read or write failed.
        """
        target = self.index_path(name)
        if target.exists() and not replace:
            raise StoreError(f"image {name!r} is already in the store")
        whole = hashlib.sha256() if expect_sha256 is not None else None
        index, new_chunks, new_bytes, zero_bytes = self._chunk(
            path, store=True, progress=progress, whole=whole
        )
        if whole is not None and whole.hexdigest() != expect_sha256:
            # The chunks stay (unreferenced, for gc): only an index makes them an image.
            raise SourceChanged(
                f"{path}: the bytes read have SHA-256 {whole.hexdigest()}, not the "
                f"{expect_sha256} it had when checked: it changed while it was imported"
            )
        # Every chunk is durable (fsynced and renamed) before the index names it.
        write_index(target, index)
        return ImportReport(name, index.size, len(index), new_chunks, new_bytes, zero_bytes)

    def _chunk(
        self,
        path: Path | str,
        *,
        store: bool,
        progress: Callable[[int], None] | None = None,
        whole: hashlib._Hash | None = None,
    ) -> tuple[Index, int, int, int]:
        source = names.plain_file(path)
        index = Index(digest=self.digest, sizes=self.sizes)
        seen: set[bytes] = set()
        new_chunks = new_bytes = zero_bytes = 0
        pending: collections.deque[Future[StagedChunk | None]] = collections.deque()
        staged: list[StagedChunk] = []
        touched: set[Path] = set()
        pool = ThreadPoolExecutor(max_workers=self.workers) if store else None
        read = 0
        told = PROGRESS_STEP

        def collect(final: bool) -> None:
            # Waits for the oldest only: the workers keep busy while the file is chunked.
            nonlocal new_chunks, new_bytes
            keep = 0 if final else 4 * self.workers
            while len(pending) > keep:
                item = pending.popleft().result()
                if item is not None:
                    staged.append(item)
                    new_chunks += 1
                    new_bytes += item.stored_bytes
            if staged and (final or len(staged) >= self.batch):
                self.chunks.commit(staged)
                touched.update(item.final.parent for item in staged)
                staged.clear()

        try:
            with open(source, "rb", buffering=0) as f:
                for c in chunker.chunks(f, sizes=self.sizes, digest=self.digest):
                    index.append(c.id, c.length)
                    read += c.length
                    if whole is not None:
                        whole.update(c.data)
                    if progress is not None and read >= told:
                        progress(read)
                        told = read + PROGRESS_STEP
                    if c.zero:
                        zero_bytes += c.length
                    if pool is None or c.id in seen:
                        continue
                    seen.add(c.id)
                    if self.chunks.has(c.id):
                        continue
                    pending.append(pool.submit(self._stage, c.id, bytes(c.data)))
                    if len(pending) >= 8 * self.workers:
                        # Bounded memory: at most this many chunk copies in flight.
                        collect(final=False)
            if pool is not None:
                collect(final=True)
                self.chunks.sync(touched)
            if progress is not None:
                progress(read)
        except BaseException as exc:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
                leftovers = list(staged)
                for future in pending:
                    with contextlib.suppress(BaseException):
                        item = future.result()
                        if item is not None:
                            leftovers.append(item)
                for item in leftovers:
                    with contextlib.suppress(OSError):
                        os.unlink(item.temporary)
            if isinstance(exc, FileNotFoundError):
                raise StoreError(f"{source}: no such file") from exc
            if isinstance(exc, OSError):
                raise StoreError(f"{source}: cannot read: {exc}") from exc
            raise
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
        return index, new_chunks, new_bytes, zero_bytes

    def _stage(self, chunk_id: bytes, data: bytes) -> StagedChunk | None:
        # The chunker computed chunk_id from these bytes a moment ago.
        return self.chunks.stage(chunk_id, data, digest=self.digest, hashed=True)

    # -- checking and figures ------------------------------------------------------

    def verify(
        self,
        indexes: Iterable[Index] | None = None,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> VerifyReport:
        """Re-hash every chunk the given indexes (all the store's, by default) need.

        ``progress``, when given, is called with (chunks checked, chunks to check)
        before the first and after every 256th chunk and the last.
        """
        if indexes is None:
            indexes = [self.index(n) for n in self.names()]
        wanted: dict[bytes, tuple[Digest, int]] = {}
        for index in indexes:
            for chunk_id in index.unique_ids():
                wanted.setdefault(chunk_id, (index.digest, index.sizes.max))
        missing: list[str] = []
        corrupt: list[tuple[str, str]] = []
        total = len(wanted)
        if progress is not None:
            progress(0, total)
        for done, (chunk_id, (digest, max_size)) in enumerate(sorted(wanted.items()), 1):
            try:
                self.chunks.get(chunk_id, digest=digest, max_size=max_size)
            except ChunkMissing:
                missing.append(chunk_id.hex())
            except ChunkCorrupt as exc:
                corrupt.append((chunk_id.hex(), str(exc)))
            if progress is not None and (done % 256 == 0 or done == total):
                progress(done, total)
        return VerifyReport(len(wanted), missing, corrupt)

    def stats(self, index: Index) -> IndexStats:
        """Logical size of an image vs the stored (compressed) bytes of its unique chunks."""
        sizes: dict[bytes, int] = {}
        for _start, length, chunk_id in index.chunks():
            sizes.setdefault(chunk_id, length)
        stored = sum(self.chunks.stored_size(i) or 0 for i in sizes)
        return IndexStats(index.size, len(index), len(sizes), sum(sizes.values()), stored)

    def shared(self, index: Index, base: Index) -> SharedStats:
        """How much of ``index`` (a customized image) is already in ``base``."""
        base_ids = base.unique_ids()
        shared = 0
        own: dict[bytes, int] = {}
        for _start, length, chunk_id in index.chunks():
            if chunk_id in base_ids:
                shared += length
            else:
                own.setdefault(chunk_id, length)
        stored = sum(self.chunks.stored_size(i) or 0 for i in own)
        return SharedStats(index.size, shared, len(own), stored)
