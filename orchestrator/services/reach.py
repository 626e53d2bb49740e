"""``clients probe`` and ``clients repin``: can the clients be reached, and is
each Mac still the machine whose SSH host key was pinned?

Pinning, trust on first use and never after:

* a Mac with no pinned key gets the key it offers at its first probe (so,
  from the command line, right after its import); the pin is audited with
  the key's fingerprint;
* a Mac offering its pinned key is reachable;
* a Mac offering another key keeps its pinned key: the offer is stored in
  ``host_key_offered`` for review, audited as refused, and Ansible keeps
  refusing the host (its known_hosts holds only pinned keys);
* after a known hardware swap or reinstall, IT or the building's tech re-pins
  it with a reason (:func:`repin`); if the key changed again since the refusal,
  re-pinning is refused: probe again and review.

PCs (WinRM) are probed with a TCP connect to their WinRM port.

Hosts are contacted in parallel (a bounded thread pool) and outside any
database transaction; one transaction then writes every result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlmodel import Session, col, select

from orchestrator.db.models import Building, Client
from orchestrator.db.session import transaction
from orchestrator.domain import validation
from orchestrator.domain.policy import Action, Actor, authorize, authorize_role, may
from orchestrator.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    OrchestratorError,
    RemoteError,
    StaleState,
)
from orchestrator.remote import ssh
from orchestrator.remote.ssh import HostKeyFetcher, PortCheck
from orchestrator.services import audit, inventory
from orchestrator.services.context import Context

PINNED = "pinned"
REACHABLE = "reachable"
KEY_CHANGED = "host key changed"
UNREACHABLE = "unreachable"
NOT_PINNED = "not pinned"
"""Reachable, offering a key that was left unpinned (``pin=False``)."""

RESULTS = (PINNED, REACHABLE, NOT_PINNED, KEY_CHANGED, UNREACHABLE)
CONNECT_TIMEOUT = 5.0
WORKERS = 10


@dataclass(frozen=True)
class ProbeResult:
    hostname: str
    building: str
    transport: str
    address: str
    port: int
    result: str
    """pinned, reachable, not pinned, host key changed or unreachable."""
    fingerprint: str | None
    """The key the host offered (SSH clients that answered)."""
    pinned_fingerprint: str | None
    """The key pinned for it (after this probe)."""
    message: str

    @property
    def ok(self) -> bool:
        return self.result in (PINNED, REACHABLE, NOT_PINNED)


@dataclass(frozen=True)
class RepinResult:
    hostname: str
    building: str
    before: str | None
    """The fingerprint pinned until now (None: none was)."""
    after: str
    changed: bool
    message: str


@dataclass(frozen=True)
class _Target:
    id: int
    hostname: str
    building: str
    transport: str
    address: str
    port: int
    host_key: str | None
    host_key_offered: str | None


@dataclass(frozen=True)
class _Seen:
    target: _Target
    offered: str | None = None
    """The key line the host offered (SSH)."""
    error: str | None = None
    """Why it could not be reached."""


def _fp(key_line: str | None) -> str | None:
    if key_line is None:
        return None
    try:
        return ssh.fingerprint(key_line)
    except InvalidInput:
        return "(unreadable key)"


def _same(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is b
    try:
        return ssh.same_key(a, b)
    except InvalidInput:
        return a.split()[:2] == b.split()[:2]


def _reason_of(exc: OrchestratorError) -> str:
    host = getattr(exc, "host", None)
    text = str(exc)
    return text.removeprefix(f"{host}: ") if host else text


# ---------------------------------------------------------------------------
# Which clients
# ---------------------------------------------------------------------------


def _snapshot(c: Client, b: Building) -> _Target:
    assert c.id is not None
    return _Target(
        c.id, c.hostname, b.number, c.transport, c.address, c.port, c.host_key, c.host_key_offered
    )


def _targets(
    session: Session,
    actor: Actor,
    *,
    building: str | None,
    hostnames: Sequence[str] | None,
) -> list[_Target]:
    q = select(Client, Building).join(Building, col(Building.id) == col(Client.building_id))
    if building is not None:
        if session.exec(select(Building).where(Building.number == building)).first() is None:
            raise NotFound(f"no building {building!r} (see 'orchestrator buildings')")
        q = q.where(Building.number == building)
    if hostnames:
        wanted = sorted({h.strip().lower() for h in hostnames})
        found = {
            c.hostname: (c, b)
            for c, b in session.exec(q.where(col(Client.hostname).in_(wanted)))
            # Clients of buildings the actor may not see are not revealed.
            if may(actor, Action.READ_CATALOG, building=b.number)
        }
        missing = [h for h in wanted if h not in found]
        if missing:
            where = f" in building {building}" if building else ""
            raise NotFound(
                f"no client(s) {', '.join(repr(h) for h in missing)}{where} "
                "(see 'orchestrator clients list'); nothing was probed"
            )
        for _, b in found.values():
            authorize(actor, Action.MANAGE_CLIENTS, building=b.number)
        rows = [found[h] for h in wanted]
    else:
        rows = [
            (c, b)
            for c, b in session.exec(q.order_by(col(Client.hostname)))
            if may(actor, Action.MANAGE_CLIENTS, building=b.number)
        ]
        if not rows:
            where = f"building {building}" if building else "the buildings you manage"
            raise NotFound(f"no clients in {where}: nothing to probe")
    return [_snapshot(c, b) for c, b in rows]


# ---------------------------------------------------------------------------
# Contacting them (outside any transaction)
# ---------------------------------------------------------------------------


def _contact(t: _Target, fetch: HostKeyFetcher, connect: PortCheck, timeout: float) -> _Seen:
    try:
        if t.transport == "ssh":
            offered = fetch(t.address, t.port, timeout=timeout)
            try:
                return _Seen(t, offered=ssh.normalize_key_line(offered))
            except InvalidInput:
                return _Seen(t, error="offered a host key that is not an SSH public key")
        connect(t.address, t.port, timeout=timeout)
        return _Seen(t)
    except (RemoteError, InvalidInput) as exc:
        return _Seen(t, error=_reason_of(exc))


# ---------------------------------------------------------------------------
# Judging what was seen (against the snapshot for progress, the row for writing)
# ---------------------------------------------------------------------------

_PIN, _SEEN, _REFUSE, _STILL_REFUSED, _RESTORED, _NOTHING = (
    "pin",
    "seen",
    "refuse",
    "still refused",
    "restored",
    "nothing",
)


def _judge(
    seen: _Seen, host_key: str | None, host_key_offered: str | None, *, pin: bool
) -> tuple[ProbeResult, str]:
    t = seen.target

    def result(kind: str, message: str, pinned: str | None = host_key) -> ProbeResult:
        return ProbeResult(
            t.hostname,
            t.building,
            t.transport,
            t.address,
            t.port,
            kind,
            _fp(seen.offered),
            _fp(pinned),
            message,
        )

    if seen.error is not None:
        return result(UNREACHABLE, seen.error), _NOTHING
    if t.transport != "ssh":
        return result(REACHABLE, f"the WinRM port {t.port} accepts connections"), _SEEN
    offered = seen.offered
    assert offered is not None
    if host_key is None:
        if not pin:
            return result(NOT_PINNED, "not pinned (--no-pin)"), _SEEN
        return result(PINNED, "pinned at first probe", pinned=offered), _PIN
    if _same(offered, host_key):
        if host_key_offered is not None:
            return result(
                REACHABLE,
                "the pinned key again; the refused one was set aside (see the audit log)",
            ), _RESTORED
        return result(REACHABLE, "the pinned key"), _SEEN
    if _same(offered, host_key_offered):
        return result(KEY_CHANGED, "the same refused key, kept for review"), _STILL_REFUSED
    return result(KEY_CHANGED, "refused, kept for review"), _REFUSE


def _subject(client: Client, building: str) -> audit.Subject:
    return audit.Subject("client", client.hostname, client.id, building)


def _apply(
    session: Session,
    actor: Actor,
    client: Client,
    seen: _Seen,
    action: str,
    now: datetime,
) -> None:
    t = seen.target
    offered = seen.offered
    if action == _PIN:
        assert offered is not None
        client.host_key, client.host_key_offered, client.last_seen = offered, None, now
        audit.append(
            session,
            at=now,
            actor=actor,
            action="client.pin_host_key",
            subject=_subject(client, t.building),
            after={"fingerprint": _fp(offered), "key_type": offered.split()[0]},
            reason="pinned at first probe",
        )
    elif action == _SEEN:
        client.last_seen = now
    elif action == _RESTORED:
        refused = client.host_key_offered
        client.host_key_offered, client.last_seen = None, now
        audit.append(
            session,
            at=now,
            actor=actor,
            action="client.clear_refused_key",
            subject=_subject(client, t.building),
            before={"offered_fingerprint": _fp(refused)},
            after={"fingerprint": _fp(client.host_key)},
            reason="the host offers its pinned key again",
        )
    elif action == _REFUSE:
        client.host_key_offered = offered
        audit.append(
            session,
            at=now,
            actor=actor,
            action="client.refuse_host_key",
            subject=_subject(client, t.building),
            before={"fingerprint": _fp(client.host_key)},
            after={"offered_fingerprint": _fp(offered)},
            reason="refused: the host offered another key than the pinned one; kept for review",
        )
    else:
        return
    session.add(client)


# ---------------------------------------------------------------------------
# The use cases
# ---------------------------------------------------------------------------


def probe(
    ctx: Context,
    actor: Actor,
    *,
    building: str | None = None,
    hostnames: Sequence[str] | None = None,
    pin: bool = True,
    unpinned_only: bool = False,
    fetch: HostKeyFetcher = ssh.fetch_host_key,
    connect: PortCheck = ssh.tcp_connect,
    connect_timeout: float = CONNECT_TIMEOUT,
    workers: int = WORKERS,
    on_result: Callable[[ProbeResult], None] = lambda _r: None,
) -> list[ProbeResult]:
    """Probe the clients of ``building``, or the ``hostnames`` given, or every
    client the actor manages; pin unpinned SSH keys (unless ``pin`` is false).

    ``unpinned_only`` keeps only SSH clients with no pinned key and no refused
    offer (pinning at first probe after an import); then nothing to probe is
    an empty list, not an error. ``on_result`` hears each host as it answers
    (before the results are written).

    Raises:
        Refused: the role does not manage clients, or the building is not the
            actor's.
        NotFound: unknown building; hostnames unknown or in buildings the
            actor may not see (all of them are named; nothing was probed); no
            clients at all.
    """
    authorize_role(actor, Action.MANAGE_CLIENTS)
    if building is not None:
        validation.building_number(building)
        authorize(actor, Action.MANAGE_CLIENTS, building=building)
    if workers < 1:
        raise InvalidInput("at least one host is probed at a time", field="workers")
    with transaction(ctx.engine) as session:
        targets = _targets(session, actor, building=building, hostnames=hostnames)
    if unpinned_only:
        targets = [
            t
            for t in targets
            if t.transport == "ssh" and t.host_key is None and t.host_key_offered is None
        ]
        if not targets:
            return []

    seen: list[_Seen] = []
    with ThreadPoolExecutor(
        max_workers=min(workers, len(targets)), thread_name_prefix="probe"
    ) as pool:
        futures = [pool.submit(_contact, t, fetch, connect, connect_timeout) for t in targets]
        for future in as_completed(futures):
            s = future.result()
            seen.append(s)
            on_result(_judge(s, s.target.host_key, s.target.host_key_offered, pin=pin)[0])

    now = ctx.now()
    results: list[ProbeResult] = []
    with transaction(ctx.engine) as session:
        for s in sorted(seen, key=lambda s: s.target.hostname):
            client = session.get(Client, s.target.id)
            if client is None:
                results.append(
                    _judge(
                        _Seen(s.target, error="removed from the inventory meanwhile"),
                        None,
                        None,
                        pin=pin,
                    )[0]
                )
                continue
            result, action = _judge(s, client.host_key, client.host_key_offered, pin=pin)
            _apply(session, actor, client, s, action, now)
            results.append(result)
    return results


def repin(
    ctx: Context,
    actor: Actor,
    hostname: str,
    *,
    reason: str,
    fetch: HostKeyFetcher = ssh.fetch_host_key,
    connect_timeout: float = CONNECT_TIMEOUT,
) -> RepinResult:
    """Pin the key a Mac offers now, after a known hardware swap or reinstall.

    If a refused key is kept for review, the key offered now must be that
    one: a key that changed again since the refusal is refused (Conflict) and
    nothing changes. The re-pin is audited with both fingerprints and the reason.

    Raises:
        Refused: not IT nor a tech of the client's building.
        InvalidInput: no reason given; the client is a PC (no SSH host key).
        NotFound: no such client (or one in a building the actor may not see).
        Conflict: the key changed again since it was refused.
        StaleState: someone changed the client's keys meanwhile.
        RemoteError: the host could not be reached (nothing changed).
    """
    authorize_role(actor, Action.MANAGE_CLIENTS)
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInput(
            "say why the key is re-pinned (e.g. 'logic board replaced, ticket 4411'): "
            "a changed host key is refused unless someone knows why it changed",
            field="reason",
        )
    reason = validation.text(reason, field="reason", max_len=500, required=True)
    with transaction(ctx.engine) as session:
        found = inventory.get_client(session, actor, hostname)
        b = session.get(Building, found.building_id)
        assert b is not None
        authorize(actor, Action.MANAGE_CLIENTS, building=b.number)
        if found.transport != "ssh":
            raise InvalidInput(
                f"{found.hostname} is a PC reached over WinRM: it has no SSH host key to pin",
                field="hostname",
            )
        target = _snapshot(found, b)

    try:
        offered = fetch(target.address, target.port, timeout=connect_timeout)
    except RemoteError as exc:
        raise type(exc)(
            f"{_reason_of(exc)} at {target.address}:{target.port}; nothing changed",
            host=target.hostname,
        ) from exc
    offered = ssh.normalize_key_line(offered)
    now_fp = _fp(offered)
    assert now_fp is not None
    with transaction(ctx.engine) as session:
        client = session.get(Client, target.id)
        if client is None:
            raise NotFound(f"no client {target.hostname!r} (see 'orchestrator clients list')")
        if client.host_key != target.host_key or client.host_key_offered != target.host_key_offered:
            raise StaleState(
                f"{target.hostname}'s host keys were changed by someone else meanwhile; "
                "look at 'orchestrator clients list' and try again"
            )
        before = _fp(client.host_key)
        if client.host_key_offered is not None and not _same(offered, client.host_key_offered):
            if _same(offered, client.host_key):
                detail = "it offers its pinned key again"
            else:
                detail = f"it now offers {now_fp}"
            raise Conflict(
                f"{target.hostname}: {detail}, not the refused {_fp(client.host_key_offered)} "
                "kept for review: the key changed again since it was refused; probe again and "
                "review (nothing changed)"
            )
        if client.host_key_offered is None and _same(offered, client.host_key):
            return RepinResult(
                target.hostname,
                target.building,
                before,
                now_fp,
                False,
                f"{target.hostname} already offers its pinned key {now_fp}: nothing to re-pin",
            )
        client.host_key, client.host_key_offered, client.last_seen = offered, None, ctx.now()
        session.add(client)
        audit.append(
            session,
            at=ctx.now(),
            actor=actor,
            action="client.repin_host_key",
            subject=_subject(client, target.building),
            before={"fingerprint": before},
            after={"fingerprint": now_fp, "key_type": offered.split()[0]},
            reason=reason,
        )
    return RepinResult(
        target.hostname,
        target.building,
        before,
        now_fp,
        True,
        f"{target.hostname} re-pinned: {before or 'no key'} → {now_fp}",
    )


def pin_imported(
    ctx: Context,
    actor: Actor,
    path: Path,
    *,
    format: str | None = None,
    fetch: HostKeyFetcher = ssh.fetch_host_key,
    connect_timeout: float = CONNECT_TIMEOUT,
    workers: int = WORKERS,
    on_result: Callable[[ProbeResult], None] = lambda _r: None,
) -> list[ProbeResult]:
    """Pin at first probe, right after ``path`` was imported: the Macs the file
    lists that have no pinned key (nor a refused one) are probed and pinned.

    An unreachable host stays unpinned (and imported); it is pinned at its first
    successful probe.

    Raises: as :func:`probe`; InvalidInput when the file cannot be read again.
    """
    fmt = (format or ("csv" if path.suffix.lower() == ".csv" else "ansible")).lower()
    rows = inventory.read_csv(path) if fmt == "csv" else inventory.read_ansible_inventory(path)
    names = sorted({r.values.get("hostname", "").strip().lower() for r in rows} - {""})
    if not names:
        return []
    return probe(
        ctx,
        actor,
        hostnames=names,
        unpinned_only=True,
        fetch=fetch,
        connect_timeout=connect_timeout,
        workers=workers,
        on_result=on_result,
    )
