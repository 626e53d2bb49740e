"""Generated images for the image store tests: seeded random bytes, zero runs, derivatives."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.imagestore import ImageStore

MiB = 1024 * 1024


def random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def derive(base: bytes, *, fraction: float, seed: int) -> bytes:
    """A customized image: about ``fraction`` of the base rewritten in 32 KiB patches."""
    rng = random.Random(seed)
    out = bytearray(base)
    patch = 32 * 1024
    for _ in range(int(len(base) * fraction / patch)):
        at = rng.randrange(0, len(base) - patch)
        out[at : at + patch] = rng.randbytes(patch)
    return bytes(out)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ImageStore]:
    with ImageStore(tmp_path / "images") as s:
        yield s


@pytest.fixture
def write(tmp_path: Path):  # type: ignore[no-untyped-def]
    def _write(name: str, data: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return _write
