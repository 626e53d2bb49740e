"""Talking to a building's distribution point: what it lacks (over its HTTP(S)
``POST /missing``), and a bandwidth limit for what the orchestrator sends it.

The point itself (:mod:`orchestrator.imagestore.point`) serves its store
read-only to the building's clients; the orchestrator writes into that store
over SSH (:meth:`orchestrator.remote.ssh.PinnedSession.write_atomic`), chunks
first and the index and signed manifest last, so a point never offers an
image whose chunks it does not hold.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from orchestrator.errors import HostUnreachable, InvalidInput, RemoteError

ID_SIZE = 32
MAX_IDS = 2_000_000
"""The most ids one ``POST /missing`` carries (the point's own bound)."""


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
