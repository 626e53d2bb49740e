"""The image store side by side with Debian's casync and rsync, on generated image pairs.

Generates its data under ``--workdir`` (removed afterwards unless ``--keep``):

* **ext4**: a copy of system folders (/usr/share, then /usr/lib, up to
  ``--ext4-mib`` MiB of files) made into a file-system image with
  ``mkfs.ext4 -d`` (no loop device, no mount), and a derivative: the same
  tree with about 3% of its bytes rewritten (a quarter of each chosen file,
  random bytes) and about 2% added (files from /usr/bin), made with the same
  ``mkfs.ext4`` options (fixed UUID, hash seed and time);
* **wim**: ``wimcapture`` (LZX, the default) of the /usr/share copy, and a
  customized capture of the same tree plus about 5% of additions;
* **20 GiB**: the ext4 base image, two random regions and holes up to
  ``--big-gib`` GiB, written with seeks (only the data takes disk space).

On each pair, in one run:

1. indexing throughput: ``ImageStore.make_index`` and ``ImageStore.import_file``
   against ``casync make`` (each into a fresh store, the derivative into the
   store that holds the base);
2. bytes to fetch to build the derivative with the base as seed: the stored
   (compressed) bytes of the chunks the derivative needs that the base lacks,
   ours and casync's, and ``rsync -z --no-whole-file --stats`` "Total bytes
   sent" updating a copy of the base over a remote-shell transport (a local
   ``sh``);
3. rebuilding the derivative over HTTP on 127.0.0.1 with the base as seed:
   ``fetch.pull`` from the project's distribution point (``PointServer``,
   the derivative staged there), against ``casync extract`` from its store
   served by ``python -m http.server``;
4. origin bytes per building: ``services.staging.stage`` of the released
   derivative to a point that already holds the base's chunks (a real sshd on
   loopback as the point's host, its chunks streamed to the point's receiver);
   staging is once per building whatever the number of clients, so that one
   staging's bytes are the figure for N = 1, 10 and 30 (without the point module, the missing
   unique bytes computed from the store, labelled so);
5. peak memory (the child's maximum RSS) of importing and extracting the
   20 GiB image, each in a process of its own.

Usage (as root, for the sshd test host; with casync, rsync, wimtools, e2fsprogs
and openssh-server installed)::

    .venv/bin/python -m benchmarks.image_store [--workdir /tmp/imgbench] [--keep] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import random
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.db.session import make_engine
from orchestrator.imagestore import (
    ChunkStore,
    ImageStore,
    Index,
    Seed,
    extract,
    missing_chunks,
    read_index,
)
from orchestrator.imagestore.chunker import zero_chunk_id

MiB = 1024 * 1024
GiB = 1024 * MiB
CASYNC = "/usr/bin/casync"
RSYNC = "/usr/bin/rsync"
# mkfs.ext4 made reproducible: the same options for the base and the derivative.
FS_UUID = "6d1c2e4a-1b7f-4c2e-9a55-2f1e0c3b7a10"
FS_TIME = "1767225600"  # 2026-01-01
# rsync's remote shell: drop the host name and run the server command locally.
LOCAL_SHELL = "sh -c 'shift; exec \"$@\"' sh"


# -- running tools -----------------------------------------------------------


@dataclass
class Run:
    seconds: float
    max_rss: int
    stdout: str
    stderr: str


def run(cmd: list[str], *, env: dict[str, str] | None = None) -> Run:
    """Run a command to its end; its wall time and maximum RSS, output kept.

    The RSS is measured by ``/usr/bin/time`` (its own small child): a process
    this one started directly would inherit this process's peak in its
    ``ru_maxrss`` across the fork and exec.
    """
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r") as rss,
    ):
        started = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", rss.name, *cmd], stdout=out, stderr=err, env=env
        )
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        result = Run(
            seconds,
            int((rss.read().split() or ["0"])[-1]) * 1024,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {result.stderr[-2000:]}")
    return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def http_server(directory: Path) -> Iterator[str]:
    """``python -m http.server`` serving a folder on 127.0.0.1; yields its URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "-d",
            str(directory),
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("http.server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def same_file(a: Path, b: Path) -> bool:
    return subprocess.run(["cmp", "-s", str(a), str(b)]).returncode == 0


# -- generating the data -------------------------------------------------------


def copy_tree(source: Path, dest: Path, cap: int) -> tuple[int, int]:
    """Copy regular files and symlinks of ``source`` (sorted walk) until ``cap`` bytes."""
    total = files = 0
    for root, dirs, names in os.walk(source):
        dirs.sort()
        target = dest / Path(root).relative_to(source)
        target.mkdir(parents=True, exist_ok=True)
        for name in sorted(names):
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(path), target / name)
                elif stat.S_ISREG(st.st_mode) and total + st.st_size <= cap:
                    shutil.copyfile(path, target / name)
                    total += st.st_size
                    files += 1
            except OSError:
                continue
            if total >= cap - 4096:
                return total, files
    return total, files


def regular_files(tree: Path) -> list[tuple[Path, int]]:
    found = []
    for root, dirs, names in os.walk(tree):
        dirs.sort()
        for name in sorted(names):
            path = Path(root, name)
            st = path.lstat()
            if stat.S_ISREG(st.st_mode):
                found.append((path, st.st_size))
    return found


def derive_tree(base: Path, dest: Path, *, change: float, add: float, seed: int) -> dict[str, int]:
    """A hard-linked copy of ``base`` with files rewritten (never through a link) and added."""
    subprocess.run(["cp", "-al", str(base), str(dest)], check=True)
    rng = random.Random(seed)
    files = regular_files(dest)
    total = sum(size for _, size in files)
    changed = changed_files = 0
    for path, size in rng.sample(files, len(files)):
        if changed >= change * total:
            break
        if size < 64:
            continue
        data = bytearray(path.read_bytes())
        span = max(64, size // 4)
        at = rng.randrange(0, size - span + 1)
        data[at : at + span] = rng.randbytes(span)
        path.unlink()  # a hard link to the base's file: replace it, never write through
        path.write_bytes(data)
        changed += span
        changed_files += 1
    added, added_files = copy_tree(Path("/usr/bin"), dest / "added", int(add * total))
    return {
        "base_bytes": total,
        "changed_bytes": changed,
        "changed_files": changed_files,
        "added_bytes": added,
        "added_files": added_files,
    }


def mkfs(tree: Path, image: Path, size: int) -> None:
    env = dict(os.environ, E2FSPROGS_FAKE_TIME=FS_TIME)
    run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-b",
            "4096",
            "-U",
            FS_UUID,
            "-E",
            f"hash_seed={FS_UUID},root_owner=0:0",
            "-d",
            str(tree),
            str(image),
            f"{size // 1024}k",
        ],
        env=env,
    )


def wimcapture(tree: Path, wim: Path, name: str) -> None:
    run(["wimcapture", str(tree), str(wim), name])


def sparse_copy_into(src: Path, dst_fd: int, at: int) -> int:
    """Copy ``src``'s data regions (SEEK_DATA/SEEK_HOLE) to ``dst_fd`` at offset ``at``."""
    copied = 0
    fd = os.open(src, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                pos = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, pos, os.SEEK_HOLE)
            while pos < end:
                piece = os.pread(fd, min(8 * MiB, end - pos), pos)
                os.pwrite(dst_fd, piece, at + pos)
                pos += len(piece)
                copied += len(piece)
    finally:
        os.close(fd)
    return copied


def big_image(base: Path, path: Path, size: int, *, random_mib: int, seed: int) -> int:
    """The base image at 0, ``random_mib`` MiB of random bytes at 30% and 60%, holes elsewhere."""
    rng = random.Random(seed)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        written = sparse_copy_into(base, fd, 0)
        for start in (size * 3 // 10, size * 6 // 10):
            for piece in range(0, random_mib * MiB, 8 * MiB):
                os.pwrite(fd, rng.randbytes(8 * MiB), start + piece)
                written += 8 * MiB
        os.fsync(fd)
    finally:
        os.close(fd)
    return written


def disk_bytes(path: Path) -> int:
    return path.stat().st_blocks * 512


# -- measuring -------------------------------------------------------------------


@dataclass
class Pair:
    label: str
    base: Path
    deriv: Path
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Figures:
    label: str
    base_size: int
    deriv_size: int
    values: dict[str, Any] = field(default_factory=dict)


def _mibps(size: int, seconds: float) -> float:
    return size / MiB / seconds


def stored_bytes(store: ChunkStore, ids: set[bytes]) -> int:
    return sum(store.stored_size(i) or 0 for i in ids)


def logical_bytes(index: Index, ids: set[bytes]) -> int:
    sizes: dict[bytes, int] = {}
    for _start, length, chunk_id in index.chunks():
        if chunk_id in ids:
            sizes.setdefault(chunk_id, length)
    return sum(sizes.values())


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def measure_pair(pair: Pair, work: Path) -> Figures:
    fig = Figures(pair.label, pair.base.stat().st_size, pair.deriv.stat().st_size)
    v = fig.values
    ours_root = work / f"ours-{pair.label}"
    cas_store = work / f"casync-{pair.label}"
    cas_base = work / f"{pair.label}-base.caibx"
    cas_deriv = work / f"{pair.label}-deriv.caibx"
    log = f"[{pair.label}]"

    # 1. Indexing, alternating ours and casync's.
    with ImageStore(ours_root) as store:
        started = time.perf_counter()
        store.make_index(pair.base)
        v["ours_make_index_s"] = time.perf_counter() - started
        print(f"{log} make_index base {v['ours_make_index_s']:.1f} s", file=sys.stderr)
        r = run([CASYNC, "make", f"--store={cas_store}", str(cas_base), str(pair.base)])
        v["casync_make_base_s"], v["casync_make_rss"] = r.seconds, r.max_rss
        print(f"{log} casync make base {r.seconds:.1f} s", file=sys.stderr)
        started = time.perf_counter()
        rep_b = store.import_file("base", pair.base)
        v["ours_import_base_s"] = time.perf_counter() - started
        print(f"{log} import base {v['ours_import_base_s']:.1f} s", file=sys.stderr)
        r = run([CASYNC, "make", f"--store={cas_store}", str(cas_deriv), str(pair.deriv)])
        v["casync_make_deriv_s"] = r.seconds
        v["casync_make_rss"] = max(v["casync_make_rss"], r.max_rss)
        print(f"{log} casync make deriv {r.seconds:.1f} s", file=sys.stderr)
        started = time.perf_counter()
        rep_d = store.import_file("deriv", pair.deriv)
        v["ours_import_deriv_s"] = time.perf_counter() - started
        print(f"{log} import deriv {v['ours_import_deriv_s']:.1f} s", file=sys.stderr)
        v["ours_base_chunks"], v["ours_deriv_chunks"] = rep_b.chunks, rep_d.chunks
        v["ours_base_stored"] = store.stats(store.index("base")).stored_bytes

        # 2. What building the derivative from the base fetches.
        idx_b, idx_d = store.index("base"), store.index("deriv")
        ours_missing = missing_chunks(idx_d, Seed(pair.base, index=idx_b))
        v["ours_missing_chunks"] = len(ours_missing)
        v["ours_missing_logical"] = logical_bytes(idx_d, ours_missing)
        v["ours_fetch_bytes"] = stored_bytes(store.chunks, ours_missing)
    c_b, c_d = read_index(cas_base), read_index(cas_deriv)
    zero = zero_chunk_id(c_d.digest, c_d.sizes.max)
    cas_missing = c_d.unique_ids() - c_b.unique_ids() - {zero}
    cas_chunks = ChunkStore(cas_store)
    v["casync_base_chunks"], v["casync_deriv_chunks"] = len(c_b), len(c_d)
    v["casync_base_stored"] = stored_bytes(cas_chunks, c_b.unique_ids())
    v["casync_missing_chunks"] = len(cas_missing)
    v["casync_missing_logical"] = logical_bytes(c_d, cas_missing)
    v["casync_fetch_bytes"] = stored_bytes(cas_chunks, cas_missing)

    target = work / f"rsync-{pair.label}.img"
    shutil.copyfile(pair.base, target)
    r = run(
        [
            RSYNC,
            "-z",
            "--no-whole-file",
            "--stats",
            "--debug=nstr",
            "-e",
            LOCAL_SHELL,
            str(pair.deriv),
            f"localhost:{target}",
        ]
    )
    sent = re.search(r"Total bytes sent: ([\d,.]+)", r.stdout)
    if sent is None:
        raise RuntimeError(f"rsync --stats printed no 'Total bytes sent': {r.stdout}")
    v["rsync_sent_bytes"] = int(re.sub(r"[,.]", "", sent.group(1)))
    v["rsync_s"] = r.seconds
    found = re.search(r"negotiated compress: (.+)", r.stdout + r.stderr)
    v["rsync_compress"] = found.group(1).strip() if found else "?"
    v["rsync_ok"] = same_file(target, pair.deriv)
    target.unlink()
    print(f"{log} rsync {r.seconds:.1f} s, sent {v['rsync_sent_bytes']}", file=sys.stderr)

    # The same extraction from the local store, for reference.
    out = work / f"ours-out-{pair.label}.img"
    with ImageStore(ours_root) as store:
        started = time.perf_counter()
        rep = extract(idx_d, store.chunks, out, seed=Seed(pair.base))
        v["ours_local_extract_s"] = time.perf_counter() - started
        v["ours_local_from_source"] = rep.bytes_from_source
    v["ours_local_ok"] = same_file(out, pair.deriv)
    out.unlink()
    return fig


def casync_http(pair: Pair, work: Path, v: dict[str, Any]) -> None:
    """``casync extract`` from its store served by ``python -m http.server``, base as seed."""
    cas_store = work / f"casync-{pair.label}"
    out = work / f"casync-out-{pair.label}.img"
    with http_server(cas_store) as url:
        r = run(
            [CASYNC, "extract", f"--store={url}", f"--seed={pair.base}",
             str(work / f"{pair.label}-deriv.caibx"), str(out)]
        )  # fmt: skip
    v["casync_http_s"], v["casync_extract_rss"] = r.seconds, r.max_rss
    v["casync_http_ok"] = same_file(out, pair.deriv)
    out.unlink()
    print(f"[{pair.label}] casync extract over HTTP {r.seconds:.1f} s", file=sys.stderr)


def ours_pull(fetch: Any, url: str, name: str, pair: Pair, work: Path, **kw: Any) -> Any:
    """``fetch.pull`` from the point, base as seed, into a fresh cache.

    ``seed_index=`` (in ``kw``) is the base's index as the client's previous pull
    saved it (``--save-index``), so the seed is not chunked again.
    """
    out = work / f"pull-out-{pair.label}.img"
    cache = work / f"pull-cache-{pair.label}"
    rep = fetch.pull(url, name, out, seed=pair.base, cache_dir=cache, **kw)
    ok = same_file(out, pair.deriv)
    out.unlink()
    shutil.rmtree(cache)
    return rep, ok


def _phases(phases: Any) -> str:
    return ", ".join(f"{k} {t:.1f} s" for k, t in phases.items())


FLEETS = (1, 10, 30)
"""Clients in each of the three buildings one deployment reaches."""


def _fleets(
    ctx: Any, d: Any, level: str, host: Any, folder: Path, base_name: str
) -> dict[str, tuple[int, Path]]:
    """Three buildings of ``level`` with 1, 10 and 30 PCs, an open window each, and a
    distribution point's folder each (on ``host``) already holding the base's chunks,
    as an earlier staging would have left them. Returns building → (clients, folder)."""
    from sqlmodel import Session

    from orchestrator.db.models import Building
    from orchestrator.services import inventory, windows

    fleets: dict[str, tuple[int, Path]] = {}
    rows = ["Hostname,Building,Room,Platform,Model,Serial,MAC,IP"]
    with Session(ctx.engine) as session:
        for k, n in enumerate(FLEETS):
            number = f"90{k + 1}"
            session.add(Building(number=number, name=f"Bench {level} {n}", level=level))
            fleets[number] = (n, folder / number)
            for c in range(n):
                serial = f"{number}{c:03d}"
                rows.append(
                    f"pc-{serial},{number},lab,pc,Latitude 3420,SN{serial},"
                    f"02:00:{k:02x}:00:{c // 256:02x}:{c % 256:02x},127.3.{k}.{c + 1}"
                )
        session.commit()
    assets = folder / "assets.csv"
    folder.mkdir(parents=True)
    assets.write_text("\n".join(rows) + "\n")
    inventory.import_clients(ctx, d["it.ana"], assets)
    with ImageStore(ctx.image_store_dir) as origin:
        base_ids = origin.index(base_name).unique_ids()
        for _n, root in fleets.values():
            for chunk_id in base_ids:
                src = origin.chunks.path(chunk_id)
                dst = root / "chunks" / src.parent.name / src.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.link(src, dst)
            (root / "indexes").mkdir()
            (root / "manifests").mkdir()
    subprocess.run(["chown", "-R", host.username, str(folder)], check=True)
    for number in fleets:
        windows.add_window(
            ctx, d["it.ana"], building=number, days="mon-sun", start="00:00", end="23:59"
        )
    return fleets


def distribution(pairs: list[tuple[Pair, Figures]], work: Path, *, with_pull: bool) -> None:
    """Stage each derivative to a building's point, then rebuild it over HTTP, both tools.

    Staging goes through ``services.staging``: the point (a real sshd on
    loopback as its host, the project's point server in front of its store)
    already holds the base's chunks, as an earlier staging would have left them
    (linked in before the run); the derivative is released through the chain,
    the point is asked what it lacks, and that is sent over SFTP. Staging is
    once per building, whatever the number of clients (they pull from the
    point): the figure for N clients is that one staging's bytes. A second
    staging shows what a repeat costs.

    Then, with the base as seed: ``casync extract`` from casync's store over
    ``python -m http.server``, and ``fetch.pull`` from the point (when
    ``with_pull``), one after the other.
    """
    point = _optional("orchestrator.imagestore.point")
    fetch = _optional("orchestrator.imagestore.fetch") if with_pull else None
    for _pair, fig in pairs:
        v = fig.values
        v["origin_source"] = "computed from the store: one copy of the missing chunks"
        v["origin_bytes"] = {n: v["ours_fetch_bytes"] for n in (1, 10, 30)}
        v["ours_http"] = "not measured: no fetch.pull" if with_pull else "not measured"
    if point is None:
        for pair, fig in pairs:
            fig.values["origin_source"] += " (no orchestrator.imagestore.point)"
            casync_http(pair, work, fig.values)
        return
    from orchestrator.domain.states import Kind
    from orchestrator.services import bootstrap, deployments, image_store, staging
    from orchestrator.services.context import Context
    from orchestrator.services.deployments import DeploymentSpec
    from orchestrator.services.runs import Credentials
    from orchestrator.services.staging import PointSpec
    from tests.support.sshd import start_hosts

    with start_hosts(1) as hosts:
        host = hosts[0]
        creds = Credentials(ssh_user=host.username, ssh_key=host.key_file.read_text())
        for n, (pair, fig) in enumerate(pairs):
            v = fig.values
            db = work / f"district-{pair.label}"
            db.mkdir()
            engine = make_engine(f"sqlite:///{db / 'orchestrator.db'}")
            ctx = Context(
                engine=engine,
                evidence_dir=db / "evidence",
                secret_key_file=db / "secret.key",
                image_store_dir=work / f"ours-{pair.label}",
            )
            bootstrap.init_database(ctx)
            # The tests' district (buildings, people, the chain's roles); the test
            # factories are not type-checked, so they are not imported for mypy.
            d = importlib.import_module("tests.factories").make_district(ctx)
            level = ("elementary", "middle", "high")[n % 3]
            refs = []
            for version, path in (("2026.1", pair.base), ("2026.2", pair.deriv)):
                ref = d.base(level=level, version=version, artifact=str(path))
                image_store.import_artifact(ctx, d["it.ana"], Kind.BASE_IMAGE, ref, path)
                refs.append(ref)
            with ImageStore(ctx.image_store_dir) as origin:
                stored = origin.names()
                base_name = next(x for x in stored if x.endswith(f"{level}-2026.1"))
                deriv_name = next(x for x in stored if x.endswith(f"{level}-2026.2"))
            fleets = _fleets(ctx, d, level, host, work / f"points-{pair.label}", base_name)
            with contextlib.ExitStack() as servers:
                urls = {
                    b: servers.enter_context(point.PointServer(root)).url
                    for b, (_n, root) in fleets.items()
                }
                for b, (_n, root) in fleets.items():
                    staging.add_point(
                        ctx,
                        d["it.ana"],
                        PointSpec(
                            building=b,
                            address=host.address,
                            ssh_port=host.port,
                            ssh_user=host.username,
                            root=str(root),
                            url=urls[b],
                        ),
                    )
                # One deployment of the derivative to the three buildings; the
                # scheduler's pre-staging, as it runs before their windows.
                deployments.create(
                    ctx, d["it.ana"], DeploymentSpec(image=refs[1], buildings=tuple(fleets))
                )
                started = time.perf_counter()
                made = staging.prestage_due(ctx, credentials=creds)
                v["staging_s"] = time.perf_counter() - started
                by_building = {m.building: m for m in made}
                assert sorted(by_building) == sorted(fleets), made
                assert len(made) == len(fleets), "one staging per building"
                v["origin_bytes"] = {
                    n: by_building[b].bytes_sent for b, (n, _root) in fleets.items()
                }
                v["staging_chunks"] = {
                    n: by_building[b].chunks_sent for b, (n, _root) in fleets.items()
                }
                v["prestage_again"] = len(staging.prestage_due(ctx, credentials=creds))
                first_building = next(iter(fleets))
                again = staging.stage(
                    ctx, d["it.ana"], Kind.BASE_IMAGE, refs[1], first_building, credentials=creds
                )
                v["staging_again_bytes"] = again.bytes_sent
                v["origin_source"] = (
                    "measured: one deployment to three buildings of 1, 10 and 30 clients, "
                    "staged by staging.prestage_due"
                )
                print(
                    f"[{pair.label}] pre-staging to 3 buildings {v['staging_s']:.1f} s: "
                    + ", ".join(
                        f"{n} clients {v['origin_bytes'][n]} bytes "
                        f"({v['staging_chunks'][n]} chunks)"
                        for n in v["origin_bytes"]
                    )
                    + f"; again {v['prestage_again']} stagings; "
                    f"stage once more {again.bytes_sent} bytes",
                    file=sys.stderr,
                )
                server_url = urls[first_building]
                # 3. Rebuilding the derivative over HTTP on loopback, the base as seed.
                casync_http(pair, work, v)
                if fetch is not None:
                    # What the client kept from the pull that gave it the base:
                    # the base's signed index, as --save-index writes it.
                    saved = work / f"{pair.label}-base-saved.caibx"
                    with ImageStore(ctx.image_store_dir) as origin:
                        shutil.copyfile(origin.index_path(base_name), saved)
                    pull_kw: dict[str, Any] = {
                        "trusted_keys": image_store.public_keys(ctx),
                        "kind": "base_image",
                        "scope": "district",
                        "image_name": f"pc-{level}",
                        "today": ctx.today(),
                    }
                    plain, plain_ok = ours_pull(
                        fetch, server_url, deriv_name, pair, work, **pull_kw
                    )
                    v["ours_http_noidx_s"] = plain.seconds
                    v["ours_http_noidx_ok"] = plain_ok
                    v["ours_http_noidx_phases"] = dict(plain.phases)
                    print(
                        f"[{pair.label}] pull without seed index {plain.seconds:.1f} s "
                        f"({plain.seed_by}; {_phases(plain.phases)})",
                        file=sys.stderr,
                    )
                    rep, ok = ours_pull(
                        fetch, server_url, deriv_name, pair, work, seed_index=saved, **pull_kw
                    )
                    v["ours_http_seed_by"] = rep.seed_by
                    v["ours_http_phases"] = dict(rep.phases)
                    v["ours_http_s"] = rep.seconds
                    v["ours_http_ok"] = ok
                    v["ours_http_downloaded"] = rep.bytes_downloaded
                    v["ours_http_fetch_s"] = rep.fetch.seconds
                    v["ours_http_from_seed"] = rep.bytes_from_seed
                    v["ours_http"] = "measured"
                    print(
                        f"[{pair.label}] pull with seed index {rep.seconds:.1f} s "
                        f"({rep.seed_by}; {_phases(rep.phases)}), "
                        f"downloaded {rep.bytes_downloaded}",
                        file=sys.stderr,
                    )
            engine.dispose()
            shutil.rmtree(work / f"points-{pair.label}")
            shutil.rmtree(work / f"casync-{pair.label}")


def child(argv: list[str]) -> int:
    """``--child import STORE NAME FILE`` or ``--child extract STORE NAME OUT``."""
    what, root, name, path = argv
    with ImageStore(root) as store:
        if what == "import":
            rep = store.import_file(name, path, replace=True)
            out = {"size": rep.size, "chunks": rep.chunks, "new": rep.new_chunks}
        else:
            xrep = extract(store.index(name), store.chunks, path)
            out = {"size": xrep.size, "from_source": xrep.bytes_from_source}
    # The kernel's own peak for this process (a fresh address space since exec).
    status = Path("/proc/self/status").read_text()
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    out["vm_hwm"] = int(found.group(1)) * 1024 if found else 0
    print(json.dumps(out))
    return 0


def measure_memory(big: Path, work: Path) -> dict[str, Any]:
    root = work / "ours-big"
    me = [sys.executable, "-m", "benchmarks.image_store", "--child"]
    imp = run([*me, "import", str(root), "big", str(big)])
    out = work / "big-out.img"
    ext = run([*me, "extract", str(root), "big", str(out)])
    ok = same_file(big, out)
    result = {
        "import_s": imp.seconds,
        "import_rss": imp.max_rss,
        "extract_s": ext.seconds,
        "extract_rss": ext.max_rss,
        "import": json.loads(imp.stdout),
        "extract": json.loads(ext.stdout),
        "ok": ok,
    }
    out.unlink()
    shutil.rmtree(root)
    return result


# -- reporting -------------------------------------------------------------------


def _m(n: float) -> str:
    return f"{n / MiB:,.1f} MiB"


def table(figures: list[Figures], memory: dict[str, Any]) -> list[str]:
    rows = [
        "| pair | figure | ours | casync | rsync | ours vs casync | target | met |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]

    def row(
        label: str, what: str, ours: str, cas: str, rs: str, ratio: str, target: str, met: str
    ) -> None:
        rows.append(f"| {label} | {what} | {ours} | {cas} | {rs} | {ratio} | {target} | {met} |")

    for f in figures:
        v, lb = f.values, f.label
        mk = _mibps(f.base_size, v["ours_make_index_s"])
        ib = _mibps(f.base_size, v["ours_import_base_s"])
        cb = _mibps(f.base_size, v["casync_make_base_s"])
        idd = _mibps(f.deriv_size, v["ours_import_deriv_s"])
        cd = _mibps(f.deriv_size, v["casync_make_deriv_s"])
        row(
            lb,
            "index base, nothing stored (make_index) MiB/s",
            f"{mk:.0f}",
            f"{cb:.0f}",
            "—",
            f"{mk / cb:.2f}x",
            "≥ 3x",
            "yes" if mk >= 3 * cb else "no",
        )
        row(
            lb,
            "import base, fresh store (import_file / casync make) MiB/s",
            f"{ib:.0f}",
            f"{cb:.0f}",
            "—",
            f"{ib / cb:.2f}x",
            "≥ 3x",
            "yes" if ib >= 3 * cb else "no",
        )
        row(
            lb,
            "import derivative, base stored MiB/s",
            f"{idd:.0f}",
            f"{cd:.0f}",
            "—",
            f"{idd / cd:.2f}x",
            "≥ 3x",
            "yes" if idd >= 3 * cd else "no",
        )
        row(
            lb,
            "base stored (compressed)",
            _m(v["ours_base_stored"]),
            _m(v["casync_base_stored"]),
            "—",
            f"{v['ours_base_stored'] / v['casync_base_stored']:.2f}x",
            "",
            "",
        )
        row(
            lb,
            "chunks missing from the base seed (logical bytes)",
            f"{v['ours_missing_chunks']} ({_m(v['ours_missing_logical'])})",
            f"{v['casync_missing_chunks']} ({_m(v['casync_missing_logical'])})",
            "—",
            "",
            "",
            "",
        )
        of, cf, rs = v["ours_fetch_bytes"], v["casync_fetch_bytes"], v["rsync_sent_bytes"]
        row(
            lb,
            "bytes fetched to build the derivative (compressed; rsync: Total bytes sent)",
            _m(of),
            _m(cf),
            _m(rs),
            f"{of / cf:.2f}x (rsync {of / rs:.2f}x)",
            "≤ casync; stretch ≤ rsync",
            ("yes" if of <= cf else "no") + "; " + ("yes" if of <= rs else "no"),
        )
        if isinstance(v.get("ours_http_s"), float):
            oh, ch = v["ours_http_s"], v["casync_http_s"]
            row(
                lb,
                "rebuild over HTTP on loopback, base as seed with its saved index "
                f"(seed located by: {v.get('ours_http_seed_by', '?')}), s",
                f"{oh:.1f}",
                f"{ch:.1f}",
                "—",
                f"{oh / ch:.2f}x",
                "≤ 0.3x",
                "yes" if oh <= 0.3 * ch else "no",
            )
            if "ours_http_noidx_s" in v:
                on = v["ours_http_noidx_s"]
                row(
                    lb,
                    "rebuild over HTTP on loopback, base as seed, no seed index (seed chunked), s",
                    f"{on:.1f}",
                    f"{ch:.1f}",
                    "—",
                    f"{on / ch:.2f}x",
                    "",
                    "",
                )
        else:
            row(
                lb,
                "rebuild over HTTP on loopback, base as seed, s",
                str(v["ours_http"]),
                f"{v['casync_http_s']:.1f}",
                "—",
                "",
                "≤ 0.3x",
                "not measured",
            )
        if "ours_http_downloaded" in v:
            row(
                lb,
                "downloaded by the HTTP rebuild (pull: manifest, index, chunks)",
                _m(v["ours_http_downloaded"]),
                "—",
                "—",
                f"phases: {_phases(v['ours_http_phases'])}",
                "",
                "",
            )
        if "staging_again_bytes" in v:
            row(
                lb,
                "a second staging of the same image (index and manifest again)",
                _m(v["staging_again_bytes"]),
                "—",
                "—",
                "",
                "",
                "",
            )
        row(
            lb,
            "rebuild locally, base as seed, s: ours from the local store; rsync updating a copy",
            f"{v['ours_local_extract_s']:.1f}",
            "—",
            f"{v['rsync_s']:.1f} (rsync update)",
            "",
            "",
            "",
        )
        for n, sent in v["origin_bytes"].items():
            ratio = sent / v["ours_fetch_bytes"] if v["ours_fetch_bytes"] else 1.0
            row(
                lb,
                f"origin bytes per building, N = {n} clients ({v['origin_source']})",
                _m(sent),
                "—",
                "—",
                f"{ratio:.2f}x missing unique",
                "≤ 1.05x",
                "yes" if ratio <= 1.05 else "no",
            )
        row(
            lb,
            "peak RSS, casync make / casync extract",
            "—",
            f"{_m(v['casync_make_rss'])} / {_m(v['casync_extract_rss'])}",
            "—",
            "",
            "",
            "",
        )
    if memory:
        for what in ("import", "extract"):
            rss = memory[f"{what}_rss"]
            row(
                "20 GiB",
                f"peak RSS of a process doing the {what} ({memory[f'{what}_s']:.0f} s)",
                _m(rss),
                "—",
                "—",
                "",
                "< 256 MiB",
                "yes" if rss < 256 * MiB else "no",
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1:])
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/imgbench"))
    parser.add_argument("--ext4-mib", type=int, default=2048, help="files in the ext4 image")
    parser.add_argument("--wim-mib", type=int, default=700, help="files in the WIM's tree")
    parser.add_argument("--big-gib", type=int, default=20)
    parser.add_argument("--random-mib", type=int, default=256, help="each of two random regions")
    parser.add_argument("--only", choices=("ext4", "wim", "big"), action="append")
    parser.add_argument("--keep", action="store_true", help="leave the workdir in place")
    parser.add_argument("--without-pull", action="store_true", help="skip fetch.pull over HTTP")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    only = set(args.only or ("ext4", "wim", "big"))
    work: Path = args.workdir / f"run-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    started = time.perf_counter()
    data: dict[str, Any] = {}
    figures: list[Figures] = []
    memory: dict[str, Any] = {}
    try:
        tree = work / "tree-base"
        share, _ = copy_tree(
            Path("/usr/share"), tree / "share", min(args.wim_mib, args.ext4_mib) * MiB
        )
        lib, _ = copy_tree(Path("/usr/lib"), tree / "lib", args.ext4_mib * MiB - share)
        data["tree_bytes"] = share + lib
        data["wim_tree_bytes"] = share
        print(f"tree: {_m(share + lib)} ({_m(share)} of it /usr/share)", file=sys.stderr)
        pairs = []
        if only & {"ext4", "big"}:
            size = (int((share + lib) * 1.3) // (64 * MiB) + 1) * 64 * MiB
            base_img, deriv_img = work / "base.ext4", work / "deriv.ext4"
            mkfs(tree, base_img, size)
            data["ext4_change"] = derive_tree(
                tree, work / "tree-deriv", change=0.03, add=0.02, seed=7
            )
            mkfs(work / "tree-deriv", deriv_img, size)
            shutil.rmtree(work / "tree-deriv")
            data["ext4_image"] = size
            data["ext4_disk"] = disk_bytes(base_img)
            pairs.append(Pair("ext4", base_img, deriv_img))
            print(f"ext4: {_m(size)} images, {data['ext4_change']}", file=sys.stderr)
        if "wim" in only:
            base_wim, custom_wim = work / "base.wim", work / "custom.wim"
            wimcapture(tree / "share", base_wim, "base")
            custom = work / "tree-custom"
            subprocess.run(["cp", "-al", str(tree / "share"), str(custom)], check=True)
            added, added_files = copy_tree(Path("/usr/bin"), custom / "added", int(share * 0.05))
            wimcapture(custom, custom_wim, "custom")
            shutil.rmtree(custom)
            data["wim"] = {
                "base": base_wim.stat().st_size,
                "custom": custom_wim.stat().st_size,
                "added_bytes": added,
                "added_files": added_files,
            }
            pairs.append(Pair("wim", base_wim, custom_wim))
            print(f"wim: {data['wim']}", file=sys.stderr)
        shutil.rmtree(tree)
        measured = [(p, measure_pair(p, work)) for p in pairs if p.label in only]
        figures = [f for _, f in measured]
        # 3 and 4: staging to a building's point, rebuilding over HTTP.
        distribution(measured, work, with_pull=not args.without_pull)
        if "big" in only:
            big = work / "big.img"
            big_image(pairs[0].base, big, args.big_gib * GiB, random_mib=args.random_mib, seed=9)
            data["big"] = {"size": big.stat().st_size, "disk": disk_bytes(big)}
            print(f"big: {data['big']}", file=sys.stderr)
            memory = measure_memory(big, work)
            big.unlink()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    load = ", ".join(f"{n:.2f}" for n in os.getloadavg())
    versions = {
        "casync": run([CASYNC, "--version"]).stdout.strip(),
        "rsync": run([RSYNC, "--version"]).stdout.splitlines()[0],
        "wimlib": run(["wimcapture", "--version"]).stdout.splitlines()[0],
    }
    if args.json:
        print(
            json.dumps(
                {
                    "data": data,
                    "figures": [f.__dict__ for f in figures],
                    "memory": memory,
                    "versions": versions,
                },
                default=str,
                indent=1,
            )
        )
    print(
        f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; Python {platform.python_version()}, "
        f"{os.cpu_count()} cores, load average {load} at the end; {versions}; "
        f"whole run {time.perf_counter() - started:.0f} s"
    )
    print(f"data: {json.dumps(data, default=str)}")
    for f in figures:
        print(
            f"{f.label}: base {f.base_size:,} bytes, derivative {f.deriv_size:,} bytes; "
            f"rsync compression {f.values['rsync_compress']}; "
            f"checks: rsync {f.values['rsync_ok']}, casync HTTP {f.values['casync_http_ok']}, "
            f"pull {f.values.get('ours_http_ok')} "
            f"(without seed index {f.values.get('ours_http_noidx_ok')}), "
            f"ours local {f.values['ours_local_ok']}"
        )
    if memory:
        print(
            f"20 GiB: import {memory['import']}, extract {memory['extract']} "
            f"(vm_hwm: the child's own VmHWM), extract identical: {memory['ok']}"
        )
    print()
    print("\n".join(table(figures, memory)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
