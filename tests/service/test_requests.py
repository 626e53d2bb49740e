"""Requests for technical work: filed by a building's people, routed by duty scope,
worked by the building's technician, every step audited; on both databases."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.domain.requests import DEFAULT_CATEGORIES, Queue, RequestState
from orchestrator.errors import Conflict, InvalidInput, NotFound, Refused
from orchestrator.services import audit, requests
from orchestrator.services.context import Context
from orchestrator.services.requests import RequestSpec
from tests.factories import District

TECHNICIAN_KEYS = [c.key for c in DEFAULT_CATEGORIES if c.queue is Queue.TECHNICIAN]
DEPARTMENT_KEYS = [c.key for c in DEFAULT_CATEGORIES if c.queue is Queue.DEPARTMENT]


def _file(d: District, who: str = "principal.lincoln", **kw: object) -> requests.RequestView:
    spec = {"building": "101", "category": "hardware_repair", "description": "projector dead"}
    return requests.file_request(d.ctx, d[who], RequestSpec(**(spec | kw)))  # type: ignore[arg-type]


def _actions(d: District) -> list[str]:
    return [e.action for e in audit.entries(d.ctx, d["it.ana"], object_kind="request")]


def test_every_category_of_the_catalog_is_there_with_where_it_goes(ctx: Context) -> None:
    shown = {c.key: c for c in requests.categories(ctx)}
    assert set(shown) == {c.key for c in DEFAULT_CATEGORIES}
    assert shown["grading"].queue is Queue.DEPARTMENT
    assert "never have access to grading" in shown["grading"].why


def test_a_principal_files_a_hardware_request_into_the_technicians_queue(
    district: District,
) -> None:
    r = _file(district, urgency="high", room="lab-a")
    assert (r.queue, r.state, r.filed_by, r.urgency.value) == (
        Queue.TECHNICIAN,
        RequestState.OPEN,
        "principal.lincoln",
        "high",
    )
    assert r.routed_because == ""
    queue = requests.list_requests(district.ctx, district["btc.lincoln"])
    assert [q.id for q in queue] == [r.id]
    assert _actions(district) == ["request.file"]


@pytest.mark.parametrize("category", DEPARTMENT_KEYS)
def test_work_outside_technicians_duties_goes_to_its_department_with_the_reason(
    district: District, category: str
) -> None:
    r = _file(district, category=category)
    assert r.queue is Queue.DEPARTMENT and r.department
    assert "briefing #2872" in r.routed_because
    # It never reaches the building technician's queue.
    assert requests.list_requests(district.ctx, district["btc.lincoln"]) == []
    assert [q.id for q in requests.list_requests(district.ctx, district["principal.lincoln"])] == [
        r.id
    ]


@pytest.mark.parametrize("who", ["btc.lincoln", "it.ana"])
def test_nobody_takes_a_grading_request_for_a_technician_and_the_refusal_is_audited(
    district: District, who: str
) -> None:
    r = _file(district, category="grading", description="gradebook totals wrong")
    with pytest.raises(Refused, match="Student Information Systems"):
        requests.take(district.ctx, district[who], r.id)
    assert requests.show(district.ctx, district["it.ana"], r.id).state is RequestState.OPEN
    assert _actions(district) == ["request.file", "request.take_refused"]


def test_the_building_tech_takes_escalates_and_it_closes(district: District) -> None:
    r = _file(district)
    taken = requests.take(district.ctx, district["btc.lincoln"], r.id)
    assert taken.state is RequestState.TAKEN and taken.assignee == "btc.lincoln"
    assert taken.first_response_at is not None
    up = requests.escalate(
        district.ctx, district["btc.lincoln"], r.id, reason="needs a new lamp from IT stock"
    )
    assert up.state is RequestState.ESCALATED and up.assignee is None
    requests.take(district.ctx, district["it.ana"], r.id)
    done = requests.close(district.ctx, district["it.ana"], r.id, note="lamp replaced")
    assert done.state is RequestState.CLOSED and done.closed_at is not None
    assert _actions(district) == [
        "request.file",
        "request.take",
        "request.escalate",
        "request.take",
        "request.close",
    ]
    with pytest.raises(Conflict, match="closed"):
        requests.close(district.ctx, district["it.ana"], r.id, note="again")


def test_a_principal_filing_for_another_building_is_refused_and_nothing_is_filed(
    district: District,
) -> None:
    with pytest.raises(NotFound, match="no building '102'"):
        _file(district, building="102")
    assert requests.list_requests(district.ctx, district["it.ana"]) == []
    assert _actions(district) == []


def test_another_buildings_tech_neither_sees_nor_takes_the_request(district: District) -> None:
    r = _file(district)
    assert requests.list_requests(district.ctx, district["btc.garcia"]) == []
    with pytest.raises(NotFound, match=f"no request {r.id}"):
        requests.take(district.ctx, district["btc.garcia"], r.id)
    with pytest.raises(NotFound):
        requests.show(district.ctx, district["btc.garcia"], r.id)


def test_edtech_files_for_any_building_but_does_not_work_requests(district: District) -> None:
    r = _file(district, who="edtech.grace", building="102", category="software_access")
    with pytest.raises(Refused):
        requests.take(district.ctx, district["edtech.grace"], r.id)


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        (
            {"category": "coffee"},
            NotFound,
            "no request category 'coffee' \\(one of: hardware_repair",
        ),
        ({"building": "999"}, NotFound, "no building '999'"),
        ({"description": "   "}, InvalidInput, "description: is required"),
        ({"description": "x" * 4001}, InvalidInput, "4001 characters; at most 4000"),
        ({"description": "bell\x07"}, InvalidInput, "control character"),
        ({"urgency": "asap"}, InvalidInput, "'asap' is not an urgency"),
        ({"clients": ["nobody-01"]}, NotFound, "no client 'nobody-01' in building 101"),
    ],
)
def test_bad_input_is_refused_naming_what_and_files_nothing(
    district: District, change: dict[str, object], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        _file(district, **change)
    assert requests.list_requests(district.ctx, district["it.ana"]) == []


def test_an_html_description_is_stored_as_typed(district: District) -> None:
    text = "<script>alert('x')</script> & the cart's charger"
    r = _file(district, description=text)
    assert requests.show(district.ctx, district["it.ana"], r.id).description == text


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=st.sampled_from([c.key for c in DEFAULT_CATEGORIES]))
def test_a_technician_may_take_a_request_exactly_when_its_category_is_their_duty(
    district: District, key: str
) -> None:
    r = _file(district, category=key)
    if key in TECHNICIAN_KEYS:
        assert requests.take(district.ctx, district["btc.lincoln"], r.id).state is (
            RequestState.TAKEN
        )
    else:
        with pytest.raises(Refused):
            requests.take(district.ctx, district["btc.lincoln"], r.id)
