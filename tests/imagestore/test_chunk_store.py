"""Stored chunks are checked on every read; verify finds the missing and the corrupt."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from orchestrator.imagestore import ChunkCorrupt, ChunkMissing, Digest, ImageStore
from orchestrator.imagestore.errors import SourceChanged
from tests.imagestore.conftest import MiB, random_bytes

Write = Callable[[str, bytes], Path]
SHA = Digest.SHA512_256


def _one_chunk(store: ImageStore, data: bytes) -> bytes:
    chunk_id = SHA.hasher()(data)
    store.chunks.put(chunk_id, data, digest=SHA)
    return chunk_id


def test_a_chunk_is_named_by_the_digest_of_its_uncompressed_data(store: ImageStore) -> None:
    data = b"lab image " * 5000
    chunk_id = _one_chunk(store, data)
    path = store.chunks.path(chunk_id)
    assert path == store.root / "chunks" / chunk_id.hex()[:4] / f"{chunk_id.hex()}.cacnk"
    assert zstandard.ZstdDecompressor().decompress(path.read_bytes()) == data
    assert path.stat().st_size < len(data)
    assert store.chunks.get(chunk_id, digest=SHA) == data


def test_data_that_does_not_hash_to_the_id_is_never_stored(store: ImageStore) -> None:
    wrong = SHA.hasher()(b"something else")
    with pytest.raises(ChunkCorrupt, match="does not hash"):
        store.chunks.put(wrong, b"the real bytes", digest=SHA)
    assert not store.chunks.path(wrong).exists()
    assert list(store.chunks.ids()) == []


def test_a_flipped_byte_in_a_stored_chunk_is_detected(store: ImageStore) -> None:
    chunk_id = _one_chunk(store, random_bytes(60_000, 30))
    path = store.chunks.path(chunk_id)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(ChunkCorrupt, match=chunk_id.hex()):
        store.chunks.get(chunk_id, digest=SHA)


def test_a_chunk_swapped_for_other_valid_data_is_detected(store: ImageStore) -> None:
    chunk_id = _one_chunk(store, b"a" * 70_000)
    store.chunks.path(chunk_id).write_bytes(zstandard.ZstdCompressor().compress(b"b" * 70_000))
    with pytest.raises(ChunkCorrupt, match="does not hash to its id"):
        store.chunks.get(chunk_id, digest=SHA)


def test_a_chunk_that_inflates_past_the_maximum_is_refused_without_inflating_it(
    store: ImageStore,
) -> None:
    chunk_id = _one_chunk(store, b"x" * 1000)
    bomb = zstandard.ZstdCompressor().compress(bytes(64 * MiB))
    store.chunks.path(chunk_id).write_bytes(bomb)
    with pytest.raises(ChunkCorrupt, match="more than 262144 bytes"):
        store.chunks.get(chunk_id, digest=SHA, max_size=262144)


def test_garbage_in_place_of_a_chunk_is_corrupt_not_a_crash(store: ImageStore) -> None:
    chunk_id = _one_chunk(store, b"y" * 1000)
    store.chunks.path(chunk_id).write_bytes(b"not zstd at all")
    with pytest.raises(ChunkCorrupt, match="does not decompress"):
        store.chunks.get(chunk_id, digest=SHA)


def test_an_absent_chunk_is_missing(store: ImageStore) -> None:
    with pytest.raises(ChunkMissing):
        store.chunks.get(b"\x07" * 32, digest=SHA)


def test_verify_reports_the_missing_and_the_corrupt_chunks_of_the_indexes(
    store: ImageStore, write: Write
) -> None:
    store.import_file("a", write("a.img", random_bytes(4 * MiB, 31)))
    store.import_file("b", write("b.img", random_bytes(2 * MiB, 32)))
    assert store.verify().ok
    index = store.index("a")
    gone, bad = index.chunk_id(0), index.chunk_id(5)
    store.chunks.path(gone).unlink()
    path = store.chunks.path(bad)
    path.write_bytes(path.read_bytes()[:-10])

    report = store.verify()
    assert report.missing == [gone.hex()]
    assert [c for c, _ in report.corrupt] == [bad.hex()]
    assert report.checked == len(index.unique_ids() | store.index("b").unique_ids())
    assert store.verify([store.index("b")]).ok


def test_an_import_tells_its_progress_in_steps_up_to_the_whole_file(
    store: ImageStore, write: Write
) -> None:
    told: list[int] = []
    size = 20 * MiB
    store.import_file("a", write("a.img", random_bytes(size, 41)), progress=told.append)

    assert told == sorted(told) and told[-1] == size
    # About one call per step of 8 MiB, not one per chunk.
    assert 2 <= len(told) <= 4


def test_an_import_indexes_bytes_only_when_they_hash_to_the_sha256_it_expects(
    store: ImageStore, write: Write
) -> None:
    data = random_bytes(3 * MiB, 43)
    path = write("a.img", data)

    with pytest.raises(SourceChanged, match="changed while it was imported"):
        store.import_file("a", path, expect_sha256=hashlib.sha256(b"other bytes").hexdigest())
    assert not store.has_index("a")

    made = store.import_file("a", path, expect_sha256=hashlib.sha256(data).hexdigest())
    assert made.size == len(data) and store.has_index("a")


def test_verify_tells_how_many_chunks_it_has_checked_of_all(
    store: ImageStore, write: Write
) -> None:
    store.import_file("a", write("a.img", random_bytes(12 * MiB, 42)))
    told: list[tuple[int, int]] = []

    report = store.verify(progress=lambda done, total: told.append((done, total)))

    assert told[0] == (0, report.checked) and told[-1] == (report.checked, report.checked)
    assert [d for d, _ in told] == sorted(d for d, _ in told)
