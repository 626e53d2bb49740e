"""``orchestrator deploy watch ID``: one deployment's progress, live, until it ends.

Every ``--interval`` seconds it asks :func:`orchestrator.services.deployments.progress`
(which sees exactly what ``deploy show`` sees) and draws per building and wave
how many clients stand where, the latest failures, while the deployment waits
why and when it may start, and where buildings have distribution points how
far each point's staging has gone
(:func:`orchestrator.services.staging.deployment_stagings`). On a terminal the
frame is redrawn in place (Rich ``Live``); elsewhere (pipes, logs) each change
is one printed line. When the deployment ends it prints what ``deploy show``
prints. Ctrl-C only stops watching: the service carries on.

Registered on the ``deploy`` group beside the other deployment commands (see
cli/main.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from orchestrator.cli import render
from orchestrator.cli.app import console, print_json, state, to_jsonable
from orchestrator.cli.deployment_cmds import ID, has_points, show_parts
from orchestrator.domain.rollout import ClientState, DeploymentState
from orchestrator.errors import InvalidInput
from orchestrator.services import deployments, staging
from orchestrator.services.deployments import DeploymentProgress, ProgressCell
from orchestrator.services.staging import DeliveryStaging

_sleep: Callable[[float], None] = time.sleep
"""How the watch waits between looks (tests put a fake here)."""

BAR_WIDTH = 24
STATE_ORDER = [s.value for s in ClientState]
_FINAL_STYLE = {"succeeded": "green", "failed": "red", "skipped": "dim", "cancelled": "dim"}
_MOVING = {s.value for s in (ClientState.STAGING, ClientState.APPLYING, ClientState.VERIFYING)}


def _hhmm(p: DeploymentProgress) -> str:
    return p.at.astimezone(state.settings.zone).strftime("%H:%M")


def _wave_label(cell: ProgressCell) -> str:
    if cell.wave == 0:
        return "excluded"
    return f"wave {cell.wave} (pilot)" if cell.pilot else f"wave {cell.wave}"


def _count_text(cell: ProgressCell) -> str:
    zone = state.settings.zone
    parts = []
    for s in STATE_ORDER:
        n = cell.counts.get(s, 0)
        if not n:
            continue
        if s == ClientState.UNREACHABLE.value and cell.next_retry is not None:
            parts.append(f"{n} unreachable (retry {cell.next_retry.astimezone(zone):%H:%M})")
        else:
            parts.append(f"{n} {s}")
    return ", ".join(parts)


def _bar(cell: ProgressCell) -> Text:
    """Final clients solid (by outcome), in flight half-tone, waiting light."""
    segments: list[tuple[str, str, int]] = []
    for s in STATE_ORDER:
        n = cell.counts.get(s, 0)
        if s in _FINAL_STYLE:
            segments.append(("█", _FINAL_STYLE[s], n))
        elif s in _MOVING:
            segments.append(("▒", "yellow", n))
        else:
            segments.append(("░", "dim" if s == "pending" else "red", n))
    # Final first, then moving, then waiting, each cut to whole characters.
    order = sorted(segments, key=lambda x: "█▒░".index(x[0]))
    bar = Text()
    used, seen = 0, 0
    for char, style, n in order:
        seen += n
        upto = round(BAR_WIDTH * seen / cell.total) if cell.total else 0
        if upto > used:
            bar.append(char * (upto - used), style=style)
            used = upto
    return bar


def _why(p: DeploymentProgress) -> str:
    """Why it is not running, and when it may (one line), or '' when it runs or ended."""
    zone = state.settings.zone
    if p.state == DeploymentState.PAUSED.value:
        return (
            f"paused: {p.reason or 'by its owner'}; nothing starts until it is resumed "
            f"('orchestrator deploy resume {p.id}'), then at its next window"
        )
    if p.state == DeploymentState.SCHEDULED.value:
        if p.next_start is None:
            when = "no window of its buildings opens within a year"
        elif p.next_start <= p.at:
            when = "its window is open: the service starts it at its next look"
        else:
            when = f"may start {render.when(p.next_start, zone)}"
        why = ""
        if p.not_before is not None and p.not_before > p.at:
            why = f"starts no earlier than {render.when(p.not_before, zone)}"
        elif p.reason:
            why = p.reason
        elif p.next_start is not None and p.next_start > p.at:
            why = "waiting for its next maintenance window"
        return "scheduled: " + "; ".join(x for x in (why, when) if x)
    return ""


_STAGING_STYLE = {"staged": "green", "running": "yellow", "failed": "red"}


def _staging_bar(s: DeliveryStaging) -> Text:
    """Chunks sent of those the point lacked; empty when no staging began."""
    done = round(BAR_WIDTH * s.chunks_sent / s.chunks_total) if s.chunks_total else 0
    if s.state == "staged":
        done = BAR_WIDTH  # a point that lacked nothing holds it all
    bar = Text("█" * done, style=_STAGING_STYLE.get(s.state, "dim"))
    bar.append("░" * (BAR_WIDTH - done), style="dim")
    return bar


def _chunks(s: DeliveryStaging) -> str:
    return f"{s.chunks_sent}/{s.chunks_total}" if s.at else "-"


def _points(held: list[DeliveryStaging]) -> Table:
    t = Table(title="distribution points", **render.TABLE_STYLE)
    for heading in ("building", "delivers", "", "chunks", "on its point"):
        t.add_column(heading, no_wrap=True)
    for s in held:
        t.add_row(s.building, s.ref, _staging_bar(s), _chunks(s), s.state)
    return t


def frame(
    p: DeploymentProgress,
    interval: float | None = None,
    held: list[DeliveryStaging] | None = None,
) -> RenderableType:
    """One picture of the deployment: state, why it waits, its points' stagings (``held``),
    per building and wave, failures."""
    zone = state.settings.zone
    parts: list[RenderableType] = []
    head = Text.from_markup(f"[bold]deployment {p.id}: {escape(p.ref)} — {p.state}[/]")
    head.append(f"  at {render.when(p.at, zone)}", style="dim")
    if interval is not None and not p.final:
        head.append(f", every {interval:g}s; Ctrl-C stops watching", style="dim")
    parts.append(head)
    why = _why(p)
    if why:
        parts.append(Text(why, style="yellow"))
    elif p.reason:
        parts.append(Text(p.reason))
    for building, opening in sorted(p.next_windows.items(), key=lambda kv: (len(kv[0]), kv[0])):
        if opening.start <= p.at:
            parts.append(Text(f"window {building} open until {render.when(opening.end, zone)}"))
        else:
            parts.append(
                Text(
                    f"next window {building} {render.when(opening.start, zone)} "
                    f"to {render.when(opening.end, zone)}"
                )
            )
    if p.deadline is not None and not p.final:
        parts.append(Text(f"deadline {render.when(p.deadline, zone)}"))
    if held and has_points(held):
        parts.append(_points(held))
    t = Table(title="progress", **render.TABLE_STYLE)
    for heading in ("building", "wave", "", "done", "clients"):
        t.add_column(heading, no_wrap=heading != "clients")
    for cell in p.cells:
        current = cell.wave == p.current_wave
        t.add_row(
            cell.building,
            f"[bold]{_wave_label(cell)}[/]" if current else _wave_label(cell),
            _bar(cell),
            f"{cell.done}/{cell.total}",
            _count_text(cell),
        )
    parts.append(t)
    if p.failures:
        f = Table(title="latest failures", **render.TABLE_STYLE)
        for heading in ("host", "building", "wave", "failing step: message"):
            f.add_column(heading, no_wrap=heading == "host")
        for c in p.failures:
            f.add_row(
                c.hostname,
                c.building,
                str(c.wave),
                escape(f"{c.step}: {c.reason}" if c.step else (c.reason or "")),
            )
        parts.append(f)
    return Group(*parts)


def _lines(p: DeploymentProgress, held: list[DeliveryStaging]) -> dict[str, str]:
    """What a log shows of the frame: one line per thing that can change, by key."""
    why = _why(p) or (f"{p.state}: {p.reason}" if p.reason else p.state)
    lines = {"state": f"deployment {p.id} is {why}"}
    if has_points(held):
        for s in held:
            sent = f", {s.chunks_sent} of {s.chunks_total} chunks sent" if s.at else ""
            lines[f"point {s.building} {s.ref}"] = (
                f"building {s.building}'s point: {s.ref} {s.state}{sent}"
            )
    for cell in p.cells:
        lines[f"cell {cell.building} {cell.wave}"] = (
            f"building {cell.building} {_wave_label(cell)}: {_count_text(cell)}"
        )
    for c in p.failures:
        what = f"{c.step}: {c.reason}" if c.step else (c.reason or "")
        lines[f"failed {c.hostname} {c.at.isoformat()}"] = f"{c.hostname} failed: {what}"
    return lines


def _print_changes(
    p: DeploymentProgress, held: list[DeliveryStaging], before: dict[str, str]
) -> dict[str, str]:
    now = _lines(p, held)
    stamp = _hhmm(p)
    for key, text in now.items():
        if before.get(key) != text:
            console.print(f"{stamp} {escape(text)}", highlight=False, soft_wrap=True)
    return now


def _final_summary(deployment_id: int) -> None:
    for part in show_parts(deployments.show(state.ctx, state.actor(), deployment_id)):
        console.print(part)


def deploy_watch(
    deployment_id: ID,
    interval: Annotated[
        float, typer.Option(help="Seconds between looks at the deployment (more than 0).")
    ] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Draw one frame and exit.")] = False,
    as_json: bool = typer.Option(False, "--json", help="With --once: print it as JSON."),
) -> None:
    """Follow one deployment live, per building and wave, until it ends (Ctrl-C stops watching)."""
    if not (interval > 0 and math.isfinite(interval)):
        raise InvalidInput(
            f"must be a number of seconds above 0, not {interval:g}", field="interval"
        )
    if as_json and not once:
        raise InvalidInput("--json draws one frame: use it with --once", field="json")
    ctx, actor = state.ctx, state.actor()

    def look() -> tuple[DeploymentProgress, list[DeliveryStaging]]:
        return (
            deployments.progress(ctx, actor, deployment_id),
            staging.deployment_stagings(ctx, actor, deployment_id),
        )

    p, held = look()
    if as_json:
        print_json({**to_jsonable(p), "stagings": held})
        return
    if once:
        console.print(frame(p, held=held))
        if p.final:
            _final_summary(deployment_id)
        return
    try:
        if console.is_terminal:
            with Live(frame(p, interval, held), console=console, auto_refresh=False) as live:
                while not p.final:
                    _sleep(interval)
                    p, held = look()
                    live.update(frame(p, interval, held), refresh=True)
        else:
            shown = _print_changes(p, held, {})
            while not p.final:
                _sleep(interval)
                p, held = look()
                shown = _print_changes(p, held, shown)
    except KeyboardInterrupt:
        console.print(
            f"stopped watching; deployment {deployment_id} goes on in the service "
            f"('orchestrator deploy show {deployment_id}')",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(0) from None
    _final_summary(deployment_id)


COMMANDS: dict[str, Callable[..., None]] = {"watch": deploy_watch}
