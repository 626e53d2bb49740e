"""Staging a released image to a building's distribution point: a real sshd on
loopback is the point's host (the orchestrator writes over SFTP, its key pinned),
and the project's point server serves that host's store over HTTP; on both
databases. Only what the point lacks is sent, once, and the point then serves
an image that rebuilds byte for byte."""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from orchestrator.clock import FixedClock
from orchestrator.config import Settings
from orchestrator.db.models import ImageManifest, ImageStaging
from orchestrator.db.session import transaction
from orchestrator.domain.policy import SYSTEM_ACTOR
from orchestrator.domain.states import Kind, State
from orchestrator.errors import (
    Conflict,
    HostKeyChanged,
    HostUnreachable,
    InvalidInput,
    NotFound,
    Refused,
    RemoteError,
)
from orchestrator.imagestore import manifest as signing
from orchestrator.imagestore.assemble import extract
from orchestrator.imagestore.point import PointServer
from orchestrator.imagestore.store import ImageStore
from orchestrator.remote import point_receiver, points, ssh
from orchestrator.remote.ansible import FakePlaybookRunner
from orchestrator.remote.points import RateLimit
from orchestrator.scheduler import service
from orchestrator.services import (
    audit,
    chain,
    delivery,
    deployments,
    image_store,
    inventory,
    runs,
    staging,
    windows,
)
from orchestrator.services.deployments import DeploymentSpec
from orchestrator.services.runs import Credentials
from orchestrator.services.staging import PointSpec
from tests.factories import District
from tests.service.test_image_store import HOLD_STORE
from tests.support.fixtures import release_scratch, scratch_deployment
from tests.support.points import add_point, serving_point
from tests.support.sshd import SSHHost, restart_with_new_host_key, start_hosts

MIB = 2**20


@pytest.fixture(scope="module")
def point_host() -> Iterator[SSHHost]:
    with start_hosts(1) as hosts:
        yield hosts[0]


@pytest.fixture
def point(point_host: SSHHost) -> Iterator[PointServer]:
    with serving_point(point_host) as server:
        yield server


def _credentials(host: SSHHost) -> Credentials:
    return Credentials(ssh_user=host.username, ssh_key=host.key_file.read_text())


def _released_base(d: District, folder: Path, version: str, data: bytes) -> str:
    path = folder / f"pc-elementary-{version}.img"
    path.write_bytes(data)
    ref = d.base(version=version, artifact=str(path))
    image_store.import_artifact(d.ctx, d["it.ana"], Kind.BASE_IMAGE, ref, path)
    return ref


def _two_versions(
    d: District, folder: Path, seed: int, changed: int, size: int = 4 * MIB
) -> tuple[str, str, bytes]:
    """Released bases 2026.1 and 2026.2 of ``size`` bytes, the second with
    ``changed`` bytes rewritten."""
    rng = random.Random(seed)
    old = rng.randbytes(size)
    new = bytearray(old)
    new[MIB : MIB + changed] = rng.randbytes(changed)
    first = _released_base(d, folder, "2026.1", old)
    return first, _released_base(d, folder, "2026.2", bytes(new)), bytes(new)


def _rebuilt_from(point: PointServer, folder: Path) -> bytes:
    """The bytes of the one image on the point, rebuilt from its index and chunks."""
    on_point = ImageStore(point.root)
    (name,) = on_point.names()
    out = folder / "rebuilt.img"
    extract(on_point.index(name), on_point.chunks, out)
    return out.read_bytes()


def _retired_past_the_window(d: District, clock: FixedClock, ref: str) -> None:
    """Retire ``ref`` (deprecated by now) and let the protection window pass over it
    and over every file of the store."""
    chain.retire(d.ctx, d["it.ana"], Kind.BASE_IMAGE, ref, "withdrawn")
    clock.advance(hours=25)
    old = time.time() - 48 * 3600
    for path in d.ctx.image_store_dir.rglob("*"):
        os.utime(path, (old, old))


def _stage(d: District, host: SSHHost, ref: str, who: str = "btc.lincoln") -> staging.StagingView:
    return staging.stage(d.ctx, d[who], Kind.BASE_IMAGE, ref, "101", credentials=_credentials(host))


def test_a_released_image_is_staged_once_and_the_point_serves_it_whole(
    district: District, point_host: SSHHost, point: PointServer, tmp_path: Path
) -> None:
    data = random.Random(1).randbytes(3 * MIB) + bytes(MIB)
    ref = _released_base(district, tmp_path, "2026.1", data)
    add_point(district, point_host, point)
    seen: list[int] = []

    first = staging.stage(
        district.ctx,
        district["btc.lincoln"],
        Kind.BASE_IMAGE,
        ref,
        "101",
        credentials=_credentials(point_host),
        progress=lambda v: seen.append(v.chunks_sent),
    )

    assert first.state == "staged" and first.chunks_sent == first.chunks_total > 10
    assert seen[-1] == first.chunks_sent  # progress ends with the whole count
    on_point = ImageStore(point.root)
    (name,) = on_point.names()
    out = tmp_path / "rebuilt.img"
    extract(on_point.index(name), on_point.chunks, out)
    assert out.read_bytes() == data
    signed = (point.root / "manifests" / f"{name}.json").read_bytes()
    got = signing.verify(
        signed,
        image_store.public_keys(district.ctx),
        kind="base_image",
        scope="district",
        name="pc-elementary",
        today=district.today,
    )
    signing.check_index(got, (point.root / "indexes" / f"{name}.caibx").read_bytes())
    stored = sum(p.stat().st_size for p in (point.root / "chunks").rglob("*.cacnk"))
    assert stored <= first.bytes_sent <= stored + 64 * 1024  # chunks, then index and manifest

    again = _stage(district, point_host, ref)

    assert again.chunks_total == again.chunks_sent == 0
    assert again.bytes_sent < 64 * 1024


def test_gc_lets_go_of_a_staged_image_once_retired_and_its_stagings_with_it(
    district: District,
    point_host: SSHHost,
    point: PointServer,
    clock: FixedClock,
    tmp_path: Path,
) -> None:
    ref = _released_base(district, tmp_path, "2026.1", random.Random(3).randbytes(2 * MIB))
    add_point(district, point_host, point)
    assert _stage(district, point_host, ref).state == "staged"
    chain.deprecate(district.ctx, district["it.ana"], Kind.BASE_IMAGE, ref, "superseded")
    _retired_past_the_window(district, clock, ref)

    done = image_store.gc(district.ctx, district["it.ana"])

    assert done.reclaimed == [ref] and done.removed_chunks > 0
    assert staging.stagings(district.ctx, district["it.ana"], "101") == []
    with transaction(district.ctx.engine) as session:
        assert session.exec(select(ImageManifest)).all() == []
    with pytest.raises(Conflict):
        _stage(district, point_host, ref)


_NO_FIT_PYTHON = pytest.mark.parametrize(
    "lacking",
    [
        pytest.param(("RECEIVER_PYTHON", "python3-not-on-this-host"), id="no-python3"),
        # The host's python3 is older than the receiver needs.
        pytest.param(("RECEIVER_MIN_VERSION", (99, 0)), id="python3-too-old"),
    ],
)


@_NO_FIT_PYTHON
def test_a_point_host_without_a_fit_python_gets_each_chunk_over_sftp_and_serves_it_whole(
    district: District,
    point_host: SSHHost,
    point: PointServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    lacking: tuple[str, object],
) -> None:
    data = random.Random(7).randbytes(3 * MIB)
    ref = _released_base(district, tmp_path, "2026.1", data)
    add_point(district, point_host, point)
    monkeypatch.setattr(points, *lacking)

    with caplog.at_level(logging.INFO, logger="orchestrator.points"):
        done = _stage(district, point_host, ref)

    assert "sending each chunk over SFTP" in caplog.text
    assert done.state == "staged" and done.chunks_sent == done.chunks_total > 10
    assert _rebuilt_from(point, tmp_path) == data


def test_prune_keeps_a_kept_images_chunks_even_when_the_store_lost_its_index(
    district: District, point_host: SSHHost, point: PointServer, tmp_path: Path
) -> None:
    ref = _released_base(district, tmp_path, "2026.1", random.Random(12).randbytes(2 * MIB))
    add_point(district, point_host, point)
    _stage(district, point_host, ref)
    with ImageStore(district.ctx.image_store_dir) as store:
        (name,) = store.names()
        store.index_path(name).unlink()  # a damaged store: `store verify` would say so

    done = staging.prune(
        district.ctx, district["it.ana"], "101", credentials=_credentials(point_host)
    )

    assert (done.kept_images, done.strays) == (1, 0)
    assert ImageStore(point.root).verify().ok


@_NO_FIT_PYTHON
def test_a_point_host_without_a_fit_python_is_still_pruned_of_let_go_images(
    district: District,
    point_host: SSHHost,
    point: PointServer,
    clock: FixedClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    lacking: tuple[str, object],
) -> None:
    first, second, _ = _two_versions(district, tmp_path, seed=11, changed=300_000)
    add_point(district, point_host, point)
    monkeypatch.setattr(points, *lacking)
    _stage(district, point_host, first)
    _stage(district, point_host, second)
    _retired_past_the_window(district, clock, first)
    image_store.gc(district.ctx, district["it.ana"])

    with caplog.at_level(logging.INFO, logger="orchestrator.staging"):
        done = staging.prune(
            district.ctx, district["it.ana"], "101", credentials=_credentials(point_host)
        )

    assert "pruned without a sweep" in caplog.text
    assert (len(done.removed_images), done.kept_images, done.strays) == (1, 1, 0)
    assert done.removed_chunks > 0 and ImageStore(point.root).verify().ok


def test_a_new_version_sends_only_the_chunks_the_point_lacks(
    district: District, point_host: SSHHost, point: PointServer, tmp_path: Path
) -> None:
    first, second, _ = _two_versions(district, tmp_path, seed=2, changed=200_000)
    add_point(district, point_host, point)
    whole = _stage(district, point_host, first)

    delta = _stage(district, point_host, second)

    assert 0 < delta.chunks_sent < whole.chunks_sent / 4
    assert delta.bytes_sent < whole.bytes_sent / 4


def test_prune_takes_a_let_go_image_off_the_point_and_keeps_what_the_next_version_shares(
    district: District,
    point_host: SSHHost,
    point: PointServer,
    clock: FixedClock,
    tmp_path: Path,
) -> None:
    first, second, new = _two_versions(district, tmp_path, seed=4, changed=300_000)
    add_point(district, point_host, point)
    _stage(district, point_host, first)
    _stage(district, point_host, second)
    on_point = ImageStore(point.root)
    gone, stays = sorted(on_point.names())  # ids: 2026.1 was registered first
    only_gone = on_point.index(gone).unique_ids() - on_point.index(stays).unique_ids()
    it = district["it.ana"]
    credentials = _credentials(point_host)
    assert staging.prune(district.ctx, it, "101", credentials=credentials).removed_images == []
    _retired_past_the_window(district, clock, first)  # 2026.2 deprecated it
    assert image_store.gc(district.ctx, it).reclaimed == [first]

    done = staging.prune(district.ctx, it, "101", credentials=credentials)

    assert (done.removed_images, done.kept_images) == ([gone], 1)
    assert done.removed_chunks == len(only_gone) > 0
    assert on_point.names() == [stays]
    assert not (point.root / "manifests" / f"{gone}.json").exists()
    assert on_point.verify().ok  # every chunk the kept image needs is still there
    rebuilt = tmp_path / "rebuilt.img"
    extract(on_point.index(stays), on_point.chunks, rebuilt)
    assert rebuilt.read_bytes() == new
    again = staging.prune(district.ctx, it, "101", credentials=credentials)
    assert (again.removed_images, again.removed_chunks) == ([], 0)
    (entry,) = [
        e for e in audit.entries(district.ctx, it) if e.action == "distribution_point.prune"
    ]
    assert entry.building == "101"
    with pytest.raises(Refused):
        staging.prune(district.ctx, district["btc.lincoln"], "101", credentials=credentials)
    with pytest.raises(NotFound, match="no distribution point"):
        staging.prune(district.ctx, it, "102", credentials=credentials)
    with pytest.raises(InvalidInput, match="SSH key"):
        staging.prune(district.ctx, it, "101", credentials=Credentials(ssh_user="x"))


def test_housekeeping_lets_go_prunes_each_point_and_names_the_one_it_could_not_reach(
    district: District,
    point_host: SSHHost,
    point: PointServer,
    clock: FixedClock,
    tmp_path: Path,
) -> None:
    first, second, _ = _two_versions(district, tmp_path, seed=8, changed=300_000)
    add_point(district, point_host, point)
    add_point(
        district,
        point_host,
        point,
        building="102",
        ssh_port=_closed_port(),
        host_key=point_host.host_key,
    )
    _stage(district, point_host, first)
    _stage(district, point_host, second)
    _retired_past_the_window(district, clock, first)

    done = staging.housekeeping(district.ctx, SYSTEM_ACTOR, credentials=_credentials(point_host))

    assert done.gc.reclaimed == [first]
    ((pruned),) = done.pruned
    assert (pruned.building, len(pruned.removed_images), pruned.kept_images) == ("101", 1, 1)
    assert list(done.failed) == ["102"] and "refused" in done.failed["102"]
    assert len(ImageStore(point.root).names()) == 1
    with pytest.raises(Refused):
        staging.housekeeping(
            district.ctx, district["btc.lincoln"], credentials=_credentials(point_host)
        )


def test_the_service_puts_housekeeping_off_while_the_store_is_busy_then_does_it(
    district: District, clock: FixedClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="orchestrator.scheduler")
    first, _, _ = _two_versions(district, tmp_path, seed=9, changed=100_000)
    _retired_past_the_window(district, clock, first)
    settings = Settings(data_dir=tmp_path, ssh_key_file=None, store_housekeeping_time="04:15")
    scheduler = service.build_scheduler(district.ctx, settings)
    assert "hour='4', minute='15'" in str(scheduler.get_job(service.HOUSEKEEPING_JOB).trigger)
    scheduler.start(paused=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_STORE, str(district.ctx.image_store_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"

        assert service.store_housekeeping(district.ctx, settings, scheduler) is None

        retry = scheduler.get_job(service.HOUSEKEEPING_RETRY_JOB)
        assert retry.next_run_time == clock.now + service.HOUSEKEEPING_RETRY
        assert first in _stored_refs(district)  # nothing let go meanwhile
    finally:
        holder.kill()
        holder.wait()
        scheduler.shutdown(wait=False)

    assert "store housekeeping put off 30 minutes: the image store" in caplog.text

    done = service.store_housekeeping(district.ctx, settings)

    assert done is not None and done.gc.reclaimed == [first] and done.pruned == []
    assert f"store housekeeping: let go of {first};" in caplog.text
    assert first not in _stored_refs(district)
    off = service.build_scheduler(
        district.ctx, settings.model_copy(update={"store_housekeeping_time": "off"})
    )
    assert off.get_job(service.HOUSEKEEPING_JOB) is None


def _stored_refs(d: District) -> list[str]:
    return [e.ref for e in image_store.stats(d.ctx, d["it.ana"]).images]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_only_released_images_go_to_a_point_and_only_for_the_buildings_people(
    district: District, point_host: SSHHost, point: PointServer, tmp_path: Path
) -> None:
    path = tmp_path / "draft.img"
    path.write_bytes(random.Random(3).randbytes(MIB))
    draft = district.base(version="2026.3", artifact=str(path), to=State.APPROVED)
    image_store.import_artifact(district.ctx, district["it.ana"], Kind.BASE_IMAGE, draft, path)
    with pytest.raises(NotFound, match="has no distribution point"):
        _stage(district, point_host, draft)
    add_point(district, point_host, point)

    with pytest.raises(Conflict, match="only images the chain released are staged"):
        _stage(district, point_host, draft)
    with pytest.raises(NotFound):
        _stage(district, point_host, draft, who="btc.garcia")
    with pytest.raises(Refused):
        _stage(district, point_host, draft, who="principal.lincoln")
    assert not (point.root / "chunks").exists()
    assert staging.stagings(district.ctx, district["it.ana"], "101") == []


def _kill_receiver(root: Path) -> None:
    """SIGKILL the point host's receiver writing into ``root`` (the host is loopback)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with suppress(OSError):
            args = cmdline.read_bytes().split(b"\0")
            if b"-c" in args and str(root).encode() in args:
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
                return
    raise AssertionError("no receiver running on the point")


class _ReceiverDiesAfter:
    """A real session to the point whose receiver is killed once ``chunks`` chunks
    have gone into its stream and ``placed`` says yes."""

    def __init__(
        self, session: ssh.PinnedSession, chunks: int, placed: Callable[[], bool], root: Path
    ) -> None:
        self._session, self._chunks, self._placed, self._root = session, chunks, placed, root

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    def __enter__(self) -> _ReceiverDiesAfter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._session.close()

    def feed(self, command: str, pieces: Iterable[bytes], **kw: Any) -> ssh.CommandResult:
        def cut() -> Iterator[bytes]:
            for n, piece in enumerate(pieces):
                if n == self._chunks:
                    deadline = time.monotonic() + 30
                    while not self._placed():
                        assert time.monotonic() < deadline, "the receiver placed nothing"
                        time.sleep(0.05)
                    _kill_receiver(self._root)
                yield piece

        return self._session.feed(command, cut(), **kw)


def _stage_cut_short(d: District, host: SSHHost, point: PointServer, ref: str) -> None:
    """Stage ``ref`` to building 101, its receiver killed once the first batch is in
    place and 50 more chunks have gone into the stream."""
    batch = point_receiver.BATCH

    def dying(*args: Any, **kw: Any) -> _ReceiverDiesAfter:
        def first_batch_placed() -> bool:
            return len(list(point.root.rglob("*.cacnk"))) >= batch

        return _ReceiverDiesAfter(
            ssh.connect(*args, **kw), batch + 50, first_batch_placed, point.root
        )

    with pytest.raises(RemoteError, match="receiver stopped after"):
        staging.stage(
            d.ctx,
            d["btc.lincoln"],
            Kind.BASE_IMAGE,
            ref,
            "101",
            credentials=_credentials(host),
            connect=dying,  # type: ignore[arg-type]
        )


def test_prune_sweeps_what_a_cut_short_staging_left_once_nothing_names_it(
    district: District,
    point_host: SSHHost,
    point: PointServer,
    clock: FixedClock,
    tmp_path: Path,
) -> None:
    first, second, _ = _two_versions(district, tmp_path, seed=10, changed=2 * MIB, size=24 * MIB)
    add_point(district, point_host, point)
    _stage_cut_short(district, point_host, point, first)
    it, credentials = district["it.ana"], _credentials(point_host)
    arrived = {bytes.fromhex(p.stem) for p in point.root.rglob("*.cacnk")}
    left = list(point.root.rglob(".tmp-*"))  # the killed receiver's unfinished batch

    still_wanted = staging.prune(district.ctx, it, "101", credentials=credentials)

    assert (still_wanted.strays, still_wanted.temporaries) == (0, len(left)) and left
    assert {bytes.fromhex(p.stem) for p in point.root.rglob("*.cacnk")} == arrived
    assert not list(point.root.rglob(".tmp-*"))
    _retired_past_the_window(district, clock, first)
    assert image_store.gc(district.ctx, it).reclaimed == [first]
    with ImageStore(district.ctx.image_store_dir) as store:
        shared = arrived & store.index(store.names()[0]).unique_ids()  # 2026.2's
    unknown = point.root / "indexes" / "Not An Image.caibx"
    unknown.parent.mkdir()
    shutil.chown(unknown.parent, user=point_host.username)
    unknown.write_bytes(b"?")

    assert staging.prune(district.ctx, it, "101", credentials=credentials).strays == 0

    unknown.unlink()
    swept = staging.prune(district.ctx, it, "101", credentials=credentials)

    assert swept.removed_images == [] and swept.strays == len(arrived - shared) > 0
    assert {bytes.fromhex(p.stem) for p in point.root.rglob("*.cacnk")} == shared
    assert _stage(district, point_host, second).state == "staged"
    assert ImageStore(point.root).verify().ok


def test_a_staging_whose_receiver_dies_leaves_whole_chunks_and_the_next_sends_the_rest(
    district: District, point_host: SSHHost, point: PointServer, tmp_path: Path
) -> None:
    data = random.Random(6).randbytes(24 * MIB)
    ref = _released_base(district, tmp_path, "2026.1", data)
    add_point(district, point_host, point)
    batch = point_receiver.BATCH

    _stage_cut_short(district, point_host, point, ref)

    (failed,) = staging.stagings(district.ctx, district["it.ana"], "101")
    arrived = list(point.root.rglob("*.cacnk"))
    assert failed.state == "failed" and failed.message
    assert batch <= failed.chunks_sent <= len(arrived) <= batch + 50 < failed.chunks_total
    local = district.ctx.image_store_dir / "chunks"
    for chunk in arrived:  # each whole, as stored
        assert chunk.read_bytes() == (local / chunk.parent.name / chunk.name).read_bytes()
    assert not list(point.root.rglob("*.caibx"))  # the point does not offer the image

    rest = _stage(district, point_host, ref)

    assert rest.state == "staged"
    assert rest.chunks_sent == failed.chunks_total - len(arrived)
    assert _rebuilt_from(point, tmp_path) == data


def test_a_point_that_changed_its_host_key_is_refused_and_the_staging_says_so(
    district: District, point_host: SSHHost, point: PointServer, tmp_path: Path
) -> None:
    ref = _released_base(district, tmp_path, "2026.1", random.Random(4).randbytes(MIB))
    add_point(district, point_host, point)
    restart_with_new_host_key(point_host)

    with pytest.raises(HostKeyChanged):
        _stage(district, point_host, ref)

    (failed,) = staging.stagings(district.ctx, district["it.ana"], "101")
    assert failed.state == "failed" and "host key" in failed.message.lower()
    assert not list((point.root).rglob("*.cacnk"))


def test_only_it_adds_a_point_and_bad_ones_are_refused_naming_the_field(
    district: District, point_host: SSHHost, point: PointServer
) -> None:
    with pytest.raises(Refused, match="manage the image store and its distribution points"):
        staging.add_point(
            district.ctx,
            district["btc.lincoln"],
            PointSpec("101", "127.0.0.1", "u", "/srv/store", "http://127.0.0.1:1"),
        )
    for field, spec in (
        ("root", PointSpec("101", "127.0.0.1", "u", "srv/../etc", "http://127.0.0.1:1")),
        ("url", PointSpec("101", "127.0.0.1", "u", "/srv/store", "ftp://127.0.0.1/")),
        ("bandwidth", PointSpec("101", "127.0.0.1", "u", "/srv", "http://h", bandwidth_kib=-1)),
    ):
        with pytest.raises(InvalidInput) as raised:
            staging.add_point(district.ctx, district["it.ana"], spec)
        assert raised.value.field == field
    with pytest.raises(HostUnreachable, match="cannot be fetched to pin it, so no point was added"):
        add_point(district, point_host, point, ssh_port=_closed_port())
    assert staging.list_points(district.ctx, district["it.ana"]) == []
    add_point(district, point_host, point)
    with pytest.raises(Conflict, match="has a distribution point already"):
        add_point(district, point_host, point)
    (shown,) = staging.list_points(district.ctx, district["principal.lincoln"])
    assert shown.fingerprint.startswith("SHA256:") and shown.url == point.url
    assert staging.list_points(district.ctx, district["btc.garcia"]) == []


def test_the_bandwidth_limit_holds_bytes_to_its_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limit = RateLimit(1000, clock=lambda: now[0], sleep=sleep)
    for _ in range(10):
        limit.take(500)  # 5000 bytes: the first 1000 are the burst

    assert now[0] == pytest.approx(4.0)
    assert RateLimit(0).rate == 0  # no limit: never waits


def test_the_scheduler_stages_a_deployments_image_before_the_window_once_per_building(
    district: District, point_host: SSHHost, point: PointServer, tmp_path: Path
) -> None:
    assets = tmp_path / "assets.csv"
    assets.write_text(
        "Hostname,Building,Room,Platform,Model,Serial,MAC,IP\n"
        + "".join(
            f'cart-{i:02d},101,cart,mac,"MacBookAir10,1",SN30{i},02:00:00:00:03:{i:02x},'
            f"127.0.0.{60 + i}\n"
            for i in range(1, 6)
        )
    )
    inventory.import_clients(district.ctx, district["it.ana"], assets)
    windows.add_window(
        district.ctx, district["btc.lincoln"], building="101", days="mon-thu", start="18:00",
        end="06:00",
    )  # fmt: skip
    scratch = release_scratch(district, "3.29", tmp_path)
    image_store.import_artifact(
        district.ctx,
        district["it.ana"],
        Kind.PACKAGE,
        scratch,
        tmp_path / "Scratch-3.29.pkg",
    )
    add_point(district, point_host, point)
    deployments.create(
        district.ctx,
        district["btc.lincoln"],
        DeploymentSpec(package=scratch, buildings=("101",)),
    )
    credentials = _credentials(point_host)
    # Monday 10:00 in New York; the window opens at 18:00: 8 hours away.
    assert (
        staging.prestage_due(district.ctx, credentials=credentials, lead=timedelta(hours=4)) == []
    )

    (made,) = staging.prestage_due(district.ctx, credentials=credentials, lead=timedelta(hours=12))

    assert (made.building, made.state, made.ref) == ("101", "staged", scratch)
    assert made.chunks_sent == made.chunks_total >= 1  # five clients, one copy
    assert staging.prestage_due(district.ctx, credentials=credentials) == []
    (name,) = ImageStore(point.root).names()
    assert (point.root / "manifests" / f"{name}.json").exists()


def _handed(d: District, host: SSHHost, playbook: str, **ref: str) -> dict[str, Any]:
    """The variables a successful run of ``playbook`` hands its clients (fake runner)."""
    runner = FakePlaybookRunner()
    view = runs.run_playbook(
        d.ctx,
        d["btc.lincoln"],
        playbook,
        building="101",
        credentials=_credentials(host),
        runner=runner,
        **ref,  # type: ignore[arg-type]
    )
    assert view.status == "successful"
    (request,) = runner.requests
    return dict(request.extravars)


def test_a_pc_images_wim_is_staged_from_its_base_and_the_run_hands_clients_the_point(
    district: District, point_host: SSHHost, point: PointServer, tmp_path: Path
) -> None:
    assets = tmp_path / "assets.csv"
    assets.write_text(
        "Hostname,Building,Room,Platform,Model,Serial,MAC,IP\n"
        "lab-01,101,lab,pc,Latitude 3420,SN4001,02:00:00:00:04:01,127.0.0.71\n"
    )
    inventory.import_clients(district.ctx, district["it.ana"], assets)
    windows.add_window(
        district.ctx, district["btc.lincoln"], building="101", days="mon-thu", start="18:00",
        end="06:00",
    )  # fmt: skip
    base = _released_base(district, tmp_path, "2026.1", random.Random(5).randbytes(2 * MIB))
    lab = district.custom(base=base, to=State.PUBLISHED)
    add_point(district, point_host, point)
    deployments.create(
        district.ctx, district["btc.lincoln"], DeploymentSpec(image=lab, buildings=("101",))
    )

    # A customized PC image lays down its base's WIM: that is what the point gets.
    (made,) = staging.prestage_due(
        district.ctx, credentials=_credentials(point_host), lead=timedelta(hours=12)
    )
    assert (made.ref, made.state) == (base, "staged")

    given = _handed(district, point_host, "apply_image", image=lab)

    (name,) = ImageStore(point.root).names()
    assert given["image_pull"] == {
        "point": point.url,
        "image": name,
        "kind": "base_image",
        "scope": "district",
        "name": "pc-elementary",
        "version": "2026.1",
    }
    assert given["image_url"] == ""  # nothing served by the orchestrator for this run
    keys = image_store.public_key_lines(district.ctx)
    assert given["district_keys"].splitlines() == keys and keys


def _stored_scratch_and_a_mac(
    d: District, point_host: SSHHost, point: PointServer, tmp_path: Path
) -> str:
    """Scratch 3.29 released and in the store (``tmp_path/Scratch-3.29.pkg``), building
    101's point added, and one Mac there to install it on; returns its ref."""
    scratch = release_scratch(d, "3.29", tmp_path)
    image_store.import_artifact(
        d.ctx, d["it.ana"], Kind.PACKAGE, scratch, tmp_path / "Scratch-3.29.pkg"
    )
    add_point(d, point_host, point)
    assets = tmp_path / "assets.csv"
    assets.write_text(
        "Hostname,Building,Room,Platform,Model,Serial,MAC,IP\n"
        'cart-01,101,cart,mac,"MacBookAir10,1",SN5001,02:00:00:00:05:01,127.0.0.81\n'
    )
    inventory.import_clients(d.ctx, d["it.ana"], assets)
    return scratch


def test_a_manifest_signed_again_is_pulled_from_the_point_only_once_staged_again(
    district: District, point_host: SSHHost, point: PointServer, tmp_path: Path
) -> None:
    scratch = _stored_scratch_and_a_mac(district, point_host, point, tmp_path)

    def given() -> dict[str, object]:
        return _handed(district, point_host, "install_package", package=scratch)

    unstaged = given()
    assert unstaged["package_pull"] is None and "district_keys" not in unstaged
    assert str(unstaged["package_url"]).startswith("http://127.0.0.1:")  # the orchestrator's
    staging.stage(
        district.ctx, district["btc.lincoln"], Kind.PACKAGE, scratch, "101",
        credentials=_credentials(point_host),
    )  # fmt: skip
    staged = given()
    assert isinstance(staged["package_pull"], dict) and staged["package_url"] == ""
    # The manifest is signed anew (a sunset moved): the point's copy is the old one.
    with transaction(district.ctx.engine) as s:
        m = s.exec(select(ImageManifest)).one()
        assert m.signed_at is not None
        m.signed_at = district.ctx.now() + timedelta(minutes=1)
        s.add(m)
    assert given()["package_pull"] is None


def test_stored_bytes_that_are_not_the_entrys_artifact_are_never_pulled(
    district: District, point_host: SSHHost, point: PointServer, tmp_path: Path
) -> None:
    scratch = _stored_scratch_and_a_mac(district, point_host, point, tmp_path)
    staging.stage(
        district.ctx, district["btc.lincoln"], Kind.PACKAGE, scratch, "101",
        credentials=_credentials(point_host),
    )  # fmt: skip
    assert isinstance(
        _handed(district, point_host, "install_package", package=scratch)["package_pull"], dict
    )
    # As for an index imported before the file's digest was kept, or of a file replaced since.
    with transaction(district.ctx.engine) as s:
        m = s.exec(select(ImageManifest)).one()
        m.artifact_sha256 = "0" * 64
        s.add(m)

    given = _handed(district, point_host, "install_package", package=scratch)

    assert given["package_pull"] is None
    assert str(given["package_url"]).startswith("http://127.0.0.1:")  # the approved file, hashed


def test_staging_a_pc_image_that_carries_nothing_of_its_own_names_its_base(
    district: District, point_host: SSHHost, point: PointServer, tmp_path: Path
) -> None:
    base = _released_base(district, tmp_path, "2026.1", random.Random(6).randbytes(MIB))
    lab = district.custom(base=base, to=State.PUBLISHED)
    add_point(district, point_host, point)

    with pytest.raises(Conflict, match=f"lays down what it carries: stage {base} "):
        staging.stage(
            district.ctx, district["btc.lincoln"], Kind.CUSTOM_IMAGE, lab, "101",
            credentials=_credentials(point_host),
        )  # fmt: skip
    assert staging.stagings(district.ctx, district["btc.lincoln"], "101") == []


def test_an_artifact_the_clients_pull_from_the_point_is_not_read_again_before_the_run(
    district: District,
    point_host: SSHHost,
    point: PointServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scratch = _stored_scratch_and_a_mac(district, point_host, point, tmp_path)
    installer = tmp_path / "Scratch-3.29.pkg"
    hashed: list[Path] = []
    real = delivery.sha256_file

    def counting(path: Path) -> str:
        hashed.append(Path(path))
        return real(path)

    monkeypatch.setattr(delivery, "sha256_file", counting)
    served = _handed(district, point_host, "install_package", package=scratch)
    assert served["package_pull"] is None and hashed == [installer]  # served: checked first
    staging.stage(
        district.ctx, district["btc.lincoln"], Kind.PACKAGE, scratch, "101",
        credentials=_credentials(point_host),
    )  # fmt: skip
    hashed.clear()

    pulled = _handed(district, point_host, "install_package", package=scratch)

    assert isinstance(pulled["package_pull"], dict)
    assert hashed == []  # the client checks the signed manifest's bytes; ours are not read


def test_a_deployment_says_for_each_building_whether_its_point_holds_what_it_delivers(
    district: District, point_host: SSHHost, point: PointServer, tmp_path: Path
) -> None:
    add_point(district, point_host, point)  # 101's; 102 has none
    scratch, dep = scratch_deployment(district, tmp_path, ("101", "102"))

    def standing(username: str) -> dict[str, tuple[str, str]]:
        return {
            s.building: (s.ref, s.state)
            for s in staging.deployment_stagings(district.ctx, district[username], dep)
        }

    assert standing("it.ana") == {"101": (scratch, "waiting"), "102": (scratch, "no point")}
    credentials = _credentials(point_host)
    staging.prestage_due(district.ctx, credentials=credentials, lead=timedelta(hours=12))

    (held,) = [
        s for s in staging.deployment_stagings(district.ctx, district["it.ana"], dep)
        if s.building == "101"
    ]  # fmt: skip
    assert held.state == "staged" and held.chunks_sent == held.chunks_total >= 1
    assert "pull it from the point" in held.message and held.at is not None
    # Each building's staff see their own building's line only.
    assert standing("btc.lincoln") == {"101": (scratch, "staged")}
    assert standing("btc.garcia") == {"102": (scratch, "no point")}
    with pytest.raises(NotFound):
        staging.deployment_stagings(district.ctx, district["sectec.kim"], dep)


def test_a_staging_that_failed_is_shown_with_its_reason_on_the_deployment(
    district: District, point_host: SSHHost, point: PointServer, tmp_path: Path
) -> None:
    # A store folder nobody can create on the point's host: the staging fails.
    add_point(district, point_host, point, root="/proc/orchestrator-store")
    _, dep = scratch_deployment(district, tmp_path, ("101",))

    staging.prestage_due(
        district.ctx, credentials=_credentials(point_host), lead=timedelta(hours=12)
    )

    (held,) = staging.deployment_stagings(district.ctx, district["btc.lincoln"], dep)
    assert held.state == "failed" and held.at is not None
    assert held.message.endswith("tried again at the scheduler's next check")
    assert "no folder /proc/orchestrator-store on the point's host" in held.message


OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def _staged_scratch(d: District, host: SSHHost, server: PointServer, folder: Path) -> int:
    """101's point, Scratch deployed to it and staged there; returns the deployment."""
    add_point(d, host, server)
    scratch, dep = scratch_deployment(d, folder, ("101",))
    staging.stage(d.ctx, d["it.ana"], Kind.PACKAGE, scratch, "101", credentials=_credentials(host))
    return dep


def _standing(d: District, dep: int) -> str:
    (held,) = staging.deployment_stagings(d.ctx, d["it.ana"], dep)
    return held.state


def test_a_points_limit_and_address_for_clients_change_and_what_it_holds_stays_staged(
    district: District, point_host: SSHHost, point: PointServer, tmp_path: Path
) -> None:
    dep = _staged_scratch(district, point_host, point, tmp_path)
    pinned = staging.point_of(district.ctx, district["it.ana"], "101")
    assert pinned is not None

    changed = staging.change_point(
        district.ctx,
        district["it.ana"],
        "101",
        staging.PointChange(reason="new link", bandwidth_kib=512, url=point.url + "/"),
    )

    assert (changed.bandwidth_kib, changed.fingerprint) == (512, pinned.fingerprint)
    assert _standing(district, dep) == "staged"  # the same store, served as before
    (entry,) = [
        e for e in audit.entries(district.ctx, district["it.ana"])
        if e.action == "distribution_point.change"
    ]  # fmt: skip
    assert entry.reason == "new link"


def test_a_point_given_another_folder_or_host_is_staged_anew_and_its_new_key_pinned(
    district: District, point_host: SSHHost, point: PointServer, tmp_path: Path
) -> None:
    dep = _staged_scratch(district, point_host, point, tmp_path)
    it = district["it.ana"]

    moved = staging.change_point(
        district.ctx, it, "101", staging.PointChange(reason="bigger disk", root="/srv/images2")
    )
    assert moved.root == "/srv/images2"
    assert _standing(district, dep) == "waiting"  # the new folder holds nothing yet

    repinned = staging.change_point(
        district.ctx,
        it,
        "101",
        staging.PointChange(reason="host reinstalled", repin=True),
        fetch_key=lambda *_a, **_k: OTHER_KEY,
    )
    assert repinned.fingerprint == ssh.fingerprint(OTHER_KEY) != moved.fingerprint

    with pytest.raises(HostUnreachable, match="so no point was changed"):
        staging.change_point(
            district.ctx,
            it,
            "101",
            staging.PointChange(reason="new host", address="127.0.0.1", ssh_port=_closed_port()),
        )
    assert staging.point_of(district.ctx, it, "101") == repinned


def test_bad_point_changes_are_refused_and_change_nothing(
    district: District, point_host: SSHHost, point: PointServer, tmp_path: Path
) -> None:
    dep = _staged_scratch(district, point_host, point, tmp_path)
    it = district["it.ana"]
    before = staging.point_of(district.ctx, it, "101")

    def change(actor: str, building: str = "101", **fields: Any) -> None:
        staging.change_point(district.ctx, district[actor], building, staging.PointChange(**fields))

    with pytest.raises(Refused, match="manage the image store"):
        change("btc.lincoln", reason="mine", bandwidth_kib=1)
    with pytest.raises(InvalidInput, match="say why") as no_reason:
        change("it.ana", reason=" ", bandwidth_kib=1)
    assert no_reason.value.field == "reason"
    with pytest.raises(InvalidInput, match="nothing to change"):
        change("it.ana", reason="tidy", bandwidth_kib=before.bandwidth_kib if before else 0)
    for field, value in (("root", "srv/../etc"), ("url", "ftp://x/"), ("address", "a b")):
        with pytest.raises(InvalidInput) as bad:
            change("it.ana", reason="typo", **{field: value})
        assert bad.value.field == field
    with pytest.raises(NotFound, match="has no distribution point"):
        change("it.ana", building="102", reason="x", bandwidth_kib=1)
    with transaction(district.ctx.engine) as session:
        row = session.exec(select(ImageStaging)).one()
        row.state = "running"  # as while the scheduler stages to it
        session.add(row)
    with pytest.raises(Conflict, match="is running: wait for it to end"):
        change("it.ana", reason="now", root="/srv/other")
    with pytest.raises(Conflict, match="is running"):
        staging.remove_point(district.ctx, it, "101", reason="now")

    assert staging.point_of(district.ctx, it, "101") == before
    assert _standing(district, dep) == "running"


def test_a_removed_point_forgets_its_stagings_and_the_computers_fetch_from_the_orchestrator(
    district: District, point_host: SSHHost, point: PointServer, tmp_path: Path
) -> None:
    dep = _staged_scratch(district, point_host, point, tmp_path)
    it = district["it.ana"]
    with pytest.raises(Refused):
        staging.remove_point(district.ctx, district["btc.lincoln"], "101", reason="mine")

    assert staging.remove_point(district.ctx, it, "101", reason="building closed") == 1

    assert staging.list_points(district.ctx, it) == []
    assert _standing(district, dep) == "no point"
    with pytest.raises(NotFound, match="has no distribution point"):
        staging.remove_point(district.ctx, it, "101", reason="again")
    add_point(district, point_host, point)  # and it can be given one again
