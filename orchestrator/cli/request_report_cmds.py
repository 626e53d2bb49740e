"""``orchestrator requests report``: what the intake adds up to, as tables or as CSV."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from orchestrator.cli import render
from orchestrator.cli.app import JSON_OPTION, console, print_json, state
from orchestrator.errors import InvalidInput
from orchestrator.services import request_reports
from orchestrator.services.request_reports import Durations, RequestReport, Routing


def report(
    building: Annotated[str | None, typer.Option(help="Only this building.")] = None,
    first: Annotated[
        str | None,
        typer.Option("--from", help="The first month, YYYY-MM (default: 11 months before --to)."),
    ] = None,
    last: Annotated[
        str | None, typer.Option("--to", help="The last month, YYYY-MM (default: this month).")
    ] = None,
    csv_file: Annotated[
        str | None,
        typer.Option(
            "--csv",
            metavar="FILE|-",
            help="Write the report as CSV to FILE ('-': standard output).",
        ),
    ] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Requests per building, category and month, with response times and workload.

    Time to first response and to close; the share routed outside technicians'
    duties; technician workload per building."""
    if csv_file is not None and as_json:
        raise InvalidInput("give --csv or --json, not both", field="csv")
    if csv_file == "":
        raise InvalidInput("name a file, or '-' for standard output", field="csv")
    r = request_reports.request_report(
        state.ctx, state.actor(), first_month=first, last_month=last, building=building
    )
    if csv_file is not None:
        _write_csv(r, csv_file)
        return
    if as_json:
        print_json(r)
        return
    for part in (
        _summary(r),
        _filed(r),
        _times("time to first response and to close, per building", "building", _by_building(r)),
        _times("per category", "category", _by_category(r)),
        _routing(r),
        _workload(r),
    ):
        if part != "":
            console.print(part)


def _write_csv(r: RequestReport, target: str) -> None:
    text = request_reports.report_csv(r)
    if target == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    path = Path(target)
    try:
        path.write_text(text, encoding="utf-8", newline="")
    except OSError as exc:
        raise InvalidInput(f"cannot write {target}: {exc.strerror}", field="csv") from None
    rows = text.count("\r\n") - 1
    console.print(f"wrote {rows} rows ({r.period}) to {escape(target)}", highlight=False)


def _where(r: RequestReport) -> str:
    return f"building {r.building}" if r.building else "the buildings you may see"


def _share(routing: Routing) -> str:
    share = routing.share_to_departments
    return "—" if share is None else f"{100 * share:.0f}%"


def _summary(r: RequestReport) -> str:
    return (
        f"requests filed {r.first_month} to {r.last_month} in {_where(r)}: {r.total} "
        f"({r.routing.to_departments} routed to a department, {_share(r.routing)})"
    )


def _filed(r: RequestReport) -> Table | str:
    if not r.filed:
        return "no requests filed"
    months = [m for m in r.months if any(f.month == m for f in r.filed)]
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for f in r.filed:
        counts.setdefault((f.building, f.category), {})[f.month] = f.requests
    t = Table(title="requests filed, by month", **render.TABLE_STYLE)
    t.add_column("building")
    t.add_column("category")
    for m in months:
        t.add_column(m, justify="right")
    t.add_column("total", justify="right")
    for (b, c), per in counts.items():
        t.add_row(
            b,
            c,
            *(str(per.get(m, "")) for m in months),
            str(sum(per.values())),
        )
    return t


def _hours(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}"


def _by_building(r: RequestReport) -> list[tuple[str, Durations]]:
    return [(b.building.number, b.durations) for b in r.durations_by_building]


def _by_category(r: RequestReport) -> list[tuple[str, Durations]]:
    return [(c.category.key, c.durations) for c in r.durations_by_category]


def _times(title: str, first: str, rows: list[tuple[str, Durations]]) -> Table | str:
    if not rows:
        return ""
    t = Table(title=f"{title} (hours)", **render.TABLE_STYLE)
    t.add_column(first)
    for heading in (
        "filed",
        "waiting",
        "response median",
        "p90",
        "closed",
        "open",
        "close median",
        "p90",
    ):
        t.add_column(heading, justify="right")
    for name, d in rows:
        t.add_row(
            name,
            str(d.requests),
            str(d.waiting),
            _hours(d.first_response_median_hours),
            _hours(d.first_response_p90_hours),
            str(d.closed),
            str(d.still_open),
            _hours(d.close_median_hours),
            _hours(d.close_p90_hours),
        )
    return t


def _departments(routing: Routing) -> str:
    return escape(", ".join(f"{d.department} {d.requests}" for d in routing.departments))


def _routing(r: RequestReport) -> Table | str:
    if not r.routing_by_building:
        return ""
    t = Table(title="routed outside technicians' duties", **render.TABLE_STYLE)
    t.add_column("building")
    for heading in ("filed", "to departments", "share"):
        t.add_column(heading, justify="right")
    t.add_column("departments")
    for b in r.routing_by_building:
        t.add_row(
            b.building.number,
            str(b.routing.requests),
            str(b.routing.to_departments),
            _share(b.routing),
            _departments(b.routing),
        )
    if len(r.routing_by_building) > 1:
        t.add_row(
            "all",
            str(r.routing.requests),
            str(r.routing.to_departments),
            _share(r.routing),
            _departments(r.routing),
        )
    return t


def _workload(r: RequestReport) -> Table | str:
    if not r.workload:
        return ""
    t = Table(
        title="technician workload: the technician's queue (assigned: open/closed)",
        **render.TABLE_STYLE,
    )
    t.add_column("building")
    t.add_column("technicians")
    for heading in ("filed", "open", "escalated", "closed", "unassigned", "per tech"):
        t.add_column(heading, justify="right")
    t.add_column("assigned")
    for w in r.workload:
        t.add_row(
            w.building.number,
            escape(", ".join(w.technicians)) or "none",
            str(w.filed),
            str(w.open),
            str(w.escalated),
            str(w.closed),
            str(w.unassigned),
            "—" if w.requests_per_technician is None else f"{w.requests_per_technician:.1f}",
            escape(", ".join(f"{a.username} {a.open}/{a.closed}" for a in w.per_assignee)),
        )
    return t
