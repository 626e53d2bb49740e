"""The request intake's figures (services/request_reports.py), on both databases.

The requests are filed, taken, escalated and closed through the real services at
moments set on the test clock, so every duration is known. The clock is then put
back to the test district's Monday, 2026-03-02 10:00 in New York, and the default
range is the twelve months 2025-04 to 2026-03.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import col, select

from orchestrator.clock import FixedClock
from orchestrator.db.models import Building, RequestCategory, ServiceRequest
from orchestrator.db.session import transaction
from orchestrator.domain.requests import Queue
from orchestrator.domain.states import Role
from orchestrator.errors import InvalidInput, NotFound
from orchestrator.services import audit, request_reports, requests
from orchestrator.services.request_reports import Durations, RequestReport
from orchestrator.services.requests import RequestSpec
from tests.conftest import NOW
from tests.factories import District


def _at(day: str, hour: int = 14) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


class Desk:
    """Files and works requests at set moments, then puts the clock back."""

    def __init__(self, d: District, clock: FixedClock) -> None:
        self.d, self.clock = d, clock

    def file(self, at: datetime, building: str, category: str, who: str = "it.ana") -> int:
        self.clock.now = at
        spec = RequestSpec(building=building, category=category, description=f"{category} here")
        return requests.file_request(self.d.ctx, self.d[who], spec).id

    def take(self, rid: int, at: datetime, who: str) -> None:
        self.clock.now = at
        requests.take(self.d.ctx, self.d[who], rid)

    def escalate(self, rid: int, at: datetime, who: str) -> None:
        self.clock.now = at
        requests.escalate(self.d.ctx, self.d[who], rid, reason="needs IT's stock")

    def close(self, rid: int, at: datetime, who: str) -> None:
        self.clock.now = at
        requests.close(self.d.ctx, self.d[who], rid, note="done")


@pytest.fixture
def desk(district: District, clock: FixedClock) -> Desk:
    return Desk(district, clock)


@pytest.fixture
def filed(desk: Desk, clock: FixedClock) -> Desk:
    """Lincoln (101) and Washington (102) requests with known times; one of Kennedy
    High's (301) from before the default range."""
    h = timedelta(hours=1)
    r1 = desk.file(_at("2026-01-05"), "101", "hardware_repair")
    desk.take(r1, _at("2026-01-05") + 2 * h, "btc.lincoln")
    desk.close(r1, _at("2026-01-05") + 10 * h, "btc.lincoln")
    r2 = desk.file(_at("2026-02-10"), "101", "hardware_repair")
    desk.take(r2, _at("2026-02-10") + 4 * h, "btc.lincoln")
    desk.file(_at("2026-02-11"), "101", "network")  # nobody has answered
    r4 = desk.file(_at("2026-02-12"), "101", "telephone", who="principal.lincoln")
    desk.close(r4, _at("2026-02-12") + 24 * h, "it.ana")
    r8 = desk.file(_at("2026-02-15"), "101", "account_password")
    desk.escalate(r8, _at("2026-02-15") + 3 * h, "btc.lincoln")
    # 04:30 UTC on Feb 1 is 23:30 on Jan 31 in New York: a January request.
    late = datetime(2026, 2, 1, 4, 30, tzinfo=UTC)
    r5 = desk.file(late, "102", "software_access")
    desk.take(r5, late + h, "btc.garcia")
    desk.close(r5, late + 6 * h, "btc.garcia")
    desk.file(_at("2026-02-20"), "102", "web_site")
    desk.file(_at("2025-03-15"), "301", "imaging")  # before April 2025
    clock.now = NOW
    return desk


def _report(d: District, who: str = "it.ana", **kw: str) -> RequestReport:
    return request_reports.request_report(d.ctx, d[who], **kw)


def test_the_default_range_is_the_last_twelve_months_in_the_district(
    district: District,
) -> None:
    report = _report(district)
    assert report.months[0] == "2025-04" and report.months[-1] == "2026-03"
    assert len(report.months) == 12
    assert report.filed == () and report.routing.requests == 0
    assert report.routing.share_to_departments is None


def test_requests_are_counted_per_building_category_and_local_month(filed: Desk) -> None:
    report = _report(filed.d)
    counts = {(f.building, f.category, f.month): f.requests for f in report.filed}
    assert counts == {
        ("101", "hardware_repair", "2026-01"): 1,
        ("101", "hardware_repair", "2026-02"): 1,
        ("101", "account_password", "2026-02"): 1,
        ("101", "network", "2026-02"): 1,
        ("101", "telephone", "2026-02"): 1,
        ("102", "software_access", "2026-01"): 1,  # 23:30 on Jan 31 in New York
        ("102", "web_site", "2026-02"): 1,
    }
    assert [b.number for b in report.buildings] == ["101", "102", "201", "301", "302"]
    # Kennedy High's request of March 2025 counts once the range reaches back to it.
    wider = _report(filed.d, first_month="2025-03")
    assert ("301", "imaging", "2025-03") in {(f.building, f.category, f.month) for f in wider.filed}


def test_time_to_first_response_and_to_close_per_building_with_those_still_waiting(
    filed: Desk,
) -> None:
    by = {b.building.number: b.durations for b in _report(filed.d).durations_by_building}
    # 101: responses after 2, 3, 4 and 24 hours, one waiting; closed after 10 and 24.
    assert by["101"] == Durations(
        requests=5,
        responded=4,
        waiting=1,
        first_response_median_hours=3.5,
        first_response_p90_hours=18.0,
        closed=2,
        still_open=3,
        close_median_hours=17.0,
        close_p90_hours=22.6,
    )
    assert by["102"] == Durations(
        requests=2,
        responded=1,
        waiting=1,
        first_response_median_hours=1.0,
        first_response_p90_hours=1.0,
        closed=1,
        still_open=1,
        close_median_hours=6.0,
        close_p90_hours=6.0,
    )
    assert set(by) == {"101", "102"}


def test_time_to_first_response_and_to_close_per_category(filed: Desk) -> None:
    by = {c.category.key: c.durations for c in _report(filed.d).durations_by_category}
    hardware = by["hardware_repair"]
    assert (hardware.requests, hardware.first_response_median_hours) == (2, 3.0)
    assert (hardware.first_response_p90_hours, hardware.close_median_hours) == (3.8, 10.0)
    web = by["web_site"]
    assert (web.waiting, web.first_response_median_hours, web.close_median_hours) == (1, None, None)
    assert by["telephone"].close_median_hours == 24.0
    assert list(by) == [
        "hardware_repair",
        "software_access",
        "account_password",
        "network",
        "telephone",
        "web_site",
    ]


def test_the_share_routed_outside_technicians_duties_per_building_and_in_all(
    filed: Desk,
) -> None:
    report = _report(filed.d)
    by = {b.building.number: b.routing for b in report.routing_by_building}
    assert (by["101"].requests, by["101"].to_departments, by["101"].share_to_departments) == (
        5,
        1,
        0.2,
    )
    assert [(x.department, x.requests) for x in by["101"].departments] == [
        ("Telecommunications", 1)
    ]
    assert by["102"].share_to_departments == 0.5
    everything = report.routing
    assert (everything.requests, everything.to_departments) == (7, 2)
    assert everything.share_to_departments == 0.2857
    assert [(x.department, x.requests) for x in everything.departments] == [
        ("Communications", 1),
        ("Telecommunications", 1),
    ]


def test_technician_workload_per_building_with_its_technicians(filed: Desk) -> None:
    by = {w.building.number: w for w in _report(filed.d).workload}
    lincoln = by["101"]
    assert lincoln.technicians == ("btc.lincoln",)
    # The telephone request went to Telecommunications: not the technician's queue.
    assert (lincoln.filed, lincoln.open, lincoln.escalated, lincoln.closed) == (4, 3, 1, 1)
    assert lincoln.unassigned == 2  # the network request nobody took, the escalated one
    assert [(a.username, a.role, a.assigned, a.open, a.closed) for a in lincoln.per_assignee] == [
        ("btc.lincoln", Role.BTC, 2, 1, 1)
    ]
    assert lincoln.requests_per_technician == 4.0
    assert (by["102"].filed, by["102"].closed, by["102"].requests_per_technician) == (1, 1, 1.0)
    # Kennedy High has two SecTecs and nothing filed in the range.
    assert by["301"].technicians == ("sectec.kim", "sectec.lee")
    assert (by["301"].filed, by["301"].requests_per_technician) == (0, 0.0)


def test_a_building_without_a_technician_has_no_requests_per_technician(
    desk: Desk, district: District
) -> None:
    with transaction(district.ctx.engine) as s:
        s.add(Building(number="401", name="District Office", level="office"))
    desk.file(_at("2026-02-02"), "401", "hardware_repair")
    desk.clock.now = NOW
    (office,) = [w for w in _report(district).workload if w.building.number == "401"]
    assert (office.filed, office.technicians, office.requests_per_technician) == (1, (), None)


@pytest.mark.parametrize("who", ["btc.lincoln", "principal.lincoln"])
def test_building_staff_count_only_their_own_building(filed: Desk, who: str) -> None:
    report = _report(filed.d, who)
    assert {f.building for f in report.filed} == {"101"}
    assert [b.building.number for b in report.durations_by_building] == ["101"]
    assert [w.building.number for w in report.workload] == ["101"]
    # Their building's department work counts for them too, as a number.
    assert (report.routing.requests, report.routing.to_departments) == (5, 1)


def test_edtech_counts_the_district(filed: Desk) -> None:
    assert _report(filed.d, "edtech.grace").routing.requests == 7


def test_one_building_alone_and_another_buildings_report_is_not_found(filed: Desk) -> None:
    only = _report(filed.d, building="102")
    assert {f.building for f in only.filed} == {"102"} and only.building == "102"
    with pytest.raises(NotFound, match=r"no building '102' \(see 'orchestrator buildings'\)"):
        _report(filed.d, "btc.lincoln", building="102")
    with pytest.raises(NotFound, match="no building '999'"):
        _report(filed.d, building="999")


@pytest.mark.parametrize(
    ("kw", "field", "words"),
    [
        ({"first_month": "2026-13"}, "from", "months are 01 to 12"),
        ({"first_month": "26-03"}, "from", "is not a month (YYYY-MM"),
        ({"last_month": "2026-3"}, "to", "is not a month (YYYY-MM"),
        ({"last_month": "2026-1\x00"}, "to", "is not a month"),
        ({"first_month": "1999-12"}, "from", "before 2000"),
        ({"first_month": "2026-02", "last_month": "2026-01"}, "from", "is after the last month"),
        ({"last_month": "2026-04"}, "to", "after this month (2026-03)"),
        ({"first_month": "2023-03"}, "from", "37 months: a report covers at most 36"),
        ({"building": "ab"}, "building", "is not a building number"),
    ],
)
def test_a_bad_range_or_building_is_refused_naming_the_field_and_changes_nothing(
    filed: Desk, kw: dict[str, str], field: str, words: str
) -> None:
    d = filed.d
    before = _state(d)
    with pytest.raises(InvalidInput) as raised:
        _report(d, **kw)
    assert raised.value.field == field
    assert words in raised.value.message
    assert _state(d) == before


def _state(d: District) -> tuple[object, ...]:
    with transaction(d.ctx.engine) as s:
        rows = s.exec(select(ServiceRequest).order_by(col(ServiceRequest.id))).all()
        shown = tuple((r.id, r.state, r.state_version, r.assignee_id) for r in rows)
    return shown, len(audit.entries(d.ctx, d["it.ana"], limit=1000))


def test_thirty_six_months_are_allowed(filed: Desk) -> None:
    report = _report(filed.d, first_month="2023-04")
    assert len(report.months) == 36 and report.months[0] == "2023-04"


# ---------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------


def _csv(report: RequestReport) -> list[dict[str, str]]:
    text = request_reports.report_csv(report)
    assert text.startswith(",".join(request_reports.CSV_HEADER) + "\r\n")
    return list(csv.DictReader(io.StringIO(text)))


def test_the_csv_has_one_value_per_row_with_its_figure(filed: Desk) -> None:
    rows = _csv(_report(filed.d))
    hardware_jan = [
        r
        for r in rows
        if r["figure"] == "filed"
        and r["category"] == "hardware_repair"
        and r["period"] == "2026-01"
    ]
    assert [(r["building"], r["building_name"], r["value"]) for r in hardware_jan] == [
        ("101", "Lincoln Elementary", "1")
    ]
    value = {
        (r["figure"], r["building"], r["category"], r["department"], r["person"], r["measure"]): r[
            "value"
        ]
        for r in rows
        if r["figure"] != "filed"
    }
    assert value["time_by_building", "101", "", "", "", "first_response_p90_hours"] == "18.0"
    assert value["time_by_category", "", "web_site", "Communications", "", "waiting"] == "1"
    assert (
        value["time_by_category", "", "web_site", "Communications", "", "close_median_hours"] == ""
    )
    assert value["routed_outside_duties", "all", "", "", "", "share_to_departments"] == "0.2857"
    assert value["routed_outside_duties", "101", "", "Telecommunications", "", "requests"] == "1"
    assert value["technician_workload", "101", "", "", "", "requests_per_technician"] == "4.0"
    assert value["technician_workload", "101", "", "", "btc.lincoln", "assigned"] == "2"
    assert {r["period"] for r in rows if r["figure"] != "filed"} == {"2025-04/2026-03"}


FORMULAS = ["=", "+", "-", "@", "\t", "\r"]


def test_no_csv_cell_starts_a_formula_whoever_typed_the_names(
    desk: Desk, district: District
) -> None:
    """A category label IT edited, a department, a building's name and technicians'
    usernames from the directory, each starting with every character a spreadsheet
    may take for a formula, come out behind a single quote."""
    ctx = district.ctx
    # Written as IT's edits leave them (services/requests.py edit_category, add_category).
    with transaction(ctx.engine) as s:
        hardware = s.exec(
            select(RequestCategory).where(RequestCategory.key == "hardware_repair")
        ).one()
        hardware.label = '=HYPERLINK("x","y")'
        s.add(hardware)
        s.add(
            RequestCategory(
                key="murals",
                label="@SUM(1,2)",
                queue="department",
                department="+Facilities",
                why="not a technician's work",
            )
        )
    with transaction(ctx.engine) as s:
        lincoln = s.exec(select(Building).where(Building.number == "101")).one()
        lincoln.name = "\tLincoln\rElementary"
        s.add(lincoln)
    district.person("-dash.tech", Role.BTC, ["101"])
    district.person("=eq.tech", Role.BTC, ["101"])
    for who in ("-dash.tech", "=eq.tech"):
        desk.take(desk.file(_at("2026-02-02"), "101", "hardware_repair"), _at("2026-02-03"), who)
    desk.file(_at("2026-02-04"), "101", "murals")
    desk.clock.now = NOW

    text = request_reports.report_csv(_report(district))
    rows = list(csv.reader(io.StringIO(text)))
    cells = [c for row in rows for c in row]
    assert cells, text
    assert [c for c in cells if c.startswith(tuple(FORMULAS))] == []
    for typed in (
        '=HYPERLINK("x","y")',
        "@SUM(1,2)",
        "+Facilities",
        "\tLincoln\rElementary",
        "-dash.tech",
        "=eq.tech",
    ):
        assert "'" + typed in cells, typed
    # Counts stay numbers: nothing but text is quoted.
    assert "'2" not in cells


def test_the_csv_of_one_building_is_named_for_it(filed: Desk) -> None:
    assert (
        request_reports.csv_filename(_report(filed.d, building="101"))
        == "requests-2025-04-to-2026-03-101.csv"
    )
    assert request_reports.csv_filename(_report(filed.d)) == "requests-2025-04-to-2026-03.csv"


def test_department_queue_is_what_counts_as_outside_duties(filed: Desk) -> None:
    report = _report(filed.d)
    department_keys = {c.key for c in report.categories if c.queue is Queue.DEPARTMENT}
    outside = sum(f.requests for f in report.filed if f.category in department_keys)
    assert outside == report.routing.to_departments == 2
