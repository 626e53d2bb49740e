"""Signing in: local passwords, the district directory, browser sessions and API tokens.

Who someone is, is settled here and nowhere else; the web pages and the API
only carry the result (an :class:`Actor`) to the other services, which decide
what it may do.

* **Local accounts** (``person.source = 'local'``) sign in with a password
  kept as an Argon2id hash. After ``lockout_failures`` wrong passwords in a row
  the account is locked for ``lockout_minutes``, whatever password comes next;
  IT may unlock it sooner. Unknown usernames and wrong passwords get the same
  message and cost the same time, so sign-in tells no one which accounts exist.
* **Directory accounts**: when the installation has an LDAP / Active Directory
  configured, anyone without a local password is asked of the directory, and
  the directory's groups decide the person's role and buildings *at every
  sign-in*: leaving a group takes the role away at the next sign-in (and ends
  the person's open sessions). A directory that does not answer refuses the
  sign-in; nothing falls back to anything.
* **Sessions**: a browser holds a random token in a cookie; the database keeps
  only its SHA-256, with an expiry and the session's CSRF token.
* **API tokens** for scripts: shown once when made, kept as SHA-256, revocable.

Passwords and tokens are never audited, logged or returned after the moment
they are made.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from orchestrator.db.models import ApiToken, Building, Person, PersonBuilding, WebSession
from orchestrator.db.session import transaction
from orchestrator.domain import validation
from orchestrator.domain.policy import Action, Actor, authorize
from orchestrator.domain.states import Role
from orchestrator.errors import (
    Duplicate,
    InvalidInput,
    NoRoleGranted,
    NotFound,
    Refused,
    SignInFailed,
)
from orchestrator.services import audit
from orchestrator.services.context import Context
from orchestrator.services.directory import load_actor

WRONG = "wrong username or password"
MIN_PASSWORD = 12
TOKEN_PREFIX = "orch_"

_hasher = PasswordHasher()
# Verified against when the username is unknown, so that costs what a real check costs.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _subject(p: Person) -> audit.Subject:
    return audit.Subject("person", p.username, p.id)


def _check_password(password: str, username: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"must be at least {MIN_PASSWORD} characters", field="password")
    if len(password) > 256:
        raise InvalidInput("must be at most 256 characters", field="password")
    if username.lower() in password.lower():
        raise InvalidInput("must not contain the username", field="password")


# -- passwords ------------------------------------------------------------------


def hash_password(password: str) -> str:
    """An Argon2id hash of ``password`` (for the sample district's accounts)."""
    return _hasher.hash(password)


def set_password(ctx: Context, actor: Actor, username: str, password: str) -> None:
    """Give a local account a new password (anyone their own; IT anyone's).

    Raises:
        NotFound: no such active person.
        Refused: someone else's password, and the actor is not IT; a directory account
            (its password is the directory's).
        InvalidInput: the password is too short, too long or contains the username.
    """
    with transaction(ctx.engine) as session:
        person = _person(session, username)
        if person.id != actor.person_id:
            authorize(actor, Action.MANAGE_ACCOUNTS, building=None)
        if person.source == "directory":
            raise Refused(
                f"{username} signs in through the district directory: change the password there"
            )
        _check_password(password, username)
        person.password_hash = _hasher.hash(password)
        person.failed_sign_ins = 0
        person.locked_until = None
        session.add(person)
        _end_sessions(session, person, ctx.now())
        audit.append(
            session, at=ctx.now(), actor=actor, action="password_set", subject=_subject(person)
        )


def unlock(ctx: Context, actor: Actor, username: str) -> None:
    """Clear a locked account's failures (IT).

    Raises:
        NotFound, Refused.
    """
    with transaction(ctx.engine) as session:
        authorize(actor, Action.MANAGE_ACCOUNTS, building=None)
        person = _person(session, username)
        before = {"failed_sign_ins": person.failed_sign_ins}
        person.failed_sign_ins = 0
        person.locked_until = None
        session.add(person)
        audit.append(
            session,
            at=ctx.now(),
            actor=actor,
            action="unlocked",
            subject=_subject(person),
            before=before,
        )


def _person(session: Session, username: str) -> Person:
    p = session.exec(select(Person).where(Person.username == username)).first()
    if p is None or not p.active or p.role == Role.SYSTEM.value:
        raise NotFound(f"no active person {username!r} (see 'orchestrator people')")
    return p


# -- signing in -------------------------------------------------------------------


@dataclass(frozen=True)
class SignedIn:
    actor: Actor
    session_token: str
    """For the cookie; the database keeps only its hash."""
    csrf_token: str
    expires_at: datetime


def authenticate(ctx: Context, username: str, password: str) -> Actor:
    """Who ``username`` is, if ``password`` is theirs.

    Raises:
        SignInFailed: unknown user, wrong password (the same message), a locked
            account, a directory person the directory grants no role.
        DirectoryUnavailable: the directory did not answer (sign-in fails closed).
    """
    if not isinstance(username, str) or not isinstance(password, str):
        raise SignInFailed(WRONG)
    username = username.strip()
    if not username or len(username) > 64 or not username.isprintable():
        _verify(_DUMMY_HASH, password)
        raise SignInFailed(WRONG)
    now = ctx.now()
    with transaction(ctx.engine) as session:
        person = session.exec(select(Person).where(Person.username == username)).first()
        if person is not None and person.locked_until is not None and person.locked_until > now:
            raise SignInFailed(_locked_message(ctx, person))
    local = person is not None and person.source == "local" and person.password_hash is not None
    if local:
        assert person is not None and person.password_hash is not None
        ok = _verify(person.password_hash, password)
    elif ctx.directory is not None and password:
        return _directory_sign_in(ctx, username, password)
    else:
        _verify(_DUMMY_HASH, password)
        ok = False
    if person is None or not person.active or person.role == Role.SYSTEM.value:
        raise SignInFailed(WRONG)
    return _record_local_attempt(ctx, person.id, ok, now)


def _verify(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


def _locked_message(ctx: Context, person: Person) -> str:
    assert person.locked_until is not None
    until = person.locked_until.astimezone(ctx.zone)
    return (
        f"account {person.username} is locked after {person.failed_sign_ins} failed sign-ins "
        f"until {until:%H:%M}; IT can unlock it sooner"
    )


def _record_local_attempt(ctx: Context, person_id: int | None, ok: bool, now: datetime) -> Actor:
    with transaction(ctx.engine) as session:
        person = session.get(Person, person_id)
        assert person is not None
        if ok:
            if person.failed_sign_ins:
                person.failed_sign_ins = 0
                person.locked_until = None
                session.add(person)
            return load_actor(session, person.username)
        person.failed_sign_ins += 1
        locked = person.failed_sign_ins >= ctx.lockout_failures
        if locked:
            person.locked_until = now + timedelta(minutes=ctx.lockout_minutes)
        session.add(person)
        audit.append(
            session,
            at=now,
            actor=_as_actor(person),
            action="locked" if locked else "sign_in_failed",
            subject=_subject(person),
            after={"failed_sign_ins": person.failed_sign_ins},
        )
    # The failure is committed before it is reported.
    raise SignInFailed(_locked_message(ctx, person) if locked else WRONG)


def _as_actor(person: Person) -> Actor:
    assert person.id is not None
    return Actor(person_id=person.id, username=person.username, role=Role(person.role))


def _directory_sign_in(ctx: Context, username: str, password: str) -> Actor:
    assert ctx.directory is not None
    now = ctx.now()
    try:
        found = ctx.directory.authenticate(username, password)
    except NoRoleGranted:
        revoke_directory_role(ctx, username)
        raise
    except SignInFailed as refused:
        _directory_refused(ctx, username, now)
        raise refused from None
    with transaction(ctx.engine) as session:
        person = session.exec(select(Person).where(Person.username == found.username)).first()
        numbers = sorted(found.buildings)
        known = {
            b.number: b
            for b in session.exec(select(Building).where(col(Building.number).in_(numbers)))
        }
        missing = [n for n in numbers if n not in known]
        if missing:
            raise SignInFailed(
                f"the directory gives {username} building(s) {', '.join(missing)}, "
                "which the orchestrator does not know; ask IT"
            )
        if person is None:
            person = Person(
                username=found.username,
                display_name=found.display_name[:120] or found.username,
                role=found.role.value,
                source="directory",
            )
            session.add(person)
            session.flush()
            before: dict[str, object] | None = None
        else:
            if person.source != "directory":
                raise SignInFailed(WRONG)
            before = {"role": person.role, "buildings": _numbers(session, person), "active": True}
            if not person.active:
                before["active"] = False
        assert person.id is not None
        after = {"role": found.role.value, "buildings": numbers, "active": True}
        if before != after:
            person.role = found.role.value
            person.active = True
            person.display_name = found.display_name[:120] or found.username
            for pb in session.exec(
                select(PersonBuilding).where(PersonBuilding.person_id == person.id)
            ):
                session.delete(pb)
            session.flush()
            for n in numbers:
                building_id = known[n].id
                assert building_id is not None
                session.add(PersonBuilding(person_id=person.id, building_id=building_id))
            if before is not None:
                _end_sessions(session, person, now)
            audit.append(
                session,
                at=now,
                actor=_as_actor(person),
                action="directory_role" if before is None else "directory_role_changed",
                subject=_subject(person),
                before=before,
                after=after,
            )
        person.failed_sign_ins = 0
        person.locked_until = None
        session.add(person)
        session.flush()
        return load_actor(session, person.username)


def _directory_refused(ctx: Context, username: str, now: datetime) -> None:
    """A directory person refused: count the failure, and if the directory no longer
    grants a role, the person's role here goes with it."""
    with transaction(ctx.engine) as session:
        person = session.exec(select(Person).where(Person.username == username)).first()
        if person is None or person.source != "directory":
            return
        person.failed_sign_ins += 1
        if person.failed_sign_ins >= ctx.lockout_failures:
            person.locked_until = now + timedelta(minutes=ctx.lockout_minutes)
        session.add(person)
        audit.append(
            session,
            at=now,
            actor=_as_actor(person),
            action="sign_in_failed",
            subject=_subject(person),
            after={"failed_sign_ins": person.failed_sign_ins},
        )


def revoke_directory_role(ctx: Context, username: str) -> None:
    """The directory says ``username`` holds no role any more: deactivate and sign out."""
    with transaction(ctx.engine) as session:
        person = session.exec(select(Person).where(Person.username == username)).first()
        if person is None or person.source != "directory" or not person.active:
            return
        person.active = False
        session.add(person)
        _end_sessions(session, person, ctx.now())
        audit.append(
            session,
            at=ctx.now(),
            actor=_as_actor(person),
            action="directory_role_revoked",
            subject=_subject(person),
            before={"role": person.role},
        )


def _numbers(session: Session, person: Person) -> list[str]:
    return sorted(
        session.exec(
            select(Building.number)
            .join(PersonBuilding, col(PersonBuilding.building_id) == col(Building.id))
            .where(PersonBuilding.person_id == person.id)
        ).all()
    )


# -- sessions -----------------------------------------------------------------------


def sign_in(ctx: Context, username: str, password: str) -> SignedIn:
    """Authenticate and open a browser session.

    Raises:
        Everything :func:`authenticate` raises.
    """
    actor = authenticate(ctx, username, password)
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    now = ctx.now()
    expires = now + timedelta(hours=ctx.session_hours)
    with transaction(ctx.engine) as session:
        session.add(
            WebSession(
                token_hash=_sha(token),
                person_id=actor.person_id,
                csrf_token=csrf,
                created_at=now,
                last_seen_at=now,
                expires_at=expires,
            )
        )
        person = session.get(Person, actor.person_id)
        assert person is not None
        audit.append(session, at=now, actor=actor, action="signed_in", subject=_subject(person))
    return SignedIn(actor, token, csrf, expires)


@dataclass(frozen=True)
class OpenSession:
    actor: Actor
    csrf_token: str
    expires_at: datetime


def session_actor(ctx: Context, token: str) -> OpenSession:
    """The person a session cookie belongs to, as they are now.

    Raises:
        SignInFailed: no such session, ended, expired, or its person is no longer active.
    """
    now = ctx.now()
    with transaction(ctx.engine) as session:
        row = session.exec(select(WebSession).where(WebSession.token_hash == _sha(token))).first()
        if row is None or row.ended_at is not None or row.expires_at <= now:
            raise SignInFailed("your session has ended: sign in again")
        person = session.get(Person, row.person_id)
        if person is None or not person.active:
            raise SignInFailed("your session has ended: sign in again")
        if now - row.last_seen_at > timedelta(minutes=1):
            row.last_seen_at = now
            session.add(row)
        return OpenSession(load_actor(session, person.username), row.csrf_token, row.expires_at)


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


def sign_out(ctx: Context, token: str) -> None:
    """End a session (nothing happens for one already ended or unknown)."""
    with transaction(ctx.engine) as session:
        row = session.exec(select(WebSession).where(WebSession.token_hash == _sha(token))).first()
        if row is not None and row.ended_at is None:
            row.ended_at = ctx.now()
            session.add(row)


def _end_sessions(session: Session, person: Person, now: datetime) -> None:
    for row in session.exec(
        select(WebSession).where(
            WebSession.person_id == person.id, col(WebSession.ended_at).is_(None)
        )
    ):
        row.ended_at = now
        session.add(row)


# -- API tokens ------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenView:
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked: bool


def _token_view(t: ApiToken) -> TokenView:
    return TokenView(
        t.name, t.prefix, t.created_at, t.expires_at, t.last_used_at, t.revoked_at is not None
    )


def create_token(
    ctx: Context, actor: Actor, name: str, *, days: int | None = 90
) -> tuple[TokenView, str]:
    """A new API token for the actor; the secret is returned once and never again.

    Raises:
        InvalidInput: a bad name or lifetime. Duplicate: the actor has a token of that name.
    """
    name = validation.name(name, field="name")
    if days is not None and not 1 <= days <= 366:
        raise InvalidInput("must be between 1 and 366 days", field="days")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = ctx.now()
    row = ApiToken(
        person_id=actor.person_id,
        name=name,
        prefix=secret[:12],
        token_hash=_sha(secret),
        created_at=now,
        expires_at=now + timedelta(days=days) if days is not None else None,
    )
    try:
        with transaction(ctx.engine) as session:
            person = session.get(Person, actor.person_id)
            if person is None or not person.active:
                raise NotFound(f"no active person {actor.username!r}")
            session.add(row)
            session.flush()
            audit.append(
                session,
                at=now,
                actor=actor,
                action="token_created",
                subject=_subject(person),
                after={"name": name, "prefix": row.prefix},
            )
    except IntegrityError:
        raise Duplicate(f"you already have a token named {name!r}", field="name") from None
    return _token_view(row), secret


def tokens(ctx: Context, actor: Actor) -> Sequence[TokenView]:
    with transaction(ctx.engine) as session:
        return [
            _token_view(t)
            for t in session.exec(
                select(ApiToken)
                .where(ApiToken.person_id == actor.person_id)
                .order_by(col(ApiToken.name))
            )
        ]


def revoke_token(ctx: Context, actor: Actor, name: str) -> None:
    """Raises: NotFound (the actor has no live token of that name)."""
    with transaction(ctx.engine) as session:
        t = session.exec(
            select(ApiToken).where(
                ApiToken.person_id == actor.person_id,
                ApiToken.name == name,
                col(ApiToken.revoked_at).is_(None),
            )
        ).first()
        if t is None:
            raise NotFound(f"you have no live token named {name!r}")
        t.revoked_at = ctx.now()
        session.add(t)
        person = session.get(Person, actor.person_id)
        assert person is not None
        audit.append(
            session,
            at=ctx.now(),
            actor=actor,
            action="token_revoked",
            subject=_subject(person),
            before={"name": name, "prefix": t.prefix},
        )


def token_actor(ctx: Context, secret: str) -> Actor:
    """Who an API token belongs to.

    Raises:
        SignInFailed: an unknown, revoked or expired token, or its person is inactive.
    """
    now = ctx.now()
    with transaction(ctx.engine) as session:
        t = session.exec(select(ApiToken).where(ApiToken.token_hash == _sha(secret))).first()
        if t is None or t.revoked_at is not None:
            raise SignInFailed("unknown or revoked API token")
        if t.expires_at is not None and t.expires_at <= now:
            raise SignInFailed(f"API token {t.name!r} expired; make a new one")
        person = session.get(Person, t.person_id)
        if person is None or not person.active:
            raise SignInFailed("unknown or revoked API token")
        if t.last_used_at is None or now - t.last_used_at > timedelta(minutes=1):
            t.last_used_at = now
            session.add(t)
        return load_actor(session, person.username)
