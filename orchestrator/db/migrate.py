"""Bring a database to the newest schema: the app runs this at every start."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from orchestrator.db.session import ensure_sqlite_folder, reachable, sqlite_path

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Raises: DatabaseUnavailable."""
    cfg = alembic_config()
    ensure_sqlite_folder(engine)
    with reachable(engine), engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    """The schema revision in force (None: no schema, or no SQLite file yet).

    Raises: DatabaseUnavailable.
    """
    path = sqlite_path(engine)
    if path is not None and not path.exists():
        return None  # connecting would create an empty file
    with reachable(engine), engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
