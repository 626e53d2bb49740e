"""each image's test plan: the checks run as the student and staff personas

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 09:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "test_check",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("releasable_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("personas", sa.String(length=8), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("expect", sa.JSON(), nullable=False),
        sa.Column("timeout_s", sa.Integer(), nullable=False),
        sa.Column("disabled_reason", sa.String(length=2000), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("personas IN ('student', 'staff', 'both')", name="test_check_personas"),
        sa.CheckConstraint(
            "kind IN ('sign_in', 'home_folder', 'app_present', 'app_absent', 'reachable', "
            "'command', 'not_admin')",
            name="test_check_kind",
        ),
        sa.CheckConstraint("timeout_s >= 1 AND timeout_s <= 600", name="test_check_timeout"),
        sa.ForeignKeyConstraint(["releasable_id"], ["releasable.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("releasable_id", "name", name="test_check_releasable_name"),
    )


def downgrade() -> None:
    op.drop_table("test_check")
