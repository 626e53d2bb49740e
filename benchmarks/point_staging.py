"""Staging to a building's distribution point, then letting a retired image go.

One run, on a real OpenSSH host on loopback (``tests.support.sshd``) serving as
building 101's point, with the project's point server over its folder:

1. a random base image of ``--mib`` MiB and a derivative with 5% of it
   rewritten in 64 KiB runs are imported and released;
2. ``staging.stage`` sends the point the base the way a host without
   ``python3`` gets it (each chunk its own SFTP file), the point is emptied, then
   it sends the base the usual way (one stream to the point's receiver), then the
   derivative (only what the point lacks);
3. the reference: OpenSSH's ``rsync -a`` of the same stored chunk files the
   base staging sent, over ``ssh`` to a fresh folder on the same host;
4. the base is retired, the protection window passes (the clock and the store's
   file times are moved), ``image_store.gc`` lets it go, and ``staging.prune``
   takes it off the point; the point's store is then checked whole.

    python -m benchmarks.point_staging --mib 1024
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from orchestrator.clock import FixedClock
from orchestrator.db.session import make_engine
from orchestrator.domain.states import Kind
from orchestrator.imagestore.store import ImageStore
from orchestrator.remote import points
from orchestrator.services import bootstrap, chain, image_store, staging
from orchestrator.services.context import Context
from orchestrator.services.runs import Credentials
from tests.factories import District, make_district
from tests.support.points import add_point, serving_point
from tests.support.sshd import SSHHost, start_hosts

MIB = 2**20
RUN = 64 * 1024


def _images(folder: Path, mib: int) -> tuple[Path, Path]:
    rng = random.Random(1)
    base = folder / "pc-elementary-2026.1.img"
    with open(base, "wb") as f:
        for _ in range(mib):
            f.write(rng.randbytes(MIB))
    data = bytearray(base.read_bytes())
    for _ in range(int(len(data) * 0.05 / RUN)):
        at = rng.randrange(0, len(data) - RUN)
        data[at : at + RUN] = rng.randbytes(RUN)
    derivative = folder / "pc-elementary-2026.2.img"
    derivative.write_bytes(bytes(data))
    return base, derivative


def _rsync(host: SSHHost, store: Path, name: str, work: Path) -> tuple[float, int]:
    """``rsync -a`` over ssh of the chunk files the index ``name`` needs."""
    with ImageStore(store) as s:
        ids = sorted(s.index(name).unique_ids())
        files = [str(s.chunks.path(i).relative_to(store / "chunks")) for i in ids]
    listing = work / "files.txt"
    listing.write_text("\n".join(files) + "\n")
    target = host.root / "rsync-copy"
    target.mkdir()
    shutil.chown(target, user=host.username)
    known = work / "known_hosts"
    known.write_text(f"[{host.address}]:{host.port} {host.host_key}\n")
    shell = (
        f"ssh -p {host.port} -i {host.key_file} -o UserKnownHostsFile={known} "
        "-o StrictHostKeyChecking=yes -o BatchMode=yes"
    )
    started = time.monotonic()
    subprocess.run(
        ["rsync", "-a", "--files-from", str(listing), "-e", shell, f"{store}/chunks/",
         f"{host.username}@{host.address}:{target}/"],
        check=True,
    )  # fmt: skip
    return time.monotonic() - started, len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=1024, help="size of the base image")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="point-staging-"))
    clock = FixedClock(datetime(2026, 3, 2, 15, 0, tzinfo=UTC))
    ctx = Context(
        engine=make_engine(f"sqlite:///{work}/orchestrator.db"),
        zone=ZoneInfo("America/New_York"),
        clock=clock,
        evidence_dir=work / "evidence",
        secret_key_file=work / "secret.key",
        image_store_dir=work / "images",
    )
    figures: dict[str, object] = {"mib": args.mib}
    try:
        bootstrap.init_database(ctx)
        d: District = make_district(ctx)
        refs = []
        for version, path in zip(("2026.1", "2026.2"), _images(work, args.mib), strict=True):
            ref = d.base(version=version, artifact=str(path))
            image_store.import_artifact(ctx, d["it.ana"], Kind.BASE_IMAGE, ref, path)
            refs.append(ref)
        with start_hosts(1) as [host], serving_point(host) as point:
            add_point(d, host, point)
            credentials = Credentials(ssh_user=host.username, ssh_key=host.key_file.read_text())
            started = time.monotonic()
            python, points.RECEIVER_PYTHON = points.RECEIVER_PYTHON, "no-python-here"
            try:
                staging.stage(
                    ctx, d["btc.lincoln"], Kind.BASE_IMAGE, refs[0], "101", credentials=credentials
                )
            finally:
                points.RECEIVER_PYTHON = python
            figures["stage_base_file_by_file_sftp"] = round(time.monotonic() - started, 2)
            for folder in ("chunks", "indexes", "manifests"):
                shutil.rmtree(point.root / folder)
            for label, ref in zip(("base", "derivative"), refs, strict=True):
                started = time.monotonic()
                view = staging.stage(
                    ctx, d["btc.lincoln"], Kind.BASE_IMAGE, ref, "101", credentials=credentials
                )
                figures[f"stage_{label}"] = {
                    "chunks": view.chunks_sent,
                    "bytes": view.bytes_sent,
                    "seconds": round(time.monotonic() - started, 2),
                }
            with ImageStore(point.root) as on_point:
                base_name = sorted(on_point.names())[0]
            seconds, files = _rsync(host, ctx.image_store_dir, base_name, work)
            figures["rsync_base_chunks"] = {"files": files, "seconds": round(seconds, 2)}
            chain.retire(ctx, d["it.ana"], Kind.BASE_IMAGE, refs[0], "withdrawn")
            clock.advance(hours=25)
            past = time.time() - 48 * 3600
            for path in ctx.image_store_dir.rglob("*"):
                os.utime(path, (past, past))
            started = time.monotonic()
            gc = image_store.gc(ctx, d["it.ana"])
            figures["gc"] = {
                "reclaimed": gc.reclaimed,
                "chunks": gc.removed_chunks,
                "bytes": gc.removed_bytes,
                "seconds": round(time.monotonic() - started, 2),
            }
            started = time.monotonic()
            pruned = staging.prune(ctx, d["it.ana"], "101", credentials=credentials)
            figures["prune"] = {
                "images": pruned.removed_images,
                "chunks": pruned.removed_chunks,
                "seconds": round(time.monotonic() - started, 2),
            }
            with ImageStore(point.root) as on_point:
                figures["point_whole_after_prune"] = on_point.verify().ok
    finally:
        ctx.engine.dispose()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for key, value in figures.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
