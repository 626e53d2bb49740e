"""The figures behind the web interface's charts: read-only counts per building.

Three figures, each counted only over the buildings the actor may see (the
catalog's read rule: building staff their own buildings, IT and EdTech the
district):

* :func:`clients_by_image`: clients per image marker, per building;
* :func:`clients_near_sunset`: clients on an image whose effective sunset is
  within a number of days (or already past), per building, with which;
* :func:`deployment_success`: per week, client results of deployments that
  succeeded, failed or were skipped.

Test clients (``Client.test_client``) are IT's bench, not a building's
computers: none of the figures counts them.

Nothing here writes; every function reads in one transaction and returns
frozen dataclasses that :mod:`orchestrator.web.charts` draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator.db.models import Building, Client, DeploymentClient, Releasable
from orchestrator.db.session import transaction
from orchestrator.domain import sunset as rules
from orchestrator.domain.policy import Action, Actor, authorize, may
from orchestrator.domain.rollout import ClientState
from orchestrator.domain.states import Kind
from orchestrator.errors import InvalidInput
from orchestrator.services import catalog
from orchestrator.services.context import Context
from orchestrator.services.delivery import image_marker
from orchestrator.services.directory import get_building

MAX_WEEKS = 104
"""The longest history :func:`deployment_success` counts (two school years)."""

_COUNTED_RESULTS = (ClientState.SUCCEEDED, ClientState.FAILED, ClientState.SKIPPED)


# ---------------------------------------------------------------------------
# Which buildings
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildingRef:
    """A building as the figures name it."""

    number: str
    name: str

    @property
    def label(self) -> str:
        return f"{self.number} {self.name}"


def _visible_buildings(
    session: Session, actor: Actor, building: str | None
) -> dict[int, BuildingRef]:
    """The buildings (by id) the figures may count: ``building`` alone when named.

    Raises:
        NotFound: ``building`` names no building.
        Refused: the actor may not see ``building``.
    """
    if building is not None:
        row = get_building(session, building)
        authorize(actor, Action.READ_CATALOG, building=row.number)
        assert row.id is not None
        return {row.id: BuildingRef(row.number, row.name)}
    return {
        b.id: BuildingRef(b.number, b.name)
        for b in session.exec(select(Building).order_by(col(Building.number)))
        if b.id is not None and may(actor, Action.READ_CATALOG, building=b.number)
    }


# ---------------------------------------------------------------------------
# Clients by image version, per building
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageCount:
    image: str | None
    """The image marker the client reports (``pc-high@2026.1``, ``101/lab@1.2``);
    None: no image recorded for it yet."""

    clients: int


@dataclass(frozen=True)
class BuildingImages:
    building: BuildingRef
    counts: tuple[ImageCount, ...]
    """In the order of :attr:`ClientsByImage.images`; only images with clients here."""

    @property
    def total(self) -> int:
        return sum(c.clients for c in self.counts)


@dataclass(frozen=True)
class ClientsByImage:
    buildings: tuple[BuildingImages, ...]
    """Buildings with at least one (non-test) client, by number."""

    images: tuple[str | None, ...]
    """Every image counted, by marker (None, no image recorded, last): the
    stacking order and legend of the chart."""

    @property
    def total(self) -> int:
        return sum(b.total for b in self.buildings)


def _image_order(image: str | None) -> tuple[bool, str]:
    return (image is None, image or "")


def clients_by_image(ctx: Context, actor: Actor, building: str | None = None) -> ClientsByImage:
    """How many clients run each image version, per building the actor may see.

    Counted in the database, grouped by building and image marker; test clients
    are left out. An empty district (or one without clients) gives no buildings.

    Raises:
        NotFound: ``building`` names no building.
        Refused: the actor may not see ``building``.
    """
    with transaction(ctx.engine) as session:
        visible = _visible_buildings(session, actor, building)
        if not visible:
            return ClientsByImage((), ())
        n = sa.func.count(col(Client.id))
        rows = session.exec(
            select(Client.building_id, Client.current_image, n)
            .where(col(Client.building_id).in_(list(visible)), col(Client.test_client).is_(False))
            .group_by(col(Client.building_id), col(Client.current_image))
        ).all()
    images = tuple(sorted({image for _, image, _ in rows}, key=_image_order))
    per: dict[int, dict[str | None, int]] = {}
    for building_id, image, count in rows:
        per.setdefault(building_id, {})[image] = int(count)
    return ClientsByImage(
        buildings=tuple(
            BuildingImages(
                ref,
                tuple(ImageCount(i, per[bid][i]) for i in images if i in per[bid]),
            )
            for bid, ref in sorted(visible.items(), key=lambda kv: kv[1].number)
            if bid in per
        ),
        images=images,
    )


# ---------------------------------------------------------------------------
# Clients near sunset
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SunsetImage:
    """An image near (or past) its effective sunset."""

    image: str
    """Its marker on clients (its reference)."""

    kind: Kind
    effective_sunset: date
    days_left: int
    """0 on the sunset day, negative after it."""

    @property
    def sunset(self) -> bool:
        """On or after its effective sunset: no deployment of it may start."""
        return self.days_left <= 0


@dataclass(frozen=True)
class NearSunsetClient:
    hostname: str
    room: str
    image: SunsetImage


@dataclass(frozen=True)
class BuildingNearSunset:
    building: BuildingRef
    clients: tuple[NearSunsetClient, ...]
    """Soonest sunset first, then by hostname."""

    @property
    def count(self) -> int:
        return len(self.clients)

    @property
    def per_image(self) -> tuple[tuple[SunsetImage, int], ...]:
        """How many of this building's clients run each image, soonest sunset first."""
        counts: dict[SunsetImage, int] = {}
        for c in self.clients:
            counts[c.image] = counts.get(c.image, 0) + 1
        return tuple(counts.items())


@dataclass(frozen=True)
class ClientsNearSunset:
    today: date
    within_days: int
    buildings: tuple[BuildingNearSunset, ...]
    """Buildings with at least one such client, by number."""

    images: tuple[SunsetImage, ...]
    """The images those clients run, soonest sunset first."""

    @property
    def total(self) -> int:
        return sum(b.count for b in self.buildings)


def _images_near_sunset(session: Session, today: date, within_days: int) -> list[SunsetImage]:
    rows = session.exec(
        select(Releasable).where(
            col(Releasable.kind).in_([Kind.BASE_IMAGE.value, Kind.CUSTOM_IMAGE.value])
        )
    ).all()
    found = []
    for row in rows:
        # The bases are loaded above, so the base's row comes from the session.
        eff = catalog.effective_sunset_of(session, row)
        left = rules.days_to_sunset(eff, today)
        if eff is not None and left is not None and left <= within_days:
            found.append(SunsetImage(image_marker(row), Kind(row.kind), eff, left))
    found.sort(key=lambda i: (i.days_left, i.image))
    return found


def clients_near_sunset(
    ctx: Context, actor: Actor, within_days: int = 90, *, building: str | None = None
) -> ClientsNearSunset:
    """Clients running an image whose effective sunset is at most ``within_days``
    days away (today in the district), per building the actor may see.

    The effective sunset is the catalog's: a customized image sunsets with its
    base at the latest. Images already past their sunset are included (their
    ``days_left`` is negative): their clients are the most urgent. Every state
    counts, retired included, since a client may still run an image that was
    retired. Test clients are left out.

    Raises:
        InvalidInput: ``within_days`` is negative.
        NotFound: ``building`` names no building.
        Refused: the actor may not see ``building``.
    """
    if within_days < 0:
        raise InvalidInput(f"within_days must be 0 or more, not {within_days}")
    today = ctx.today()
    with transaction(ctx.engine) as session:
        visible = _visible_buildings(session, actor, building)
        images = {i.image: i for i in _images_near_sunset(session, today, within_days)}
        if not visible or not images:
            return ClientsNearSunset(today, within_days, (), ())
        rows = session.exec(
            select(Client.building_id, Client.hostname, Client.room, Client.current_image).where(
                col(Client.building_id).in_(list(visible)),
                col(Client.test_client).is_(False),
                col(Client.current_image).in_(list(images)),
            )
        ).all()
    per: dict[int, list[NearSunsetClient]] = {}
    for building_id, hostname, room, image in rows:
        assert image is not None
        per.setdefault(building_id, []).append(NearSunsetClient(hostname, room, images[image]))
    seen = {c.image for cs in per.values() for c in cs}
    return ClientsNearSunset(
        today=today,
        within_days=within_days,
        buildings=tuple(
            BuildingNearSunset(
                ref,
                tuple(
                    sorted(per[bid], key=lambda c: (c.image.days_left, c.image.image, c.hostname))
                ),
            )
            for bid, ref in sorted(visible.items(), key=lambda kv: kv[1].number)
            if bid in per
        ),
        images=tuple(i for i in images.values() if i in seen),
    )


# ---------------------------------------------------------------------------
# Deployment success per week
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WeekResults:
    start: date
    """The Monday the week starts on, in the district's calendar."""

    succeeded: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def total(self) -> int:
        return self.succeeded + self.failed + self.skipped


@dataclass(frozen=True)
class DeploymentSuccess:
    weeks: tuple[WeekResults, ...]
    """Oldest first, the last one the current (partial) week; weeks without
    results are there with zeros, so the time line has no gaps."""

    @property
    def total(self) -> int:
        return sum(w.total for w in self.weeks)


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def deployment_success(
    ctx: Context, actor: Actor, weeks: int = 12, *, building: str | None = None
) -> DeploymentSuccess:
    """Per week, the deployments' client results that succeeded, failed or were
    skipped, in the buildings the actor may see.

    A week runs Monday to Sunday in the district's time zone; the last week is
    the current one. A result is counted in the week its client reached it (the
    row's last change). Results still under way (pending, staging, applying,
    verifying, unreachable and waiting to be retried) and cancelled ones are not
    counted. A client in two deployments counts once in each. Results on test
    clients are left out. Counted in the database, grouped by week and state.

    Raises:
        InvalidInput: ``weeks`` is not between 1 and :data:`MAX_WEEKS`.
        NotFound: ``building`` names no building.
        Refused: the actor may not see ``building``.
    """
    if not 1 <= weeks <= MAX_WEEKS:
        raise InvalidInput(f"weeks must be between 1 and {MAX_WEEKS}, not {weeks}")
    first = _monday(ctx.today()) - timedelta(weeks=weeks - 1)
    starts = [first + timedelta(weeks=i) for i in range(weeks + 1)]
    # Local midnights, so each week follows the district's clock across DST.
    bounds = [datetime.combine(d, time(0), tzinfo=ctx.zone).astimezone(UTC) for d in starts]
    counts: dict[tuple[int, str], int] = {}
    with transaction(ctx.engine) as session:
        visible = _visible_buildings(session, actor, building)
        if visible:
            counts = _weekly_counts(session, [b.number for b in visible.values()], bounds)
    return DeploymentSuccess(
        tuple(
            WeekResults(
                start,
                succeeded=counts.get((i, ClientState.SUCCEEDED.value), 0),
                failed=counts.get((i, ClientState.FAILED.value), 0),
                skipped=counts.get((i, ClientState.SKIPPED.value), 0),
            )
            for i, start in enumerate(starts[:-1])
        )
    )


def _weekly_counts(
    session: Session, buildings: list[str], bounds: list[datetime]
) -> dict[tuple[int, str], int]:
    updated = col(DeploymentClient.updated_at)
    week = sa.case(
        *((updated < bounds[i + 1], i) for i in range(len(bounds) - 1)), else_=None
    ).label("week")
    # Grouped over a subquery: PostgreSQL would not see a CASE with bound
    # parameters in GROUP BY as the same expression as the one selected.
    results = (
        select(week, col(DeploymentClient.state).label("state"))
        .join(Client, col(Client.id) == col(DeploymentClient.client_id))
        .where(
            col(DeploymentClient.building).in_(buildings),
            col(DeploymentClient.state).in_([s.value for s in _COUNTED_RESULTS]),
            col(Client.test_client).is_(False),
            updated >= bounds[0],
            updated < bounds[-1],
        )
        .subquery()
    )
    rows = session.execute(
        sa.select(results.c.week, results.c.state, sa.func.count()).group_by(
            results.c.week, results.c.state
        )
    ).all()
    return {(int(w), str(s)): int(n) for w, s, n in rows}
