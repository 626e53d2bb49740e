"""``orchestrator requests report`` on the sample district (the real clock: what was
filed a moment ago is in this month)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from tests.support.cli import Invoke


@pytest.fixture
def filed(orchestrator: Invoke) -> Invoke:
    """Lincoln's principal files a repair (the BTC takes and closes it) and a web
    site request (Communications'); Kennedy's files a network request."""
    for who, building, category in (
        ("principal.lincoln", "101", "hardware_repair"),
        ("principal.lincoln", "101", "web_site"),
        ("principal.kennedy", "301", "network"),
    ):
        orchestrator(
            "--as", who, "requests", "file", "--building", building,
            "--category", category, "--description", f"{category} please",
        )  # fmt: skip
    orchestrator("--as", "btc.lincoln", "requests", "take", "1")
    orchestrator("--as", "btc.lincoln", "requests", "close", "1", "--note", "new power supply")
    return orchestrator


def test_the_report_shows_each_figure_as_a_table(filed: Invoke) -> None:
    out = filed("--as", "it.rivera", "requests", "report").stdout
    assert "in the buildings you may see: 3 (1 routed to a department, 33%)" in out
    for title in (
        "requests filed, by month",
        "time to first response and to close, per building (hours)",
        "per category (hours)",
        "routed outside technicians' duties",
        "technician workload: the technician's queue (assigned: open/closed)",
    ):
        assert title in out, title
    assert " hardware_repair " in out and " network " in out
    assert "Communications 1" in out
    assert "btc.lincoln 0/1" in out
    # Kennedy High's SecTec covers it; nobody has taken its request.
    assert "sectec.kim" in out


def test_a_principal_sees_only_their_building_and_another_is_not_found(filed: Invoke) -> None:
    out = filed("--as", "principal.lincoln", "requests", "report").stdout
    assert "2 (1 routed to a department, 50%)" in out
    assert " 301 " not in out and " network " not in out
    other = filed("--as", "principal.lincoln", "requests", "report", "--building", "301", expect=4)
    assert "no building '301'" in other.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--from", "2026-13"], "from: '2026-13' is not a month: months are 01 to 12"),
        (["--from", "2026-03", "--to", "2026-01"], "is after the last month asked for"),
        (["--from", "2020-01", "--to", "2024-12"], "a report covers at most 36"),
        (["--to", "March"], "to: 'March' is not a month (YYYY-MM"),
        (["--building", "lincoln"], "building: 'lincoln' is not a building number"),
    ],
)
def test_a_bad_range_or_building_is_one_clear_line_and_exit_2(
    filed: Invoke, args: list[str], words: str
) -> None:
    bad = filed("--as", "it.rivera", "requests", "report", *args, expect=2)
    assert words in bad.stderr and bad.stdout == ""


def test_the_csv_goes_to_a_file_or_to_standard_output(filed: Invoke, tmp_path: Path) -> None:
    target = tmp_path / "requests.csv"
    said = filed("--as", "it.rivera", "requests", "report", "--csv", str(target)).stdout
    assert f"to {target}" in said and "wrote " in said
    written = target.read_bytes()
    assert written.startswith(b"figure,building,building_name,") and b"\r\n" in written
    printed = filed("--as", "it.rivera", "requests", "report", "--csv", "-").stdout_bytes
    assert printed == written
    rows = list(csv.DictReader(io.StringIO(printed.decode())))
    routed = {
        r["department"]: r["value"]
        for r in rows
        if r["figure"] == "routed_outside_duties" and r["building"] == "all" and r["department"]
    }
    assert routed == {"Communications": "1"}


def test_the_report_as_json(filed: Invoke) -> None:
    body = json.loads(
        filed("--as", "btc.lincoln", "requests", "report", "--building", "101", "--json").stdout
    )
    assert body["building"] == "101" and len(body["months"]) == 12
    (workload,) = body["workload"]
    assert workload["technicians"] == ["btc.lincoln"] and workload["closed"] == 1
