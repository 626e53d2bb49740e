"""The web interface and the API, in-process (FastAPI's test client), on both databases.

The client talks https://testserver so the Secure session cookie is sent back,
as a browser would over HTTPS (or to 127.0.0.1).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from orchestrator.services import accounts
from orchestrator.services.context import Context
from orchestrator.web.app import create_app
from tests.factories import District

PASSWORD = "Correct-Horse-Battery-26"


def form_token(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = re.search(r'name="csrf_token" value="([^"]*)"', html)
    assert found, "no form with a CSRF token on the page"
    return found.group(1)


@pytest.fixture
def web(ctx: Context) -> Iterator[TestClient]:
    with TestClient(
        create_app(ctx), base_url="https://testserver", raise_server_exceptions=False
    ) as client:
        yield client


SignIn = Callable[[str], TestClient]


@pytest.fixture
def signed_in(district: District, ctx: Context) -> Iterator[SignIn]:
    """A factory: a fresh browser signed in through the sign-in form as ``username``."""
    app = create_app(ctx)
    clients: list[TestClient] = []

    def sign_in(username: str) -> TestClient:
        accounts.set_password(ctx, district["it.ana"], username, PASSWORD)
        client = TestClient(app, base_url="https://testserver", raise_server_exceptions=False)
        clients.append(client)
        page = client.get("/sign-in")
        r = client.post(
            "/sign-in",
            data={
                "username": username,
                "password": PASSWORD,
                "csrf_token": form_token(page.text),
                "next": "/",
            },
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        return client

    yield sign_in
    for c in clients:
        c.close()


@pytest.fixture
def token_for(district: District, ctx: Context) -> Callable[[str], dict[str, str]]:
    """Authorization headers of a new API token of ``username``'s."""
    counter = iter(range(1_000_000))

    def make(username: str) -> dict[str, str]:
        _, secret = accounts.create_token(ctx, district[username], f"test-{next(counter)}")
        return {"Authorization": f"Bearer {secret}"}

    return make
