"""A writer killed mid-write leaves a store that opens, verifies clean and takes the write again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.imagestore import ImageStore, extract
from orchestrator.imagestore.store import TEMP_PREFIX
from tests.imagestore.conftest import MiB, random_bytes

ROOT = Path(__file__).resolve().parents[2]


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(TEMP_PREFIX)]


def _every_stored_chunk_is_whole(store: ImageStore) -> int:
    n = 0
    for chunk_id in store.chunks.ids():
        store.chunks.get(chunk_id, digest=store.digest)  # raises if partial or corrupt
        n += 1
    return n


def _start_writer(root: Path, image: Path, point: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.imagestore.crash_writer", str(root), str(image), point],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("point", ["mid-write", "before-rename"])
def test_a_writer_killed_mid_write_leaves_a_store_that_recovers(tmp_path: Path, point: str) -> None:
    data = random_bytes(6 * MiB, 40)
    image = tmp_path / "lab.img"
    image.write_bytes(data)
    root = tmp_path / "images"

    writer = _start_writer(root, image, point)
    assert writer.stdout is not None
    line = writer.stdout.readline()
    assert line == "stopped\n", writer.stderr.read() if writer.stderr else line
    assert _temporaries(root), "the writer was stopped with a chunk in flight"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=10)

    with ImageStore(root) as store:
        assert store.cleaned >= 1
        assert _temporaries(root) == []
        assert 0 < _every_stored_chunk_is_whole(store) < len(store.make_index(image))
        assert not store.has_index("lab")  # the index comes only after all its chunks
        store.import_file("lab", image)
        assert store.verify().ok
        extract(store.index("lab"), store.chunks, tmp_path / "out.img")
    assert (tmp_path / "out.img").read_bytes() == data


def test_a_writer_killed_at_an_arbitrary_moment_leaves_only_whole_chunks(tmp_path: Path) -> None:
    data = random_bytes(24 * MiB, 41)
    image = tmp_path / "lab.img"
    image.write_bytes(data)
    root = tmp_path / "images"
    code = (
        "import sys; from orchestrator.imagestore import ImageStore\n"
        "with ImageStore(sys.argv[1]) as s:\n"
        "    print('open', flush=True); s.import_file('lab', sys.argv[2])\n"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", code, str(root), str(image)], cwd=ROOT, stdout=subprocess.PIPE
    )
    assert writer.stdout is not None
    writer.stdout.readline()
    time.sleep(0.05)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=10)

    with ImageStore(root) as store:
        assert _temporaries(root) == []
        _every_stored_chunk_is_whole(store)
        store.import_file("lab", image, replace=True)
        assert store.verify().ok


def test_opening_the_store_leaves_a_live_writers_temporary_files_alone(tmp_path: Path) -> None:
    root = tmp_path / "images"
    with ImageStore(root) as first:
        in_flight = first.chunks.root / "abcd" / f"{TEMP_PREFIX}in-flight.partial"
        in_flight.parent.mkdir()
        in_flight.write_bytes(b"half a chunk")
        with ImageStore(root) as second:
            assert second.cleaned == 0
        assert in_flight.exists()
    with ImageStore(root) as alone:
        assert alone.cleaned == 1
    assert not in_flight.exists()
