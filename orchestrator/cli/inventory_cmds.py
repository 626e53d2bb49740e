"""``orchestrator clients`` and ``orchestrator inventory``: the district's computers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from orchestrator.cli import render
from orchestrator.cli.app import JSON_OPTION, HandledGroup, console, print_json, state
from orchestrator.cli.progress import PROBE_STYLE, STYLE, HostProgress, ProbeProgress
from orchestrator.errors import RemoteError
from orchestrator.services import gather, inventory, reach, runs, vault

clients_app = typer.Typer(
    cls=HandledGroup, help="Client computers in the buildings.", no_args_is_help=True
)
inventory_app = typer.Typer(
    cls=HandledGroup, help="The Ansible inventory of the district.", no_args_is_help=True
)


def _clients_table(rows: list[inventory.ClientView], *, facts: bool = False) -> None:
    t = Table(title=f"clients ({len(rows)})", **render.TABLE_STYLE)
    headings = ["host", "building", "room", "platform", "model", "address", "image", "flag"]
    if facts:
        headings[5:6] = ["os", "serial", "free disk"]
    packages = any(c.installed for c in rows)
    if packages:  # what deployments installed, by release
        headings.insert(headings.index("image") + 1, "installed")
    for heading in headings:
        t.add_column(heading, no_wrap=heading in ("host", "address", "installed"))
    for c in rows:
        where = (
            [escape(c.os or "-"), c.serial, render.kib(c.disk_free_kb)]
            if facts
            else [f"{c.address}:{c.port}"]
        )
        t.add_row(
            c.hostname,
            c.building,
            escape(c.room),
            c.platform.value,
            escape(c.model),
            *where,
            c.current_image or "-",
            *([escape(", ".join(c.installed) or "-")] if packages else []),
            f"[red]{escape(c.flag)}[/]" if c.flag else "",
        )
    console.print(t if rows else "no clients")


@clients_app.command("list")
def clients_list(
    building: Annotated[str | None, typer.Option(help="Only this building.")] = None,
    room: Annotated[str | None, typer.Option(help="Only this room, lab or cart.")] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Clients you may see, by building and room, with hardware and host key flags."""
    rows = inventory.list_clients(state.ctx, state.actor(), building=building, room=room)
    if as_json:
        print_json(rows)
        return
    _clients_table(rows)


@clients_app.command("gather")
def clients_gather(
    building: Annotated[
        str | None,
        typer.Option(help="Only this building (default: every building you may run on)."),
    ] = None,
    room: Annotated[str | None, typer.Option(help="Only this room, lab or cart.")] = None,
    forks: Annotated[int, typer.Option(help="Hosts worked on at once.")] = 10,
    as_json: bool = JSON_OPTION,
) -> None:
    """Gather facts (model, serial, OS, disk, software, image) and update each client."""
    title = "gather_facts on " + (f"building {building}" if building else "your buildings")
    title += f", room {room}" if room else ""
    with HostProgress(console, title, quiet=as_json) as progress:
        view = gather.gather(
            state.ctx,
            state.actor(),
            building=building,
            room=room,
            forks=forks,
            credentials=_credentials(),
            on_event=progress.on_event,
            should_cancel=progress.should_cancel,
        )
    if as_json:
        print_json(view)
        return
    for run in view.runs:
        console.print(_results_table(run))
        if run.reason:
            console.print(run.reason)
    _clients_table(view.clients, facts=True)
    if any(run.status != "successful" for run in view.runs):
        raise typer.Exit(9)


@clients_app.command("import")
def clients_import(
    file: Annotated[Path, typer.Argument(help="CSV asset export, or Ansible INI/YAML inventory.")],
    format: Annotated[
        str | None, typer.Option(help="csv, ini or yaml (default: from the file name).")
    ] = None,
    pin: Annotated[
        bool,
        typer.Option(
            "--pin/--no-pin",
            help="Probe the imported Macs and pin the SSH host key each offers (default).",
        ),
    ] = True,
) -> None:
    """Import clients: all rows or none; duplicates are refused, never merged.

    Then the imported Macs are probed and their SSH host keys pinned at first
    probe; an unreachable Mac stays imported, unpinned until its first probe.
    """
    result = inventory.import_clients(state.ctx, state.actor(), file, format=format)
    console.print(
        f"imported {result.imported} clients into building(s) {', '.join(result.buildings)}"
    )
    if result.off_list:
        console.print(
            f"[yellow]{len(result.off_list)} on models off the Approved Technology List or past "
            f"end of support:[/] {', '.join(result.off_list)}"
        )
    if result.ignored:
        console.print(
            f"not taken from the inventory: {', '.join(result.ignored)} (the orchestrator's own "
            "connection settings apply; IT stores secrets with 'orchestrator credentials set')",
            highlight=False,
        )
    if not pin:
        console.print(
            "host keys not pinned (--no-pin): each Mac's is pinned at its first "
            "'orchestrator clients probe'",
            highlight=False,
        )
        return
    with ProbeProgress(console, "pinning the imported Macs' host keys") as progress:
        pinned = reach.pin_imported(
            state.ctx, state.actor(), file, format=format, on_result=progress.on_result
        )
    if not pinned:
        return
    done = [r for r in pinned if r.result == reach.PINNED]
    missed = [r for r in pinned if r.result != reach.PINNED]
    console.print(f"pinned at first probe: {len(done)} of {len(pinned)} Macs", highlight=False)
    if missed:
        console.print(
            f"[yellow]not reached, left unpinned:[/] {', '.join(r.hostname for r in missed)} "
            "(still imported; each is pinned at its first 'orchestrator clients probe')",
            highlight=False,
        )


def _probe_table(results: list[reach.ProbeResult], title: str) -> Table:
    t = Table(title=title, **render.TABLE_STYLE)
    t.add_column("host", no_wrap=True)
    t.add_column("transport", no_wrap=True)
    t.add_column("result")
    # A fingerprint folds onto more lines in a narrow terminal rather than being cut;
    # each one is also printed whole, on its host's progress line.
    t.add_column("fingerprint", overflow="fold")
    t.add_column("message")
    for r in results:
        t.add_row(
            r.hostname,
            r.transport,
            f"[{PROBE_STYLE.get(r.result, 'white')}]{r.result}[/]",
            r.fingerprint or "-",
            escape(r.message),
        )
    return t


@clients_app.command("probe")
def clients_probe(
    building: Annotated[
        str | None, typer.Option(help="Only this building (default: every one you manage).")
    ] = None,
    host: Annotated[
        list[str] | None, typer.Option("--host", help="Only this client (repeat for more).")
    ] = None,
    pin: Annotated[
        bool,
        typer.Option("--pin/--no-pin", help="Pin the key of Macs that have none (default)."),
    ] = True,
    as_json: bool = JSON_OPTION,
) -> None:
    """Reach clients: Macs by SSH host key (pinned at first probe), PCs by WinRM port.

    A Mac offering another key than its pinned one is refused; the offer is kept
    for review ('clients repin'). Exits 8 when a host key changed or a client
    could not be reached.
    """
    title = "probe " + (f"building {building}" if building else "your buildings")
    if host:
        title = f"probe {', '.join(host)}" + (f" in building {building}" if building else "")
    with ProbeProgress(console, title, quiet=as_json) as progress:
        results = reach.probe(
            state.ctx,
            state.actor(),
            building=building,
            hostnames=host,
            pin=pin,
            on_result=progress.on_result,
        )
    bad = [r for r in results if r.result in (reach.KEY_CHANGED, reach.UNREACHABLE)]
    if as_json:
        print_json(results)
    else:
        console.print(_probe_table(results, f"{title} ({len(results)})"))
        changed = [r for r in results if r.result == reach.KEY_CHANGED]
        for r in changed:
            console.print(
                f"[red]host key changed:[/] {r.hostname} offers {r.fingerprint}, "
                f"pinned is {r.pinned_fingerprint}",
                highlight=False,
            )
        if changed:
            console.print(
                "Runs refuse these hosts until their key is reviewed. After a known swap or "
                "reinstall: orchestrator clients repin HOST --reason TEXT",
                highlight=False,
            )
    if bad:
        raise typer.Exit(RemoteError.exit_code)


@clients_app.command("repin")
def clients_repin(
    hostname: Annotated[str, typer.Argument(help="The Mac whose host key changed.")],
    reason: Annotated[
        str,
        typer.Option(help="Required: why the key changed (hardware swap, reinstall, ticket)."),
    ] = "",
    as_json: bool = JSON_OPTION,
) -> None:
    """Pin the SSH host key a Mac offers now, after a known hardware swap or reinstall.

    Refused when the key changed again since it was refused: probe again and review.
    """
    result = reach.repin(state.ctx, state.actor(), hostname, reason=reason)
    if as_json:
        print_json(result)
        return
    console.print(result.message, highlight=False)


@inventory_app.command("export")
def inventory_export(
    output: Annotated[Path, typer.Option(help="Where to write the YAML inventory.")] = Path(
        "inventory/district.yml"
    ),
    building: Annotated[str | None, typer.Option(help="Only this building.")] = None,
) -> None:
    """Write a standard Ansible YAML inventory (groups per building, level, platform, room)."""
    count = inventory.export_inventory(state.ctx, state.actor(), output, building=building)
    console.print(f"wrote {count} hosts to {output} (try: ansible-inventory -i {output} --list)")


runs_app = typer.Typer(
    cls=HandledGroup, help="Playbook runs and their per-host results.", no_args_is_help=True
)


def _credentials() -> runs.Credentials:
    """Settings (ORCHESTRATOR_SSH_KEY_FILE, …) win; otherwise the encrypted store."""
    return vault.credentials_from_settings(state.ctx, state.settings)


def _results_table(view: runs.RunView) -> Table:
    t = Table(
        title=f"run {view.id}: {view.playbook}"
        + (f" {view.delivered}" if view.delivered else "")
        + f" on building {view.building} — {view.status}",
        **render.TABLE_STYLE,
    )
    for heading in (
        "host",
        "result",
        "ok",
        "changed",
        "failed",
        "unreachable",
        "skipped",
        "failing task: message",
    ):
        t.add_column(heading, no_wrap=heading == "host")
    for h in view.hosts:
        t.add_row(
            h.hostname,
            f"[{STYLE.get(h.status, 'white')}]{h.status}[/]"
            + (" [yellow]· reboot required[/]" if h.reboot_required else ""),
            str(h.ok),
            str(h.changed),
            str(h.failed),
            str(h.unreachable),
            str(h.skipped),
            escape(f"{h.failed_task}: {h.message}" if h.failed_task else ""),
        )
    return t


def run_command(
    playbook: Annotated[str, typer.Argument(help="One of the project's playbooks, e.g. ping.")],
    building: Annotated[str, typer.Option(help="Building number.")],
    room: Annotated[str | None, typer.Option(help="Only this room, lab or cart.")] = None,
    package: Annotated[
        str | None,
        typer.Option(help="For install_package: a released package, e.g. firefox@128.0."),
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(help="For apply_image and smoke_checks: e.g. 101/lab@1.2 or pc-high@2026.1."),
    ] = None,
    forks: Annotated[int, typer.Option(help="Hosts worked on at once.")] = 10,
    as_json: bool = JSON_OPTION,
) -> None:
    """Run a playbook on a building's clients, with live per-host progress."""
    what = package or image
    title = f"{playbook}{f' {what}' if what else ''} on building {building}" + (
        f", room {room}" if room else ""
    )
    s = state.settings
    with HostProgress(console, title, quiet=as_json) as progress:
        view = runs.run_playbook(
            state.ctx,
            state.actor(),
            playbook,
            building=building,
            room=room,
            package=package,
            image=image,
            distribution=runs.DistributionPoint(s.distribution_address, s.distribution_port),
            forks=forks,
            credentials=_credentials(),
            on_event=progress.on_event,
            should_cancel=progress.should_cancel,
        )
    if as_json:
        print_json(view)
        return
    console.print(_results_table(view))
    if view.reason:
        console.print(view.reason)
    if view.status != "successful":
        raise typer.Exit(9)


@runs_app.command("show")
def runs_show(
    run_id: Annotated[int, typer.Argument(help="Run number.")], as_json: bool = JSON_OPTION
) -> None:
    """A past run: per-host results and the failing task's message."""
    view = runs.show(state.ctx, state.actor(), run_id)
    if as_json:
        print_json(view)
    else:
        console.print(_results_table(view))


@runs_app.command("list")
def runs_list(as_json: bool = JSON_OPTION) -> None:
    """Recent runs you may see."""
    views = runs.list_runs(state.ctx, state.actor())
    if as_json:
        print_json(views)
        return
    t = Table(title="runs", **render.TABLE_STYLE)
    for heading in ("#", "playbook", "building", "by", "status", "hosts", "started"):
        t.add_column(heading)
    for v in views:
        t.add_row(
            str(v.id),
            v.playbook + (f" {v.delivered}" if v.delivered else ""),
            v.building or "-",
            v.actor,
            v.status,
            str(len(v.hosts)),
            render.when(v.started_at, state.settings.zone),
        )
    console.print(t if views else "no runs yet")
