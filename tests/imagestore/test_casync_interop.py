"""Debian's casync reads what we write, and we read what it writes.

casync is installed by .ci/run (Debian's ``casync`` package); a missing
binary fails these tests rather than skipping them.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.imagestore import ChunkStore, Digest, ImageStore, Seed, extract, read_index
from tests.imagestore.conftest import MiB, derive, random_bytes

Write = Callable[[str, bytes], Path]


def _casync(*args: str | Path) -> None:
    binary = shutil.which("casync")
    assert binary, "casync is not installed: .ci/run installs Debian's casync package"
    result = subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def _image() -> bytes:
    return random_bytes(5 * MiB, 50) + bytes(3 * MiB) + random_bytes(2 * MiB + 999, 51)


@pytest.mark.parametrize("digest", list(Digest))
def test_casync_extract_rebuilds_an_image_from_our_index_and_store(
    tmp_path: Path, write: Write, digest: Digest
) -> None:
    data = _image()
    with ImageStore(tmp_path / "images", digest=digest) as store:
        store.import_file("pc-high-2026.1", write("a.img", data))
    out = tmp_path / "casync-out.img"
    # No --digest: casync takes it from the index's feature flags.
    _casync(
        "extract",
        f"--store={tmp_path / 'images' / 'chunks'}",
        tmp_path / "images" / "indexes" / "pc-high-2026.1.caibx",
        out,
    )
    assert out.read_bytes() == data


def test_we_extract_what_casync_make_wrote(tmp_path: Path, write: Write) -> None:
    data = _image()
    source = write("a.img", data)
    _casync("make", f"--store={tmp_path / 'cstore'}", tmp_path / "a.caibx", source)

    index = read_index(tmp_path / "a.caibx")
    assert index.size == len(data)
    assert index.digest is Digest.SHA512_256
    store = ChunkStore(tmp_path / "cstore")
    extract(index, store, tmp_path / "out.img")
    assert (tmp_path / "out.img").read_bytes() == data

    # With the same chunk sizes (casync's 16/64/256 KiB, given as a store made
    # with other sizes would) our header is casync's, word for word.
    with ImageStore(tmp_path / "images", sizes=index.sizes) as ours:
        ours.import_file("a", source)
    assert ours.index_path("a").read_bytes()[:64] == (tmp_path / "a.caibx").read_bytes()[:64]


def test_a_casync_made_derivative_extracts_with_the_base_as_seed(
    tmp_path: Path, write: Write
) -> None:
    base = random_bytes(8 * MiB, 52)
    custom = derive(base, fraction=0.05, seed=53)
    base_path, custom_path = write("base.img", base), write("custom.img", custom)
    cstore = tmp_path / "cstore"
    _casync("make", f"--store={cstore}", tmp_path / "base.caibx", base_path)
    _casync("make", f"--store={cstore}", tmp_path / "custom.caibx", custom_path)

    seed = Seed(base_path, read_index(tmp_path / "base.caibx"))
    report = extract(
        read_index(tmp_path / "custom.caibx"), ChunkStore(cstore), tmp_path / "o.img", seed=seed
    )
    assert (tmp_path / "o.img").read_bytes() == custom
    assert report.bytes_from_seed > 0.6 * len(custom)
