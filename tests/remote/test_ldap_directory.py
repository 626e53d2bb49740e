"""Signing in against a real OpenLDAP server (tests/support/slapd.py), and the pure
rules that turn a person's groups into one role and its buildings."""

from __future__ import annotations

import logging
import subprocess
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ldap3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.domain.states import Role
from orchestrator.errors import DirectoryUnavailable, InvalidInput, OrchestratorError, SignInFailed
from orchestrator.remote.ldap_directory import (
    MAX_GROUP_NESTING,
    NO_ROLE,
    PASSWORD_REQUIRED,
    WRONG_CREDENTIALS,
    DirectoryConfig,
    DirectoryPerson,
    LdapDirectory,
    normalise_dn,
    parse_role_groups,
    role_from_groups,
)
from tests.support.slapd import (
    GROUPS,
    PEOPLE,
    ROLE_GROUPS,
    SERVICE_DN,
    Slapd,
    group_dn,
    make_ca,
    person_dn,
    start_slapd,
)


@pytest.fixture
def directory() -> Iterator[Slapd]:
    with start_slapd() as server:
        yield server


def sign_in(server: Slapd, uid: str, **config: Any) -> DirectoryPerson:
    return LdapDirectory(server.config(**config)).authenticate(uid, server.people[uid].password)


def refusal(server: Slapd, username: str, password: str, **config: Any) -> OrchestratorError:
    with pytest.raises(OrchestratorError) as caught:
        LdapDirectory(server.config(**config)).authenticate(username, password)
    return caught.value


# -- who gets which role --------------------------------------------------------


@pytest.mark.parametrize(
    ("uid", "role", "buildings"),
    [
        ("ada", Role.IT, set()),
        ("grace", Role.EDTECH, set()),
        ("sam", Role.SECTEC, {"301", "302"}),
        ("pat", Role.PRINCIPAL, {"101"}),  # through a groupOfUniqueNames
        ("bea", Role.BTC, {"101"}),  # through a nested group
    ],
)
def test_the_right_password_gives_the_role_and_buildings_of_the_persons_groups(
    directory: Slapd, uid: str, role: Role, buildings: set[str]
) -> None:
    person = sign_in(directory, uid)

    assert person.role is role
    assert person.buildings == buildings
    assert person.username == uid
    assert person.dn == person_dn(uid)
    assert person.display_name == directory.people[uid].display_name


def test_the_username_comes_back_as_the_directory_spells_it_whatever_was_typed(
    directory: Slapd,
) -> None:
    person = LdapDirectory(directory.config()).authenticate("ADA", directory.people["ada"].password)

    assert person.username == "ada"
    assert person.role is Role.IT


def test_a_membership_through_a_nested_group_gives_that_groups_role(directory: Slapd) -> None:
    # bea is in cn=lincoln-techs only; cn=btc-101 holds cn=lincoln-techs.
    person = sign_in(directory, "bea")

    assert group_dn("btc-101") in person.groups
    assert group_dn("lincoln-techs") in person.groups
    assert (person.role, person.buildings) == (Role.BTC, {"101"})


def test_a_membership_cycle_is_followed_once_and_the_sign_in_ends(directory: Slapd) -> None:
    # Already: lincoln-techs holds lincoln-helpers, which holds lincoln-techs. Close a
    # longer loop through the role group itself, and a group holding itself.
    directory.add_member(group_dn("lincoln-helpers"), group_dn("btc-101"))
    mirror = directory.add_group("mirror", [person_dn("bea")])
    directory.add_member(mirror, mirror)

    person = sign_in(directory, "bea")

    assert person.groups == {
        group_dn(cn) for cn in ("lincoln-techs", "lincoln-helpers", "btc-101", "mirror")
    }
    assert (person.role, person.buildings) == (Role.BTC, {"101"})


def _nest(directory: Slapd, levels: int) -> str:
    """A chain of ``levels`` groups above nora; returns the outermost group's DN."""
    holds = person_dn("nora")
    for level in range(1, levels + 1):
        holds = directory.add_group(f"chain-{levels}-{level}", [holds])
    return holds


def test_groups_nested_as_deep_as_the_limit_are_followed_and_deeper_ones_refused(
    directory: Slapd,
) -> None:
    deepest_followed = _nest(directory, MAX_GROUP_NESTING)
    person = sign_in(directory, "nora", role_groups={"edtech": deepest_followed})
    assert person.role is Role.EDTECH

    # One level more anywhere among her groups, even away from the role group.
    too_deep = _nest(directory, MAX_GROUP_NESTING + 1)
    refused = refusal(
        directory, "nora", directory.people["nora"].password, role_groups={"edtech": too_deep}
    )
    assert isinstance(refused, SignInFailed)
    assert f"nested more than {MAX_GROUP_NESTING} deep" in refused.message


def test_groups_granting_two_roles_are_refused_naming_both(directory: Slapd) -> None:
    # duo is in cn=edtech and in cn=btc-101.
    refused = refusal(directory, "duo", directory.people["duo"].password)

    assert isinstance(refused, SignInFailed)
    assert "more than one role" in refused.message
    assert "EdTech" in refused.message
    assert "BTC" in refused.message
    assert group_dn("btc-101") in refused.message


def test_a_person_in_none_of_the_mapped_groups_is_refused(directory: Slapd) -> None:
    # nora is in cn=book-club, which grants nothing.
    refused = refusal(directory, "nora", directory.people["nora"].password)

    assert isinstance(refused, SignInFailed)
    assert refused.message == NO_ROLE
    assert "none of the directory groups" in refused.message


def test_role_groups_match_whatever_the_case_and_spacing_of_their_configured_dns(
    directory: Slapd,
) -> None:
    person = sign_in(
        directory, "ada", role_groups={"it": "CN=IT-Staff , OU=Groups, DC=District,DC=EXAMPLE"}
    )

    assert person.role is Role.IT


# -- passwords and usernames ------------------------------------------------------


def test_a_wrong_password_and_an_unknown_user_get_the_same_message(directory: Slapd) -> None:
    wrong_password = refusal(directory, "ada", directory.people["grace"].password)
    unknown_user = refusal(directory, "zed", directory.people["ada"].password)

    for refused in (wrong_password, unknown_user):
        assert type(refused) is SignInFailed
        assert refused.message == WRONG_CREDENTIALS
        assert refused.code == "sign_in_failed"


def test_a_username_matching_two_entries_is_refused_like_an_unknown_one(directory: Slapd) -> None:
    directory.add_person("ada", "Ada Elsewhere", ou="lincoln")

    refused = refusal(directory, "ada", directory.people["ada"].password)

    assert type(refused) is SignInFailed
    assert refused.message == WRONG_CREDENTIALS


def test_an_empty_password_is_refused_before_anything_reaches_the_directory(
    directory: Slapd,
) -> None:
    # This directory answers a DN with an empty password as a successful
    # (unauthenticated) bind: the hole the refusal closes.
    hole = subprocess.run(
        ["ldapwhoami", "-x", "-H", directory.url, "-D", person_dn("ada"), "-w", ""],
        capture_output=True,
        text=True,
    )
    assert hole.returncode == 0, hole.stderr
    ldap = LdapDirectory(directory.config())
    before = directory.connections()

    with pytest.raises(SignInFailed) as empty:
        ldap.authenticate("ada", "")
    time.sleep(0.2)  # slapd logs a connection as it accepts it: give it the chance
    assert directory.connections() == before
    assert empty.value.message == PASSWORD_REQUIRED

    # The count does move when a sign-in does reach the directory.
    ldap.authenticate("ada", directory.people["ada"].password)
    assert directory.connections() > before


def test_an_empty_username_is_refused_before_anything_reaches_the_directory(
    directory: Slapd,
) -> None:
    before = directory.connections()

    refused = refusal(directory, "", directory.people["ada"].password)

    time.sleep(0.2)
    assert directory.connections() == before
    assert refused.message == WRONG_CREDENTIALS


@pytest.mark.parametrize("username", ["ad*", "*", "*)(uid=*", "ada)(uid=*", "a*a", "ada\\"])
def test_a_username_with_filter_syntax_matches_nothing(directory: Slapd, username: str) -> None:
    # Pasted into the filter unescaped, "ad*" would find ada alone, and ada's
    # password would then sign in: the escaping is what refuses it.
    conn = ldap3.Connection(directory.url, SERVICE_DN, directory.service_password, auto_bind=True)
    conn.search(PEOPLE, "(uid=ad*)")
    assert [e.entry_dn for e in conn.entries] == [person_dn("ada")]
    conn.unbind()

    refused = refusal(directory, username, directory.people["ada"].password)

    assert type(refused) is SignInFailed
    assert refused.message == WRONG_CREDENTIALS


def test_a_changed_password_counts_at_the_next_sign_in(directory: Slapd) -> None:
    old = directory.people["ada"].password
    directory.set_password(person_dn("ada"), "a-new-passphrase")

    assert refusal(directory, "ada", old).message == WRONG_CREDENTIALS
    person = LdapDirectory(directory.config()).authenticate("ada", "a-new-passphrase")
    assert person.role is Role.IT


# -- roles are read afresh ----------------------------------------------------------


def test_leaving_a_group_revokes_the_role_at_next_sign_in(directory: Slapd) -> None:
    ldap = LdapDirectory(directory.config())
    password = directory.people["ada"].password
    assert ldap.authenticate("ada", password).role is Role.IT

    directory.remove_member(group_dn("it-staff"), person_dn("ada"))

    with pytest.raises(SignInFailed) as refused:
        ldap.authenticate("ada", password)
    assert refused.value.message == NO_ROLE


def test_leaving_one_buildings_group_takes_that_building_away_at_next_sign_in(
    directory: Slapd,
) -> None:
    ldap = LdapDirectory(directory.config())
    password = directory.people["sam"].password
    assert ldap.authenticate("sam", password).buildings == {"301", "302"}

    directory.remove_member(group_dn("sectec-302"), person_dn("sam"))

    assert ldap.authenticate("sam", password).buildings == {"301"}


def test_joining_a_group_grants_its_role_at_next_sign_in(directory: Slapd) -> None:
    ldap = LdapDirectory(directory.config())
    password = directory.people["nora"].password
    with pytest.raises(SignInFailed):
        ldap.authenticate("nora", password)

    directory.add_member(group_dn("principal-101"), person_dn("nora"))

    person = ldap.authenticate("nora", password)
    assert (person.role, person.buildings) == (Role.PRINCIPAL, {"101"})


# -- the directory failing: sign-in fails closed ------------------------------------


def test_a_stopped_directory_is_unavailable_and_sign_in_works_again_once_it_is_back(
    directory: Slapd,
) -> None:
    ldap = LdapDirectory(directory.config())
    password = directory.people["ada"].password

    directory.stop()
    with pytest.raises(DirectoryUnavailable) as caught:
        ldap.authenticate("ada", password)
    assert "could not be reached" in caught.value.message
    assert caught.value.http_status == 503
    assert not isinstance(caught.value.__cause__, OrchestratorError)  # translated from ldap3

    directory.start()
    assert ldap.authenticate("ada", password).role is Role.IT


def test_a_directory_that_accepts_but_never_answers_is_unavailable_within_the_timeout(
    directory: Slapd,
) -> None:
    ldap = LdapDirectory(directory.config(timeout_seconds=1.0))
    directory.freeze()
    try:
        started = time.monotonic()
        with pytest.raises(DirectoryUnavailable) as caught:
            ldap.authenticate("ada", directory.people["ada"].password)
        elapsed = time.monotonic() - started
    finally:
        directory.thaw()

    assert "did not answer in time" in caught.value.message
    assert elapsed < 5


def test_a_refused_service_account_is_unavailable_not_a_wrong_password(directory: Slapd) -> None:
    refused = refusal(
        directory, "ada", directory.people["ada"].password, bind_password="not-the-password"
    )

    assert type(refused) is DirectoryUnavailable
    assert "refused the orchestrator's service account" in refused.message
    assert SERVICE_DN in refused.message


def test_a_user_base_the_directory_does_not_hold_is_unavailable(directory: Slapd) -> None:
    refused = refusal(
        directory,
        "ada",
        directory.people["ada"].password,
        user_base="ou=nowhere,dc=district,dc=example",
    )

    assert type(refused) is DirectoryUnavailable
    assert "ou=nowhere" in refused.message


# -- passwords stay secret -------------------------------------------------------------


def test_no_password_appears_in_a_repr_a_message_or_a_log_line(
    directory: Slapd, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = directory.config()
    ldap = LdapDirectory(config)
    secrets = [directory.service_password, *(p.password for p in directory.people.values())]
    shown = [repr(config), repr(ldap), str(ldap)]

    shown += [
        repr(ldap.authenticate(uid, directory.people[uid].password)) for uid in ("ada", "bea")
    ]
    failures: list[OrchestratorError] = [
        refusal(directory, "ada", directory.people["grace"].password),  # wrong password
        refusal(directory, "duo", directory.people["duo"].password),  # two roles
        refusal(directory, "nora", directory.people["nora"].password),  # no role
        refusal(directory, "ada", directory.people["ada"].password, bind_password="x" * 12),
    ]
    directory.stop()
    failures.append(refusal(directory, "ada", directory.people["ada"].password))
    for failure in failures:
        shown += [repr(failure), *traceback.format_exception(failure)]
    shown += [record.getMessage() for record in caplog.records]

    assert caplog.records  # the sign-ins were logged, so the check below saw them
    for text in shown:
        for secret in secrets:
            assert secret not in text


# -- the pure rules ------------------------------------------------------------------


BASE = "ou=groups,dc=district,dc=example"


def test_parse_role_groups_accepts_the_district_keys_and_normalises_the_dns() -> None:
    parsed = parse_role_groups(
        {"it": "CN=IT-Staff, OU=Groups,DC=district,DC=example", "sectec:0301": f"cn=s,{BASE}"}
    )

    assert parsed == {"it": f"cn=it-staff,{BASE}", "sectec:0301": f"cn=s,{BASE}"}


@pytest.mark.parametrize(
    "key", ["IT", "teacher", "btc", "btc:", "btc:1a", "btc: 101", "it:101", "sectec:1234567", ""]
)
def test_parse_role_groups_refuses_a_bad_key_naming_it(key: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_role_groups({key: f"cn=g,{BASE}"})

    assert repr(key) in caught.value.message


@pytest.mark.parametrize("value", ["", "nonsense", "cn=", "cn=a,,dc=x", "=x"])
def test_parse_role_groups_refuses_a_value_that_is_not_a_dn_naming_key_and_value(
    value: str,
) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_role_groups({"btc:101": value})

    assert "'btc:101'" in caught.value.message
    assert repr(value) in caught.value.message


def test_parse_role_groups_refuses_one_group_granting_two_roles() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_role_groups({"it": f"cn=techs,{BASE}", "btc:101": f"CN=Techs,{BASE}"})

    assert "'btc:101' and 'it'" in caught.value.message


def test_parse_role_groups_lets_one_group_stand_for_several_buildings_of_one_role() -> None:
    parsed = parse_role_groups({"sectec:301": f"cn=hs,{BASE}", "sectec:302": f"cn=hs,{BASE}"})

    assert role_from_groups(parsed, frozenset({f"cn=hs,{BASE}"})) == (
        Role.SECTEC,
        frozenset({"301", "302"}),
    )


def test_parse_role_groups_refuses_an_empty_mapping() -> None:
    with pytest.raises(InvalidInput, match="no one could sign in"):
        parse_role_groups({})


_DISTRICT_KEYS = st.sampled_from(["it", "edtech"])
_BUILDING_KEYS = st.builds(
    lambda prefix, number: f"{prefix}:{number}",
    st.sampled_from(["sectec", "btc", "principal"]),
    st.from_regex(r"[0-9]{1,6}", fullmatch=True),
)
_ROLE_OF = {"it": Role.IT, "edtech": Role.EDTECH, "sectec": Role.SECTEC, "btc": Role.BTC}
_ROLE_OF["principal"] = Role.PRINCIPAL


def _role(key: str) -> Role:
    return _ROLE_OF[key.partition(":")[0]]


def _disguised(dn: str, upper: bool, spaced: bool) -> str:
    """``dn`` as a directory might write it: other case, spaces after the commas."""
    dn = dn.upper() if upper else dn
    return dn.replace(",", ", ") if spaced else dn


@given(
    keys=st.lists(st.one_of(_DISTRICT_KEYS, _BUILDING_KEYS), min_size=1, max_size=8, unique=True),
    data=st.data(),
    unrelated=st.lists(st.integers(0, 50), max_size=5),
    upper=st.booleans(),
    spaced=st.booleans(),
)
def test_the_groups_grant_the_one_role_of_their_keys_with_exactly_those_buildings(
    keys: list[str],
    data: st.DataObject,
    unrelated: list[int],
    upper: bool,
    spaced: bool,
) -> None:
    mapping = {key: f"cn=role-{i},{BASE}" for i, key in enumerate(keys)}
    member = data.draw(st.lists(st.sampled_from(keys), min_size=1, unique=True))
    groups = frozenset(
        [_disguised(mapping[k], upper, spaced) for k in member]
        + [f"cn=other-{n},{BASE}" for n in unrelated]
    )
    roles = {_role(k) for k in member}

    if len(roles) == 1:
        role, buildings = role_from_groups(mapping, groups)
        assert role in roles
        assert buildings == {k.partition(":")[2] for k in member if ":" in k}
    else:
        with pytest.raises(SignInFailed) as caught:
            role_from_groups(mapping, groups)
        for r in roles:
            assert r.label in caught.value.message


@given(
    keys=st.lists(st.one_of(_DISTRICT_KEYS, _BUILDING_KEYS), min_size=1, max_size=8, unique=True),
    unrelated=st.lists(st.integers(0, 50), max_size=5),
)
def test_groups_outside_the_mapping_grant_nothing(keys: list[str], unrelated: list[int]) -> None:
    mapping = {key: f"cn=role-{i},{BASE}" for i, key in enumerate(keys)}

    with pytest.raises(SignInFailed) as caught:
        role_from_groups(mapping, frozenset(f"cn=other-{n},{BASE}" for n in unrelated))

    assert caught.value.message == NO_ROLE


@given(st.text(max_size=40))
def test_normalising_any_text_gives_a_dn_or_invalid_input_and_is_idempotent(text: str) -> None:
    try:
        normal = normalise_dn(text)
    except InvalidInput:
        return
    assert normalise_dn(normal) == normal


# -- configuration refused before any connection ----------------------------------------


def _config(**overrides: object) -> DirectoryConfig:
    fields: dict[str, object] = {
        "url": "ldap://127.0.0.1:1",
        "bind_dn": SERVICE_DN,
        "bind_password": "service-secret",
        "user_base": PEOPLE,
        "group_base": GROUPS,
        "role_groups": ROLE_GROUPS,
    }
    fields.update(overrides)
    return DirectoryConfig(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"url": "http://dc.district.example"}, "url"),
        ({"url": "ldap://"}, "url"),
        ({"url": "ldap://dc.district.example/dc=district"}, "url"),
        ({"url": "ldap://dc.district.example:99999"}, "url"),
        ({"url": "ldaps://dc.district.example", "start_tls": True}, "url"),
        ({"bind_password": ""}, "bind_password"),
        ({"bind_dn": "orchestrator"}, "bind_dn"),
        ({"user_filter": "(uid=%s)"}, "user_filter"),
        ({"user_filter": "(&(uid={username})"}, "user_filter"),
        ({"role_groups": {"it": "cn=it-staff,ou=elsewhere,dc=district,dc=example"}}, "role_groups"),
        ({"role_groups": {"admin": group_dn("it-staff")}}, "role_groups"),
        ({"ca_file": Path("/etc/hostname")}, "ca_file"),  # a CA file without TLS
        ({"url": "ldaps://dc.district.example", "ca_file": Path("/nonexistent.pem")}, "ca_file"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
    ],
)
def test_a_bad_configuration_is_refused_naming_the_setting(
    overrides: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        LdapDirectory(_config(**overrides))

    assert caught.value.field == field


def test_the_service_password_is_not_in_the_configurations_repr() -> None:
    config = _config()

    assert "service-secret" not in repr(config)
    assert config.bind_password == "service-secret"


# -- TLS: the server's certificate is validated ------------------------------------------


@pytest.fixture
def tls_directory() -> Iterator[Slapd]:
    with start_slapd(tls=True) as server:
        yield server


def test_ldaps_with_the_districts_ca_signs_in(tls_directory: Slapd) -> None:
    person = sign_in(
        tls_directory, "ada", url=tls_directory.ldaps_url, ca_file=tls_directory.ca_file
    )

    assert person.role is Role.IT


def test_start_tls_with_the_districts_ca_signs_in(tls_directory: Slapd) -> None:
    person = sign_in(tls_directory, "sam", start_tls=True, ca_file=tls_directory.ca_file)

    assert (person.role, person.buildings) == (Role.SECTEC, {"301", "302"})


@pytest.mark.parametrize("how", ["ldaps", "start_tls"])
def test_a_certificate_from_another_ca_is_unavailable_before_any_password_is_sent(
    tls_directory: Slapd, how: str
) -> None:
    other_ca = make_ca(tls_directory.folder, "other")
    settings: dict[str, Any] = (
        {"url": tls_directory.ldaps_url} if how == "ldaps" else {"start_tls": True}
    )

    binds = [f'BIND dn="{SERVICE_DN}"', f'BIND dn="{person_dn("ada")}"']

    refused = refusal(
        tls_directory, "ada", tls_directory.people["ada"].password, ca_file=other_ca, **settings
    )

    assert type(refused) is DirectoryUnavailable
    assert "TLS certificate that could not be verified" in refused.message
    log = tls_directory.log.read_text()
    assert not [bind for bind in binds if bind in log]
    # The same sign-in with the district's CA does bind, where the log shows it.
    sign_in(tls_directory, "ada", ca_file=tls_directory.ca_file, **settings)
    log = tls_directory.log.read_text()
    assert [bind for bind in binds if bind in log] == binds


def test_a_certificate_for_another_host_name_is_unavailable(tls_directory: Slapd) -> None:
    tls_directory.reissue_certificate(["dc.elsewhere.example"])

    refused = refusal(
        tls_directory,
        "ada",
        tls_directory.people["ada"].password,
        url=tls_directory.ldaps_url,
        ca_file=tls_directory.ca_file,
    )

    assert type(refused) is DirectoryUnavailable
    assert "TLS certificate that could not be verified" in refused.message


def test_start_tls_on_a_directory_without_it_is_unavailable_not_sent_in_the_clear(
    directory: Slapd,
) -> None:
    # This directory has no certificate, so it cannot start TLS.
    refused = refusal(directory, "ada", directory.people["ada"].password, start_tls=True)

    assert type(refused) is DirectoryUnavailable
    assert "refused StartTLS" in refused.message
    assert f'BIND dn="{SERVICE_DN}"' not in directory.log.read_text()
