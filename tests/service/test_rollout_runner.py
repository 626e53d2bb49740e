"""Carrying a deployment out, tick by tick, and after a crash; on both databases.

The test district's clock is Monday 2026-03-02, 10:00 in New York (15:00 UTC);
building 101's weeknight window opens at 18:00 (23:00 UTC) and closes at 06:00.
The runner is the fake one, which records every request it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from orchestrator.clock import FixedClock
from orchestrator.db.models import AuditEntry, DeploymentClient, HostResult, Releasable, Run
from orchestrator.db.session import transaction
from orchestrator.domain import rollout
from orchestrator.domain.states import State
from orchestrator.remote.ansible import FakePlaybookRunner, PlaybookRequest, RunOutcome
from orchestrator.services import audit, deployments, inventory, rollout_runner, runs, windows
from orchestrator.services.deployments import DeploymentSpec, DeploymentView
from orchestrator.services.rollout_runner import TickResult
from tests.factories import District
from tests.support.fixtures import release_scratch

MACS = ("cart-01", "cart-02", "cart-03", "cart-04")
ASSETS = "Hostname,Building,Room,Platform,Model,Serial,MAC,IP\n" + "".join(
    f'{h},101,cart,mac,"MacBookAir10,1",SN10{i},02:00:00:00:01:{i:02x},127.0.0.{20 + i}\n'
    for i, h in enumerate(MACS, 1)
)
TONIGHT = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)  # 18:00 EST


@pytest.fixture
def lincoln(district: District, tmp_path: Path) -> District:
    """Building 101 with a cart of four Macs, weeknight windows, and Scratch released."""
    path = tmp_path / "assets.csv"
    path.write_text(ASSETS)
    inventory.import_clients(district.ctx, district["it.ana"], path)
    windows.add_window(
        district.ctx, district["btc.lincoln"], building="101", days="mon-thu", start="18:00",
        end="06:00",
    )  # fmt: skip
    release_scratch(district, "3.29", tmp_path)
    return district


def _create(d: District, **kw: Any) -> DeploymentView:
    spec = DeploymentSpec(**({"package": "scratch@3.29", "buildings": ("101",)} | kw))
    return deployments.create(d.ctx, d["btc.lincoln"], spec)


def _clock(d: District) -> FixedClock:
    clock = d.ctx.clock
    assert isinstance(clock, FixedClock)
    return clock


def _at_window(d: District, **after: float) -> None:
    _clock(d).now = TONIGHT + timedelta(**after)


def _tick(d: District, dep_id: int, runner: Any) -> TickResult:
    return rollout_runner.tick(d.ctx, dep_id, credentials=runs.Credentials(), runner=runner)


def _given(runner: FakePlaybookRunner) -> list[list[str]]:
    """The hosts of each run, in order."""
    return [[h.name for h in r.hosts] for r in runner.requests]


def _clients(d: District, dep_id: int) -> dict[str, deployments.DeploymentClientView]:
    return {c.hostname: c for c in deployments.show(d.ctx, d["it.ana"], dep_id).clients}


def _state(d: District, dep_id: int) -> DeploymentView:
    return deployments.show(d.ctx, d["it.ana"], dep_id)


def _deployment_audit(d: District) -> Sequence[AuditEntry]:
    return audit.entries(d.ctx, d["it.ana"], object_kind="deployment")


def test_before_the_window_nothing_runs_and_next_at_is_tonights_opening(
    lincoln: District,
) -> None:
    dep = _create(lincoln)
    runner = FakePlaybookRunner()

    result = _tick(lincoln, dep.id, runner)

    assert result.state == "scheduled" and result.started == () and result.events == ()
    assert result.next_at == TONIGHT
    assert runner.requests == []
    assert _state(lincoln, dep.id).counts == {"pending": 4}


def test_at_the_window_a_batch_starts_within_the_per_building_limit(lincoln: District) -> None:
    dep = _create(lincoln, per_building_limit=3)
    runner = FakePlaybookRunner()
    _at_window(lincoln)

    first = _tick(lincoln, dep.id, runner)

    assert first.events == ("window_opened",)
    assert first.state == "running" and first.started == ("cart-01", "cart-02", "cart-03")
    assert first.next_at == TONIGHT  # cart-04 waits for a slot: tick again at once
    shown = _clients(lincoln, dep.id)
    assert {h: c.state for h, c in shown.items()} == {
        "cart-01": "succeeded",
        "cart-02": "succeeded",
        "cart-03": "succeeded",
        "cart-04": "pending",
    }
    assert shown["cart-01"].attempts == 1
    (run_id,) = first.runs
    run = runs.show(lincoln.ctx, lincoln["it.ana"], run_id)
    assert run.actor == "system" and run.delivered == "scratch@3.29"
    assert runner.requests[0].extravars["package_receipt"] == "edu.mit.scratch"


def test_when_the_window_closes_it_goes_back_to_scheduled_until_the_next_evening(
    lincoln: District,
) -> None:
    dep = _create(lincoln, per_building_limit=1)
    runner = FakePlaybookRunner()
    _at_window(lincoln)
    assert _tick(lincoln, dep.id, runner).started == ("cart-01",)

    _at_window(lincoln, hours=12)  # Tuesday 07:00 in New York: school hours
    closed = _tick(lincoln, dep.id, runner)

    assert closed.state == "scheduled" and closed.events == ("window_closed",)
    assert closed.started == () and closed.next_at == TONIGHT + timedelta(days=1)
    assert len(runner.requests) == 1


def test_nothing_starts_before_its_start_not_before_even_in_a_window(lincoln: District) -> None:
    start = TONIGHT + timedelta(days=1, minutes=30)
    dep = _create(lincoln, not_before=start)
    runner = FakePlaybookRunner()
    _at_window(lincoln)

    early = _tick(lincoln, dep.id, runner)

    assert early.state == "scheduled" and early.next_at == start and runner.requests == []
    _clock(lincoln).now = start
    assert _tick(lincoln, dep.id, runner).state == "completed"


def test_the_pilot_wave_runs_alone_first_then_the_rest(lincoln: District) -> None:
    dep = _create(lincoln, pilot_names=("cart-03",))
    runner = FakePlaybookRunner()
    _at_window(lincoln)

    pilot = _tick(lincoln, dep.id, runner)
    rest = _tick(lincoln, dep.id, runner)

    assert pilot.started == ("cart-03",)
    assert rest.started == ("cart-01", "cart-02", "cart-04")
    assert _given(runner) == [["cart-03"], ["cart-01", "cart-02", "cart-04"]]
    assert rest.state == "completed" and rest.events == ("all_done",)


def test_a_failing_pilot_pauses_the_deployment_with_the_verdicts_reason(
    lincoln: District,
) -> None:
    dep = _create(lincoln, pilot_names=("cart-01",))
    runner = FakePlaybookRunner({"cart-01": "failed"})
    _at_window(lincoln)

    result = _tick(lincoln, dep.id, runner)
    again = _tick(lincoln, dep.id, runner)

    expected = (
        "1 of 1 client failed in wave 1 (pilot); every pilot client must succeed "
        "before the other waves start"
    )
    assert result.state == "paused" and result.reason == expected
    assert result.events == ("window_opened", "threshold_exceeded")
    assert again.started == () and again.next_at is None
    assert _given(runner) == [["cart-01"]]  # the other waves never started
    failed = _clients(lincoln, dep.id)["cart-01"]
    assert (failed.state, failed.step, failed.reason) == (
        "failed",
        "fake task",
        "failed by the fake runner",
    )
    last = _deployment_audit(lincoln)[-1]
    assert (last.action, last.actor, last.reason) == ("deployment.pause", "system", expected)


def test_failures_over_the_threshold_in_a_wave_pause_it_and_under_it_go_on(
    lincoln: District, tmp_path: Path
) -> None:
    strict = _create(lincoln, failure_threshold_pct=20)
    runner = FakePlaybookRunner({"cart-02": "failed"})
    _at_window(lincoln)

    paused = _tick(lincoln, strict.id, runner)

    assert paused.state == "paused"
    assert paused.reason == "1 of 4 clients failed in wave 1 (building 101), over the 20% threshold"

    deployments.cancel(lincoln.ctx, lincoln["it.ana"], strict.id, reason="try a looser one")
    # The three Macs that took 3.29 now hold it: the looser try is of the next release.
    release_scratch(lincoln, "3.30", tmp_path)
    loose = _create(lincoln, package="scratch@3.30", failure_threshold_pct=30)
    done = _tick(lincoln, loose.id, runner)
    assert done.state == "completed"
    assert _state(lincoln, loose.id).counts == {"succeeded": 3, "failed": 1}


def test_an_unreachable_client_is_retried_after_its_backoff_then_failed_after_max_attempts(
    lincoln: District,
) -> None:
    dep = _create(lincoln, failure_threshold_pct=50)
    runner = FakePlaybookRunner({"cart-02": "unreachable"})
    _at_window(lincoln)

    first = _tick(lincoln, dep.id, runner)
    assert first.state == "running"
    cart = _clients(lincoln, dep.id)["cart-02"]
    assert (cart.state, cart.attempts) == ("unreachable", 1)
    assert first.next_at == TONIGHT + rollout.retry_delay(1)

    _at_window(lincoln, minutes=1)  # the backoff has not run out
    waiting = _tick(lincoln, dep.id, runner)
    assert waiting.started == () and waiting.client_events == ()

    _at_window(lincoln, minutes=2)
    second = _tick(lincoln, dep.id, runner)
    assert second.client_events == (("cart-02", "retry_due"),)
    assert second.started == ("cart-02",)
    assert _clients(lincoln, dep.id)["cart-02"].attempts == 2

    _at_window(lincoln, minutes=2 + 4)  # retry_delay(2)
    third = _tick(lincoln, dep.id, runner)
    assert third.started == ("cart-02",)
    assert _clients(lincoln, dep.id)["cart-02"].attempts == rollout.MAX_ATTEMPTS

    last = _tick(lincoln, dep.id, runner)  # every attempt used: no wait before giving up
    assert last.client_events == (("cart-02", "give_up"),)
    assert last.started == () and last.state == "completed"
    cart = _clients(lincoln, dep.id)["cart-02"]
    assert cart.state == "failed"
    assert cart.reason is not None
    assert cart.reason.startswith("unreachable after 3 attempts; last error: ")
    assert cart.reason.endswith("unreachable by the fake runner")
    assert [hosts.count("cart-02") for hosts in _given(runner)] == [1, 1, 1]
    assert sum(hosts.count("cart-01") for hosts in _given(runner)) == 1


def test_the_sunset_reached_between_ticks_cancels_it_automatically_and_audited(
    lincoln: District,
) -> None:
    dep = _create(lincoln, per_building_limit=1)
    runner = FakePlaybookRunner()
    _at_window(lincoln)
    assert _tick(lincoln, dep.id, runner).started == ("cart-01",)
    with transaction(lincoln.ctx.engine) as s:  # IT sets a sunset for tomorrow
        pkg = s.exec(select(Releasable).where(Releasable.name == "scratch")).one()
        pkg.sunset_date = date(2026, 3, 3)
        s.add(pkg)

    _at_window(lincoln, days=1)  # Tuesday evening, the sunset day
    result = _tick(lincoln, dep.id, runner)

    assert result.state == "cancelled" and result.events == ("sunset_reached",)
    assert "reached its sunset date (2026-03-03)" in result.reason
    assert result.next_at is None and result.started == ()
    assert _state(lincoln, dep.id).counts == {"succeeded": 1, "cancelled": 3}
    assert _given(runner) == [["cart-01"]]
    last = _deployment_audit(lincoln)[-1]
    assert (last.action, last.actor) == ("deployment.cancel", "system")
    assert last.reason == result.reason


def test_a_package_no_longer_released_pauses_it_with_why_before_anything_starts(
    lincoln: District,
) -> None:
    dep = _create(lincoln)
    with transaction(lincoln.ctx.engine) as s:  # IT retired it after the deployment was made
        pkg = s.exec(select(Releasable).where(Releasable.name == "scratch")).one()
        pkg.state = State.RETIRED.value
        s.add(pkg)
    runner = FakePlaybookRunner()
    _at_window(lincoln)

    result = _tick(lincoln, dep.id, runner)

    assert result.state == "paused" and result.events == ("pause",)
    assert "is retired, not released" in result.reason
    assert runner.requests == [] and _state(lincoln, dep.id).counts == {"pending": 4}
    last = _deployment_audit(lincoln)[-1]
    assert (last.action, last.actor) == ("deployment.pause", "system")


def test_a_passed_deadline_fails_the_deployment_with_the_reason(lincoln: District) -> None:
    deadline = TONIGHT + timedelta(hours=4)
    dep = _create(lincoln, per_building_limit=1, deadline=deadline)
    runner = FakePlaybookRunner()
    _at_window(lincoln)
    _tick(lincoln, dep.id, runner)

    _at_window(lincoln, hours=5)
    result = _tick(lincoln, dep.id, runner)

    assert result.state == "failed" and result.events == ("deadline_passed",)
    assert result.reason == "the deadline 2026-03-03 03:00 UTC passed with 3 clients not done"
    assert _state(lincoln, dep.id).counts == {"succeeded": 1, "cancelled": 3}
    assert len(runner.requests) == 1
    last = _deployment_audit(lincoln)[-1]
    assert (last.action, last.actor, last.reason) == ("deployment.fail", "system", result.reason)


def test_it_is_completed_when_every_client_is_terminal_and_then_does_nothing(
    lincoln: District,
) -> None:
    dep = _create(lincoln)
    runner = FakePlaybookRunner()
    _at_window(lincoln)

    done = _tick(lincoln, dep.id, runner)
    after = _tick(lincoln, dep.id, runner)

    assert done.state == "completed" and done.events == ("window_opened", "all_done")
    assert done.reason == "every client is done: 4 succeeded" and done.next_at is None
    assert after.state == "completed" and after.started == () and after.events == ()
    assert len(runner.requests) == 1
    assert _deployment_audit(lincoln)[-1].action == "deployment.complete"


def test_a_succeeded_client_is_never_given_to_the_runner_again(lincoln: District) -> None:
    dep = _create(lincoln)
    runner = FakePlaybookRunner({"cart-02": "failed"})
    _at_window(lincoln)
    assert _tick(lincoln, dep.id, runner).state == "paused"  # 1 of 4 is over 10%
    deployments.retry_failed(lincoln.ctx, lincoln["btc.lincoln"], dep.id, reason="disk cleaned")
    runner.results["cart-02"] = "changed"

    again = _tick(lincoln, dep.id, runner)

    assert again.started == ("cart-02",) and again.state == "completed"
    assert _given(runner) == [list(MACS), ["cart-02"]]


def test_a_tick_racing_a_running_tick_never_starts_the_same_client_twice(
    lincoln: District,
) -> None:
    dep = _create(lincoln, per_building_limit=2)
    inner: list[TickResult] = []

    class TicksWhileRunning(FakePlaybookRunner):
        def run(self, request: PlaybookRequest, *args: Any, **kwargs: Any) -> RunOutcome:
            if not inner:  # the scheduler fires again while this run is going
                inner.append(_tick(lincoln, dep.id, self))
            return super().run(request, *args, **kwargs)

    runner = TicksWhileRunning()
    _at_window(lincoln)

    outer = _tick(lincoln, dep.id, runner)

    # The two slots were taken by the outer tick's cart-01 and cart-02.
    assert outer.started == ("cart-01", "cart-02")
    assert inner[0].started == () and "slot" in inner[0].reason
    assert _given(runner) == [["cart-01", "cart-02"]]


def test_two_ticks_that_picked_the_same_clients_start_them_only_once(
    lincoln: District, monkeypatch: pytest.MonkeyPatch
) -> None:
    dep = _create(lincoln, per_building_limit=2)
    runner = FakePlaybookRunner()
    real = runs.run_playbook
    raced: list[TickResult] = []
    calls: list[int] = []

    def other_tick_first(*args: Any, **kwargs: Any) -> runs.RunView:
        # Both ticks read the same pending rows; the other one stages them first.
        calls.append(1)
        if len(calls) == 1:
            raced.append(_tick(lincoln, dep.id, runner))
        return real(*args, **kwargs)

    monkeypatch.setattr(runs, "run_playbook", other_tick_first)
    _at_window(lincoln)

    loser = _tick(lincoln, dep.id, runner)

    assert raced[0].started == ("cart-01", "cart-02")
    assert loser.started == () and loser.runs == ()
    assert loser.reason == f"cart-01 was started by another tick of deployment {dep.id}"
    assert _given(runner) == [["cart-01", "cart-02"]]
    assert _clients(lincoln, dep.id)["cart-01"].attempts == 1
    with transaction(lincoln.ctx.engine) as s:
        assert len(s.exec(select(Run)).all()) == 1  # the loser wrote no run either


def test_a_runner_that_raises_ends_its_run_and_fails_its_clients_with_the_message(
    lincoln: District,
) -> None:
    dep = _create(lincoln, failure_threshold_pct=100)

    class Broken(FakePlaybookRunner):
        def run(self, request: PlaybookRequest, *args: Any, **kwargs: Any) -> RunOutcome:
            super().run(request, *args, **kwargs)
            raise RuntimeError("ansible-runner lost its private data dir")

    runner = Broken()
    _at_window(lincoln)

    result = _tick(lincoln, dep.id, runner)

    (run_id,) = result.runs
    assert runs.show(lincoln.ctx, lincoln["it.ana"], run_id).status == "failed"
    assert result.state == "completed"
    assert {c.state for c in _clients(lincoln, dep.id).values()} == {"failed"}
    assert _clients(lincoln, dep.id)["cart-01"].reason == (
        f"run {run_id} broke before it reported this client: "
        "ansible-runner lost its private data dir"
    )


class _Killed(BaseException):
    """The process died mid-run: nothing after this point is written."""


def test_reconcile_after_a_crash_fails_the_run_and_puts_the_clients_back_for_the_next_tick(
    lincoln: District,
) -> None:
    dep = _create(lincoln)

    class DiesMidRun(FakePlaybookRunner):
        def run(self, request: PlaybookRequest, *args: Any, **kwargs: Any) -> RunOutcome:
            super().run(request, *args, **kwargs)
            raise _Killed

    _at_window(lincoln)
    with pytest.raises(_Killed):
        _tick(lincoln, dep.id, DiesMidRun())
    with transaction(lincoln.ctx.engine) as s:
        (run,) = s.exec(select(Run)).all()
        assert run.status == "running"
        rows = s.exec(select(DeploymentClient).where(DeploymentClient.wave > 0)).all()
        assert {r.state for r in rows} == {"staging"}
        # The run got as far as recording cart-04's result before the kill.
        cart4 = next(r for r in rows if r.hostname == "cart-04")
        assert run.id is not None
        s.add(HostResult(run_id=run.id, client_id=cart4.client_id, hostname="cart-04", status="ok"))

    _at_window(lincoln, minutes=10)
    settled = rollout_runner.reconcile(lincoln.ctx)

    assert [(r.kind, r.outcome) for r in settled] == [
        ("run", "failed"),
        ("client", "staging"),
        ("client", "staging"),
        ("client", "staging"),
        ("client", "succeeded"),
        ("deployment", "scheduled"),
    ]
    with transaction(lincoln.ctx.engine) as s:
        assert s.exec(select(Run).where(Run.status == "running")).all() == []
        ended = s.exec(select(Run)).one()
        assert (ended.status, ended.reason) == ("failed", "the orchestrator stopped during the run")
    view = _state(lincoln, dep.id)
    assert view.state == "scheduled"
    assert view.counts == {"staging": 3, "succeeded": 1}
    assert _deployment_audit(lincoln)[-1].action == "deployment.restart"

    runner = FakePlaybookRunner()
    again = _tick(lincoln, dep.id, runner)

    assert again.events == ("window_opened", "all_done")
    assert _given(runner) == [["cart-01", "cart-02", "cart-03"]]  # cart-04 is never pushed again
    # The run after the crash is the resumed clients' second attempt; cart-04 keeps its one.
    assert {h: c.attempts for h, c in _clients(lincoln, dep.id).items()} == {
        "cart-01": 2,
        "cart-02": 2,
        "cart-03": 2,
        "cart-04": 1,
    }
    assert again.state == "completed"
    assert rollout_runner.reconcile(lincoln.ctx) == []  # nothing left to settle


def test_a_client_whose_runs_stop_the_orchestrator_each_time_is_failed_not_run_forever(
    lincoln: District,
) -> None:
    dep = _create(lincoln, clients=("cart-01",), buildings=())
    _at_window(lincoln)

    class DiesMidRun(FakePlaybookRunner):
        def run(self, request: PlaybookRequest, *args: Any, **kwargs: Any) -> RunOutcome:
            super().run(request, *args, **kwargs)
            raise _Killed

    crashes = 0
    for _ in range(rollout.MAX_ATTEMPTS + 1):
        try:
            _tick(lincoln, dep.id, DiesMidRun())
        except _Killed:
            crashes += 1
        rollout_runner.reconcile(lincoln.ctx)
        if _clients(lincoln, dep.id)["cart-01"].state == "failed":
            break

    cart = _clients(lincoln, dep.id)["cart-01"]
    assert crashes == rollout.MAX_ATTEMPTS
    assert (cart.state, cart.attempts) == ("failed", rollout.MAX_ATTEMPTS)
    assert cart.reason is not None and "all 3 attempts of this client are used" in cart.reason
