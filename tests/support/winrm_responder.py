"""A WS-Management (WinRS) protocol responder on loopback, standing in for a PC.

Windows cannot run here, so this speaks the protocol as Windows' WinRM
service does for WinRS shells, closely enough for pywinrm and Ansible's
``winrm`` connection plugin to hold a full session with it:

* HTTP on 127.0.0.1 (a free port), ``POST /wsman``, HTTP/1.1 keep-alive.
* NTLM authentication (offered as ``WWW-Authenticate: Negotiate``), accepted
  by pyspnego's server side (``spnego.server(protocol="ntlm")``), which reads
  the known users from the file named by ``NTLM_USER_FILE`` (lines
  ``DOMAIN:USER:PASSWORD``). A wrong password is answered with HTTP 401.
  NTLM authenticates the TCP connection, so the context lives per connection.
* Message encryption is REQUIRED: every request body after authentication
  must be ``multipart/encrypted;protocol="application/HTTP-SPNEGO-session-
  encrypted"`` (the format of pywinrm's ``winrm/encryption.py``), sealed with
  the connection's NTLM session keys; answers are sealed the same way. A
  plaintext body is refused (HTTP 400 with a SOAP fault) and kept in
  :attr:`WinRMResponder.plaintext_bodies` so a test can assert none arrived.
* WinRS operations: Create (a shell), Command, Send (stdin), Receive (base64
  streams, ``CommandState/Done`` with the exit code), Signal (terminate),
  Delete (the shell). Commands are answered from tables: first the
  signed-in user's own (``user_commands``: user → command line or script
  text → :class:`Answer`), so a student and a staff account can be shown
  different things, then the shared :data:`COMMANDS`. ``powershell ...
  -EncodedCommand <base64 UTF-16LE>`` is decoded and the script text looked
  up in the same tables, which is how Ansible's ``raw`` module and the
  orchestrator's PC persona checks arrive. Keys are compared lower case with
  runs of white space made one space.
* Faults as Windows sends them (HTTP 500, SOAP 1.2 fault with a
  ``WSManFault`` detail): access denied (code 5) for the command
  :data:`DENIED_COMMAND` (unless the user's own table answers it, e.g. with
  :data:`NET_SESSION_REFUSED`, which is what Windows prints to a non-admin)
  or for any user in ``denied_users`` (at Create); OperationTimeout (code
  2150858793) answered to Receive ``operation_timeouts`` times before
  :data:`SLOW_COMMAND` completes; an answer with ``hangs=True`` never
  completes: every Receive waits out the OperationTimeout the client asked
  for and answers OperationTimeout, as Windows does while a command runs,
  until the client stops it (Signal); and ``hang_seconds`` to make Receive
  answer nothing for that long.

What it does not do: run anything. There is no PowerShell behind it, so
Ansible modules (``win_ping``, ``win_package``, fact gathering) cannot run
against it, and a script's answer is whatever its table says, not what the
script would do on Windows; only commands in the tables answer.
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import socket
import struct
import tempfile
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import spnego
from spnego.exceptions import SpnegoError

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
}
SHELL_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
ACTIONS = {
    "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create": "Create",
    "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete": "Delete",
    f"{SHELL_URI}/Command": "Command",
    f"{SHELL_URI}/Send": "Send",
    f"{SHELL_URI}/Receive": "Receive",
    f"{SHELL_URI}/Signal": "Signal",
}
RESPONSE_ACTIONS = {
    "Create": "http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse",
    "Delete": "http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse",
    "Command": f"{SHELL_URI}/CommandResponse",
    "Send": f"{SHELL_URI}/SendResponse",
    "Receive": f"{SHELL_URI}/ReceiveResponse",
    "Signal": f"{SHELL_URI}/SignalResponse",
}
ENCRYPTED_PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
BOUNDARY = b"--Encrypted Boundary"
OPERATION_TIMEOUT_CODE = 2150858793
ACCESS_DENIED_CODE = 5

DENIED_COMMAND = "net session"
"""Answered with a WSManFault access denied (code 5), as for a non-admin."""
SLOW_COMMAND = "timeout /t 30 /nobreak"
"""Receive answers OperationTimeout ``operation_timeouts`` times, then Done."""


@dataclass(frozen=True)
class Answer:
    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0
    hangs: bool = False
    """Never completes (see the module docstring)."""


NET_SESSION_REFUSED = Answer(
    stderr="System error 5 has occurred.\r\n\r\nAccess is denied.\r\n\r\n", exit_code=2
)
"""What ``net session`` answers a user who is not an administrator."""
NET_SESSION_ADMIN = Answer("There are no entries in the list.\r\n\r\n")
"""What ``net session`` answers an administrator when no one is connected."""
HANGS = Answer(hangs=True)


def _ipconfig(hostname: str) -> Answer:
    return Answer(
        "\r\nWindows IP Configuration\r\n\r\n"
        f"   Host Name . . . . . . . . . . . . : {hostname}\r\n"
        "   Primary Dns Suffix  . . . . . . . : district.example\r\n\r\n"
        "Ethernet adapter Ethernet:\r\n\r\n"
        "   Physical Address. . . . . . . . . : 02-00-00-00-02-01\r\n"
        "   IPv4 Address. . . . . . . . . . . : 127.0.0.1(Preferred)\r\n"
    )


COMMANDS: dict[str, Callable[[str], Answer]] = {
    "hostname": lambda host: Answer(f"{host}\r\n"),
    "ipconfig /all": _ipconfig,
    "cmd /c exit 0": lambda _h: Answer(),
    "cmd /c exit 3010": lambda _h: Answer(exit_code=3010),
    "cmd /c exit 1641": lambda _h: Answer(exit_code=1641),
    "cmd /c exit 1": lambda _h: Answer(stderr="failed\r\n", exit_code=1),
    SLOW_COMMAND: lambda _h: Answer("\r\nWaiting for 0 seconds, press CTRL+C to quit ...\r\n"),
}
"""Known command lines (lower case, single spaces) and what they answer."""


def decode_powershell(command_line: str) -> str | None:
    """The script of ``powershell … -EncodedCommand <b64>``, else None."""
    try:
        words = shlex.split(command_line, posix=False)
    except ValueError:
        return None
    if not words or Path(words[0].strip('"').lower()).stem not in ("powershell", "pwsh"):
        return None
    for i, word in enumerate(words[:-1]):
        if word.lower() in ("-encodedcommand", "-enc", "-ec", "-e"):
            try:
                return base64.b64decode(words[i + 1]).decode("utf-16-le")
            except (ValueError, UnicodeDecodeError):
                return None
    return None


def _normal(text: str) -> str:
    return " ".join(text.split()).lower()


@dataclass
class Recorded:
    """One decrypted request, for assertions."""

    action: str
    user: str | None
    command_line: str | None = None
    script: str | None = None
    stdin: bytes = b""


@dataclass
class _Command:
    line: str
    answer: Answer | None
    timeouts_left: int
    stdin: bytearray = field(default_factory=bytearray)
    done: bool = False


class WSManFault(Exception):
    def __init__(self, subcode: str, code: int, message: str, *, sender: bool = True) -> None:
        super().__init__(message)
        self.subcode, self.code, self.message, self.sender = subcode, code, message, sender


def _access_denied() -> WSManFault:
    return WSManFault("w:AccessDenied", ACCESS_DENIED_CODE, "Access is denied. ")


# pyspnego's NTLM acceptor reads the users from the file named by NTLM_USER_FILE
# (when it is made and when it checks the AUTHENTICATE message). Each responder
# has its own file; the variable stays set while any responder runs and is
# pointed at the right file, under this lock, around every acceptor call (only
# its value changes, so other threads copying os.environ are not disturbed).
_NTLM_LOCK = threading.Lock()
_RUNNING: list[WinRMResponder] = []
_SAVED_ENV: str | None = None


def _ntlm_step(responder: WinRMResponder, context: Any, token: bytes) -> tuple[Any, bytes | None]:
    with _NTLM_LOCK:
        os.environ["NTLM_USER_FILE"] = str(responder.user_file)
        if context is None or context.complete:
            context = spnego.server(protocol="ntlm")
        return context, context.step(token)


class WinRMResponder:
    """A WinRM service on 127.0.0.1; use as a context manager."""

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        *,
        hostname: str = "PC-LAB-01",
        denied_users: set[str] | None = None,
        operation_timeouts: int = 3,
        hang_seconds: float = 0.0,
        user_commands: Mapping[str, Mapping[str, Answer]] | None = None,
    ) -> None:
        self.users = dict(users or {"orchestrator": "Corr3ct-Horse!"})
        self.user_commands = {
            user.lower(): {_normal(line): answer for line, answer in table.items()}
            for user, table in (user_commands or {}).items()
        }
        self.hostname = hostname
        self.denied_users = {u.lower() for u in (denied_users or set())}
        self.operation_timeouts = operation_timeouts
        self.hang_seconds = hang_seconds
        self.plaintext_bodies: list[bytes] = []
        """Every request body that arrived without message encryption."""
        self.requests: list[Recorded] = []
        """Every decrypted request, in order."""
        self.auth_failures = 0
        self.authenticated_users: list[str] = []
        self.shells: dict[str, dict[str, _Command]] = {}
        self.lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.user_file: Path | None = None

    # -- life -----------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None, "the responder is not running"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/wsman"

    @property
    def actions(self) -> list[str]:
        with self.lock:
            return [r.action for r in self.requests]

    def count(self, action: str, command_line: str | None = None) -> int:
        with self.lock:
            return sum(
                1
                for r in self.requests
                if r.action == action and (command_line is None or r.command_line == command_line)
            )

    def start(self) -> WinRMResponder:
        global _SAVED_ENV
        fd, name = tempfile.mkstemp(prefix="ntlm-users-")
        os.close(fd)
        self.user_file = Path(name)
        self.user_file.write_text(
            "".join(
                f"{domain}:{user}:{password}\n"
                for user, password in self.users.items()
                for domain in ("", self.hostname)
            )
        )
        with _NTLM_LOCK:
            if not _RUNNING:
                _SAVED_ENV = os.environ.get("NTLM_USER_FILE")
            _RUNNING.append(self)
            os.environ["NTLM_USER_FILE"] = name
        self._stopping.clear()
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="winrm-responder")
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with _NTLM_LOCK:
            if self in _RUNNING:
                _RUNNING.remove(self)
            if _RUNNING:
                os.environ["NTLM_USER_FILE"] = str(_RUNNING[-1].user_file)
            elif _SAVED_ENV is None:
                os.environ.pop("NTLM_USER_FILE", None)
            else:
                os.environ["NTLM_USER_FILE"] = _SAVED_ENV
        if self.user_file is not None:
            self.user_file.unlink(missing_ok=True)

    def __enter__(self) -> WinRMResponder:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def add_answers(self, user: str, answers: Mapping[str, Answer]) -> None:
        """Add to (or replace in) ``user``'s own table while running."""
        with self.lock:
            table = self.user_commands.setdefault(user.lower(), {})
            table.update({_normal(line): answer for line, answer in answers.items()})

    # -- WinRS ----------------------------------------------------------------

    def handle(self, xml: bytes, user: str) -> tuple[int, str]:
        """Answer one decrypted SOAP request: (HTTP status, envelope)."""
        root = ET.fromstring(xml)
        header = root.find("s:Header", NS)
        body = root.find("s:Body", NS)
        action_uri = _text(header, "a:Action")
        message_id = _text(header, "a:MessageID") or f"uuid:{uuid.uuid4()}"
        action = ACTIONS.get(action_uri, action_uri)
        record = Recorded(action, user)
        with self.lock:
            self.requests.append(record)
        try:
            payload = self._operate(action, header, body, user, record)
        except WSManFault as fault:
            return 500, _fault_envelope(fault, message_id, self.hostname)
        return 200, _envelope(RESPONSE_ACTIONS.get(action, action_uri), message_id, payload)

    def _operate(
        self,
        action: str,
        header: ET.Element | None,
        body: ET.Element | None,
        user: str,
        rec: Recorded,
    ) -> str:
        shell_id = ""
        if header is not None:
            sel = header.find("w:SelectorSet/w:Selector[@Name='ShellId']", NS)
            shell_id = (sel.text or "") if sel is not None else ""
        if action == "Create":
            if user.lower() in self.denied_users:
                raise _access_denied()
            shell_id = str(uuid.uuid4()).upper()
            with self.lock:
                self.shells[shell_id] = {}
            return (
                f"<x:ResourceCreated><a:Address>{escape(self.url)}</a:Address>"
                "<a:ReferenceParameters>"
                f"<w:ResourceURI>{SHELL_URI}/cmd</w:ResourceURI>"
                f'<w:SelectorSet><w:Selector Name="ShellId">{shell_id}</w:Selector>'
                "</w:SelectorSet></a:ReferenceParameters></x:ResourceCreated>"
                f"<rsp:Shell><rsp:ShellId>{shell_id}</rsp:ShellId>"
                f"<rsp:ResourceUri>{SHELL_URI}/cmd</rsp:ResourceUri>"
                f"<rsp:Owner>{escape(user)}</rsp:Owner><rsp:State>Connected</rsp:State>"
                "</rsp:Shell>"
            )
        with self.lock:
            commands = self.shells.get(shell_id)
        if commands is None:
            raise WSManFault(
                "w:InvalidSelectors",
                2150858843,
                "The request for the Windows Remote Shell with ShellId "
                f"{shell_id} failed because the shell was not found on the server.",
            )
        if action == "Delete":
            with self.lock:
                del self.shells[shell_id]
            return ""
        if action == "Command":
            line_el = body.find("rsp:CommandLine", NS) if body is not None else None
            cmd = _text(line_el, "rsp:Command")
            args = _text(line_el, "rsp:Arguments")
            line = f"{cmd} {args}".strip()
            script = decode_powershell(line)
            rec.command_line, rec.script = line, script
            key = _normal(script if script is not None else line)
            with self.lock:
                own = self.user_commands.get(user.lower(), {}).get(key)
            if own is None and key == DENIED_COMMAND:
                raise _access_denied()
            known = COMMANDS.get(key)
            answer = (
                own
                if own is not None
                else known(self.hostname)
                if known
                else Answer(
                    stderr=f"'{key.split(' ')[0] if key else ''}' is not recognized as an "
                    "internal or external command,\r\noperable program or batch file.\r\n",
                    exit_code=1,
                )
            )
            command_id = str(uuid.uuid4()).upper()
            with self.lock:
                commands[command_id] = _Command(
                    line,
                    answer,
                    self.operation_timeouts if key == SLOW_COMMAND and own is None else 0,
                )
            return (
                f"<rsp:CommandResponse><rsp:CommandId>{command_id}</rsp:CommandId>"
                "</rsp:CommandResponse>"
            )
        if action == "Send":
            stream = body.find("rsp:Send/rsp:Stream", NS) if body is not None else None
            command = self._command(commands, stream)
            data = base64.b64decode((stream.text or "") if stream is not None else "")
            command.stdin += data
            rec.command_line, rec.stdin = command.line, data
            return "<rsp:SendResponse/>"
        if action == "Receive":
            stream = body.find("rsp:Receive/rsp:DesiredStream", NS) if body is not None else None
            command = self._command(commands, stream)
            rec.command_line = command.line
            if self.hang_seconds:
                self._stopping.wait(self.hang_seconds)
            hangs = command.answer is not None and command.answer.hangs
            if hangs:
                self._stopping.wait(_seconds(_text(header, "w:OperationTimeout")))
            with self.lock:
                if hangs or command.timeouts_left > 0:
                    command.timeouts_left -= 1
                    timed_out = True
                else:
                    timed_out = False
            if timed_out:
                raise WSManFault(
                    "w:TimedOut",
                    OPERATION_TIMEOUT_CODE,
                    "The WS-Management service cannot complete the operation within the "
                    "time specified in OperationTimeout.  ",
                    sender=False,
                )
            cid = stream.get("CommandId", "") if stream is not None else ""
            answer = command.answer or Answer()
            command.done = True
            parts = []
            for name, text in (("stdout", answer.stdout), ("stderr", answer.stderr)):
                if text:
                    data = base64.b64encode(text.encode("utf-8")).decode()
                    parts.append(f'<rsp:Stream Name="{name}" CommandId="{cid}">{data}</rsp:Stream>')
                parts.append(
                    f'<rsp:Stream Name="{name}" CommandId="{cid}" End="true"></rsp:Stream>'
                )
            return (
                "<rsp:ReceiveResponse>" + "".join(parts) + f'<rsp:CommandState CommandId="{cid}" '
                f'State="{SHELL_URI}/CommandState/Done">'
                f"<rsp:ExitCode>{answer.exit_code}</rsp:ExitCode></rsp:CommandState>"
                "</rsp:ReceiveResponse>"
            )
        if action == "Signal":
            signal_el = body.find("rsp:Signal", NS) if body is not None else None
            command = self._command(commands, signal_el)
            rec.command_line = command.line
            with self.lock:
                commands.pop(signal_el.get("CommandId", "") if signal_el is not None else "", None)
            return "<rsp:SignalResponse/>"
        raise WSManFault(
            "w:ActionNotSupported",
            2150858754,
            f"The WS-Management service does not support the action {action}.",
        )

    def _command(self, commands: dict[str, _Command], el: ET.Element | None) -> _Command:
        cid = el.get("CommandId", "") if el is not None else ""
        with self.lock:
            command = commands.get(cid)
        if command is None:
            raise WSManFault(
                "w:InvalidParameter", 2150858882, f"The command {cid} is not running in the shell."
            )
        return command


def _seconds(duration: str) -> float:
    """Seconds of an xs:duration such as ``PT20S`` or ``PT1.500S`` (20 if absent)."""
    match = re.fullmatch(r"PT(\d+(?:\.\d+)?)S", duration.strip())
    return float(match.group(1)) if match else 20.0


def _text(el: ET.Element | None, path: str) -> str:
    if el is None:
        return ""
    found = el.find(path, NS)
    return (found.text or "").strip() if found is not None else ""


def _envelope(action: str, relates_to: str, body: str) -> str:
    return (
        '<s:Envelope xml:lang="en-US" '
        + " ".join(f'xmlns:{k}="{v}"' for k, v in NS.items())
        + "><s:Header>"
        f"<a:Action>{action}</a:Action>"
        f"<a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID>"
        "<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>"
        f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo>"
        f"</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    )


def _fault_envelope(fault: WSManFault, relates_to: str, machine: str) -> str:
    who = "s:Sender" if fault.sender else "s:Receiver"
    return _envelope(
        "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault",
        relates_to,
        f"<s:Fault><s:Code><s:Value>{who}</s:Value>"
        f"<s:Subcode><s:Value>{fault.subcode}</s:Value></s:Subcode></s:Code>"
        f'<s:Reason><s:Text xml:lang="en-US">{escape(fault.message)}</s:Text></s:Reason>'
        f'<s:Detail><f:WSManFault Code="{fault.code}" Machine="{escape(machine)}">'
        f"<f:Message>{escape(fault.message)}</f:Message></f:WSManFault></s:Detail></s:Fault>",
    )


# -- message encryption (MS-WSMV 2.2.9.1.1, as pywinrm's encryption.py) --------


def unwrap_message(context: Any, body: bytes) -> bytes:
    """Decrypt a ``multipart/encrypted`` body sealed with the NTLM context."""
    parts = [p for p in body.split(BOUNDARY + b"\r\n") if p]
    message = b""
    for i in range(0, len(parts) - 1, 2):
        header, payload = parts[i].strip(), parts[i + 1]
        match = re.search(rb"Length=(\d+)", header)
        if not match or ENCRYPTED_PROTOCOL.encode() not in header:
            raise ValueError("not a session-encrypted part")
        if payload.endswith(BOUNDARY + b"--\r\n"):
            payload = payload[: -len(BOUNDARY + b"--\r\n")]
        payload = payload.replace(b"\tContent-Type: application/octet-stream\r\n", b"", 1)
        sig_len = struct.unpack("<i", payload[:4])[0]
        signature, sealed = payload[4 : 4 + sig_len], payload[4 + sig_len :]
        plain: bytes = context.unwrap(signature + sealed).data
        if len(plain) != int(match.group(1)):
            raise ValueError("decrypted length differs from the declared length")
        message += plain
    if not parts:
        raise ValueError("no encrypted parts")
    return message


def wrap_message(context: Any, message: bytes) -> bytes:
    sealed_with_sig: bytes = context.wrap(message, encrypt=True).data
    signature, sealed = sealed_with_sig[:16], sealed_with_sig[16:]
    return (
        BOUNDARY + b"\r\n"
        b"\tContent-Type: " + ENCRYPTED_PROTOCOL.encode() + b"\r\n"
        b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length="
        + str(len(message)).encode()
        + b"\r\n"
        + BOUNDARY
        + b"\r\n"
        b"\tContent-Type: application/octet-stream\r\n"
        + struct.pack("<i", len(signature))
        + signature
        + sealed
        + BOUNDARY
        + b"--\r\n"
    )


def _handler_for(responder: WinRMResponder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "Microsoft-HTTPAPI/2.0"
        sys_version = ""

        def setup(self) -> None:
            super().setup()
            self.ntlm: Any = None
            self.user: str | None = None

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, body: bytes = b"", headers: Mapping[str, str] = {}) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body:
                self.wfile.write(body)

        def _challenge(self, token: bytes | None = None) -> None:
            value = "Negotiate" + (f" {base64.b64encode(token).decode()}" if token else "")
            self._send(401, headers={"WWW-Authenticate": value})

        def do_GET(self) -> None:
            self._send(405)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            content_type = self.headers.get("Content-Type", "")
            encrypted = content_type.startswith("multipart/encrypted") and (
                f'protocol="{ENCRYPTED_PROTOCOL}"' in content_type
            )
            if body and not encrypted:
                with responder.lock:
                    responder.plaintext_bodies.append(body)
            auth = self.headers.get("Authorization", "")
            scheme, _, token_b64 = auth.partition(" ")
            if scheme.lower() in ("negotiate", "ntlm") and token_b64:
                if self.ntlm is None or self.ntlm.complete:
                    self.ntlm, self.user = None, None
                try:
                    self.ntlm, reply = _ntlm_step(responder, self.ntlm, base64.b64decode(token_b64))
                except (SpnegoError, ValueError):
                    self.ntlm = None
                    with responder.lock:
                        responder.auth_failures += 1
                    self._challenge()
                    return
                if not self.ntlm.complete:
                    self._challenge(reply)
                    return
                self.user = str(self.ntlm.client_principal or "").split("\\")[-1]
                with responder.lock:
                    responder.authenticated_users.append(self.user)
            elif auth:
                # Basic, Kerberos, CredSSP...: not offered by this service.
                self.ntlm, self.user = None, None
                self._challenge()
                return
            if self.user is None or self.ntlm is None:
                self._challenge()
                return
            if not body:
                self._send(200)
                return
            if not encrypted:
                envelope = _fault_envelope(
                    WSManFault(
                        "w:AccessDenied",
                        2150859113,
                        "The WinRM service is configured to refuse unencrypted traffic.",
                    ),
                    f"uuid:{uuid.uuid4()}",
                    responder.hostname,
                )
                self._send(
                    400,
                    envelope.encode(),
                    {"Content-Type": "application/soap+xml;charset=UTF-8"},
                )
                return
            try:
                xml = unwrap_message(self.ntlm, body)
            except (ValueError, SpnegoError, struct.error):
                self._send(400)
                return
            status, envelope = responder.handle(xml, self.user)
            if responder._stopping.is_set():
                self.close_connection = True
            self._send(
                status,
                wrap_message(self.ntlm, envelope.encode("utf-8")),
                {
                    "Content-Type": f'multipart/encrypted;protocol="{ENCRYPTED_PROTOCOL}";'
                    'boundary="Encrypted Boundary"'
                },
            )

    return Handler


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_responder(**kwargs: Any) -> Iterator[WinRMResponder]:
    """A responder for the block (see :class:`WinRMResponder` for the options)."""
    with WinRMResponder(**kwargs) as responder:
        yield responder
