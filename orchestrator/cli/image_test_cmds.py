"""``orchestrator image test``, ``test-runs`` and ``test-run`` (and the same under
``base``): an image on a test client, checked as the student and the staff test
account, and the runs kept as the test step's evidence.

Registered on the ``base`` and ``image`` groups by :mod:`orchestrator.cli.catalog_cmds`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from orchestrator.cli import render
from orchestrator.cli.app import JSON_OPTION, console, print_json, state
from orchestrator.cli.inventory_cmds import _credentials
from orchestrator.services import catalog, image_tests, runs, test_plans
from orchestrator.services.image_tests import (
    ImageTestView,
    PersonaChecker,
    PlaybookRunner,
    Progress,
)

TEST_FAILED_EXIT = 9
"""A test that ran and failed: the exit code of a run that ended with failed hosts."""

_runner: PlaybookRunner | None = None
"""The playbook runner image tests use; None: the real one (tests put a fake here)."""
_checker: PersonaChecker | None = None
"""The persona checker image tests use; None: the real one (tests put a fake here)."""

STALE_DIGEST = "evidence no longer matches the digest"
STALE_PLAN = "plan changed"

_STATUS_STYLE = {"passed": "green", "failed": "red", "error": "red", "running": "yellow"}

ImageRef = Annotated[
    str, typer.Argument(help="The image, e.g. 101/lab@1.1, mac-elementary@2026.1 or #ID.")
]


def _status_text(status: str) -> str:
    return f"[{_STATUS_STYLE.get(status, 'white')}]{status}[/]"


def progress_line(p: Progress) -> str:
    """One line of a running test, as a log shows it."""
    who = p.persona or p.stage
    line = f"  {who}: {escape(p.message)}"
    if p.passed is True and p.stage in ("check", "done"):
        line += " [green]✓[/]"
    elif p.passed is False:
        line += " [red]✗[/]"
    return line


@contextmanager
def _live_progress(quiet: bool) -> Iterator[Any]:
    """A callback for :func:`image_tests.run_image_test`: every step one printed line;
    on a terminal a spinner below names the step under way."""
    if quiet:
        yield lambda _p: None
        return
    status = console.status("starting the image test") if console.is_terminal else None

    def on_progress(p: Progress) -> None:
        console.print(progress_line(p), highlight=False, soft_wrap=True)
        if status is not None:
            status.update(escape(f"{p.persona or p.stage}: {p.message}"))

    if status is None:
        yield on_progress
        return
    with status:
        yield on_progress


def evidence_text(v: ImageTestView, image_digest: str, plan_digest: str) -> str:
    """Whether the run still counts, and if not, why."""
    if v.current:
        return "current"
    if v.digest != image_digest:
        return STALE_DIGEST
    if v.plan_digest != plan_digest:
        return STALE_PLAN
    return "not current"


def checks_table(v: ImageTestView) -> Table:
    """Every check as each persona ran it; what a failing check saw."""
    t = Table(
        title=f"image test #{v.id} of {escape(v.image)} on {escape(v.client)}",
        **render.TABLE_STYLE,
    )
    for heading in ("persona", "check", "result", "exit"):
        t.add_column(heading, no_wrap=True)
    # What was seen is the point of a failing row: folded, never cut short.
    t.add_column("what was seen", overflow="fold")
    for p in v.personas:
        if not p.checks:
            t.add_row(p.persona.value, "-", "[red]FAIL[/]", "", escape(p.message))
        for c in p.checks:
            seen = c.message
            if not c.passed and c.output.strip():
                seen += f"\nsaw: {c.output.strip()}"
            if not c.passed and c.command:
                seen += f"\nran: {c.command}"
            t.add_row(
                f"{p.persona.value} ({p.account})" if c is p.checks[0] else "",
                escape(c.name),
                "[green]pass[/]" if c.passed else "[red]FAIL[/]",
                "" if c.exit_code is None else str(c.exit_code),
                escape(seen),
            )
    return t


def _summary(v: ImageTestView) -> str:
    zone = state.settings.zone
    parts = [
        f"image {v.digest[:19]}…, plan {v.plan_digest[:19]}…",
        f"by {v.actor}, {render.when(v.started_at, zone)}",
    ]
    if v.delivery_run is not None:
        parts.append(f"delivery run {v.delivery_run}")
    return "; ".join(parts)


def verdict_line(v: ImageTestView, evidence: str | None = None) -> str:
    line = f"image test #{v.id} of {escape(v.image)} on {escape(v.client)}: "
    line += _status_text(v.status)
    if v.reason:
        line += f": {escape(v.reason)}"
    if evidence is not None and evidence != "current":
        line += f" [dim]({evidence})[/]"
    return line


def _next_step(v: ImageTestView, group: str) -> str:
    if v.status == "passed":
        return f"next: 'orchestrator {group} approve {v.image} --step test --reason ...'"
    if v.status == "failed" and v.failing:
        named = " ".join(f"--override {p}:{c}" for p, c in v.failing)
        return (
            f"fix the image and test it again, or EdTech may sign off over the failing "
            f"checks: 'orchestrator {group} approve {v.image} --step test {named} --reason ...'"
        )
    return ""


def _show(v: ImageTestView, group: str, evidence: str | None = None) -> None:
    if v.personas:
        console.print(checks_table(v))
    console.print(escape(_summary(v)), highlight=False, soft_wrap=True)
    console.print(verdict_line(v, evidence), highlight=False, soft_wrap=True)
    hint = _next_step(v, group) if evidence in (None, "current") else ""
    if hint:
        console.print(escape(hint), highlight=False, soft_wrap=True)


def _current_digests(ref: str) -> tuple[str, str]:
    """The image's digest and its plan's digest now."""
    plan = test_plans.show_plan(state.ctx, state.actor(), ref)
    item = catalog.show(state.ctx, state.actor(), plan.kind, ref)
    return item.digest, plan.digest


def _runs_table(ref: str, views: Sequence[ImageTestView]) -> Table:
    image_digest, plan_digest = _current_digests(ref)
    zone = state.settings.zone
    t = Table(title=f"image test runs of {escape(ref)} (newest first)", **render.TABLE_STYLE)
    for heading in ("#", "client", "status", "evidence", "when", "by", "failing / reason"):
        t.add_column(heading, no_wrap=heading in ("#", "client", "status", "when", "by"))
    for v in views:
        failing = ", ".join(f"{p}:{c}" for p, c in v.failing)
        evidence = evidence_text(v, image_digest, plan_digest)
        t.add_row(
            str(v.id),
            escape(v.client),
            _status_text(v.status),
            evidence if evidence == "current" else f"[yellow]{evidence}[/]",
            render.when(v.started_at, zone),
            escape(v.actor),
            escape(failing or v.reason),
        )
    return t


def add_image_test_commands(app: typer.Typer, group: str) -> None:
    """``test``, ``test-runs`` and ``test-run`` on the ``base`` or ``image`` group."""

    @app.command("test")
    def test(
        ref: ImageRef,
        client: Annotated[
            str,
            typer.Option(
                "--client", help="A test client of the image's platform and level (hostname)."
            ),
        ],
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Test the image on a test client as the student and the staff test account.

        The image is put on the client, then each persona signs in and runs the
        image's test plan. Exit 0 if every check passed, 9 if the test failed.
        """
        s = state.settings
        with _live_progress(quiet=as_json) as on_progress:
            view = image_tests.run_image_test(
                state.ctx,
                state.actor(),
                ref,
                client=client,
                credentials=_credentials(),
                runner=_runner,
                checker=_checker,
                distribution=runs.DistributionPoint(s.distribution_address, s.distribution_port),
                on_progress=on_progress,
            )
        if as_json:
            print_json(view)
        else:
            _show(view, group)
        if view.status != "passed":
            raise typer.Exit(TEST_FAILED_EXIT)

    @app.command("test-runs")
    def test_runs(ref: ImageRef, as_json: bool = JSON_OPTION) -> None:
        """The image's test runs, newest first, and whether each still counts."""
        views = image_tests.list_for(state.ctx, state.actor(), ref)
        if as_json:
            print_json(views)
            return
        if not views:
            console.print(
                f"no image test runs of {escape(ref)} yet "
                f"('orchestrator {group} test {escape(ref)} --client TESTCLIENT')",
                highlight=False,
            )
            return
        console.print(_runs_table(ref, views))

    @app.command("test-run")
    def test_run(
        test_id: Annotated[int, typer.Argument(help="The image test's number.")],
        as_json: bool = JSON_OPTION,
    ) -> None:
        """One image test run: every check as each persona ran it."""
        view = image_tests.show(state.ctx, state.actor(), test_id)
        if as_json:
            print_json(view)
            return
        image_digest, plan_digest = _current_digests(view.image)
        _show(view, group, evidence_text(view, image_digest, plan_digest))
