"""Serving the application with uvicorn in the orchestrator's own process."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from orchestrator.errors import InvalidInput
from orchestrator.services.context import Context
from orchestrator.web.app import create_app


class _Server(uvicorn.Server):
    def __init__(
        self, config: uvicorn.Config, on_started: Callable[[str], None], scheme: str
    ) -> None:
        super().__init__(config)
        self._on_started = on_started
        self._scheme = scheme

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn re-raises a captured signal once it has shut down, which would kill
        # the process before the scheduler is stopped: the caller stops it instead.
        super().handle_exit(sig, frame)
        self._captured_signals.clear()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            self._on_started(f"{self._scheme}://{host}:{port}")


def tls_options(address: str, cert_file: Path | None, key_file: Path | None) -> dict[str, str]:
    """uvicorn's TLS options, after the rule: passwords and session cookies never cross
    a network in clear text, so any address but loopback needs a certificate.

    Raises:
        InvalidInput: a certificate without its key (or the reverse), a file that is
            missing, or a non-loopback address without TLS.
    """
    if (cert_file is None) != (key_file is None):
        raise InvalidInput(
            "set both web_tls_cert_file and web_tls_key_file, or neither", field="web_tls"
        )
    if cert_file is not None and key_file is not None:
        for name, path in (("web_tls_cert_file", cert_file), ("web_tls_key_file", key_file)):
            if not path.is_file():
                raise InvalidInput(f"{path}: no such file", field=name)
        return {"ssl_certfile": str(cert_file), "ssl_keyfile": str(key_file)}
    if not _loopback(address):
        raise InvalidInput(
            f"serving on {address} would send passwords in clear text: give "
            "web_tls_cert_file and web_tls_key_file, or listen on 127.0.0.1 behind a "
            "reverse proxy that serves HTTPS",
            field="web_address",
        )
    return {}


def _loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


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
    scheme = "https" if uvicorn_options.get("ssl_certfile") else "http"
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
    server = _Server(config, on_started, scheme)
    asyncio.run(server.serve())
