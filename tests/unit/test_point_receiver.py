"""The receiving end of a staging (orchestrator/remote/point_receiver.py): the
chunks streamed to it land whole, batch by batch, and a stream cut anywhere
leaves only whole chunks in place and no temporaries."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.remote import point_receiver
from orchestrator.remote.point_receiver import BATCH, receive


def _chunks(n: int, size: int = 100) -> list[tuple[bytes, bytes]]:
    return [(os.urandom(32), os.urandom(size + i)) for i in range(n)]


def _stream(chunks: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(cid + len(data).to_bytes(4, "big") + data for cid, data in chunks)


def _in_place(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in root.rglob("*.cacnk")}


def _named(chunks: list[tuple[bytes, bytes]]) -> dict[str, bytes]:
    return {f"{cid.hex()}.cacnk": data for cid, data in chunks}


def test_every_chunk_lands_in_casyncs_layout_and_each_batch_is_reported(tmp_path: Path) -> None:
    chunks = _chunks(BATCH + 3)
    out = io.StringIO()

    placed = receive(str(tmp_path), io.BytesIO(_stream(chunks)), out)

    assert placed == BATCH + 3
    assert out.getvalue().splitlines() == [f"in-place {BATCH}", f"in-place {BATCH + 3}"]
    assert _in_place(tmp_path) == _named(chunks)
    cid = chunks[0][0].hex()
    assert (tmp_path / "chunks" / cid[:4] / f"{cid}.cacnk").is_file()
    assert not list(tmp_path.rglob(".tmp-*"))


def test_each_batch_is_flushed_with_syncfs_of_the_stores_file_system_not_a_sync_of_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = point_receiver._load_syncfs()
    assert real is not None, "this Linux's C library offers syncfs(2)"
    flushed: list[str] = []

    def recorded(fd: int) -> int:
        flushed.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    def forbidden() -> None:
        raise AssertionError("sync(2) flushes every file system of the point's host")

    monkeypatch.setattr(point_receiver, "_load_syncfs", lambda: recorded)
    monkeypatch.setattr(point_receiver.os, "sync", forbidden)
    chunks = _chunks(BATCH + 1)

    receive(str(tmp_path), io.BytesIO(_stream(chunks)), io.StringIO())

    assert flushed == [str(tmp_path / "chunks")] * 2
    assert _in_place(tmp_path) == _named(chunks)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cut=st.integers(min_value=0), count=st.integers(min_value=1, max_value=BATCH + 20))
def test_a_stream_cut_anywhere_leaves_only_whole_chunks_of_finished_batches(
    tmp_path_factory: pytest.TempPathFactory, cut: int, count: int
) -> None:
    root = tmp_path_factory.mktemp("point")
    chunks = _chunks(count, size=10)
    stream = _stream(chunks)
    cut %= len(stream) + 1
    out = io.StringIO()
    frame_ends = [sum(36 + len(d) for _, d in chunks[: i + 1]) for i in range(count)]
    whole = sum(1 for end in frame_ends if end <= cut)

    try:
        placed = receive(str(root), io.BytesIO(stream[:cut]), out)
    except ValueError as exc:  # cut inside a chunk: refused, nothing of it kept
        assert "ended inside" in str(exc)
        placed = (whole // BATCH) * BATCH
    else:  # cut between chunks: an end of stream like any other
        assert placed == whole

    assert _in_place(root) == _named(chunks[:placed])
    assert not list(root.rglob(".tmp-*"))


def test_a_chunk_claiming_an_impossible_size_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    bad = os.urandom(32) + (point_receiver.MAX_CHUNK + 1).to_bytes(4, "big")

    with pytest.raises(ValueError, match="claims"):
        receive(str(tmp_path), io.BytesIO(bad), io.StringIO())

    assert not list(tmp_path.rglob("*"))


def test_run_as_its_source_alone_it_receives_and_says_done(tmp_path: Path) -> None:
    # As the point's host runs it: `python3 -c SOURCE ROOT`, nothing of the project installed.
    source = Path(point_receiver.__file__).read_text()
    chunks = _chunks(3)

    ran = subprocess.run(
        [sys.executable, "-I", "-c", source, str(tmp_path)],
        input=_stream(chunks),
        capture_output=True,
        cwd="/",
        check=False,
    )

    assert (ran.returncode, ran.stdout) == (0, b"in-place 3\ndone 3\n")
    assert _in_place(tmp_path) == _named(chunks)
    refused = subprocess.run(
        [sys.executable, "-I", "-c", source, "relative/folder"],
        input=b"",
        capture_output=True,
        check=False,
    )
    assert refused.returncode == 2 and b"absolute path" in refused.stderr
    absent = subprocess.run(
        [sys.executable, "-I", "-c", source, str(tmp_path / "absent")],
        input=b"",
        capture_output=True,
        check=False,
    )
    assert absent.returncode == 2 and b"no folder" in absent.stderr


def test_listing_names_each_index_with_its_digest_each_chunk_and_each_temporary(
    tmp_path: Path,
) -> None:
    chunks = _chunks(3)
    receive(str(tmp_path), io.BytesIO(_stream(chunks)), io.StringIO())
    (tmp_path / "indexes").mkdir()
    (tmp_path / "indexes" / "1-base-image-pc-high-2026.1.caibx").write_bytes(b"index")
    (tmp_path / "indexes" / ".tmp-2.caibx").write_bytes(b"half")
    folder = tmp_path / "chunks" / chunks[0][0].hex()[:4]
    (folder / ".tmp-abc.partial").write_bytes(b"cut")
    (folder / "notes.txt").write_bytes(b"not a chunk")
    out = io.StringIO()

    count = point_receiver.inventory(str(tmp_path), out)

    lines = out.getvalue().splitlines()
    assert count == 3
    assert lines[0] == f"index 1-base-image-pc-high-2026.1 {hashlib.sha256(b'index').hexdigest()}"
    assert sorted(lines[1:]) == sorted(
        [f"chunk {cid.hex()}" for cid, _ in chunks] + [f"tmp {folder.name}/.tmp-abc.partial"]
    )
    assert point_receiver.inventory(str(tmp_path / "empty"), io.StringIO()) == 0
