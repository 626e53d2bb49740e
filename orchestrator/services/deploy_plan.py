"""``deploy plan``: who would get a released package or image, and who not and why.

A plan is the dry run of a deployment: it changes nothing and writes nothing.

Targets are the union of

* building numbers (``101``),
* inventory groups as ``orchestrator inventory export`` names them
  (:func:`orchestrator.services.inventory.group_name`): ``building_101``,
  ``level_elementary``, ``platform_mac``, ``room_101_lab_a``, and ``all``,
* rooms as ``BUILDING/ROOM`` (``101/lab-a``, case-insensitive),
* client host names.

A malformed target is InvalidInput and an unknown one NotFound, each named;
a union with no clients in it is InvalidInput, never an empty success.

Scope (chosen: refused outright, not excluded). The requester may deploy to
a building as it may run playbooks there (IT: any building; a SecTec or BTC:
its own). A target that names a building the requester cannot see (its
number, a room or a building or room group there) is not found, worded as
for a number that names no building, so building staff are not told which
other buildings exist (as ``buildings`` and ``clients list`` tell them
nothing); one it sees but may not deploy to is refused, naming each such
building. A client host name in a building the requester cannot see is not
found, as in ``clients list``. Groups that name no building (``level_*``,
``platform_*``, ``all``) hold, for a building tech, the clients of its own
buildings, exactly as its exported inventory does.

The gates are delivery's (:mod:`orchestrator.services.delivery`): released,
not sunset, for each building the targets name (a customized image or a
local package only for its own building; a base image only by IT), every file
a client would download there with the approved SHA-256, and a package the
clients can detect.

Each client the targets reach is then included, or excluded with the first
of these reasons that applies, in this order (:data:`REASON_ORDER`):

1. ``wrong_platform``: not the package's or image's platform;
2. ``wrong_level``: a base image's level is not the building's; a customized
   image or a building-local package is another building's (reached through
   a group that names no building);
3. ``model_not_approved``: the model is not on the Approved Technology List,
   not approved, or past its end of support;
4. ``model_unsupported``: the image or package declares the models it
   supports, and this one is not among them;
5. ``already_current``: an image: the client's image marker is the image's;
   a package: :mod:`orchestrator.services.installed` records for the client
   ``name@version``, a Mac's ``receipt@version`` or a PC's MSI product code
   (what ``install_package`` itself tests), ignoring case: gathered in its
   software list, or installed there by the orchestrator. A bare Mac receipt,
   which is what ``pkgutil --pkgs`` gathers, says nothing of the version:
   such a Mac, unless the orchestrator installed this release on it, is
   included and the play checks the version there;
6. ``offline``: last seen longer ago than ``offline_after`` (14 days).

A client never seen (imported, never gathered or run on) is included, marked
``never_seen``: the inventory has no last contact to call it offline by, and
a deployment reaches it or records it unreachable.

Everything is read in a few set-based queries, whatever the number of
clients (see ``benchmarks/deploy_plan.py``).
"""

from __future__ import annotations

import gc
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from orchestrator.db.models import Building, Client, HardwareModel, Releasable, ReleasableModel
from orchestrator.db.session import transaction
from orchestrator.domain import validation
from orchestrator.domain.policy import Action, Actor, authorize_role, may
from orchestrator.domain.states import Kind, Level, Platform
from orchestrator.errors import InvalidInput, NotFound, Refused
from orchestrator.services import catalog, delivery, installed, inventory, releasables
from orchestrator.services.context import Context
from orchestrator.services.refs import building_of, ref_of

DEFAULT_OFFLINE_AFTER = timedelta(days=14)


class Reason(StrEnum):
    """Why a client the targets reach would not get the thing."""

    WRONG_PLATFORM = "wrong_platform"
    WRONG_LEVEL = "wrong_level"
    MODEL_NOT_APPROVED = "model_not_approved"
    MODEL_UNSUPPORTED = "model_unsupported"
    ALREADY_CURRENT = "already_current"
    OFFLINE = "offline"

    @property
    def words(self) -> str:
        return {
            Reason.WRONG_PLATFORM: "wrong platform",
            Reason.WRONG_LEVEL: "wrong level or building",
            Reason.MODEL_NOT_APPROVED: "model not approved",
            Reason.MODEL_UNSUPPORTED: "model not supported",
            Reason.ALREADY_CURRENT: "already current",
            Reason.OFFLINE: "offline",
        }[self]


REASON_ORDER: tuple[Reason, ...] = tuple(Reason)
"""The order reasons are tried in; a client is excluded for the first that applies."""


@dataclass(slots=True)
class PlannedClient:
    """A client that would get the thing."""

    hostname: str
    building: str
    room: str
    never_seen: bool = False
    """No last contact recorded: included, its state unknown until it is reached."""


@dataclass(slots=True)
class ExcludedClient:
    """A client the targets reach that would not get the thing, and why."""

    hostname: str
    building: str
    room: str
    reason: Reason
    text: str


@dataclass(frozen=True)
class BuildingCount:
    building: str
    name: str
    included: int
    excluded: int


@dataclass(frozen=True)
class RoomCount:
    building: str
    room: str
    included: int
    never_seen: int
    excluded: int


@dataclass
class Plan:
    """What a deployment of ``ref`` to the targets would do; nothing is written.

    The counts are always complete. ``included`` and ``excluded`` list every
    client when ``listed``; otherwise (``plan(..., listed=False)``)
    ``included`` is empty and ``excluded`` holds the first excluded clients
    in building, room and host order, up to the sample asked for.
    """

    ref: str
    kind: Kind
    platform: Platform
    included: list[PlannedClient]
    excluded: list[ExcludedClient]
    buildings: list[BuildingCount]
    """Per building the targets reach, in building order."""
    rooms: list[RoomCount]
    """Per building and room the targets reach, in that order."""
    gates: list[str]
    """The gates passed, in words."""
    included_count: int = 0
    excluded_count: int = 0
    never_seen: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    """Excluded clients per reason code, in :data:`REASON_ORDER`."""
    listed: bool = True

    def summary(self) -> str:
        """One line: '23 clients in 2 buildings would get scratch@3.30; 5 excluded: …'."""
        places = sum(1 for b in self.buildings if b.included)
        line = (
            f"{_n(self.included_count, 'client')} in {_n(places, 'building')} would get {self.ref}"
        )
        if self.never_seen:
            line += f" ({self.never_seen} never seen yet)"
        if self.excluded_count:
            parts = ", ".join(f"{n} {Reason(code).words}" for code, n in self.reasons.items())
            line += f"; {self.excluded_count} excluded: {parts}"
        else:
            line += "; none excluded"
        return line


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def plan(
    ctx: Context,
    actor: Actor,
    *,
    package: str | None = None,
    image: str | None = None,
    buildings: Iterable[str] = (),
    groups: Iterable[str] = (),
    rooms: Iterable[str] = (),
    clients: Iterable[str] = (),
    offline_after: timedelta = DEFAULT_OFFLINE_AFTER,
    listed: bool = True,
    sample: int = 50,
) -> Plan:
    """Who would get ``package`` or ``image`` (exactly one) among the targets' clients.

    ``listed=False`` counts in the database and lists only the first
    ``sample`` excluded clients: what a person reads, and a district-wide plan
    does not hand back 150,000 clients one by one.

    Raises:
        InvalidInput: not exactly one of package/image, no targets, a malformed
            target, a target union with no clients, an artifact missing or changed
            since approval, a package clients cannot detect.
        NotFound: the package or image, or a building, group, room or client
            (each unknown one, or one in a building the requester cannot see, is named).
        Refused: the role deploys nothing, a named building the requester sees but
            may not deploy to, the thing not released or another building's, a base
            image by someone other than IT. SunsetReached: past its sunset.
    """
    if (package is None) == (image is None):
        raise InvalidInput("give one of --package or --image", field="package")
    wanted = _Wanted(
        buildings=_clean(buildings),
        groups=_clean(groups),
        rooms=_clean(rooms),
        clients=[h.lower() for h in _clean(clients)],
    )
    if wanted.empty:
        raise InvalidInput(
            "say which clients: --building, --group, --room or --client (repeatable)",
            field="targets",
        )
    authorize_role(actor, Action.RUN_PLAYBOOK)
    today = ctx.today()
    cutoff = ctx.now() - offline_after
    with transaction(ctx.engine) as session:
        row = _resolve(session, actor, package=package, image=image)
        everything = {b.number: b for b in session.exec(select(Building))}
        targets = _targets(session, actor, wanted, everything)
        gates = _gates(session, actor, row, targets.named, today)
        if _postgres(session):
            # The sort of a district's clients fits in memory, not in the default
            # 4 MB; and compiling the query (JIT, which its cost estimate asks for)
            # takes longer than running it: half a second for 150,000 clients.
            session.execute(sa.text("SET LOCAL work_mem = '64MB'"))
            session.execute(sa.text("SET LOCAL jit = off"))
        judge = _Judge(session, row, today, cutoff, everything)
        source = _Source(session, judge, targets, actor, everything)
        if listed:
            included, excluded = source.every_client()
            counts = _counts_of(included, excluded)
        else:
            included, excluded = [], source.first_excluded(sample)
            counts = source.counts()
        if not counts:
            raise InvalidInput(
                f"{wanted.describe()} resolves to no clients"
                + ("" if _district(actor) else " in your buildings"),
                field="targets",
            )
    return _assemble(row, included, excluded, counts, gates, everything, listed=listed)


# ---------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------

_GROUP = re.compile(r"(building|level|platform)_([a-z0-9]+)|room_([0-9]{1,6})_([a-z0-9_]+)|all")


@dataclass
class _Wanted:
    buildings: list[str]
    groups: list[str]
    rooms: list[str]
    clients: list[str]

    @property
    def empty(self) -> bool:
        return not (self.buildings or self.groups or self.rooms or self.clients)

    def describe(self) -> str:
        parts = [
            *(f"building {b}" for b in self.buildings),
            *(f"group {g}" for g in self.groups),
            *(f"room {r}" for r in self.rooms),
            *(f"client {c}" for c in self.clients),
        ]
        return ("the target " if len(parts) == 1 else "the targets ") + ", ".join(parts)


@dataclass
class _Targets:
    building_ids: set[int] = field(default_factory=set)
    rooms: set[tuple[int, str]] = field(default_factory=set)
    levels: set[str] = field(default_factory=set)
    platforms: set[str] = field(default_factory=set)
    client_ids: set[int] = field(default_factory=set)
    everything: bool = False
    named: set[str] = field(default_factory=set)
    """Building numbers the targets name (directly, by room or group, or by client)."""


def _clean(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(v.strip() for v in values if v.strip()))


def _district(actor: Actor) -> bool:
    return may(actor, Action.RUN_PLAYBOOK, building=None)


def _targets(
    session: Session, actor: Actor, wanted: _Wanted, everything: dict[str, Building]
) -> _Targets:
    t = _Targets()
    malformed: list[str] = []
    unknown: list[str] = []

    def building(number: str, what: str) -> Building | None:
        b = everything.get(number)
        if b is None or not may(actor, Action.READ_CATALOG, building=number):
            unknown.append(
                f"{what} (no building {number})" if what != number else f"building {what}"
            )
            return None
        t.named.add(number)
        return b

    for number in wanted.buildings:
        try:
            validation.building_number(number)
        except InvalidInput:
            malformed.append(f"building {number!r} (1-6 digits)")
            continue
        b = building(number, number)
        if b is not None:
            t.building_ids.add(b.id or 0)

    room_wanted: list[tuple[str, Building, str]] = []  # (as given, building, room or group key)
    for given in wanted.rooms:
        number, sep, room = given.partition("/")
        if not sep or not room.strip() or not re.fullmatch(r"[0-9]{1,6}", number):
            malformed.append(f"room {given!r} (BUILDING/ROOM, e.g. 101/lab-a)")
            continue
        b = building(number, f"room {given}")
        if b is not None:
            room_wanted.append((f"room {given}", b, room.strip().lower()))
    group_wanted: list[tuple[str, Building, str]] = []
    for g in wanted.groups:
        m = _GROUP.fullmatch(g.lower())
        if m is None:
            malformed.append(
                f"group {g!r} (building_N, level_L, platform_P, room_N_ROOM or all, as "
                "'orchestrator inventory export' names them)"
            )
            continue
        kind, value = m[1], m[2]
        if m[0] == "all":
            t.everything = True
        elif kind == "building":
            b = building(value, f"group {g}")
            if b is not None:
                t.building_ids.add(b.id or 0)
        elif kind == "level":
            if value not in {lv.value for lv in Level}:
                unknown.append(f"group {g} (no level {value})")
            t.levels.add(value)
        elif kind == "platform":
            if value not in {p.value for p in Platform}:
                unknown.append(f"group {g} (no platform {value})")
            t.platforms.add(value)
        else:
            b = building(m[3], f"group {g}")
            if b is not None:
                group_wanted.append((f"group {g}", b, m[4]))
    if malformed:
        raise InvalidInput("not a target: " + "; ".join(malformed), field="targets")
    # Before looking into another building's rooms or clients: it is not the actor's.
    outside = sorted(n for n in t.named if not may(actor, Action.RUN_PLAYBOOK, building=n))
    if outside:
        raise Refused(
            f"{actor.describe()} cannot deploy to building(s) {', '.join(outside)}: "
            "a building tech deploys only in its own buildings"
        )

    if room_wanted or group_wanted:
        ids = {b.id for _, b, _ in room_wanted + group_wanted}
        present: dict[int, set[str]] = {}
        for bid, room in session.execute(
            select(Client.building_id, Client.room)
            .where(col(Client.building_id).in_(ids))
            .distinct()
        ):
            present.setdefault(bid, set()).add(room)
        for what, b, key in room_wanted:
            found = {r for r in present.get(b.id or 0, ()) if r.lower() == key}
            t.rooms |= {(b.id or 0, r) for r in found}
            if not found:
                unknown.append(f"{what} (no such room in building {b.number})")
        for what, b, key in group_wanted:
            found = {
                r
                for r in present.get(b.id or 0, ())
                if inventory.group_name("room", b.number, r) == f"room_{b.number}_{key}"
            }
            t.rooms |= {(b.id or 0, r) for r in found}
            if not found:
                unknown.append(f"{what} (no such room in building {b.number})")

    if wanted.clients:
        found_hosts: dict[str, tuple[int, str]] = {}
        for cid, host, number in session.execute(
            sa.select(col(Client.id), col(Client.hostname), col(Building.number))
            .join(Building, col(Building.id) == col(Client.building_id))
            .where(col(Client.hostname).in_(wanted.clients))
        ):
            if may(actor, Action.READ_CATALOG, building=number):
                found_hosts[host] = (cid, number)
        for host in wanted.clients:
            if host in found_hosts:
                cid, number = found_hosts[host]
                t.client_ids.add(cid)
                t.named.add(number)
            else:
                unknown.append(f"client {host}")
    if unknown:
        raise NotFound(
            "unknown target(s): "
            + "; ".join(unknown)
            + " (see 'orchestrator buildings', 'orchestrator clients list')"
        )
    return t


# ---------------------------------------------------------------------------
# Gates
# ---------------------------------------------------------------------------


def _resolve(
    session: Session, actor: Actor, *, package: str | None, image: str | None
) -> Releasable:
    if package is not None:
        return releasables.resolve(session, actor, Kind.PACKAGE, package)
    assert image is not None
    kind = Kind.CUSTOM_IMAGE if "/" in image else Kind.BASE_IMAGE
    return releasables.resolve(session, actor, kind, image)


def _gates(
    session: Session, actor: Actor, row: Releasable, named: set[str], today: date
) -> list[str]:
    """Delivery's gates for every building the targets name, then the files."""
    own = building_of(row)
    checked: list[str | None] = [*sorted(named)] or [own]
    for number in checked:
        delivery.check_released(session, actor, row, building=number, today=today)
    kind = Kind(row.kind)
    effective = catalog.effective_sunset_of(session, row)
    gates = [
        f"{kind.label} {ref_of(row)} is {row.state}"
        + (f", effective sunset {effective}" if effective else ", no sunset date"),
    ]
    if kind is Kind.BASE_IMAGE:
        gates.append(f"a base image, rolled out by {actor.role.label}")
    elif own is None:
        gates.append("district-wide: for every building")
    else:
        gates.append(f"building {own}'s own: for building {own} only")
    for what, item in _files(session, row):
        artifact = delivery.checked_artifact(item, what=what)
        where = "local file" if artifact.path is not None else "URL, checked on the client"
        gates.append(
            f"{what} {artifact.name} ({ref_of(item)}): SHA-256 {artifact.sha256[:12]}… ({where})"
        )
    for p in _packages(session, row):
        receipt, product = delivery.detection(p)
        gates.append(
            f"{ref_of(p)} detected by "
            + (f"receipt {receipt}" if receipt else f"MSI product code {product}")
        )
    return gates


def _packages(session: Session, row: Releasable) -> list[Releasable]:
    if row.kind == Kind.PACKAGE.value:
        return [row]
    return catalog.package_rows(session, row.id) if row.id is not None else []


def _files(session: Session, row: Releasable) -> list[tuple[str, Releasable]]:
    """Every file a client downloads for ``row`` (as delivery offers them)."""
    if row.kind == Kind.PACKAGE.value:
        return [("installer", row)]
    installers = [("installer", p) for p in _packages(session, row)]
    if row.platform == Platform.MAC.value:
        return installers
    base = session.get(Releasable, row.base_id) if row.base_id else row
    assert base is not None
    files = [("artifact", base)]
    if row.kind == Kind.CUSTOM_IMAGE.value and row.artifact_ref:
        files.append(("overlay", row))
    return files + installers


# ---------------------------------------------------------------------------
# Clients: one query that also decides each one's reason
# ---------------------------------------------------------------------------

_WORD = {Platform.PC.value: "PC", Platform.MAC.value: "Mac"}
_REASONS = {r.value: r for r in Reason}
# The verdict column holds a reason code, or one of these for an included client.
_INCLUDED, _NEVER_SEEN = "+", "+never"


class _Judge:
    """The reasons, as one SQL ``CASE`` in :data:`REASON_ORDER` (the first that
    applies wins), and the words for each excluded client."""

    def __init__(
        self,
        session: Session,
        row: Releasable,
        today: date,
        cutoff: datetime,
        everything: dict[str, Building],
    ) -> None:
        self.session, self.row, self.today, self.cutoff = session, row, today, cutoff
        self.ref = ref_of(row)
        self.kind = Kind(row.kind)
        self.own = building_of(row)
        self.everything = everything
        self.words: dict[tuple[Any, ...], str] = {}
        self.models = {m.id: m for m in session.exec(select(HardwareModel))}
        self.supported = frozenset(
            session.exec(
                select(ReleasableModel.hardware_model_id).where(
                    ReleasableModel.releasable_id == row.id
                )
            ).all()
        )

    def reason_column(self) -> sa.ColumnElement[str]:
        hw = HardwareModel
        when: dict[Reason, list[sa.ColumnElement[bool]]] = {r: [] for r in REASON_ORDER}
        when[Reason.WRONG_PLATFORM].append(col(Client.platform) != self.row.platform)
        if self.kind is Kind.BASE_IMAGE:
            when[Reason.WRONG_LEVEL].append(col(Building.level) != self.row.level)
        if self.own is not None:
            when[Reason.WRONG_LEVEL].append(col(Building.number) != self.own)
        when[Reason.MODEL_NOT_APPROVED] += [
            col(hw.id).is_(None),
            sa.not_(col(hw.approved)),
            col(hw.end_of_support) <= self.today,
        ]
        if self.supported:
            when[Reason.MODEL_UNSUPPORTED].append(
                col(Client.hardware_model_id).not_in(self.supported)
            )
        when[Reason.ALREADY_CURRENT].append(_current(self.session, self.row))
        when[Reason.OFFLINE].append(col(Client.last_seen) < self.cutoff)
        return sa.case(
            *((sa.or_(*conds), reason.value) for reason, conds in when.items() if conds),
            (col(Client.last_seen).is_(None), _NEVER_SEEN),
            else_=_INCLUDED,
        )

    def text(
        self, code: str, number: str, hw_id: int | None, unlisted: str | None, seen: datetime | None
    ) -> str:
        """The words for an excluded client; equal words are one shared string."""
        key = (code, number if code == Reason.WRONG_LEVEL else None, hw_id, unlisted, seen)
        words = self.words.get(key)
        if words is None:
            words = self.words[key] = self._words(_REASONS[code], number, hw_id, unlisted, seen)
        return words

    def _words(
        self,
        reason: Reason,
        number: str,
        hw_id: int | None,
        unlisted: str | None,
        seen: datetime | None,
    ) -> str:
        platform = self.row.platform
        if reason is Reason.WRONG_PLATFORM:
            other = Platform.MAC.value if platform == Platform.PC.value else Platform.PC.value
            return f"a {_WORD[other]}; this is for {_WORD[platform]}s"
        if reason is Reason.WRONG_LEVEL:
            if self.kind is Kind.BASE_IMAGE:
                level = self.everything[number].level
                return f"building {number} is {level}; this is for {self.row.level} buildings"
            return f"in building {number}; this is building {self.own}'s own"
        m = self.models.get(hw_id)
        if reason is Reason.MODEL_NOT_APPROVED:
            if m is None:
                return f"model {unlisted} is not on the Approved Technology List"
            if not m.approved:
                return f"model {m.model} is not approved"
            return f"model {m.model} is past its end of support ({m.end_of_support})"
        if reason is Reason.MODEL_UNSUPPORTED:
            return f"model {m.model if m else unlisted} is not among those this supports"
        if reason is Reason.ALREADY_CURRENT:
            return f"already {'has' if self.kind is Kind.PACKAGE else 'runs'} {self.ref}"
        assert seen is not None
        return f"last seen {seen:%Y-%m-%d %H:%M} UTC"


# (building, room, verdict code) -> clients
_Counts = dict[tuple[str, str, str], int]


class _Source:
    """The clients the targets reach (within the actor's buildings), each with
    its verdict, read in one query: listed one by one, or counted."""

    def __init__(
        self,
        session: Session,
        judge: _Judge,
        t: _Targets,
        actor: Actor,
        everything: dict[str, Building],
    ) -> None:
        self.session, self.judge = session, judge
        reach: list[sa.ColumnElement[bool]] = []
        if t.everything:
            reach.append(sa.true())
        if t.building_ids:
            reach.append(col(Client.building_id).in_(t.building_ids))
        for bid, room in sorted(t.rooms):
            reach.append(sa.and_(col(Client.building_id) == bid, col(Client.room) == room))
        if t.levels:
            reach.append(col(Building.level).in_(t.levels))
        if t.platforms:
            reach.append(col(Client.platform).in_(t.platforms))
        if t.client_ids:
            reach.append(col(Client.id).in_(t.client_ids))
        self.where = [sa.or_(*reach)]
        if not _district(actor):
            own = [
                b.id for n, b in everything.items() if may(actor, Action.RUN_PLAYBOOK, building=n)
            ]
            self.where.append(col(Client.building_id).in_(own))
        self.verdict = judge.reason_column()
        self.order = (col(Building.number), col(Client.room), col(Client.hostname))

    def _select(self, *columns: Any, scan: bool = False) -> sa.Select[Any]:
        # scan: "+ 0" keeps SQLite from walking every client through the building
        # index (a random read per client: four times slower than reading the
        # table through once); a filter on building_id still uses the index.
        building_id = col(Client.building_id) + 0 if scan else col(Client.building_id)
        return (
            sa.select(*columns)
            .join(Building, col(Building.id) == building_id)
            .join(
                HardwareModel,
                col(HardwareModel.id) == col(Client.hardware_model_id),
                isouter=True,
            )
            .where(*self.where)
        )

    def _listing(self) -> sa.Select[Any]:
        last_seen = col(Client.last_seen)
        return self._select(
            col(Client.hostname),
            col(Building.number),
            col(Client.room),
            self.verdict,
            col(Client.hardware_model_id),
            # Only what an excluded client's words need: every row goes through the sort.
            sa.case((col(Client.hardware_model_id).is_(None), col(Client.model)), else_=sa.null()),
            sa.case((last_seen < self.judge.cutoff, last_seen), else_=sa.null()),
        ).order_by(*self.order)

    def counts(self) -> _Counts:
        """Clients per building, room and verdict, counted in the database."""
        verdict = self.verdict.label("verdict")
        q = self._select(
            col(Building.number), col(Client.room), verdict, func.count(), scan=True
        ).group_by(col(Building.number), col(Client.room), verdict)
        return {(n, room, code): k for n, room, code, k in self.session.execute(q)}

    def first_excluded(self, limit: int) -> list[ExcludedClient]:
        """The first ``limit`` excluded clients in building, room and host order."""
        if limit <= 0:
            return []
        q = self._listing().where(self.verdict.not_in([_INCLUDED, _NEVER_SEEN])).limit(limit)
        return [
            ExcludedClient(host, n, room, _REASONS[code], self.judge.text(code, n, hw, odd, seen))
            for host, n, room, code, hw, odd, seen in self.session.execute(q)
        ]

    def every_client(self) -> tuple[list[PlannedClient], list[ExcludedClient]]:
        """Every client, included or excluded, in building, room and host order."""
        included: list[PlannedClient] = []
        excluded: list[ExcludedClient] = []
        # Core, not the ORM: plain rows, no identity map. The collector is paused while
        # the (acyclic) rows and clients are built: otherwise it rescans them again and
        # again as they pile up, a fifth of the time for 150,000 clients.
        judge = self.judge
        with _collector_paused():
            rows = self.session.connection().execute(self._listing()).all()
            for host, number, room, code, hw_id, unlisted, seen in rows:
                if code == _INCLUDED:
                    included.append(PlannedClient(host, number, room))
                elif code == _NEVER_SEEN:
                    included.append(PlannedClient(host, number, room, True))
                else:
                    text = judge.text(code, number, hw_id, unlisted, seen)
                    excluded.append(ExcludedClient(host, number, room, _REASONS[code], text))
        return included, excluded


def _counts_of(included: list[PlannedClient], excluded: list[ExcludedClient]) -> _Counts:
    counts: Counter[tuple[str, str, str]] = Counter()
    for c in included:
        counts[c.building, c.room, _NEVER_SEEN if c.never_seen else _INCLUDED] += 1
    for x in excluded:
        counts[x.building, x.room, x.reason.value] += 1
    return dict(counts)


@contextmanager
def _collector_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _current(session: Session, row: Releasable) -> sa.ColumnElement[bool]:
    """Whether the client already runs ``row``, computed in the database."""
    if row.kind != Kind.PACKAGE.value:
        return col(Client.current_image) == delivery.image_marker(row)
    return installed.holds(installed.markers_of(row))


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _assemble(
    row: Releasable,
    included: list[PlannedClient],
    excluded: list[ExcludedClient],
    counts: _Counts,
    gates: list[str],
    everything: dict[str, Building],
    *,
    listed: bool,
) -> Plan:
    rooms: dict[tuple[str, str], list[int]] = {}  # included, never seen, excluded
    per_reason: Counter[str] = Counter()
    for (number, room, code), k in counts.items():
        tally = rooms.setdefault((number, room), [0, 0, 0])
        if code in (_INCLUDED, _NEVER_SEEN):
            tally[0] += k
            tally[1] += k if code == _NEVER_SEEN else 0
        else:
            tally[2] += k
            per_reason[code] += k
    per_building: dict[str, list[int]] = {}
    for (number, _), (ins, _, outs) in sorted(rooms.items()):
        tally = per_building.setdefault(number, [0, 0])
        tally[0] += ins
        tally[1] += outs
    return Plan(
        ref=ref_of(row),
        kind=Kind(row.kind),
        platform=Platform(row.platform),
        included=included,
        excluded=excluded,
        buildings=[
            BuildingCount(n, everything[n].name, ins, outs)
            for n, (ins, outs) in per_building.items()
        ],
        rooms=[RoomCount(n, room, *tally) for (n, room), tally in sorted(rooms.items())],
        gates=gates,
        included_count=sum(t[0] for t in rooms.values()),
        excluded_count=sum(t[2] for t in rooms.values()),
        never_seen=sum(t[1] for t in rooms.values()),
        reasons={r.value: per_reason[r.value] for r in REASON_ORDER if per_reason[r.value]},
        listed=listed,
    )
