"""The schema comes from Alembic migrations, on both backends."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

from orchestrator.db import migrate
from orchestrator.db.session import make_engine
from orchestrator.services import bootstrap
from orchestrator.services.context import Context
from tests.conftest import POSTGRES_URL, postgres_engine


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
        yield engine
        engine.dispose()
        return
    schema = f"orch_migr_{tmp_path.name[-12:].replace('-', '_')}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine = postgres_engine(schema)
    yield engine
    engine.dispose()
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def test_upgrade_from_empty_reaches_head_and_matches_the_models(empty_engine: sa.Engine) -> None:
    migrate.upgrade(empty_engine)

    assert migrate.current_revision(empty_engine) == migrate.head_revision()
    with empty_engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []


def test_upgrade_is_repeatable_and_downgrade_removes_everything(empty_engine: sa.Engine) -> None:
    migrate.upgrade(empty_engine)
    migrate.upgrade(empty_engine)
    cfg = migrate.alembic_config()
    from alembic import command

    with empty_engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    tables = set(sa.inspect(empty_engine).get_table_names()) - {"alembic_version"}
    assert tables == set()


def test_commands_refuse_a_database_without_the_schema(empty_engine: sa.Engine) -> None:
    with pytest.raises(bootstrap.SchemaNotCurrent, match="run 'orchestrator init'"):
        bootstrap.require_current_schema(Context(engine=empty_engine))


def test_the_software_table_takes_what_clients_gathered_before_it_existed(
    empty_engine: sa.Engine,
) -> None:
    migrate.upgrade(empty_engine, "0007")
    with empty_engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO building (id, number, name, level) "
                "VALUES (1, '101', 'Lincoln Elementary', 'elementary')"
            )
        )
        for n, facts in enumerate(
            [
                '{"orchestrator_software": ["Org.Mozilla.Firefox", "7-Zip", "7-zip"]}',
                '{"orchestrator_software": "not a list"}',
                "{}",
            ],
            1,
        ):
            conn.execute(
                sa.text(
                    "INSERT INTO client (id, hostname, building_id, room, platform, model, "
                    "serial, mac, address, port, transport, host_vars, test_client, facts, "
                    "created_at) VALUES (:id, :host, 1, 'lab', 'pc', 'x', :serial, :mac, "
                    "'127.0.0.1', 5985, 'winrm', '{}', false, :facts, :at)"
                ),
                {
                    "id": n,
                    "host": f"pc-{n}",
                    "serial": f"SN{n}",
                    "mac": f"02:00:00:00:00:0{n}",
                    "facts": facts,
                    "at": "2026-03-02 15:00:00",
                },
            )

    migrate.upgrade(empty_engine)

    with empty_engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT client_id, source, marker FROM client_software ORDER BY marker")
        ).all()
    assert [tuple(r) for r in rows] == [
        (1, "gathered", "7-zip"),
        (1, "gathered", "org.mozilla.firefox"),
    ]
