"""Signing in to a test client as a persona (student or staff test account) and
running an image test plan's checks as that account, over SSH.

A Mac is signed in to with the persona's own user name and password
(:func:`sign_in`), never with the orchestrator's key, so whatever the account
may not do really fails. Each check is one shell command with its own timeout
(:func:`run_check`); its outcome keeps what the persona saw (exit status and
output) so EdTech can tell the building tech what to fix. The commands use
only what macOS has in its base system (``/bin/sh``, ``/bin/bash``'s
``/dev/tcp``, ``test``, ``sudo``).

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

Passwords are never in a message, a ``repr`` or an outcome.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from orchestrator.errors import AuthenticationFailed, InvalidInput, RemoteError, RemoteTimeout
from orchestrator.remote import ssh

KINDS = (
    "sign_in",
    "home_folder",
    "app_present",
    "app_absent",
    "reachable",
    "command",
    "not_admin",
)
OUTPUT_KEPT = 2000
"""Characters of a check's output kept in its outcome."""


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


def command_for(check: Check, username: str) -> tuple[str, int, str | None]:
    """(the shell command, the exit status it must end with, a substring its
    output must hold or None) for ``check``.

    Raises: InvalidInput for an unknown kind or a missing or malformed parameter.
    """
    p = check.params

    def text(key: str) -> str:
        value = p.get(key)
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput(
                f"check {check.name!r} ({check.kind}) needs {key!r}", field=f"{check.name}.{key}"
            )
        return value

    def exit_status() -> int:
        value = p.get("expect_exit", 0)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
            raise InvalidInput(
                f"check {check.name!r}: expect_exit is an exit status 0-255, not {value!r}",
                field=f"{check.name}.expect_exit",
            )
        return value

    if check.kind == "sign_in":
        return "id -un", 0, username
    if check.kind == "home_folder":
        return 'test -d "$HOME" && test -O "$HOME" && echo "$HOME"', 0, None
    if check.kind == "app_present":
        path = shlex.quote(text("path"))
        start = p.get("start")
        if start is None:
            return f"test -x {path}", 0, None
        if not isinstance(start, str) or not start.strip():
            raise InvalidInput(
                f"check {check.name!r}: start is a command", field=f"{check.name}.start"
            )
        return f"test -x {path} && {start}", exit_status(), None
    if check.kind == "app_absent":
        return f"! test -x {shlex.quote(text('path'))}", 0, None
    if check.kind == "reachable":
        host, port = text("host"), p.get("port")
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise InvalidInput(
                f"check {check.name!r}: port is 1-65535, not {port!r}", field=f"{check.name}.port"
            )
        target = shlex.quote(f"/dev/tcp/{host}/{port}")
        return f"/bin/bash -c {shlex.quote(f'exec 3<>{target}')}", 0, None
    if check.kind == "command":
        expected = p.get("expect_output")
        if expected is not None and not isinstance(expected, str):
            raise InvalidInput(
                f"check {check.name!r}: expect_output is text", field=f"{check.name}.expect_output"
            )
        return text("command"), exit_status(), expected
    if check.kind == "not_admin":
        admin = p.get("command", "sudo -n true")
        if not isinstance(admin, str) or not admin.strip():
            raise InvalidInput(
                f"check {check.name!r}: command is an admin command", field=f"{check.name}.command"
            )
        return f"! {admin}", 0, None
    raise InvalidInput(
        f"check {check.name!r}: unknown kind {check.kind!r} (one of {', '.join(KINDS)})",
        field=f"{check.name}.kind",
    )


def run_check(
    session: ssh.Session, check: Check, login: Login, *, platform: str = "mac"
) -> CheckOutcome:
    """Run ``check`` in ``session`` (signed in as ``login``); never raises for
    what the client shows: a failure, a timeout or a lost connection is a
    failed outcome with why. InvalidInput for a malformed check."""
    if platform != "mac":
        raise InvalidInput(f"no persona checks for platform {platform!r} yet", field="platform")
    command, want_exit, want_output = command_for(check, login.username)

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
    """The real checker: SSH with the persona's password for Macs."""

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

        Raises: InvalidInput for a malformed check or an unknown platform.
        """
        for c in checks:  # a malformed check is the plan's fault: refuse before signing in
            command_for(c, login.username)
        if target.platform != "mac":
            raise InvalidInput(
                f"no persona checks for platform {target.platform!r} yet", field="platform"
            )
        try:
            session = sign_in(
                target.address,
                target.port,
                host_key=target.host_key or "",
                login=login,
                timeout=self.connect_timeout,
            )
        except SignInFailed as exc:
            return self._failed(login, checks, str(exc), on_outcome)
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
