"""Finding a catalog entry by the reference a person gives, as they may see it.

Every service that takes a ``ref`` (the catalog, the chain, test plans,
deliveries, the image store) resolves it here, so an entry in a building
outside the actor's scope is "not found" everywhere alike. Also here: who may
maintain an entry, and how the audit log names one. How references are
spelled is :mod:`orchestrator.services.refs`.
"""

from __future__ import annotations

from sqlmodel import Session, select

from orchestrator.db.models import Releasable
from orchestrator.domain.policy import Action, Actor, authorize, maintain_action, may
from orchestrator.domain.states import Audience, Kind
from orchestrator.errors import InvalidInput, NotFound
from orchestrator.services import audit
from orchestrator.services.refs import DISTRICT_SCOPE, REF_PATTERN, building_of, ref_of

_MAX_ID = 2**31 - 1
"""The largest catalog id: the id column is an ``integer``."""


def subject(row: Releasable) -> audit.Subject:
    """How the audit log names the entry."""
    return audit.Subject(row.kind, ref_of(row), row.id, building_of(row))


def resolve(session: Session, actor: Actor, kind: Kind, ref: str) -> Releasable:
    """The thing of ``kind`` named by ``ref`` that the actor may see.

    Things in buildings outside the actor's scope are reported as not found.

    Raises:
        InvalidInput: ``ref`` is not a reference. NotFound: nothing visible by that name.
    """
    ref = ref.strip()
    row: Releasable | None
    if ref.startswith("#") and ref[1:].isascii() and ref[1:].isdigit():
        # An id no row can have is not looked up: PostgreSQL refuses a number past its
        # integer column as an error, not as "no such row".
        number = int(ref[1:])
        row = session.get(Releasable, number) if number <= _MAX_ID else None
        if row is not None and row.kind != kind.value:
            row = None
    else:
        m = REF_PATTERN.fullmatch(ref)
        if not m:
            raise InvalidInput(
                f"{ref!r} is not a {kind.label} reference (e.g. {_example(kind)}, or #ID)",
                field="ref",
            )
        row = session.exec(
            select(Releasable).where(
                Releasable.kind == kind.value,
                Releasable.scope_key == (m["scope"] or DISTRICT_SCOPE),
                Releasable.name == m["name"],
                Releasable.version == m["version"],
            )
        ).first()
    if row is None or not may(actor, Action.READ_CATALOG, building=building_of(row)):
        raise NotFound(f"no {kind.label} {ref!r} (see 'orchestrator {_group(kind)} list')")
    return row


def _example(kind: Kind) -> str:
    return {
        Kind.BASE_IMAGE: "pc-high@2026.1",
        Kind.CUSTOM_IMAGE: "101/lab@1.0",
        Kind.PACKAGE: "firefox@128.0 or 101/mathlab@3.1",
    }[kind]


def _group(kind: Kind) -> str:
    return {Kind.BASE_IMAGE: "base", Kind.CUSTOM_IMAGE: "image", Kind.PACKAGE: "package"}[kind]


def authorize_maintain(actor: Actor, row: Releasable) -> None:
    """Raises: Refused."""
    audience = Audience(row.audience) if row.audience else None
    authorize(actor, maintain_action(Kind(row.kind), audience), building=building_of(row))
