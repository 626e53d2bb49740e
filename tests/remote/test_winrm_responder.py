"""The orchestrator's WinRM adapter against a WS-Management protocol responder
(NTLM, message encryption required, WinRS shells): verified against a WinRM
protocol responder, not Windows."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import winrm
from winrm.exceptions import WSManFaultError

from orchestrator.errors import (
    AccessDenied,
    AuthenticationFailed,
    HostUnreachable,
    InvalidInput,
    RemoteTimeout,
)
from orchestrator.remote.winrm import CommandResult, WinRMClient, WinRMEndpoint
from tests.support.winrm_fixtures import (  # noqa: F401  (fixtures)
    WINRM_PASSWORD,
    WINRM_USER,
    make_winrm_responder,
    winrm_responder,
)
from tests.support.winrm_responder import (
    DENIED_COMMAND,
    SLOW_COMMAND,
    WinRMResponder,
    free_port,
)

Make = Callable[..., WinRMResponder]


def _client(r: WinRMResponder, password: str = WINRM_PASSWORD, **kw: int) -> WinRMClient:
    return WinRMClient(WinRMEndpoint("127.0.0.1", r.port), WINRM_USER, password, **kw)


def test_ntlm_login_runs_a_command_in_a_winrs_shell(
    winrm_responder: WinRMResponder,  # noqa: F811
) -> None:
    assert _client(winrm_responder).probe() == "PC-LAB-01"
    assert winrm_responder.authenticated_users == [WINRM_USER]
    assert winrm_responder.actions == ["Create", "Command", "Receive", "Signal", "Delete"]
    assert winrm_responder.shells == {}, "the shell was deleted"


def test_a_wrong_password_is_authentication_failed_and_no_shell_opens(
    winrm_responder: WinRMResponder,  # noqa: F811
) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        _client(winrm_responder, password="Wr0ng-Horse!").run("hostname")
    assert caught.value.host == "127.0.0.1"
    assert winrm_responder.auth_failures == 1
    assert winrm_responder.authenticated_users == []
    assert winrm_responder.requests == []


def test_a_full_session_never_sends_a_plaintext_body(
    winrm_responder: WinRMResponder,  # noqa: F811
) -> None:
    client = _client(winrm_responder)
    client.run("hostname")
    client.run("ipconfig", ["/all"])
    client.run("cmd", ["/c", "exit", "3010"])
    client.run(SLOW_COMMAND)
    with pytest.raises(AccessDenied):
        client.run(DENIED_COMMAND)

    # Every operation arrived encrypted and was decrypted by the responder...
    assert set(winrm_responder.actions) == {"Create", "Command", "Receive", "Signal", "Delete"}
    assert winrm_responder.count("Command") == 5
    # ...and not one body came in the clear.
    assert winrm_responder.plaintext_bodies == []


def test_a_plaintext_soap_body_is_refused_and_recorded(
    winrm_responder: WinRMResponder,  # noqa: F811
) -> None:
    # pywinrm told not to encrypt: authenticated, but the SOAP body goes in the clear.
    p = winrm.Protocol(
        winrm_responder.url,
        transport="ntlm",
        username=WINRM_USER,
        password=WINRM_PASSWORD,
        message_encryption="never",
        proxy=None,
        ca_trust_path=None,
    )
    with pytest.raises(WSManFaultError) as caught:
        p.open_shell()
    assert caught.value.code == 400
    assert "refuse unencrypted traffic" in caught.value.reason
    # Sent in the clear with each NTLM leg (as requests-ntlm resends it), refused at the end.
    assert winrm_responder.plaintext_bodies
    assert all(b"transfer/Create" in b for b in winrm_responder.plaintext_bodies)
    assert winrm_responder.authenticated_users == [WINRM_USER]
    assert winrm_responder.requests == [], "the plaintext request was not acted on"
    assert winrm_responder.shells == {}


def test_an_unauthenticated_plaintext_body_is_refused_and_recorded(
    winrm_responder: WinRMResponder,  # noqa: F811
) -> None:
    answer = requests.post(
        winrm_responder.url,
        data=b"<s:Envelope/>",
        headers={"Content-Type": "application/soap+xml;charset=UTF-8"},
        timeout=5,
    )
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == "Negotiate"
    assert winrm_responder.plaintext_bodies == [b"<s:Envelope/>"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"transport": "basic"}, "transport"),
        ({"transport": "plaintext"}, "transport"),
        ({"transport": "credssp"}, "transport"),
        ({"transport": "ssl"}, "transport"),
        ({"transport": "certificate"}, "transport"),
        ({"message_encryption": "never"}, "message_encryption"),
        ({"message_encryption": "auto"}, "message_encryption"),
        ({"scheme": "https", "server_cert_validation": "ignore"}, "server_cert_validation"),
        ({"scheme": "ftp"}, "scheme"),
        ({"ca_file": "/etc/hostname"}, "ca_file"),
        ({"scheme": "https", "ca_file": "/nonexistent/ca.pem"}, "ca_file"),
    ],
    ids=lambda v: str(v),
)
def test_the_adapter_refuses_settings_other_than_the_pinned_ones(
    winrm_responder: WinRMResponder,  # noqa: F811
    change: dict[str, str],
    field: str,
) -> None:
    endpoint = WinRMEndpoint("127.0.0.1", winrm_responder.port, **change)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput) as caught:
        WinRMClient(endpoint, WINRM_USER, WINRM_PASSWORD)
    assert caught.value.field == field
    assert winrm_responder.requests == [] and winrm_responder.authenticated_users == []


def test_the_pinned_settings_are_what_pywinrm_is_given(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    http = WinRMClient(WinRMEndpoint("pc-01.district.example"), WINRM_USER, WINRM_PASSWORD)
    https = WinRMClient(
        WinRMEndpoint("pc-01", 5986, scheme="https", transport="kerberos", ca_file=str(ca)),
        WINRM_USER,
        WINRM_PASSWORD,
    )
    assert http.protocol_settings() | {"endpoint": None} == {
        "endpoint": None,
        "transport": "ntlm",
        "username": WINRM_USER,
        "message_encryption": "always",
        "server_cert_validation": "validate",
        "ca_trust_path": None,
        "send_cbt": True,
        "proxy": None,
        "operation_timeout_sec": 20,
        "read_timeout_sec": 30,
    }
    assert http.protocol_settings()["endpoint"] == "http://pc-01.district.example:5985/wsman"
    s = https.protocol_settings()
    assert (s["endpoint"], s["transport"], s["ca_trust_path"]) == (
        "https://pc-01:5986/wsman",
        "kerberos",
        str(ca),
    )
    assert (s["message_encryption"], s["server_cert_validation"]) == ("always", "validate")


def test_access_denied_on_a_command_is_access_denied_and_not_retried(
    winrm_responder: WinRMResponder,  # noqa: F811
) -> None:
    with pytest.raises(AccessDenied) as caught:
        _client(winrm_responder).run(DENIED_COMMAND)
    assert "Access is denied" in str(caught.value)
    assert winrm_responder.count("Command", DENIED_COMMAND) == 1
    assert winrm_responder.count("Create") == 1
    assert winrm_responder.count("Receive") == 0
    assert winrm_responder.actions[-1] == "Delete", "the shell was still closed"


def test_a_user_denied_a_shell_is_access_denied_and_not_retried(
    make_winrm_responder: Make,  # noqa: F811
) -> None:
    r = make_winrm_responder(denied_users={WINRM_USER})
    with pytest.raises(AccessDenied):
        _client(r).run("hostname")
    assert r.actions == ["Create"]


def test_operation_timeouts_are_re_polled_until_the_command_completes(
    make_winrm_responder: Make,  # noqa: F811
) -> None:
    r = make_winrm_responder(operation_timeouts=3)
    result = _client(r).run(SLOW_COMMAND)
    assert result.exit_code == 0 and "Waiting for 0 seconds" in result.stdout
    assert r.count("Receive") == 4, "three OperationTimeouts, then the answer"


def test_operation_timeouts_beyond_the_bound_are_remote_timeout(
    make_winrm_responder: Make,  # noqa: F811
) -> None:
    r = make_winrm_responder(operation_timeouts=10)
    with pytest.raises(RemoteTimeout) as caught:
        _client(r, max_receive_polls=3).run(SLOW_COMMAND)
    assert "3 polls" in str(caught.value)
    assert r.count("Receive") == 3
    assert r.actions[-2:] == ["Signal", "Delete"], "the command was stopped and the shell closed"


def test_pywinrm_itself_re_polls_an_operation_timeout(
    make_winrm_responder: Make,  # noqa: F811
) -> None:
    """What Ansible relies on: pywinrm's own Receive loop swallows OperationTimeout."""
    r = make_winrm_responder(operation_timeouts=2)
    p = winrm.Protocol(
        r.url,
        transport="ntlm",
        username=WINRM_USER,
        password=WINRM_PASSWORD,
        message_encryption="always",
        proxy=None,
        ca_trust_path=None,
    )
    shell = p.open_shell()
    command = p.run_command(shell, SLOW_COMMAND)
    _out, _err, code = p.get_command_output(shell, command)
    p.close_shell(shell)
    assert code == 0
    assert r.count("Receive") == 3


def test_exit_code_3010_is_reported_as_reboot_required(
    winrm_responder: WinRMResponder,  # noqa: F811
) -> None:
    client = _client(winrm_responder)
    assert client.run("cmd", ["/c", "exit", "3010"]) == CommandResult(3010, "", "")
    assert client.run("cmd", ["/c", "exit", "3010"]).reboot_required
    assert client.run("cmd", ["/c", "exit", "1641"]).reboot_required
    assert not client.run("hostname").reboot_required
    failed = client.run("cmd", ["/c", "exit", "1"])
    assert (failed.exit_code, failed.reboot_required, failed.ok) == (1, False, False)


def test_an_unknown_command_fails_as_cmd_would(
    winrm_responder: WinRMResponder,  # noqa: F811
) -> None:
    result = _client(winrm_responder).run("frobnicate")
    assert result.exit_code == 1
    assert "'frobnicate' is not recognized" in result.stderr


def test_powershell_encoded_commands_are_decoded_and_answered(
    winrm_responder: WinRMResponder,  # noqa: F811
) -> None:
    encoded = base64.b64encode("hostname".encode("utf-16-le")).decode()
    result = _client(winrm_responder).run(
        "PowerShell", ["-NoProfile", "-NonInteractive", "-EncodedCommand", encoded]
    )
    assert result.stdout == "PC-LAB-01\r\n"
    assert [r.script for r in winrm_responder.requests if r.action == "Command"] == ["hostname"]


def test_a_closed_port_is_host_unreachable() -> None:
    endpoint = WinRMEndpoint("127.0.0.1", free_port())
    with pytest.raises(HostUnreachable) as caught:
        WinRMClient(endpoint, WINRM_USER, WINRM_PASSWORD).run("hostname")
    assert "cannot connect" in str(caught.value)


def test_a_pc_that_stops_answering_is_remote_timeout(
    make_winrm_responder: Make,  # noqa: F811
) -> None:
    r = make_winrm_responder(hang_seconds=30)
    with pytest.raises(RemoteTimeout):
        _client(r, operation_timeout=1, read_timeout=2).run("hostname")
    assert r.count("Receive") == 1


def test_the_password_is_never_in_repr_logs_or_errors(
    winrm_responder: WinRMResponder,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    good = _client(winrm_responder)
    good.run("hostname")
    wrong = "Wr0ng-Horse!"
    bad = _client(winrm_responder, password=wrong)
    with pytest.raises(AuthenticationFailed) as caught:
        bad.run("hostname")
    with pytest.raises(AccessDenied) as denied:
        good.run(DENIED_COMMAND)
    shown = " ".join(
        [repr(good), str(good), repr(bad), caplog.text]
        + [f"{e!s} {e!r} {e.__cause__!s} {e.__cause__!r}" for e in (caught.value, denied.value)]
    )
    assert caplog.text, "debug logging was captured"
    assert WINRM_PASSWORD not in shown
    assert wrong not in shown
    assert "********" in repr(good)
