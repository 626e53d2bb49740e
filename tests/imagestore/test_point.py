"""The distribution point on loopback: it serves a store root's chunks, indexes and
manifests read-only, answers which chunks it lacks, and refuses everything else
(traversal, encoded or not; symlinks in or out of the root; bad ids; oversized
bodies; writes). Also as the real process the project ships, over HTTPS too."""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from orchestrator.imagestore import ImageStore
from orchestrator.imagestore.point import ABSENT, MAX_BATCH_IDS, MAX_MISSING_IDS, PointServer
from orchestrator.imagestore.point import main as point_main
from tests.imagestore.conftest import MiB, random_bytes
from tests.imagestore.pointkit import Stored, publish, request, self_signed

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def root(tmp_path: Path) -> Iterator[tuple[Path, Stored]]:
    image = tmp_path / "lab.img"
    image.write_bytes(random_bytes(2 * MiB, 1))
    with ImageStore(tmp_path / "point") as store:
        stored = publish(store, "7-custom-image-lab-1.2", image)
    (tmp_path / "secret.txt").write_text("outside the root")
    yield tmp_path / "point", stored


@pytest.fixture
def point(root: tuple[Path, Stored]) -> Iterator[PointServer]:
    with PointServer(root[0]) as server:
        yield server


def _chunk_path(chunk_id: bytes) -> str:
    h = chunk_id.hex()
    return f"/chunks/{h[:4]}/{h}.cacnk"


def test_chunks_indexes_and_manifests_are_served_byte_exact(
    point: PointServer, root: tuple[Path, Stored]
) -> None:
    folder, stored = root
    first = stored.index.chunk_id(0)
    for path, file in (
        (_chunk_path(first), folder / _chunk_path(first)[1:]),
        (f"/indexes/{stored.name}.caibx", folder / "indexes" / f"{stored.name}.caibx"),
        (f"/manifests/{stored.name}.json", folder / "manifests" / f"{stored.name}.json"),
    ):
        status, headers, body = request(point.port, "GET", path)
        assert status == 200, path
        assert body == file.read_bytes()
        assert headers["content-length"] == str(len(body))
        assert headers["etag"].startswith('"')

    status, headers, body = request(point.port, "HEAD", _chunk_path(first))
    assert (status, body) == (200, b"")
    assert int(headers["content-length"]) == (folder / _chunk_path(first)[1:]).stat().st_size
    assert "immutable" in headers["cache-control"]


def test_one_connection_serves_many_requests(point: PointServer, root: tuple[Path, Stored]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", point.port, timeout=10)
    try:
        for i in range(len(root[1].index)):
            conn.request("GET", _chunk_path(root[1].index.chunk_id(i)))
            response = conn.getresponse()
            assert response.status == 200 and response.read()
            assert not response.will_close
    finally:
        conn.close()
    assert point.counts["chunk"] == len(root[1].index)


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_stopping_ends_connections_kept_alive(
    root: tuple[Path, Stored], tmp_path: Path, tls: bool
) -> None:
    cert, key = self_signed(tmp_path) if tls else (None, None)
    server = PointServer(root[0], cert_file=cert, key_file=key).start()
    conn: http.client.HTTPConnection = (
        http.client.HTTPSConnection(
            "127.0.0.1", server.port, timeout=5, context=ssl.create_default_context(cafile=cert)
        )
        if tls
        else http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    )
    try:
        conn.request("GET", "/health")
        assert conn.getresponse().read()
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 2
        with pytest.raises((http.client.HTTPException, OSError)):
            conn.request("GET", "/health")
            conn.getresponse().read()
    finally:
        conn.close()
        server.stop()


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/chunks",
        "/chunks/",
        "/indexes/",
        "/manifests",
        "/chunks/../secret.txt",
        "/chunks/../../secret.txt",
        "/chunks/%2e%2e/%2e%2e/secret.txt",
        "/indexes/%2e%2e%2fsecret.caibx",
        "/indexes/..%2f..%2fsecret.caibx",
        "/manifests/../indexes/x.json",
        "/manifests/..json",
        "//etc/passwd",
        "/.lock",
        "/chunks/.tmp-x.partial",
        "/health/../.lock",
        "http://127.0.0.1/.lock",
    ],
)
def test_traversal_listings_and_other_files_are_not_found(point: PointServer, path: str) -> None:
    status, _, body = request(point.port, "GET", path)
    assert (status, body) == (404, b"")


def test_a_chunk_is_served_only_under_its_exact_name(
    point: PointServer, root: tuple[Path, Stored]
) -> None:
    h = root[1].index.chunk_id(0).hex()
    assert request(point.port, "GET", f"/chunks/{h[:4]}/{h}.cacnk")[0] == 200
    for bad in (
        f"/chunks/{h[:4].upper()}/{h.upper()}.cacnk",  # uppercase hex
        f"/chunks/0000/{h}.cacnk" if not h.startswith("0000") else f"/chunks/ffff/{h}.cacnk",
        f"/chunks/{h[:4]}/{h[:-1]}.cacnk",  # 63 digits
        f"/chunks/{h[:4]}/{h}0.cacnk",  # 65 digits
        f"/chunks/{h[:4]}/{h}.cacnk?x=1",
        f"/chunks/{h[:4]}/{h}.cacnk/",
        f"/chunks/{h[:4]}/{h}",
        f"/chunks/{h[:4]}/%{h}.cacnk",
    ):
        assert request(point.port, "GET", bad)[0] == 404, bad


def test_no_symlink_is_followed_out_of_the_root_or_inside_it(
    point: PointServer, root: tuple[Path, Stored], tmp_path: Path
) -> None:
    folder, stored = root
    secret = tmp_path / "secret.txt"
    # A chunk name that is a link to a file outside the root.
    fake = "ab" * 32
    (folder / "chunks" / fake[:4]).mkdir(exist_ok=True)
    os.symlink(secret, folder / "chunks" / fake[:4] / f"{fake}.cacnk")
    # An index name linked to another index inside the root.
    os.symlink(folder / "indexes" / f"{stored.name}.caibx", folder / "indexes" / "alias.caibx")
    # A whole folder swapped for a link out of the root.
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "stolen.json").write_text("{}")
    os.rename(folder / "manifests", tmp_path / "real-manifests")
    os.symlink(outside, folder / "manifests")

    assert request(point.port, "GET", f"/chunks/{fake[:4]}/{fake}.cacnk")[0] == 404
    assert request(point.port, "GET", "/indexes/alias.caibx")[0] == 404
    assert request(point.port, "GET", "/manifests/stolen.json")[0] == 404
    assert request(point.port, "GET", f"/indexes/{stored.name}.caibx")[0] == 200


def test_a_folder_under_a_file_name_is_not_served(
    point: PointServer, root: tuple[Path, Stored]
) -> None:
    (root[0] / "indexes" / "folder.caibx").mkdir()
    assert request(point.port, "GET", "/indexes/folder.caibx")[0] == 404


def test_missing_answers_exactly_the_ids_the_point_lacks_in_order_once(
    point: PointServer, root: tuple[Path, Stored], tmp_path: Path
) -> None:
    index = root[1].index
    have = [index.chunk_id(i) for i in range(3)]
    lack = [bytes([n]) * 32 for n in (1, 2, 3)]
    # A chunk the point lacks whose name is a link to a real chunk still counts as lacking.
    linked = bytes([9]) * 32
    (root[0] / "chunks" / linked.hex()[:4]).mkdir()
    os.symlink(
        root[0] / _chunk_path(have[0])[1:],
        root[0] / "chunks" / linked.hex()[:4] / f"{linked.hex()}.cacnk",
    )
    body = have[0] + lack[0] + have[1] + lack[1] + lack[0] + have[2] + lack[2] + linked

    status, headers, answer = request(point.port, "POST", "/missing", body)

    assert status == 200 and headers["content-type"] == "application/octet-stream"
    assert answer == lack[0] + lack[1] + lack[2] + linked
    assert request(point.port, "POST", "/missing", b"")[2] == b""


def test_missing_refuses_a_body_that_is_not_whole_ids_or_too_large(
    root: tuple[Path, Stored],
) -> None:
    with PointServer(root[0], max_missing=4) as small:
        assert request(small.port, "POST", "/missing", b"x" * 33)[0] == 400
        assert request(small.port, "POST", "/missing", b"x" * 32 * 4)[0] == 200
        status, headers, _ = request(small.port, "POST", "/missing", b"x" * 32 * 5)
        assert status == 413 and headers["connection"] == "close"
        assert request(small.port, "POST", "/missing", None)[0] == 411
        assert request(small.port, "GET", "/missing")[0] == 404
        assert request(small.port, "POST", "/missing/")[0] == 404


def test_the_default_bound_on_missing_is_refused_before_the_body_is_read(
    point: PointServer,
) -> None:
    too_many = str((MAX_MISSING_IDS + 1) * 32)
    # Only the headers are sent: the refusal does not wait for 64 MiB of body.
    status, _, _ = request(point.port, "POST", "/missing", b"", {"Content-Length": too_many})
    assert status == 413


def _unframed(answer: bytes, asked: int) -> list[bytes | None]:
    """The chunk files of a ``POST /chunks`` answer for ``asked`` ids (None: absent)."""
    lengths = [int.from_bytes(answer[at : at + 8], "big") for at in range(0, 8 * asked, 8)]
    files: list[bytes | None] = []
    at = 8 * asked
    for length in lengths:
        if length == ABSENT:
            files.append(None)
        else:
            files.append(answer[at : at + length])
            at += length
    assert at == len(answer)
    return files


def test_chunks_answers_each_asked_chunk_file_in_order_and_marks_the_absent(
    point: PointServer, root: tuple[Path, Stored]
) -> None:
    folder, stored = root
    have = [stored.index.chunk_id(i) for i in range(2)]
    absent = bytes([1]) * 32
    # A name that is a link to a real chunk is not served, as with GET.
    linked = bytes([9]) * 32
    (folder / "chunks" / linked.hex()[:4]).mkdir()
    os.symlink(
        folder / _chunk_path(have[0])[1:],
        folder / "chunks" / linked.hex()[:4] / f"{linked.hex()}.cacnk",
    )
    asked = [have[0], absent, have[1], have[0], linked]

    status, headers, answer = request(point.port, "POST", "/chunks", b"".join(asked))

    assert status == 200 and headers["content-type"] == "application/octet-stream"
    files = [(folder / _chunk_path(i)[1:]).read_bytes() for i in have]
    assert _unframed(answer, len(asked)) == [files[0], None, files[1], files[0], None]
    assert point.counts["chunks"] == 1 and point.counts["chunk"] == len(asked)
    assert request(point.port, "POST", "/chunks", b"")[2] == b""


class CountingPoint(PointServer):
    """Records how many descriptors the process has open at each chunk file's opening."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.open_at: list[int] = []

    def open_file(self, parts: Sequence[str]) -> int | None:
        self.open_at.append(len(os.listdir("/proc/self/fd")))
        return super().open_file(parts)


def test_a_batch_answer_holds_one_chunk_file_open_at_a_time(
    root: tuple[Path, Stored],
) -> None:
    index = root[1].index
    ids = [index.chunk_id(i) for i in range(min(len(index), MAX_BATCH_IDS))]
    assert len(ids) > 16
    with CountingPoint(root[0]) as counting:
        status, _, answer = request(counting.port, "POST", "/chunks", b"".join(ids))
    assert status == 200 and None not in _unframed(answer, len(ids))
    # Every file is opened twice (its size, then its bytes), never two at once.
    assert len(counting.open_at) == 2 * len(ids)
    assert max(counting.open_at) - min(counting.open_at) <= 1


def test_chunks_refuses_a_body_that_is_not_whole_ids_or_more_than_its_bound(
    point: PointServer, root: tuple[Path, Stored]
) -> None:
    some = root[1].index.chunk_id(0)
    assert request(point.port, "POST", "/chunks", b"x" * 33)[0] == 400
    status, _, answer = request(point.port, "POST", "/chunks", some * MAX_BATCH_IDS)
    assert status == 200 and len(_unframed(answer, MAX_BATCH_IDS)) == MAX_BATCH_IDS
    status, headers, _ = request(point.port, "POST", "/chunks", some * (MAX_BATCH_IDS + 1))
    assert status == 413 and headers["connection"] == "close"
    assert request(point.port, "POST", "/chunks", None)[0] == 411
    assert request(point.port, "GET", "/chunks")[0] == 404
    assert request(point.port, "POST", "/chunks/")[0] == 404


def test_writes_are_refused_and_nothing_changes(
    point: PointServer, root: tuple[Path, Stored]
) -> None:
    before = sorted(p.relative_to(root[0]) for p in root[0].rglob("*"))
    path = f"/indexes/{root[1].name}.caibx"
    for method in ("PUT", "DELETE", "PATCH"):
        assert request(point.port, method, path, b"overwritten")[0] == 405
    assert request(point.port, "POST", path, b"x")[0] == 404
    assert sorted(p.relative_to(root[0]) for p in root[0].rglob("*")) == before
    assert request(point.port, "GET", path)[2] == (root[0] / path[1:]).read_bytes()


def test_health_answers_and_requests_are_logged_at_debug_only(
    point: PointServer, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    with caplog.at_level(logging.DEBUG, logger="orchestrator.imagestore.point"):
        status, _, body = request(point.port, "GET", "/health")
        request(point.port, "GET", "/chunks/../x")
        with socket.create_connection(("127.0.0.1", point.port), timeout=5) as raw:
            raw.sendall(b"NONSENSE\r\n\r\n")
            raw.recv(1000)
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert {r.levelno for r in caplog.records} == {logging.DEBUG}
    assert any("/chunks/../x" in r.getMessage() for r in caplog.records)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def _start_process(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.imagestore.point", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert " at " in line, (line, proc.stderr.read() if proc.stderr else "")
    return proc, line.rsplit(" at ", 1)[1].strip()


def test_the_point_process_serves_and_stops_cleanly_on_sigterm(
    root: tuple[Path, Stored],
) -> None:
    proc, url = _start_process(["--root", str(root[0]), "--listen", "127.0.0.1:0"])
    try:
        port = int(url.rsplit(":", 1)[1])
        assert url == f"http://127.0.0.1:{port}"
        status, _, body = request(port, "GET", f"/manifests/{root[1].name}.json")
        assert status == 200 and json.loads(body)["key_id"]
        assert request(port, "GET", "/chunks/%2e%2e/.lock")[0] == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    assert proc.stderr is not None and proc.stderr.read() == ""
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_the_point_process_serves_https_with_its_certificate(
    root: tuple[Path, Stored], tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    proc, url = _start_process(
        ["--root", str(root[0]), "--listen", "127.0.0.1:0", "--cert", str(cert), "--key", str(key)]
    )
    try:
        assert url.startswith("https://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1])
        trusting = ssl.create_default_context(cafile=str(cert))
        assert request(port, "GET", "/health", tls=trusting)[0] == 200
        with pytest.raises(ssl.SSLCertVerificationError):
            request(port, "GET", "/health", tls=ssl.create_default_context())
        # Plain HTTP to the HTTPS port gets no answer.
        with pytest.raises((http.client.HTTPException, OSError)):
            request(port, "GET", "/health")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_the_point_process_refuses_a_root_that_is_not_a_folder(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.imagestore.point",
            "--root",
            str(tmp_path / "absent"),
            "--listen",
            "127.0.0.1:0",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1 and "cannot serve" in done.stderr


@pytest.mark.parametrize("listen", [":8443", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000"])
def test_the_point_process_wants_an_explicit_host_and_port(
    tmp_path: Path, listen: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        point_main(["--root", str(tmp_path), "--listen", listen])
    assert exited.value.code == 2
    assert "is not HOST:PORT" in capsys.readouterr().err
