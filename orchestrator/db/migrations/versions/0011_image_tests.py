"""image test runs: the image on a test client, then the plan's checks as each persona

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 11:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "image_test",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("releasable_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("client", sa.String(length=63), nullable=False),
        sa.Column("accounts_building", sa.String(length=6), nullable=False),
        sa.Column("digest", sa.String(length=71), nullable=False),
        sa.Column("plan_digest", sa.String(length=71), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.String(length=2000), nullable=False),
        sa.Column("delivery_run_id", sa.Integer(), nullable=True),
        sa.Column("owner", sa.String(length=120), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'passed', 'failed', 'error')", name="image_test_status"
        ),
        sa.ForeignKeyConstraint(["releasable_id"], ["releasable.id"]),
        sa.ForeignKeyConstraint(["client_id"], ["client.id"]),
        sa.ForeignKeyConstraint(["delivery_run_id"], ["run.id"]),
        sa.ForeignKeyConstraint(["actor_id"], ["person.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("image_test", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_image_test_releasable_id"), ["releasable_id"], unique=False
        )
        batch_op.create_index(
            "image_test_one_running_per_client",
            ["client_id"],
            unique=True,
            sqlite_where=sa.text("status = 'running'"),
            postgresql_where=sa.text("status = 'running'"),
        )
    with op.batch_alter_table("test_run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("image_test_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("plan_digest", sa.String(length=71), nullable=True))
        batch_op.add_column(sa.Column("client", sa.String(length=63), nullable=True))
        batch_op.add_column(sa.Column("signed_in", sa.Boolean(), nullable=True))
        batch_op.create_index(batch_op.f("ix_test_run_image_test_id"), ["image_test_id"])
        batch_op.create_foreign_key(
            "fk_test_run_image_test_id", "image_test", ["image_test_id"], ["id"]
        )
    with op.batch_alter_table("decision", schema=None) as batch_op:
        batch_op.add_column(sa.Column("overridden", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("decision", schema=None) as batch_op:
        batch_op.drop_column("overridden")
    with op.batch_alter_table("test_run", schema=None) as batch_op:
        batch_op.drop_constraint("fk_test_run_image_test_id", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_test_run_image_test_id"))
        batch_op.drop_column("signed_in")
        batch_op.drop_column("client")
        batch_op.drop_column("plan_digest")
        batch_op.drop_column("image_test_id")
    with op.batch_alter_table("image_test", schema=None) as batch_op:
        batch_op.drop_index("image_test_one_running_per_client")
        batch_op.drop_index(batch_op.f("ix_image_test_releasable_id"))
    op.drop_table("image_test")
