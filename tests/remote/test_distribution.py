"""The artifact server on loopback: whole files, HEAD, resumed ranges, and
everything it must refuse (traversal, directories, symlinks out, missing)."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.remote.distribution import (
    CHUNK,
    DistributionServer,
    serve,
    sha256_file,
)


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    root = tmp_path / "artifacts"
    (root / "pkgs").mkdir(parents=True)
    # Bigger than one chunk, and not a multiple of it, so streaming is exercised.
    (root / "pkgs" / "big.bin").write_bytes(os.urandom(CHUNK * 2 + 12345))
    (root / "small.txt").write_bytes(b"0123456789")
    (root / "with space.txt").write_bytes(b"spaced")
    (tmp_path / "secret.txt").write_text("outside the root")
    return root


@pytest.fixture
def server(artifacts: Path) -> Iterator[DistributionServer]:
    with serve(artifacts) as s:
        yield s


def _request(
    server: DistributionServer, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(server.address, server.port, timeout=10)
    try:
        # putrequest sends the path as given: no client-side normalising of '..'.
        conn.putrequest(method, path, skip_host=False)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def test_a_file_is_served_byte_exact_with_its_length(
    server: DistributionServer, artifacts: Path
) -> None:
    expected = (artifacts / "pkgs" / "big.bin").read_bytes()
    status, headers, body = _request(server, "GET", "/pkgs/big.bin")
    assert status == 200
    assert headers["content-length"] == str(len(expected))
    assert headers["accept-ranges"] == "bytes"
    assert body == expected


def test_url_for_quotes_the_name_and_the_file_is_found_there(server: DistributionServer) -> None:
    url = server.url_for("with space.txt")
    assert url == f"http://127.0.0.1:{server.port}/with%20space.txt"
    status, _, body = _request(server, "GET", url.removeprefix(server.url[:-1]))
    assert (status, body) == (200, b"spaced")


def test_head_gives_the_headers_without_a_body(server: DistributionServer) -> None:
    status, headers, body = _request(server, "HEAD", "/small.txt")
    assert status == 200
    assert headers["content-length"] == "10"
    assert "etag" in headers and "last-modified" in headers
    assert body == b""


def test_a_range_request_resumes_an_interrupted_download(
    server: DistributionServer, artifacts: Path
) -> None:
    expected = (artifacts / "pkgs" / "big.bin").read_bytes()
    got_so_far = expected[: CHUNK + 7]  # what arrived before the connection dropped
    status, headers, rest = _request(
        server, "GET", "/pkgs/big.bin", {"Range": f"bytes={len(got_so_far)}-"}
    )
    assert status == 206
    assert (
        headers["content-range"] == f"bytes {len(got_so_far)}-{len(expected) - 1}/{len(expected)}"
    )
    assert headers["content-length"] == str(len(expected) - len(got_so_far))
    assert got_so_far + rest == expected


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [("bytes=2-4", b"234"), ("bytes=-3", b"789"), ("bytes=8-100", b"89"), ("bytes=0-0", b"0")],
)
def test_a_single_byte_range_is_served_as_partial_content(
    server: DistributionServer, wanted: str, expected: bytes
) -> None:
    status, headers, body = _request(server, "GET", "/small.txt", {"Range": wanted})
    assert (status, body) == (206, expected)
    assert headers["content-length"] == str(len(expected))


@pytest.mark.parametrize(
    "wanted", ["bytes=10-", "bytes=5-2", "bytes=-0", "bytes=abc", "bytes=0-1,4-5", "lines=1-2"]
)
def test_a_bad_range_is_416_with_the_files_size(server: DistributionServer, wanted: str) -> None:
    status, headers, body = _request(server, "GET", "/small.txt", {"Range": wanted})
    assert status == 416
    assert headers["content-range"] == "bytes */10"
    assert body == b""


def test_a_range_for_another_version_of_the_file_gets_the_whole_new_file(
    server: DistributionServer,
) -> None:
    status, _, body = _request(
        server, "GET", "/small.txt", {"Range": "bytes=5-", "If-Range": '"not-this-one"'}
    )
    assert (status, body) == (200, b"0123456789")
    _, headers, _ = _request(server, "HEAD", "/small.txt")
    status, _, body = _request(
        server, "GET", "/small.txt", {"Range": "bytes=5-", "If-Range": headers["etag"]}
    )
    assert (status, body) == (206, b"56789")


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/pkgs/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/pkgs/%2E%2E%2F%2E%2E%2Fsecret.txt",
        "/../etc/passwd",
        "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "//etc/passwd",
        "/small.txt%00.pkg",
    ],
)
def test_path_traversal_is_404(server: DistributionServer, path: str) -> None:
    status, _, body = _request(server, "GET", path)
    assert status == 404
    assert b"outside the root" not in body and b"root:" not in body


@pytest.mark.parametrize("path", ["/", "/pkgs", "/pkgs/"])
def test_a_directory_is_404_never_a_listing(server: DistributionServer, path: str) -> None:
    status, _, body = _request(server, "GET", path)
    assert status == 404
    assert b"big.bin" not in body


def test_a_symlink_out_of_the_root_is_404_and_one_inside_is_served(
    artifacts: Path, tmp_path: Path
) -> None:
    (artifacts / "escape.txt").symlink_to(tmp_path / "secret.txt")
    (artifacts / "etc").symlink_to("/etc")
    (artifacts / "alias.txt").symlink_to("small.txt")
    with serve(artifacts) as server:
        assert _request(server, "GET", "/escape.txt")[0] == 404
        assert _request(server, "GET", "/etc/passwd")[0] == 404
        assert _request(server, "GET", "/alias.txt")[::2] == (200, b"0123456789")


def test_a_missing_file_is_404(server: DistributionServer) -> None:
    assert _request(server, "GET", "/pkgs/nope.pkg")[0] == 404
    assert _request(server, "HEAD", "/nope")[0] == 404


def test_writes_are_not_allowed(server: DistributionServer, artifacts: Path) -> None:
    conn = http.client.HTTPConnection(server.address, server.port, timeout=10)
    try:
        conn.request("PUT", "/small.txt", body=b"overwritten")
        assert conn.getresponse().status == 501
    finally:
        conn.close()
    assert (artifacts / "small.txt").read_bytes() == b"0123456789"


def test_requests_are_logged_at_debug_and_nothing_is_printed(
    server: DistributionServer,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with caplog.at_level(logging.DEBUG, logger="orchestrator.remote.distribution"):
        _request(server, "GET", "/small.txt")
        _request(server, "GET", "/nope")
    logged = [r for r in caplog.records if r.name == "orchestrator.remote.distribution"]
    assert any("GET /small.txt" in r.getMessage() and "200" in r.getMessage() for r in logged)
    assert any("GET /nope" in r.getMessage() and "404" in r.getMessage() for r in logged)
    assert all(r.levelno == logging.DEBUG for r in logged)
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "")


def test_serve_stops_the_server_on_exit(artifacts: Path) -> None:
    with serve(artifacts) as server:
        port = server.port
        assert _request(server, "GET", "/small.txt")[0] == 200
    with pytest.raises(OSError):
        http.client.HTTPConnection("127.0.0.1", port, timeout=2).connect()


def test_sha256_file_matches_hashlib(artifacts: Path) -> None:
    path = artifacts / "pkgs" / "big.bin"
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
