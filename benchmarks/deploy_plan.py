"""``deploy plan`` on a large district: a district-wide package update and one building.

Generates, in a fresh database on each backend (a SQLite file in a temporary
folder; a schema of its own on the PostgreSQL test database, dropped
afterwards), a district of ``--buildings`` buildings and ``--clients``
clients written with bulk inserts: gathered facts with a software list, image
markers, last contact times, and models on and off the Approved Technology
List. The catalog (a released district-wide PC package and a customized
image of building 101) goes through the real services and the real chain.

Then it times ``deploy_plan.plan`` in this process (one warm-up, not counted,
then the median of ``--repeat``) for

* **district-wide**: IT plans the package for ``--group all``;
* **one building**: building 101's BTC plans its customized image for
  ``--building 101``.

Usage::

    .venv/bin/python -m benchmarks.deploy_plan [--buildings 400] [--clients 150000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import select

from orchestrator.db.models import Building, Client, HardwareModel
from orchestrator.db.session import make_engine, transaction
from orchestrator.domain.states import Level, State
from orchestrator.services import bootstrap, deploy_plan
from orchestrator.services.context import Context
from tests.factories import District, make_district

POSTGRES_URL = os.environ.get(
    "ORCHESTRATOR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
PRODUCT_CODE = "{5A1B2C3D-0000-4000-8000-00000000F129}"
PACKAGE = "firefox@129.0"
SOFTWARE = [
    "7-Zip 23.01 (x64)",
    "Google Chrome",
    "Microsoft Edge",
    "Microsoft 365 Apps for enterprise - en-us",
    "Adobe Acrobat Reader DC",
    "VLC media player",
    "Zoom Workplace",
    "{90160000-008C-0000-1000-0000000FF1CE}",
    "{26A24AE4-039D-4CA4-87B4-2F64180101F0}",
    "Notepad++ (64-bit x64)",
    "GeoGebra Classic",
    "Python 3.12.3 (64-bit)",
]
RECEIPTS = [
    "com.apple.pkg.Core",
    "com.google.Chrome",
    "org.videolan.vlc",
    "us.zoom.pkg.videomeeting",
    "com.microsoft.package.Microsoft_Word.app",
    "com.microsoft.package.Microsoft_Excel.app",
    "org.geogebra.classic",
    "edu.mit.scratch",
]


@dataclass
class Figure:
    backend: str
    scenario: str
    reached: int
    included: int
    excluded: int
    median_s: float
    min_s: float
    max_s: float


def _generate(d: District, buildings: int, clients: int, seed: int = 7) -> None:
    """Buildings beyond the test district's five, then every client, in bulk."""
    rng = random.Random(seed)
    now = d.ctx.now()
    levels = [Level.ELEMENTARY] * 12 + [Level.MIDDLE] * 4 + [Level.HIGH] * 3 + [Level.OFFICE]
    with transaction(d.ctx.engine) as s:
        have = len(s.exec(select(Building)).all())
        s.execute(
            sa.insert(Building),
            [
                {"number": str(1000 + i), "name": f"School {1000 + i}", "level": rng.choice(levels)}
                for i in range(buildings - have)
            ],
        )
    with transaction(d.ctx.engine) as s:
        ids = [b.id for b in s.exec(select(Building).order_by(Building.number))]
        models = {m.model: m.id for m in s.exec(select(HardwareModel))}
    pc_models = [("Latitude 3420", 50), ("ProBook 450 G8", 35), ("OptiPlex 7010", 10)]
    pc_models += [("ThinkPad 11e", 3), ("Acer C740", 2)]
    rows: list[dict[str, Any]] = []

    def flush() -> None:
        with transaction(d.ctx.engine) as s:
            s.execute(sa.insert(Client), rows)
        rows.clear()

    for n in range(clients):
        building_id = ids[n % len(ids)]
        is_mac = rng.random() < 0.3
        if is_mac:
            model = "MacBookAir10,1"
            software = rng.sample(RECEIPTS, 6)
        else:
            model = rng.choices([m for m, _ in pc_models], [w for _, w in pc_models])[0]
            software = rng.sample(SOFTWARE, 9) + ([PRODUCT_CODE] if rng.random() < 0.2 else [])
        seen = rng.random()
        last_seen = (
            None if seen < 0.05 else now - timedelta(days=30 if seen < 0.1 else rng.uniform(0, 2))
        )
        rows.append(
            {
                "hostname": f"c{n:06d}",
                "building_id": building_id,
                "room": f"room-{n // len(ids) % 12:02d}",
                "platform": "mac" if is_mac else "pc",
                "model": model,
                "hardware_model_id": models.get(model),
                "serial": f"SN{n:08d}",
                "mac": f"02:00:{n >> 24 & 255:02x}:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:"
                f"{n & 255:02x}",
                "address": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}",
                "port": 22 if is_mac else 5985,
                "transport": "ssh" if is_mac else "winrm",
                "host_vars": {},
                "test_client": False,
                "current_image": "101/lab@1.0" if rng.random() < 0.1 else None,
                "facts": {
                    "orchestrator_os": "macOS" if is_mac else "Windows",
                    "orchestrator_os_version": "15.3" if is_mac else "10.0.26100",
                    "orchestrator_model": model,
                    "orchestrator_disk_free_kb": rng.randrange(10_000_000, 200_000_000),
                    "orchestrator_software": software,
                }
                if last_seen is not None
                else {},
                "last_seen": last_seen,
                "created_at": now,
            }
        )
        if len(rows) == 5000:
            flush()
    if rows:
        flush()


def _catalog(d: District) -> tuple[str, str]:
    package = d.package(
        "firefox", "129.0", detection_rule=f"msi:{PRODUCT_CODE}", to=State.PUBLISHED
    )
    d.base("pc", "elementary")
    image = d.custom("101", to=State.PUBLISHED)
    return package, image


@contextmanager
def _sqlite(folder: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{folder / 'bench.db'}")
    yield engine
    engine.dispose()


@contextmanager
def _postgres() -> Iterator[Engine]:
    schema = f"bench_plan_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(POSTGRES_URL, connect_args={"options": f"-csearch_path={schema}"})
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _time(ctx: Context, repeat: int, **kw: Any) -> tuple[deploy_plan.Plan, list[float]]:
    result = deploy_plan.plan(ctx, **kw)  # warm-up, not counted
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = deploy_plan.plan(ctx, **kw)
        samples.append(time.perf_counter() - started)
    return result, samples


def _bench(backend: str, engine: Engine, args: argparse.Namespace) -> list[Figure]:
    ctx = Context(engine=engine)
    bootstrap.init_database(ctx)
    started = time.perf_counter()
    d = make_district(ctx)
    package, image = _catalog(d)
    _generate(d, args.buildings, args.clients)
    with engine.begin() as conn:
        conn.execute(sa.text("ANALYZE"))
    print(
        f"{backend}: {args.buildings} buildings, {args.clients} clients written in "
        f"{time.perf_counter() - started:.0f} s",
        file=sys.stderr,
    )
    scenarios = {
        f"district-wide: IT, {package}, --group all": dict(
            actor=d["it.ana"], package=package, groups=["all"]
        ),
        f"one building: BTC, {image}, --building 101": dict(
            actor=d["btc.lincoln"], image=image, buildings=["101"]
        ),
    }
    figures = []
    for name, kw in scenarios.items():
        result, samples = _time(ctx, args.repeat, **kw)
        figures.append(
            Figure(
                backend,
                name,
                len(result.included) + len(result.excluded),
                len(result.included),
                len(result.excluded),
                round(statistics.median(samples), 3),
                round(min(samples), 3),
                round(max(samples), 3),
            )
        )
        print(f"  {name}: {result.summary()}", file=sys.stderr)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--buildings", type=int, default=400)
    parser.add_argument("--clients", type=int, default=150_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--backend", choices=("sqlite", "postgresql"), action="append", help="default: both"
    )
    args = parser.parse_args(argv)
    if args.buildings < 5:
        parser.error("--buildings: at least the test district's 5")
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backend or ("sqlite", "postgresql"):
            way = _sqlite(Path(tmp)) if backend == "sqlite" else _postgres()
            with way as engine:
                figures += _bench(backend, engine, args)
    load = ", ".join(f"{n:.2f}" for n in os.getloadavg())
    print(
        f"\n{args.buildings} buildings, {args.clients} clients; median of {args.repeat} "
        f"plans after one warm-up; Python {platform.python_version()}, "
        f"{os.cpu_count()} cores, load average {load} at the end, "
        f"{datetime.now(UTC):%Y-%m-%d}\n"
    )
    print("| backend | plan | clients reached | included | excluded | median s | min s | max s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for f in figures:
        print(
            f"| {f.backend} | {f.scenario} | {f.reached} | {f.included} | {f.excluded} "
            f"| {f.median_s:.3f} | {f.min_s:.3f} | {f.max_s:.3f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
