"""Signing in against the district's directory (OpenLDAP or Active Directory), with ldap3.

A sign-in (:meth:`LdapDirectory.authenticate`) goes:

1. An empty password is refused before anything touches the network: an LDAP
   simple bind with a DN and no password is an *unauthenticated* bind, which
   many directories (Active Directory among them) answer with success.
2. Bind as the orchestrator's service account and search ``user_base`` with
   ``user_filter``, the username escaped (RFC 4515), so ``*)(uid=*`` matches
   nothing. Exactly one entry, or the sign-in fails.
3. Bind as that entry's DN with the password, on a connection of its own.
4. As the service account again: the groups under ``group_base`` whose
   ``member`` (groupOfNames) or ``uniqueMember`` (groupOfUniqueNames) is the
   person, then the groups holding those, level by level. Each group is
   followed once (memberships may form cycles), and at most
   :data:`MAX_GROUP_NESTING` levels deep.
5. :func:`role_from_groups`: the configured role groups among them (DNs
   compared normalised: case and spaces) give one role and its buildings.

Nothing is cached: every sign-in opens fresh connections and reads the groups
again, so leaving a group takes its role away at the next sign-in.

Errors::

    SignInFailed          "wrong username or password": unknown username, a
                          username matching several entries, wrong password (one
                          message for all, so no one learns which usernames exist);
                          groups nested deeper than MAX_GROUP_NESTING
    └ NoRoleGranted       in none of the mapped groups; groups granting two roles
                          (the service then takes the person's role away)
    DirectoryUnavailable  the directory unreachable, timing out, TLS failing, the
                          service account's bind or searches refused (sign-in fails
                          closed: there is nothing to fall back to)
    InvalidInput          the configuration: address, filter, DNs, role groups

Every ldap3 exception is translated here (``raise ... from exc``); nothing
above this module sees one. Passwords are in no ``repr``, message or log line:
the ldap3 connections holding them (whose own ``repr`` shows the password) never
leave this module.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
import ssl
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from orchestrator.domain import validation
from orchestrator.domain.states import Role
from orchestrator.errors import (
    DirectoryUnavailable,
    InvalidInput,
    NoRoleGranted,
    OrchestratorError,
    SignInFailed,
)

log = logging.getLogger(__name__)

WRONG_CREDENTIALS = "wrong username or password"
PASSWORD_REQUIRED = "a password is required to sign in"
NO_ROLE = (
    "you are in none of the directory groups the orchestrator maps to a role: "
    "ask IT to add you to your role's group"
)
MAX_GROUP_NESTING = 10
"""Levels of groups-in-groups followed; a person's groups nested deeper are refused
rather than read in part (a part could hide a second role)."""

_DISTRICT_KEYS = {"it": Role.IT, "edtech": Role.EDTECH}
_BUILDING_KEYS = {"sectec": Role.SECTEC, "btc": Role.BTC, "principal": Role.PRINCIPAL}
_KEY_FORMS = "'it', 'edtech', 'sectec:NNN', 'btc:NNN' or 'principal:NNN' (NNN a building number)"
_ROLE_ORDER = list(Role)

# LDAP result codes (RFC 4511).
_SUCCESS = 0
_SIZE_LIMIT_EXCEEDED = 4
_NO_SUCH_OBJECT = 32
_INVALID_CREDENTIALS = 49
_BUSY, _UNAVAILABLE, _OTHER = 51, 52, 80
_PAGED_RESULTS = "1.2.840.113556.1.4.319"
_PAGE_SIZE = 500
_DNS_PER_FILTER = 50
"""Groups asked about in one search: keeps the filter well under server limits."""
_FILTER_ATTRIBUTE = re.compile(r"\(\s*([A-Za-z][A-Za-z0-9-]*)\s*=\s*\{username\}\s*\)")


@dataclass(frozen=True)
class DirectoryConfig:
    """How the orchestrator reaches the district's directory."""

    url: str
    """``ldap://host[:port]`` or ``ldaps://host[:port]``."""
    bind_dn: str
    """The service account the orchestrator searches with."""
    bind_password: str = field(repr=False)
    user_base: str
    """Where people are searched."""
    group_base: str
    """Where groups are searched, nested ones included."""
    role_groups: Mapping[str, str]
    """``it``, ``edtech``, ``sectec:301``, ``btc:101``, ``principal:101`` -> a group's DN."""
    user_filter: str = "(uid={username})"
    """Active Directory: ``(sAMAccountName={username})``."""
    start_tls: bool = False
    ca_file: Path | None = None
    """Validates the server's certificate (ldaps / StartTLS); else the system's trust store."""
    timeout_seconds: float = 5.0
    """Connecting, and each answer (whole seconds, rounded up: ldap3 sets it on the socket so)."""


@dataclass(frozen=True)
class DirectoryPerson:
    """Who signed in, and the one role (with its buildings) the directory grants them."""

    username: str
    """The directory's spelling, lowercased: uid and sAMAccountName match regardless of case."""
    display_name: str
    dn: str
    groups: frozenset[str]
    """Every group the person is in, nested groups resolved (normalised DNs)."""
    role: Role
    buildings: frozenset[str]
    """Building numbers for SecTec, BTC and Principal; empty for IT and EdTech."""


def normalise_dn(dn: str, *, field: str = "dn") -> str:
    """``dn`` in the form DNs are compared in: attribute names and values lowercased,
    spaces around names, values and separators dropped, runs of spaces in values made one.

    Raises:
        InvalidInput: ``dn`` is not a distinguished name.
    """
    if not isinstance(dn, str):
        raise InvalidInput(f"{dn!r} is not a distinguished name", field=field)
    try:
        parts = parse_dn(dn, escape=False, strip=True)
    except (LDAPException, ValueError, IndexError) as exc:
        raise InvalidInput(f"{dn!r} is not a distinguished name ({exc})", field=field) from exc
    if not parts:
        raise InvalidInput(f"{dn!r} is not a distinguished name", field=field)
    return "".join(
        f"{name.strip().lower()}={' '.join(value.split()).lower()}{separator}"
        for name, value, separator in parts
    )


def _grant_of(key: object) -> tuple[Role, str | None]:
    """The role and building (None for a district role) a role_groups key stands for."""
    if isinstance(key, str):
        if key in _DISTRICT_KEYS:
            return _DISTRICT_KEYS[key], None
        prefix, colon, building = key.partition(":")
        if colon and prefix in _BUILDING_KEYS:
            try:
                validation.building_number(building)
            except InvalidInput as exc:
                raise InvalidInput(
                    f"{key!r}: {building!r} is not a building number (1-6 digits)",
                    field="role_groups",
                ) from exc
            return _BUILDING_KEYS[prefix], building
    raise InvalidInput(f"{key!r} is not a role group key: use {_KEY_FORMS}", field="role_groups")


def parse_role_groups(mapping: Mapping[str, str]) -> dict[str, str]:
    """The role groups checked, their DNs normalised.

    Keys are ``it``, ``edtech``, ``sectec:NNN``, ``btc:NNN`` or ``principal:NNN``,
    NNN a building number as the district writes it (digits, kept as written).
    One group may stand for several buildings of one role, never for two roles.

    Raises:
        InvalidInput: no role groups, a bad key, a value that is not a DN, or one
            group mapped to two roles; the message names the key or value.
    """
    if not mapping:
        raise InvalidInput(
            "no group is mapped to a role: no one could sign in", field="role_groups"
        )
    parsed: dict[str, str] = {}
    role_of_group: dict[str, tuple[Role, str]] = {}
    for key, value in mapping.items():
        role, _building = _grant_of(key)
        try:
            dn = normalise_dn(value)
        except InvalidInput as exc:
            raise InvalidInput(
                f"{key!r}: {value!r} is not a group's distinguished name", field="role_groups"
            ) from exc
        earlier = role_of_group.setdefault(dn, (role, key))
        if earlier[0] is not role:
            raise InvalidInput(
                f"{key!r} and {earlier[1]!r} name the same group {value!r}: "
                "one group cannot grant two roles",
                field="role_groups",
            )
        parsed[key] = dn
    return parsed


def role_from_groups(
    role_groups: Mapping[str, str], groups: frozenset[str]
) -> tuple[Role, frozenset[str]]:
    """The one role, and its buildings, that membership of ``groups`` grants.

    Both sides are compared as normalised DNs. Pure: no directory is asked.

    Raises:
        NoRoleGranted: none of ``groups`` is a role group, or they grant more than
            one role (the message names each role and the group granting it).
        InvalidInput: ``role_groups`` or one of ``groups`` is malformed.
    """
    member_of = {normalise_dn(g, field="groups") for g in groups}
    buildings: dict[Role, set[str]] = {}
    through: dict[Role, list[str]] = {}
    for key, dn in parse_role_groups(role_groups).items():
        if dn not in member_of:
            continue
        role, building = _grant_of(key)
        buildings.setdefault(role, set())
        if building is not None:
            buildings[role].add(building)
        if dn not in through.setdefault(role, []):
            through[role].append(dn)
    if not buildings:
        raise NoRoleGranted(NO_ROLE)
    if len(buildings) > 1:
        roles = sorted(buildings, key=_ROLE_ORDER.index)
        named = _and(f"{r.label} (through {', '.join(sorted(through[r]))})" for r in roles)
        raise NoRoleGranted(
            f"your directory groups grant more than one role: {named}; a person has one "
            "role in the orchestrator: ask IT to take you out of all but one of these groups"
        )
    [(role, granted)] = buildings.items()
    return role, frozenset(granted)


def _and(items: Iterable[str]) -> str:
    words = list(items)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _is_under(dn: str, base: str) -> bool:
    return dn == base or dn.endswith("," + base)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LdapDirectory:
    """The district's directory, as far as signing in needs it."""

    def __init__(self, config: DirectoryConfig) -> None:
        """Check the configuration; nothing is connected yet.

        Raises:
            InvalidInput: a bad address, filter, DN, timeout, CA file or role group.
        """
        self._config = config
        self._role_groups = parse_role_groups(config.role_groups)
        normalise_dn(config.bind_dn, field="bind_dn")
        normalise_dn(config.user_base, field="user_base")
        group_base = normalise_dn(config.group_base, field="group_base")
        outside = [k for k, dn in self._role_groups.items() if not _is_under(dn, group_base)]
        if outside:
            raise InvalidInput(
                f"the groups of {', '.join(map(repr, outside))} are not under the group base "
                f"{config.group_base!r}, where groups are searched",
                field="role_groups",
            )
        if not config.bind_password:
            raise InvalidInput(
                "the service account needs a password (without one a bind is unauthenticated)",
                field="bind_password",
            )
        _check_filter(config.user_filter)
        self._username_attribute = _username_attribute(config.user_filter)
        if not config.timeout_seconds > 0:
            raise InvalidInput("must be more than 0 seconds", field="timeout_seconds")
        self._host, self._port, self._use_ssl = _address(config)
        if config.ca_file is not None and not (self._use_ssl or config.start_tls):
            raise InvalidInput("a CA file is used only with ldaps:// or start_tls", field="ca_file")
        self._tls = _tls(config, self._host) if self._use_ssl or config.start_tls else None
        if self._tls is None and not _is_loopback(self._host):
            log.warning(
                "the directory at %s is reached without TLS: passwords cross the network "
                "unencrypted (use ldaps:// or start_tls)",
                config.url,
            )

    def __repr__(self) -> str:
        return f"LdapDirectory({self._config.url!r})"

    def authenticate(self, username: str, password: str) -> DirectoryPerson:
        """Check ``password`` for ``username`` and read the role their groups grant.

        Raises:
            SignInFailed: an empty password (refused before any connection); an
                unknown username or a wrong password (the same message); no role
                or two roles granted.
            DirectoryUnavailable: the directory did not answer, timed out, or
                refused the service account.
        """
        if not password:
            raise SignInFailed(PASSWORD_REQUIRED)
        if not username:
            raise SignInFailed(WRONG_CREDENTIALS)
        with (
            self._translated(),
            self._connection(self._config.bind_dn, self._config.bind_password) as service,
        ):
            self._bind_service(service)
            dn, found_username, display_name = self._find_person(service, username)
            self._check_password(dn, password, username)
            groups = self._groups_of(service, dn)
        try:
            role, buildings = role_from_groups(self._role_groups, groups)
        except SignInFailed as exc:
            log.info("sign-in refused for %s: %s", username, exc)
            raise
        log.info("%s signed in as %s", found_username, role.label)
        return DirectoryPerson(
            username=found_username,
            display_name=display_name,
            dn=dn,
            groups=groups,
            role=role,
            buildings=buildings,
        )

    # -- talking to the directory --------------------------------------------

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except OrchestratorError:
            raise
        except Exception as exc:
            # Not only LDAPException: ldap3 lets struct, socket and ssl errors
            # through too. Whatever it was, the sign-in is refused (fail closed).
            reason = _reason(exc)
            log.warning("the directory at %s %s (%s)", self._config.url, reason, exc)
            raise DirectoryUnavailable(
                f"the directory at {self._config.url} {reason}: sign-in is not possible "
                "until it answers"
            ) from exc

    @contextmanager
    def _connection(self, user: str, password: str) -> Iterator[ldap3.Connection]:
        # A fresh Server per connection: ldap3's Server remembers addresses it
        # found down, and a sign-in must see the directory as it is now.
        server = ldap3.Server(
            self._host,
            port=self._port,
            use_ssl=self._use_ssl,
            tls=self._tls,
            get_info=ldap3.NONE,
            connect_timeout=self._config.timeout_seconds,
        )
        conn = ldap3.Connection(
            server,
            user=user,
            password=password,
            authentication=ldap3.SIMPLE,
            read_only=True,
            auto_referrals=False,  # a referral would carry the password to another server
            # ldap3 packs this into SO_RCVTIMEO, which takes whole seconds.
            receive_timeout=math.ceil(self._config.timeout_seconds),
            raise_exceptions=False,
        )
        try:
            conn.open(read_server_info=False)
            if self._config.start_tls and not conn.start_tls(read_server_info=False):
                raise DirectoryUnavailable(
                    f"the directory at {self._config.url} refused StartTLS: sign-in is not "
                    "possible until it accepts it"
                )
            yield conn
        finally:
            # Closing must not hide why the sign-in ended (nor turn a refusal into
            # an error): ldap3 raises from unbind on a connection that never opened.
            with suppress(Exception):
                conn.unbind()

    def _bind_service(self, service: ldap3.Connection) -> None:
        if service.bind():
            return
        code, description = _result(service)
        log.warning(
            "the directory refused the service account %s: %s (%s)",
            self._config.bind_dn,
            description,
            code,
        )
        raise DirectoryUnavailable(
            f"the directory at {self._config.url} refused the orchestrator's service account "
            f"{self._config.bind_dn} ({description}): sign-in is not possible until IT fixes it"
        )

    def _find_person(self, service: ldap3.Connection, username: str) -> tuple[str, str, str]:
        """The DN, the directory's username and the display name of the one entry found."""
        search_filter = self._config.user_filter.replace(
            "{username}", escape_filter_chars(username)
        )
        attributes = ["displayName", "cn"]
        if self._username_attribute:
            attributes.append(self._username_attribute)
        service.search(
            self._config.user_base,
            search_filter,
            ldap3.SUBTREE,
            attributes=attributes,
            size_limit=2,
        )
        code, description = _result(service)
        if code not in (_SUCCESS, _SIZE_LIMIT_EXCEEDED):
            self._search_refused("people", self._config.user_base, code, description)
        entries = _entries(service)
        if len(entries) != 1:
            if entries:
                log.warning(
                    "sign-in refused: %d directory entries match %r", len(entries), username
                )
            else:
                log.info("sign-in refused: no directory entry matches %r", username)
            raise SignInFailed(WRONG_CREDENTIALS)
        entry = entries[0]
        values = _values(entry, self._username_attribute) if self._username_attribute else []
        same = [v for v in values if v.lower() == username.lower()]
        found = (same or values or [username])[0].lower()
        display_name = (_values(entry, "displayName") or _values(entry, "cn") or [found])[0]
        return str(entry["dn"]), found, display_name

    def _check_password(self, dn: str, password: str, username: str) -> None:
        with self._connection(dn, password) as user:
            if user.bind():
                return
            code, description = _result(user)
        if code in (_BUSY, _UNAVAILABLE, _OTHER):
            raise DirectoryUnavailable(
                f"the directory at {self._config.url} could not check the password "
                f"({description}): sign-in is not possible until it answers"
            )
        log.info(
            "sign-in refused for %s: the directory answered %s (%s)", username, description, code
        )
        raise SignInFailed(WRONG_CREDENTIALS)

    def _groups_of(self, service: ldap3.Connection, dn: str) -> frozenset[str]:
        person = normalise_dn(dn)
        seen = {person}
        frontier = [dn]
        for level in range(1, MAX_GROUP_NESTING + 2):
            found: list[str] = []
            for start in range(0, len(frontier), _DNS_PER_FILTER):
                chunk = [escape_filter_chars(d) for d in frontier[start : start + _DNS_PER_FILTER]]
                search_filter = "(|{})".format(
                    "".join(f"(member={d})(uniqueMember={d})" for d in chunk)
                )
                for group in self._search_dns(service, search_filter):
                    normal = normalise_dn(group)
                    if normal not in seen:
                        seen.add(normal)
                        found.append(group)
            if not found:
                return frozenset(seen - {person})
            if level > MAX_GROUP_NESTING:
                break
            frontier = found
        log.warning("sign-in refused: the groups of %s nest deeper than %d", dn, MAX_GROUP_NESTING)
        raise SignInFailed(
            f"your directory groups are nested more than {MAX_GROUP_NESTING} deep; the "
            "orchestrator does not guess a role from part of them: ask IT"
        )

    def _search_dns(self, service: ldap3.Connection, search_filter: str) -> list[str]:
        """DNs of the groups under group_base matching ``search_filter``, page by page."""
        dns: list[str] = []
        cookie: Any = None
        while True:
            service.search(
                self._config.group_base,
                search_filter,
                ldap3.SUBTREE,
                attributes=ldap3.NO_ATTRIBUTES,
                paged_size=_PAGE_SIZE,
                paged_cookie=cookie,
            )
            code, description = _result(service)
            if code != _SUCCESS:
                self._search_refused("groups", self._config.group_base, code, description)
            dns += [str(entry["dn"]) for entry in _entries(service)]
            controls = service.result.get("controls") or {}
            cookie = controls.get(_PAGED_RESULTS, {}).get("value", {}).get("cookie")
            if not cookie:
                return dns

    def _search_refused(self, what: str, base: str, code: int, description: str) -> None:
        hint = " (it does not exist)" if code == _NO_SUCH_OBJECT else ""
        raise DirectoryUnavailable(
            f"the directory at {self._config.url} refused the search for {what} under "
            f"{base}{hint}: {description}"
        )


def _result(conn: ldap3.Connection) -> tuple[int, str]:
    result = conn.result or {}
    return int(result.get("result", -1)), str(result.get("description", "no answer"))


def _entries(conn: ldap3.Connection) -> list[dict[str, Any]]:
    return [r for r in conn.response or [] if r.get("type") == "searchResEntry"]


def _values(entry: Mapping[str, Any], attribute: str) -> list[str]:
    attributes = entry.get("attributes") or {}
    value = next((v for k, v in attributes.items() if k.lower() == attribute.lower()), None)
    if value is None:
        return []
    return [str(v) for v in (value if isinstance(value, list) else [value]) if str(v)]


def _reason(exc: BaseException) -> str:
    text = str(exc).lower()
    if "timed out" in text or isinstance(exc, TimeoutError):
        return "did not answer in time"
    # A certificate refused during StartTLS comes as an LDAPStartTLSError too.
    if "certificate" in text:
        return "presented a TLS certificate that could not be verified"
    if isinstance(exc, ldap3.core.exceptions.LDAPStartTLSError):
        return "refused StartTLS"
    if isinstance(exc, ssl.SSLError) or "ssl" in text or "tls" in text:
        return "failed the TLS handshake"
    if isinstance(exc, ldap3.core.exceptions.LDAPSocketOpenError):
        return "could not be reached"
    return "stopped answering"


def _check_filter(user_filter: str) -> None:
    if not isinstance(user_filter, str) or "{username}" not in user_filter:
        raise InvalidInput("must contain {username}", field="user_filter")
    sample = user_filter.replace("{username}", "x")
    depth = 0
    for char in sample:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            break
    if not (sample.startswith("(") and sample.endswith(")")) or depth != 0:
        raise InvalidInput(
            f"{user_filter!r} is not an LDAP filter: it must be in balanced parentheses, "
            "e.g. (uid={username})",
            field="user_filter",
        )


def _username_attribute(user_filter: str) -> str | None:
    match = _FILTER_ATTRIBUTE.search(user_filter)
    return match.group(1) if match else None


def _address(config: DirectoryConfig) -> tuple[str, int, bool]:
    wrong = InvalidInput(
        f"{config.url!r} is not a directory address: use ldap://host[:port] or ldaps://host[:port]",
        field="url",
    )
    try:
        parts = urlsplit(config.url)
        port = parts.port
    except (ValueError, TypeError, AttributeError) as exc:
        raise wrong from exc
    scheme = parts.scheme.lower()
    if (
        scheme not in ("ldap", "ldaps")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise wrong
    if scheme == "ldaps" and config.start_tls:
        raise InvalidInput(
            "StartTLS is for ldap:// addresses; ldaps:// is TLS already", field="url"
        )
    use_ssl = scheme == "ldaps"
    return parts.hostname, port or (636 if use_ssl else 389), use_ssl


def _tls(config: DirectoryConfig, host: str) -> ldap3.Tls:
    if config.ca_file is not None and not Path(config.ca_file).is_file():
        raise InvalidInput(f"{str(config.ca_file)!r} is not a file", field="ca_file")
    try:
        return ldap3.Tls(
            validate=ssl.CERT_REQUIRED,
            ca_certs_file=str(config.ca_file) if config.ca_file is not None else None,
            sni=host,
        )
    except LDAPException as exc:
        raise InvalidInput(
            f"cannot use it to validate certificates ({exc})", field="ca_file"
        ) from exc
