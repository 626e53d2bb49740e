"""Import then extract: byte for byte, deduplicated, seeded, with the figures right."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.imagestore import (
    ChunkMissing,
    ChunkSizes,
    ChunkStore,
    Digest,
    ImageStore,
    Index,
    Seed,
    StoreError,
    extract,
    missing_chunks,
)
from tests.imagestore.conftest import MiB, derive, random_bytes

Write = Callable[[str, bytes], Path]


class CountingSource:
    """The store, counting what extraction fetches from it."""

    def __init__(self, store: ChunkStore) -> None:
        self.store = store
        self.fetched: list[bytes] = []

    def get(self, chunk_id: bytes, *, digest: Digest, max_size: int = 1 << 27) -> bytes:
        self.fetched.append(chunk_id)
        return self.store.get(chunk_id, digest=digest, max_size=max_size)


def _stored_files(store: ImageStore) -> int:
    return sum(1 for _ in store.chunks.ids())


@pytest.mark.parametrize("digest", list(Digest))
def test_random_bytes_come_back_byte_for_byte(tmp_path: Path, write: Write, digest: Digest) -> None:
    data = random_bytes(12 * MiB + 12345, 10)
    with ImageStore(tmp_path / "images", digest=digest) as s:
        s.import_file("pc-high-2026.1", write("a.img", data))
        index = s.index("pc-high-2026.1")
        assert index.digest is digest
        report = extract(index, s.chunks, tmp_path / "out.img")
    assert (tmp_path / "out.img").read_bytes() == data
    assert report.bytes_from_source == len(data)


@pytest.mark.parametrize("size", [0, 1, 1000, 16 * 1024 - 1])
def test_empty_and_tiny_files_round_trip(
    store: ImageStore, write: Write, tmp_path: Path, size: int
) -> None:
    data = random_bytes(size, size)
    store.import_file("tiny", write("t.img", data))
    extract(store.index("tiny"), store.chunks, tmp_path / "out.img")
    assert (tmp_path / "out.img").read_bytes() == data
    assert len(store.index("tiny")) == (1 if size else 0)


def test_large_zero_runs_are_stored_once_and_extracted_as_holes(
    store: ImageStore, write: Write, tmp_path: Path
) -> None:
    data = random_bytes(MiB, 11) + bytes(24 * MiB) + random_bytes(MiB, 12) + bytes(8 * MiB)
    report = store.import_file("zeros", write("z.img", data))
    stats = store.stats(store.index("zeros"))
    assert report.zero_bytes >= 31 * MiB
    # The zeros cost one chunk file of a few hundred bytes.
    assert stats.stored_bytes < 2 * MiB + 64 * 1024
    out = tmp_path / "out.img"
    extracted = extract(store.index("zeros"), store.chunks, out)
    assert out.read_bytes() == data
    assert extracted.bytes_zero >= 31 * MiB
    assert extracted.bytes_from_source < 3 * MiB
    assert out.stat().st_blocks * 512 < 8 * MiB  # holes, not written zeros


def test_a_derivative_stores_only_the_chunks_its_base_lacks(
    store: ImageStore, write: Write
) -> None:
    base = random_bytes(16 * MiB, 13)
    custom = derive(base, fraction=0.05, seed=14)
    store.import_file("base", write("base.img", base))
    before = set(store.chunks.ids())
    report = store.import_file("custom", write("custom.img", custom))
    added = set(store.chunks.ids()) - before
    base_ids = store.index("base").unique_ids()
    custom_ids = store.index("custom").unique_ids()
    assert added == custom_ids - base_ids
    assert report.new_chunks == len(added)
    shared = store.shared(store.index("custom"), store.index("base"))
    assert shared.own_unique_chunks == len(added)
    # ~5% rewritten touches a few chunks per patch: most of the image is shared.
    assert shared.shared_logical_bytes > 0.7 * len(custom)
    assert shared.own_stored_bytes == sum(store.chunks.stored_size(i) or 0 for i in added)


OTHER_SIZES = ChunkSizes(16 * 1024, 64 * 1024, 256 * 1024)


def test_a_store_cuts_new_images_as_its_images_were_cut_so_they_share_chunks(
    tmp_path: Path, write: Write
) -> None:
    base = random_bytes(8 * MiB, 21)
    custom = bytearray(base)
    custom[4 * MiB : 4 * MiB + 4096] = random_bytes(4096, 22)
    with ImageStore(tmp_path / "old", sizes=OTHER_SIZES) as old:
        old.import_file("base", write("base.img", base))
    assert ChunkSizes() != OTHER_SIZES

    with ImageStore(tmp_path / "old") as reopened:
        assert reopened.sizes == OTHER_SIZES
        report = reopened.import_file("custom", write("custom.img", bytes(custom)))
        assert reopened.index("custom").sizes == OTHER_SIZES
        # The 4 KiB change costs the chunks around it, not a second copy.
        assert report.new_chunks <= 3 and report.new_stored_bytes <= 3 * OTHER_SIZES.max + 1024
    with ImageStore(tmp_path / "new") as new:
        assert new.sizes == ChunkSizes()


def test_a_store_learns_its_sizes_past_an_index_it_cannot_read(
    tmp_path: Path, write: Write
) -> None:
    with ImageStore(tmp_path / "images", sizes=OTHER_SIZES) as made:
        made.import_file("zz-good", write("good.img", random_bytes(MiB, 23)))
    (tmp_path / "images" / "indexes" / "aa-bad.caibx").write_bytes(b"not an index")

    with ImageStore(tmp_path / "images") as reopened:
        assert reopened.sizes == OTHER_SIZES


def test_a_store_made_with_sha256_goes_on_naming_new_chunks_with_it(
    tmp_path: Path, write: Write
) -> None:
    path = write("a.img", random_bytes(MiB, 24))
    with ImageStore(tmp_path / "images", digest=Digest.SHA256) as made:
        made.import_file("a", path)
    with ImageStore(tmp_path / "images") as reopened:
        assert reopened.digest is Digest.SHA256
        assert reopened.import_file("again", path).new_chunks == 0
        assert reopened.index("again").digest is Digest.SHA256
    with ImageStore(tmp_path / "new") as new:
        assert new.digest is Digest.SHA512_256


def test_importing_the_same_image_twice_writes_nothing_new(store: ImageStore, write: Write) -> None:
    path = write("a.img", random_bytes(4 * MiB, 15))
    store.import_file("a", path)
    again = store.import_file("a2", path)
    assert (again.new_chunks, again.new_stored_bytes) == (0, 0)


def test_an_image_name_is_not_overwritten_unless_asked(store: ImageStore, write: Write) -> None:
    store.import_file("a", write("a.img", b"one" * 1000))
    with pytest.raises(StoreError, match="already"):
        store.import_file("a", write("b.img", b"two" * 1000))
    store.import_file("a", write("b.img", b"two" * 1000), replace=True)
    assert store.index("a").size == 3000


@pytest.mark.parametrize("seed_indexed", [False, True])
def test_a_seeded_extraction_fetches_only_the_chunks_the_seed_lacks(
    store: ImageStore, write: Write, tmp_path: Path, seed_indexed: bool
) -> None:
    base = random_bytes(16 * MiB, 16)
    custom = derive(base, fraction=0.05, seed=17)
    base_path = write("base.img", base)
    store.import_file("base", base_path)
    store.import_file("custom", write("custom.img", custom))
    index = store.index("custom")
    seed = Seed(base_path, store.make_index(base_path) if seed_indexed else None)

    source = CountingSource(store.chunks)
    report = extract(index, source, tmp_path / "out.img", seed=seed)

    assert (tmp_path / "out.img").read_bytes() == custom
    lacking = index.unique_ids() - store.index("base").unique_ids()
    assert set(source.fetched) == lacking == missing_chunks(index, seed)
    assert len(source.fetched) == len(lacking)  # each fetched once
    assert report.bytes_from_seed + report.bytes_from_source + report.bytes_repeated == len(custom)
    assert report.bytes_from_source < 0.3 * len(custom)


def test_a_seed_that_changed_falls_back_to_the_store(
    store: ImageStore, write: Write, tmp_path: Path
) -> None:
    base = random_bytes(8 * MiB, 18)
    base_path = write("base.img", base)
    store.import_file("base", base_path)
    stale = Seed(base_path, store.make_index(base_path))
    base_path.write_bytes(random_bytes(8 * MiB, 19))  # the client's disk moved on

    report = extract(store.index("base"), store.chunks, tmp_path / "out.img", seed=stale)
    assert (tmp_path / "out.img").read_bytes() == base
    assert report.bytes_from_seed == 0
    assert report.seed_mismatches == len(store.index("base"))


def test_a_missing_chunk_fails_extraction_and_leaves_no_file(
    store: ImageStore, write: Write, tmp_path: Path
) -> None:
    store.import_file("a", write("a.img", random_bytes(4 * MiB, 20)))
    index = store.index("a")
    store.chunks.path(index.chunk_id(3)).unlink()
    with pytest.raises(ChunkMissing, match=index.chunk_id(3).hex()):
        extract(index, store.chunks, tmp_path / "out.img")
    assert not (tmp_path / "out.img").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


def test_stats_count_logical_and_unique_stored_bytes(store: ImageStore, write: Write) -> None:
    block = random_bytes(2 * MiB, 21)
    store.import_file("twice", write("t.img", block + block))
    stats = store.stats(store.index("twice"))
    assert stats.logical_bytes == 4 * MiB
    assert stats.unique_logical_bytes < 2 * MiB + 300 * 1024
    assert stats.unique_chunks < stats.chunks
    assert stats.stored_bytes == sum(
        store.chunks.stored_size(i) or 0 for i in store.index("twice").unique_ids()
    )


def test_the_index_read_back_is_the_index_written(store: ImageStore, write: Write) -> None:
    store.import_file("a", write("a.img", random_bytes(3 * MiB, 22)))
    index = store.index("a")
    again = Index(digest=index.digest, sizes=index.sizes)
    for _, length, chunk_id in index.chunks():
        again.append(chunk_id, length)
    assert again.encode() == store.index_path("a").read_bytes()
    assert store.names() == ["a"]


def test_a_chunk_of_another_length_than_the_index_says_is_refused(
    store: ImageStore, write: Write, tmp_path: Path
) -> None:
    store.import_file("a", write("a.img", random_bytes(MiB, 23)))
    good = store.index("a")
    lying = Index(digest=good.digest, sizes=good.sizes)
    for _, length, chunk_id in good.chunks():
        lying.append(chunk_id, length - 1)
    with pytest.raises(StoreError, match="the index says"):
        extract(lying, store.chunks, tmp_path / "out.img")
    assert not (tmp_path / "out.img").exists()
