"""Signing in through the real directory: the accounts service over the LDAP adapter
and a real OpenLDAP ``slapd`` on loopback, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from orchestrator.config import Settings
from orchestrator.domain.states import Role
from orchestrator.errors import DirectoryUnavailable, NoRoleGranted, SignInFailed
from orchestrator.remote.ldap_directory import LdapDirectory
from orchestrator.services import accounts, audit, directory, sign_in_directory
from orchestrator.services.context import Context
from tests.factories import District
from tests.support.slapd import ROLE_GROUPS, Slapd, group_dn, person_dn, start_slapd


@pytest.fixture
def slapd() -> Iterator[Slapd]:
    with start_slapd() as server:
        yield server


@pytest.fixture
def dctx(district: District, ctx: Context, slapd: Slapd) -> Context:
    return replace(ctx, directory=LdapDirectory(slapd.config()))


def test_a_directory_btc_signs_in_and_gets_its_building_through_nested_groups(
    dctx: Context, slapd: Slapd
) -> None:
    signed = accounts.sign_in(dctx, "bea", slapd.people["bea"].password)
    assert (signed.actor.role, signed.actor.buildings) == (Role.BTC, {"101"})
    assert accounts.session_actor(dctx, signed.session_token).actor.username == "bea"
    entries = audit.entries(dctx, signed.actor, object_kind="person")
    assert [e.action for e in entries][-2:] == ["directory_role", "signed_in"]


def test_leaving_the_group_in_the_directory_revokes_the_role_and_its_sessions(
    dctx: Context, slapd: Slapd
) -> None:
    signed = accounts.sign_in(dctx, "bea", slapd.people["bea"].password)
    slapd.remove_member(group_dn("btc-101"), group_dn("lincoln-techs"))
    with pytest.raises(NoRoleGranted):
        accounts.authenticate(dctx, "bea", slapd.people["bea"].password)
    with pytest.raises(SignInFailed, match="session has ended"):
        accounts.session_actor(dctx, signed.session_token)
    assert "bea" not in [p.username for p in directory.people(dctx)]


def test_moving_to_another_group_changes_the_role_at_the_next_sign_in(
    dctx: Context, slapd: Slapd
) -> None:
    accounts.authenticate(dctx, "bea", slapd.people["bea"].password)
    slapd.remove_member(group_dn("btc-101"), group_dn("lincoln-techs"))
    slapd.add_member(group_dn("sectec-301"), person_dn("bea"))
    again = accounts.authenticate(dctx, "bea", slapd.people["bea"].password)
    assert (again.role, again.buildings) == (Role.SECTEC, {"301"})


def test_a_wrong_directory_password_counts_towards_the_lockout(dctx: Context, slapd: Slapd) -> None:
    accounts.authenticate(dctx, "bea", slapd.people["bea"].password)
    for _ in range(5):
        with pytest.raises(SignInFailed):
            accounts.authenticate(dctx, "bea", "not-beas-password")
    with pytest.raises(SignInFailed, match="locked"):
        accounts.authenticate(dctx, "bea", slapd.people["bea"].password)


def test_the_directory_stopped_means_sign_in_fails_closed(dctx: Context, slapd: Slapd) -> None:
    slapd.stop()
    with pytest.raises(DirectoryUnavailable):
        accounts.authenticate(dctx, "bea", slapd.people["bea"].password)


def test_local_accounts_still_sign_in_while_the_directory_is_down(
    district: District, dctx: Context, slapd: Slapd
) -> None:
    accounts.set_password(dctx, district["it.ana"], "it.wei", "Wei-Local-Pass-2026")
    slapd.stop()
    assert accounts.authenticate(dctx, "it.wei", "Wei-Local-Pass-2026").role is Role.IT


def test_the_settings_make_the_directory_the_service_signs_in_with(
    district: District, ctx: Context, slapd: Slapd
) -> None:
    config = slapd.config()
    settings = Settings(
        ldap_url=slapd.url,
        ldap_bind_dn=config.bind_dn,
        ldap_bind_password=config.bind_password,
        ldap_user_base=config.user_base,
        ldap_group_base=config.group_base,
        ldap_role_groups=dict(ROLE_GROUPS),
    )
    made = sign_in_directory.directory_from_settings(settings)
    assert made is not None
    person = accounts.authenticate(
        replace(ctx, directory=made), "sam", slapd.people["sam"].password
    )
    assert (person.role, person.buildings) == (Role.SECTEC, {"301", "302"})
