"""``orchestrator``: the command line."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from orchestrator import __version__
from orchestrator.cli import render
from orchestrator.cli.account_cmds import accounts_app, tokens_app
from orchestrator.cli.app import (
    JSON_OPTION,
    HandledGroup,
    console,
    parse_date,
    print_json,
    state,
)
from orchestrator.cli.catalog_cmds import base_app, image_app, package_app
from orchestrator.cli.credentials_cmds import credentials_app
from orchestrator.cli.deploy_cmds import deploy_app
from orchestrator.cli.deployment_cmds import COMMANDS as DEPLOYMENT_COMMANDS
from orchestrator.cli.inventory_cmds import clients_app, inventory_app, run_command, runs_app
from orchestrator.cli.request_cmds import requests_app
from orchestrator.cli.request_report_cmds import report as requests_report
from orchestrator.cli.store_cmds import image_import, package_import, points_app, store_app
from orchestrator.cli.testing_cmds import testing_app
from orchestrator.cli.watch_cmds import COMMANDS as WATCH_COMMANDS
from orchestrator.cli.windows_cmds import windows_app
from orchestrator.domain.states import Kind
from orchestrator.errors import InvalidInput
from orchestrator.services import (
    audit,
    bootstrap,
    catalog,
    chain,
    directory,
    hardware,
    notices,
    sample,
    sunset,
)

app = typer.Typer(
    cls=HandledGroup,
    help="Disk image and software deployment orchestrator for school districts.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(base_app, name="base")
app.add_typer(image_app, name="image")
app.add_typer(package_app, name="package")
app.add_typer(clients_app, name="clients")
app.add_typer(inventory_app, name="inventory")
app.add_typer(runs_app, name="runs")
app.add_typer(credentials_app, name="credentials")
app.add_typer(accounts_app, name="accounts")
app.add_typer(tokens_app, name="tokens")
requests_app.command("report")(requests_report)
app.add_typer(requests_app, name="requests")
app.add_typer(store_app, name="store")
app.add_typer(points_app, name="points")
image_app.command("import")(image_import)
package_app.command("import")(package_import)
app.command("run")(run_command)
for _name, _command in (DEPLOYMENT_COMMANDS | WATCH_COMMANDS).items():
    deploy_app.command(_name)(_command)
app.add_typer(deploy_app, name="deploy")
app.add_typer(windows_app, name="windows")
app.add_typer(testing_app, name="testing")


def _print_version(value: bool) -> None:
    if value:
        console.print(f"orchestrator {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    as_user: Annotated[
        str | None,
        typer.Option(
            "--as", help="Act as this person (e.g. btc.lincoln).", envvar="ORCHESTRATOR_USER"
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    state.reset(as_user)


def _init(sample_district: bool) -> None:
    revision = bootstrap.init_database(state.ctx)
    url = state.ctx.engine.url.render_as_string(hide_password=True)
    console.print(f"database ready: {escape(url)} (schema {revision})")
    if sample_district:
        if sample.load(state.ctx):
            console.print(
                "sample district loaded: 7 buildings, 10 people, 42 client computers, base "
                "images, customized images and packages in every state"
            )
            console.print("try: [bold]orchestrator --as btc.lincoln image list[/]")
        else:
            console.print("sample district not loaded: the database already has buildings")


@app.command()
def init(
    sample_district: Annotated[
        bool, typer.Option("--sample-district", help="Load the sample district if empty.")
    ] = False,
) -> None:
    """Create or upgrade the database (and load the sample district)."""
    _init(sample_district)


@app.command()
def serve(
    sample_district: Annotated[
        bool, typer.Option("--sample-district", help="Load the sample district if empty.")
    ] = False,
    address: Annotated[
        str | None, typer.Option(help="Address for the web interface (default: web_address).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="Port for it (default: web_port; 0: any free one)."),
    ] = None,
) -> None:
    """Upgrade the database and run the orchestrator until stopped.

    The web interface, the REST API and the scheduler, in one process."""
    import threading

    from orchestrator.scheduler.service import serve as run_service
    from orchestrator.web import server

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S%z",
    )
    for noisy in ("alembic", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    ctx, settings = state.ctx, state.settings
    where = address or settings.web_address
    tls = server.tls_options(where, settings.web_tls_cert_file, settings.web_tls_key_file)
    _init(sample_district)

    def ready(sunset: datetime | None, housekeeping: datetime | None) -> None:
        def at(when: datetime | None, none: str) -> str:
            return f"next at {when.isoformat(timespec='minutes')}" if when else none

        console.print(
            f"orchestrator service running: daily sunset check {at(sunset, 'not scheduled')}, "
            f"store housekeeping {at(housekeeping, 'off')} ({settings.district_timezone}); "
            "Ctrl-C to stop"
        )

    def web_started(url: str) -> None:
        console.print(f"web interface and API at {url}  (API documents: {url}/api/docs)")
        if sample_district:
            names = ", ".join(u for u, *_ in sample.PEOPLE)
            console.print(
                f"sample accounts: {names}; each signs in with the password "
                f"[bold]{sample.SAMPLE_PASSWORD}[/]",
                soft_wrap=True,
            )

    stop = threading.Event()
    scheduler = threading.Thread(
        target=run_service,
        args=(ctx, settings),
        kwargs={"on_ready": ready, "stop": stop},
        name="scheduler",
    )
    scheduler.start()
    try:
        server.run(
            ctx,
            address=where,
            port=settings.web_port if port is None else port,
            on_started=web_started,
            **tls,
        )
    finally:
        stop.set()
        scheduler.join()
    console.print("orchestrator service stopped")


@app.command()
def whoami(as_json: bool = JSON_OPTION) -> None:
    """Who the CLI acts as."""
    a = state.actor()
    if as_json:
        print_json({"username": a.username, "role": a.role.value, "buildings": sorted(a.buildings)})
    else:
        console.print(f"{a.username}: {a.describe()}")


@app.command()
def buildings(as_json: bool = JSON_OPTION) -> None:
    """Buildings you may see, with their staff."""
    rows = directory.buildings(state.ctx, state.actor())
    if as_json:
        print_json(rows)
        return
    t = Table(title="buildings", **render.TABLE_STYLE)
    for c in ("number", "name", "level", "staff"):
        t.add_column(c)
    for b in rows:
        t.add_row(b.number, b.name, b.level.value, ", ".join(b.staff))
    console.print(t)


@app.command()
def people(as_json: bool = JSON_OPTION) -> None:
    """Who can act in the orchestrator (use with --as)."""
    rows = directory.people(state.checked_ctx())
    if as_json:
        print_json(rows)
        return
    t = Table(title="people", **render.TABLE_STYLE)
    for c in ("username", "name", "role", "buildings"):
        t.add_column(c)
    for p in rows:
        t.add_row(p.username, p.display_name, p.role.label, ", ".join(p.buildings) or "district")
    console.print(t)


hardware_app = typer.Typer(
    cls=HandledGroup, help="The Approved Technology List.", no_args_is_help=True
)
app.add_typer(hardware_app, name="hardware")


@hardware_app.command("list")
def hardware_list(as_json: bool = JSON_OPTION) -> None:
    """Models on the Approved Technology List."""
    rows = hardware.list_models(state.ctx, state.actor())
    if as_json:
        print_json([r.model_dump(mode="json") for r in rows])
        return
    today = state.ctx.today()
    t = Table(title="Approved Technology List", **render.TABLE_STYLE)
    for c in ("model", "platform", "approved", "end of support"):
        t.add_column(c)
    for m in rows:
        eos = m.end_of_support.isoformat() if m.end_of_support else "-"
        if m.end_of_support and m.end_of_support <= today:
            eos = f"[red]{eos} (past)[/]"
        t.add_row(
            escape(hardware.model_ref(m)),
            m.platform,
            "yes" if m.approved else "[red]no[/]",
            eos,
        )
    console.print(t)


@hardware_app.command("add")
def hardware_add(
    vendor: Annotated[str, typer.Option()],
    model: Annotated[str, typer.Option()],
    platform: Annotated[str, typer.Option(help="pc or mac")],
    end_of_support: Annotated[
        str | None, typer.Option("--end-of-support", help="YYYY-MM-DD")
    ] = None,
    not_approved: Annotated[
        bool, typer.Option("--not-approved", help="Record it as not approved.")
    ] = False,
) -> None:
    """Add a model (IT records the Hardware Standards Committee's decision)."""
    m = hardware.add_model(
        state.ctx,
        state.actor(),
        vendor=vendor,
        model=model,
        platform=platform,
        end_of_support=parse_date(end_of_support, "end-of-support"),
        approved=not not_approved,
    )
    console.print(f"added {escape(hardware.model_ref(m))}")


@hardware_app.command("update")
def hardware_update(
    ref: Annotated[str, typer.Argument(help="Vendor:Model")],
    approved: Annotated[bool | None, typer.Option("--approved/--not-approved")] = None,
    end_of_support: Annotated[str | None, typer.Option("--end-of-support")] = None,
) -> None:
    """Change a model's approval or end-of-support date."""
    m = hardware.update_model(
        state.ctx,
        state.actor(),
        ref,
        approved=approved,
        end_of_support=parse_date(end_of_support, "end-of-support"),
    )
    console.print(f"updated {escape(hardware.model_ref(m))}")


@app.command()
def queue(as_json: bool = JSON_OPTION) -> None:
    """What waits for your decision (review, tests, publish/release)."""
    rows = chain.queue(state.ctx, state.actor())
    if as_json:
        print_json([{"item": v, "step": s.value} for v, s in rows])
        return
    t = Table(title="waiting for you", **render.TABLE_STYLE)
    for c in ("ref", "kind", "step", "state", "author"):
        t.add_column(c)
    for v, s in rows:
        t.add_row(escape(v.ref), v.kind.label, s.value, render.state_text(v.state), v.author)
    console.print(t if rows else "nothing waits for you")


_KIND_ALIASES = {
    "base": Kind.BASE_IMAGE,
    "image": Kind.CUSTOM_IMAGE,
    "package": Kind.PACKAGE,
}

audit_app = typer.Typer(
    cls=HandledGroup,
    help="Who did what, when, in which role, to which artifact.",
    invoke_without_command=True,
)
app.add_typer(audit_app, name="audit")


@audit_app.callback()
def audit_list(
    ctx: typer.Context,
    item: Annotated[
        str | None,
        typer.Option("--item", help="Only one item: base:REF, image:REF or package:REF."),
    ] = None,
    building: Annotated[str | None, typer.Option(help="Only this building's entries.")] = None,
    limit: Annotated[int, typer.Option(help="Newest N entries.")] = 50,
    as_json: bool = JSON_OPTION,
) -> None:
    """Show the audit log (newest last)."""
    if ctx.invoked_subcommand is not None:
        return
    kind, object_id = None, None
    if item is not None:
        alias, sep, ref = item.partition(":")
        if not sep or alias not in _KIND_ALIASES:
            raise InvalidInput(f"{item!r} is not base:REF, image:REF or package:REF", field="item")
        kind = _KIND_ALIASES[alias]
        object_id = catalog.show(state.ctx, state.actor(), kind, ref).id
    entries = audit.entries(
        state.ctx,
        state.actor(),
        object_kind=kind.value if kind else None,
        object_id=object_id,
        building=building,
        limit=limit,
    )
    if as_json:
        print_json([e.model_dump(mode="json") for e in entries])
    else:
        console.print(render.audit_entries(entries, state.settings.zone))


@audit_app.command("verify")
def audit_verify() -> None:
    """Recompute the audit log's hash chain; exit 6 if it was tampered with."""
    report = audit.verify(state.ctx, state.actor())
    console.print(f"audit log intact: {report.entries} entries, head {report.head[:16]}")


sunset_app = typer.Typer(
    cls=HandledGroup, help="Sunset dates and rebases.", invoke_without_command=True
)
app.add_typer(sunset_app, name="sunset")


@sunset_app.callback()
def sunset_report(
    ctx: typer.Context,
    within: Annotated[int | None, typer.Option(help="Only those within N days.")] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Images and packages by days to sunset, and derivatives that must be rebased."""
    if ctx.invoked_subcommand is not None:
        return
    rep = sunset.report(state.ctx, state.actor(), within_days=within)
    if as_json:
        print_json(
            {
                "today": rep.today,
                "items": [r.item for r in rep.items],
                "must_rebase": [{"item": r.item, "status": r.rebase} for r in rep.must_rebase],
            }
        )
        return
    console.print(
        render.releasables(f"by days to sunset (today {rep.today})", [r.item for r in rep.items])
    )
    t = Table(title="derivatives that must be rebased", **render.TABLE_STYLE)
    for c in ("ref", "state", "on base", "status"):
        t.add_column(c)
    for r in rep.must_rebase:
        t.add_row(
            escape(r.item.ref), render.state_text(r.item.state), r.item.base or "", r.rebase or ""
        )
    console.print(t if rep.must_rebase else "no derivative needs a rebase")


@sunset_app.command("check")
def sunset_check() -> None:
    """Run the daily sunset check now (the service runs it every day)."""
    result = sunset.run_daily_check(state.ctx, state.actor())
    console.print(
        f"reached sunset: {', '.join(result.sunset) or 'none'}; "
        f"warned: {', '.join(result.warned) or 'none'}"
    )


@app.command("chain")
def chain_policies(as_json: bool = JSON_OPTION) -> None:
    """The approval chain of each kind: steps, who decides, author rule."""
    pols = chain.policies(state.ctx)
    if as_json:
        print_json([p.to_data() for p in pols])
        return
    for p in pols:
        t = Table(title=f"{p.kind.label} chain", **render.TABLE_STYLE)
        for c in ("#", "step", "who may decide", "author may act", "needs test evidence"):
            t.add_column(c)
        for i, s in enumerate(p.steps, 1):
            t.add_row(
                str(i),
                s.step.value,
                s.who(),
                "yes" if s.author_may_act else "no",
                "student + staff" if s.needs_evidence else "",
            )
        console.print(t)


@app.command("notices")
def notices_list(as_json: bool = JSON_OPTION) -> None:
    """Warnings for you: sunsets coming, rebases needed."""
    rows = notices.for_actor(state.ctx, state.actor())
    if as_json:
        print_json([n.model_dump(mode="json") for n in rows])
        return
    t = Table(title="notices", **render.TABLE_STYLE)
    for c in (f"at ({state.settings.zone})", "message"):
        t.add_column(c)
    for n in rows:
        t.add_row(render.when(n.at, state.settings.zone), escape(n.message))
    console.print(t if rows else "no notices")


def main() -> None:
    app()
