"""Serving the application with uvicorn in the orchestrator's own process."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn

from orchestrator.services.context import Context
from orchestrator.web.app import create_app


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_started: Callable[[str], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn re-raises a captured signal once it has shut down, which would kill
        # the process before the scheduler is stopped: the caller stops it instead.
        super().handle_exit(sig, frame)
        self._captured_signals.clear()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            self._on_started(f"http://{host}:{port}")


def run(
    ctx: Context,
    *,
    address: str,
    port: int,
    on_started: Callable[[str], None] = lambda _url: None,
    **uvicorn_options: Any,
) -> None:
    """Serve the pages and the API until SIGINT/SIGTERM; ``on_started`` gets the address.

    ``port`` 0 picks a free port (the address given to ``on_started`` says which).
    """
    config = uvicorn.Config(
        create_app(ctx),
        host=address,
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        **uvicorn_options,
    )
    server = _Server(config, on_started)
    asyncio.run(server.serve())
