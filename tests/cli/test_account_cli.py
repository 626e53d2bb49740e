"""``orchestrator accounts`` and ``orchestrator tokens`` on the sample district."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from orchestrator.cli.main import app
from orchestrator.errors import SignInFailed
from orchestrator.services import accounts
from orchestrator.services.context import Context
from orchestrator.services.sample import SAMPLE_PASSWORD
from tests.support.cli import Invoke


def _ctx(engine: sa.Engine, tmp_path: Path) -> Context:
    return Context(engine=engine, secret_key_file=tmp_path / "data" / "secret.key")


def test_a_person_sets_their_own_password_from_stdin_and_signs_in_with_it(
    orchestrator: Invoke, engine: sa.Engine, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        app, ["--as", "btc.lincoln", "accounts", "set-password"], input="Lincoln-New-Pass-26\n"
    )
    assert result.exit_code == 0, result.output
    assert "password set for btc.lincoln" in result.stdout
    assert "Lincoln-New-Pass-26" not in result.output
    ctx = _ctx(engine, tmp_path)
    assert accounts.authenticate(ctx, "btc.lincoln", "Lincoln-New-Pass-26").username
    with pytest.raises(SignInFailed):
        accounts.authenticate(ctx, "btc.lincoln", SAMPLE_PASSWORD)


def test_a_btc_may_not_set_another_persons_password_and_nothing_changes(
    orchestrator: Invoke, engine: sa.Engine, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        app,
        ["--as", "btc.lincoln", "accounts", "set-password", "btc.garcia"],
        input="Taking-Over-Garcia\n",
    )
    assert result.exit_code == 3
    assert "IT runs the district's accounts" in result.output
    assert accounts.authenticate(_ctx(engine, tmp_path), "btc.garcia", SAMPLE_PASSWORD)


def test_a_weak_password_is_refused_with_the_reason(orchestrator: Invoke) -> None:
    result = CliRunner().invoke(
        app, ["--as", "it.rivera", "accounts", "set-password", "btc.garcia"], input="short\n"
    )
    assert result.exit_code == 2 and "at least 12 characters" in result.output


def test_it_unlocks_a_locked_account(
    orchestrator: Invoke, engine: sa.Engine, tmp_path: Path
) -> None:
    ctx = _ctx(engine, tmp_path)
    for _ in range(5):
        with pytest.raises(SignInFailed):
            accounts.authenticate(ctx, "btc.garcia", "a-wrong-password")
    orchestrator("--as", "btc.lincoln", "accounts", "unlock", "btc.garcia", expect=3)
    out = orchestrator("--as", "it.rivera", "accounts", "unlock", "btc.garcia").stdout
    assert "btc.garcia unlocked" in out
    assert accounts.authenticate(ctx, "btc.garcia", SAMPLE_PASSWORD).username == "btc.garcia"


def test_a_token_is_printed_once_works_and_stops_when_revoked(
    orchestrator: Invoke, engine: sa.Engine, tmp_path: Path
) -> None:
    made = orchestrator("--as", "btc.lincoln", "tokens", "create", "nightly", "--days", "7")
    secret = made.stdout.strip().splitlines()[-1]
    assert secret.startswith("orch_")
    ctx = _ctx(engine, tmp_path)
    assert accounts.token_actor(ctx, secret).username == "btc.lincoln"
    listed = orchestrator("--as", "btc.lincoln", "tokens", "list").stdout
    assert "nightly" in listed and secret not in listed
    orchestrator("--as", "btc.lincoln", "tokens", "create", "nightly", expect=2)
    orchestrator("--as", "btc.lincoln", "tokens", "revoke", "nightly")
    with pytest.raises(SignInFailed, match="unknown or revoked"):
        accounts.token_actor(ctx, secret)
