"""End-to-end fixtures: the real product in its own process, and a real browser.

The product is ``orchestrator serve`` (the web interface and the scheduler, as
a district runs them) over the test database of each backend: the tests put
their district in it through the services, then start the service on it. A
Chromium driven by Playwright signs in and works the pages as a person does.

The service reads the real clock, so these tests do too (``clock`` below):
what the test writes (a maintenance window open now, a session's expiry) means
the same to both.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from playwright.sync_api import (
    Browser,
    Error,
    Page,
    Playwright,
    ViewportSize,
    expect,
    sync_playwright,
)

from orchestrator.clock import Clock, system_clock
from orchestrator.services import accounts
from orchestrator.services.context import Context
from tests.conftest import POSTGRES_URL
from tests.e2e.service import Service, running
from tests.factories import District

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "Correct-Horse-Battery-26"
LAPTOP: ViewportSize = {"width": 1280, "height": 800}


@pytest.fixture
def clock() -> Clock:
    """The real clock: the service under test reads it, and the test must agree."""
    return system_clock


# -- the product ---------------------------------------------------------------------------


@pytest.fixture
def database_url(engine: sa.Engine, request: pytest.FixtureRequest) -> str:
    """The test database's URL as the service is given it (PostgreSQL: its schema)."""
    if engine.dialect.name == "postgresql":
        schema = request.getfixturevalue("postgres_schema")
        return f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    return engine.url.render_as_string(hide_password=False)


StartService = Callable[..., Service]


@pytest.fixture
def start_service(ctx: Context, database_url: str, tmp_path: Path) -> Iterator[StartService]:
    """A factory: ``orchestrator serve`` over the test database, with any more
    ``ORCHESTRATOR_*`` settings given as keywords (``ssh_key_file="…"``).

    Stopped (and everything it started) when the test ends.
    """
    stack = contextlib.ExitStack()

    def start(**settings: str) -> Service:
        env = {
            "ORCHESTRATOR_DATABASE_URL": database_url,
            "ORCHESTRATOR_DATA_DIR": str(tmp_path / "data"),
            "ORCHESTRATOR_CONFIG": str(tmp_path / "absent.toml"),
            "ORCHESTRATOR_SECRET_KEY_FILE": str(ctx.secret_key_file),
            "ORCHESTRATOR_WEB_PORT": "0",
            "ORCHESTRATOR_USER": "",
            **{f"ORCHESTRATOR_{k.upper()}": v for k, v in settings.items()},
        }
        return stack.enter_context(running(env))

    with stack:
        yield start
    # The scheduler keeps its jobs in the project's database; on PostgreSQL the
    # schema outlives this test, so the next test's service must not find them.
    with ctx.engine.begin() as conn:
        if sa.inspect(conn).has_table("apscheduler_jobs"):
            conn.execute(sa.text("DELETE FROM apscheduler_jobs"))


@pytest.fixture
def passwords(district: District, ctx: Context) -> Callable[..., None]:
    """Give the named people of the test district a local password (``PASSWORD``)."""

    def give(*usernames: str) -> None:
        for username in usernames:
            accounts.set_password(ctx, district["it.ana"], username, PASSWORD)

    return give


# -- the browser ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's Chromium, headless. Missing is a failure, never a skip."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(
            f"no Chromium at {CHROMIUM}: the end-to-end tests drive it "
            "(bash .ci/run installs chromium)",
            pytrace=False,
        )
    try:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
    except Error as exc:
        pytest.fail(
            f"Chromium at {CHROMIUM} did not start ({exc.message.splitlines()[0]}); "
            "bash .ci/run installs chromium",
            pytrace=False,
        )
    yield launched
    launched.close()


@dataclass
class Tab:
    """A fresh browser (its own cookies) on the service, and what went wrong in it."""

    page: Page
    problems: list[str] = field(default_factory=list)
    """Console errors and uncaught script errors: a CSP refusal shows up here."""


OpenTab = Callable[[Service], Tab]


@pytest.fixture
def open_tab(browser: Browser) -> Iterator[OpenTab]:
    """A factory: a new browser window, at laptop size, on ``service``."""
    contexts = []

    def open_one(service: Service) -> Tab:
        context = browser.new_context(base_url=service.url, viewport=LAPTOP)
        context.set_default_timeout(15_000)
        contexts.append(context)
        tab = Tab(context.new_page())
        tab.page.on(
            "console",
            lambda m: tab.problems.append(m.text) if m.type == "error" else None,
        )
        tab.page.on("pageerror", lambda exc: tab.problems.append(str(exc)))
        return tab

    yield open_one
    for context in contexts:
        context.close()


def sign_in(tab: Tab, username: str, password: str = PASSWORD) -> None:
    """Through the sign-in page, as a person does: the start page sends them there."""
    page = tab.page
    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name=f"Good day, {username}")).to_be_visible()
