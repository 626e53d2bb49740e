"""The command line through Typer's runner, against the test database (both backends)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result

from orchestrator.cli.main import app
from tests.conftest import POSTGRES_URL

Invoke = Callable[..., Result]


@pytest.fixture
def orchestrator(
    engine: sa.Engine,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Invoke:
    """Run the CLI against the test database, loaded with the sample district."""
    if engine.dialect.name == "postgresql":
        schema = request.getfixturevalue("postgres_schema")
        url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    else:
        url = engine.url.render_as_string(hide_password=False)
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", url)
    monkeypatch.setenv("ORCHESTRATOR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ORCHESTRATOR_IMAGE_STORE", str(tmp_path / "images"))
    monkeypatch.setenv("ORCHESTRATOR_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.delenv("ORCHESTRATOR_USER", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()

    def invoke(*args: str, expect: int = 0) -> Result:
        result = runner.invoke(app, list(args))
        assert result.exit_code == expect, (
            f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            f"\n{result.exception!r}"
        )
        return result

    invoke("init", "--sample-district")
    return invoke


def as_json(result: Result) -> Any:
    return json.loads(result.stdout)
