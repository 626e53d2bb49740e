"""IT keeps the catalog of request categories: adds, changes, retires; nobody else
does; requests already filed keep their routing; every change is audited; on both
databases."""

from __future__ import annotations

import pytest

from orchestrator.domain.requests import Queue
from orchestrator.errors import Conflict, InvalidInput, NotFound, Refused
from orchestrator.services import audit, requests
from orchestrator.services.requests import CategorySpec, RequestSpec
from tests.factories import District

PRINTERS = CategorySpec(
    label="Printers and copiers",
    queue="department",
    department="Print Services",
    why="Copiers are leased: Print Services.",
)


def _keys(d: District) -> list[str]:
    return [c.key for c in requests.categories(d.ctx)]


def _category_actions(d: District) -> list[str]:
    return [e.action for e in audit.entries(d.ctx, d["it.ana"], object_kind="request_category")]


def test_it_adds_a_department_category_and_requests_filed_under_it_go_there(
    district: District,
) -> None:
    made = requests.add_category(district.ctx, district["it.ana"], "Printers", PRINTERS)

    assert (made.key, made.queue, made.department) == (
        "printers",
        Queue.DEPARTMENT,
        "Print Services",
    )
    r = requests.file_request(
        district.ctx,
        district["principal.lincoln"],
        RequestSpec(building="101", category="printers", description="copier jams"),
    )
    assert (r.queue, r.department, r.routed_because) == (
        Queue.DEPARTMENT, "Print Services", "Copiers are leased: Print Services.",
    )  # fmt: skip
    assert _category_actions(district) == ["request_category.add"]


@pytest.mark.parametrize("who", ["edtech.grace", "btc.lincoln", "principal.lincoln"])
def test_only_it_changes_the_categories_and_nothing_changes_otherwise(
    district: District, who: str
) -> None:
    with pytest.raises(Refused, match="change the request categories"):
        requests.add_category(district.ctx, district[who], "printers", PRINTERS)
    with pytest.raises(Refused):
        requests.edit_category(
            district.ctx, district[who], "grading", CategorySpec(queue="technician")
        )
    assert "printers" not in _keys(district)
    assert requests.categories(district.ctx)[-1].queue is Queue.DEPARTMENT
    assert _category_actions(district) == []


def test_a_category_moved_to_the_technician_keeps_filed_requests_where_they_went(
    district: District,
) -> None:
    before = requests.file_request(
        district.ctx,
        district["principal.lincoln"],
        RequestSpec(building="101", category="documents", description="spreadsheet macros"),
    )
    changed = requests.edit_category(
        district.ctx, district["it.ana"], "documents", CategorySpec(queue="technician")
    )
    assert (changed.queue, changed.department, changed.why) == (Queue.TECHNICIAN, "", "")
    assert requests.show(district.ctx, district["it.ana"], before.id).queue is Queue.DEPARTMENT
    after = requests.file_request(
        district.ctx,
        district["principal.lincoln"],
        RequestSpec(building="101", category="documents", description="slides template"),
    )
    assert after.queue is Queue.TECHNICIAN
    (entry,) = audit.entries(district.ctx, district["it.ana"], object_kind="request_category")
    assert entry.before["queue"] == "department" and entry.after["queue"] == "technician"


def test_a_retired_category_takes_no_new_requests_and_comes_back_when_reactivated(
    district: District,
) -> None:
    requests.edit_category(district.ctx, district["it.ana"], "network", CategorySpec(active=False))
    assert "network" not in _keys(district)
    assert "network" in [c.key for c in requests.categories(district.ctx, include_retired=True)]
    with pytest.raises(NotFound, match="no request category 'network'"):
        requests.file_request(
            district.ctx,
            district["principal.lincoln"],
            RequestSpec(building="101", category="network", description="wifi"),
        )
    requests.edit_category(district.ctx, district["it.ana"], "network", CategorySpec(active=True))
    assert "network" in _keys(district)


@pytest.mark.parametrize(
    ("key", "spec", "field", "message"),
    [
        ("x", PRINTERS, "key", "is not a category key"),
        ("../etc", PRINTERS, "key", "is not a category key"),
        ("printers", CategorySpec(label="Printers"), "label", "needs a label and a queue"),
        ("printers", CategorySpec(label="Printers", queue="janitor"), "queue", "not a queue"),
        ("printers", CategorySpec(label="Printers", queue="department", why="x"), "department",
         "is required"),
        ("printers", CategorySpec(label="Printers", queue="department", department="Print"),
         "why", "is required"),
        ("printers", CategorySpec(label="Two\nlines", queue="technician"), "label", "one line"),
        ("printers", CategorySpec(label="x" * 121, queue="technician"), "label", "at most 120"),
    ],
)  # fmt: skip
def test_a_bad_category_is_refused_naming_the_field_and_nothing_is_added(
    district: District, key: str, spec: CategorySpec, field: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message) as raised:
        requests.add_category(district.ctx, district["it.ana"], key, spec)
    assert raised.value.field == field
    assert len(requests.categories(district.ctx, include_retired=True)) == 9
    assert _category_actions(district) == []


def test_a_duplicate_unknown_or_unchanged_category_is_said_so(district: District) -> None:
    with pytest.raises(Conflict, match="exists already"):
        requests.add_category(district.ctx, district["it.ana"], "grading", PRINTERS)
    with pytest.raises(NotFound, match="no request category 'coffee'"):
        requests.edit_category(
            district.ctx, district["it.ana"], "coffee", CategorySpec(active=False)
        )
    with pytest.raises(Conflict, match="like that already"):
        requests.edit_category(
            district.ctx, district["it.ana"], "network", CategorySpec(active=True)
        )
    assert _category_actions(district) == []
