"""casync's blob index (.caibx): encode, and decode with every field checked.

The layout (little-endian 64-bit words), as casync writes it and casync and
desync read it::

    offset  field
    0       header size = 48
    8       header type = CA_FORMAT_INDEX (0x96824d9c7b129ff9)
    16      feature flags (CA_FORMAT_SHA512_256 says which digest the ids are)
    24      chunk size min
    32      chunk size avg
    40      chunk size max
    48      table size = 0xffffffffffffffff (written before the table's length is known)
    56      table type = CA_FORMAT_TABLE (0xe75b9e112f17417d)
    64      n items of 40 bytes: end offset of the chunk in the blob, then its 32-byte id
    ...     tail of 40 bytes: 0, 0, 48 (where the index header starts),
            table size (16 + 40 n + 40), CA_FORMAT_TABLE_TAIL_MARKER (0x4b4f050e5549ecd1)

End offsets strictly increase and no chunk is larger than the header's
maximum (the last may be smaller than the minimum). An empty blob has no items.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from orchestrator.imagestore.errors import MalformedIndex, UnsafeName

CA_FORMAT_INDEX = 0x96824D9C7B129FF9
CA_FORMAT_TABLE = 0xE75B9E112F17417D
CA_FORMAT_TABLE_TAIL_MARKER = 0x4B4F050E5549ECD1

CA_FORMAT_EXCLUDE_FILE = 0x1000000000000000
CA_FORMAT_SHA512_256 = 0x2000000000000000
CA_FORMAT_EXCLUDE_SUBMOUNTS = 0x4000000000000000
CA_FORMAT_EXCLUDE_NODUMP = 0x8000000000000000
# Every flag casync defines: the archive features (bits 0-32), .caexclude
# files, the digest and the two exclusions. A bit outside is not casync's.
_KNOWN_FLAGS = 0x1_FFFF_FFFF | 0xF000_0000_0000_0000
# `casync make` marks a blob index with its default exclusions (.caexclude
# files, nodump), which mean nothing for a blob; we write the same flags so
# our indexes and casync's differ only in their chunks.
_BLOB_FLAGS = CA_FORMAT_EXCLUDE_FILE | CA_FORMAT_EXCLUDE_NODUMP

# casync refuses chunk sizes above this (CA_CHUNK_SIZE_LIMIT_MAX).
CHUNK_SIZE_LIMIT = 128 * 1024 * 1024
UINT64_MAX = 0xFFFF_FFFF_FFFF_FFFF

ID_SIZE = 32
HEAD_SIZE = 64
ITEM_SIZE = 40
TAIL_SIZE = 40
_HEAD = struct.Struct("<8Q")
_ITEM_OFFSET = struct.Struct("<Q")
_TAIL = struct.Struct("<5Q")


class Digest(enum.Enum):
    """The hash that names chunks. casync's default (and desync's only) is SHA-512/256."""

    SHA512_256 = "sha512-256"
    SHA256 = "sha256"

    @property
    def hashlib_name(self) -> str:
        return "sha512_256" if self is Digest.SHA512_256 else "sha256"

    @property
    def flag(self) -> int:
        return CA_FORMAT_SHA512_256 if self is Digest.SHA512_256 else 0

    def new(self) -> hashlib._Hash:
        return hashlib.new(self.hashlib_name)

    def hasher(self) -> Callable[[bytes | memoryview], bytes]:
        """A fast one-shot function: data -> 32-byte digest."""
        name = self.hashlib_name
        new = hashlib.new

        def digest(data: bytes | memoryview) -> bytes:
            return new(name, data).digest()

        return digest

    @classmethod
    def from_flags(cls, flags: int) -> Digest:
        return cls.SHA512_256 if flags & CA_FORMAT_SHA512_256 else cls.SHA256


@dataclass(frozen=True)
class ChunkSizes:
    """Content-defined chunking bounds, in bytes: by default casync's minimum
    and maximum (16 and 256 KiB) around half its average (32 KiB, casync's 64).

    A change in an image costs the chunks around it, so smaller chunks send
    less over a building's link: on the benchmark's ext4 pair the derivative's
    delta is 0.82x casync's (0.97x when cut at 64 KiB), for twice the chunk
    files and requests, which batched fetching (``POST /chunks``) pays for
    (docs/performance.md). casync and desync read
    the sizes from the index. A store keeps the sizes it was made with
    (``ImageStore``), so its images go on sharing chunks whatever this default.
    """

    min: int = 16 * 1024
    avg: int = 32 * 1024
    max: int = 256 * 1024

    def __post_init__(self) -> None:
        if not (1 <= self.min <= self.avg <= self.max <= CHUNK_SIZE_LIMIT):
            raise UnsafeName(
                f"chunk sizes {self.min}/{self.avg}/{self.max} must satisfy "
                f"1 <= min <= avg <= max <= {CHUNK_SIZE_LIMIT}"
            )


def chunk_id_hex(value: str) -> str:
    """Check a chunk id written in hex: exactly 64 lowercase hex digits.

    Both digests casync knows (SHA-512/256, SHA-256) are 32 bytes.

    Raises:
        UnsafeName: any other length or character.
    """
    if (
        not isinstance(value, str)
        or len(value) != 2 * ID_SIZE
        or value.strip("0123456789abcdef") != ""
    ):
        raise UnsafeName(
            f"{value!r} is not a chunk id: expected {2 * ID_SIZE} lowercase hex digits"
        )
    return value


@dataclass
class Index:
    """One blob's chunk table: ordered chunk ids and the end offset of each in the blob.

    Ids are kept as one bytes object and the ends as an ``array('Q')`` so a
    20 GiB image (~330 000 chunks) costs ~13 MiB in memory, not a list of tuples.
    """

    digest: Digest = Digest.SHA512_256
    sizes: ChunkSizes = field(default_factory=ChunkSizes)
    feature_flags: int | None = None
    ends: array[int] = field(default_factory=lambda: array("Q"))
    ids: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        if self.feature_flags is None:
            self.feature_flags = _BLOB_FLAGS | self.digest.flag

    def __len__(self) -> int:
        return len(self.ends)

    @property
    def size(self) -> int:
        """The blob's length in bytes."""
        return self.ends[-1] if self.ends else 0

    def append(self, chunk_id: bytes, length: int) -> None:
        self.ends.append(self.size + length)
        self.ids += chunk_id

    def chunk_id(self, i: int) -> bytes:
        return bytes(self.ids[i * ID_SIZE : (i + 1) * ID_SIZE])

    def chunks(self) -> Iterator[tuple[int, int, bytes]]:
        """Each chunk in order as (start offset, length, id)."""
        start = 0
        ids = self.ids
        for i, end in enumerate(self.ends):
            yield start, end - start, bytes(ids[i * ID_SIZE : (i + 1) * ID_SIZE])
            start = end

    def unique_ids(self) -> set[bytes]:
        ids = self.ids
        return {bytes(ids[i : i + ID_SIZE]) for i in range(0, len(ids), ID_SIZE)}

    def encode(self) -> bytes:
        """The .caibx bytes for this index."""
        flags = self.feature_flags if self.feature_flags is not None else self.digest.flag
        n = len(self.ends)
        out = bytearray(HEAD_SIZE + n * ITEM_SIZE + TAIL_SIZE)
        _HEAD.pack_into(
            out,
            0,
            48,
            CA_FORMAT_INDEX,
            flags,
            self.sizes.min,
            self.sizes.avg,
            self.sizes.max,
            UINT64_MAX,
            CA_FORMAT_TABLE,
        )
        pos = HEAD_SIZE
        ids = self.ids
        for i, end in enumerate(self.ends):
            _ITEM_OFFSET.pack_into(out, pos, end)
            out[pos + 8 : pos + ITEM_SIZE] = ids[i * ID_SIZE : (i + 1) * ID_SIZE]
            pos += ITEM_SIZE
        table_size = 16 + n * ITEM_SIZE + TAIL_SIZE
        _TAIL.pack_into(out, pos, 0, 0, 48, table_size, CA_FORMAT_TABLE_TAIL_MARKER)
        return bytes(out)


def _decode_head(
    view: memoryview, bad: Callable[[str, int], MalformedIndex]
) -> tuple[int, ChunkSizes]:
    """The feature flags and chunk sizes of an index's 64-byte header, checked."""
    size, kind, flags, cmin, cavg, cmax, table_size, table_kind = _HEAD.unpack_from(view, 0)
    if size != 48:
        raise bad(f"index header size is {size}, expected 48", 0)
    if kind != CA_FORMAT_INDEX:
        raise bad(f"type {kind:#018x} is not CA_FORMAT_INDEX (not a casync index)", 8)
    if flags & ~_KNOWN_FLAGS:
        raise bad(f"unknown feature flags {flags & ~_KNOWN_FLAGS:#x}", 16)
    for offset, name, value in ((24, "min", cmin), (32, "avg", cavg), (40, "max", cmax)):
        if not 1 <= value <= CHUNK_SIZE_LIMIT:
            raise bad(f"chunk size {name} {value} is outside 1..{CHUNK_SIZE_LIMIT}", offset)
    if not cmin <= cavg <= cmax:
        raise bad(f"chunk sizes min {cmin} <= avg {cavg} <= max {cmax} do not hold", 24)
    if table_size != UINT64_MAX:
        raise bad(f"table size field is {table_size:#x}, expected {UINT64_MAX:#x}", 48)
    if table_kind != CA_FORMAT_TABLE:
        raise bad(f"type {table_kind:#018x} is not CA_FORMAT_TABLE", 56)
    return flags, ChunkSizes(cmin, cavg, cmax)


def decode_head(data: bytes | memoryview, *, source: str = "index") -> tuple[Digest, ChunkSizes]:
    """The digest and chunk sizes an index declares, from its first 64 bytes.

    Raises:
        MalformedIndex: fewer than 64 bytes, or a header casync would refuse.
    """

    def bad(message: str, offset: int) -> MalformedIndex:
        return MalformedIndex(message, offset=offset, source=source)

    view = memoryview(data).cast("B")
    if len(view) < HEAD_SIZE:
        raise bad(f"{len(view)} bytes is shorter than an index header ({HEAD_SIZE} bytes)", 0)
    flags, sizes = _decode_head(view, bad)
    return Digest.from_flags(flags), sizes


def decode(data: bytes | bytearray | memoryview, *, source: str = "index") -> Index:
    """Parse and check .caibx bytes.

    Raises:
        MalformedIndex: naming what is wrong and the byte offset where it is.
    """

    def bad(message: str, offset: int) -> MalformedIndex:
        return MalformedIndex(message, offset=offset, source=source)

    view = memoryview(data).cast("B")
    total = len(view)
    if total < HEAD_SIZE + TAIL_SIZE:
        raise bad(
            f"{total} bytes is shorter than the smallest index ({HEAD_SIZE + TAIL_SIZE} bytes)",
            total,
        )
    flags, sizes = _decode_head(view, bad)
    body = total - HEAD_SIZE - TAIL_SIZE
    if body % ITEM_SIZE:
        raise bad(
            f"{total} bytes is not a whole number of {ITEM_SIZE}-byte table items "
            f"({body % ITEM_SIZE} bytes over)",
            total,
        )
    n = body // ITEM_SIZE
    tail_at = HEAD_SIZE + n * ITEM_SIZE
    zero1, zero2, index_offset, tail_size, marker = _TAIL.unpack_from(view, tail_at)
    if zero1 != 0:
        raise bad(f"table has no end: expected the 0 end marker, found {zero1}", tail_at)
    if zero2 != 0:
        raise bad(f"tail zero fill is {zero2}, expected 0", tail_at + 8)
    if index_offset != 48:
        raise bad(f"tail says the index header is at {index_offset}, expected 48", tail_at + 16)
    if tail_size != 16 + n * ITEM_SIZE + TAIL_SIZE:
        raise bad(
            f"tail table size {tail_size} does not match the {n} items present "
            f"(expected {16 + n * ITEM_SIZE + TAIL_SIZE})",
            tail_at + 24,
        )
    if marker != CA_FORMAT_TABLE_TAIL_MARKER:
        raise bad(f"tail marker {marker:#018x} is not CA_FORMAT_TABLE_TAIL_MARKER", tail_at + 32)

    index = Index(digest=Digest.from_flags(flags), sizes=sizes, feature_flags=flags)
    ends = index.ends
    ids = index.ids
    previous = 0
    pos = HEAD_SIZE
    for _ in range(n):
        (end,) = _ITEM_OFFSET.unpack_from(view, pos)
        if end <= previous:
            raise bad(f"chunk end offset {end} does not increase (previous {previous})", pos)
        if end - previous > sizes.max:
            raise bad(f"chunk of {end - previous} bytes exceeds the maximum {sizes.max}", pos)
        ends.append(end)
        ids += view[pos + 8 : pos + ITEM_SIZE]
        previous = end
        pos += ITEM_SIZE
    return index
