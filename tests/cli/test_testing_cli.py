"""``orchestrator testing clients | accounts`` and ``credentials rotate-key`` on the sample
district, with a planted canary password that must never come back out."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from typer.testing import CliRunner, Result

from orchestrator.cli import testing_cmds
from orchestrator.cli.main import app
from orchestrator.remote.ansible import FakePlaybookRunner
from orchestrator.services import directory, runs, testing, vault
from orchestrator.services.context import Context
from orchestrator.services.sample import TEST_CLIENTS
from tests.support.cli import Invoke

BENCH = sorted(TEST_CLIENTS.values())
"""The sample district's test clients: IT's bench, one per platform and level."""
CANARY = "Canary-Stu-5f3b9e!"
WINRM_CANARY = "Canary-WinRM-8c21d4!"


def _ctx(engine: sa.Engine, tmp_path: Path) -> Context:
    """The services on the CLI's database and data folder (tests/support/cli.py)."""
    return Context(engine=engine, secret_key_file=tmp_path / "data" / "secret.key")


def _file(tmp_path: Path, name: str, text: str) -> Path:
    folder = tmp_path / "input"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def _set(orchestrator: Invoke, who: str, *args: str, expect: int = 0) -> Result:
    return orchestrator("--as", who, "testing", "accounts", "set", *args, expect=expect)


def _pool(orchestrator: Invoke, who: str = "it.rivera") -> list[str]:
    """The hostnames of the test clients ``who`` sees."""
    listed = orchestrator("--as", who, "testing", "clients", "list", "--json").stdout
    return sorted(c["hostname"] for c in json.loads(listed))


def _accounts(engine: sa.Engine) -> list[Any]:
    """Every test account row and every audit entry about one, as stored."""
    with engine.connect() as conn:
        rows = list(conn.execute(sa.text("SELECT * FROM test_account ORDER BY id")).all())
        rows += conn.execute(
            sa.text("SELECT * FROM audit_entry WHERE object_kind = 'test_account' ORDER BY seq")
        ).all()
    return rows


def _dump(engine: sa.Engine) -> str:
    """Every row of every table, as text."""
    out = []
    with engine.connect() as conn:
        for table in sa.inspect(engine).get_table_names():
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                out.append(f"{table}: {row!r}")
    return "\n".join(out)


def test_it_builds_the_test_pool_and_everyone_sees_their_share(orchestrator: Invoke) -> None:
    # The sample comes with IT's bench; the pool grows by the clients marked here.
    assert _pool(orchestrator) == BENCH
    marked = orchestrator("--as", "it.rivera", "testing", "clients", "mark", "101-cart-1-04")
    assert "101-cart-1-04 marked as a test client (mac, elementary, building 101)" in marked.stdout
    orchestrator("--as", "it.rivera", "testing", "clients", "mark", "101-lab-a-05")
    orchestrator("--as", "it.rivera", "testing", "clients", "mark", "301-stem-lab-01")
    again = orchestrator("--as", "it.chen", "testing", "clients", "mark", "101-lab-a-05")
    assert "101-lab-a-05 is already a test client" in again.stdout

    pool = json.loads(
        orchestrator("--as", "it.rivera", "testing", "clients", "list", "--json").stdout
    )
    assert [(c["hostname"], c["platform"], c["level"]) for c in pool] == [
        ("101-cart-1-04", "mac", "elementary"),
        ("102-library-02", "mac", "elementary"),
        ("302-journalism-02", "mac", "high"),
        ("205-cart-2-04", "mac", "middle"),
        ("101-lab-a-05", "pc", "elementary"),
        ("101-library-01", "pc", "elementary"),
        ("301-stem-lab-01", "pc", "high"),
        ("301-stem-lab-05", "pc", "high"),
        ("205-lab-114-03", "pc", "middle"),
    ]
    macs = orchestrator("--as", "edtech.okafor", "testing", "clients", "list", "--platform", "mac")
    assert "101-cart-1-04" in macs.stdout and "102-library-02" in macs.stdout
    assert "101-lab-a-05" not in macs.stdout and "101-library-01" not in macs.stdout
    high = orchestrator("--as", "it.rivera", "testing", "clients", "list", "--level", "high")
    assert "301-stem-lab-01" in high.stdout and "302-journalism-02" in high.stdout
    assert "101-" not in high.stdout and "205-" not in high.stdout
    assert _pool(orchestrator, "principal.lincoln") == [
        "101-cart-1-04",
        "101-lab-a-05",
        "101-library-01",
    ]
    # Washington's tech sees only the bench's Mac in building 102, and none once IT
    # takes it off the bench.
    assert _pool(orchestrator, "btc.garcia") == ["102-library-02"]
    orchestrator("--as", "it.rivera", "testing", "clients", "mark", "102-library-02", "--unmark")
    none = orchestrator("--as", "btc.garcia", "testing", "clients", "list")
    assert "no test clients" in none.stdout

    out = orchestrator(
        "--as", "it.rivera", "testing", "clients", "mark", "101-lab-a-05", "--unmark"
    )
    assert "101-lab-a-05 is no longer a test client" in out.stdout
    clients = json.loads(orchestrator("--as", "it.rivera", "clients", "list", "--json").stdout)
    flagged = sorted(c["hostname"] for c in clients if c["test_client"])
    assert flagged == sorted({*BENCH, "101-cart-1-04", "301-stem-lab-01"} - {"102-library-02"})


def test_marking_is_refused_to_all_but_it_and_unknown_names_exit_with_the_reason(
    orchestrator: Invoke,
) -> None:
    refused = orchestrator(
        "--as", "btc.lincoln", "testing", "clients", "mark", "101-lab-a-01", expect=3
    )  # fmt: skip
    assert "refused: BTC cannot mark or unmark test clients" in refused.stderr
    orchestrator("--as", "sectec.kim", "testing", "clients", "mark", "301-stem-lab-01", expect=3)
    orchestrator("--as", "edtech.okafor", "testing", "clients", "mark", "101-lab-a-01", expect=3)
    missing = orchestrator("--as", "it.rivera", "testing", "clients", "mark", "nope-01", expect=4)
    assert "no client 'nope-01'" in missing.stderr
    bad = orchestrator(
        "--as", "it.rivera", "testing", "clients", "list", "--platform", "linux", expect=2
    )  # fmt: skip
    assert "platform: no platform 'linux' (platforms: pc, mac)" in bad.stderr
    # Nothing refused was marked: the pool is still the sample's bench.
    assert _pool(orchestrator) == BENCH


def test_accounts_are_set_listed_without_passwords_and_removed(
    orchestrator: Invoke, tmp_path: Path
) -> None:
    pw = _file(tmp_path, "pw", CANARY + "\n")
    out = _set(
        orchestrator, "it.rivera", "--building", "101", "--persona", "student",
        "--username", "stu.test101", "--password-file", str(pw),
    )  # fmt: skip
    assert "student test account of building 101: stu.test101 (password set" in out.stdout
    _set(
        orchestrator, "sectec.kim", "--building", "301", "--persona", "staff",
        "--username", "staff.test301", "--password-file", str(pw),
    )  # fmt: skip

    table = orchestrator("--as", "edtech.okafor", "testing", "accounts", "list").stdout
    assert "stu.test101" in table and "staff.test301" in table and "password set" in table
    # Setting replaces the sample's account of that building and persona.
    assert "s.test101" not in table and "t.test301" not in table
    assert "t.test101" in table and "s.test205" in table
    assert CANARY not in table
    own = json.loads(
        orchestrator("--as", "sectec.kim", "testing", "accounts", "list", "--json").stdout
    )
    # Kim's buildings only: the sample's accounts of 301 and 302, with the one he set.
    assert [(a["building"], a["persona"], a["username"]) for a in own] == [
        ("301", "student", "s.test301"),
        ("301", "staff", "staff.test301"),
        ("302", "student", "s.test302"),
        ("302", "staff", "t.test302"),
    ]
    removed = orchestrator(
        "--as", "it.rivera", "testing", "accounts", "remove", "--building", "101",
        "--persona", "student",
    )  # fmt: skip
    assert "student test account of building 101 removed" in removed.stdout
    again = orchestrator(
        "--as", "it.rivera", "testing", "accounts", "remove", "--building", "101",
        "--persona", "student", expect=4,
    )  # fmt: skip
    assert "building 101 has no student test account" in again.stderr
    left = orchestrator("--as", "it.rivera", "testing", "accounts", "list").stdout
    assert "stu.test101" not in left and "t.test101" in left


def test_bad_account_input_exits_with_the_reason_and_stores_nothing(
    orchestrator: Invoke, tmp_path: Path, engine: sa.Engine
) -> None:
    pw = str(_file(tmp_path, "pw", CANARY))
    empty = str(_file(tmp_path, "empty", "\n"))
    unreadable = _file(tmp_path, "unreadable", CANARY)
    unreadable.chmod(0)
    base = ["--building", "101", "--persona", "student", "--username", "stu.test101"]
    listed = orchestrator("--as", "it.rivera", "testing", "accounts", "list").stdout
    stored = _accounts(engine)
    assert "s.test101" in listed and stored  # the sample's accounts, set at load
    cases = [
        ("it.rivera", ["--building", "999", *base[2:], "--password-file", pw], 4,
         "no building '999'"),
        ("it.rivera", [*base[:2], "--persona", "teacher", *base[4:], "--password-file", pw], 2,
         "persona: no persona 'teacher' (personas: student, staff)"),
        ("it.rivera", [*base[:4], "--username", "", "--password-file", pw], 2,
         "username: an empty username"),
        ("it.rivera", [*base, "--password-file", empty], 2, "password: an empty password"),
        ("it.rivera", [*base, "--password-file", str(tmp_path / "absent")], 2,
         "password-file: cannot read"),
        ("btc.lincoln", [*base, "--password-file", pw], 3,
         "refused: BTC cannot set the student and staff test accounts"),
        ("sectec.kim", [*base, "--password-file", pw], 3,
         "refused: SecTec of 301, 302 cannot set the student and staff test accounts in "
         "building 101"),
        ("edtech.okafor", [*base, "--password-file", pw], 3, "refused: EdTech cannot set"),
    ]  # fmt: skip
    binary = _file(tmp_path, "binary", "")
    binary.write_bytes(b"\xff\xfe\x00pw")
    cases += [
        ("it.rivera", [*base, "--password-file", str(tmp_path / "input")], 2, "Is a directory"),
        ("it.rivera", [*base, "--password-file", str(binary)], 2, "not a text file"),
    ]
    if os.geteuid() != 0:  # root reads any file
        cases.append(
            ("it.rivera", [*base, "--password-file", str(unreadable)], 2, "Permission denied")
        )
    for who, args, code, words in cases:
        result = _set(orchestrator, who, *args, expect=code)
        assert words in result.stderr, (args, result.stderr)
        assert CANARY not in result.stdout + result.stderr
    # Nothing stored, nothing audited: the sample's accounts stand as they were.
    assert orchestrator("--as", "it.rivera", "testing", "accounts", "list").stdout == listed
    assert "stu.test101" not in listed
    assert _accounts(engine) == stored
    refused = orchestrator("--as", "principal.lincoln", "testing", "accounts", "list", expect=3)
    assert "refused: Principal cannot see the student and staff test accounts" in refused.stderr


def test_the_password_is_asked_for_without_echo_at_a_terminal_or_read_from_stdin(
    orchestrator: Invoke, tmp_path: Path, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    args = [
        "--as", "it.rivera", "testing", "accounts", "set", "--building", "101",
        "--persona", "staff", "--username", "staff.test101",
    ]  # fmt: skip
    monkeypatch.setattr(testing_cmds, "_is_terminal", lambda: True)
    asked = runner.invoke(app, args, input=f"{CANARY}\n{CANARY}\n")
    assert asked.exit_code == 0, asked.output
    assert CANARY not in asked.output  # hidden input: not echoed
    ctx = _ctx(engine, tmp_path)
    assert testing.persona_login(ctx, "101", "staff").password == CANARY

    monkeypatch.setattr(testing_cmds, "_is_terminal", lambda: False)
    piped = runner.invoke(app, args, input=WINRM_CANARY + "\n")
    assert piped.exit_code == 0, piped.output
    assert testing.persona_login(ctx, "101", "staff").password == WINRM_CANARY
    nothing = runner.invoke(app, args, input="")
    assert nothing.exit_code == 2 and "password: an empty password" in nothing.stderr


def test_rotate_key_is_it_only_and_the_old_key_reads_nothing_afterwards(
    orchestrator: Invoke, tmp_path: Path, engine: sa.Engine
) -> None:
    pw = _file(tmp_path, "pw", CANARY)
    _set(
        orchestrator, "it.rivera", "--building", "101", "--persona", "student",
        "--username", "stu.test101", "--password-file", str(pw),
    )  # fmt: skip
    key_file = tmp_path / "data" / "secret.key"
    old_key = key_file.read_bytes()
    refused = orchestrator("--as", "sectec.kim", "credentials", "rotate-key", expect=3)
    assert "refused" in refused.stderr and key_file.read_bytes() == old_key

    out = orchestrator("--as", "it.rivera", "credentials", "rotate-key")
    # The sample's twelve accounts (two in each instructional building), one replaced here.
    assert "key rotated: 0 credentials and 12 test accounts re-encrypted" in out.stdout
    with engine.connect() as conn:
        tokens = {
            username: bytes(token)
            for username, token in conn.execute(
                sa.text("SELECT username, ciphertext FROM test_account")
            )
        }
    assert len(tokens) == 12 and "stu.test101" in tokens
    new = Fernet(key_file.read_bytes().strip())
    for token in tokens.values():
        with pytest.raises(InvalidToken):
            Fernet(old_key.strip()).decrypt(token)
        assert new.decrypt(token)
    assert new.decrypt(tokens["stu.test101"]).decode() == CANARY


def test_a_canary_password_never_comes_back_out(
    orchestrator: Invoke, tmp_path: Path, engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pw = _file(tmp_path, "pw", CANARY + "\n")
    winrm = _file(tmp_path, "winrm", WINRM_CANARY)
    outputs: list[Result] = [
        orchestrator("--as", "it.rivera", "testing", "clients", "mark", "101-lab-a-05"),
        _set(
            orchestrator, "it.rivera", "--building", "101", "--persona", "student",
            "--username", "stu.test101", "--password-file", str(pw),
        ),
        orchestrator(
            "--as", "it.rivera", "credentials", "set", "winrm-password", "--file", str(winrm)
        ),
        orchestrator("--as", "it.rivera", "testing", "accounts", "list"),
        orchestrator("--as", "it.rivera", "testing", "accounts", "list", "--json"),
        orchestrator("--as", "it.rivera", "credentials", "list"),
        orchestrator("--as", "it.rivera", "credentials", "rotate-key"),
        orchestrator("--as", "edtech.okafor", "testing", "accounts", "list"),
    ]  # fmt: skip
    # A run with the stored (rotated) login, as runs take it.
    ctx = _ctx(engine, tmp_path)
    creds = vault.client_credentials(ctx, ssh_user="orchestrator", winrm_user="orch")
    assert creds.winrm_password == WINRM_CANARY
    runner = FakePlaybookRunner()
    runs.run_playbook(
        ctx, directory.actor(ctx, "it.rivera"), "ping", building="101", room="lab-a",
        credentials=creds, runner=runner,
    )  # fmt: skip
    assert runner.requests
    outputs += [
        orchestrator("--as", "it.rivera", "runs", "list"),
        orchestrator("--as", "it.rivera", "audit", "--limit", "1000"),
        orchestrator("--as", "it.rivera", "audit", "--limit", "1000", "--json"),
    ]
    # It was really stored: the test run's code path gets it back.
    assert testing.persona_login(ctx, "101", "student").password == CANARY
    assert CANARY in pw.read_text()

    printed = "\n".join(r.stdout + r.stderr for r in outputs)
    with engine.connect() as conn:
        audit_rows = repr(conn.execute(sa.text("SELECT * FROM audit_entry")).all())
    data = tmp_path / "data"
    files = [p for p in data.rglob("*") if p.is_file() and p.name != "secret.key"]
    if engine.dialect.name == "sqlite":
        assert engine.url.database is not None
        files += [p for p in Path(engine.url.database).parent.glob("*.db*")]
    dump = _dump(engine)
    assert "stu.test101" in dump and "test_account" in dump  # the dump does hold the rows
    for canary in (CANARY, WINRM_CANARY):
        assert canary not in caplog.text
        assert canary not in printed
        assert canary not in audit_rows
        assert canary not in dump
        for f in files:
            assert canary.encode() not in f.read_bytes(), f


def test_no_command_reveals_a_persona_password() -> None:
    cli = Path(testing_cmds.__file__).parent
    callers = [p.name for p in cli.glob("*.py") if "persona_login" in p.read_text()]
    assert callers == []
    assert "persona_login" in Path(testing.__file__).read_text()
