"""IT's and EdTech's forms: the Approved Technology List, publishing, a district-wide
rollout of a base image, and a test recorded by hand with its attachment."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from orchestrator.domain.states import Kind, State
from orchestrator.services import catalog, chain, deployments, hardware, inventory, windows
from orchestrator.services.context import Context
from tests.factories import District
from tests.service.test_deployments import ASSETS
from tests.support.fixtures import release_scratch
from tests.web.conftest import SignIn, form_token


def _post(browser: TestClient, page: str, action: str, data: dict[str, object], **kw: object):  # type: ignore[no-untyped-def]
    token = form_token(browser.get(page).text)
    return browser.post(action, data={"csrf_token": token, **data}, **kw)  # type: ignore[arg-type]


def test_it_adds_a_model_to_the_approved_technology_list(
    district: District, signed_in: SignIn, ctx: Context
) -> None:
    browser = signed_in("it.ana")
    r = _post(
        browser,
        "/hardware",
        "/hardware",
        {
            "vendor": "Lenovo",
            "model": "ThinkPad L14",
            "platform": "pc",
            "end_of_support": "2030-06-30",
        },
    )
    assert r.status_code == 200 and "ThinkPad L14" in r.text
    assert "Lenovo:ThinkPad L14" in [
        hardware.model_ref(m) for m in hardware.list_models(ctx, district["it.ana"])
    ]


def test_a_btc_sees_the_list_but_its_add_is_refused(
    district: District, signed_in: SignIn, ctx: Context
) -> None:
    browser = signed_in("btc.lincoln")
    page = browser.get("/hardware")
    assert page.status_code == 200 and "Latitude 3420" in page.text
    assert "Add a model" not in page.text
    r = _post(browser, "/", "/hardware", {"vendor": "Acme", "model": "X1", "platform": "pc"})
    assert r.status_code == 403 and "Hardware Standards Committee" in r.text
    assert "Acme:X1" not in [
        hardware.model_ref(m) for m in hardware.list_models(ctx, district["it.ana"])
    ]


def test_it_publishes_an_approved_base_image_from_its_page(
    district: District, signed_in: SignIn, ctx: Context
) -> None:
    ref = district.base("mac", "high", "2026.2", to=State.APPROVED)
    browser = signed_in("it.wei")
    page = f"/items/base_image/{ref}"
    assert "Publish it" in browser.get(page).text
    r = _post(browser, page, f"{page}/publish", {"reason": "summer refresh"})
    assert r.status_code == 200 and "Recorded: publish" in r.text
    assert catalog.show(ctx, district["it.ana"], Kind.BASE_IMAGE, ref).state is State.PUBLISHED


def test_edtech_records_a_package_test_per_persona_with_an_attachment(
    district: District, signed_in: SignIn, ctx: Context
) -> None:
    ref = district.package("scratch", "3.30", platform="mac", to=State.TESTING)
    browser = signed_in("edtech.marco")  # edtech.grace packaged it
    page = f"/items/package/{ref}"
    for persona in ("student", "staff"):
        r = _post(
            browser,
            page,
            f"{page}/tests",
            {
                "persona": persona,
                "checks": "signs in: pass\nopens a project: pass",
                "evidence": f"{persona} opened the sample project",
                "account": "s.test101",
            },
            files={"attachments": ("screen.png", b"\x89PNG fake screenshot", "image/png")},
        )
        assert r.status_code == 200, r.text
    status = chain.status(ctx, district["it.ana"], Kind.PACKAGE, ref)
    assert sorted(t.persona.value for t in status.tests) == ["staff", "student"]
    assert all(t.passed and t.attachments for t in status.tests)
    assert status.tests[0].attachments[0]["name"].endswith("screen.png")


def test_a_malformed_checks_line_is_refused_naming_the_line(
    district: District, signed_in: SignIn, ctx: Context
) -> None:
    ref = district.package("scratch", "3.30", platform="mac", to=State.TESTING)
    browser = signed_in("edtech.marco")  # edtech.grace packaged it
    page = f"/items/package/{ref}"
    r = _post(
        browser, page, f"{page}/tests", {"persona": "student", "checks": "signs in: pass\nlooks ok"}
    )
    assert r.status_code == 422 and "line 2 should read" in r.text
    assert chain.status(ctx, district["it.ana"], Kind.PACKAGE, ref).tests == []


def test_it_previews_and_schedules_a_rollout_to_every_building_of_the_level(
    district: District, signed_in: SignIn, ctx: Context, tmp_path: Path
) -> None:

    assets = tmp_path / "assets.csv"
    assets.write_text(ASSETS)
    inventory.import_clients(ctx, district["it.ana"], assets)
    ref = district.base("mac", "elementary", "2026.3", to=State.PUBLISHED)
    for b in ("101", "102"):
        windows.add_window(
            ctx, district["it.ana"], building=b, days="mon-fri", start="18:00", end="06:00"
        )
    browser = signed_in("it.ana")
    preview = _post(browser, "/rollout", "/rollout", {"image": ref, "pilot_per_building": "1"})
    assert preview.status_code == 200 and "Schedule the rollout" in preview.text
    assert "101 Lincoln Elementary" in preview.text and "102 Washington Elementary" in preview.text
    done = browser.post(
        "/rollout",
        data={
            "csrf_token": form_token(preview.text),
            "image": ref,
            "buildings": ["101", "102"],
            "pilot_per_building": "1",
            "confirm": "yes",
        },
    )
    assert done.status_code == 200 and "Deployment #" in done.text
    (made,) = deployments.list_deployments(ctx, district["it.ana"])
    assert made.ref == ref and made.state == "scheduled"


def test_a_btc_cannot_roll_out_a_base_image(
    district: District, signed_in: SignIn, ctx: Context
) -> None:
    ref = district.base("mac", "elementary", "2026.3", to=State.PUBLISHED)
    browser = signed_in("btc.lincoln")
    r = _post(
        browser,
        "/",
        "/rollout",
        {"image": ref, "buildings": "101", "confirm": "yes"},
    )
    assert r.status_code in (403, 422) and 'class="refusal"' in r.text
    assert deployments.list_deployments(ctx, district["it.ana"]) == []


@pytest.mark.parametrize("path", ["/hardware", "/rollout"])
def test_it_pages_render(district: District, signed_in: SignIn, path: str) -> None:
    assert signed_in("it.ana").get(path).status_code == 200


def test_the_principal_reads_a_deployment_in_words_without_the_computers_it_leaves_out(
    district: District, signed_in: SignIn, ctx: Context, tmp_path: Path
) -> None:
    assets = tmp_path / "assets.csv"
    assets.write_text(ASSETS)
    inventory.import_clients(ctx, district["it.ana"], assets)
    windows.add_window(
        ctx, district["btc.lincoln"], building="101", days="mon-fri", start="18:00", end="06:00"
    )
    ref = release_scratch(district, "3.29", tmp_path)
    deployments.create(
        ctx, district["btc.lincoln"], deployments.DeploymentSpec(package=ref, buildings=("101",))
    )
    page = signed_in("principal.lincoln").get("/").text
    # Three Macs in the cart; the lab's PC is left out of a Mac package.
    assert "scratch@3.29 is scheduled for building(s) 101: 0 of 3 computers done." in page
    assert "Work starts Mon Mar 02 18:00." in page
