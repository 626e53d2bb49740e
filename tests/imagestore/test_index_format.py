"""casync's .caibx layout, written exactly, and every malformed input refused by name."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.imagestore import ChunkSizes, Digest, Index, MalformedIndex, StoreError, decode
from orchestrator.imagestore.caibx import (
    CA_FORMAT_INDEX,
    CA_FORMAT_SHA512_256,
    CA_FORMAT_TABLE,
    CA_FORMAT_TABLE_TAIL_MARKER,
)

# casync's own defaults, as `casync make` writes them.
CASYNC_SIZES = ChunkSizes(16384, 65536, 262144)


def _index(n: int = 3, digest: Digest = Digest.SHA512_256) -> Index:
    index = Index(digest=digest, sizes=CASYNC_SIZES)
    for i in range(n):
        index.append(bytes([i + 1]) * 32, 20_000 + i)
    return index


def test_the_header_table_and_tail_are_casyncs() -> None:
    data = _index(2).encode()
    assert len(data) == 64 + 2 * 40 + 40
    head = struct.unpack_from("<8Q", data, 0)
    assert head == (
        48,
        CA_FORMAT_INDEX,
        0xB000000000000000,  # as `casync make` writes for a blob
        16384,
        65536,
        262144,
        0xFFFFFFFFFFFFFFFF,
        CA_FORMAT_TABLE,
    )
    assert struct.unpack_from("<Q", data, 64) == (20_000,)
    assert data[72:104] == b"\x01" * 32
    assert struct.unpack_from("<Q", data, 104) == (40_001,)
    tail = struct.unpack_from("<5Q", data, 144)
    assert tail == (0, 0, 48, 16 + 2 * 40 + 40, CA_FORMAT_TABLE_TAIL_MARKER)


def test_the_digest_is_read_from_the_feature_flags() -> None:
    sha256 = decode(_index(digest=Digest.SHA256).encode())
    assert sha256.digest is Digest.SHA256
    assert not (sha256.feature_flags or 0) & CA_FORMAT_SHA512_256
    assert decode(_index().encode()).digest is Digest.SHA512_256


def test_decode_returns_what_encode_was_given() -> None:
    index = _index(5)
    back = decode(index.encode())
    assert list(back.chunks()) == list(index.chunks())
    assert back.sizes == CASYNC_SIZES
    assert back.size == index.size


def _patch(data: bytes, offset: int, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into("<Q", out, offset, value)
    return bytes(out)


GOOD = _index(3).encode()


@pytest.mark.parametrize(
    ("data", "offset", "words"),
    [
        (GOOD[:100], 100, "shorter than the smallest index"),
        (GOOD + b"\0" * 7, len(GOOD) + 7, "whole number"),
        (_patch(GOOD, 0, 40), 0, "header size"),
        (_patch(GOOD, 8, 0x1234), 8, "not CA_FORMAT_INDEX"),
        (_patch(GOOD, 16, 1 << 40), 16, "unknown feature flags"),
        (_patch(GOOD, 24, 0), 24, "chunk size min"),
        (_patch(GOOD, 40, 1 << 40), 40, "chunk size max"),
        (_patch(GOOD, 24, 100_000), 24, "min 100000 <= avg"),
        (_patch(GOOD, 48, 12), 48, "table size field"),
        (_patch(GOOD, 56, 12), 56, "not CA_FORMAT_TABLE"),
        (_patch(GOOD, 64 + 40, 10), 104, "does not increase"),
        (_patch(GOOD, 64, 0), 64, "does not increase"),
        (_patch(GOOD, 64 + 80, 1_000_000), 144, "exceeds the maximum"),
        (_patch(GOOD, 184, 7), 184, "end marker"),
        (_patch(GOOD, 192, 7), 192, "zero fill"),
        (_patch(GOOD, 200, 49), 200, "index header is at"),
        (_patch(GOOD, 208, 99), 208, "does not match the 3 items"),
        (_patch(GOOD, 216, 99), 216, "not CA_FORMAT_TABLE_TAIL_MARKER"),
    ],
)
def test_a_malformed_index_names_the_fault_and_its_offset(
    data: bytes, offset: int, words: str
) -> None:
    with pytest.raises(MalformedIndex, match=words) as caught:
        decode(data, source="pc-high.caibx")
    assert caught.value.offset == offset
    assert f"pc-high.caibx: malformed index at byte {offset}" in str(caught.value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(min_value=0, max_value=len(GOOD) - 1))
def test_a_truncated_index_is_always_refused(cut: int) -> None:
    with pytest.raises(MalformedIndex):
        decode(GOOD[:cut])


@settings(max_examples=500, deadline=None)
@given(
    flips=st.lists(
        st.tuples(st.integers(0, len(GOOD) - 1), st.integers(1, 255)), min_size=1, max_size=6
    ),
    extra=st.binary(max_size=50),
)
def test_flipped_bytes_never_raise_anything_but_the_stores_error(
    flips: list[tuple[int, int]], extra: bytes
) -> None:
    data = bytearray(GOOD)
    for at, mask in flips:
        data[at] ^= mask
    try:
        index = decode(bytes(data) + extra)
    except StoreError:
        return
    # What decodes is a coherent index: increasing ends within the maximum.
    previous = 0
    for end in index.ends:
        assert previous < end <= previous + index.sizes.max
        previous = end


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise_anything_but_the_stores_error(data: bytes) -> None:
    with contextlib.suppress(StoreError):
        decode(data)
