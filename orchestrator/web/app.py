"""The one FastAPI application: the pages, the REST API and their error handling.

A refusal is never a stack trace or a blank 500. The services' errors carry an
HTTP status and a message written for the person (``orchestrator.errors``):
the API returns them as ``{"error": {"code", "message", "field"}}`` and the
pages render the message in the page. Anything unexpected is logged with its
traceback on the server and answered with a short apology and nothing more.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator.errors import OrchestratorError, SignInFailed
from orchestrator.services.context import Context
from orchestrator.web import (
    api,
    pages,
    request_pages,
    request_report_pages,
    request_reports_api,
    requests_api,
    work_pages,
)

log = logging.getLogger(__name__)
HERE = Path(__file__).parent

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def create_app(ctx: Context, *, title: str = "Orchestrator") -> FastAPI:
    """The application over ``ctx``'s database; nothing is read at import time."""
    app = FastAPI(
        title=f"{title} API",
        version="1",
        description="Disk images and software deployment for the district's buildings. "
        "Scripts sign in with 'Authorization: Bearer <token>' ('orchestrator tokens create').",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.ctx = ctx
    app.include_router(api.router)
    app.include_router(pages.router)
    app.include_router(requests_api.router)
    app.include_router(request_reports_api.router)
    app.include_router(work_pages.router)
    # Before the request pages: /requests/report is not /requests/{request_id}.
    app.include_router(request_report_pages.router)
    app.include_router(request_pages.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        return _secured(await call_next(request))

    app.add_exception_handler(OrchestratorError, _orchestrator_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
    return app


def _secured(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _error_json(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "field": field}}, status_code=status
    )


def _orchestrator_error(request: Request, exc: OrchestratorError) -> Response:
    field = getattr(exc, "field", None)
    if _is_api(request):
        response = _error_json(exc.http_status, exc.code, exc.message, field)
        if isinstance(exc, SignInFailed):
            response.headers["WWW-Authenticate"] = "Bearer"
        return response
    if isinstance(exc, SignInFailed) and request.method == "GET":
        return RedirectResponse(
            f"/sign-in?next={quote(request.url.path)}&why={quote(exc.message)}", status_code=303
        )
    return pages.error_page(request, exc.http_status, exc.message)


def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    first: dict[str, Any] = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "request"
    # pydantic words a validator's own ValueError "Value error, ...": the words are ours.
    words = str(first.get("msg", "is not valid")).removeprefix("Value error, ")
    message = f"{where}: {words}"
    if _is_api(request):
        return _error_json(422, "invalid_input", message, where)
    return pages.error_page(request, 422, message)


def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    messages = {404: "no such page", 405: "that method is not allowed here"}
    message = messages.get(exc.status_code, str(exc.detail))
    if _is_api(request):
        return _error_json(exc.status_code, "http_error", message)
    return pages.error_page(request, exc.status_code, message)


def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    message = "something went wrong on the server; it has been logged for IT"
    # Starlette answers an unhandled error outside every middleware, security_headers
    # included: the apology gets the headers here.
    if _is_api(request):
        return _secured(_error_json(500, "internal_error", message))
    return _secured(pages.error_page(request, 500, message))
