"""``orchestrator requests`` on the sample district."""

from __future__ import annotations

import json

from tests.support.cli import Invoke


def test_a_principal_files_and_the_btc_takes_and_closes_from_the_command_line(
    orchestrator: Invoke,
) -> None:
    filed = orchestrator(
        "--as", "principal.lincoln", "requests", "file", "--building", "101",
        "--category", "hardware_repair", "--description", "cart charger sparks",
        "--room", "cart-1", "--client", "101-cart-1-02", "--urgency", "urgent",
    )  # fmt: skip
    assert "request #1 (Hardware repair, building 101): open, the building technician's queue" in (
        filed.stdout
    )
    listed = orchestrator("--as", "btc.lincoln", "requests", "list", "--open").stdout
    assert "hardware_repair" in listed and "urgent" in listed
    taken = orchestrator("--as", "btc.lincoln", "requests", "take", "1").stdout
    assert "taken" in taken
    closed = orchestrator(
        "--as", "btc.lincoln", "requests", "close", "1", "--note", "charger replaced"
    ).stdout
    assert "closed" in closed
    shown = json.loads(orchestrator("--as", "it.rivera", "requests", "show", "1", "--json").stdout)
    assert shown["clients"] == ["101-cart-1-02"] and shown["note"] == "charger replaced"


def test_a_web_site_request_is_routed_away_and_said_why(orchestrator: Invoke) -> None:
    filed = orchestrator(
        "--as", "principal.lincoln", "requests", "file", "--building", "101",
        "--category", "web_site", "--description", "update the bell schedule page",
    )  # fmt: skip
    assert "sent to Communications" in filed.stdout
    assert "school web sites are kept by Communications" in filed.stdout
    refused = orchestrator("--as", "btc.lincoln", "requests", "take", "1", expect=3)
    assert "is for Communications, not a building technician" in refused.stderr


def test_unknown_category_or_another_building_is_refused_naming_it(orchestrator: Invoke) -> None:
    unknown = orchestrator(
        "--as", "principal.lincoln", "requests", "file", "--building", "101",
        "--category", "coffee", "--description", "machine empty", expect=4,
    )  # fmt: skip
    assert "no request category 'coffee'" in unknown.stderr
    other = orchestrator(
        "--as", "principal.lincoln", "requests", "file", "--building", "102",
        "--category", "network", "--description", "wifi", expect=4,
    )  # fmt: skip
    assert "no building '102'" in other.stderr
    assert "no requests" in orchestrator("--as", "it.rivera", "requests", "list").stdout


def test_the_categories_say_where_each_goes(orchestrator: Invoke) -> None:
    out = orchestrator("requests", "categories").stdout
    assert "grading" in out and "Student Information Systems" in out
    assert "the building technician" in out


def _file_scratch_request(orchestrator: Invoke) -> None:
    orchestrator(
        "--as", "principal.lincoln", "requests", "file", "--building", "101",
        "--category", "software_access", "--description", "Scratch for the coding club",
        "--client", "101-cart-1-01", "--client", "101-cart-1-02",
    )  # fmt: skip


def test_a_btc_deploys_from_a_request_to_the_clients_it_names(orchestrator: Invoke) -> None:
    _file_scratch_request(orchestrator)
    orchestrator(
        "--as", "btc.lincoln", "windows", "add", "--building", "101", "--days", "mon-fri",
        "--from", "18:00", "--to", "06:00",
    )  # fmt: skip

    out = orchestrator(
        "--as", "btc.lincoln", "requests", "deploy", "1", "--package", "scratch@3.29"
    ).stdout

    assert "deployment 1: scratch@3.29" in out and "2 pending" in out
    assert "answered by deployment 1 (scratch@3.29): scheduled, 0 of 2 clients done" in out
    shown = json.loads(orchestrator("--as", "principal.lincoln", "requests", "show", "1", "--json")
                       .stdout)  # fmt: skip
    assert shown["state"] == "taken" and shown["changes"][0]["kind"] == "deployment"


def test_link_needs_exactly_one_change_and_names_what_it_cannot_find(
    orchestrator: Invoke,
) -> None:
    _file_scratch_request(orchestrator)
    neither = orchestrator("--as", "btc.lincoln", "requests", "link", "1", expect=2)
    assert "give one of --image, --package or --deployment" in neither.stderr
    missing = orchestrator(
        "--as", "btc.lincoln", "requests", "link", "1", "--deployment", "9", expect=4
    )
    assert "no deployment 9" in missing.stderr
    linked = orchestrator(
        "--as", "btc.lincoln", "requests", "link", "1", "--package", "scratch@3.29"
    ).stdout
    assert "answered by scratch@3.29: published" in linked
    refused = orchestrator(
        "--as", "principal.lincoln", "requests", "link", "1", "--package", "firefox@128.0",
        expect=3,
    )  # fmt: skip
    assert "Principal cannot work on this request" in refused.stderr


def test_it_adds_and_retires_a_category_and_a_btc_is_refused(orchestrator: Invoke) -> None:
    added = orchestrator(
        "--as", "it.rivera", "requests", "category", "add", "printers",
        "--label", "Printers and copiers", "--queue", "department",
        "--department", "Print Services", "--why", "Copiers are leased.",
    ).stdout  # fmt: skip
    assert "category printers (Printers and copiers): sent to Print Services" in added
    retired = orchestrator(
        "--as", "it.rivera", "requests", "category", "edit", "printers", "--retired"
    ).stdout
    assert "retired" in retired
    assert "printers (retired)" in orchestrator("requests", "categories", "--retired").stdout
    refused = orchestrator(
        "--as", "btc.lincoln", "requests", "category", "edit", "grading", "--queue",
        "technician", expect=3,
    )  # fmt: skip
    assert "BTC cannot change the request categories" in refused.stderr
    bad = orchestrator(
        "--as", "it.rivera", "requests", "category", "add", "=cmd", "--label", "x",
        "--queue", "technician", expect=2,
    )  # fmt: skip
    assert "'=cmd' is not a category key" in bad.stderr


def test_a_btc_makes_the_image_a_request_asks_for_from_the_request(orchestrator: Invoke) -> None:
    orchestrator(
        "--as", "principal.lincoln", "requests", "file", "--building", "101",
        "--category", "imaging", "--description", "an image for the coding club cart",
    )  # fmt: skip

    made = orchestrator(
        "--as", "btc.lincoln", "image", "create", "--building", "101", "--name", "club",
        "--version", "1.0", "--base", "pc-elementary@2026.1", "--setting", "wallpaper=club",
        "--request", "1",
    ).stdout  # fmt: skip

    assert "created 101/club@1.0 (draft), linked to request #1" in made
    shown = orchestrator("--as", "principal.lincoln", "requests", "show", "1").stdout
    assert "answered by 101/club@1.0: draft" in shown
    elsewhere = orchestrator(
        "--as", "it.rivera", "image", "create", "--building", "102", "--name", "club",
        "--version", "1.0", "--base", "pc-elementary@2026.1", "--request", "1", expect=2,
    )  # fmt: skip
    assert "request 1 is building 101's" in elsewhere.stderr
