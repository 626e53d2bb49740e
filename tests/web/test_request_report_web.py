"""The request intake's report on the web (/requests/report, its CSV) and through the
API (/api/v1/reports/requests, .csv), on both databases."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from html import escape

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from orchestrator.clock import FixedClock
from orchestrator.db.models import Building, RequestCategory
from orchestrator.db.session import transaction
from orchestrator.services import requests
from orchestrator.services.requests import RequestSpec
from tests.conftest import NOW
from tests.factories import District
from tests.web.conftest import SignIn

FEB = datetime(2026, 2, 10, 14, 0, tzinfo=UTC)
TokenFor = Callable[[str], dict[str, str]]


@pytest.fixture
def worked(district: District, clock: FixedClock) -> District:
    """Lincoln (101): a hardware repair taken after 2 hours and closed after 5, and a
    telephone request sent to Telecommunications; Washington (102): a web site request."""
    ctx = district.ctx

    def file(building: str, category: str) -> int:
        spec = RequestSpec(building=building, category=category, description="needs doing")
        return requests.file_request(ctx, district["it.ana"], spec).id

    clock.now = FEB
    repair = file("101", "hardware_repair")
    file("101", "telephone")
    file("102", "web_site")
    clock.now = FEB + timedelta(hours=2)
    requests.take(ctx, district["btc.lincoln"], repair)
    clock.now = FEB + timedelta(hours=5)
    requests.close(ctx, district["btc.lincoln"], repair, note="fixed")
    clock.now = NOW
    return district


def _rename(d: District, *, building: str | None = None, label: str | None = None) -> None:
    with transaction(d.ctx.engine) as s:
        if building is not None:
            b = s.exec(select(Building).where(Building.number == "101")).one()
            b.name = building
            s.add(b)
        if label is not None:
            c = s.exec(select(RequestCategory).where(RequestCategory.key == "telephone")).one()
            c.label = label
            s.add(c)


def test_the_requests_page_links_to_the_report(worked: District, signed_in: SignIn) -> None:
    assert 'href="/requests/report"' in signed_in("principal.lincoln").get("/requests").text


def test_the_report_page_draws_each_figure_with_its_table_for_the_principals_building(
    worked: District, signed_in: SignIn
) -> None:
    page = signed_in("principal.lincoln").get("/requests/report")
    assert page.status_code == 200, page.text
    html = page.text
    for title in (
        "Requests filed per building, by category",
        "Requests filed per month",
        "Median hours to first response, per building",
        "Median hours to close, per building",
        "Requests routed outside technicians' duties, per building",
        "Requests routed to each department",
        "Technician's-queue requests per technician, per building",
    ):
        assert f"<title>{escape(title)}</title>" in html, title
    assert html.count('role="img"') == 7
    assert "<script" not in html
    # Lincoln only: two filed, half of them routed to Telecommunications.
    assert "from 2025-04 to 2026-03" in html and "the buildings you may see: 2 in all" in html
    assert "Washington" not in html
    assert "<td>2</td><td>1</td><td>50%</td><td>Telecommunications: 1</td>" in html
    assert "<td>btc.lincoln</td><td>1</td><td>0</td><td>0</td><td>1</td>" in html
    assert 'href="/requests/report.csv?building=&amp;from=2025-04&amp;to=2026-03"' in html


def test_names_on_the_report_page_are_escaped(worked: District, signed_in: SignIn) -> None:
    _rename(worked, building="<script>alert(1)</script>", label='<img src=x onerror="alert(2)">')
    html = signed_in("it.ana").get("/requests/report").text
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;" in html or (
        "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in html
    )


def test_the_page_for_one_building_and_a_range(worked: District, signed_in: SignIn) -> None:
    html = signed_in("it.ana").get(
        "/requests/report", params={"building": "102", "from": "2026-01", "to": "2026-02"}
    )
    assert html.status_code == 200
    assert "from 2026-01 to 2026-02" in html.text and "building 102: 1 in all" in html.text


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"from": "2026-13"}, "from: &#39;2026-13&#39; is not a month: months are 01 to 12"),
        ({"from": "2026-03", "to": "2026-01"}, "is after the last month asked for"),
        ({"from": "2020-01"}, "a report covers at most 36"),
    ],
)
def test_a_bad_range_on_the_page_is_said_in_the_page(
    worked: District, signed_in: SignIn, params: dict[str, str], words: str
) -> None:
    r = signed_in("it.ana").get("/requests/report", params=params)
    assert r.status_code == 422 and words in r.text


def test_another_buildings_report_page_and_csv_are_not_found(
    worked: District, signed_in: SignIn
) -> None:
    browser = signed_in("btc.lincoln")
    for path in ("/requests/report", "/requests/report.csv"):
        r = browser.get(path, params={"building": "102"})
        assert r.status_code == 404 and "no building &#39;102&#39;" in r.text, path


def test_the_csv_download_is_an_attachment_with_every_formula_quoted(
    worked: District, signed_in: SignIn
) -> None:
    _rename(worked, building="=cmd|' /C calc'!A0", label="@SUM(A1:A9)")
    r = signed_in("principal.lincoln").get("/requests/report.csv", params={"from": "2026-02"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == (
        'attachment; filename="requests-2026-02-to-2026-03.csv"'
    )
    rows = list(csv.DictReader(io.StringIO(r.text)))
    # Lincoln's rows, the per-category ones (no building) and the total: no Washington.
    assert {row["building"] for row in rows} == {"101", "", "all"}
    names = {row["building_name"] for row in rows} | {row["category_label"] for row in rows}
    assert "'=cmd|' /C calc'!A0" in names and "'@SUM(A1:A9)" in names
    assert not [n for n in names if n.startswith(("=", "+", "-", "@"))]


# -- the API ---------------------------------------------------------------------------------


def test_the_api_gives_the_figures_as_json(
    worked: District, web: TestClient, token_for: TokenFor
) -> None:
    r = web.get("/api/v1/reports/requests", headers=token_for("edtech.grace"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["months"][0] == "2025-04" and len(body["months"]) == 12
    assert {(f["building"], f["category"], f["month"], f["requests"]) for f in body["filed"]} == {
        ("101", "hardware_repair", "2026-02", 1),
        ("101", "telephone", "2026-02", 1),
        ("102", "web_site", "2026-02", 1),
    }
    (lincoln, washington) = body["durations_by_building"]
    assert lincoln["building"]["number"] == "101"
    assert lincoln["durations"]["first_response_median_hours"] == 2.0
    assert lincoln["durations"]["close_median_hours"] == 5.0
    assert washington["durations"]["waiting"] == 1
    assert body["routing"]["share_to_departments"] == 0.6667
    assert [d["department"] for d in body["routing"]["departments"]] == [
        "Communications",
        "Telecommunications",
    ]
    workload = {w["building"]["number"]: w for w in body["workload"]}
    assert workload["101"]["per_assignee"] == [
        {"username": "btc.lincoln", "role": "btc", "assigned": 1, "open": 0, "closed": 1}
    ]


def test_the_api_csv_for_a_building_and_a_range(
    worked: District, web: TestClient, token_for: TokenFor
) -> None:
    r = web.get(
        "/api/v1/reports/requests.csv",
        params={"building": "101", "from": "2026-02", "to": "2026-02"},
        headers=token_for("btc.lincoln"),
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert "requests-2026-02-to-2026-02-101.csv" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    filed = [(x["category"], x["period"], x["value"]) for x in rows if x["figure"] == "filed"]
    assert filed == [("hardware_repair", "2026-02", "1"), ("telephone", "2026-02", "1")]


@pytest.mark.parametrize("path", ["/api/v1/reports/requests", "/api/v1/reports/requests.csv"])
def test_the_api_refuses_a_bad_month_names_the_field_and_hides_other_buildings(
    worked: District, web: TestClient, token_for: TokenFor, path: str
) -> None:
    headers = token_for("btc.lincoln")
    bad = web.get(path, params={"from": "2026-00"}, headers=headers)
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "from"
    backwards = web.get(path, params={"from": "2026-03", "to": "2025-12"}, headers=headers)
    assert backwards.status_code == 422 and "after the last month" in backwards.text
    shape = web.get(path, params={"to": "March"}, headers=headers)
    assert shape.status_code == 422 and shape.json()["error"]["code"] == "invalid_input"
    other = web.get(path, params={"building": "102"}, headers=headers)
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
    assert web.get(path).status_code == 401
