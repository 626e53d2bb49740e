"""A catalog entry's bytes in the image store: imported by whoever maintains it,
only when they are the bytes the chain judges, deduplicated against the base, and
signed when released; on both databases, over a real store on disk."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from orchestrator.clock import FixedClock
from orchestrator.db.models import ImageManifest, SigningKey
from orchestrator.db.session import transaction
from orchestrator.domain.states import Kind, State
from orchestrator.errors import Conflict, InvalidInput, NotFound, Refused
from orchestrator.imagestore import manifest as signing
from orchestrator.imagestore.artifacts import UnsafeArtifact
from orchestrator.imagestore.errors import SourceChanged, StoreBusy
from orchestrator.imagestore.store import ImageStore
from orchestrator.services import (
    audit,
    catalog,
    chain,
    deployments,
    image_store,
    inventory,
    sunset,
    vault,
    windows,
)
from orchestrator.services.deployments import DeploymentSpec
from tests.factories import District

MIB = 2**20


def _random_file(path: Path, size: int, seed: int) -> Path:
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def _derivative(base: Path, path: Path, *, changed: float, seed: int) -> Path:
    """``base`` with about ``changed`` of it rewritten in a few scattered runs."""
    data = bytearray(base.read_bytes())
    rng = random.Random(seed)
    run = 64 * 1024
    for _ in range(int(len(data) * changed / run)):
        at = rng.randrange(0, len(data) - run)
        data[at : at + run] = rng.randbytes(run)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def base_file(tmp_path: Path) -> Path:
    return _random_file(tmp_path / "pc-elementary-2026.1.img", 8 * MIB, seed=1)


@pytest.fixture
def stored_base(district: District, base_file: Path) -> str:
    ref = district.base(artifact=str(base_file))
    image_store.import_artifact(district.ctx, district["it.ana"], Kind.BASE_IMAGE, ref, base_file)
    return ref


def test_it_imports_a_base_image_and_the_store_holds_it_once(
    district: District, base_file: Path
) -> None:
    ref = district.base(artifact=str(base_file))

    made = image_store.import_artifact(
        district.ctx, district["it.ana"], Kind.BASE_IMAGE, ref, base_file
    )

    assert (made.size, made.artifact, made.chain_restarted) == (8 * MIB, "raw", False)
    assert made.chunks > 50 and made.new_chunks == made.chunks
    assert made.signed  # the base is published already
    with pytest.raises(Conflict, match="in the image store already"):
        image_store.import_artifact(
            district.ctx, district["it.ana"], Kind.BASE_IMAGE, ref, base_file
        )
    figures = image_store.stats(district.ctx, district["it.ana"])
    assert figures.logical_bytes == 8 * MIB and figures.images[0].ref == ref
    actions = [e.action for e in audit.entries(district.ctx, district["it.ana"])]
    assert "base_image.import" in actions


def test_a_customized_image_stores_only_what_differs_from_its_base(
    district: District, stored_base: str, base_file: Path, tmp_path: Path
) -> None:
    lab = district.custom("101", "lab", "1.0", base=stored_base)
    overlay = _derivative(base_file, tmp_path / "lab-1.0.img", changed=0.05, seed=2)
    base_stored = image_store.stats(district.ctx, district["it.ana"]).stored_bytes

    made = image_store.import_artifact(
        district.ctx, district["btc.lincoln"], Kind.CUSTOM_IMAGE, lab, overlay
    )

    assert made.new_bytes < 0.25 * base_stored  # ~5% changed: a fraction of the base
    assert made.shared_with_base is not None and made.shared_with_base > 0.7 * made.size
    assert not made.signed  # a draft: nothing is signed before the chain releases it
    # Its first bytes became its artifact: the chain judges exactly these.
    shown = catalog.show(district.ctx, district["btc.lincoln"], Kind.CUSTOM_IMAGE, lab)
    assert shown.state is State.DRAFT
    figures = image_store.stats(district.ctx, district["it.ana"])
    (lab_figures,) = [i for i in figures.images if i.ref == lab]
    assert lab_figures.base == stored_base
    assert figures.stored_bytes == pytest.approx(base_stored + made.new_bytes, rel=0.01)
    assert figures.ratio > 1.6


def test_releasing_an_imported_image_signs_a_manifest_its_receivers_accept(
    district: District, base_file: Path
) -> None:
    ref = district.base(version="2026.3", artifact=str(base_file), to=State.APPROVED)
    image_store.import_artifact(district.ctx, district["it.ana"], Kind.BASE_IMAGE, ref, base_file)
    with pytest.raises(NotFound, match="not released yet"):
        image_store.signed_manifest(district.ctx, district["it.ana"], Kind.BASE_IMAGE, ref)

    chain.publish(district.ctx, district["it.wei"], Kind.BASE_IMAGE, ref)

    data = image_store.signed_manifest(district.ctx, district["btc.lincoln"], Kind.BASE_IMAGE, ref)
    trusted = image_store.public_keys(district.ctx)
    expect = {"kind": "base_image", "scope": "district", "name": "pc-elementary"}
    got = signing.verify(data, trusted, today=district.today, **expect)
    row = catalog.show(district.ctx, district["it.ana"], Kind.BASE_IMAGE, ref)
    assert got.approved_digest == row.digest and got.version == "2026.3"
    assert got.sunset == row.effective_sunset and got.size == 8 * MIB
    (index,) = (district.ctx.image_store_dir / "indexes").glob("*-base-image-*.caibx")
    signing.check_index(got, index.read_bytes())
    # On its sunset the same manifest is refused by whoever receives it.
    assert got.sunset is not None
    with pytest.raises(signing.Sunset):
        signing.verify(data, trusted, today=got.sunset, **expect)
    # Nor is it taken for another image.
    with pytest.raises(signing.WrongImage):
        signing.verify(data, trusted, today=district.today, **(expect | {"name": "pc-high"}))


def test_bytes_other_than_the_registered_artifact_are_refused_and_nothing_is_stored(
    district: District, base_file: Path, tmp_path: Path
) -> None:
    ref = district.base(artifact=str(base_file))
    other = _random_file(tmp_path / "other.img", MIB, seed=9)

    with pytest.raises(InvalidInput, match="was registered with"):
        image_store.import_artifact(district.ctx, district["it.ana"], Kind.BASE_IMAGE, ref, other)

    assert not list((district.ctx.image_store_dir / "indexes").glob("*.caibx"))
    assert image_store.stats(district.ctx, district["it.ana"]).images == []


def test_only_whoever_maintains_an_entry_imports_it(
    district: District, stored_base: str, base_file: Path
) -> None:
    lab = district.custom("101", "lab", "1.0", base=stored_base)
    with pytest.raises(NotFound):
        image_store.import_artifact(
            district.ctx, district["btc.garcia"], Kind.CUSTOM_IMAGE, lab, base_file
        )
    with pytest.raises(Refused):
        image_store.import_artifact(
            district.ctx, district["principal.lincoln"], Kind.CUSTOM_IMAGE, lab, base_file
        )
    assert [i.ref for i in image_store.stats(district.ctx, district["it.ana"]).images] == [
        stored_base
    ]


def test_a_qcow2_with_a_backing_file_is_refused_before_anything_reads_it(
    district: District, tmp_path: Path
) -> None:
    crafted = tmp_path / "lab.qcow2"
    header = bytearray(512)
    header[0:4] = b"QFI\xfb"
    header[4:8] = (2).to_bytes(4, "big")
    header[8:16] = (200).to_bytes(8, "big")
    header[16:20] = (11).to_bytes(4, "big")
    header[200:211] = b"/etc/shadow"
    crafted.write_bytes(bytes(header))
    lab = district.custom("101", "lab", "1.0", base=district.base())

    with pytest.raises(UnsafeArtifact, match=r"backing file \('/etc/shadow'\)"):
        image_store.import_artifact(
            district.ctx, district["btc.lincoln"], Kind.CUSTOM_IMAGE, lab, crafted
        )
    shown = catalog.show(district.ctx, district["btc.lincoln"], Kind.CUSTOM_IMAGE, lab)
    assert shown.artifact_sha256 is None  # the entry was not given the file


def test_verify_finds_a_corrupted_chunk_and_a_replaced_index(
    district: District, stored_base: str
) -> None:
    clean = image_store.verify(district.ctx, district["it.ana"])
    assert clean.ok and clean.images == 1 and clean.chunks.checked > 50
    chunk = next((district.ctx.image_store_dir / "chunks").rglob("*.cacnk"))
    chunk.write_bytes(chunk.read_bytes()[:-5] + b"xxxxx")

    broken = image_store.verify(district.ctx, district["it.ana"])

    assert not broken.ok and [c for c, _ in broken.chunks.corrupt] == [chunk.stem]
    (index,) = (district.ctx.image_store_dir / "indexes").glob("*.caibx")
    index.write_bytes(index.read_bytes()[:-8] + b"\0" * 8)
    assert image_store.verify(district.ctx, district["it.ana"]).bad_indexes == [
        f"{stored_base}: index {index.name} is not the one imported"
    ]
    with pytest.raises(Refused, match="manage the image store and its distribution points"):
        image_store.verify(district.ctx, district["btc.lincoln"])


def test_the_signing_key_is_kept_encrypted_and_survives_a_key_rotation(
    district: District, stored_base: str
) -> None:
    with transaction(district.ctx.engine) as session:
        (key,) = session.exec(select(SigningKey)).all()
        before = key.ciphertext
    trusted = image_store.public_keys(district.ctx)
    assert list(trusted) == [key.key_id]

    vault.rotate_key(district.ctx, district["it.ana"])

    with transaction(district.ctx.engine) as session:
        (after,) = session.exec(select(SigningKey)).all()
        assert after.ciphertext != before
    newer = district.base(version="2026.2", artifact=str(_write(district, "b2.img")))
    image_store.import_artifact(
        district.ctx, district["it.ana"], Kind.BASE_IMAGE, newer, _path(district, "b2.img")
    )
    data = image_store.signed_manifest(district.ctx, district["it.ana"], Kind.BASE_IMAGE, newer)
    assert signing.verify(
        data, trusted, kind="base_image", scope="district", name="pc-elementary",
        today=district.today,
    ).version == "2026.2"  # fmt: skip
    with transaction(district.ctx.engine) as session:
        assert session.exec(select(ImageManifest)).all()[0].key_id == key.key_id


def _path(d: District, name: str) -> Path:
    return d.ctx.evidence_dir.parent / name


def _write(d: District, name: str) -> Path:
    path = _path(d, name)
    path.write_bytes(os.urandom(MIB))
    return path


def test_publishing_an_entry_that_is_not_in_the_store_signs_nothing(district: District) -> None:
    ref = district.custom("101", "lab", "1.0", base=district.base(), to=State.APPROVED)
    chain.publish(district.ctx, district["btc.lincoln"], Kind.CUSTOM_IMAGE, ref)
    with pytest.raises(NotFound, match="not in the image store"):
        image_store.signed_manifest(district.ctx, district["it.ana"], Kind.CUSTOM_IMAGE, ref)


def _age(folder: Path, hours: float) -> None:
    old = time.time() - hours * 3600
    for p in folder.rglob("*"):
        if p.is_file():
            os.utime(p, (old, old))


def test_gc_removes_only_what_no_stored_image_references_once_past_the_window(
    district: District, stored_base: str, tmp_path: Path
) -> None:
    root = district.ctx.image_store_dir
    with ImageStore(root) as store:
        leftover = store.import_file("left-by-a-crash", _random_file(tmp_path / "x", MIB, 7))
    _age(root, 48)
    with ImageStore(root) as store:
        young = store.import_file("import-in-progress", _random_file(tmp_path / "y", MIB, 8))
    before = image_store.stats(district.ctx, district["it.ana"]).stored_bytes

    dry = image_store.gc(district.ctx, district["it.ana"], dry_run=True)
    assert dry.removed_chunks == leftover.new_chunks and dry.young == 0  # young's index refs
    assert (root / "indexes" / "left-by-a-crash.caibx").exists()

    done = image_store.gc(district.ctx, district["it.ana"])

    assert done.removed_indexes == ["left-by-a-crash"]
    assert done.removed_chunks == leftover.new_chunks and done.removed_bytes > 0
    assert (root / "indexes" / "import-in-progress.caibx").exists()
    assert young.new_chunks > 0
    assert image_store.verify(district.ctx, district["it.ana"]).ok
    assert image_store.stats(district.ctx, district["it.ana"]).stored_bytes == before
    with pytest.raises(Refused):
        image_store.gc(district.ctx, district["btc.lincoln"])
    with pytest.raises(InvalidInput, match="hours"):
        image_store.gc(district.ctx, district["it.ana"], protect_hours=-1)


def test_gc_refuses_while_another_process_has_the_store_open_and_changes_nothing(
    district: District, stored_base: str, tmp_path: Path
) -> None:
    root = district.ctx.image_store_dir
    with ImageStore(root) as store:
        store.import_file("left-by-a-crash", _random_file(tmp_path / "x", MIB, 7))
    _age(root, 48)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    # An import elsewhere: it skips the chunks the store has, which gc must not take.
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_STORE, str(root)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        with pytest.raises(StoreBusy, match="in use by another process"):
            image_store.gc(district.ctx, district["it.ana"])
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p for p in root.rglob("*") if p.is_file()) == files

    assert image_store.gc(district.ctx, district["it.ana"]).removed_indexes == ["left-by-a-crash"]


HOLD_STORE = """
import sys, time
from orchestrator.imagestore.store import ImageStore
with ImageStore(sys.argv[1]):
    print("open", flush=True)
    time.sleep(60)
"""


def _stored_package(d: District, tmp_path: Path, name: str, seed: int) -> str:
    installer = _random_file(tmp_path / f"{name}-1.0.pkg", MIB, seed)
    ref = d.package(name, "1.0", platform="mac", installer=str(installer), to=State.PUBLISHED)
    image_store.import_artifact(d.ctx, d["edtech.grace"], Kind.PACKAGE, ref, installer)
    return ref


def _retire(d: District, kind: Kind, ref: str, by: str) -> None:
    chain.deprecate(d.ctx, d[by], kind, ref, "superseded")
    chain.retire(d.ctx, d[by], kind, ref, "withdrawn")


def _stored_refs(d: District) -> list[str]:
    return sorted(i.ref for i in image_store.stats(d.ctx, d["it.ana"]).images)


def test_gc_lets_go_of_a_retired_packages_bytes_once_it_was_retired_past_the_window(
    district: District, stored_base: str, clock: FixedClock, tmp_path: Path
) -> None:
    root = district.ctx.image_store_dir
    with ImageStore(root) as store:
        before = set(store.names())
    old = _stored_package(district, tmp_path, "scratch", seed=11)
    with ImageStore(root) as store:
        (name,) = set(store.names()) - before
        own_chunks = len(store.index(name).unique_ids())
    _retire(district, Kind.PACKAGE, old, by="edtech.grace")
    _age(root, 48)

    assert image_store.gc(district.ctx, district["it.ana"]).reclaimed == []  # retired just now
    clock.advance(hours=25)
    dry = image_store.gc(district.ctx, district["it.ana"], dry_run=True)
    assert (dry.reclaimed, dry.removed_indexes, dry.removed_chunks) == ([old], [name], own_chunks)
    assert _stored_refs(district) == sorted([stored_base, old])  # a dry run changes nothing

    done = image_store.gc(district.ctx, district["it.ana"])

    assert (done.reclaimed, done.removed_indexes) == ([old], [name])
    assert done.removed_chunks == own_chunks > 0  # random bytes: nothing shared with the base
    assert _stored_refs(district) == [stored_base]
    assert not (root / "indexes" / f"{name}.caibx").exists()
    assert image_store.verify(district.ctx, district["it.ana"]).ok
    entries = audit.entries(district.ctx, district["it.ana"])
    (reclaim,) = [e for e in entries if e.action == "package.reclaim"]
    assert reclaim.object_ref == old
    again = image_store.gc(district.ctx, district["it.ana"])
    assert (again.reclaimed, again.removed_chunks, again.removed_indexes) == ([], 0, [])


def test_gc_keeps_a_retired_entry_while_a_live_image_or_an_unfinished_deployment_delivers_it(
    district: District, clock: FixedClock, tmp_path: Path
) -> None:
    base_file = _random_file(tmp_path / "mac-elementary-2026.1.dmg", 2 * MIB, seed=21)
    base = district.base(platform="mac", artifact=str(base_file))
    image_store.import_artifact(district.ctx, district["it.ana"], Kind.BASE_IMAGE, base, base_file)
    carried = _stored_package(district, tmp_path, "firefox", seed=22)
    deployed = _stored_package(district, tmp_path, "scratch", seed=23)
    cart = district.custom(base=base, packages=[carried])  # a draft: live, not retired
    assets = tmp_path / "assets.csv"
    assets.write_text(
        "Hostname,Building,Room,Platform,Model,Serial,MAC,IP\n"
        'cart-01,101,cart,mac,"MacBookAir10,1",SN5001,02:00:00:00:05:01,127.0.0.81\n'
    )
    inventory.import_clients(district.ctx, district["it.ana"], assets)
    windows.add_window(
        district.ctx, district["btc.lincoln"], building="101", days="mon-fri", start="18:00",
        end="06:00",
    )  # fmt: skip
    deployment = deployments.create(
        district.ctx, district["btc.lincoln"], DeploymentSpec(package=deployed, buildings=("101",))
    )
    _retire(district, Kind.BASE_IMAGE, base, by="it.ana")
    _retire(district, Kind.PACKAGE, carried, by="edtech.grace")
    _retire(district, Kind.PACKAGE, deployed, by="edtech.grace")
    clock.advance(hours=25)
    _age(district.ctx.image_store_dir, 48)

    kept = image_store.gc(district.ctx, district["it.ana"])

    assert (kept.reclaimed, kept.removed_chunks) == ([], 0)
    assert _stored_refs(district) == sorted([base, carried, deployed])

    deployments.cancel(district.ctx, district["btc.lincoln"], deployment.id, reason="withdrawn")
    chain.retire(district.ctx, district["btc.lincoln"], Kind.CUSTOM_IMAGE, cart, "not needed")
    # The customized image was retired just now: what it delivers waits out the window.
    assert image_store.gc(district.ctx, district["it.ana"]).reclaimed == [deployed]
    clock.advance(hours=25)
    assert sorted(image_store.gc(district.ctx, district["it.ana"]).reclaimed) == sorted(
        [base, carried]
    )
    assert _stored_refs(district) == []


def test_a_sunset_brought_forward_after_release_is_signed_anew_at_the_daily_check(
    district: District, stored_base: str
) -> None:
    def signed_sunset() -> object:
        data = image_store.signed_manifest(
            district.ctx, district["it.ana"], Kind.BASE_IMAGE, stored_base
        )
        return signing.verify(
            data,
            image_store.public_keys(district.ctx),
            kind="base_image",
            scope="district",
            name="pc-elementary",
            today=district.today,
        ).sunset

    assert signed_sunset() == district.days(365)
    catalog.revise(
        district.ctx,
        district["it.ana"],
        Kind.BASE_IMAGE,
        stored_base,
        catalog.Revision(sunset_date=district.days(30), reason="hardware refresh moved up"),
    )
    assert signed_sunset() == district.days(365)  # stale until the check runs

    sunset.run_daily_check(district.ctx)

    assert signed_sunset() == district.days(30)
    assert image_store.refresh_signatures(district.ctx) == []  # current now: nothing to do


def test_an_artifact_replaced_after_import_is_not_signed_until_its_new_bytes_are_imported(
    district: District, tmp_path: Path
) -> None:
    first = _random_file(tmp_path / "firefox-128.0.pkg", 2 * MIB, seed=7)
    ref = district.package(platform="mac", installer=str(first))
    ed = district["edtech.grace"]
    image_store.import_artifact(district.ctx, ed, Kind.PACKAGE, ref, first)
    second = _random_file(tmp_path / "firefox-128.0-fixed.pkg", 2 * MIB, seed=8)
    catalog.revise(
        district.ctx,
        ed,
        Kind.PACKAGE,
        ref,
        catalog.Revision(artifact=str(second), reason="the vendor re-signed the installer"),
    )

    district.walk(Kind.PACKAGE, ref, State.PUBLISHED, author="edtech.grace")

    # The store holds the first file's bytes: signing them as this release would
    # have the clients pull bytes the chain never judged.
    with pytest.raises(NotFound, match="not released yet|import"):
        image_store.signed_manifest(district.ctx, ed, Kind.PACKAGE, ref)
    made = image_store.import_artifact(district.ctx, ed, Kind.PACKAGE, ref, second)
    assert made.signed
    data = image_store.signed_manifest(district.ctx, ed, Kind.PACKAGE, ref)
    trusted = image_store.public_keys(district.ctx)
    got = signing.verify(
        data, trusted, today=district.today, kind="package", scope="district", name="firefox"
    )
    (index,) = (district.ctx.image_store_dir / "indexes").glob("*-package-firefox-128.0.caibx")
    signing.check_index(got, index.read_bytes())
    assert got.size == second.stat().st_size


def test_bytes_stored_before_their_file_digest_was_kept_are_not_signed_until_imported_again(
    district: District, stored_base: str, base_file: Path
) -> None:
    it = district["it.ana"]
    with transaction(district.ctx.engine) as s:
        m = s.exec(select(ImageManifest)).one()
        m.artifact_sha256 = None  # as a row from before migration 0017 has it
        s.add(m)
    sunset.run_daily_check(district.ctx)  # re-checks every release's signature

    with pytest.raises(NotFound, match="another file than its artifact: import it again"):
        image_store.signed_manifest(district.ctx, it, Kind.BASE_IMAGE, stored_base)
    again = image_store.import_artifact(district.ctx, it, Kind.BASE_IMAGE, stored_base, base_file)

    assert again.signed and again.new_chunks == 0
    assert image_store.signed_manifest(district.ctx, it, Kind.BASE_IMAGE, stored_base)


def test_an_import_tells_its_two_passes_over_the_file_each_up_to_its_size(
    district: District, base_file: Path
) -> None:
    ref = district.base(artifact=str(base_file))
    told: list[tuple[str, int, int]] = []

    image_store.import_artifact(
        district.ctx,
        district["it.ana"],
        Kind.BASE_IMAGE,
        ref,
        base_file,
        progress=lambda phase, done, total: told.append((phase, done, total)),
    )

    phases = [p for p, _, _ in told]
    assert phases == sorted(phases)  # "checking" (its SHA-256) before "importing"
    for phase in ("checking", "importing"):
        mine = [(done, total) for p, done, total in told if p == phase]
        assert mine and mine[-1] == (8 * MIB, 8 * MIB)


def test_a_first_import_hashes_the_file_once_before_it_reads_it_into_the_store(
    district: District,
    stored_base: str,
    base_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lab = district.custom("101", "lab", "1.0", base=stored_base)
    overlay = _derivative(base_file, tmp_path / "lab-1.0.img", changed=0.05, seed=3)
    hashed: list[Path] = []
    real = image_store.sha256_file

    def counted(path: Path, **kwargs: Any) -> str:
        hashed.append(path)
        return real(path, **kwargs)

    for module in (catalog, image_store):
        monkeypatch.setattr(module, "sha256_file", counted)

    image_store.import_artifact(
        district.ctx, district["btc.lincoln"], Kind.CUSTOM_IMAGE, lab, overlay
    )

    assert hashed == [overlay]
    shown = catalog.show(district.ctx, district["btc.lincoln"], Kind.CUSTOM_IMAGE, lab)
    assert shown.artifact_ref == str(overlay.resolve())
    assert shown.artifact_sha256 == hashlib.sha256(overlay.read_bytes()).hexdigest()


def test_a_file_rewritten_between_its_check_and_its_import_is_not_taken_in(
    district: District, base_file: Path
) -> None:
    ref = district.base(artifact=str(base_file))

    def rewrite_once_checked(phase: str, done: int, total: int) -> None:
        if phase == "checking" and done == total:
            _random_file(base_file, total, seed=99)

    with pytest.raises(SourceChanged, match="changed while it was imported"):
        image_store.import_artifact(
            district.ctx,
            district["it.ana"],
            Kind.BASE_IMAGE,
            ref,
            base_file,
            progress=rewrite_once_checked,
        )

    with transaction(district.ctx.engine) as session:
        assert session.exec(select(ImageManifest)).all() == []
    assert image_store.stats(district.ctx, district["it.ana"]).images == []


def test_a_folder_or_a_missing_file_is_refused_by_name_and_nothing_is_stored(
    district: District, base_file: Path, tmp_path: Path
) -> None:
    ref = district.base(artifact=str(base_file))
    it = district["it.ana"]

    with pytest.raises(InvalidInput, match="is a folder: import the image file in it"):
        image_store.import_artifact(district.ctx, it, Kind.BASE_IMAGE, ref, tmp_path)
    with pytest.raises(NotFound, match="no file"):
        image_store.import_artifact(district.ctx, it, Kind.BASE_IMAGE, ref, tmp_path / "nope.img")

    assert image_store.stats(district.ctx, it).images == []
