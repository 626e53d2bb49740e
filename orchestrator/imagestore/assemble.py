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
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from orchestrator.imagestore import chunker, names
from orchestrator.imagestore.caibx import Index
from orchestrator.imagestore.errors import StoreError
from orchestrator.imagestore.store import TEMP_PREFIX, ChunkSource, _fsync_dir


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
