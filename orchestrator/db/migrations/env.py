"""Alembic environment: the project's metadata, on the connection the app hands in."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import orchestrator.db.models  # noqa: F401  (registers the tables)
from orchestrator.config import load_settings
from orchestrator.db.session import make_engine

config = context.config
target_metadata = SQLModel.metadata


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = make_engine(load_settings().resolved_database_url)
    with engine.begin() as conn:
        _run(conn)
