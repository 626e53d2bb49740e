"""The audit log: complete, append-only, and tamper-evident."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from orchestrator.domain.states import Kind, State
from orchestrator.errors import AuditTampered, Refused
from orchestrator.services import audit, catalog
from tests.factories import District


def _guards_off(engine: Engine) -> None:
    """What an attacker with database access would do first."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("ALTER TABLE audit_entry DISABLE TRIGGER audit_entry_no_change"))
        else:
            conn.execute(sa.text("DROP TRIGGER audit_entry_no_update"))
            conn.execute(sa.text("DROP TRIGGER audit_entry_no_delete"))


def test_every_chain_step_is_audited_with_actor_role_time_and_digest(district: District) -> None:
    district.base()
    ref = district.custom(to=State.PUBLISHED)
    view = catalog.show(district.ctx, district["btc.lincoln"], Kind.CUSTOM_IMAGE, ref)

    entries = audit.entries(
        district.ctx, district["it.ana"], object_kind=Kind.CUSTOM_IMAGE.value, object_id=view.id
    )

    assert [(e.action, e.actor, e.role) for e in entries] == [
        ("custom_image.create", "btc.lincoln", "btc"),
        ("custom_image.submit", "btc.lincoln", "btc"),
        ("custom_image.review.approve", "edtech.marco", "edtech"),
        ("custom_image.test_run.start", "edtech.grace", "edtech"),
        ("custom_image.test_run.finish", "edtech.grace", "edtech"),
        ("custom_image.test.approve", "edtech.grace", "edtech"),
        ("custom_image.publish.approve", "btc.lincoln", "btc"),
    ]
    assert all(e.digest == view.digest for e in entries)
    assert all(e.at == district.ctx.now() for e in entries)
    assert (entries[-1].before or {})["state"] == "approved"
    assert (entries[-1].after or {})["state"] == "published"


def test_the_database_refuses_to_update_or_delete_audit_entries(district: District) -> None:
    engine = district.ctx.engine
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_entry SET actor = 'mallory' WHERE seq = 1"))
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_entry WHERE seq = 1"))
    assert audit.verify(district.ctx, district["it.ana"]).entries > 0


def test_verify_finds_a_rewritten_entry(district: District) -> None:
    district.base()
    _guards_off(district.ctx.engine)
    with district.ctx.engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_entry SET actor = 'mallory' WHERE seq = 3"))
    with pytest.raises(AuditTampered, match="audit entry 3 was changed"):
        audit.verify(district.ctx, district["it.ana"])


def test_verify_finds_a_removed_entry(district: District) -> None:
    district.base()
    _guards_off(district.ctx.engine)
    with district.ctx.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_entry WHERE seq = 4"))
    with pytest.raises(AuditTampered, match="audit entry 4 is missing"):
        audit.verify(district.ctx, district["it.ana"])


def test_verify_finds_a_removed_tail_entry_renumbered_to_hide(district: District) -> None:
    district.base()
    _guards_off(district.ctx.engine)
    with district.ctx.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_entry WHERE seq = 2"))
        conn.execute(sa.text("UPDATE audit_entry SET seq = seq - 1 WHERE seq > 2"))
    with pytest.raises(AuditTampered, match="does not follow|was changed"):
        audit.verify(district.ctx, district["it.ana"])


def test_only_it_verifies_the_audit_log(district: District) -> None:
    with pytest.raises(Refused):
        audit.verify(district.ctx, district["btc.lincoln"])


def test_building_staff_read_only_their_buildings_and_district_entries(district: District) -> None:
    district.base("pc", "high")
    district.custom("301", "stem", base="pc-high@2026.1")
    district.base()
    district.custom("101")

    seen = audit.entries(district.ctx, district["principal.lincoln"])

    buildings = {e.building for e in seen}
    assert buildings <= {None, "101"}
    assert "101" in buildings
    assert any(e.object_ref == "pc-high@2026.1" for e in seen)
    with pytest.raises(Refused):
        audit.entries(district.ctx, district["principal.lincoln"], building="301")
