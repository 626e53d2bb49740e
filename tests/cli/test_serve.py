"""``orchestrator serve``: upgrades the database, loads the sample, runs the
daily sunset check at start, serves the web interface and the API from the
same process, stays up, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator.db.session import make_engine
from tests.conftest import POSTGRES_URL


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_serve_starts_on_an_empty_database_runs_the_sunset_check_and_stops_on_sigterm(
    backend: str, tmp_path: Path
) -> None:
    env = dict(
        os.environ,
        ORCHESTRATOR_DATA_DIR=str(tmp_path / "data"),
        ORCHESTRATOR_CONFIG=str(tmp_path / "absent.toml"),
        ORCHESTRATOR_WEB_PORT="0",
        COLUMNS="200",
    )
    schema = f"orch_serve_{os.getpid()}"
    admin = sa.create_engine(POSTGRES_URL)
    if backend == "postgresql":
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        env["ORCHESTRATOR_DATABASE_URL"] = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "serve", "--sample-district"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            seen = "".join(lines)
            if "orchestrator service running" in seen and "sample-district" in seen:
                break
        output = "".join(lines)
        assert "orchestrator service running" in output, output
        assert "sample district loaded" in output
        assert "sunset check: " in output
        assert re.search(r"store housekeeping next at \d{4}-\d\d-\d\dT03:30", output), output
        # The web interface and the API are served by the same process.
        found = re.search(r"web interface and API at (http://127\.0\.0\.1:\d+)", output)
        assert found, output
        assert "btc.lincoln" in output and "sample-district" in output
        with urllib.request.urlopen(f"{found.group(1)}/sign-in", timeout=10) as page:
            assert page.status == 200 and "Sign in" in page.read().decode()
        with urllib.request.urlopen(f"{found.group(1)}/openapi.json", timeout=10) as doc:
            assert json.load(doc)["paths"]["/api/v1/deployments"]["post"]["operationId"] == (
                "create_deployment"
            )

        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, output + rest
        assert "orchestrator service stopped" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    url = env.get("ORCHESTRATOR_DATABASE_URL", f"sqlite:///{tmp_path / 'data' / 'orchestrator.db'}")
    engine = make_engine(url)
    with engine.connect() as conn:
        states = dict(
            conn.execute(
                sa.text(
                    "SELECT name || '@' || version, state FROM releasable WHERE kind = 'base_image'"
                )
            ).all()
        )
        notices = conn.execute(sa.text("SELECT count(*) FROM notice")).scalar_one()
    engine.dispose()
    assert states["pc-elementary@2025.1"] == "sunset"
    assert notices > 0
    if backend == "postgresql":
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()
