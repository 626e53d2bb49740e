"""A request's life driven at random through the real service, on both backends.

Anyone of the test district tries to take, escalate or close a request filed by
Lincoln's principal, of a technician's category or a department's. Each call
must succeed exactly when the rules say (written here by hand from the briefing
and DOMAIN.md, not from the code): the building's technician or IT works a
technician's request; nobody takes a department's; another building's tech is
told it does not exist; whoever filed it may withdraw it; closed is final. After
every step the stored state matches the model and every step is audited once.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from orchestrator.domain.requests import Queue, RequestState
from orchestrator.errors import Conflict, InvalidInput, NotFound, Refused
from orchestrator.services import audit, requests
from orchestrator.services.requests import RequestSpec
from tests.factories import District

PEOPLE = ["btc.lincoln", "btc.garcia", "sectec.kim", "edtech.grace", "it.ana", "principal.lincoln"]
FILER = "principal.lincoln"


def _expected(
    action: str, who: str, state: RequestState, queue: Queue, reason: str
) -> type[Exception] | RequestState:
    """What the district's rules say happens (a malformed request is refused first)."""
    if action in ("escalate", "close") and not reason.strip():
        return InvalidInput
    if who in ("btc.garcia", "sectec.kim"):
        return NotFound  # another building's request
    if action == "take":
        if queue is Queue.DEPARTMENT:
            return Refused
        if who not in ("btc.lincoln", "it.ana"):
            return Refused
        return (
            RequestState.TAKEN
            if state in (RequestState.OPEN, RequestState.ESCALATED)
            else (Conflict)
        )
    if action == "escalate":
        if who not in ("btc.lincoln", "it.ana"):
            return Refused
        if queue is Queue.DEPARTMENT:
            return Conflict
        return (
            RequestState.ESCALATED
            if state in (RequestState.OPEN, RequestState.TAKEN)
            else (Conflict)
        )
    # close
    if who != FILER:
        if who not in ("btc.lincoln", "it.ana"):
            return Refused
        if queue is Queue.DEPARTMENT and who != "it.ana":
            return Refused
    return Conflict if state is RequestState.CLOSED else RequestState.CLOSED


class RequestMachine(RuleBasedStateMachine):
    district: District
    calls: list[str]

    @initialize(category=st.sampled_from(["hardware_repair", "imaging", "grading", "telephone"]))
    def file(self, category: str) -> None:
        r = requests.file_request(
            self.district.ctx,
            self.district[FILER],
            RequestSpec(building="101", category=category, description="cart 2 will not charge"),
        )
        self.id, self.queue, self.state, self.steps = r.id, r.queue, r.state, 1

    @rule(
        action=st.sampled_from(["take", "escalate", "close"]),
        who=st.sampled_from(PEOPLE),
        reason=st.sampled_from(["", "needs parts from IT", "done"]),
    )
    def act(self, action: str, who: str, reason: str) -> None:
        expected = _expected(action, who, self.state, self.queue, reason)
        ctx, actor = self.district.ctx, self.district[who]
        call: Any = {
            "take": lambda: requests.take(ctx, actor, self.id),
            "escalate": lambda: requests.escalate(ctx, actor, self.id, reason=reason),
            "close": lambda: requests.close(ctx, actor, self.id, note=reason),
        }[action]
        if isinstance(expected, RequestState):
            assert call().state is expected, (action, who)
            self.state = expected
            self.steps += 1
            self.calls.append("ok")
        else:
            with pytest.raises(expected):
                call()
            if action == "take" and expected is Refused and self.queue is Queue.DEPARTMENT:
                self.steps += 1  # the refusal of department work is audited
            self.calls.append("refused")

    @invariant()
    def stored_as_modelled(self) -> None:
        if not hasattr(self, "id"):
            return
        shown = requests.show(self.district.ctx, self.district["it.ana"], self.id)
        assert shown.state is self.state
        entries = [
            e
            for e in audit.entries(
                self.district.ctx, self.district["it.ana"], object_kind="request"
            )
            if e.object_id == self.id
        ]
        assert len(entries) == self.steps


def test_a_requests_life_follows_the_districts_rules_whoever_tries_what(
    district: District,
) -> None:
    calls: list[str] = []
    machine = type("RequestMachineHere", (RequestMachine,), {"district": district, "calls": calls})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=30,
            stateful_step_count=8,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
    assert "ok" in calls and "refused" in calls, "the run made no real calls"
