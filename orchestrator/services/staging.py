"""Building distribution points, and staging a released image's missing chunks to one.

A district's links to its schools are thin: a lab of 30 PCs re-imaged overnight
must not pull 30 copies of an image over the WAN. Each building may have a
distribution point (a cache host in the building: the orchestrator writes to it
over SSH, its key pinned when IT adds it; the building's clients read from it
over HTTP(S), :mod:`orchestrator.imagestore.point`). Staging sends a point only
what it lacks, once per building whatever the number of clients:

1. only a released image is staged: its manifest must be signed
   (:mod:`orchestrator.services.image_store`), so a point never holds bytes the
   chain did not approve;
2. the point says which of the image's chunks it lacks (``POST /missing``);
3. those chunks go as they are stored (compressed, named by their digest), in
   one stream to a receiver run on the point's host (SFTP file by file where
   the host has no ``python3``), each written whole or not at all (temp file,
   flushed, renamed), within the point's bandwidth limit; then the index, then
   the signed manifest, so a point never offers an image whose chunks it does
   not hold;
4. the staging row counts chunks and bytes as they go (``store staged``
   shows it), ends ``staged`` or ``failed`` with the reason; a failed staging
   is simply run again and sends only what is still missing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from sqlmodel import Session, col, select

from orchestrator.db.models import (
    Building,
    Deployment,
    DistributionPoint,
    ImageManifest,
    ImageStaging,
    Releasable,
)
from orchestrator.db.session import transaction
from orchestrator.domain import validation
from orchestrator.domain.policy import SYSTEM_ACTOR, Action, Actor, authorize, may
from orchestrator.domain.rollout import DeploymentState
from orchestrator.domain.states import Kind
from orchestrator.errors import (
    Conflict,
    HostUnreachable,
    InvalidInput,
    NotFound,
    OrchestratorError,
    StaleState,
)
from orchestrator.imagestore import names
from orchestrator.imagestore.caibx import Index, decode
from orchestrator.imagestore.errors import UnsafeName
from orchestrator.imagestore.store import ImageStore
from orchestrator.remote import points, ssh
from orchestrator.services import (
    audit,
    delivery,
    deployments,
    image_store,
    inventory,
    releasables,
)
from orchestrator.services.context import Context
from orchestrator.services.credentials import Credentials
from orchestrator.services.directory import visible_building_row
from orchestrator.services.refs import building_of, ref_of

log = logging.getLogger("orchestrator.staging")

_ROOT = re.compile(r"/[A-Za-z0-9._/-]{0,400}")


@dataclass(frozen=True)
class PointView:
    building: str
    address: str
    ssh_port: int
    ssh_user: str
    fingerprint: str
    root: str
    url: str
    bandwidth_kib: int


def _point_view(p: DistributionPoint, building: str) -> PointView:
    return PointView(
        building,
        p.address,
        p.ssh_port,
        p.ssh_user,
        ssh.fingerprint(p.host_key),
        p.root,
        p.url,
        p.bandwidth_kib,
    )


@dataclass(frozen=True)
class PointSpec:
    building: str
    address: str
    ssh_user: str
    root: str
    url: str
    ssh_port: int = 22
    bandwidth_kib: int = 0
    host_key: str | None = None
    """The key line to pin; None: fetched from the host now, as a client's is."""


def _checked_spec(spec: PointSpec) -> PointSpec:
    spec = replace(spec, address=inventory.checked_address(spec.address))
    if not _ROOT.fullmatch(spec.root) or ".." in PurePosixPath(spec.root).parts:
        raise InvalidInput(
            f"{spec.root!r} is not an absolute folder (letters, digits, . _ - /; no '..')",
            field="root",
        )
    url = urlsplit(spec.url)
    if url.scheme not in ("http", "https") or not url.hostname or url.query or url.fragment:
        raise InvalidInput(f"{spec.url!r} is not an http(s) address", field="url")
    if not 0 <= spec.bandwidth_kib <= 10_000_000:
        raise InvalidInput("must be 0 (no limit) to 10000000 KiB/s", field="bandwidth")
    validation.username(spec.ssh_user, field="ssh_user")
    return spec


def add_point(
    ctx: Context,
    actor: Actor,
    spec: PointSpec,
    *,
    fetch_key: Callable[..., str] = ssh.fetch_host_key,
) -> PointView:
    """IT gives a building its distribution point; its SSH key is pinned now.

    Raises: Refused (not IT), NotFound (building), InvalidInput, Conflict (it has one),
    HostUnreachable (fetching the key).
    """
    authorize(actor, Action.MANAGE_IMAGE_STORE, building=None)
    spec = _checked_spec(spec)
    number = validation.building_number(spec.building)
    with transaction(ctx.engine) as session:
        building = visible_building_row(session, actor, number)
        if _point_of(session, building) is not None:
            raise Conflict(f"building {number} has a distribution point already")
    key = ssh.normalize_key_line(_fetch_key(spec, fetch_key, "no point was added"))
    with transaction(ctx.engine) as session:
        building = visible_building_row(session, actor, number)
        if _point_of(session, building) is not None:
            raise Conflict(f"building {number} has a distribution point already")
        assert building.id is not None
        row = DistributionPoint(
            building_id=building.id,
            address=spec.address,
            ssh_port=spec.ssh_port,
            ssh_user=spec.ssh_user,
            host_key=key,
            root=spec.root.rstrip("/") or "/",
            url=spec.url.rstrip("/"),
            bandwidth_kib=spec.bandwidth_kib,
            created_at=ctx.now(),
        )
        session.add(row)
        session.flush()
        audit.append(
            session,
            at=ctx.now(),
            actor=actor,
            action="distribution_point.add",
            subject=_point_subject(row, number),
            after={"address": row.address, "url": row.url, "fingerprint": ssh.fingerprint(key)},
        )
        return _point_view(row, number)


@dataclass(frozen=True)
class PointChange:
    """What to change on a building's point; None leaves a field as it is."""

    reason: str
    """Why (the audit log keeps it)."""
    address: str | None = None
    ssh_port: int | None = None
    ssh_user: str | None = None
    root: str | None = None
    url: str | None = None
    bandwidth_kib: int | None = None
    repin: bool = False
    """Pin the key the host offers now (its host was reinstalled or replaced)."""


def change_point(
    ctx: Context,
    actor: Actor,
    building: str,
    change: PointChange,
    *,
    fetch_key: Callable[..., str] = ssh.fetch_host_key,
) -> PointView:
    """IT changes a building's distribution point.

    A new address or port, or ``repin``, pins the key the host offers now (audited
    with both fingerprints). A new address, port or store folder is another store:
    what was staged to the old one is forgotten, so the scheduler stages again
    and, until then, the building's computers fetch from the orchestrator.

    Raises: Refused (not IT), NotFound (building; it has no point), InvalidInput
    (no reason, nothing to change, a bad value), Conflict (a staging to it is
    running), HostUnreachable (fetching the key: nothing changed).
    """
    authorize(actor, Action.MANAGE_IMAGE_STORE, building=None)
    reason = _reason(change.reason)
    number = validation.building_number(building)
    with transaction(ctx.engine) as session:
        point = _existing_point(session, actor, number)
        before = _point_view(point, number)
        pinned = host_key = point.host_key
    spec = _checked_spec(
        PointSpec(
            number,
            before.address if change.address is None else change.address,
            before.ssh_user if change.ssh_user is None else change.ssh_user,
            before.root if change.root is None else change.root.rstrip("/") or "/",
            before.url if change.url is None else change.url.rstrip("/"),
            before.ssh_port if change.ssh_port is None else change.ssh_port,
            before.bandwidth_kib if change.bandwidth_kib is None else change.bandwidth_kib,
        )
    )
    moved = (spec.address, spec.ssh_port) != (before.address, before.ssh_port)
    other_store = moved or spec.root != before.root
    fields = ("address", "ssh_port", "ssh_user", "root", "url", "bandwidth_kib")
    if not change.repin and all(getattr(spec, f) == getattr(before, f) for f in fields):
        raise InvalidInput(
            "nothing to change: give a new value, or --repin to pin the key it offers now",
            field="building",
        )
    if moved or change.repin:
        host_key = ssh.normalize_key_line(_fetch_key(spec, fetch_key, "no point was changed"))
    with transaction(ctx.engine) as session:
        point = _existing_point(session, actor, number)
        if _point_view(point, number) != before or point.host_key != pinned:
            raise StaleState(f"building {number}'s point was changed meanwhile: look and try again")
        _refuse_while_staging(session, point, number)
        forgotten = _forget_stagings(session, point) if other_store else 0
        point.address, point.ssh_port, point.ssh_user = spec.address, spec.ssh_port, spec.ssh_user
        point.root, point.url, point.bandwidth_kib = spec.root, spec.url, spec.bandwidth_kib
        point.host_key = host_key
        session.add(point)
        session.flush()
        after = _point_view(point, number)
        audit.append(
            session,
            at=ctx.now(),
            actor=actor,
            action="distribution_point.change",
            subject=_point_subject(point, number),
            before={f: getattr(before, f) for f in (*fields, "fingerprint")},
            after={f: getattr(after, f) for f in (*fields, "fingerprint")}
            | {"stagings_forgotten": forgotten},
            reason=reason,
        )
        return after


def remove_point(ctx: Context, actor: Actor, building: str, *, reason: str) -> int:
    """IT takes a building's distribution point away; its computers fetch from the
    orchestrator again. What was staged to it is forgotten (the audit log keeps how
    much). Returns the number of stagings forgotten.

    Raises: Refused (not IT), NotFound (building; it has no point), InvalidInput
    (no reason), Conflict (a staging to it is running).
    """
    authorize(actor, Action.MANAGE_IMAGE_STORE, building=None)
    why = _reason(reason)
    number = validation.building_number(building)
    with transaction(ctx.engine) as session:
        point = _existing_point(session, actor, number)
        _refuse_while_staging(session, point, number)
        before = _point_view(point, number)
        subject = _point_subject(point, number)
        forgotten = _forget_stagings(session, point)
        session.delete(point)
        session.flush()
        audit.append(
            session,
            at=ctx.now(),
            actor=actor,
            action="distribution_point.remove",
            subject=subject,
            before={"address": before.address, "url": before.url, "root": before.root},
            after={"stagings_forgotten": forgotten},
            reason=why,
        )
        return forgotten


def _reason(text: object) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("say why (e.g. 'point replaced, ticket 4411')", field="reason")
    return validation.text(text, field="reason", max_len=500, required=True)


def _existing_point(session: Session, actor: Actor, number: str) -> DistributionPoint:
    point = _point_of(session, visible_building_row(session, actor, number))
    if point is None:
        raise NotFound(
            f"building {number} has no distribution point (see 'orchestrator points add')"
        )
    return point


def _refuse_while_staging(session: Session, point: DistributionPoint, number: str) -> None:
    running = session.exec(
        select(ImageStaging.id).where(
            ImageStaging.point_id == point.id, ImageStaging.state == "running"
        )
    ).first()
    if running is not None:
        raise Conflict(
            f"staging #{running} to building {number}'s point is running: "
            "wait for it to end ('orchestrator store staged')"
        )


def _forget_stagings(session: Session, point: DistributionPoint) -> int:
    rows = list(session.exec(select(ImageStaging).where(ImageStaging.point_id == point.id)))
    for row in rows:
        session.delete(row)
    session.flush()
    return len(rows)


def _fetch_key(spec: PointSpec, fetch_key: Callable[..., str], unchanged: str) -> str:
    try:
        return spec.host_key or fetch_key(spec.address, spec.ssh_port, timeout=10.0)
    except HostUnreachable as exc:
        raise HostUnreachable(
            f"{exc}: its SSH host key cannot be fetched to pin it, so {unchanged} "
            "(check --address and --ssh-port, and that sshd runs there)"
        ) from exc


def _point_subject(point: DistributionPoint, building: str) -> audit.Subject:
    return audit.Subject("distribution_point", f"point of {building}", point.id, building)


def _point_of(session: Session, building: Building) -> DistributionPoint | None:
    return session.exec(
        select(DistributionPoint).where(DistributionPoint.building_id == building.id)
    ).first()


def list_points(ctx: Context, actor: Actor) -> list[PointView]:
    """The distribution points of the buildings the actor may see."""
    with transaction(ctx.engine) as session:
        rows = session.exec(
            select(DistributionPoint, Building)
            .where(col(DistributionPoint.building_id) == col(Building.id))
            .order_by(col(Building.number))
        ).all()
        return [
            _point_view(p, b.number)
            for p, b in rows
            if may(actor, Action.READ_CATALOG, building=b.number)
        ]


def point_of(ctx: Context, actor: Actor, building: str) -> PointView | None:
    """The building's distribution point, if it has one.

    Raises: NotFound (a building the actor may not see).
    """
    number = validation.building_number(building)
    with transaction(ctx.engine) as session:
        p = _point_of(session, visible_building_row(session, actor, number))
        return _point_view(p, number) if p is not None else None


@dataclass(frozen=True)
class StagingView:
    id: int
    ref: str
    building: str
    state: str
    chunks_total: int
    chunks_sent: int
    bytes_sent: int
    message: str
    started_at: datetime
    finished_at: datetime | None


def _staging_view(s: ImageStaging, ref: str, building: str) -> StagingView:
    assert s.id is not None
    return StagingView(
        s.id,
        ref,
        building,
        s.state,
        s.chunks_total,
        s.chunks_sent,
        s.bytes_sent,
        s.message,
        s.started_at,
        s.finished_at,
    )


@dataclass(frozen=True)
class _Plan:
    ref: str
    building: str
    point: DistributionPoint
    manifest: ImageManifest


def _plan(ctx: Context, actor: Actor, kind: Kind, ref: str, building: str) -> _Plan:
    number = validation.building_number(building)
    with transaction(ctx.engine) as session:
        row = releasables.resolve(session, actor, kind, ref)
        b = visible_building_row(session, actor, number)
        authorize(actor, Action.RUN_PLAYBOOK, building=number)
        point = _point_of(session, b)
        if point is None:
            raise NotFound(
                f"building {number} has no distribution point (see 'orchestrator points add')"
            )
        m = session.exec(select(ImageManifest).where(ImageManifest.releasable_id == row.id)).first()
        if m is None:
            carried = [
                r for r in delivery.delivered_rows(session, "apply_image", row) if r.id != row.id
            ]
            if carried and not row.artifact_ref:
                raise Conflict(
                    f"{ref_of(row)} lays down what it carries: stage "
                    f"{', '.join(ref_of(r) for r in carried)} (the scheduler does so itself "
                    "before a deployment's window)"
                )
            raise Conflict(f"{ref_of(row)} is not in the image store: import it first")
        if m.signed is None:
            raise Conflict(
                f"{ref_of(row)} is not released: only images the chain released are staged"
            )
        image_store.keep_signature_current(session, ctx, row)
        session.flush()
        session.expunge(point)
        session.expunge(m)
        return _Plan(ref_of(row), number, point, m)


def stage(
    ctx: Context,
    actor: Actor,
    kind: Kind,
    ref: str,
    building: str,
    *,
    credentials: Credentials,
    progress: Callable[[StagingView], None] | None = None,
    connect: Callable[..., ssh.PinnedSession] = ssh.connect,
    ca_file: str | None = None,
) -> StagingView:
    """Send the building's distribution point what it lacks of a released image.

    Raises:
        NotFound, Refused, Conflict (not stored, or not released), InvalidInput
        (no SSH key), and the point's own errors (HostUnreachable, HostKeyChanged,
        AuthenticationFailed, AccessDenied, RemoteError): then the staging row
        says ``failed`` with the reason, and a new staging sends what is left.
    """
    plan = _plan(ctx, actor, kind, ref, building)
    ssh_key = _ssh_key(credentials)
    name = plan.manifest.index_name
    with image_store.open_store(ctx) as store:
        index = store.index(name)
        index_bytes = store.index_path(name).read_bytes()
        wanted = sorted(index.unique_ids())
        lacking = points.missing(plan.point.url, wanted, ca_file=ca_file)
        row = _start(ctx, plan, len(lacking))
        limit = points.RateLimit(plan.point.bandwidth_kib * 1024)
        tally = points.Tally()

        def report() -> None:
            view = _progress(ctx, row, plan, tally.chunks, tally.bytes)
            if progress:
                progress(view)

        try:
            with _login(connect, plan.point, ssh_key) as session:
                points.send_chunks(
                    session,
                    plan.point.root,
                    [(c, store.chunks.path(c)) for c in wanted if c in lacking],
                    limit=limit,
                    tally=tally,
                    host=f"{plan.point.address}:{plan.point.ssh_port}",
                    progress=report,
                )
                sent, sent_bytes = tally.chunks, tally.bytes
                # Last, so the point never offers an image whose chunks it lacks.
                for part in (index_bytes, plan.manifest.signed):
                    assert part is not None
                    limit.take(len(part))
                    sent_bytes += len(part)
                session.write_atomic(f"{plan.point.root}/indexes/{name}.caibx", index_bytes)
                assert plan.manifest.signed is not None
                session.write_atomic(
                    f"{plan.point.root}/manifests/{name}.json", plan.manifest.signed
                )
        except (OrchestratorError, OSError) as exc:
            _finish(ctx, actor, row, plan, tally.chunks, tally.bytes, failed=str(exc))
            raise
    done = _finish(ctx, actor, row, plan, sent, sent_bytes, failed=None)
    if progress:
        progress(done)
    return done


def _ssh_key(credentials: Credentials) -> str:
    """The key the orchestrator logs in to points with.

    Raises: InvalidInput (none set)."""
    if not credentials.ssh_key:
        raise InvalidInput(
            "no SSH key to log in to the distribution point with (see 'orchestrator "
            "credentials set ssh-key')",
            field="credentials",
        )
    return credentials.ssh_key


def _login(
    connect: Callable[..., ssh.PinnedSession], point: DistributionPoint, ssh_key: str
) -> ssh.PinnedSession:
    """A session on the point, its host key the one pinned when IT added it."""
    return connect(
        point.address,
        point.ssh_port,
        host_key=point.host_key,
        username=point.ssh_user,
        private_key=ssh_key,
    )


def _start(ctx: Context, plan: _Plan, total: int) -> int:
    with transaction(ctx.engine) as session:
        assert plan.point.id is not None and plan.manifest.id is not None
        row = ImageStaging(
            point_id=plan.point.id,
            manifest_id=plan.manifest.id,
            state="running",
            chunks_total=total,
            started_at=ctx.now(),
        )
        session.add(row)
        session.flush()
        assert row.id is not None
        return row.id


def _progress(ctx: Context, row_id: int, plan: _Plan, sent: int, sent_bytes: int) -> StagingView:
    with transaction(ctx.engine) as session:
        row = session.get(ImageStaging, row_id)
        assert row is not None
        row.chunks_sent, row.bytes_sent = sent, sent_bytes
        session.add(row)
        return _staging_view(row, plan.ref, plan.building)


def _finish(
    ctx: Context,
    actor: Actor,
    row_id: int,
    plan: _Plan,
    sent: int,
    sent_bytes: int,
    *,
    failed: str | None,
) -> StagingView:
    now = ctx.now()
    with transaction(ctx.engine) as session:
        row = session.get(ImageStaging, row_id)
        assert row is not None
        row.chunks_sent, row.bytes_sent, row.finished_at = sent, sent_bytes, now
        row.state = "failed" if failed else "staged"
        row.message = (failed or "")[:500]
        session.add(row)
        audit.append(
            session,
            at=now,
            actor=actor,
            action="image.stage" if not failed else "image.stage_failed",
            subject=audit.Subject("image_staging", plan.ref, row.id, plan.building),
            after={"chunks": sent, "bytes": sent_bytes, "of": row.chunks_total},
            reason=(failed or "")[:2000],
        )
        return _staging_view(row, plan.ref, plan.building)


@dataclass(frozen=True)
class PruneReport:
    building: str
    removed_images: list[str]
    """Index names of the images taken off the point."""
    removed_chunks: int
    """Chunks of those images that nothing else on the point or in the store names."""
    kept_images: int
    strays: int = 0
    """Chunks no index names (a staging cut short), removed."""
    temporaries: int = 0
    """Temporary files a staging cut short left, removed."""


MAX_POINT_INDEX = 1 << 30
"""The largest index file read back from a point (the store writes none larger)."""


def prune(
    ctx: Context,
    actor: Actor,
    building: str,
    *,
    credentials: Credentials,
    connect: Callable[..., ssh.PinnedSession] = ssh.connect,
) -> PruneReport:
    """Take off a building's point the images the orchestrator's store no longer
    holds (``store gc`` let go of them), with the chunks nothing else needs:
    another image on the point, or any image in the store, which a staging may
    send it later. IT only.

    Then, where the point's host has ``python3`` (its receiver lists the store),
    it sweeps what no index names: chunks a staging cut short sent for an image
    whose index never arrived, and the temporary files such a staging left. Its
    own indexes are read only where they differ from the store's. Any index file
    outside the allow-list stops the sweep: what it names is unknown.

    It runs with the store to itself, as gc does, so no staging sends the point
    a chunk while it is removed. On the point the signed manifest goes first, so
    the point stops offering the image; then the chunks; the index last, so a
    prune cut short is run again and finishes.

    Raises:
        Refused, NotFound (no such building, or it has no point), InvalidInput
        (no SSH key), StoreBusy, and the point's own errors (HostUnreachable,
        HostKeyChanged, AuthenticationFailed, AccessDenied, RemoteError).
    """
    authorize(actor, Action.MANAGE_IMAGE_STORE, building=None)
    number = validation.building_number(building)
    point = _point_to_prune(ctx, actor, number)
    ssh_key = _ssh_key(credentials)
    with image_store.open_store(ctx) as store, store.alone():
        return _prune(ctx, actor, number, point, _Known.read(ctx, store), ssh_key, connect)


def _point_to_prune(ctx: Context, actor: Actor, number: str) -> DistributionPoint:
    with transaction(ctx.engine) as session:
        point = _point_of(session, visible_building_row(session, actor, number))
        if point is None:
            raise NotFound(
                f"building {number} has no distribution point (see 'orchestrator points add')"
            )
        session.expunge(point)
        return point


@dataclass(frozen=True)
class _Known:
    """What the orchestrator's store holds, read once for any number of prunes
    (the store held alone meanwhile, so it does not change)."""

    store: ImageStore
    owned: dict[str, str]
    """Each stored image's index name and the SHA-256 of its index."""
    needed: frozenset[bytes]
    """The chunks of every image the store holds an index of."""

    @classmethod
    def read(cls, ctx: Context, store: ImageStore) -> _Known:
        with transaction(ctx.engine) as session:
            rows = session.exec(select(ImageManifest.index_name, ImageManifest.index_sha256))
            owned = {name: digest for name, digest in rows}
        needed: set[bytes] = set()
        for name in owned:
            if store.has_index(name):
                needed |= store.index(name).unique_ids()
        return cls(store, owned, frozenset(needed))


def _prune(
    ctx: Context,
    actor: Actor,
    number: str,
    point: DistributionPoint,
    known: _Known,
    ssh_key: str,
    connect: Callable[..., ssh.PinnedSession],
) -> PruneReport:
    root, where = point.root, f"{point.address}:{point.ssh_port}"
    owned = known.owned
    removed_names: list[str] = []
    removed: set[bytes] = set()
    strays = temporaries = 0
    with _login(connect, point, ssh_key) as session:
        held = points.holdings(session, root, host=where)
        if held is None:  # no python3 fit for the receiver: its indexes, but no sweep
            log.info(
                "point of %s has no python3 fit for the receiver: pruned without a sweep "
                "for strays",
                number,
            )
            files = session.list_names(f"{root}/indexes")
        else:
            files = [f"{n}.caibx" for n in held.indexes]
        on_point, all_named = _point_index_names(files)
        kept = [n for n in on_point if n in owned]
        going = [n for n in on_point if n not in owned]
        needed = set(known.needed)
        for name in kept:  # the point's copy, unless the store holds the same
            same = held is not None and held.indexes.get(name) == owned[name]
            if not (same and known.store.has_index(name)):
                needed |= _point_index(session, root, name).unique_ids()
        for name in going:
            index = _point_index(session, root, name)
            session.remove(f"{root}/manifests/{name}.json")
            for chunk_id in sorted(index.unique_ids() - needed - removed):
                session.remove(points.chunk_path(root, chunk_id))
                removed.add(chunk_id)
            session.remove(f"{root}/indexes/{name}.caibx")
            removed_names.append(name)
        if held is not None and all_named:
            # What no index names: sent by a staging cut short, or left by
            # an image taken off the point by hand. No staging runs now.
            for chunk_id in sorted(held.chunks - needed - removed):
                session.remove(points.chunk_path(root, chunk_id))
                strays += 1
            for tmp in held.temporaries:
                session.remove(f"{root}/chunks/{tmp}")
                temporaries += 1
    if removed_names or strays or temporaries:
        with transaction(ctx.engine) as session:
            audit.append(
                session,
                at=ctx.now(),
                actor=actor,
                action="distribution_point.prune",
                subject=_point_subject(point, number),
                after={
                    "images": removed_names[:50],
                    "chunks": len(removed),
                    "strays": strays,
                    "temporaries": temporaries,
                },
            )
    return PruneReport(number, removed_names, len(removed), len(kept), strays, temporaries)


@dataclass(frozen=True)
class Housekeeping:
    gc: image_store.GcReport
    pruned: list[PruneReport]
    failed: dict[str, str]
    """Buildings whose point could not be pruned, and why; the next run tries again."""


def housekeeping(
    ctx: Context,
    actor: Actor,
    *,
    credentials: Credentials,
    protect_hours: int = image_store.PROTECT_HOURS,
    connect: Callable[..., ssh.PinnedSession] = ssh.connect,
) -> Housekeeping:
    """What IT would run by hand once retired images are past the window: ``store
    gc``, then ``store prune`` of every building's point. The service runs it daily.

    The store is read once for all the points, and held alone while they are
    pruned. A point that cannot be pruned (unreachable, its key changed, no SSH
    key) is reported in ``failed`` and the others are pruned.

    Raises: Refused, StoreBusy (another process has the store open: gc changes
    nothing then; taken between gc and the prunes, no point is pruned, and the
    next run does both).
    """
    report = image_store.gc(ctx, actor, protect_hours=protect_hours)
    pruned: list[PruneReport] = []
    failed: dict[str, str] = {}
    views = list_points(ctx, actor)
    if not views:
        return Housekeeping(report, pruned, failed)
    with image_store.open_store(ctx) as store, store.alone():
        known = _Known.read(ctx, store)
        for view in views:
            try:
                point = _point_to_prune(ctx, actor, view.building)
                pruned.append(
                    _prune(
                        ctx,
                        actor,
                        view.building,
                        point,
                        known,
                        _ssh_key(credentials),
                        connect,
                    )
                )
            except OrchestratorError as exc:
                failed[view.building] = str(exc)
    return Housekeeping(report, pruned, failed)


def _point_index_names(files: Sequence[str]) -> tuple[list[str], bool]:
    """The image names among a point's index files, and whether every index file
    had one; temporaries are skipped, anything outside the allow-list left alone."""
    found, all_named = [], True
    for f in files:
        stem = f.removesuffix(".caibx")
        if stem == f or f.startswith("."):
            continue
        try:
            found.append(names.image_name(stem))
        except UnsafeName:
            log.warning("left alone on a point: index file %r is outside the allow-list", f)
            all_named = False
    return found, all_named


def _point_index(session: ssh.PinnedSession, root: str, name: str) -> Index:
    path = f"{root}/indexes/{name}.caibx"
    return decode(session.read(path, limit=MAX_POINT_INDEX), source=path)


def stagings(ctx: Context, actor: Actor, building: str) -> list[StagingView]:
    """The stagings to a building's point, newest first."""
    number = validation.building_number(building)
    with transaction(ctx.engine) as session:
        b = visible_building_row(session, actor, number)
        point = _point_of(session, b)
        if point is None:
            return []
        out = []
        for s, m in session.exec(
            select(ImageStaging, ImageManifest)
            .where(
                ImageStaging.point_id == point.id,
                col(ImageStaging.manifest_id) == col(ImageManifest.id),
            )
            .order_by(col(ImageStaging.id).desc())
        ):
            item = session.get(Releasable, m.releasable_id)
            assert item is not None
            out.append(_staging_view(s, ref_of(item), number))
        return out


DEFAULT_LEAD = timedelta(hours=12)
"""How long before a building's window its point is staged (the link is thin at night too)."""


def prestage_due(
    ctx: Context,
    *,
    credentials: Credentials,
    lead: timedelta = DEFAULT_LEAD,
    stage_one: Callable[..., StagingView] | None = None,
) -> list[StagingView]:
    """Stage, before its window, each live deployment's image to the distribution
    point of every building it reaches whose window opens within ``lead`` (or is
    open), unless that point holds it already. Run by the scheduler as the system.

    One building's failure is recorded on its staging row and logged; the others
    go on. Returns the stagings made.
    """
    do = stage_one or stage
    horizon = ctx.now() + lead
    made: list[StagingView] = []
    with transaction(ctx.engine) as session:
        live = session.exec(
            select(Deployment, Releasable)
            .where(
                col(Deployment.state).in_(
                    [DeploymentState.SCHEDULED.value, DeploymentState.RUNNING.value]
                ),
                col(Releasable.id) == col(Deployment.releasable_id),
            )
            .order_by(col(Deployment.id))
        ).all()
        wanted: list[tuple[int, Kind, str, int]] = []
        for dep, row in live:
            # What the clients will pull: a PC image's WIM is its base's, a Mac
            # image's bytes are its packages.
            for item in delivery.delivered_rows(session, dep.playbook, row):
                m = session.exec(
                    select(ImageManifest).where(ImageManifest.releasable_id == item.id)
                ).first()
                if m is not None and m.signed is not None:
                    assert dep.id is not None and m.id is not None
                    wanted.append((dep.id, Kind(item.kind), ref_of(item), m.id))
    windows: dict[int, dict[str, datetime]] = {}
    for dep_id, kind, ref, manifest_id in wanted:
        if dep_id not in windows:
            windows[dep_id] = dict(deployments.show(ctx, SYSTEM_ACTOR, dep_id).first_windows)
        for building, opens in sorted(windows[dep_id].items()):
            if opens > horizon or _staged(ctx, building, manifest_id):
                continue
            try:
                made.append(do(ctx, SYSTEM_ACTOR, kind, ref, building, credentials=credentials))
            except NotFound:
                continue  # no distribution point there: clients use the district's server
            except OrchestratorError as exc:
                log.warning("staging %s to building %s failed: %s", ref, building, exc)
    return made


@dataclass(frozen=True)
class DeliveryStaging:
    """How one artifact a deployment delivers stands on one building's point."""

    building: str
    ref: str
    state: str
    """``no point``, ``not stored`` (fetched from the orchestrator), ``waiting``
    (not staged since its manifest was signed), or a staging's ``running``,
    ``staged`` or ``failed``."""
    chunks_sent: int
    chunks_total: int
    """Of the chunks the point lacked when the staging began."""
    message: str
    at: datetime | None
    """When the staging shown began."""


def deployment_stagings(ctx: Context, actor: Actor, deployment_id: int) -> list[DeliveryStaging]:
    """For each building a deployment reaches that the actor may see, and each
    artifact it delivers there: whether the building's point holds it, is being
    sent it, failed to take it, or has yet to; or why the clients fetch it from
    the orchestrator instead. What ``deploy show`` and the deployment's page say.

    Raises: NotFound (a deployment the actor may not see).
    """
    out: list[DeliveryStaging] = []
    with transaction(ctx.engine) as session:
        dep, buildings = deployments.visible(session, actor, deployment_id)
        row = session.get(Releasable, dep.releasable_id)
        if row is None:
            return out
        items = delivery.delivered_rows(session, dep.playbook, row)
        for number in buildings:
            if not may(actor, Action.READ_CATALOG, building=number):
                continue
            b = session.exec(select(Building).where(Building.number == number)).one()
            point = _point_of(session, b)
            out.extend(_standing(session, number, point, item) for item in items)
    return out


def _standing(
    session: Session, building: str, point: DistributionPoint | None, item: Releasable
) -> DeliveryStaging:
    ref = ref_of(item)

    def said(state: str, message: str, s: ImageStaging | None = None) -> DeliveryStaging:
        if s is None:
            return DeliveryStaging(building, ref, state, 0, 0, message, None)
        return DeliveryStaging(
            building, ref, state, s.chunks_sent, s.chunks_total, message, s.started_at
        )

    if point is None:
        return said("no point", "no distribution point: its computers fetch from the orchestrator")
    m = session.exec(select(ImageManifest).where(ImageManifest.releasable_id == item.id)).first()
    if m is None or m.signed is None or m.artifact_sha256 != item.artifact_sha256:
        return said(
            "not stored",
            "its released bytes are not in the image store: its computers fetch them "
            "from the orchestrator",
        )
    s = session.exec(
        select(ImageStaging)
        .where(ImageStaging.point_id == point.id, ImageStaging.manifest_id == m.id)
        .order_by(col(ImageStaging.id).desc())
    ).first()
    if s is None or m.signed_at is None or s.started_at < m.signed_at:
        return said(
            "waiting",
            "not staged yet: the scheduler sends it as the window nears; until then its "
            "computers fetch it from the orchestrator",
        )
    if s.state == "staged":
        return said("staged", "staged: its computers pull it from the point", s)
    if s.state == "failed":
        return said("failed", f"{s.message}; tried again at the scheduler's next check", s)
    return said(s.state, f"sending: {s.chunks_sent} of {s.chunks_total} chunks", s)


_CURRENT = (
    ImageStaging.state == "staged",
    # A manifest signed anew since (a sunset moved) is staged again.
    col(ImageStaging.started_at) >= col(ImageManifest.signed_at),
)
"""A staging whose point holds the image's current signed manifest."""


def pull_sources(
    session: Session, building: Building, artifacts: Sequence[delivery.Artifact]
) -> dict[int, dict[str, str]]:
    """Artifact index → where the building's clients pull it from: for each artifact
    its distribution point holds, staged since its manifest was last signed.

    A source names the point's URL, the image's name in the store and what its
    signed manifest must say (kind, scope, name, version): the client's pull agent
    refuses a manifest that says anything else, or that the district's keys did not
    sign. An artifact without one (no point, not stored, not staged, or staged
    before a new signature) is downloaded from the orchestrator as before.
    """
    ids = {i: a.releasable_id for i, a in enumerate(artifacts) if a.releasable_id is not None}
    if not ids:
        return {}
    point = _point_of(session, building)
    if point is None:
        return {}
    staged = {
        m.releasable_id: (m, row)
        for m, row in session.exec(
            select(ImageManifest, Releasable)
            .join(ImageStaging, col(ImageStaging.manifest_id) == col(ImageManifest.id))
            .where(
                col(Releasable.id) == col(ImageManifest.releasable_id),
                col(ImageManifest.releasable_id).in_(sorted(set(ids.values()))),
                ImageStaging.point_id == point.id,
                col(ImageManifest.signed).is_not(None),
                # The stored bytes are still the entry's artifact (not replaced since).
                col(ImageManifest.artifact_sha256) == col(Releasable.artifact_sha256),
                *_CURRENT,
            )
        )
    }
    sources: dict[int, dict[str, str]] = {}
    for i, releasable_id in ids.items():
        if releasable_id not in staged:
            continue
        m, row = staged[releasable_id]
        sources[i] = {
            "point": point.url,
            "image": m.index_name,
            "kind": row.kind,
            "scope": building_of(row) or "district",
            "name": row.name,
            "version": row.version,
        }
    return sources


def _staged(ctx: Context, building: str, manifest_id: int) -> bool:
    with transaction(ctx.engine) as session:
        return (
            session.exec(
                select(ImageStaging.id)
                .join(DistributionPoint, col(DistributionPoint.id) == col(ImageStaging.point_id))
                .join(Building, col(Building.id) == col(DistributionPoint.building_id))
                .join(ImageManifest, col(ImageManifest.id) == col(ImageStaging.manifest_id))
                .where(
                    Building.number == building,
                    ImageStaging.manifest_id == manifest_id,
                    *_CURRENT,
                )
            ).first()
            is not None
        )
