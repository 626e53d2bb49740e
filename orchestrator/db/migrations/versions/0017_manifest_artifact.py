"""the SHA-256 of the file each stored index was imported from

An entry whose artifact was replaced after its import must not have the old
bytes signed as its release, nor pulled by its clients.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03 06:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("image_manifest", schema=None) as batch_op:
        batch_op.add_column(sa.Column("artifact_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("image_manifest", schema=None) as batch_op:
        batch_op.drop_column("artifact_sha256")
