"""Who is calling: a browser session cookie or an API token, and the CSRF rule.

Everything here only establishes *who*; what they may do is the services' to
decide. A browser session is a cookie (Secure, HttpOnly, SameSite=Strict)
holding a random token; every form and every API write made with that cookie
must carry the session's CSRF token (the ``csrf_token`` form field, or the
``X-CSRF-Token`` header). Scripts send ``Authorization: Bearer <token>`` and
need no CSRF token: a browser never adds that header by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from orchestrator.domain.policy import Actor
from orchestrator.errors import Refused, SignInFailed
from orchestrator.services import accounts
from orchestrator.services.context import Context

SESSION_COOKIE = "orch_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Caller:
    actor: Actor
    csrf_token: str | None
    """The session's CSRF token; None for an API token (no CSRF with bearer tokens)."""
    via: str


def context(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def identify(request: Request) -> Caller | None:
    """The caller, or None when the request carries no credentials.

    Raises:
        SignInFailed: credentials that do not (or no longer) sign anyone in.
    """
    ctx = context(request)
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise SignInFailed("send 'Authorization: Bearer <token>' (see 'orchestrator tokens')")
        return Caller(accounts.token_actor(ctx, secret.strip()), None, "token")
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        opened = accounts.session_actor(ctx, token)
        return Caller(opened.actor, opened.csrf_token, "session")
    return None


def check_csrf(caller: Caller, given: str | None) -> None:
    """Raises: Refused, when a session's write does not carry the session's CSRF token."""
    if caller.csrf_token is not None and not accounts.csrf_matches(caller.csrf_token, given):
        raise Refused("the form has expired or did not come from this site: reload the page")


def api_caller(request: Request) -> Caller:
    """The API's caller; a session's writes need the X-CSRF-Token header.

    Raises:
        SignInFailed: nobody signed in. Refused: a write without its CSRF token.
    """
    caller = identify(request)
    if caller is None:
        raise SignInFailed(
            "sign in first: send 'Authorization: Bearer <token>' (make one with "
            "'orchestrator tokens create NAME')"
        )
    if request.method not in SAFE_METHODS:
        check_csrf(caller, request.headers.get(CSRF_HEADER))
    return caller


def api_actor(caller: Annotated[Caller, Depends(api_caller)]) -> Actor:
    return caller.actor


ContextDep = Annotated[Context, Depends(context)]
ActorDep = Annotated[Actor, Depends(api_actor)]
