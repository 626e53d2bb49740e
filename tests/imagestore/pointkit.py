"""What the distribution point and pull tests share: a store root with images and
signed manifests in it, a district key, a self-signed certificate, raw requests."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from orchestrator.imagestore import ImageStore, Index
from orchestrator.imagestore import manifest as mf
from tests.support import certs

TODAY = dt.date(2026, 12, 2)
KEY = Ed25519PrivateKey.generate()
TRUSTED = {mf.key_id(KEY.public_key()): KEY.public_key()}


@dataclass(frozen=True)
class Stored:
    """An image imported into a point's root, with its signed manifest beside it."""

    name: str
    path: Path
    index: Index
    manifest: mf.Manifest


def publish(
    store: ImageStore,
    name: str,
    image: Path,
    *,
    kind: str = "custom_image",
    scope: str = "101",
    manifest_name: str = "lab",
    version: str = "1.2",
    sunset: dt.date | None = dt.date(2027, 6, 30),
    key: Ed25519PrivateKey = KEY,
) -> Stored:
    """Import ``image`` as ``name`` and write ``manifests/<name>.json``, signed with ``key``."""
    store.import_file(name, image)
    index = store.index(name)
    m = mf.Manifest(
        kind=kind,
        scope=scope,
        name=manifest_name,
        version=version,
        approved_digest="sha256:" + hashlib.sha256(image.read_bytes()).hexdigest(),
        index_sha256=hashlib.sha256(store.index_path(name).read_bytes()).hexdigest(),
        size=index.size,
        chunks=len(index),
        sunset=sunset,
        released_at=dt.datetime(2026, 12, 1, 22, 0, tzinfo=dt.UTC),
    )
    write_manifest(store.root, name, mf.sign(m, key).to_json())
    return Stored(name, image, index, m)


def write_manifest(root: Path, name: str, data: bytes) -> None:
    (root / "manifests").mkdir(exist_ok=True)
    (root / "manifests" / f"{name}.json").write_bytes(data)


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    return certs.self_signed(folder, "point")


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    tls: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request sent with the path exactly as given (no client-side normalising)."""
    conn: http.client.HTTPConnection = (
        http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=tls)
        if tls is not None
        else http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    )
    try:
        conn.putrequest(method, path)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body is not None and "Content-Length" not in (headers or {}):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()
