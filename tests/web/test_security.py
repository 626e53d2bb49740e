"""The web layer's defences, in-process over https, on both databases: the session
cookie, CSRF on every form and on the API's session writes, the sign-in form, redirects,
lock-out, security headers, secrets never rendered back, and escaping."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlmodel import func, select
from starlette.routing import BaseRoute

from orchestrator.db.models import AuditEntry, Person
from orchestrator.db.session import transaction
from orchestrator.domain.states import Kind, State
from orchestrator.services import (
    accounts,
    catalog,
    chain,
    deployments,
    hardware,
    inventory,
    requests,
)
from orchestrator.services import windows as windows_service
from orchestrator.services.context import Context
from orchestrator.web.app import create_app
from tests.factories import District
from tests.support.fixtures import release_scratch
from tests.web.conftest import PASSWORD, SignIn, form_token

Headers = Callable[[str], dict[str, str]]


def _cookie(r: httpx.Response, name: str) -> SimpleCookie:
    for header in r.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        if name in jar:
            return jar
    raise AssertionError(f"no Set-Cookie for {name}: {r.headers.get_list('set-cookie')}")


def _audit_count(ctx: Context) -> int:
    with transaction(ctx.engine) as s:
        return s.exec(select(func.count()).select_from(AuditEntry)).one()


def _sign_in_form(client: TestClient, username: str, password: str, **extra: str) -> httpx.Response:
    page = client.get("/sign-in")
    data = {"username": username, "password": password, "csrf_token": form_token(page.text)}
    return client.post("/sign-in", data=data | extra, follow_redirects=False)


# -- the session cookie --------------------------------------------------------------------


def test_the_session_cookie_is_secure_httponly_and_samesite_strict(
    district: District, web: TestClient
) -> None:
    accounts.set_password(district.ctx, district["it.ana"], "btc.lincoln", PASSWORD)
    page = web.get("/sign-in")
    sign_in_cookie = _cookie(page, "orch_sign_in")["orch_sign_in"]

    r = _sign_in_form(web, "btc.lincoln", PASSWORD)

    assert r.status_code == 303
    session = _cookie(r, "orch_session")["orch_session"]
    for morsel in (session, sign_in_cookie):
        assert morsel["secure"] is True, morsel.OutputString()
        assert morsel["httponly"] is True, morsel.OutputString()
        assert morsel["samesite"] == "strict", morsel.OutputString()
        assert morsel["path"] == "/"
    # The session lasts what the installation says (8 hours here), no longer.
    assert int(session["max-age"]) == 8 * 3600


# -- CSRF on every form ---------------------------------------------------------------------


def _routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        # FastAPI keeps an included router whole, as one entry of the application's routes.
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _routes(inner.routes)


def _post_forms() -> list[str]:
    """Every form the pages accept (sign-in has its own token, tested below)."""
    app = create_app(Context(engine=sa.create_engine("sqlite://"), zone=ZoneInfo("UTC")))
    return sorted(
        route.path
        for route in _routes(app.routes)
        if "POST" in route.methods
        and not route.path.startswith("/api/")
        and route.path != "/sign-in"
    )


def test_the_forms_walked_are_the_pages_forms() -> None:
    forms = _post_forms()
    assert {"/sign-out", "/account/tokens", "/items/{kind}/{ref:path}/decide"} <= set(forms)
    assert not any(path.startswith("/api/") for path in forms)


@dataclass(frozen=True)
class Form:
    """A form as its rightful user would send it: it succeeds with the session's token."""

    username: str
    url: str
    data: dict[str, str]
    done: Callable[[District], bool]


def _state(d: District, kind: Kind, ref: str) -> State:
    return State(catalog.show(d.ctx, d["it.ana"], kind, ref).state)


def _deployment_states(d: District) -> list[str]:
    return [dep.state for dep in deployments.list_deployments(d.ctx, d["it.ana"], limit=200)]


FORMS: dict[str, Callable[[District, int], Form]] = {
    "/sign-out": lambda d, dep: Form("btc.lincoln", "/sign-out", {}, lambda d: False),
    "/items/{kind}/{ref:path}/decide": lambda d, dep: Form(
        "edtech.grace",
        "/items/custom_image/101/lab@1.0/decide",
        {"step": "review", "outcome": "approve", "reason": "fine for instruction"},
        lambda d: _state(d, Kind.CUSTOM_IMAGE, "101/lab@1.0") is State.TESTING,
    ),
    "/items/{kind}/{ref:path}/publish": lambda d, dep: Form(
        "it.ana",
        "/items/base_image/pc-middle@2026.1/publish",
        {},
        lambda d: _state(d, Kind.BASE_IMAGE, "pc-middle@2026.1") is State.PUBLISHED,
    ),
    "/items/{kind}/{ref:path}/tests": lambda d, dep: Form(
        "edtech.marco",
        "/items/package/firefox@128.0/tests",
        {"persona": "student", "checks": "sign-in: pass\napps start: pass"},
        lambda d: any(
            t.persona.value == "student"
            for t in chain.status(d.ctx, d["it.ana"], Kind.PACKAGE, "firefox@128.0").tests
        ),
    ),
    "/deploy": lambda d, dep: Form(
        "btc.lincoln",
        "/deploy",
        {"what": "package:scratch@3.29", "building": "101", "confirm": "yes"},
        lambda d: len(_deployment_states(d)) == 2,
    ),
    "/deployments/{deployment_id}/control": lambda d, dep: Form(
        "btc.lincoln",
        f"/deployments/{dep}/control",
        {"action": "pause", "reason": "the lab is booked tonight"},
        lambda d: _deployment_states(d) == ["paused"],
    ),
    "/account/tokens": lambda d, dep: Form(
        "btc.lincoln",
        "/account/tokens",
        {"name": "from-the-page"},
        lambda d: "from-the-page" in [t.name for t in accounts.tokens(d.ctx, d["btc.lincoln"])],
    ),
    "/account/password": lambda d, dep: Form(
        "btc.lincoln",
        "/account/password",
        {"current": PASSWORD, "new": "Another-Long-Passphrase-27"},
        lambda d: _signs_in(d, "btc.lincoln", "Another-Long-Passphrase-27"),
    ),
    "/hardware": lambda d, dep: Form(
        "it.ana",
        "/hardware",
        {"vendor": "Acer", "model": "TravelMate B3", "platform": "pc"},
        lambda d: "TravelMate B3" in [m.model for m in hardware.list_models(d.ctx, d["it.ana"])],
    ),
    "/hardware/update": lambda d, dep: Form(
        "it.ana",
        "/hardware/update",
        {"ref": "Dell:Latitude 3420", "approved": "no"},
        lambda d: (
            not next(
                m.approved
                for m in hardware.list_models(d.ctx, d["it.ana"])
                if m.model == "Latitude 3420"
            )
        ),
    ),
    "/requests": lambda d, dep: Form(
        "principal.lincoln",
        "/requests",
        {"building": "101", "category": "software_access", "description": "Scratch is gone"},
        lambda d: any(v.category == "software_access" for v in _requests(d)),
    ),
    "/requests/{request_id}/act": lambda d, dep: Form(
        "btc.lincoln",
        f"/requests/{_requests(d)[-1].id}/act",
        {"action": "take"},
        lambda d: _requests(d)[-1].assignee == "btc.lincoln",
    ),
    "/rollout": lambda d, dep: Form(
        "it.ana",
        "/rollout",
        {"image": "pc-elementary@2026.1", "buildings": "101", "confirm": "yes"},
        lambda d: len(_deployment_states(d)) == 2,
    ),
}


def _requests(d: District) -> list[requests.RequestView]:
    return requests.list_requests(d.ctx, d["it.ana"])  # newest first


def _signs_in(d: District, username: str, password: str) -> bool:
    """Whether ``password`` is the account's now (checked on the hash: a sign-in attempt
    would itself be audited)."""
    with transaction(d.ctx.engine) as s:
        hashed = s.exec(select(Person.password_hash).where(Person.username == username)).one()
    try:
        return hashed is not None and PasswordHasher().verify(hashed, password)
    except VerificationError:
        return False


@pytest.fixture
def forms_world(district: District, tmp_path: Path) -> tuple[District, int]:
    """What the forms act on: a customized image in review, an approved base image, a
    package in testing, Lincoln's Macs and PCs with a window, Scratch and one deployment,
    and a repair request."""
    d = district
    d.base("pc", "elementary")
    d.base("pc", "middle", to=State.APPROVED)
    d.custom("101", "lab", to=State.IN_REVIEW)
    d.package("firefox", to=State.TESTING)
    assets = tmp_path / "assets.csv"
    assets.write_text(
        "Hostname,Building,Room,Platform,Model,Serial,MAC,IP\n"
        'cart-01,101,cart,mac,"MacBookAir10,1",SN0001,02:00:00:00:00:01,127.0.0.11\n'
        "lab-01,101,lab,pc,Latitude 3420,SN0002,02:00:00:00:00:02,127.0.0.12\n"
    )
    inventory.import_clients(d.ctx, d["it.ana"], assets)
    windows_service.add_window(
        d.ctx, d["btc.lincoln"], building="101", days="mon-sun", start="18:00", end="06:00"
    )
    release_scratch(d, "3.29", tmp_path)
    requests.file_request(
        d.ctx,
        d["principal.lincoln"],
        requests.RequestSpec(
            building="101", category="hardware_repair", description="cart-01 will not boot"
        ),
    )
    dep = deployments.create(
        d.ctx,
        d["btc.lincoln"],
        deployments.DeploymentSpec(package="scratch@3.29", clients=("cart-01",)),
    )
    return d, dep.id


def _form_for(path: str, d: District, dep: int) -> Form:
    if path in FORMS:
        return FORMS[path](d, dep)
    # A form added since: it still must refuse a post without the session's token.
    url = re.sub(r"\{(\w+)(:path)?\}", "1", path)
    return Form("it.ana", url, {}, lambda d: False)


@pytest.mark.parametrize("path", _post_forms())
def test_every_form_without_or_with_a_wrong_csrf_token_is_refused_and_changes_nothing(
    forms_world: tuple[District, int], signed_in: SignIn, path: str
) -> None:
    d, dep = forms_world
    form = _form_for(path, d, dep)
    browser = signed_in(form.username)
    # Another signed-in person's token is a real token, just not this session's.
    someone_else = "btc.garcia" if form.username != "btc.garcia" else "it.wei"
    foreign = form_token(signed_in(someone_else).get("/account").text)
    before = _audit_count(d.ctx)

    for token in (None, "", "not-the-token", foreign):
        data = form.data if token is None else form.data | {"csrf_token": token}
        r = browser.post(form.url, data=data, follow_redirects=False)

        assert r.status_code == 403, (token, r.text[:300])
        assert "the form has expired or did not come from this site" in r.text
        assert not form.done(d)
        assert _audit_count(d.ctx) == before
    assert browser.get("/account").status_code == 200  # still signed in (even /sign-out)

    if path in FORMS:
        # The same form with the session's own token does what it says.
        token = form_token(browser.get("/account").text)
        r = browser.post(form.url, data=form.data | {"csrf_token": token}, follow_redirects=False)
        assert r.status_code in (200, 303), r.text[:500]
        if path == "/sign-out":
            assert browser.get("/account", follow_redirects=False).status_code == 303
        else:
            assert form.done(d)


def test_an_api_write_with_the_session_cookie_needs_the_csrf_header(
    district: District, signed_in: SignIn
) -> None:
    browser = signed_in("btc.lincoln")
    token = form_token(browser.get("/account").text)

    bare = browser.post("/api/v1/tokens", json={"name": "from-a-page-script"})
    wrong = browser.post(
        "/api/v1/tokens", json={"name": "from-a-page-script"}, headers={"X-CSRF-Token": "nope"}
    )

    assert (bare.status_code, wrong.status_code) == (403, 403)
    assert bare.json()["error"]["code"] == "refused"
    assert accounts.tokens(district.ctx, district["btc.lincoln"]) == []
    assert browser.get("/api/v1/me").status_code == 200  # reads need no token
    made = browser.post(
        "/api/v1/tokens", json={"name": "from-a-page-script"}, headers={"X-CSRF-Token": token}
    )
    assert made.status_code == 201


def test_an_api_write_with_a_bearer_token_needs_no_csrf_header(
    district: District, web: TestClient, token_for: Headers
) -> None:
    r = web.post("/api/v1/tokens", json={"name": "nightly"}, headers=token_for("btc.lincoln"))

    assert r.status_code == 201
    assert "nightly" in [t.name for t in accounts.tokens(district.ctx, district["btc.lincoln"])]


# -- the sign-in form -------------------------------------------------------------------------


def _signed_in_entries(ctx: Context) -> int:
    with transaction(ctx.engine) as s:
        return s.exec(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "signed_in")
        ).one()


def test_the_sign_in_form_refuses_a_post_without_its_own_cookie_and_token(
    district: District, ctx: Context
) -> None:
    accounts.set_password(ctx, district["it.ana"], "btc.lincoln", PASSWORD)
    app = create_app(ctx)
    creds = {"username": "btc.lincoln", "password": PASSWORD}

    with TestClient(app, base_url="https://testserver") as fresh:
        no_cookie = fresh.post("/sign-in", data=creds | {"csrf_token": "guessed"})
    with TestClient(app, base_url="https://testserver") as browser:
        token = form_token(browser.get("/sign-in").text)
        wrong_token = browser.post("/sign-in", data=creds | {"csrf_token": token[::-1]})
        no_token = browser.post("/sign-in", data=creds)
        # A token from another browser's sign-in page does not match this one's cookie.
        with TestClient(app, base_url="https://testserver") as other:
            theirs = form_token(other.get("/sign-in").text)
        foreign = browser.post("/sign-in", data=creds | {"csrf_token": theirs})

    for r in (no_cookie, wrong_token, no_token, foreign):
        assert r.status_code == 403
        assert "the sign-in form expired: try again" in r.text
        assert "orch_session" not in r.headers.get("set-cookie", "")
    assert _signed_in_entries(ctx) == 0


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "https://evil.example",
        "http://evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "evil.example",
    ],
)
def test_sign_in_never_sends_the_browser_off_site(
    district: District, web: TestClient, target: str
) -> None:
    accounts.set_password(district.ctx, district["it.ana"], "btc.lincoln", PASSWORD)

    shown = web.get("/sign-in", params={"next": target})
    r = _sign_in_form(web, "btc.lincoln", PASSWORD, next=target)

    assert 'name="next" value="/"' in shown.text
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_sign_in_goes_on_to_the_page_on_this_site_that_was_asked_for(
    district: District, web: TestClient
) -> None:
    accounts.set_password(district.ctx, district["it.ana"], "btc.lincoln", PASSWORD)

    r = _sign_in_form(web, "btc.lincoln", PASSWORD, next="/buildings/101")

    assert r.status_code == 303 and r.headers["location"] == "/buildings/101"


def test_five_wrong_passwords_lock_the_account_and_the_page_says_so(
    district: District, web: TestClient
) -> None:
    accounts.set_password(district.ctx, district["it.ana"], "btc.lincoln", PASSWORD)

    answers = [_sign_in_form(web, "btc.lincoln", f"wrong-guess-{n}") for n in range(5)]

    assert [r.status_code for r in answers] == [401] * 5
    assert all("wrong username or password" in r.text for r in answers[:4])
    # 10:00 in New York; locked for 15 minutes.
    locked = "account btc.lincoln is locked after 5 failed sign-ins until 10:15"
    assert locked in answers[4].text
    assert "IT can unlock it sooner" in answers[4].text
    assert all("wrong-guess" not in r.text for r in answers)  # never echoed back

    right = _sign_in_form(web, "btc.lincoln", PASSWORD)

    assert right.status_code == 401 and locked in right.text
    assert "orch_session" not in right.headers.get("set-cookie", "")


# -- headers on every response --------------------------------------------------------------


def test_every_kind_of_response_carries_the_security_headers(
    district: District,
    ctx: Context,
    signed_in: SignIn,
    token_for: Headers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    browser = signed_in("btc.lincoln")
    api = token_for("it.ana")
    with TestClient(
        create_app(ctx), base_url="https://testserver", raise_server_exceptions=False
    ) as anonymous:
        responses = {
            "sign-in page": anonymous.get("/sign-in"),
            "redirect to sign in": anonymous.get("/", follow_redirects=False),
            "refused sign-in": anonymous.post("/sign-in", data={"username": "x", "password": "y"}),
            "stylesheet": anonymous.get("/static/style.css"),
            "no such page": anonymous.get("/no-such-page"),
            "API without credentials": anonymous.get("/api/v1/me"),
            "OpenAPI document": anonymous.get("/openapi.json"),
            "API docs": anonymous.get("/api/docs"),
            "home page": browser.get("/"),
            "another building's page": browser.get("/buildings/102"),
            "refused form": browser.post("/account/tokens", data={"name": "x"}),
            "API answer": browser.get("/api/v1/me", headers=api),
            "API not found": browser.get("/api/v1/deployments/77", headers=api),
            "API malformed": browser.post("/api/v1/tokens", json={}, headers=api),
        }

        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("the database went away")

        monkeypatch.setattr(chain, "queue", broken)
        responses["page that failed"] = browser.get("/")
        responses["API call that failed"] = browser.get("/api/v1/queue", headers=api)

    assert responses["page that failed"].status_code == 500
    assert responses["API call that failed"].status_code == 500
    for what, r in responses.items():
        assert r.headers.get("x-frame-options") == "DENY", what
        assert r.headers.get("x-content-type-options") == "nosniff", what
        csp = r.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp, what
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, what


# -- secrets never rendered back ------------------------------------------------------------


def test_an_api_token_secret_appears_only_in_the_response_that_made_it(
    district: District, web: TestClient, token_for: Headers, signed_in: SignIn
) -> None:
    made = web.post("/api/v1/tokens", json={"name": "backup"}, headers=token_for("btc.lincoln"))
    secret = made.json()["token"]
    assert made.status_code == 201 and secret.startswith("orch_")

    listed = web.get("/api/v1/tokens", headers=token_for("btc.lincoln"))
    trail = web.get("/api/v1/audit", params={"limit": 1000}, headers=token_for("it.ana"))
    page = signed_in("btc.lincoln").get("/account")

    assert "backup" in listed.text and "backup" in page.text
    for r in (listed, trail, page):
        assert secret not in r.text
        assert secret[12:] not in r.text  # not even past its shown prefix


def test_a_token_made_on_the_account_page_is_shown_once(
    district: District, signed_in: SignIn
) -> None:
    browser = signed_in("btc.lincoln")
    token = form_token(browser.get("/account").text)

    made = browser.post("/account/tokens", data={"name": "laptop", "csrf_token": token})
    shown = re.search(r'<code id="new-token">([^<]+)</code>', made.text)
    assert made.status_code == 200 and shown is not None
    secret = shown.group(1)
    assert accounts.token_actor(district.ctx, secret).username == "btc.lincoln"

    again = browser.get("/account")

    assert "laptop" in again.text and secret not in again.text


def test_the_account_page_never_shows_a_password_hash(
    district: District, signed_in: SignIn
) -> None:
    page = signed_in("btc.lincoln").get("/account")
    with transaction(district.ctx.engine) as s:
        person = s.exec(select(Person).where(Person.username == "btc.lincoln")).one()
        hashed = person.password_hash
    assert hashed and hashed.startswith("$argon2")

    assert page.status_code == 200 and "btc.lincoln" in page.text
    assert hashed not in page.text and "$argon2" not in page.text
    assert PASSWORD not in page.text


# -- what users typed comes back escaped ----------------------------------------------------


def test_html_in_a_rejection_reason_comes_out_escaped_on_the_item_page(
    district: District, web: TestClient, token_for: Headers, signed_in: SignIn
) -> None:
    district.base("pc", "elementary")
    ref = district.custom("101", "lab", to=State.IN_REVIEW)
    payload = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    rejected = web.post(
        "/api/v1/decisions",
        json={
            "kind": "custom_image",
            "ref": ref,
            "step": "review",
            "outcome": "reject",
            "reason": payload,
        },
        headers=token_for("edtech.grace"),
    )
    assert rejected.status_code == 200, rejected.text

    page = signed_in("btc.lincoln").get(f"/items/custom_image/{ref}")

    assert page.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<script>alert(1)</script>" not in page.text
    assert "<img src=x" not in page.text and "&lt;img src=x onerror=" in page.text
