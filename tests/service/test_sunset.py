"""The daily sunset check and the sunset report."""

from __future__ import annotations

from orchestrator.domain.states import Kind, State
from orchestrator.services import audit, catalog, notices, sunset
from tests.factories import District


def test_daily_check_moves_published_items_past_sunset_including_derivatives(
    district: District,
) -> None:
    base = district.base(sunset_in=5)
    image = district.custom(to=State.PUBLISHED)
    district.ctx.clock.advance(days=5)  # type: ignore[attr-defined]

    result = sunset.run_daily_check(district.ctx)

    assert sorted(result.sunset) == sorted([base, image])
    it = district["it.ana"]
    assert catalog.show(district.ctx, it, Kind.BASE_IMAGE, base).state is State.SUNSET
    assert catalog.show(district.ctx, it, Kind.CUSTOM_IMAGE, image).state is State.SUNSET
    entries = audit.entries(district.ctx, it, object_kind=Kind.BASE_IMAGE.value)
    assert entries[-1].actor == "system" and "effective sunset" in entries[-1].reason


def test_daily_check_is_idempotent(district: District) -> None:
    district.base(sunset_in=5)
    district.ctx.clock.advance(days=6)  # type: ignore[attr-defined]
    sunset.run_daily_check(district.ctx)
    before = audit.verify(district.ctx, district["it.ana"]).entries

    again = sunset.run_daily_check(district.ctx)

    assert again.sunset == [] and again.warned == []
    assert audit.verify(district.ctx, district["it.ana"]).entries == before


def test_owners_are_warned_once_per_lead_time(district: District) -> None:
    district.base(sunset_in=35)
    image = district.custom(to=State.PUBLISHED)
    warned_on_day = {}
    for day in range(36):
        result = sunset.run_daily_check(district.ctx)
        if result.warned:
            warned_on_day[day] = sorted(result.warned)
        district.ctx.clock.advance(days=1)  # type: ignore[attr-defined]
    # Day 0 is inside the 90-day lead; then 30, 14, 7 and 1 days before the sunset.
    assert sorted(warned_on_day) == [0, 5, 21, 28, 34]
    lincoln = notices.for_actor(district.ctx, district["btc.lincoln"])
    assert any(image in n.message and "(30 days)" in n.message for n in lincoln)


def test_a_scheduler_down_for_weeks_warns_once_not_for_every_missed_lead(
    district: District,
) -> None:
    district.base(sunset_in=100)
    district.ctx.clock.advance(days=95)  # type: ignore[attr-defined]
    assert sunset.run_daily_check(district.ctx).warned == ["pc-elementary@2026.1"]
    assert sunset.run_daily_check(district.ctx).warned == []


def test_report_lists_by_days_to_sunset_and_derivatives_to_rebase(district: District) -> None:
    district.base(version="2026.1", sunset_in=20)
    lab = district.custom(to=State.PUBLISHED)
    district.base("pc", "high", sunset_in=400)
    district.base(version="2026.2", sunset_in=500)

    rep = sunset.report(district.ctx, district["btc.lincoln"])

    days = [r.item.days_to_sunset for r in rep.items]
    assert days == sorted(d for d in days if d is not None)
    assert rep.items[0].item.ref in (lab, "pc-elementary@2026.1")
    assert [(r.item.ref, r.rebase) for r in rep.must_rebase] == [(lab, "rebase needed")]
    within = sunset.report(district.ctx, district["btc.lincoln"], within_days=30)
    assert {r.item.ref for r in within.items} == {lab, "pc-elementary@2026.1"}


def test_report_hides_other_buildings_from_building_staff(district: District) -> None:
    district.base("pc", "high")
    district.custom("301", "stem", base="pc-high@2026.1")
    rep = sunset.report(district.ctx, district["btc.lincoln"])
    assert all(r.item.building in (None, "101") for r in rep.items)
    assert "301/stem@1.0" in {
        r.item.ref for r in sunset.report(district.ctx, district["it.ana"]).items
    }
