"""Signed image manifests: what a client or distribution point checks before it
applies a single byte.

When the approval chain releases an image, the orchestrator signs its manifest
with the district's Ed25519 key. The signature covers the image's identity
(kind, building scope, name, version), the digest the chain approved, the
digest and size of its chunk index, and its effective sunset date. Whoever
receives an image (a building's distribution point staging it, a client
rebuilding it) calls :func:`verify` with the district's public keys and what it
expects, and refuses, before fetching anything:

* a manifest whose bytes or signature were changed (:class:`Tampered`);
* one signed by a key it does not trust, or not signed (:class:`Unsigned`);
* one for another image than the one it was told to apply (:class:`WrongImage`);
* an older version of an image than the one it has, replayed (:class:`Replayed`);
* an image whose effective sunset has come (:class:`Sunset`).

Then :func:`check_index` binds the index bytes it fetched to the manifest, and
the index binds every chunk by its digest: nothing unapproved is assembled.

The signed bytes are a canonical JSON document (sorted keys, no whitespace,
UTF-8) tagged with :data:`FORMAT`, so any language can check a signature;
the envelope is JSON as well. Pure computation: no files, no network.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from orchestrator.domain.sunset import is_sunset
from orchestrator.errors import OrchestratorError

FORMAT = "orchestrator-image-manifest/1"
"""Tag inside every signed document; a verifier refuses any other."""

_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_KINDS = ("base_image", "custom_image", "package")
_VERSION = re.compile(r"(0|[1-9][0-9]{0,5})(\.(0|[1-9][0-9]{0,5})){0,3}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_SCOPE = re.compile(r"district|[0-9]{1,6}")
MAX_ENVELOPE = 64 * 1024
"""A manifest is a few hundred bytes; anything much larger is refused unread."""


class ManifestRefused(OrchestratorError):
    """A manifest that must not be applied; the message says why."""

    code = "manifest_refused"
    http_status = 409
    exit_code = 3


class Malformed(ManifestRefused):
    """Not a manifest envelope at all (bad JSON, missing or mistyped fields)."""

    code = "manifest_malformed"
    http_status = 422
    exit_code = 2


class Tampered(ManifestRefused):
    """The signature does not match the manifest's bytes."""

    code = "manifest_tampered"


class Unsigned(ManifestRefused):
    """Signed by no key the verifier trusts."""

    code = "manifest_unsigned"


class WrongImage(ManifestRefused):
    """A valid manifest, for another image than the one expected."""

    code = "manifest_wrong_image"


class Replayed(ManifestRefused):
    """A valid manifest of an older version than the one already there."""

    code = "manifest_replayed"


class Sunset(ManifestRefused):
    """A valid manifest of an image whose effective sunset has come."""

    code = "manifest_sunset"


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


@dataclass(frozen=True)
class Manifest:
    """What a release signs. ``scope`` is ``district`` or a building number."""

    kind: str
    scope: str
    name: str
    version: str
    approved_digest: str
    """The catalog's digest of the content the chain approved (``sha256:…``)."""
    index_sha256: str
    """SHA-256 of the ``.caibx`` index bytes."""
    size: int
    """Logical bytes of the image the index rebuilds."""
    chunks: int
    sunset: date | None
    """The effective sunset (a customized image's is its base's when earlier)."""
    released_at: datetime

    def __post_init__(self) -> None:
        problems = [
            what
            for what, ok in (
                ("kind", self.kind in _KINDS),
                ("scope", isinstance(self.scope, str) and bool(_SCOPE.fullmatch(self.scope))),
                ("name", isinstance(self.name, str) and bool(_NAME.fullmatch(self.name))),
                (
                    "version",
                    isinstance(self.version, str) and bool(_VERSION.fullmatch(self.version)),
                ),
                (
                    "approved_digest",
                    isinstance(self.approved_digest, str)
                    and self.approved_digest.startswith("sha256:")
                    and bool(_HEX64.fullmatch(self.approved_digest[7:])),
                ),
                (
                    "index_sha256",
                    isinstance(self.index_sha256, str)
                    and bool(_HEX64.fullmatch(self.index_sha256)),
                ),
                ("size", type(self.size) is int and 0 <= self.size < 2**63),
                ("chunks", type(self.chunks) is int and 0 <= self.chunks < 2**40),
                ("sunset", self.sunset is None or type(self.sunset) is date),
                (
                    "released_at",
                    isinstance(self.released_at, datetime) and self.released_at.tzinfo is not None,
                ),
            )
            if not ok
        ]
        if problems:
            raise Malformed(f"manifest: bad {', '.join(problems)}")

    @property
    def ref(self) -> str:
        at = f"{self.name}@{self.version}"
        return at if self.scope == "district" else f"{self.scope}/{at}"

    def canonical(self) -> bytes:
        """The exact bytes signed: sorted-key compact JSON tagged with :data:`FORMAT`."""
        doc: dict[str, Any] = asdict(self)
        doc["sunset"] = self.sunset.isoformat() if self.sunset else None
        doc["released_at"] = self.released_at.isoformat()
        doc["format"] = FORMAT
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_canonical(cls, data: bytes) -> Manifest:
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise Malformed(f"manifest: not JSON ({e})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise Malformed(f"manifest: not a {FORMAT} document")
        fields = set(cls.__dataclass_fields__)
        if set(doc) != fields | {"format"}:
            raise Malformed(
                "manifest: fields "
                + ", ".join(sorted(set(doc) ^ (fields | {"format"})))
                + " missing or unknown"
            )
        try:
            sunset = date.fromisoformat(doc["sunset"]) if doc["sunset"] is not None else None
            released = datetime.fromisoformat(doc["released_at"])
        except (TypeError, ValueError):
            raise Malformed("manifest: bad sunset or released_at") from None
        made = cls(**{**_without(doc, "format"), "sunset": sunset, "released_at": released})
        if made.canonical() != data:
            # Only one spelling of a manifest is signed: no whitespace, key order or
            # number tricks that would make two byte strings mean the same thing.
            raise Malformed("manifest: not in canonical form")
        return made


def _without(doc: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != key}


def key_id(public: Ed25519PublicKey) -> str:
    """The first 16 hex digits of the SHA-256 of the raw public key."""
    return hashlib.sha256(public.public_bytes_raw()).hexdigest()[:16]


def key_lines(keys: Mapping[str, Ed25519PublicKey]) -> list[str]:
    """``<key id> ed25519 <hex public key>`` per key, sorted: the trusted-keys file a
    client's pull reads (:func:`orchestrator.imagestore.fetch.load_keys`)."""
    return [f"{kid} ed25519 {keys[kid].public_bytes_raw().hex()}" for kid in sorted(keys)]


@dataclass(frozen=True)
class SignedManifest:
    manifest: Manifest
    key_id: str
    signature: bytes
    signed: bytes
    """The canonical bytes the signature covers (kept, never re-derived, on verify)."""

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "manifest": base64.b64encode(self.signed).decode(),
                "key_id": self.key_id,
                "signature": base64.b64encode(self.signature).decode(),
            },
            sort_keys=True,
            indent=1,
        ).encode()


def sign(manifest: Manifest, key: Ed25519PrivateKey) -> SignedManifest:
    signed = manifest.canonical()
    return SignedManifest(manifest, key_id(key.public_key()), key.sign(signed), signed)


def _envelope(data: bytes) -> tuple[bytes, str, bytes]:
    if len(data) > MAX_ENVELOPE:
        raise Malformed(f"manifest: {len(data)} bytes; at most {MAX_ENVELOPE}")
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError) as e:
        raise Malformed(f"manifest: the envelope is not JSON ({e})") from None
    if not isinstance(doc, dict) or set(doc) != {"manifest", "key_id", "signature"}:
        raise Malformed("manifest: the envelope needs exactly manifest, key_id and signature")
    kid = doc["key_id"]
    if not isinstance(kid, str) or not _KEY_ID.fullmatch(kid):
        raise Malformed("manifest: key_id is not 16 hex digits")
    try:
        signed = base64.b64decode(doc["manifest"], validate=True)
        signature = base64.b64decode(doc["signature"], validate=True)
    except (TypeError, ValueError):
        raise Malformed("manifest: manifest or signature is not base64") from None
    return signed, kid, signature


def verify(
    data: bytes,
    trusted: Mapping[str, Ed25519PublicKey],
    *,
    kind: str,
    scope: str,
    name: str,
    today: date,
    version: str | None = None,
    installed_version: str | None = None,
) -> Manifest:
    """The manifest in ``data``, if and only if it may be applied.

    ``trusted`` maps key ids to the district's public keys. ``version``, when
    given, is the exact version expected; ``installed_version`` the version
    already on the machine, which a manifest may not go below.

    Raises: Malformed, Unsigned, Tampered, WrongImage, Replayed, Sunset.
    """
    signed, kid, signature = _envelope(data)
    public = trusted.get(kid)
    if public is None:
        raise Unsigned(f"manifest signed by key {kid}, which is not one of the district's")
    try:
        public.verify(signature, signed)
    except InvalidSignature:
        raise Tampered("manifest signature does not match its content: refused") from None
    m = Manifest.from_canonical(signed)
    if (m.kind, m.scope, m.name) != (kind, scope, name) or (version and m.version != version):
        want = f"{kind} {scope}/{name}@{version or '*'}"
        raise WrongImage(f"manifest is for {m.kind} {m.ref}, not {want}: refused")
    if installed_version is not None and _version_key(m.version) < _version_key(installed_version):
        raise Replayed(
            f"manifest of {m.ref} is older than the installed {installed_version}: refused"
        )
    if is_sunset(m.sunset, today):
        assert m.sunset is not None
        raise Sunset(f"{m.ref} reached its sunset on {m.sunset.isoformat()}: refused")
    return m


def check_index(m: Manifest, index: bytes) -> None:
    """Raises Tampered when ``index`` is not the index the manifest signed."""
    got = hashlib.sha256(index).hexdigest()
    if got != m.index_sha256:
        raise Tampered(f"index of {m.ref} has SHA-256 {got}, not the signed {m.index_sha256}")
