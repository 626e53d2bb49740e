"""What each client is known to have installed (the ``client_software`` table).

Two sources, kept apart:

* **gathered**: the software list the client's last gather reported
  (``orchestrator_software``: a Mac's ``pkgutil --pkgs`` receipts, a PC's
  installed programs), lower-cased, replaced at each gather;
* **installed**: a package the orchestrator installed on the client and saw
  succeed (``install_package`` finished ok there), with the release. A Mac's
  receipts carry no version, so this is where a Mac's package version is
  known. A later gather of a Mac that no longer lists the receipt drops the
  record (the package was removed); a PC's list names programs, not product
  codes, so it cannot say, and the record stays until the next install.

Markers are what a package's detection matches, lower case: ``name@version``,
``receipt@version`` and the MSI product code (:func:`markers_of`). ``deploy
plan`` calls a client "already current" when one of the package's markers is
recorded for it, from either source: one indexed lookup per client.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator.db.models import Client, ClientSoftware, Releasable
from orchestrator.services import delivery
from orchestrator.services.refs import ref_of

GATHERED = "gathered"
INSTALLED = "installed"
MARKER_LENGTH = 200


def markers_of(row: Releasable) -> set[str]:
    """The markers that say a client holds this package release, lower case."""
    receipt, product = delivery.detection(row)
    markers = {f"{row.name}@{row.version}"}
    if receipt:
        markers.add(f"{receipt}@{row.version}")
    if product:
        markers.add(product)
    return {m.lower()[:MARKER_LENGTH] for m in markers}


def record_gathered(session: Session, client: Client, software: object, now: datetime) -> None:
    """Replace the client's gathered rows with ``software`` (a gathered list).

    Anything but a list (a gather that did not report software) leaves the
    rows as they are.
    """
    if not isinstance(software, list) or client.id is None:
        return
    markers = sorted({str(m).strip().lower()[:MARKER_LENGTH] for m in software if str(m).strip()})
    session.execute(
        sa.delete(ClientSoftware).where(
            col(ClientSoftware.client_id) == client.id, col(ClientSoftware.source) == GATHERED
        )
    )
    session.add_all(
        ClientSoftware(client_id=client.id, source=GATHERED, marker=m, recorded_at=now)
        for m in markers
    )
    if client.platform == "mac":
        # pkgutil lists every receipt: one that is gone was removed with its package.
        held = set(markers)
        session.execute(
            sa.delete(ClientSoftware).where(
                col(ClientSoftware.client_id) == client.id,
                col(ClientSoftware.source) == INSTALLED,
                col(ClientSoftware.receipt).is_not(None),
                col(ClientSoftware.receipt).not_in(held) if held else sa.true(),
            )
        )


def record_installed(
    session: Session, client_ids: Iterable[int], row: Releasable, now: datetime
) -> None:
    """Record that ``row`` was installed on these clients, replacing any other
    release of the same package recorded there (an upgrade supersedes it)."""
    ids = sorted(set(client_ids))
    if not ids or row.id is None:
        return
    receipt, _ = delivery.detection(row)
    same_package = select(Releasable.id).where(
        Releasable.kind == row.kind,
        Releasable.scope_key == row.scope_key,
        Releasable.name == row.name,
    )
    session.execute(
        sa.delete(ClientSoftware).where(
            col(ClientSoftware.client_id).in_(ids),
            col(ClientSoftware.source) == INSTALLED,
            col(ClientSoftware.releasable_id).in_(same_package),
        )
    )
    markers = sorted(markers_of(row))
    session.add_all(
        ClientSoftware(
            client_id=cid,
            source=INSTALLED,
            marker=m,
            releasable_id=row.id,
            receipt=receipt.lower() or None,
            recorded_at=now,
        )
        for cid in ids
        for m in markers
    )


def holds(markers: Iterable[str]) -> sa.ColumnElement[bool]:
    """SQL: the client of the enclosing query has one of ``markers`` recorded."""
    wanted = sorted({m.lower()[:MARKER_LENGTH] for m in markers})
    return sa.exists(
        select(1).where(
            col(ClientSoftware.marker).in_(wanted),
            col(ClientSoftware.client_id) == col(Client.id),
        )
    )


def installed_refs(session: Session, building_ids: Collection[int]) -> dict[int, list[str]]:
    """Per client of these buildings, the package releases the orchestrator
    installed there, by reference (filtered by building, never by a list of
    every client: a district's clients are more than a query's parameters)."""
    if not building_ids:
        return {}
    q = (
        select(ClientSoftware.client_id, ClientSoftware.releasable_id)
        .join(Client, col(Client.id) == col(ClientSoftware.client_id))
        .where(
            col(Client.building_id).in_(sorted(set(building_ids))),
            col(ClientSoftware.source) == INSTALLED,
            col(ClientSoftware.releasable_id).is_not(None),
        )
        .distinct()
    )
    pairs = session.exec(q).all()
    releases = {
        r.id: ref_of(r)
        for r in session.exec(
            select(Releasable).where(col(Releasable.id).in_({rid for _, rid in pairs}))
        )
    }
    out: dict[int, set[str]] = {}
    for cid, rid in pairs:
        out.setdefault(cid, set()).add(releases[rid])
    return {cid: sorted(refs) for cid, refs in out.items()}
