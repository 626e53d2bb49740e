"""``deploy plan``: who would get a released package or image, who not, and why."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import select

from orchestrator.clock import FixedClock
from orchestrator.db.models import Building, Client, Person, PersonBuilding
from orchestrator.db.session import transaction
from orchestrator.domain.states import Kind, Role, State
from orchestrator.errors import InvalidInput, NotFound, Refused, SunsetReached
from orchestrator.services import catalog, directory, hardware, installed
from orchestrator.services.catalog import PackageSpec
from orchestrator.services.deploy_plan import REASON_ORDER, Plan, Reason, plan
from tests.factories import MAC, PC, PC2, PC_OLD, PC_UNAPPROVED, District, sha

_serial = iter(range(1, 10_000))


def _client(
    d: District,
    hostname: str,
    building: str = "101",
    *,
    room: str = "lab",
    platform: str = "pc",
    model: str | None = PC,
    seen_days_ago: float | None = 1,
    image: str | None = None,
    facts: dict[str, Any] | None = None,
) -> None:
    """A client as gathering would leave it (``model`` a Vendor:Model ref, or a bare
    model name that is not on the Approved Technology List)."""
    n = next(_serial)
    with transaction(d.ctx.engine) as s:
        b = s.exec(select(Building).where(Building.number == building)).one()
        hw = hardware.find_model(s, model) if model and ":" in model else None
        client = Client(
            hostname=hostname,
            building_id=b.id or 0,
            room=room,
            platform=platform,
            model=hw.model if hw else (model or "?"),
            hardware_model_id=hw.id if hw else None,
            serial=f"SN{n:05d}",
            mac=f"02:00:00:00:{n // 256:02x}:{n % 256:02x}",
            address=f"127.0.{n // 256}.{n % 256}",
            port=22 if platform == "mac" else 5985,
            transport="ssh" if platform == "mac" else "winrm",
            current_image=image,
            facts=facts or {},
            last_seen=None
            if seen_days_ago is None
            else d.ctx.now() - timedelta(days=seen_days_ago),
            created_at=d.ctx.now(),
        )
        s.add(client)
        s.flush()
        # What a gather records beside the facts.
        installed.record_gathered(
            s, client, (facts or {}).get("orchestrator_software"), d.ctx.now()
        )


def _why(p: Plan) -> dict[str, Reason]:
    """Why each client this test made is excluded (not the test bench that walking an
    image through its test step put in a building: District.test_client)."""
    return {c.hostname: c.reason for c in p.excluded if not c.hostname.startswith("test-")}


def _hosts(p: Plan) -> list[str]:
    return [c.hostname for c in p.included]


def _pc_package(d: District, **kw: Any) -> str:
    return d.package("firefox", "128.0", detection_rule="msi:{0F1A2B3C}", **kw)


def _mac_package(d: District, version: str = "3.30") -> str:
    return d.package(
        "scratch",
        version,
        platform="mac",
        detection_rule="pkgutil:edu.mit.scratch>=3.29",
        to=State.PUBLISHED,
    )


# -- each reason, each with a client made for it -------------------------------------


def test_each_client_is_included_or_excluded_for_its_one_reason(district: District) -> None:
    ref = district.base("pc", "elementary", models=[PC])
    _client(district, "ok-01")
    _client(district, "new-01", seen_days_ago=None)
    _client(district, "mac-01", platform="mac", model=MAC)
    _client(district, "hs-01", "301")
    _client(district, "old-01", model=PC_OLD)
    _client(district, "odd-01", model=PC_UNAPPROVED)
    _client(district, "acer-01", model="Acer C740")
    _client(district, "hp-01", model=PC2)
    _client(district, "cur-01", image=ref)
    _client(district, "away-01", seen_days_ago=15)

    p = plan(district.ctx, district["it.ana"], image=ref, groups=["all"])

    assert _hosts(p) == ["new-01", "ok-01"]
    assert [c.never_seen for c in p.included] == [True, False]
    assert _why(p) == {
        "mac-01": Reason.WRONG_PLATFORM,
        "hs-01": Reason.WRONG_LEVEL,
        "old-01": Reason.MODEL_NOT_APPROVED,
        "odd-01": Reason.MODEL_NOT_APPROVED,
        "acer-01": Reason.MODEL_NOT_APPROVED,
        "hp-01": Reason.MODEL_UNSUPPORTED,
        "cur-01": Reason.ALREADY_CURRENT,
        "away-01": Reason.OFFLINE,
    }
    text = {c.hostname: c.text for c in p.excluded}
    assert "is for PCs" in text["mac-01"]
    assert "building 301 is high" in text["hs-01"]
    assert "past its end of support" in text["old-01"]
    assert "is not approved" in text["odd-01"]
    assert "not on the Approved Technology List" in text["acer-01"]
    assert "model ProBook 450 G8 is not among those" in text["hp-01"]
    assert text["cur-01"] == f"already runs {ref}"
    assert text["away-01"].startswith("last seen ")
    # The fourth unapproved model is the test bench the image's test run used
    # (District.test_client in building 102), an ordinary client of the district.
    assert p.reasons == {
        "wrong_platform": 1,
        "wrong_level": 1,
        "model_not_approved": 4,
        "model_unsupported": 1,
        "already_current": 1,
        "offline": 1,
    }
    assert list(p.reasons) == [r.value for r in REASON_ORDER if r.value in p.reasons]
    assert [(b.building, b.included, b.excluded) for b in p.buildings] == [
        ("101", 2, 7),
        ("102", 0, 1),
        ("301", 0, 1),
    ]
    assert p.summary() == (
        f"2 clients in 1 building would get {ref} (1 never seen yet); 9 excluded: "
        "1 wrong platform, 1 wrong level or building, 4 model not approved, "
        "1 model not supported, 1 already current, 1 offline"
    )


def test_the_first_reason_in_the_fixed_order_is_the_one_given(district: District) -> None:
    ref = district.base("pc", "elementary", models=[PC])
    _client(district, "mac-away", platform="mac", model=MAC, seen_days_ago=40)
    _client(district, "old-current-away", model=PC_OLD, image=ref, seen_days_ago=40)
    _client(district, "current-away", image=ref, seen_days_ago=40)

    p = plan(district.ctx, district["it.ana"], image=ref, buildings=["101"])

    assert _why(p) == {
        "mac-away": Reason.WRONG_PLATFORM,
        "old-current-away": Reason.MODEL_NOT_APPROVED,
        "current-away": Reason.ALREADY_CURRENT,
    }


def test_offline_after_is_the_callers_to_choose(district: District) -> None:
    ref = _pc_package(district, to=State.PUBLISHED)
    _client(district, "pc-01", seen_days_ago=3)

    assert _hosts(plan(district.ctx, district["it.ana"], package=ref, buildings=["101"])) == [
        "pc-01"
    ]
    p = plan(
        district.ctx,
        district["it.ana"],
        package=ref,
        buildings=["101"],
        offline_after=timedelta(days=2),
    )
    assert _why(p) == {"pc-01": Reason.OFFLINE}


def test_a_package_is_current_where_the_gathered_software_names_this_version(
    district: District,
) -> None:
    mac_ref = _mac_package(district)
    software = "orchestrator_software"
    _client(
        district, "m-receipt", platform="mac", model=MAC, facts={software: ["EDU.MIT.SCRATCH@3.30"]}
    )
    _client(district, "m-name", platform="mac", model=MAC, facts={software: ["scratch@3.30"]})
    _client(district, "m-bare", platform="mac", model=MAC, facts={software: ["edu.mit.scratch"]})
    _client(district, "m-older", platform="mac", model=MAC, facts={software: ["scratch@3.29"]})
    _client(
        district,
        "m-elsewhere",
        platform="mac",
        model=MAC,
        facts={"orchestrator_os": "scratch@3.30", software: ["com.apple.pkg.Core"]},
    )
    _client(district, "m-odd-facts", platform="mac", model=MAC, facts={software: "scratch@3.30"})

    p = plan(district.ctx, district["it.ana"], package=mac_ref, groups=["platform_mac"])

    assert _why(p) == {"m-name": Reason.ALREADY_CURRENT, "m-receipt": Reason.ALREADY_CURRENT}
    # A bare receipt (what pkgutil --pkgs gathers) says nothing of the version.
    assert _hosts(p) == ["m-bare", "m-elsewhere", "m-odd-facts", "m-older"]


def test_a_pc_package_is_current_where_its_product_code_was_gathered(district: District) -> None:
    ref = _pc_package(district, to=State.PUBLISHED)
    _client(district, "pc-has", facts={"orchestrator_software": ["{0f1a2b3c}", "7-Zip"]})
    _client(district, "pc-not", facts={"orchestrator_software": ["7-Zip"]})

    p = plan(district.ctx, district["it.ana"], package=ref, rooms=["101/lab"])

    assert _why(p) == {"pc-has": Reason.ALREADY_CURRENT}
    assert _hosts(p) == ["pc-not"]


def test_a_package_that_declares_its_models_excludes_the_others(district: District) -> None:
    catalog.create_package(
        district.ctx,
        district["edtech.grace"],
        PackageSpec(
            name="cad",
            version="1.0",
            platform="pc",
            audience="instructional",
            installer="https://dist.test/cad-1.0.msi",
            installer_sha256=sha("cad-1.0"),
            detection_rule="msi:{CAD}",
            models=[PC2],
        ),
    )
    district.walk(Kind.PACKAGE, "cad@1.0", State.PUBLISHED, author="edtech.grace")
    _client(district, "dell-01", model=PC)
    _client(district, "hp-01", model=PC2)

    p = plan(district.ctx, district["it.ana"], package="cad@1.0", buildings=["101"])

    assert _hosts(p) == ["hp-01"] and _why(p) == {"dell-01": Reason.MODEL_UNSUPPORTED}


def test_a_customized_image_reached_through_a_level_group_excludes_other_buildings(
    district: District,
) -> None:
    district.base("pc", "elementary")
    ref = district.custom("101", to=State.PUBLISHED)
    _client(district, "lincoln-01", "101")
    _client(district, "washington-01", "102")

    p = plan(district.ctx, district["it.ana"], image=ref, groups=["level_elementary"])

    assert _hosts(p) == ["lincoln-01"]
    assert _why(p) == {"washington-01": Reason.WRONG_LEVEL}
    assert "building 101's own" in p.excluded[0].text


# -- targets ----------------------------------------------------------------------------


def test_targets_are_the_union_of_buildings_groups_rooms_and_clients(district: District) -> None:
    ref = _pc_package(district, to=State.PUBLISHED)
    _client(district, "a-lab-01", "101", room="Lab A")
    _client(district, "a-lib-01", "101", room="library")
    _client(district, "b-01", "102")
    _client(district, "hs-stem-01", "301", room="STEM")
    _client(district, "hs-art-01", "301", room="art")
    _client(district, "hs-art-02", "301", room="art")
    _client(district, "ms-01", "201")

    p = plan(
        district.ctx,
        district["it.ana"],
        package=ref,
        buildings=["102"],
        groups=["room_101_lab_a", "building_102"],
        rooms=["301/stem"],
        clients=["HS-ART-02", "b-01"],
    )

    assert sorted(_hosts(p)) == ["a-lab-01", "b-01", "hs-art-02", "hs-stem-01"]
    assert [(b.building, b.included) for b in p.buildings] == [("101", 1), ("102", 1), ("301", 2)]


def test_every_unknown_target_is_named_and_nothing_is_planned(district: District) -> None:
    ref = _pc_package(district, to=State.PUBLISHED)
    _client(district, "pc-01")

    with pytest.raises(NotFound) as err:
        plan(
            district.ctx,
            district["it.ana"],
            package=ref,
            buildings=["101", "999"],
            groups=["building_998", "level_kinder", "platform_linux", "room_101_nope"],
            rooms=["101/attic"],
            clients=["pc-01", "ghost"],
        )
    message = str(err.value)
    for named in (
        "building 999",
        "group building_998",
        "group level_kinder",
        "group platform_linux",
        "group room_101_nope",
        "room 101/attic",
        "client ghost",
    ):
        assert named in message
    assert "pc-01" not in message


def test_malformed_targets_are_named(district: District) -> None:
    ref = _pc_package(district, to=State.PUBLISHED)

    with pytest.raises(InvalidInput) as err:
        plan(district.ctx, district["it.ana"], package=ref, rooms=["lab-a"], groups=["lab-a"])
    assert "room 'lab-a' (BUILDING/ROOM" in str(err.value)
    assert "group 'lab-a'" in str(err.value)


def test_targets_without_clients_are_an_error_not_an_empty_plan(district: District) -> None:
    ref = _pc_package(district, to=State.PUBLISHED)
    _client(district, "pc-01", "101")

    with pytest.raises(InvalidInput, match="building 302 resolves to no clients"):
        plan(district.ctx, district["it.ana"], package=ref, buildings=["302"])
    with pytest.raises(InvalidInput, match="say which clients"):
        plan(district.ctx, district["it.ana"], package=ref)
    with pytest.raises(InvalidInput, match="one of --package or --image"):
        plan(
            district.ctx, district["it.ana"], package=ref, image="pc-high@2026.1", buildings=["101"]
        )


# -- gates --------------------------------------------------------------------------------


def test_a_draft_package_is_refused(district: District) -> None:
    ref = _pc_package(district)
    _client(district, "pc-01")

    with pytest.raises(Refused, match="draft, not released"):
        plan(district.ctx, district["it.ana"], package=ref, buildings=["101"])


def test_an_image_past_its_sunset_is_refused(district: District) -> None:
    ref = district.base("pc", "elementary", sunset_in=10)
    _client(district, "pc-01")
    assert isinstance(district.ctx.clock, FixedClock)
    district.ctx.clock.advance(days=11)

    with pytest.raises(SunsetReached, match="reached its sunset date"):
        plan(district.ctx, district["it.ana"], image=ref, buildings=["101"])


def test_another_buildings_customized_image_is_refused_for_a_building_named(
    district: District,
) -> None:
    district.base("pc", "elementary")
    ref = district.custom("101", to=State.PUBLISHED)
    _client(district, "washington-01", "102")

    with pytest.raises(Refused, match="is building 101's, not building 102's"):
        plan(district.ctx, district["it.ana"], image=ref, buildings=["102"])
    with pytest.raises(Refused, match="is building 101's, not building 102's"):
        plan(district.ctx, district["it.ana"], image=ref, clients=["washington-01"])


def test_a_base_image_is_not_rolled_out_by_a_btc(district: District) -> None:
    ref = district.base("pc", "elementary")
    _client(district, "pc-01")

    with pytest.raises(Refused, match="BTC cannot put a base image"):
        plan(district.ctx, district["btc.lincoln"], image=ref, buildings=["101"])


def test_roles_that_deploy_nothing_cannot_plan(district: District) -> None:
    ref = _pc_package(district, to=State.PUBLISHED)
    _client(district, "pc-01")

    for who in ("edtech.grace", "principal.lincoln"):
        with pytest.raises(Refused, match="cannot run playbooks"):
            plan(district.ctx, district[who], package=ref, buildings=["101"])


def test_plan_names_the_gates_it_passed(district: District) -> None:
    ref = _pc_package(district, to=State.PUBLISHED)
    _client(district, "pc-01")

    p = plan(district.ctx, district["btc.lincoln"], package=ref, buildings=["101"])

    assert p.ref == ref and p.kind is Kind.PACKAGE
    assert p.gates[0] == f"software package {ref} is published, no sunset date"
    assert "district-wide: for every building" in p.gates
    assert any(g.startswith("installer firefox-128.0.msi") for g in p.gates)
    assert f"{ref} detected by MSI product code {{0F1A2B3C}}" in p.gates


# -- scope ---------------------------------------------------------------------------------


def _btc_of(d: District, username: str, *numbers: str) -> None:
    with transaction(d.ctx.engine) as s:
        person = Person(username=username, display_name=username, role=Role.BTC.value)
        s.add(person)
        s.flush()
        for n in numbers:
            b = s.exec(select(Building).where(Building.number == n)).one()
            s.add(PersonBuilding(person_id=person.id or 0, building_id=b.id or 0))
    d.actors[username] = directory.actor(d.ctx, username)


def test_a_btc_of_two_buildings_plans_across_both(district: District) -> None:
    _btc_of(district, "btc.twin", "101", "102")
    ref = _pc_package(district, to=State.PUBLISHED)
    _client(district, "lincoln-01", "101")
    _client(district, "washington-01", "102")
    _client(district, "kennedy-01", "301")

    p = plan(district.ctx, district["btc.twin"], package=ref, buildings=["101", "102"])
    assert _hosts(p) == ["lincoln-01", "washington-01"]

    # A group that names no building holds the BTC's own buildings' clients only.
    p = plan(district.ctx, district["btc.twin"], package=ref, groups=["platform_pc"])
    assert _hosts(p) == ["lincoln-01", "washington-01"] and p.excluded == []


def test_a_btc_naming_another_building_is_told_it_is_not_found_as_if_it_did_not_exist(
    district: District,
) -> None:
    ref = _pc_package(district, to=State.PUBLISHED)
    _client(district, "lincoln-01", "101")
    _client(district, "kennedy-01", "301")
    btc = district["btc.lincoln"]

    with pytest.raises(NotFound, match=r"building 301; room 102/lab \(no building 102\)"):
        plan(district.ctx, btc, package=ref, buildings=["101", "301"], rooms=["102/lab"])
    with pytest.raises(NotFound, match=r"group building_301 \(no building 301\)"):
        plan(district.ctx, btc, package=ref, groups=["building_301"])
    # Worded exactly as for a number that names no building: nothing tells 301 exists.
    with pytest.raises(NotFound) as hidden:
        plan(district.ctx, btc, package=ref, buildings=["301"])
    with pytest.raises(NotFound) as missing:
        plan(district.ctx, btc, package=ref, buildings=["999"])
    assert str(hidden.value).replace("301", "999") == str(missing.value)
    # Another building's client is not even visible to a BTC.
    with pytest.raises(NotFound, match="client kennedy-01"):
        plan(district.ctx, btc, package=ref, clients=["kennedy-01"])
    with pytest.raises(InvalidInput, match="resolves to no clients in your buildings"):
        plan(district.ctx, btc, package=ref, groups=["level_high"])


def test_it_plans_district_wide(district: District) -> None:
    ref = _pc_package(district, to=State.PUBLISHED)
    for n in ("101", "102", "201", "301", "302"):
        _client(district, f"pc-{n}", n)
    _client(district, "mac-301", "301", platform="mac", model=MAC)

    p = plan(district.ctx, district["it.ana"], package=ref, groups=["all"])

    assert len(p.included) == 5 and _why(p) == {"mac-301": Reason.WRONG_PLATFORM}
    assert [b.building for b in p.buildings] == ["101", "102", "201", "301", "302"]
    assert p.summary() == (
        f"5 clients in 5 buildings would get {ref}; 1 excluded: 1 wrong platform"
    )


# -- counted in the database, as `deploy plan` asks, or listed one by one ----------


def test_a_counted_plan_agrees_with_the_listed_one_on_every_count_and_the_first_excluded(
    district: District,
) -> None:
    rng = random.Random(4)
    ref = _pc_package(district, to=State.PUBLISHED)
    models = [PC, PC2, PC_OLD, PC_UNAPPROVED, "Acer C740"]
    for n in range(120):
        software = rng.choice([[], ["7-Zip"], ["{0F1A2B3C}"], ["{0f1a2b3c}", "7-Zip"]])
        seen = rng.choice([None, 1, 1, 1, 30])
        _client(
            district,
            f"h-{n:03d}",
            rng.choice(["101", "102", "201", "301", "302"]),
            room=rng.choice(["lab", "library", "cart-2"]),
            platform=rng.choice(["pc", "pc", "pc", "mac"]),
            model=rng.choice(models),
            seen_days_ago=seen,
            facts={} if seen is None else {"orchestrator_software": software},
        )

    listed = plan(district.ctx, district["it.ana"], package=ref, groups=["all"])
    counted = plan(
        district.ctx, district["it.ana"], package=ref, groups=["all"], listed=False, sample=7
    )

    # Every reason a district-wide package can have (it names no models, no level).
    assert set(listed.reasons) == {r.value for r in REASON_ORDER} - {
        "wrong_level",
        "model_unsupported",
    }
    assert listed.never_seen > 0
    assert counted.listed is False and counted.included == []
    assert counted.excluded == listed.excluded[:7]
    for name in ("buildings", "rooms", "reasons", "never_seen"):
        assert getattr(counted, name) == getattr(listed, name), name
    assert (counted.included_count, counted.excluded_count) == (
        len(listed.included),
        len(listed.excluded),
    )
    assert counted.summary() == listed.summary()


def test_a_building_tech_counted_plan_holds_only_its_own_buildings(district: District) -> None:
    ref = _pc_package(district, to=State.PUBLISHED)
    _client(district, "lincoln-01", "101")
    _client(district, "lincoln-mac", "101", platform="mac", model=MAC)
    _client(district, "garcia-01", "102")

    p = plan(district.ctx, district["btc.lincoln"], package=ref, groups=["all"], listed=False)

    assert [(r.building, r.room, r.included, r.excluded) for r in p.rooms] == [("101", "lab", 1, 1)]
    assert [x.hostname for x in p.excluded] == ["lincoln-mac"]
