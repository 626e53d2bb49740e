"""The pure rules of a rollout: how a deployment moves through its clients.

Two lifecycle tables live here, in the style of :mod:`orchestrator.domain.lifecycle`:

- the **client table** (:data:`CLIENT_TRANSITIONS`): one client's way through
  a deployment, pending → staging → applying → verifying → succeeded, with
  failed, skipped, cancelled and unreachable (retried with backoff, bounded);
- the **deployment table** (:data:`DEPLOYMENT_TRANSITIONS`): the deployment as
  a whole, scheduled → running → paused … → completed | cancelled | failed.

No other module decides whether a move is legal. The one guard beside the
client table is the attempt bound, kept in :func:`advance` with the attempt
count it needs.

Beside the tables: retry backoff (:func:`retry_delay`), waves
(:func:`plan_waves`), concurrency (:func:`pick_next`) and the failure
threshold (:func:`wave_verdict`). All of it is pure: the clock, the database
and the clients are the callers' business.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from enum import StrEnum
from types import MappingProxyType

from orchestrator.errors import InvalidInput, InvalidTransition

# --------------------------------------------------------------------------
# One client in a deployment
# --------------------------------------------------------------------------


class ClientState(StrEnum):
    """Where one client stands in one deployment."""

    PENDING = "pending"
    """Waiting for its wave, its window and a free slot under the concurrency limits."""

    STAGING = "staging"
    """Copying the artifact to the client's cache; nothing on the client has changed yet."""

    APPLYING = "applying"
    """Installing the package or laying down the image: the client is being changed."""

    VERIFYING = "verifying"
    """Checking the result (detection rule, image marker, smoke checks); reads only."""

    UNREACHABLE = "unreachable"
    """The host could not be reached; waits out its backoff, then is retried or failed."""

    SUCCEEDED = "succeeded"
    """Verified: the client runs the new version. Terminal: never pushed again."""

    FAILED = "failed"
    """A step failed, the retries ran out, or a restart left it unconfirmable. Terminal."""

    SKIPPED = "skipped"
    """Already current, or excluded when its turn came. Terminal; not a failure."""

    CANCELLED = "cancelled"
    """Cancelled by the owner, or automatically at the artifact's sunset. Terminal."""


class ClientEvent(StrEnum):
    START_STAGING = "start_staging"
    STAGED = "staged"
    APPLIED = "applied"
    VERIFIED = "verified"
    STEP_FAILED = "step_failed"
    HOST_UNREACHABLE = "host_unreachable"
    RETRY_DUE = "retry_due"
    """The backoff has run out and an attempt is left."""

    GIVE_UP = "give_up"
    """The backoff has run out and every attempt is used."""

    SKIP = "skip"
    CANCEL = "cancel"
    """By the owner, or automatically at sunset: the reason says which."""

    RESUME_AFTER_RESTART = "resume_after_restart"
    """Reconcile after a crash: the step's outcome is unknown; go on from a safe step."""

    FAIL_AFTER_RESTART = "fail_after_restart"
    """Reconcile after a crash: the client's state cannot be confirmed; fail it with why."""


_C = ClientState
_CE = ClientEvent

CLIENT_TRANSITIONS: MappingProxyType[tuple[ClientState, ClientEvent], ClientState] = (
    MappingProxyType(
        {
            # services.rollout.start_clients: picked by pick_next inside its window
            (_C.PENDING, _CE.START_STAGING): _C.STAGING,
            # services.rollout.on_step_result (from the run's events, or from its
            # artifacts when reconciling after a restart)
            (_C.STAGING, _CE.STAGED): _C.APPLYING,
            (_C.APPLYING, _CE.APPLIED): _C.VERIFYING,
            (_C.VERIFYING, _CE.VERIFIED): _C.SUCCEEDED,
            # services.rollout.on_step_result: the step ran and failed, with its message
            (_C.STAGING, _CE.STEP_FAILED): _C.FAILED,
            (_C.APPLYING, _CE.STEP_FAILED): _C.FAILED,
            (_C.VERIFYING, _CE.STEP_FAILED): _C.FAILED,
            # services.rollout.on_step_result: the host dropped or never answered
            (_C.STAGING, _CE.HOST_UNREACHABLE): _C.UNREACHABLE,
            (_C.APPLYING, _CE.HOST_UNREACHABLE): _C.UNREACHABLE,
            (_C.VERIFYING, _CE.HOST_UNREACHABLE): _C.UNREACHABLE,
            # scheduler, after retry_delay(attempts): an attempt is left (advance guards it)
            (_C.UNREACHABLE, _CE.RETRY_DUE): _C.PENDING,
            # scheduler, after retry_delay(attempts): MAX_ATTEMPTS used (advance guards it)
            (_C.UNREACHABLE, _CE.GIVE_UP): _C.FAILED,
            # services.rollout.start_clients: already current, or excluded when its turn came
            (_C.PENDING, _CE.SKIP): _C.SKIPPED,
            # services.rollout.cancel (owner) and services.sunset (automatic): only where
            # nothing on the client has changed yet; a client applying or verifying
            # finishes its step, so a cancel never leaves a machine half imaged
            (_C.PENDING, _CE.CANCEL): _C.CANCELLED,
            (_C.STAGING, _CE.CANCEL): _C.CANCELLED,
            (_C.UNREACHABLE, _CE.CANCEL): _C.CANCELLED,
            # services.rollout.reconcile, at start-up, for a client found in flight whose
            # step outcome the run artifacts do not tell: staging starts over in place
            # (downloads resume by byte range); an interrupted apply is never repeated
            # blindly, the client is re-checked instead; verifying only reads, so again
            (_C.STAGING, _CE.RESUME_AFTER_RESTART): _C.STAGING,
            (_C.APPLYING, _CE.RESUME_AFTER_RESTART): _C.VERIFYING,
            (_C.VERIFYING, _CE.RESUME_AFTER_RESTART): _C.VERIFYING,
            # services.rollout.reconcile: the client cannot be re-checked; fail it with why
            (_C.STAGING, _CE.FAIL_AFTER_RESTART): _C.FAILED,
            (_C.APPLYING, _CE.FAIL_AFTER_RESTART): _C.FAILED,
            (_C.VERIFYING, _CE.FAIL_AFTER_RESTART): _C.FAILED,
        }
    )
)

CLIENT_INITIAL = ClientState.PENDING
CLIENT_TERMINAL = frozenset({_C.SUCCEEDED, _C.FAILED, _C.SKIPPED, _C.CANCELLED})

IN_FLIGHT = frozenset({_C.STAGING, _C.APPLYING, _C.VERIFYING})
"""States a crash can leave a client in; reconciled at start-up, never left so."""

PUSHING = frozenset({_C.STAGING, _C.APPLYING})
"""States in which the orchestrator sends the artifact to the client."""

NEEDS_REASON = frozenset(
    {
        _CE.STEP_FAILED,
        _CE.HOST_UNREACHABLE,
        _CE.SKIP,
        _CE.CANCEL,
        _CE.FAIL_AFTER_RESTART,
    }
)
"""Events a person must be told the why of (``deploy show``); give_up writes its own."""


def _words(value: str) -> str:
    return value.replace("_", " ")


def _refusal(thing: str, state: StrEnum, event: StrEnum, allowed: Iterable[StrEnum]) -> str:
    names = sorted(_words(e.value) for e in allowed)
    tail = f"from {state.value} it can: {', '.join(names)}" if names else f"{state.value} is final"
    return f"{_words(event.value)} is not allowed for {thing} that is {state.value}; {tail}"


def client_events_from(state: ClientState) -> frozenset[ClientEvent]:
    return frozenset(e for (s, e) in CLIENT_TRANSITIONS if s is state)


def next_state(state: ClientState, event: ClientEvent) -> ClientState:
    """Return the state ``event`` moves a client in ``state`` to.

    Raises:
        InvalidTransition: the client table has no such move; the message names
            the state, the event and what is allowed from that state.
    """
    try:
        return CLIENT_TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(
            _refusal("a client", state, event, client_events_from(state))
        ) from None


# --------------------------------------------------------------------------
# Attempts and backoff
# --------------------------------------------------------------------------

MAX_ATTEMPTS = 3
"""How many times a client is started before an unreachable host is failed."""

RETRY_BASE = timedelta(minutes=2)
"""The wait before the second attempt; it doubles for each attempt after."""

RETRY_CAP = timedelta(minutes=30)
"""No wait between attempts is longer than this."""

_MICROSECOND = timedelta(microseconds=1)


def retry_delay(
    attempt: int, *, base: timedelta = RETRY_BASE, cap: timedelta = RETRY_CAP
) -> timedelta:
    """How long a client unreachable on its ``attempt``-th attempt waits before the next.

    ``base`` after the first attempt, doubling after each one, never more than ``cap``.

    Raises:
        InvalidInput: ``attempt`` below 1, ``base`` not positive, or ``cap`` below ``base``.
    """
    if attempt < 1:
        raise InvalidInput(f"attempts are counted from 1, not {attempt}", field="attempt")
    if base <= timedelta(0):
        raise InvalidInput("the retry backoff must be longer than zero", field="base")
    if cap < base:
        raise InvalidInput("the longest retry wait cannot be shorter than the first", field="cap")
    # Integer microseconds, so a large attempt number neither overflows nor rounds.
    base_us = base // _MICROSECOND
    cap_us = cap // _MICROSECOND
    shift = attempt - 1
    if shift >= cap_us.bit_length():
        return cap
    return timedelta(microseconds=min(base_us << shift, cap_us))


def next_retry(
    attempts: int,
    *,
    base: timedelta = RETRY_BASE,
    cap: timedelta = RETRY_CAP,
    max_attempts: int = MAX_ATTEMPTS,
) -> timedelta | None:
    """The wait before an unreachable client's retry, or None if its attempts are used.

    The scheduler fires ``retry_due`` after the wait, or ``give_up`` at once on None.
    """
    if attempts >= max_attempts:
        return None
    return retry_delay(attempts, base=base, cap=cap)


@dataclass(frozen=True)
class ClientRun:
    """One client's standing in one deployment: what services persist per client."""

    state: ClientState = ClientState.PENDING
    attempts: int = 0
    """How many times it was started (start_staging); a restart's resume is not one."""

    reason: str | None = None
    """Why it is where it is, for a person: the failing step's message, the skip, the cancel."""


def advance(
    run: ClientRun,
    event: ClientEvent,
    *,
    reason: str | None = None,
    max_attempts: int = MAX_ATTEMPTS,
) -> ClientRun:
    """The client's standing after ``event``: the table's move, with its attempt count.

    Raises:
        InvalidTransition: the table has no such move, or the attempt bound forbids
            it (a retry or a start with every attempt used, a give-up with attempts left).
        InvalidInput: the event needs a reason (:data:`NEEDS_REASON`) and none was given.
    """
    target = next_state(run.state, event)
    if event in NEEDS_REASON and not (reason and reason.strip()):
        raise InvalidInput(f"{_words(event.value)} needs a reason a person can read")
    attempts = run.attempts
    if event is ClientEvent.START_STAGING:
        if attempts >= max_attempts:
            raise InvalidTransition(
                f"start staging is not allowed: all {max_attempts} attempts are used"
            )
        attempts += 1
    elif event is ClientEvent.RESUME_AFTER_RESTART:
        # Running it again is another attempt: a client whose runs stop the
        # orchestrator each time is failed in the end, never retried forever.
        if attempts >= max_attempts:
            raise InvalidTransition(
                f"resume after restart is not allowed: all {max_attempts} attempts are used;"
                " fail after restart instead"
            )
        attempts += 1
    elif event is ClientEvent.RETRY_DUE and attempts >= max_attempts:
        raise InvalidTransition(
            f"retry due is not allowed: all {max_attempts} attempts are used; give up instead"
        )
    elif event is ClientEvent.GIVE_UP:
        if attempts < max_attempts:
            raise InvalidTransition(
                f"give up is not allowed after {attempts} of {max_attempts} attempts;"
                " retry due instead"
            )
        last = f"; last error: {run.reason}" if run.reason else ""
        reason = f"unreachable after {attempts} attempts{last}"
    if target is ClientState.SUCCEEDED:
        new_reason = None
    else:
        new_reason = reason if reason is not None else run.reason
    return replace(run, state=target, attempts=attempts, reason=new_reason)


# --------------------------------------------------------------------------
# The deployment as a whole
# --------------------------------------------------------------------------


class DeploymentState(StrEnum):
    """Where a deployment stands as a whole."""

    SCHEDULED = "scheduled"
    """Waiting for its start-not-before and an open maintenance window."""

    RUNNING = "running"
    """Inside a window: clients are being started, wave by wave."""

    PAUSED = "paused"
    """Stopped by its owner or by the failure threshold; a person resumes it."""

    COMPLETED = "completed"
    """Every client reached a terminal state. Terminal."""

    CANCELLED = "cancelled"
    """Cancelled by its owner, or automatically at the artifact's sunset. Terminal."""

    FAILED = "failed"
    """Its deadline passed with clients not done. Terminal."""


class DeploymentEvent(StrEnum):
    WINDOW_OPENED = "window_opened"
    WINDOW_CLOSED = "window_closed"
    PAUSE = "pause"
    THRESHOLD_EXCEEDED = "threshold_exceeded"
    """A wave's verdict was Pause (failure threshold, or a pilot failure)."""

    RESUME = "resume"
    RETRY_FAILED = "retry_failed"
    ALL_DONE = "all_done"
    CANCEL = "cancel"
    SUNSET_REACHED = "sunset_reached"
    DEADLINE_PASSED = "deadline_passed"
    RESTARTED = "restarted"
    """The orchestrator started again and found the deployment running."""


_D = DeploymentState
_DE = DeploymentEvent

DEPLOYMENT_TRANSITIONS: MappingProxyType[
    tuple[DeploymentState, DeploymentEvent], DeploymentState
] = MappingProxyType(
    {
        # scheduler: start-not-before passed and the building's window is open
        (_D.SCHEDULED, _DE.WINDOW_OPENED): _D.RUNNING,
        # scheduler: the window closed; clients in flight finish, nothing new starts,
        # and it waits for the next window rather than running into school hours
        (_D.RUNNING, _DE.WINDOW_CLOSED): _D.SCHEDULED,
        # services.rollout.pause: `deploy pause`, by its owner
        (_D.SCHEDULED, _DE.PAUSE): _D.PAUSED,
        (_D.RUNNING, _DE.PAUSE): _D.PAUSED,
        # services.rollout.on_wave_progress: wave_verdict said Pause, with its reason
        (_D.RUNNING, _DE.THRESHOLD_EXCEEDED): _D.PAUSED,
        # services.rollout.resume / retry_failed: `deploy resume | retry-failed`. Back to
        # scheduled, not running: the scheduler starts it at once if its window is open
        # and at the next window otherwise, so a resume never starts work in school hours.
        # retry-failed gives each failed client of the current wave a fresh ClientRun.
        (_D.PAUSED, _DE.RESUME): _D.SCHEDULED,
        (_D.PAUSED, _DE.RETRY_FAILED): _D.SCHEDULED,
        # services.rollout.on_wave_progress: every client is in a terminal state
        (_D.RUNNING, _DE.ALL_DONE): _D.COMPLETED,
        # services.rollout.cancel: `deploy cancel`, by its owner
        (_D.SCHEDULED, _DE.CANCEL): _D.CANCELLED,
        (_D.RUNNING, _DE.CANCEL): _D.CANCELLED,
        (_D.PAUSED, _DE.CANCEL): _D.CANCELLED,
        # services.sunset / services.rollout gate at each start: the artifact's
        # effective sunset date is reached; cancelled with that reason, audited
        (_D.SCHEDULED, _DE.SUNSET_REACHED): _D.CANCELLED,
        (_D.RUNNING, _DE.SUNSET_REACHED): _D.CANCELLED,
        (_D.PAUSED, _DE.SUNSET_REACHED): _D.CANCELLED,
        # scheduler: the deployment's deadline passed with clients not done
        (_D.SCHEDULED, _DE.DEADLINE_PASSED): _D.FAILED,
        (_D.RUNNING, _DE.DEADLINE_PASSED): _D.FAILED,
        (_D.PAUSED, _DE.DEADLINE_PASSED): _D.FAILED,
        # services.rollout.reconcile at start-up: its clients are reconciled and it
        # waits for a window check again, so an outage never makes it start late
        (_D.RUNNING, _DE.RESTARTED): _D.SCHEDULED,
    }
)

DEPLOYMENT_INITIAL = DeploymentState.SCHEDULED
DEPLOYMENT_TERMINAL = frozenset({_D.COMPLETED, _D.CANCELLED, _D.FAILED})


def deployment_events_from(state: DeploymentState) -> frozenset[DeploymentEvent]:
    return frozenset(e for (s, e) in DEPLOYMENT_TRANSITIONS if s is state)


def next_deployment_state(state: DeploymentState, event: DeploymentEvent) -> DeploymentState:
    """Return the state ``event`` moves a deployment in ``state`` to.

    Raises:
        InvalidTransition: the deployment table has no such move; the message names
            the state, the event and what is allowed from that state.
    """
    try:
        return DEPLOYMENT_TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(
            _refusal("a deployment", state, event, deployment_events_from(state))
        ) from None


# --------------------------------------------------------------------------
# Waves
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetClient:
    """A client a deployment targets: only what the rollout rules need of it."""

    id: int
    hostname: str
    building: str
    """The building's number, as the district writes it (``"101"``)."""


@dataclass(frozen=True)
class Wave:
    """Clients started together; a wave starts only once the one before it is done."""

    number: int
    """1, 2, …: the pilot wave, when there is one, is wave 1."""

    clients: tuple[TargetClient, ...]
    building: str | None = None
    """The building of a building wave; None for the pilot wave."""

    pilot: bool = False

    @property
    def label(self) -> str:
        where = "pilot" if self.pilot else f"building {self.building}"
        return f"wave {self.number} ({where})"


def _building_key(building: str) -> tuple[int, int, str]:
    # Building numbers sort as numbers (9 before 101); named sites after, by name.
    if building.isdigit():
        return (0, int(building), building)
    return (1, 0, building.casefold())


def _client_key(client: TargetClient) -> tuple[str, int]:
    return (client.hostname.casefold(), client.id)


def plan_waves(
    clients: Iterable[TargetClient],
    *,
    pilot_names: Iterable[str] = (),
    pilot_per_building: int = 0,
    building_order: Sequence[str] | None = None,
) -> list[Wave]:
    """Split a deployment's targets into waves: the pilot first, then one per building.

    The pilot wave holds the clients named in ``pilot_names`` (hostnames, any
    case) or, with ``pilot_per_building`` N, the first N clients of each
    building by hostname. Buildings follow ``building_order`` (those it does
    not name come after, by number), else go by number. Within a wave clients
    go by hostname. A building whose clients are all in the pilot has no wave.

    Raises:
        InvalidInput: no targets; a client id listed twice; a pilot name that
            is not among the targets; a negative N; both named pilot clients and
            N per building; a building order that repeats a building or names
            one with no targets.
    """
    targets = sorted(clients, key=_client_key)
    if not targets:
        raise InvalidInput("the deployment targets no clients")
    ids = Counter(c.id for c in targets)
    twice = sorted(i for i, n in ids.items() if n > 1)
    if twice:
        raise InvalidInput(f"client ids listed more than once: {', '.join(map(str, twice))}")
    if pilot_per_building < 0:
        raise InvalidInput(
            f"pilot clients per building cannot be negative ({pilot_per_building})",
            field="pilot_per_building",
        )
    names = list(dict.fromkeys(pilot_names))
    if names and pilot_per_building:
        raise InvalidInput(
            "name the pilot clients or give a number per building, not both",
            field="pilot",
        )

    present = {c.building for c in targets}
    order = _order_buildings(present, building_order)

    pilot: list[TargetClient] = []
    if names:
        by_name: dict[str, list[TargetClient]] = {}
        for c in targets:
            by_name.setdefault(c.hostname.casefold(), []).append(c)
        unknown = [n for n in names if n.casefold() not in by_name]
        if unknown:
            listed = ", ".join(unknown)
            noun = "client is" if len(unknown) == 1 else "clients are"
            raise InvalidInput(
                f"pilot {noun} not among the deployment's targets: {listed}",
                field="pilot_names",
            )
        chosen = {c.id for n in names for c in by_name[n.casefold()]}
        pilot = [c for c in targets if c.id in chosen]
    elif pilot_per_building:
        for building in order:
            pilot.extend([c for c in targets if c.building == building][:pilot_per_building])

    rank = {b: i for i, b in enumerate(order)}
    pilot.sort(key=lambda c: (rank[c.building], *_client_key(c)))
    in_pilot = {c.id for c in pilot}

    waves: list[Wave] = []
    if pilot:
        waves.append(Wave(number=1, clients=tuple(pilot), pilot=True))
    for building in order:
        rest = tuple(c for c in targets if c.building == building and c.id not in in_pilot)
        if rest:
            waves.append(Wave(number=len(waves) + 1, clients=rest, building=building))
    return waves


def _order_buildings(present: set[str], building_order: Sequence[str] | None) -> list[str]:
    if building_order is None:
        return sorted(present, key=_building_key)
    repeated = sorted((b for b, n in Counter(building_order).items() if n > 1), key=_building_key)
    if repeated:
        raise InvalidInput(
            f"the building order lists more than once: {', '.join(repeated)}",
            field="building_order",
        )
    absent = [b for b in building_order if b not in present]
    if absent:
        raise InvalidInput(
            f"the building order names buildings with no targeted clients: {', '.join(absent)}",
            field="building_order",
        )
    listed = set(building_order)
    return [*building_order, *sorted(present - listed, key=_building_key)]


# --------------------------------------------------------------------------
# Concurrency
# --------------------------------------------------------------------------


def pick_next(
    pending_in_wave: Sequence[TargetClient],
    running_by_building: Mapping[str, int],
    *,
    per_building: int,
    district_wide: int,
) -> list[TargetClient]:
    """Which pending clients may start now without going over either limit.

    ``running_by_building`` counts the clients in flight (staging, applying,
    verifying) per building, across the district. Buildings take turns, one
    client each, in the order they first appear in ``pending_in_wave``, so a
    pilot wave spreads over the buildings' links instead of filling the first.
    Within a building clients keep their order. A limit already exceeded (it
    was lowered mid-run) starts nothing; it is not an error.

    Raises:
        InvalidInput: a limit below 1, or a negative running count.
    """
    if per_building < 1:
        raise InvalidInput("at least one client per building must be allowed", field="per_building")
    if district_wide < 1:
        raise InvalidInput(
            "at least one client district-wide must be allowed", field="district_wide"
        )
    negative = sorted(b for b, n in running_by_building.items() if n < 0)
    if negative:
        raise InvalidInput(f"negative running counts for buildings: {', '.join(negative)}")

    queues: dict[str, list[TargetClient]] = {}
    for client in dict.fromkeys(pending_in_wave):
        queues.setdefault(client.building, []).append(client)
    room_district = district_wide - sum(running_by_building.values())
    room = {b: per_building - running_by_building.get(b, 0) for b in queues}

    picked: list[TargetClient] = []
    while room_district > 0:
        took = False
        for building, queue in queues.items():
            if room_district <= 0:
                break
            if queue and room[building] > 0:
                picked.append(queue.pop(0))
                room[building] -= 1
                room_district -= 1
                took = True
        if not took:
            break
    return picked


# --------------------------------------------------------------------------
# Failure threshold
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class WaveCounts:
    """How a wave's clients stand, counted by state."""

    wave: Wave
    by_state: Mapping[ClientState, int] = field(default_factory=dict)

    @classmethod
    def tally(cls, wave: Wave, states: Iterable[ClientState]) -> WaveCounts:
        return cls(wave=wave, by_state=MappingProxyType(dict(Counter(states))))

    def count(self, state: ClientState) -> int:
        return self.by_state.get(state, 0)

    @property
    def total(self) -> int:
        return sum(self.by_state.values())

    @property
    def failed(self) -> int:
        """Failed clients; an unreachable client counts once its attempts ran out."""
        return self.count(ClientState.FAILED)

    @property
    def skipped(self) -> int:
        return self.count(ClientState.SKIPPED)

    @property
    def counted(self) -> int:
        """The clients the threshold is measured over: every one not skipped."""
        return self.total - self.skipped

    @property
    def finished(self) -> bool:
        """Every client is in a terminal state: the next wave may start (if Continue)."""
        return all(s in CLIENT_TERMINAL for s, n in self.by_state.items() if n)


@dataclass(frozen=True)
class Continue:
    """Nothing stops the rollout: go on with this wave, or the next once it is finished."""


@dataclass(frozen=True)
class Pause:
    """The rollout must pause; ``reason`` is what its owner is told."""

    reason: str


Verdict = Continue | Pause


def wave_verdict(counts: WaveCounts, *, threshold_pct: float) -> Verdict:
    """Pause when more than ``threshold_pct`` of a wave's clients failed; in the pilot, any.

    Skipped clients count neither as failed nor in the total measured. The
    verdict can come while the wave runs: failures only grow, so once over
    the threshold the wave cannot come back under it.

    Raises:
        InvalidInput: ``threshold_pct`` outside 0..100.
    """
    if not 0 <= threshold_pct <= 100:
        raise InvalidInput(
            f"the failure threshold is a percentage from 0 to 100, not {threshold_pct:g}",
            field="threshold_pct",
        )
    failed, counted = counts.failed, counts.counted
    if not failed:
        return Continue()
    noun = "client" if counted == 1 else "clients"
    what = f"{failed} of {counted} {noun} failed in {counts.wave.label}"
    if counts.skipped:
        what += f" ({counts.skipped} skipped not counted)"
    if counts.wave.pilot:
        return Pause(f"{what}; every pilot client must succeed before the other waves start")
    if failed * 100 > threshold_pct * counted:
        return Pause(f"{what}, over the {threshold_pct:g}% threshold")
    return Continue()
