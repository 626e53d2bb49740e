"""``orchestrator testing``: the test clients pool and the persona test accounts."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from orchestrator.cli import render
from orchestrator.cli.app import JSON_OPTION, HandledGroup, console, print_json, state
from orchestrator.errors import InvalidInput
from orchestrator.services import testing

testing_app = typer.Typer(
    cls=HandledGroup,
    help="What image tests run on: test clients and student/staff test accounts.",
    no_args_is_help=True,
)
clients_app = typer.Typer(
    cls=HandledGroup,
    help="The pool of test clients, per platform and level (IT marks them).",
    no_args_is_help=True,
)
accounts_app = typer.Typer(
    cls=HandledGroup,
    help="Each building's student and staff test accounts, passwords encrypted at rest.",
    no_args_is_help=True,
)
testing_app.add_typer(clients_app, name="clients")
testing_app.add_typer(accounts_app, name="accounts")

BUILDING = Annotated[str, typer.Option("--building", help="Building number, e.g. 101.")]
PERSONA = Annotated[str, typer.Option("--persona", help="student or staff.")]


@clients_app.command("mark")
def clients_mark(
    host: Annotated[str, typer.Argument(help="The client's hostname.")],
    unmark: Annotated[bool, typer.Option("--unmark", help="Take it out of the test pool.")] = False,
) -> None:
    """Put an inventory client in the test pool (or take it out with --unmark)."""
    view, changed = testing.mark_test_client(state.ctx, state.actor(), host, test_client=not unmark)
    where = f"{view.platform.value}, {view.level.value}, building {view.building}"
    if not changed:
        already = "already a test client" if view.test_client else "not a test client"
        console.print(f"{view.hostname} is {already} ({where})", highlight=False)
    elif view.test_client:
        console.print(f"{view.hostname} marked as a test client ({where})", highlight=False)
    else:
        console.print(f"{view.hostname} is no longer a test client ({where})", highlight=False)


@clients_app.command("list")
def clients_list(
    platform: Annotated[str | None, typer.Option(help="pc or mac.")] = None,
    level: Annotated[str | None, typer.Option(help="elementary, middle, high or office.")] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """The test clients you may see, by platform and level."""
    views = testing.list_test_clients(state.ctx, state.actor(), platform=platform, level=level)
    if as_json:
        print_json(views)
        return
    t = Table(title="test clients", **render.TABLE_STYLE)
    for heading in ("platform", "level", "building", "hostname", "room", "address"):
        t.add_column(heading)
    for v in views:
        t.add_row(v.platform.value, v.level.value, v.building, v.hostname, v.room, v.address)
    console.print(t if views else "no test clients")


def _is_terminal() -> bool:
    return sys.stdin.isatty()


def _read_password(file: Path | None) -> str:
    if file is not None:
        try:
            text = file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not a text file"
            raise InvalidInput(f"cannot read {file}: {reason}", field="password-file") from exc
        return text.removesuffix("\n").removesuffix("\r")
    if _is_terminal():
        value: str = typer.prompt("password", hide_input=True, confirmation_prompt=True)
        return value
    return sys.stdin.read().removesuffix("\n").removesuffix("\r")


@accounts_app.command("set")
def accounts_set(
    building: BUILDING,
    persona: PERSONA,
    username: Annotated[str, typer.Option(help="The exception account's username.")],
    password_file: Annotated[
        Path | None,
        typer.Option(
            "--password-file",
            help="Read the password from this file; else asked for without echo (or stdin).",
        ),
    ] = None,
) -> None:
    """Store a building's student or staff test account; the password is encrypted."""
    testing.persona(persona)  # a wrong persona is said before the password is asked for
    view = testing.set_test_account(
        state.ctx,
        state.actor(),
        building=building,
        persona=persona,
        username=username,
        password=_read_password(password_file),
    )
    console.print(
        f"{view.persona.value} test account of building {view.building}: "
        f"{view.username} ({view.summary}, encrypted)",
        highlight=False,
    )


@accounts_app.command("list")
def accounts_list(
    building: Annotated[str | None, typer.Option(help="Only this building.")] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """The test accounts you may see: usernames only, never passwords."""
    views = testing.list_test_accounts(state.ctx, state.actor(), building=building)
    if as_json:
        print_json(views)
        return
    t = Table(title="test accounts", **render.TABLE_STYLE)
    for heading in ("building", "persona", "username", "password", "set by", "when"):
        t.add_column(heading)
    for v in views:
        t.add_row(
            v.building,
            v.persona.value,
            v.username,
            v.summary,
            v.updated_by,
            render.when(v.updated_at, state.ctx.zone),
        )
    console.print(t if views else "no test accounts")


@accounts_app.command("remove")
def accounts_remove(building: BUILDING, persona: PERSONA) -> None:
    """Forget a building's student or staff test account."""
    testing.remove_test_account(state.ctx, state.actor(), building=building, persona=persona)
    console.print(f"{persona} test account of building {building} removed", highlight=False)
