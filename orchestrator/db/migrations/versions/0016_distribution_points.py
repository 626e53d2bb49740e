"""building distribution points, and what was staged to each

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 20:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "distribution_point",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("building_id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=255), nullable=False),
        sa.Column("ssh_port", sa.Integer(), nullable=False),
        sa.Column("ssh_user", sa.String(length=64), nullable=False),
        sa.Column("host_key", sa.String(length=2000), nullable=False),
        sa.Column("root", sa.String(length=500), nullable=False),
        sa.Column("url", sa.String(length=500), nullable=False),
        sa.Column("bandwidth_kib", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["building_id"], ["building.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("building_id"),
    )
    op.create_table(
        "image_staging",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("point_id", sa.Integer(), nullable=False),
        sa.Column("manifest_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("chunks_total", sa.Integer(), nullable=False),
        sa.Column("chunks_sent", sa.Integer(), nullable=False),
        sa.Column("bytes_sent", sa.BigInteger(), nullable=False),
        sa.Column("message", sa.String(length=500), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('running', 'staged', 'failed')", name="image_staging_state"),
        sa.ForeignKeyConstraint(["point_id"], ["distribution_point.id"]),
        sa.ForeignKeyConstraint(["manifest_id"], ["image_manifest.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("image_staging", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_image_staging_manifest_id"), ["manifest_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("image_staging", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_image_staging_manifest_id"))
    op.drop_table("image_staging")
    op.drop_table("distribution_point")
