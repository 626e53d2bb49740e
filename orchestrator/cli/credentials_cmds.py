"""``orchestrator credentials``: the client login secrets, kept encrypted (IT)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from orchestrator.cli import render
from orchestrator.cli.app import JSON_OPTION, HandledGroup, console, print_json, state
from orchestrator.errors import InvalidInput
from orchestrator.services import vault

credentials_app = typer.Typer(
    cls=HandledGroup,
    help="The SSH key and WinRM password clients are reached with, encrypted at rest (IT).",
    no_args_is_help=True,
)

NAME = Annotated[str, typer.Argument(help="ssh-key or winrm-password.")]


def _read_value(name: str, file: Path | None) -> str:
    if file is not None:
        try:
            return file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not a text file"
            raise InvalidInput(f"cannot read {file}: {reason}", field="file") from exc
    if sys.stdin.isatty():
        value: str = typer.prompt(f"{name}", hide_input=True, confirmation_prompt=True)
        return value
    return sys.stdin.read().rstrip("\n")


@credentials_app.command("set")
def credentials_set(
    name: NAME,
    file: Annotated[
        Path | None, typer.Option(help="Read the secret from this file (e.g. the SSH key).")
    ] = None,
) -> None:
    """Store a secret, encrypted; asked for without echo, or read from --file or stdin."""
    view = vault.set_secret(state.ctx, state.actor(), name, _read_value(name, file))
    console.print(f"{view.name.value} stored encrypted ({view.summary})", highlight=False)


@credentials_app.command("list")
def credentials_list(as_json: bool = JSON_OPTION) -> None:
    """Which secrets are set, by whom and when (never their values)."""
    views = vault.list_secrets(state.ctx, state.actor())
    if as_json:
        print_json(views)
        return
    t = Table(title="client credentials", **render.TABLE_STYLE)
    for heading in ("name", "what", "set by", "when"):
        t.add_column(heading)
    for v in views:
        t.add_row(v.name.value, v.summary, v.updated_by, render.when(v.updated_at, state.ctx.zone))
    console.print(t if views else "no credentials stored")


@credentials_app.command("remove")
def credentials_remove(name: NAME) -> None:
    """Forget a stored secret."""
    vault.remove_secret(state.ctx, state.actor(), name)
    console.print(f"{name} removed")


@credentials_app.command("rotate-key")
def credentials_rotate_key() -> None:
    """Make a new key and re-encrypt every stored secret with it (IT).

    Client logins and test accounts alike; the old key file is replaced and
    reads nothing afterwards."""
    view = vault.rotate_key(state.ctx, state.actor())
    console.print(
        f"key rotated: {render.counted(view.credentials, 'credential')} and "
        f"{render.counted(view.test_accounts, 'test account')} re-encrypted; "
        f"{view.key_file} replaced",
        highlight=False,
    )
