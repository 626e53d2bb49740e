"""The pages, in-process: each role's work on its page, refusals in the page's own words."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from orchestrator.domain.states import Kind, State, Step
from orchestrator.services import chain
from orchestrator.services.context import Context
from tests.factories import District
from tests.web.conftest import SignIn, form_token


@pytest.fixture
def images(district: District) -> District:
    district.base("pc", "elementary", "2026.1")
    district.custom("101", "lab", "1.0", to=State.TESTING)
    district.custom("102", "library", "1.0", to=State.TESTING)
    return district


def test_signing_in_lands_on_the_page_asked_for(district: District, web: TestClient) -> None:
    first = web.get("/buildings/101", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"].startswith("/sign-in?next=")


def test_a_wrong_password_is_said_on_the_sign_in_page(district: District, web: TestClient) -> None:
    page = web.get("/sign-in")
    r = web.post(
        "/sign-in",
        data={"username": "btc.lincoln", "password": "nope", "csrf_token": form_token(page.text)},
    )
    assert r.status_code == 401
    assert "wrong username or password" in r.text and 'name="password"' in r.text


def test_it_home_shows_the_base_images_by_platform_and_level(
    images: District, signed_in: SignIn
) -> None:
    page = signed_in("it.ana").get("/").text
    assert "Base images by platform and level" in page
    assert "pc · elementary" in page and "2026.1 · published" in page
    assert "Sunset timeline" in page


def test_edtech_home_queues_what_awaits_its_test_sign_off(
    images: District, signed_in: SignIn
) -> None:
    page = signed_in("edtech.grace").get("/").text
    assert "101/lab@1.0" in page and "102/library@1.0" in page


def test_a_btc_home_shows_its_own_images_chain_and_not_another_buildings(
    images: District, signed_in: SignIn
) -> None:
    page = signed_in("btc.lincoln").get("/").text
    assert "My customized images" in page and "101/lab@1.0" in page
    assert "102/library@1.0" not in page


def test_another_buildings_page_and_items_are_not_found_in_plain_words(
    images: District, signed_in: SignIn
) -> None:
    browser = signed_in("btc.lincoln")
    building = browser.get("/buildings/102")
    item = browser.get("/items/custom_image/102/library@1.0")
    assert building.status_code == item.status_code == 404
    assert "no building &#39;102&#39;" in building.text
    assert "Traceback" not in building.text + item.text
    assert "(see &#39;orchestrator" not in building.text


def test_edtech_approves_the_test_step_from_the_item_page(
    images: District, signed_in: SignIn, ctx: Context
) -> None:
    images.run_image_test("101/lab@1.0", "edtech.grace")
    browser = signed_in("edtech.grace")
    page = browser.get("/items/custom_image/101/lab@1.0")
    assert "Decide the test step" in page.text
    r = browser.post(
        "/items/custom_image/101/lab@1.0/decide",
        data={
            "csrf_token": form_token(page.text),
            "step": "test",
            "outcome": "approve",
            "reason": "student and staff sign-ins pass",
        },
    )
    assert r.status_code == 200 and "Recorded: approve" in r.text
    status = chain.status(ctx, images["it.ana"], Kind.CUSTOM_IMAGE, "101/lab@1.0")
    assert next(s for s in status.steps if s.step is Step.TEST).status == "done"


def test_a_btc_is_refused_the_test_sign_off_in_the_page_and_nothing_changes(
    images: District, signed_in: SignIn, ctx: Context
) -> None:
    images.run_image_test("101/lab@1.0", "edtech.grace")
    browser = signed_in("btc.lincoln")
    page = browser.get("/items/custom_image/101/lab@1.0")
    r = browser.post(
        "/items/custom_image/101/lab@1.0/decide",
        data={"csrf_token": form_token(page.text), "step": "test", "outcome": "approve"},
    )
    assert r.status_code == 403
    assert 'class="refusal"' in r.text and "refused:" in r.text
    status = chain.status(ctx, images["it.ana"], Kind.CUSTOM_IMAGE, "101/lab@1.0")
    assert status.item.state is State.TESTING


def test_a_rejection_reason_with_html_comes_back_escaped(
    images: District, signed_in: SignIn
) -> None:
    browser = signed_in("edtech.grace")
    page = browser.get("/items/custom_image/101/lab@1.0")
    browser.post(
        "/items/custom_image/101/lab@1.0/decide",
        data={
            "csrf_token": form_token(page.text),
            "step": "test",
            "outcome": "reject",
            "reason": "<script>alert(1)</script> broken wifi",
        },
    )
    shown = browser.get("/items/custom_image/101/lab@1.0").text
    assert "<script>alert(1)</script>" not in shown
    assert "&lt;script&gt;alert(1)&lt;/script&gt; broken wifi" in shown


def test_the_principal_reads_the_buildings_status_in_plain_words(
    images: District, signed_in: SignIn
) -> None:
    page = signed_in("principal.lincoln").get("/").text
    assert "Your building in plain words" in page
    assert "101/lab@1.0 is waiting for its test step" in page


def test_an_unexpected_error_is_an_apology_not_a_stack_trace(
    images: District, signed_in: SignIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    browser = signed_in("it.ana")

    def broken(*_args: object, **_kw: object) -> None:
        raise RuntimeError("database exploded at line 42")

    monkeypatch.setattr(chain, "queue", broken)
    r = browser.get("/")
    assert r.status_code == 500
    assert "something went wrong on the server" in r.text
    assert "exploded" not in r.text and "Traceback" not in r.text
    api = browser.get("/api/v1/queue")
    assert api.status_code == 500 and api.json()["error"]["code"] == "internal_error"
    assert "exploded" not in api.text


@pytest.mark.parametrize(
    "path", ["/", "/buildings/101", "/reports", "/audit", "/account", "/deploy"]
)
def test_every_main_page_renders_for_a_btc(images: District, signed_in: SignIn, path: str) -> None:
    r = signed_in("btc.lincoln").get(path)
    assert r.status_code == 200, r.text
    assert "<main>" in r.text and "Sign out" in r.text
