"""The screenshots in docs/screenshots/, taken from the real product.

    .venv/bin/python -m tests.e2e.screenshots [--out docs/screenshots]

Starts ``orchestrator serve --sample-district`` on a fresh data folder and any
free port, gives building 101 a maintenance window tomorrow evening (as its
building tech would, with ``orchestrator windows add``), and has the sample
people sign in with the sample password and do their work in Chromium while
each page is saved: laptop size (1280 wide, whole page), and building 101's
page once more at tablet size (820 x 1180). The date in the pages is today's.

A page that answers with an error, or a browser console error (a script or
style the Content-Security-Policy refused), stops it: the pictures in the
docs show the pages working.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright

from orchestrator.clock import system_clock
from orchestrator.services.sample import SAMPLE_PASSWORD
from tests.e2e.service import REPO, Service, running

CHROMIUM = "/usr/bin/chromium"
LAPTOP: ViewportSize = {"width": 1280, "height": 800}
TABLET: ViewportSize = {"width": 820, "height": 1180}
TALLEST = 1800
"""Whole pages, but no taller than this: the docs want the top of a long page."""
ZONE = ZoneInfo("America/New_York")  # the sample district's (the default setting)

SHOTS = {
    "sign-in.png": "The sign-in page.",
    "it-home.png": "IT's home page (it.rivera): the base images by platform and level, "
    "with their states and sunset dates, and the sunset timeline of the next 12 months.",
    "edtech-queue.png": "EdTech's home page (edtech.okafor): what waits for their review "
    "or test sign-off.",
    "edtech-item.png": "An item page as EdTech sees it (101/lab@1.1, in testing): its "
    "facts, the approval chain and its decisions, its test runs (none yet in the sample) "
    "and the form to decide the test step.",
    "building-101.png": "Building 101's page as its building tech sees it (btc.lincoln): "
    "the charts, clients by room, its customized images, the maintenance windows and the "
    "deployments reaching it.",
    "building-101-tablet.png": "The same page in a tablet's 820 x 1180 window: the charts "
    "stack, the navigation wraps.",
    "deploy-preview.png": "The deployment preview (btc.lincoln, scratch@3.29 for building "
    "101): the clients included, those excluded and why, and the windows it will use.",
    "deployment.png": "The deployment's page right after it was scheduled: its state, "
    "counts per wave and clients; it updates by itself while it runs.",
    "principal-home.png": "The principal's home page (principal.lincoln): the building's "
    "status in plain words.",
    "charts.png": "The charts page as IT sees it: clients by image version per building, "
    "clients near sunset and deployment results per week.",
}


class PageProblem(RuntimeError):
    """A page that did not show what it should (or a console error in it)."""


@contextmanager
def _sample_service(folder: Path) -> Iterator[Service]:
    env = {
        "ORCHESTRATOR_DATA_DIR": str(folder / "data"),
        "ORCHESTRATOR_CONFIG": str(folder / "absent.toml"),
        "ORCHESTRATOR_DATABASE_URL": "",
        "ORCHESTRATOR_WEB_PORT": "0",
        "ORCHESTRATOR_USER": "",
    }
    with running(env, args=["--sample-district"]) as service:
        # Building 101's tech gives it an evening window tomorrow: the deployment
        # below waits for it, so nothing tries to reach the sample's computers.
        tomorrow = system_clock().astimezone(ZONE) + timedelta(days=1)
        subprocess.run(
            [sys.executable, "-m", "orchestrator", "--as", "btc.lincoln", "windows", "add",
             "--building", "101", "--days", f"{tomorrow:%a}".lower(), "--from", "18:00",
             "--to", "22:00"],
            cwd=REPO,
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        )  # fmt: skip
        yield service


class Photographer:
    def __init__(self, browser: Browser, service: Service, out: Path) -> None:
        self.browser, self.service, self.out = browser, service, out
        self.saved: list[Path] = []
        self.problems: dict[Page, list[str]] = {}
        """Console errors and uncaught script errors, per page."""

    def signed_in(self, username: str, viewport: ViewportSize = LAPTOP) -> Page:
        page = self.fresh(viewport)
        page.goto("/sign-in")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(SAMPLE_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name=f"Good day, {username}")).to_be_visible()
        return page

    def fresh(self, viewport: ViewportSize = LAPTOP) -> Page:
        context = self.browser.new_context(base_url=self.service.url, viewport=viewport)
        page = context.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        self.problems[page] = problems
        return page

    def save(self, page: Page, name: str) -> None:
        if page.locator(".refusal").count():
            raise PageProblem(f"{name}: {page.url} shows {page.locator('.refusal').inner_text()}")
        if self.problems[page]:
            raise PageProblem(f"{name}: console errors on {page.url}: {self.problems[page]}")
        page.wait_for_load_state("load")  # the whole page parsed, not only its top
        height = page.evaluate("document.documentElement.scrollHeight")
        width = page.viewport_size["width"] if page.viewport_size else LAPTOP["width"]
        path = self.out / name
        page.screenshot(
            path=path,
            full_page=True,
            clip={"x": 0, "y": 0, "width": width, "height": min(int(height), TALLEST)},
            animations="disabled",
            caret="hide",
        )
        self.saved.append(path)
        print(f"saved {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")


def take(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="orchestrator-screenshots-") as folder,
        _sample_service(Path(folder)) as service,
        sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        shots = Photographer(browser, service, out)

        page = shots.fresh()
        page.goto("/sign-in")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        shots.save(page, "sign-in.png")

        it = shots.signed_in("it.rivera")
        expect(it.get_by_role("heading", name="Base images by platform and level")).to_be_visible()
        shots.save(it, "it-home.png")

        edtech = shots.signed_in("edtech.okafor")
        waiting = edtech.locator(
            "section", has=edtech.get_by_role("heading", name="Waiting for you")
        )
        expect(waiting.get_by_role("row", name="101/lab@1.1")).to_be_visible()
        shots.save(edtech, "edtech-queue.png")
        waiting.get_by_role("link", name="101/lab@1.1").click()
        expect(edtech.get_by_role("heading", name="Decide the test step")).to_be_visible()
        shots.save(edtech, "edtech-item.png")

        btc = shots.signed_in("btc.lincoln")
        btc.get_by_role("link", name="Building 101").click()
        expect(btc.get_by_role("heading", name="Clients by room")).to_be_visible()
        shots.save(btc, "building-101.png")
        btc.get_by_role("link", name="Schedule a deployment").first.click()
        btc.get_by_label("What to deploy").select_option(label="scratch@3.29 (package, mac)")
        btc.get_by_role("button", name="Preview the plan").click()
        expect(btc.get_by_role("heading", name="Excluded, and why")).to_be_visible()
        shots.save(btc, "deploy-preview.png")
        btc.get_by_role("button", name="Schedule it").click()
        expect(btc.locator("#state")).to_have_text("scheduled")
        shots.save(btc, "deployment.png")

        tablet = shots.signed_in("btc.lincoln", TABLET)
        tablet.goto("/buildings/101")
        expect(tablet.get_by_role("heading", name="Clients by room")).to_be_visible()
        shots.save(tablet, "building-101-tablet.png")

        principal = shots.signed_in("principal.lincoln")
        expect(
            principal.get_by_role("heading", name="Your building in plain words")
        ).to_be_visible()
        shots.save(principal, "principal-home.png")

        it.get_by_role("link", name="Charts").click()
        expect(it.get_by_role("heading", name="Charts", exact=True)).to_be_visible()
        shots.save(it, "charts.png")

        browser.close()
    return shots.saved


README = """# Screenshots

Taken from the real product by

    .venv/bin/python -m tests.e2e.screenshots

which starts `orchestrator serve --sample-district` on a fresh data folder
and a free port, gives building 101 a maintenance window tomorrow evening
(`orchestrator --as btc.lincoln windows add`), and has the sample people sign
in (password `sample-district`) and work in Chromium while each page is saved:
laptop size, 1280 pixels wide (the whole page, at most {tallest} pixels
tall), and building 101's page again in a tablet's 820 x 1180 window. Dates in the
pages are those of the day they were taken. This file is written by the same
command.

| File | What it shows |
|---|---|
{rows}
"""


def write_readme(out: Path) -> None:
    rows = "\n".join(f"| [{name}]({name}) | {what} |" for name, what in SHOTS.items())
    (out / "README.md").write_text(README.format(tallest=TALLEST, rows=rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args = parser.parse_args()
    saved = take(args.out.resolve())
    missing = sorted(set(SHOTS) - {p.name for p in saved})
    if missing:
        sys.exit(f"not taken: {', '.join(missing)}")
    write_readme(args.out.resolve())


if __name__ == "__main__":
    main()
