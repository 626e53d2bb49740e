"""Talking to a building's distribution point: what it lacks (over its HTTP(S)
``POST /missing``), sending it chunks (one stream over SSH), and a bandwidth
limit for what the orchestrator sends it.

The point itself (:mod:`orchestrator.imagestore.point`) serves its store
read-only to the building's clients; the orchestrator writes into that store
over SSH: the chunks first (:func:`send_chunks`), then the index and signed
manifest (:meth:`orchestrator.remote.ssh.PinnedSession.write_atomic`), so a
point never offers an image whose chunks it does not hold.
"""

from __future__ import annotations

import functools
import http.client
import logging
import re
import shlex
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from orchestrator.errors import HostUnreachable, InvalidInput, RemoteError
from orchestrator.remote import point_receiver

if TYPE_CHECKING:
    from orchestrator.remote.ssh import CommandResult

log = logging.getLogger("orchestrator.points")

ID_SIZE = 32
MAX_IDS = 2_000_000
"""The most ids one ``POST /missing`` carries (the point's own bound)."""

RECEIVER_PYTHON = "python3"
"""The point host's Python, which runs :mod:`orchestrator.remote.point_receiver`."""
RECEIVER_MIN_VERSION = (3, 7)
"""The oldest Python the receiver's source runs on."""
NOT_FOUND = 127
"""A POSIX shell's exit code for a command it cannot find; also what the
receiver's command exits with where the host's ``python3`` is too old for it."""


def _connection(url: str, *, timeout: float, ca_file: str | None) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"{url!r} is not an http(s) address", field="url")
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=ca_file)
        return http.client.HTTPSConnection(
            parts.hostname, parts.port or 443, timeout=timeout, context=context
        )
    return http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)


def missing(
    url: str,
    ids: Iterable[bytes],
    *,
    timeout: float = 60.0,
    ca_file: str | None = None,
) -> set[bytes]:
    """The chunk ids among ``ids`` that the point at ``url`` does not hold.

    Raises: HostUnreachable (no answer), RemoteError (an answer that is not one).
    """
    wanted = list(dict.fromkeys(ids))
    found: set[bytes] = set()
    path = urlsplit(url).path.rstrip("/") + "/missing"
    for start in range(0, len(wanted), MAX_IDS):
        batch = wanted[start : start + MAX_IDS]
        body = b"".join(batch)
        conn = _connection(url, timeout=timeout, ca_file=ca_file)
        try:
            conn.request(
                "POST", path, body=body, headers={"Content-Type": "application/octet-stream"}
            )
            answer = conn.getresponse()
            data = answer.read()
        except (OSError, http.client.HTTPException) as exc:
            raise HostUnreachable(
                f"the distribution point does not answer ({exc})", host=url
            ) from exc
        finally:
            conn.close()
        if answer.status != 200 or len(data) % ID_SIZE:
            raise RemoteError(
                f"the distribution point answered {answer.status} to POST /missing", host=url
            )
        asked = set(batch)
        for i in range(0, len(data), ID_SIZE):
            chunk_id = data[i : i + ID_SIZE]
            if chunk_id not in asked:
                raise RemoteError("the distribution point named a chunk it was not asked", host=url)
            found.add(chunk_id)
    return found


class RateLimit:
    """A token bucket: :meth:`take` blocks so that, over any second or more, no more
    than ``bytes_per_second`` pass (with a burst of one second's worth).

    ``bytes_per_second`` 0 means no limit. Thread-safe.
    """

    def __init__(
        self,
        bytes_per_second: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if bytes_per_second < 0:
            raise InvalidInput("must be 0 (no limit) or more", field="bandwidth")
        self.rate = bytes_per_second
        self._clock, self._sleep = clock, sleep
        self._tokens = float(bytes_per_second)
        self._at = clock()
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        if not self.rate:
            return
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.rate), self._tokens + (now - self._at) * self.rate)
            self._at = now
            self._tokens -= n
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait:
            self._sleep(wait)


class Session(Protocol):
    """What :func:`send_chunks` needs of an SSH session (a ``PinnedSession``)."""

    def feed(
        self,
        command: str,
        pieces: Iterable[bytes],
        *,
        on_line: Callable[[str], None],
        timeout: float,
    ) -> CommandResult: ...

    def write_atomic(self, remote: str, data: bytes | memoryview) -> None: ...


class Tally:
    """Chunks and bytes the point has confirmed in place."""

    def __init__(self) -> None:
        self.chunks = 0
        self.bytes = 0


def chunk_path(root: str, chunk_id: bytes) -> str:
    """Where a chunk lives in a point's store (casync's layout)."""
    hexid = chunk_id.hex()
    return f"{root}/chunks/{hexid[:4]}/{hexid}.cacnk"


def send_chunks(
    session: Session,
    root: str,
    chunks: Sequence[tuple[bytes, Path]],
    *,
    limit: RateLimit,
    tally: Tally,
    host: str,
    progress: Callable[[], None] | None = None,
    timeout: float = 120.0,
) -> None:
    """Put each ``(chunk id, local stored file)`` into the point's store under
    ``root``, within ``limit``; ``tally`` counts those the point has confirmed in
    place, and ``progress`` is called each time it grows. ``host`` names the
    point in errors.

    The chunks go as one stream to the receiver run on the point's host
    (:mod:`orchestrator.remote.point_receiver`, by its ``python3``); a host without a
    ``python3`` of :data:`RECEIVER_MIN_VERSION` or later gets each chunk as its own
    SFTP file instead, which is several times slower. Either way each chunk
    appears whole or not at all.

    Raises: RemoteError (the receiver refused the stream or failed, the
    connection was lost), RemoteTimeout, AccessDenied (SFTP).
    """
    sent = [0]
    """Bytes of the first N chunks sent, for each N so far."""

    def pieces() -> Iterator[bytes]:
        for chunk_id, local in chunks:
            data = local.read_bytes()
            limit.take(len(data))
            sent.append(sent[-1] + len(data))
            yield chunk_id + len(data).to_bytes(4, "big") + data

    def on_line(line: str) -> None:
        word, _, count = line.partition(" ")
        if word in ("in-place", "done") and count.isdigit() and int(count) < len(sent):
            tally.chunks, tally.bytes = int(count), sent[int(count)]
            if progress is not None:
                progress()

    if not chunks:
        return
    result = session.feed(_receiver_command(root), pieces(), on_line=on_line, timeout=timeout)
    if result.exit_code == NOT_FOUND and tally.chunks == 0:
        log.info(
            "no %s %s or later on the point's host: sending each chunk over SFTP",
            RECEIVER_PYTHON,
            ".".join(map(str, RECEIVER_MIN_VERSION)),
        )
        _send_each(session, root, chunks, limit=limit, tally=tally, progress=progress)
        return
    if result.exit_code != 0 or tally.chunks != len(chunks):
        said = result.stderr.strip().splitlines()
        raise RemoteError(
            f"the point's receiver stopped after {tally.chunks} of {len(chunks)} chunks "
            f"(exit {result.exit_code}: {said[-1] if said else 'no reason given'})",
            host=host,
        )


def _send_each(
    session: Session,
    root: str,
    chunks: Sequence[tuple[bytes, Path]],
    *,
    limit: RateLimit,
    tally: Tally,
    progress: Callable[[], None] | None,
    every: float = 0.5,
) -> None:
    last = time.monotonic()
    for chunk_id, local in chunks:
        data = local.read_bytes()
        limit.take(len(data))
        session.write_atomic(chunk_path(root, chunk_id), data)
        tally.chunks += 1
        tally.bytes += len(data)
        if progress is not None and time.monotonic() - last >= every:
            progress()
            last = time.monotonic()


_LISTED_TMP = re.compile(r"[0-9a-f]{4}/\.tmp-[A-Za-z0-9_.-]{1,100}")
_LISTED_INDEX = re.compile(r"([^/]{1,300}) ([0-9a-f]{64})")


@dataclass(frozen=True)
class Holdings:
    """What a point's store holds, as its receiver listed it."""

    indexes: dict[str, str]
    """Each index file's name (without ``.caibx``) and the SHA-256 of its bytes."""
    chunks: set[bytes]
    temporaries: list[str]
    """Paths under ``<root>/chunks`` of files a cut-short staging left."""


def holdings(session: Session, root: str, *, host: str, timeout: float = 600.0) -> Holdings | None:
    """Every chunk and temporary file in the point's store, listed by its receiver;
    None where the host has no ``python3`` of :data:`RECEIVER_MIN_VERSION` or
    later (listing each folder over SFTP would
    take one round trip per folder).

    Raises: RemoteError (the listing failed or was not one), RemoteTimeout.
    """
    indexes: dict[str, str] = {}
    chunks: set[bytes] = set()
    temporaries: list[str] = []
    said: list[int] = []
    strange: list[str] = []

    def on_line(line: str) -> None:
        word, _, rest = line.partition(" ")
        if word == "chunk" and len(rest) == 2 * ID_SIZE:
            try:
                chunks.add(bytes.fromhex(rest))
                return
            except ValueError:
                pass
        elif word == "index" and (m := _LISTED_INDEX.fullmatch(rest)):
            indexes[m.group(1)] = m.group(2)
            return
        elif word == "tmp" and _LISTED_TMP.fullmatch(rest):
            temporaries.append(rest)
            return
        elif word == "listed" and rest.isdigit():
            said.append(int(rest))
            return
        strange.append(line[:200])

    result = session.feed(_receiver_command("--list", root), (), on_line=on_line, timeout=timeout)
    if result.exit_code == NOT_FOUND:
        return None
    if result.exit_code != 0 or strange or said != [len(chunks)]:
        reason = (result.stderr.strip().splitlines() or strange or ["an incomplete listing"])[-1]
        raise RemoteError(f"the point's store could not be listed ({reason})", host=host)
    return Holdings(indexes, chunks, temporaries)


def _receiver_command(*args: str) -> str:
    """The shell command running the receiver with ``args``. It first asks the
    host's Python its version, in words any Python reads, and exits
    :data:`NOT_FOUND` where it is too old: the receiver's own source would fail
    to compile there with an error the orchestrator could not tell from a
    failed staging."""
    check = (
        f"import sys; sys.exit(0 if sys.version_info >= {RECEIVER_MIN_VERSION!r} else {NOT_FOUND})"
    )
    run = " ".join(shlex.quote(a) for a in (RECEIVER_PYTHON, "-c", _receiver_source(), *args))
    return f"{shlex.quote(RECEIVER_PYTHON)} -c {shlex.quote(check)} && {run}"


@functools.cache
def _receiver_source() -> str:
    return Path(point_receiver.__file__).read_text(encoding="utf-8")
