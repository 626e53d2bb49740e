"""The Approved Technology List."""

from __future__ import annotations

import pytest

from orchestrator.errors import Duplicate, InvalidInput, NotFound, Refused
from orchestrator.services import audit, hardware
from tests.factories import District


def test_it_adds_and_updates_models_and_each_change_is_audited(district: District) -> None:
    it = district["it.ana"]
    hardware.add_model(
        district.ctx,
        it,
        vendor="Apple",
        model="iMac21,1",
        platform="mac",
        end_of_support=district.days(700),
    )
    hardware.update_model(district.ctx, it, "apple:imac21,1", approved=False)
    m = next(m for m in hardware.list_models(district.ctx, it) if m.model == "iMac21,1")
    assert m.approved is False
    actions = [e.action for e in audit.entries(district.ctx, it, object_kind="hardware_model")]
    assert actions[-2:] == ["hardware.add", "hardware.update"]


@pytest.mark.parametrize(
    ("vendor", "model", "platform", "error", "text"),
    [
        ("Dell", "Latitude 3420", "pc", Duplicate, "already on the Approved Technology List"),
        ("dell", "latitude 3420", "pc", Duplicate, "already on the Approved Technology List"),
        ("Dell", "Latitude/3420", "pc", InvalidInput, "model: must be one line without slashes"),
        ("Dell", "", "pc", InvalidInput, "model: is required"),
        ("Dell", "XPS 13", "linux", InvalidInput, "platform"),
        ("De\x07ll", "XPS 13", "pc", InvalidInput, "vendor: contains a control character"),
    ],
)
def test_bad_or_duplicate_models_are_refused_with_the_field(
    district: District, vendor: str, model: str, platform: str, error: type[Exception], text: str
) -> None:
    before = len(hardware.list_models(district.ctx, district["it.ana"]))
    with pytest.raises(error, match=text):
        hardware.add_model(
            district.ctx,
            district["it.ana"],
            vendor=vendor,
            model=model,
            platform=platform,
            end_of_support=None,
        )
    assert len(hardware.list_models(district.ctx, district["it.ana"])) == before


@pytest.mark.parametrize("who", ["edtech.grace", "sectec.kim", "btc.lincoln", "principal.lincoln"])
def test_only_it_records_the_committees_decisions(district: District, who: str) -> None:
    with pytest.raises(Refused, match="Approved Technology List"):
        hardware.add_model(
            district.ctx,
            district[who],
            vendor="Acme",
            model="One",
            platform="pc",
            end_of_support=None,
        )


def test_an_ambiguous_or_unknown_model_name_is_not_guessed(district: District) -> None:
    hardware.add_model(
        district.ctx,
        district["it.ana"],
        vendor="HP",
        model="Latitude 3420",
        platform="pc",
        end_of_support=None,
    )
    with pytest.raises(NotFound, match="ambiguous: say Vendor:Model"):
        hardware.update_model(district.ctx, district["it.ana"], "Latitude 3420", approved=False)
    with pytest.raises(NotFound, match="not on the Approved Technology List"):
        hardware.update_model(district.ctx, district["it.ana"], "Acme:Nope", approved=False)
