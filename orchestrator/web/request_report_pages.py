"""The request intake's report on the web: ``/requests/report`` (charts, each with
its table) and ``/requests/report.csv`` (the same figures, same filters, as one CSV).

The figures are :func:`orchestrator.services.request_reports.request_report`'s;
the charts are :mod:`orchestrator.web.charts`' (inline SVG, no script), the
tables the template's (autoescaped).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from orchestrator.services import directory, request_reports
from orchestrator.services.request_reports import RequestReport
from orchestrator.web import charts
from orchestrator.web.auth import Caller, context
from orchestrator.web.charts import Figure, Series
from orchestrator.web.pages import CallerDep, render

router = APIRouter(include_in_schema=False)

BuildingParam = Annotated[str, Query(max_length=6)]
FromParam = Annotated[str, Query(alias="from", max_length=7)]
ToParam = Annotated[str, Query(alias="to", max_length=7)]

TECHNICIANS_QUEUE = "the building technician's queue"
TO_DEPARTMENTS = "routed to a department"


# ---------------------------------------------------------------------------
# The figures the charts draw
# ---------------------------------------------------------------------------


def filed_figure(report: RequestReport) -> Figure:
    """Buildings as categories, one series per request category (stacked)."""
    totals: dict[tuple[str, str], int] = {}
    for f in report.filed:
        totals[f.building, f.category] = totals.get((f.building, f.category), 0) + f.requests
    buildings = [b.building for b in report.durations_by_building]
    return Figure(
        title="Requests filed per building, by category",
        category_label="Building",
        categories=tuple(b.label for b in buildings),
        series=tuple(
            Series(c.label, tuple(float(totals.get((b.number, c.key), 0)) for b in buildings))
            for c in report.categories
        ),
        unit="requests",
    )


def monthly_figure(report: RequestReport) -> Figure:
    """Months as categories: requests in the technician's queue, and those routed
    to a department (stacked)."""
    queue = {c.key: c.queue.value for c in report.categories}
    tech = dict.fromkeys(report.months, 0)
    away = dict.fromkeys(report.months, 0)
    for f in report.filed:
        (away if queue[f.category] == "department" else tech)[f.month] += f.requests
    return Figure(
        title="Requests filed per month",
        category_label="Month",
        categories=report.months,
        series=(
            Series(
                TECHNICIANS_QUEUE, tuple(float(tech[m]) for m in report.months), charts.PALETTE[0]
            ),
            Series(TO_DEPARTMENTS, tuple(float(away[m]) for m in report.months), charts.PALETTE[1]),
        ),
        unit="requests",
    )


def filed_table_figure(report: RequestReport) -> Figure:
    """Building and category as rows, one column per month: the whole count, as a table."""
    labels = {c.key: c.label for c in report.categories}
    names = {b.number: b.label for b in report.buildings}
    rows: dict[tuple[str, str], dict[str, int]] = {}
    for f in report.filed:
        rows.setdefault((f.building, f.category), {})[f.month] = f.requests
    return Figure(
        title="Requests filed per building and category, per month",
        category_label="Building · category",
        categories=tuple(f"{names.get(b, b)} · {labels[c]}" for b, c in rows),
        series=tuple(
            Series(m, tuple(float(per.get(m, 0)) for per in rows.values())) for m in report.months
        ),
        unit="requests",
    )


def response_figure(report: RequestReport, *, close: bool = False) -> Figure:
    """Buildings with a response (or a close) as categories: the median hours to it."""
    pairs = [
        (b.building.label, median)
        for b in report.durations_by_building
        if (
            median := (
                b.durations.close_median_hours if close else b.durations.first_response_median_hours
            )
        )
        is not None
    ]
    what = "close" if close else "first response"
    return Figure.of_pairs(
        f"Median hours to {what}, per building",
        pairs,
        category_label="Building",
        series=f"median hours to {what}",
        unit="hours",
    )


def routing_figure(report: RequestReport) -> Figure:
    """Buildings as categories: requests in the technician's queue, and those routed
    to a department (stacked)."""
    rows = report.routing_by_building
    return Figure(
        title="Requests routed outside technicians' duties, per building",
        category_label="Building",
        categories=tuple(b.building.label for b in rows),
        series=(
            Series(
                TECHNICIANS_QUEUE,
                tuple(float(b.routing.requests - b.routing.to_departments) for b in rows),
                charts.PALETTE[0],
            ),
            Series(
                TO_DEPARTMENTS,
                tuple(float(b.routing.to_departments) for b in rows),
                charts.PALETTE[1],
            ),
        ),
        unit="requests",
    )


def departments_figure(report: RequestReport) -> Figure:
    return Figure.of_pairs(
        "Requests routed to each department",
        ((d.department, d.requests) for d in report.routing.departments),
        category_label="Department",
        series="requests",
        unit="requests",
    )


def workload_figure(report: RequestReport) -> Figure:
    """Buildings with a technician: technician-queue requests per technician."""
    return Figure.of_pairs(
        "Technician's-queue requests per technician, per building",
        (
            (w.building.label, w.requests_per_technician)
            for w in report.workload
            if w.requests_per_technician is not None
        ),
        category_label="Building",
        series="requests per technician",
        unit="requests per technician",
    )


# ---------------------------------------------------------------------------
# The pages
# ---------------------------------------------------------------------------


def _report(
    request: Request, caller: Caller, building: str, first: str, last: str
) -> RequestReport:
    return request_reports.request_report(
        context(request),
        caller.actor,
        first_month=first or None,
        last_month=last or None,
        building=building or None,
    )


@router.get("/requests/report", response_class=HTMLResponse)
def request_report_page(
    request: Request,
    caller: CallerDep,
    building: BuildingParam = "",
    first: FromParam = "",
    last: ToParam = "",
) -> HTMLResponse:
    report = _report(request, caller, building, first, last)
    filed = filed_figure(report)
    monthly = monthly_figure(report)
    routing = routing_figure(report)
    departments = departments_figure(report)
    workload = workload_figure(report)
    first_response = response_figure(report)
    closing = response_figure(report, close=True)
    query = {"building": report.building or "", "from": report.first_month, "to": report.last_month}
    return render(
        request,
        "request_report.html",
        {
            "report": report,
            "buildings": directory.buildings(context(request), caller.actor),
            "query": query,
            "chart_filed": charts.stacked_bar_chart(filed),
            "table_filed": charts.table(filed),
            "chart_monthly": charts.stacked_bar_chart(monthly),
            "table_monthly": charts.table(monthly),
            "table_filed_months": charts.table(filed_table_figure(report)),
            "chart_first_response": charts.bar_chart(first_response),
            "chart_close": charts.bar_chart(closing),
            "chart_routing": charts.stacked_bar_chart(routing),
            "chart_departments": charts.bar_chart(departments),
            "chart_workload": charts.bar_chart(workload),
        },
        caller=caller,
    )


@router.get("/requests/report.csv")
def request_report_csv(
    request: Request,
    caller: CallerDep,
    building: BuildingParam = "",
    first: FromParam = "",
    last: ToParam = "",
) -> Response:
    """The report's figures as one CSV, to open in a spreadsheet."""
    report = _report(request, caller, building, first, last)
    return Response(
        request_reports.report_csv(report),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{request_reports.csv_filename(report)}"'
        },
    )
