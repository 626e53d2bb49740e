"""Content-defined chunking of a file, streamed in blocks, in compiled code.

The cut points come from FastCDC in the ``fastcdc`` package's Cython module
(``fastcdc.fastcdc_cy``); the chunk ids from hashlib (OpenSSL). The package
falls back to a pure-Python chunker 50x slower when its compiled module is
missing: this module refuses to chunk then (ImportError at the first chunk),
rather than run an import of a 20 GiB image at a few MiB/s.

A file is read through one reusable buffer (``block`` bytes, 8 MiB by
default), never whole: a cut is decided only while at least ``max`` bytes
lie ahead in the buffer (or the file has ended), so the chunks are exactly
those of FastCDC over the whole file, whatever the block size.

Zero runs: a chunk starting where ``max`` zero bytes follow is always the
same chunk (FastCDC's cut depends only on the bytes from the chunk's start),
so it is recognised with one ``memcmp`` and its id taken from a cache instead
of scanning and hashing it: a sparse or zero-filled region costs a memory
comparison.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

from orchestrator.imagestore.caibx import ChunkSizes, Digest
from orchestrator.imagestore.errors import StoreError

COMPILED_MODULE = "fastcdc.fastcdc_cy"


def _compiled_fastcdc() -> Callable[..., Iterator[Any]]:
    try:
        module = importlib.import_module(COMPILED_MODULE)
    except ImportError as exc:
        raise ImportError(
            f"{COMPILED_MODULE} (the compiled FastCDC chunker) cannot be imported: "
            "reinstall the fastcdc package with its binary wheel; the pure-Python "
            "fallback is too slow for disk images"
        ) from exc
    path = getattr(module, "__file__", "") or ""
    if path.endswith(".py"):
        raise ImportError(f"{COMPILED_MODULE} at {path} is Python source, not a compiled module")
    compiled: Callable[..., Iterator[Any]] = module.fastcdc_cy
    return compiled


@functools.cache
def compiled() -> Callable[..., Iterator[Any]]:
    """The compiled FastCDC function, loaded at the first chunking: an import with
    nothing to chunk needs no chunker (a pull agent with its seed's saved index,
    on a client where the fastcdc package has no binary wheel).

    Raises: ImportError: no compiled module; the pure-Python one is never used.
    """
    return _compiled_fastcdc()


DEFAULT_BLOCK = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk: where it is in the file, its data (a view valid until the next chunk)."""

    offset: int
    data: memoryview
    id: bytes
    zero: bool

    @property
    def length(self) -> int:
        return len(self.data)


class _ZeroChunks:
    """The ids of all-zero chunks by length, computed once each."""

    def __init__(self, digest: Digest, sizes: ChunkSizes) -> None:
        self.hash = digest.hasher()
        self.zeros = bytes(sizes.max)
        self._ids: dict[int, bytes] = {}
        first = next(compiled()(self.zeros, sizes.min, sizes.avg, sizes.max))
        # Where FastCDC cuts a run of at least `max` zero bytes.
        self.run_cut: int = first.length

    def id(self, length: int) -> bytes:
        found = self._ids.get(length)
        if found is None:
            found = self._ids[length] = self.hash(memoryview(self.zeros)[:length])
        return found


_SPLIT_BYTES = 1024 * 1024


@functools.cache
def _helpers() -> tuple[ThreadPoolExecutor | None, int]:
    """Threads that hash beside the caller, and how many; none on a single core."""
    spare = min((os.cpu_count() or 1) - 1, 3)
    if spare < 1:
        return None, 0
    return ThreadPoolExecutor(max_workers=spare, thread_name_prefix="chunk-hash"), spare


def _ids(hash_: Callable[[memoryview], bytes], pieces: list[memoryview]) -> list[bytes]:
    """The ids of ``pieces``, hashed on every core: hashlib lets go of the GIL
    while it hashes, and hashing is two thirds of the chunker's time."""
    helpers, spare = _helpers()
    total = sum(len(p) for p in pieces)
    if helpers is None or total < _SPLIT_BYTES:
        return [hash_(p) for p in pieces]
    parts = spare + 1
    # Split by bytes, not count, so each thread hashes about as much.
    bounds = [0]
    running, share = 0, total / parts
    for i, p in enumerate(pieces):
        running += len(p)
        if running >= share * len(bounds) and len(bounds) < parts:
            bounds.append(i + 1)
    bounds.append(len(pieces))
    groups = [pieces[a:b] for a, b in itertools.pairwise(bounds)]

    def hash_all(group: list[memoryview]) -> list[bytes]:
        return [hash_(p) for p in group]

    futures = [helpers.submit(hash_all, g) for g in groups[1:]]
    ids = hash_all(groups[0])
    for future in futures:
        ids.extend(future.result())
    return ids


def zero_chunk_id(digest: Digest, length: int) -> bytes:
    """The id of a chunk of ``length`` zero bytes."""
    return digest.hasher()(bytes(length))


def chunks(
    stream: BinaryIO,
    *,
    sizes: ChunkSizes | None = None,
    digest: Digest = Digest.SHA512_256,
    block: int = DEFAULT_BLOCK,
) -> Iterator[Chunk]:
    """Split a binary stream into content-defined chunks, in order.

    Each chunk's ``data`` is a view into the reading buffer: use or copy it
    before asking for the next chunk.

    Raises:
        StoreError: the sizes are outside what FastCDC accepts, or the stream
            could not be read.
    """
    sizes = sizes or ChunkSizes()
    cmin, cavg, cmax = sizes.min, sizes.avg, sizes.max
    if cmin < 64 or cavg < 256 or cmax < 1024:
        raise StoreError(
            f"chunk sizes {cmin}/{cavg}/{cmax} are below FastCDC's floor (64/256/1024)"
        )
    cut = compiled()
    block = max(block, 4 * cmax)
    hash_ = digest.hasher()
    zero = _ZeroChunks(digest, sizes)
    zeros, run_cut = zero.zeros, zero.run_cut
    buf = bytearray(block)
    view = memoryview(buf)
    start = 0  # first byte in buf not yet cut into a chunk
    end = 0  # end of the data read into buf
    offset = 0  # file offset of buf[start]
    eof = False
    readinto = stream.readinto  # type: ignore[attr-defined]
    try:
        while True:
            if not eof and end - start < cmax:
                remaining = end - start
                if start:
                    buf[:remaining] = view[start:end]
                start, end = 0, remaining
                while end < block:
                    n = readinto(view[end:])
                    if not n:
                        eof = True
                        break
                    end += n
            if start >= end:
                return
            if buf[start] == 0 and end - start >= cmax and buf.startswith(zeros, start):
                yield Chunk(offset, view[start : start + run_cut], zero.id(run_cut), True)
                start += run_cut
                offset += run_cut
                continue
            avail = end - start
            # A cut is final only with max bytes ahead of the chunk's start (or at EOF).
            last_start = avail if eof else avail - cmax
            consumed = avail
            offsets: list[int] = []
            pieces: list[memoryview] = []
            for c in cut(view[start:end], cmin, cavg, cmax):
                rel = c.offset
                at = start + rel
                if rel > last_start or (
                    rel and buf[at] == 0 and end - at >= cmax and buf.startswith(zeros, at)
                ):
                    consumed = rel
                    break
                offsets.append(offset + rel)
                pieces.append(view[at : at + c.length])
            # The buffer is not refilled before every chunk of this block is yielded.
            for at, data, chunk_id in zip(offsets, pieces, _ids(hash_, pieces), strict=True):
                yield Chunk(at, data, chunk_id, False)
            start += consumed
            offset += consumed
    except OSError as exc:
        raise StoreError(f"cannot read the file being chunked: {exc}") from exc


def file_size(stream: BinaryIO) -> int:
    return os.fstat(stream.fileno()).st_size
