"""The file-set distribution server a run uses: exactly the files it was given."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from orchestrator.remote.distribution import serve_files


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_only_the_given_files_are_served_each_at_its_own_path(tmp_path: Path) -> None:
    wim = tmp_path / "base.wim"
    wim.write_bytes(b"MSWIM\0\0\0" + bytes(range(256)) * 64)
    (tmp_path / "secret.txt").write_text("not for clients")

    with serve_files({"abc123/base.wim": wim}) as server:
        with urllib.request.urlopen(server.url_for("abc123/base.wim"), timeout=5) as answer:
            assert answer.read() == wim.read_bytes()
        assert _status(server.url_for("secret.txt")) == 404
        assert _status(server.url_for("abc123/secret.txt")) == 404
        assert _status(server.url + "etc/passwd") == 404
        assert _status(server.url + "abc123/../secret.txt") == 404
        assert _status(server.url + "abc123/") == 404


def test_a_file_that_is_not_there_is_refused_before_serving(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError), serve_files({"x/gone.pkg": tmp_path / "gone.pkg"}):
        pass
