"""Shared fixtures.

Every database test runs twice: on SQLite (a file per test, copied from a
migrated template) and on PostgreSQL (a schema per test session on the
``test`` database at 127.0.0.1:5432, emptied between tests). PostgreSQL that
cannot be reached is an error, never a silent skip: ``.ci/run`` starts it.
Set ``ORCHESTRATOR_TEST_POSTGRES_URL`` to point elsewhere.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from orchestrator.clock import FixedClock
from orchestrator.db.session import make_engine, transaction
from orchestrator.services import bootstrap
from orchestrator.services.chain import seed_policies
from orchestrator.services.context import Context
from orchestrator.services.requests import seed_categories
from tests.factories import District, make_district

POSTGRES_URL = os.environ.get(
    "ORCHESTRATOR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
ZONE = ZoneInfo("America/New_York")
# A Monday morning in the district, in term time.
NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    bootstrap.init_database(Context(engine=engine, zone=ZONE, clock=FixedClock(NOW)))
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_schema() -> Iterator[str]:
    """A fresh schema on the PostgreSQL test database, migrated to head."""
    schema = f"orch_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(POSTGRES_URL)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_URL} ({exc.orig}); database tests run "
            "on SQLite and PostgreSQL: start it (bash .ci/run does) or set "
            "ORCHESTRATOR_TEST_POSTGRES_URL",
            pytrace=False,
        )
    engine = postgres_engine(schema)
    bootstrap.init_database(Context(engine=engine, zone=ZONE, clock=FixedClock(NOW)))
    engine.dispose()
    yield schema
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def postgres_engine(schema: str) -> Engine:
    return make_engine(POSTGRES_URL, connect_args={"options": f"-csearch_path={schema}"})


def _empty_postgres(engine: Engine) -> None:
    tables = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    with transaction(engine) as session:
        seed_policies(session)
        seed_categories(session)


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty database on each backend in turn."""
    if request.param == "sqlite":
        path = tmp_path / "orchestrator.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        eng = make_engine(f"sqlite:///{path}")
    else:
        eng = postgres_engine(request.getfixturevalue("postgres_schema"))
        _empty_postgres(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def ctx(engine: Engine, clock: FixedClock, tmp_path: Path) -> Context:
    return Context(
        engine=engine,
        zone=ZONE,
        clock=clock,
        evidence_dir=tmp_path / "evidence",
        secret_key_file=tmp_path / "secret.key",
        image_store_dir=tmp_path / "images",
    )


@pytest.fixture
def district(ctx: Context) -> District:
    """The small test district (tests/factories.py) on each backend."""
    return make_district(ctx)


# The command line against the test database, for any test folder that needs it
# (imported last: it reads POSTGRES_URL above).
from tests.support.cli import orchestrator  # noqa: E402, F401
