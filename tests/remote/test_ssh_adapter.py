"""The orchestrator's own SSH (orchestrator/remote/ssh.py) against real sshd
hosts on loopback: host key fetches, pinned sessions, commands, SFTP, and
every failure translated into the orchestrator's errors.

The shared hosts are only read from; tests that need a clean sshd log or a
changed host key start hosts of their own."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from orchestrator.errors import (
    AccessDenied,
    AuthenticationFailed,
    HostKeyChanged,
    HostUnreachable,
    InvalidInput,
    RemoteError,
    RemoteTimeout,
)
from orchestrator.remote import ssh
from tests.support.fixtures import ssh_hosts  # noqa: F401  (fixture)
from tests.support.sshd import SSHHost, restart_with_new_host_key, start_hosts


@pytest.fixture(scope="module")
def own_host() -> Iterator[SSHHost]:
    """A host of this module's own, whose sshd log no other test writes to."""
    with start_hosts(1) as hosts:
        yield hosts[0]


def _keygen_fingerprint(host: SSHHost) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-lf", str(host.config.parent / "host_key.pub")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()[1]


def _login(host: SSHHost, **kw: Any) -> ssh.PinnedSession:
    kw.setdefault("host_key", host.host_key)
    if "password" not in kw:
        kw.setdefault("private_key", host.key_file.read_text())
    return ssh.connect(host.address, host.port, username=host.username, timeout=5, **kw)


def _other_private_key() -> str:
    return (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        .decode()
    )


def _rsa_key_line() -> str:
    public = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return line.decode()


_LOGIN_WORDS = ("authenticating user", "Accepted", "Failed", "Invalid user")
"""What sshd logs once a client tries to log in (at its default log level)."""


def _log_lines(host: SSHHost) -> list[str]:
    return host.log.read_text().splitlines()


def _after_disconnect(host: SSHHost, seen: int) -> list[str]:
    """The log lines written since ``seen``, once sshd logged the connection's end."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        new = _log_lines(host)[seen:]
        if any("[preauth]" in line or "Disconnected" in line for line in new):
            return new
        time.sleep(0.05)
    raise AssertionError(f"sshd logged no end of the connection: {_log_lines(host)[seen:]}")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _chain(exc: BaseException) -> str:
    """Every message and repr of an exception and its causes."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        parts += [str(seen), repr(seen), repr(seen.args)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


# ---------------------------------------------------------------------------
# Host keys
# ---------------------------------------------------------------------------


def test_the_fetched_key_is_the_hosts_key_file_and_its_fingerprint_is_ssh_keygens(
    ssh_hosts: list[SSHHost],  # noqa: F811
) -> None:
    for host in ssh_hosts[:3]:
        offered = ssh.fetch_host_key(host.address, host.port, timeout=5)

        assert offered == host.host_key
        assert ssh.fingerprint(offered) == _keygen_fingerprint(host)


def test_fetching_a_key_attempts_no_login(own_host: SSHHost) -> None:
    seen = len(_log_lines(own_host))

    ssh.fetch_host_key(own_host.address, own_host.port, timeout=5)

    new = _after_disconnect(own_host, seen)
    assert not [line for line in new if any(w in line for w in _LOGIN_WORDS)], new


def test_a_host_without_an_ed25519_key_offers_its_preferred_one() -> None:
    with start_hosts(1) as [host]:
        line = restart_with_new_host_key(host, "rsa")

        offered = ssh.fetch_host_key(host.address, host.port, timeout=5)

        assert offered == line and offered.startswith("ssh-rsa ")
        assert ssh.fingerprint(offered) == _keygen_fingerprint(host)
        with _login(host) as session:  # an RSA pin works like any other
            assert session.run("echo rsa", timeout=5).stdout == "rsa\n"


def test_the_wrong_pinned_key_is_host_key_changed_and_no_login_is_attempted(
    own_host: SSHHost,
    ssh_hosts: list[SSHHost],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logins: list[str] = []
    for method in ("auth_publickey", "auth_password", "auth_none", "auth_interactive"):
        original = getattr(paramiko.Transport, method)

        def spy(self: Any, *a: Any, _name: str = method, _f: Any = original, **k: Any) -> Any:
            logins.append(_name)
            return _f(self, *a, **k)

        monkeypatch.setattr(paramiko.Transport, method, spy)
    wrong = ssh_hosts[0].host_key  # another machine's key: what a swapped Mac looks like
    seen = len(_log_lines(own_host))

    with pytest.raises(HostKeyChanged) as caught:
        _login(own_host, host_key=wrong, password=own_host.password)

    message = str(caught.value)
    assert f"offered host key {ssh.fingerprint(own_host.host_key)}" in message
    assert f"not the pinned {ssh.fingerprint(wrong)}" in message
    assert message.startswith(f"127.0.0.1:{own_host.port}: ")
    assert logins == []  # nothing was sent to log in
    new = _after_disconnect(own_host, seen)
    assert not [line for line in new if any(w in line for w in _LOGIN_WORDS)], new


def test_a_key_of_another_type_than_the_pinned_one_is_refused_too(own_host: SSHHost) -> None:
    pinned = _rsa_key_line()

    with pytest.raises(HostKeyChanged) as caught:
        _login(own_host, host_key=pinned)

    assert ssh.fingerprint(pinned) in str(caught.value)
    assert ssh.fingerprint(own_host.host_key) in str(caught.value)


def test_a_session_without_a_pinned_key_or_a_secret_is_refused_before_connecting(
    own_host: SSHHost,
) -> None:
    with pytest.raises(InvalidInput, match="no pinned host key"):
        _login(own_host, host_key="")
    with pytest.raises(InvalidInput, match="one of them"):
        _login(own_host, private_key=None, password=None)
    with pytest.raises(InvalidInput, match="not an SSH private key"):
        _login(own_host, private_key="-----BEGIN nothing-----")


# ---------------------------------------------------------------------------
# Sessions
# ---------------------------------------------------------------------------


def test_a_pinned_session_runs_a_command_with_its_exit_code_stdout_and_stderr(
    ssh_hosts: list[SSHHost],  # noqa: F811
) -> None:
    host = ssh_hosts[1]
    with _login(host) as session:
        result = session.run("echo out; echo err >&2; whoami; exit 3", timeout=10)
        ok = session.run("sw_vers -productVersion", timeout=10)

    assert result == ssh.CommandResult(3, f"out\n{host.username}\n", "err\n")
    assert not result.ok
    assert ok.ok and ok.stdout == "15.3\n"  # the stand-in on the host's PATH


def test_password_login_works(ssh_hosts: list[SSHHost]) -> None:  # noqa: F811
    host = ssh_hosts[2]
    with _login(host, password=host.password) as session:
        assert session.run("whoami", timeout=10).stdout == f"{host.username}\n"


def test_sftp_put_and_get_round_trip_byte_exact(
    ssh_hosts: list[SSHHost],  # noqa: F811
    tmp_path: Path,
) -> None:
    host = ssh_hosts[3]
    data = bytes(range(256)) * 512 + os.urandom(300_001) + b"\r\n\x00"
    local = tmp_path / "payload.bin"
    local.write_bytes(data)
    remote = str(host.root / "var" / "tmp-payload.bin")
    back = tmp_path / "back.bin"
    try:
        with _login(host) as session:
            session.put(local, remote)
            session.get(remote, back)
        assert back.read_bytes() == data
        assert Path(remote).read_bytes() == data  # what landed on the host, too
    finally:
        Path(remote).unlink(missing_ok=True)


def test_sftp_refusals_and_missing_files_are_translated(
    ssh_hosts: list[SSHHost],  # noqa: F811
    tmp_path: Path,
) -> None:
    host = ssh_hosts[3]
    local = tmp_path / "x.txt"
    local.write_text("x")
    with _login(host) as session:
        with pytest.raises(AccessDenied, match="may not do that to /etc/orchestrator-x"):
            session.put(local, "/etc/orchestrator-x")
        with pytest.raises(RemoteError, match="no such file"):
            session.get(str(host.root / "absent"), tmp_path / "absent")
        assert list(tmp_path.iterdir()) == [local]  # no empty or partial file left
        with pytest.raises(InvalidInput, match="no local file"):
            session.put(tmp_path / "absent", str(host.root / "absent"))


def test_sftp_lists_reads_within_a_limit_and_removes_on_the_host(
    ssh_hosts: list[SSHHost],  # noqa: F811
) -> None:
    host = ssh_hosts[3]
    folder = str(host.root / "var" / "listing")
    with _login(host) as session:
        assert session.list_names(folder) == []  # no folder yet
        session.write_atomic(f"{folder}/b.caibx", b"bee")
        session.write_atomic(f"{folder}/a.caibx", b"a" * 100)

        assert session.list_names(folder) == ["a.caibx", "b.caibx"]
        assert session.read(f"{folder}/b.caibx", limit=3) == b"bee"
        with pytest.raises(RemoteError, match="larger than the 99 bytes expected"):
            session.read(f"{folder}/a.caibx", limit=99)
        with pytest.raises(RemoteError, match="no such file"):
            session.read(f"{folder}/c.caibx", limit=99)
        session.remove(f"{folder}/a.caibx")
        session.remove(f"{folder}/a.caibx")  # gone already: fine
        assert session.list_names(folder) == ["b.caibx"]
        with pytest.raises(AccessDenied, match="may not do that to /etc/hostname"):
            session.remove("/etc/hostname")


def test_a_session_sends_small_requests_at_once_instead_of_waiting_on_an_ack(
    own_host: SSHHost,
) -> None:
    # With Nagle's algorithm on, each SFTP close or rename waited for the host's
    # delayed ACK: a chunk written to a distribution point cost ~40 ms.
    with _login(own_host) as session:
        transport = session._client.get_transport()
        assert transport is not None
        assert transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_feeding_a_command_hands_over_its_lines_as_they_come_and_its_exit(
    own_host: SSHHost,
) -> None:
    lines: list[str] = []
    pieces = (f"piece {i}\n".encode() for i in range(5000))

    with _login(own_host) as session:
        done = session.feed(
            "wc -l; echo to-stderr >&2; printf 'no newline'; exit 3",
            pieces,
            on_line=lines.append,
            timeout=10,
        )
        early = session.feed(
            "head -c 10 >/dev/null; echo read-ten; exit 4",
            (b"x" * 65536 for _ in range(2000)),  # 128 MiB it never reads
            on_line=lines.append,
            timeout=10,
        )

    assert (done.exit_code, done.stderr) == (3, "to-stderr\n")
    assert (early.exit_code, early.stderr) == (4, "")
    assert lines == ["5000", "no newline", "read-ten"]


def test_feeding_a_command_that_stops_reading_is_remote_timeout_and_the_session_stays_usable(
    own_host: SSHHost,
) -> None:
    with _login(own_host) as session:
        with pytest.raises(RemoteTimeout):
            session.feed(
                "sleep 30",
                (b"x" * 65536 for _ in range(1000)),  # more than the channel's window
                on_line=lambda _line: None,
                timeout=1,
            )
        assert session.run("echo still here", timeout=5).stdout == "still here\n"


def test_the_wrong_key_or_password_is_authentication_failed(
    ssh_hosts: list[SSHHost],  # noqa: F811
) -> None:
    host = ssh_hosts[4]
    with pytest.raises(AuthenticationFailed, match="login was rejected"):
        _login(host, private_key=_other_private_key())
    with pytest.raises(AuthenticationFailed, match="login was rejected"):
        _login(host, password="not-" + host.password)


def test_a_closed_port_is_host_unreachable() -> None:
    port = _closed_port()

    with pytest.raises(HostUnreachable, match="connection refused") as fetched:
        ssh.fetch_host_key("127.0.0.1", port, timeout=5)
    with pytest.raises(HostUnreachable, match="connection refused"):
        ssh.connect(
            "127.0.0.1", port, host_key=_rsa_key_line(), username="nobody", password="x", timeout=5
        )
    with pytest.raises(HostUnreachable):
        ssh.tcp_connect("127.0.0.1", port, timeout=5)
    assert str(fetched.value).startswith(f"127.0.0.1:{port}: ")


def test_a_command_past_its_timeout_is_remote_timeout_and_the_session_stays_usable(
    ssh_hosts: list[SSHHost],  # noqa: F811
) -> None:
    host = ssh_hosts[5]
    with _login(host) as session:
        started = time.monotonic()
        with pytest.raises(RemoteTimeout, match="sleep was still running after 1s"):
            session.run("sleep 30", timeout=1)
        assert time.monotonic() - started < 5
        assert session.run("echo still here", timeout=10).stdout == "still here\n"


def test_a_password_never_appears_in_errors_or_reprs(
    ssh_hosts: list[SSHHost],  # noqa: F811
) -> None:
    host = ssh_hosts[6]
    wrong = "Wrong-Horse-Battery-7"
    with pytest.raises(AuthenticationFailed) as rejected:
        _login(host, password=wrong)
    with pytest.raises(HostKeyChanged) as changed:
        _login(host, host_key=ssh_hosts[0].host_key, password=host.password)
    with _login(host, password=host.password) as session:
        shown = repr(session)
        with pytest.raises(RemoteTimeout) as timed_out:
            session.run("sleep 5", timeout=0.5)

    assert wrong not in _chain(rejected.value)
    for text in (_chain(changed.value), _chain(timed_out.value), shown):
        assert host.password not in text
    assert "'********'" in shown and host.username in shown
    other_key = _other_private_key()
    with pytest.raises(AuthenticationFailed) as with_key:
        _login(ssh_hosts[7], private_key=other_key)
    assert other_key.splitlines()[1] not in _chain(with_key.value)


@pytest.mark.parametrize("kind", ["real", "fake"])
def test_the_fake_session_keeps_the_real_sessions_contract(
    kind: str,
    ssh_hosts: list[SSHHost],  # noqa: F811
    tmp_path: Path,
) -> None:
    host = ssh_hosts[8]
    session: ssh.Session
    if kind == "real":
        session = _login(host)
    else:
        session = ssh.FakeSession(results={"echo hi": ssh.CommandResult(0, "hi\n", "")})
    local = tmp_path / "in.bin"
    local.write_bytes(b"\x00\x01binary\xff")
    remote = str(host.root / "var" / f"contract-{kind}.bin")
    try:
        assert session.run("echo hi", timeout=10) == ssh.CommandResult(0, "hi\n", "")
        session.put(local, remote)
        session.get(remote, tmp_path / "out.bin")
        assert (tmp_path / "out.bin").read_bytes() == local.read_bytes()
        with pytest.raises(RemoteError, match="no such file"):
            session.get(remote + ".absent", tmp_path / "absent.bin")
    finally:
        session.close()
        Path(remote).unlink(missing_ok=True)
