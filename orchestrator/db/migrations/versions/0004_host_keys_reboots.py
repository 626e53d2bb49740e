"""refused host keys kept for review; reboot-required results; what a run delivered

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 20:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("client", schema=None) as batch_op:
        batch_op.add_column(sa.Column("host_key_offered", sa.String(length=800), nullable=True))
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delivered", sa.String(length=200), nullable=True))
    with op.batch_alter_table("host_result", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("reboot_required", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("host_result", schema=None) as batch_op:
        batch_op.drop_column("reboot_required")
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_column("delivered")
    with op.batch_alter_table("client", schema=None) as batch_op:
        batch_op.drop_column("host_key_offered")
