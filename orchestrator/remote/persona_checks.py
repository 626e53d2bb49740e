"""Signing in to a test client as a persona (student or staff test account) and
running an image test plan's checks as that account, over SSH (Macs) or
WinRM (PCs).

A Mac is signed in to with the persona's own user name and password
(:func:`sign_in`), never with the orchestrator's key, so whatever the account
may not do really fails; a PC likewise over WinRM with the persona's NTLM
credentials (:func:`sign_in_pc`), messages encrypted as the adapter pins it.
Each check is one command with its own timeout (:func:`run_check`); its
outcome keeps what the persona saw (exit status and output) so EdTech can tell
the building tech what to fix. On a Mac the commands use only what macOS has
in its base system (``/bin/sh``, ``/bin/bash``'s ``/dev/tcp``, ``test``,
``sudo``); on a PC each check is a Windows PowerShell script
(:func:`command_for` with ``platform="pc"``) sent as ``powershell.exe
-NoProfile -NonInteractive -EncodedCommand``.

The check kinds:

=============  ==========================================  =====================
kind           parameters                                  passes when
=============  ==========================================  =====================
sign_in        none                                        the account signed in
                                                           and is who it says
home_folder    none                                        ``$HOME`` exists and is
                                                           the persona's own
app_present    ``path``; ``start`` (a command), optional;  the path is executable
               ``expect_exit`` (default 0)                 for the persona, and
                                                           ``start`` exits so
app_absent     ``path``                                    not executable for the
                                                           persona (or absent)
reachable      ``host``, ``port``                          a TCP connection opens
                                                           from the client
command        ``command``; ``expect_exit`` (default 0);   exits so, and prints
               ``expect_output`` (a substring), optional   the substring
not_admin      ``command`` (an admin command), optional    it fails (by default
                                                           ``sudo -n true``)
=============  ==========================================  =====================

On a PC: sign_in compares ``whoami`` with the account's name (case aside, a
``DOMAIN\\`` prefix allowed); home_folder tests ``$env:USERPROFILE``; the
app checks use ``Test-Path -LiteralPath`` (visible to the persona, as there
is no execute bit to test); reachable opens a ``System.Net.Sockets.TcpClient``
with its own connect timeout; command and a ``start`` command run as
PowerShell, their exit status that of the last native command (or 1 when a
cmdlet failed); not_admin (by default ``net session``) passes when the admin
command exits non-zero, as ``net session`` does for a non-admin ("System
error 5 has occurred. Access is denied.", exit 2). Paths and hosts are put in
single-quoted PowerShell strings.

Passwords are never in a message, a ``repr`` or an outcome.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Protocol

from orchestrator.errors import AuthenticationFailed, InvalidInput, RemoteError, RemoteTimeout
from orchestrator.remote import ssh, winrm

KINDS = (
    "sign_in",
    "home_folder",
    "app_present",
    "app_absent",
    "reachable",
    "command",
    "not_admin",
)
PLATFORMS = ("mac", "pc")
OUTPUT_KEPT = 2000
"""Characters of a check's output kept in its outcome."""
MUST_FAIL: Final = -1
"""In place of an exit status from :func:`command_for`: any non-zero exit passes."""


class SignInFailed(RemoteError):
    """The persona's account could not sign in (wrong password, no such account)."""

    code = "sign_in_failed"


@dataclass(frozen=True)
class Check:
    """One check of a test plan, as the client runs it."""

    name: str
    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = 30.0


@dataclass(frozen=True)
class CheckOutcome:
    """What one check showed, as the persona saw it."""

    name: str
    persona: str
    passed: bool
    command: str
    exit_code: int | None
    """None when the command did not finish (timed out, connection lost)."""
    output: str
    """stdout then stderr, cut to :data:`OUTPUT_KEPT` characters."""
    message: str
    """One line for a person: what passed, or what was expected and seen."""


class CommandAnswer(Protocol):
    """What a session's ``run`` returns (``ssh.CommandResult``, ``winrm.CommandResult``)."""

    @property
    def exit_code(self) -> int: ...

    @property
    def stdout(self) -> str: ...

    @property
    def stderr(self) -> str: ...


class CheckSession(Protocol):
    """What :func:`run_check` needs of a signed-in session."""

    def run(self, command: str, *, timeout: float) -> CommandAnswer: ...


@dataclass(frozen=True)
class Login:
    """A persona's account on one test client."""

    persona: str
    username: str
    password: str = field(repr=False)


def sign_in(
    address: str, port: int, *, host_key: str, login: Login, timeout: float = 15.0
) -> ssh.PinnedSession:
    """A session as ``login`` on the client, trusting only its pinned key.

    Raises:
        SignInFailed: the account's password was refused ("sign-in failed for
            student test account").
        HostUnreachable, HostKeyChanged, RemoteError: as :func:`ssh.connect`.
    """
    try:
        return ssh.connect(
            address,
            port,
            host_key=host_key,
            username=login.username,
            password=login.password,
            timeout=timeout,
        )
    except AuthenticationFailed:
        raise SignInFailed(
            f"sign-in failed for {login.persona} test account {login.username}",
            host=f"{address}:{port}",
        ) from None


class PCSession:
    """A persona signed in to a PC over WinRM; each :meth:`run` is a PowerShell
    script in its own WinRS shell (NTLM-authenticated as the persona)."""

    def __init__(self, client: winrm.WinRMClient) -> None:
        self._client = client

    def __repr__(self) -> str:
        return f"PCSession({self._client!r})"

    def run(self, command: str, *, timeout: float) -> winrm.CommandResult:
        """Run the PowerShell script ``command``; at most ``timeout`` seconds.

        Raises: RemoteTimeout when it was still running (it is stopped);
            RemoteError and its kinds as :meth:`winrm.WinRMClient.run`.
        """
        return self._client.run_powershell(command, timeout=timeout)

    def close(self) -> None:
        """Nothing stays open between commands (each has its own shell)."""

    def __enter__(self) -> PCSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def sign_in_pc(endpoint: winrm.WinRMEndpoint, login: Login, *, timeout: float = 15.0) -> PCSession:
    """A session as ``login`` on the PC at ``endpoint``, its password proved at
    once by running ``hostname`` as the persona.

    Raises:
        SignInFailed: the account's password was refused ("sign-in failed for
            student test account").
        InvalidInput: the endpoint's settings are not the adapter's pinned ones.
        HostUnreachable, AccessDenied, RemoteTimeout, RemoteError: as
            :meth:`winrm.WinRMClient.run` (AccessDenied: the account may not
            use WinRM, e.g. not in Remote Management Users).
    """
    client = winrm.WinRMClient(endpoint, login.username, login.password)
    try:
        client.run("hostname", timeout=timeout)
    except AuthenticationFailed:
        raise SignInFailed(
            f"sign-in failed for {login.persona} test account {login.username}",
            host=f"{endpoint.address}:{endpoint.port}",
        ) from None
    return PCSession(client)


def ps_quote(text: str) -> str:
    """``text`` as a single-quoted PowerShell string: nothing in it is expanded.

    PowerShell also ends a single-quoted string at the typographic single
    quotes (U+2018-U+201B), so those are doubled like ``'``.
    """
    return "'" + "".join(c * 2 if c in "'\u2018\u2019\u201a\u201b" else c for c in text) + "'"


_PS_PREAMBLE = "$ProgressPreference = 'SilentlyContinue'\n"
"""Keeps progress records (CLIXML on stderr) out of what the persona saw."""


def _ps_status_of(command: str) -> str:
    """PowerShell running ``command`` and exiting with its status: the last
    native command's exit code, or 1 when a cmdlet failed."""
    return (
        "$global:LASTEXITCODE = 0\n"
        f"{command}\n"
        "$failed = -not $?\n"
        "$code = [int]$global:LASTEXITCODE\n"
        "if ($failed -and $code -eq 0) { $code = 1 }\n"
        "exit $code\n"
    )


def _bare_name(username: str) -> str:
    """``stu101`` of ``DISTRICT\\stu101`` or ``stu101@district.example``."""
    return username.rsplit("\\", 1)[-1].split("@", 1)[0]


class _Params:
    """A check's parameters, each read and refused (InvalidInput naming the
    check and the field) when missing or malformed."""

    def __init__(self, check: Check) -> None:
        self.check = check

    def _bad(self, key: str, why: str) -> InvalidInput:
        return InvalidInput(f"check {self.check.name!r}: {why}", field=f"{self.check.name}.{key}")

    def text(self, key: str) -> str:
        value = self.check.params.get(key)
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput(
                f"check {self.check.name!r} ({self.check.kind}) needs {key!r}",
                field=f"{self.check.name}.{key}",
            )
        return value

    def exit_status(self) -> int:
        value = self.check.params.get("expect_exit", 0)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
            raise self._bad("expect_exit", f"expect_exit is an exit status 0-255, not {value!r}")
        return value

    def port(self) -> int:
        port = self.check.params.get("port")
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise self._bad("port", f"port is 1-65535, not {port!r}")
        return port

    def start(self) -> str | None:
        start = self.check.params.get("start")
        if start is not None and (not isinstance(start, str) or not start.strip()):
            raise self._bad("start", "start is a command")
        return start

    def expected_output(self) -> str | None:
        expected = self.check.params.get("expect_output")
        if expected is not None and not isinstance(expected, str):
            raise self._bad("expect_output", "expect_output is text")
        return expected

    def admin_command(self, default: str) -> str:
        admin = self.check.params.get("command", default)
        if not isinstance(admin, str) or not admin.strip():
            raise self._bad("command", "command is an admin command")
        return admin


def command_for(check: Check, username: str, platform: str = "mac") -> tuple[str, int, str | None]:
    """(the command, the exit status it must end with or :data:`MUST_FAIL`, a
    substring its output must hold or None) for ``check`` on ``platform``: a
    shell command on a Mac, a PowerShell script on a PC.

    Raises: InvalidInput for an unknown kind or platform, or a missing or
        malformed parameter.
    """
    if platform not in PLATFORMS:
        raise InvalidInput(
            f"no persona checks for platform {platform!r} (one of {', '.join(PLATFORMS)})",
            field="platform",
        )
    p = _Params(check)
    if platform == "pc":
        script, want_exit, want_output = _powershell_for(check, username, p)
        try:
            winrm.powershell_command(script)
        except InvalidInput:
            raise InvalidInput(
                f"check {check.name!r} is too long to send to a PC as one PowerShell script",
                field=f"{check.name}.command",
            ) from None
        return script, want_exit, want_output
    if check.kind == "sign_in":
        return "id -un", 0, username
    if check.kind == "home_folder":
        return 'test -d "$HOME" && test -O "$HOME" && echo "$HOME"', 0, None
    if check.kind == "app_present":
        path = shlex.quote(p.text("path"))
        start = p.start()
        if start is None:
            return f"test -x {path}", 0, None
        return f"test -x {path} && {start}", p.exit_status(), None
    if check.kind == "app_absent":
        return f"! test -x {shlex.quote(p.text('path'))}", 0, None
    if check.kind == "reachable":
        host, port = p.text("host"), p.port()
        target = shlex.quote(f"/dev/tcp/{host}/{port}")
        return f"/bin/bash -c {shlex.quote(f'exec 3<>{target}')}", 0, None
    if check.kind == "command":
        return p.text("command"), p.exit_status(), p.expected_output()
    if check.kind == "not_admin":
        return f"! {p.admin_command('sudo -n true')}", 0, None
    raise _unknown_kind(check)


def _unknown_kind(check: Check) -> InvalidInput:
    return InvalidInput(
        f"check {check.name!r}: unknown kind {check.kind!r} (one of {', '.join(KINDS)})",
        field=f"{check.name}.kind",
    )


def _powershell_for(check: Check, username: str, p: _Params) -> tuple[str, int, str | None]:
    """The PowerShell script of :func:`command_for` on a PC."""
    if check.kind == "sign_in":
        name = ps_quote(_bare_name(username))
        return (
            _PS_PREAMBLE + '$me = "$(whoami)".Trim()\n'
            "Write-Output $me\n"
            f"if ($me.Split('\\')[-1] -ieq {name}) {{ exit 0 }}\n"
            "exit 1\n",
            0,
            None,
        )
    if check.kind == "home_folder":
        return (
            _PS_PREAMBLE + "$profileDir = $env:USERPROFILE\n"
            "Write-Output $profileDir\n"
            "if ($profileDir -and (Test-Path -LiteralPath $profileDir -PathType Container))"
            " { exit 0 }\n"
            "exit 1\n",
            0,
            None,
        )
    if check.kind == "app_present":
        path = ps_quote(p.text("path"))
        start = p.start()
        script = (
            _PS_PREAMBLE + f"if (-not (Test-Path -LiteralPath {path})) "
            f"{{ Write-Output ('not found: ' + {path}); exit 1 }}\n"
        )
        if start is None:
            return script + "exit 0\n", 0, None
        return script + _ps_status_of(start), p.exit_status(), None
    if check.kind == "app_absent":
        path = ps_quote(p.text("path"))
        return (
            _PS_PREAMBLE + f"if (Test-Path -LiteralPath {path}) "
            f"{{ Write-Output ('found: ' + {path}); exit 1 }}\n"
            "exit 0\n",
            0,
            None,
        )
    if check.kind == "reachable":
        host, port = p.text("host"), p.port()
        # Its own connect timeout, inside the check's, so an unanswered port is
        # "no connection", not a check stopped at its timeout.
        wait_ms = int(max(1.0, min(10.0, check.timeout / 2)) * 1000)
        where = ps_quote(f"{host}:{port}")
        return (
            _PS_PREAMBLE + "$client = New-Object System.Net.Sockets.TcpClient\n"
            "try {\n"
            f"    $connecting = $client.ConnectAsync({ps_quote(host)}, {port})\n"
            f"    if ($connecting.Wait({wait_ms})) {{ exit 0 }}\n"
            f"    Write-Output ('no connection to ' + {where} + ' within {wait_ms / 1000:g}s')\n"
            "    exit 1\n"
            "} catch {\n"
            "    Write-Output $_.Exception.GetBaseException().Message\n"
            "    exit 1\n"
            "} finally {\n"
            "    $client.Close()\n"
            "}\n",
            0,
            None,
        )
    if check.kind == "command":
        return _PS_PREAMBLE + _ps_status_of(p.text("command")), p.exit_status(), p.expected_output()
    if check.kind == "not_admin":
        return _PS_PREAMBLE + _ps_status_of(p.admin_command("net session")), MUST_FAIL, None
    raise _unknown_kind(check)


def run_check(
    session: CheckSession, check: Check, login: Login, *, platform: str = "mac"
) -> CheckOutcome:
    """Run ``check`` in ``session`` (signed in as ``login``: SSH on a Mac,
    :class:`PCSession` on a PC); never raises for what the client shows: a
    failure, a timeout or a lost connection is a failed outcome with why.
    InvalidInput for a malformed check or an unknown platform."""
    command, want_exit, want_output = command_for(check, login.username, platform)

    def outcome(passed: bool, code: int | None, output: str, message: str) -> CheckOutcome:
        return CheckOutcome(
            check.name, login.persona, passed, command, code, output[:OUTPUT_KEPT], message
        )

    try:
        result = session.run(command, timeout=check.timeout)
    except RemoteTimeout:
        return outcome(False, None, "", f"no answer within {check.timeout:g}s: stopped")
    except RemoteError as exc:
        return outcome(False, None, "", f"the connection failed: {exc}")
    output = "\n".join(part for part in (result.stdout, result.stderr) if part)
    if want_exit == MUST_FAIL:
        if result.exit_code == 0:
            return outcome(False, 0, output, "exited 0: it ran, expected it to be refused")
        return outcome(True, result.exit_code, output, "passed")
    if result.exit_code != want_exit:
        return outcome(
            False,
            result.exit_code,
            output,
            f"exited {result.exit_code}, expected {want_exit}",
        )
    if want_output is not None and want_output not in result.stdout:
        return outcome(
            False, result.exit_code, output, f"the output does not contain {want_output!r}"
        )
    return outcome(True, result.exit_code, output, "passed")


# ---------------------------------------------------------------------------
# One persona's whole pass over a test client
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The test client a persona signs in to."""

    hostname: str
    platform: str
    """``mac`` (SSH with the persona's password) or ``pc`` (WinRM as the persona)."""
    address: str
    port: int
    host_key: str | None = None
    """The pinned SSH host key (Macs)."""
    winrm_scheme: str = "http"
    winrm_ca_file: str | None = None


@dataclass(frozen=True)
class PersonaResult:
    """What one persona's pass showed: whether it signed in, and every check's outcome."""

    persona: str
    username: str
    signed_in: bool
    message: str
    """Empty when signed in; else why not ("sign-in failed for student test account …")."""
    outcomes: tuple[CheckOutcome, ...]


class PersonaChecker(Protocol):
    """Signs in to a test client as one persona and runs its checks there."""

    def run(
        self,
        target: Target,
        login: Login,
        checks: Sequence[Check],
        on_outcome: Callable[[CheckOutcome], None] = ...,
    ) -> PersonaResult: ...


def _not_run(checks: Sequence[Check], login: Login, why: str) -> tuple[CheckOutcome, ...]:
    return tuple(
        CheckOutcome(
            c.name,
            login.persona,
            False,
            "",
            None,
            "",
            why if c.kind == "sign_in" else f"not run: {why}",
        )
        for c in checks
    )


class RemotePersonaChecker:
    """The real checker: SSH with the persona's password for Macs, WinRM
    (NTLM as the persona, messages encrypted) for PCs."""

    def __init__(self, *, connect_timeout: float = 15.0) -> None:
        self.connect_timeout = connect_timeout

    def run(
        self,
        target: Target,
        login: Login,
        checks: Sequence[Check],
        on_outcome: Callable[[CheckOutcome], None] = lambda _o: None,
    ) -> PersonaResult:
        """Never raises for what the client does (a refused password, an unreachable
        client): the result says so and every check is a failed outcome.

        Raises: InvalidInput for a malformed check, an unknown platform or a
            PC's WinRM settings other than the pinned ones.
        """
        for c in checks:  # a malformed check is the plan's fault: refuse before signing in
            command_for(c, login.username, target.platform)
        session: ssh.PinnedSession | PCSession
        try:
            if target.platform == "pc":
                session = sign_in_pc(
                    winrm.WinRMEndpoint(
                        target.address,
                        target.port,
                        scheme=target.winrm_scheme,
                        ca_file=target.winrm_ca_file,
                    ),
                    login,
                    timeout=self.connect_timeout,
                )
            else:
                session = sign_in(
                    target.address,
                    target.port,
                    host_key=target.host_key or "",
                    login=login,
                    timeout=self.connect_timeout,
                )
        except SignInFailed:
            # The result names the account, not the address (the caller knows the client).
            why = f"sign-in failed for {login.persona} test account {login.username}"
            return self._failed(login, checks, why, on_outcome)
        except RemoteError as exc:
            why = f"could not sign in to {target.hostname} as {login.persona}: {exc}"
            return self._failed(login, checks, why, on_outcome)
        outcomes = []
        with session:
            for c in checks:
                o = run_check(session, c, login, platform=target.platform)
                outcomes.append(o)
                on_outcome(o)
        return PersonaResult(login.persona, login.username, True, "", tuple(outcomes))

    @staticmethod
    def _failed(
        login: Login,
        checks: Sequence[Check],
        why: str,
        on_outcome: Callable[[CheckOutcome], None],
    ) -> PersonaResult:
        outcomes = _not_run(checks, login, why)
        for o in outcomes:
            on_outcome(o)
        return PersonaResult(login.persona, login.username, False, why, outcomes)
