"""what each client is known to have installed, one row per marker

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 08:30:00
"""

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "client_software",
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=10), nullable=False),
        sa.Column("marker", sa.String(length=200), nullable=False),
        sa.Column("releasable_id", sa.Integer(), nullable=True),
        sa.Column("receipt", sa.String(length=200), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("source IN ('gathered', 'installed')", name="client_software_source"),
        sa.ForeignKeyConstraint(["client_id"], ["client.id"]),
        sa.ForeignKeyConstraint(["releasable_id"], ["releasable.id"]),
        sa.PrimaryKeyConstraint("client_id", "source", "marker"),
    )
    op.create_index("client_software_marker", "client_software", ["marker", "client_id"])
    # What clients gathered before this table existed: their facts' software lists.
    bind = op.get_bind()
    client = sa.table("client", sa.column("id", sa.Integer), sa.column("facts", sa.JSON))
    table = sa.table(
        "client_software",
        sa.column("client_id", sa.Integer),
        sa.column("source", sa.String),
        sa.column("marker", sa.String),
        sa.column("recorded_at", sa.DateTime(timezone=True)),
    )
    now = datetime.now(UTC)
    if bind.dialect.name == "sqlite":
        now = now.replace(tzinfo=None)
    rows = []
    for client_id, facts in bind.execute(sa.select(client.c.id, client.c.facts)):
        if isinstance(facts, str):
            facts = json.loads(facts)
        software = (facts or {}).get("orchestrator_software")
        if not isinstance(software, list):
            continue
        markers = {str(m).strip().lower()[:200] for m in software if str(m).strip()}
        rows += [
            {"client_id": client_id, "source": "gathered", "marker": m, "recorded_at": now}
            for m in sorted(markers)
        ]
    if rows:
        op.bulk_insert(table, rows)


def downgrade() -> None:
    op.drop_index("client_software_marker", table_name="client_software")
    op.drop_table("client_software")
