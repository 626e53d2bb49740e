"""The image store seen from the catalog: an entry's bytes imported, deduplicated,
and signed when the chain releases it.

``orchestrator image import FILE --ref REF`` takes in the artifact of a catalog
entry (IT for base images and district packages; the building's technician
for a customized image and the building's packages: whoever maintains it):

* the file is checked from its headers first (:mod:`orchestrator.imagestore.artifacts`:
  a qcow2 with a backing file, an archive with ``../`` is refused before any
  tool reads it);
* it must be the bytes the chain judges: an entry registered with a SHA-256
  takes only a file with that SHA-256; an entry without one (a customized
  image's first build) is given the file as its artifact, which, like any
  content change, sends it back through the chain (:func:`catalog.revise`);
* the store (:class:`orchestrator.imagestore.store.ImageStore`, under
  ``images/`` by default) splits it into content-defined chunks and keeps only
  the chunks it lacks, so a customized image costs what differs from its base;
  it hashes the file again as it reads it and writes no index unless the bytes
  are those checked above (:class:`SourceChanged`);
* the entry's :class:`ImageManifest` row records its index and figures.

When the chain releases the entry (:func:`orchestrator.services.chain.publish`),
or at import when it is released already, the manifest is signed with the
district's Ed25519 key (:mod:`orchestrator.imagestore.manifest`), over its
identity, approved digest, index and effective sunset. The private key is kept
only as ciphertext under the installation's secret key (:mod:`vault`), made on
first use; :func:`public_keys` is what distribution points and clients trust.

:func:`stats` shows logical vs stored bytes and what each customized image
shares with its base; :func:`verify` re-hashes every chunk and checks each
index against the digest the database holds.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlmodel import Session, col, select

from orchestrator.db.models import (
    Deployment,
    ImageManifest,
    ImagePackage,
    ImageStaging,
    Releasable,
    SigningKey,
)
from orchestrator.db.session import transaction
from orchestrator.domain import lifecycle
from orchestrator.domain.policy import Action, Actor, authorize, may
from orchestrator.domain.rollout import DEPLOYMENT_TERMINAL
from orchestrator.domain.states import Kind, State
from orchestrator.errors import Conflict, InvalidInput, NotFound
from orchestrator.imagestore import artifacts, names
from orchestrator.imagestore import manifest as signing
from orchestrator.imagestore.caibx import Index, decode
from orchestrator.imagestore.errors import StoreBusy as StoreBusy  # gc's refusal, for callers
from orchestrator.imagestore.store import ImageStore, VerifyReport
from orchestrator.remote.distribution import sha256_file
from orchestrator.services import audit, catalog, releasables, vault
from orchestrator.services.context import Context
from orchestrator.services.refs import building_of, ref_of

log = logging.getLogger(__name__)

SIGNED_STATES = frozenset({State.PUBLISHED, State.DEPRECATED})
"""Released, and not yet at sunset: the states whose manifest is signed."""


def store_name(row: Releasable) -> str:
    """The entry's index name in the store: unique by id, inside the allow-list."""
    kind = row.kind.replace("_", "-")
    return names.image_name(f"{row.id}-{kind}-{row.name.lower()}-{row.version}")


def open_store(ctx: Context) -> ImageStore:
    """The installation's image store (a context manager)."""
    return ImageStore(ctx.image_store_dir)


@dataclass(frozen=True)
class ImportView:
    ref: str
    kind: Kind
    artifact: str
    """What the file is: qcow2, wim, xar, zip, tar or raw."""
    size: int
    chunks: int
    new_chunks: int
    new_bytes: int
    """Compressed bytes this import added to the store."""
    zero_bytes: int
    shared_with_base: int | None
    """Logical bytes a customized image shares with its base (when the base is stored)."""
    chain_restarted: bool
    signed: bool


ImportProgress = Callable[[str, int, int], None]
"""Told (phase, bytes done, bytes in all) as an import goes: the phase is
``"checking"`` while the file's SHA-256 is computed, then ``"importing"``."""


def import_artifact(
    ctx: Context,
    actor: Actor,
    kind: Kind,
    ref: str,
    path: Path,
    *,
    progress: ImportProgress | None = None,
) -> ImportView:
    """Take in a catalog entry's artifact; see the module's docstring.

    Raises:
        NotFound: the entry (or one the actor may not see); the file.
        Refused: not the actor's to maintain.
        InvalidInput: not a regular file; not the bytes the entry was registered with.
        UnsafeArtifact: the file refers outside itself.
        Conflict: imported already; at sunset or retired.
        SourceChanged: the file was rewritten while it was imported.
    """
    source = names.plain_file(path)
    if source.is_dir():
        raise InvalidInput(f"{str(path)!r} is a folder: import the image file in it", field="file")
    if not source.is_file():
        if source.exists():
            raise InvalidInput(f"{str(path)!r} is not a regular file", field="file")
        raise NotFound(f"no file {str(path)!r}")
    kind_of_file = artifacts.check(source)
    with transaction(ctx.engine) as session:
        row = releasables.resolve(session, actor, kind, ref)
        releasables.authorize_maintain(actor, row)
        _check_importable(session, row)
        registered = row.artifact_sha256
        base_name = _manifest_name(session, row.base_id) if row.base_id else None
    total = source.stat().st_size

    def told(phase: str) -> Callable[[int], None] | None:
        if progress is None:
            return None
        tell = progress
        return lambda done: tell(phase, done, total)

    actual = sha256_file(source, progress=told("checking"))
    restarted = False
    if registered is None:
        # The first bytes of this entry: they become its artifact, and the chain judges them.
        restarted = catalog.revise(
            ctx,
            actor,
            kind,
            ref,
            catalog.Revision(
                artifact=catalog.ArtifactRef(str(source.resolve()), actual),
                reason="its artifact imported into the store",
            ),
        ).chain_restarted
    elif registered != actual:
        raise InvalidInput(
            f"{source.name} has SHA-256 {actual}, but {ref_of(row)} was registered with "
            f"{registered}: import the artifact the chain judges (or revise the entry first)",
            field="file",
        )
    name = store_name(row)
    with open_store(ctx) as store:
        # Replacing is right: an index without its row is a crash between the two.
        report = store.import_file(
            name, source, replace=True, progress=told("importing"), expect_sha256=actual
        )
        index_bytes = store.index_path(name).read_bytes()
        index = decode(index_bytes, source=name)
        shared = None
        if base_name is not None and store.has_index(base_name):
            shared = store.shared(index, store.index(base_name)).shared_logical_bytes
    now = ctx.now()
    with transaction(ctx.engine) as session:
        row = releasables.resolve(session, actor, kind, ref)
        stale = _check_importable(session, row)
        if row.artifact_sha256 != actual:
            raise Conflict(f"{ref_of(row)} changed while it was imported: import it again")
        assert row.id is not None and actor.person_id is not None
        fields: dict[str, object] = {
            "index_name": name,
            "index_sha256": hashlib.sha256(index_bytes).hexdigest(),
            "artifact_sha256": actual,
            "size": report.size,
            "chunks": report.chunks,
            "unique_chunks": len(index.unique_ids()),
            "new_bytes": report.new_stored_bytes,
            "imported_by_id": actor.person_id,
            "imported_at": now,
            # The replaced bytes' signature goes with them; stagings of them are older.
            "signed": None,
            "key_id": None,
            "signed_at": None,
        }
        if stale is None:
            m = ImageManifest.model_validate({"releasable_id": row.id} | fields)
        else:
            m = stale
            for key, value in fields.items():
                setattr(m, key, value)
        session.add(m)
        session.flush()
        audit.append(
            session,
            at=now,
            actor=actor,
            action=f"{row.kind}.import",
            subject=releasables.subject(row),
            after={
                "index": name,
                "size": report.size,
                "chunks": report.chunks,
                "new_chunks": report.new_chunks,
                "new_bytes": report.new_stored_bytes,
            }
            | ({"replaced_an_import_of_another_artifact": True} if stale else {}),
            digest=row.digest,
        )
        signed = False
        if State(row.state) in SIGNED_STATES:
            _sign(session, ctx, row, m)
            signed = True
        return ImportView(
            ref=ref_of(row),
            kind=kind,
            artifact=kind_of_file,
            size=report.size,
            chunks=report.chunks,
            new_chunks=report.new_chunks,
            new_bytes=report.new_stored_bytes,
            zero_bytes=report.zero_bytes,
            shared_with_base=shared,
            chain_restarted=restarted,
            signed=signed,
        )


def _check_importable(session: Session, row: Releasable) -> ImageManifest | None:
    """Raise when ``row`` may not be imported; return its stored bytes' row when they
    are another file than its artifact (replaced since: this import replaces them)."""
    if State(row.state) not in lifecycle.DEPLOYABLE and State(row.state) not in (
        lifecycle.REVISABLE
    ):
        raise Conflict(f"{ref_of(row)} is {row.state}: nothing derived from it is deployed")
    m = session.exec(select(ImageManifest).where(ImageManifest.releasable_id == row.id)).first()
    if m is not None and _current(m, row):
        raise Conflict(f"{ref_of(row)} is in the image store already")
    return m


def _current(m: ImageManifest, row: Releasable) -> bool:
    """Whether the stored bytes are the entry's artifact (not one replaced since)."""
    return m.artifact_sha256 is not None and m.artifact_sha256 == row.artifact_sha256


def _manifest_name(session: Session, releasable_id: int) -> str | None:
    return session.exec(
        select(ImageManifest.index_name).where(ImageManifest.releasable_id == releasable_id)
    ).first()


# ---------------------------------------------------------------------------
# Signing
# ---------------------------------------------------------------------------


def _signing_key(session: Session, ctx: Context) -> tuple[str, Ed25519PrivateKey]:
    """The district's current signing key, made (and stored encrypted) on first use."""
    vault.lock_secrets(session)
    row = session.exec(
        select(SigningKey)
        .where(col(SigningKey.retired_at).is_(None))
        .order_by(col(SigningKey.id).desc())
    ).first()
    if row is not None:
        raw = base64.b64decode(vault.decrypt(ctx, row.ciphertext, f"signing key {row.key_id}"))
        return row.key_id, Ed25519PrivateKey.from_private_bytes(raw)
    key = Ed25519PrivateKey.generate()
    kid = signing.key_id(key.public_key())
    session.add(
        SigningKey(
            key_id=kid,
            public_key=key.public_key().public_bytes_raw(),
            ciphertext=vault.encrypt(ctx, base64.b64encode(key.private_bytes_raw()).decode()),
            created_at=ctx.now(),
        )
    )
    session.flush()
    return kid, key


def _sign(session: Session, ctx: Context, row: Releasable, m: ImageManifest) -> None:
    kid, key = _signing_key(session, ctx)
    now = ctx.now()
    body = signing.Manifest(
        kind=row.kind,
        scope=building_of(row) or "district",
        name=row.name,
        version=row.version,
        approved_digest=row.digest,
        index_sha256=m.index_sha256,
        size=m.size,
        chunks=m.chunks,
        sunset=catalog.effective_sunset_of(session, row),
        released_at=now,
    )
    m.signed = signing.sign(body, key).to_json()
    m.key_id, m.signed_at = kid, now
    session.add(m)
    session.flush()


def sign_release(session: Session, ctx: Context, row: Releasable) -> bool:
    """Sign the manifest of an entry the chain has just released, if it is stored.

    Runs inside the chain's publishing transaction. True when it signed.
    """
    m = session.exec(select(ImageManifest).where(ImageManifest.releasable_id == row.id)).first()
    if m is None:
        return False
    if not _current(m, row):
        _unsign(session, m, row)
        return False
    _sign(session, ctx, row, m)
    return True


def _unsign(session: Session, m: ImageManifest, row: Releasable) -> None:
    """Drop the signature of bytes that are no longer the entry's artifact: its
    clients are then served the artifact itself until it is imported again."""
    log.warning(
        "%s: the image store holds another file than its artifact: not signed; "
        "import its artifact again",
        ref_of(row),
    )
    m.signed, m.key_id, m.signed_at = None, None, None
    session.add(m)
    session.flush()


def signed_manifest(ctx: Context, actor: Actor, kind: Kind, ref: str) -> bytes:
    """The signed manifest of a released entry, as its receivers check it.

    Raises: NotFound (the entry; or not in the store, or not released yet).
    """
    with transaction(ctx.engine) as session:
        row = releasables.resolve(session, actor, kind, ref)
        m = session.exec(select(ImageManifest).where(ImageManifest.releasable_id == row.id)).first()
        if m is None or m.signed is None:
            why = (
                "it is not in the image store"
                if m is None
                else "it is not released yet"
                if _current(m, row)
                else "the image store holds another file than its artifact: import it again"
            )
            raise NotFound(f"{ref_of(row)} has no signed manifest: {why}")
        return m.signed


def public_keys(ctx: Context) -> dict[str, Ed25519PublicKey]:
    """Key id → public key of every signing key not retired: what receivers trust."""
    with transaction(ctx.engine) as session:
        return trusted_keys(session)


def public_key_lines(ctx: Context) -> list[str]:
    """The trusted keys as the lines of a keys file (what ``store keys`` prints)."""
    return signing.key_lines(public_keys(ctx))


def keys_file(session: Session) -> str:
    """The trusted keys as a keys file's text, inside the caller's transaction: what a
    run hands the clients that pull from a distribution point."""
    return "".join(f"{line}\n" for line in signing.key_lines(trusted_keys(session)))


def trusted_keys(session: Session) -> dict[str, Ed25519PublicKey]:
    """:func:`public_keys`, inside the caller's transaction."""
    return {
        k.key_id: Ed25519PublicKey.from_public_bytes(k.public_key)
        for k in session.exec(select(SigningKey).where(col(SigningKey.retired_at).is_(None)))
    }


# ---------------------------------------------------------------------------
# Figures and checks
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageFigures:
    ref: str
    kind: Kind
    state: str
    size: int
    chunks: int
    unique_chunks: int
    stored_bytes: int
    """Compressed bytes of its unique chunks (shared ones counted for each image)."""
    shared_with_base: int | None
    base: str | None
    signed: bool
    imported_at: datetime


@dataclass(frozen=True)
class StoreFigures:
    images: list[ImageFigures] = field(default_factory=list)
    logical_bytes: int = 0
    """What the images would take as plain files."""
    stored_bytes: int = 0
    """What their chunks take in the store, each chunk once, compressed."""

    @property
    def ratio(self) -> float:
        return self.logical_bytes / self.stored_bytes if self.stored_bytes else 0.0


def _rows(session: Session, actor: Actor) -> list[tuple[ImageManifest, Releasable]]:
    return [
        (m, r)
        for m, r in session.exec(
            select(ImageManifest, Releasable)
            .where(col(ImageManifest.releasable_id) == col(Releasable.id))
            .order_by(col(Releasable.kind), col(Releasable.scope_key), col(Releasable.name))
        )
        if may(actor, Action.READ_CATALOG, building=building_of(r))
    ]


def stats(ctx: Context, actor: Actor) -> StoreFigures:
    """Logical vs stored bytes of the images the actor may see, and what each
    customized image shares with its base."""
    with transaction(ctx.engine) as session:
        rows = _rows(session, actor)
        by_id = {r.id: m for m, r in rows}
        bases = {r.id: session.get(Releasable, r.base_id) if r.base_id else None for _, r in rows}
    images: list[ImageFigures] = []
    stored: dict[bytes, int] = {}  # each chunk's size on disk, looked up once
    with open_store(ctx) as store:
        indexes = {m.index_name: store.index(m.index_name) for m, _ in rows}
        for m, r in rows:
            index = indexes[m.index_name]
            own = index.unique_ids()
            for chunk_id in own - stored.keys():
                stored[chunk_id] = store.chunks.stored_size(chunk_id) or 0
            base_row = bases[r.id]
            base_m = by_id.get(base_row.id) if base_row is not None else None
            shared = (
                store.shared(index, indexes[base_m.index_name]).shared_logical_bytes
                if base_m is not None
                else None
            )
            images.append(
                ImageFigures(
                    ref=ref_of(r),
                    kind=Kind(r.kind),
                    state=r.state,
                    size=m.size,
                    chunks=m.chunks,
                    unique_chunks=m.unique_chunks,
                    stored_bytes=sum(stored[i] for i in own),
                    shared_with_base=shared,
                    base=ref_of(base_row) if base_row is not None else None,
                    signed=m.signed is not None,
                    imported_at=m.imported_at,
                )
            )
    return StoreFigures(images, sum(i.size for i in images), sum(stored.values()))


@dataclass(frozen=True)
class StoreCheck:
    images: int
    chunks: VerifyReport
    bad_indexes: list[str]
    """Images whose index file is missing, malformed or not the one imported."""

    @property
    def ok(self) -> bool:
        return self.chunks.ok and not self.bad_indexes


def verify(
    ctx: Context, actor: Actor, *, progress: Callable[[int, int], None] | None = None
) -> StoreCheck:
    """Re-hash every chunk every stored image needs; check each index file against
    the SHA-256 recorded at import. IT only. ``progress`` is told (chunks checked,
    chunks to check) as it goes.

    Raises: Refused.
    """
    authorize(actor, Action.MANAGE_IMAGE_STORE, building=None)
    with transaction(ctx.engine) as session:
        rows = [(m.index_name, m.index_sha256, ref_of(r)) for m, r in _rows(session, actor)]
    bad: list[str] = []
    good: list[Index] = []
    with open_store(ctx) as store:
        for name, digest, ref in rows:
            path = store.index_path(name)
            try:
                data = path.read_bytes()
            except OSError:
                bad.append(f"{ref}: index {path.name} is missing")
                continue
            if hashlib.sha256(data).hexdigest() != digest:
                bad.append(f"{ref}: index {path.name} is not the one imported")
                continue
            # The bytes just checked, not the file read again.
            good.append(decode(data, source=path.name))
        report = store.verify(good, progress=progress)
    return StoreCheck(len(rows), report, bad)


@dataclass(frozen=True)
class GcReport:
    referenced: int
    """Chunks some stored image's index needs: never removed."""
    removed_chunks: int
    removed_bytes: int
    removed_indexes: list[str]
    young: int
    """Unreferenced chunks inside the protection window, kept (an import may be writing them)."""
    dry_run: bool
    reclaimed: list[str] = field(default_factory=list)
    """Retired entries whose bytes were let go: nothing can deliver them again."""


PROTECT_HOURS = 24
"""How old a chunk, index or retirement must be before gc lets it go, by default."""
MAX_PROTECT_HOURS = 24 * 365


def _reclaimable(
    session: Session, retired_before: datetime
) -> list[tuple[ImageManifest, Releasable]]:
    """The stored entries nothing can deliver again, with their catalog rows.

    An entry is still needed while it is not retired, while a deployment that is not
    over targets it, or while such an entry delivers it: a customized image lays down
    its base's WIM and a Mac image installs the packages it carries. Retirement is
    terminal, so what is let go is never asked for again. Like everything gc removes,
    it waits out the protection window: an entry retired inside it still counts as
    live, and so do what it delivers.
    """
    retired = State.RETIRED.value
    live = set(
        session.exec(
            select(Releasable.id).where(
                sa.or_(
                    col(Releasable.state) != retired, col(Releasable.updated_at) >= retired_before
                )
            )
        ).all()
    )
    live |= set(
        session.exec(
            select(Deployment.releasable_id).where(
                col(Deployment.state).not_in([s.value for s in DEPLOYMENT_TERMINAL])
            )
        ).all()
    )
    needed = set(live)
    needed |= {
        base
        for base in session.exec(
            select(Releasable.base_id).where(col(Releasable.id).in_(live))
        ).all()
        if base is not None
    }
    needed |= set(
        session.exec(
            select(ImagePackage.package_id).where(col(ImagePackage.image_id).in_(live))
        ).all()
    )
    rows = session.exec(
        select(ImageManifest, Releasable)
        .where(col(ImageManifest.releasable_id) == col(Releasable.id))
        .where(Releasable.state == retired)
        .order_by(col(Releasable.id))
    ).all()
    return [(m, r) for m, r in rows if r.id not in needed]


def gc(
    ctx: Context, actor: Actor, *, protect_hours: int = PROTECT_HOURS, dry_run: bool = False
) -> GcReport:
    """Let go of retired entries' bytes, then remove the chunks no stored image's
    index references and index files no catalog entry owns, once they are older
    than ``protect_hours``. IT only.

    Every image a deployment can use has its index in the database, so its chunks
    are referenced and stay. What goes is what an interrupted or replaced import
    left behind, and the bytes of entries retired longer ago than the window that
    nothing still delivers (:func:`_reclaimable`): their manifest and staging rows
    are deleted, with an audit entry on each, and their chunks go unless another
    image shares them. It runs with the store to itself (:meth:`ImageStore.alone`):
    an import skips the chunks the store holds, so a chunk it is about to name must
    not go under it. The window keeps what a killed import wrote before its index.

    Raises: Refused, InvalidInput (a window out of range), StoreBusy (another
    process has the store open: nothing is changed).
    """
    authorize(actor, Action.MANAGE_IMAGE_STORE, building=None)
    if not 0 <= protect_hours <= MAX_PROTECT_HOURS:
        raise InvalidInput(f"must be 0 to {MAX_PROTECT_HOURS} hours", field="protect_hours")
    # File times are the host's wall clock, whatever clock the context runs on.
    cutoff = time.time() - protect_hours * 3600
    removed = removed_bytes = young = 0
    removed_indexes: list[str] = []
    with open_store(ctx) as store, store.alone():
        with transaction(ctx.engine) as session:
            reclaim = _reclaimable(session, ctx.now() - timedelta(hours=protect_hours))
            let_go = {m.index_name for m, _ in reclaim}
            if not dry_run:
                _let_go(session, ctx, actor, reclaim)
            owned = set(session.exec(select(ImageManifest.index_name)).all()) - let_go
        referenced: set[bytes] = set()
        for name in store.names():
            if name in owned:
                referenced |= store.index(name).unique_ids()
                continue
            path = store.index_path(name)
            # A let-go entry's index goes whatever its age: the database decided.
            if name in let_go or path.stat().st_mtime < cutoff:
                removed_indexes.append(name)
                if not dry_run:
                    path.unlink(missing_ok=True)
            else:
                referenced |= store.index(name).unique_ids()  # an import just finishing
        for chunk_id in store.chunks.ids():
            if chunk_id in referenced:
                continue
            path = store.chunks.path(chunk_id)
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            if stat.st_mtime >= cutoff:
                young += 1
                continue
            removed += 1
            removed_bytes += stat.st_size
            if not dry_run:
                path.unlink(missing_ok=True)
    if not dry_run and (removed or removed_indexes):
        with transaction(ctx.engine) as session:
            audit.append(
                session,
                at=ctx.now(),
                actor=actor,
                action="image_store.gc",
                subject=audit.Subject("image_store", str(ctx.image_store_dir), None, None),
                after={
                    "chunks": removed,
                    "bytes": removed_bytes,
                    "indexes": removed_indexes[:50],
                },
            )
    return GcReport(
        len(referenced),
        removed,
        removed_bytes,
        removed_indexes,
        young,
        dry_run,
        [ref_of(r) for _, r in reclaim],
    )


def _let_go(
    session: Session, ctx: Context, actor: Actor, reclaim: list[tuple[ImageManifest, Releasable]]
) -> None:
    """Delete the rows of retired entries' stored bytes, audited on each entry. The
    files go after the commit: a crash in between leaves index files no entry owns,
    which the next gc removes."""
    for m, row in reclaim:
        for s in session.exec(select(ImageStaging).where(ImageStaging.manifest_id == m.id)):
            session.delete(s)
        session.flush()
        audit.append(
            session,
            at=ctx.now(),
            actor=actor,
            action=f"{row.kind}.reclaim",
            subject=releasables.subject(row),
            before={"index": m.index_name, "size": m.size, "signed": m.signed is not None},
            digest=row.digest,
        )
        session.delete(m)
    session.flush()


def keep_signature_current(session: Session, ctx: Context, row: Releasable) -> bool:
    """Re-sign a released entry's manifest when what it signed no longer holds: its
    effective sunset was moved (IT brought a base's sunset forward, say). A stale
    signature would let a client apply the image past its new sunset.

    Runs in the caller's transaction; True when it signed anew.
    """
    m = session.exec(select(ImageManifest).where(ImageManifest.releasable_id == row.id)).first()
    if m is None or m.signed is None or State(row.state) not in SIGNED_STATES:
        return False
    if not _current(m, row):
        _unsign(session, m, row)
        return False
    signed = signing.Manifest.from_canonical(base64.b64decode(json.loads(m.signed)["manifest"]))
    if signed.sunset == catalog.effective_sunset_of(session, row) and (
        signed.approved_digest == row.digest
    ):
        return False
    _sign(session, ctx, row, m)
    return True


def refresh_signatures(ctx: Context) -> list[str]:
    """Re-sign every released manifest whose signed sunset is out of date."""
    done: list[str] = []
    with transaction(ctx.engine) as session:
        rows = session.exec(
            select(Releasable)
            .join(ImageManifest, col(ImageManifest.releasable_id) == col(Releasable.id))
            .where(col(ImageManifest.signed).is_not(None))
            .order_by(col(Releasable.id))
        ).all()
        for row in rows:
            if keep_signature_current(session, ctx, row):
                done.append(ref_of(row))
    return done
