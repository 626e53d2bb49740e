"""Every operation of the REST API x every role x an object of its own and of another
building, called with API tokens, on both database backends.

The operations are read from the application's OpenAPI document: an operation this
table does not cover fails :func:`test_every_operation_of_the_openapi_document_is_walked`.
The EXPECTED table is written by hand from ``shared/DOMAIN.md`` and the two source
documents beside it, as ``tests/service/test_permission_matrix.py`` is: it is NOT computed
from ``orchestrator/domain/policy.py``.

Who acts: it.ana (IT), edtech.grace (EdTech), sectec.kim (SecTec of Kennedy High, 301),
btc.lincoln (BTC of Lincoln Elementary, 101) and principal.lincoln (of 101). Their own
building: 301 for the SecTec, 101 for the others (IT and EdTech cover the district, so
for them 101 is simply a building). Another building: Washington Elementary, 102, with
its own customized image, client, maintenance window and a deployment that reaches
only 102. IT and EdTech have no other building (``_``). For API tokens, "another" is
another person's token (btc.garcia's, of 102): nobody, IT included, sees or revokes a
token that is not theirs.

How the rows follow from the district's rules:

* Reading (``me``, buildings, a building's clients, the catalog, an item and its chain,
  the sunset report, deployments, their progress and stagings, the audit trail):
  everyone reads district-wide things and the buildings they cover ("sees its
  building's status");
  building staff (SecTec, BTC, principal) see nothing of another building.
* The review of a customized image is EdTech's ("EdTech reviews it"): IT, the building's
  tech and the principal are refused in their own building.
* Planning, creating and pausing a deployment: "deploys customized images and software
  updates" is the SecTec's and the BTC's in their own buildings; IT "assists with the
  deployment of customized images at school sites", so it may plan, create and pause
  there too. EdTech and principals deploy nothing: refused.
* Requests for technical work: "every request for technical work goes through one
  self-service intake", so everyone files for the buildings they cover (principals ask
  for work; IT and EdTech for any building). The building's technician works it and
  escalates to IT ("help desk"), so the technician of the building and IT take it;
  EdTech and principals do not. Reading follows the buildings, as everywhere.
* API tokens are each person's own: everyone lists, makes and revokes their own.

Outcomes: ``Y`` allowed: a 2xx answer that shows the object (and, for a write, its
effect happened); ``N`` refused: 403 with the service's refusal, nothing changed; ``H``
hidden: another building's object is not revealed, which for an operation on one object
is a 404 (never a 403: a refusal would confirm that it exists), and for a listing is a
200 that leaves it out. Nothing changes either.

One ``N`` stands where another building is named: a principal who plans or creates a
deployment for 102 is refused because a principal deploys nothing anywhere; that answer
is the same for any building number, so it says nothing about 102.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from orchestrator.domain.states import Kind, State
from orchestrator.services import (
    accounts,
    catalog,
    deployments,
    inventory,
    requests,
    windows,
)
from orchestrator.services.deployments import DeploymentSpec
from tests.factories import District
from tests.support.fixtures import release_scratch


class Expect(StrEnum):
    ALLOW = "allow"
    REFUSED = "refused"
    HIDDEN = "hidden"


Y, N, H = Expect.ALLOW, Expect.REFUSED, Expect.HIDDEN
_ = None

ROLES = ("it", "edtech", "sectec", "btc", "principal")
OWN = "own_building"
OTHER = "other_building"

# fmt: off
# (operation, scope):                    it  edtech sectec btc principal
EXPECTED: dict[tuple[str, str], tuple[Expect | None, ...]] = {
    ("get_me", OWN):                        (Y, Y, Y, Y, Y),
    ("list_buildings", OWN):                (Y, Y, Y, Y, Y),
    ("list_buildings", OTHER):              (_, _, H, H, H),
    ("list_building_clients", OWN):         (Y, Y, Y, Y, Y),
    ("list_building_clients", OTHER):       (_, _, H, H, H),
    ("list_catalog", OWN):                  (Y, Y, Y, Y, Y),
    ("list_catalog", OTHER):                (_, _, H, H, H),
    ("get_catalog_item", OWN):              (Y, Y, Y, Y, Y),
    ("get_catalog_item", OTHER):            (_, _, H, H, H),
    ("get_chain_status", OWN):              (Y, Y, Y, Y, Y),
    ("get_chain_status", OTHER):            (_, _, H, H, H),
    ("list_my_queue", OWN):                 (Y, Y, Y, Y, Y),
    ("list_my_queue", OTHER):               (_, _, H, H, H),
    # the review of a customized image is EdTech's alone
    ("decide_step", OWN):                   (N, Y, N, N, N),
    ("decide_step", OTHER):                 (_, _, H, H, H),
    ("get_sunset_report", OWN):             (Y, Y, Y, Y, Y),
    ("get_sunset_report", OTHER):           (_, _, H, H, H),
    # the building's tech deploys; IT assists; EdTech and principals deploy nothing
    ("plan_deployment", OWN):               (Y, N, Y, Y, N),
    ("plan_deployment", OTHER):             (_, _, H, H, N),
    ("create_deployment", OWN):             (Y, N, Y, Y, N),
    ("create_deployment", OTHER):           (_, _, H, H, N),
    ("list_deployments", OWN):              (Y, Y, Y, Y, Y),
    ("list_deployments", OTHER):            (_, _, H, H, H),
    ("get_deployment", OWN):                (Y, Y, Y, Y, Y),
    ("get_deployment", OTHER):              (_, _, H, H, H),
    ("get_deployment_progress", OWN):       (Y, Y, Y, Y, Y),
    ("get_deployment_progress", OTHER):     (_, _, H, H, H),
    ("list_deployment_stagings", OWN):      (Y, Y, Y, Y, Y),
    ("list_deployment_stagings", OTHER):    (_, _, H, H, H),
    ("control_deployment", OWN):            (Y, N, Y, Y, N),
    ("control_deployment", OTHER):          (_, _, H, H, H),
    ("list_audit_entries", OWN):            (Y, Y, Y, Y, Y),
    ("list_audit_entries", OTHER):          (_, _, H, H, H),
    # one intake: anyone files for the buildings they cover; the building's technician
    # (or IT, who is escalated to) takes the work; EdTech and principals do not work it
    ("list_request_categories", OWN):       (Y, Y, Y, Y, Y),
    ("add_request_category", OWN):          (Y, N, N, N, N),
    ("edit_request_category", OWN):         (Y, N, N, N, N),
    ("file_request", OWN):                  (Y, Y, Y, Y, Y),
    ("file_request", OTHER):                (_, _, H, H, H),
    ("list_requests", OWN):                 (Y, Y, Y, Y, Y),
    ("list_requests", OTHER):               (_, _, H, H, H),
    ("get_request", OWN):                   (Y, Y, Y, Y, Y),
    ("get_request", OTHER):                 (_, _, H, H, H),
    ("act_on_request", OWN):                (Y, N, Y, Y, N),
    ("act_on_request", OTHER):              (_, _, H, H, H),
    # answering a request with a change is working it: the technician's (or IT's)
    ("link_request_change", OWN):           (Y, N, Y, Y, N),
    ("link_request_change", OTHER):         (_, _, H, H, H),
    ("deploy_for_request", OWN):            (Y, N, Y, Y, N),
    ("deploy_for_request", OTHER):          (_, _, H, H, H),
    # the intake's figures are read as the buildings are: staff count their own alone
    ("get_request_report", OWN):            (Y, Y, Y, Y, Y),
    ("get_request_report", OTHER):          (_, _, H, H, H),
    ("get_request_report_csv", OWN):        (Y, Y, Y, Y, Y),
    ("get_request_report_csv", OTHER):      (_, _, H, H, H),
    # each person's own tokens; "other" is another person's (btc.garcia's)
    ("list_tokens", OWN):                   (Y, Y, Y, Y, Y),
    ("list_tokens", OTHER):                 (H, H, H, H, H),
    ("create_token", OWN):                  (Y, Y, Y, Y, Y),
    ("revoke_token", OWN):                  (Y, Y, Y, Y, Y),
    ("revoke_token", OTHER):                (H, H, H, H, H),
}
# fmt: on

PERSONA = {
    "it": "it.ana",
    "edtech": "edtech.grace",
    "sectec": "sectec.kim",
    "btc": "btc.lincoln",
    "principal": "principal.lincoln",
}
LABEL = {"it": "IT", "edtech": "EdTech", "sectec": "SecTec", "btc": "BTC", "principal": "Principal"}
HOME = {"it": "101", "edtech": "101", "sectec": "301", "btc": "101", "principal": "101"}
AWAY = "102"
BASE_OF = {"101": "pc-elementary@2026.1", "102": "pc-elementary@2026.1", "301": "pc-high@2026.1"}
TECH = {"101": "btc.lincoln", "102": "btc.garcia", "301": "sectec.kim"}
OTHER_PERSON = "btc.garcia"
ASSETS = (
    "Hostname,Building,Room,Platform,Model,Serial,MAC,IP\n"
    'cart-101,101,cart,mac,"MacBookAir10,1",SN1010,02:00:00:00:01:01,127.0.0.21\n'
    'cart-102,102,cart,mac,"MacBookAir10,1",SN1020,02:00:00:00:01:02,127.0.0.22\n'
    'cart-301,301,cart,mac,"MacBookAir10,1",SN3010,02:00:00:00:03:01,127.0.0.23\n'
)


# ---------------------------------------------------------------------------
# The district the calls are made in: built as far as each operation needs it
# ---------------------------------------------------------------------------


@dataclass
class World:
    d: District
    web: TestClient
    folder: Path
    tokens: dict[str, dict[str, str]] = field(default_factory=dict)

    def headers(self, username: str) -> dict[str, str]:
        if username not in self.tokens:
            _, secret = accounts.create_token(self.d.ctx, self.d[username], "scope-walk")
            self.tokens[username] = {"Authorization": f"Bearer {secret}"}
        return self.tokens[username]

    @cached_property
    def images(self) -> dict[str, str]:
        """Per building, a customized image waiting for EdTech's review."""
        self.d.base("pc", "elementary")
        self.d.base("pc", "high")
        return {
            b: self.d.custom(b, "lab", base=BASE_OF[b], by=TECH[b], to=State.IN_REVIEW)
            for b in BASE_OF
        }

    @cached_property
    def awaiting_release(self) -> dict[str, str]:
        """Per building, an approved customized image waiting for its tech's release."""
        bases = self.images  # the bases are published with them
        assert bases
        return {
            b: self.d.custom(b, "library", base=BASE_OF[b], by=TECH[b], to=State.APPROVED)
            for b in BASE_OF
        }

    @cached_property
    def clients(self) -> list[str]:
        assets = self.folder / "assets.csv"
        assets.write_text(ASSETS)
        inventory.import_clients(self.d.ctx, self.d["it.ana"], assets)
        return [f"cart-{b}" for b in BASE_OF]

    @cached_property
    def deployments(self) -> dict[str, int]:
        """Per building, a deployment of Scratch (made by the building's tech) reaching
        only that building's cart."""
        assert self.clients
        for b in BASE_OF:
            windows.add_window(
                self.d.ctx, self.d[TECH[b]], building=b, days="mon-thu", start="18:00", end="06:00"
            )
        release_scratch(self.d, "3.29", self.folder)
        return {
            b: deployments.create(
                self.d.ctx, self.d[TECH[b]], DeploymentSpec(package="scratch@3.29", buildings=(b,))
            ).id
            for b in BASE_OF
        }

    @cached_property
    def requests(self) -> dict[str, int]:
        """Per building, an open hardware repair (the technician's queue), filed by IT."""
        return {
            b: requests.file_request(
                self.d.ctx,
                self.d["it.ana"],
                requests.RequestSpec(
                    building=b, category="hardware_repair", description=f"cart-{b} will not boot"
                ),
            ).id
            for b in BASE_OF
        }

    def deployments_reaching(self, building: str) -> int:
        return sum(
            building in dep.buildings
            for dep in deployments.list_deployments(self.d.ctx, self.d["it.ana"], limit=200)
        )


@pytest.fixture
def world(district: District, web: TestClient, tmp_path: Path) -> World:
    return World(district, web, tmp_path)


@dataclass(frozen=True)
class Call:
    """One role's call on an object of its own building, or of another."""

    world: World
    role: str
    scope: str

    @property
    def username(self) -> str:
        return PERSONA[self.role]

    @property
    def building(self) -> str:
        return HOME[self.role] if self.scope == OWN else AWAY

    @property
    def ctx(self) -> Any:
        return self.world.d.ctx

    def get(self, url: str, **params: Any) -> httpx.Response:
        return self.world.web.get(url, params=params, headers=self.world.headers(self.username))

    def post(self, url: str, body: dict[str, Any]) -> httpx.Response:
        return self.world.web.post(url, json=body, headers=self.world.headers(self.username))

    def patch(self, url: str, body: dict[str, Any]) -> httpx.Response:
        return self.world.web.patch(url, json=body, headers=self.world.headers(self.username))

    def delete(self, url: str) -> httpx.Response:
        return self.world.web.delete(url, headers=self.world.headers(self.username))


@dataclass(frozen=True)
class Outcome:
    response: httpx.Response
    shows: bool | None = None
    """Whether a successful answer shows the object aimed at (None: nothing to look for)."""


def _json(r: httpx.Response) -> Any:
    return r.json() if r.status_code == 200 or r.status_code == 201 else None


def _shows(r: httpx.Response, found: Callable[[Any], bool]) -> bool | None:
    body = _json(r)
    return None if body is None else found(body)


NOT_FOUND = "not_found"
LEFT_OUT = "left_out"


@dataclass(frozen=True)
class Operation:
    run: Callable[[Call], Outcome]
    hidden: str = NOT_FOUND
    """How another building's object is kept from view: a 404, or left out of a listing."""
    refusal: str = ""
    """What the service says the role cannot do, after 'refused: <role> cannot '."""
    changed: Callable[[Call], bool] | None = None
    """For a write: whether its effect is there (only after an allowed call)."""


# ---------------------------------------------------------------------------
# One call per operation
# ---------------------------------------------------------------------------


def get_me(c: Call) -> Outcome:
    r = c.get("/api/v1/me")
    return Outcome(r, _shows(r, lambda b: b["username"] == c.username))


def list_buildings(c: Call) -> Outcome:
    r = c.get("/api/v1/buildings")
    return Outcome(r, _shows(r, lambda body: c.building in [b["number"] for b in body]))


def list_building_clients(c: Call) -> Outcome:
    assert c.world.clients
    r = c.get(f"/api/v1/buildings/{c.building}/clients")
    return Outcome(r, _shows(r, lambda body: f"cart-{c.building}" in [x["hostname"] for x in body]))


def list_catalog(c: Call) -> Outcome:
    ref = c.world.images[c.building]
    r = c.get("/api/v1/catalog", building=c.building)
    return Outcome(r, _shows(r, lambda body: ref in [v["ref"] for v in body]))


def get_catalog_item(c: Call) -> Outcome:
    ref = c.world.images[c.building]
    r = c.get(f"/api/v1/catalog/custom_image/{ref}")
    return Outcome(r, _shows(r, lambda body: body["ref"] == ref))


def get_chain_status(c: Call) -> Outcome:
    ref = c.world.images[c.building]
    r = c.get(f"/api/v1/chain/custom_image/{ref}")
    return Outcome(r, _shows(r, lambda body: body["item"]["ref"] == ref))


def list_my_queue(c: Call) -> Outcome:
    """Another building's images wait for that building's tech (release) and EdTech
    (review): none of them is in the queue of another building's staff."""
    theirs = {c.world.images[c.building], c.world.awaiting_release[c.building]}
    r = c.get("/api/v1/queue")
    if c.scope == OWN:
        return Outcome(r)
    return Outcome(r, _shows(r, lambda body: bool(theirs & {q["item"]["ref"] for q in body})))


def decide_step(c: Call) -> Outcome:
    ref = c.world.images[c.building]
    r = c.post(
        "/api/v1/decisions",
        {
            "kind": "custom_image",
            "ref": ref,
            "step": "review",
            "outcome": "approve",
            "reason": "fine for instruction",
        },
    )
    return Outcome(r, _shows(r, lambda body: body["ref"] == ref and body["state"] == "testing"))


def _reviewed(c: Call) -> bool:
    ref = c.world.images[c.building]
    return catalog.show(c.ctx, c.world.d["it.ana"], Kind.CUSTOM_IMAGE, ref).state is State.TESTING


def get_sunset_report(c: Call) -> Outcome:
    ref = c.world.images[c.building]
    r = c.get("/api/v1/sunset")
    return Outcome(r, _shows(r, lambda body: ref in [x["item"]["ref"] for x in body["items"]]))


def plan_deployment(c: Call) -> Outcome:
    assert c.world.deployments
    r = c.post("/api/v1/deployment-plans", {"package": "scratch@3.29", "buildings": [c.building]})
    return Outcome(
        r,
        _shows(r, lambda body: [x["hostname"] for x in body["included"]] == [f"cart-{c.building}"]),
    )


def create_deployment(c: Call) -> Outcome:
    assert c.world.deployments
    r = c.post("/api/v1/deployments", {"package": "scratch@3.29", "buildings": [c.building]})
    return Outcome(r, _shows(r, lambda body: body["buildings"] == [c.building]))


def _created(c: Call) -> bool:
    return c.world.deployments_reaching(c.building) == 2  # its own and one more


def list_deployments(c: Call) -> Outcome:
    wanted = c.world.deployments[c.building]
    r = c.get("/api/v1/deployments")
    return Outcome(r, _shows(r, lambda body: wanted in [d["id"] for d in body]))


def get_deployment(c: Call) -> Outcome:
    wanted = c.world.deployments[c.building]
    r = c.get(f"/api/v1/deployments/{wanted}")
    return Outcome(r, _shows(r, lambda body: body["id"] == wanted))


def get_deployment_progress(c: Call) -> Outcome:
    wanted = c.world.deployments[c.building]
    r = c.get(f"/api/v1/deployments/{wanted}/progress")
    return Outcome(r, _shows(r, lambda body: body["id"] == wanted))


def list_deployment_stagings(c: Call) -> Outcome:
    wanted = c.world.deployments[c.building]
    r = c.get(f"/api/v1/deployments/{wanted}/stagings")
    return Outcome(r, _shows(r, lambda body: c.building in [s["building"] for s in body]))


def control_deployment(c: Call) -> Outcome:
    wanted = c.world.deployments[c.building]
    r = c.post(
        f"/api/v1/deployments/{wanted}/control",
        {"action": "pause", "reason": "the lab is booked for testing tonight"},
    )
    return Outcome(r, _shows(r, lambda body: body["state"] == "paused"))


def _paused(c: Call) -> bool:
    dep = deployments.show(c.ctx, c.world.d["it.ana"], c.world.deployments[c.building])
    return dep.state == "paused"


def list_audit_entries(c: Call) -> Outcome:
    assert c.world.images
    r = c.get("/api/v1/audit", building=c.building)
    return Outcome(r, _shows(r, lambda body: c.building in [e["building"] for e in body]))


def list_request_categories(c: Call) -> Outcome:
    r = c.get("/api/v1/request-categories")
    return Outcome(r, _shows(r, lambda body: "hardware_repair" in [x["key"] for x in body]))


def add_request_category(c: Call) -> Outcome:
    r = c.post(
        "/api/v1/request-categories",
        {"key": "printers", "label": "Printers", "queue": "technician"},
    )
    return Outcome(r, _shows(r, lambda body: body["key"] == "printers"))


def _category_added(c: Call) -> bool:
    return "printers" in [x.key for x in requests.categories(c.ctx)]


def edit_request_category(c: Call) -> Outcome:
    r = c.patch("/api/v1/request-categories/network", {"active": False})
    return Outcome(r, _shows(r, lambda body: body["active"] is False))


def _category_retired(c: Call) -> bool:
    return "network" not in [x.key for x in requests.categories(c.ctx)]


def file_request(c: Call) -> Outcome:
    r = c.post(
        "/api/v1/requests",
        {
            "building": c.building,
            "category": "software_access",
            "description": "Scratch will not open in the library",
        },
    )
    return Outcome(r, _shows(r, lambda body: body["building"] == c.building))


def _filed(c: Call) -> bool:
    return any(
        v.building == c.building and v.category == "software_access"
        for v in requests.list_requests(c.ctx, c.world.d["it.ana"])
    )


def list_requests(c: Call) -> Outcome:
    wanted = c.world.requests[c.building]
    r = c.get("/api/v1/requests")
    return Outcome(r, _shows(r, lambda body: wanted in [x["id"] for x in body]))


def get_request(c: Call) -> Outcome:
    wanted = c.world.requests[c.building]
    r = c.get(f"/api/v1/requests/{wanted}")
    return Outcome(r, _shows(r, lambda body: body["id"] == wanted))


def act_on_request(c: Call) -> Outcome:
    wanted = c.world.requests[c.building]
    r = c.post(f"/api/v1/requests/{wanted}/actions", {"action": "take"})
    return Outcome(r, _shows(r, lambda body: body["assignee"] == c.username))


def _taken(c: Call) -> bool:
    view = requests.show(c.ctx, c.world.d["it.ana"], c.world.requests[c.building])
    return view.assignee is not None


def link_request_change(c: Call) -> Outcome:
    assert c.world.deployments  # Scratch released
    wanted = c.world.requests[c.building]
    r = c.post(f"/api/v1/requests/{wanted}/changes", {"kind": "package", "ref": "scratch@3.29"})
    return Outcome(r, _shows(r, lambda body: body["changes"][0]["ref"] == "scratch@3.29"))


def deploy_for_request(c: Call) -> Outcome:
    assert c.world.deployments  # Scratch released, windows in every building
    wanted = c.world.requests[c.building]
    r = c.post(f"/api/v1/requests/{wanted}/deployments", {"package": "scratch@3.29"})
    return Outcome(
        r,
        _shows(
            r,
            lambda body: (
                body["deployment"]["buildings"] == [c.building]
                and body["request"]["changes"][0]["kind"] == "deployment"
            ),
        ),
    )


def _answered(c: Call) -> bool:
    view = requests.show(c.ctx, c.world.d["it.ana"], c.world.requests[c.building])
    return bool(view.changes)


def get_request_report(c: Call) -> Outcome:
    assert c.world.requests
    r = c.get("/api/v1/reports/requests", building=c.building)
    return Outcome(
        r, _shows(r, lambda body: {f["building"] for f in body["filed"]} == {c.building})
    )


def get_request_report_csv(c: Call) -> Outcome:
    assert c.world.requests
    r = c.get("/api/v1/reports/requests.csv", building=c.building)
    return Outcome(r, f"\r\nfiled,{c.building}," in r.text if r.status_code == 200 else None)


def _other_persons_token(c: Call) -> str:
    name = "garcia-script"
    if name not in [t.name for t in accounts.tokens(c.ctx, c.world.d[OTHER_PERSON])]:
        accounts.create_token(c.ctx, c.world.d[OTHER_PERSON], name)
    return name


def list_tokens(c: Call) -> Outcome:
    wanted = "scope-walk" if c.scope == OWN else _other_persons_token(c)
    r = c.get("/api/v1/tokens")
    return Outcome(r, _shows(r, lambda body: wanted in [t["name"] for t in body]))


def create_token(c: Call) -> Outcome:
    r = c.post("/api/v1/tokens", {"name": "nightly-report", "days": 30})
    return Outcome(
        r,
        _shows(
            r, lambda body: body["name"] == "nightly-report" and body["token"].startswith("orch_")
        ),
    )


def _token_made(c: Call) -> bool:
    return "nightly-report" in [t.name for t in accounts.tokens(c.ctx, c.world.d[c.username])]


def _revoke_target(c: Call) -> tuple[str, str]:
    if c.scope == OTHER:
        return OTHER_PERSON, _other_persons_token(c)
    if "spare" not in [t.name for t in accounts.tokens(c.ctx, c.world.d[c.username])]:
        accounts.create_token(c.ctx, c.world.d[c.username], "spare")
    return c.username, "spare"


def revoke_token(c: Call) -> Outcome:
    _, name = _revoke_target(c)
    r = c.delete(f"/api/v1/tokens/{name}")
    return Outcome(r, True if r.status_code == 204 else None)


def _revoked(c: Call) -> bool:
    owner, name = _revoke_target(c)
    (token,) = [t for t in accounts.tokens(c.ctx, c.world.d[owner]) if t.name == name]
    return token.revoked


DEPLOYS = "run playbooks on client computers"
OPERATIONS: dict[str, Operation] = {
    "get_me": Operation(get_me),
    "list_buildings": Operation(list_buildings, hidden=LEFT_OUT),
    "list_building_clients": Operation(list_building_clients),
    "list_catalog": Operation(list_catalog),
    "get_catalog_item": Operation(get_catalog_item),
    "get_chain_status": Operation(get_chain_status),
    "list_my_queue": Operation(list_my_queue, hidden=LEFT_OUT),
    "decide_step": Operation(decide_step, refusal="review customized images", changed=_reviewed),
    "get_sunset_report": Operation(get_sunset_report, hidden=LEFT_OUT),
    "plan_deployment": Operation(plan_deployment, refusal=DEPLOYS),
    "create_deployment": Operation(create_deployment, refusal=DEPLOYS, changed=_created),
    "list_deployments": Operation(list_deployments, hidden=LEFT_OUT),
    "get_deployment": Operation(get_deployment),
    "get_deployment_progress": Operation(get_deployment_progress),
    "list_deployment_stagings": Operation(list_deployment_stagings),
    "control_deployment": Operation(control_deployment, refusal=DEPLOYS, changed=_paused),
    "list_audit_entries": Operation(list_audit_entries),
    "list_request_categories": Operation(list_request_categories),
    "add_request_category": Operation(
        add_request_category, refusal="change the request categories", changed=_category_added
    ),
    "edit_request_category": Operation(
        edit_request_category, refusal="change the request categories", changed=_category_retired
    ),
    "file_request": Operation(file_request, changed=_filed),
    "list_requests": Operation(list_requests, hidden=LEFT_OUT),
    "get_request": Operation(get_request),
    "act_on_request": Operation(act_on_request, refusal="work on this request", changed=_taken),
    "link_request_change": Operation(
        link_request_change, refusal="work on this request", changed=_answered
    ),
    "deploy_for_request": Operation(
        deploy_for_request, refusal="work on this request", changed=_answered
    ),
    "get_request_report": Operation(get_request_report),
    "get_request_report_csv": Operation(get_request_report_csv),
    "list_tokens": Operation(list_tokens, hidden=LEFT_OUT),
    "create_token": Operation(create_token, changed=_token_made),
    "revoke_token": Operation(revoke_token, changed=_revoked),
}

CELLS = [
    pytest.param(operation, scope, role, expect, id=f"{operation}-{scope}-{role}")
    for (operation, scope), row in EXPECTED.items()
    for role, expect in zip(ROLES, row, strict=True)
    if expect is not None
]


def test_every_operation_of_the_openapi_document_is_walked(web: TestClient) -> None:
    document = web.app.openapi()  # type: ignore[attr-defined]
    operations = {
        op["operationId"] for methods in document["paths"].values() for op in methods.values()
    }
    walked = {operation for operation, _ in EXPECTED}
    assert operations - walked == set(), "operations no row of EXPECTED walks"
    assert walked - operations == set(), "rows for operations the document does not have"
    assert set(OPERATIONS) == operations
    for operation in operations:
        assert any(e is not None for e in EXPECTED[operation, OWN]), operation


@pytest.mark.parametrize(("operation", "scope", "role", "expect"), CELLS)
def test_each_role_is_answered_in_its_own_and_another_building_as_the_district_rules_say(
    world: World, operation: str, scope: str, role: str, expect: Expect
) -> None:
    op = OPERATIONS[operation]
    call = Call(world, role, scope)

    outcome = op.run(call)

    r = outcome.response
    error: dict[str, Any] = {}
    if r.status_code >= 400:
        body = r.json()
        assert list(body) == ["error"] and sorted(body["error"]) == ["code", "field", "message"]
        error = body["error"]
    if expect is Y:
        assert 200 <= r.status_code < 300, r.text
        if outcome.shows is not None:
            assert outcome.shows, r.text
    elif expect is N:
        assert r.status_code == 403, r.text
        assert error["code"] == "refused"
        assert error["message"].startswith(f"refused: {LABEL[role]} cannot {op.refusal}"), error
    elif op.hidden == NOT_FOUND:
        assert r.status_code == 404, r.text
        assert error["code"] == "not_found"
    else:
        assert r.status_code == 200, r.text
        assert outcome.shows is False, r.text
    if op.changed is not None:
        assert op.changed(call) is (expect is Y)
