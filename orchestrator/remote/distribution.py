"""The plain HTTP file server that playbooks download artifacts from.

Clients fetch packages and disk images from here with Ansible's ``get_url`` /
``win_get_url``, each download checked against the SHA-256 the orchestrator
hands the play. It serves one root folder, read-only:

* GET and HEAD only, with ``Content-Length``, ``Last-Modified``, an ``ETag``
  and ``Accept-Ranges: bytes``;
* one byte range per request (``Range: bytes=a-b``, ``a-`` or ``-n``)
  answered with 206, so an interrupted download of a large image can resume;
  ``If-Range`` is honoured, so a file changed between attempts is sent whole.
  A range that cannot be satisfied, a malformed one and a request for several
  ranges at once are answered 416;
* files are streamed in chunks, never read whole into memory (images are GBs).

It refuses (404) what it must not serve: anything that is not a regular file
under the root, so no directory listings, no path traversal (``..``, encoded
or not) and no symlink that resolves outside the root. Unknown files are 404
too. Each request is logged at debug level through :mod:`logging`; nothing is
printed.

What it does not do: no authentication and no TLS. Anyone who can reach the
port can read the artifacts, and integrity rests on the checksum the play is
given, not on the transport. The content-addressed image store that replaces
this server brings signed manifests.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from email.utils import formatdate, parsedate_to_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, unquote, urlsplit

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
"""Bytes read and sent at a time."""

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(Exception):
    """The Range header names no single satisfiable byte range."""


def parse_range(header: str, size: int) -> tuple[int, int]:
    """The inclusive (first, last) byte positions one ``Range`` header asks for.

    Raises:
        RangeNotSatisfiable: malformed, several ranges, or outside a file of ``size`` bytes.
    """
    match = _RANGE.match(header.strip().replace(" ", ""))
    if match is None:
        raise RangeNotSatisfiable(header)
    first_text, last_text = match.groups()
    if not first_text and not last_text:
        raise RangeNotSatisfiable(header)
    if not first_text:  # the last n bytes
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - suffix), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if first > last or first >= size:
        raise RangeNotSatisfiable(header)
    return first, min(last, size - 1)


def sha256_file(path: Path | str, *, progress: Callable[[int], None] | None = None) -> str:
    """The file's SHA-256 as hex, read in chunks.

    ``progress``, when given, is called with the bytes read so far after every
    8 MiB and at the end.
    """
    with open(path, "rb") as f:
        if progress is None:
            return hashlib.file_digest(f, "sha256").hexdigest()
        h = hashlib.sha256()
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        read = told = 0
        while n := f.readinto(buf):
            h.update(view[:n])
            read += n
            if read - told >= 8 << 20:
                progress(read)
                told = read
        progress(read)
        return h.hexdigest()


class DistributionServer(ThreadingHTTPServer):
    """A read-only HTTP server over ``root`` (see the module's docstring)."""

    daemon_threads = True

    def __init__(self, root: Path, address: str = "127.0.0.1", port: int = 0) -> None:
        self.root = Path(root).resolve(strict=True)
        if not self.root.is_dir():
            raise NotADirectoryError(str(root))
        if ":" in address:
            self.address_family = socket.AF_INET6
        super().__init__((address, port), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The base prints a traceback on stderr; keep it in the log instead.
        log.debug("error serving %s", client_address, exc_info=True)

    @property
    def address(self) -> str:
        return str(self.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        """The server's base URL, ending in '/'."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}/"

    def url_for(self, relative: str) -> str:
        """The URL of ``relative`` (a path under the root, '/'-separated)."""
        return self.url + quote(relative.lstrip("/"))

    def resolve(self, request_path: str) -> Path | None:
        """The regular file under the root that ``request_path`` names, or None."""
        path = unquote(urlsplit(request_path).path, errors="strict")
        if "\x00" in path:
            return None
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if not parts or any(p == ".." for p in parts):
            return None
        try:
            resolved = self.root.joinpath(*parts).resolve(strict=True)
        except (OSError, RuntimeError, ValueError):
            return None
        if not resolved.is_relative_to(self.root) or not resolved.is_file():
            return None
        return resolved


class _Handler(BaseHTTPRequestHandler):
    server: DistributionServer
    protocol_version = "HTTP/1.1"
    server_version = "orchestrator-distribution/1"

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def _serve(self, body: bool) -> None:
        try:
            path = self.server.resolve(self.path)
        except UnicodeDecodeError:
            path = None
        if path is None:
            self._empty(HTTPStatus.NOT_FOUND)
            return
        try:
            f = open(path, "rb")  # noqa: SIM115 (closed below, after streaming)
        except OSError:
            self._empty(HTTPStatus.NOT_FOUND)
            return
        with f:
            stat = os.fstat(f.fileno())
            size = stat.st_size
            etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
            modified = formatdate(stat.st_mtime, usegmt=True)
            first, last = 0, size - 1
            status = HTTPStatus.OK
            wanted = self.headers.get("Range")
            if wanted is not None and self._range_applies(etag, stat.st_mtime):
                try:
                    first, last = parse_range(wanted, size)
                except RangeNotSatisfiable:
                    self._empty(
                        HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                        {"Content-Range": f"bytes */{size}"},
                    )
                    return
                status = HTTPStatus.PARTIAL_CONTENT
            length = last - first + 1 if size else 0
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", modified)
            if status == HTTPStatus.PARTIAL_CONTENT:
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self.end_headers()
            if body and length:
                self._stream(f, first, length)

    def _range_applies(self, etag: str, mtime: float) -> bool:
        """False when an ``If-Range`` names another version of the file."""
        condition = self.headers.get("If-Range")
        if condition is None:
            return True
        condition = condition.strip()
        if condition.startswith(('"', "W/")):
            return condition == etag
        try:
            return int(parsedate_to_datetime(condition).timestamp()) == int(mtime)
        except (TypeError, ValueError):
            return False

    def _stream(self, f: IO[bytes], first: int, length: int) -> None:
        f.seek(first)
        left = length
        try:
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:  # the file shrank under us: the client sees a short body
                    self.close_connection = True
                    return
                self.wfile.write(chunk)
                left -= len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("client %s went away with %d bytes unsent", self.client_address[0], left)
            self.close_connection = True

    def _empty(self, status: HTTPStatus, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


@contextmanager
def serve(root: Path, address: str = "127.0.0.1", port: int = 0) -> Iterator[DistributionServer]:
    """A running :class:`DistributionServer` over ``root``, stopped on exit.

    ``port`` 0 picks a free port; read it back from ``server.port``.
    """
    with _running(DistributionServer(root, address, port)) as server:
        yield server


@contextmanager
def _running(server: DistributionServer) -> Iterator[DistributionServer]:
    thread = threading.Thread(
        target=server.serve_forever,
        # How soon shutdown() is noticed: at 0.1 s, stopping took a third of a tick.
        kwargs={"poll_interval": 0.02},
        name=f"distribution-{server.port}",
        daemon=True,
    )
    thread.start()
    log.debug("serving %s at %s", server.root, server.url)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        log.debug("stopped serving %s", server.root)


class FileSetServer(DistributionServer):
    """Serves exactly the files it was given, each at its own URL path, nothing else.

    A run offers the artifacts it delivers where they already are (the
    catalog's files), without copying gigabytes into one folder first.
    """

    def __init__(
        self, files: Mapping[str, Path], address: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.files = {
            name.strip("/"): Path(path).resolve(strict=True) for name, path in files.items()
        }
        for name, path in self.files.items():
            if not path.is_file():
                raise FileNotFoundError(f"{name}: {path} is not a regular file")
        super().__init__(Path("/"), address, port)

    def resolve(self, request_path: str) -> Path | None:
        path = unquote(urlsplit(request_path).path, errors="strict")
        return self.files.get(path.strip("/"))


@contextmanager
def serve_files(
    files: Mapping[str, Path], address: str = "127.0.0.1", port: int = 0
) -> Iterator[DistributionServer]:
    """A running :class:`FileSetServer` for ``files`` (URL path → file), stopped on exit."""
    with _running(FileSetServer(files, address, port)) as server:
        yield server
