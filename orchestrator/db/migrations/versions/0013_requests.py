"""requests for technical work: the category catalog and the requests themselves

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "request_category",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=40), nullable=False),
        sa.Column("label", sa.String(length=120), nullable=False),
        sa.Column("queue", sa.String(length=10), nullable=False),
        sa.Column("department", sa.String(length=120), nullable=False),
        sa.Column("why", sa.String(length=500), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.CheckConstraint("queue IN ('technician', 'department')", name="request_category_queue"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_table(
        "service_request",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("building_id", sa.Integer(), nullable=False),
        sa.Column("category_id", sa.Integer(), nullable=False),
        sa.Column("queue", sa.String(length=10), nullable=False),
        sa.Column("department", sa.String(length=120), nullable=False),
        sa.Column("description", sa.String(length=4000), nullable=False),
        sa.Column("urgency", sa.String(length=8), nullable=False),
        sa.Column("room", sa.String(length=40), nullable=True),
        sa.Column("clients", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("state_version", sa.Integer(), nullable=False),
        sa.Column("filed_by_id", sa.Integer(), nullable=False),
        sa.Column("assignee_id", sa.Integer(), nullable=True),
        sa.Column("note", sa.String(length=2000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_response_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('open', 'taken', 'escalated', 'closed')", name="service_request_state"
        ),
        sa.CheckConstraint(
            "urgency IN ('low', 'normal', 'high', 'urgent')", name="service_request_urgency"
        ),
        sa.CheckConstraint("queue IN ('technician', 'department')", name="service_request_queue"),
        sa.ForeignKeyConstraint(["building_id"], ["building.id"]),
        sa.ForeignKeyConstraint(["category_id"], ["request_category.id"]),
        sa.ForeignKeyConstraint(["filed_by_id"], ["person.id"]),
        sa.ForeignKeyConstraint(["assignee_id"], ["person.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("service_request", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_service_request_building_id"), ["building_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("service_request", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_service_request_building_id"))
    op.drop_table("service_request")
    op.drop_table("request_category")
