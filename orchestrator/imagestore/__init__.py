"""The content-addressed image store, in casync's on-disk format.

Local disk only: it knows nothing of the database, the services or HTTP.

- ``caibx``: casync's blob index (.caibx), encoded and strictly decoded; the
  digests (SHA-512/256, SHA-256) and chunk sizes.
- ``chunker``: content-defined chunks (FastCDC, compiled) of a file streamed
  in blocks, zero runs recognised without hashing.
- ``store``: the chunk store (``<4 hex>/<id>.cacnk``, zstd) and the image
  store around it (import, verify, stats), every write atomic.
- ``assemble``: rebuild a file from an index, using a seed file first.
- ``names``: allow-lists for image names, chunk ids and paths.
- ``errors``: ``StoreError`` and its branches.
"""

from __future__ import annotations

from orchestrator.imagestore.assemble import ExtractReport, Seed, extract, missing_chunks
from orchestrator.imagestore.caibx import ChunkSizes, Digest, Index, chunk_id_hex, decode
from orchestrator.imagestore.errors import (
    ChunkCorrupt,
    ChunkMissing,
    MalformedIndex,
    StoreError,
    UnsafeName,
)
from orchestrator.imagestore.names import image_name
from orchestrator.imagestore.store import (
    ChunkSource,
    ChunkStore,
    ImageStore,
    ImportReport,
    IndexStats,
    SharedStats,
    VerifyReport,
    read_index,
    write_index,
)

__all__ = [
    "ChunkCorrupt",
    "ChunkMissing",
    "ChunkSizes",
    "ChunkSource",
    "ChunkStore",
    "Digest",
    "ExtractReport",
    "ImageStore",
    "ImportReport",
    "Index",
    "IndexStats",
    "MalformedIndex",
    "Seed",
    "SharedStats",
    "StoreError",
    "UnsafeName",
    "VerifyReport",
    "chunk_id_hex",
    "decode",
    "extract",
    "image_name",
    "missing_chunks",
    "read_index",
    "write_index",
]
