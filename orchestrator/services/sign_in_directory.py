"""The district's LDAP / Active Directory as signing in sees it.

:mod:`services.accounts` asks it about anyone without a local password; the
adapter that speaks LDAP is :mod:`remote.ldap_directory`. This module holds
only what the two agree on and the directory the settings configure, so that
:class:`~orchestrator.services.context.Context`, which carries the directory,
builds on nothing that builds on it.
"""

from __future__ import annotations

from typing import Protocol

from orchestrator.config import Settings
from orchestrator.domain.states import Role
from orchestrator.errors import InvalidInput


class DirectoryPerson(Protocol):
    """What the directory says about someone who signed in (see remote/ldap_directory.py)."""

    @property
    def username(self) -> str: ...
    @property
    def display_name(self) -> str: ...
    @property
    def role(self) -> Role: ...
    @property
    def buildings(self) -> frozenset[str]: ...


class Directory(Protocol):
    """Who someone is, asked of the directory with their password."""

    def authenticate(self, username: str, password: str) -> DirectoryPerson:
        """Raises: SignInFailed, DirectoryUnavailable."""
        ...


def directory_from_settings(settings: Settings) -> Directory | None:
    """The configured directory, or None for local accounts only.

    Raises:
        InvalidInput: an LDAP setting that is missing or malformed (named).
    """
    if not settings.ldap_url:
        return None
    from orchestrator.remote.ldap_directory import (
        DirectoryConfig,
        LdapDirectory,
        parse_role_groups,
    )

    for name in ("ldap_bind_dn", "ldap_user_base", "ldap_group_base"):
        if not getattr(settings, name):
            raise InvalidInput(f"must be set when ldap_url is ({settings.ldap_url})", field=name)
    if not settings.ldap_role_groups:
        raise InvalidInput("must map at least one role to a group", field="ldap_role_groups")
    password = settings.ldap_bind_password
    return LdapDirectory(
        DirectoryConfig(
            url=settings.ldap_url,
            bind_dn=settings.ldap_bind_dn,
            bind_password=password.get_secret_value() if password else "",
            user_base=settings.ldap_user_base,
            group_base=settings.ldap_group_base,
            role_groups=parse_role_groups(settings.ldap_role_groups),
            user_filter=settings.ldap_user_filter,
            start_tls=settings.ldap_start_tls,
            ca_file=settings.ldap_ca_file,
        )
    )
