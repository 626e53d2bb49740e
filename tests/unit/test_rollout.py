"""The rules of a rollout (orchestrator.domain.rollout): the two tables, checked as
graphs, and the pure arithmetic of backoff, waves, concurrency and the failure
threshold.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from orchestrator.domain import rollout
from orchestrator.domain.rollout import (
    CLIENT_INITIAL,
    CLIENT_TERMINAL,
    CLIENT_TRANSITIONS,
    DEPLOYMENT_INITIAL,
    DEPLOYMENT_TERMINAL,
    DEPLOYMENT_TRANSITIONS,
    IN_FLIGHT,
    MAX_ATTEMPTS,
    NEEDS_REASON,
    PUSHING,
    ClientEvent,
    ClientRun,
    ClientState,
    Continue,
    DeploymentEvent,
    DeploymentState,
    Pause,
    TargetClient,
    Wave,
    WaveCounts,
    advance,
    client_events_from,
    deployment_events_from,
    next_deployment_state,
    next_retry,
    next_state,
    pick_next,
    plan_waves,
    retry_delay,
    wave_verdict,
)
from orchestrator.errors import Conflict, InvalidInput, InvalidTransition

C = ClientState
CE = ClientEvent
D = DeploymentState
DE = DeploymentEvent


S = TypeVar("S", ClientState, DeploymentState)
E = TypeVar("E", ClientEvent, DeploymentEvent)


def _reachable(table: Mapping[tuple[S, E], S], start: S, *, without: Iterable[E] = ()) -> set[S]:
    banned = set(without)
    seen = {start}
    frontier = [start]
    while frontier:
        state = frontier.pop()
        for (source, event), target in table.items():
            if source is state and event not in banned and target not in seen:
                seen.add(target)
                frontier.append(target)
    return seen


def _words(value: str) -> str:
    return value.replace("_", " ")


CLIENT_ILLEGAL = [
    (s, e)
    for s, e in itertools.product(ClientState, ClientEvent)
    if (s, e) not in CLIENT_TRANSITIONS
]
DEPLOYMENT_ILLEGAL = [
    (s, e)
    for s, e in itertools.product(DeploymentState, DeploymentEvent)
    if (s, e) not in DEPLOYMENT_TRANSITIONS
]


# --------------------------------------------------------------------------
# The client table
# --------------------------------------------------------------------------


def test_a_client_starts_pending() -> None:
    assert CLIENT_INITIAL is C.PENDING
    assert ClientRun() == ClientRun(state=C.PENDING, attempts=0, reason=None)


def test_every_client_state_is_reachable_from_pending() -> None:
    assert _reachable(CLIENT_TRANSITIONS, CLIENT_INITIAL) == set(ClientState)


def test_client_table_uses_only_client_states_and_events() -> None:
    for (source, event), target in CLIENT_TRANSITIONS.items():
        assert isinstance(source, ClientState)
        assert isinstance(event, ClientEvent)
        assert isinstance(target, ClientState)


def test_client_terminal_states_are_the_four_outcomes() -> None:
    assert frozenset({C.SUCCEEDED, C.FAILED, C.SKIPPED, C.CANCELLED}) == CLIENT_TERMINAL


@pytest.mark.parametrize("state", sorted(CLIENT_TERMINAL), ids=str)
def test_client_terminal_states_have_no_exits(state: ClientState) -> None:
    assert client_events_from(state) == frozenset()
    assert not [key for key in CLIENT_TRANSITIONS if key[0] is state]


@pytest.mark.parametrize("state", sorted(set(ClientState) - CLIENT_TERMINAL), ids=str)
def test_every_unfinished_client_state_can_still_reach_an_outcome(state: ClientState) -> None:
    assert client_events_from(state), f"{state} is a dead end but not terminal"
    assert _reachable(CLIENT_TRANSITIONS, state) & CLIENT_TERMINAL


@pytest.mark.parametrize(("state", "event"), list(CLIENT_TRANSITIONS), ids=str)
def test_next_state_follows_the_client_table(state: ClientState, event: ClientEvent) -> None:
    assert next_state(state, event) is CLIENT_TRANSITIONS[(state, event)]


@pytest.mark.parametrize(("state", "event"), CLIENT_ILLEGAL, ids=str)
def test_next_state_refuses_every_client_move_not_in_the_table(
    state: ClientState, event: ClientEvent
) -> None:
    with pytest.raises(InvalidTransition) as info:
        next_state(state, event)
    message = str(info.value)
    assert message.startswith(f"{_words(event.value)} is not allowed for a client that is {state}")
    allowed = sorted(_words(e.value) for e in client_events_from(state))
    if allowed:
        assert message.endswith(f"; from {state} it can: {', '.join(allowed)}")
    else:
        assert message.endswith(f"; {state} is final")


def test_client_illegal_moves_are_enumerated_completely() -> None:
    assert len(CLIENT_ILLEGAL) + len(CLIENT_TRANSITIONS) == len(ClientState) * len(ClientEvent)


def test_refusing_a_push_to_a_succeeded_client_reads_plainly() -> None:
    with pytest.raises(InvalidTransition) as info:
        next_state(C.SUCCEEDED, CE.START_STAGING)
    assert str(info.value) == (
        "start staging is not allowed for a client that is succeeded; succeeded is final"
    )


def test_an_invalid_client_move_is_a_conflict() -> None:
    with pytest.raises(Conflict):
        next_state(C.FAILED, CE.RETRY_DUE)


def test_a_succeeded_client_can_never_be_pushed_again() -> None:
    assert _reachable(CLIENT_TRANSITIONS, C.SUCCEEDED) == {C.SUCCEEDED}
    for event in ClientEvent:
        with pytest.raises(InvalidTransition):
            next_state(C.SUCCEEDED, event)


def test_verified_is_the_only_way_to_succeed() -> None:
    into = {key for key, target in CLIENT_TRANSITIONS.items() if target is C.SUCCEEDED}
    assert into == {(C.VERIFYING, CE.VERIFIED)}


def test_no_client_reaches_success_without_being_staged_applied_and_verified() -> None:
    for skipped in (CE.STAGED, CE.VERIFIED):
        assert C.SUCCEEDED not in _reachable(CLIENT_TRANSITIONS, C.PENDING, without=[skipped])
    # After a restart an apply may be confirmed by re-checking instead of by its own
    # result, but verifying is still entered only from applying (or from itself).
    into_verifying = {s for (s, _), t in CLIENT_TRANSITIONS.items() if t is C.VERIFYING}
    assert into_verifying == {C.APPLYING, C.VERIFYING}


def test_pushing_starts_only_from_pending() -> None:
    into_pushing = {
        source
        for (source, _), target in CLIENT_TRANSITIONS.items()
        if target in PUSHING and source not in PUSHING
    }
    assert into_pushing == {C.PENDING}


def test_unreachable_is_retried_failed_or_cancelled_and_nothing_else() -> None:
    exits = {CLIENT_TRANSITIONS[(C.UNREACHABLE, e)] for e in client_events_from(C.UNREACHABLE)}
    assert exits == {C.PENDING, C.FAILED, C.CANCELLED}


@pytest.mark.parametrize("state", sorted(IN_FLIGHT), ids=str)
def test_every_in_flight_client_is_reconciled_after_a_restart(state: ClientState) -> None:
    resumed = next_state(state, CE.RESUME_AFTER_RESTART)
    assert resumed in IN_FLIGHT
    assert next_state(state, CE.FAIL_AFTER_RESTART) is C.FAILED


def test_an_interrupted_apply_is_re_checked_never_re_applied() -> None:
    assert next_state(C.APPLYING, CE.RESUME_AFTER_RESTART) is C.VERIFYING
    assert not [
        key
        for key, target in CLIENT_TRANSITIONS.items()
        if key[1] is CE.RESUME_AFTER_RESTART and target is C.APPLYING
    ]


def test_only_in_flight_clients_are_reconciled() -> None:
    for event in (CE.RESUME_AFTER_RESTART, CE.FAIL_AFTER_RESTART):
        assert {s for (s, e) in CLIENT_TRANSITIONS if e is event} == IN_FLIGHT


def test_a_cancel_never_interrupts_a_client_being_changed() -> None:
    cancellable = {s for (s, e) in CLIENT_TRANSITIONS if e is CE.CANCEL}
    assert cancellable == {C.PENDING, C.STAGING, C.UNREACHABLE}
    assert C.APPLYING not in cancellable


def test_client_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        rollout.CLIENT_TRANSITIONS[(C.SUCCEEDED, CE.START_STAGING)] = C.STAGING  # type: ignore[index]


# --------------------------------------------------------------------------
# advance: the table plus the attempt count and the reason
# --------------------------------------------------------------------------


def _run_through(run: ClientRun, *events: ClientEvent, reason: str = "why") -> ClientRun:
    for event in events:
        run = advance(run, event, reason=reason if event in NEEDS_REASON else None)
    return run


def test_a_client_that_goes_through_every_step_succeeds_with_one_attempt() -> None:
    run = _run_through(ClientRun(), CE.START_STAGING, CE.STAGED, CE.APPLIED, CE.VERIFIED)
    assert run == ClientRun(state=C.SUCCEEDED, attempts=1, reason=None)


def test_an_unreachable_client_is_retried_until_its_attempts_run_out_then_failed() -> None:
    run = ClientRun()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        run = advance(run, CE.START_STAGING)
        assert run.attempts == attempt
        run = advance(run, CE.HOST_UNREACHABLE, reason="connection timed out")
        if attempt < MAX_ATTEMPTS:
            run = advance(run, CE.RETRY_DUE)
            assert run.state is C.PENDING
    with pytest.raises(InvalidTransition) as info:
        advance(run, CE.RETRY_DUE)
    assert f"all {MAX_ATTEMPTS} attempts are used; give up instead" in str(info.value)
    run = advance(run, CE.GIVE_UP)
    assert run.state is C.FAILED
    assert run.reason == (
        f"unreachable after {MAX_ATTEMPTS} attempts; last error: connection timed out"
    )


def test_give_up_is_refused_while_attempts_are_left() -> None:
    run = _run_through(ClientRun(), CE.START_STAGING, CE.HOST_UNREACHABLE)
    with pytest.raises(InvalidTransition, match=f"after 1 of {MAX_ATTEMPTS} attempts"):
        advance(run, CE.GIVE_UP)


def test_a_client_with_every_attempt_used_is_not_started_again() -> None:
    with pytest.raises(InvalidTransition, match="attempts are used"):
        advance(ClientRun(attempts=MAX_ATTEMPTS), CE.START_STAGING)


@pytest.mark.parametrize("event", sorted(NEEDS_REASON), ids=str)
@pytest.mark.parametrize("reason", [None, "", "   "])
def test_failing_skipping_and_cancelling_need_a_reason(
    event: ClientEvent, reason: str | None
) -> None:
    source = next(s for (s, e) in CLIENT_TRANSITIONS if e is event)
    with pytest.raises(InvalidInput, match="needs a reason"):
        advance(ClientRun(state=source, attempts=1), event, reason=reason)


def test_a_failed_step_keeps_its_message_for_deploy_show() -> None:
    run = _run_through(ClientRun(), CE.START_STAGING, CE.STAGED)
    run = advance(run, CE.STEP_FAILED, reason="apply_image: wimapply exited 1")
    assert run == ClientRun(state=C.FAILED, attempts=1, reason="apply_image: wimapply exited 1")


def test_resuming_after_a_restart_is_another_attempt_and_bounded_like_the_others() -> None:
    run = _run_through(ClientRun(), CE.START_STAGING, CE.STAGED)
    run = advance(run, CE.RESUME_AFTER_RESTART)
    assert (run.state, run.attempts) == (C.VERIFYING, 2)
    run = advance(run, CE.RESUME_AFTER_RESTART)
    assert run.attempts == MAX_ATTEMPTS
    with pytest.raises(InvalidTransition, match="fail after restart instead"):
        advance(run, CE.RESUME_AFTER_RESTART)
    failed = advance(run, CE.FAIL_AFTER_RESTART, reason="stopped each time")
    assert (failed.state, failed.attempts) == (C.FAILED, MAX_ATTEMPTS)


def test_success_after_a_retry_clears_the_old_error() -> None:
    run = _run_through(ClientRun(), CE.START_STAGING, CE.HOST_UNREACHABLE, CE.RETRY_DUE)
    assert run.reason == "why"
    run = _run_through(run, CE.START_STAGING, CE.STAGED, CE.APPLIED, CE.VERIFIED)
    assert run == ClientRun(state=C.SUCCEEDED, attempts=2, reason=None)


class ClientMachine(RuleBasedStateMachine):
    """Random events through advance(); the invariants hold whatever arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.run = ClientRun()
        self.starts = 0
        self.history: list[ClientState] = [self.run.state]

    def _fire(self, event: ClientEvent, reason: str | None) -> None:
        before = self.run
        try:
            after = advance(before, event, reason=reason)
        except (InvalidTransition, InvalidInput):
            assert self.run == before
            return
        assert (before.state, event) in CLIENT_TRANSITIONS
        assert before.state not in CLIENT_TERMINAL
        if event in (CE.START_STAGING, CE.RESUME_AFTER_RESTART):  # each runs the play once more
            self.starts += 1
        self.run = after
        self.history.append(after.state)

    @rule(
        event=st.sampled_from(ClientEvent),
        reason=st.sampled_from([None, "", "disk full", "connection refused"]),
    )
    def any_event(self, event: ClientEvent, reason: str | None) -> None:
        self._fire(event, reason)

    @precondition(lambda self: self.run.state not in CLIENT_TERMINAL)
    @rule(data=st.data())
    def an_event_the_table_allows(self, data: st.DataObject) -> None:
        event = data.draw(st.sampled_from(sorted(client_events_from(self.run.state))))
        self._fire(event, "step message")

    @invariant()
    def attempts_never_exceed_the_bound(self) -> None:
        assert 0 <= self.run.attempts <= MAX_ATTEMPTS
        assert self.run.attempts == self.starts

    @invariant()
    def a_terminal_state_is_never_left(self) -> None:
        for i, state in enumerate(self.history):
            if state in CLIENT_TERMINAL:
                assert set(self.history[i:]) == {state}
                break

    @invariant()
    def a_succeeded_client_is_never_pushed_again(self) -> None:
        if C.SUCCEEDED in self.history:
            after = self.history[self.history.index(C.SUCCEEDED) :]
            assert not set(after) & PUSHING

    @invariant()
    def every_unhappy_outcome_says_why(self) -> None:
        if self.run.state in {C.FAILED, C.SKIPPED, C.CANCELLED, C.UNREACHABLE}:
            assert self.run.reason and self.run.reason.strip()


ClientMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40)
TestClientMachine = ClientMachine.TestCase


# --------------------------------------------------------------------------
# Backoff
# --------------------------------------------------------------------------

BASE = timedelta(minutes=2)
CAP = timedelta(minutes=30)


def test_retry_delay_doubles_from_the_base() -> None:
    delays = [retry_delay(n, base=BASE, cap=CAP) for n in (1, 2, 3, 4)]
    assert delays == [BASE, 2 * BASE, 4 * BASE, 8 * BASE]


def test_retry_delay_stops_at_the_cap() -> None:
    assert retry_delay(5, base=BASE, cap=CAP) == CAP  # 32 minutes would be over
    assert retry_delay(10_000, base=BASE, cap=CAP) == CAP


@given(attempt=st.integers(min_value=1, max_value=10_000))
def test_retry_delay_is_between_base_and_cap_and_never_shrinks(attempt: int) -> None:
    delay = retry_delay(attempt, base=BASE, cap=CAP)
    assert BASE <= delay <= CAP
    assert delay <= retry_delay(attempt + 1, base=BASE, cap=CAP)


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "field"),
    [
        (0, BASE, CAP, "attempt"),
        (1, timedelta(0), CAP, "base"),
        (1, -BASE, CAP, "base"),
        (1, CAP, BASE, "cap"),
    ],
)
def test_retry_delay_refuses_nonsense(
    attempt: int, base: timedelta, cap: timedelta, field: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        retry_delay(attempt, base=base, cap=cap)
    assert info.value.field == field


def test_the_retries_of_one_client_are_bounded_in_number_and_in_time() -> None:
    waits = [next_retry(n, base=BASE, cap=CAP) for n in range(1, MAX_ATTEMPTS + 3)]
    given_up = waits[MAX_ATTEMPTS - 1 :]
    assert given_up == [None] * len(given_up)
    retries = [w for w in waits if w is not None]
    assert len(retries) == MAX_ATTEMPTS - 1
    assert sum(retries, timedelta(0)) <= (MAX_ATTEMPTS - 1) * CAP


# --------------------------------------------------------------------------
# Waves
# --------------------------------------------------------------------------


def _client(id: int, hostname: str, building: str) -> TargetClient:
    return TargetClient(id=id, hostname=hostname, building=building)


def _district() -> list[TargetClient]:
    """Two buildings, 101 (three lab machines) and 9 (two), listed out of order."""
    return [
        _client(1, "lab-c", "101"),
        _client(2, "lab-a", "101"),
        _client(3, "LAB-B", "101"),
        _client(4, "cart-2", "9"),
        _client(5, "cart-1", "9"),
    ]


def _shape(waves: list[Wave]) -> list[tuple[str, list[str]]]:
    return [(w.label, [c.hostname for c in w.clients]) for w in waves]


def test_without_a_pilot_there_is_one_wave_per_building_by_number_then_hostname() -> None:
    assert _shape(plan_waves(_district())) == [
        ("wave 1 (building 9)", ["cart-1", "cart-2"]),
        ("wave 2 (building 101)", ["lab-a", "LAB-B", "lab-c"]),
    ]


def test_named_pilot_clients_form_the_first_wave_and_leave_their_buildings() -> None:
    waves = plan_waves(_district(), pilot_names=["lab-b", "cart-2"])
    assert _shape(waves) == [
        ("wave 1 (pilot)", ["cart-2", "LAB-B"]),
        ("wave 2 (building 9)", ["cart-1"]),
        ("wave 3 (building 101)", ["lab-a", "lab-c"]),
    ]
    assert waves[0].pilot and waves[0].building is None
    assert not any(w.pilot for w in waves[1:])


def test_a_named_pilot_client_must_be_among_the_targets() -> None:
    with pytest.raises(InvalidInput) as info:
        plan_waves(_district(), pilot_names=["lab-a", "lab-99"])
    assert str(info.value) == (
        "pilot_names: pilot client is not among the deployment's targets: lab-99"
    )


def test_n_per_building_takes_the_first_by_hostname_in_each_building() -> None:
    waves = plan_waves(_district(), pilot_per_building=1)
    assert _shape(waves) == [
        ("wave 1 (pilot)", ["cart-1", "lab-a"]),
        ("wave 2 (building 9)", ["cart-2"]),
        ("wave 3 (building 101)", ["LAB-B", "lab-c"]),
    ]


def test_a_building_wholly_in_the_pilot_has_no_wave_of_its_own() -> None:
    waves = plan_waves(_district(), pilot_per_building=2)
    assert _shape(waves) == [
        ("wave 1 (pilot)", ["cart-1", "cart-2", "lab-a", "LAB-B"]),
        ("wave 2 (building 101)", ["lab-c"]),
    ]


def test_the_building_order_given_comes_first_and_the_rest_follow_by_number() -> None:
    district = [*_district(), _client(6, "office-1", "12")]
    waves = plan_waves(district, building_order=["101"])
    assert [w.building for w in waves] == ["101", "9", "12"]


def test_the_plan_does_not_depend_on_the_order_clients_are_listed_in() -> None:
    expected = plan_waves(_district(), pilot_per_building=1)
    for seed in range(20):
        shuffled = _district()
        random.Random(seed).shuffle(shuffled)
        assert plan_waves(shuffled, pilot_per_building=1) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"pilot_per_building": -1},
            "pilot_per_building: pilot clients per building cannot be negative (-1)",
        ),
        (
            {"pilot_names": ["lab-a"], "pilot_per_building": 1},
            "pilot: name the pilot clients or give a number per building, not both",
        ),
        (
            {"building_order": ["101", "101"]},
            "building_order: the building order lists more than once: 101",
        ),
        (
            {"building_order": ["101", "404"]},
            "building_order: the building order names buildings with no targeted clients: 404",
        ),
    ],
)
def test_wave_planning_refuses_bad_input_with_a_clear_message(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        plan_waves(_district(), **kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_a_deployment_that_targets_no_clients_is_refused() -> None:
    with pytest.raises(InvalidInput, match="targets no clients"):
        plan_waves([])


def test_a_client_listed_twice_is_refused() -> None:
    with pytest.raises(InvalidInput, match="listed more than once: 2"):
        plan_waves([*_district(), _client(2, "lab-a", "101")])


_buildings = st.sampled_from(["9", "12", "101", "annex"])
_clients = st.lists(
    st.builds(
        TargetClient,
        id=st.integers(min_value=1, max_value=10_000),
        hostname=st.from_regex(r"[a-z]{1,3}-[0-9]{1,2}", fullmatch=True),
        building=_buildings,
    ),
    min_size=1,
    max_size=40,
    unique_by=lambda c: c.id,
)


@given(clients=_clients, n=st.integers(min_value=0, max_value=3))
def test_every_client_lands_in_exactly_one_wave(clients: list[TargetClient], n: int) -> None:
    waves = plan_waves(clients, pilot_per_building=n)
    placed = [c for w in waves for c in w.clients]
    assert sorted(c.id for c in placed) == sorted(c.id for c in clients)
    assert [w.number for w in waves] == list(range(1, len(waves) + 1))
    assert all(w.clients for w in waves)
    assert [w.pilot for w in waves] == [n > 0] + [False] * (len(waves) - 1)
    for wave in waves[1:] if n else waves:
        assert {c.building for c in wave.clients} == {wave.building}


# --------------------------------------------------------------------------
# Concurrency
# --------------------------------------------------------------------------


def _lab(building: str, count: int, start: int = 1) -> list[TargetClient]:
    return [_client(start + i, f"{building}-pc{i:02}", building) for i in range(count)]


def test_no_more_than_per_building_clients_run_in_one_building() -> None:
    pending = _lab("101", 30)
    picked = pick_next(pending, {"101": 3}, per_building=5, district_wide=100)
    assert picked == pending[:2]


def test_the_district_wide_limit_caps_every_building_together() -> None:
    pending = [*_lab("9", 10), *_lab("101", 10, start=100)]
    picked = pick_next(pending, {"12": 7}, per_building=5, district_wide=10)
    assert len(picked) == 3


def test_buildings_take_turns_so_a_pilot_spreads_over_their_links() -> None:
    pending = [*_lab("9", 3), *_lab("101", 3, start=100)]
    picked = pick_next(pending, {}, per_building=5, district_wide=4)
    assert [c.hostname for c in picked] == ["9-pc00", "101-pc00", "9-pc01", "101-pc01"]


def test_a_limit_already_exceeded_starts_nothing() -> None:
    pending = _lab("101", 5)
    assert pick_next(pending, {"101": 8}, per_building=5, district_wide=100) == []
    assert pick_next(pending, {"9": 120}, per_building=5, district_wide=100) == []


@pytest.mark.parametrize(
    ("per_building", "district_wide", "running", "field"),
    [(0, 10, {}, "per_building"), (5, 0, {}, "district_wide"), (5, 10, {"101": -1}, None)],
)
def test_pick_next_refuses_nonsense_limits(
    per_building: int, district_wide: int, running: dict[str, int], field: str | None
) -> None:
    with pytest.raises(InvalidInput) as info:
        pick_next(_lab("101", 2), running, per_building=per_building, district_wide=district_wide)
    assert info.value.field == field


@given(
    clients=_clients,
    running=st.dictionaries(_buildings, st.integers(min_value=0, max_value=8)),
    per_building=st.integers(min_value=1, max_value=6),
    district_wide=st.integers(min_value=1, max_value=20),
)
def test_pick_next_never_exceeds_either_limit_and_leaves_no_free_slot_unused(
    clients: list[TargetClient],
    running: dict[str, int],
    per_building: int,
    district_wide: int,
) -> None:
    picked = pick_next(clients, running, per_building=per_building, district_wide=district_wide)
    started = {b: running.get(b, 0) for b in {c.building for c in clients} | set(running)}
    for client in picked:
        started[client.building] += 1
    already = sum(running.values())
    assert len(set(picked)) == len(picked)
    assert set(picked) <= set(clients)
    for building, n in started.items():
        assert n <= max(per_building, running.get(building, 0))
    assert sum(started.values()) <= max(district_wide, already)
    # Within a building, clients start in the wave's order.
    for building in started:
        mine = [c for c in clients if c.building == building]
        chosen = [c for c in picked if c.building == building]
        assert chosen == mine[: len(chosen)]
    # A client left waiting has no free slot: its building or the district is full.
    for client in set(clients) - set(picked):
        assert started[client.building] >= per_building or sum(started.values()) >= district_wide


# --------------------------------------------------------------------------
# Failure threshold
# --------------------------------------------------------------------------


def _wave(number: int, size: int, *, building: str = "101", pilot: bool = False) -> Wave:
    return Wave(
        number=number,
        clients=tuple(_lab(building, size)),
        building=None if pilot else building,
        pilot=pilot,
    )


def _counts(wave: Wave, **by_state: int) -> WaveCounts:
    states = [ClientState(name) for name, n in by_state.items() for _ in range(n)]
    return WaveCounts.tally(wave, states)


def test_a_wave_over_the_threshold_pauses_with_a_reason_a_person_can_read() -> None:
    counts = _counts(_wave(2, 20), succeeded=17, failed=3)
    assert wave_verdict(counts, threshold_pct=10) == Pause(
        "3 of 20 clients failed in wave 2 (building 101), over the 10% threshold"
    )


def test_a_wave_exactly_at_the_threshold_goes_on() -> None:
    counts = _counts(_wave(2, 20), succeeded=18, failed=2)
    assert wave_verdict(counts, threshold_pct=10) == Continue()


def test_a_wave_without_failures_goes_on() -> None:
    counts = _counts(_wave(3, 20), succeeded=5, pending=10, applying=5)
    assert wave_verdict(counts, threshold_pct=0) == Continue()


def test_skipped_clients_do_not_count_against_a_wave() -> None:
    only_skips = _counts(_wave(2, 20), skipped=19, succeeded=1)
    assert wave_verdict(only_skips, threshold_pct=10) == Continue()
    counts = _counts(_wave(2, 20), skipped=5, succeeded=13, failed=2)
    assert wave_verdict(counts, threshold_pct=10) == Pause(
        "2 of 15 clients failed in wave 2 (building 101) (5 skipped not counted),"
        " over the 10% threshold"
    )


def test_an_unreachable_client_counts_as_failed_once_it_is_given_up() -> None:
    wave = _wave(2, 4)
    run = ClientRun()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        run = advance(run, CE.START_STAGING)
        run = advance(run, CE.HOST_UNREACHABLE, reason="no route to host")
        if attempt < MAX_ATTEMPTS:
            run = advance(run, CE.RETRY_DUE)
    others = [C.SUCCEEDED] * 3
    assert wave_verdict(WaveCounts.tally(wave, [*others, run.state]), threshold_pct=10) == (
        Continue()
    )
    run = advance(run, CE.GIVE_UP)
    verdict = wave_verdict(WaveCounts.tally(wave, [*others, run.state]), threshold_pct=10)
    assert verdict == Pause(
        "1 of 4 clients failed in wave 2 (building 101), over the 10% threshold"
    )


def test_any_failure_in_the_pilot_pauses_the_rollout() -> None:
    counts = _counts(_wave(1, 40, pilot=True), succeeded=39, failed=1)
    assert wave_verdict(counts, threshold_pct=10) == Pause(
        "1 of 40 clients failed in wave 1 (pilot);"
        " every pilot client must succeed before the other waves start"
    )


def test_a_pilot_that_fully_succeeds_lets_the_rollout_go_on() -> None:
    counts = _counts(_wave(1, 4, pilot=True), succeeded=3, skipped=1)
    assert wave_verdict(counts, threshold_pct=10) == Continue()
    assert counts.finished


def test_a_wave_is_finished_only_when_every_client_has_an_outcome() -> None:
    wave = _wave(2, 3)
    assert not _counts(wave, succeeded=2, unreachable=1).finished
    assert _counts(wave, succeeded=1, failed=1, cancelled=1).finished


@pytest.mark.parametrize("threshold", [-1, 100.5])
def test_a_threshold_outside_0_to_100_is_refused(threshold: float) -> None:
    with pytest.raises(InvalidInput, match="percentage from 0 to 100"):
        wave_verdict(_counts(_wave(2, 1), failed=1), threshold_pct=threshold)


def test_a_fractional_threshold_reads_as_written() -> None:
    counts = _counts(_wave(4, 8, building="9"), succeeded=7, failed=1)
    verdict = wave_verdict(counts, threshold_pct=12.5)
    assert verdict == Continue()
    counts = _counts(_wave(4, 8, building="9"), succeeded=6, failed=2)
    assert wave_verdict(counts, threshold_pct=12.5) == Pause(
        "2 of 8 clients failed in wave 4 (building 9), over the 12.5% threshold"
    )


# --------------------------------------------------------------------------
# The deployment table
# --------------------------------------------------------------------------


def test_a_deployment_starts_scheduled() -> None:
    assert DEPLOYMENT_INITIAL is D.SCHEDULED


def test_every_deployment_state_is_reachable_from_scheduled() -> None:
    assert _reachable(DEPLOYMENT_TRANSITIONS, DEPLOYMENT_INITIAL) == set(DeploymentState)


def test_deployment_table_uses_only_deployment_states_and_events() -> None:
    for (source, event), target in DEPLOYMENT_TRANSITIONS.items():
        assert isinstance(source, DeploymentState)
        assert isinstance(event, DeploymentEvent)
        assert isinstance(target, DeploymentState)


@pytest.mark.parametrize("state", sorted(DEPLOYMENT_TERMINAL), ids=str)
def test_deployment_terminal_states_have_no_exits(state: DeploymentState) -> None:
    assert deployment_events_from(state) == frozenset()


@pytest.mark.parametrize("state", sorted(set(DeploymentState) - DEPLOYMENT_TERMINAL), ids=str)
def test_every_unfinished_deployment_can_be_cancelled_or_reach_an_end(
    state: DeploymentState,
) -> None:
    assert next_deployment_state(state, DE.CANCEL) is D.CANCELLED
    assert next_deployment_state(state, DE.SUNSET_REACHED) is D.CANCELLED
    assert next_deployment_state(state, DE.DEADLINE_PASSED) is D.FAILED


@pytest.mark.parametrize(("state", "event"), list(DEPLOYMENT_TRANSITIONS), ids=str)
def test_next_deployment_state_follows_the_table(
    state: DeploymentState, event: DeploymentEvent
) -> None:
    assert next_deployment_state(state, event) is DEPLOYMENT_TRANSITIONS[(state, event)]


@pytest.mark.parametrize(("state", "event"), DEPLOYMENT_ILLEGAL, ids=str)
def test_next_deployment_state_refuses_every_move_not_in_the_table(
    state: DeploymentState, event: DeploymentEvent
) -> None:
    with pytest.raises(InvalidTransition) as info:
        next_deployment_state(state, event)
    message = str(info.value)
    assert message.startswith(f"{_words(event.value)} is not allowed for a deployment that is")
    allowed = sorted(_words(e.value) for e in deployment_events_from(state))
    if allowed:
        assert message.endswith(f"; from {state} it can: {', '.join(allowed)}")
    else:
        assert message.endswith(f"; {state} is final")


def test_refusing_to_resume_a_running_deployment_says_what_can_be_done() -> None:
    with pytest.raises(InvalidTransition) as info:
        next_deployment_state(D.RUNNING, DE.RESUME)
    assert str(info.value) == (
        "resume is not allowed for a deployment that is running; from running it can:"
        " all done, cancel, deadline passed, pause, restarted, sunset reached,"
        " threshold exceeded, window closed"
    )


def test_only_an_open_window_sets_a_deployment_running() -> None:
    into_running = {key for key, target in DEPLOYMENT_TRANSITIONS.items() if target is D.RUNNING}
    assert into_running == {(D.SCHEDULED, DE.WINDOW_OPENED)}


def test_resume_and_retry_failed_hand_the_deployment_back_to_the_scheduler() -> None:
    assert next_deployment_state(D.PAUSED, DE.RESUME) is D.SCHEDULED
    assert next_deployment_state(D.PAUSED, DE.RETRY_FAILED) is D.SCHEDULED


def test_a_deployment_found_running_after_a_restart_waits_for_its_window_again() -> None:
    assert next_deployment_state(D.RUNNING, DE.RESTARTED) is D.SCHEDULED


def test_a_paused_deployment_stays_paused_until_a_person_acts() -> None:
    automatic = {DE.WINDOW_OPENED, DE.WINDOW_CLOSED, DE.ALL_DONE, DE.RESTARTED}
    assert not automatic & deployment_events_from(D.PAUSED)


def test_deployment_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        rollout.DEPLOYMENT_TRANSITIONS[(D.COMPLETED, DE.RESUME)] = D.RUNNING  # type: ignore[index]
