"""``/api/v1/reports/requests``: the request intake's figures for scripts (JSON or CSV).

The same report as the page and ``orchestrator requests report``
(:func:`orchestrator.services.request_reports.request_report`): counted only over
the buildings the caller may see; another building asked for is not found.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from orchestrator.services import request_reports
from orchestrator.services.request_reports import RequestReport
from orchestrator.web.api import ERRORS, no_nul_in_parameters
from orchestrator.web.auth import ActorDep, ContextDep

router = APIRouter(prefix="/api/v1", dependencies=[Depends(no_nul_in_parameters)])

MONTH = "^[0-9]{4}-[0-9]{2}$"

BuildingQuery = Annotated[
    str | None,
    Query(max_length=6, description="Only this building (its number)."),
]
FromQuery = Annotated[
    str | None,
    Query(
        alias="from",
        pattern=MONTH,
        description="The first month counted, YYYY-MM (default: eleven months before 'to').",
    ),
]
ToQuery = Annotated[
    str | None,
    Query(
        alias="to",
        pattern=MONTH,
        description="The last month counted, YYYY-MM (default: this month in the district).",
    ),
]


class CSVResponse(Response):
    media_type = "text/csv"


# The errors are JSON as everywhere; a model in ``responses`` would be documented
# under the route's own media type (text/csv), so the content is spelled out.
CSV_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {
        "description": e["description"],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }
    for status, e in ERRORS.items()
}


@router.get(
    "/reports/requests",
    operation_id="get_request_report",
    response_model=RequestReport,
    responses=ERRORS,
)
def get_request_report(
    ctx: ContextDep,
    actor: ActorDep,
    building: BuildingQuery = None,
    first: FromQuery = None,
    last: ToQuery = None,
) -> RequestReport:
    """Requests per building, category and month; time to first response and to close;
    the share routed outside technicians' duties; technician workload per building.

    At most 36 months; a month is the district's calendar month."""
    return request_reports.request_report(
        ctx, actor, first_month=first, last_month=last, building=building
    )


@router.get(
    "/reports/requests.csv",
    operation_id="get_request_report_csv",
    response_class=CSVResponse,
    responses={
        200: {
            "description": "The report in long format: figure, building, building_name, "
            "category, category_label, department, person, period, measure, value. No cell "
            "starts with =, +, -, @, a tab or a carriage return (such text is quoted with ').",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        },
        **CSV_ERRORS,
    },
)
def get_request_report_csv(
    ctx: ContextDep,
    actor: ActorDep,
    building: BuildingQuery = None,
    first: FromQuery = None,
    last: ToQuery = None,
) -> CSVResponse:
    """The same report as one CSV document, to open in a spreadsheet."""
    report = request_reports.request_report(
        ctx, actor, first_month=first, last_month=last, building=building
    )
    return CSVResponse(
        request_reports.report_csv(report),
        headers={
            "Content-Disposition": f'attachment; filename="{request_reports.csv_filename(report)}"'
        },
    )
