"""The product end to end, in a real browser: people sign in and do their day's
work in the pages of ``orchestrator serve``, and its scheduler carries out what
they schedule on real loopback sshd "Macs" through ansible-runner (macOS steps
verified on Linux hosts with stand-in commands). Each test runs on SQLite and
PostgreSQL."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Frame, expect

from orchestrator.domain.states import Kind, State
from orchestrator.services import catalog, chain, deployments, inventory, staging, windows
from orchestrator.services.staging import PointSpec
from tests.e2e.conftest import OpenTab, StartService, Tab, sign_in
from tests.factories import District
from tests.support.fixtures import import_as_clients, move_staging, scratch_deployment
from tests.support.sshd import SSHHost, start_hosts

DAY = timedelta(days=1)
TO = "\N{EN DASH}"
"""Between a window's opening and closing times, as the pages write it."""
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
SIGNER = "Developer ID Installer: MIT Scratch (ABCDE12345)"
DEPLOYMENT_SECONDS = 180
"""Long enough for the scheduler's sweep (15 s) to find the deployment and for
the play to run on three Macs; on a busy 2-core machine with room to spare."""


@pytest.fixture(scope="module")
def macs() -> Iterator[list[SSHHost]]:
    """Three sshd hosts of this module's own: the deployments install on them."""
    with start_hosts(3) as hosts:
        yield hosts


def _window_open_now(district: District) -> tuple[datetime, datetime, datetime]:
    """A maintenance window for building 101 every day, opened an hour ago and
    closing in three: returns now, and the opening in force now (district time)."""
    now = district.ctx.now().astimezone(district.ctx.zone).replace(second=0, microsecond=0)
    opens, closes = now - timedelta(hours=1), now + timedelta(hours=3)
    windows.add_window(
        district.ctx,
        district["btc.lincoln"],
        building="101",
        days="mon-sun",
        start=opens.strftime("%H:%M"),
        end=closes.strftime("%H:%M"),
    )
    return now, opens, closes


def _scratch_for_macs(district: District, folder: Path, ident: str) -> str:
    """Scratch 3.29 for Macs (a stand-in signed installer made here), released
    through the real chain; returns its reference."""
    installer = folder / f"{ident}-3.29.pkg"
    installer.write_text(
        json.dumps(
            {
                "identifier": ident,
                "version": "3.29",
                "signer": SIGNER,
                "payload": {f"Applications/{ident}/VERSION": "3.29"},
            }
        )
    )
    return district.package(
        "scratch",
        "3.29",
        platform="mac",
        installer=str(installer),
        detection_rule=f"pkgutil:{ident}>=3.29",
        to=State.PUBLISHED,
    )


def _a_lab_pc(district: District) -> None:
    """One PC in building 101's lab, which a Mac package must leave out."""
    with tempfile.TemporaryDirectory() as folder:
        assets = Path(folder) / "lab.csv"
        assets.write_text(
            "Hostname,Building,Room,Platform,Model,Serial,MAC,IP\n"
            "lab-pc-01,101,lab-a,pc,Latitude 3420,E2EPC0001,02:00:00:00:e2:01,127.0.0.1\n"
        )
        inventory.import_clients(district.ctx, district["it.ana"], assets)


def _installer_runs(host: SSHHost, ident: str) -> list[str]:
    """The calls of the Mac's ``installer`` for package ``ident`` (its stand-in logs each)."""
    log = host.root / "var/log/standins.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line for line in lines if line.startswith("installer") and ident in line]


def _navigations(tab: Tab) -> list[str]:
    """The main frame's navigations from now on (a reload is one)."""
    seen: list[str] = []

    def on_navigated(frame: Frame) -> None:
        if frame == tab.page.main_frame:
            seen.append(frame.url)

    tab.page.on("framenavigated", on_navigated)
    return seen


def test_a_building_tech_schedules_a_package_and_watches_it_finish_on_the_macs(
    district: District,
    macs: list[SSHHost],
    passwords: Callable[..., None],
    start_service: StartService,
    open_tab: OpenTab,
    tmp_path: Path,
) -> None:
    ident = f"edu.mit.scratch.e2e.{tmp_path.name[-8:]}"
    ref = _scratch_for_macs(district, tmp_path, ident)
    import_as_clients(district, macs, room="cart-7", serial="E2E", mac_byte=0x0E)
    _a_lab_pc(district)
    now, opens, closes = _window_open_now(district)
    passwords("btc.lincoln")
    service = start_service(ssh_key_file=str(macs[0].key_file))
    tab = open_tab(service)
    page = tab.page

    sign_in(tab, "btc.lincoln")
    page.get_by_role("link", name="Schedule a deployment").click()
    page.get_by_label("What to deploy").select_option(label=f"{ref} (package, mac)")
    expect(page.get_by_label("Building", exact=True)).to_have_value("101")
    page.get_by_role("button", name="Preview the plan").click()

    # The preview: who gets it, who does not and why, and the windows it will use.
    expect(page.get_by_role("heading", name=f"{ref}: 3 included, 1 excluded")).to_be_visible()
    included = page.locator("section", has=page.get_by_role("heading", name="Included"))
    for h in macs:
        expect(included.get_by_role("row", name=h.name)).to_contain_text("cart-7")
    excluded = page.locator("section", has=page.get_by_role("heading", name="Excluded, and why"))
    expect(excluded.get_by_role("row", name="lab-pc-01")).to_contain_text("a PC; this is for Macs")
    planned = page.locator(
        "section", has=page.get_by_role("heading", name="The windows it will use")
    ).get_by_role("listitem")
    # The one open now, from now on; then the same window tomorrow, in full.
    expect(planned.nth(0)).to_have_text(
        re.compile(rf"{now:%a %b %d} \d\d:\d\d {TO} {closes:%H:%M}")
    )
    expect(planned.nth(1)).to_have_text(f"{opens + DAY:%a %b %d %H:%M} {TO} {closes:%H:%M}")
    page.get_by_role("button", name="Schedule it").click()

    # The deployment's page, watched without reloading: its live.js reads the
    # progress from the API while the scheduler carries it out.
    expect(page.get_by_role("heading", name=f"Deployment #1: {ref}")).to_be_visible()
    expect(page.locator("#state")).to_have_text("scheduled")
    expect(page.locator("#next")).to_have_text(
        f"In its maintenance window now, until {closes:%H:%M}."
    )
    navigations = _navigations(tab)

    expect(page.locator("#state")).to_have_text("completed", timeout=DEPLOYMENT_SECONDS * 1000)

    expect(page.locator("#counts")).to_have_text("1 skipped 3 succeeded")
    expect(page.locator("#cells tr[data-key='101/1'] .done")).to_have_text("3 / 3")
    for h in macs:
        expect(page.locator(f"#clients tr[data-host='{h.name}'] .state")).to_have_text("succeeded")
    expect(page.locator("#clients tr[data-host='lab-pc-01'] .state")).to_have_text("skipped")
    expect(page.locator("#updated")).to_have_text("Finished.")
    expect(page.get_by_role("button", name="Pause")).to_be_hidden()
    assert navigations == []
    assert tab.problems == []
    # And on the Macs: the play really installed it, once each.
    for h in macs:
        assert (h.root / f"Applications/{ident}/VERSION").read_text() == "3.29"
        assert (h.root / "var/db/receipts" / f"{ident}.plist").exists()
        assert len(_installer_runs(h, ident)) == 1, h.name


def test_a_deployments_page_follows_its_buildings_point_being_staged_without_reloading(
    district: District,
    passwords: Callable[..., None],
    start_service: StartService,
    open_tab: OpenTab,
    tmp_path: Path,
) -> None:
    _, dep = scratch_deployment(district, tmp_path, ("101",))
    staging.add_point(
        district.ctx,
        district["it.ana"],
        PointSpec("101", "dp-101", "images", "/srv/images", "https://dp-101:8443",
                  host_key=HOST_KEY),
    )  # fmt: skip
    # Paused, so the service's scheduler neither runs it nor stages it: the test does.
    deployments.pause(district.ctx, district["it.ana"], dep, reason="staged by hand")
    passwords("btc.lincoln")
    tab = open_tab(start_service())
    page = tab.page
    sign_in(tab, "btc.lincoln")
    page.goto(f"/deployments/{dep}")
    row = page.locator("#stagings tr[data-key='101/scratch@3.29']")
    expect(row.locator(".state")).to_have_text("waiting")
    expect(row.locator(".since")).to_have_text("\N{EM DASH}")
    navigations = _navigations(tab)
    started = district.ctx.now().replace(microsecond=0)

    move_staging(district.ctx.engine, "running", 40, started)

    expect(row.locator(".state")).to_have_text("running")
    expect(row.locator(".sent")).to_have_text("40 of 200")
    expect(row.locator(".note")).to_have_text("sending: 40 of 200 chunks")
    # The district's time, as the page itself writes it, whatever the browser's zone.
    expect(row.locator(".since")).to_have_text(
        f"{started.astimezone(district.ctx.zone):%a %b %d %H:%M}"
    )

    move_staging(district.ctx.engine, "staged", 200, started)

    expect(row.locator(".state")).to_have_text("staged")
    expect(row.locator(".sent")).to_have_text("200 of 200")
    expect(row.locator(".note")).to_have_text("staged: its computers pull it from the point")
    assert navigations == []
    assert tab.problems == []


@pytest.fixture
def lab_image_in_testing(district: District) -> str:
    """Building 101's lab image in testing, its image test runs passed on the bench
    (run through the real service with fakes of the runner and persona checker)."""
    district.base("pc", "elementary", "2026.1")
    ref = district.custom("101", "lab", "1.0", to=State.TESTING)
    view = district.run_image_test(ref, "edtech.grace")
    assert view.status == "passed", view
    return ref


def test_edtech_signs_off_an_image_test_on_its_page_and_sees_the_step_done(
    district: District,
    lab_image_in_testing: str,
    passwords: Callable[..., None],
    start_service: StartService,
    open_tab: OpenTab,
) -> None:
    ref = lab_image_in_testing
    passwords("edtech.grace")
    tab = open_tab(start_service())
    page = tab.page

    sign_in(tab, "edtech.grace")
    waiting = page.locator("section", has=page.get_by_role("heading", name="Waiting for you"))
    expect(waiting.get_by_role("row", name=ref)).to_contain_text("test")
    waiting.get_by_role("link", name=ref).click()

    expect(page.get_by_role("heading", name=ref)).to_contain_text("testing")
    tests = page.locator("section", has=page.get_by_role("heading", name="Tests"))
    for persona in ("student", "staff"):
        expect(tests.get_by_role("row", name=persona)).to_contain_text("passed")
    expect(page.get_by_role("heading", name="Decide the test step")).to_be_visible()
    page.get_by_label("Reason", exact=True).fill(
        "signed in as the student and the staff account: all pass"
    )
    page.get_by_role("button", name="Approve").click()

    expect(page.get_by_role("status")).to_have_text("Recorded: approve.")
    test_step = page.locator("ol.chain li", has_text="test:")
    expect(test_step).to_contain_text("test: done")
    expect(test_step).to_contain_text("edtech.grace")
    expect(test_step).to_contain_text("signed in as the student and the staff account: all pass")
    expect(page.get_by_role("heading", name="Decide the test step")).to_be_hidden()
    assert tab.problems == []
    status = chain.status(district.ctx, district["it.ana"], Kind.CUSTOM_IMAGE, ref)
    assert [(s.step.value, s.status) for s in status.steps][:2] == [
        ("review", "done"),
        ("test", "done"),
    ]


def test_a_btc_is_refused_the_test_sign_off_in_the_page_and_nothing_changes(
    district: District,
    lab_image_in_testing: str,
    passwords: Callable[..., None],
    start_service: StartService,
    open_tab: OpenTab,
) -> None:
    ref = lab_image_in_testing
    before = catalog.show(district.ctx, district["it.ana"], Kind.CUSTOM_IMAGE, ref)
    steps_before = chain.status(district.ctx, district["it.ana"], Kind.CUSTOM_IMAGE, ref).steps
    passwords("btc.lincoln")
    tab = open_tab(start_service())
    page = tab.page

    sign_in(tab, "btc.lincoln")
    mine = page.locator("section", has=page.get_by_role("heading", name="My customized images"))
    mine.get_by_role("link", name=ref).click()
    page.get_by_label("Reason", exact=True).fill("looks fine to me")
    page.get_by_role("button", name="Approve").click()

    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    expect(page.get_by_role("alert")).to_have_text(
        "refused: BTC cannot sign off image tests "
        "(the chain gives testing to EdTech or a SecTec of the building)"
    )
    expect(page.locator("main")).not_to_contain_text("Traceback")
    page.goto(f"/items/custom_image/{ref}")
    expect(page.locator("ol.chain li", has_text="test:")).to_contain_text("test: pending")
    assert tab.problems == [  # the refusal's own answer, as the console reports it
        "Failed to load resource: the server responded with a status of 403 (Forbidden)"
    ]
    after = catalog.show(district.ctx, district["it.ana"], Kind.CUSTOM_IMAGE, ref)
    assert after == before
    status = chain.status(district.ctx, district["it.ana"], Kind.CUSTOM_IMAGE, ref)
    assert status.steps == steps_before


def test_a_wrong_password_is_told_on_the_sign_in_page(
    passwords: Callable[..., None], start_service: StartService, open_tab: OpenTab
) -> None:
    passwords("btc.lincoln")
    tab = open_tab(start_service())
    page = tab.page

    page.goto("/")
    page.get_by_label("Username").fill("btc.lincoln")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("alert")).to_have_text("wrong username or password")
    expect(page.get_by_label("Username")).to_have_value("btc.lincoln")
    expect(page.get_by_label("Password")).to_have_value("")
    assert [c["name"] for c in page.context.cookies()] == ["orch_sign_in"]
