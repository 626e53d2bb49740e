"""deployments and their clients

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 21:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deployment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("releasable_id", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(length=200), nullable=False),
        sa.Column("digest", sa.String(length=71), nullable=False),
        sa.Column("playbook", sa.String(length=63), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("state_version", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("targets", sa.JSON(), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pilot_names", sa.JSON(), nullable=False),
        sa.Column("pilot_per_building", sa.Integer(), nullable=False),
        sa.Column("per_building_limit", sa.Integer(), nullable=False),
        sa.Column("district_limit", sa.Integer(), nullable=False),
        sa.Column("failure_threshold_pct", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('scheduled', 'running', 'paused', 'completed', 'cancelled', 'failed')",
            name="deployment_state",
        ),
        sa.CheckConstraint(
            "failure_threshold_pct >= 0 AND failure_threshold_pct <= 100",
            name="deployment_threshold",
        ),
        sa.ForeignKeyConstraint(["releasable_id"], ["releasable.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("deployment", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_deployment_releasable_id"), ["releasable_id"], unique=False
        )
    op.create_table(
        "deployment_client",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("hostname", sa.String(length=63), nullable=False),
        sa.Column("building", sa.String(length=6), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("pilot", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=2000), nullable=True),
        sa.Column("step", sa.String(length=200), nullable=True),
        sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('pending', 'staging', 'applying', 'verifying', 'unreachable', "
            "'succeeded', 'failed', 'skipped', 'cancelled')",
            name="deployment_client_state",
        ),
        sa.ForeignKeyConstraint(["client_id"], ["client.id"]),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployment.id"]),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("deployment_id", "client_id", name="deployment_client_once"),
    )
    with op.batch_alter_table("deployment_client", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_deployment_client_client_id"), ["client_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_deployment_client_deployment_id"), ["deployment_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("deployment_client", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deployment_client_deployment_id"))
        batch_op.drop_index(batch_op.f("ix_deployment_client_client_id"))
    op.drop_table("deployment_client")
    with op.batch_alter_table("deployment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deployment_releasable_id"))
    op.drop_table("deployment")
