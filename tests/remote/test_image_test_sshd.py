"""Image test runs end to end on real sshd test hosts (Linux stand-ins for Macs).

The whole path of ``orchestrator image test``: the service's gates, the image
put on the test client by the real runner and the project's ``apply_image``
playbook, then each persona signing in over SSH with its own password (real
local accounts on the host) and running the plan's checks, the evidence
written, and the chain's test step signed off (or refused) on it.

Two hosts for the module: ``mac-01`` stands in a test bench of Lincoln
Elementary (101), ``mac-02`` one of Kennedy High (301), a SecTec's building.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel, col, select

from orchestrator.db.models import AuditEntry, Client, ImageTest, TestRun
from orchestrator.db.session import transaction
from orchestrator.domain.states import Kind, State, Step
from orchestrator.errors import Conflict, Refused
from orchestrator.remote import ansible
from orchestrator.services import audit, catalog, chain, image_tests, inventory, runs, testing
from orchestrator.services import test_plans as plans
from orchestrator.services.test_plans import CheckSpec
from tests.factories import District
from tests.support.sshd import ADMIN_TOOL, CLASSROOM_APP, SSHHost, add_personas, start_hosts

CUSTOM = Kind.CUSTOM_IMAGE


@pytest.fixture(scope="module")
def benches() -> Iterator[list[SSHHost]]:
    """Two hosts with a student and a staff account each; the plays change them."""
    with start_hosts(2) as hosts:
        for h in hosts:
            add_personas(h)
        yield hosts


@pytest.fixture(scope="module")
def printer() -> Iterator[int]:
    """A port that answers from the test clients, as a building's printer would
    (each connection accepted and closed, so the backlog never fills)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def answer() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _import(
    district: District, name: str, building: str, host: SSHHost, *, port: int | None = None
) -> None:
    """``name`` imported by IT into ``building`` (as from a CSV), pointed at ``host``'s
    sshd (or at ``port``), its host key pinned, and marked a test client by IT."""
    n = sum(name.encode()) % 256
    with tempfile.TemporaryDirectory() as folder:
        assets = Path(folder) / "bench.csv"
        assets.write_text(
            "Hostname,Building,Room,Platform,Model,Serial,MAC,IP\n"
            f'{name},{building},test-bench,mac,"MacBookAir10,1",BENCH{n:04d},'
            f"02:00:00:00:7e:{n:02x},127.0.0.1\n"
        )
        inventory.import_clients(district.ctx, district["it.ana"], assets)
    with transaction(district.ctx.engine) as s:
        c = s.exec(select(Client).where(Client.hostname == name)).one()
        c.port, c.login_user, c.host_key = port or host.port, host.username, host.host_key
        c.host_vars = {
            "orchestrator_root": str(host.root),
            "ansible_python_interpreter": "/usr/bin/python3",
            "orchestrator_become": "false",
        }
        s.add(c)
    _, changed = testing.mark_test_client(district.ctx, district["it.ana"], name)
    assert changed


def _accounts(district: District, building: str, host: SSHHost, **passwords: str) -> None:
    """IT sets the building's test accounts to the host's personas (``passwords``
    overriding a persona's real one)."""
    for persona, account in host.personas.items():
        testing.set_test_account(
            district.ctx,
            district["it.ana"],
            building=building,
            persona=persona,
            username=account.username,
            password=passwords.get(persona, account.password),
        )


@dataclass
class Lab:
    district: District
    elementary: SSHHost
    """mac-01, Lincoln Elementary's test bench."""
    high: SSHHost
    """mac-02, Kennedy High's test bench."""
    printer: int

    def image(
        self,
        building: str = "101",
        name: str = "lab",
        *,
        extra: list[CheckSpec] | None = None,
        everyday: bool = True,
    ) -> str:
        """A customized image of ``building`` in testing, its plan written by EdTech:
        the everyday checks on the host's real paths (unless ``everyday`` is False),
        then ``extra``."""
        level = "elementary" if building == "101" else "high"
        host = self.elementary if building == "101" else self.high
        ref = self.district.custom(building, name, base=f"mac-{level}@2026.1", to=State.TESTING)
        app, tool = str(host.root / CLASSROOM_APP), str(host.root / ADMIN_TOOL)
        checks = (
            [
                CheckSpec("signs-in", "sign_in", "both"),
                CheckSpec("home", "home_folder", "both"),
                CheckSpec("scratch", "app_present", "both", path=app, command=f"'{app}'"),
                CheckSpec("no-admin-tool", "app_absent", "student", path=tool),
                # The hosts have no sudo, so the admin command is the staff-only tool.
                CheckSpec("not-admin", "not_admin", "student", command=f"'{tool}'"),
                CheckSpec("admin-tool-for-staff", "app_present", "staff", path=tool),
                CheckSpec("printer", "reachable", "both", host="127.0.0.1", port=self.printer),
            ]
            if everyday
            else []
        )
        for spec in checks + (extra or []):
            plans.add_check(self.district.ctx, self.district["edtech.grace"], ref, spec)
        return ref

    def run(
        self, ref: str, tester: str = "edtech.grace", *, client: str = "mac-01", **kw: Any
    ) -> image_tests.ImageTestView:
        """The real image test: the real runner (logging in with the orchestrator's
        key, one for every host), the real persona checker."""
        return image_tests.run_image_test(
            self.district.ctx,
            self.district[tester],
            ref,
            client=client,
            credentials=runs.Credentials(ssh_key=self.elementary.key_file.read_text()),
            **kw,
        )


@pytest.fixture
def lab(district: District, benches: list[SSHHost], printer: int) -> Lab:
    elementary, high = benches
    district.base("mac", "elementary", "2026.1")  # macOS 15.3, which the hosts run
    district.base("mac", "high", "2026.1")
    _import(district, "mac-01", "101", elementary)
    _import(district, "mac-02", "301", high)
    _accounts(district, "101", elementary)
    _accounts(district, "301", high)
    return Lab(district, elementary, high, printer)


def _state(lab: Lab, ref: str) -> str:
    return catalog.show(lab.district.ctx, lab.district["it.ana"], CUSTOM, ref).state


def _rows(lab: Lab, ref: str) -> tuple[list[ImageTest], list[TestRun]]:
    with transaction(lab.district.ctx.engine) as s:
        image = plans.resolve_image(s, lab.district["it.ana"], ref)
        tests = list(s.exec(select(ImageTest).where(ImageTest.releasable_id == image.id)))
        persona_runs = list(
            s.exec(
                select(TestRun).where(TestRun.releasable_id == image.id).order_by(col(TestRun.id))
            )
        )
        return tests, persona_runs


def _actions(lab: Lab, prefix: str) -> list[AuditEntry]:
    return [
        e
        for e in audit.entries(lab.district.ctx, lab.district["it.ana"])
        if e.action.startswith(prefix)
    ]


def _checks(view: image_tests.ImageTestView, persona: str) -> dict[str, image_tests.CheckRow]:
    found = next(p for p in view.personas if p.persona.value == persona)
    return {c.name: c for c in found.checks}


# ---------------------------------------------------------------------------


def test_a_passing_image_test_puts_the_image_on_the_client_and_edtech_signs_off(
    lab: Lab,
) -> None:
    ref = lab.image()
    seen: list[image_tests.Progress] = []

    view = lab.run(ref, on_progress=seen.append)

    assert view.status == "passed", (view.reason, view.personas)
    # apply_image really ran on the host: its marker names the image.
    marker = lab.elementary.root / "var/orchestrator/image-marker"
    assert marker.read_text().strip() == ref
    assert view.delivery_run is not None and view.current
    run = runs.show(lab.district.ctx, lab.district["edtech.grace"], view.delivery_run)
    assert run.playbook == "apply_image" and run.status == "successful"
    tests, persona_runs = _rows(lab, ref)
    assert [(t.status, t.client) for t in tests] == [("passed", "mac-01")]
    image = catalog.show(lab.district.ctx, lab.district["it.ana"], CUSTOM, ref)
    plan = plans.show_plan(lab.district.ctx, lab.district["it.ana"], ref)
    assert {(r.persona, r.account) for r in persona_runs} == {
        (p.persona, p.username) for p in lab.elementary.personas.values()
    }
    for r in persona_runs:
        assert r.passed and r.signed_in
        assert (r.digest, r.plan_digest, r.client) == (image.digest, plan.digest, "mac-01")
        assert r.image_test_id == view.id
    student, staff = _checks(view, "student"), _checks(view, "staff")
    assert set(student) == {"signs-in", "home", "scratch", "no-admin-tool", "not-admin", "printer"}
    assert set(staff) == {"signs-in", "home", "scratch", "admin-tool-for-staff", "printer"}
    assert lab.elementary.personas["student"].username in student["signs-in"].output
    assert "scratch started" in student["scratch"].output
    assert seen[0].stage == "deliver" and seen[-1].passed is True
    assert [e.action for e in _actions(lab, "custom_image.test_run")] == [
        "custom_image.test_run.start",
        "custom_image.test_run.finish",
    ]

    signed = chain.approve(
        lab.district.ctx, lab.district["edtech.grace"], CUSTOM, ref, "tests pass", step=Step.TEST
    )

    assert signed.state == State.APPROVED.value


def test_the_student_really_cannot_run_the_staff_admin_tool_and_only_edtech_may_override(
    lab: Lab,
) -> None:
    # Kennedy High's own image, tested on its own bench by its SecTec (not the author).
    tool = str(lab.high.root / ADMIN_TOOL)
    opens = CheckSpec(
        "admin-tool-opens", "command", "both", command=f"'{tool}'", expect_output="started"
    )
    ref = lab.image("301", extra=[opens])

    view = lab.run(ref, "sectec.lee", client="mac-02")

    assert view.status == "failed"
    assert view.failing == [("student", "admin-tool-opens")]
    denied = _checks(view, "student")["admin-tool-opens"]
    assert denied.exit_code == 126 and "Permission denied" in denied.output, denied
    assert denied.message == "exited 126, expected 0"
    assert "admin tool started" in _checks(view, "staff")["admin-tool-opens"].output
    assert "student: admin-tool-opens failed" in view.reason

    ctx, d = lab.district.ctx, lab.district
    with pytest.raises(Conflict, match="checks failed in its latest test runs") as refused:
        chain.approve(ctx, d["sectec.lee"], CUSTOM, ref, "looks fine", step=Step.TEST)
    assert "student:admin-tool-opens" in str(refused.value)
    override = chain.Override(["admin-tool-opens"], "the tool is hidden by the MDM profile")
    with pytest.raises(Refused, match="only EdTech may override"):
        chain.approve(ctx, d["sectec.lee"], CUSTOM, ref, step=Step.TEST, override=override)
    assert _state(lab, ref) == State.TESTING.value

    signed = chain.approve(ctx, d["edtech.grace"], CUSTOM, ref, step=Step.TEST, override=override)

    assert signed.state == State.APPROVED.value
    [entry] = _actions(lab, "custom_image.test.override")
    assert entry.actor == "edtech.grace" and entry.reason == override.reason
    assert entry.after == {
        "overridden": [{"persona": "student", "check": "admin-tool-opens", "image_test": view.id}]
    }


def test_a_wrong_persona_password_fails_the_test_at_sign_in_not_a_crash(lab: Lab) -> None:
    ref = lab.image()
    _accounts(lab.district, "101", lab.elementary, student="not-the-students-password")

    view = lab.run(ref)

    student = lab.elementary.personas["student"].username
    assert view.status == "failed"
    assert view.reason.startswith(f"sign-in failed for student test account {student}")
    by = {p.persona.value: p for p in view.personas}
    assert by["student"].signed_in is False and not by["student"].passed
    assert all(
        c.message.endswith("sign-in failed for student test account " + student)
        for c in by["student"].checks
    )
    assert by["staff"].signed_in and by["staff"].passed
    assert "not-the-students-password" not in repr(view)


def test_an_unreachable_test_client_fails_the_test_saying_so_with_no_persona_results(
    lab: Lab,
) -> None:
    _import(lab.district, "mac-03", "101", lab.elementary, port=_closed_port())
    ref = lab.image()

    view = lab.run(ref, client="mac-03")

    assert view.status == "failed"
    assert view.reason.startswith("test client mac-03 could not be reached"), view.reason
    assert view.personas == []
    tests, persona_runs = _rows(lab, ref)
    assert [t.status for t in tests] == ["failed"] and persona_runs == []
    [finish] = _actions(lab, "custom_image.test_run.finish")
    assert finish.after is not None and finish.after["status"] == "failed"


def test_a_hanging_check_fails_at_its_timeout_and_the_next_check_still_runs(lab: Lab) -> None:
    ref = lab.image(
        everyday=False,
        extra=[
            CheckSpec("hangs", "command", "staff", command="sleep 30", timeout=2),
            CheckSpec("after-the-hang", "home_folder", "both"),
        ],
    )

    view = lab.run(ref)

    staff = _checks(view, "staff")
    assert (staff["hangs"].passed, staff["hangs"].exit_code) == (False, None)
    assert staff["hangs"].message == "no answer within 2s: stopped"
    assert staff["after-the-hang"].passed
    assert view.status == "failed" and view.failing == [("staff", "hangs")]
    assert all(c.passed for c in _checks(view, "student").values())


def test_an_image_changed_after_its_test_cannot_be_signed_off_on_the_old_evidence(
    lab: Lab,
) -> None:
    d = lab.district
    ref = lab.image()
    assert lab.run(ref).status == "passed"
    revised = catalog.revise(
        d.ctx,
        d["btc.lincoln"],
        CUSTOM,
        ref,
        catalog.Revision(settings={"wallpaper": "tigers"}, reason="new mascot"),
    )
    assert revised.chain_restarted and revised.view.state == State.DRAFT.value
    chain.submit(d.ctx, d["btc.lincoln"], CUSTOM, ref)
    chain.approve(d.ctx, d["edtech.marco"], CUSTOM, ref, "ok for instruction", step=Step.REVIEW)
    assert _state(lab, ref) == State.TESTING.value

    with pytest.raises(Conflict, match="the evidence no longer matches the digest"):
        chain.approve(d.ctx, d["edtech.grace"], CUSTOM, ref, "tests pass", step=Step.TEST)
    [old] = image_tests.list_for(d.ctx, d["edtech.grace"], ref)
    assert old.status == "passed" and not old.current


@pytest.mark.parametrize(
    ("who", "building", "client"),
    [("btc.lincoln", "101", "mac-01"), ("sectec.kim", "301", "mac-02")],
    ids=["btc", "author"],
)
def test_a_btc_or_the_images_author_may_neither_run_its_test_nor_sign_it_off(
    lab: Lab, who: str, building: str, client: str
) -> None:
    # btc.lincoln authored Lincoln's image (and is a BTC); sectec.kim authored
    # Kennedy High's, in a building it could otherwise test for.
    ref = lab.image(building)
    marker = lab.elementary.root / "var/orchestrator/image-marker"
    marker.write_text("101/before@1.0\n")
    before = len(audit.entries(lab.district.ctx, lab.district["it.ana"]))

    with pytest.raises(Refused):
        lab.run(ref, who, client=client)
    with pytest.raises(Refused):
        chain.approve(
            lab.district.ctx, lab.district[who], CUSTOM, ref, "tests pass", step=Step.TEST
        )

    assert _rows(lab, ref) == ([], [])
    assert len(audit.entries(lab.district.ctx, lab.district["it.ana"])) == before
    assert _state(lab, ref) == State.TESTING.value
    assert marker.read_text() == "101/before@1.0\n"


@pytest.fixture
def kept_workdirs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder the runner's working folders (inventory, artifacts, env) are made
    in and kept after each run, instead of removed; removed after the test. Short,
    since SSH's control socket paths inside a run's folder must stay under 108 bytes."""
    into = Path(tempfile.mkdtemp(prefix="orch-kept-", dir="/tmp"))

    def mkdtemp(prefix: str | None = None, **_kw: Any) -> str:
        return tempfile.mkdtemp(prefix=prefix, dir=into)

    def rmtree(path: str | Path, ignore_errors: bool = False) -> None:
        if not Path(path).is_relative_to(into):
            shutil.rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(
        ansible, "tempfile", SimpleNamespace(mkdtemp=mkdtemp, gettempdir=tempfile.gettempdir)
    )
    monkeypatch.setattr(
        ansible,
        "shutil",
        SimpleNamespace(copytree=shutil.copytree, copy=shutil.copy, rmtree=rmtree),
    )
    yield into
    shutil.rmtree(into, ignore_errors=True)


def _dump(lab: Lab) -> str:
    """Every row of every table, as text."""
    lines = []
    with lab.district.ctx.engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            for row in conn.execute(sa.select(table)):
                lines.append(f"{table.name}: {tuple(row)!r}")
    return "\n".join(lines)


def test_a_persona_password_reaches_the_host_and_nothing_else(
    lab: Lab, kept_workdirs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    student = lab.elementary.personas["student"]
    canary = f"Canary-{os.urandom(8).hex()}-pw"
    caplog.set_level(logging.DEBUG)
    subprocess.run(["chpasswd"], input=f"{student.username}:{canary}\n", text=True, check=True)
    try:
        _accounts(lab.district, "101", lab.elementary, student=canary)
        ref = lab.image()

        view = lab.run(ref)
    finally:
        subprocess.run(
            ["chpasswd"], input=f"{student.username}:{student.password}\n", text=True, check=True
        )

    # It reached the host: the student signed in with it, as sshd logged.
    assert view.status == "passed", view.reason
    assert _checks(view, "student")["signs-in"].passed
    assert f"Accepted password for {student.username}" in lab.elementary.log.read_text()
    # And nowhere else: the runner's files, the logs, the database, the audit log.
    files = [p for p in kept_workdirs.rglob("*") if p.is_file()]
    assert any(p.parent.name == "artifacts" or "artifacts" in p.parts for p in files), files
    assert any(p.name == "hosts.yml" for p in files)
    for path in files:
        assert canary.encode() not in path.read_bytes(), path
    assert caplog.records, "nothing was logged at DEBUG"
    assert canary not in caplog.text
    assert all(canary not in repr(r.args) for r in caplog.records)
    assert canary not in _dump(lab)
    entries = audit.entries(lab.district.ctx, lab.district["it.ana"])
    assert entries and all(
        canary not in repr((e.action, e.before, e.after, e.reason)) for e in entries
    )
    assert canary not in repr(view)


def test_a_second_image_test_on_a_busy_test_client_is_refused(lab: Lab) -> None:
    ref = lab.image()
    other = lab.image(name="library")
    signing_in, release = threading.Event(), threading.Event()
    first: list[image_tests.ImageTestView] = []
    errors: list[BaseException] = []

    def hold(p: image_tests.Progress) -> None:
        if p.stage == "sign_in" and not signing_in.is_set():
            signing_in.set()
            release.wait(120)

    def run_first() -> None:
        try:
            first.append(lab.run(ref, on_progress=hold))
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    worker = threading.Thread(target=run_first)
    worker.start()
    try:
        assert signing_in.wait(180), errors
        with pytest.raises(Conflict, match="test client mac-01 is busy: image test #"):
            lab.run(other, "edtech.marco")
    finally:
        release.set()
        worker.join(180)

    assert not errors and first[0].status == "passed", (errors, first)
    assert _rows(lab, other) == ([], [])
