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
  ``--building 101``;

each as ``deploy plan`` asks it (counted in the database, the first 50
excluded clients listed) and with every client listed one by one (what
``deploy plan --json`` and ``deploy create`` ask).

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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from benchmarks import databases
from orchestrator.db.models import (
    Building,
    Client,
    ClientSoftware,
    HardwareModel,
    Person,
    PersonBuilding,
)
from orchestrator.db.session import transaction
from orchestrator.domain.policy import Actor
from orchestrator.domain.states import Kind, Level, Role, Step
from orchestrator.services import (
    bootstrap,
    catalog,
    chain,
    deploy_plan,
    directory,
    hardware,
    installed,
)
from orchestrator.services.catalog import BaseImageSpec, CustomImageSpec, PackageSpec
from orchestrator.services.chain import CheckResult
from orchestrator.services.context import Context

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


PEOPLE = [
    ("it.ana", Role.IT, None),
    ("it.wei", Role.IT, None),
    ("edtech.grace", Role.EDTECH, None),
    ("edtech.marco", Role.EDTECH, None),
    ("btc.lincoln", Role.BTC, "101"),
]
# (vendor, model, platform, approved, end of support in days)
MODELS = [
    ("Dell", "Latitude 3420", "pc", True, 900),
    ("HP", "ProBook 450 G8", "pc", True, 900),
    ("Dell", "OptiPlex 7010", "pc", True, -10),
    ("Lenovo", "ThinkPad 11e", "pc", False, 900),
    ("Apple", "MacBookAir10,1", "mac", True, 900),
]


def _district(ctx: Context, buildings: int, seed: int = 7) -> dict[str, Actor]:
    """Buildings (101 is Lincoln Elementary), the people who act, the Approved
    Technology List; returns the actors by user name."""
    rng = random.Random(seed)
    levels = [Level.ELEMENTARY] * 12 + [Level.MIDDLE] * 4 + [Level.HIGH] * 3 + [Level.OFFICE]
    with transaction(ctx.engine) as s:
        s.execute(
            sa.insert(Building),
            [{"number": "101", "name": "Lincoln Elementary", "level": Level.ELEMENTARY}]
            + [
                {"number": str(1000 + i), "name": f"School {1000 + i}", "level": rng.choice(levels)}
                for i in range(buildings - 1)
            ],
        )
        lincoln = s.exec(select(Building).where(Building.number == "101")).one()
        for username, role, building in PEOPLE:
            person = Person(username=username, display_name=username, role=role.value)
            s.add(person)
            s.flush()
            if building is not None:
                s.add(PersonBuilding(person_id=person.id or 0, building_id=lincoln.id or 0))
    actors = {u: directory.actor(ctx, u) for u, _, _ in PEOPLE}
    today = ctx.today()
    for vendor, model, platform_, approved, eos in MODELS:
        hardware.add_model(
            ctx,
            actors["it.ana"],
            vendor=vendor,
            model=model,
            platform=platform_,
            approved=approved,
            end_of_support=today + timedelta(days=eos),
        )
    return actors


def _through_chain(
    ctx: Context, people: dict[str, Actor], kind: Kind, ref: str, author: str, publisher: str
) -> None:
    """The happy path of the approval chain, by the people the chain wants."""
    chain.submit(ctx, people[author], kind, ref)
    if kind is not Kind.PACKAGE:
        chain.approve(ctx, people["edtech.marco"], kind, ref, "fits", step=Step.REVIEW)
    tester = "edtech.marco" if author == "edtech.grace" else "edtech.grace"
    for persona in ("student", "staff"):
        chain.record_test(
            ctx,
            people[tester],
            kind,
            ref,
            persona=persona,
            checks=[CheckResult("sign-in succeeds", True)],
            evidence=f"{persona} login fine",
        )
    chain.approve(ctx, people[tester], kind, ref, "tests pass", step=Step.TEST)
    chain.publish(ctx, people[publisher], kind, ref)


def _catalog(ctx: Context, people: dict[str, Actor]) -> tuple[str, str]:
    """A released district-wide PC package and Lincoln's released customized image."""
    today = ctx.today()
    package = catalog.create_package(
        ctx,
        people["edtech.grace"],
        PackageSpec(
            name="firefox",
            version="129.0",
            platform="pc",
            audience="instructional",
            installer="https://dist.example.org/packages/firefox-129.0.msi",
            installer_sha256="a" * 64,
            detection_rule=f"msi:{PRODUCT_CODE}",
        ),
    ).ref
    _through_chain(ctx, people, Kind.PACKAGE, package, "edtech.grace", "it.wei")
    base = catalog.create_base_image(
        ctx,
        people["it.ana"],
        BaseImageSpec(
            platform="pc",
            level="elementary",
            version="2026.1",
            os_version="Windows 11 24H2",
            sunset_date=today + timedelta(days=365),
            artifact="https://dist.example.org/base/pc-elementary-2026.1.wim",
            artifact_sha256="b" * 64,
            models=["Dell:Latitude 3420", "HP:ProBook 450 G8"],
        ),
    ).ref
    _through_chain(ctx, people, Kind.BASE_IMAGE, base, "it.ana", "it.wei")
    image = catalog.create_custom_image(
        ctx,
        people["btc.lincoln"],
        CustomImageSpec(
            building="101", name="lab", version="1.0", base=base, settings={"wallpaper": "lions"}
        ),
    ).ref
    _through_chain(ctx, people, Kind.CUSTOM_IMAGE, image, "btc.lincoln", "btc.lincoln")
    return package, image


def _generate(ctx: Context, clients: int, seed: int = 7) -> None:
    """Every client, in bulk."""
    rng = random.Random(seed)
    now = ctx.now()
    with transaction(ctx.engine) as s:
        ids = [b.id for b in s.exec(select(Building).order_by(Building.number))]
        models = {m.model: m.id for m in s.exec(select(HardwareModel))}
    pc_models = [("Latitude 3420", 50), ("ProBook 450 G8", 35), ("OptiPlex 7010", 10)]
    pc_models += [("ThinkPad 11e", 3), ("Acer C740", 2)]
    rows: list[dict[str, Any]] = []
    gathered: dict[str, list[str]] = {}

    def flush() -> None:
        with transaction(ctx.engine) as s:
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
        if last_seen is not None:
            gathered[f"c{n:06d}"] = software
        if len(rows) == 5000:
            flush()
    if rows:
        flush()
    # What a gather records beside the facts (services/installed.py), in bulk.
    with transaction(ctx.engine) as s:
        ids_by_host = dict(s.execute(sa.select(col(Client.hostname), col(Client.id))).all())
    software_rows = [
        {"client_id": ids_by_host[host], "source": installed.GATHERED, "marker": m.lower(),
         "recorded_at": now}
        for host, items in gathered.items()
        for m in sorted(set(items))
    ]  # fmt: skip
    for start in range(0, len(software_rows), 20_000):
        with transaction(ctx.engine) as s:
            s.execute(sa.insert(ClientSoftware), software_rows[start : start + 20_000])


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
    people = _district(ctx, args.buildings)
    package, image = _catalog(ctx, people)
    _generate(ctx, args.clients)
    with engine.begin() as conn:
        conn.execute(sa.text("ANALYZE"))
    print(
        f"{backend}: {args.buildings} buildings, {args.clients} clients written in "
        f"{time.perf_counter() - started:.0f} s",
        file=sys.stderr,
    )
    district: dict[str, Any] = dict(actor=people["it.ana"], package=package, groups=["all"])
    building: dict[str, Any] = dict(actor=people["btc.lincoln"], image=image, buildings=["101"])
    # As `deploy plan` asks (counts, the first 50 excluded), and as `deploy plan
    # --json` and `deploy create` ask (every client, one by one).
    counted: dict[str, Any] = dict(listed=False, sample=50)
    scenarios = {
        f"district-wide: IT, {package}, --group all": district | counted,
        f"district-wide, every client listed (--json, create): IT, {package}": district,
        f"one building: BTC, {image}, --building 101": building | counted,
        f"one building, every client listed: BTC, {image}": building,
    }
    figures = []
    for name, kw in scenarios.items():
        result, samples = _time(ctx, args.repeat, **kw)
        figures.append(
            Figure(
                backend,
                name,
                result.included_count + result.excluded_count,
                result.included_count,
                result.excluded_count,
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
    if args.buildings < 1:
        parser.error("--buildings: at least one (101, Lincoln Elementary)")
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backend or ("sqlite", "postgresql"):
            way = databases.backend(backend, Path(tmp), "bench_plan")
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
