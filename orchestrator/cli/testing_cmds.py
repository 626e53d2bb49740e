"""``orchestrator testing``: the test clients pool, the persona test accounts and each
image's test plan."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from orchestrator.cli import render
from orchestrator.cli.app import JSON_OPTION, HandledGroup, console, print_json, state
from orchestrator.errors import InvalidInput
from orchestrator.services import test_plans, testing

testing_app = typer.Typer(
    cls=HandledGroup,
    help="What image tests run on: test clients and student/staff test accounts.",
    no_args_is_help=True,
)
clients_app = typer.Typer(
    cls=HandledGroup,
    help="The pool of test clients, per platform and level (IT marks them).",
    no_args_is_help=True,
)
accounts_app = typer.Typer(
    cls=HandledGroup,
    help="Each building's student and staff test accounts, passwords encrypted at rest.",
    no_args_is_help=True,
)
plan_app = typer.Typer(
    cls=HandledGroup,
    help="Each image's test plan: checks run as the student and staff personas.",
    no_args_is_help=True,
)
testing_app.add_typer(clients_app, name="clients")
testing_app.add_typer(accounts_app, name="accounts")
testing_app.add_typer(plan_app, name="plan")

BUILDING = Annotated[str, typer.Option("--building", help="Building number, e.g. 101.")]
PERSONA = Annotated[str, typer.Option("--persona", help="student or staff.")]


@clients_app.command("mark")
def clients_mark(
    host: Annotated[str, typer.Argument(help="The client's hostname.")],
    unmark: Annotated[bool, typer.Option("--unmark", help="Take it out of the test pool.")] = False,
) -> None:
    """Put an inventory client in the test pool (or take it out with --unmark)."""
    view, changed = testing.mark_test_client(state.ctx, state.actor(), host, test_client=not unmark)
    where = f"{view.platform.value}, {view.level.value}, building {view.building}"
    if not changed:
        already = "already a test client" if view.test_client else "not a test client"
        console.print(f"{view.hostname} is {already} ({where})", highlight=False)
    elif view.test_client:
        console.print(f"{view.hostname} marked as a test client ({where})", highlight=False)
    else:
        console.print(f"{view.hostname} is no longer a test client ({where})", highlight=False)


@clients_app.command("list")
def clients_list(
    platform: Annotated[str | None, typer.Option(help="pc or mac.")] = None,
    level: Annotated[str | None, typer.Option(help="elementary, middle, high or office.")] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """The test clients you may see, by platform and level."""
    views = testing.list_test_clients(state.ctx, state.actor(), platform=platform, level=level)
    if as_json:
        print_json(views)
        return
    t = Table(title="test clients", **render.TABLE_STYLE)
    for heading in ("platform", "level", "building", "hostname", "room", "address"):
        t.add_column(heading)
    for v in views:
        t.add_row(v.platform.value, v.level.value, v.building, v.hostname, v.room, v.address)
    console.print(t if views else "no test clients")


def _is_terminal() -> bool:
    return sys.stdin.isatty()


def _read_password(file: Path | None) -> str:
    if file is not None:
        try:
            text = file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not a text file"
            raise InvalidInput(f"cannot read {file}: {reason}", field="password-file") from exc
        return text.removesuffix("\n").removesuffix("\r")
    if _is_terminal():
        value: str = typer.prompt("password", hide_input=True, confirmation_prompt=True)
        return value
    return sys.stdin.read().removesuffix("\n").removesuffix("\r")


@accounts_app.command("set")
def accounts_set(
    building: BUILDING,
    persona: PERSONA,
    username: Annotated[str, typer.Option(help="The exception account's username.")],
    password_file: Annotated[
        Path | None,
        typer.Option(
            "--password-file",
            help="Read the password from this file; else asked for without echo (or stdin).",
        ),
    ] = None,
) -> None:
    """Store a building's student or staff test account; the password is encrypted."""
    testing.persona(persona)  # a wrong persona is said before the password is asked for
    view = testing.set_test_account(
        state.ctx,
        state.actor(),
        building=building,
        persona=persona,
        username=username,
        password=_read_password(password_file),
    )
    console.print(
        f"{view.persona.value} test account of building {view.building}: "
        f"{view.username} ({view.summary}, encrypted)",
        highlight=False,
    )


@accounts_app.command("list")
def accounts_list(
    building: Annotated[str | None, typer.Option(help="Only this building.")] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """The test accounts you may see: usernames only, never passwords."""
    views = testing.list_test_accounts(state.ctx, state.actor(), building=building)
    if as_json:
        print_json(views)
        return
    t = Table(title="test accounts", **render.TABLE_STYLE)
    for heading in ("building", "persona", "username", "password", "set by", "when"):
        t.add_column(heading)
    for v in views:
        t.add_row(
            v.building,
            v.persona.value,
            v.username,
            v.summary,
            v.updated_by,
            render.when(v.updated_at, state.ctx.zone),
        )
    console.print(t if views else "no test accounts")


@accounts_app.command("remove")
def accounts_remove(building: BUILDING, persona: PERSONA) -> None:
    """Forget a building's student or staff test account."""
    testing.remove_test_account(state.ctx, state.actor(), building=building, persona=persona)
    console.print(f"{persona} test account of building {building} removed", highlight=False)


# ---------------------------------------------------------------------------
# Test plans
# ---------------------------------------------------------------------------

IMAGE = Annotated[
    str, typer.Argument(help="The image: pc-high@2026.1, 101/lab@1.0 or #ID.", show_default=False)
]
CHECK_NAME = Annotated[
    str, typer.Option("--name", help="The check's name, e.g. printer-reachable.")
]


def _plan_table(view: test_plans.PlanView) -> Table:
    state = view.state.value + ("" if view.editable else ", plan frozen")
    on = f" on {view.base}" if view.base else ""
    t = Table(title=f"test plan of {view.image}{on} ({state})", **render.TABLE_STYLE)
    for heading in ("check", "persona", "kind", "what it checks", "timeout", "from"):
        t.add_column(heading)
    for c in view.checks:
        t.add_row(
            c.name,
            c.personas.value,
            c.kind.value,
            c.describe,
            f"{c.timeout_s}s",
            "base" if c.origin is test_plans.Origin.BASE else "own",
        )
    return t


def _summary(view: test_plans.PlanView) -> str:
    n = len(view.checks)
    return f"{n} check{'' if n == 1 else 's'} in its plan, digest {view.digest}"


def _print_plan(view: test_plans.PlanView) -> None:
    if view.checks:
        console.print(_plan_table(view))
    else:
        console.print(f"{view.image} has no test plan checks", highlight=False)
    for d in view.disabled:
        console.print(
            f"disabled: {d.name} (from {d.source}) by {d.by}: {d.reason}", highlight=False
        )
    console.print(f"plan digest {view.digest}", highlight=False)


@plan_app.command("show")
def plan_show(image: IMAGE, as_json: bool = JSON_OPTION) -> None:
    """The image's effective test plan: its base's checks, then its own."""
    view = test_plans.show_plan(state.ctx, state.actor(), image)
    if as_json:
        data: dict[str, Any] = {
            "image": view.image,
            "base": view.base,
            "state": view.state.value,
            "editable": view.editable,
            "digest": view.digest,
            "checks": [test_plans.check_dict(c) for c in view.checks],
            "disabled": view.disabled,
        }
        print_json(data)
        return
    _print_plan(view)


@plan_app.command("add")
def plan_add(
    image: IMAGE,
    name: CHECK_NAME,
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            help="sign_in, home_folder, app_present, app_absent, reachable, command or not_admin.",
        ),
    ],
    persona: Annotated[str, typer.Option("--persona", help="student, staff or both.")],
    path: Annotated[
        str | None, typer.Option(help="An absolute path (app_present, app_absent).")
    ] = None,
    command: Annotated[
        str | None, typer.Option(help="A command run as the persona (command, app_present).")
    ] = None,
    expect_exit: Annotated[
        int | None, typer.Option("--expect-exit", help="The command's expected exit status.")
    ] = None,
    expect_output: Annotated[
        str | None, typer.Option("--expect-output", help="Text the command's output must hold.")
    ] = None,
    host: Annotated[str | None, typer.Option(help="A host to reach (reachable).")] = None,
    port: Annotated[int | None, typer.Option(help="Its TCP port (reachable).")] = None,
    timeout: Annotated[
        int | None, typer.Option("--timeout", help="Seconds, 1 to 600 (default 30).")
    ] = None,
) -> None:
    """Add a check to the image's own test plan."""
    spec = test_plans.CheckSpec(
        name=name,
        kind=kind,
        persona=persona,
        path=path,
        command=command,
        host=host,
        port=port,
        expect_exit=expect_exit,
        expect_output=expect_output,
        timeout=timeout,
    )
    view = test_plans.add_check(state.ctx, state.actor(), image, spec)
    console.print(f"check {name} added to {view.image}; {_summary(view)}", highlight=False)


@plan_app.command("disable")
def plan_disable(
    image: IMAGE,
    name: CHECK_NAME,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the audit log).")],
) -> None:
    """Turn off a check the image inherits from its base, with a reason."""
    view = test_plans.disable_check(state.ctx, state.actor(), image, name, reason)
    console.print(
        f"inherited check {name} disabled on {view.image}; {_summary(view)}", highlight=False
    )


@plan_app.command("remove")
def plan_remove(image: IMAGE, name: CHECK_NAME) -> None:
    """Remove one of the image's own checks (or take back disabling an inherited one)."""
    view, enabled = test_plans.remove_check(state.ctx, state.actor(), image, name)
    if enabled:
        done = f"inherited check {name} applies to {view.image} again"
    else:
        done = f"check {name} removed from {view.image}"
    console.print(f"{done}; {_summary(view)}", highlight=False)


def _read_checks(file: Path) -> Any:
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not a text file"
        raise InvalidInput(f"cannot read {file}: {reason}", field="file") from exc
    try:
        if file.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InvalidInput(f"{file} is not valid JSON or YAML: {exc}", field="file") from exc


@plan_app.command("import")
def plan_import(
    image: IMAGE,
    file: Annotated[
        Path, typer.Argument(help="A YAML or JSON list of checks.", show_default=False)
    ],
) -> None:
    """Add a file's checks to the image's own plan: all of them, or none."""
    entries = _read_checks(file)
    view = test_plans.import_checks(state.ctx, state.actor(), image, entries, source=file.name)
    count = len(entries) if isinstance(entries, list) else 0
    console.print(f"{count} checks imported into {view.image}; {_summary(view)}", highlight=False)
