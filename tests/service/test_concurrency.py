"""Two people deciding the same step at once: one transition, one clear conflict."""

from __future__ import annotations

import threading

import pytest
from sqlmodel import Session, col, select

from orchestrator.db.models import Decision, Releasable
from orchestrator.db.session import transaction
from orchestrator.domain.lifecycle import Event
from orchestrator.domain.states import Kind, State, Step
from orchestrator.errors import Conflict, StaleState
from orchestrator.services import audit, catalog, chain, transitions
from tests.factories import District


def test_a_stale_compare_and_set_is_refused_and_moves_nothing(district: District) -> None:
    """Both sessions read 'in_review'; the second write finds it moved and fails."""
    district.base(to=State.IN_REVIEW)
    engine = district.ctx.engine
    with Session(engine) as first_reader:
        stale = first_reader.exec(select(Releasable)).one()
        first_reader.expunge(stale)
    chain.approve(
        district.ctx,
        district["edtech.grace"],
        Kind.BASE_IMAGE,
        "pc-elementary@2026.1",
        step=Step.REVIEW,
    )

    with pytest.raises(StaleState, match="changed by someone else"), transaction(engine) as s:
        s.add(stale)
        transitions.move(s, stale, Event.PASS_REVIEW, district.ctx.now())

    with transaction(engine) as s:
        row = s.exec(select(Releasable)).one()
        assert row.state == State.TESTING.value
        assert row.state_version == 2  # submit, review: no third move


def test_two_reviewers_approving_at_once_make_exactly_one_transition(district: District) -> None:
    ref = district.base(to=State.IN_REVIEW)
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def review(username: str) -> None:
        barrier.wait()
        try:
            chain.approve(
                district.ctx,
                district[username],
                Kind.BASE_IMAGE,
                ref,
                "looks right",
                step=Step.REVIEW,
            )
            outcomes.append("approved")
        except Conflict as exc:  # StaleState is a Conflict too
            outcomes.append(exc)

    threads = [threading.Thread(target=review, args=(u,)) for u in ("edtech.grace", "edtech.marco")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert outcomes.count("approved") == 1
    (conflict,) = [o for o in outcomes if o != "approved"]
    assert isinstance(conflict, Conflict)
    assert "review" in str(conflict)
    with transaction(district.ctx.engine) as s:
        decisions = s.exec(select(Decision).where(col(Decision.step) == "review")).all()
        assert len(decisions) == 1
    v = catalog.show(district.ctx, district["it.ana"], Kind.BASE_IMAGE, ref)
    assert v.state is State.TESTING
    assert audit.verify(district.ctx, district["it.ana"]).entries > 0
