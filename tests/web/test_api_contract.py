"""The REST API's contract, in-process, on both databases: replays with Idempotency-Key,
who is signed in, the one error shape, and what the documented models may carry."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from orchestrator.clock import FixedClock
from orchestrator.services import accounts, audit, deployments, inventory, windows
from tests.factories import District
from tests.support.fixtures import release_scratch

Headers = Callable[[str], dict[str, str]]

ASSETS = (
    "Hostname,Building,Room,Platform,Model,Serial,MAC,IP\n"
    'cart-01,101,cart,mac,"MacBookAir10,1",SN0001,02:00:00:00:00:01,127.0.0.11\n'
    'cart-02,101,cart,mac,"MacBookAir10,1",SN0002,02:00:00:00:00:02,127.0.0.12\n'
)
SCRATCH = {"package": "scratch@3.29", "buildings": ["101"]}


@pytest.fixture
def lincoln(district: District, tmp_path: Path) -> District:
    """Building 101 with a cart of two Macs, weeknight windows, and Scratch released."""
    assets = tmp_path / "assets.csv"
    assets.write_text(ASSETS)
    inventory.import_clients(district.ctx, district["it.ana"], assets)
    windows.add_window(
        district.ctx, district["btc.lincoln"], building="101", days="mon-thu", start="18:00",
        end="06:00",
    )  # fmt: skip
    release_scratch(district, "3.29", tmp_path)
    return district


def _deployment_ids(d: District) -> list[int]:
    return [dep.id for dep in deployments.list_deployments(d.ctx, d["it.ana"], limit=200)]


def _error(r: httpx.Response) -> dict[str, Any]:
    """The error of a refused request, checked to be exactly the documented shape."""
    body = r.json()
    assert list(body) == ["error"], body
    assert sorted(body["error"]) == ["code", "field", "message"], body
    assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str)
    assert "Traceback" not in r.text and 'File "' not in r.text
    error: dict[str, Any] = body["error"]
    return error


# -- Idempotency-Key --------------------------------------------------------------------


def test_a_replayed_request_returns_the_same_deployment_with_200_and_makes_no_second(
    lincoln: District, web: TestClient, token_for: Headers
) -> None:
    headers = token_for("btc.lincoln") | {"Idempotency-Key": "lab-refresh-0302"}

    first = web.post("/api/v1/deployments", json=SCRATCH, headers=headers)
    again = web.post("/api/v1/deployments", json=SCRATCH, headers=headers)

    assert first.status_code == 201, first.text
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["ref"] == "scratch@3.29" and again.json()["buildings"] == ["101"]
    assert _deployment_ids(lincoln) == [first.json()["id"]]


def test_the_same_key_with_another_body_is_a_conflict_and_makes_nothing(
    lincoln: District, web: TestClient, token_for: Headers
) -> None:
    headers = token_for("btc.lincoln") | {"Idempotency-Key": "lab-refresh-0302"}
    first = web.post("/api/v1/deployments", json=SCRATCH, headers=headers)

    other = web.post(
        "/api/v1/deployments", json=SCRATCH | {"pilot_per_building": 1}, headers=headers
    )

    assert other.status_code == 409
    error = _error(other)
    assert error["code"] == "conflict"
    assert "already used for another request" in error["message"]
    assert _deployment_ids(lincoln) == [first.json()["id"]]


def test_without_a_key_two_posts_make_two_deployments(
    lincoln: District, web: TestClient, token_for: Headers
) -> None:
    headers = token_for("btc.lincoln")

    one = web.post("/api/v1/deployments", json=SCRATCH, headers=headers)
    two = web.post("/api/v1/deployments", json=SCRATCH, headers=headers)

    assert (one.status_code, two.status_code) == (201, 201)
    assert one.json()["id"] != two.json()["id"]
    assert sorted(_deployment_ids(lincoln)) == sorted([one.json()["id"], two.json()["id"]])


# -- who is calling -----------------------------------------------------------------------

PATH_VALUES = {
    "number": "101",
    "kind": "base_image",
    "ref": "pc-elementary@2026.1",
    "deployment_id": "1",
    "name": "nightly",
    "request_id": "1",
    "key": "network",
}


def _every_operation(web: TestClient) -> Iterator[tuple[str, str]]:
    document = web.app.openapi()  # type: ignore[attr-defined]
    for path, methods in document["paths"].items():
        url = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m[1]], path)
        for method in methods:
            yield method.upper(), url


def test_every_operation_without_credentials_is_401_with_www_authenticate(
    district: District, web: TestClient
) -> None:
    seen = 0
    for method, url in _every_operation(web):
        r = web.request(method, url, json={} if method == "POST" else None)
        assert r.status_code == 401, (method, url, r.text)
        assert r.headers["www-authenticate"] == "Bearer", (method, url)
        assert _error(r)["code"] == "sign_in_failed"
        seen += 1
    assert seen >= 19  # every operation there was when this was written


def test_a_revoked_token_is_401_and_says_so(district: District, web: TestClient) -> None:
    _, secret = accounts.create_token(district.ctx, district["btc.lincoln"], "laptop")
    headers = {"Authorization": f"Bearer {secret}"}
    assert web.get("/api/v1/me", headers=headers).status_code == 200
    accounts.revoke_token(district.ctx, district["btc.lincoln"], "laptop")

    r = web.get("/api/v1/me", headers=headers)

    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert _error(r)["message"] == "unknown or revoked API token"


def test_an_expired_token_is_401_and_says_so(
    district: District, web: TestClient, clock: FixedClock
) -> None:
    _, secret = accounts.create_token(district.ctx, district["btc.lincoln"], "one-day", days=1)
    headers = {"Authorization": f"Bearer {secret}"}
    assert web.get("/api/v1/me", headers=headers).status_code == 200

    clock.advance(days=1, minutes=1)
    r = web.get("/api/v1/me", headers=headers)

    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert _error(r)["message"] == "API token 'one-day' expired; make a new one"


@pytest.mark.parametrize(
    "authorization",
    ["Basic YnRjLmxpbmNvbG46cGFzcw==", "Bearer", "Bearer ", "orch_not-a-token", "Bearer orch_x"],
)
def test_a_malformed_or_unknown_authorization_is_401(
    district: District, web: TestClient, authorization: str
) -> None:
    r = web.get("/api/v1/me", headers={"Authorization": authorization})

    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert _error(r)["code"] == "sign_in_failed"


# -- malformed requests and unknown references ------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (SCRATCH | {"pilot_per_building": -1}, "pilot_per_building"),
        (SCRATCH | {"failure_threshold_pct": 150}, "failure_threshold_pct"),
        (SCRATCH | {"buildings": "101"}, "buildings"),
        (SCRATCH | {"buildings": ["1010101"]}, "buildings.0"),
        (SCRATCH | {"not_before": "tonight"}, "not_before"),
        (SCRATCH | {"colour": "blue"}, "colour"),
        (SCRATCH | {"package": "scratch\x00@3.29"}, "package"),
        (SCRATCH | {"deadline": "2026-03-01T12:00:00Z"}, "deadline"),
        ({"buildings": ["101"]}, "package"),
        ({"package": "scratch@3.29"}, "targets"),
    ],
    ids=[
        "negative-pilot",
        "threshold-over-100",
        "buildings-not-a-list",
        "building-too-long",
        "not-a-time",
        "unknown-field",
        "nul-character",
        "deadline-in-the-past",
        "no-package-or-image",
        "no-targets",
    ],
)
def test_a_malformed_body_is_422_naming_the_field_and_creates_nothing(
    lincoln: District, web: TestClient, token_for: Headers, body: dict[str, Any], field: str
) -> None:
    r = web.post("/api/v1/deployments", json=body, headers=token_for("btc.lincoln"))

    assert r.status_code == 422, r.text
    error = _error(r)
    assert error["code"] == "invalid_input"
    assert error["field"] == field
    assert error["message"].startswith(f"{field}: ")
    assert _deployment_ids(lincoln) == []


def test_a_body_that_is_not_json_is_422(
    lincoln: District, web: TestClient, token_for: Headers
) -> None:
    r = web.post(
        "/api/v1/deployments",
        content=b'{"package": "scratch@3.29", ',
        headers=token_for("btc.lincoln") | {"Content-Type": "application/json"},
    )

    assert r.status_code == 422
    assert _error(r)["code"] == "invalid_input"


def test_a_body_that_is_not_utf8_is_400_in_the_error_shape_as_documented(
    lincoln: District, web: TestClient, token_for: Headers
) -> None:
    r = web.post(
        "/api/v1/deployments",
        content=b'{"package": "scratch\xff\xfe@3.29"}',
        headers=token_for("btc.lincoln") | {"Content-Type": "application/json"},
    )

    assert r.status_code == 400
    assert _error(r)["code"] == "http_error"
    document = web.app.openapi()  # type: ignore[attr-defined]
    assert "400" in document["paths"]["/api/v1/deployments"]["post"]["responses"]
    assert _deployment_ids(lincoln) == []


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("GET", "/api/v1/catalog/custom_image/101/nothing@1.0", None),
        ("GET", "/api/v1/catalog/base_image/%2399999999999", None),
        ("GET", "/api/v1/chain/package/nothing@1.0", None),
        ("GET", "/api/v1/buildings/999/clients", None),
        ("GET", "/api/v1/audit?building=999", None),
        ("GET", "/api/v1/deployments/4242", None),
        ("GET", "/api/v1/deployments/4242/progress", None),
        ("POST", "/api/v1/deployments/4242/control", {"action": "resume"}),
        ("POST", "/api/v1/deployments", {"package": "nothing@1.0", "buildings": ["101"]}),
        ("POST", "/api/v1/deployment-plans", {"package": "scratch@3.29", "buildings": ["999"]}),
        ("POST", "/api/v1/deployment-plans", {"package": "scratch@3.29", "clients": ["ghost"]}),
        (
            "POST",
            "/api/v1/decisions",
            {
                "kind": "custom_image",
                "ref": "101/nothing@1.0",
                "step": "review",
                "outcome": "reject",
                "reason": "the wallpaper is wrong",
            },
        ),
        ("DELETE", "/api/v1/tokens/never-made", None),
    ],
)
def test_an_unknown_reference_is_404_in_the_error_shape(
    lincoln: District,
    web: TestClient,
    token_for: Headers,
    method: str,
    url: str,
    body: dict[str, Any] | None,
) -> None:
    r = web.request(method, url, json=body, headers=token_for("it.ana"))

    assert r.status_code == 404, r.text
    assert _error(r)["code"] == "not_found"


def test_a_reference_that_is_not_one_is_422_naming_the_field(
    district: District, web: TestClient, token_for: Headers
) -> None:
    r = web.get("/api/v1/catalog/base_image/%23%C2%B2", headers=token_for("it.ana"))  # '#²'

    assert r.status_code == 422
    assert _error(r)["field"] == "ref"


def test_paths_and_methods_the_api_does_not_have_answer_in_the_error_shape(
    district: District, web: TestClient, token_for: Headers
) -> None:
    missing = web.get("/api/v1/grades", headers=token_for("it.ana"))
    wrong_method = web.put("/api/v1/me", headers=token_for("it.ana"))

    assert missing.status_code == 404 and _error(missing)["message"] == "no such page"
    assert wrong_method.status_code == 405 and _error(wrong_method)["code"] == "http_error"


def test_an_unexpected_error_is_a_500_apology_without_a_traceback_or_its_details(
    district: District,
    web: TestClient,
    token_for: Headers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk /srv/orchestrator/audit.db is full")

    monkeypatch.setattr(audit, "entries", broken)

    r = web.get("/api/v1/audit", headers=token_for("it.ana"))

    assert r.status_code == 500
    error = _error(r)
    assert error == {
        "code": "internal_error",
        "message": "something went wrong on the server; it has been logged for IT",
        "field": None,
    }
    assert "RuntimeError" not in r.text and "/srv/orchestrator" not in r.text


# -- what the documented models may carry --------------------------------------------------

STUDENT_DATA = frozenset(
    {
        "student",
        "students",
        "pupil",
        "pupils",
        "grade",
        "grades",
        "gradebook",
        "score",
        "scores",
        "gpa",
        "guardian",
        "guardians",
        "parent",
        "dob",
        "birth",
        "birthday",
        "birthdate",
        "ssn",
        "transcript",
        "attendance",
    }
)
SECRETS = frozenset({"password", "passwords", "passwd", "pwd", "hash", "credential"})


def _words(name: str) -> set[str]:
    """'dateOfBirth', 'password_hash', 'student-id' -> their words, lower case."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return {w.lower() for w in re.split(r"[^A-Za-z0-9]+", spaced) if w}


def _names(document: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Every name the document gives to data: (where, name)."""
    for schema_name in document.get("components", {}).get("schemas", {}):
        yield "schema", schema_name

    def walk(node: Any, where: str) -> Iterator[tuple[str, str]]:
        if isinstance(node, dict):
            properties = node.get("properties")
            if isinstance(properties, dict):
                for prop in properties:
                    yield f"{where} property", prop
            for key, value in node.items():
                yield from walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from walk(value, f"{where}/{i}")

    yield from walk(document.get("components", {}), "#/components")
    for path, methods in document["paths"].items():
        for segment in path.strip("/").split("/"):
            yield "path", segment.strip("{}")
        for method, op in methods.items():
            yield f"{method} {path}", op["operationId"]
            for parameter in op.get("parameters", []):
                yield f"{method} {path} parameter", parameter["name"]
            yield from walk(op, f"{method} {path}")


def test_no_model_or_route_of_the_api_carries_student_records_or_passwords(
    web: TestClient,
) -> None:
    """The orchestrator holds hardware and software only: buildings, images, packages,
    client computers, deployments and the people who run them. It never holds grades or
    any other student record (school-based technicians "are not to have access to grading
    under any circumstance", and their duties are "confined to the accessing of software
    (not application) and hardware"), so no schema, property, parameter, path or
    operation of the API may be named for one.

    The student and staff *test personas* are accounts used to sign in to a test
    machine, not students' records; their passwords (and everyone's) are kept encrypted
    or hashed and never leave the service, so no name in the document may be a password
    or a hash of one either.
    """
    document = web.app.openapi()  # type: ignore[attr-defined]
    names = list(_names(document))
    assert len({n for _, n in names}) > 100  # the walk reached the properties

    student_data = [(where, n) for where, n in names if _words(n) & STUDENT_DATA]
    secrets = [(where, n) for where, n in names if _words(n) & SECRETS]

    assert student_data == []
    assert secrets == []


def test_the_name_check_would_catch_student_data_and_password_names() -> None:
    assert _words("dateOfBirth") & STUDENT_DATA == {"birth"}
    assert _words("student_id") & STUDENT_DATA == {"student"}
    assert _words("final-grades") & STUDENT_DATA == {"grades"}
    assert _words("password_hash") & SECRETS == {"password", "hash"}
    assert _words("upgrade") & STUDENT_DATA == set()
