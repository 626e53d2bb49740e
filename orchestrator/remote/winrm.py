"""The orchestrator's direct WinRM adapter (pywinrm's ``winrm.Protocol``).

The connection settings are pinned, not chosen per host:

* transport ``ntlm`` or ``kerberos``, always with ``message_encryption="always"``
  (the SOAP bodies are sealed with the authentication's session keys, on
  ``http`` and ``https`` alike);
* on ``https`` the server certificate is validated
  (``server_cert_validation="validate"``), against ``ca_file`` when given,
  else the default trust store.

Anything else (Basic, plaintext ``http``, CredSSP, certificate mapping,
skipping certificate validation) is refused with :class:`InvalidInput` before
any connection is made. Proxies from the environment are never used.

pywinrm errors are translated here, once: a rejected password is
:class:`AuthenticationFailed`, a WSManFault "access denied" (code 5) is
:class:`AccessDenied` (neither is retried), a refused or unreachable port is
:class:`HostUnreachable`, and a read timeout is :class:`RemoteTimeout`. A WS-Man
OperationTimeout answered to Receive means "no output yet": it is re-polled,
up to ``max_receive_polls`` times, then :class:`RemoteTimeout`. A call given
its own ``timeout`` is bounded by that instead: the OperationTimeout asked of
the PC is cut to fit, and a command still running at the deadline is stopped
(Signal terminate) and is :class:`RemoteTimeout`.

:meth:`WinRMClient.run_powershell` sends a script as Ansible's ``raw`` does:
``powershell.exe -NoProfile -NonInteractive -EncodedCommand <base64 of the
UTF-16LE text>``, so no quoting of the script reaches ``cmd.exe``.

The password lives only in the client (and pywinrm's session); it is not in
any ``repr``, log line or exception message.
"""

from __future__ import annotations

import base64
import logging
import math
import os
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import (
    AccessDenied,
    AuthenticationFailed,
    HostUnreachable,
    InvalidInput,
    RemoteError,
    RemoteTimeout,
)

log = logging.getLogger(__name__)

TRANSPORTS = ("ntlm", "kerberos")
SCHEMES = ("http", "https")
REBOOT_CODES = (3010, 1641)
"""ERROR_SUCCESS_REBOOT_REQUIRED and ERROR_SUCCESS_REBOOT_INITIATED."""
ACCESS_DENIED = 5
OPERATION_TIMEOUT = 2150858793
POWERSHELL = "powershell.exe"
POWERSHELL_OPTIONS = ("-NoProfile", "-NonInteractive", "-EncodedCommand")
MAX_ENCODED_SCRIPT = 8000
"""Characters of base64 a script may take: the command line must stay under
``cmd.exe``'s 8191."""


@dataclass(frozen=True)
class WinRMEndpoint:
    """Where a PC's WinRM service listens, and how we speak to it."""

    address: str
    port: int = 5985
    scheme: str = "http"
    transport: str = "ntlm"
    ca_file: str | None = None
    """CA bundle for validating an https endpoint's certificate."""
    message_encryption: str = "always"
    """Pinned: only 'always' is accepted."""
    server_cert_validation: str = "validate"
    """Pinned: only 'validate' is accepted."""
    path: str = "/wsman"

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{host}:{self.port}{self.path}"

    def validate(self) -> None:
        """Refuse every setting other than the pinned ones.

        Raises:
            InvalidInput: Basic/plaintext/CredSSP/certificate transport, an
                unencrypted session, unvalidated TLS, a bad port or CA path.
        """
        if self.transport not in TRANSPORTS:
            raise InvalidInput(
                f"WinRM transport {self.transport!r} is not allowed "
                f"(allowed: {', '.join(TRANSPORTS)}; Basic, plaintext and CredSSP are refused)",
                field="transport",
            )
        if self.scheme not in SCHEMES:
            raise InvalidInput(f"WinRM scheme {self.scheme!r} is not http or https", field="scheme")
        if self.message_encryption != "always":
            raise InvalidInput(
                f"message encryption {self.message_encryption!r} is not allowed: "
                "WinRM messages are always encrypted",
                field="message_encryption",
            )
        if self.server_cert_validation != "validate":
            raise InvalidInput(
                "server certificates are always validated "
                f"({self.server_cert_validation!r} is not allowed)",
                field="server_cert_validation",
            )
        if self.ca_file is not None:
            if self.scheme != "https":
                raise InvalidInput("a CA bundle only applies to https endpoints", field="ca_file")
            if not os.path.isfile(self.ca_file):
                raise InvalidInput(f"no CA bundle at {self.ca_file}", field="ca_file")
        if not 0 < self.port < 65536:
            raise InvalidInput(f"port {self.port} is out of range", field="port")
        if not self.address or any(c in self.address for c in "/@?# "):
            raise InvalidInput(f"{self.address!r} is not a host address", field="address")


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def reboot_required(self) -> bool:
        return self.exit_code in REBOOT_CODES

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 or self.reboot_required


class WinRMClient:
    """Runs commands on one PC over WinRS (a shell per :meth:`run`)."""

    def __init__(
        self,
        endpoint: WinRMEndpoint,
        username: str,
        password: str,
        *,
        operation_timeout: int = 20,
        read_timeout: int = 30,
        max_receive_polls: int = 30,
    ) -> None:
        """Check the settings now; connect on first use.

        Raises:
            InvalidInput: the endpoint's settings are not the pinned ones, or
                the timeouts do not fit together.
        """
        endpoint.validate()
        if not username:
            raise InvalidInput("a WinRM user name is required", field="username")
        if not 0 < operation_timeout < read_timeout:
            raise InvalidInput(
                "the read timeout must exceed the operation timeout, both positive",
                field="read_timeout",
            )
        if max_receive_polls < 1:
            raise InvalidInput("at least one Receive poll is needed", field="max_receive_polls")
        self.endpoint = endpoint
        self.username = username
        self.__password = password
        self.operation_timeout = operation_timeout
        self.read_timeout = read_timeout
        self.max_receive_polls = max_receive_polls

    def __repr__(self) -> str:
        return (
            f"WinRMClient(endpoint={self.endpoint!r}, username={self.username!r}, "
            "password='********')"
        )

    def protocol_settings(self) -> dict[str, Any]:
        """The keyword arguments handed to ``winrm.Protocol`` (without the password)."""
        e = self.endpoint
        return {
            "endpoint": e.url,
            "transport": e.transport,
            "username": self.username,
            "message_encryption": "always",
            "server_cert_validation": "validate",
            "ca_trust_path": e.ca_file if e.ca_file else None,
            "send_cbt": True,
            "proxy": None,
            "operation_timeout_sec": self.operation_timeout,
            "read_timeout_sec": self.read_timeout,
        }

    def _protocol(self, timeout: float | None = None) -> Any:
        import winrm

        settings = self.protocol_settings()
        if timeout is not None:
            # Ask the PC to answer each Receive within the call's own time, so
            # a hung command is noticed at its deadline, not 20s later.
            operation = max(1, min(self.operation_timeout, math.ceil(timeout)))
            settings["operation_timeout_sec"] = operation
            settings["read_timeout_sec"] = min(self.read_timeout, operation + 5)
        return winrm.Protocol(password=self.__password, **settings)

    def run_powershell(self, script: str, *, timeout: float | None = None) -> CommandResult:
        """Run a PowerShell script (see :func:`powershell_command`); a CLIXML
        error stream is turned back into its text.

        Raises: as :meth:`run`; InvalidInput for a script too long to send.
        """
        command, args = powershell_command(script)
        result = self.run(command, args, timeout=timeout)
        return CommandResult(result.exit_code, result.stdout, clixml_text(result.stderr))

    def run(
        self, command: str, args: Sequence[str] = (), *, timeout: float | None = None
    ) -> CommandResult:
        """Run ``command args…`` in a fresh shell and wait for it to finish,
        at most ``timeout`` seconds when given.

        Raises:
            InvalidInput: ``timeout`` is not a positive number of seconds.
            AuthenticationFailed: the user name or password was rejected.
            AccessDenied: the user may not open a shell or run this command.
            HostUnreachable: nothing answers at the endpoint.
            RemoteTimeout: no answer in time, still running after
                ``max_receive_polls`` OperationTimeouts, or still running at
                ``timeout`` (then it has been stopped).
            RemoteError: any other WinRM failure.
        """
        if timeout is not None and not timeout > 0:
            raise InvalidInput("a command timeout is a positive number of seconds", field="timeout")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._translated():
            protocol = self._protocol(timeout)
            shell_id = protocol.open_shell(codepage=65001)
            healthy = True
            try:
                command_id = protocol.run_command(shell_id, command, list(args))
                try:
                    stdout, stderr, code = self._receive(protocol, shell_id, command_id, deadline)
                except Exception as exc:
                    healthy = _session_still_usable(exc)
                    raise
                finally:
                    if healthy:
                        protocol.cleanup_command(shell_id, command_id)
            except Exception as exc:
                healthy = healthy and _session_still_usable(exc)
                raise
            finally:
                if healthy:
                    protocol.close_shell(shell_id)
                else:
                    protocol.transport.close_session()
        return CommandResult(
            code,
            stdout.decode("utf-8", errors="replace"),
            stderr.decode("utf-8", errors="replace"),
        )

    def probe(self) -> str:
        """The PC's host name: proves we can log in and run a command.

        Raises:
            RemoteError: see :meth:`run`; also when ``hostname`` fails.
        """
        result = self.run("hostname")
        if result.exit_code != 0:
            raise RemoteError(
                f"hostname exited {result.exit_code}: {result.stderr.strip()[:200]}",
                host=self.endpoint.address,
            )
        return result.stdout.strip()

    def _receive(
        self, protocol: Any, shell_id: str, command_id: str, deadline: float | None
    ) -> tuple[bytes, bytes, int]:
        from winrm.exceptions import WinRMOperationTimeoutError

        out: list[bytes] = []
        err: list[bytes] = []
        for _ in range(self.max_receive_polls):
            try:
                stdout, stderr, code, done = protocol.get_command_output_raw(shell_id, command_id)
            except WinRMOperationTimeoutError:
                log.debug("%s: no output yet (OperationTimeout), polling again", self.endpoint.url)
            else:
                out.append(stdout)
                err.append(stderr)
                if done:
                    return b"".join(out), b"".join(err), int(code)
            if deadline is not None and time.monotonic() >= deadline:
                raise _PastDeadline()
        raise _Exhausted(self.max_receive_polls)

    @contextmanager
    def _translated(self) -> Iterator[None]:
        import requests
        from winrm.exceptions import (
            InvalidCredentialsError,
            WinRMError,
            WinRMOperationTimeoutError,
            WinRMTransportError,
            WSManFaultError,
        )

        host = self.endpoint.address
        where = self.endpoint.url
        try:
            yield
        except _PastDeadline:
            raise RemoteTimeout(
                f"the command was still running at its deadline at {where}: stopped", host=host
            ) from None
        except _Exhausted as exc:
            raise RemoteTimeout(
                f"the command still had not finished after {exc.polls} polls "
                f"of {self.operation_timeout}s at {where}",
                host=host,
            ) from None
        except InvalidCredentialsError as exc:
            raise AuthenticationFailed(
                f"{where} rejected the credentials of {self.username!r}", host=host
            ) from exc
        except WSManFaultError as exc:
            if exc.wsman_fault_code == ACCESS_DENIED or (exc.fault_subcode or "").endswith(
                "AccessDenied"
            ):
                raise AccessDenied(
                    f"{self.username!r} is not allowed to do this at {where}: {exc.reason.strip()}",
                    host=host,
                ) from exc
            raise RemoteError(
                f"WS-Management fault {exc.wsman_fault_code} at {where}: {exc.reason.strip()}",
                host=host,
            ) from exc
        except WinRMOperationTimeoutError as exc:
            raise RemoteTimeout(f"WS-Management operation timed out at {where}", host=host) from exc
        except requests.exceptions.ConnectTimeout as exc:
            raise HostUnreachable(f"timed out connecting to {where}", host=host) from exc
        except requests.exceptions.SSLError as exc:
            raise RemoteError(
                f"TLS with {where} failed (certificate not trusted?): {type(exc).__name__}",
                host=host,
            ) from exc
        except requests.exceptions.ConnectionError as exc:
            if _is_read_timeout(exc):
                raise RemoteTimeout(f"no answer from {where} in time", host=host) from exc
            raise HostUnreachable(f"cannot connect to {where}", host=host) from exc
        except requests.exceptions.Timeout as exc:
            raise RemoteTimeout(
                f"no answer from {where} within {self.read_timeout}s", host=host
            ) from exc
        except WinRMTransportError as exc:
            raise RemoteError(f"HTTP {exc.code} from {where}", host=host) from exc
        except WinRMError as exc:
            raise RemoteError(f"WinRM failed at {where}: {type(exc).__name__}", host=host) from exc
        except requests.exceptions.RequestException as exc:
            raise RemoteError(f"HTTP failed at {where}: {type(exc).__name__}", host=host) from exc


class _PastDeadline(Exception):
    pass


class _Exhausted(Exception):
    def __init__(self, polls: int) -> None:
        super().__init__(polls)
        self.polls = polls


def _session_still_usable(exc: BaseException) -> bool:
    """Whether a shell may still be closed politely after ``exc``."""
    import requests
    from winrm.exceptions import InvalidCredentialsError

    return not isinstance(exc, requests.exceptions.RequestException | InvalidCredentialsError)


def _is_read_timeout(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if "Read timed out" in str(seen) or type(seen).__name__ == "ReadTimeoutError":
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def powershell_command(script: str) -> tuple[str, list[str]]:
    """(program, arguments) that run ``script`` in Windows PowerShell:
    ``powershell.exe -NoProfile -NonInteractive -EncodedCommand <base64>``.

    Raises: InvalidInput when the encoded script would not fit a command line.
    """
    encoded = base64.b64encode(script.encode("utf-16-le")).decode("ascii")
    if len(encoded) > MAX_ENCODED_SCRIPT:
        raise InvalidInput(
            f"the PowerShell script is too long to send ({len(script)} characters)",
            field="script",
        )
    return POWERSHELL, [*POWERSHELL_OPTIONS, encoded]


_CLIXML_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")


def clixml_text(stream: str) -> str:
    """The text of a ``#< CLIXML`` error stream (what PowerShell writes to a
    redirected stderr), or ``stream`` unchanged when it is not CLIXML."""
    marker = "#< CLIXML"
    if not stream.startswith(marker):
        return stream
    try:
        root = ET.fromstring(stream[len(marker) :].strip())
    except ET.ParseError:
        return stream
    lines = [
        _CLIXML_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), el.text or "")
        for el in root.iter()
        if el.tag.rsplit("}", 1)[-1] == "S" and el.get("S") == "Error"
    ]
    return "".join(lines) if lines else stream
