"""``orchestrator base``, ``image`` and ``package``: create, revise and move
things along the approval chain. The chain verbs are the same for the three
kinds and are registered once by :func:`add_chain_commands`."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, TypeVar

import typer

from orchestrator.cli import render
from orchestrator.cli.app import JSON_OPTION, HandledGroup, console, parse_date, print_json, state
from orchestrator.cli.image_test_cmds import add_image_test_commands
from orchestrator.domain import validation
from orchestrator.domain.states import Kind, Level, Platform, Step
from orchestrator.domain.states import State as LifecycleState
from orchestrator.errors import InvalidInput
from orchestrator.services import catalog, chain, requests
from orchestrator.services.catalog import BaseImageSpec, CustomImageSpec, PackageSpec, Revision
from orchestrator.services.chain import CheckResult

base_app = typer.Typer(cls=HandledGroup, help="District base images (IT).", no_args_is_help=True)
image_app = typer.Typer(
    cls=HandledGroup, help="Buildings' customized images.", no_args_is_help=True
)
package_app = typer.Typer(cls=HandledGroup, help="Software packages.", no_args_is_help=True)

Ref = Annotated[str, typer.Argument(help="Reference, e.g. pc-high@2026.1, 101/lab@1.0 or #ID.")]
Reason = Annotated[str, typer.Option("--reason", "-r", help="Why (recorded in the audit log).")]


E = TypeVar("E", bound=StrEnum)


def _enum(enum: type[E], value: str | None, field: str) -> E | None:
    if value is None:
        return None
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(e.value for e in enum)
        raise InvalidInput(f"{value!r} is not one of: {choices}", field=field) from None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _show_view(v: catalog.ReleasableView, as_json: bool, message: str | None = None) -> None:
    if as_json:
        print_json(v)
        return
    if message:
        console.print(message)
    console.print(render.detail(v, state.settings.zone))


def add_chain_commands(app: typer.Typer, kind: Kind) -> None:
    """The list, show, status and chain verbs of one kind."""
    publish_verb = "publish" if kind is Kind.BASE_IMAGE else "release"

    @app.command("list")
    def list_(
        state_: Annotated[
            str | None, typer.Option("--state", help="draft, in_review, testing, approved, …")
        ] = None,
        building: Annotated[str | None, typer.Option(help="Only this building.")] = None,
        platform: Annotated[str | None, typer.Option(help="pc or mac.")] = None,
        level: Annotated[str | None, typer.Option(help="elementary, middle or high.")] = None,
        as_json: bool = JSON_OPTION,
    ) -> None:
        """List versions, newest first, that you may see."""
        items = catalog.list_releasables(
            state.ctx,
            state.actor(),
            kind,
            state=_enum(LifecycleState, state_, "state"),
            building=building,
            platform=_enum(Platform, platform, "platform"),
            level=_enum(Level, level, "level"),
        )
        if as_json:
            print_json(items)
        else:
            console.print(render.releasables(f"{kind.label}s", items))

    @app.command()
    def show(ref: Ref, as_json: bool = JSON_OPTION) -> None:
        """Show one version in full."""
        _show_view(catalog.show(state.ctx, state.actor(), kind, ref), as_json)

    @app.command()
    def status(ref: Ref, as_json: bool = JSON_OPTION) -> None:
        """Where it stands in the approval chain: steps, tests, decisions."""
        st = chain.status(state.ctx, state.actor(), kind, ref)
        if as_json:
            print_json(
                {"item": st.item, "steps": st.steps, "tests": st.tests, "decisions": st.decisions}
            )
            return
        console.print(render.detail(st.item, state.settings.zone))
        for table in render.chain_status(st, state.settings.zone):
            console.print(table)

    @app.command()
    def submit(ref: Ref, as_json: bool = JSON_OPTION) -> None:
        """Hand a draft to the approval chain."""
        v = chain.submit(state.ctx, state.actor(), kind, ref)
        _show_view(v, as_json, f"submitted {v.ref}: now [bold]{v.state.value}[/]")

    @app.command()
    def approve(
        ref: Ref,
        step: Annotated[str, typer.Option(help="The step you judged: review, or test (sign-off).")],
        reason: Reason = "",
        override: Annotated[
            list[str] | None,
            typer.Option(
                "--override",
                help="With --step test (EdTech, images): sign off over this failing check, "
                "CHECK or PERSONA:CHECK; repeat for each one; needs --reason.",
            ),
        ] = None,
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Approve the review step, or sign off the tests."""
        chosen = _enum(Step, step, "step")
        assert chosen is not None  # the option is required
        signed_over = None
        if override:
            if not reason.strip():
                raise InvalidInput(
                    "--override needs --reason: say why the image may pass over its failing "
                    "checks (it is kept with the decision and audited)",
                    field="reason",
                )
            signed_over = chain.Override(checks=override, reason=reason)
        v = chain.approve(
            state.ctx, state.actor(), kind, ref, reason, step=chosen, override=signed_over
        )
        over = f" (signed off over: {', '.join(override)})" if override else ""
        _show_view(v, as_json, f"approved {v.ref}: now [bold]{v.state.value}[/]{over}")

    @app.command()
    def reject(
        ref: Ref,
        reason: Annotated[str, typer.Option("--reason", "-r", help="Why (required).")],
        step: Annotated[
            str | None, typer.Option(help="Only if it still waits for this step.")
        ] = None,
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Reject the pending step; it goes back to draft."""
        v = chain.reject(
            state.ctx, state.actor(), kind, ref, reason, step=_enum(Step, step, "step")
        )
        _show_view(v, as_json, f"rejected {v.ref}: back to [bold]{v.state.value}[/]")

    @app.command("record-test")
    def record_test(
        ref: Ref,
        persona: Annotated[str, typer.Option(help="student or staff")],
        check: Annotated[
            list[str],
            typer.Option(help="'NAME=pass' or 'NAME=fail'; repeat for each check."),
        ],
        evidence: Annotated[str, typer.Option(help="What you saw.")] = "",
        attach: Annotated[
            list[str] | None, typer.Option(help="A file to attach (screenshot, log); repeatable.")
        ] = None,
        account: Annotated[str, typer.Option(help="The test login used.")] = "",
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Record one persona's test with student or staff login."""
        checks = []
        for item in check:
            name, sep, result = item.rpartition("=")
            if not sep or result.lower() not in ("pass", "fail"):
                raise InvalidInput(f"{item!r} is not NAME=pass or NAME=fail", field="check")
            checks.append(CheckResult(name, result.lower() == "pass"))
        run = chain.record_test(
            state.ctx,
            state.actor(),
            kind,
            ref,
            persona=persona,
            checks=checks,
            evidence=evidence,
            attachments=attach or [],
            account=account,
        )
        if as_json:
            print_json(run)
        else:
            verdict = "[green]passed[/]" if run.passed else "[red]failed[/]"
            console.print(
                f"recorded {run.persona.value} test #{run.id} of {run.ref}: {verdict} "
                f"({_count(len(run.checks), 'check')}, "
                f"{_count(len(run.attachments), 'attachment')})"
            )

    def _publish(ref: Ref, reason: Reason = "", as_json: bool = JSON_OPTION) -> None:
        v = chain.publish(state.ctx, state.actor(), kind, ref, reason)
        done = "published" if kind is Kind.BASE_IMAGE else "released"
        _show_view(v, as_json, f"{done} {v.ref}: now [bold]{v.state.value}[/]")

    app.command(publish_verb, help=f"{publish_verb.capitalize()} an approved version.")(_publish)

    @app.command()
    def deprecate(ref: Ref, reason: Reason = "", as_json: bool = JSON_OPTION) -> None:
        """Mark a published version superseded (still deployable until its sunset)."""
        v = chain.deprecate(state.ctx, state.actor(), kind, ref, reason)
        _show_view(v, as_json, f"deprecated {v.ref}")

    @app.command()
    def retire(ref: Ref, reason: Reason = "", as_json: bool = JSON_OPTION) -> None:
        """Discard a draft, or retire a deprecated or sunset version for good."""
        v = chain.retire(state.ctx, state.actor(), kind, ref, reason)
        _show_view(v, as_json, f"retired {v.ref}")

    @app.command()
    def revise(
        ref: Ref,
        artifact: Annotated[str | None, typer.Option(help="New artifact path or URL.")] = None,
        artifact_sha256: Annotated[str | None, typer.Option("--artifact-sha256")] = None,
        model: Annotated[
            list[str] | None, typer.Option(help="Supported model (Vendor:Model); repeatable.")
        ] = None,
        package: Annotated[
            list[str] | None,
            typer.Option(help="Package ref (customized images); repeatable; replaces all."),
        ] = None,
        setting: Annotated[
            list[str] | None, typer.Option(help="KEY=VALUE (customized images); replaces all.")
        ] = None,
        detection: Annotated[str | None, typer.Option(help="Detection rule (packages).")] = None,
        sunset: Annotated[str | None, typer.Option(help="New sunset date YYYY-MM-DD.")] = None,
        notes: Annotated[str | None, typer.Option()] = None,
        reason: Reason = "",
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Change content (the chain starts over) or the sunset date and notes."""
        result = catalog.revise(
            state.ctx,
            state.actor(),
            kind,
            ref,
            Revision(
                artifact=artifact,
                artifact_sha256=artifact_sha256,
                models=model,
                packages=package,
                settings=validation.parse_key_values(setting, field="setting")
                if setting is not None
                else None,
                detection_rule=detection,
                sunset_date=parse_date(sunset, "sunset"),
                notes=notes,
                reason=reason,
            ),
        )
        msg = f"revised {result.view.ref}"
        if result.chain_restarted:
            msg += ": content changed, so the approval chain starts over (now draft)"
        elif not result.digest_changed:
            msg += ": content unchanged"
        _show_view(result.view, as_json, msg)


for _app, _kind in (
    (base_app, Kind.BASE_IMAGE),
    (image_app, Kind.CUSTOM_IMAGE),
    (package_app, Kind.PACKAGE),
):
    add_chain_commands(_app, _kind)
add_image_test_commands(base_app, "base")
add_image_test_commands(image_app, "image")


@base_app.command("create")
def base_create(
    platform: Annotated[str, typer.Option(help="pc or mac")],
    level: Annotated[str, typer.Option(help="elementary, middle or high")],
    version: Annotated[str, typer.Option(help="e.g. 2026.1")],
    os: Annotated[str, typer.Option("--os", help="e.g. 'Windows 11 24H2', 'macOS 15.3'")],
    sunset: Annotated[str, typer.Option(help="Sunset date YYYY-MM-DD.")],
    artifact: Annotated[str, typer.Option(help="WIM or thin-image manifest: path or URL.")],
    artifact_sha256: Annotated[
        str | None, typer.Option("--artifact-sha256", help="Required for a URL.")
    ] = None,
    model: Annotated[
        list[str] | None, typer.Option(help="Supported model (Vendor:Model); repeatable.")
    ] = None,
    notes: str = "",
    as_json: bool = JSON_OPTION,
) -> None:
    """Create a base image version (IT), as a draft."""
    sunset_date = parse_date(sunset, "sunset")
    assert sunset_date is not None
    v = catalog.create_base_image(
        state.ctx,
        state.actor(),
        BaseImageSpec(
            platform=platform,
            level=level,
            version=version,
            os_version=os,
            sunset_date=sunset_date,
            artifact=artifact,
            artifact_sha256=artifact_sha256,
            models=model or [],
            notes=notes,
        ),
    )
    _show_view(v, as_json, f"created {v.ref} (draft); next: 'orchestrator base submit {v.ref}'")


@image_app.command("create")
def image_create(
    building: Annotated[str, typer.Option(help="Building number.")],
    name: Annotated[str, typer.Option(help="e.g. lab, library, carts")],
    version: Annotated[str, typer.Option(help="e.g. 1.0")],
    base: Annotated[str, typer.Option(help="Published base, e.g. pc-elementary@2026.1")],
    platform: Annotated[
        str | None, typer.Option(help="pc or mac (checked against the base)")
    ] = None,
    package: Annotated[list[str] | None, typer.Option(help="Package ref; repeatable.")] = None,
    setting: Annotated[list[str] | None, typer.Option(help="KEY=VALUE; repeatable.")] = None,
    overlay: Annotated[str | None, typer.Option(help="Captured overlay: path or URL.")] = None,
    overlay_sha256: Annotated[str | None, typer.Option("--overlay-sha256")] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(help="Supported model; repeatable (default: the base's models)."),
    ] = None,
    sunset: Annotated[
        str | None, typer.Option(help="Own sunset date (never later than the base's).")
    ] = None,
    notes: str = "",
    request: Annotated[
        int | None, typer.Option(help="The request it answers (it is linked there).", min=1)
    ] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Create a customized image for your building from a published base."""
    spec = CustomImageSpec(
        building=building,
        name=name,
        version=version,
        base=base,
        platform=platform,
        packages=package or [],
        settings=validation.parse_key_values(setting or [], field="setting"),
        overlay=overlay,
        overlay_sha256=overlay_sha256,
        models=model,
        sunset_date=parse_date(sunset, "sunset"),
        notes=notes,
    )
    if request is None:
        v = catalog.create_custom_image(state.ctx, state.actor(), spec)
        said = ""
    else:
        v, _ = requests.create_image_for(state.ctx, state.actor(), request, spec)
        said = f", linked to request #{request}"
    _show_view(
        v, as_json, f"created {v.ref} (draft){said}; next: 'orchestrator image submit {v.ref}'"
    )


@image_app.command("rebase")
def image_rebase(
    ref: Ref,
    onto: Annotated[
        str | None, typer.Option(help="Base to move to (default: newest published).")
    ] = None,
    version: Annotated[str | None, typer.Option(help="New version (default: next).")] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Carry the customization onto a newer base, as a new draft version."""
    result = catalog.rebase(state.ctx, state.actor(), ref, onto=onto, version=version)
    msg = f"rebased {ref} onto {result.view.base} as {result.view.ref} (draft)"
    if result.dropped_models:
        msg += f"; models not carried over: {', '.join(result.dropped_models)}"
    if result.dropped_packages:
        msg += f"; packages not carried over: {', '.join(result.dropped_packages)}"
    _show_view(result.view, as_json, msg)


@package_app.command("create")
def package_create(
    name: Annotated[str, typer.Option()],
    version: Annotated[str, typer.Option()],
    platform: Annotated[str, typer.Option(help="pc or mac")],
    audience: Annotated[str, typer.Option(help="admin_staff, instructional or building_local")],
    installer: Annotated[str, typer.Option(help="MSI/EXE/PKG: path or URL.")],
    installer_sha256: Annotated[str | None, typer.Option("--installer-sha256")] = None,
    detection: Annotated[str, typer.Option(help="How to tell it is installed.")] = "",
    building: Annotated[
        str | None, typer.Option(help="Building number (building_local only).")
    ] = None,
    model: Annotated[list[str] | None, typer.Option(help="Supported model; repeatable.")] = None,
    sunset: Annotated[str | None, typer.Option(help="Sunset date YYYY-MM-DD.")] = None,
    notes: str = "",
    request: Annotated[
        int | None, typer.Option(help="The request it answers (it is linked there).", min=1)
    ] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Package an installer, as a draft."""
    spec = PackageSpec(
        name=name,
        version=version,
        platform=platform,
        audience=audience,
        installer=installer,
        installer_sha256=installer_sha256,
        detection_rule=detection,
        building=building,
        models=model or [],
        sunset_date=parse_date(sunset, "sunset"),
        notes=notes,
    )
    if request is None:
        v = catalog.create_package(state.ctx, state.actor(), spec)
        said = ""
    else:
        v, _ = requests.create_package_for(state.ctx, state.actor(), request, spec)
        said = f", linked to request #{request}"
    _show_view(
        v, as_json, f"created {v.ref} (draft){said}; next: 'orchestrator package submit {v.ref}'"
    )
