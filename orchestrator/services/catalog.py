"""The catalog: base images, customized images and software packages.

Creating and revising things lives here; moving them along the approval
chain lives in :mod:`orchestrator.services.chain`.

References (``ref``) name one version of one thing:

* base image: ``pc-high@2026.1`` (platform-level@version)
* customized image: ``101/lab@1.2`` (building/name@version)
* software package: ``firefox@128.0`` district-wide, ``101/mathlab@3.1`` building-local
* any of them: ``#17`` (the catalog id)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session, col, select

from orchestrator.db.models import (
    HardwareModel,
    ImagePackage,
    Person,
    Releasable,
    ReleasableModel,
)
from orchestrator.db.session import transaction
from orchestrator.domain import lifecycle, sunset, validation
from orchestrator.domain.digest import content_digest
from orchestrator.domain.lifecycle import Event
from orchestrator.domain.policy import Action, Actor, authorize, maintain_action, may
from orchestrator.domain.states import (
    INSTRUCTIONAL_LEVELS,
    Audience,
    Kind,
    Level,
    Platform,
    State,
)
from orchestrator.errors import Conflict, Duplicate, InvalidInput, SunsetReached
from orchestrator.remote.distribution import sha256_file
from orchestrator.services import audit, hardware, test_plans
from orchestrator.services.context import Context
from orchestrator.services.directory import get_building
from orchestrator.services.refs import (
    DISTRICT_SCOPE,
    building_of,
    make_ref,
    ref_of,
)
from orchestrator.services.releasables import authorize_maintain, resolve, subject
from orchestrator.services.transitions import move

# ---------------------------------------------------------------------------
# Reading (an entry found by its reference: services/releasables.py)
# ---------------------------------------------------------------------------


def version_sort_key(version: str) -> str:
    return ".".join(f"{p:06d}" for p in validation.version(version))


class ReleasableView(BaseModel):
    """What a user sees of one catalog entry."""

    id: int
    kind: Kind
    ref: str
    name: str
    version: str
    platform: Platform
    level: Level | None
    building: str | None
    state: State
    digest: str
    os_version: str | None
    base: str | None
    audience: Audience | None
    artifact_ref: str | None
    artifact_sha256: str | None
    settings: dict[str, str]
    detection_rule: str | None
    packages: list[str]
    models: list[str]
    sunset_date: date | None
    effective_sunset: date | None
    days_to_sunset: int | None
    needs_rebase: bool
    supersedes: str | None
    author: str
    revised_by: str | None
    created_at: datetime
    published_at: datetime | None
    notes: str


def views(session: Session, rows: Sequence[Releasable], today: date) -> list[ReleasableView]:
    """Views of ``rows`` with their references, models and effective sunsets resolved."""
    ids = [r.id for r in rows if r.id is not None]
    related_ids = {r.base_id for r in rows if r.base_id} | {
        r.supersedes_id for r in rows if r.supersedes_id
    }
    pkg_links = session.exec(select(ImagePackage).where(col(ImagePackage.image_id).in_(ids))).all()
    related_ids |= {p.package_id for p in pkg_links}
    related = {
        r.id: r for r in session.exec(select(Releasable).where(col(Releasable.id).in_(related_ids)))
    }
    people = {
        p.id: p.username
        for p in session.exec(
            select(Person).where(
                col(Person.id).in_({r.author_id for r in rows} | {r.revised_by_id for r in rows})
            )
        )
    }
    models: dict[int, list[str]] = {}
    for link, m in session.exec(
        select(ReleasableModel, HardwareModel)
        .where(col(ReleasableModel.hardware_model_id) == col(HardwareModel.id))
        .where(col(ReleasableModel.releasable_id).in_(ids))
    ):
        models.setdefault(link.releasable_id, []).append(hardware.model_ref(m))
    packages: dict[int, list[str]] = {}
    for pkg_link in pkg_links:
        packages.setdefault(pkg_link.image_id, []).append(ref_of(related[pkg_link.package_id]))

    out = []
    for r in rows:
        assert r.id is not None
        base = related.get(r.base_id) if r.base_id else None
        eff = sunset.effective_sunset(r.sunset_date, base.sunset_date if base else None)
        out.append(
            ReleasableView(
                id=r.id,
                kind=Kind(r.kind),
                ref=ref_of(r),
                name=r.name,
                version=r.version,
                platform=Platform(r.platform),
                level=Level(r.level) if r.level else None,
                building=building_of(r),
                state=State(r.state),
                digest=r.digest,
                os_version=r.os_version,
                base=ref_of(base) if base else None,
                audience=Audience(r.audience) if r.audience else None,
                artifact_ref=r.artifact_ref,
                artifact_sha256=r.artifact_sha256,
                settings=dict(r.settings),
                detection_rule=r.detection_rule,
                packages=sorted(packages.get(r.id, [])),
                models=sorted(models.get(r.id, [])),
                sunset_date=r.sunset_date,
                effective_sunset=eff,
                days_to_sunset=sunset.days_to_sunset(eff, today),
                needs_rebase=r.needs_rebase,
                supersedes=ref_of(related[r.supersedes_id]) if r.supersedes_id else None,
                author=people.get(r.author_id, "?"),
                revised_by=people.get(r.revised_by_id) if r.revised_by_id else None,
                created_at=r.created_at,
                published_at=r.published_at,
                notes=r.notes,
            )
        )
    return out


def view_of(session: Session, row: Releasable, today: date) -> ReleasableView:
    return views(session, [row], today)[0]


def effective_sunset_of(session: Session, row: Releasable) -> date | None:
    base = session.get(Releasable, row.base_id) if row.base_id else None
    return sunset.effective_sunset(row.sunset_date, base.sunset_date if base else None)


def list_releasables(
    ctx: Context,
    actor: Actor,
    kind: Kind | None = None,
    *,
    state: State | None = None,
    building: str | None = None,
    platform: Platform | None = None,
    level: Level | None = None,
) -> list[ReleasableView]:
    """Catalog entries the actor may see, newest version first within each name."""
    if building is not None:
        authorize(actor, Action.READ_CATALOG, building=building)
    with transaction(ctx.engine) as session:
        q = select(Releasable)
        if kind is not None:
            q = q.where(Releasable.kind == kind.value)
        if state is not None:
            q = q.where(Releasable.state == state.value)
        if building is not None:
            q = q.where(Releasable.scope_key == building)
        if platform is not None:
            q = q.where(Releasable.platform == platform.value)
        if level is not None:
            q = q.where(Releasable.level == level.value)
        q = q.order_by(
            col(Releasable.kind),
            col(Releasable.scope_key),
            col(Releasable.name),
            col(Releasable.version_key).desc(),
        )
        rows = [
            r for r in session.exec(q) if may(actor, Action.READ_CATALOG, building=building_of(r))
        ]
        return views(session, rows, ctx.today())


def show(ctx: Context, actor: Actor, kind: Kind, ref: str) -> ReleasableView:
    """Raises: NotFound, InvalidInput."""
    with transaction(ctx.engine) as session:
        return view_of(session, resolve(session, actor, kind, ref), ctx.today())


# ---------------------------------------------------------------------------
# Content and digests
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ArtifactRef:
    """Where an artifact's bits are and their SHA-256."""

    ref: str
    sha256: str


def artifact(ref: str, sha256: str | None, *, field: str = "artifact") -> ArtifactRef:
    """Check an artifact reference; hash it when it is a local file.

    A local path is read and hashed (and must match ``sha256`` when both are
    given). Anything else (a URL, a path on a distribution point) needs its
    ``sha256`` stated.

    Raises:
        InvalidInput: control characters, a missing file without a digest, a
            digest that does not match the file, or a malformed digest.
    """
    ref = validation.text(ref, field=field, max_len=500, required=True)
    if "\n" in ref or "\t" in ref:
        raise InvalidInput("must be one line", field=field)
    stated = validation.sha256_hex(sha256, field=f"{field}-sha256") if sha256 else None
    path = Path(ref.removeprefix("file://"))
    if "://" not in ref or ref.startswith("file://"):
        if path.is_file():
            actual = sha256_file(path)
            if stated and stated != actual:
                raise InvalidInput(
                    f"{ref} has SHA-256 {actual}, not the stated {stated}", field=field
                )
            return ArtifactRef(str(path.resolve()), actual)
        if path.exists():
            raise InvalidInput(f"{ref} is not a regular file", field=field)
    if not stated:
        raise InvalidInput(
            f"{ref} is not a file here; give its SHA-256 (--{field}-sha256) for a remote artifact",
            field=field,
        )
    return ArtifactRef(ref, stated)


def _model_refs(session: Session, row_id: int) -> list[str]:
    return sorted(
        hardware.model_ref(m)
        for m in session.exec(
            select(HardwareModel)
            .join(ReleasableModel, col(ReleasableModel.hardware_model_id) == col(HardwareModel.id))
            .where(ReleasableModel.releasable_id == row_id)
        )
    )


def package_rows(session: Session, image_id: int) -> list[Releasable]:
    return list(
        session.exec(
            select(Releasable)
            .join(ImagePackage, col(ImagePackage.package_id) == col(Releasable.id))
            .where(ImagePackage.image_id == image_id)
        )
    )


def compute_digest(session: Session, row: Releasable) -> str:
    """The content digest of ``row`` as stored (links included)."""
    assert row.id is not None
    content: dict[str, Any] = {
        "kind": row.kind,
        "scope": row.scope_key,
        "name": row.name,
        "version": row.version,
        "platform": row.platform,
        "artifact_sha256": row.artifact_sha256,
        "models": _model_refs(session, row.id),
    }
    if row.kind == Kind.BASE_IMAGE.value:
        content |= {"level": row.level, "os_version": row.os_version}
    elif row.kind == Kind.CUSTOM_IMAGE.value:
        base = session.get(Releasable, row.base_id)
        assert base is not None
        content |= {
            "base_digest": base.digest,
            "settings": dict(sorted(row.settings.items())),
            "packages": sorted(p.digest for p in package_rows(session, row.id)),
        }
    else:
        content |= {"audience": row.audience, "detection_rule": row.detection_rule}
    return content_digest(content)


def snapshot(row: Releasable) -> dict[str, Any]:
    """The audit log's before/after picture of a catalog entry."""
    return {
        "state": row.state,
        "digest": row.digest,
        "sunset_date": row.sunset_date.isoformat() if row.sunset_date else None,
        "needs_rebase": row.needs_rebase,
    }


def record_change(
    session: Session,
    ctx: Context,
    actor: Actor,
    row: Releasable,
    action: str,
    before: dict[str, Any] | None,
    reason: str = "",
) -> None:
    """Append the audit entry for a change to ``row``, in the caller's transaction."""
    audit.append(
        session,
        at=ctx.now(),
        actor=actor,
        action=action,
        subject=subject(row),
        before=before,
        after=snapshot(row),
        digest=row.digest,
        reason=reason,
    )


# ---------------------------------------------------------------------------
# Creating
# ---------------------------------------------------------------------------


def _platform(value: str) -> Platform:
    try:
        return Platform(value)
    except ValueError:
        raise InvalidInput(f"{value!r} is not a platform (pc or mac)", field="platform") from None


def _level(value: str) -> Level:
    try:
        level = Level(value)
    except ValueError:
        raise InvalidInput(
            f"{value!r} is not a level (elementary, middle or high)", field="level"
        ) from None
    if level not in INSTRUCTIONAL_LEVELS:
        raise InvalidInput("base images are per instructional level", field="level")
    return level


def _audience(value: str) -> Audience:
    try:
        return Audience(value)
    except ValueError:
        raise InvalidInput(
            f"{value!r} is not an audience (admin_staff, instructional or building_local)",
            field="audience",
        ) from None


def _check_not_duplicate(
    session: Session, kind: Kind, scope_key: str, name: str, version: str
) -> None:
    exists = session.exec(
        select(Releasable.id).where(
            Releasable.kind == kind.value,
            Releasable.scope_key == scope_key,
            Releasable.name == name,
            Releasable.version == version,
        )
    ).first()
    if exists is not None:
        raise Duplicate(f"{kind.label} {make_ref(name, version, scope_key)} already exists")


def _resolve_models(
    session: Session, refs: Iterable[str], platform: Platform, today: date
) -> list[HardwareModel]:
    found: dict[int, HardwareModel] = {}
    for ref in refs:
        m = hardware.find_model(session, ref)
        hardware.check_usable(m, platform, today, field="models")
        assert m.id is not None
        found[m.id] = m
    return list(found.values())


def _link_models(session: Session, row_id: int, models: Iterable[HardwareModel]) -> None:
    for m in models:
        assert m.id is not None
        session.add(ReleasableModel(releasable_id=row_id, hardware_model_id=m.id))


def _finish_create(
    ctx: Context, session: Session, actor: Actor, row: Releasable, action: str
) -> ReleasableView:
    row.digest = compute_digest(session, row)
    session.add(row)
    session.flush()
    record_change(session, ctx, actor, row, action, None)
    return view_of(session, row, ctx.today())


def _new_row(ctx: Context, actor: Actor, **columns: Any) -> Releasable:
    now = ctx.now()
    return Releasable(
        **columns,
        version_key=version_sort_key(columns["version"]),
        state=lifecycle.INITIAL.value,
        digest="pending",
        author_id=actor.person_id,
        created_at=now,
        updated_at=now,
    )


@dataclass
class BaseImageSpec:
    platform: str
    level: str
    version: str
    os_version: str
    sunset_date: date
    artifact: str
    artifact_sha256: str | None = None
    models: list[str] = field(default_factory=list)
    notes: str = ""


def create_base_image(ctx: Context, actor: Actor, spec: BaseImageSpec) -> ReleasableView:
    """IT creates a new version of a base image, as a draft.

    Raises:
        Refused: not IT. InvalidInput: bad platform, level, version, OS, artifact,
            sunset date already reached, or a model off the list. Duplicate.
    """
    authorize(actor, Action.MAINTAIN_BASE, building=None)
    platform, level = _platform(spec.platform), _level(spec.level)
    validation.version(spec.version)
    os_version = validation.label(spec.os_version, field="os", max_len=60)
    today = ctx.today()
    if spec.sunset_date <= today:
        raise InvalidInput(
            f"{spec.sunset_date.isoformat()} is not after today ({today.isoformat()})",
            field="sunset",
        )
    art = artifact(spec.artifact, spec.artifact_sha256)
    notes = validation.text(spec.notes, field="notes")
    name = f"{platform.value}-{level.value}"
    with transaction(ctx.engine) as session:
        _check_not_duplicate(session, Kind.BASE_IMAGE, DISTRICT_SCOPE, name, spec.version)
        models = _resolve_models(session, spec.models, platform, today)
        row = _new_row(
            ctx,
            actor,
            kind=Kind.BASE_IMAGE.value,
            name=name,
            version=spec.version,
            scope_key=DISTRICT_SCOPE,
            platform=platform.value,
            level=level.value,
            os_version=os_version,
            artifact_ref=art.ref,
            artifact_sha256=art.sha256,
            sunset_date=spec.sunset_date,
            notes=notes,
        )
        session.add(row)
        session.flush()
        assert row.id is not None
        _link_models(session, row.id, models)
        return _finish_create(ctx, session, actor, row, "base_image.create")


@dataclass
class CustomImageSpec:
    building: str
    name: str
    version: str
    base: str
    platform: str | None = None
    packages: list[str] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)
    overlay: str | None = None
    overlay_sha256: str | None = None
    models: list[str] | None = None
    """None: every model the base supports that is still usable."""
    sunset_date: date | None = None
    notes: str = ""


def _published_base(session: Session, actor: Actor, ref: str, today: date) -> Releasable:
    base = resolve(session, actor, Kind.BASE_IMAGE, ref)
    if base.state != State.PUBLISHED.value:
        raise InvalidInput(
            f"base image {ref_of(base)} is {base.state}; a customized image starts from a "
            "published base",
            field="base",
        )
    if sunset.is_sunset(base.sunset_date, today):
        raise SunsetReached(f"base image {ref_of(base)} reached its sunset on {base.sunset_date}")
    return base


def _resolve_packages(
    session: Session, actor: Actor, refs: Iterable[str], platform: Platform, building: str
) -> list[Releasable]:
    out: dict[int, Releasable] = {}
    for ref in refs:
        pkg = resolve(session, actor, Kind.PACKAGE, ref)
        if pkg.platform != platform.value:
            raise InvalidInput(
                f"{ref_of(pkg)} is a {pkg.platform} package; the image is {platform.value}",
                field="packages",
            )
        if pkg.scope_key not in (DISTRICT_SCOPE, building):
            raise InvalidInput(
                f"{ref_of(pkg)} is local to building {pkg.scope_key}", field="packages"
            )
        if pkg.state in (State.SUNSET.value, State.RETIRED.value):
            raise InvalidInput(f"{ref_of(pkg)} is {pkg.state}", field="packages")
        assert pkg.id is not None
        out[pkg.id] = pkg
    return list(out.values())


def create_custom_image(ctx: Context, actor: Actor, spec: CustomImageSpec) -> ReleasableView:
    """A building's tech creates a customized image from a published base of its level.

    Raises:
        Refused: not a tech of that building. NotFound: unknown building, base or
            package. InvalidInput: base of another platform or level, bad name,
            version, settings or models. Duplicate. SunsetReached: the base is sunset.
    """
    validation.building_number(spec.building)
    authorize(actor, Action.MAINTAIN_CUSTOM, building=spec.building)
    name = validation.name(spec.name)
    validation.version(spec.version)
    settings = validation.settings(spec.settings)
    notes = validation.text(spec.notes, field="notes")
    overlay = artifact(spec.overlay, spec.overlay_sha256, field="overlay") if spec.overlay else None
    today = ctx.today()
    with transaction(ctx.engine) as session:
        building = get_building(session, spec.building)
        base = _published_base(session, actor, spec.base, today)
        platform = Platform(base.platform)
        if spec.platform is not None and _platform(spec.platform) is not platform:
            raise InvalidInput(
                f"base image {ref_of(base)} is for {base.platform}, not {spec.platform}",
                field="base",
            )
        if base.level != building.level:
            raise InvalidInput(
                f"base image {ref_of(base)} is for {base.level} schools; building "
                f"{building.number} ({building.name}) is {building.level}",
                field="base",
            )
        _check_not_duplicate(session, Kind.CUSTOM_IMAGE, building.number, name, spec.version)
        packages = _resolve_packages(session, actor, spec.packages, platform, building.number)
        assert base.id is not None
        base_models = _model_refs(session, base.id)
        wanted = spec.models if spec.models is not None else base_models
        models = (
            _resolve_models(session, wanted, platform, today)
            if spec.models is not None
            else [
                m
                for m in (hardware.find_model(session, r) for r in base_models)
                if _usable(m, today)
            ]
        )
        unsupported = sorted({hardware.model_ref(m) for m in models} - set(base_models))
        if unsupported:
            raise InvalidInput(
                f"{', '.join(unsupported)} not supported by base image {ref_of(base)}",
                field="models",
            )
        row = _new_row(
            ctx,
            actor,
            kind=Kind.CUSTOM_IMAGE.value,
            name=name,
            version=spec.version,
            scope_key=building.number,
            building_id=building.id,
            platform=platform.value,
            level=building.level,
            os_version=base.os_version,
            base_id=base.id,
            artifact_ref=overlay.ref if overlay else None,
            artifact_sha256=overlay.sha256 if overlay else None,
            settings=settings,
            sunset_date=spec.sunset_date,
            notes=notes,
        )
        session.add(row)
        session.flush()
        assert row.id is not None
        _link_models(session, row.id, models)
        for pkg in packages:
            assert pkg.id is not None
            session.add(ImagePackage(image_id=row.id, package_id=pkg.id))
        session.flush()
        return _finish_create(ctx, session, actor, row, "custom_image.create")


def _usable(m: HardwareModel, today: date) -> bool:
    return m.approved and (m.end_of_support is None or m.end_of_support > today)


@dataclass
class PackageSpec:
    name: str
    version: str
    platform: str
    audience: str
    installer: str
    installer_sha256: str | None = None
    detection_rule: str = ""
    building: str | None = None
    models: list[str] = field(default_factory=list)
    sunset_date: date | None = None
    notes: str = ""


def create_package(ctx: Context, actor: Actor, spec: PackageSpec) -> ReleasableView:
    """Package an installer: IT for admin staff, IT/EdTech for instructional
    applications, EdTech or the building's SecTec for a building's local ones.

    Raises:
        Refused, NotFound (building), InvalidInput, Duplicate.
    """
    audience = _audience(spec.audience)
    if audience is Audience.BUILDING_LOCAL:
        if not spec.building:
            raise InvalidInput("a building-local package names its building", field="building")
        validation.building_number(spec.building)
    elif spec.building:
        raise InvalidInput(
            f"{audience.value} packages are district-wide; only building_local ones name a "
            "building",
            field="building",
        )
    authorize(actor, maintain_action(Kind.PACKAGE, audience), building=spec.building)
    name = validation.name(spec.name)
    validation.version(spec.version)
    platform = _platform(spec.platform)
    detection = validation.text(spec.detection_rule, field="detection", max_len=500)
    notes = validation.text(spec.notes, field="notes")
    installer = artifact(spec.installer, spec.installer_sha256, field="installer")
    today = ctx.today()
    if spec.sunset_date is not None and spec.sunset_date <= today:
        raise InvalidInput(f"{spec.sunset_date} is not after today ({today})", field="sunset")
    with transaction(ctx.engine) as session:
        building_id = None
        scope_key = DISTRICT_SCOPE
        if spec.building:
            b = get_building(session, spec.building)
            building_id, scope_key = b.id, b.number
        _check_not_duplicate(session, Kind.PACKAGE, scope_key, name, spec.version)
        models = _resolve_models(session, spec.models, platform, today)
        row = _new_row(
            ctx,
            actor,
            kind=Kind.PACKAGE.value,
            name=name,
            version=spec.version,
            scope_key=scope_key,
            building_id=building_id,
            platform=platform.value,
            audience=audience.value,
            artifact_ref=installer.ref,
            artifact_sha256=installer.sha256,
            detection_rule=detection or None,
            sunset_date=spec.sunset_date,
            notes=notes,
        )
        session.add(row)
        session.flush()
        assert row.id is not None
        _link_models(session, row.id, models)
        return _finish_create(ctx, session, actor, row, "package.create")


# ---------------------------------------------------------------------------
# Revising and rebasing
# ---------------------------------------------------------------------------


@dataclass
class Revision:
    """What to change; None leaves a field as it is."""

    artifact: str | ArtifactRef | None = None
    """A reference to check and hash, or one the caller has hashed (the image
    store's import, which hashes every byte again as it takes them in)."""
    artifact_sha256: str | None = None
    models: list[str] | None = None
    packages: list[str] | None = None
    settings: Mapping[str, str] | None = None
    detection_rule: str | None = None
    sunset_date: date | None = None
    notes: str | None = None
    reason: str = ""
    """Why (recorded in the audit log)."""


@dataclass(frozen=True)
class RevisionResult:
    view: ReleasableView
    digest_changed: bool
    chain_restarted: bool


def revise(ctx: Context, actor: Actor, kind: Kind, ref: str, rev: Revision) -> RevisionResult:
    """Change a draft or an item in the chain. A new content digest sends it back
    to draft: every approval is bound to the digest it judged.

    Raises:
        Refused, NotFound, InvalidInput, Conflict: published or later things are
            immutable (make a new version). StaleState: someone moved it meanwhile.
    """
    today = ctx.today()
    with transaction(ctx.engine) as session:
        row = resolve(session, actor, kind, ref)
        authorize_maintain(actor, row)
        state = State(row.state)
        content_change = any(
            v is not None
            for v in (rev.artifact, rev.models, rev.packages, rev.settings, rev.detection_rule)
        )
        if content_change and state not in lifecycle.REVISABLE:
            raise Conflict(
                f"{kind.label} {ref_of(row)} is {state.value}; its content is frozen "
                "(create a new version instead)"
            )
        assert row.id is not None
        before = snapshot(row)
        if rev.artifact is not None:
            art = (
                rev.artifact
                if isinstance(rev.artifact, ArtifactRef)
                else artifact(rev.artifact, rev.artifact_sha256)
            )
            row.artifact_ref, row.artifact_sha256 = art.ref, art.sha256
        if rev.detection_rule is not None:
            if kind is not Kind.PACKAGE:
                raise InvalidInput("only packages have a detection rule", field="detection")
            row.detection_rule = validation.text(rev.detection_rule, field="detection") or None
        if rev.settings is not None:
            if kind is not Kind.CUSTOM_IMAGE:
                raise InvalidInput("only customized images carry settings", field="settings")
            row.settings = validation.settings(rev.settings)
        if rev.packages is not None:
            if kind is not Kind.CUSTOM_IMAGE:
                raise InvalidInput("only customized images carry packages", field="packages")
            pkgs = _resolve_packages(
                session, actor, rev.packages, Platform(row.platform), row.scope_key
            )
            for link in session.exec(select(ImagePackage).where(ImagePackage.image_id == row.id)):
                session.delete(link)
            session.flush()
            for p in pkgs:
                assert p.id is not None
                session.add(ImagePackage(image_id=row.id, package_id=p.id))
        if rev.models is not None:
            models = _resolve_models(session, rev.models, Platform(row.platform), today)
            for mlink in session.exec(
                select(ReleasableModel).where(ReleasableModel.releasable_id == row.id)
            ):
                session.delete(mlink)
            session.flush()
            _link_models(session, row.id, models)
        if rev.sunset_date is not None:
            if rev.sunset_date <= today and state not in (State.SUNSET, State.RETIRED):
                raise InvalidInput(
                    f"{rev.sunset_date} is not after today ({today}); to stop deployments "
                    "now, deprecate or retire it",
                    field="sunset",
                )
            row.sunset_date = rev.sunset_date
        if rev.notes is not None:
            row.notes = validation.text(rev.notes, field="notes")
        session.flush()
        new_digest = compute_digest(session, row)
        changed = new_digest != row.digest
        restarted = False
        if changed:
            row.digest = new_digest
            row.revised_by_id = actor.person_id
            if state is not State.DRAFT:
                move(session, row, Event.REVISE, ctx.now())
                restarted = True
        row.updated_at = ctx.now()
        session.add(row)
        session.flush()
        record_change(
            session,
            ctx,
            actor,
            row,
            f"{kind.value}.revise",
            before,
            reason="; ".join(
                r
                for r in (
                    validation.text(rev.reason, field="reason"),
                    "content changed: the approval chain starts over" if restarted else "",
                )
                if r
            ),
        )
        if changed and kind is Kind.PACKAGE:
            _cascade_package_change(ctx, session, actor, row)
        return RevisionResult(view_of(session, row, today), changed, restarted)


def _cascade_package_change(ctx: Context, session: Session, actor: Actor, pkg: Releasable) -> None:
    """Images carrying a package whose content changed carry new content too:
    their digests follow, and those in the chain start it over."""
    images = session.exec(
        select(Releasable)
        .join(ImagePackage, col(ImagePackage.image_id) == col(Releasable.id))
        .where(ImagePackage.package_id == pkg.id)
    ).all()
    for image in images:
        state = State(image.state)
        if state not in lifecycle.REVISABLE:
            # Released images only carry released packages, whose content is frozen.
            continue
        new_digest = compute_digest(session, image)
        if new_digest == image.digest:
            continue
        before = snapshot(image)
        image.digest = new_digest
        image.updated_at = ctx.now()
        session.add(image)
        session.flush()
        if state is not State.DRAFT:
            move(session, image, Event.REVISE, ctx.now())
        record_change(
            session,
            ctx,
            actor,
            image,
            f"{image.kind}.revise",
            before,
            f"package {ref_of(pkg)} changed: the approval chain starts over",
        )


def newest_published_base(session: Session, platform: str, level: str) -> Releasable | None:
    return session.exec(
        select(Releasable)
        .where(
            Releasable.kind == Kind.BASE_IMAGE.value,
            Releasable.platform == platform,
            Releasable.level == level,
            Releasable.state == State.PUBLISHED.value,
        )
        .order_by(col(Releasable.version_key).desc())
        .limit(1)
    ).first()


@dataclass(frozen=True)
class RebaseResult:
    view: ReleasableView
    dropped_models: list[str]
    dropped_packages: list[str]
    plan: test_plans.CarriedPlan
    """The test plan entries carried from the older version, and those left behind."""


def rebase(
    ctx: Context,
    actor: Actor,
    ref: str,
    *,
    onto: str | None = None,
    version: str | None = None,
) -> RebaseResult:
    """Carry a customized image's customization onto a newer base, as a new draft
    version that goes through the whole chain again. Its test plan's own checks
    and disablings come with it (:func:`test_plans.carry_plan`).

    Raises:
        Refused, NotFound, InvalidInput (no newer base; bad version), Duplicate,
        SunsetReached (the new base is sunset).
    """
    today = ctx.today()
    with transaction(ctx.engine) as session:
        old = resolve(session, actor, Kind.CUSTOM_IMAGE, ref)
        authorize_maintain(actor, old)
        old_base = session.get(Releasable, old.base_id)
        assert old_base is not None and old.id is not None
        if onto is None:
            new_base = newest_published_base(session, old.platform, old_base.level or "")
            if new_base is None:
                raise InvalidInput(f"no published base image for {old_base.name}", field="onto")
        else:
            new_base = _published_base(session, actor, onto, today)
        if (new_base.platform, new_base.level) != (old_base.platform, old_base.level):
            raise InvalidInput(
                f"base image {ref_of(new_base)} is not a {old_base.name} image", field="onto"
            )
        if new_base.version_key <= old_base.version_key:
            raise InvalidInput(
                f"{ref_of(old)} is already on {ref_of(old_base)}; {ref_of(new_base)} is not newer",
                field="onto",
            )
        if version is None:
            earlier = session.exec(
                select(Releasable)
                .where(
                    Releasable.supersedes_id == old.id,
                    col(Releasable.state) != State.RETIRED.value,
                )
                .order_by(col(Releasable.version_key).desc())
                .limit(1)
            ).first()
            if earlier is not None and earlier.base_id == new_base.id:
                raise Conflict(
                    f"{ref_of(old)} was already rebased onto {ref_of(new_base)} as "
                    f"{ref_of(earlier)} ({earlier.state}); carry on with that one, or "
                    "retire it first, or give --version for another rebase"
                )
            if earlier is not None:
                raise Conflict(
                    f"{ref_of(old)} was already rebased as {ref_of(earlier)} ({earlier.state}); "
                    f"rebase {ref_of(earlier)} onto {ref_of(new_base)} instead, or give "
                    "--version to rebase this one again"
                )
        new_version = version or validation.bump(old.version)
        validation.version(new_version)
        _check_not_duplicate(session, Kind.CUSTOM_IMAGE, old.scope_key, old.name, new_version)
        assert new_base.id is not None
        new_base_models = set(_model_refs(session, new_base.id))
        kept_models: list[HardwareModel] = []
        dropped_models: list[HardwareModel] = []
        for r in _model_refs(session, old.id):
            m = hardware.find_model(session, r)
            (kept_models if r in new_base_models and _usable(m, today) else dropped_models).append(
                m
            )
        kept_pkgs: list[Releasable] = []
        dropped_pkgs: list[Releasable] = []
        for p in package_rows(session, old.id):
            usable = p.state not in (State.SUNSET.value, State.RETIRED.value)
            (kept_pkgs if usable else dropped_pkgs).append(p)
        row = _new_row(
            ctx,
            actor,
            kind=Kind.CUSTOM_IMAGE.value,
            name=old.name,
            version=new_version,
            scope_key=old.scope_key,
            building_id=old.building_id,
            platform=old.platform,
            level=old.level,
            os_version=new_base.os_version,
            base_id=new_base.id,
            artifact_ref=old.artifact_ref,
            artifact_sha256=old.artifact_sha256,
            settings=dict(old.settings),
            sunset_date=old.sunset_date,
            notes=old.notes,
            supersedes_id=old.id,
        )
        session.add(row)
        session.flush()
        assert row.id is not None
        _link_models(session, row.id, kept_models)
        for p in kept_pkgs:
            assert p.id is not None
            session.add(ImagePackage(image_id=row.id, package_id=p.id))
        session.flush()
        view = _finish_create(ctx, session, actor, row, "custom_image.rebase")
        plan = test_plans.carry_plan(session, ctx, actor, old, row)
        return RebaseResult(
            view,
            sorted(hardware.model_ref(m) for m in dropped_models),
            sorted(ref_of(p) for p in dropped_pkgs),
            plan,
        )


def authors_of(row: Releasable) -> set[int]:
    """People whose work this is: no one approves a review or test of their own work."""
    return {row.author_id} | ({row.revised_by_id} if row.revised_by_id else set())
