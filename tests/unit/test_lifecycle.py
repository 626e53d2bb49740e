"""The lifecycle table (orchestrator.domain.lifecycle), checked as a graph.

Every legal move is listed in ``TRANSITIONS``; everything else must be refused
with :class:`InvalidTransition`, whose message tells the user what *can* be done.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import pytest

from orchestrator.domain import lifecycle
from orchestrator.domain.lifecycle import (
    DEPLOYABLE,
    INITIAL,
    REVISABLE,
    TERMINAL,
    TRANSITIONS,
    Event,
    events_from,
    next_state,
)
from orchestrator.domain.states import State, Step
from orchestrator.errors import Conflict, InvalidTransition

ILLEGAL_MOVES = [
    (state, event)
    for state, event in itertools.product(State, Event)
    if (state, event) not in TRANSITIONS
]


def _reachable(start: State, *, without: Iterable[Event] = ()) -> set[State]:
    """States reachable from ``start`` following the table, ignoring ``without`` events."""
    banned = set(without)
    seen = {start}
    frontier = [start]
    while frontier:
        state = frontier.pop()
        for (source, event), target in TRANSITIONS.items():
            if source is state and event not in banned and target not in seen:
                seen.add(target)
                frontier.append(target)
    return seen


def test_initial_state_is_draft() -> None:
    assert INITIAL is State.DRAFT


def test_every_state_is_reachable_from_the_initial_state() -> None:
    assert _reachable(INITIAL) == set(State)


def test_table_uses_only_states_and_events_of_the_vocabulary() -> None:
    for (source, event), target in TRANSITIONS.items():
        assert isinstance(source, State)
        assert isinstance(event, Event)
        assert isinstance(target, State)


@pytest.mark.parametrize("state", sorted(TERMINAL), ids=str)
def test_terminal_states_have_no_exits(state: State) -> None:
    assert events_from(state) == frozenset()
    assert not [key for key in TRANSITIONS if key[0] is state]


@pytest.mark.parametrize("state", sorted(set(State) - TERMINAL), ids=str)
def test_every_non_terminal_state_has_an_exit(state: State) -> None:
    assert events_from(state), f"{state} is a dead end but not terminal"


@pytest.mark.parametrize("state", sorted(set(State) - TERMINAL), ids=str)
def test_every_non_terminal_state_can_still_reach_a_terminal_state(state: State) -> None:
    assert _reachable(state) & TERMINAL


def test_retired_is_the_only_terminal_state() -> None:
    assert frozenset({State.RETIRED}) == TERMINAL


@pytest.mark.parametrize(("state", "event"), list(TRANSITIONS), ids=lambda v: str(v))
def test_next_state_follows_the_table(state: State, event: Event) -> None:
    assert next_state(state, event) is TRANSITIONS[(state, event)]


@pytest.mark.parametrize(("state", "event"), ILLEGAL_MOVES, ids=lambda v: str(v))
def test_next_state_refuses_every_move_not_in_the_table(state: State, event: Event) -> None:
    with pytest.raises(InvalidTransition) as info:
        next_state(state, event)
    message = str(info.value)
    assert state.value in message
    assert event.value.replace("_", " ") in message
    allowed = events_from(state)
    for ok in allowed:
        assert ok.value in message, f"the refusal does not name the allowed event {ok.value}"
    if allowed:
        assert f"from {state.value} it can: " in message
        listed = message.split(" it can: ", 1)[1].split(", ")
        assert listed == sorted(e.value for e in allowed)


def test_illegal_moves_are_enumerated_completely() -> None:
    assert len(ILLEGAL_MOVES) + len(TRANSITIONS) == len(State) * len(Event)
    assert len(ILLEGAL_MOVES) > 0


def test_invalid_transition_is_a_conflict() -> None:
    with pytest.raises(Conflict):
        next_state(State.PUBLISHED, Event.SUBMIT)


def test_refusal_from_a_terminal_state_lists_nothing_allowed() -> None:
    with pytest.raises(InvalidTransition) as info:
        next_state(State.RETIRED, Event.SUBMIT)
    assert str(info.value) == "cannot submit something that is retired"


@pytest.mark.parametrize("state", list(State), ids=str)
def test_events_from_matches_the_table(state: State) -> None:
    assert events_from(state) == {e for (s, e) in TRANSITIONS if s is state}


def test_revisable_states_are_draft_and_those_a_revise_sends_back_to_draft() -> None:
    revise_sources = {s for (s, e) in TRANSITIONS if e is Event.REVISE}
    assert {INITIAL} | revise_sources == REVISABLE
    for state in revise_sources:
        assert next_state(state, Event.REVISE) is State.DRAFT


def test_every_state_waiting_for_a_step_can_be_rejected_and_revised() -> None:
    for step in Step:
        waiting = step.pending_in
        assert waiting in REVISABLE
        assert next_state(waiting, Event.REJECT) is State.DRAFT
        assert next_state(waiting, Event.REVISE) is State.DRAFT


def test_nothing_deployable_is_revisable() -> None:
    assert not (DEPLOYABLE & REVISABLE)
    for state in DEPLOYABLE:
        assert Event.REVISE not in events_from(state)
        assert Event.REJECT not in events_from(state)


def test_deployable_states_are_published_and_deprecated() -> None:
    assert frozenset({State.PUBLISHED, State.DEPRECATED}) == DEPLOYABLE


def test_publish_is_the_only_way_into_a_deployable_state() -> None:
    into_deployable = {
        (s, e) for (s, e), t in TRANSITIONS.items() if t in DEPLOYABLE and s not in DEPLOYABLE
    }
    assert into_deployable == {(State.APPROVED, Event.PUBLISH)}


@pytest.mark.parametrize("skipped", [Event.PASS_TESTS, Event.PUBLISH], ids=str)
def test_no_path_to_a_deployable_state_skips_tests_or_publishing(skipped: Event) -> None:
    assert not (_reachable(INITIAL, without=[skipped]) & DEPLOYABLE)


def test_deployable_states_reach_sunset_and_never_come_back_to_the_chain() -> None:
    for state in DEPLOYABLE:
        assert next_state(state, Event.SUNSET) is State.SUNSET
        assert not (_reachable(state) & REVISABLE)


def test_sunset_is_not_deployable_and_leads_only_to_retired() -> None:
    assert State.SUNSET not in DEPLOYABLE
    assert _reachable(State.SUNSET) == {State.SUNSET, State.RETIRED}


def test_only_a_draft_is_submitted_or_discarded() -> None:
    for event in (Event.SUBMIT, Event.DISCARD):
        assert {s for (s, e) in TRANSITIONS if e is event} == {State.DRAFT}


def test_module_exposes_the_table_read_only() -> None:
    with pytest.raises(TypeError):
        lifecycle.TRANSITIONS[(State.RETIRED, Event.SUBMIT)] = State.DRAFT  # type: ignore[index]
