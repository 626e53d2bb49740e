"""Signing in: local passwords with lockout, directory roles, sessions and API tokens."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from datetime import timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.clock import FixedClock
from orchestrator.domain.states import Role
from orchestrator.errors import (
    DirectoryUnavailable,
    Duplicate,
    InvalidInput,
    NoRoleGranted,
    NotFound,
    Refused,
    SignInFailed,
)
from orchestrator.services import accounts, audit, directory
from orchestrator.services.context import Context
from tests.factories import District

PASSWORD = "Lincoln-Lab-Spring-26"


@pytest.fixture
def with_password(district: District, ctx: Context) -> District:
    accounts.set_password(ctx, district["it.ana"], "btc.lincoln", PASSWORD)
    return district


def test_right_password_signs_in_as_the_person_with_their_buildings(
    with_password: District, ctx: Context
) -> None:
    actor = accounts.authenticate(ctx, "btc.lincoln", PASSWORD)
    assert (actor.username, actor.role, actor.buildings) == ("btc.lincoln", Role.BTC, {"101"})


def test_wrong_password_and_unknown_user_get_the_same_message(
    with_password: District, ctx: Context
) -> None:
    with pytest.raises(SignInFailed) as wrong:
        accounts.authenticate(ctx, "btc.lincoln", "not-the-password-at-all")
    with pytest.raises(SignInFailed) as unknown:
        accounts.authenticate(ctx, "nobody.here", "not-the-password-at-all")
    with pytest.raises(SignInFailed) as no_password_yet:
        accounts.authenticate(ctx, "btc.garcia", "not-the-password-at-all")
    assert str(wrong.value) == str(unknown.value) == str(no_password_yet.value)
    assert str(wrong.value) == accounts.WRONG


def test_the_password_is_kept_only_as_an_argon2id_hash(
    with_password: District, ctx: Context
) -> None:
    with ctx.engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT password_hash FROM person WHERE username = 'btc.lincoln'")
        ).scalar_one()
        dump = " ".join(
            str(row) for row in conn.execute(sa.text("SELECT * FROM audit_entry")).all()
        )
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored and PASSWORD not in dump


def test_five_wrong_passwords_lock_the_account_even_against_the_right_one(
    with_password: District, ctx: Context, clock: FixedClock
) -> None:
    for _ in range(4):
        with pytest.raises(SignInFailed, match="wrong username or password"):
            accounts.authenticate(ctx, "btc.lincoln", "guess-guess-guess")
    with pytest.raises(SignInFailed, match="locked after 5 failed sign-ins until"):
        accounts.authenticate(ctx, "btc.lincoln", "guess-guess-guess")
    with pytest.raises(SignInFailed, match="locked"):
        accounts.authenticate(ctx, "btc.lincoln", PASSWORD)
    clock.advance(minutes=15)
    assert accounts.authenticate(ctx, "btc.lincoln", PASSWORD).username == "btc.lincoln"
    actions = [e.action for e in audit.entries(ctx, with_password["it.ana"], object_kind="person")]
    assert actions.count("sign_in_failed") == 4 and actions.count("locked") == 1


def test_it_unlocks_a_locked_account_and_a_btc_may_not(
    with_password: District, ctx: Context
) -> None:
    for _ in range(5):
        with pytest.raises(SignInFailed):
            accounts.authenticate(ctx, "btc.lincoln", "guess-guess-guess")
    with pytest.raises(Refused):
        accounts.unlock(ctx, with_password["btc.garcia"], "btc.lincoln")
    accounts.unlock(ctx, with_password["it.ana"], "btc.lincoln")
    assert accounts.authenticate(ctx, "btc.lincoln", PASSWORD).username == "btc.lincoln"


def test_a_success_forgets_earlier_failures(with_password: District, ctx: Context) -> None:
    for _ in range(4):
        with pytest.raises(SignInFailed):
            accounts.authenticate(ctx, "btc.lincoln", "guess-guess-guess")
    accounts.authenticate(ctx, "btc.lincoln", PASSWORD)
    for _ in range(4):
        with pytest.raises(SignInFailed, match="wrong username"):
            accounts.authenticate(ctx, "btc.lincoln", "guess-guess-guess")
    assert accounts.authenticate(ctx, "btc.lincoln", PASSWORD).username == "btc.lincoln"


_counter = itertools.count()


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    attempts=st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=20)), max_size=9)
)
def test_lockout_follows_the_rule_for_any_sequence_of_attempts(
    district: District, ctx: Context, attempts: list[tuple[bool, int]]
) -> None:
    """Locked iff the last 5 failures in a row came after the last success and the
    fifth is less than 15 minutes old; a locked account refuses even the right password."""
    clock = FixedClock(ctx.now())
    local = replace(ctx, clock=clock)
    name = f"btc.case{next(_counter)}"
    district.person(name, Role.BTC, ["101"])
    accounts.set_password(local, district["it.ana"], name, PASSWORD)
    failures, locked_until = 0, None
    for right, minutes in attempts:
        clock.advance(minutes=minutes)
        now = clock()
        is_locked = locked_until is not None and locked_until > now
        if is_locked:
            with pytest.raises(SignInFailed, match="locked"):
                accounts.authenticate(local, name, PASSWORD if right else "guess-guess-guess")
            continue
        if right:
            assert accounts.authenticate(local, name, PASSWORD).username == name
            failures, locked_until = 0, None
        else:
            failures += 1
            if failures >= 5:
                locked_until = now + timedelta(minutes=15)
            with pytest.raises(SignInFailed):
                accounts.authenticate(local, name, "guess-guess-guess")


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("short", "at least 12"),
        ("x" * 300, "at most 256"),
        ("my-btc.lincoln-pass", "must not contain the username"),
    ],
)
def test_a_weak_password_is_refused_and_the_old_one_still_works(
    with_password: District, ctx: Context, password: str, why: str
) -> None:
    with pytest.raises(InvalidInput, match=why):
        accounts.set_password(ctx, with_password["btc.lincoln"], "btc.lincoln", password)
    assert accounts.authenticate(ctx, "btc.lincoln", PASSWORD).username == "btc.lincoln"


def test_a_person_sets_their_own_password_but_not_someone_elses(
    with_password: District, ctx: Context
) -> None:
    accounts.set_password(ctx, with_password["btc.lincoln"], "btc.lincoln", "A-new-long-secret")
    assert accounts.authenticate(ctx, "btc.lincoln", "A-new-long-secret")
    with pytest.raises(Refused, match="IT runs the district's accounts"):
        accounts.set_password(ctx, with_password["btc.lincoln"], "btc.garcia", "Taking-over-garcia")
    with pytest.raises(NotFound):
        accounts.set_password(ctx, with_password["it.ana"], "nobody.here", "Whatever-long-pw")


# -- sessions ------------------------------------------------------------------------


def test_a_session_names_its_person_until_it_expires(
    with_password: District, ctx: Context, clock: FixedClock
) -> None:
    signed = accounts.sign_in(ctx, "btc.lincoln", PASSWORD)
    assert accounts.session_actor(ctx, signed.session_token).actor.username == "btc.lincoln"
    clock.advance(hours=8)
    with pytest.raises(SignInFailed, match="session has ended"):
        accounts.session_actor(ctx, signed.session_token)


def test_signing_out_ends_the_session_and_a_new_password_ends_them_all(
    with_password: District, ctx: Context
) -> None:
    one = accounts.sign_in(ctx, "btc.lincoln", PASSWORD)
    two = accounts.sign_in(ctx, "btc.lincoln", PASSWORD)
    accounts.sign_out(ctx, one.session_token)
    with pytest.raises(SignInFailed):
        accounts.session_actor(ctx, one.session_token)
    assert accounts.session_actor(ctx, two.session_token).actor.username == "btc.lincoln"
    accounts.set_password(ctx, with_password["it.ana"], "btc.lincoln", "Reset-by-it-2026")
    with pytest.raises(SignInFailed):
        accounts.session_actor(ctx, two.session_token)


def test_only_a_hash_of_the_session_token_is_stored(with_password: District, ctx: Context) -> None:
    signed = accounts.sign_in(ctx, "btc.lincoln", PASSWORD)
    with ctx.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM web_session")).all()
    assert rows and signed.session_token not in str(rows)
    with pytest.raises(SignInFailed):
        accounts.session_actor(ctx, "a-forged-token")


def test_csrf_tokens_compare_exactly() -> None:
    assert accounts.csrf_matches("abc", "abc")
    assert not accounts.csrf_matches("abc", "abd")
    assert not accounts.csrf_matches("abc", "")
    assert not accounts.csrf_matches("abc", None)


# -- API tokens ----------------------------------------------------------------------


def test_an_api_token_acts_as_its_person_until_revoked(district: District, ctx: Context) -> None:
    view, secret = accounts.create_token(ctx, district["btc.lincoln"], "nightly-report")
    assert secret.startswith("orch_") and view.prefix == secret[:12]
    assert accounts.token_actor(ctx, secret).buildings == {"101"}
    with ctx.engine.connect() as conn:
        assert secret not in str(conn.execute(sa.text("SELECT * FROM api_token")).all())
    accounts.revoke_token(ctx, district["btc.lincoln"], "nightly-report")
    with pytest.raises(SignInFailed, match="unknown or revoked"):
        accounts.token_actor(ctx, secret)


def test_an_api_token_expires(district: District, ctx: Context, clock: FixedClock) -> None:
    _, secret = accounts.create_token(ctx, district["it.ana"], "inventory-sync", days=1)
    clock.advance(days=1)
    with pytest.raises(SignInFailed, match="expired"):
        accounts.token_actor(ctx, secret)


def test_a_second_token_of_the_same_name_is_a_duplicate(district: District, ctx: Context) -> None:
    accounts.create_token(ctx, district["it.ana"], "sync")
    with pytest.raises(Duplicate, match="already have a token named 'sync'"):
        accounts.create_token(ctx, district["it.ana"], "sync")
    # Another person may use the name.
    accounts.create_token(ctx, district["it.wei"], "sync")
    assert [t.name for t in accounts.tokens(ctx, district["it.ana"])] == ["sync"]


def test_revoking_someone_elses_token_finds_nothing(district: District, ctx: Context) -> None:
    accounts.create_token(ctx, district["it.ana"], "sync")
    with pytest.raises(NotFound):
        accounts.revoke_token(ctx, district["btc.lincoln"], "sync")


# -- the directory (a fake of our own adapter; tests/remote has the real slapd) ---------


@dataclass(frozen=True)
class Found:
    username: str
    display_name: str
    role: Role
    buildings: frozenset[str]


class FakeDirectory:
    def __init__(self) -> None:
        self.people: dict[str, tuple[str, Found | None]] = {}
        self.down = False

    def authenticate(self, username: str, password: str) -> Found:
        if self.down:
            raise DirectoryUnavailable("the district directory did not answer")
        known = self.people.get(username)
        if known is None or known[0] != password:
            raise SignInFailed(accounts.WRONG)
        if known[1] is None:
            raise NoRoleGranted(f"{username} is in none of the groups mapped to a role")
        return known[1]


@pytest.fixture
def with_directory(ctx: Context) -> tuple[Context, FakeDirectory]:
    fake = FakeDirectory()
    return replace(ctx, directory=fake), fake


def test_the_directory_decides_role_and_buildings_at_every_sign_in(
    district: District, with_directory: tuple[Context, FakeDirectory]
) -> None:
    ctx, fake = with_directory
    fake.people["d.tech"] = (
        "Dir-Pass-123456",
        Found("d.tech", "D Tech", Role.BTC, frozenset({"101"})),
    )
    first = accounts.sign_in(ctx, "d.tech", "Dir-Pass-123456")
    assert (first.actor.role, first.actor.buildings) == (Role.BTC, {"101"})
    fake.people["d.tech"] = (
        "Dir-Pass-123456",
        Found("d.tech", "D Tech", Role.SECTEC, frozenset({"301"})),
    )
    second = accounts.authenticate(ctx, "d.tech", "Dir-Pass-123456")
    assert (second.role, second.buildings) == (Role.SECTEC, {"301"})
    # The role changed: the session opened under the old one has ended.
    with pytest.raises(SignInFailed):
        accounts.session_actor(ctx, first.session_token)


def test_leaving_every_group_takes_the_role_and_the_sessions_away(
    district: District, with_directory: tuple[Context, FakeDirectory]
) -> None:
    ctx, fake = with_directory
    fake.people["d.tech"] = (
        "Dir-Pass-123456",
        Found("d.tech", "D Tech", Role.BTC, frozenset({"101"})),
    )
    signed = accounts.sign_in(ctx, "d.tech", "Dir-Pass-123456")
    fake.people["d.tech"] = ("Dir-Pass-123456", None)
    with pytest.raises(NoRoleGranted):
        accounts.authenticate(ctx, "d.tech", "Dir-Pass-123456")
    with pytest.raises(SignInFailed):
        accounts.session_actor(ctx, signed.session_token)
    assert "d.tech" not in [p.username for p in directory.people(ctx)]


def test_a_directory_that_does_not_answer_refuses_sign_in(
    district: District, with_directory: tuple[Context, FakeDirectory]
) -> None:
    ctx, fake = with_directory
    fake.people["d.tech"] = (
        "Dir-Pass-123456",
        Found("d.tech", "D Tech", Role.BTC, frozenset({"101"})),
    )
    fake.down = True
    with pytest.raises(DirectoryUnavailable):
        accounts.authenticate(ctx, "d.tech", "Dir-Pass-123456")


def test_a_local_password_is_checked_locally_even_with_a_directory(
    with_password: District, with_directory: tuple[Context, FakeDirectory]
) -> None:
    ctx, fake = with_directory
    fake.down = True
    assert accounts.authenticate(ctx, "btc.lincoln", PASSWORD).username == "btc.lincoln"


def test_the_directory_cannot_take_over_a_local_account(
    district: District, with_directory: tuple[Context, FakeDirectory]
) -> None:
    ctx, fake = with_directory
    fake.people["btc.garcia"] = (
        "Dir-Pass-123456",
        Found("btc.garcia", "Impostor", Role.IT, frozenset()),
    )
    with pytest.raises(SignInFailed, match="wrong username or password"):
        accounts.authenticate(ctx, "btc.garcia", "Dir-Pass-123456")
    assert district["btc.garcia"].role is Role.BTC


def test_a_directory_building_the_district_does_not_know_is_refused(
    district: District, with_directory: tuple[Context, FakeDirectory]
) -> None:
    ctx, fake = with_directory
    fake.people["d.tech"] = (
        "Dir-Pass-123456",
        Found("d.tech", "D Tech", Role.BTC, frozenset({"999"})),
    )
    with pytest.raises(SignInFailed, match="building\\(s\\) 999"):
        accounts.authenticate(ctx, "d.tech", "Dir-Pass-123456")


@pytest.mark.parametrize("username", ["btc.lincoln\x00", "", "x" * 65, "tab\there"])
def test_a_username_no_account_could_have_is_just_a_wrong_sign_in(
    with_password: District, ctx: Context, username: str
) -> None:
    with pytest.raises(SignInFailed, match="wrong username or password"):
        accounts.authenticate(ctx, username, PASSWORD)
