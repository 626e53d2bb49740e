"""The web interface never sends passwords in clear text off the machine: any address but
loopback needs a certificate, and with one it serves HTTPS."""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from orchestrator.errors import InvalidInput
from orchestrator.web.server import tls_options
from tests.support.certs import self_signed


def test_loopback_needs_no_certificate() -> None:
    assert tls_options("127.0.0.1", None, None) == {}
    assert tls_options("::1", None, None) == {}


def test_another_address_without_a_certificate_is_refused_before_anything_starts() -> None:
    with pytest.raises(InvalidInput, match="would send passwords in clear text"):
        tls_options("10.20.0.5", None, None)
    with pytest.raises(InvalidInput, match="would send passwords in clear text"):
        tls_options("0.0.0.0", None, None)


def test_a_certificate_without_its_key_or_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="both web_tls_cert_file and web_tls_key_file"):
        tls_options("10.20.0.5", tmp_path / "web.crt", None)
    with pytest.raises(InvalidInput, match="no such file"):
        tls_options("10.20.0.5", tmp_path / "web.crt", tmp_path / "web.key")


def test_serve_refuses_a_clear_text_address_and_changes_nothing(tmp_path: Path) -> None:
    env = dict(
        os.environ,
        ORCHESTRATOR_DATA_DIR=str(tmp_path / "data"),
        ORCHESTRATOR_CONFIG=str(tmp_path / "absent.toml"),
        COLUMNS="200",
    )
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "serve", "--address", "0.0.0.0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "would send passwords in clear text" in done.stdout + done.stderr
    assert not (tmp_path / "data" / "orchestrator.db").exists()


def test_serve_with_a_certificate_serves_https(tmp_path: Path) -> None:
    cert_file, key_file = self_signed(tmp_path, "web")
    env = dict(
        os.environ,
        ORCHESTRATOR_DATA_DIR=str(tmp_path / "data"),
        ORCHESTRATOR_CONFIG=str(tmp_path / "absent.toml"),
        ORCHESTRATOR_WEB_PORT="0",
        ORCHESTRATOR_WEB_TLS_CERT_FILE=str(cert_file),
        ORCHESTRATOR_WEB_TLS_KEY_FILE=str(key_file),
        COLUMNS="200",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        found = None
        while time.monotonic() < deadline and found is None:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            found = re.search(r"web interface and API at (https://127\.0\.0\.1:\d+)", line)
        assert found, "".join(lines)
        trusted = ssl.create_default_context(cafile=str(cert_file))
        with urllib.request.urlopen(f"{found.group(1)}/sign-in", context=trusted) as page:
            assert page.status == 200
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"{found.group(1)}/sign-in", timeout=10)  # untrusted
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
