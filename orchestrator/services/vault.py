"""The district's client login secrets, encrypted at rest.

The orchestrator logs in to Macs with an SSH private key and to PCs with a
WinRM password. IT stores them here (``orchestrator credentials set``); they
are kept in the database only as Fernet ciphertext (AES-128-CBC with an
HMAC-SHA256), under a key file of the installation's own (``secret.key`` in
the data folder, mode 0600, made on first use). A database copy without the
key file reveals nothing; the key file alone holds no secret.

Values never leave this module except as :class:`runs.Credentials` handed to
a run, and they are never audited, logged or listed: listings show an SSH
key's public fingerprint, or just that a password is set. The persona test
accounts (:mod:`orchestrator.services.testing`) are encrypted with the same
key through :func:`encrypt` and :func:`decrypt`.

``orchestrator credentials rotate-key`` (:func:`rotate_key`) makes a new key,
re-encrypts every stored secret with it in one transaction and replaces the
key file (temp file, fsync, rename) just before that transaction commits; if
anything fails, the old key file and the old ciphertexts stay. Writers of
secrets take the same lock as the rotation (PostgreSQL advisory lock, SQLite
write lock) and read the key inside it, so none stores a value under a key
that is being replaced; a reader that meets the new key with the old
ciphertext in that instant reads once more (:func:`reveal`).
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import serialization
from sqlmodel import Session, col, select

from orchestrator.config import Settings
from orchestrator.db.models import Credential, SigningKey, TestAccount
from orchestrator.db.session import transaction
from orchestrator.domain.policy import Action, Actor, authorize
from orchestrator.errors import InvalidInput, NotFound, OrchestratorError
from orchestrator.services import audit
from orchestrator.services.context import Context
from orchestrator.services.credentials import Credentials

T = TypeVar("T")


class SecretName(StrEnum):
    SSH_KEY = "ssh-key"
    """The private key the orchestrator logs in to Macs with."""
    WINRM_PASSWORD = "winrm-password"
    """The password of the WinRM account on PCs."""


class SecretKeyProblem(OrchestratorError):
    """The key file is missing, unreadable or not the one the secrets were stored with."""

    exit_code = 7


@dataclass(frozen=True)
class SecretView:
    name: SecretName
    summary: str
    updated_by: str
    updated_at: datetime


def _name(value: str) -> SecretName:
    try:
        return SecretName(value)
    except ValueError:
        known = ", ".join(n.value for n in SecretName)
        raise InvalidInput(f"no secret called {value!r} (secrets: {known})", field="name") from None


_KEY_LOCK = 7_270_002


def lock_secrets(session: Session) -> None:
    """Serialize writers of secrets with a key rotation (inside the caller's transaction).

    SQLite's transactions already hold the write lock from BEGIN IMMEDIATE.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _KEY_LOCK})


def encrypt(ctx: Context, value: str) -> bytes:
    """``value`` as ciphertext under the installation's key (made on first use).

    Call it inside a transaction that has taken :func:`lock_secrets`.

    Raises: SecretKeyProblem.
    """
    return _fernet(ctx, create=True).encrypt(value.encode())


def decrypt(ctx: Context, token: bytes, what: str) -> str:
    """The plaintext of ``token``; ``what`` names it in the error.

    Raises: SecretKeyProblem (missing key file, or not the key it was stored with).
    """
    try:
        return _fernet(ctx, create=False).decrypt(token).decode()
    except InvalidToken:
        raise SecretKeyProblem(
            f"{what} cannot be decrypted with {ctx.secret_key_file}: the key file is "
            "not the one it was stored with; restore that key file, or set it again"
        ) from None


def _fernet(ctx: Context, *, create: bool) -> Fernet:
    path = ctx.secret_key_file
    if not path.exists() and create:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: use theirs
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(Fernet.generate_key() + b"\n")
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        raise SecretKeyProblem(
            f"the secret key file {path} is missing, so the stored credentials cannot be "
            "read; restore it from backup, or set the credentials again"
        ) from None
    except OSError as exc:
        raise SecretKeyProblem(f"cannot read the secret key file {path}: {exc.strerror}") from exc
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise SecretKeyProblem(
            f"the secret key file {path} may be read by others; chmod 600 {path}"
        )
    try:
        return Fernet(key)
    except ValueError:
        raise SecretKeyProblem(
            f"{path} is not a secret key file (32 url-safe base64 bytes)"
        ) from None


def _summary(name: SecretName, value: str) -> str:
    """What may be shown of a secret."""
    if name is SecretName.SSH_KEY:
        return ssh_key_fingerprint(value)
    return "set"


def ssh_key_fingerprint(private_key: str) -> str:
    """The key's public fingerprint as ssh-keygen shows it ('ED25519 SHA256:…').

    Raises:
        InvalidInput: not an unencrypted OpenSSH/PEM private key.
    """
    try:
        key = serialization.load_ssh_private_key(private_key.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        try:
            key = serialization.load_pem_private_key(  # type: ignore[assignment]
                private_key.encode(), password=None
            )
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise InvalidInput(
                "not an unencrypted SSH private key (expected the contents of a file like "
                "id_ed25519, starting '-----BEGIN OPENSSH PRIVATE KEY-----')",
                field="ssh-key",
            ) from None
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    kind, blob = public.split()[:2]
    digest = base64.b64encode(hashlib.sha256(base64.b64decode(blob)).digest()).rstrip(b"=")
    label = kind.decode().removeprefix("ssh-").upper()
    return f"{label} SHA256:{digest.decode()}"


def set_secret(ctx: Context, actor: Actor, name: str, value: str) -> SecretView:
    """Store (or replace) a secret, encrypted. Audited without its value.

    Raises:
        Refused: not IT. InvalidInput: unknown name, empty value, a key that is
            not a private key.
    """
    authorize(actor, Action.MANAGE_CREDENTIALS, building=None)
    which = _name(name)
    if not value.strip():
        raise InvalidInput(f"{which.value}: an empty secret", field=which.value)
    summary = _summary(which, value)
    now = ctx.now()
    with transaction(ctx.engine) as session:
        lock_secrets(session)
        token = encrypt(ctx, value)
        row = session.get(Credential, which.value)
        replaced = row is not None
        if row is None:
            row = Credential(
                name=which.value,
                ciphertext=token,
                summary=summary,
                updated_by=actor.username,
                updated_at=now,
            )
        else:
            row.ciphertext, row.summary = token, summary
            row.updated_by, row.updated_at = actor.username, now
        session.add(row)
        audit.append(
            session,
            at=now,
            actor=actor,
            action="credential.replace" if replaced else "credential.set",
            subject=audit.Subject("credential", which.value, None, None),
            after={"summary": summary},
        )
    return SecretView(which, summary, actor.username, now)


def remove_secret(ctx: Context, actor: Actor, name: str) -> None:
    """Raises: Refused (not IT), InvalidInput (unknown name), NotFound (not set)."""
    authorize(actor, Action.MANAGE_CREDENTIALS, building=None)
    which = _name(name)
    with transaction(ctx.engine) as session:
        row = session.get(Credential, which.value)
        if row is None:
            raise NotFound(f"{which.value} is not set")
        session.delete(row)
        audit.append(
            session,
            at=ctx.now(),
            actor=actor,
            action="credential.remove",
            subject=audit.Subject("credential", which.value, None, None),
            before={"summary": row.summary},
        )


def list_secrets(ctx: Context, actor: Actor) -> list[SecretView]:
    """Which secrets are set, by whom and when; never their values. IT only."""
    authorize(actor, Action.MANAGE_CREDENTIALS, building=None)
    with transaction(ctx.engine) as session:
        rows = session.exec(select(Credential).order_by(col(Credential.name))).all()
        return [SecretView(SecretName(r.name), r.summary, r.updated_by, r.updated_at) for r in rows]


RETRY_PAUSE = 0.2
"""Seconds before a secret that did not decrypt is read once more (see :func:`reveal`)."""


def reveal(
    ctx: Context, load: Callable[[], T], token: Callable[[T], bytes], what: str
) -> tuple[T, str]:
    """What ``load`` reads and the plaintext of its ``token``; read once more if
    that does not decrypt.

    A rotation renames its key file in just before it commits, so a reader can
    meet the new key with the old ciphertext (or the reverse) for that instant;
    the second reading sees both from one side.

    Raises: SecretKeyProblem (twice), and whatever ``load`` raises.
    """
    row = load()
    try:
        return row, decrypt(ctx, token(row), what)
    except SecretKeyProblem:
        time.sleep(RETRY_PAUSE)
        row = load()
        return row, decrypt(ctx, token(row), what)


def _reveal(ctx: Context, name: SecretName) -> str | None:
    def load() -> bytes | None:
        with transaction(ctx.engine) as session:
            row = session.get(Credential, name.value)
            return None if row is None else row.ciphertext

    if load() is None:
        return None
    return reveal(ctx, lambda: load() or b"", bytes, name.value)[1]


def client_credentials(
    ctx: Context,
    *,
    ssh_user: str,
    winrm_user: str,
    ssh_key: str | None = None,
    winrm_password: str | None = None,
) -> Credentials:
    """The logins for a run: values given here (from the settings) win over stored ones.

    Raises: SecretKeyProblem when a stored secret is needed and cannot be read.
    """
    return Credentials(
        ssh_user=ssh_user,
        ssh_key=ssh_key if ssh_key is not None else _reveal(ctx, SecretName.SSH_KEY),
        winrm_user=winrm_user,
        winrm_password=(
            winrm_password
            if winrm_password is not None
            else _reveal(ctx, SecretName.WINRM_PASSWORD)
        ),
    )


def credentials_from_settings(ctx: Context, settings: Settings) -> Credentials:
    """The logins runs use: the settings' key file and password win, else the stored ones.

    Raises: InvalidInput (an unreadable key file), SecretKeyProblem.
    """
    given = Credentials.from_files(
        ssh_user=settings.ssh_user,
        ssh_key_file=settings.ssh_key_file,
        winrm_user=settings.winrm_user,
        winrm_password=(
            settings.winrm_password.get_secret_value() if settings.winrm_password else None
        ),
    )
    return client_credentials(
        ctx,
        ssh_user=settings.ssh_user,
        winrm_user=settings.winrm_user,
        ssh_key=given.ssh_key,
        winrm_password=given.winrm_password,
    )


# ---------------------------------------------------------------------------
# Key rotation
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RotationView:
    credentials: int
    test_accounts: int
    key_file: str


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file at ``path``, mode 0600, and flush it to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _replace_file(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` over ``path`` and make the rename durable."""
    os.replace(tmp, path)
    if os.name == "posix":
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _reencrypt(old: Fernet, new: Fernet, token: bytes, what: str, path: Path) -> bytes:
    try:
        plain = old.decrypt(token)
    except InvalidToken:
        raise SecretKeyProblem(
            f"{what} cannot be decrypted with {path}, so the key cannot be rotated; "
            "restore the key file it was stored with, or set it again"
        ) from None
    return new.encrypt(plain)


def rotate_key(ctx: Context, actor: Actor) -> RotationView:
    """Make a new key, re-encrypt every stored secret with it, replace the key file.

    The client credentials, the persona test accounts and the image signing keys
    (:mod:`orchestrator.services.image_store`) are re-encrypted in
    one transaction; the new key file (written to a temp file beside the old
    one, mode 0600, fsync'd) is renamed over the old one as that transaction's
    last step, and put back if the commit then fails. Nothing is left that
    the old key can read. Audited with the counts, never values. IT only.

    Raises:
        Refused: not IT. SecretKeyProblem: the key file is missing or unreadable,
            or a stored secret does not decrypt with it (then nothing changes).
    """
    authorize(actor, Action.MANAGE_CREDENTIALS, building=None)
    path = ctx.secret_key_file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    new_key = Fernet.generate_key()
    new = Fernet(new_key)
    now = ctx.now()
    old_bytes: bytes | None = None
    replaced = False
    try:
        with transaction(ctx.engine) as session:
            lock_secrets(session)
            credentials = session.exec(select(Credential).order_by(col(Credential.name))).all()
            accounts = session.exec(select(TestAccount).order_by(col(TestAccount.id))).all()
            keys = session.exec(select(SigningKey).order_by(col(SigningKey.id))).all()
            # No key file yet is fine while nothing is stored; with secrets it is a problem.
            old = _fernet(ctx, create=not (credentials or accounts or keys))
            old_bytes = path.read_bytes()
            for c in credentials:
                c.ciphertext = _reencrypt(old, new, c.ciphertext, c.name, path)
                session.add(c)
            for a in accounts:
                what = f"the {a.persona} test account of building #{a.building_id}"
                a.ciphertext = _reencrypt(old, new, a.ciphertext, what, path)
                session.add(a)
            for k in keys:
                what = f"image signing key {k.key_id}"
                k.ciphertext = _reencrypt(old, new, k.ciphertext, what, path)
                session.add(k)
            counts = {"credentials": len(credentials), "test_accounts": len(accounts)}
            if keys:
                counts["signing_keys"] = len(keys)
            audit.append(
                session,
                at=now,
                actor=actor,
                action="credential.rotate_key",
                subject=audit.Subject("secret_key", path.name, None, None),
                after=counts,
            )
            session.flush()
            _write_private(tmp, new_key + b"\n")
            _replace_file(tmp, path)
            replaced = True
    except BaseException:
        tmp.unlink(missing_ok=True)
        if replaced and old_bytes is not None:
            # The commit failed after the new key file took the old one's place.
            _write_private(tmp, old_bytes)
            _replace_file(tmp, path)
        raise
    return RotationView(counts["credentials"], counts["test_accounts"], str(path))
