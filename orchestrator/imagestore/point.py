"""A building's distribution point: one store root served read-only over HTTP(S).

The orchestrator writes a building's chunks, indexes and signed manifests to
the point over SSH (temporary file, then rename); the building's clients
read them from here with :mod:`orchestrator.imagestore.fetch`. The layout is
the store's own, so ``casync extract --store=http://point/chunks`` works too::

    <root>/chunks/<4 hex>/<64 hex>.cacnk    GET, HEAD
    <root>/indexes/<image name>.caibx       GET, HEAD
    <root>/manifests/<image name>.json      GET, HEAD
    POST /missing                           body: chunk ids, 32 bytes each;
                                            answer: those not here, same encoding
    POST /chunks                            body: up to 64 chunk ids, 32 bytes each;
                                            answer: the chunk files, framed (below)
    GET /health                             {"status": "ok", ...} as JSON

Every path is matched whole against an allow-list before it names a file
(no percent-decoding, so ``%2e%2e`` is just a name that does not match);
anything else is 404: no directory listing, no other file under the root.
Files are opened one component at a time from the root's descriptor with
``O_NOFOLLOW``, so no symlink is followed, in or out of the root, and a
name swapped for a link between a check and the open cannot redirect it.
Only regular files are served, streamed (``sendfile`` on plain HTTP) with
``Content-Length`` and an ``ETag``; nothing is ever written.

``POST /chunks`` answers many chunks in one response, so a client pays one
request's overhead (here, in Python, most of a chunk's cost) per batch, not
per chunk: for each id asked, in order, its chunk file's length as 8 bytes
big-endian (``2**64 - 1`` for a chunk the point does not have), then the
files' bytes one after the other. The sizes are read before the answer
starts, and each file is opened again to be sent, one at a time (an answer
holds one descriptor, as a ``GET`` does); a file gone or changed in size
meanwhile, or that shrinks while it is sent, ends the connection, so the
client sees a short body, never another chunk's bytes in its place.

The point does not check chunk contents: it cannot tell a good chunk from a
corrupt one without the index and does not need to. Clients decompress and
re-hash every chunk, and refuse the image before its first chunk unless its
manifest carries the district's signature (see ``fetch.pull``).

Run it with ``python -m orchestrator.imagestore.point --root DIR --listen
HOST:PORT [--cert PEM --key PEM]``; it stops cleanly on SIGTERM or SIGINT.
Requests are logged through :mod:`logging` at debug level only.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import re
import signal
import socket
import ssl
import stat
import sys
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from orchestrator.imagestore.caibx import ID_SIZE
from orchestrator.imagestore.errors import UnsafeName
from orchestrator.imagestore.names import image_name

log = logging.getLogger(__name__)

MAX_MISSING_IDS = 2_000_000
"""Ids one ``POST /missing`` may ask about (64 MiB of body; a 20 GiB image has ~330 000)."""

MAX_BATCH_IDS = 64
"""Chunks one ``POST /chunks`` may ask for (64 files to open twice for one answer)."""

ABSENT = 2**64 - 1
"""The length ``POST /chunks`` gives a chunk the point does not have."""

PIECE = 1024 * 1024
"""Bytes read and sent at a time."""

# Whole-path allow-lists, matched on the request path exactly as sent.
_CHUNK = re.compile(r"/chunks/([0-9a-f]{4})/(\1[0-9a-f]{60})\.cacnk")
_INDEX = re.compile(r"/indexes/([a-z0-9][a-z0-9._-]{0,80})\.caibx")
_MANIFEST = re.compile(r"/manifests/([a-z0-9][a-z0-9._-]{0,80})\.json")

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _chunk_parts(hexid: str) -> tuple[str, str, str]:
    """The path components under the root of the chunk file of ``hexid`` (64 hex)."""
    return "chunks", hexid[:4], f"{hexid}.cacnk"


def _file_parts(path: str) -> tuple[str, tuple[str, ...]] | None:
    """(kind, path components under the root) of an allowed path, or None."""
    if m := _CHUNK.fullmatch(path):
        return "chunk", _chunk_parts(m.group(2))
    for kind, folder, suffix, pattern in (
        ("index", "indexes", ".caibx", _INDEX),
        ("manifest", "manifests", ".json", _MANIFEST),
    ):
        if m := pattern.fullmatch(path):
            try:
                name = image_name(m.group(1))
            except UnsafeName:
                return None
            return kind, (folder, name + suffix)
    return None


class PointServer(ThreadingHTTPServer):
    """The distribution point over ``root`` (see the module's docstring).

    ``port`` 0 takes a free port (read it back from :attr:`port` or :attr:`url`).
    :meth:`start` serves from a background thread, :meth:`stop` ends it; as a
    context manager it does both. With ``cert_file`` and ``key_file`` it speaks
    HTTPS only (TLS 1.2 or later), the handshake done in the request's thread.

    Raises (when made): OSError when the root is not a folder or the address
    cannot be bound; ssl.SSLError for an unusable certificate or key.
    """

    daemon_threads = True
    # Many clients of a lab, each with several connections, may connect at once:
    # a backlog of 5 (the default) makes the rest retry their SYN a second later.
    request_queue_size = 256

    def __init__(
        self,
        root: Path | str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        cert_file: Path | str | None = None,
        key_file: Path | str | None = None,
        max_missing: int = MAX_MISSING_IDS,
        idle_timeout: float = 60.0,
    ) -> None:
        self.root = Path(os.path.realpath(root))
        self.max_missing = max_missing
        self.idle_timeout = idle_timeout
        self.tls: ssl.SSLContext | None = None
        if cert_file is not None or key_file is not None:
            if cert_file is None or key_file is None:
                raise ValueError("HTTPS needs both a certificate and its key")
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.minimum_version = ssl.TLSVersion.TLSv1_2
            self.tls.load_cert_chain(cert_file, key_file)
        self._root_fd = os.open(self.root, _OPEN_DIR)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self.in_flight = 0
        self.peak_in_flight = 0
        """The most requests being answered at one time since the start."""
        self.counts: Counter[str] = Counter()
        """Requests received, by kind: chunk, index, manifest (found or not), missing,
        chunks (a ``POST /chunks``; each chunk it asks for counts as a chunk too),
        health, and refused (a path or method outside the allow-list)."""
        if ":" in host:
            self.address_family = socket.AF_INET6
        try:
            super().__init__((host, port), _Handler)
        except BaseException:
            os.close(self._root_fd)
            raise

    # -- where it listens --------------------------------------------------------

    @property
    def host(self) -> str:
        return str(self.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        """The base URL, without a trailing '/'."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    # -- running -------------------------------------------------------------------

    def start(self) -> PointServer:
        """Serve from a background thread; returns the server."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"point-{self.port}",
                daemon=True,
            )
            self._thread.start()
            log.debug("serving %s at %s", self.root, self.url)
        return self

    def stop(self) -> None:
        """Stop accepting, end the connections kept alive, close the root; idempotent."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        with self._lock:
            if self._root_fd < 0:
                return
            os.close(self._root_fd)
            self._root_fd = -1
            lingering = list(self._connections)
        self.server_close()
        for conn in lingering:
            # Wakes the connection's thread, idle between requests, to end it.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        log.debug("stopped serving %s", self.root)

    def _root(self) -> int:
        """A descriptor of the root for one request (closed by the caller); -1 once stopped.

        A duplicate, so :meth:`stop` closing the root's own never leaves a request
        holding a number the process may have reused for another file.
        """
        with self._lock:
            return os.dup(self._root_fd) if self._root_fd >= 0 else -1

    def __enter__(self) -> PointServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def finish_request(self, request: Any, client_address: Any) -> None:
        # In the request's own thread: a slow TLS handshake holds up no one else.
        request.settimeout(self.idle_timeout)
        conn = request
        try:
            if self.tls is not None:
                # The TLS socket takes the connection over (the plain one is detached).
                conn = self.tls.wrap_socket(request, server_side=True)
            with self._lock:
                self._connections.add(conn)
            super().finish_request(conn, client_address)
        finally:
            with self._lock:
                self._connections.discard(conn)
            if conn is not request:
                conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The base prints a traceback on stderr; keep it in the log instead.
        log.debug("error serving %s", client_address, exc_info=True)

    # -- what it serves ------------------------------------------------------------

    def open_file(self, parts: Sequence[str]) -> int | None:
        """A descriptor of the regular file at ``parts`` under the root, or None.

        Each component is opened relative to the one before with ``O_NOFOLLOW``:
        a symlink anywhere on the way is refused, not followed.
        """
        root = self._root()
        if root < 0:
            return None
        fds = [root]
        try:
            at = root
            for folder in parts[:-1]:
                at = os.open(folder, _OPEN_DIR, dir_fd=at)
                fds.append(at)
            fd = os.open(parts[-1], _OPEN_FILE, dir_fd=at)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EACCES):
                log.debug("cannot open %s", "/".join(parts), exc_info=True)
            return None
        finally:
            for opened in fds:
                os.close(opened)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return fd

    def missing(self, ids: bytes) -> bytes:
        """Of the concatenated 32-byte ``ids``, those with no chunk file here (in order, once)."""
        by_folder: dict[str, list[bytes]] = {}
        seen: set[bytes] = set()
        order: list[bytes] = []
        for at in range(0, len(ids), ID_SIZE):
            chunk_id = ids[at : at + ID_SIZE]
            if chunk_id not in seen:
                seen.add(chunk_id)
                order.append(chunk_id)
                by_folder.setdefault(chunk_id[:2].hex(), []).append(chunk_id)
        present: set[bytes] = set()
        chunks_fd = -1
        root = self._root()
        with contextlib.suppress(OSError):
            if root >= 0:
                chunks_fd = os.open("chunks", _OPEN_DIR, dir_fd=root)
        if root >= 0:
            os.close(root)
        try:
            for folder, wanted in by_folder.items() if chunks_fd >= 0 else ():
                try:
                    folder_fd = os.open(folder, _OPEN_DIR, dir_fd=chunks_fd)
                except OSError:
                    continue
                try:
                    for chunk_id in wanted:
                        with contextlib.suppress(OSError):
                            st = os.stat(
                                f"{chunk_id.hex()}.cacnk", dir_fd=folder_fd, follow_symlinks=False
                            )
                            if stat.S_ISREG(st.st_mode):
                                present.add(chunk_id)
                finally:
                    os.close(folder_fd)
        finally:
            if chunks_fd >= 0:
                os.close(chunks_fd)
        return b"".join(i for i in order if i not in present)

    def health(self) -> dict[str, object]:
        with self._lock:
            return {"status": "ok", "in_flight": self.in_flight, "served": dict(self.counts)}

    @contextlib.contextmanager
    def _counted(self, kind: str) -> Iterator[None]:
        with self._lock:
            self.counts[kind] += 1
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1


class _Handler(BaseHTTPRequestHandler):
    server: PointServer
    protocol_version = "HTTP/1.1"
    server_version = "orchestrator-point/1"
    # Headers and body go out in separate writes: without this, Nagle's algorithm
    # and the client's delayed ACK hold each small response back by ~40 ms.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._get(body=True)

    def do_HEAD(self) -> None:
        self._get(body=False)

    def do_POST(self) -> None:
        if self.path == "/missing":
            with self.server._counted("missing"):
                self._missing()
        elif self.path == "/chunks":
            with self.server._counted("chunks"):
                self._chunks()
        else:
            self._refuse(HTTPStatus.NOT_FOUND)

    def _refuse(self, status: HTTPStatus, *, close: bool = False) -> None:
        with self.server._counted("refused"):
            self._empty(status, close=close)

    def do_PUT(self) -> None:
        self._refuse(HTTPStatus.METHOD_NOT_ALLOWED, close=True)

    do_DELETE = do_PATCH = do_PUT

    def _get(self, *, body: bool) -> None:
        if self.path == "/health":
            with self.server._counted("health"):
                self._bytes(json.dumps(self.server.health()).encode(), "application/json", body)
            return
        found = _file_parts(self.path)
        if found is None:
            self._refuse(HTTPStatus.NOT_FOUND)
            return
        kind, parts = found
        with self.server._counted(kind):
            fd = self.server.open_file(parts)
            if fd is None:
                self._empty(HTTPStatus.NOT_FOUND)
                return
            with open(fd, "rb") as f:
                st = os.fstat(fd)
                self.send_response(HTTPStatus.OK)
                self.send_header(
                    "Content-Type",
                    "application/json" if kind == "manifest" else "application/octet-stream",
                )
                self.send_header("Content-Length", str(st.st_size))
                self.send_header("ETag", f'"{st.st_size:x}-{st.st_mtime_ns:x}"')
                # A chunk's name is its content's digest: it never changes under its name.
                self.send_header(
                    "Cache-Control",
                    "public, max-age=31536000, immutable" if kind == "chunk" else "no-cache",
                )
                self.end_headers()
                if body and st.st_size:
                    self._stream(f, st.st_size)

    def _stream(self, f: Any, size: int) -> bool:
        """Send ``size`` bytes of ``f``; False (the connection to be closed) when short."""
        try:
            if self.server.tls is None:
                sent = self.connection.sendfile(f, 0, size)
            else:
                sent = 0
                while sent < size and (piece := f.read(min(PIECE, size - sent))):
                    self.wfile.write(piece)
                    sent += len(piece)
        except OSError:
            log.debug("client %s went away during a response", self.client_address[0])
            self.close_connection = True
            return False
        if sent < size:  # the file shrank under us: the client sees a short body
            self.close_connection = True
            return False
        return True

    def _ids(self, most: int) -> bytes | None:
        """The request's body of at most ``most`` whole 32-byte ids; None once refused."""
        if self.headers.get("Transfer-Encoding") is not None:
            self._empty(HTTPStatus.LENGTH_REQUIRED, close=True)
            return None
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._empty(HTTPStatus.LENGTH_REQUIRED, close=True)
            return None
        if length < 0 or length % ID_SIZE:
            self._empty(HTTPStatus.BAD_REQUEST, close=True)
            return None
        if length > most * ID_SIZE:
            # The body is not read: the connection cannot be reused after it.
            self._empty(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, close=True)
            return None
        pieces: list[bytes] = []
        left = length
        while left:
            piece = self.rfile.read(min(PIECE, left))
            if not piece:
                self.close_connection = True
                return None
            pieces.append(piece)
            left -= len(piece)
        return b"".join(pieces)

    def _missing(self) -> None:
        ids = self._ids(self.server.max_missing)
        if ids is not None:
            self._bytes(self.server.missing(ids), "application/octet-stream", True)

    def _chunks(self) -> None:
        ids = self._ids(MAX_BATCH_IDS)
        if ids is None:
            return
        # Each file is opened twice, for its size and then to be sent, so an answer
        # holds one descriptor at a time, as a GET does: a lab's clients asking all
        # at once must not run the point out of descriptors.
        parts = [_chunk_parts(ids[at : at + ID_SIZE].hex()) for at in range(0, len(ids), ID_SIZE)]
        with self.server._lock:
            self.server.counts["chunk"] += len(parts)
        sizes: list[int | None] = []
        for where in parts:
            fd = self.server.open_file(where)
            if fd is None:
                sizes.append(None)
            else:
                try:
                    sizes.append(os.fstat(fd).st_size)
                finally:
                    os.close(fd)
        lengths = b"".join((ABSENT if n is None else n).to_bytes(8, "big") for n in sizes)
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(lengths) + sum(n for n in sizes if n)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(lengths)
        for where, size in zip(parts, sizes, strict=True):
            if not size:
                continue
            fd = self.server.open_file(where)
            if fd is None:  # removed (a prune) since its size was read
                self.close_connection = True
                return
            with open(fd, "rb") as f:
                if os.fstat(fd).st_size != size or not self._stream(f, size):
                    self.close_connection = True
                    return

    def _bytes(self, data: bytes, content_type: str, body: bool) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _empty(self, status: HTTPStatus, *, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    # No default host: which interfaces a point listens on is said, never assumed.
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT (e.g. 0.0.0.0:8443)")
    return host, int(port)


def main(argv: Sequence[str] | None = None) -> int:
    """The distribution point's process; returns its exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.imagestore.point",
        description="Serve an image store root read-only to a building's clients.",
    )
    parser.add_argument("--root", required=True, type=Path, help="the store root to serve")
    parser.add_argument(
        "--listen", required=True, type=_listen, help="HOST:PORT (port 0: any free port)"
    )
    parser.add_argument("--cert", type=Path, help="PEM certificate: serve HTTPS")
    parser.add_argument("--key", type=Path, help="PEM private key of --cert")
    parser.add_argument("--log-level", default="WARNING", help="e.g. DEBUG to log each request")
    args = parser.parse_args(argv)
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    host, port = args.listen
    try:
        server = PointServer(args.root, host, port, cert_file=args.cert, key_file=args.key)
    except (OSError, ssl.SSLError, ValueError) as exc:
        print(f"cannot serve {args.root} at {host}:{port}: {exc}", file=sys.stderr)
        return 1
    stopping = threading.Event()

    def stop(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.start()
    # One line for whoever started the process (and chose port 0) to read.
    print(f"serving {server.root} at {server.url}", flush=True)
    stopping.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
