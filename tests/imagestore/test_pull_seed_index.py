"""A pull given its seed's index (as the previous pull saved it): the seed is not
chunked again, yet every seed chunk is re-hashed, so a seed changed since, or an
index that does not fit it, still gives the right image; the pulled image's
index is saved for the next pull; a killed pull's partial file is cleared."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from orchestrator.imagestore import Seed, chunker, fetch, missing_chunks
from orchestrator.imagestore.assemble import (
    JOURNAL_SUFFIX,
    PARTIAL_PREFIX,
    PartialOutput,
    remove_stale_partials,
)
from orchestrator.imagestore.errors import StoreError
from orchestrator.imagestore.point import PointServer
from orchestrator.imagestore.pull import main as pull_main
from tests.imagestore import test_pull
from tests.imagestore.pointkit import TODAY, TRUSTED
from tests.imagestore.test_pull import (
    BASE,
    LAB,
    Point,
    SlowerPoint,
    _cli_args,
    _pull,
    _signed,
    kill_pull_after_first_chunk,
    write_manifest,
)

# The pull tests' fixtures: a point's root with the base and the lab image, served.
template = test_pull.template
images = test_pull.images
point = test_pull.point


def _saved_base_index(images: Point) -> Path:
    """What the pull that brought the base would have saved: its signed index bytes."""
    saved = images.client / "current.caibx"
    saved.write_bytes((images.root / "indexes" / f"{BASE}.caibx").read_bytes())
    return saved


def _no_chunking(path: object, like: object) -> fetch.Index:
    raise AssertionError("the seed was chunked although its index was given")


def test_with_a_good_seed_index_the_seed_is_not_chunked_and_the_same_chunks_come(
    point: PointServer, images: Point, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunked = _pull(point.url, images, cache_dir=images.client / "cache-a")
    chunked_image = (images.client / "lab.img").read_bytes()
    (images.client / "lab.img").unlink()

    monkeypatch.setattr(fetch, "_chunk_seed", _no_chunking)
    indexed = _pull(
        point.url, images, cache_dir=images.client / "cache-b", seed_index=_saved_base_index(images)
    )

    assert (chunked.seed_by, indexed.seed_by) == ("chunked", "index")
    assert (images.client / "lab.img").read_bytes() == chunked_image == images.lab.path.read_bytes()
    assert indexed.chunks_fetched == chunked.chunks_fetched > 0
    assert indexed.bytes_from_seed == chunked.bytes_from_seed
    assert indexed.extract.seed_mismatches == 0


def _no_chunker() -> object:
    raise ImportError("fastcdc.fastcdc_cy (the compiled FastCDC chunker) cannot be imported")


def test_without_a_chunker_the_seed_index_still_seeds_and_a_seed_without_one_is_pulled_whole(
    point: PointServer,
    images: Point,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # An agent bundled for a client platform the fastcdc package has no wheel for.
    monkeypatch.setattr(chunker, "compiled", _no_chunker)
    caplog.set_level(logging.WARNING, logger="orchestrator.imagestore.fetch")

    indexed = _pull(point.url, images, seed_index=_saved_base_index(images))

    assert indexed.seed_by == "index"
    assert indexed.chunks_fetched == len(_lacking(images)) == point.counts["chunk"]
    assert (images.client / "lab.img").read_bytes() == images.lab.path.read_bytes()
    (images.client / "lab.img").unlink()

    whole = _pull(point.url, images)

    assert whole.seed_by == "none" and whole.bytes_from_seed == 0
    assert "current.img not used: it has no usable index and fastcdc" in caplog.text
    assert whole.chunks_fetched == len(missing_chunks(images.lab.index, None))
    assert point.counts["chunk"] == indexed.chunks_fetched + whole.chunks_fetched
    assert (images.client / "lab.img").read_bytes() == images.lab.path.read_bytes()


def _chunk_at(images: Point, n: int) -> tuple[int, int]:
    start, length, _ = list(images.base.index.chunks())[n]
    return start, length


def test_a_seed_changed_in_place_after_its_index_was_saved_still_gives_the_right_image(
    point: PointServer, images: Point, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = _saved_base_index(images)
    seed = images.client / "current.img"
    # Same size, different bytes in the middle of one chunk the derivative shares.
    shared = images.lab.index.unique_ids()
    n = next(i for i in range(5, len(images.base.index)) if images.base.index.chunk_id(i) in shared)
    start, length = _chunk_at(images, n)
    with open(seed, "r+b") as f:
        f.seek(start + length // 2)
        f.write(b"changed since the index was saved")
    expected_fetch = len(_lacking(images)) + 1
    monkeypatch.setattr(fetch, "_chunk_seed", _no_chunking)

    report = _pull(point.url, images, seed_index=saved)

    assert report.seed_by == "index"
    assert (images.client / "lab.img").read_bytes() == images.lab.path.read_bytes()
    assert report.extract.seed_mismatches == 1
    assert report.chunks_fetched == expected_fetch == point.counts["chunk"]


def _lacking(images: Point) -> set[bytes]:
    return images.lab.index.unique_ids() - images.base.index.unique_ids()


def test_a_seed_index_of_another_size_is_set_aside_and_the_seed_chunked(
    point: PointServer, images: Point, caplog: pytest.LogCaptureFixture
) -> None:
    saved = _saved_base_index(images)
    with open(images.client / "current.img", "ab") as f:
        f.write(b"grown since")
    caplog.set_level(logging.INFO, logger="orchestrator.imagestore.fetch")

    report = _pull(point.url, images, seed_index=saved)

    assert report.seed_by == "chunked"
    assert "not used: it describes" in caplog.text
    assert (images.client / "lab.img").read_bytes() == images.lab.path.read_bytes()
    # What chunking the grown seed finds lacking (its last chunk changed too).
    lacking = missing_chunks(images.lab.index, Seed(images.client / "current.img"))
    assert report.chunks_fetched == len(lacking) == len(_lacking(images)) + 1


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[: len(raw) - 7],
        # The top byte of the second chunk's end offset: a chunk past the maximum.
        lambda raw: raw[:111] + bytes([raw[111] ^ 0x01]) + raw[112:],
        lambda raw: b"not an index at all",
        lambda raw: None,
    ],
    ids=["truncated", "bit flipped", "garbage", "absent"],
)
def test_a_malformed_or_absent_seed_index_falls_back_to_chunking_the_seed(
    point: PointServer,
    images: Point,
    caplog: pytest.LogCaptureFixture,
    damage: object,
) -> None:
    saved = _saved_base_index(images)
    broken = damage(saved.read_bytes())  # type: ignore[operator]
    if broken is None:
        saved.unlink()
    else:
        saved.write_bytes(broken)
    caplog.set_level(logging.INFO, logger="orchestrator.imagestore.fetch")

    report = _pull(point.url, images, seed_index=saved)

    assert report.seed_by == "chunked"
    assert f"seed index {saved} not used" in caplog.text
    assert (images.client / "lab.img").read_bytes() == images.lab.path.read_bytes()
    assert report.chunks_fetched == len(_lacking(images))


def test_save_index_keeps_the_signed_index_and_the_next_pull_uses_it(
    point: PointServer, images: Point, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = images.client / "lab.caibx"
    assert pull_main(_cli_args(point.url, images, **{"--save-index": str(saved)}), today=TODAY) == 0

    assert hashlib.sha256(saved.read_bytes()).hexdigest() == images.lab.manifest.index_sha256
    assert not [p for p in images.client.iterdir() if p.name.startswith(".")]

    # The next pull of the same image over it, the saved index as the seed's.
    monkeypatch.setattr(fetch, "_chunk_seed", _no_chunking)
    again = images.client / "again.img"
    report = fetch.pull(
        point.url,
        LAB,
        again,
        trusted_keys=TRUSTED,
        kind="custom_image",
        scope="101",
        image_name="lab",
        today=TODAY,
        seed=images.client / "lab.img",
        seed_index=saved,
        cache_dir=images.client / "fresh-cache",
    )
    assert report.seed_by == "index"
    assert report.chunks_fetched == 0
    assert again.read_bytes() == images.lab.path.read_bytes()


def test_save_index_is_not_written_when_the_pull_fails(point: PointServer, images: Point) -> None:
    saved = images.client / "lab.caibx"
    for chunk_id in _lacking(images):
        images.chunk_file(chunk_id).unlink()
    with pytest.raises(StoreError):
        _pull(point.url, images, save_index=saved)
    assert not saved.exists()
    assert not (images.client / "lab.img").exists()


def _partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(PARTIAL_PREFIX))


def test_a_pull_killed_mid_way_leaves_a_partial_file_the_next_pull_takes_up(
    images: Point,
) -> None:
    write_manifest(images.root, LAB, _signed(images, sunset=None))
    with SlowerPoint(images.root) as slow:
        kill_pull_after_first_chunk(slow.url, images)
        left = _partials(images.client)
        assert len(left) == 2
        assert left[0].startswith(f"{PARTIAL_PREFIX}lab.img.resume-")
        assert left[1] == left[0] + JOURNAL_SUFFIX

        _pull(slow.url, images, seed=None)

    assert _partials(images.client) == []
    assert (images.client / "lab.img").read_bytes() == images.lab.path.read_bytes()


def test_a_killed_pulls_partial_file_is_removed_by_a_pull_of_another_image_to_that_file(
    images: Point,
) -> None:
    write_manifest(images.root, LAB, _signed(images, sunset=None))
    with SlowerPoint(images.root) as slow:
        kill_pull_after_first_chunk(slow.url, images)
        left = _partials(images.client)
        assert len(left) == 2

        report = fetch.pull(
            slow.url,
            BASE,
            images.client / "lab.img",
            trusted_keys=TRUSTED,
            kind="base_image",
            scope="district",
            image_name="pc-high",
            today=TODAY,
            seed=images.client / "current.img",
        )

    assert report.chunks_resumed == 0
    assert _partials(images.client) == []
    assert (images.client / "lab.img").read_bytes() == images.base.path.read_bytes()


def test_a_resumable_partial_file_held_by_a_live_writer_is_neither_shared_nor_removed(
    tmp_path: Path,
) -> None:
    out = tmp_path / "lab.img"
    key = "ab" * 16
    with PartialOutput(out, 1024, resume_key=key) as live:
        assert live.resumable and live.path is not None
        live.write(b"live data", 0)
        with PartialOutput(out, 1024, resume_key=key) as other:
            assert not other.resumable
            assert other.path is not None and other.path != live.path
            assert remove_stale_partials(out) == []
        assert live.path.read_bytes().startswith(b"live data")
        assert live.journal_path is not None and live.journal_path.exists()
    # Left by a writer that did not finish: kept for the next one with the key...
    assert _partials(tmp_path) == [live.path.name, live.path.name + JOURNAL_SUFFIX]
    # ...and gone, with its journal, once no writer holds it and a clean-up runs.
    assert sorted(remove_stale_partials(out)) == sorted(
        [live.path, live.path.with_name(live.path.name + JOURNAL_SUFFIX)]
    )
    assert _partials(tmp_path) == []


def test_a_torn_journal_record_is_dropped_and_a_journal_of_another_key_ignored(
    tmp_path: Path,
) -> None:
    out = tmp_path / "lab.img"
    key = "cd" * 16
    ids = [bytes([n]) * 32 for n in range(3)]
    with PartialOutput(out, 4096, resume_key=key) as first:
        first.write(b"x" * 4096, 0)
        first.record(ids[:2])
        assert first.journal_path is not None
        journal = first.journal_path
    with open(journal, "ab") as f:
        f.write(ids[2][:7])  # killed half way through a record
    with PartialOutput(out, 4096, resume_key=key) as again:
        assert again.journaled == ids[:2]
        assert again.read(0, 4) == b"xxxx"
        again.record(ids[2:])
    with PartialOutput(out, 4096, resume_key=key) as third:
        assert third.journaled == ids
    journal.write_bytes(journal.read_bytes().replace(key.encode(), b"ef" * 16))
    with PartialOutput(out, 4096, resume_key=key) as fresh:
        assert fresh.journaled == []
        assert fresh.read(0, 4) == b"\0\0\0\0"  # started afresh: holes again


def test_stale_partial_clean_up_takes_only_unlocked_files_of_its_own_naming(
    tmp_path: Path,
) -> None:
    out = tmp_path / "lab.img"
    stale = tmp_path / f"{PARTIAL_PREFIX}lab.img.abc_1234"
    stale.write_bytes(b"left by a killed pull")
    others = [
        tmp_path / f"{PARTIAL_PREFIX}other.img.abc_1234",  # another output's
        tmp_path / f"{PARTIAL_PREFIX}lab.img.abc_1234.keep",  # not the pattern
        tmp_path / ".tmp-abcd1234.partial",  # the store's own temporary files
        tmp_path / "lab.img.abc_1234",
    ]
    for path in others:
        path.write_bytes(b"not ours to remove")
    (tmp_path / f"{PARTIAL_PREFIX}lab.img.linkxxxx").symlink_to(others[0])
    with PartialOutput(out, 1024) as live:
        assert remove_stale_partials(out) == [stale]
        assert live.path is not None and live.path.exists()  # locked: in flight, kept
    assert not stale.exists()
    assert all(path.exists() for path in others)
    assert (tmp_path / f"{PARTIAL_PREFIX}lab.img.linkxxxx").is_symlink()
    assert not out.exists()
