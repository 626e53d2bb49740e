"""Client login secrets: encrypted at rest, IT's alone, never shown or audited."""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from orchestrator.errors import InvalidInput, NotFound, Refused
from orchestrator.services import audit, vault
from tests.factories import District

PASSWORD = "Winter-Recess-2026!"


@pytest.fixture
def ssh_key(tmp_path: Path) -> Path:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def _raw_rows(d: District) -> bytes:
    with d.ctx.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT name, ciphertext, summary FROM credential")).all()
    return b"".join(bytes(r[0], "utf-8") + bytes(r[1]) + bytes(r[2], "utf-8") for r in rows)


def test_a_stored_password_is_ciphertext_in_the_database_and_comes_back_for_runs(
    district: District,
) -> None:
    vault.set_secret(district.ctx, district["it.ana"], "winrm-password", PASSWORD)

    assert PASSWORD.encode() not in _raw_rows(district)
    creds = vault.client_credentials(district.ctx, ssh_user="orchestrator", winrm_user="orch")
    assert creds.winrm_password == PASSWORD
    assert creds.ssh_key is None
    assert PASSWORD not in repr(creds)


def test_the_key_file_is_made_private_on_first_use(district: District) -> None:
    vault.set_secret(district.ctx, district["it.ana"], "winrm-password", PASSWORD)

    mode = district.ctx.secret_key_file.stat().st_mode & 0o777
    assert mode == 0o600


def test_an_ssh_key_is_listed_by_its_public_fingerprint_only(
    district: District, ssh_key: Path
) -> None:
    vault.set_secret(district.ctx, district["it.ana"], "ssh-key", ssh_key.read_text())

    expected = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(ssh_key)], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    [view] = vault.list_secrets(district.ctx, district["it.wei"])
    assert view.summary == f"ED25519 {expected}"
    assert view.updated_by == "it.ana"
    assert b"PRIVATE KEY" not in _raw_rows(district)


def test_settings_win_over_the_store(district: District) -> None:
    vault.set_secret(district.ctx, district["it.ana"], "winrm-password", PASSWORD)

    creds = vault.client_credentials(
        district.ctx, ssh_user="a", winrm_user="b", winrm_password="from-the-environment"
    )
    assert creds.winrm_password == "from-the-environment"


def test_setting_again_replaces_and_the_audit_never_holds_the_value(district: District) -> None:
    vault.set_secret(district.ctx, district["it.ana"], "winrm-password", "first-one")
    vault.set_secret(district.ctx, district["it.wei"], "winrm-password", PASSWORD)

    creds = vault.client_credentials(district.ctx, ssh_user="a", winrm_user="b")
    assert creds.winrm_password == PASSWORD
    entries = audit.entries(district.ctx, district["it.ana"])
    actions = [e.action for e in entries if e.object_kind == "credential"]
    assert actions == ["credential.set", "credential.replace"]
    assert not any("first-one" in repr(e) or PASSWORD in repr(e) for e in entries)


@pytest.mark.parametrize("who", ["edtech.grace", "sectec.kim", "btc.lincoln", "principal.lincoln"])
def test_only_it_sets_lists_or_removes_secrets(district: District, who: str) -> None:
    with pytest.raises(Refused):
        vault.set_secret(district.ctx, district[who], "winrm-password", PASSWORD)
    with pytest.raises(Refused):
        vault.list_secrets(district.ctx, district[who])
    with pytest.raises(Refused):
        vault.remove_secret(district.ctx, district[who], "winrm-password")

    assert vault.list_secrets(district.ctx, district["it.ana"]) == []


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("root-password", PASSWORD, "no secret called 'root-password'"),
        ("winrm-password", "   ", "empty secret"),
        ("ssh-key", "ssh-ed25519 AAAAC3Nza this is a public key", "not an unencrypted SSH private"),
    ],
)
def test_bad_secrets_are_refused_and_nothing_is_stored(
    district: District, name: str, value: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        vault.set_secret(district.ctx, district["it.ana"], name, value)

    assert vault.list_secrets(district.ctx, district["it.ana"]) == []


def test_a_lost_or_different_key_file_is_a_clear_error_not_garbage(district: District) -> None:
    vault.set_secret(district.ctx, district["it.ana"], "winrm-password", PASSWORD)
    missing = replace(district.ctx, secret_key_file=district.ctx.secret_key_file.with_name("gone"))
    other_key = district.ctx.secret_key_file.with_name("other.key")
    other_key.write_bytes(Fernet.generate_key())
    other_key.chmod(0o600)
    other = replace(district.ctx, secret_key_file=other_key)

    with pytest.raises(vault.SecretKeyProblem, match="is missing"):
        vault.client_credentials(missing, ssh_user="a", winrm_user="b")
    with pytest.raises(vault.SecretKeyProblem, match="not the one it was stored with"):
        vault.client_credentials(other, ssh_user="a", winrm_user="b")


def test_a_key_file_others_can_read_is_refused(district: District) -> None:
    vault.set_secret(district.ctx, district["it.ana"], "winrm-password", PASSWORD)
    os.chmod(district.ctx.secret_key_file, 0o644)

    with pytest.raises(vault.SecretKeyProblem, match="chmod 600"):
        vault.client_credentials(district.ctx, ssh_user="a", winrm_user="b")


def test_removing_a_secret_forgets_it_and_removing_again_is_not_found(
    district: District,
) -> None:
    vault.set_secret(district.ctx, district["it.ana"], "winrm-password", PASSWORD)
    vault.remove_secret(district.ctx, district["it.ana"], "winrm-password")

    assert (
        vault.client_credentials(district.ctx, ssh_user="a", winrm_user="b").winrm_password is None
    )
    with pytest.raises(NotFound):
        vault.remove_secret(district.ctx, district["it.ana"], "winrm-password")
