"""The sample district has what the README promises, on both backends."""

from __future__ import annotations

from collections import Counter

from orchestrator.domain.states import INSTRUCTIONAL_LEVELS, Kind, Level, Platform, Role, State
from orchestrator.services import audit, catalog, directory, hardware, image_tests, sample, testing
from orchestrator.services.context import Context


def test_sample_district_covers_every_role_level_platform_and_state(ctx: Context) -> None:
    assert sample.load(ctx) is True
    it = directory.actor(ctx, "it.rivera")

    buildings = directory.buildings(ctx, it)
    assert len(buildings) >= 6
    assert {b.level for b in buildings} >= set(INSTRUCTIONAL_LEVELS)
    assert {p.role for p in directory.people(ctx)} == set(Role) - {Role.SYSTEM}

    items = catalog.list_releasables(ctx, it)
    bases = [v for v in items if v.kind is Kind.BASE_IMAGE]
    assert {(v.platform, v.level) for v in bases if v.state is State.PUBLISHED} == {
        (p, lvl) for p in Platform for lvl in INSTRUCTIONAL_LEVELS
    }
    assert any(v.days_to_sunset is not None and v.days_to_sunset < 0 for v in bases)
    assert any(v.days_to_sunset is not None and 0 < v.days_to_sunset <= 30 for v in bases)
    custom_states = Counter(v.state for v in items if v.kind is Kind.CUSTOM_IMAGE)
    assert len(custom_states) >= 4
    assert any(v.needs_rebase and v.state is State.PUBLISHED for v in items)

    # IT's bench: a test client per platform and level; every school's test accounts;
    # every image past its test step was signed off on an image test run of the bench.
    bench = testing.list_test_clients(ctx, it)
    assert {(c.platform, c.level) for c in bench} == {
        (p, lvl) for p in Platform for lvl in INSTRUCTIONAL_LEVELS
    }
    accounts = testing.list_test_accounts(ctx, it)
    assert {a.building for a in accounts} == {
        b.number for b in buildings if b.level in INSTRUCTIONAL_LEVELS
    }
    tested = [
        v
        for v in items
        if v.kind is not Kind.PACKAGE
        and v.state in (State.APPROVED, State.PUBLISHED, State.DEPRECATED)
    ]
    assert tested
    for v in tested:
        runs = image_tests.list_for(ctx, it, v.ref)
        assert runs and runs[0].status == "passed", v.ref
        assert runs[0].client in {c.hostname for c in bench}

    models = hardware.list_models(ctx, it)
    assert any(not m.approved for m in models)
    assert any(m.end_of_support and m.end_of_support < ctx.today() for m in models)
    assert audit.verify(ctx, it).entries > 100


def test_sample_district_loads_only_into_an_empty_catalog(ctx: Context) -> None:
    assert sample.load(ctx) is True
    entries = audit.verify(ctx, directory.actor(ctx, "it.rivera")).entries
    assert sample.load(ctx) is False
    assert audit.verify(ctx, directory.actor(ctx, "it.rivera")).entries == entries
    assert Level.OFFICE in {
        b.level for b in directory.buildings(ctx, directory.actor(ctx, "it.chen"))
    }
