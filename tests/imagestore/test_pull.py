"""A client pulling from its building's point on loopback: the manifest refused
before any chunk is asked for, only the chunks the seed lacks fetched, in
parallel, each checked; a killed pull leaves no image and resumes from its partial
output, re-hashing what it had recorded there."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from orchestrator.imagestore import (
    ChunkCorrupt,
    ChunkMissing,
    ImageStore,
    extract,
    missing_chunks,
)
from orchestrator.imagestore import manifest as mf
from orchestrator.imagestore.assemble import JOURNAL_MAGIC, JOURNAL_SUFFIX, PARTIAL_PREFIX
from orchestrator.imagestore.errors import NotStaged, PointUnavailable, StoreError
from orchestrator.imagestore.fetch import (
    HttpStore,
    PullReport,
    load_keys,
    pull,
    seed_index,
)
from orchestrator.imagestore.point import ABSENT, MAX_BATCH_IDS, PointServer
from orchestrator.imagestore.pull import main as pull_main
from tests.imagestore.conftest import MiB, derive, random_bytes
from tests.imagestore.pointkit import (
    KEY,
    TODAY,
    TRUSTED,
    Stored,
    publish,
    self_signed,
    write_manifest,
)

REPO = Path(__file__).resolve().parents[2]
LAB = "7-custom-image-lab-1.2"
BASE = "3-base-image-pc-high-2026.1"


@dataclasses.dataclass
class Point:
    root: Path
    base: Stored
    lab: Stored
    client: Path
    """The client's folder: its current image (the base) is ``client/current.img``."""

    def stored_size(self, chunk_id: bytes) -> int:
        h = chunk_id.hex()
        return (self.root / "chunks" / h[:4] / f"{h}.cacnk").stat().st_size

    def chunk_file(self, chunk_id: bytes) -> Path:
        h = chunk_id.hex()
        return self.root / "chunks" / h[:4] / f"{h}.cacnk"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Point:
    folder = tmp_path_factory.mktemp("template")
    system, tail = random_bytes(4 * MiB, 21), bytes(MiB) + random_bytes(MiB // 2, 22)
    base_bytes = system + tail
    # The building's changes: 3% of the system's bytes rewritten, the rest as it was.
    lab_bytes = derive(system, fraction=0.03, seed=23) + tail
    (folder / "client").mkdir()
    base_file = folder / "client" / "current.img"
    base_file.write_bytes(base_bytes)
    lab_file = folder / "lab.img"
    lab_file.write_bytes(lab_bytes)
    with ImageStore(folder / "point") as store:
        base = publish(
            store, BASE, base_file, kind="base_image", scope="district", manifest_name="pc-high"
        )
        lab = publish(store, LAB, lab_file)
    (folder / "point" / ".lock").unlink()
    return Point(folder / "point", base, lab, folder / "client")


@pytest.fixture
def images(template: Point, tmp_path: Path) -> Point:
    """A fresh copy of the template for each test, which may change it."""
    here = tmp_path / "t"
    shutil.copytree(template.root.parent, here, symlinks=True)

    def moved(stored: Stored) -> Stored:
        return dataclasses.replace(
            stored, path=here / stored.path.relative_to(template.root.parent)
        )

    return Point(here / "point", moved(template.base), moved(template.lab), here / "client")


@pytest.fixture
def point(images: Point) -> Iterator[PointServer]:
    with PointServer(images.root) as server:
        yield server


def _pull(url: str, images: Point, **kw: Any) -> PullReport:
    args: dict[str, Any] = {
        "trusted_keys": TRUSTED,
        "kind": "custom_image",
        "scope": "101",
        "image_name": "lab",
        "today": TODAY,
        "seed": images.client / "current.img",
        "cache_dir": images.client / "cache",
    }
    return pull(url, kw.pop("name", LAB), images.client / "lab.img", **(args | kw))


def test_a_derivative_pulled_over_its_base_downloads_only_the_chunks_the_base_lacks(
    point: PointServer, images: Point
) -> None:
    lacking = images.lab.index.unique_ids() - images.base.index.unique_ids()
    lacking_bytes = sum(images.stored_size(i) for i in lacking)
    index_bytes = (images.root / "indexes" / f"{LAB}.caibx").stat().st_size
    manifest_bytes = (images.root / "manifests" / f"{LAB}.json").stat().st_size

    report = _pull(point.url, images)

    assert (images.client / "lab.img").read_bytes() == images.lab.path.read_bytes()
    assert report.manifest == images.lab.manifest
    assert report.chunks_fetched == len(lacking) == point.counts["chunk"]
    assert report.fetch.bytes_downloaded == lacking_bytes
    assert report.bytes_downloaded == lacking_bytes + index_bytes + manifest_bytes
    assert report.bytes_downloaded < 0.2 * report.size
    assert (
        report.bytes_from_seed
        + report.bytes_from_cache
        + report.bytes_zero
        + (report.bytes_repeated)
        == report.size
    )
    assert report.bytes_from_seed > 0.8 * (report.size - report.bytes_zero)
    assert report.bytes_zero >= MiB // 2  # the zero run is neither fetched nor written


def test_without_a_seed_every_chunk_but_the_zeros_is_fetched(
    point: PointServer, images: Point
) -> None:
    report = _pull(point.url, images, seed=None)

    assert (images.client / "lab.img").read_bytes() == images.lab.path.read_bytes()
    needed = missing_chunks(images.lab.index, None)
    assert report.chunks_fetched == len(needed) == len(images.lab.index.unique_ids()) - 1
    assert report.fetch.bytes_downloaded == sum(images.stored_size(i) for i in needed)
    assert report.bytes_from_seed == 0


def test_an_image_can_be_pulled_over_the_seed_it_replaces(
    point: PointServer, images: Point
) -> None:
    current = images.client / "current.img"
    report = pull(
        point.url,
        LAB,
        current,
        trusted_keys=TRUSTED,
        kind="custom_image",
        scope="101",
        image_name="lab",
        today=TODAY,
        seed=current,
        cache_dir=images.client / "cache",
    )
    assert current.read_bytes() == images.lab.path.read_bytes()
    assert report.bytes_from_seed > 0.8 * (report.size - report.bytes_zero)
    assert sorted(p.name for p in images.client.iterdir()) == ["cache", "current.img"]


class SlowPoint(PointServer):
    """A point whose disk takes ``delay`` seconds per chunk, as a busy one might."""

    delay = 0.03

    def open_file(self, parts: Sequence[str]) -> int | None:
        if parts[0] == "chunks":
            time.sleep(self.delay)
        return super().open_file(parts)


def test_chunks_are_fetched_over_several_connections_at_once(images: Point) -> None:
    with SlowPoint(images.root) as slow:
        report = _pull(slow.url, images, seed=None, workers=8)
    sequential = report.chunks_fetched * SlowPoint.delay
    assert report.chunks_fetched > 50
    assert slow.peak_in_flight >= 6
    assert report.fetch.connections == 8
    assert report.fetch.seconds < sequential / 2


def _signed(images: Point, **changes: Any) -> bytes:
    return mf.sign(dataclasses.replace(images.lab.manifest, **changes), KEY).to_json()


def _tampered(images: Point) -> bytes:
    honest = mf.sign(images.lab.manifest, KEY)
    later = dataclasses.replace(images.lab.manifest, sunset=date(2040, 1, 1))
    forged = dataclasses.replace(honest, signed=later.canonical())
    return forged.to_json()


REFUSALS: dict[str, tuple[Callable[[Point], bytes], dict[str, Any], type[Exception]]] = {
    "tampered": (_tampered, {}, mf.Tampered),
    "unsigned": (
        lambda i: mf.sign(i.lab.manifest, Ed25519PrivateKey.generate()).to_json(),
        {},
        mf.Unsigned,
    ),
    "another building's": (lambda i: _signed(i, scope="102"), {}, mf.WrongImage),
    "another version": (lambda i: _signed(i), {"version": "1.3"}, mf.WrongImage),
    "replayed older": (
        lambda i: _signed(i, version="1.1"),
        {"installed_version": "1.2"},
        mf.Replayed,
    ),
    "sunset": (lambda i: _signed(i), {"today": date(2027, 6, 30)}, mf.Sunset),
    "not json": (lambda i: b"<html>captive portal</html>", {}, mf.Malformed),
    "huge": (lambda i: b" " * (mf.MAX_ENVELOPE + 1), {}, mf.Malformed),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_manifest_stops_the_pull_before_any_index_or_chunk_is_asked_for(
    point: PointServer, images: Point, case: str
) -> None:
    make, expect, error = REFUSALS[case]
    write_manifest(images.root, LAB, make(images))

    with pytest.raises(error):
        _pull(point.url, images, **expect)

    assert point.counts["manifest"] == 1
    assert point.counts["index"] == point.counts["chunk"] == 0
    assert not (images.client / "lab.img").exists()


def test_an_index_that_is_not_the_signed_one_is_refused_before_any_chunk(
    point: PointServer, images: Point
) -> None:
    swapped = images.root / "indexes" / f"{LAB}.caibx"
    swapped.write_bytes((images.root / "indexes" / f"{BASE}.caibx").read_bytes())
    with pytest.raises(mf.Tampered, match="not the signed"):
        _pull(point.url, images)
    swapped.write_bytes(swapped.read_bytes() * 2)
    with pytest.raises(mf.Tampered, match="bytes, not the signed"):
        _pull(point.url, images)
    assert point.counts["chunk"] == 0
    assert not (images.client / "lab.img").exists()


def test_an_image_not_staged_on_the_point_is_said_so(point: PointServer, images: Point) -> None:
    (images.root / "indexes" / f"{LAB}.caibx").unlink()
    with pytest.raises(NotStaged, match="holds no indexes/"):
        _pull(point.url, images)
    with pytest.raises(NotStaged, match="holds no manifests/"):
        _pull(point.url, images, name="9-custom-image-other-1.0")


def _lacking(images: Point) -> list[bytes]:
    return sorted(images.lab.index.unique_ids() - images.base.index.unique_ids())


@pytest.mark.parametrize(
    "corrupt",
    [
        # Another chunk's data under this chunk's name: a valid zstd frame, the wrong hash.
        lambda data: zstandard.ZstdCompressor().compress(b"other data" * 1000),
        lambda data: data[: len(data) // 2],
        lambda data: b"\x00" * len(data),
    ],
    ids=["other data", "truncated", "zeroed"],
)
def test_a_corrupt_chunk_on_the_point_is_refused_never_recorded_and_fetched_again(
    point: PointServer, images: Point, corrupt: Callable[[bytes], bytes]
) -> None:
    bad = _lacking(images)[0]
    file = images.chunk_file(bad)
    good = file.read_bytes()
    file.write_bytes(corrupt(good))

    with pytest.raises(ChunkCorrupt, match=bad.hex()):
        _pull(point.url, images)

    assert not (images.client / "lab.img").exists()
    recorded = journaled(images)
    assert bad not in recorded
    assert recorded  # the chunks checked before it were recorded, so are not fetched again
    file.write_bytes(good)
    asked_before = point.counts["chunk"]

    report = _pull(point.url, images)

    assert (images.client / "lab.img").read_bytes() == images.lab.path.read_bytes()
    assert report.chunks_resumed == len(set(recorded))
    assert report.chunks_fetched == len(_lacking(images)) - report.chunks_resumed
    assert point.counts["chunk"] == asked_before + report.chunks_fetched
    assert partial_files(images) == []


def partial_files(images: Point) -> list[str]:
    return sorted(p.name for p in images.client.iterdir() if p.name.startswith(PARTIAL_PREFIX))


def journaled(images: Point) -> list[bytes]:
    """The chunk ids recorded in the journal of the pull to ``client/lab.img`` left behind."""
    journals = list(images.client.glob(f"{PARTIAL_PREFIX}lab.img.resume-*{JOURNAL_SUFFIX}"))
    if not journals:
        return []
    (journal,) = journals
    data = journal.read_bytes()
    assert data.startswith(JOURNAL_MAGIC)
    body = data[data.index(b"\n", len(JOURNAL_MAGIC)) + 1 :]
    return [body[at : at + 32] for at in range(0, len(body) - len(body) % 32, 32)]


def test_fetched_chunks_are_not_written_to_the_cache_but_cached_ones_are_taken_from_it(
    point: PointServer, images: Point
) -> None:
    lacking = _lacking(images)
    kept = lacking[: len(lacking) // 2]
    with ImageStore(images.client / "cache") as cache:
        for chunk_id in kept:
            data = zstandard.ZstdDecompressor().decompress(images.chunk_file(chunk_id).read_bytes())
            cache.chunks.put(chunk_id, data, digest=images.lab.index.digest)

    report = _pull(point.url, images)

    assert (images.client / "lab.img").read_bytes() == images.lab.path.read_bytes()
    assert report.chunks_cached == len(kept)
    assert report.chunks_fetched == point.counts["chunk"] == len(lacking) - len(kept)
    with ImageStore(images.client / "cache") as cache:
        assert sorted(cache.chunks.ids()) == sorted(kept)


def test_a_chunk_missing_on_the_point_fails_the_pull_leaving_no_image(
    point: PointServer, images: Point
) -> None:
    images.chunk_file(_lacking(images)[-1]).unlink()
    with pytest.raises(ChunkMissing):
        _pull(point.url, images)
    assert not (images.client / "lab.img").exists()


class Interrupted(Exception):
    pass


def _interrupt_after_five_chunks(url: str, images: Point) -> None:
    """A pull with no seed stopped by its progress callback once five chunks came."""

    def stop_after_five(done: int, total: int, downloaded: int) -> None:
        if done >= 5:
            raise Interrupted

    with pytest.raises(Interrupted):
        _pull(url, images, seed=None, workers=2, progress=stop_after_five)


def test_an_interrupted_pull_leaves_no_image_and_the_next_fetches_only_the_rest(
    point: PointServer, images: Point
) -> None:
    _interrupt_after_five_chunks(point.url, images)
    assert not (images.client / "lab.img").exists()
    fetched_before = point.counts["chunk"]

    report = _pull(point.url, images, seed=None)

    needed = len(missing_chunks(images.lab.index, None))
    assert 5 <= report.chunks_resumed <= fetched_before
    assert report.chunks_cached == 0
    assert report.chunks_fetched == needed - report.chunks_resumed
    assert point.counts["chunk"] == fetched_before + report.chunks_fetched
    assert (images.client / "lab.img").read_bytes() == images.lab.path.read_bytes()
    assert partial_files(images) == []


def test_a_recorded_chunk_damaged_in_the_partial_output_is_fetched_again_on_resume(
    point: PointServer, images: Point
) -> None:
    _interrupt_after_five_chunks(point.url, images)
    recorded = journaled(images)
    assert len(recorded) >= 5
    (partial,) = [p for p in partial_files(images) if not p.endswith(JOURNAL_SUFFIX)]
    # The first recorded chunk's first place, as if the disk lost it: one byte flipped.
    damaged = recorded[0]
    start = next(s for s, _n, i in images.lab.index.chunks() if i == damaged)
    with open(images.client / partial, "r+b") as f:
        f.seek(start + 10)
        byte = f.read(1)
        f.seek(start + 10)
        f.write(bytes([byte[0] ^ 0xFF]))
    asked_before = point.counts["chunk"]

    report = _pull(point.url, images, seed=None)

    assert report.chunks_resumed == len(set(recorded)) - 1
    needed = len(missing_chunks(images.lab.index, None))
    assert report.chunks_fetched == needed - report.chunks_resumed
    assert point.counts["chunk"] == asked_before + report.chunks_fetched
    assert (images.client / "lab.img").read_bytes() == images.lab.path.read_bytes()


def _keys_file(folder: Path) -> Path:
    public = KEY.public_key()
    path = folder / "keys.txt"
    path.write_text(
        "# the district's keys, as 'orchestrator store keys' prints them\n"
        f"{mf.key_id(public)} ed25519 {public.public_bytes_raw().hex()}\n"
    )
    return path


def _cli_args(url: str, images: Point, **extra: str) -> list[str]:
    args = {
        "--point": url,
        "--image": LAB,
        "--out": str(images.client / "lab.img"),
        "--seed": str(images.client / "current.img"),
        "--keys": str(_keys_file(images.client)),
        "--kind": "custom_image",
        "--scope": "101",
        "--name": "lab",
        "--cache": str(images.client / "cache"),
    } | extra
    return [word for pair in args.items() for word in pair]


class SlowerPoint(SlowPoint):
    delay = 0.05


def kill_pull_after_first_chunk(url: str, images: Point) -> None:
    """Run the pull's command against ``url`` and SIGKILL it once a chunk is recorded."""
    args = _cli_args(url, images, **{"--workers": "2", "--seed": os.devnull})
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.imagestore.pull", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while not journaled(images) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)


def test_a_pull_process_killed_mid_fetch_leaves_no_image_and_is_resumed(images: Point) -> None:
    # No sunset: the process reads the machine's own date.
    write_manifest(images.root, LAB, _signed(images, sunset=None))
    with SlowerPoint(images.root) as slow:
        kill_pull_after_first_chunk(slow.url, images)
        assert not (images.client / "lab.img").exists()
        kept = len(set(journaled(images)))
        assert kept > 0
        # The killed process's last request may still be being answered.
        deadline = time.monotonic() + 10
        while slow.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        assert slow.counts["chunk"] < len(missing_chunks(images.lab.index, None))
        asked_before = slow.counts["chunk"]

        report = _pull(slow.url, images, seed=None)

        assert slow.counts["chunk"] == asked_before + report.chunks_fetched
    assert report.chunks_resumed == kept
    assert report.chunks_fetched == len(missing_chunks(images.lab.index, None)) - kept
    assert (images.client / "lab.img").read_bytes() == images.lab.path.read_bytes()
    # The killed process's partial output and journal went with the image's rename.
    assert partial_files(images) == []


def test_the_pull_command_reports_what_came_from_where(
    point: PointServer, images: Point, capsys: pytest.CaptureFixture[str]
) -> None:
    assert pull_main(_cli_args(point.url, images), today=TODAY) == 0
    out = capsys.readouterr().out
    assert out.startswith("101/lab@1.2: 5.5 MiB written to ")
    assert "from the seed" in out and "downloaded in" in out
    assert (images.client / "lab.img").read_bytes() == images.lab.path.read_bytes()


def test_the_pull_command_exits_with_the_refusal_before_fetching(
    point: PointServer, images: Point, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _cli_args(point.url, images, **{"--scope": "102"})
    assert pull_main(args, today=TODAY) == mf.WrongImage.exit_code == 3
    assert "not custom_image 102/lab" in capsys.readouterr().err
    assert point.counts["chunk"] == point.counts["index"] == 0


@pytest.mark.parametrize(
    ("option", "value"),
    [("--workers", "0"), ("--workers", "x"), ("--timeout", "-1"), ("--timeout", "nan")],
)
def test_the_pull_command_refuses_workers_or_timeout_not_above_zero(
    point: PointServer, images: Point, capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        pull_main(_cli_args(point.url, images, **{option: value}), today=TODAY)
    assert exited.value.code == 2
    assert f"argument {option}: {value!r} is not a number above 0" in capsys.readouterr().err
    assert sum(point.counts.values()) == 0
    assert not (images.client / "lab.img").exists()


def test_keys_files_are_read_as_store_keys_prints_them_and_a_wrong_id_refused(
    tmp_path: Path,
) -> None:
    assert load_keys(_keys_file(tmp_path)).keys() == TRUSTED.keys()
    other = Ed25519PrivateKey.generate().public_key()
    lying = tmp_path / "lying.txt"
    lying.write_text(f"{mf.key_id(KEY.public_key())} ed25519 {other.public_bytes_raw().hex()}\n")
    with pytest.raises(StoreError, match="is not that key's id"):
        load_keys(lying)
    (tmp_path / "bad.txt").write_text("0123456789abcdef rsa 00\n")
    with pytest.raises(StoreError, match="line 1"):
        load_keys(tmp_path / "bad.txt")


def test_https_with_the_points_own_certificate_as_ca_file(images: Point, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with PointServer(images.root, cert_file=cert, key_file=key) as tls:
        assert tls.url.startswith("https://127.0.0.1:")
        report = _pull(tls.url, images, ca_file=cert)
        assert (images.client / "lab.img").read_bytes() == images.lab.path.read_bytes()
        assert report.chunks_fetched > 0
        (images.client / "lab.img").unlink()
        with pytest.raises(PointUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            _pull(tls.url, images, cache_dir=tmp_path / "other-cache")
    assert not (images.client / "lab.img").exists()


def test_http_store_is_a_chunk_source_for_extraction(
    point: PointServer, images: Point, tmp_path: Path
) -> None:
    with HttpStore(point.url) as store:
        report = extract(images.lab.index, store, tmp_path / "direct.img")
        assert (tmp_path / "direct.img").read_bytes() == images.lab.path.read_bytes()
        assert report.chunks_fetched == point.counts["chunk"]
        assert store.connections_opened == 1  # one kept-alive connection for all of them
        with pytest.raises(ChunkMissing):
            store.get(b"\x01" * 32, digest=images.lab.index.digest)


def test_http_store_asks_the_point_which_chunks_it_lacks(point: PointServer, images: Point) -> None:
    absent = [hashlib.sha512(bytes([n])).digest()[:32] for n in range(3)]
    present = [images.lab.index.chunk_id(i) for i in range(3)]
    with HttpStore(point.url) as store:
        assert store.missing([present[0], absent[0], present[1], absent[1], absent[0]]) == [
            absent[0],
            absent[1],
        ]
        assert store.missing([]) == []


def test_chunks_are_asked_for_many_to_a_request(point: PointServer, images: Point) -> None:
    report = _pull(point.url, images, seed=None, workers=2)
    assert (images.client / "lab.img").read_bytes() == images.lab.path.read_bytes()
    assert report.chunks_fetched == point.counts["chunk"] > 40
    # Two workers, batches shrinking towards the end so both stay busy: far fewer
    # requests than chunks, more than one per worker.
    assert 2 < point.counts["chunks"] <= report.chunks_fetched // 4
    with HttpStore(point.url) as store, pytest.raises(ValueError, match="at most 64"):
        store.chunk_batch([b"\x01" * 32] * (MAX_BATCH_IDS + 1))


@contextlib.contextmanager
def static_server(folder: Path) -> Iterator[str]:
    """The standard library's static file server over ``folder`` (it answers POST with 501)."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *_: None  # type: ignore[attr-defined]
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            thread.join()


def test_a_store_folder_served_by_a_plain_web_server_is_pulled_chunk_by_chunk(
    images: Point,
) -> None:
    with static_server(images.root) as url:
        report = _pull(url, images, seed=None)
        with HttpStore(url) as store:
            assert store.chunk_batch(_lacking(images)[:2]) is None
            assert store.batches is False
    assert (images.client / "lab.img").read_bytes() == images.lab.path.read_bytes()
    assert report.chunks_fetched == len(missing_chunks(images.lab.index, None))


class PruningPoint(PointServer):
    """A point whose ``doomed`` chunk is removed right after its size is read."""

    doomed = ""

    def open_file(self, parts: Sequence[str]) -> int | None:
        fd = super().open_file(parts)
        if fd is not None and parts[-1] == f"{self.doomed}.cacnk":
            (self.root.joinpath(*parts)).unlink()
        return fd


def test_a_chunk_removed_while_its_batch_is_answered_is_a_short_answer_not_another_chunk(
    images: Point,
) -> None:
    ids = _lacking(images)[:3]
    with PruningPoint(images.root) as pruning:
        pruning.doomed = ids[1].hex()
        with HttpStore(pruning.url) as store:
            with pytest.raises(PointUnavailable, match="more expected"):
                store.chunk_batch(ids)
            # The connection was ended; the next request opens another and is answered.
            assert store.chunk_bytes(ids[0]) == images.chunk_file(ids[0]).read_bytes()
            assert store.connections_opened == 2


class Framing(BaseHTTPRequestHandler):
    """Answers every ``POST /chunks`` with the class's ``answer``."""

    protocol_version = "HTTP/1.1"
    answer = b""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.answer)))
        self.end_headers()
        self.wfile.write(self.answer)

    def log_message(self, *_: Any) -> None:
        pass


def _framed(*lengths: int, body: bytes = b"") -> bytes:
    return b"".join(n.to_bytes(8, "big") for n in lengths) + body


@pytest.mark.parametrize(
    ("answer", "error", "match"),
    [
        (_framed(3, 2, body=b"abcde"), None, None),
        (_framed(3, ABSENT, body=b"abc"), ChunkMissing, ("02" * 32)),
        (_framed(3), PointUnavailable, "not framed"),  # a short table
        (_framed(3, 2, body=b"abcdef"), PointUnavailable, "not framed"),  # a byte too many
        (_framed(3, 2, body=b"abcd"), PointUnavailable, "not framed"),  # a byte short
        (_framed(3, 2000, body=b"abc" + b"x" * 2000), PointUnavailable, "not framed"),
    ],
    ids=["well framed", "absent", "short table", "long body", "short body", "oversized chunk"],
)
def test_a_batch_answer_is_taken_only_when_framed_exactly(
    answer: bytes, error: type[Exception] | None, match: str | None
) -> None:
    handler = type("Answer", (Framing,), {"answer": answer})
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with HttpStore(f"http://127.0.0.1:{server.server_address[1]}") as store:
                ids = [b"\x01" * 32, b"\x02" * 32]
                if error is None:
                    assert store.chunk_batch(ids, max_size=100) == [b"abc", b"de"]
                else:
                    with pytest.raises(error, match=match):
                        store.chunk_batch(ids, max_size=100)
        finally:
            server.shutdown()


def test_a_point_that_is_not_there_is_unavailable_not_a_hang(images: Point) -> None:
    with PointServer(images.root) as gone:
        url = gone.url
    with pytest.raises(PointUnavailable, match="refused"):
        _pull(url, images, timeout=2)


def test_a_seed_index_matches_the_stores_own(images: Point) -> None:
    assert seed_index(images.base.path, images.lab.index) == images.base.index
    with pytest.raises(StoreError, match="cannot read"):
        seed_index(images.client / "absent.img", images.lab.index)


def test_sunset_tomorrow_still_pulls(point: PointServer, images: Point) -> None:
    write_manifest(images.root, LAB, _signed(images, sunset=TODAY + timedelta(days=1)))
    assert _pull(point.url, images).manifest.sunset == TODAY + timedelta(days=1)


def test_a_point_that_accepts_but_never_answers_times_out(images: Point) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(PointUnavailable, match="timed out"):
            _pull(url, images, timeout=0.5)
    assert time.monotonic() - started < 5
    assert not (images.client / "lab.img").exists()
