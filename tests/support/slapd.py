"""A real OpenLDAP server on loopback, standing in for the district's directory.

:func:`start_slapd` writes a ``slapd.conf`` (mdb backend, the core, cosine,
inetorgperson and nis schemas) into a fresh temp folder, loads a small
district tree with ``slapadd``, runs ``slapd`` in the foreground on
``ldap://127.0.0.1:<free port>/`` and waits until it answers a bind. On exit
the server is stopped and the folder removed. A ``slapd`` the Debian package
may have started on port 389 is left alone: this one has its own port, folder
and database.

The tree (under ``dc=district,dc=example``)::

    ou=services  cn=orchestrator           the service account the adapter searches with
    ou=people    ada, ivan                 in cn=it-staff                    -> IT
                 grace                     in cn=edtech                      -> EdTech
                 bea                       in cn=lincoln-techs, which is in cn=btc-101
                                           (and in cn=lincoln-helpers, which is in
                                           cn=lincoln-techs: a membership cycle) -> BTC 101
                 sam                       in cn=sectec-301 and cn=sectec-302 -> SecTec 301, 302
                 pat                       in cn=principal-101 (groupOfUniqueNames) -> Principal 101
                 nora                      in cn=book-club only              -> no role
                 duo                       in cn=edtech and cn=btc-101       -> two roles
    ou=groups    one group per role key (see ROLE_GROUPS), cn=lincoln-techs,
                 cn=lincoln-helpers, cn=book-club

``start_slapd(tls=True)`` also gives it a certificate for 127.0.0.1 from a test
CA (``ca_file``), for StartTLS on ``url`` and TLS on ``ldaps_url``;
:meth:`Slapd.reissue_certificate` and :func:`make_ca` make the wrong ones.

The server is configured like a permissive directory: it accepts an
unauthenticated bind (a DN with an empty password) as a success, the hole
the adapter must not fall into. slapd's ``stats`` log is kept in ``log``;
:meth:`Slapd.connections` counts the connections it accepted, so a test can
prove that nothing reached the server.

Usage from another test module::

    from tests.support.slapd import Slapd, start_slapd

    @pytest.fixture
    def directory() -> Iterator[Slapd]:
        with start_slapd() as server:
            yield server

    def test_something(directory: Slapd) -> None:
        ldap = LdapDirectory(directory.config())
        person = ldap.authenticate("ada", directory.people["ada"].password)

Needs Debian's ``slapd`` and ``ldap-utils`` (``bash .ci/run`` installs them).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import ldap3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from orchestrator.remote.ldap_directory import DirectoryConfig

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")
SUFFIX = "dc=district,dc=example"
ROOT_DN = f"cn=admin,{SUFFIX}"
SERVICE_DN = f"cn=orchestrator,ou=services,{SUFFIX}"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"


def group_dn(cn: str) -> str:
    return f"cn={cn},{GROUPS}"


def person_dn(uid: str) -> str:
    return f"uid={uid},{PEOPLE}"


ROLE_GROUPS: dict[str, str] = {
    "it": group_dn("it-staff"),
    "edtech": group_dn("edtech"),
    "btc:101": group_dn("btc-101"),
    "sectec:301": group_dn("sectec-301"),
    "sectec:302": group_dn("sectec-302"),
    "principal:101": group_dn("principal-101"),
}
"""The role mapping :meth:`Slapd.config` uses unless told otherwise."""

_PEOPLE = {
    "ada": "Ada Lovelace",
    "ivan": "Ivan Sutherland",
    "grace": "Grace Hopper",
    "bea": "Bea Lincoln",
    "sam": "Sam Secondary",
    "pat": "Pat Principal",
    "nora": "Nora Nobody",
    "duo": "Duo Twohats",
}

# (cn, object class, members): uid=... for people, cn=... for groups.
_GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("it-staff", "groupOfNames", ("uid=ada", "uid=ivan")),
    ("edtech", "groupOfNames", ("uid=grace", "uid=duo")),
    ("btc-101", "groupOfNames", ("cn=lincoln-techs", "uid=duo")),
    ("lincoln-techs", "groupOfNames", ("uid=bea", "cn=lincoln-helpers")),
    ("lincoln-helpers", "groupOfNames", ("cn=lincoln-techs",)),
    ("sectec-301", "groupOfNames", ("uid=sam",)),
    ("sectec-302", "groupOfNames", ("uid=sam",)),
    ("principal-101", "groupOfUniqueNames", ("uid=pat",)),
    ("book-club", "groupOfNames", ("uid=nora",)),
)


def _member_dn(short: str) -> str:
    kind, _, name = short.partition("=")
    return person_dn(name) if kind == "uid" else group_dn(name)


def ssha(password: str) -> str:
    """An ``{SSHA}`` userPassword value, as slappasswd makes one."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


@dataclass(frozen=True)
class Person:
    uid: str
    display_name: str
    dn: str
    password: str = field(repr=False)


@dataclass
class Slapd:
    """A running test directory and what a test needs to change it."""

    folder: Path
    port: int
    root_password: str = field(repr=False)
    service_password: str = field(repr=False)
    people: dict[str, Person]
    log: Path
    tls_port: int | None = None
    """With ``start_slapd(tls=True)``: where ldaps:// listens (StartTLS is on ``port``)."""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        assert self.tls_port is not None, "start_slapd(tls=True) listens on ldaps://"
        return f"ldaps://127.0.0.1:{self.tls_port}"

    @property
    def ca_file(self) -> Path:
        """The test CA that signed the server's certificate."""
        return self.folder / "ca.pem"

    def reissue_certificate(self, names: list[str], *, ca: str = "ca") -> None:
        """Restart with a certificate for ``names`` (host names or IP addresses), signed
        by the CA in ``<ca>.pem``: the district's (``ca``) or one :func:`make_ca` made."""
        self.stop()
        _issue(self.folder, ca, names)
        self.start()

    def config(
        self, role_groups: Mapping[str, str] | None = None, **overrides: object
    ) -> DirectoryConfig:
        """The adapter's settings for this directory; ``overrides`` replace any field."""
        fields: dict[str, object] = {
            "url": self.url,
            "bind_dn": SERVICE_DN,
            "bind_password": self.service_password,
            "user_base": PEOPLE,
            "group_base": GROUPS,
            "role_groups": dict(ROLE_GROUPS if role_groups is None else role_groups),
            "timeout_seconds": 2.0,
        }
        fields.update(overrides)
        return DirectoryConfig(**fields)  # type: ignore[arg-type]

    # -- changing the tree (as the directory's administrator) ----------------

    def _admin(self) -> ldap3.Connection:
        conn = ldap3.Connection(
            ldap3.Server("127.0.0.1", port=self.port, get_info=ldap3.NONE),
            user=ROOT_DN,
            password=self.root_password,
            raise_exceptions=True,
        )
        conn.bind()
        return conn

    def _modify(self, dn: str, changes: dict[str, list[tuple[str, list[str]]]]) -> None:
        conn = self._admin()
        try:
            conn.modify(dn, changes)
        finally:
            conn.unbind()

    def add_member(self, group: str, member: str) -> None:
        """Put ``member`` (a DN) into ``group`` (a DN), by ``member`` or ``uniqueMember``."""
        self._modify(group, {self._member_attribute(group): [(ldap3.MODIFY_ADD, [member])]})

    def remove_member(self, group: str, member: str) -> None:
        """Take ``member`` out of ``group``; a group left empty holds the empty DN, as
        groupOfNames must hold something (the usual placeholder)."""
        attribute = self._member_attribute(group)
        conn = self._admin()
        try:
            conn.search(group, "(objectClass=*)", ldap3.BASE, attributes=[attribute])
            left = [m for m in conn.entries[0][attribute].values if m.lower() != member.lower()]
            conn.modify(group, {attribute: [(ldap3.MODIFY_REPLACE, left or [""])]})
        finally:
            conn.unbind()

    def set_password(self, dn: str, password: str) -> None:
        self._modify(dn, {"userPassword": [(ldap3.MODIFY_REPLACE, [ssha(password)])]})

    def add_person(self, uid: str, display_name: str, *, ou: str | None = None) -> Person:
        """A new person under ou=people, or under ``ou=<ou>,ou=people`` (created if
        missing), with a fresh password."""
        base = PEOPLE if ou is None else f"ou={ou},{PEOPLE}"
        person = Person(uid, display_name, f"uid={uid},{base}", f"pw-{uid}-{os.urandom(4).hex()}")
        conn = self._admin()
        try:
            if ou is not None:
                with suppress(ldap3.core.exceptions.LDAPEntryAlreadyExistsResult):
                    conn.add(base, "organizationalUnit", {"ou": ou})
            conn.add(person.dn, "inetOrgPerson", _person_attributes(person))
        finally:
            conn.unbind()
        return person

    def add_group(self, cn: str, members: list[str]) -> str:
        """A new groupOfNames under ou=groups holding ``members`` (DNs); returns its DN."""
        dn = group_dn(cn)
        conn = self._admin()
        try:
            conn.add(dn, "groupOfNames", {"cn": cn, "member": members})
        finally:
            conn.unbind()
        return dn

    def _member_attribute(self, group: str) -> str:
        conn = self._admin()
        try:
            conn.search(group, "(objectClass=*)", ldap3.BASE, attributes=["objectClass"])
            classes = {c.lower() for c in conn.entries[0].objectClass.values}
        finally:
            conn.unbind()
        return "uniqueMember" if "groupofuniquenames" in classes else "member"

    # -- the server ----------------------------------------------------------

    def connections(self) -> int:
        """How many connections slapd has accepted so far (from its stats log)."""
        return sum(" ACCEPT from " in line for line in self.log.read_text().splitlines())

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    SLAPD,
                    "-d",
                    "stats",
                    "-f",
                    str(self.folder / "slapd.conf"),
                    "-h",
                    " ".join(
                        [
                            f"ldap://127.0.0.1:{self.port}/",
                            *([f"ldaps://127.0.0.1:{self.tls_port}/"] if self.tls_port else []),
                        ]
                    ),
                ],
                stdout=log,
                stderr=log,
            )
        _wait_until_it_answers(self)

    def stop(self) -> None:
        """Stop the server (a later :meth:`start` brings it back with the same data)."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGCONT)
                self.process.terminate()
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            self.process = None

    def freeze(self) -> None:
        """SIGSTOP the server: connections are still accepted by the kernel, never answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


def _person_attributes(person: Person) -> dict[str, str]:
    return {
        "uid": person.uid,
        "cn": person.display_name,
        "sn": person.display_name.split()[-1],
        "displayName": person.display_name,
        "userPassword": ssha(person.password),
    }


def _ldif(people: dict[str, Person], service_password: str) -> str:
    def entry(dn: str, attributes: list[tuple[str, str]]) -> str:
        return "\n".join([f"dn: {dn}", *(f"{k}: {v}" for k, v in attributes)]) + "\n"

    entries = [
        entry(
            SUFFIX,
            [
                ("objectClass", "dcObject"),
                ("objectClass", "organization"),
                ("dc", "district"),
                ("o", "District"),
            ],
        ),
        *(
            entry(f"ou={ou},{SUFFIX}", [("objectClass", "organizationalUnit"), ("ou", ou)])
            for ou in ("services", "people", "groups")
        ),
        entry(
            SERVICE_DN,
            [
                ("objectClass", "organizationalRole"),
                ("objectClass", "simpleSecurityObject"),
                ("cn", "orchestrator"),
                ("userPassword", ssha(service_password)),
            ],
        ),
    ]
    for person in people.values():
        attributes = [("objectClass", "inetOrgPerson")]
        attributes += list(_person_attributes(person).items())
        entries.append(entry(person.dn, attributes))
    for cn, object_class, members in _GROUPS:
        attribute = "uniqueMember" if object_class == "groupOfUniqueNames" else "member"
        attributes = [("objectClass", object_class), ("cn", cn)]
        attributes += [(attribute, _member_dn(m)) for m in members]
        entries.append(entry(group_dn(cn), attributes))
    return "\n".join(entries)


def make_ca(folder: Path, name: str) -> Path:
    """A self-signed CA: its key in ``<name>.key``, its certificate in ``<name>.pem``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"District test CA {name}")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_key(folder / f"{name}.key", key)
    (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return folder / f"{name}.pem"


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _issue(folder: Path, ca: str, names: list[str]) -> None:
    """server.pem / server.key: a server certificate for ``names`` signed by ``ca``."""
    ca_key = serialization.load_pem_private_key((folder / f"{ca}.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((folder / f"{ca}.pem").read_bytes())
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    alternative_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alternative_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternative_names.append(x509.DNSName(name))
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(folder / "server.key", key)
    (folder / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _slapd_conf(folder: Path, root_password: str, *, tls: bool) -> str:
    schemas = "\n".join(f"include /etc/ldap/schema/{s}.schema" for s in SCHEMAS)
    certificates = (
        f"""TLSCACertificateFile {folder / "ca.pem"}
TLSCertificateFile {folder / "server.pem"}
TLSCertificateKeyFile {folder / "server.key"}
"""
        if tls
        else ""
    )
    return f"""{schemas}
{certificates}pidfile {folder / "slapd.pid"}
argsfile {folder / "slapd.args"}
modulepath /usr/lib/ldap
moduleload back_mdb
# A permissive directory: a DN with an empty password binds (unauthenticated).
allow bind_anon_dn
password-hash {{SSHA}}

database mdb
maxsize 16777216
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {ssha(root_password)}
directory {folder / "data"}
index objectClass eq
index uid eq
index member,uniqueMember eq
access to attrs=userPassword
    by self write
    by anonymous auth
    by * none
access to *
    by users read
    by * none
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_it_answers(server: Slapd, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        assert server.process is not None
        if server.process.poll() is not None:
            pytest.fail(
                f"slapd exited with {server.process.returncode}:\n{server.log.read_text()[-2000:]}"
            )
        try:
            server._admin().unbind()
            return
        except ldap3.core.exceptions.LDAPException as exc:
            last = exc
            time.sleep(0.05)
    pytest.fail(f"slapd on port {server.port} did not answer within {timeout:.0f}s: {last}")


@contextmanager
def start_slapd(*, tls: bool = False) -> Iterator[Slapd]:
    """A running test directory holding the district tree; stopped and removed on exit.

    With ``tls``, it also speaks StartTLS on ``url`` and TLS on ``ldaps_url``, with a
    certificate for 127.0.0.1 signed by a test CA (``ca_file``)."""
    for tool in (SLAPD, SLAPADD):
        if not os.access(tool, os.X_OK):
            pytest.fail(
                f"{tool} is missing: the directory tests need Debian's slapd and ldap-utils "
                "(bash .ci/run installs them)"
            )
    folder = Path(tempfile.mkdtemp(prefix="orchestrator-slapd-"))
    server: Slapd | None = None
    try:
        (folder / "data").mkdir()
        root_password = f"root-{os.urandom(6).hex()}"
        service_password = f"service-{os.urandom(6).hex()}"
        people = {
            uid: Person(uid, name, person_dn(uid), f"pw-{uid}-{os.urandom(4).hex()}")
            for uid, name in _PEOPLE.items()
        }
        conf = folder / "slapd.conf"
        if tls:
            make_ca(folder, "ca")
            _issue(folder, "ca", ["127.0.0.1"])
        conf.write_text(_slapd_conf(folder, root_password, tls=tls))
        loaded = subprocess.run(
            [SLAPADD, "-q", "-f", str(conf), "-b", SUFFIX],
            input=_ldif(people, service_password),
            text=True,
            capture_output=True,
        )
        if loaded.returncode != 0:
            pytest.fail(f"slapadd could not load the district tree:\n{loaded.stderr}")
        server = Slapd(
            folder=folder,
            port=_free_port(),
            root_password=root_password,
            service_password=service_password,
            people=people,
            log=folder / "slapd.log",
            tls_port=_free_port() if tls else None,
        )
        server.start()
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
