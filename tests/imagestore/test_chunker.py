"""Chunking: compiled FastCDC only, streamed in blocks, zero runs on a fast path."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import fastcdc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.imagestore import (
    ChunkSizes,
    Digest,
    ImageStore,
    Seed,
    StoreError,
    chunker,
    extract,
)
from tests.imagestore.conftest import MiB, random_bytes

# The sizes chunker.chunks cuts with when given none, as FastCDC's arguments.
DEFAULT = (ChunkSizes().min, ChunkSizes().avg, ChunkSizes().max)


def test_the_compiled_fastcdc_module_is_the_one_chunking() -> None:
    module = sys.modules[chunker.COMPILED_MODULE]
    assert Path(module.__file__ or "").suffix in {".so", ".pyd"}
    assert chunker.compiled() is module.fastcdc_cy
    assert "fastcdc_py" not in chunker.compiled().__module__


def test_without_the_compiled_chunker_nothing_is_chunked_but_the_rest_loads() -> None:
    code = (
        "import io, sys; sys.modules['fastcdc.fastcdc_cy'] = None\n"
        "import orchestrator.imagestore.pull\n"  # the agent, with its seed's saved index
        "from orchestrator.imagestore import chunker\n"
        "print('loaded', flush=True)\n"
        "next(chunker.chunks(io.BytesIO(bytes(range(256)) * 4096)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout == "loaded\n"
    assert result.returncode != 0
    assert "compiled FastCDC chunker" in result.stderr
    assert "fastcdc_py" not in result.stderr


@pytest.mark.parametrize("block", [1 * MiB, 3 * MiB + 17, 64 * MiB])
def test_chunks_are_fastcdc_over_the_whole_file_whatever_the_block_size(block: int) -> None:
    data = random_bytes(5 * MiB, 1) + bytes(3 * MiB) + random_bytes(MiB, 2) + bytes(70_000)
    data += random_bytes(777, 3)
    whole = [(c.offset, c.length) for c in fastcdc.fastcdc_cy.fastcdc_cy(data, *DEFAULT)]
    streamed = [(c.offset, c.length) for c in chunker.chunks(io.BytesIO(data), block=block)]
    assert streamed == whole


def test_chunk_ids_are_the_digest_of_the_uncompressed_bytes() -> None:
    data = random_bytes(2 * MiB, 4)
    for digest in Digest:
        for c in chunker.chunks(io.BytesIO(data), digest=digest):
            expected = hashlib.new(digest.hashlib_name, data[c.offset : c.offset + c.length])
            assert c.id == expected.digest()


@pytest.mark.parametrize("spare", [1, 3])
def test_ids_hashed_beside_the_caller_are_each_chunks_own_digest_in_order(
    spare: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = random_bytes(11 * MiB, 7) + bytes(MiB) + random_bytes(3 * MiB, 8)
    submitted: list[int] = []
    with ThreadPoolExecutor(max_workers=spare) as helpers:
        real_submit = helpers.submit

        def counted(fn: Any, group: list[memoryview]) -> Any:
            submitted.append(len(group))
            return real_submit(fn, group)

        monkeypatch.setattr(helpers, "submit", counted)
        monkeypatch.setattr(chunker, "_helpers", lambda: (helpers, spare))
        found = [
            (c.offset, c.length, c.id) for c in chunker.chunks(io.BytesIO(data), block=MiB * 4)
        ]
    assert submitted, "no chunk was hashed on a helper thread"
    assert max(submitted) > 1
    assert [i for _, _, i in found] == [
        hashlib.new("sha512_256", data[o : o + n]).digest() for o, n, _ in found
    ]
    assert sum(n for _, n, _ in found) == len(data)


def test_a_zero_run_is_cut_into_identical_max_size_chunks_on_the_fast_path() -> None:
    data = random_bytes(MiB, 5) + bytes(4 * MiB) + random_bytes(MiB, 6)
    found = list((c.offset, c.length, c.id, c.zero) for c in chunker.chunks(io.BytesIO(data)))
    zero = [c for c in found if c[3]]
    assert sum(c[1] for c in zero) >= 3 * MiB
    assert {c[1] for c in zero} == {ChunkSizes().max}
    assert {c[2] for c in zero} == {chunker.zero_chunk_id(Digest.SHA512_256, ChunkSizes().max)}


def test_sizes_below_fastcdcs_floor_are_refused() -> None:
    with pytest.raises(StoreError, match="FastCDC"):
        list(chunker.chunks(io.BytesIO(b"x" * 10_000), sizes=ChunkSizes(16, 64, 512)))


def test_importing_and_extracting_a_1_gib_image_keeps_memory_flat(tmp_path: Path) -> None:
    image = tmp_path / "big.img"
    with open(image, "wb") as f:  # sparse: 1 GiB of zeros with random islands
        for i in range(8):
            f.seek(i * 128 * MiB)
            f.write(random_bytes(MiB, 100 + i))
        f.truncate(1024 * MiB)
    tracemalloc.start()
    try:
        with ImageStore(tmp_path / "images") as s:
            report = s.import_file("big", image)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.size == 1024 * MiB
    assert report.zero_bytes > 1000 * MiB
    assert peak < 48 * MiB, f"peak {peak / MiB:.1f} MiB while importing 1 GiB"

    tracemalloc.start()
    try:
        with ImageStore(tmp_path / "images") as s:
            extract(s.index("big"), s.chunks, tmp_path / "out.img", seed=Seed(image))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 48 * MiB, f"peak {peak / MiB:.1f} MiB while extracting 1 GiB"
    assert (tmp_path / "out.img").stat().st_size == 1024 * MiB


@settings(max_examples=25, deadline=None)
@given(
    parts=st.lists(
        st.tuples(st.booleans(), st.integers(min_value=1, max_value=600_000)),
        min_size=1,
        max_size=6,
    ),
    block=st.integers(min_value=1, max_value=4 * MiB),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_streamed_chunks_match_fastcdc_for_any_mix_of_data_zeros_and_block_size(
    parts: list[tuple[bool, int]], block: int, seed: int
) -> None:
    data = b"".join(
        bytes(n) if zero else random_bytes(n, seed + i) for i, (zero, n) in enumerate(parts)
    )
    whole = [(c.offset, c.length) for c in fastcdc.fastcdc_cy.fastcdc_cy(data, *DEFAULT)]
    streamed = [(c.offset, c.length) for c in chunker.chunks(io.BytesIO(data), block=block)]
    assert streamed == whole
