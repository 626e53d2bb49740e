"""The orchestrator's own SSH (paramiko): host key fetches, pinned sessions,
commands and SFTP.

Ansible does the playbook work; this module is for what the orchestrator
itself needs: learning the key a Mac offers (:func:`fetch_host_key`, no
authentication attempted), and sessions that trust one key only.

A pinned session (:func:`connect`) trusts exactly the key line it is given:
no ``~/.ssh/known_hosts``, no system host keys, no SSH agent, no key files
looked for. Any other key (another key of the same type, or a key of another
type) is refused before authentication starts. It logs in with the private
key text or the password it is handed, nothing else.

paramiko and socket errors are translated here, once:

=====================================================  =========================
a key other than the pinned one                        :class:`HostKeyChanged`
  (names both fingerprints)
the key or password rejected                           :class:`AuthenticationFailed`
connection refused, no route, no such name,            :class:`HostUnreachable`
  connect timeout
a command still running after its timeout              :class:`RemoteTimeout`
SFTP permission denied                                 :class:`AccessDenied`
anything else (not SSH, connection lost, SFTP error)   :class:`RemoteError`
=====================================================  =========================

Messages name the host; a password or key text is never in a message or a
``repr``.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import io
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from orchestrator.errors import (
    AccessDenied,
    AuthenticationFailed,
    HostKeyChanged,
    HostUnreachable,
    InvalidInput,
    RemoteError,
    RemoteTimeout,
)

if TYPE_CHECKING:
    import paramiko  # no stubs (see pyproject): typed as Any

KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
)
"""Host key algorithms asked for, in order: ed25519 whenever the host has one."""

_READ = 32768

# paramiko logs a failed handshake at ERROR with a traceback; with no logging set
# up, Python would print it to stderr. The translated error says what happened.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


# ---------------------------------------------------------------------------
# Key lines and fingerprints
# ---------------------------------------------------------------------------


def _split_key_line(key_line: str) -> tuple[str, bytes]:
    """(type, blob) of 'ssh-ed25519 AAAA… [comment]'.

    Raises:
        InvalidInput: not an OpenSSH public key line.
    """
    parts = key_line.split() if isinstance(key_line, str) else []
    if len(parts) < 2:
        raise InvalidInput("not an SSH public key line ('ssh-ed25519 AAAA…')", field="host_key")
    kind, data = parts[0], parts[1]
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"the {kind} key is not base64", field="host_key") from None
    # The blob starts with its own type name (a uint32 length, then the name).
    name_len = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
    if name_len != len(kind) or blob[4 : 4 + name_len] != kind.encode():
        raise InvalidInput(f"the key's data is not a {kind} key", field="host_key")
    return kind, blob


def normalize_key_line(key_line: str) -> str:
    """'type base64' without a comment or extra spaces.

    Raises:
        InvalidInput: not an OpenSSH public key line.
    """
    kind, blob = _split_key_line(key_line)
    return f"{kind} {base64.b64encode(blob).decode()}"


def same_key(a: str, b: str) -> bool:
    """Whether two key lines are the same key (comments ignored)."""
    return _split_key_line(a) == _split_key_line(b)


def fingerprint(key_line: str) -> str:
    """The key's fingerprint as ``ssh-keygen -lf`` prints it: 'SHA256:…'.

    Raises:
        InvalidInput: not an OpenSSH public key line.
    """
    _, blob = _split_key_line(key_line)
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def _key_line(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


def _where(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"{host}:{port}"


def _check_address(address: str, port: int) -> None:
    if not isinstance(address, str) or not address or any(c.isspace() for c in address):
        raise InvalidInput(f"{address!r} is not a host address", field="address")
    if not isinstance(port, int) or not 0 < port < 65536:
        raise InvalidInput(f"port {port!r} is out of range", field="port")


# ---------------------------------------------------------------------------
# Connecting
# ---------------------------------------------------------------------------


def _open_socket(address: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection, or the reason there is none as :class:`HostUnreachable`."""
    where = _where(address, port)
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except socket.gaierror as exc:
        raise HostUnreachable(f"cannot resolve the name {address!r}", host=where) from exc
    except TimeoutError as exc:
        raise HostUnreachable(f"timed out connecting after {timeout:g}s", host=where) from exc
    except ConnectionRefusedError as exc:
        raise HostUnreachable("connection refused", host=where) from exc
    except OSError as exc:
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN):
            raise HostUnreachable("no route to the host", host=where) from exc
        raise HostUnreachable(
            f"cannot connect ({exc.strerror or type(exc).__name__})", host=where
        ) from exc
    # SFTP's small requests (close, rename) must not wait out Nagle against the
    # host's delayed ACK: without this a chunk written to a point cost ~40 ms.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def tcp_connect(address: str, port: int, *, timeout: float) -> None:
    """Whether something accepts TCP connections at ``address:port`` (WinRM ports too).

    Raises:
        HostUnreachable: refused, no route, no such name, or timed out.
        InvalidInput: not a host address or port.
    """
    _check_address(address, port)
    _open_socket(address, port, timeout).close()


@contextmanager
def _translated(address: str, port: int, *, timeout: float) -> Iterator[None]:
    """paramiko's and the socket's exceptions, as the orchestrator's."""
    import paramiko

    where = _where(address, port)
    try:
        yield
    except paramiko.BadHostKeyException as exc:
        offered, pinned = fingerprint(_key_line(exc.key)), fingerprint(_key_line(exc.expected_key))
        raise HostKeyChanged(
            f"offered host key {offered}, not the pinned {pinned}: refused before "
            "logging in (if the machine was replaced or reinstalled, re-pin its key)",
            host=where,
        ) from exc
    except paramiko.AuthenticationException as exc:
        raise AuthenticationFailed(
            "the login was rejected (wrong key or password?)", host=where
        ) from exc
    except paramiko.SSHException as exc:
        text = str(exc)
        if "banner" in text.lower():
            raise RemoteError(f"no SSH server answered within {timeout:g}s", host=where) from exc
        raise RemoteError(f"SSH failed ({type(exc).__name__})", host=where) from exc
    except (EOFError, ConnectionResetError, BrokenPipeError) as exc:
        raise RemoteError("the host closed the connection", host=where) from exc
    except TimeoutError as exc:
        raise RemoteTimeout(f"no answer within {timeout:g}s", host=where) from exc


def _security_options(transport: paramiko.Transport, key_types: tuple[str, ...]) -> None:
    options = transport.get_security_options()
    available = set(options.key_types)
    options.key_types = tuple(k for k in key_types if k in available)


def fetch_host_key(address: str, port: int = 22, *, timeout: float = 10.0) -> str:
    """The key line ('ssh-ed25519 AAAA…') the host offers: its ed25519 key if it has
    one, else the first of :data:`KEY_TYPES` it has. No authentication is attempted.

    Raises:
        HostUnreachable: refused, no route, no such name, or timed out connecting.
        RemoteError: the peer is not an SSH server, or closed the connection.
        InvalidInput: not a host address or port.
    """
    import paramiko

    _check_address(address, port)
    sock = _open_socket(address, port, timeout)
    transport: paramiko.Transport | None = None
    try:
        with _translated(address, port, timeout=timeout):
            transport = paramiko.Transport(sock)
            transport.banner_timeout = timeout
            _security_options(transport, KEY_TYPES)
            transport.start_client(timeout=timeout)
            return _key_line(transport.get_remote_server_key())
    finally:
        if transport is not None:
            transport.close()
        sock.close()


class _RefuseUnpinned:
    """paramiko's missing-host-key policy: there is only ever the pinned key."""

    def missing_host_key(self, client: object, hostname: str, key: paramiko.PKey) -> None:
        raise _Unpinned(key)


class _Unpinned(Exception):
    def __init__(self, key: paramiko.PKey) -> None:
        super().__init__("unpinned host key")
        self.key = key


def _private_key(text: str) -> paramiko.PKey:
    """Raises: InvalidInput (never quoting the text)."""
    import paramiko

    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text))
        except paramiko.PasswordRequiredException:
            raise InvalidInput(
                "the SSH private key is encrypted; the orchestrator needs an unencrypted key",
                field="ssh-key",
            ) from None
        except (paramiko.SSHException, ValueError, TypeError, IndexError):
            continue
    raise InvalidInput(
        "not an SSH private key (expected the contents of a file like id_ed25519)",
        field="ssh-key",
    )


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    """-1 when the command ended without an exit status (e.g. killed by a signal)."""
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class Session(Protocol):
    """What services use of an SSH session (the real one, or :class:`FakeSession`)."""

    def run(self, command: str, *, timeout: float) -> CommandResult: ...

    def put(self, local: Path, remote: str) -> None: ...

    def get(self, remote: str, local: Path) -> None: ...

    def close(self) -> None: ...


class HostKeyFetcher(Protocol):
    """:func:`fetch_host_key`, or :meth:`FakeHosts.fetch_host_key`."""

    def __call__(self, address: str, port: int, *, timeout: float) -> str: ...


class PortCheck(Protocol):
    """:func:`tcp_connect`, or :meth:`FakeHosts.tcp_connect`."""

    def __call__(self, address: str, port: int, *, timeout: float) -> None: ...


class PinnedSession:
    """An SSH session to one host that trusts one host key. Use :func:`connect`."""

    def __init__(
        self,
        client: paramiko.SSHClient,
        address: str,
        port: int,
        username: str,
        *,
        timeout: float,
    ) -> None:
        self._client = client
        self.address = address
        self.port = port
        self.username = username
        self.timeout = timeout
        """How long SFTP waits for an answer."""
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.Lock()
        self._known_dirs: set[str] = set()
        """Remote folders known to exist (made or seen by :meth:`write_atomic`)."""

    def __repr__(self) -> str:
        return (
            f"PinnedSession({_where(self.address, self.port)}, username={self.username!r}, "
            "secret='********')"
        )

    def __enter__(self) -> PinnedSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
            self._sftp = None
        self._client.close()

    def run(self, command: str, *, timeout: float) -> CommandResult:
        """Run ``command`` (no terminal) and wait at most ``timeout`` seconds for it.

        Raises:
            RemoteTimeout: still running after ``timeout`` (its channel is closed;
                the session stays usable).
            RemoteError: the connection was lost.
        """
        program = command.split(maxsplit=1)[0] if command.strip() else "''"
        where = _where(self.address, self.port)
        with _translated(self.address, self.port, timeout=timeout):
            channel, _ = self._open_channel(timeout)
            try:
                channel.exec_command(command)
                out, err = bytearray(), bytearray()
                deadline = time.monotonic() + timeout
                while True:
                    drained = False
                    while channel.recv_ready():
                        out += channel.recv(_READ)
                        drained = True
                    while channel.recv_stderr_ready():
                        err += channel.recv_stderr(_READ)
                        drained = True
                    if channel.exit_status_ready() and (channel.eof_received or channel.closed):
                        if not (channel.recv_ready() or channel.recv_stderr_ready()):
                            break
                        continue
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise RemoteTimeout(
                            f"{program} was still running after {timeout:g}s",
                            host=where,
                        )
                    if not drained:
                        select.select([channel], [], [], min(left, 0.5))
                code = channel.recv_exit_status()
            finally:
                channel.close()
        return CommandResult(
            code, out.decode("utf-8", errors="replace"), err.decode("utf-8", errors="replace")
        )

    def feed(
        self,
        command: str,
        pieces: Iterable[bytes],
        *,
        on_line: Callable[[str], None],
        timeout: float,
    ) -> CommandResult:
        """Run ``command`` with ``pieces`` written to its standard input one after
        the other, then end of input; each line of its standard output is handed to
        ``on_line`` as it arrives, and its exit code and standard error returned.

        ``timeout`` bounds each wait on the host (a piece accepted, a line, the
        exit), not the whole. A command that exits before reading everything ends
        the feeding: its exit code and standard error say why.

        Raises: RemoteTimeout (the host stopped reading or answering), RemoteError
        (the connection was lost).
        """
        where = _where(self.address, self.port)
        with _translated(self.address, self.port, timeout=timeout):
            channel, transport = self._open_channel(timeout)
            try:
                channel.settimeout(timeout)
                channel.exec_command(command)
                out, err = bytearray(), bytearray()

                def drain() -> None:
                    while channel.recv_ready():
                        out.extend(channel.recv(_READ))
                    while channel.recv_stderr_ready():
                        err.extend(channel.recv_stderr(_READ))
                    *lines, rest = out.split(b"\n")
                    out[:] = rest
                    for line in lines:
                        on_line(line.decode("utf-8", errors="replace"))

                for piece in pieces:
                    if channel.exit_status_ready() or channel.closed:
                        break
                    try:
                        channel.sendall(piece)
                    except TimeoutError:
                        raise
                    except OSError:  # the command closed its input: its exit says why
                        if not transport.is_active():
                            raise RemoteError(
                                "the host closed the connection", host=where
                            ) from None
                        break
                    drain()
                else:
                    channel.shutdown_write()
                deadline = time.monotonic() + timeout
                while not (channel.exit_status_ready() and channel.eof_received):
                    drain()
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise RemoteTimeout(
                            f"no answer within {timeout:g}s after the input", host=where
                        )
                    select.select([channel], [], [], min(left, 0.5))
                while channel.recv_ready() or channel.recv_stderr_ready():
                    drain()
                if out:
                    out.extend(b"\n")
                    drain()
                code = channel.recv_exit_status()
            finally:
                channel.close()
        return CommandResult(code, "", err.decode("utf-8", errors="replace"))

    def _open_channel(self, timeout: float) -> tuple[paramiko.Channel, paramiko.Transport]:
        """A new channel for one command, and the transport it runs on.

        Raises: InvalidInput (a timeout that is not positive), RemoteError (closed)."""
        if timeout <= 0:
            raise InvalidInput("a command timeout is a positive number of seconds", field="timeout")
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise RemoteError("the session is closed", host=_where(self.address, self.port))
        return transport.open_session(timeout=timeout), transport

    def _sftp_client(self) -> paramiko.SFTPClient:
        with self._lock:
            if self._sftp is None:
                self._sftp = self._client.open_sftp()
                channel = self._sftp.get_channel()
                if channel is not None:
                    channel.settimeout(self.timeout)
            return self._sftp

    def put(self, local: Path, remote: str) -> None:
        """Copy the local file to ``remote`` on the host (byte for byte).

        Raises:
            InvalidInput: no local file. AccessDenied: the host refused the write.
            RemoteError: any other SFTP failure.
        """
        local = Path(local)
        if not local.is_file():
            raise InvalidInput(f"no local file {local}", field="local")
        with self._translated_sftp(remote):
            self._sftp_client().put(str(local), remote)

    def get(self, remote: str, local: Path) -> None:
        """Copy ``remote`` from the host to the local file (byte for byte). The
        file appears whole or not at all (a temporary file, renamed when complete).

        Raises:
            AccessDenied: the host refused the read. RemoteError: no such remote
                file, or any other SFTP failure.
        """
        local = Path(local)
        partial = local.with_name(f".{local.name}.part-{os.getpid()}-{threading.get_ident()}")
        try:
            with self._translated_sftp(remote):
                self._sftp_client().get(remote, str(partial))
            partial.replace(local)
        finally:
            partial.unlink(missing_ok=True)

    def write_atomic(self, remote: str, data: bytes | memoryview) -> None:
        """Write ``data`` to ``remote`` so that it appears whole or not at all: into
        a temporary file beside it, then renamed over it (POSIX rename). Missing
        parent folders are made.

        Raises: AccessDenied, RemoteError.
        """
        path = PurePosixPath(remote)
        tmp = str(path.with_name(f".tmp-{path.name}"))
        with self._translated_sftp(remote):
            sftp = self._sftp_client()
            self._make_dirs(sftp, path.parent)
            with sftp.open(tmp, "wb") as f:
                f.set_pipelined(True)
                f.write(bytes(data))
            sftp.posix_rename(tmp, remote)

    def list_names(self, remote: str) -> list[str]:
        """The names in the remote folder; none when it does not exist.

        Raises: AccessDenied, RemoteError.
        """
        with self._translated_sftp(remote):
            try:
                return sorted(self._sftp_client().listdir(remote))
            except FileNotFoundError:
                return []

    def read(self, remote: str, *, limit: int) -> bytes:
        """The remote file's bytes, refused past ``limit`` bytes.

        Raises: AccessDenied, RemoteError (no such file, too large, any other failure).
        """
        with self._translated_sftp(remote), self._sftp_client().open(remote, "rb") as f:
            f.prefetch()
            data = f.read(limit + 1)
        if len(data) > limit:
            raise RemoteError(
                f"{remote} is larger than the {limit} bytes expected",
                host=_where(self.address, self.port),
            )
        return data

    def remove(self, remote: str) -> None:
        """Remove the remote file; one already gone is fine.

        Raises: AccessDenied, RemoteError.
        """
        with self._translated_sftp(remote), suppress(FileNotFoundError):
            self._sftp_client().remove(remote)

    def _make_dirs(self, sftp: paramiko.SFTPClient, folder: PurePosixPath) -> None:
        known = self._known_dirs
        missing: list[PurePosixPath] = []
        for d in (folder, *folder.parents):
            if str(d) in known or str(d) in ("/", "."):
                break
            try:
                sftp.stat(str(d))
            except FileNotFoundError:
                missing.append(d)
                continue
            break
        for d in reversed(missing):
            try:
                sftp.mkdir(str(d))
            except OSError:
                sftp.stat(str(d))  # made meanwhile by another writer: fine if it is there
        known.update(str(d) for d in (folder, *folder.parents))

    @contextmanager
    def _translated_sftp(self, remote: str) -> Iterator[None]:
        where, path = _where(self.address, self.port), PurePosixPath(remote)
        with _translated(self.address, self.port, timeout=self.timeout):
            try:
                yield
            except PermissionError as exc:
                raise AccessDenied(
                    f"{self.username!r} may not do that to {path}", host=where
                ) from exc
            except FileNotFoundError as exc:
                raise RemoteError(f"no such file {path}", host=where) from exc
            except OSError as exc:
                raise RemoteError(
                    f"SFTP failed on {path} ({exc.strerror or type(exc).__name__})",
                    host=where,
                ) from exc


def connect(
    address: str,
    port: int = 22,
    *,
    host_key: str,
    username: str,
    private_key: str | None = None,
    password: str | None = None,
    timeout: float = 10.0,
) -> PinnedSession:
    """Log in to ``address:port``, trusting only ``host_key``, with the private key
    text or the password (exactly one of them).

    Raises:
        InvalidInput: no pinned key, not exactly one secret, a key that is not
            a private key, not a host address.
        HostKeyChanged: the host offered another key (nothing was sent to log in).
        AuthenticationFailed: the key or password was rejected.
        HostUnreachable: refused, no route, no such name, or timed out connecting.
        RemoteError: the peer is not an SSH server, or closed the connection.
    """
    import paramiko

    _check_address(address, port)
    if not host_key:
        raise InvalidInput(
            f"{address} has no pinned host key: probe it first ('orchestrator clients probe')",
            field="host_key",
        )
    pinned_line = normalize_key_line(host_key)
    if not username:
        raise InvalidInput("an SSH user name is required", field="username")
    if (private_key is None) == (password is None):
        raise InvalidInput("log in with a private key or a password (one of them)", field="login")
    pkey = _private_key(private_key) if private_key is not None else None
    kind, blob = _split_key_line(pinned_line)
    pinned = paramiko.PKey.from_type_string(kind, blob)

    client = paramiko.SSHClient()
    # Only the pinned key: nothing loaded from ~/.ssh/known_hosts or the system's files.
    entry = address if port == 22 else f"[{address}]:{port}"
    client.get_host_keys().add(entry, pinned.get_name(), pinned)
    client.set_missing_host_key_policy(_RefuseUnpinned())
    sock = _open_socket(address, port, timeout)
    try:
        with _translated(address, port, timeout=timeout):
            try:
                client.connect(
                    address,
                    port,
                    username=username,
                    pkey=pkey,
                    password=password,
                    sock=sock,
                    timeout=timeout,
                    banner_timeout=timeout,
                    auth_timeout=timeout,
                    channel_timeout=timeout,
                    allow_agent=False,
                    look_for_keys=False,
                )
            except _Unpinned as exc:
                raise paramiko.BadHostKeyException(address, exc.key, pinned) from None
    except BaseException:
        client.close()
        sock.close()
        raise
    return PinnedSession(client, address, port, username, timeout=timeout)


# ---------------------------------------------------------------------------
# Fakes for unit tests
# ---------------------------------------------------------------------------


@dataclass
class FakeSession:
    """A :class:`Session` for unit tests: scripted results, files kept in memory."""

    results: Mapping[str, CommandResult] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    closed: bool = False

    def run(self, command: str, *, timeout: float) -> CommandResult:
        self.commands.append(command)
        return self.results.get(command, CommandResult(0, "", ""))

    def put(self, local: Path, remote: str) -> None:
        self.files[remote] = Path(local).read_bytes()

    def get(self, remote: str, local: Path) -> None:
        if remote not in self.files:
            raise RemoteError(f"no such file {remote}", host="fake")
        Path(local).write_bytes(self.files[remote])

    def close(self) -> None:
        self.closed = True


class FakeHosts:
    """Hosts for unit tests, by ``(address, port)``: the key each offers, or the
    error reaching it raises. Unknown hosts are unreachable. Thread-safe, since
    probes run in parallel; ``calls`` records every contact."""

    def __init__(
        self,
        keys: Mapping[tuple[str, int], str] | None = None,
        *,
        down: Mapping[tuple[str, int], Exception] | None = None,
        open_ports: set[tuple[str, int]] | None = None,
        on_call: Callable[[str, int], None] | None = None,
    ) -> None:
        self.keys = dict(keys or {})
        self.down = dict(down or {})
        self.open_ports = set(open_ports or ())
        self.on_call = on_call
        self.calls: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()

    def _contact(self, what: str, address: str, port: int) -> None:
        with self._lock:
            self.calls.append((what, address, port))
        if self.on_call is not None:
            self.on_call(address, port)
        error = self.down.get((address, port))
        if error is not None:
            raise error

    def fetch_host_key(self, address: str, port: int, *, timeout: float) -> str:
        self._contact("ssh", address, port)
        key = self.keys.get((address, port))
        if key is None:
            raise HostUnreachable("connection refused", host=_where(address, port))
        return key

    def tcp_connect(self, address: str, port: int, *, timeout: float) -> None:
        self._contact("tcp", address, port)
        if (address, port) not in self.open_ports and (address, port) not in self.keys:
            raise HostUnreachable("connection refused", host=_where(address, port))
