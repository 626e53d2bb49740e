"""``orchestrator image import``, ``package import`` and ``orchestrator store``: the
image store from the command line (see services/image_store.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from orchestrator.cli import render
from orchestrator.cli.app import JSON_OPTION, HandledGroup, console, print_json, state
from orchestrator.domain.states import Kind
from orchestrator.services import agent_bundle, image_store, staging, vault

store_app = typer.Typer(
    cls=HandledGroup,
    help="The image store: what it holds and shares, its checks, its signing keys.",
    no_args_is_help=True,
)

points_app = typer.Typer(
    cls=HandledGroup,
    help="Building distribution points: cache hosts the building's clients fetch images from.",
    no_args_is_help=True,
)

FILE = Annotated[
    Path, typer.Argument(help="The artifact: a WIM, raw or qcow2 disk image, a package.")
]


def size(n: int | None) -> str:
    """Bytes as people read them (binary units)."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _said(v: image_store.ImportView) -> str:
    lines = [
        f"imported {v.ref} ({v.artifact}, {size(v.size)}): {v.chunks} chunks, "
        f"{v.new_chunks} new, {size(v.new_bytes)} added to the store",
    ]
    if v.shared_with_base is not None:
        share = v.shared_with_base / v.size if v.size else 0.0
        lines.append(f"shares {size(v.shared_with_base)} ({share:.0%}) with its base")
    if v.chain_restarted:
        lines.append("its content changed: the approval chain starts over")
    lines.append("signed: released" if v.signed else "signed when the chain releases it")
    return "\n".join(lines)


def _bar(*columns: ProgressColumn) -> Progress:
    """A progress bar on a terminal; a pipe or a log gets the result line only."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        *columns,
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


def _import(kind: Kind, file: Path, ref: str, as_json: bool) -> None:
    with _bar(DownloadColumn(binary_units=True), TimeRemainingColumn()) as bar:
        task = bar.add_task(f"checking {file.name}", total=None)
        current = "checking"

        def shown(phase: str, done: int, total: int) -> None:
            nonlocal current
            if phase != current:  # a new pass over the file: its own estimate of the time left
                current = phase
                bar.reset(task, description=f"{phase} {file.name}", total=total)
            bar.update(task, completed=done, total=total)

        view = image_store.import_artifact(
            state.ctx, state.actor(), kind, ref, file, progress=shown
        )
    if as_json:
        print_json(view)
    else:
        console.print(_said(view), highlight=False, markup=False, soft_wrap=True)


def image_import(
    file: FILE,
    ref: Annotated[
        str, typer.Argument(help="The image: pc-high@2026.1 (base) or 101/lab@1.2 (customized).")
    ],
    as_json: bool = JSON_OPTION,
) -> None:
    """Put an image's bytes in the store; only what the store lacks is kept.

    IT imports base images, the building's technician its customized images."""
    _import(Kind.CUSTOM_IMAGE if "/" in ref else Kind.BASE_IMAGE, file, ref, as_json)


def package_import(
    file: FILE,
    ref: Annotated[str, typer.Argument(help="The package, e.g. scratch@3.30.")],
    as_json: bool = JSON_OPTION,
) -> None:
    """Put a package's installer in the store."""
    _import(Kind.PACKAGE, file, ref, as_json)


@store_app.command("stats")
def stats_cmd(as_json: bool = JSON_OPTION) -> None:
    """Logical vs stored bytes, and what each customized image shares with its base."""
    figures = image_store.stats(state.ctx, state.actor())
    if as_json:
        print_json(figures)
        return
    if not figures.images:
        console.print("the store is empty", highlight=False)
        return
    t = Table(
        title=f"image store ({render.counted(len(figures.images), 'image')})", **render.TABLE_STYLE
    )
    for heading in ("image", "state", "size", "chunks", "stored", "shared with base", "signed"):
        t.add_column(
            heading, justify="right" if heading in ("size", "chunks", "stored") else "left"
        )
    for i in figures.images:
        shared = (
            f"{size(i.shared_with_base)} of {escape(i.base or '')}"
            if i.shared_with_base is not None
            else "-"
        )
        t.add_row(
            escape(i.ref),
            i.state,
            size(i.size),
            str(i.chunks),
            size(i.stored_bytes),
            shared,
            "yes" if i.signed else "no",
        )
    console.print(t)
    console.print(
        f"logical {size(figures.logical_bytes)}, stored {size(figures.stored_bytes)} "
        f"({figures.ratio:.1f}x)",
        highlight=False,
    )


@store_app.command("verify")
def verify_cmd() -> None:
    """Re-hash every chunk of every stored image, and check each index (IT)."""
    with _bar(MofNCompleteColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task("checking chunks", total=None)

        def shown(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        check = image_store.verify(state.ctx, state.actor(), progress=shown)
    for line in check.bad_indexes:
        console.print(f"index: {line}", highlight=False, markup=False)
    for chunk_id in check.chunks.missing:
        console.print(f"missing chunk {chunk_id}", highlight=False)
    for chunk_id, why in check.chunks.corrupt:
        console.print(f"corrupt chunk {chunk_id}: {why}", highlight=False, markup=False)
    console.print(
        f"{render.counted(check.images, 'image')}, "
        f"{render.counted(check.chunks.checked, 'chunk')} checked: "
        + ("all good" if check.ok else "PROBLEMS FOUND"),
        highlight=False,
    )
    if not check.ok:
        raise typer.Exit(1)


@store_app.command("gc")
def gc_cmd(
    protect_hours: Annotated[
        int, typer.Option(help="Keep anything younger than this (an import may be writing it).")
    ] = 24,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go.")] = False,
) -> None:
    """Remove chunks no stored image references, past the protection window (IT).

    Also the bytes of entries retired before the window that nothing delivers
    any more."""
    r = image_store.gc(state.ctx, state.actor(), protect_hours=protect_hours, dry_run=dry_run)
    verb = "would remove" if r.dry_run else "removed"
    if r.reclaimed:
        n = len(r.reclaimed)
        console.print(
            f"{'would let go of' if r.dry_run else 'let go of'} the bytes of {n} retired "
            f"{'entry' if n == 1 else 'entries'} nothing delivers any more: "
            + ", ".join(r.reclaimed),
            highlight=False,
            markup=False,
        )
    console.print(
        f"{verb} {render.counted(r.removed_chunks, 'chunk')} ({size(r.removed_bytes)}) and "
        f"{render.counted(len(r.removed_indexes), 'index file')}; "
        f"{render.counted(r.referenced, 'chunk')} in use kept, "
        f"{r.young} younger than {protect_hours} h kept",
        highlight=False,
        markup=False,
    )


@store_app.command("keys")
def keys_cmd() -> None:
    """The public keys manifests are signed with: what distribution points trust."""
    keys = image_store.public_key_lines(state.checked_ctx())
    if not keys:
        console.print("no signing key yet: one is made at the first release of a stored image")
    for line in keys:
        console.print(line, highlight=False, soft_wrap=True)


@store_app.command("agent")
def agent_cmd(
    target: Annotated[
        list[str] | None,
        typer.Option(
            help="A client platform as '<wheel platform tag>:<python>', e.g. "
            "macosx_11_0_arm64:3.9.6; repeat for each. Default: this machine's.",
        ),
    ] = None,
    find_links: Annotated[
        Path | None, typer.Option(help="A folder of wheels (a district mirror) pip looks in.")
    ] = None,
    no_index: Annotated[
        bool, typer.Option("--no-index", help="Only that folder: never the package index.")
    ] = False,
) -> None:
    """Build the pull agent's bundle that 'run install_agent' puts on clients (IT)."""
    targets = tuple(agent_bundle.Target.parse(t) for t in target or ())
    b = agent_bundle.build(
        state.ctx, state.actor(), targets=targets, find_links=find_links, no_index=no_index
    )
    console.print(
        f"agent bundle {b.bundle_id[:12]} (orchestrator {b.version}): {len(b.wheels)} wheels, "
        f"{size(b.size)}, for {', '.join(b.targets) or 'this machine'}, in {b.folder}\n"
        + "".join(
            f"{where}: without {', '.join(names)} (no wheel for it): its clients pull whole "
            "the chunks of a seed that has no saved index\n"
            for where, names in b.without.items()
        )
        + "install it on a building's clients with "
        "'orchestrator run install_agent --building NUMBER'",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


def _print_point(p: staging.PointView) -> None:
    """What ``points add`` and ``points set`` leave the point as: every setting, one line."""
    console.print(
        f"building {p.building}: distribution point {p.ssh_user}@{p.address}:{p.ssh_port} "
        f"({p.fingerprint} pinned), store {p.root}, clients fetch from {p.url}, "
        + (f"at most {p.bandwidth_kib} KiB/s" if p.bandwidth_kib else "no bandwidth limit"),
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


@points_app.command("add")
def points_add(
    building: Annotated[str, typer.Option(help="The building it serves.")],
    address: Annotated[str, typer.Option(help="Its SSH address.")],
    ssh_user: Annotated[str, typer.Option(help="The login the orchestrator writes as.")],
    root: Annotated[str, typer.Option(help="The store's folder on it, e.g. /srv/images.")],
    url: Annotated[str, typer.Option(help="Where clients fetch, e.g. https://dp-101:8443.")],
    ssh_port: Annotated[int, typer.Option(help="Its SSH port.", min=1, max=65535)] = 22,
    bandwidth: Annotated[
        int, typer.Option(help="KiB/s staging may use on the link to it; 0: no limit.", min=0)
    ] = 0,
) -> None:
    """Give a building its distribution point (IT); its SSH key is pinned now."""
    p = staging.add_point(
        state.ctx,
        state.actor(),
        staging.PointSpec(
            building=building,
            address=address,
            ssh_user=ssh_user,
            root=root,
            url=url,
            ssh_port=ssh_port,
            bandwidth_kib=bandwidth,
        ),
    )
    _print_point(p)


@points_app.command("list")
def points_list(as_json: bool = JSON_OPTION) -> None:
    """The distribution points of the buildings you may see."""
    rows = staging.list_points(state.ctx, state.actor())
    if as_json:
        print_json(rows)
        return
    t = Table(title=f"distribution points ({len(rows)})", **render.TABLE_STYLE)
    t.add_column("building")
    for heading in ("ssh", "host key", "store", "clients fetch from"):
        t.add_column(heading, overflow="fold")  # an address cut short is no address
    t.add_column("limit", no_wrap=True)
    for p in rows:
        t.add_row(
            p.building,
            escape(f"{p.ssh_user}@{p.address}:{p.ssh_port}"),
            p.fingerprint,
            escape(p.root),
            escape(p.url),
            f"{p.bandwidth_kib} KiB/s" if p.bandwidth_kib else "none",
        )
    console.print(t if rows else "no distribution points")


WHY = Annotated[str, typer.Option(help="Required: why (the audit log keeps it).")]


@points_app.command("set")
def points_set(
    building: Annotated[str, typer.Option(help="The building whose point changes.")],
    reason: WHY = "",
    address: Annotated[str | None, typer.Option(help="A new SSH address.")] = None,
    ssh_port: Annotated[int | None, typer.Option(help="A new SSH port.", min=1, max=65535)] = None,
    ssh_user: Annotated[str | None, typer.Option(help="A new login to write as.")] = None,
    root: Annotated[str | None, typer.Option(help="A new store folder on it.")] = None,
    url: Annotated[str | None, typer.Option(help="A new address clients fetch from.")] = None,
    bandwidth: Annotated[
        int | None, typer.Option(help="A new limit in KiB/s; 0: no limit.", min=0)
    ] = None,
    repin: Annotated[
        bool, typer.Option("--repin", help="Pin the SSH key the host offers now.")
    ] = False,
) -> None:
    """Change a building's distribution point (IT); a new host or folder is staged anew.

    A new address or port, or --repin, pins the key the host offers now. A new
    address, port or folder is another store: what was staged is forgotten and
    the scheduler stages again.
    """
    p = staging.change_point(
        state.ctx,
        state.actor(),
        building,
        staging.PointChange(
            reason=reason,
            address=address,
            ssh_port=ssh_port,
            ssh_user=ssh_user,
            root=root,
            url=url,
            bandwidth_kib=bandwidth,
            repin=repin,
        ),
    )
    _print_point(p)


@points_app.command("remove")
def points_remove(
    building: Annotated[str, typer.Option(help="The building whose point goes.")],
    reason: WHY = "",
) -> None:
    """Take a building's distribution point away (IT); its computers fetch from the orchestrator."""
    forgotten = staging.remove_point(state.ctx, state.actor(), building, reason=reason)
    console.print(
        f"building {building} has no distribution point now; "
        f"{render.counted(forgotten, 'staging')} to it forgotten",
        highlight=False,
    )


@store_app.command("stage")
def stage_cmd(
    ref: Annotated[str, typer.Argument(help="A released image or package.")],
    building: Annotated[str, typer.Option(help="The building whose point gets it.")],
    package: Annotated[bool, typer.Option("--package", help="REF is a package.")] = False,
) -> None:
    """Send a building's distribution point what it lacks of a released image."""
    kind = Kind.PACKAGE if package else (Kind.CUSTOM_IMAGE if "/" in ref else Kind.BASE_IMAGE)
    credentials = vault.credentials_from_settings(state.ctx, state.settings)
    with _bar(MofNCompleteColumn(), TextColumn("chunks"), TimeRemainingColumn()) as bar:
        task = bar.add_task(f"staging {ref} to {building}", total=None)

        def shown(v: staging.StagingView) -> None:
            bar.update(task, completed=v.chunks_sent, total=v.chunks_total or None)

        done = staging.stage(
            state.ctx, state.actor(), kind, ref, building, credentials=credentials, progress=shown
        )
    console.print(
        f"staged {done.ref} to building {done.building}: {done.chunks_sent} of "
        f"{done.chunks_total} missing chunks sent, {size(done.bytes_sent)} in all",
        highlight=False,
        markup=False,
    )


@store_app.command("prune")
def prune_cmd(
    building: Annotated[str, typer.Option(help="The building whose point is pruned.")],
) -> None:
    """Take off a building's point what 'store gc' let go of (IT).

    The images the store no longer holds, and what a staging cut short left
    there."""
    credentials = vault.credentials_from_settings(state.ctx, state.settings)
    r = staging.prune(state.ctx, state.actor(), building, credentials=credentials)
    n = render.counted
    strays = [n(r.strays, "chunk") + " no index names"] if r.strays else []
    strays += [n(r.temporaries, "temporary file")] if r.temporaries else []
    console.print(
        f"pruned building {r.building}'s point: {n(len(r.removed_images), 'image')} and "
        f"{n(r.removed_chunks, 'chunk')} removed, {n(r.kept_images, 'image')} kept"
        + (f" ({', '.join(r.removed_images)})" if r.removed_images else "")
        + (f"; also removed {' and '.join(strays)}" if strays else ""),
        highlight=False,
        markup=False,
    )


@store_app.command("staged")
def staged_cmd(
    building: Annotated[str, typer.Option(help="The building.")],
    as_json: bool = JSON_OPTION,
) -> None:
    """What was staged to a building's point, newest first, with how far each got."""
    rows = staging.stagings(state.ctx, state.actor(), building)
    if as_json:
        print_json(rows)
        return
    t = Table(title=f"staged to building {building}", **render.TABLE_STYLE)
    for heading in ("#", "image", "state", "chunks", "sent", "started", "message"):
        t.add_column(heading)
    zone = state.ctx.zone
    for s in rows:
        t.add_row(
            str(s.id),
            escape(s.ref),
            s.state,
            f"{s.chunks_sent}/{s.chunks_total}",
            size(s.bytes_sent),
            render.when(s.started_at, zone),
            escape(s.message),
        )
    console.print(t if rows else "nothing staged")
