"""The one lifecycle table for releasable things.

No other module decides whether a move is legal: services ask
:func:`next_state` and persist the answer with a compare-and-set write.
Each line names the caller that fires the event.
"""

from __future__ import annotations

from enum import StrEnum
from types import MappingProxyType

from orchestrator.domain.states import State
from orchestrator.errors import InvalidTransition


class Event(StrEnum):
    SUBMIT = "submit"
    """The author hands a draft to the chain (to review, or to testing if no review step)."""

    PASS_REVIEW = "pass_review"
    PASS_TESTS = "pass_tests"
    PUBLISH = "publish"
    """Published (base image) or released (customized image, package)."""

    REJECT = "reject"
    REVISE = "revise"
    """The content changed (new digest): the chain starts over."""

    DEPRECATE = "deprecate"
    SUNSET = "sunset"
    RETIRE = "retire"
    DISCARD = "discard"


_S = State
_E = Event

TRANSITIONS: MappingProxyType[tuple[State, Event], State] = MappingProxyType(
    {
        # services.chain.submit
        (_S.DRAFT, _E.SUBMIT): _S.IN_REVIEW,
        # services.chain.submit, for chains without a review step (software packages)
        (_S.DRAFT, _E.PASS_REVIEW): _S.TESTING,
        # services.chain.decide: review step approved
        (_S.IN_REVIEW, _E.PASS_REVIEW): _S.TESTING,
        # services.chain.decide: test step signed off with evidence
        (_S.TESTING, _E.PASS_TESTS): _S.APPROVED,
        # services.chain.decide: publish step (IT publishes; building tech releases)
        (_S.APPROVED, _E.PUBLISH): _S.PUBLISHED,
        # services.chain.decide: any pending step rejected, with a reason
        (_S.IN_REVIEW, _E.REJECT): _S.DRAFT,
        (_S.TESTING, _E.REJECT): _S.DRAFT,
        (_S.APPROVED, _E.REJECT): _S.DRAFT,
        # services.catalog.revise: the artifact changed while in the chain
        (_S.IN_REVIEW, _E.REVISE): _S.DRAFT,
        (_S.TESTING, _E.REVISE): _S.DRAFT,
        (_S.APPROVED, _E.REVISE): _S.DRAFT,
        # services.chain.deprecate: replaced by a newer version
        (_S.PUBLISHED, _E.DEPRECATE): _S.DEPRECATED,
        # services.sunset.run_daily_check: effective sunset date reached
        (_S.PUBLISHED, _E.SUNSET): _S.SUNSET,
        (_S.DEPRECATED, _E.SUNSET): _S.SUNSET,
        # services.chain.retire
        (_S.DEPRECATED, _E.RETIRE): _S.RETIRED,
        (_S.SUNSET, _E.RETIRE): _S.RETIRED,
        # services.chain.retire: a draft abandoned before it entered the chain
        (_S.DRAFT, _E.DISCARD): _S.RETIRED,
    }
)

INITIAL = State.DRAFT
TERMINAL = frozenset({State.RETIRED})

# States in which a new content digest restarts the chain rather than being refused.
REVISABLE = frozenset({State.DRAFT, State.IN_REVIEW, State.TESTING, State.APPROVED})

# States whose content may be deployed (deployments also check the sunset date).
DEPLOYABLE = frozenset({State.PUBLISHED, State.DEPRECATED})


def next_state(current: State, event: Event) -> State:
    """Return the state ``event`` moves ``current`` to.

    Raises:
        InvalidTransition: the table has no such move.
    """
    try:
        return TRANSITIONS[(current, event)]
    except KeyError:
        allowed = sorted(e.value for (s, e) in TRANSITIONS if s == current)
        hint = f"; from {current.value} it can: {', '.join(allowed)}" if allowed else ""
        raise InvalidTransition(
            f"cannot {event.value.replace('_', ' ')} something that is {current.value}{hint}"
        ) from None


def events_from(state: State) -> frozenset[Event]:
    return frozenset(e for (s, e) in TRANSITIONS if s == state)
