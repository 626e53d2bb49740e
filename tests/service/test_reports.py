"""The figures behind the charts (services/reports.py), on both databases.

The test district's clock is Monday 2026-03-02, 10:00 in New York (15:00 UTC),
so the current week starts on Monday 2026-03-02 at 00:00 EST (05:00 UTC).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import col, select

from orchestrator.db.models import Building, Client, Deployment, DeploymentClient, Releasable
from orchestrator.db.session import transaction
from orchestrator.domain.policy import Actor
from orchestrator.domain.states import Role, State
from orchestrator.errors import InvalidInput, NotFound, Refused
from orchestrator.remote.ansible import FakePlaybookRunner
from orchestrator.services import deployments, inventory, reports, rollout_runner, runs, windows
from orchestrator.services.context import Context
from orchestrator.services.deployments import DeploymentSpec
from tests.factories import PC, District
from tests.support.fixtures import release_scratch

_serial = iter(range(1, 100_000))

THIS_MONDAY = date(2026, 3, 2)
# Monday 00:00 EST is 05:00 UTC: half an hour before it is still last week's Sunday.
LAST_SUNDAY_LATE = datetime(2026, 3, 2, 4, 30, tzinfo=UTC)
THIS_MONDAY_EARLY = datetime(2026, 3, 2, 5, 30, tzinfo=UTC)


def _clients(
    d: District,
    building: str,
    image: str | None,
    count: int = 1,
    *,
    test_client: bool = False,
    prefix: str | None = None,
) -> list[str]:
    """``count`` PCs in ``building`` whose image marker says ``image``."""
    names = []
    with transaction(d.ctx.engine) as s:
        b = s.exec(select(Building).where(Building.number == building)).one()
        assert b.id is not None
        for _ in range(count):
            n = next(_serial)
            hostname = f"{prefix or 'pc'}-{building}-{n:03d}"
            s.add(
                Client(
                    hostname=hostname,
                    building_id=b.id,
                    room="lab",
                    platform="pc",
                    model=PC,
                    serial=f"SN{n:06d}",
                    mac=f"02:00:00:{n // 65536:02x}:{n // 256 % 256:02x}:{n % 256:02x}",
                    address=f"127.1.{n // 256 % 256}.{n % 256}",
                    port=5985,
                    transport="winrm",
                    test_client=test_client,
                    current_image=image,
                    created_at=d.ctx.now(),
                )
            )
            names.append(hostname)
    return names


def _results(d: District, results: Iterable[tuple[str, str, datetime]]) -> None:
    """One deployment (of a draft package, as the rows need one) whose clients,
    by hostname, reached ``state`` at ``at``."""
    ref = d.package(name=f"tool{next(_serial)}")
    with transaction(d.ctx.engine) as s:
        pkg = s.exec(select(Releasable).where(Releasable.name == ref.split("@")[0])).one()
        assert pkg.id is not None
        dep = Deployment(
            releasable_id=pkg.id,
            ref=ref,
            digest=pkg.digest,
            playbook="install_package",
            owner="it.ana",
            role=Role.IT.value,
            state="completed",
            created_at=d.ctx.now() - timedelta(weeks=20),
            updated_at=d.ctx.now(),
        )
        s.add(dep)
        s.flush()
        assert dep.id is not None
        for hostname, state, at in results:
            client = s.exec(select(Client).where(Client.hostname == hostname)).one()
            building = s.get(Building, client.building_id)
            assert client.id is not None and building is not None
            s.add(
                DeploymentClient(
                    deployment_id=dep.id,
                    client_id=client.id,
                    hostname=hostname,
                    building=building.number,
                    wave=1,
                    state=state,
                    updated_at=at,
                )
            )


def _by_image(figures: reports.ClientsByImage) -> dict[str, dict[str | None, int]]:
    return {b.building.number: {c.image: c.clients for c in b.counts} for b in figures.buildings}


def _near(figures: reports.ClientsNearSunset) -> dict[str, list[tuple[str, str, int]]]:
    return {
        b.building.number: [(c.hostname, c.image.image, c.image.days_left) for c in b.clients]
        for b in figures.buildings
    }


def _weeks(figures: reports.DeploymentSuccess) -> dict[date, tuple[int, int, int]]:
    """Only the weeks with results: (succeeded, failed, skipped)."""
    return {w.start: (w.succeeded, w.failed, w.skipped) for w in figures.weeks if w.total}


# ---------------------------------------------------------------------------
# Clients by image version
# ---------------------------------------------------------------------------


def test_clients_are_counted_per_image_version_per_building(district: District) -> None:
    _clients(district, "101", "pc-elementary@2026.1", 3)
    _clients(district, "101", "pc-elementary@2026.2", 2)
    _clients(district, "101", "101/lab@1.0")
    _clients(district, "101", None)
    _clients(district, "301", "pc-high@2026.1", 4)

    figures = reports.clients_by_image(district.ctx, district["it.ana"])

    assert _by_image(figures) == {
        "101": {
            "101/lab@1.0": 1,
            "pc-elementary@2026.1": 3,
            "pc-elementary@2026.2": 2,
            None: 1,
        },
        "301": {"pc-high@2026.1": 4},
    }
    assert [b.building.label for b in figures.buildings] == [
        "101 Lincoln Elementary",
        "301 Kennedy High",
    ]
    assert figures.images == (
        "101/lab@1.0",
        "pc-elementary@2026.1",
        "pc-elementary@2026.2",
        "pc-high@2026.1",
        None,
    )
    assert [b.total for b in figures.buildings] == [7, 4]
    assert figures.total == 11


def test_test_clients_are_not_counted_as_a_buildings_computers(district: District) -> None:
    _clients(district, "102", "pc-elementary@2026.1", 2)
    _clients(district, "102", "pc-elementary@2026.1", 3, test_client=True, prefix="bench")
    _clients(district, "201", "pc-middle@2026.1", test_client=True, prefix="bench")

    figures = reports.clients_by_image(district.ctx, district["edtech.grace"])

    assert _by_image(figures) == {"102": {"pc-elementary@2026.1": 2}}
    assert "pc-middle@2026.1" not in figures.images


def test_btc_sees_only_its_own_buildings_clients(district: District) -> None:
    _clients(district, "101", "pc-elementary@2026.1", 2)
    _clients(district, "102", "pc-elementary@2026.1", 5)
    _clients(district, "102", "102/library@1.0", 3)

    figures = reports.clients_by_image(district.ctx, district["btc.lincoln"])

    assert _by_image(figures) == {"101": {"pc-elementary@2026.1": 2}}
    assert figures.images == ("pc-elementary@2026.1",)
    assert figures.total == 2


def test_a_sectec_of_two_buildings_sees_both_and_one_when_it_names_it(district: District) -> None:
    _clients(district, "201", "pc-middle@2026.1", 2)
    _clients(district, "302", "pc-high@2026.1", 3)
    _clients(district, "301", "pc-high@2026.1", 7)
    patel = district["sectec.patel"]

    both = reports.clients_by_image(district.ctx, patel)
    one = reports.clients_by_image(district.ctx, patel, building="302")

    assert _by_image(both) == {"201": {"pc-middle@2026.1": 2}, "302": {"pc-high@2026.1": 3}}
    assert _by_image(one) == {"302": {"pc-high@2026.1": 3}}


def test_naming_another_building_is_refused_and_an_unknown_one_not_found(
    district: District,
) -> None:
    _clients(district, "102", "pc-elementary@2026.1", 5)
    lincoln = district["btc.lincoln"]

    with pytest.raises(Refused, match="102"):
        reports.clients_by_image(district.ctx, lincoln, building="102")
    with pytest.raises(Refused, match="102"):
        reports.clients_near_sunset(district.ctx, lincoln, building="102")
    with pytest.raises(Refused, match="102"):
        reports.deployment_success(district.ctx, lincoln, building="102")
    with pytest.raises(NotFound, match="999"):
        reports.clients_by_image(district.ctx, district["it.ana"], building="999")


def test_a_principal_sees_its_own_buildings_figures(district: District) -> None:
    _clients(district, "101", "pc-elementary@2026.1", 2)
    _clients(district, "301", "pc-high@2026.1", 3)

    figures = reports.clients_by_image(district.ctx, district["principal.lincoln"])

    assert _by_image(figures) == {"101": {"pc-elementary@2026.1": 2}}


# ---------------------------------------------------------------------------
# Clients near sunset
# ---------------------------------------------------------------------------


def test_near_sunset_includes_a_customized_image_whose_base_sunsets_within_90_days(
    district: District,
) -> None:
    district.base("pc", "elementary", "2026.1", sunset_in=90)
    lab = district.custom("101", "lab", to=State.PUBLISHED)  # no sunset of its own
    district.base("pc", "high", "2026.1", sunset_in=91)
    hs_lab = district.custom("301", "lab", base="pc-high@2026.1")
    district.base("pc", "middle", "2026.1", sunset_in=400)
    lab_pcs = _clients(district, "101", lab, 2)
    (plain,) = _clients(district, "101", "pc-elementary@2026.1")
    _clients(district, "301", hs_lab, 3)
    _clients(district, "301", "pc-high@2026.1")
    _clients(district, "201", "pc-middle@2026.1", 4)

    figures = reports.clients_near_sunset(district.ctx, district["it.ana"])

    assert _near(figures) == {
        "101": [(h, lab, 90) for h in sorted(lab_pcs)] + [(plain, "pc-elementary@2026.1", 90)]
    }
    assert [(i.image, i.effective_sunset, i.sunset) for i in figures.images] == [
        (lab, district.days(90), False),
        ("pc-elementary@2026.1", district.days(90), False),
    ]
    (lincoln,) = figures.buildings
    assert lincoln.count == 3
    assert [(i.image, n) for i, n in lincoln.per_image] == [(lab, 2), ("pc-elementary@2026.1", 1)]
    assert (figures.today, figures.within_days, figures.total) == (district.today, 90, 3)


def test_near_sunset_excludes_an_image_91_days_away_until_the_horizon_reaches_it(
    district: District,
) -> None:
    district.base("pc", "high", "2026.1", sunset_in=91)
    hs_lab = district.custom("301", "lab", base="pc-high@2026.1")
    _clients(district, "301", hs_lab, 3)

    at_90 = reports.clients_near_sunset(district.ctx, district["it.ana"])
    at_91 = reports.clients_near_sunset(district.ctx, district["it.ana"], within_days=91)

    assert at_90.buildings == () and at_90.images == ()
    assert {b.building.number: b.count for b in at_91.buildings} == {"301": 3}


def test_the_image_test_bench_is_not_reported_near_sunset(district: District) -> None:
    district.base("pc", "elementary", "2026.1", sunset_in=30)
    lab = district.custom("101", "lab", to=State.PUBLISHED)
    with transaction(district.ctx.engine) as s:
        bench = s.exec(select(Client).where(col(Client.test_client))).all()
    # Publishing ran the image's test on the bench, which now carries the image.
    assert [c.current_image for c in bench] == [lab]

    figures = reports.clients_near_sunset(district.ctx, district["it.ana"])

    assert figures.buildings == ()


def test_clients_of_an_image_past_its_sunset_are_reported_as_sunset(district: District) -> None:
    district.base("pc", "elementary", "2026.1", sunset_in=10)
    _clients(district, "101", "pc-elementary@2026.1", 2)
    district.ctx.clock.advance(days=12)  # type: ignore[attr-defined]

    figures = reports.clients_near_sunset(district.ctx, district["btc.lincoln"], within_days=0)

    ((image, count),) = figures.buildings[0].per_image
    assert (image.image, image.days_left, image.sunset, count) == (
        "pc-elementary@2026.1",
        -2,
        True,
        2,
    )


def test_a_btc_sees_only_its_own_buildings_clients_near_sunset(district: District) -> None:
    district.base("pc", "elementary", "2026.1", sunset_in=20)
    _clients(district, "101", "pc-elementary@2026.1", 1)
    _clients(district, "102", "pc-elementary@2026.1", 6)

    figures = reports.clients_near_sunset(district.ctx, district["btc.lincoln"])

    assert {b.building.number: b.count for b in figures.buildings} == {"101": 1}
    assert figures.total == 1


# ---------------------------------------------------------------------------
# Deployment success per week
# ---------------------------------------------------------------------------


def test_results_are_counted_in_the_district_week_they_were_reached(district: District) -> None:
    pcs = _clients(district, "101", "pc-elementary@2026.1", 8)
    two_weeks_ago = datetime(2026, 2, 18, 20, 0, tzinfo=UTC)
    _results(
        district,
        [
            (pcs[0], "succeeded", THIS_MONDAY_EARLY),
            (pcs[1], "succeeded", THIS_MONDAY_EARLY + timedelta(hours=3)),
            (pcs[2], "failed", THIS_MONDAY_EARLY),
            (pcs[3], "succeeded", LAST_SUNDAY_LATE),
            (pcs[4], "skipped", LAST_SUNDAY_LATE),
            (pcs[5], "failed", two_weeks_ago),
            # Not results: still retrying, and cancelled.
            (pcs[6], "unreachable", THIS_MONDAY_EARLY),
            (pcs[7], "cancelled", THIS_MONDAY_EARLY),
        ],
    )
    # A client in a second deployment counts again; one too old is outside the weeks.
    _results(
        district,
        [
            (pcs[0], "succeeded", THIS_MONDAY_EARLY),
            (pcs[1], "failed", datetime(2025, 12, 15, 4, 59, tzinfo=UTC)),
        ],
    )

    figures = reports.deployment_success(district.ctx, district["it.ana"])

    assert [w.start for w in figures.weeks] == [
        THIS_MONDAY - timedelta(weeks=n) for n in range(11, -1, -1)
    ]
    assert _weeks(figures) == {
        date(2026, 2, 16): (0, 1, 0),
        date(2026, 2, 23): (1, 0, 1),
        THIS_MONDAY: (3, 1, 0),
    }
    assert figures.total == 7


def test_the_first_week_starts_at_its_local_monday_midnight(district: District) -> None:
    (pc,) = _clients(district, "101", "pc-elementary@2026.1")
    (other,) = _clients(district, "101", "pc-elementary@2026.1")
    first_monday = datetime(2026, 2, 23, 5, 0, tzinfo=UTC)  # 00:00 EST
    _results(
        district,
        [(pc, "succeeded", first_monday), (other, "failed", first_monday - timedelta(seconds=1))],
    )

    figures = reports.deployment_success(district.ctx, district["it.ana"], weeks=2)

    assert [(w.start, w.succeeded, w.failed) for w in figures.weeks] == [
        (date(2026, 2, 23), 1, 0),
        (THIS_MONDAY, 0, 0),
    ]


def test_a_btc_counts_only_its_own_buildings_results(district: District) -> None:
    (mine,) = _clients(district, "101", "pc-elementary@2026.1")
    theirs = _clients(district, "102", "pc-elementary@2026.1", 3)
    _results(
        district,
        [(mine, "succeeded", THIS_MONDAY_EARLY)]
        + [(h, "failed", THIS_MONDAY_EARLY) for h in theirs],
    )

    lincoln = reports.deployment_success(district.ctx, district["btc.lincoln"])
    district_wide = reports.deployment_success(district.ctx, district["it.ana"])

    assert _weeks(lincoln) == {THIS_MONDAY: (1, 0, 0)}
    assert _weeks(district_wide) == {THIS_MONDAY: (1, 3, 0)}


def test_results_on_test_clients_are_not_counted(district: District) -> None:
    (pc,) = _clients(district, "101", "pc-elementary@2026.1")
    (bench,) = _clients(district, "101", "pc-elementary@2026.1", test_client=True, prefix="b")
    _results(district, [(pc, "failed", THIS_MONDAY_EARLY), (bench, "failed", THIS_MONDAY_EARLY)])

    figures = reports.deployment_success(district.ctx, district["it.ana"])

    assert _weeks(figures) == {THIS_MONDAY: (0, 1, 0)}


ASSETS = (
    "Hostname,Building,Room,Platform,Model,Serial,MAC,IP\n"
    "lab-01,101,lab-a,pc,Latitude 3420,SN0001,02:00:00:00:00:01,127.0.0.11\n"
    + "".join(
        f'cart-0{i},101,cart,mac,"MacBookAir10,1",SN10{i},02:00:00:00:01:{i:02x},127.0.0.{20 + i}\n'
        for i in range(1, 5)
    )
)


def test_a_real_rollouts_results_are_counted_in_the_week_it_ran(
    district: District, tmp_path: Path
) -> None:
    path = tmp_path / "assets.csv"
    path.write_text(ASSETS)
    inventory.import_clients(district.ctx, district["it.ana"], path)
    windows.add_window(
        district.ctx, district["it.ana"], building="101", days="mon-thu", start="18:00", end="06:00"
    )
    release_scratch(district, "3.29", tmp_path)
    dep = deployments.create(
        district.ctx,
        district["it.ana"],
        DeploymentSpec(package="scratch@3.29", buildings=("101",), failure_threshold_pct=50),
    )
    runner = FakePlaybookRunner({"cart-02": "failed"})
    district.ctx.clock.now = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)  # type: ignore[attr-defined]
    for _ in range(3):
        rollout_runner.tick(district.ctx, dep.id, credentials=runs.Credentials(), runner=runner)
        district.ctx.clock.advance(minutes=1)  # type: ignore[attr-defined]

    figures = reports.deployment_success(district.ctx, district["btc.lincoln"])

    # Three Macs succeed, one fails; the PC cannot take a Mac package and is skipped.
    assert _weeks(figures) == {THIS_MONDAY: (3, 1, 1)}


# ---------------------------------------------------------------------------
# Empty figures and bad arguments
# ---------------------------------------------------------------------------


def test_a_district_without_clients_gives_empty_figures(district: District) -> None:
    district.base("pc", "elementary", "2026.1", sunset_in=30)
    it = district["it.ana"]

    by_image = reports.clients_by_image(district.ctx, it)
    near = reports.clients_near_sunset(district.ctx, it)
    success = reports.deployment_success(district.ctx, it)

    assert (by_image.buildings, by_image.images, by_image.total) == ((), (), 0)
    assert (near.buildings, near.images, near.total) == ((), (), 0)
    assert len(success.weeks) == 12 and success.total == 0


def test_a_database_without_buildings_gives_empty_figures(ctx: Context) -> None:
    it = Actor(person_id=1, username="it.ana", role=Role.IT)

    assert reports.clients_by_image(ctx, it) == reports.ClientsByImage((), ())
    assert reports.clients_near_sunset(ctx, it).buildings == ()
    assert reports.deployment_success(ctx, it, weeks=3).total == 0


def test_out_of_range_arguments_are_refused(district: District) -> None:
    it = district["it.ana"]
    with pytest.raises(InvalidInput, match="within_days"):
        reports.clients_near_sunset(district.ctx, it, within_days=-1)
    with pytest.raises(InvalidInput, match="weeks"):
        reports.deployment_success(district.ctx, it, weeks=0)
    with pytest.raises(InvalidInput, match="weeks"):
        reports.deployment_success(district.ctx, it, weeks=reports.MAX_WEEKS + 1)
