"""Create or upgrade the database; store the default chain policies."""

from __future__ import annotations

from orchestrator.db import migrate
from orchestrator.db.session import transaction
from orchestrator.services.chain import seed_policies
from orchestrator.services.context import Context


def init_database(ctx: Context) -> str | None:
    """Upgrade the schema to the newest migration and seed the chain policies.

    Returns the schema revision now in force.
    """
    migrate.upgrade(ctx.engine)
    with transaction(ctx.engine) as session:
        seed_policies(session)
    return migrate.current_revision(ctx.engine)
