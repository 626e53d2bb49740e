"""Create or upgrade the database; store the default chain policies."""

from __future__ import annotations

from orchestrator.db import migrate
from orchestrator.db.session import transaction
from orchestrator.errors import OrchestratorError
from orchestrator.services.chain import seed_policies
from orchestrator.services.context import Context
from orchestrator.services.requests import seed_categories


def init_database(ctx: Context) -> str | None:
    """Upgrade the schema to the newest migration and seed the chain policies and the
    request categories.

    Returns the schema revision now in force.
    """
    migrate.upgrade(ctx.engine)
    with transaction(ctx.engine) as session:
        seed_policies(session)
        seed_categories(session)
    return migrate.current_revision(ctx.engine)


class SchemaNotCurrent(OrchestratorError):
    code = "schema_not_current"
    http_status = 503
    exit_code = 7


def require_current_schema(ctx: Context) -> None:
    """Raises: SchemaNotCurrent, naming the database and the command that fixes it."""
    current, head = migrate.current_revision(ctx.engine), migrate.head_revision()
    if current != head:
        url = ctx.engine.url.render_as_string(hide_password=True)
        state = "has no orchestrator schema" if current is None else f"is at schema {current}"
        raise SchemaNotCurrent(
            f"the database {url} {state}; this version needs {head}: run 'orchestrator init'"
        )
