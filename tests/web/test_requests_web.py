"""Requests on the web and through the API: the principal files, the technician works
it, work outside technicians' duties is routed away with the reason."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from orchestrator.services import audit, inventory, requests, windows
from orchestrator.services.context import Context
from tests.factories import District
from tests.support.fixtures import release_scratch
from tests.web.conftest import SignIn, form_token


def _file(browser: TestClient, **data: str):  # type: ignore[no-untyped-def]
    page = browser.get("/requests/new")
    assert page.status_code == 200
    return browser.post(
        "/requests",
        data={"csrf_token": form_token(page.text), "urgency": "normal", **data},
    )


def test_a_principal_files_a_request_and_the_building_tech_takes_it(
    district: District, signed_in: SignIn, ctx: Context
) -> None:
    principal = signed_in("principal.lincoln")
    home = principal.get("/").text
    assert 'href="/requests/new"' in home
    filed = _file(
        principal,
        building="101",
        category="hardware_repair",
        description="The projector in room 12 shows no picture",
        room="room-12",
    )
    assert filed.status_code == 200
    assert "Filed: the building technician&#39;s queue." in filed.text
    tech = signed_in("btc.lincoln")
    queue = tech.get("/requests").text
    assert "Hardware repair" in queue and "principal.lincoln" in queue
    (r,) = requests.list_requests(ctx, district["btc.lincoln"])
    page = tech.get(f"/requests/{r.id}")
    taken = tech.post(
        f"/requests/{r.id}/act", data={"csrf_token": form_token(page.text), "action": "take"}
    )
    assert taken.status_code == 200 and "Taken by</dt><dd>btc.lincoln" in taken.text


def test_a_grading_request_is_routed_away_with_the_reason_and_the_tech_is_refused(
    district: District, signed_in: SignIn, ctx: Context
) -> None:
    principal = signed_in("principal.lincoln")
    filed = _file(
        principal, building="101", category="grading", description="Fix the gradebook totals"
    )
    assert "Filed: sent to Student Information Systems." in filed.text
    assert "never have access to grading" in filed.text
    tech = signed_in("btc.lincoln")
    assert "Fix the gradebook" not in tech.get("/requests").text
    (r,) = requests.list_requests(ctx, district["it.ana"])
    page = tech.get(f"/requests/{r.id}")
    refused = tech.post(
        f"/requests/{r.id}/act", data={"csrf_token": form_token(page.text), "action": "take"}
    )
    assert refused.status_code == 403 and "Student Information Systems" in refused.text
    actions = [e.action for e in audit.entries(ctx, district["it.ana"], object_kind="request")]
    assert actions == ["request.file", "request.take_refused"]


def test_an_html_description_is_rendered_escaped(
    district: District, signed_in: SignIn, ctx: Context
) -> None:
    principal = signed_in("principal.lincoln")
    page = _file(
        principal,
        building="101",
        category="network",
        description="<img src=x onerror=alert(1)> wifi drops",
    )
    assert "<img src=x" not in page.text
    assert "&lt;img src=x onerror=alert(1)&gt; wifi drops" in page.text


def test_a_principal_cannot_file_for_another_building(
    district: District, signed_in: SignIn, ctx: Context
) -> None:
    r = _file(
        signed_in("principal.lincoln"),
        building="102",
        category="network",
        description="Washington's wifi",
    )
    assert r.status_code == 404 and "no building &#39;102&#39;" in r.text
    assert requests.list_requests(ctx, district["it.ana"]) == []


def test_the_api_files_lists_and_works_requests(
    district: District, web: TestClient, token_for: Callable[[str], dict[str, str]]
) -> None:
    principal, tech = token_for("principal.lincoln"), token_for("btc.lincoln")
    cats = web.get("/api/v1/request-categories", headers=principal).json()
    assert {"key": "telephone", "queue": "department"}.items() <= cats[5].items()
    made = web.post(
        "/api/v1/requests",
        headers=principal,
        json={"building": "101", "category": "telephone", "description": "no dial tone"},
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["queue"] == "department" and body["department"] == "Telecommunications"
    assert "telephone system" in body["routed_because"]
    refused = web.post(
        f"/api/v1/requests/{body['id']}/actions", headers=tech, json={"action": "take"}
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "refused"
    assert web.get("/api/v1/requests", headers=tech).json() == []
    other = web.get(f"/api/v1/requests/{body['id']}", headers=token_for("btc.garcia"))
    assert other.status_code == 404


def test_the_api_refuses_bad_requests_naming_the_field(
    district: District, web: TestClient, token_for: Callable[[str], dict[str, str]]
) -> None:
    headers = token_for("principal.lincoln")
    for body, field in (
        ({"building": "101", "category": "coffee", "description": "x"}, None),
        ({"building": "101", "category": "network", "description": "x" * 5000}, "description"),
        ({"building": "101", "category": "network", "description": "x", "urgency": 3}, "urgency"),
        ({"building": "101", "category": "network"}, "description"),
    ):
        r = web.post("/api/v1/requests", headers=headers, json=body)
        assert r.status_code in (404, 422), r.text
        if field:
            assert r.json()["error"]["field"] == field
    assert web.get("/api/v1/requests", headers=token_for("it.ana")).json() == []


def test_the_building_tech_deploys_from_the_request_page_and_it_shows_the_change(
    district: District, signed_in: SignIn, ctx: Context, tmp_path: Path
) -> None:
    assets = tmp_path / "assets.csv"
    assets.write_text(
        "Hostname,Building,Room,Platform,Model,Serial,MAC,IP\n"
        'club-01,101,club,mac,"MacBookAir10,1",SN9001,02:00:00:00:09:01,127.0.0.91\n'
        'club-02,101,club,mac,"MacBookAir10,1",SN9002,02:00:00:00:09:02,127.0.0.92\n'
    )
    inventory.import_clients(ctx, district["it.ana"], assets)
    windows.add_window(
        ctx, district["btc.lincoln"], building="101", days="mon-fri", start="18:00", end="06:00"
    )
    release_scratch(district, "3.29", tmp_path)
    r = requests.file_request(
        ctx,
        district["principal.lincoln"],
        requests.RequestSpec(
            building="101", category="software_access", description="Scratch", room="club"
        ),
    )
    principal_view = signed_in("principal.lincoln").get(f"/requests/{r.id}").text
    assert "Answer it with a change" not in principal_view
    tech = signed_in("btc.lincoln")
    page = tech.get(f"/requests/{r.id}")
    assert "Deploy to room club" in page.text and 'value="package:scratch@3.29"' in page.text

    made = tech.post(
        f"/requests/{r.id}/deploy",
        data={"csrf_token": form_token(page.text), "what": "package:scratch@3.29"},
    )

    assert made.status_code == 200 and made.url.path.startswith("/deployments/")
    shown = tech.get(f"/requests/{r.id}").text
    assert "Changes that answer it" in shown
    assert "0 of 2 clients done (club-01 pending, club-02 pending)" in shown
    bad = tech.post(
        f"/requests/{r.id}/link",
        data={"csrf_token": form_token(shown), "kind": "deployment", "ref": "twelve"},
    )
    assert bad.status_code == 422 and "is not a deployment&#39;s number" in bad.text
    assert len(requests.show(ctx, district["it.ana"], r.id).changes) == 1


def test_it_adds_and_retires_a_category_on_the_page_and_others_only_read_it(
    district: District, signed_in: SignIn, ctx: Context
) -> None:
    it = signed_in("it.ana")
    page = it.get("/requests/categories")
    assert "Add a category" in page.text
    added = it.post(
        "/requests/categories",
        data={
            "csrf_token": form_token(page.text),
            "key": "printers",
            "label": "<b>Printers</b>",
            "queue": "department",
            "department": "Print Services",
            "why": "Copiers are leased.",
        },
    )
    assert added.status_code == 200 and "&lt;b&gt;Printers&lt;/b&gt;" in added.text
    retired = it.post(
        "/requests/categories/printers",
        data={
            "csrf_token": form_token(added.text),
            "label": "<b>Printers</b>",
            "queue": "department",
            "department": "Print Services",
            "why": "Copiers are leased.",
        },
    )
    assert "printers (retired)" in retired.text
    assert "printers" not in [c.key for c in requests.categories(ctx)]

    tech = signed_in("btc.lincoln")
    read = tech.get("/requests/categories")
    assert "Student Information Systems" in read.text and "Add a category" not in read.text
    refused = tech.post(
        "/requests/categories",
        data={"csrf_token": form_token(read.text), "key": "coffee", "label": "Coffee",
              "queue": "technician"},
    )  # fmt: skip
    assert refused.status_code == 403 and "cannot change the request categories" in refused.text
    assert "coffee" not in [c.key for c in requests.categories(ctx, include_retired=True)]


def test_the_api_adds_and_changes_a_category_for_it_only(
    district: District,
    web: TestClient,
    token_for: Callable[[str], dict[str, str]],
    ctx: Context,
) -> None:
    it = token_for("it.ana")
    made = web.post(
        "/api/v1/request-categories",
        headers=it,
        json={"key": "printers", "label": "Printers", "queue": "technician"},
    )
    assert made.status_code == 201 and made.json()["queue"] == "technician"
    moved = web.patch(
        "/api/v1/request-categories/printers",
        headers=it,
        json={"queue": "department", "department": "Print Services", "why": "Leased copiers."},
    )
    assert moved.status_code == 200 and moved.json()["department"] == "Print Services"
    half = web.patch("/api/v1/request-categories/printers", headers=it, json={"why": ""})
    assert half.status_code == 422 and half.json()["error"]["field"] == "why"
    again = web.post(
        "/api/v1/request-categories",
        headers=it,
        json={"key": "printers", "label": "Printers", "queue": "technician"},
    )
    assert again.status_code == 409
    tech = web.patch(
        "/api/v1/request-categories/grading",
        headers=token_for("btc.lincoln"),
        json={"active": False},
    )
    assert tech.status_code == 403
    assert "grading" in [c.key for c in requests.categories(ctx)]
