"""``orchestrator accounts`` and ``orchestrator tokens``: signing in to the web and the API."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from orchestrator.cli import render
from orchestrator.cli.app import JSON_OPTION, HandledGroup, console, print_json, state
from orchestrator.services import accounts

accounts_app = typer.Typer(
    cls=HandledGroup,
    help="Local accounts' passwords and lockouts (the directory's people sign in with theirs).",
    no_args_is_help=True,
)
tokens_app = typer.Typer(
    cls=HandledGroup,
    help="API tokens for scripts (Authorization: Bearer …), yours only.",
    no_args_is_help=True,
)


def _new_password() -> str:
    if sys.stdin.isatty():
        value: str = typer.prompt("new password", hide_input=True, confirmation_prompt=True)
        return value
    return sys.stdin.readline().rstrip("\n")


@accounts_app.command("set-password")
def set_password(
    username: Annotated[
        str | None, typer.Argument(help="Whose (IT: anyone's; default: your own).")
    ] = None,
) -> None:
    """Set a local account's password: asked for without echo, or read from stdin."""
    actor = state.actor()
    who = username or actor.username
    accounts.set_password(state.ctx, actor, who, _new_password())
    console.print(f"password set for {who}; their open sessions have ended", highlight=False)


@accounts_app.command("unlock")
def unlock(username: Annotated[str, typer.Argument(help="The locked account.")]) -> None:
    """Clear an account's failed sign-ins so it may sign in again now (IT)."""
    accounts.unlock(state.ctx, state.actor(), username)
    console.print(f"{username} unlocked", highlight=False)


@tokens_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="What the token is for, e.g. nightly-report.")],
    days: Annotated[int, typer.Option(min=1, max=366, help="Days until it expires.")] = 90,
) -> None:
    """Make a token; it is shown this once, keep it like a password."""
    view, secret = accounts.create_token(state.ctx, state.actor(), name, days=days)
    console.print(
        f"token {view.name} (expires {render.when(view.expires_at, state.ctx.zone)}); "
        "shown this once:",
        highlight=False,
    )
    print(secret)


@tokens_app.command("list")
def token_list(as_json: bool = JSON_OPTION) -> None:
    """Your tokens (never their secrets)."""
    views = accounts.tokens(state.ctx, state.actor())
    if as_json:
        print_json(views)
        return
    t = Table(title="API tokens", **render.TABLE_STYLE)
    for heading in ("name", "starts with", "made", "expires", "last used", ""):
        t.add_column(heading)
    zone = state.ctx.zone
    for v in views:
        t.add_row(
            v.name,
            v.prefix + "…",
            render.when(v.created_at, zone),
            render.when(v.expires_at, zone) if v.expires_at else "never",
            render.when(v.last_used_at, zone) if v.last_used_at else "never",
            "revoked" if v.revoked else "",
        )
    console.print(t if views else "no tokens")


@tokens_app.command("revoke")
def token_revoke(name: Annotated[str, typer.Argument(help="The token's name.")]) -> None:
    """Stop a token from working, at once."""
    accounts.revoke_token(state.ctx, state.actor(), name)
    console.print(f"token {name} revoked", highlight=False)
