"""The content-addressed image store, in casync's on-disk format.

Local disk, and the HTTP of a building's distribution point (its server and
its clients' pull); it knows nothing of the database or the services.

- ``caibx``: casync's blob index (.caibx), encoded and strictly decoded; the
  digests (SHA-512/256, SHA-256) and chunk sizes.
- ``chunker``: content-defined chunks (FastCDC, compiled) of a file streamed
  in blocks, zero runs recognised without hashing.
- ``store``: the chunk store (``<4 hex>/<id>.cacnk``, zstd) and the image
  store around it (import, verify, stats), every write atomic.
- ``assemble``: rebuild a file from an index, using a seed file first.
- ``point``: a building's distribution point, a store root served read-only
  over HTTP(S), and its process.
- ``fetch``: a client of a point: ``HttpStore`` (a chunk source; many chunks
  fetched at once into a local cache) and ``pull`` (signed manifest first,
  then only the chunks a seed lacks); ``pull`` is also the client's command.
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
