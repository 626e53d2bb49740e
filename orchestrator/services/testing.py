"""What image test runs need: the test clients pool and the persona test accounts.

**Test clients** are ordinary inventory clients that IT marks as test clients
(``client.test_client``); the pool is read by platform and by the level of
the client's building, since base images are per platform x level. Only IT
marks or unmarks (:data:`Action.MANAGE_TEST_CLIENTS`); everyone who may read
the inventory sees the test clients of the buildings they may see.

**Persona test accounts**: per building, a ``student`` and a ``staff``
account (the district's exception accounts) that a test run signs in as.
Who may set them (:data:`Action.MANAGE_TEST_ACCOUNTS`), from the district's
roles-and-responsibilities chart:

* IT, district-wide: IT maintains the directory's "Exception User Creator"
  and resets passwords between school years, so it keeps every building's
  test accounts.
* A SecTec, for its own buildings only: the chart has it "create exception
  user accounts" for its site and "test applications/images with
  student/staff logins", so it may keep the accounts it tests with.
* Not a BTC: it creates exception accounts too, but the chart does not give
  BTCs image testing, so it has no need to hold these passwords. Not EdTech:
  it tests with the accounts (it may list them,
  :data:`Action.READ_TEST_ACCOUNTS`) but does not administer the directory.
  Never a principal.

Passwords are encrypted at rest with the installation's key
(:func:`vault.encrypt`), never shown back (listings say "password set"),
never audited or logged by value. Only :func:`persona_login`, for the test
run code path, reveals one; the command line never calls it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

from sqlmodel import Session, col, select

from orchestrator.db.models import Building, Client, TestAccount
from orchestrator.db.session import transaction
from orchestrator.domain import validation
from orchestrator.domain.policy import Action, Actor, authorize, authorize_role, may
from orchestrator.domain.states import Level, Platform
from orchestrator.errors import InvalidInput, NotFound
from orchestrator.services import audit, directory, inventory, vault
from orchestrator.services.context import Context

_E = TypeVar("_E", bound=StrEnum)

PASSWORD_SET = "password set"
MAX_PASSWORD = 256


class Persona(StrEnum):
    STUDENT = "student"
    """Signs in as a student: restricted applications and admin tools must be absent."""
    STAFF = "staff"
    """Signs in as a teacher or other staff member."""


def persona(value: str) -> Persona:
    """Raises: InvalidInput (not student or staff)."""
    try:
        return Persona(value)
    except ValueError:
        known = ", ".join(p.value for p in Persona)
        raise InvalidInput(f"no persona {value!r} (personas: {known})", field="persona") from None


def _enum(kind: type[_E], value: str | None, name: str) -> _E | None:
    if value is None:
        return None
    try:
        return kind(value.lower())
    except ValueError:
        known = ", ".join(v.value for v in kind)
        raise InvalidInput(f"no {name} {value!r} ({name}s: {known})", field=name) from None


# ---------------------------------------------------------------------------
# Test clients
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolClientView:
    hostname: str
    building: str
    level: Level
    platform: Platform
    room: str
    address: str
    test_client: bool


def _client_view(c: Client, b: Building) -> PoolClientView:
    return PoolClientView(
        hostname=c.hostname,
        building=b.number,
        level=Level(b.level),
        platform=Platform(c.platform),
        room=c.room,
        address=c.address,
        test_client=c.test_client,
    )


def mark_test_client(
    ctx: Context, actor: Actor, hostname: str, *, test_client: bool = True
) -> tuple[PoolClientView, bool]:
    """Mark (or with ``test_client=False`` unmark) a client as a test client. IT only.

    Returns the client and whether anything changed (marking a test client
    again changes nothing and is not audited).

    Raises:
        Refused: not IT. NotFound: no such client.
    """
    authorize(actor, Action.MANAGE_TEST_CLIENTS, building=None)
    with transaction(ctx.engine) as session:
        client = inventory.get_client(session, actor, hostname)
        b = session.get(Building, client.building_id)
        assert b is not None
        changed = client.test_client != test_client
        if changed:
            client.test_client = test_client
            session.add(client)
            audit.append(
                session,
                at=ctx.now(),
                actor=actor,
                action="client.mark_test" if test_client else "client.unmark_test",
                subject=audit.Subject("client", client.hostname, client.id, b.number),
                before={"test_client": not test_client},
                after={"test_client": test_client},
            )
        return _client_view(client, b), changed


def list_test_clients(
    ctx: Context, actor: Actor, *, platform: str | None = None, level: str | None = None
) -> list[PoolClientView]:
    """The test clients the actor may see, by platform, level, building and hostname.

    Raises:
        Refused: the role may not read the inventory. InvalidInput: an unknown
            platform or level.
    """
    authorize_role(actor, Action.READ_CATALOG)
    want_platform = _enum(Platform, platform, "platform")
    want_level = _enum(Level, level, "level")
    with transaction(ctx.engine) as session:
        q = (
            select(Client, Building)
            .join(Building, col(Building.id) == col(Client.building_id))
            .where(col(Client.test_client).is_(True))
            .order_by(
                col(Client.platform),
                col(Building.level),
                col(Building.number),
                col(Client.hostname),
            )
        )
        if want_platform is not None:
            q = q.where(Client.platform == want_platform.value)
        if want_level is not None:
            q = q.where(Building.level == want_level.value)
        return [
            _client_view(c, b)
            for c, b in session.exec(q)
            if may(actor, Action.READ_CATALOG, building=b.number)
        ]


# ---------------------------------------------------------------------------
# Persona test accounts
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountView:
    """What may be shown of a test account: never its password."""

    building: str
    persona: Persona
    username: str
    summary: str
    updated_by: str
    updated_at: datetime


@dataclass(frozen=True)
class PersonaLogin:
    """A persona's sign-in for a test run; the password is kept out of repr()."""

    building: str
    persona: Persona
    username: str
    password: str = field(repr=False)


def check_password(value: str) -> str:
    """Raises: InvalidInput (empty, too long, or holding a line break or NUL)."""
    if not value.strip():
        raise InvalidInput("an empty password", field="password")
    if len(value) > MAX_PASSWORD:
        raise InvalidInput(f"longer than {MAX_PASSWORD} characters", field="password")
    if any(ch in value for ch in "\r\n\x00"):
        raise InvalidInput("a password cannot hold a line break or NUL", field="password")
    return value


def _account_target(
    session: Session, actor: Actor, action: Action, building: str, persona_name: str
) -> tuple[Building, Persona]:
    which = persona(persona_name)
    number = validation.building_number(building)
    authorize(actor, action, building=number)
    return directory.get_building(session, number), which


def _find(session: Session, b: Building, which: Persona) -> TestAccount | None:
    return session.exec(
        select(TestAccount).where(
            TestAccount.building_id == b.id, TestAccount.persona == which.value
        )
    ).first()


def set_test_account(
    ctx: Context, actor: Actor, *, building: str, persona: str, username: str, password: str
) -> AccountView:
    """Store (or replace) a building's student or staff test account, its password encrypted.

    Audited with the username, never the password.

    Raises:
        InvalidInput: unknown persona, a malformed building number or username, an
            empty password. Refused: not IT, or a SecTec outside its buildings (see the
            module's docstring). NotFound: no such building. SecretKeyProblem.
    """
    name = validation.username(username.strip(), field="username") if username.strip() else ""
    if not name:
        raise InvalidInput("an empty username", field="username")
    check_password(password)
    now = ctx.now()
    with transaction(ctx.engine) as session:
        b, which = _account_target(session, actor, Action.MANAGE_TEST_ACCOUNTS, building, persona)
        vault.lock_secrets(session)
        token = vault.encrypt(ctx, password)
        row = _find(session, b, which)
        before = None if row is None else {"username": row.username, "summary": row.summary}
        if row is None:
            assert b.id is not None
            row = TestAccount(
                building_id=b.id,
                persona=which.value,
                username=name,
                ciphertext=token,
                summary=PASSWORD_SET,
                updated_by=actor.username,
                updated_at=now,
            )
        else:
            row.username, row.ciphertext, row.summary = name, token, PASSWORD_SET
            row.updated_by, row.updated_at = actor.username, now
        session.add(row)
        session.flush()
        audit.append(
            session,
            at=now,
            actor=actor,
            action="test_account.set" if before is None else "test_account.replace",
            subject=audit.Subject("test_account", f"{b.number}/{which.value}", row.id, b.number),
            before=before,
            after={"username": name, "summary": PASSWORD_SET},
        )
        return AccountView(b.number, which, name, PASSWORD_SET, actor.username, now)


def remove_test_account(ctx: Context, actor: Actor, *, building: str, persona: str) -> None:
    """Forget a building's student or staff test account.

    Raises: InvalidInput, Refused, NotFound (no such building, or the account is not set).
    """
    with transaction(ctx.engine) as session:
        b, which = _account_target(session, actor, Action.MANAGE_TEST_ACCOUNTS, building, persona)
        row = _find(session, b, which)
        if row is None:
            raise NotFound(f"building {b.number} has no {which.value} test account")
        session.delete(row)
        audit.append(
            session,
            at=ctx.now(),
            actor=actor,
            action="test_account.remove",
            subject=audit.Subject("test_account", f"{b.number}/{which.value}", row.id, b.number),
            before={"username": row.username, "summary": row.summary},
        )


def list_test_accounts(
    ctx: Context, actor: Actor, *, building: str | None = None
) -> list[AccountView]:
    """The test accounts the actor may see (usernames, 'password set'; never passwords).

    Raises: Refused (the role may not see test accounts, or not that building),
        InvalidInput, NotFound (no such building).
    """
    authorize_role(actor, Action.READ_TEST_ACCOUNTS)
    with transaction(ctx.engine) as session:
        q = (
            select(TestAccount, Building)
            .join(Building, col(Building.id) == col(TestAccount.building_id))
            .order_by(col(Building.number), col(TestAccount.persona).desc())
        )
        if building is not None:
            number = validation.building_number(building)
            authorize(actor, Action.READ_TEST_ACCOUNTS, building=number)
            directory.get_building(session, number)
            q = q.where(Building.number == number)
        return [
            AccountView(
                b.number, Persona(a.persona), a.username, a.summary, a.updated_by, a.updated_at
            )
            for a, b in session.exec(q)
            if may(actor, Action.READ_TEST_ACCOUNTS, building=b.number)
        ]


def persona_login(ctx: Context, building: str, persona_name: str) -> PersonaLogin:
    """The persona's username and password, for the test run code path only.

    Like :func:`vault.client_credentials`, it takes no actor: the run that
    calls it has authorized its caller already. Never called by the CLI.

    Raises:
        InvalidInput: unknown persona. NotFound: no such building, or the
            account is not set. SecretKeyProblem: the key file cannot decrypt it.
    """
    which = persona(persona_name)
    number = validation.building_number(building)

    def load() -> tuple[str, bytes]:
        with transaction(ctx.engine) as session:
            b = directory.get_building(session, number)
            row = _find(session, b, which)
            if row is None:
                raise NotFound(
                    f"building {b.number} has no {which.value} test account "
                    "(see 'orchestrator testing accounts set')"
                )
            return row.username, row.ciphertext

    what = f"the {which.value} test account of building {number}"
    (username, _), password = vault.reveal(ctx, load, lambda r: r[1], what)
    return PersonaLogin(number, which, username, password)
