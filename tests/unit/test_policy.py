"""The approval chain policies (orchestrator.domain.policy) against shared/DOMAIN.md.

The expected chains below are written from DOMAIN.md ("The collaboration chain")
by hand, not computed from the module under test:

* Base image: IT builds it -> EdTech reviews -> tested with student and staff
  logins (EdTech) -> IT publishes.
* Customized image: the building's tech builds it -> EdTech reviews -> tested
  (EdTech, or a SecTec of the building, never the author) -> the building's
  tech (SecTec or BTC) releases it.
* Software package: packaged by its owner -> tested (EdTech, or a SecTec of the
  building: the chart gives testing to EdTech and SecTecs, not BTCs) -> released
  district-wide by IT or for one building by its tech.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.domain.policy import (
    DEFAULT_POLICIES,
    Action,
    Actor,
    ChainPolicy,
    ChainStep,
    Scope,
    authorize,
    authorize_step,
    may,
    may_decide,
    validate_policy,
)
from orchestrator.domain.states import Kind, Role, State, Step
from orchestrator.errors import InvalidInput, Refused

D, OWN, SHARED = Scope.DISTRICT, Scope.OWN_BUILDING, Scope.OWN_OR_SHARED
WIDE = Scope.DISTRICT_WIDE

IT = Actor(1, "it.ana", Role.IT)
EDTECH = Actor(2, "edtech.grace", Role.EDTECH)
EDTECH_2 = Actor(3, "edtech.marco", Role.EDTECH)
SECTEC_301 = Actor(4, "sectec.kim", Role.SECTEC, frozenset({"301"}))
SECTEC_301_B = Actor(5, "sectec.lee", Role.SECTEC, frozenset({"301"}))
SECTEC_302 = Actor(6, "sectec.patel", Role.SECTEC, frozenset({"302", "201"}))
BTC_101 = Actor(7, "btc.lincoln", Role.BTC, frozenset({"101"}))
BTC_102 = Actor(8, "btc.garcia", Role.BTC, frozenset({"102"}))
PRINCIPAL_101 = Actor(9, "principal.lincoln", Role.PRINCIPAL, frozenset({"101"}))
IT_2 = Actor(10, "it.wei", Role.IT)

BASE = DEFAULT_POLICIES[Kind.BASE_IMAGE]
CUSTOM = DEFAULT_POLICIES[Kind.CUSTOM_IMAGE]
PACKAGE = DEFAULT_POLICIES[Kind.PACKAGE]


def _shape(policy: ChainPolicy) -> list[tuple[Step, dict[Role, Scope], bool, bool]]:
    return [(s.step, dict(s.roles), s.author_may_act, s.needs_evidence) for s in policy.steps]


# ---------------------------------------------------------------------------
# The district defaults follow DOMAIN.md
# ---------------------------------------------------------------------------


def test_default_policies_cover_every_kind() -> None:
    assert set(DEFAULT_POLICIES) == set(Kind)
    for kind, policy in DEFAULT_POLICIES.items():
        assert policy.kind is kind


def test_base_image_chain_is_edtech_review_edtech_tests_it_publishes() -> None:
    assert _shape(BASE) == [
        (Step.REVIEW, {Role.EDTECH: D}, False, False),
        (Step.TEST, {Role.EDTECH: D}, False, True),
        (Step.PUBLISH, {Role.IT: D}, True, False),
    ]


def test_custom_image_chain_is_edtech_review_tests_then_own_tech_releases() -> None:
    assert _shape(CUSTOM) == [
        (Step.REVIEW, {Role.EDTECH: D}, False, False),
        (Step.TEST, {Role.EDTECH: D, Role.SECTEC: OWN}, False, True),
        (Step.PUBLISH, {Role.SECTEC: OWN, Role.BTC: OWN}, True, False),
    ]


def test_package_chain_is_tests_then_release_by_it_or_own_building_tech() -> None:
    assert [s.step for s in PACKAGE.steps] == [Step.TEST, Step.PUBLISH]
    test, release = PACKAGE.steps
    assert dict(test.roles) == {Role.EDTECH: D, Role.SECTEC: OWN}
    assert test.needs_evidence and not test.author_may_act
    assert set(release.roles) == {Role.IT, Role.SECTEC, Role.BTC}
    assert release.author_may_act
    it_may = {
        b: may_decide(IT, PACKAGE, Step.PUBLISH, building=b, authors=()) for b in (None, "301")
    }
    assert it_may == {None: True, "301": False}, "IT releases district-wide packages only"


@pytest.mark.parametrize("kind", list(Kind), ids=str)
def test_no_default_chain_lets_principals_or_the_system_decide(kind: Kind) -> None:
    for s in DEFAULT_POLICIES[kind].steps:
        assert Role.PRINCIPAL not in s.roles
        assert Role.SYSTEM not in s.roles


@pytest.mark.parametrize("kind", list(Kind), ids=str)
def test_no_default_chain_lets_btcs_sign_off_tests(kind: Kind) -> None:
    assert Role.BTC not in DEFAULT_POLICIES[kind].step(Step.TEST).roles


def test_packages_submit_straight_to_testing_and_images_to_review() -> None:
    assert PACKAGE.submit_event().value == "pass_review"
    assert BASE.submit_event().value == "submit"
    assert CUSTOM.submit_event().value == "submit"


@pytest.mark.parametrize("kind", list(Kind), ids=str)
def test_pending_step_is_the_step_waiting_in_each_state(kind: Kind) -> None:
    policy = DEFAULT_POLICIES[kind]
    for s in policy.steps:
        assert policy.pending_step(s.step.pending_in) is s
    for state in (State.DRAFT, State.PUBLISHED, State.SUNSET, State.RETIRED):
        assert policy.pending_step(state) is None


def test_asking_a_package_chain_for_its_review_step_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="no review step"):
        PACKAGE.step(Step.REVIEW)


def test_custom_image_testers_are_described_in_the_districts_words() -> None:
    assert CUSTOM.step(Step.TEST).who() == "EdTech or a SecTec of the building"
    assert CUSTOM.step(Step.PUBLISH).who() == "a SecTec of the building or a BTC of the building"


# ---------------------------------------------------------------------------
# Who may decide a step
# ---------------------------------------------------------------------------


def test_btc_cannot_sign_off_image_tests() -> None:
    with pytest.raises(Refused) as info:
        authorize_step(BTC_101, CUSTOM, Step.TEST, building="101", authors={SECTEC_301.person_id})
    assert str(info.value) == (
        "refused: BTC cannot sign off image tests "
        "(the chain gives testing to EdTech or a SecTec of the building)"
    )


# (actor, policy, step, building, authors, allowed)
DECISIONS: list[tuple[str, Actor, ChainPolicy, Step, str | None, set[int], bool]] = [
    ("edtech reviews base", EDTECH, BASE, Step.REVIEW, None, {1}, True),
    ("it cannot review base", IT_2, BASE, Step.REVIEW, None, {1}, False),
    ("sectec cannot review base", SECTEC_301, BASE, Step.REVIEW, None, {1}, False),
    ("edtech signs off base tests", EDTECH, BASE, Step.TEST, None, {1}, True),
    ("it cannot sign off base tests", IT_2, BASE, Step.TEST, None, {1}, False),
    ("sectec cannot sign off district base tests", SECTEC_301, BASE, Step.TEST, None, {1}, False),
    ("it publishes base", IT_2, BASE, Step.PUBLISH, None, {1}, True),
    ("it author publishes own base", IT, BASE, Step.PUBLISH, None, {1}, True),
    ("edtech cannot publish base", EDTECH, BASE, Step.PUBLISH, None, {1}, False),
    ("edtech reviews custom", EDTECH, CUSTOM, Step.REVIEW, "301", {4}, True),
    ("sectec cannot review custom", SECTEC_301_B, CUSTOM, Step.REVIEW, "301", {4}, False),
    ("edtech tests custom", EDTECH, CUSTOM, Step.TEST, "301", {4}, True),
    ("own sectec tests custom", SECTEC_301_B, CUSTOM, Step.TEST, "301", {4}, True),
    ("author sectec cannot test", SECTEC_301, CUSTOM, Step.TEST, "301", {4}, False),
    ("reviser sectec cannot test", SECTEC_301_B, CUSTOM, Step.TEST, "301", {4, 5}, False),
    ("other sectec cannot test", SECTEC_302, CUSTOM, Step.TEST, "301", {4}, False),
    ("btc cannot test own custom", BTC_101, CUSTOM, Step.TEST, "101", {8}, False),
    ("it cannot test custom", IT, CUSTOM, Step.TEST, "301", {4}, False),
    ("author sectec releases", SECTEC_301, CUSTOM, Step.PUBLISH, "301", {4}, True),
    ("other sectec of building releases", SECTEC_301_B, CUSTOM, Step.PUBLISH, "301", {4}, True),
    ("btc releases own building", BTC_101, CUSTOM, Step.PUBLISH, "101", {7}, True),
    ("btc cannot release elsewhere", BTC_102, CUSTOM, Step.PUBLISH, "101", {7}, False),
    ("it cannot release custom", IT, CUSTOM, Step.PUBLISH, "101", {7}, False),
    ("edtech cannot release custom", EDTECH, CUSTOM, Step.PUBLISH, "101", {7}, False),
    ("edtech tests package", EDTECH_2, PACKAGE, Step.TEST, None, {2}, True),
    ("edtech author cannot test own package", EDTECH, PACKAGE, Step.TEST, None, {2}, False),
    ("sectec tests own local package", SECTEC_301_B, PACKAGE, Step.TEST, "301", {2}, True),
    ("sectec cannot test district package", SECTEC_301, PACKAGE, Step.TEST, None, {2}, False),
    ("btc cannot test package", BTC_101, PACKAGE, Step.TEST, "101", {2}, False),
    ("it releases district package", IT, PACKAGE, Step.PUBLISH, None, {2}, True),
    ("it cannot release local package", IT, PACKAGE, Step.PUBLISH, "301", {4}, False),
    ("sectec releases own local package", SECTEC_301, PACKAGE, Step.PUBLISH, "301", {4}, True),
    ("btc releases own local package", BTC_101, PACKAGE, Step.PUBLISH, "101", {2}, True),
    ("btc cannot release district package", BTC_101, PACKAGE, Step.PUBLISH, None, {2}, False),
    ("sectec cannot release other building", SECTEC_302, PACKAGE, Step.PUBLISH, "301", {2}, False),
    ("edtech cannot release package", EDTECH_2, PACKAGE, Step.PUBLISH, None, {2}, False),
]


@pytest.mark.parametrize(
    ("actor", "policy", "step", "building", "authors", "allowed"),
    [d[1:] for d in DECISIONS],
    ids=[d[0] for d in DECISIONS],
)
def test_who_may_decide_each_step_follows_the_domain(
    actor: Actor,
    policy: ChainPolicy,
    step: Step,
    building: str | None,
    authors: set[int],
    allowed: bool,
) -> None:
    assert may_decide(actor, policy, step, building=building, authors=authors) is allowed
    if allowed:
        authorize_step(actor, policy, step, building=building, authors=authors)
    else:
        with pytest.raises(Refused, match=r"^refused: "):
            authorize_step(actor, policy, step, building=building, authors=authors)


@pytest.mark.parametrize("kind", list(Kind), ids=str)
def test_principal_decides_no_step(kind: Kind) -> None:
    policy = DEFAULT_POLICIES[kind]
    for s in policy.steps:
        assert not may_decide(PRINCIPAL_101, policy, s.step, building="101", authors=set())


def test_author_is_refused_their_own_review_with_the_rule_in_words() -> None:
    with pytest.raises(Refused) as info:
        authorize_step(EDTECH, PACKAGE, Step.TEST, building=None, authors={EDTECH.person_id})
    assert str(info.value) == (
        "refused: edtech.grace cannot decide the test step of their own software package "
        "(no one approves a review or test step of their own work)"
    )


def test_building_tech_refused_in_another_building_names_the_building() -> None:
    with pytest.raises(Refused, match="in building 301"):
        authorize_step(SECTEC_302, CUSTOM, Step.TEST, building="301", authors=set())


# ---------------------------------------------------------------------------
# validate_policy
# ---------------------------------------------------------------------------


def _step(
    step: Step,
    roles: Mapping[Role, Scope] | None = None,
    *,
    author: bool = False,
    evidence: bool | None = None,
) -> ChainStep:
    return ChainStep(
        step,
        roles if roles is not None else {Role.EDTECH: D},
        author_may_act=author,
        needs_evidence=(step is Step.TEST) if evidence is None else evidence,
    )


REFUSED_POLICIES: list[tuple[str, tuple[ChainStep, ...], str]] = [
    ("no steps", (), "must include a test step and a publish step"),
    ("no test step", (_step(Step.REVIEW), _step(Step.PUBLISH)), "must include a test step"),
    ("no publish step", (_step(Step.REVIEW), _step(Step.TEST)), "and a publish step"),
    (
        "publish before test",
        (_step(Step.PUBLISH), _step(Step.TEST)),
        "review, test, publish in that order",
    ),
    (
        "test before review",
        (_step(Step.TEST), _step(Step.REVIEW), _step(Step.PUBLISH)),
        "review, test, publish in that order",
    ),
    (
        "a step twice",
        (_step(Step.TEST), _step(Step.TEST), _step(Step.PUBLISH)),
        "in that order",
    ),
    (
        "principal reviews",
        (_step(Step.REVIEW, {Role.PRINCIPAL: OWN}), _step(Step.TEST), _step(Step.PUBLISH)),
        "Principal cannot decide the review step",
    ),
    (
        "system publishes",
        (_step(Step.TEST), _step(Step.PUBLISH, {Role.IT: D, Role.SYSTEM: D})),
        "the system cannot decide the publish step",
    ),
    (
        "system tests",
        (_step(Step.TEST, {Role.SYSTEM: D}), _step(Step.PUBLISH)),
        "the system cannot decide the test step",
    ),
    (
        "test without evidence",
        (_step(Step.TEST, evidence=False), _step(Step.PUBLISH)),
        "the test step must require student and staff evidence",
    ),
    (
        "author reviews",
        (_step(Step.REVIEW, author=True), _step(Step.TEST), _step(Step.PUBLISH)),
        "no one approves a review or test step of their own work",
    ),
    (
        "author tests",
        (_step(Step.TEST, author=True), _step(Step.PUBLISH)),
        "no one approves a review or test step of their own work",
    ),
    ("nobody tests", (_step(Step.TEST, {}), _step(Step.PUBLISH)), "the test step names no role"),
]


@pytest.mark.parametrize(
    ("steps", "message"),
    [(s, m) for _, s, m in REFUSED_POLICIES],
    ids=[n for n, _, _ in REFUSED_POLICIES],
)
def test_validate_policy_refuses_chains_the_lifecycle_cannot_follow(
    steps: tuple[ChainStep, ...], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        ChainPolicy(Kind.CUSTOM_IMAGE, steps)


def test_validate_policy_names_the_chain_it_refuses() -> None:
    with pytest.raises(InvalidInput, match=r"^base image chain: "):
        ChainPolicy(Kind.BASE_IMAGE, (_step(Step.TEST),))


@pytest.mark.parametrize("kind", list(Kind), ids=str)
def test_validate_policy_accepts_the_defaults(kind: Kind) -> None:
    validate_policy(DEFAULT_POLICIES[kind])


def test_a_chain_without_review_whose_author_may_publish_is_valid() -> None:
    policy = ChainPolicy(
        Kind.PACKAGE, (_step(Step.TEST), _step(Step.PUBLISH, {Role.IT: D}, author=True))
    )
    assert [s.step for s in policy.steps] == [Step.TEST, Step.PUBLISH]


# ---------------------------------------------------------------------------
# Stored form
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(Kind), ids=str)
def test_default_policy_round_trips_through_its_stored_json_form(kind: Kind) -> None:
    policy = DEFAULT_POLICIES[kind]
    stored = json.loads(json.dumps(policy.to_data()))
    again = ChainPolicy.from_data(stored)
    assert again == policy
    assert _shape(again) == _shape(policy)
    assert [s.who() for s in again.steps] == [s.who() for s in policy.steps]


_DECIDERS = st.dictionaries(
    st.sampled_from([Role.IT, Role.EDTECH, Role.SECTEC, Role.BTC]),
    st.sampled_from(list(Scope)),
    min_size=1,
)


@st.composite
def valid_policies(draw: st.DrawFn) -> ChainPolicy:
    steps = []
    if draw(st.booleans()):
        steps.append(ChainStep(Step.REVIEW, draw(_DECIDERS), needs_evidence=draw(st.booleans())))
    steps.append(ChainStep(Step.TEST, draw(_DECIDERS), needs_evidence=True))
    steps.append(
        ChainStep(
            Step.PUBLISH,
            draw(_DECIDERS),
            author_may_act=draw(st.booleans()),
            needs_evidence=draw(st.booleans()),
        )
    )
    return ChainPolicy(draw(st.sampled_from(list(Kind))), tuple(steps))


@given(valid_policies())
def test_any_valid_policy_round_trips_through_from_data(policy: ChainPolicy) -> None:
    again = ChainPolicy.from_data(json.loads(json.dumps(policy.to_data())))
    assert again == policy
    assert again.to_data() == policy.to_data()


def _good() -> dict[str, Any]:
    return DEFAULT_POLICIES[Kind.CUSTOM_IMAGE].to_data()


def _with(**changes: Any) -> dict[str, Any]:
    data = _good()
    data.update(changes)
    return data


def _with_step(index: int, **changes: Any) -> dict[str, Any]:
    data = _good()
    data["steps"][index].update(changes)
    return data


MALFORMED: list[tuple[str, Any]] = [
    ("not a mapping", ["kind", "steps"]),
    ("none", None),
    ("no kind", {"steps": _good()["steps"]}),
    ("unknown kind", _with(kind="firmware")),
    ("no steps", {"kind": "package"}),
    ("steps not a list", _with(steps=5)),
    ("steps a string", _with(steps="review")),
    ("step without a name", {"kind": "package", "steps": [{"roles": {"edtech": "district"}}]}),
    ("unknown step", _with_step(0, step="sign")),
    ("unknown role", _with_step(0, roles={"janitor": "district"})),
    ("unknown scope", _with_step(0, roles={"edtech": "galaxy"})),
    ("roles not a mapping", _with_step(0, roles=7)),
    ("roles a list of names", _with_step(0, roles=["edtech"])),
    ("step not a mapping", _with(steps=["review", "test", "publish"])),
    ("empty steps", _with(steps=[])),
    ("out of order", _with(steps=list(reversed(_good()["steps"])))),
    ("principal decides", _with_step(2, roles={"principal": "own_building"})),
    ("tests without evidence", _with_step(1, needs_evidence=False)),
    ("author reviews", _with_step(0, author_may_act=True)),
]


@pytest.mark.parametrize("data", [d for _, d in MALFORMED], ids=[n for n, _ in MALFORMED])
def test_from_data_refuses_malformed_policies_as_invalid_input(data: Any) -> None:
    with pytest.raises(InvalidInput):
        ChainPolicy.from_data(data)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_STEP_DATA = st.fixed_dictionaries(
    {
        "step": st.sampled_from(["review", "test", "publish", "sign", 3]),
        "roles": st.dictionaries(
            st.sampled_from(["it", "edtech", "sectec", "btc", "principal", "system", "x"]),
            st.sampled_from(["district", "own_building", "own_or_shared", "nowhere"]),
        )
        | _JSON,
    },
    optional={"author_may_act": _JSON, "needs_evidence": _JSON},
)
_POLICY_DATA = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["base_image", "custom_image", "package", "other"]),
        "steps": st.lists(_STEP_DATA, max_size=4) | _JSON,
    }
)


@given(st.one_of(_POLICY_DATA, _JSON))
def test_from_data_yields_a_valid_policy_or_invalid_input_never_a_crash(data: Any) -> None:
    try:
        policy = ChainPolicy.from_data(data)
    except InvalidInput:
        return
    validate_policy(policy)
    names = [s.step for s in policy.steps]
    assert Step.TEST in names and Step.PUBLISH in names


# ---------------------------------------------------------------------------
# Scope.covers
# ---------------------------------------------------------------------------

NONE: frozenset[str] = frozenset()
ONE = frozenset({"101"})
TWO = frozenset({"101", "301"})

COVERS = [
    (D, NONE, None, True),
    (D, NONE, "101", True),
    (D, ONE, "302", True),
    (D, TWO, None, True),
    (OWN, NONE, None, False),
    (OWN, ONE, None, False),
    (OWN, NONE, "101", False),
    (OWN, ONE, "101", True),
    (OWN, ONE, "302", False),
    (OWN, TWO, "301", True),
    (OWN, TWO, "302", False),
    (SHARED, NONE, None, True),
    (SHARED, ONE, None, True),
    (SHARED, NONE, "101", False),
    (SHARED, ONE, "101", True),
    (SHARED, ONE, "302", False),
    (SHARED, TWO, "301", True),
    (SHARED, TWO, "302", False),
    (WIDE, NONE, None, True),
    (WIDE, ONE, None, True),
    (WIDE, NONE, "101", False),
    (WIDE, ONE, "101", False),
    (WIDE, TWO, "302", False),
]


@pytest.mark.parametrize(("scope", "own", "building", "covered"), COVERS)
def test_scope_covers_truth_table(
    scope: Scope, own: frozenset[str], building: str | None, covered: bool
) -> None:
    assert scope.covers(own, building) is covered


_BUILDINGS = st.sampled_from(["101", "102", "201", "301", "302"])


@given(st.frozensets(_BUILDINGS), st.frozensets(_BUILDINGS), st.none() | _BUILDINGS)
def test_scopes_nest_and_more_buildings_never_cover_less(
    own: frozenset[str], more: frozenset[str], building: str | None
) -> None:
    for scope in Scope:
        if scope.covers(own, building):
            assert scope.covers(own | more, building)
    if OWN.covers(own, building):
        assert SHARED.covers(own, building)
    if SHARED.covers(own, building) or WIDE.covers(own, building):
        assert D.covers(own, building)
    assert WIDE.covers(own, building) is (building is None)


# ---------------------------------------------------------------------------
# What image test runs need: test clients and persona test accounts
# ---------------------------------------------------------------------------

SYSTEM = Actor(0, "system", Role.SYSTEM)

# (action, actor, building, allowed)
TESTING_GRANTS: list[tuple[str, Action, Actor, str | None, bool]] = [
    ("it marks test clients", Action.MANAGE_TEST_CLIENTS, IT, "101", True),
    ("edtech cannot mark", Action.MANAGE_TEST_CLIENTS, EDTECH, "101", False),
    ("sectec cannot mark its own", Action.MANAGE_TEST_CLIENTS, SECTEC_301, "301", False),
    ("btc cannot mark its own", Action.MANAGE_TEST_CLIENTS, BTC_101, "101", False),
    ("principal cannot mark", Action.MANAGE_TEST_CLIENTS, PRINCIPAL_101, "101", False),
    ("it sets any building's accounts", Action.MANAGE_TEST_ACCOUNTS, IT, "101", True),
    ("sectec sets its own", Action.MANAGE_TEST_ACCOUNTS, SECTEC_301, "301", True),
    ("sectec not another's", Action.MANAGE_TEST_ACCOUNTS, SECTEC_302, "301", False),
    ("btc cannot set its own", Action.MANAGE_TEST_ACCOUNTS, BTC_101, "101", False),
    ("edtech cannot set", Action.MANAGE_TEST_ACCOUNTS, EDTECH, "101", False),
    ("principal cannot set", Action.MANAGE_TEST_ACCOUNTS, PRINCIPAL_101, "101", False),
    ("the system cannot set", Action.MANAGE_TEST_ACCOUNTS, SYSTEM, "101", False),
    ("edtech sees accounts", Action.READ_TEST_ACCOUNTS, EDTECH, "101", True),
    ("sectec sees its own", Action.READ_TEST_ACCOUNTS, SECTEC_301, "301", True),
    ("sectec not another's", Action.READ_TEST_ACCOUNTS, SECTEC_301, "302", False),
    ("btc cannot see", Action.READ_TEST_ACCOUNTS, BTC_101, "101", False),
    ("principal cannot see", Action.READ_TEST_ACCOUNTS, PRINCIPAL_101, "101", False),
]


def test_test_account_refusals_are_worded_from_the_chart() -> None:
    with pytest.raises(Refused) as info:
        authorize(BTC_101, Action.MANAGE_TEST_ACCOUNTS, building="101")
    assert str(info.value) == (
        "refused: BTC cannot set the student and staff test accounts (IT keeps the "
        "district's exception accounts; a SecTec its own building's, which it tests with)"
    )
    with pytest.raises(Refused) as info:
        authorize(SECTEC_302, Action.MANAGE_TEST_ACCOUNTS, building="301")
    assert str(info.value) == (
        "refused: SecTec of 201, 302 cannot set the student and staff test accounts in "
        "building 301 (a building tech acts only in its own buildings)"
    )
    with pytest.raises(Refused) as info:
        authorize(SECTEC_301, Action.MANAGE_TEST_CLIENTS, building="301")
    assert str(info.value) == (
        "refused: SecTec cannot mark or unmark test clients "
        "(IT keeps the pool of test clients per platform and level)"
    )


# ---------------------------------------------------------------------------
# Test plans: who writes the checks run as the student and staff personas
# ---------------------------------------------------------------------------

PLAN_GRANTS: list[tuple[str, Action, Actor, str | None, bool]] = [
    ("it writes base plans", Action.EDIT_BASE_TEST_PLAN, IT, None, True),
    ("edtech writes base plans", Action.EDIT_BASE_TEST_PLAN, EDTECH, None, True),
    ("sectec cannot", Action.EDIT_BASE_TEST_PLAN, SECTEC_301, None, False),
    ("btc cannot", Action.EDIT_BASE_TEST_PLAN, BTC_101, None, False),
    ("principal cannot", Action.EDIT_BASE_TEST_PLAN, PRINCIPAL_101, None, False),
    ("the system cannot", Action.EDIT_BASE_TEST_PLAN, SYSTEM, None, False),
    ("edtech writes any building's", Action.EDIT_CUSTOM_TEST_PLAN, EDTECH, "101", True),
    ("sectec its own", Action.EDIT_CUSTOM_TEST_PLAN, SECTEC_301, "301", True),
    ("sectec not another's", Action.EDIT_CUSTOM_TEST_PLAN, SECTEC_302, "301", False),
    ("btc its own", Action.EDIT_CUSTOM_TEST_PLAN, BTC_101, "101", True),
    ("btc not another's", Action.EDIT_CUSTOM_TEST_PLAN, BTC_101, "102", False),
    ("it does not", Action.EDIT_CUSTOM_TEST_PLAN, IT, "101", False),
    ("principal cannot", Action.EDIT_CUSTOM_TEST_PLAN, PRINCIPAL_101, "101", False),
    ("no building tech plan is district-wide", Action.EDIT_CUSTOM_TEST_PLAN, BTC_101, None, False),
]


@pytest.mark.parametrize(
    ("action", "actor", "building", "allowed"),
    [g[1:] for g in TESTING_GRANTS + PLAN_GRANTS],
    ids=[g[0] for g in TESTING_GRANTS + PLAN_GRANTS],
)
def test_who_may_keep_test_clients_test_accounts_and_test_plans(
    action: Action, actor: Actor, building: str | None, allowed: bool
) -> None:
    assert may(actor, action, building=building) is allowed
    if allowed:
        authorize(actor, action, building=building)
    else:
        with pytest.raises(Refused):
            authorize(actor, action, building=building)


def test_test_plan_refusals_are_worded_from_the_chart() -> None:
    with pytest.raises(Refused) as info:
        authorize(IT, Action.EDIT_CUSTOM_TEST_PLAN, building="101")
    assert str(info.value) == (
        "refused: IT cannot change a customized image's test plan (the building's tech "
        "builds its customized images with EdTech, who tests them)"
    )
    with pytest.raises(Refused) as info:
        authorize(BTC_101, Action.EDIT_BASE_TEST_PLAN, building=None)
    assert str(info.value) == (
        "refused: BTC cannot change a base image's test plan (IT builds base images with "
        "EdTech, who tests them with student and staff logins)"
    )
