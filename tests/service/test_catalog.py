"""Creating, revising and rebasing catalog entries: rules and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import func, select

from orchestrator.db.models import AuditEntry, Releasable
from orchestrator.db.session import transaction
from orchestrator.domain.states import Kind, State, Step
from orchestrator.errors import (
    Conflict,
    Duplicate,
    InvalidInput,
    NotFound,
    Refused,
    SunsetReached,
)
from orchestrator.services import catalog, chain
from orchestrator.services.catalog import BaseImageSpec, CustomImageSpec, PackageSpec, Revision
from tests.factories import MAC, PC, PC_OLD, PC_UNAPPROVED, District, sha


def _counts(district: District) -> tuple[int, int]:
    with transaction(district.ctx.engine) as s:
        return (
            s.exec(select(func.count()).select_from(Releasable)).one(),
            s.exec(select(func.count()).select_from(AuditEntry)).one(),
        )


def _base_spec(district: District, **kw: object) -> BaseImageSpec:
    spec = BaseImageSpec(
        platform="pc",
        level="high",
        version="2026.1",
        os_version="Windows 11 24H2",
        sunset_date=district.days(300),
        artifact="https://dist.test/pc-high.wim",
        artifact_sha256=sha("pc-high"),
        models=[PC],
    )
    for k, v in kw.items():
        setattr(spec, k, v)
    return spec


@pytest.mark.parametrize(
    ("change", "expected", "where"),
    [
        ({"platform": "linux"}, InvalidInput, "platform"),
        ({"level": "college"}, InvalidInput, "level"),
        ({"level": "office"}, InvalidInput, "level"),
        ({"version": "v1"}, InvalidInput, "version"),
        ({"version": "2026.01"}, InvalidInput, "version"),
        ({"os_version": "Win\x00dows"}, InvalidInput, "os"),
        ({"artifact": "/no/such/file.wim", "artifact_sha256": None}, InvalidInput, "artifact"),
        ({"artifact_sha256": "abc"}, InvalidInput, "artifact-sha256"),
        ({"models": ["Acme:Unknown"]}, NotFound, "Approved Technology List"),
        ({"models": [PC_OLD]}, InvalidInput, "past its end of support"),
        ({"models": [PC_UNAPPROVED]}, InvalidInput, "not approved"),
        ({"models": [MAC]}, InvalidInput, "mac model"),
    ],
)
def test_bad_base_image_input_is_refused_with_its_field_and_changes_nothing(
    district: District, change: dict[str, object], expected: type[Exception], where: str
) -> None:
    before = _counts(district)
    with pytest.raises(expected) as err:
        catalog.create_base_image(district.ctx, district["it.ana"], _base_spec(district, **change))
    assert where in str(err.value)
    assert _counts(district) == before


def test_base_image_sunset_date_must_be_after_today(district: District) -> None:
    with pytest.raises(InvalidInput, match="sunset: .* is not after today"):
        catalog.create_base_image(
            district.ctx, district["it.ana"], _base_spec(district, sunset_date=district.today)
        )


def test_duplicate_base_image_version_is_refused(district: District) -> None:
    catalog.create_base_image(district.ctx, district["it.ana"], _base_spec(district))
    before = _counts(district)
    with pytest.raises(Duplicate, match="pc-high@2026.1 already exists"):
        catalog.create_base_image(district.ctx, district["it.wei"], _base_spec(district))
    assert _counts(district) == before


def test_local_artifact_is_hashed_and_a_wrong_stated_digest_refused(
    district: District, tmp_path: Path
) -> None:
    wim = tmp_path / "base.wim"
    wim.write_bytes(b"WIM image bytes")
    v = catalog.create_base_image(
        district.ctx,
        district["it.ana"],
        _base_spec(district, artifact=str(wim), artifact_sha256=None),
    )
    assert v.artifact_sha256 == sha("WIM image bytes")
    with pytest.raises(InvalidInput, match="not the stated"):
        catalog.create_base_image(
            district.ctx,
            district["it.ana"],
            _base_spec(district, version="2026.2", artifact=str(wim), artifact_sha256="0" * 64),
        )


@pytest.mark.parametrize("bad", ["../lab", "lab/1", "lab\\1", "la b", "lab\n", "", "a" * 64, ".."])
def test_customized_image_names_are_allow_listed(district: District, bad: str) -> None:
    district.base()
    before = _counts(district)
    with pytest.raises(InvalidInput, match="name"):
        catalog.create_custom_image(
            district.ctx,
            district["btc.lincoln"],
            CustomImageSpec(building="101", name=bad, version="1.0", base="pc-elementary@2026.1"),
        )
    assert _counts(district) == before


def test_customized_image_needs_a_base_of_its_buildings_level(district: District) -> None:
    district.base("pc", "high")
    with pytest.raises(InvalidInput, match="for high schools; building 101 .* is elementary"):
        catalog.create_custom_image(
            district.ctx,
            district["btc.lincoln"],
            CustomImageSpec(building="101", name="lab", version="1.0", base="pc-high@2026.1"),
        )


def test_customized_image_platform_must_match_its_base(district: District) -> None:
    district.base("pc", "elementary")
    with pytest.raises(InvalidInput, match="is for pc, not mac"):
        catalog.create_custom_image(
            district.ctx,
            district["btc.lincoln"],
            CustomImageSpec(
                building="101",
                name="lab",
                version="1.0",
                base="pc-elementary@2026.1",
                platform="mac",
            ),
        )


def test_customized_image_needs_a_published_base(district: District) -> None:
    district.base(to=State.TESTING)
    with pytest.raises(
        InvalidInput, match="is testing; a customized image starts from a published"
    ):
        district.custom()


def test_unknown_building_and_unknown_base_are_not_found(district: District) -> None:
    district.base()
    before = _counts(district)
    with pytest.raises(NotFound, match="no building '999'"):
        catalog.create_package(
            district.ctx,
            district["edtech.grace"],
            PackageSpec(
                name="robotics",
                version="1.0",
                platform="pc",
                audience="building_local",
                building="999",
                installer="https://d/r.msi",
                installer_sha256=sha("r"),
            ),
        )
    with pytest.raises(NotFound, match="no base image 'pc-elementary@2030.1'"):
        catalog.create_custom_image(
            district.ctx,
            district["btc.lincoln"],
            CustomImageSpec(building="101", name="lab", version="1.0", base="pc-elementary@2030.1"),
        )
    assert _counts(district) == before


def test_customized_image_cannot_claim_models_its_base_does_not_support(district: District) -> None:
    district.base(models=[PC])
    with pytest.raises(InvalidInput, match="not supported by base image"):
        catalog.create_custom_image(
            district.ctx,
            district["btc.lincoln"],
            CustomImageSpec(
                building="101",
                name="lab",
                version="1.0",
                base="pc-elementary@2026.1",
                models=["HP:ProBook 450 G8"],
            ),
        )


def test_customized_image_inherits_the_base_models_by_default(district: District) -> None:
    district.base(models=[PC, "HP:ProBook 450 G8"])
    ref = district.custom()
    v = catalog.show(district.ctx, district["btc.lincoln"], Kind.CUSTOM_IMAGE, ref)
    assert v.models == sorted([PC, "HP:ProBook 450 G8"])


def test_package_of_another_platform_cannot_go_in_an_image(district: District) -> None:
    district.base()
    district.package("scratch", "3.29", platform="mac", to=State.PUBLISHED)
    with pytest.raises(InvalidInput, match="is a mac package; the image is pc"):
        district.custom(packages=["scratch@3.29"])


def test_building_local_package_needs_its_building_and_others_may_not_name_one(
    district: District,
) -> None:
    with pytest.raises(InvalidInput, match="names its building"):
        catalog.create_package(
            district.ctx,
            district["sectec.kim"],
            PackageSpec(
                name="robotics",
                version="1.0",
                platform="pc",
                audience="building_local",
                installer="https://d/r.msi",
                installer_sha256=sha("r"),
            ),
        )
    with pytest.raises(InvalidInput, match="district-wide"):
        catalog.create_package(
            district.ctx,
            district["it.ana"],
            PackageSpec(
                name="office",
                version="1.0",
                platform="pc",
                audience="admin_staff",
                installer="https://d/o.msi",
                installer_sha256=sha("o"),
                building="301",
            ),
        )


def test_changing_the_content_sends_the_item_back_to_draft_and_old_evidence_stops_counting(
    district: District,
) -> None:
    district.base()
    ref = district.custom(to=State.TESTING)
    district.record_passing_tests(Kind.CUSTOM_IMAGE, ref, "edtech.grace")
    old = catalog.show(district.ctx, district["btc.lincoln"], Kind.CUSTOM_IMAGE, ref)

    result = catalog.revise(
        district.ctx,
        district["btc.lincoln"],
        Kind.CUSTOM_IMAGE,
        ref,
        Revision(settings={"wallpaper": "new"}),
    )

    assert result.digest_changed and result.chain_restarted
    assert result.view.state is State.DRAFT
    assert result.view.digest != old.digest
    status = chain.status(district.ctx, district["edtech.grace"], Kind.CUSTOM_IMAGE, ref)
    assert status.tests and not any(t.current for t in status.tests)
    # Through review again, then the sign-off needs new evidence for the new digest.
    chain.submit(district.ctx, district["btc.lincoln"], Kind.CUSTOM_IMAGE, ref)
    chain.approve(district.ctx, district["edtech.marco"], Kind.CUSTOM_IMAGE, ref, step=Step.REVIEW)
    with pytest.raises(Conflict, match="the evidence no longer matches the digest"):
        chain.approve(
            district.ctx, district["edtech.grace"], Kind.CUSTOM_IMAGE, ref, step=Step.TEST
        )


def test_revising_without_a_content_change_keeps_the_chain(district: District) -> None:
    district.base()
    ref = district.custom(to=State.TESTING)
    result = catalog.revise(
        district.ctx,
        district["btc.lincoln"],
        Kind.CUSTOM_IMAGE,
        ref,
        Revision(settings={"wallpaper": "school"}, notes="same content"),
    )
    assert not result.digest_changed
    assert result.view.state is State.TESTING


def test_published_content_is_frozen(district: District) -> None:
    ref = district.base()
    with pytest.raises(Conflict, match="content is frozen"):
        catalog.revise(
            district.ctx,
            district["it.ana"],
            Kind.BASE_IMAGE,
            ref,
            Revision(artifact="https://dist.test/other.wim", artifact_sha256=sha("other")),
        )


def test_reviser_counts_as_author_for_the_review_and_test_steps(district: District) -> None:
    district.base()
    ref = district.custom(
        to=State.DRAFT, by="sectec.kim", building="301", base=district.base("pc", "high")
    )
    # sectec.lee (same building) revises, so neither Kim nor Lee may test it.
    catalog.revise(
        district.ctx, district["sectec.lee"], Kind.CUSTOM_IMAGE, ref, Revision(settings={"x": "1"})
    )
    chain.submit(district.ctx, district["sectec.lee"], Kind.CUSTOM_IMAGE, ref)
    chain.approve(district.ctx, district["edtech.grace"], Kind.CUSTOM_IMAGE, ref, step=Step.REVIEW)
    for who in ("sectec.kim", "sectec.lee"):
        with pytest.raises(Refused, match="of their own customized image"):
            district.record_passing_tests(Kind.CUSTOM_IMAGE, ref, who)


def test_publishing_a_newer_base_deprecates_the_old_and_flags_its_derivatives(
    district: District,
) -> None:
    old_base = district.base(version="2026.1")
    released = district.custom(to=State.PUBLISHED)
    draft = district.custom(name="library", to=State.DRAFT)

    new_base = district.base(version="2026.2")

    it = district["it.ana"]
    assert catalog.show(district.ctx, it, Kind.BASE_IMAGE, old_base).state is State.DEPRECATED
    for ref in (released, draft):
        assert catalog.show(district.ctx, it, Kind.CUSTOM_IMAGE, ref).needs_rebase
    assert not catalog.show(district.ctx, it, Kind.BASE_IMAGE, new_base).needs_rebase


def test_rebase_carries_the_customization_onto_the_new_base_as_a_new_draft(
    district: District,
) -> None:
    district.base(version="2026.1")
    district.package(to=State.PUBLISHED)
    old = district.custom(
        to=State.PUBLISHED,
        packages=["firefox@128.0"],
        settings={"wallpaper": "lions", "kiosk": "off"},
    )
    district.base(version="2026.2")

    result = catalog.rebase(district.ctx, district["btc.lincoln"], old)

    v = result.view
    assert (v.ref, v.base, v.state) == ("101/lab@1.1", "pc-elementary@2026.2", State.DRAFT)
    assert v.settings == {"wallpaper": "lions", "kiosk": "off"}
    assert v.packages == ["firefox@128.0"]
    assert v.supersedes == old
    # Walking it to release clears the flag on the old version and deprecates it.
    district.walk(Kind.CUSTOM_IMAGE, v.ref, State.PUBLISHED, author="btc.lincoln")
    prior = catalog.show(district.ctx, district["btc.lincoln"], Kind.CUSTOM_IMAGE, old)
    assert prior.state is State.DEPRECATED and not prior.needs_rebase


def test_rebase_refuses_when_no_newer_base_exists(district: District) -> None:
    district.base()
    ref = district.custom(to=State.PUBLISHED)
    with pytest.raises(InvalidInput, match="is not newer"):
        catalog.rebase(district.ctx, district["btc.lincoln"], ref)


def test_effective_sunset_of_a_derivative_is_the_earlier_of_its_own_and_its_base(
    district: District,
) -> None:
    district.base(sunset_in=40)
    ref = district.custom()
    v = catalog.show(district.ctx, district["btc.lincoln"], Kind.CUSTOM_IMAGE, ref)
    assert v.effective_sunset == district.days(40)
    catalog.revise(
        district.ctx,
        district["btc.lincoln"],
        Kind.CUSTOM_IMAGE,
        ref,
        Revision(sunset_date=district.days(20)),
    )
    v = catalog.show(district.ctx, district["btc.lincoln"], Kind.CUSTOM_IMAGE, ref)
    assert v.effective_sunset == district.days(20)
    catalog.revise(
        district.ctx,
        district["btc.lincoln"],
        Kind.CUSTOM_IMAGE,
        ref,
        Revision(sunset_date=district.days(400)),
    )
    v = catalog.show(district.ctx, district["btc.lincoln"], Kind.CUSTOM_IMAGE, ref)
    assert v.effective_sunset == district.days(40)


def test_nothing_past_its_effective_sunset_is_approved_or_released(district: District) -> None:
    district.base(sunset_in=10)
    ref = district.custom(to=State.APPROVED)
    district.ctx.clock.advance(days=11)  # type: ignore[attr-defined]
    with pytest.raises(SunsetReached, match="reached its effective sunset"):
        chain.publish(district.ctx, district["btc.lincoln"], Kind.CUSTOM_IMAGE, ref)
    assert catalog.show(district.ctx, district["btc.lincoln"], Kind.CUSTOM_IMAGE, ref).state is (
        State.APPROVED
    )


def test_unknown_reference_says_what_was_asked(district: District) -> None:
    with pytest.raises(NotFound, match="no base image 'pc-high@9.9'"):
        catalog.show(district.ctx, district["it.ana"], Kind.BASE_IMAGE, "pc-high@9.9")
    with pytest.raises(InvalidInput, match="is not a customized image reference"):
        catalog.show(district.ctx, district["it.ana"], Kind.CUSTOM_IMAGE, "lab")


def test_rebasing_an_old_version_again_points_to_its_newer_rebase(district: District) -> None:
    district.base(version="2026.1")
    old = district.custom(to=State.PUBLISHED)
    district.base(version="2026.2")
    catalog.rebase(district.ctx, district["btc.lincoln"], old)
    district.base(version="2026.3")

    with pytest.raises(Conflict, match="already rebased as 101/lab@1.1 .*rebase 101/lab@1.1 onto"):
        catalog.rebase(district.ctx, district["btc.lincoln"], old)
    newer = catalog.rebase(district.ctx, district["btc.lincoln"], "101/lab@1.1")
    assert (newer.view.ref, newer.view.base) == ("101/lab@1.2", "pc-elementary@2026.3")
