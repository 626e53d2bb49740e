"""The command line, through Typer's runner, on the sample district (both backends)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click
import pytest
import typer.main
from typer.testing import CliRunner

from orchestrator.cli import image_test_cmds
from orchestrator.cli.main import app
from orchestrator.remote.ansible import FakePlaybookRunner
from tests.support.cli import Invoke, as_json
from tests.support.persona_fakes import FakePersonaChecker


def test_init_reports_the_schema_and_a_second_run_changes_nothing(orchestrator: Invoke) -> None:
    again = orchestrator("init", "--sample-district")
    assert "database ready" in again.stdout
    assert "already has buildings" in again.stdout


def test_btc_is_refused_test_sign_off_with_the_chains_reason(orchestrator: Invoke) -> None:
    result = orchestrator(
        "--as", "btc.lincoln", "image", "approve", "101/lab@1.1", "--step", "test", expect=3
    )
    assert result.stderr.strip() == (
        "refused: BTC cannot sign off image tests "
        "(the chain gives testing to EdTech or a SecTec of the building)"
    )
    assert "Traceback" not in result.stdout + result.stderr


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakePersonaChecker]:
    """Image tests on the sample's bench through fakes of our playbook runner and
    persona checker (nothing is reached); call it with the checks that fail."""
    monkeypatch.setenv("ORCHESTRATOR_WINRM_PASSWORD", "not-a-real-one")
    monkeypatch.setattr(image_test_cmds, "_runner", FakePlaybookRunner())

    def checker(**failing: set[str]) -> FakePersonaChecker:
        fake = FakePersonaChecker(failing=failing)
        monkeypatch.setattr(image_test_cmds, "_checker", fake)
        return fake

    return checker


def test_edtech_records_tests_signs_off_and_the_building_tech_releases(
    orchestrator: Invoke, tmp_path: Path, bench: Callable[..., FakePersonaChecker]
) -> None:
    checker = bench()
    # An image's test step counts only image test runs: EdTech runs one on the
    # bench's elementary PC, signing in as Lincoln's student and staff test accounts.
    out = orchestrator(
        "--as", "edtech.okafor", "image", "test", "101/lab@1.1", "--client", "101-library-01"
    ).stdout  # fmt: skip
    assert "image test #" in out and "of 101/lab@1.1 on 101-library-01: passed" in out
    assert [(login.persona, login.username) for _t, login, _c in checker.calls] == [
        ("student", "s.test101"),
        ("staff", "t.test101"),
    ]
    # What a person saw is kept as a note beside it, screenshot and all.
    shot = tmp_path / "student-desktop.png"
    shot.write_bytes(b"\x89PNG fake screenshot")
    note = orchestrator(
        "--as", "edtech.okafor", "image", "record-test", "101/lab@1.1",
        "--persona", "student", "--account", "s.test101",
        "--check", "printers reachable=pass", "--evidence", "all good", "--attach", str(shot),
    )  # fmt: skip
    assert "passed" in note.stdout
    orchestrator("--as", "edtech.okafor", "image", "approve", "101/lab@1.1", "--step", "test")
    released = as_json(
        orchestrator("--as", "btc.lincoln", "image", "release", "101/lab@1.1", "--json")
    )
    assert released["state"] == "published"

    status = as_json(
        orchestrator("--as", "principal.lincoln", "image", "status", "101/lab@1.1", "--json")
    )
    assert [s["status"] for s in status["steps"]] == ["done", "done", "done"]
    current = [t for t in status["tests"] if t["current"] and t["counts"]]
    assert {(t["persona"], t["account"], t["client"]) for t in current} == {
        ("student", "s.test101", "101-library-01"),
        ("staff", "t.test101", "101-library-01"),
    }
    assert all(t["passed"] and t["image_test"] is not None for t in current)
    (kept,) = [t for t in status["tests"] if not t["counts"]]
    attached = kept["attachments"][0]
    assert attached["sha256"] and attached["name"] == "student-desktop.png"
    shot.unlink()  # the evidence outlives the original file
    assert Path(attached["stored"]).read_bytes() == b"\x89PNG fake screenshot"

    log = as_json(
        orchestrator("--as", "it.rivera", "audit", "--item", "image:101/lab@1.1", "--json")
    )
    assert [e["action"] for e in log][-2:] == [
        "custom_image.test.approve",
        "custom_image.publish.approve",
    ]
    assert log[-1]["actor"] == "btc.lincoln" and log[-1]["role"] == "btc"
    assert log[-1]["digest"] == released["digest"]
    assert "audit log intact" in orchestrator("--as", "it.rivera", "audit", "verify").stdout


def test_a_failing_check_blocks_the_sign_off_and_says_which(
    orchestrator: Invoke, bench: Callable[..., FakePersonaChecker]
) -> None:
    bench(student={"not-admin"})
    orchestrator(
        "--as", "edtech.okafor", "image", "test", "101/lab@1.1", "--client", "101-library-01",
        expect=9,
    )  # fmt: skip
    result = orchestrator(
        "--as", "edtech.okafor", "image", "approve", "101/lab@1.1", "--step", "test", expect=5
    )
    assert "checks failed in its latest test runs (student:not-admin)" in result.stderr
    # A passing note recorded by hand does not outweigh the failing run.
    orchestrator(
        "--as", "edtech.okafor", "image", "record-test", "101/lab@1.1",
        "--persona", "student", "--check", "admin tools hidden=pass",
    )  # fmt: skip
    again = orchestrator(
        "--as", "edtech.okafor", "image", "approve", "101/lab@1.1", "--step", "test", expect=5
    )
    assert "checks failed in its latest test runs (student:not-admin)" in again.stderr


def test_it_creates_a_base_image_from_a_local_wim_and_bad_input_names_the_field(
    orchestrator: Invoke, tmp_path: Path
) -> None:
    wim = tmp_path / "pc-high-2027.1.wim"
    wim.write_bytes(b"MSWIM\0" + b"x" * 1000)
    base = [
        "--as",
        "it.rivera",
        "base",
        "create",
        "--platform",
        "pc",
        "--level",
        "high",
        "--os",
        "Windows 11 25H2",
        "--sunset",
        "2099-06-30",
        "--artifact",
        str(wim),
        "--model",
        "Dell:Latitude 3420",
    ]
    created = as_json(orchestrator(*base, "--version", "2027.1", "--json"))
    assert created["state"] == "draft" and created["artifact_sha256"]

    dup = orchestrator(*base, "--version", "2027.1", expect=2)
    assert "pc-high@2027.1 already exists" in dup.stderr
    bad_version = orchestrator(*base, "--version", "v2027", expect=2)
    assert bad_version.stderr.startswith("version: 'v2027' is not a version")
    bad_date = orchestrator(
        *base[:-4],
        "--version",
        "2027.2",
        "--sunset",
        "30/06/2099",
        "--artifact",
        str(wim),
        expect=2,
    )
    assert "sunset: '30/06/2099' is not a date" in bad_date.stderr
    old_model = orchestrator(*base[:-1], "Dell:OptiPlex 7010", "--version", "2027.3", expect=2)
    assert "past its end of support" in old_model.stderr
    listed = as_json(orchestrator("--as", "it.rivera", "base", "list", "--json"))
    assert [v["ref"] for v in listed].count("pc-high@2027.1") == 1
    assert "pc-high@2027.2" not in {v["ref"] for v in listed}


def test_building_tech_creates_a_customized_image_only_in_its_building(
    orchestrator: Invoke,
) -> None:
    args = [
        "image",
        "create",
        "--name",
        "stem",
        "--version",
        "1.0",
        "--base",
        "pc-elementary@2026.1",
        "--package",
        "firefox@128.0",
        "--setting",
        "wallpaper=lions",
    ]
    created = as_json(orchestrator("--as", "btc.lincoln", *args, "--building", "101", "--json"))
    assert created["ref"] == "101/stem@1.0" and created["packages"] == ["firefox@128.0"]
    other = orchestrator("--as", "btc.lincoln", *args, "--building", "102", expect=3)
    assert "cannot create, revise, rebase or retire customized images in building 102" in (
        other.stderr
    )
    wrong_level = orchestrator(
        "--as",
        "sectec.kim",
        "image",
        "create",
        "--building",
        "301",
        "--name",
        "x",
        "--version",
        "1.0",
        "--base",
        "pc-elementary@2026.1",
        expect=2,
    )
    assert "is for elementary schools; building 301" in wrong_level.stderr


def test_sunset_lists_by_days_and_the_derivatives_to_rebase(orchestrator: Invoke) -> None:
    report = as_json(orchestrator("--as", "edtech.okafor", "sunset", "--json"))
    days = [i["days_to_sunset"] for i in report["items"]]
    assert days == sorted(days) and days[0] < 0
    rebase = {r["item"]["ref"]: r["status"] for r in report["must_rebase"]}
    assert rebase["302/journalism@1.0"] == "rebase needed"
    assert rebase["101/lab@1.0"].startswith("rebase in progress: 101/lab@1.1")
    soon = as_json(orchestrator("--as", "edtech.okafor", "sunset", "--within", "30", "--json"))
    assert all(i["days_to_sunset"] <= 30 for i in soon["items"])


def test_rebase_from_the_command_line_starts_the_chain_again(orchestrator: Invoke) -> None:
    out = orchestrator("--as", "sectec.kim", "image", "rebase", "302/journalism@1.0")
    assert "rebased 302/journalism@1.0 onto mac-high@2026.1 as 302/journalism@1.1 (draft)" in (
        out.stdout.replace("\n", " ")
    )


@pytest.mark.parametrize(
    "listing",
    [
        ["base", "list"],
        ["image", "list"],
        ["package", "list"],
        ["hardware", "list"],
        ["buildings"],
        ["people"],
        ["audit"],
        ["sunset"],
        ["chain"],
        ["queue"],
        ["notices"],
        ["whoami"],
        ["clients", "list"],
    ],
    ids=lambda a: "-".join(a),
)
def test_every_listing_prints_json_with_json(orchestrator: Invoke, listing: list[str]) -> None:
    out = orchestrator("--as", "edtech.okafor", *listing, "--json")
    assert isinstance(json.loads(out.stdout), list | dict)


def test_building_staff_see_only_their_buildings(orchestrator: Invoke) -> None:
    images = as_json(orchestrator("--as", "btc.lincoln", "image", "list", "--json"))
    assert {v["building"] for v in images} == {"101"}
    hidden = orchestrator("--as", "btc.lincoln", "image", "show", "301/stem-lab@2.0", expect=4)
    assert "no customized image '301/stem-lab@2.0'" in hidden.stderr


def test_edtech_queue_lists_what_waits_for_review(orchestrator: Invoke) -> None:
    queue = as_json(orchestrator("--as", "edtech.okafor", "queue", "--json"))
    waiting = {(q["item"]["ref"], q["step"]) for q in queue}
    assert ("301/stem-lab@2.0", "review") in waiting
    assert ("pc-high@2026.2", "review") in waiting


def test_who_acts_must_be_said_and_must_exist(orchestrator: Invoke) -> None:
    missing = orchestrator("image", "list", expect=2)
    assert "say who you are: --as USERNAME" in missing.stderr
    unknown = orchestrator("--as", "nobody", "image", "list", expect=4)
    assert "no active person 'nobody'" in unknown.stderr


def test_malformed_options_are_refused_without_a_traceback(orchestrator: Invoke) -> None:
    for args in (
        ["image", "record-test", "101/lab@1.1", "--persona", "student", "--check", "sign-in"],
        ["image", "record-test", "101/lab@1.1", "--persona", "teacher", "--check", "a=pass"],
        ["image", "approve", "101/lab@1.1", "--step", "sideways"],
        ["image", "list", "--state", "cooking"],
        ["audit", "--item", "lab"],
    ):
        result = orchestrator("--as", "edtech.okafor", *args, expect=2)
        assert result.stderr.strip() and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('district_timezone = "Mars/Olympus"', "invalid setting district_timezone"),
        ('colour = "blue"', "invalid setting colour: Extra inputs are not permitted"),
        ("user = ", "not valid TOML"),
        ('sunset_check_time = "25:00"', "invalid setting sunset_check_time"),
        ('store_housekeeping_time = "never"', "'never' is not a time of day HH:MM"),
    ],
)
def test_a_bad_settings_file_is_named_in_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str, message: str
) -> None:
    config = tmp_path / "orchestrator.toml"
    config.write_text(toml + "\n")
    monkeypatch.setenv("ORCHESTRATOR_CONFIG", str(config))
    monkeypatch.setenv("ORCHESTRATOR_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(app, ["init"])
    assert result.exit_code == 2
    assert message in result.stderr and str(config) in result.stderr
    assert not (tmp_path / "data").exists()


def test_an_unreachable_database_is_exit_7_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv(
        "ORCHESTRATOR_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/orchestrator"
    )
    for args in (["init"], ["people"], ["--as", "it.rivera", "base", "list"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 7, result.stderr
        assert result.stderr.startswith("database unavailable (postgresql+psycopg://nobody@")
        assert "\n" not in result.stderr.strip()


def test_a_data_folder_that_cannot_be_made_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("ORCHESTRATOR_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("ORCHESTRATOR_DATA_DIR", str(blocker / "data"))
    result = CliRunner().invoke(app, ["init"])
    assert result.exit_code == 7
    assert f"cannot create the data folder {blocker / 'data'}" in result.stderr


def test_commands_on_a_fresh_folder_ask_for_init_and_create_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("ORCHESTRATOR_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(app, ["--as", "it.rivera", "base", "list"])
    assert result.exit_code == 7
    assert "has no orchestrator schema" in result.stderr and "run 'orchestrator init'" in (
        result.stderr
    )
    assert not (tmp_path / "data").exists()


def test_version_is_printed_without_a_command() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("orchestrator ")


def test_sunset_lead_days_accept_a_comma_list(
    orchestrator: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_SUNSET_LEAD_DAYS", "60,14,1")
    assert orchestrator("--as", "it.rivera", "whoami").exit_code == 0
    monkeypatch.setenv("ORCHESTRATOR_SUNSET_LEAD_DAYS", "60,soon")
    bad = orchestrator("--as", "it.rivera", "whoami", expect=2)
    assert "invalid setting sunset_lead_days: '60,soon' is not a list of whole days" in bad.stderr


def test_only_it_runs_the_sunset_check_by_hand(orchestrator: Invoke) -> None:
    refused = orchestrator("--as", "btc.lincoln", "sunset", "check", expect=3)
    assert "BTC cannot run the sunset check" in refused.stderr
    ran = orchestrator("--as", "it.rivera", "sunset", "check")
    assert "reached sunset: none" in ran.stdout


def test_a_btc_recording_a_test_is_told_it_cannot_record_tests(orchestrator: Invoke) -> None:
    result = orchestrator(
        "--as",
        "btc.lincoln",
        "image",
        "record-test",
        "101/lab@1.1",
        "--persona",
        "student",
        "--check",
        "sign-in=pass",
        expect=3,
    )
    assert result.stderr.startswith("refused: BTC cannot record image tests (the chain gives")


def test_rebasing_twice_points_to_the_rebase_already_under_way(orchestrator: Invoke) -> None:
    again = orchestrator("--as", "btc.lincoln", "image", "rebase", "101/lab@1.0", expect=5)
    assert "already rebased onto pc-elementary@2026.1 as 101/lab@1.1 (testing)" in again.stderr


def test_clients_import_and_inventory_export_from_the_command_line(
    orchestrator: Invoke, tmp_path: Path
) -> None:
    export = tmp_path / "new-lab.csv"
    export.write_text(
        "Hostname,Building,Room,Platform,Model,Serial,MAC,IP\n"
        "101-lab-b-01,101,lab-b,pc,Latitude 3420,SNX0001,02:aa:00:00:00:01,127.0.0.31\n"
        "101-lab-b-02,101,lab-b,pc,Acer C740,SNX0002,02:aa:00:00:00:02,127.0.0.32\n"
    )
    out = orchestrator("--as", "btc.lincoln", "clients", "import", str(export))
    assert "imported 2 clients into building(s) 101" in out.stdout
    assert "101-lab-b-02" in out.stdout  # flagged: off the Approved Technology List
    again = orchestrator("--as", "btc.lincoln", "clients", "import", str(export), expect=2)
    assert "nothing imported" in again.stderr and "is already in the inventory" in again.stderr
    listed = as_json(
        orchestrator("--as", "principal.lincoln", "clients", "list", "--room", "lab-b", "--json")
    )
    assert [c["hostname"] for c in listed] == ["101-lab-b-01", "101-lab-b-02"]
    target = tmp_path / "inventory" / "district.yml"
    wrote = orchestrator("--as", "it.rivera", "inventory", "export", "--output", str(target))
    assert "wrote 44 hosts" in wrote.stdout and target.is_file()


def test_credentials_are_set_from_a_file_or_stdin_and_never_printed(
    orchestrator: Invoke, tmp_path: Path
) -> None:
    secret = tmp_path / "winrm.txt"
    secret.write_text("Snow-Day-2026!\n")

    out = orchestrator(
        "--as", "it.rivera", "credentials", "set", "winrm-password", "--file", str(secret)
    )
    assert "winrm-password stored encrypted (set)" in out.stdout
    listed = orchestrator("--as", "it.chen", "credentials", "list")
    assert "winrm-password" in listed.stdout and "Snow-Day" not in listed.stdout
    refused = orchestrator("--as", "btc.lincoln", "credentials", "list", expect=3)
    assert "BTC cannot set the district's client login secrets" in refused.stderr
    unknown = orchestrator(
        "--as", "it.rivera", "credentials", "set", "root", "--file", str(secret), expect=2
    )
    assert "no secret called 'root' (secrets: ssh-key, winrm-password)" in unknown.stderr
    missing = orchestrator(
        "--as",
        "it.rivera",
        "credentials",
        "set",
        "ssh-key",
        "--file",
        str(tmp_path / "nope"),
        expect=2,
    )
    assert f"cannot read {tmp_path / 'nope'}" in missing.stderr


def test_every_commands_summary_in_the_help_is_one_unbroken_line() -> None:
    broken: list[str] = []

    def walk(command: click.Command, path: str) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            summary = (sub.help or "").strip().split("\n\n")[0]
            if not summary or "\n" in summary:
                broken.append(f"{path} {name}".strip())
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "")

    assert broken == []
