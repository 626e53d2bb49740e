"""What the request intake adds up to: the figures the district justifies its
technicians' allocation with (briefing #2872: every request goes through the one
intake "to aggregate data to support the use of technical resources").

One report, :func:`request_report`, over a range of months (the last twelve by
default, this one included), counted only over the buildings the actor may see
(the catalog's read rule, as :mod:`orchestrator.services.reports`: building staff
their own buildings, IT and EdTech the district):

* **filed**: requests per building, per category, per month filed;
* **time to first response and to close**, per building and per category:
  how many were filed, how many had a first response (taken, escalated or
  closed: the first move of any kind), the median and 90th percentile hours to
  it, how many are still **waiting** for one; and the same for closing;
* **routed outside technicians' duties**: the share of requests that went to
  a department (``queue == department``) per building and over every building
  counted, with the count per department;
* **technician workload** per building: requests in the technician's queue
  filed in the range, how many are open now, escalated to IT, closed, per
  person they are assigned to, and how many technicians (SecTec, BTC) cover
  the building, so that requests per technician can be compared.

Every figure counts the requests *filed* in the range: a request filed in the
range and closed after it counts as closed. A month is the district's calendar
month (``ORCHESTRATOR_DISTRICT_TIMEZONE``): a request filed at 23:30 on the
31st in New York counts in that month, whatever UTC says. Hours are elapsed
hours, nights and weekends included. Quantiles are linear between the nearest
ranks (:func:`orchestrator.domain.reporting.quantile`).

The figures count every request filed, department work included, for anyone
who may see the building: a building technician's list leaves out work routed to
a department (it is not theirs), but how much of it their building files is the
point of the figure. No description, room or client is in the report.

:func:`report_csv` writes the report as one long-format CSV (a ``figure``
column, then what the value is of, then ``measure`` and ``value``), every cell
safe to open in a spreadsheet (:func:`orchestrator.domain.reporting.safe_cell`).

Nothing here writes; :func:`request_report` reads in one transaction and returns
frozen dataclasses.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time

import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator.db.models import (
    Building,
    Person,
    PersonBuilding,
    RequestCategory,
    ServiceRequest,
)
from orchestrator.db.session import transaction
from orchestrator.domain import reporting, validation
from orchestrator.domain.policy import Action, Actor, may
from orchestrator.domain.requests import Queue, RequestState
from orchestrator.domain.states import Role
from orchestrator.services.context import Context
from orchestrator.services.directory import visible_building_row
from orchestrator.services.reports import BuildingRef

TECHNICIAN_ROLES = (Role.SECTEC, Role.BTC)
"""The school-based technicians a building's workload is shared by."""


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CategoryRef:
    """A category as the report names it (its label as IT keeps it now)."""

    key: str
    label: str
    queue: Queue
    department: str
    """For a department's category: the department; '' for the technician's queue."""


@dataclass(frozen=True)
class FiledCount:
    """How many requests a building filed under a category in a month (never 0)."""

    building: str
    category: str
    """The category's key."""
    month: str
    """``YYYY-MM``."""
    requests: int


@dataclass(frozen=True)
class Durations:
    """Time to first response and to close, over requests filed in the range."""

    requests: int
    responded: int
    """Those taken, escalated or closed at least once."""
    waiting: int
    """Those nobody has responded to yet."""
    first_response_median_hours: float | None
    """None: no request has had a response."""
    first_response_p90_hours: float | None
    closed: int
    still_open: int
    close_median_hours: float | None
    """None: none is closed."""
    close_p90_hours: float | None


@dataclass(frozen=True)
class BuildingDurations:
    building: BuildingRef
    durations: Durations


@dataclass(frozen=True)
class CategoryDurations:
    category: CategoryRef
    durations: Durations


@dataclass(frozen=True)
class DepartmentCount:
    department: str
    requests: int


@dataclass(frozen=True)
class Routing:
    """Where requests went: the technician's queue, or a department."""

    requests: int
    to_departments: int
    share_to_departments: float | None
    """``to_departments / requests`` (0 to 1); None when nothing was filed."""
    departments: tuple[DepartmentCount, ...]
    """The most requests first, then by name."""


@dataclass(frozen=True)
class BuildingRouting:
    building: BuildingRef
    routing: Routing


@dataclass(frozen=True)
class AssigneeLoad:
    """A person's share of a building's technician-queue requests (the person
    a request is assigned to now: whoever took it last)."""

    username: str
    role: Role
    assigned: int
    open: int
    """Of those, not closed yet."""
    closed: int


@dataclass(frozen=True)
class BuildingWorkload:
    """The technician's queue of a building: requests filed in the range."""

    building: BuildingRef
    technicians: tuple[str, ...]
    """The SecTecs and BTCs covering the building (active ones), by username."""
    filed: int
    open: int
    """Not closed yet (open, taken or escalated)."""
    escalated: int
    """Passed to IT and not taken back yet (counted in ``open`` too)."""
    closed: int
    unassigned: int
    """Not closed and nobody on it (waiting, or escalated to IT)."""
    per_assignee: tuple[AssigneeLoad, ...]
    """The most requests first, then by username."""
    requests_per_technician: float | None
    """``filed / len(technicians)``; None when no technician covers the building."""


@dataclass(frozen=True)
class RequestReport:
    months: tuple[str, ...]
    """``YYYY-MM``, oldest first, both ends included."""
    building: str | None
    """The building asked for; None: every building the actor may see."""
    generated_at: datetime
    buildings: tuple[BuildingRef, ...]
    """Buildings with a request filed in the range, or a technician, by number."""
    categories: tuple[CategoryRef, ...]
    """Categories with a request filed in the range, in the catalog's order."""
    filed: tuple[FiledCount, ...]
    """By building, category (catalog order), month."""
    durations_by_building: tuple[BuildingDurations, ...]
    """Buildings with a request filed in the range."""
    durations_by_category: tuple[CategoryDurations, ...]
    routing_by_building: tuple[BuildingRouting, ...]
    routing: Routing
    """Every building counted together."""
    workload: tuple[BuildingWorkload, ...]
    """Buildings with a technician-queue request filed in the range, or a technician."""

    @property
    def first_month(self) -> str:
        return self.months[0]

    @property
    def last_month(self) -> str:
        return self.months[-1]

    @property
    def period(self) -> str:
        """The range as ISO 8601 writes it (``2025-04/2026-03``)."""
        return f"{self.first_month}/{self.last_month}"

    @property
    def total(self) -> int:
        return self.routing.requests


@dataclass(frozen=True)
class _Row:
    building_id: int
    category_id: int
    queue: str
    department: str
    state: str
    assignee_id: int | None
    created_at: datetime
    first_response_at: datetime | None
    closed_at: datetime | None


def request_report(
    ctx: Context,
    actor: Actor,
    *,
    first_month: str | None = None,
    last_month: str | None = None,
    building: str | None = None,
) -> RequestReport:
    """The intake's figures over ``first_month`` to ``last_month`` (``YYYY-MM``,
    both included; by default the last twelve months, this one included).

    Raises:
        InvalidInput: a month that is not ``YYYY-MM`` or is after this month, a
            first month after the last, more than
            :data:`~orchestrator.domain.reporting.MAX_MONTHS` months (field
            ``from`` or ``to``); a malformed building number (``building``).
        NotFound: ``building`` names no building, or one the actor may not see.
    """
    months = reporting.month_range(first_month, last_month, today=ctx.today())
    number = validation.building_number(building) if building is not None else None
    after = reporting.month_text(*reporting.add_months(*_ym(months[-1]), 1))
    starts = [reporting.first_day(m) for m in (*months, after)]
    # Local midnights, so each month follows the district's calendar across DST.
    bounds = [datetime.combine(d, time(0), tzinfo=ctx.zone).astimezone(UTC) for d in starts]
    now = ctx.now()
    with transaction(ctx.engine) as session:
        visible = _visible_buildings(session, actor, number)
        categories = {
            c.id: CategoryRef(c.key, c.label, Queue(c.queue), c.department)
            for c in session.exec(select(RequestCategory).order_by(col(RequestCategory.id)))
            if c.id is not None
        }
        rows = _rows(session, list(visible), bounds[0], bounds[-1]) if visible else []
        technicians = _technicians(session, list(visible)) if visible else {}
        people = _people(session, {r.assignee_id for r in rows if r.assignee_id is not None})
    return _figures(
        months=months,
        bounds=bounds,
        building=number,
        now=now,
        visible=visible,
        categories=categories,
        rows=rows,
        technicians=technicians,
        people=people,
    )


def _ym(month: str) -> tuple[int, int]:
    return reporting.parse_month(month, field="month")


def _visible_buildings(
    session: Session, actor: Actor, number: str | None
) -> dict[int, BuildingRef]:
    """Raises: NotFound (as :func:`~orchestrator.services.directory.visible_building_row`)."""
    if number is not None:
        row = visible_building_row(session, actor, number)
        assert row.id is not None
        return {row.id: BuildingRef(row.number, row.name)}
    return {
        b.id: BuildingRef(b.number, b.name)
        for b in session.exec(select(Building).order_by(col(Building.number)))
        if b.id is not None and may(actor, Action.READ_CATALOG, building=b.number)
    }


def _rows(session: Session, buildings: list[int], start: datetime, end: datetime) -> list[_Row]:
    # Medians need every duration, which neither database computes the same way:
    # the few columns of each request filed in the range are read, and added up here.
    found = session.execute(
        sa.select(
            col(ServiceRequest.building_id),
            col(ServiceRequest.category_id),
            col(ServiceRequest.queue),
            col(ServiceRequest.department),
            col(ServiceRequest.state),
            col(ServiceRequest.assignee_id),
            col(ServiceRequest.created_at),
            col(ServiceRequest.first_response_at),
            col(ServiceRequest.closed_at),
        ).where(
            col(ServiceRequest.building_id).in_(buildings),
            col(ServiceRequest.created_at) >= start,
            col(ServiceRequest.created_at) < end,
        )
    ).all()
    return [_Row(*r) for r in found]


def _technicians(session: Session, buildings: list[int]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = defaultdict(list)
    for building_id, username in session.exec(
        select(PersonBuilding.building_id, Person.username)
        .join(Person, col(Person.id) == col(PersonBuilding.person_id))
        .where(
            col(PersonBuilding.building_id).in_(buildings),
            col(Person.active),
            col(Person.role).in_([r.value for r in TECHNICIAN_ROLES]),
        )
    ):
        found[building_id].append(username)
    return {b: sorted(names) for b, names in found.items()}


def _people(session: Session, ids: set[int]) -> dict[int, tuple[str, Role]]:
    if not ids:
        return {}
    return {
        p.id: (p.username, Role(p.role))
        for p in session.exec(select(Person).where(col(Person.id).in_(list(ids))))
        if p.id is not None
    }


# ---------------------------------------------------------------------------
# Adding up
# ---------------------------------------------------------------------------


def _hours(start: datetime, end: datetime) -> float:
    return max((end - start).total_seconds(), 0.0) / 3600


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _durations(rows: Sequence[_Row]) -> Durations:
    first = [_hours(r.created_at, r.first_response_at) for r in rows if r.first_response_at]
    closed = [_hours(r.created_at, r.closed_at) for r in rows if r.closed_at]
    return Durations(
        requests=len(rows),
        responded=len(first),
        waiting=len(rows) - len(first),
        first_response_median_hours=_rounded(reporting.quantile(first, 0.5)),
        first_response_p90_hours=_rounded(reporting.quantile(first, 0.9)),
        closed=len(closed),
        still_open=len(rows) - len(closed),
        close_median_hours=_rounded(reporting.quantile(closed, 0.5)),
        close_p90_hours=_rounded(reporting.quantile(closed, 0.9)),
    )


def _routing(rows: Sequence[_Row]) -> Routing:
    away = Counter(r.department for r in rows if r.queue == Queue.DEPARTMENT.value)
    to_departments = sum(away.values())
    return Routing(
        requests=len(rows),
        to_departments=to_departments,
        share_to_departments=round(to_departments / len(rows), 4) if rows else None,
        departments=tuple(
            DepartmentCount(d, n) for d, n in sorted(away.items(), key=lambda kv: (-kv[1], kv[0]))
        ),
    )


def _workload(
    ref: BuildingRef,
    rows: Sequence[_Row],
    technicians: list[str],
    people: dict[int, tuple[str, Role]],
) -> BuildingWorkload:
    queue = [r for r in rows if r.queue == Queue.TECHNICIAN.value]
    still = [r for r in queue if r.state != RequestState.CLOSED.value]
    per: dict[int, list[_Row]] = defaultdict(list)
    for r in queue:
        if r.assignee_id is not None:
            per[r.assignee_id].append(r)
    loads = [
        AssigneeLoad(
            username=people[pid][0],
            role=people[pid][1],
            assigned=len(rs),
            open=sum(1 for r in rs if r.state != RequestState.CLOSED.value),
            closed=sum(1 for r in rs if r.state == RequestState.CLOSED.value),
        )
        for pid, rs in per.items()
    ]
    return BuildingWorkload(
        building=ref,
        technicians=tuple(technicians),
        filed=len(queue),
        open=len(still),
        escalated=sum(1 for r in still if r.state == RequestState.ESCALATED.value),
        closed=len(queue) - len(still),
        unassigned=sum(1 for r in still if r.assignee_id is None),
        per_assignee=tuple(sorted(loads, key=lambda a: (-a.assigned, a.username))),
        requests_per_technician=round(len(queue) / len(technicians), 2) if technicians else None,
    )


def _figures(
    *,
    months: tuple[str, ...],
    bounds: list[datetime],
    building: str | None,
    now: datetime,
    visible: dict[int, BuildingRef],
    categories: dict[int, CategoryRef],
    rows: list[_Row],
    technicians: dict[int, list[str]],
    people: dict[int, tuple[str, Role]],
) -> RequestReport:
    by_building: dict[int, list[_Row]] = defaultdict(list)
    by_category: dict[int, list[_Row]] = defaultdict(list)
    filed: Counter[tuple[int, int, int]] = Counter()
    for r in rows:
        by_building[r.building_id].append(r)
        by_category[r.category_id].append(r)
        # bounds[i] <= created_at < bounds[i + 1] is month i.
        filed[r.building_id, r.category_id, bisect.bisect_right(bounds, r.created_at) - 1] += 1
    order = sorted(visible, key=lambda bid: visible[bid].number)
    category_order = list(categories)
    with_requests = [bid for bid in order if bid in by_building]
    with_workload = [
        bid
        for bid in order
        if bid in technicians
        or any(r.queue == Queue.TECHNICIAN.value for r in by_building.get(bid, ()))
    ]
    return RequestReport(
        months=months,
        building=building,
        generated_at=now,
        buildings=tuple(visible[bid] for bid in order if bid in by_building or bid in technicians),
        categories=tuple(categories[cid] for cid in category_order if cid in by_category),
        filed=tuple(
            FiledCount(visible[b].number, categories[c].key, months[m], n)
            for (b, c, m), n in sorted(
                filed.items(),
                key=lambda kv: (visible[kv[0][0]].number, category_order.index(kv[0][1]), kv[0][2]),
            )
        ),
        durations_by_building=tuple(
            BuildingDurations(visible[bid], _durations(by_building[bid])) for bid in with_requests
        ),
        durations_by_category=tuple(
            CategoryDurations(categories[cid], _durations(by_category[cid]))
            for cid in category_order
            if cid in by_category
        ),
        routing_by_building=tuple(
            BuildingRouting(visible[bid], _routing(by_building[bid])) for bid in with_requests
        ),
        routing=_routing(rows),
        workload=tuple(
            _workload(visible[bid], by_building.get(bid, []), technicians.get(bid, []), people)
            for bid in with_workload
        ),
    )


# ---------------------------------------------------------------------------
# As CSV
# ---------------------------------------------------------------------------

CSV_HEADER = (
    "figure",
    "building",
    "building_name",
    "category",
    "category_label",
    "department",
    "person",
    "period",
    "measure",
    "value",
)
"""The columns of :func:`report_csv`; a row leaves empty what its figure is not per."""

ALL_BUILDINGS = "all"
"""The ``building`` of a row counting every building of the report."""


def _value(v: float | int | None) -> str:
    return "" if v is None else str(v)


def _duration_cells(d: Durations) -> Iterator[tuple[str, float | int | None]]:
    yield "requests", d.requests
    yield "responded", d.responded
    yield "waiting", d.waiting
    yield "first_response_median_hours", d.first_response_median_hours
    yield "first_response_p90_hours", d.first_response_p90_hours
    yield "closed", d.closed
    yield "still_open", d.still_open
    yield "close_median_hours", d.close_median_hours
    yield "close_p90_hours", d.close_p90_hours


def _routing_rows(
    number: str, name: str, routing: Routing, period: str
) -> Iterator[tuple[str, ...]]:
    for measure, v in (
        ("requests", routing.requests),
        ("to_departments", routing.to_departments),
        ("share_to_departments", routing.share_to_departments),
    ):
        yield ("routed_outside_duties", number, name, "", "", "", "", period, measure, _value(v))
    for d in routing.departments:
        yield (
            "routed_outside_duties",
            number,
            name,
            "",
            "",
            d.department,
            "",
            period,
            "requests",
            str(d.requests),
        )


def csv_rows(report: RequestReport) -> Iterator[tuple[str, ...]]:
    """The report's figures in long format, one value per row (see :data:`CSV_HEADER`).

    ``figure`` is one of ``filed`` (``period`` a month), ``time_by_building``,
    ``time_by_category``, ``routed_outside_duties`` (``building`` ``all`` for
    every building together) and ``technician_workload`` (``person`` set for a
    person's share); ``period`` is the whole range (``2025-04/2026-03``) for all
    but ``filed``.
    """
    names = {b.number: b.name for b in report.buildings}
    cats = {c.key: c for c in report.categories}
    for f in report.filed:
        c = cats[f.category]
        yield (
            "filed",
            f.building,
            names.get(f.building, ""),
            c.key,
            c.label,
            c.department,
            "",
            f.month,
            "requests",
            str(f.requests),
        )
    period = report.period
    for bd in report.durations_by_building:
        for measure, v in _duration_cells(bd.durations):
            yield (
                "time_by_building",
                bd.building.number,
                bd.building.name,
                "",
                "",
                "",
                "",
                period,
                measure,
                _value(v),
            )
    for cd in report.durations_by_category:
        c = cd.category
        for measure, v in _duration_cells(cd.durations):
            yield (
                "time_by_category",
                "",
                "",
                c.key,
                c.label,
                c.department,
                "",
                period,
                measure,
                _value(v),
            )
    for br in report.routing_by_building:
        yield from _routing_rows(br.building.number, br.building.name, br.routing, period)
    yield from _routing_rows(ALL_BUILDINGS, "", report.routing, period)
    for w in report.workload:
        b = w.building
        for measure, v in (
            ("technicians", len(w.technicians)),
            ("filed", w.filed),
            ("open", w.open),
            ("escalated", w.escalated),
            ("closed", w.closed),
            ("unassigned", w.unassigned),
            ("requests_per_technician", w.requests_per_technician),
        ):
            yield (
                "technician_workload",
                b.number,
                b.name,
                "",
                "",
                "",
                "",
                period,
                measure,
                _value(v),
            )
        for a in w.per_assignee:
            for measure, n in (("assigned", a.assigned), ("open", a.open), ("closed", a.closed)):
                yield (
                    "technician_workload",
                    b.number,
                    b.name,
                    "",
                    "",
                    "",
                    a.username,
                    period,
                    measure,
                    str(n),
                )


def report_csv(report: RequestReport) -> str:
    """The report as one CSV document (UTF-8 text, CRLF line ends), no cell of
    which a spreadsheet would run as a formula."""
    return reporting.csv_text(CSV_HEADER, csv_rows(report))


def csv_filename(report: RequestReport) -> str:
    """``requests-2025-04-to-2026-03.csv`` (``-101`` before ``.csv`` for one building)."""
    where = f"-{report.building}" if report.building else ""
    return f"requests-{report.first_month}-to-{report.last_month}{where}.csv"
