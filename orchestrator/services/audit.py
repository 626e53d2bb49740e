"""The append-only, hash-chained audit log.

Every state change and decision is appended in the same transaction as the
change itself. Each row's hash covers its content and the previous row's
hash, so ``verify`` finds a row changed, removed or inserted behind the
application's back. Appends are serialized: PostgreSQL by a transaction-level
advisory lock, SQLite by its write lock (taken at BEGIN IMMEDIATE).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator.db.models import AuditEntry
from orchestrator.db.session import transaction
from orchestrator.domain.digest import canonical_json
from orchestrator.domain.policy import Action, Actor, authorize, may
from orchestrator.errors import AuditTampered
from orchestrator.services.context import Context

GENESIS = "0" * 64
_ADVISORY_KEY = 7_270_001


def _row_content(e: AuditEntry) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "at": e.at.isoformat(timespec="microseconds"),
        "actor": e.actor,
        "role": e.role,
        "action": e.action,
        "object_kind": e.object_kind,
        "object_id": e.object_id,
        "object_ref": e.object_ref,
        "building": e.building,
        "before": e.before,
        "after": e.after,
        "digest": e.digest,
        "reason": e.reason,
        "prev_hash": e.prev_hash,
    }


def entry_hash(e: AuditEntry) -> str:
    return hashlib.sha256(canonical_json(_row_content(e))).hexdigest()


@dataclass(frozen=True)
class Subject:
    """What an audit entry is about."""

    kind: str
    ref: str
    id: int | None = None
    building: str | None = None


def append(
    session: Session,
    *,
    at: datetime,
    actor: Actor,
    action: str,
    subject: Subject,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    digest: str | None = None,
    reason: str = "",
) -> AuditEntry:
    """Append one entry inside the caller's transaction."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_KEY})
    last = session.exec(select(AuditEntry).order_by(col(AuditEntry.seq).desc()).limit(1)).first()
    entry = AuditEntry(
        seq=(last.seq + 1) if last else 1,
        at=at.astimezone(UTC),
        actor=actor.username,
        role=actor.role.value,
        action=action,
        object_kind=subject.kind,
        object_id=subject.id,
        object_ref=subject.ref,
        building=subject.building,
        before=dict(before) if before is not None else None,
        after=dict(after) if after is not None else None,
        digest=digest,
        reason=reason,
        prev_hash=last.hash if last else GENESIS,
        hash="",
    )
    entry.hash = entry_hash(entry)
    session.add(entry)
    session.flush()
    return entry


@dataclass(frozen=True)
class VerifyReport:
    entries: int
    head: str


def verify(ctx: Context, actor: Actor) -> VerifyReport:
    """Recompute the whole chain.

    Raises:
        Refused: the actor may not verify the audit log.
        AuditTampered: names the first entry that does not follow from the one before.
    """
    authorize(actor, Action.VERIFY_AUDIT, building=None)
    with transaction(ctx.engine) as session:
        prev_hash, prev_seq, count = GENESIS, 0, 0
        for e in session.exec(select(AuditEntry).order_by(col(AuditEntry.seq))):
            if e.seq != prev_seq + 1:
                raise AuditTampered(
                    f"audit entry {prev_seq + 1} is missing (entry {e.seq} follows {prev_seq})"
                )
            if e.prev_hash != prev_hash:
                raise AuditTampered(
                    f"audit entry {e.seq} does not follow entry {prev_seq} (its previous hash "
                    "differs): an entry was inserted, removed or rewritten"
                )
            if entry_hash(e) != e.hash:
                raise AuditTampered(f"audit entry {e.seq} was changed after it was written")
            prev_hash, prev_seq, count = e.hash, e.seq, count + 1
        return VerifyReport(entries=count, head=prev_hash)


def entries(
    ctx: Context,
    actor: Actor,
    *,
    object_kind: str | None = None,
    object_id: int | None = None,
    building: str | None = None,
    limit: int | None = None,
) -> Sequence[AuditEntry]:
    """Entries the actor may read, oldest first (the newest ``limit`` of them).

    Building staff see entries of their own buildings and district-wide ones.
    """
    if building is not None:
        authorize(actor, Action.READ_AUDIT, building=building)
    with transaction(ctx.engine) as session:
        q = select(AuditEntry)
        if object_kind is not None:
            q = q.where(AuditEntry.object_kind == object_kind)
        if object_id is not None:
            q = q.where(AuditEntry.object_id == object_id)
        if building is not None:
            q = q.where(AuditEntry.building == building)
        rows = [
            e
            for e in session.exec(q.order_by(col(AuditEntry.seq).desc()))
            if may(actor, Action.READ_AUDIT, building=e.building)
        ]
    if limit is not None:
        rows = rows[:limit]
    return list(reversed(rows))
