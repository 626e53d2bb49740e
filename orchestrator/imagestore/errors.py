"""The image store's errors: one branch of the orchestrator's tree.

::

    OrchestratorError
    └── StoreError              500  anything the image store refuses or cannot do
        ├── UnsafeName          422  an image name, chunk id or path outside the allow-list
        ├── MalformedIndex      422  a .caibx index that does not follow casync's format
        ├── ChunkMissing        404  a chunk an index needs is not in the store
        ├── ChunkCorrupt        500  a stored chunk does not decompress or hash to its id
        ├── SourceChanged       409  a file changed between its check and its import
        ├── NotStaged           404  a distribution point holds no manifest or index of an image
        └── PointUnavailable    502  a distribution point cannot be reached, or answers
                                     outside its protocol (status, length, TLS)

Every failure of the store, including a library's (zstandard, OSError while
reading an index, http.client and ssl while pulling from a point), reaches
callers as one of these, raised ``from`` the original, so a caller needs to
catch ``StoreError`` alone (and, when pulling, the manifest's refusals).
"""

from __future__ import annotations

from orchestrator.errors import OrchestratorError


class StoreError(OrchestratorError):
    """The image store refused or could not complete an operation."""

    code = "image_store_error"
    http_status = 500
    exit_code = 7


class UnsafeName(StoreError):
    """A name, chunk id or path is outside what the store allows."""

    code = "unsafe_name"
    http_status = 422
    exit_code = 2


class MalformedIndex(StoreError):
    """An index file is not a valid casync blob index (.caibx).

    ``offset`` is the byte offset in the index file where the fault was found.
    """

    code = "malformed_index"
    http_status = 422
    exit_code = 2

    def __init__(self, message: str, *, offset: int, source: str = "index") -> None:
        super().__init__(f"{source}: malformed index at byte {offset}: {message}")
        self.offset = offset


class ChunkMissing(StoreError):
    """A chunk an index refers to is not in the store."""

    code = "chunk_missing"
    http_status = 404
    exit_code = 4

    def __init__(self, chunk_id: str) -> None:
        super().__init__(f"chunk {chunk_id} is not in the store")
        self.chunk_id = chunk_id


class ChunkCorrupt(StoreError):
    """A stored chunk does not decompress, is too large, or does not hash to its id."""

    code = "chunk_corrupt"

    def __init__(self, chunk_id: str, reason: str) -> None:
        super().__init__(f"chunk {chunk_id} is corrupt: {reason}")
        self.chunk_id = chunk_id


class SourceChanged(StoreError):
    """The bytes an import read are not those the file held when it was checked."""

    code = "source_changed"
    http_status = 409
    exit_code = 5


class NotStaged(StoreError):
    """A distribution point holds no manifest or no index of the image asked for."""

    code = "not_staged"
    http_status = 404
    exit_code = 4


class PointUnavailable(StoreError):
    """A distribution point cannot be reached, or answered outside its protocol."""

    code = "point_unavailable"
    http_status = 502
    exit_code = 8


class StoreBusy(StoreError):
    """Another process has the store open, so a clean-up that needs it alone cannot run."""

    code = "image_store_busy"
    http_status = 409
    exit_code = 5
