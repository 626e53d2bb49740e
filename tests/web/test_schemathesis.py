"""The whole OpenAPI document, fuzzed in-process with schemathesis, on both databases.

Every operation the document names is called with cases schemathesis generates from
its schema: with an IT token, with a BTC token (whose other-building answers differ),
and with its path and body fixed on things the test district holds, so that successful
answers are checked too, not only refusals. Every answer must be no 5xx, a status the
document lists for the operation, with a body (and content type) its schema allows.
Cases that break the schema (a wrong type, a value out of range, a body that is not
JSON) must be refused, never accepted, and in the same documented way.

Schemathesis' pytest integration makes one test per operation and cannot take the
``ctx`` fixture that runs a test on each backend, so one ordinary test drives the
operations' strategies from a loop. A failing operation is shrunk to its smallest case
by Hypothesis, recorded, and the loop goes on, so one run reports every operation that
fails. The number of examples is bounded to keep the run short on a small machine.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from orchestrator.domain.states import State
from orchestrator.services import accounts, deployments, inventory, requests, windows
from orchestrator.services.context import Context
from orchestrator.web.app import create_app
from tests.factories import District
from tests.support.fixtures import release_scratch

RANDOM_IT = 60
"""Generated cases per operation with IT's token."""
RANDOM_BTC = 20
"""Generated cases per operation with a BTC's token."""
KNOWN = 5
"""Cases per operation with its path and body fixed on objects that exist."""
NEGATIVE = 15
"""Cases per operation that break its schema (IT's token): each must be refused."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
NEGATIVE_CHECKS = [*CHECKS, negative_data_rejection]


@dataclass
class Tally:
    examples: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    nothing_to_break: bool = False


def _district_with_work(d: District, folder: Path) -> dict[str, Any]:
    """What the known cases aim at: a customized image in review, Lincoln's Macs with a
    window, Scratch released, one deployment of it, and a token to revoke."""
    d.base("pc", "elementary")
    image = d.custom("101", "lab", to=State.IN_REVIEW)
    assets = folder / "assets.csv"
    assets.write_text(
        "Hostname,Building,Room,Platform,Model,Serial,MAC,IP\n"
        'cart-01,101,cart,mac,"MacBookAir10,1",SN0001,02:00:00:00:00:01,127.0.0.11\n'
        'cart-02,101,cart,mac,"MacBookAir10,1",SN0002,02:00:00:00:00:02,127.0.0.12\n'
    )
    inventory.import_clients(d.ctx, d["it.ana"], assets)
    windows.add_window(
        d.ctx, d["btc.lincoln"], building="101", days="mon-thu", start="18:00", end="06:00"
    )
    release_scratch(d, "3.29", folder)
    dep = deployments.create(
        d.ctx,
        d["btc.lincoln"],
        deployments.DeploymentSpec(package="scratch@3.29", buildings=("101",)),
    )
    accounts.create_token(d.ctx, d["it.ana"], "spare-for-revoking")
    repair = requests.file_request(
        d.ctx,
        d["principal.lincoln"],
        requests.RequestSpec(
            building="101", category="hardware_repair", description="cart-01 will not boot"
        ),
    )
    scratch = {"package": "scratch@3.29", "buildings": ["101"]}
    return {
        # operationId: (path parameters, query, body, who)
        "list_building_clients": ({"number": "101"}, None, None, "it"),
        "list_catalog": ({}, {"building": "101"}, None, "btc"),
        "get_catalog_item": ({"kind": "custom_image", "ref": image}, None, None, "btc"),
        "get_chain_status": ({"kind": "custom_image", "ref": image}, None, None, "btc"),
        "decide_step": (
            {},
            None,
            {
                "kind": "custom_image",
                "ref": image,
                "step": "review",
                "outcome": "approve",
                "reason": "fine for instruction",
                "override_checks": [],
            },
            "edtech",
        ),
        "plan_deployment": ({}, None, scratch, "btc"),
        "create_deployment": ({}, None, scratch, "btc"),
        "get_deployment": ({"deployment_id": dep.id}, None, None, "btc"),
        "get_deployment_progress": ({"deployment_id": dep.id}, None, None, "btc"),
        "list_deployment_stagings": ({"deployment_id": dep.id}, None, None, "btc"),
        "control_deployment": (
            {"deployment_id": dep.id},
            None,
            {"action": "pause", "reason": "the lab is booked tonight"},
            "btc",
        ),
        "list_audit_entries": ({}, {"building": "101"}, None, "btc"),
        "create_token": ({}, None, {"name": "from-a-script", "days": 30}, "it"),
        "revoke_token": ({"name": "spare-for-revoking"}, None, None, "it"),
        "file_request": (
            {},
            None,
            {
                "building": "101",
                "category": "software_access",
                "description": "Scratch will not open in the library",
                "urgency": "normal",
                "clients": ["cart-02"],
            },
            "btc",
        ),
        "list_requests": ({}, {"building": "101"}, None, "btc"),
        "get_request": ({"request_id": repair.id}, None, None, "btc"),
        "act_on_request": ({"request_id": repair.id}, None, {"action": "take"}, "btc"),
        "link_request_change": (
            {"request_id": repair.id},
            None,
            {"kind": "package", "ref": "scratch@3.29"},
            "btc",
        ),
        "deploy_for_request": ({"request_id": repair.id}, None, {"package": "scratch@3.29"}, "btc"),
        "add_request_category": (
            {},
            None,
            {"key": "printers", "label": "Printers", "queue": "technician"},
            "it",
        ),
        "edit_request_category": ({"key": "network"}, None, {"label": "Network and Wi-Fi"}, "it"),
        "get_request_report": ({}, {"building": "101", "from": "2026-01"}, None, "btc"),
        "get_request_report_csv": ({}, {"building": "101", "from": "2025-04"}, None, "btc"),
    }


def _calls(
    strategy: st.SearchStrategy[Any],
    count: int,
    headers: dict[str, str],
    tally: Tally,
    checks: list[Any] = CHECKS,
) -> Any:
    """Up to ``count`` cases of ``strategy``, each called and its answer checked."""

    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def call(case: Any) -> None:
        tally.examples += 1
        response = case.call(headers=headers)
        tally.statuses[response.status_code] += 1
        case.validate_response(response, checks=checks, headers=headers)

    return call


def _bearer(d: District, username: str) -> dict[str, str]:
    # A name no generated case will guess: revoking it would sign the run out.
    _, secret = accounts.create_token(d.ctx, d[username], "schemathesis-run-7c1f2a")
    return {"Authorization": f"Bearer {secret}"}


def test_every_operation_answers_within_its_documented_statuses_and_schemas(
    district: District, ctx: Context, tmp_path: Path
) -> None:
    known = _district_with_work(district, tmp_path)
    app = create_app(ctx)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    tokens = {
        "it": _bearer(district, "it.ana"),
        "edtech": _bearer(district, "edtech.grace"),
        "btc": _bearer(district, "btc.lincoln"),
    }
    tallies: dict[str, Tally] = {}
    started = time.monotonic()

    for result in schema.get_all_operations():
        operation = result.ok()
        op_id = operation.definition.raw["operationId"]
        tally = tallies.setdefault(op_id, Tally())
        runs: list[tuple[str, st.SearchStrategy[Any], int]] = [
            ("IT, generated", operation.as_strategy(), RANDOM_IT),
            ("BTC, generated", operation.as_strategy(), RANDOM_BTC),
        ]
        who = {"IT, generated": "it", "BTC, generated": "btc"}
        if op_id in known:
            path, query, body, as_whom = known[op_id]
            fixed: dict[str, Any] = {"path_parameters": path or None, "query": query}
            if body is not None:
                fixed["body"] = body
            runs.append(("known objects", operation.as_strategy(**fixed), KNOWN))
            who["known objects"] = as_whom
        else:
            runs.append(("IT, once more", operation.as_strategy(), KNOWN))
            who["IT, once more"] = "it"

        for label, strategy, count in runs:
            try:
                _calls(strategy, count, tokens[who[label]], tally)()
            except (Exception, FailureGroup) as exc:  # recorded: every operation still runs
                tally.failures.append(f"{operation.label} ({label}): {exc}")
        negative = operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)
        try:
            _calls(negative, NEGATIVE, tokens["it"], tally, NEGATIVE_CHECKS)()
        except Unsatisfiable:
            tally.nothing_to_break = True  # no parameter or body to get wrong
        except (Exception, FailureGroup) as exc:
            tally.failures.append(f"{operation.label} (breaking its schema): {exc}")

    elapsed = time.monotonic() - started
    examples = sum(t.examples for t in tallies.values())
    print(
        f"\nschemathesis on {ctx.engine.dialect.name}: {len(tallies)} operations, "
        f"{examples} examples in {elapsed:.1f}s"
    )
    for op_id, tally in sorted(tallies.items()):
        print(
            f"  {op_id}: {tally.examples} examples, statuses {dict(sorted(tally.statuses.items()))}"
        )

    document = app.openapi()
    in_document = {op["operationId"] for ms in document["paths"].values() for op in ms.values()}
    assert set(tallies) == in_document
    assert [f for t in tallies.values() for f in t.failures] == []
    # Every case was signed in to the end (no case revoked the run's own tokens) ...
    assert [op for op, t in tallies.items() if t.statuses[401]] == []
    # ... and successful answers were checked against their schemas for every operation.
    unanswered = [op for op, t in tallies.items() if not any(200 <= s < 300 for s in t.statuses)]
    assert unanswered == []
