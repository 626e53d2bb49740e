"""A client's side of a distribution point: chunks over HTTP(S), fetched in parallel,
and :func:`pull`, which rebuilds an image from a seed and the chunks it lacks.

:class:`HttpStore` is a :class:`~orchestrator.imagestore.store.ChunkSource`
over a point (``get`` decompresses and re-hashes every chunk, like the local
store) and fetches many chunks at once (into a local chunk cache, or handed
to the caller as they come) with
:meth:`HttpStore.fetch_many`: casync fetches chunks one after the other, so
on a link with any latency most of its time is waiting; here ``workers``
threads, each with its own keep-alive connection, keep that many requests in
flight, each for up to ``FETCH_BATCH`` chunks (``POST /chunks``; one ``GET``
per chunk from a point that does not answer it).

:func:`pull` checks before it fetches, in this order, and stops at the first
refusal:

1. ``manifests/<name>.json``: its Ed25519 signature by one of the district's
   keys, that it is the image expected (kind, scope, name, version), not older
   than the one installed, and not at its sunset (:func:`manifest.verify`).
   No chunk and no index is asked for before this passes.
2. ``indexes/<name>.caibx``: no longer than the signed index, and its SHA-256
   the signed one (:func:`manifest.check_index`); then decoded with every
   field checked. The index names every chunk by its digest.
3. The seed (the image the client runs now) is described by its own index when
   the client kept one (``seed_index``, what ``save_index`` wrote at the pull
   that made it, used when its size is the seed's), otherwise chunked with the
   index's chunk sizes and digest. Only the chunks neither in it, nor all
   zeros, nor in the cache (``cache_dir``, read only), nor written by the
   killed pull this one resumes are fetched, in parallel, each decompressed
   and re-hashed before it is used.
4. The image is assembled in a temporary file beside ``out``
   (:class:`assemble.PartialOutput`, named after ``out`` and the signed
   index): the chunks a killed pull recorded in it are re-hashed there, the
   seed's chunks are copied, each re-hashed as it is read (one that changed
   since the seed was indexed is fetched instead), then the fetching threads
   write each checked chunk where the index places it as it arrives; once a
   second the file's data is synced and the chunks written since are appended
   to its journal. It is fsynced and renamed over ``out`` only when whole;
   then, with ``save_index``, the signed index is kept too.

A pull that is killed or fails leaves nothing under ``out``; its partial file
and journal stay beside it (``.orchestrator-partial.<name>.resume-<key>``).
The next pull of the same image to the same ``out`` takes them up: it
re-hashes every recorded chunk from the file (a local read; one that no longer
matches is fetched again) and fetches only the rest. A pull of another image
to that ``out`` removes them; a file still being written is never taken (it
is locked while in use; a second pull of the same image to the same ``out``
meanwhile writes a partial file of its own, not resumable).

Errors (everything else of http.client, ssl and the OS is translated into these)::

    StoreError
    ├── PointUnavailable   the point cannot be reached, times out, or answers
    │                      outside the protocol (status, missing or excessive length, TLS)
    ├── NotStaged          the point has no manifest or index of the image
    ├── ChunkMissing       the point has no such chunk
    ├── ChunkCorrupt       a chunk from the point does not decompress or hash to its id
    └── MalformedIndex     the (signed) index does not follow casync's format
    ManifestRefused        Malformed, Unsigned, Tampered, WrongImage, Replayed, Sunset
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlsplit

import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from orchestrator.imagestore import chunker, names
from orchestrator.imagestore import manifest as signing
from orchestrator.imagestore.assemble import (
    ExtractReport,
    PartialOutput,
    Seed,
    remove_stale_partials,
    seed_locations,
)
from orchestrator.imagestore.caibx import (
    CHUNK_SIZE_LIMIT,
    HEAD_SIZE,
    ID_SIZE,
    ITEM_SIZE,
    TAIL_SIZE,
    Digest,
    Index,
    decode,
)
from orchestrator.imagestore.errors import (
    ChunkMissing,
    NotStaged,
    PointUnavailable,
    StoreError,
    UnsafeName,
)
from orchestrator.imagestore.point import ABSENT, MAX_BATCH_IDS
from orchestrator.imagestore.store import (
    ChunkStore,
    ImageStore,
    StagedChunk,
    atomic_write,
    decode_chunk,
    read_index,
)

log = logging.getLogger(__name__)

USER_AGENT = "orchestrator-pull/1"
COMMIT_BATCH = 256
"""Fetched chunks made durable together in a cache (one syncfs on Linux), then renamed..."""
COMMIT_SECONDS = 1.0
"""...or as many as were checked in this long; and how often a pull's written chunks are
recorded for resuming (:meth:`PartialOutput.record`): a killed pull loses at most this much."""
MISSING_BATCH = 1_000_000
"""Ids asked about in one ``POST /missing`` (the point refuses more than 2 000 000)."""
FETCH_BATCH = MAX_BATCH_IDS // 2
"""Chunks asked for in one ``POST /chunks`` at most (32; the point refuses more than
64); fewer near the end of a fetch, so every worker still has some."""
_NO_BATCHES = frozenset(
    {HTTPStatus.NOT_FOUND, HTTPStatus.METHOD_NOT_ALLOWED, HTTPStatus.NOT_IMPLEMENTED}
)


def _compressed_limit(max_size: int) -> int:
    # zstd never needs more than this to hold max_size bytes (a stored frame's overhead).
    return max_size + max_size // 64 + 1024


Progress = Callable[[int, int, int], None]
"""Called as ``progress(chunks_done, chunks_total, bytes_downloaded)`` while fetching."""
Deliver = Callable[[bytes, bytes], None]
"""Called as ``deliver(chunk_id, data)`` with each chunk's checked data."""
Record = Callable[[list[bytes]], None]
"""Called as ``record(chunk_ids)`` with delivered chunks, in batches."""


@dataclass(frozen=True)
class FetchReport:
    """What :meth:`HttpStore.fetch_many` did."""

    chunks_wanted: int
    """Distinct chunks asked for."""
    chunks_cached: int
    """Of those, already in the cache: not fetched."""
    chunks_fetched: int
    bytes_downloaded: int
    """Compressed chunk bytes received (bodies only; HTTP headers not counted)."""
    bytes_fetched: int
    """The fetched chunks' uncompressed bytes."""
    connections: int
    """Connections opened to the point."""
    seconds: float


@dataclass(frozen=True)
class PullReport:
    """What :func:`pull` did; ``bytes_downloaded`` counts every body received."""

    manifest: signing.Manifest
    size: int
    bytes_from_seed: int
    bytes_from_cache: int
    """Bytes of chunks not from the seed: fetched now, read from the local cache, or
    fetched by the killed pull this one resumed."""
    bytes_zero: int
    bytes_repeated: int
    bytes_downloaded: int
    """Manifest, index and chunk bytes received from the point."""
    chunks_fetched: int
    chunks_cached: int
    seconds: float
    fetch: FetchReport
    extract: ExtractReport
    seed_by: str = "none"
    """How the seed's chunks were found: "index" (the seed index given), "chunked", "none"."""
    phases: Mapping[str, float] = field(default_factory=dict)
    """Seconds by phase: manifest_and_index, seed (finding its chunks), resume (re-hashing
    what a killed pull wrote), seed_copy, fetch, fetch_and_copy (the two side by side, to
    the last chunk), flush (fsync, rename)."""
    chunks_resumed: int = 0
    """Chunks a killed (or failed) pull had written and recorded, re-hashed from its
    partial output and not fetched again."""


class HttpStore:
    """A distribution point at ``base_url`` (``http://`` or ``https://``, optionally a path).

    Each thread that asks gets its own keep-alive connection, reused for its
    later requests; :meth:`close` (or leaving the ``with`` block) closes them all.
    ``ca_file`` is the PEM certificate(s) an HTTPS point's certificate must chain
    to (the system's trust store when None); its name must match the URL's host.

    Raises (when made): UnsafeName for a URL that is not http(s)://host[:port][/path];
    PointUnavailable when ``ca_file`` cannot be loaded.
    """

    def __init__(
        self,
        base_url: str,
        *,
        workers: int = 8,
        timeout: float = 30.0,
        ca_file: Path | str | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.query
            or parts.fragment
            or parts.username
        ):
            raise UnsafeName(f"{base_url!r} is not an http:// or https:// point URL")
        try:
            self.port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise UnsafeName(f"{base_url!r}: {exc}") from exc
        self.host = parts.hostname
        self.url = base_url.rstrip("/")
        self._prefix = parts.path.rstrip("/")
        self.workers = max(1, workers)
        self.timeout = timeout
        self._tls: ssl.SSLContext | None = None
        if parts.scheme == "https":
            try:
                self._tls = ssl.create_default_context(
                    cafile=str(ca_file) if ca_file is not None else None
                )
            except (OSError, ssl.SSLError) as exc:
                raise PointUnavailable(f"cannot load the CA file {ca_file}: {exc}") from exc
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPConnection] = set()
        self.connections_opened = 0
        self.bytes_downloaded = 0
        """Every body byte received through this store so far."""
        self.batches = True
        """Whether chunks are asked for many at a time; False once the point has said
        (404, 405 or 501) it does not answer ``POST /chunks``."""

    def __enter__(self) -> HttpStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            conns, self._open = self._open, set()
        for conn in conns:
            conn.close()

    # -- one request ---------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._tls is not None:
                conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout, context=self._tls
                )
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
            with self._lock:
                self._open.add(conn)
                self.connections_opened += 1
        return conn

    def _drop(self) -> None:
        """Close this thread's connection (the next request opens another)."""
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            with self._lock:
                self._open.discard(conn)
            conn.close()

    def _zstd(self) -> zstandard.ZstdDecompressor:
        d: zstandard.ZstdDecompressor | None = getattr(self._local, "zstd", None)
        if d is None:
            d = self._local.zstd = zstandard.ZstdDecompressor()
        return d

    def request(
        self,
        method: str,
        path: str,
        *,
        limit: int,
        body: bytes | None = None,
        content_type: str | None = None,
        none_on: frozenset[int] = frozenset({HTTPStatus.NOT_FOUND}),
    ) -> bytes | None:
        """The body of a 200 answer to ``method path`` (relative to the URL), None on a
        status in ``none_on`` (404: not found) with a short body.

        A request on a kept-alive connection the point has closed meanwhile is
        sent again once, on a new connection.

        Raises:
            PointUnavailable: no connection, a timeout, TLS refused, another status,
                or a body without a length or longer than ``limit``.
        """
        target = f"{self._prefix}/{path.lstrip('/')}"
        headers = {"User-Agent": USER_AGENT}
        if content_type is not None:
            headers["Content-Type"] = content_type
        for attempt in (1, 2):
            conn = self._connection()
            reused = conn.sock is not None
            try:
                conn.request(method, target, body=body, headers=headers)
                response = conn.getresponse()
                return self._body(response, method, target, limit, none_on)
            except (
                http.client.RemoteDisconnected,
                BrokenPipeError,
                ConnectionResetError,
            ) as exc:
                self._drop()
                if reused and attempt == 1:
                    continue
                raise PointUnavailable(f"{self.url}: {method} {target}: {exc}") from exc
            except PointUnavailable:
                self._drop()
                raise
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                what = (
                    "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
                )
                raise PointUnavailable(f"{self.url}: {method} {target}: {what}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _body(
        self,
        response: http.client.HTTPResponse,
        method: str,
        target: str,
        limit: int,
        none_on: frozenset[int],
    ) -> bytes | None:
        status = response.status
        header = response.getheader("Content-Length")
        try:
            length = int(header) if header is not None else -1
        except ValueError:
            length = -1
        if status == 200 and 0 <= length <= limit:
            data = response.read()
            if len(data) != length:
                raise PointUnavailable(
                    f"{self.url}: {target}: {len(data)} bytes of the {length} announced"
                )
            with self._lock:
                self.bytes_downloaded += length
        elif status in none_on and 0 <= length <= 4096:
            response.read()
            data = None
        elif status == 200 and length > limit:
            raise ResponseTooLarge(
                f"{self.url}: {target}: {length} bytes, more than the {limit} expected",
                length=length,
            )
        elif status == 200:
            raise PointUnavailable(f"{self.url}: {target}: an answer without a length")
        else:
            raise PointUnavailable(f"{self.url}: {method} {target}: HTTP {status}")
        if response.will_close:
            self._drop()
        return data

    # -- chunks --------------------------------------------------------------------

    def chunk_bytes(self, chunk_id: bytes, *, max_size: int = CHUNK_SIZE_LIMIT) -> bytes:
        """A chunk file's compressed bytes, as the point holds them (not yet checked).

        Raises:
            UnsafeName: not a 32-byte id.
            ChunkMissing: the point has no such chunk.
            PointUnavailable: see :meth:`request`.
        """
        if len(chunk_id) != ID_SIZE:
            raise UnsafeName(f"a chunk id is {ID_SIZE} bytes, not {len(chunk_id)}")
        h = chunk_id.hex()
        data = self.request("GET", f"chunks/{h[:4]}/{h}.cacnk", limit=_compressed_limit(max_size))
        if data is None:
            raise ChunkMissing(h)
        return data

    def chunk_batch(
        self, ids: Sequence[bytes], *, max_size: int = CHUNK_SIZE_LIMIT
    ) -> list[bytes] | None:
        """The compressed chunk files of ``ids``, in order, in one ``POST /chunks``
        (not yet checked); None from a point without it (:attr:`batches` is then False):
        one that answers 404, 405 or 501, as an older point or a static web server
        serving the store's folder does.

        Raises:
            ValueError: more than the point's ``MAX_BATCH_IDS`` (64) ids.
            UnsafeName: an id that is not 32 bytes.
            ChunkMissing: the point has not one of them (the first it lacks).
            PointUnavailable: see :meth:`request`, or an answer not framed as the
                point's module says (a length over ``max_size`` compressed, a body
                longer or shorter than its lengths).
        """
        if len(ids) > MAX_BATCH_IDS:
            raise ValueError(f"{len(ids)} chunks; a point answers at most {MAX_BATCH_IDS}")
        for chunk_id in ids:
            if len(chunk_id) != ID_SIZE:
                raise UnsafeName(f"a chunk id is {ID_SIZE} bytes, not {len(chunk_id)}")
        most = _compressed_limit(max_size)
        answer = self.request(
            "POST",
            "chunks",
            body=b"".join(ids),
            content_type="application/octet-stream",
            limit=len(ids) * (8 + most),
            none_on=_NO_BATCHES,
        )
        if answer is None:
            self.batches = False
            return None
        table = 8 * len(ids)
        if len(answer) < table:
            raise PointUnavailable(f"{self.url}: /chunks: an answer not framed as asked")
        lengths = [int.from_bytes(answer[at : at + 8], "big") for at in range(0, table, 8)]
        for chunk_id, length in zip(ids, lengths, strict=True):
            if length == ABSENT:
                raise ChunkMissing(chunk_id.hex())
        if any(n > most for n in lengths) or len(answer) != table + sum(lengths):
            raise PointUnavailable(f"{self.url}: /chunks: an answer not framed as asked")
        chunks: list[bytes] = []
        at = table
        for length in lengths:
            chunks.append(answer[at : at + length])
            at += length
        return chunks

    def _fetched(self, ids: Sequence[bytes], max_size: int) -> Iterator[tuple[bytes, bytes]]:
        """(id, compressed bytes) of each of ``ids``: in one batch when the point can."""
        batch = self.chunk_batch(ids, max_size=max_size) if len(ids) > 1 and self.batches else None
        if batch is not None:
            yield from zip(ids, batch, strict=True)
        else:
            for chunk_id in ids:
                yield chunk_id, self.chunk_bytes(chunk_id, max_size=max_size)

    def get(self, chunk_id: bytes, *, digest: Digest, max_size: int = CHUNK_SIZE_LIMIT) -> bytes:
        """A chunk's data from the point, decompressed and re-hashed.

        Raises:
            ChunkMissing: the point has no such chunk.
            ChunkCorrupt: it does not decompress, is larger than ``max_size``, or
                does not hash to its id.
            PointUnavailable: see :meth:`request`.
        """
        compressed = self.chunk_bytes(chunk_id, max_size=max_size)
        return decode_chunk(
            chunk_id, compressed, digest=digest, max_size=max_size, zstd=self._zstd()
        )

    def missing(self, ids: Iterable[bytes]) -> list[bytes]:
        """Of ``ids``, those the point does not hold, in order, each once (``POST /missing``).

        Raises:
            PointUnavailable: see :meth:`request`, or an answer that is not whole ids.
        """
        wanted = list(dict.fromkeys(ids))
        lacking: list[bytes] = []
        for at in range(0, len(wanted), MISSING_BATCH):
            batch = wanted[at : at + MISSING_BATCH]
            answer = self.request(
                "POST",
                "missing",
                body=b"".join(batch),
                content_type="application/octet-stream",
                limit=len(batch) * ID_SIZE,
            )
            if answer is None or len(answer) % ID_SIZE:
                raise PointUnavailable(f"{self.url}: /missing: not an answer of whole ids")
            lacking += (answer[i : i + ID_SIZE] for i in range(0, len(answer), ID_SIZE))
        return lacking

    def fetch_many(
        self,
        ids: Iterable[bytes],
        into: ChunkStore | None,
        progress: Progress | None = None,
        *,
        digest: Digest = Digest.SHA512_256,
        max_size: int = CHUNK_SIZE_LIMIT,
        deliver: Deliver | None = None,
        record: Record | None = None,
    ) -> FetchReport:
        """Fetch the chunks ``into`` lacks, ``workers`` at a time, into that local store.

        Each chunk is decompressed and re-hashed before it is written (under a
        temporary name, then renamed in batches after one flush, at least once a
        second), so the cache only ever holds checked chunks. On an error the
        other workers stop; the chunks already checked stay in the cache (a later
        call skips them) and the first error is raised.
        ``progress(done, total, bytes_downloaded)`` is called from the worker
        threads, one at a time, after each chunk.

        ``deliver(chunk_id, data)``, when given, is called from the worker threads
        (several at once) with every chunk's checked data, fetched or read back
        from the cache (re-hashed there too), as soon as it is at hand; an error it
        raises stops the fetch like any other.

        ``record(chunk_ids)``, given with ``deliver``, takes the cache's place:
        fetched chunks are not written to ``into`` (only read from it, when it has
        them; it may be None), and the ids of the chunks ``deliver`` returned from
        are passed to ``record`` instead, from one worker at a time, at least once
        a second and once more when the fetch stops, whatever stopped it.

        Raises:
            ChunkMissing, ChunkCorrupt, PointUnavailable: the first that happened.
            StoreError: the cache could not be written, or ``record`` failed.
        """
        if record is not None and deliver is None:
            raise ValueError("record is for the chunks deliver was given")
        if into is None and record is None:
            raise ValueError("fetched chunks go into a cache unless they are recorded")
        started = time.monotonic()
        opened_before = self.connections_opened
        unique = dict.fromkeys(ids)
        wanted = len(unique)
        # (id, in the cache already), in the order given.
        plan = [(i, into is not None and into.has(i)) for i in unique]
        del unique
        cached = sum(1 for _, have in plan if have)
        total = wanted - cached
        if deliver is None:
            plan = [item for item in plan if not item[1]]
        lock = threading.Lock()
        stop = threading.Event()
        staged: list[StagedChunk] = []
        written: list[bytes] = []  # delivered, not yet recorded
        errors: list[BaseException] = []
        taken = done = downloaded = logical = 0
        last_commit = time.monotonic()
        # One batch recorded at a time (each after its data's flush).
        recording = threading.Lock()

        def flush(batch: list[StagedChunk], ids: list[bytes]) -> None:
            if batch:
                assert into is not None
                into.commit(batch)
            if ids:
                assert record is not None
                with recording:
                    record(ids)

        def take() -> list[tuple[bytes, bool]]:
            nonlocal taken
            with lock:
                if stop.is_set():
                    return []
                n = max(1, min(FETCH_BATCH, (len(plan) - taken) // (self.workers * 4)))
                some = plan[taken : taken + n]
                taken += len(some)
                return some

        def settle(
            chunk_id: bytes, data: bytes, compressed: bytes | None, fresh: StagedChunk | None
        ) -> None:
            """Deliver one checked chunk (``compressed`` None: from the cache) and count it."""
            nonlocal done, downloaded, logical, last_commit
            if deliver is not None:
                deliver(chunk_id, data)
            batch: list[StagedChunk] = []
            ids: list[bytes] = []
            with lock:
                if fresh is not None:
                    staged.append(fresh)
                if record is not None:
                    written.append(chunk_id)
                now = time.monotonic()
                if staged and (len(staged) >= COMMIT_BATCH or now - last_commit >= COMMIT_SECONDS):
                    batch = staged[:]
                    staged.clear()
                    last_commit = now
                if written and now - last_commit >= COMMIT_SECONDS:
                    ids = written[:]
                    written.clear()
                    last_commit = now
                if compressed is not None:
                    done += 1
                    downloaded += len(compressed)
                    logical += len(data)
                    if progress is not None:
                        progress(done, total, downloaded)
            flush(batch, ids)

        def work() -> None:
            try:
                while some := take():
                    lacking: list[bytes] = []
                    for chunk_id, have in some:
                        data: bytes | None = None
                        if have and deliver is not None:
                            assert into is not None
                            # Gone from the cache since it was asked: fetched below.
                            with contextlib.suppress(ChunkMissing):
                                data = into.get(chunk_id, digest=digest, max_size=max_size)
                        if data is None:
                            lacking.append(chunk_id)
                        else:
                            settle(chunk_id, data, None, None)
                    for chunk_id, compressed in self._fetched(lacking, max_size):
                        data = decode_chunk(
                            chunk_id,
                            compressed,
                            digest=digest,
                            max_size=max_size,
                            zstd=self._zstd(),
                        )
                        fresh: StagedChunk | None = None
                        if record is None:
                            assert into is not None
                            fresh = into.stage(
                                chunk_id, data, digest=digest, compressed=compressed, hashed=True
                            )
                        settle(chunk_id, data, compressed, fresh)
                        if stop.is_set():
                            return
            except BaseException as exc:
                with lock:
                    errors.append(exc)
                stop.set()
            finally:
                self._drop()

        threads = [
            threading.Thread(target=work, name=f"fetch-{n}", daemon=True)
            for n in range(min(self.workers, len(plan)))
        ]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        except BaseException:
            stop.set()
            for thread in threads:
                if thread.ident is not None:
                    thread.join()
            raise
        finally:
            # Checked chunks are kept, whatever stopped the fetch: a retry skips them.
            # (Each batch's data is flushed before its renames; the renames are not
            # synced after: a cache that loses one in a crash fetches the chunk again.)
            flush(staged, written)
        if errors:
            raise errors[0]
        return FetchReport(
            chunks_wanted=wanted,
            chunks_cached=wanted - done,
            chunks_fetched=done,
            bytes_downloaded=downloaded,
            bytes_fetched=logical,
            connections=self.connections_opened - opened_before,
            seconds=time.monotonic() - started,
        )


class ResponseTooLarge(PointUnavailable):
    """The point announced a body longer than the request allows."""

    def __init__(self, message: str, *, length: int) -> None:
        super().__init__(message)
        self.length = length


def seed_index(path: Path | str, like: Index) -> Index:
    """An index of the file at ``path`` with ``like``'s chunk sizes and digest.

    Raises:
        StoreError: the file cannot be read.
    """
    source = names.plain_file(path)
    index = Index(digest=like.digest, sizes=like.sizes)
    try:
        with open(source, "rb", buffering=0) as f:
            for c in chunker.chunks(f, sizes=like.sizes, digest=like.digest):
                index.append(c.id, c.length)
    except OSError as exc:
        raise StoreError(f"seed {source}: cannot read: {exc}") from exc
    return index


_chunk_seed = seed_index  # pull's parameter of that name hides the function there


def pull(
    base_url: str,
    name: str,
    out: Path | str,
    *,
    trusted_keys: Mapping[str, Ed25519PublicKey],
    kind: str,
    scope: str,
    image_name: str,
    today: date,
    version: str | None = None,
    installed_version: str | None = None,
    seed: Path | str | None = None,
    cache_dir: Path | str | None = None,
    workers: int = 8,
    progress: Progress | None = None,
    ca_file: Path | str | None = None,
    timeout: float = 30.0,
    seed_index: Path | str | None = None,
    save_index: Path | str | None = None,
) -> PullReport:
    """Rebuild image ``name`` from the point at ``base_url`` into ``out`` (see the module).

    ``kind``, ``scope``, ``image_name`` and ``version`` (any when None) are what
    the signed manifest must say; ``installed_version`` is the version the
    client runs now, which the manifest may not go below; ``today`` decides the
    sunset. ``seed`` is a file to take chunks from (usually the current image,
    and it may be ``out`` itself); ``cache_dir``, a chunk store (it is made when
    absent) whose chunks are taken instead of fetched; fetched chunks are not
    written there: a killed pull resumes from its partial output instead.

    ``seed_index`` is a casync index of ``seed`` (what ``save_index`` wrote at the
    pull that made it): a hint, used instead of chunking the seed when it reads as
    an index of the image's digest whose size is the seed's; otherwise the seed is
    chunked (the reason logged at INFO). Either way each seed chunk is re-hashed
    as it is copied, and one that no longer matches is fetched instead.
    ``save_index``: once the image is in place, its index (the signed bytes) is
    written there atomically, for the next pull's ``seed_index``.

    Raises:
        ManifestRefused: the manifest is malformed, unsigned, tampered, for another
            image, older than the installed one, or at its sunset; or the index is
            not the one it signed (Tampered). Nothing was fetched after it.
        NotStaged, PointUnavailable, ChunkMissing, ChunkCorrupt, MalformedIndex,
            StoreError: see the module; nothing is left at ``out`` (but a
            ``save_index`` that cannot be written fails the pull after ``out``
            was replaced).
    """
    started = time.monotonic()
    names.image_name(name)
    destination = names.plain_file(out)
    save_to = names.plain_file(save_index) if save_index is not None else None
    phases: dict[str, float] = {}
    with HttpStore(base_url, workers=workers, timeout=timeout, ca_file=ca_file) as point:
        try:
            envelope = _file(point, f"manifests/{name}.json", limit=signing.MAX_ENVELOPE)
        except ResponseTooLarge as exc:
            raise signing.Malformed(
                f"manifest: {exc.length} bytes; at most {signing.MAX_ENVELOPE}"
            ) from exc
        m = signing.verify(
            envelope,
            trusted_keys,
            kind=kind,
            scope=scope,
            name=image_name,
            today=today,
            version=version,
            installed_version=installed_version,
        )
        signed_length = HEAD_SIZE + m.chunks * ITEM_SIZE + TAIL_SIZE
        try:
            raw = _file(point, f"indexes/{name}.caibx", limit=signed_length)
        except ResponseTooLarge as exc:
            raise signing.Tampered(
                f"index of {m.ref} is {exc.length} bytes, not the signed {signed_length}"
            ) from exc
        signing.check_index(m, raw)
        index = decode(raw, source=f"{point.url}/indexes/{name}.caibx")
        phases["manifest_and_index"] = time.monotonic() - started

        at = time.monotonic()
        seed_file = names.plain_file(seed) if seed is not None else None
        seed_by = "none"
        locations: dict[bytes, tuple[int, int]] = {}
        if seed_file is not None:
            described = _usable_seed_index(seed_index, seed_file, index)
            seed_by = "index" if described is not None else "chunked"
            if described is None:
                try:
                    described = _chunk_seed(seed_file, index)
                except ImportError as exc:
                    # An agent bundled without the chunker (fastcdc has no wheel for
                    # every client platform) pulls whole what it cannot find.
                    log.warning("seed %s not used: it has no usable index and %s", seed_file, exc)
                    seed_file, seed_by = None, "none"
            if seed_file is not None and described is not None:
                locations = seed_locations(index, Seed(seed_file, described))
        elif seed_index is not None:
            log.info("seed index %s not used: no seed file was given", seed_index)
        phases["seed"] = time.monotonic() - at

        # Named after the signed index: only a pull of the same image into the same
        # file takes up what a killed one wrote.
        resume_key = hashlib.sha256(raw).hexdigest()[:32]
        with contextlib.ExitStack() as stack:
            cache = stack.enter_context(ImageStore(cache_dir)) if cache_dir is not None else None
            output = stack.enter_context(
                PartialOutput(destination, index.size, resume_key=resume_key)
            )
            # After ours is locked: any other partial output of ``out`` no live pull holds.
            remove_stale_partials(destination)
            fetched, extracted, resumed = _assemble(
                index,
                point,
                cache.chunks if cache is not None else None,
                output,
                seed_file,
                locations,
                progress,
                phases,
            )
            at = time.monotonic()
            output.finish()
            phases["flush"] = time.monotonic() - at
        downloaded = point.bytes_downloaded
    if save_to is not None:
        atomic_write(save_to.parent, save_to.name, raw)
    return PullReport(
        manifest=m,
        size=index.size,
        bytes_from_seed=extracted.bytes_from_seed,
        bytes_from_cache=extracted.bytes_from_source,
        bytes_zero=extracted.bytes_zero,
        bytes_repeated=extracted.bytes_repeated,
        bytes_downloaded=downloaded,
        chunks_fetched=fetched.chunks_fetched,
        chunks_cached=fetched.chunks_cached,
        seconds=time.monotonic() - started,
        fetch=fetched,
        extract=extracted,
        seed_by=seed_by,
        phases=phases,
        chunks_resumed=resumed,
    )


def _usable_seed_index(hint: Path | str | None, seed: Path, like: Index) -> Index | None:
    """The seed's index from the file ``hint``, or None (and why, logged) to chunk the seed."""
    if hint is None:
        return None
    try:
        described = read_index(hint)
    except StoreError as exc:
        log.info("seed index %s not used (%s): chunking the seed instead", hint, exc)
        return None
    try:
        size = os.stat(seed).st_size
    except OSError as exc:
        log.info("seed index %s not used (seed %s: %s): chunking the seed", hint, seed, exc)
        return None
    if described.size != size:
        log.info(
            "seed index %s not used: it describes %d bytes, the seed %s has %d; "
            "chunking the seed instead",
            hint,
            described.size,
            seed,
            size,
        )
        return None
    if described.digest is not like.digest:
        log.info(
            "seed index %s not used: its chunk ids are %s, the image's %s; chunking the seed",
            hint,
            described.digest.value,
            like.digest.value,
        )
        return None
    return described


def _assemble(
    index: Index,
    point: HttpStore,
    cache: ChunkStore | None,
    output: PartialOutput,
    seed: Path | None,
    locations: Mapping[bytes, tuple[int, int]],
    progress: Progress | None,
    phases: dict[str, float],
) -> tuple[FetchReport, ExtractReport, int]:
    """Fill ``output``: the chunks a killed pull recorded there re-hashed in place,
    the seed's chunks copied (each re-hashed as it is read), then the rest fetched
    (or read back from the cache) by the fetching threads, each written where the
    index places it as soon as it is checked (not read back) and recorded in the
    output's journal once a second. Also returns how many chunks were resumed.

    A seed chunk whose bytes no longer hash to its id is fetched afterwards.
    """
    started = time.monotonic()
    hash_ = index.digest.hasher()
    zero = chunker.zero_chunk_id(index.digest, index.sizes.max)
    zero_len = index.sizes.max
    # Where each chunk goes: its first place, and the others of a chunk that repeats.
    first: dict[bytes, tuple[int, int]] = {}
    more: dict[bytes, list[tuple[int, int]]] = {}
    zero_bytes = 0
    for start, length, chunk_id in index.chunks():
        if length == zero_len and chunk_id == zero:
            zero_bytes += length  # a hole: the output was made at its full size
        elif chunk_id in first:
            more.setdefault(chunk_id, []).append((start, length))
        else:
            first[chunk_id] = (start, length)
    resumed: set[bytes] = set()
    if output.journaled:
        # What a killed pull wrote and recorded: counted only if it still hashes to its id.
        at = time.monotonic()
        for chunk_id in dict.fromkeys(output.journaled):
            place = first.get(chunk_id)
            if place is None:
                continue
            data = output.read(*place)
            if len(data) == place[1] and hash_(data) == chunk_id:
                for start, _length in more.get(chunk_id, ()):
                    output.write(data, start)
                resumed.add(chunk_id)
        log.info(
            "resumed %d of the %d chunks recorded in %s",
            len(resumed),
            len(output.journaled),
            output.path,
        )
        phases["resume"] = time.monotonic() - at
    from_seed: list[tuple[int, int, bytes]] = []  # (seed offset, length, id)
    to_fetch: list[bytes] = []  # in the image's order
    for chunk_id, (_start, length) in first.items():
        if chunk_id in resumed:
            continue
        where = locations.get(chunk_id)
        if where is not None and where[1] == length:
            from_seed.append((where[0], length, chunk_id))
        else:
            to_fetch.append(chunk_id)
    from_seed.sort()

    def put(chunk_id: bytes, data: bytes) -> None:
        # Every place of the chunk, from data already checked against its id.
        for start, length in (first[chunk_id], *more.get(chunk_id, ())):
            if len(data) != length:
                raise StoreError(
                    f"chunk {chunk_id.hex()} is {len(data)} bytes, the index says {length}"
                )
            output.write(data, start)

    mismatched: list[bytes] = []
    if from_seed:
        # The seed first, then the fetch: side by side they took as long on two
        # cores (each fetch batch's syncfs also flushes the output being written).
        assert seed is not None
        at = time.monotonic()
        try:
            fd = os.open(seed, os.O_RDONLY)
            try:
                for offset, length, chunk_id in from_seed:
                    data = os.pread(fd, length, offset)
                    if len(data) == length and hash_(data) == chunk_id:
                        put(chunk_id, data)
                    else:
                        mismatched.append(chunk_id)  # changed since it was indexed
            finally:
                os.close(fd)
        except OSError as exc:
            raise StoreError(f"seed {seed}: cannot read: {exc}") from exc
        phases["seed_copy"] = time.monotonic() - at

    def fetch(ids: list[bytes]) -> FetchReport:
        return point.fetch_many(
            ids,
            cache,
            progress,
            digest=index.digest,
            max_size=index.sizes.max,
            deliver=put,
            record=output.record,
        )

    fetched = fetch(to_fetch)
    phases["fetch"] = fetched.seconds
    if mismatched:
        log.info("%d chunks of the seed changed since it was indexed: fetched", len(mismatched))
        fetched = _combined(fetched, fetch(mismatched))
    phases["fetch_and_copy"] = time.monotonic() - started
    sourced = set(to_fetch).union(mismatched)
    seed_bytes = source_bytes = 0
    for chunk_id, (_start, length) in first.items():
        if chunk_id in sourced or chunk_id in resumed:
            source_bytes += length
        else:
            seed_bytes += length
    repeated = sum(length for places in more.values() for _start, length in places)
    return (
        fetched,
        ExtractReport(
            size=index.size,
            bytes_from_seed=seed_bytes,
            bytes_from_source=source_bytes,
            bytes_zero=zero_bytes,
            bytes_repeated=repeated,
            chunks_fetched=len(sourced),
            seed_mismatches=len(mismatched),
        ),
        len(resumed),
    )


def _combined(a: FetchReport, b: FetchReport) -> FetchReport:
    return FetchReport(
        chunks_wanted=a.chunks_wanted + b.chunks_wanted,
        chunks_cached=a.chunks_cached + b.chunks_cached,
        chunks_fetched=a.chunks_fetched + b.chunks_fetched,
        bytes_downloaded=a.bytes_downloaded + b.bytes_downloaded,
        bytes_fetched=a.bytes_fetched + b.bytes_fetched,
        connections=a.connections + b.connections,
        seconds=a.seconds + b.seconds,
    )


def _ids(index: Index) -> Iterator[bytes]:
    ids = index.ids
    for at in range(0, len(ids), ID_SIZE):
        yield bytes(ids[at : at + ID_SIZE])


def _file(point: HttpStore, path: str, *, limit: int) -> bytes:
    data = point.request("GET", path, limit=limit)
    if data is None:
        raise NotStaged(f"{point.url} holds no {path}: the image is not staged there")
    return data


def load_keys(path: Path | str) -> dict[str, Ed25519PublicKey]:
    """The trusted keys in a file of ``<key id> ed25519 <hex public key>`` lines.

    That is what ``orchestrator store keys`` prints; blank lines and ``#`` comments
    are skipped.

    Raises:
        StoreError: the file cannot be read, a line is not a key, or a key id is
            not its key's.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"keys file {path}: cannot read: {exc}") from exc
    keys: dict[str, Ed25519PublicKey] = {}
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        try:
            kid, algorithm, hex_key = words
            if algorithm != "ed25519":
                raise ValueError(algorithm)
            public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(hex_key))
        except ValueError as exc:
            raise StoreError(
                f"keys file {path}, line {number}: not '<key id> ed25519 <hex public key>'"
            ) from exc
        if signing.key_id(public) != kid:
            raise StoreError(f"keys file {path}, line {number}: {kid} is not that key's id")
        keys[kid] = public
    if not keys:
        raise StoreError(f"keys file {path} holds no key")
    return keys


__all__ = [
    "FetchReport",
    "HttpStore",
    "Progress",
    "PullReport",
    "ResponseTooLarge",
    "load_keys",
    "pull",
    "seed_index",
]
