"""Engines and transactions, on SQLite (embedded default) and PostgreSQL.

SQLite writers take the write lock when their transaction begins
(``BEGIN IMMEDIATE``) so that two writers never interleave a read and a
write; PostgreSQL relies on row locks and compare-and-set updates.
Connection failures become :class:`DatabaseUnavailable` here, once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, OperationalError
from sqlmodel import Session

from orchestrator.errors import InvalidInput, OrchestratorError


class DatabaseUnavailable(OrchestratorError):
    code = "database_unavailable"
    http_status = 503
    exit_code = 7


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` (nothing is connected or created yet).

    Raises:
        InvalidInput: the URL is malformed or names an unknown database driver.
    """
    try:
        if sa.make_url(url).get_backend_name() != "sqlite":
            return sa.create_engine(url, pool_pre_ping=True, **kwargs)
        engine = sa.create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
        raise InvalidInput(
            f"{url!r} is not a database URL the orchestrator can use ({exc})",
            field="database_url",
        ) from exc
    _sqlite_pragmas(engine)
    return engine


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def sqlite_path(engine: Engine) -> Path | None:
    """The file of a SQLite database (None for PostgreSQL or an in-memory one)."""
    db = engine.url.database
    if engine.dialect.name != "sqlite" or not db or db == ":memory:":
        return None
    return Path(db)


def ensure_sqlite_folder(engine: Engine) -> None:
    """Create the folder of a SQLite file.

    Raises:
        DatabaseUnavailable: the folder cannot be created.
    """
    path = sqlite_path(engine)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseUnavailable(
            f"cannot create the data folder {path.parent}: {exc.strerror} "
            "(set ORCHESTRATOR_DATA_DIR to a folder you can write)"
        ) from exc


@contextmanager
def reachable(engine: Engine) -> Iterator[None]:
    """Translate a database that cannot be reached into DatabaseUnavailable."""
    try:
        yield
    except DataError as exc:
        # PostgreSQL cannot store a NUL character in text; SQLite can. Whatever the
        # front door, the person is told which character, not shown a server error.
        if "NUL" in str(exc.orig) or "0x00" in str(exc.orig):
            raise InvalidInput(
                "text must not contain a NUL character (\\x00)", field="text"
            ) from exc
        raise
    except OperationalError as exc:
        raise DatabaseUnavailable(
            f"database unavailable ({engine.url.render_as_string(hide_password=True)}): "
            f"{' '.join(str(exc.orig).split())}"
        ) from exc


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error.

    Raises:
        DatabaseUnavailable: the database cannot be reached.
    """
    with reachable(engine), Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
