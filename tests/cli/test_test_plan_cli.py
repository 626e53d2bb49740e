"""``orchestrator testing plan show | add | disable | remove | import`` on the sample district.

The sample district's elementary PC base (pc-elementary@2026.1) carries a plan of
five checks; Lincoln's lab image 101/lab@1.1, in testing, is built on it and adds
its printer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.cli import Invoke

LAB = "101/lab@1.1"
BASE = "pc-elementary@2026.1"
INHERITED = ["sign-in", "home-folder", "firefox-starts", "no-registry-editor", "not-admin"]


def _plan(orchestrator: Invoke, image: str, who: str = "it.rivera") -> Any:
    return json.loads(orchestrator("--as", who, "testing", "plan", "show", image, "--json").stdout)


def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_lab_shows_its_base_checks_then_its_own(orchestrator: Invoke) -> None:
    shown = orchestrator("--as", "principal.lincoln", "testing", "plan", "show", LAB)
    out = shown.stdout
    assert f"test plan of {LAB} on {BASE} (testing)" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert lines["sign-in"].split()[1:3] == ["both", "sign_in"]
    assert lines["not-admin"].split()[1:3] == ["student", "not_admin"]
    assert "`net session` fails (no admin rights)" in lines["not-admin"]
    assert lines["not-admin"].split()[-2:] == ["30s", "base"]
    assert "print-101.district.example.org:631 answers" in lines["lab-printer"]
    assert lines["lab-printer"].split()[-2:] == ["30s", "own"]
    assert "plan digest sha256:" in out

    data = _plan(orchestrator, LAB)
    assert [(c["name"], c["origin"]) for c in data["checks"]] == [
        *((n, "base") for n in INHERITED),
        ("lab-printer", "own"),
    ]
    assert data["checks"][-1]["params"] == {
        "host": "print-101.district.example.org",
        "port": 631,
    }
    assert data["base"] == BASE and data["state"] == "testing" and data["editable"]
    assert data["digest"].startswith("sha256:") and len(data["digest"]) == 71
    base = _plan(orchestrator, BASE, who="btc.lincoln")
    assert [c["name"] for c in base["checks"]] == INHERITED and base["editable"] is False
    empty = orchestrator("--as", "sectec.kim", "testing", "plan", "show", "301/stem-lab@2.0")
    assert "301/stem-lab@2.0 has no test plan checks" in empty.stdout


def test_the_tech_adds_disables_and_removes_checks_and_each_change_moves_the_digest(
    orchestrator: Invoke,
) -> None:
    start = _plan(orchestrator, LAB)["digest"]
    added = orchestrator(
        "--as", "btc.lincoln", "testing", "plan", "add", LAB, "--name", "shared-drive",
        "--kind", "reachable", "--persona", "staff", "--host", "fs-101.district.example.org",
        "--port", "445", "--timeout", "20",
    )  # fmt: skip
    assert "check shared-drive added to 101/lab@1.1; 7 checks in its plan, digest sha256:" in (
        added.stdout
    )
    orchestrator(
        "--as", "edtech.okafor", "testing", "plan", "add", LAB, "--name", "scratch-version",
        "--kind", "command", "--persona", "both", "--command", "scratch --version",
        "--expect-exit", "0", "--expect-output", "3.29",
    )  # fmt: skip
    disabled = orchestrator(
        "--as", "btc.lincoln", "testing", "plan", "disable", LAB, "--name", "firefox-starts",
        "--reason", "the lab image opens Chrome; Firefox stays for the library carts",
    )  # fmt: skip
    assert "inherited check firefox-starts disabled on 101/lab@1.1; 7 checks" in disabled.stdout
    shown = orchestrator("--as", "principal.lincoln", "testing", "plan", "show", LAB).stdout
    assert "firefox-starts  " not in shown
    assert (
        "disabled: firefox-starts (from pc-elementary@2026.1) by btc.lincoln: the lab image "
        "opens Chrome" in shown
    )
    data = _plan(orchestrator, LAB)
    names = [c["name"] for c in data["checks"]]
    assert names == [
        "sign-in", "home-folder", "no-registry-editor", "not-admin",
        "lab-printer", "shared-drive", "scratch-version",
    ]  # fmt: skip
    assert data["checks"][5]["timeout_s"] == 20
    assert data["checks"][6]["expect"] == {"exit": 0, "output": "3.29"}
    assert data["disabled"][0]["name"] == "firefox-starts"
    assert data["digest"] != start

    removed = orchestrator(
        "--as", "btc.lincoln", "testing", "plan", "remove", LAB, "--name", "scratch-version"
    )
    assert "check scratch-version removed from 101/lab@1.1" in removed.stdout
    orchestrator("--as", "btc.lincoln", "testing", "plan", "remove", LAB, "--name", "shared-drive")
    again = orchestrator(
        "--as", "btc.lincoln", "testing", "plan", "remove", LAB, "--name", "firefox-starts"
    )
    assert "inherited check firefox-starts applies to 101/lab@1.1 again" in again.stdout
    assert _plan(orchestrator, LAB)["digest"] == start

    log = json.loads(
        orchestrator("--as", "it.rivera", "audit", "--item", f"image:{LAB}", "--json").stdout
    )
    plan_log = [(e["action"], e["actor"]) for e in log if e["action"].startswith("test_plan.")]
    assert plan_log == [
        ("test_plan.add", "btc.lincoln"),  # the sample district's printer
        ("test_plan.add", "btc.lincoln"),
        ("test_plan.add", "edtech.okafor"),
        ("test_plan.disable", "btc.lincoln"),
        ("test_plan.remove", "btc.lincoln"),
        ("test_plan.remove", "btc.lincoln"),
        ("test_plan.enable", "btc.lincoln"),
    ]
    assert log[-1]["digest"] == start
    assert "audit log intact" in orchestrator("--as", "it.rivera", "audit", "verify").stdout


def test_bad_checks_and_refusals_exit_with_the_reason_and_change_nothing(
    orchestrator: Invoke,
) -> None:
    start = _plan(orchestrator, LAB)

    def add(who: str, *args: str, expect: int) -> str:
        result = orchestrator(
            "--as", who, "testing", "plan", "add", *args, expect=expect
        )  # fmt: skip
        return result.stderr

    printer = ["--name", "p2", "--kind", "reachable", "--persona", "staff", "--host", "pr"]
    assert "check 'p2': port: 70000 is out of range (1-65535)" in add(
        "btc.lincoln", LAB, *printer, "--port", "70000", expect=2
    )
    assert "check 'p2': port: reachable checks need port" in add(
        "btc.lincoln", LAB, *printer, expect=2
    )
    assert "check 'x': kind: no kind 'ping'" in add(
        "btc.lincoln", LAB, "--name", "x", "--kind", "ping", "--persona", "both", expect=2
    )
    assert "check 'x': timeout: 0 is out of range (1-600)" in add(
        "btc.lincoln", LAB, "--name", "x", "--kind", "sign_in", "--persona", "both",
        "--timeout", "0", expect=2,
    )  # fmt: skip
    assert "check 'x': path: 'regedit.exe' is not an absolute pc path" in add(
        "btc.lincoln", LAB, "--name", "x", "--kind", "app_absent", "--persona", "student",
        "--path", "regedit.exe", expect=2,
    )  # fmt: skip
    assert "'sign-in' is inherited from pc-elementary@2026.1" in add(
        "btc.lincoln", LAB, "--name", "sign-in", "--kind", "sign_in", "--persona", "staff",
        expect=2,
    )  # fmt: skip
    sign_in = ["--name", "x", "--kind", "sign_in", "--persona", "both"]
    assert "firefox@128.0 is a software package, not an image" in add(
        "edtech.okafor", "firefox@128.0", *sign_in, expect=2
    )
    assert "no customized image '101/nope@1.0'" in add(
        "btc.lincoln", "101/nope@1.0", *sign_in, expect=4
    )
    assert "no customized image '101/lab@1.1'" in add("btc.garcia", LAB, *sign_in, expect=4)
    assert "refused: Principal cannot change a customized image's test plan" in add(
        "principal.lincoln", LAB, *sign_in, expect=3
    )
    assert "refused: IT cannot change a customized image's test plan" in add(
        "it.rivera", LAB, *sign_in, expect=3
    )
    assert "refused: BTC cannot change a base image's test plan" in add(
        "btc.lincoln", "pc-high@2026.2", *sign_in, expect=3
    )
    assert "base image pc-elementary@2026.1 is published; its test plan is frozen" in add(
        "edtech.okafor", BASE, *sign_in, expect=5
    )
    not_inherited = orchestrator(
        "--as", "btc.lincoln", "testing", "plan", "disable", LAB, "--name", "lab-printer",
        "--reason", "x", expect=2,
    )  # fmt: skip
    assert "'lab-printer' is 101/lab@1.1's own check, not inherited" in not_inherited.stderr
    missing = orchestrator(
        "--as", "btc.lincoln", "testing", "plan", "disable", LAB, "--name", "nope",
        "--reason", "x", expect=2,
    )  # fmt: skip
    assert "inherits no check 'nope'" in missing.stderr
    inherited = orchestrator(
        "--as", "btc.lincoln", "testing", "plan", "remove", LAB, "--name", "sign-in", expect=2
    )
    assert "inherited from pc-elementary@2026.1; disable it with a reason" in inherited.stderr
    assert _plan(orchestrator, LAB) == start

    # IT's next high-school base is in review: IT and EdTech may still write its plan.
    orchestrator("--as", "it.rivera", "testing", "plan", "add", "pc-high@2026.2", *sign_in)
    assert [c["name"] for c in _plan(orchestrator, "pc-high@2026.2")["checks"]] == ["x"]


def test_import_takes_a_whole_yaml_or_json_file_or_nothing(
    orchestrator: Invoke, tmp_path: Path
) -> None:
    start = _plan(orchestrator, LAB)
    good = _file(
        tmp_path,
        "lab-plan.yml",
        "- name: shared-drive\n"
        "  kind: reachable\n"
        "  persona: staff\n"
        "  host: fs-101.district.example.org\n"
        "  port: 445\n"
        "- name: student-no-cmd\n"
        "  kind: app_absent\n"
        "  persona: student\n"
        '  path: "C:\\\\Windows\\\\System32\\\\cmd.exe"\n'
        "  timeout: 15\n",
    )
    bad_files = {
        "dup.yml": (
            "- {name: a, kind: sign_in, persona: both}\n"
            "- {name: a, kind: sign_in, persona: staff}\n",
            "entry 2, check 'a': name: the name is used by entry 1 too",
        ),
        "kind.json": (
            json.dumps([{"name": "a", "kind": "sign_in", "persona": "both"},
                        {"name": "b", "kind": "ping", "persona": "both"}]),
            "entry 2, check 'b': kind: no kind 'ping'",
        ),
        "param.yml": (
            "- {name: a, kind: sign_in, persona: both}\n"
            "- {name: b, kind: command, persona: staff}\n",
            "entry 2, check 'b': command: command checks need command",
        ),
        "timeout.yml": (
            "- {name: a, kind: sign_in, persona: both, timeout: 601}\n",
            "entry 1, check 'a': timeout: 601 is out of range (1-600)",
        ),
        "broken.yml": ("- {name: a, kind: [\n", "is not valid JSON or YAML"),
        "broken.json": ('[{"name": "a",', "is not valid JSON or YAML"),
        "mapping.yml": ("name: a\nkind: sign_in\n", "a non-empty list of checks"),
    }  # fmt: skip
    for name, (text, message) in bad_files.items():
        path = _file(tmp_path, name, text)
        result = orchestrator(
            "--as", "btc.lincoln", "testing", "plan", "import", LAB, str(path), expect=2
        )  # fmt: skip
        assert message in result.stderr, (name, result.stderr)
        assert _plan(orchestrator, LAB) == start
    absent = orchestrator(
        "--as", "btc.lincoln", "testing", "plan", "import", LAB, str(tmp_path / "none.yml"),
        expect=2,
    )  # fmt: skip
    assert "cannot read" in absent.stderr

    done = orchestrator("--as", "btc.lincoln", "testing", "plan", "import", LAB, str(good))
    assert "2 checks imported into 101/lab@1.1; 8 checks in its plan" in done.stdout
    data = _plan(orchestrator, LAB)
    assert [c["name"] for c in data["checks"]][-3:] == [
        "lab-printer",
        "shared-drive",
        "student-no-cmd",
    ]
    assert data["checks"][-1]["params"] == {"path": "C:\\Windows\\System32\\cmd.exe"}
    assert data["checks"][-1]["timeout_s"] == 15
    twice = orchestrator(
        "--as", "btc.lincoln", "testing", "plan", "import", LAB, str(good), expect=2
    )  # fmt: skip
    assert "entry 1, check 'shared-drive': name: 101/lab@1.1 has a check named" in twice.stderr
