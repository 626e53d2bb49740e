"""The root of the command line: who acts, error reporting, shared helpers.

The CLI is thin: it parses, calls one service function and renders the
result. Permissions are decided by the services; a refusal arrives here as
an :class:`~orchestrator.errors.OrchestratorError` and is printed as one line
on standard error with a non-zero exit code (see ``docs/user-guide.md``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, is_dataclass
from datetime import date, datetime
from enum import Enum
from typing import Any

import typer
from pydantic import BaseModel
from rich.console import Console
from typer.core import TyperGroup

from orchestrator.config import Settings, load_settings
from orchestrator.domain.policy import Actor
from orchestrator.errors import InvalidInput, OrchestratorError
from orchestrator.services import directory
from orchestrator.services.context import Context

console = Console()
err_console = Console(stderr=True)


class HandledGroup(TyperGroup):
    """Turns the orchestrator's errors into one clear line and an exit code."""

    def invoke(self, ctx: Any) -> Any:  # a click Context (vendored inside typer)
        try:
            return super().invoke(ctx)
        except OrchestratorError as exc:
            err_console.print(f"[red]{_escape(str(exc))}[/red]", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


class State:
    """Per-invocation state: settings, the service context, the acting person."""

    def __init__(self) -> None:
        self.reset()

    def reset(self, as_user: str | None = None) -> None:
        """Forget what an earlier invocation in this process loaded."""
        ctx = getattr(self, "_ctx", None)
        if ctx is not None:
            ctx.engine.dispose()
        self.as_user = as_user
        self._settings: Settings | None = None
        self._ctx: Context | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    @property
    def ctx(self) -> Context:
        if self._ctx is None:
            self._ctx = Context.from_settings(self.settings)
        return self._ctx

    def checked_ctx(self) -> Context:
        from orchestrator.services.bootstrap import require_current_schema

        require_current_schema(self.ctx)
        return self.ctx

    def actor(self) -> Actor:
        username = self.as_user or self.settings.user
        if not username:
            raise InvalidInput(
                "say who you are: --as USERNAME (or set ORCHESTRATOR_USER); "
                "'orchestrator people' lists who can act"
            )
        return directory.actor(self.checked_ctx(), username)


state = State()


def to_jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(value), indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def parse_date(value: str | None, field: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{value!r} is not a date (YYYY-MM-DD)", field=field) from None


JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of a table.")
