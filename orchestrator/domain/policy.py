"""Who may do what, where: the permission table and the approval chain policies.

Pure rules, no I/O. Services call :func:`authorize` and :func:`authorize_step`
before they change anything; the CLI and (later) the web pages only show the
:class:`~orchestrator.errors.Refused` message these raise.

Two kinds of rule live here:

* :data:`PERMISSIONS`: actions outside the chain (reading, authoring,
  managing the Approved Technology List), role x scope.
* :class:`ChainPolicy`: per releasable kind, the ordered steps of the approval
  chain, which roles may act at each step, over which buildings, and whether
  the author may act. The district default (:data:`DEFAULT_POLICIES`) follows
  ``shared/DOMAIN.md``; policies are data and are stored in the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from orchestrator.domain.lifecycle import Event
from orchestrator.domain.states import Audience, Kind, Role, State, Step
from orchestrator.errors import InvalidInput, Refused


class Scope(StrEnum):
    """Which targets a grant covers, by the target's building."""

    DISTRICT = "district"
    """Every target, district-wide or in any building."""

    OWN_BUILDING = "own_building"
    """Targets in one of the actor's own buildings; not district-wide ones."""

    OWN_OR_SHARED = "own_or_shared"
    """The actor's own buildings plus district-wide targets (for reading)."""

    DISTRICT_WIDE = "district_wide"
    """District-wide targets only: a building's own items are its tech's to decide."""

    def covers(self, own: frozenset[str], building: str | None) -> bool:
        if self is Scope.DISTRICT:
            return True
        if building is None:
            return self in (Scope.OWN_OR_SHARED, Scope.DISTRICT_WIDE)
        return self is not Scope.DISTRICT_WIDE and building in own


@dataclass(frozen=True)
class Actor:
    """A person acting in one role, with the buildings (by number) that role covers."""

    person_id: int
    username: str
    role: Role
    buildings: frozenset[str] = frozenset()

    def describe(self) -> str:
        if self.buildings:
            return f"{self.role.label} of {', '.join(sorted(self.buildings))}"
        return self.role.label


SYSTEM_ACTOR = Actor(person_id=0, username="system", role=Role.SYSTEM)


class Action(StrEnum):
    """Actions outside the approval chain's steps."""

    READ_CATALOG = "read_catalog"
    READ_AUDIT = "read_audit"
    VERIFY_AUDIT = "verify_audit"
    MANAGE_HARDWARE = "manage_hardware"
    RUN_SUNSET_CHECK = "run_sunset_check"
    MANAGE_CLIENTS = "manage_clients"
    RUN_PLAYBOOK = "run_playbook"
    ROLL_OUT_BASE_IMAGE = "roll_out_base_image"
    MANAGE_WINDOWS = "manage_windows"
    MANAGE_CREDENTIALS = "manage_credentials"
    MANAGE_ACCOUNTS = "manage_accounts"
    FILE_REQUEST = "file_request"
    WORK_REQUEST = "work_request"
    MANAGE_REQUEST_CATEGORIES = "manage_request_categories"
    MANAGE_IMAGE_STORE = "manage_image_store"
    MANAGE_TEST_CLIENTS = "manage_test_clients"
    MANAGE_TEST_ACCOUNTS = "manage_test_accounts"
    READ_TEST_ACCOUNTS = "read_test_accounts"
    EDIT_BASE_TEST_PLAN = "edit_base_test_plan"
    EDIT_CUSTOM_TEST_PLAN = "edit_custom_test_plan"
    MAINTAIN_BASE = "maintain_base"
    MAINTAIN_CUSTOM = "maintain_custom"
    MAINTAIN_ADMIN_PACKAGE = "maintain_admin_package"
    MAINTAIN_INSTRUCTIONAL_PACKAGE = "maintain_instructional_package"
    MAINTAIN_LOCAL_PACKAGE = "maintain_local_package"


@dataclass(frozen=True)
class Grant:
    """Roles allowed an action, each with its scope, and the rule in the district's words."""

    roles: Mapping[Role, Scope]
    doing: str
    rule: str


_D, _OWN, _SHARED = Scope.DISTRICT, Scope.OWN_BUILDING, Scope.OWN_OR_SHARED
_ALL_READERS: Mapping[Role, Scope] = MappingProxyType(
    {
        Role.IT: _D,
        Role.EDTECH: _D,
        Role.SECTEC: _SHARED,
        Role.BTC: _SHARED,
        Role.PRINCIPAL: _SHARED,
        Role.SYSTEM: _D,
    }
)

PERMISSIONS: Mapping[Action, Grant] = MappingProxyType(
    {
        Action.READ_CATALOG: Grant(
            _ALL_READERS,
            "see this",
            "building staff see their own buildings and district-wide items",
        ),
        Action.READ_AUDIT: Grant(
            _ALL_READERS,
            "read this audit trail",
            "building staff see their own buildings and district-wide items",
        ),
        Action.VERIFY_AUDIT: Grant(
            {Role.IT: _D, Role.SYSTEM: _D},
            "verify the audit log",
            "audit integrity checks belong to IT",
        ),
        Action.MANAGE_HARDWARE: Grant(
            {Role.IT: _D},
            "change the Approved Technology List",
            "IT records the Hardware Standards Committee's decisions",
        ),
        Action.RUN_SUNSET_CHECK: Grant(
            {Role.IT: _D, Role.SYSTEM: _D},
            "run the sunset check",
            "the service runs it every day; IT may run it now",
        ),
        Action.MANAGE_CLIENTS: Grant(
            {Role.IT: _D, Role.SECTEC: _OWN, Role.BTC: _OWN, Role.SYSTEM: _D},
            "manage client computers",
            "IT and each building's tech manage the building's hardware",
        ),
        Action.RUN_PLAYBOOK: Grant(
            {Role.IT: _D, Role.SECTEC: _OWN, Role.BTC: _OWN, Role.SYSTEM: _D},
            "run playbooks on client computers",
            "IT, and each building's tech on its own building's computers",
        ),
        Action.ROLL_OUT_BASE_IMAGE: Grant(
            {Role.IT: _D, Role.SYSTEM: _D},
            "put a base image itself on a building's computers",
            "version upgrades are tested and rolled out by IT; building techs deploy "
            "their customized images",
        ),
        Action.MANAGE_WINDOWS: Grant(
            {Role.IT: _D, Role.SECTEC: _OWN, Role.BTC: _OWN, Role.SYSTEM: _D},
            "set maintenance windows or import calendars",
            "IT keeps the district calendar; each building's tech sets when its computers "
            "may be worked on",
        ),
        Action.MANAGE_CREDENTIALS: Grant(
            {Role.IT: _D},
            "set the district's client login secrets",
            "the keys and passwords the orchestrator logs in to clients with are IT's",
        ),
        Action.MANAGE_ACCOUNTS: Grant(
            {Role.IT: _D},
            "set other people's passwords or unlock their accounts",
            "IT runs the district's accounts; everyone else may change only their own password",
        ),
        # Briefing #2872: every request goes through the one intake, even one the
        # building's technician could handle; principals and APs file for their school.
        Action.FILE_REQUEST: Grant(
            {
                Role.IT: _D,
                Role.EDTECH: _D,
                Role.SECTEC: _OWN,
                Role.BTC: _OWN,
                Role.PRINCIPAL: _OWN,
            },
            "file a request for this building",
            "anyone in a building files its requests; the district's staff file for any",
        ),
        Action.WORK_REQUEST: Grant(
            {Role.IT: _D, Role.SECTEC: _OWN, Role.BTC: _OWN},
            "work on this request",
            "a building's requests are its technician's, escalating to IT",
        ),
        Action.MANAGE_REQUEST_CATEGORIES: Grant(
            {Role.IT: _D},
            "change the request categories",
            "IT keeps the catalog of request categories and where each is routed",
        ),
        Action.MANAGE_IMAGE_STORE: Grant(
            {Role.IT: _D, Role.SYSTEM: _D},
            "manage the image store and its distribution points",
            "the district's image store and its signing keys are IT's",
        ),
        Action.MANAGE_TEST_CLIENTS: Grant(
            {Role.IT: _D},
            "mark or unmark test clients",
            "IT keeps the pool of test clients per platform and level",
        ),
        # The chart gives IT the district's exception-user tooling and each SecTec the
        # site-specific exception accounts and the testing with student/staff logins of
        # its own building; a BTC creates exception accounts too, but does not test
        # images, so it has no use for the test accounts' passwords.
        Action.MANAGE_TEST_ACCOUNTS: Grant(
            {Role.IT: _D, Role.SECTEC: _OWN},
            "set the student and staff test accounts",
            "IT keeps the district's exception accounts; a SecTec its own building's, "
            "which it tests with",
        ),
        Action.READ_TEST_ACCOUNTS: Grant(
            {Role.IT: _D, Role.EDTECH: _D, Role.SECTEC: _OWN, Role.SYSTEM: _D},
            "see the student and staff test accounts",
            "those who test images with student and staff logins, and IT who keeps the accounts",
        ),
        # "Test applications/images with student/staff logins" is EdTech's (and a SecTec's
        # for its site); IT creates base images with EdTech, so both keep a base image's
        # checks. A building's own checks are its tech's (SecTec or BTC, who build the
        # image) and EdTech's, who collaborates on every building's customized images.
        Action.EDIT_BASE_TEST_PLAN: Grant(
            {Role.IT: _D, Role.EDTECH: _D},
            "change a base image's test plan",
            "IT builds base images with EdTech, who tests them with student and staff logins",
        ),
        Action.EDIT_CUSTOM_TEST_PLAN: Grant(
            {Role.EDTECH: _D, Role.SECTEC: _OWN, Role.BTC: _OWN},
            "change a customized image's test plan",
            "the building's tech builds its customized images with EdTech, who tests them",
        ),
        Action.MAINTAIN_BASE: Grant(
            {Role.IT: _D, Role.SYSTEM: _D},
            "create, revise or retire base images",
            "IT creates base images with EdTech",
        ),
        Action.MAINTAIN_CUSTOM: Grant(
            {Role.SECTEC: _OWN, Role.BTC: _OWN, Role.SYSTEM: _D},
            "create, revise, rebase or retire customized images",
            "each building's tech builds its customized images with EdTech",
        ),
        Action.MAINTAIN_ADMIN_PACKAGE: Grant(
            {Role.IT: _D, Role.SYSTEM: _D},
            "package admin-staff installers",
            "IT creates and maintains package installers for admin staff",
        ),
        Action.MAINTAIN_INSTRUCTIONAL_PACKAGE: Grant(
            {Role.IT: _D, Role.EDTECH: _D, Role.SYSTEM: _D},
            "package district-wide instructional applications",
            "IT and EdTech package district-wide applications",
        ),
        Action.MAINTAIN_LOCAL_PACKAGE: Grant(
            {Role.EDTECH: _D, Role.SECTEC: _OWN, Role.SYSTEM: _D},
            "package a building's local applications",
            "EdTech or the building's SecTec configures local applications",
        ),
    }
)

MAINTAIN_ACTION: Mapping[Kind, Action] = MappingProxyType(
    {Kind.BASE_IMAGE: Action.MAINTAIN_BASE, Kind.CUSTOM_IMAGE: Action.MAINTAIN_CUSTOM}
)

PACKAGE_MAINTAIN_ACTION: Mapping[Audience, Action] = MappingProxyType(
    {
        Audience.ADMIN_STAFF: Action.MAINTAIN_ADMIN_PACKAGE,
        Audience.INSTRUCTIONAL: Action.MAINTAIN_INSTRUCTIONAL_PACKAGE,
        Audience.BUILDING_LOCAL: Action.MAINTAIN_LOCAL_PACKAGE,
    }
)


def maintain_action(kind: Kind, audience: Audience | None = None) -> Action:
    """The action that covers creating, revising and retiring one thing of ``kind``."""
    if kind is Kind.PACKAGE:
        if audience is None:
            raise ValueError("a package's maintain action depends on its audience")
        return PACKAGE_MAINTAIN_ACTION[audience]
    return MAINTAIN_ACTION[kind]


def _check_grant(actor: Actor, grant: Grant, building: str | None) -> None:
    scope = grant.roles.get(actor.role)
    if scope is None:
        raise Refused(f"{actor.role.label} cannot {grant.doing} ({grant.rule})")
    if not scope.covers(actor.buildings, building):
        if scope is Scope.DISTRICT_WIDE:
            raise Refused(
                f"{actor.describe()} cannot {grant.doing} for building {building} "
                f"({grant.rule}; a building's own items are decided by its tech)"
            )
        if building is None:
            raise Refused(
                f"{actor.describe()} cannot {grant.doing} for the whole district "
                f"(a building tech acts only in its own buildings)"
            )
        raise Refused(
            f"{actor.describe()} cannot {grant.doing} in building {building} "
            f"(a building tech acts only in its own buildings)"
        )


def authorize(actor: Actor, action: Action, *, building: str | None) -> None:
    """Allow ``actor`` to perform ``action`` on a target in ``building`` (None: district-wide).

    Raises:
        Refused: the role may not do it, or not in that building.
    """
    _check_grant(actor, PERMISSIONS[action], building)


def authorize_role(actor: Actor, action: Action) -> None:
    """Allow ``actor``'s role to perform ``action`` somewhere (scope checked later).

    Raises:
        Refused: the role has no grant for the action at all.
    """
    grant = PERMISSIONS[action]
    if actor.role not in grant.roles:
        raise Refused(f"{actor.role.label} cannot {grant.doing} ({grant.rule})")


def may(actor: Actor, action: Action, *, building: str | None) -> bool:
    """True when :func:`authorize` would allow it; for filtering listings."""
    grant = PERMISSIONS[action]
    scope = grant.roles.get(actor.role)
    return scope is not None and scope.covers(actor.buildings, building)


# ---------------------------------------------------------------------------
# The approval chain
# ---------------------------------------------------------------------------

_STEP_ORDER = (Step.REVIEW, Step.TEST, Step.PUBLISH)

_STEP_PASS_EVENT = MappingProxyType(
    {Step.REVIEW: Event.PASS_REVIEW, Step.TEST: Event.PASS_TESTS, Step.PUBLISH: Event.PUBLISH}
)


@dataclass(frozen=True)
class ChainStep:
    """One step of a chain: who may decide it, over which buildings, and author rule."""

    step: Step
    roles: Mapping[Role, Scope]
    author_may_act: bool = False
    needs_evidence: bool = False
    """A passing student and staff test run, bound to the current digest, is required."""

    @property
    def pending_in(self) -> State:
        return self.step.pending_in

    @property
    def pass_event(self) -> Event:
        return _STEP_PASS_EVENT[self.step]

    def who(self) -> str:
        """The roles allowed, in words: 'EdTech or a SecTec of the building'."""
        parts = []
        for role, scope in self.roles.items():
            if scope is Scope.DISTRICT:
                parts.append(role.label)
            elif scope is Scope.DISTRICT_WIDE:
                parts.append(f"{role.label} (district-wide ones)")
            else:
                parts.append(f"a {role.label} of the building")
        return " or ".join(parts)

    def to_data(self) -> dict[str, Any]:
        return {
            "step": self.step.value,
            "roles": {r.value: s.value for r, s in self.roles.items()},
            "author_may_act": self.author_may_act,
            "needs_evidence": self.needs_evidence,
        }


_STEP_NOUN = {Step.REVIEW: "review", Step.TEST: "testing", Step.PUBLISH: "publishing"}


def step_doing(kind: Kind, step: Step) -> str:
    if step is Step.REVIEW:
        return f"review {kind.label}s"
    if step is Step.TEST:
        noun = "image" if kind is not Kind.PACKAGE else "package"
        return f"sign off {noun} tests"
    return "publish base images" if kind is Kind.BASE_IMAGE else f"release {kind.label}s"


def step_noun(kind: Kind, step: Step) -> str:
    if step is Step.PUBLISH and kind is not Kind.BASE_IMAGE:
        return "release"
    return _STEP_NOUN[step]


@dataclass(frozen=True)
class ChainPolicy:
    """The ordered approval steps for one kind of releasable thing."""

    kind: Kind
    steps: tuple[ChainStep, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        validate_policy(self)

    def step(self, step: Step) -> ChainStep:
        for s in self.steps:
            if s.step is step:
                return s
        raise InvalidInput(f"the {self.kind.label} chain has no {step.value} step")

    def pending_step(self, state: State) -> ChainStep | None:
        """The step waiting for a decision in ``state``, if any."""
        for s in self.steps:
            if s.pending_in is state:
                return s
        return None

    def submit_event(self) -> Event:
        """The event that hands a draft to the first step."""
        return Event.SUBMIT if self.steps[0].step is Step.REVIEW else Event.PASS_REVIEW

    def to_data(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "steps": [s.to_data() for s in self.steps]}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> ChainPolicy:
        """Build a policy from stored data.

        Raises:
            InvalidInput: unknown kind, step, role or scope, or steps out of order.
        """
        try:
            kind = Kind(data["kind"])
            steps = tuple(
                ChainStep(
                    step=Step(s["step"]),
                    roles=MappingProxyType(
                        {Role(r): Scope(sc) for r, sc in dict(s["roles"]).items()}
                    ),
                    author_may_act=bool(s.get("author_may_act", False)),
                    needs_evidence=bool(s.get("needs_evidence", False)),
                )
                for s in data["steps"]
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise InvalidInput(f"malformed chain policy: {exc}") from exc
        return cls(kind=kind, steps=steps)


def validate_policy(policy: ChainPolicy) -> None:
    """A chain must test and publish, in the lifecycle's order, and never let
    principals or the system decide a step.

    Raises:
        InvalidInput: the policy could not be followed by the lifecycle table.
    """
    names = [s.step for s in policy.steps]
    where = f"{policy.kind.label} chain"
    if Step.TEST not in names or Step.PUBLISH not in names:
        raise InvalidInput(f"{where}: must include a test step and a publish step")
    if names != [s for s in _STEP_ORDER if s in names]:
        raise InvalidInput(f"{where}: steps must run review, test, publish in that order")
    for s in policy.steps:
        if not s.roles:
            raise InvalidInput(f"{where}: the {s.step.value} step names no role")
        bad = {Role.PRINCIPAL, Role.SYSTEM} & set(s.roles)
        if bad:
            raise InvalidInput(
                f"{where}: {', '.join(r.label for r in bad)} cannot decide the {s.step.value} step"
            )
        if s.step is Step.TEST and not s.needs_evidence:
            raise InvalidInput(f"{where}: the test step must require student and staff evidence")
        if s.step in (Step.REVIEW, Step.TEST) and s.author_may_act:
            raise InvalidInput(f"{where}: no one approves a review or test step of their own work")


def _roles(**kw: Scope) -> Mapping[Role, Scope]:
    return MappingProxyType({Role(k): v for k, v in kw.items()})


DEFAULT_POLICIES: Mapping[Kind, ChainPolicy] = MappingProxyType(
    {
        # IT builds it → EdTech reviews → tested with student and staff logins → IT publishes.
        Kind.BASE_IMAGE: ChainPolicy(
            Kind.BASE_IMAGE,
            (
                ChainStep(Step.REVIEW, _roles(edtech=_D)),
                ChainStep(Step.TEST, _roles(edtech=_D), needs_evidence=True),
                ChainStep(Step.PUBLISH, _roles(it=_D), author_may_act=True),
            ),
        ),
        # The building's tech builds it → EdTech reviews → tested (EdTech, or a SecTec of
        # the building, never the author) → the building's tech releases it.
        Kind.CUSTOM_IMAGE: ChainPolicy(
            Kind.CUSTOM_IMAGE,
            (
                ChainStep(Step.REVIEW, _roles(edtech=_D)),
                ChainStep(Step.TEST, _roles(edtech=_D, sectec=_OWN), needs_evidence=True),
                ChainStep(Step.PUBLISH, _roles(sectec=_OWN, btc=_OWN), author_may_act=True),
            ),
        ),
        # Its owner packages it → tested → released district-wide by IT, or for one
        # building by its tech.
        Kind.PACKAGE: ChainPolicy(
            Kind.PACKAGE,
            (
                ChainStep(Step.TEST, _roles(edtech=_D, sectec=_OWN), needs_evidence=True),
                ChainStep(
                    Step.PUBLISH,
                    _roles(it=Scope.DISTRICT_WIDE, sectec=_OWN, btc=_OWN),
                    author_may_act=True,
                ),
            ),
        ),
    }
)


def authorize_step(
    actor: Actor,
    policy: ChainPolicy,
    step: Step,
    *,
    building: str | None,
    authors: Iterable[int],
    doing: str | None = None,
) -> None:
    """Allow ``actor`` to decide (approve, reject, record tests for) ``step``.

    ``authors`` are the people whose work this is (creator, last reviser);
    ``doing`` words the refusal when the act is not the decision itself.

    Raises:
        Refused: role not in the step, building out of scope, or the actor's own work.
    """
    chain_step = policy.step(step)
    rule = f"the chain gives {step_noun(policy.kind, step)} to {chain_step.who()}"
    _check_grant(
        actor,
        Grant(chain_step.roles, doing or step_doing(policy.kind, step), rule),
        building,
    )
    if not chain_step.author_may_act and actor.person_id in set(authors):
        raise Refused(
            f"{actor.username} cannot decide the {step.value} step of their own "
            f"{policy.kind.label} (no one approves a review or test step of their own work)"
        )


def may_decide(
    actor: Actor,
    policy: ChainPolicy,
    step: Step,
    *,
    building: str | None,
    authors: Iterable[int],
) -> bool:
    try:
        authorize_step(actor, policy, step, building=building, authors=authors)
    except Refused:
        return False
    return True
