"""the changes that answer a request: a customized image, a package or a deployment

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "request_change",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("releasable_id", sa.Integer(), nullable=True),
        sa.Column("deployment_id", sa.Integer(), nullable=True),
        sa.Column("linked_by_id", sa.Integer(), nullable=False),
        sa.Column("linked_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(releasable_id IS NULL) <> (deployment_id IS NULL)", name="request_change_one_target"
        ),
        sa.ForeignKeyConstraint(["request_id"], ["service_request.id"]),
        sa.ForeignKeyConstraint(["releasable_id"], ["releasable.id"]),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployment.id"]),
        sa.ForeignKeyConstraint(["linked_by_id"], ["person.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_id", "releasable_id", name="request_change_release_once"),
        sa.UniqueConstraint("request_id", "deployment_id", name="request_change_deployment_once"),
    )
    with op.batch_alter_table("request_change", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_request_change_request_id"), ["request_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_request_change_deployment_id"), ["deployment_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("request_change", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_request_change_deployment_id"))
        batch_op.drop_index(batch_op.f("ix_request_change_request_id"))
    op.drop_table("request_change")
