"""A building's page says where its computers fetch images from and what was staged."""

from __future__ import annotations

from pathlib import Path

from orchestrator.services import staging
from orchestrator.services.staging import PointSpec
from tests.factories import District
from tests.support.fixtures import scratch_deployment
from tests.web.conftest import SignIn

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def test_the_building_page_shows_its_distribution_point_or_says_it_has_none(
    district: District, signed_in: SignIn
) -> None:
    tech = signed_in("btc.lincoln")
    assert "None: the building's computers fetch from the district's server" in (
        tech.get("/buildings/101").text
    )
    staging.add_point(
        district.ctx,
        district["it.ana"],
        PointSpec(
            "101", "dp-101.lincoln.test", "images", "/srv/images", "https://dp-101:8443",
            bandwidth_kib=4096, host_key=HOST_KEY,
        ),
    )  # fmt: skip

    page = tech.get("/buildings/101").text

    assert "<code>https://dp-101:8443</code>" in page and "at most 4096 KiB/s" in page
    assert "Nothing staged yet" in page


def test_a_deployments_page_says_whether_each_buildings_point_holds_what_it_delivers(
    district: District, signed_in: SignIn, tmp_path: Path
) -> None:
    _, dep = scratch_deployment(district, tmp_path, ("101",), stored=False)
    tech = signed_in("btc.lincoln")
    assert "<h2>Distribution points</h2>" not in tech.get(f"/deployments/{dep}").text
    staging.add_point(
        district.ctx,
        district["it.ana"],
        PointSpec(
            "101", "dp-101", "images", "/srv/images", "https://dp-101:8443", host_key=HOST_KEY
        ),
    )

    page = tech.get(f"/deployments/{dep}").text

    assert "<h2>Distribution points</h2>" in page
    assert "its released bytes are not in the image store" in page  # never imported
