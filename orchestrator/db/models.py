"""SQLModel tables. Schema changes go through Alembic (``db/migrations``).

Enumerations are stored as their string values and checked by constraints,
so the same schema works on SQLite and PostgreSQL. Every timestamp is UTC.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel

from orchestrator.domain.states import Kind, Level, Platform, Role, State


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no zone of its own)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _in(column: str, values: Any) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


def _utc() -> Any:
    return sa.Column(UTCDateTime(), nullable=False)


def _json(default: Any) -> Any:
    return sa.Column(sa.JSON(), nullable=False, default=default)


class Building(SQLModel, table=True):
    __tablename__ = "building"
    __table_args__ = (sa.CheckConstraint(_in("level", Level), name="building_level"),)

    id: int | None = Field(default=None, primary_key=True)
    number: str = Field(max_length=6, unique=True)
    name: str = Field(max_length=120)
    level: str = Field(max_length=16)


class Person(SQLModel, table=True):
    __tablename__ = "person"
    __table_args__ = (
        sa.CheckConstraint(_in("role", Role), name="person_role"),
        sa.CheckConstraint("source IN ('local', 'directory')", name="person_source"),
    )

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=64, unique=True)
    display_name: str = Field(max_length=120)
    role: str = Field(max_length=16)
    active: bool = Field(default=True)
    source: str = Field(
        default="local",
        max_length=9,
        description="local: signs in with its password; directory: LDAP decides role and buildings",
    )
    password_hash: str | None = Field(default=None, max_length=200, description="Argon2id")
    failed_sign_ins: int = Field(
        default=0, description="consecutive failures since the last success"
    )
    locked_until: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))


class WebSession(SQLModel, table=True):
    """A signed-in browser. The cookie holds a random token; only its SHA-256 is kept."""

    __tablename__ = "web_session"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    person_id: int = Field(foreign_key="person.id", index=True)
    csrf_token: str = Field(max_length=64, description="sent back with every form and API write")
    created_at: datetime = Field(sa_column=_utc())
    last_seen_at: datetime = Field(sa_column=_utc())
    expires_at: datetime = Field(sa_column=_utc())
    ended_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))


class ApiToken(SQLModel, table=True):
    """A token a script signs in with (``Authorization: Bearer``); only its SHA-256 is kept."""

    __tablename__ = "api_token"
    __table_args__ = (sa.UniqueConstraint("person_id", "name", name="api_token_name"),)

    id: int | None = Field(default=None, primary_key=True)
    person_id: int = Field(foreign_key="person.id", index=True)
    name: str = Field(max_length=64)
    prefix: str = Field(max_length=16, description="the token's first characters, to tell it apart")
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(sa_column=_utc())
    expires_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    last_used_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    revoked_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))


class PersonBuilding(SQLModel, table=True):
    """The buildings a building-scoped person (SecTec, BTC, principal) covers."""

    __tablename__ = "person_building"

    person_id: int = Field(foreign_key="person.id", primary_key=True)
    building_id: int = Field(foreign_key="building.id", primary_key=True)


class HardwareModel(SQLModel, table=True):
    """An entry of the Approved Technology List."""

    __tablename__ = "hardware_model"
    __table_args__ = (
        sa.UniqueConstraint("vendor", "model", name="hardware_model_vendor_model"),
        sa.CheckConstraint(_in("platform", Platform), name="hardware_model_platform"),
    )

    id: int | None = Field(default=None, primary_key=True)
    vendor: str = Field(max_length=60)
    model: str = Field(max_length=120)
    platform: str = Field(max_length=8)
    approved: bool = Field(default=True)
    end_of_support: date | None = Field(default=None)


class Releasable(SQLModel, table=True):
    """A base image, customized image or software package, with its chain state.

    One table for the three kinds so that the lifecycle, the compare-and-set
    transitions, decisions and audit treat them alike; kind-specific columns
    are nullable and checked per kind.
    """

    __tablename__ = "releasable"
    __table_args__ = (
        sa.UniqueConstraint("kind", "scope_key", "name", "version", name="releasable_identity"),
        sa.CheckConstraint(_in("kind", Kind), name="releasable_kind"),
        sa.CheckConstraint(_in("state", State), name="releasable_state"),
        sa.CheckConstraint(_in("platform", Platform), name="releasable_platform"),
        sa.CheckConstraint(
            "kind <> 'base_image' OR (level IS NOT NULL AND sunset_date IS NOT NULL "
            "AND os_version IS NOT NULL AND building_id IS NULL)",
            name="releasable_base_columns",
        ),
        sa.CheckConstraint(
            "kind <> 'custom_image' OR (base_id IS NOT NULL AND building_id IS NOT NULL)",
            name="releasable_custom_columns",
        ),
        sa.CheckConstraint(
            "kind <> 'package' OR audience IS NOT NULL", name="releasable_package_columns"
        ),
        sa.Index("releasable_kind_state", "kind", "state"),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)
    name: str = Field(max_length=63)
    version: str = Field(max_length=32)
    version_key: str = Field(max_length=64, description="zero-padded version for ordering")
    scope_key: str = Field(max_length=8, description="building number, or '*' district-wide")
    building_id: int | None = Field(default=None, foreign_key="building.id")
    platform: str = Field(max_length=8)
    level: str | None = Field(default=None, max_length=16)
    os_version: str | None = Field(default=None, max_length=60)
    base_id: int | None = Field(default=None, foreign_key="releasable.id")
    audience: str | None = Field(default=None, max_length=16)
    artifact_ref: str | None = Field(default=None, max_length=500)
    artifact_sha256: str | None = Field(default=None, max_length=64)
    settings: dict[str, str] = Field(default_factory=dict, sa_column=_json(dict))
    detection_rule: str | None = Field(default=None, max_length=500)
    sunset_date: date | None = Field(default=None)
    notes: str = Field(default="", max_length=2000)

    state: str = Field(max_length=16)
    state_version: int = Field(default=0, description="bumped by every compare-and-set write")
    digest: str = Field(max_length=71)
    author_id: int = Field(foreign_key="person.id")
    revised_by_id: int | None = Field(default=None, foreign_key="person.id")
    needs_rebase: bool = Field(default=False)
    supersedes_id: int | None = Field(default=None, foreign_key="releasable.id")
    created_at: datetime = Field(sa_column=_utc())
    updated_at: datetime = Field(sa_column=_utc())
    published_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))


class ReleasableModel(SQLModel, table=True):
    """Hardware models an image (or package) declares it supports."""

    __tablename__ = "releasable_model"

    releasable_id: int = Field(foreign_key="releasable.id", primary_key=True)
    hardware_model_id: int = Field(foreign_key="hardware_model.id", primary_key=True)


class ImagePackage(SQLModel, table=True):
    """Software packages a customized image carries."""

    __tablename__ = "image_package"

    image_id: int = Field(foreign_key="releasable.id", primary_key=True)
    package_id: int = Field(foreign_key="releasable.id", primary_key=True)


class ChainStepRow(SQLModel, table=True):
    """The approval chain policies, as data (see domain.policy)."""

    __tablename__ = "chain_step"

    kind: str = Field(max_length=16, primary_key=True)
    position: int = Field(primary_key=True)
    step: str = Field(max_length=16)
    roles: dict[str, str] = Field(default_factory=dict, sa_column=_json(dict))
    author_may_act: bool = Field(default=False)
    needs_evidence: bool = Field(default=False)


class Decision(SQLModel, table=True):
    """An approval or rejection of one chain step, bound to the digest it judged."""

    __tablename__ = "decision"

    id: int | None = Field(default=None, primary_key=True)
    releasable_id: int = Field(foreign_key="releasable.id", index=True)
    step: str = Field(max_length=16)
    outcome: str = Field(max_length=8)
    actor_id: int = Field(foreign_key="person.id")
    role: str = Field(max_length=16)
    reason: str = Field(default="", max_length=2000)
    digest: str = Field(max_length=71)
    overridden: list[dict[str, Any]] = Field(
        default_factory=list,
        sa_column=_json(list),
        description="failing checks a test sign-off overrode: persona, check, image test",
    )
    at: datetime = Field(sa_column=_utc())


class ImageTest(SQLModel, table=True):
    """One image test run: the image put on a test client, then the plan's checks as
    the student and the staff test account. Its per-persona results are TestRun rows."""

    __tablename__ = "image_test"
    __test__ = False  # not a pytest class
    __table_args__ = (
        sa.CheckConstraint(
            "status IN ('running', 'passed', 'failed', 'error')", name="image_test_status"
        ),
        sa.Index(
            "image_test_one_running_per_client",
            "client_id",
            unique=True,
            sqlite_where=sa.text("status = 'running'"),
            postgresql_where=sa.text("status = 'running'"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    releasable_id: int = Field(foreign_key="releasable.id", index=True)
    client_id: int = Field(foreign_key="client.id")
    client: str = Field(max_length=63, description="the test client's hostname")
    accounts_building: str = Field(max_length=6, description="whose test accounts signed in")
    digest: str = Field(max_length=71, description="the image's digest when it was tested")
    plan_digest: str = Field(max_length=71)
    status: str = Field(max_length=8)
    reason: str = Field(default="", max_length=2000)
    delivery_run_id: int | None = Field(default=None, foreign_key="run.id")
    owner: str = Field(max_length=120, description="host:pid of the process running it")
    actor_id: int = Field(foreign_key="person.id")
    role: str = Field(max_length=16)
    started_at: datetime = Field(sa_column=_utc())
    finished_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))


class TestRun(SQLModel, table=True):
    """A recorded test of an image or package with one persona's login."""

    __tablename__ = "test_run"
    __test__ = False  # not a pytest class

    id: int | None = Field(default=None, primary_key=True)
    releasable_id: int = Field(foreign_key="releasable.id", index=True)
    persona: str = Field(max_length=8)
    account: str = Field(default="", max_length=64)
    passed: bool
    checks: list[dict[str, Any]] = Field(default_factory=list, sa_column=_json(list))
    evidence: str = Field(default="", max_length=4000)
    attachments: list[dict[str, Any]] = Field(default_factory=list, sa_column=_json(list))
    actor_id: int = Field(foreign_key="person.id")
    role: str = Field(max_length=16)
    digest: str = Field(max_length=71)
    image_test_id: int | None = Field(
        default=None,
        foreign_key="image_test.id",
        index=True,
        description="the image test run that made it; None: recorded by hand",
    )
    plan_digest: str | None = Field(default=None, max_length=71)
    client: str | None = Field(default=None, max_length=63)
    signed_in: bool | None = Field(default=None, description="None: recorded by hand")
    at: datetime = Field(sa_column=_utc())


class AuditEntry(SQLModel, table=True):
    """Append-only, hash-chained record of every change and decision.

    Database triggers refuse UPDATE and DELETE; ``hash`` covers every column
    and ``prev_hash``, so a changed, removed or inserted row breaks the chain.
    """

    __tablename__ = "audit_entry"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    at: datetime = Field(sa_column=_utc())
    actor: str = Field(max_length=64)
    role: str = Field(max_length=16)
    action: str = Field(max_length=40)
    object_kind: str = Field(max_length=24)
    object_id: int | None = Field(default=None)
    object_ref: str = Field(max_length=200)
    building: str | None = Field(default=None, max_length=6, index=True)
    before: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(sa.JSON()))
    after: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(sa.JSON()))
    digest: str | None = Field(default=None, max_length=71)
    reason: str = Field(default="", max_length=2000)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64, unique=True)


class Notice(SQLModel, table=True):
    """A warning for people (sunset lead times, rebase needed); written once per key."""

    __tablename__ = "notice"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=120, unique=True)
    at: datetime = Field(sa_column=_utc())
    releasable_id: int | None = Field(default=None, foreign_key="releasable.id")
    building: str | None = Field(default=None, max_length=6)
    recipients: list[str] = Field(default_factory=list, sa_column=_json(list))
    message: str = Field(max_length=500)


class Client(SQLModel, table=True):
    """A computer in a building (room, lab or cart) that the orchestrator manages."""

    __tablename__ = "client"
    __table_args__ = (
        sa.CheckConstraint(_in("platform", Platform), name="client_platform"),
        sa.CheckConstraint("transport IN ('ssh', 'winrm')", name="client_transport"),
        sa.CheckConstraint("port > 0 AND port < 65536", name="client_port"),
    )

    id: int | None = Field(default=None, primary_key=True)
    hostname: str = Field(max_length=63, unique=True)
    building_id: int = Field(foreign_key="building.id", index=True)
    room: str = Field(max_length=40)
    platform: str = Field(max_length=8)
    model: str = Field(max_length=120, description="as reported or imported")
    hardware_model_id: int | None = Field(default=None, foreign_key="hardware_model.id")
    serial: str = Field(max_length=40, unique=True)
    mac: str = Field(max_length=17, unique=True, description="aa:bb:cc:dd:ee:ff")
    address: str = Field(max_length=253)
    port: int
    transport: str = Field(max_length=8)
    login_user: str | None = Field(
        default=None, max_length=64, description="remote login; None: the district default"
    )
    host_key: str | None = Field(default=None, max_length=800, description="pinned SSH host key")
    host_key_offered: str | None = Field(
        default=None,
        max_length=800,
        description="a key the host offered that differs from the pinned one (refused)",
    )
    host_vars: dict[str, str] = Field(
        default_factory=dict, sa_column=_json(dict), description="extra Ansible host variables"
    )
    test_client: bool = Field(default=False)
    current_image: str | None = Field(default=None, max_length=200)
    facts: dict[str, Any] = Field(default_factory=dict, sa_column=_json(dict))
    last_seen: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    created_at: datetime = Field(sa_column=_utc())


class ClientSoftware(SQLModel, table=True):
    """What one client is known to have installed: one row per detection marker.

    Kept by :mod:`orchestrator.services.installed`: ``gathered`` rows are the
    software list the client's last gather reported, replaced at each gather;
    ``installed`` rows are packages the orchestrator installed there and saw
    succeed, with the release (a Mac's ``pkgutil --pkgs`` names no versions).
    """

    __tablename__ = "client_software"
    __table_args__ = (
        sa.CheckConstraint("source IN ('gathered', 'installed')", name="client_software_source"),
        sa.Index("client_software_marker", "marker", "client_id"),
    )

    client_id: int = Field(foreign_key="client.id", primary_key=True)
    source: str = Field(max_length=10, primary_key=True)
    marker: str = Field(
        max_length=200,
        primary_key=True,
        description="lower case: name@version, receipt@version, a bare receipt, a product code",
    )
    releasable_id: int | None = Field(
        default=None, foreign_key="releasable.id", description="installed: the package release"
    )
    receipt: str | None = Field(
        default=None, max_length=200, description="installed on a Mac: its pkgutil receipt"
    )
    recorded_at: datetime = Field(sa_column=_utc())


class Run(SQLModel, table=True):
    """One playbook run against a set of clients."""

    __tablename__ = "run"
    __table_args__ = (
        sa.CheckConstraint(
            "status IN ('running', 'successful', 'failed', 'timeout', 'canceled')",
            name="run_status",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    playbook: str = Field(max_length=63)
    delivered: str | None = Field(
        default=None, max_length=200, description="the package or image it put on the clients"
    )
    building: str | None = Field(default=None, max_length=6, index=True)
    actor: str = Field(max_length=64)
    role: str = Field(max_length=16)
    status: str = Field(max_length=12)
    reason: str = Field(default="", max_length=500)
    rc: int | None = Field(default=None)
    started_at: datetime = Field(sa_column=_utc())
    finished_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))


class HostResult(SQLModel, table=True):
    """What one run did on one client."""

    __tablename__ = "host_result"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    client_id: int = Field(foreign_key="client.id")
    hostname: str = Field(max_length=63)
    status: str = Field(max_length=12, description="ok, changed, failed, unreachable, skipped")
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    failed_task: str | None = Field(default=None, max_length=200)
    message: str | None = Field(default=None, max_length=2000)
    reboot_required: bool = Field(
        default=False, description="an installer exited 3010/1641, or a module said so"
    )


class Credential(SQLModel, table=True):
    """A login secret for clients, encrypted with the installation's key (never plaintext)."""

    __tablename__ = "credential"

    name: str = Field(primary_key=True, max_length=40)
    ciphertext: bytes = Field(sa_column=sa.Column(sa.LargeBinary(), nullable=False))
    summary: str = Field(
        max_length=120, description="what may be shown: an SSH key's public fingerprint, or 'set'"
    )
    updated_by: str = Field(max_length=64)
    updated_at: datetime = Field(sa_column=_utc())


class TestAccount(SQLModel, table=True):
    """A building's student or staff test account (a district exception account).

    The password is Fernet ciphertext under the installation's key, like
    :class:`Credential`; ``summary`` is what may be shown ('password set').
    """

    __tablename__ = "test_account"
    __table_args__ = (
        sa.UniqueConstraint("building_id", "persona", name="test_account_building_persona"),
        sa.CheckConstraint("persona IN ('student', 'staff')", name="test_account_persona"),
    )

    id: int | None = Field(default=None, primary_key=True)
    building_id: int = Field(foreign_key="building.id")
    persona: str = Field(max_length=8)
    username: str = Field(max_length=64)
    ciphertext: bytes = Field(sa_column=sa.Column(sa.LargeBinary(), nullable=False))
    summary: str = Field(max_length=120)
    updated_by: str = Field(max_length=64)
    updated_at: datetime = Field(sa_column=_utc())


class TestCheck(SQLModel, table=True):
    """One check of an image's test plan (services/test_plans.py), run as a persona.

    A row with ``disabled_reason`` set is a customized image's record that it
    turned off the check of that name inherited from its base (kind, personas,
    parameters and timeout copied from the base's check when it was disabled).
    """

    __test__ = False  # not a pytest class
    __tablename__ = "test_check"
    __table_args__ = (
        sa.UniqueConstraint("releasable_id", "name", name="test_check_releasable_name"),
        sa.CheckConstraint("personas IN ('student', 'staff', 'both')", name="test_check_personas"),
        sa.CheckConstraint(
            "kind IN ('sign_in', 'home_folder', 'app_present', 'app_absent', 'reachable', "
            "'command', 'not_admin')",
            name="test_check_kind",
        ),
        sa.CheckConstraint("timeout_s >= 1 AND timeout_s <= 600", name="test_check_timeout"),
    )

    id: int | None = Field(default=None, primary_key=True)
    releasable_id: int = Field(foreign_key="releasable.id")
    name: str = Field(max_length=63)
    personas: str = Field(max_length=8, description="student, staff or both")
    kind: str = Field(max_length=16)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=_json(dict))
    expect: dict[str, Any] = Field(default_factory=dict, sa_column=_json(dict))
    timeout_s: int = Field(default=30)
    disabled_reason: str | None = Field(default=None, max_length=2000)
    created_by: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=_utc())


class MaintenanceWindow(SQLModel, table=True):
    """A weekly window, in the district's local time, when a building's computers may
    be worked on (see domain/windows.py)."""

    __tablename__ = "maintenance_window"
    __table_args__ = (
        sa.CheckConstraint("end_day >= 0 AND end_day <= 7", name="maintenance_window_end_day"),
    )

    id: int | None = Field(default=None, primary_key=True)
    building_id: int = Field(foreign_key="building.id", index=True)
    days: list[int] = Field(sa_column=_json(list), description="0 = Monday .. 6 = Sunday")
    start: str = Field(max_length=5, description="local HH:MM")
    end: str = Field(max_length=5, description="local HH:MM")
    end_day: int = Field(description="days after the opening day on which it closes")
    created_by: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=_utc())


class Blackout(SQLModel, table=True):
    """A stretch of the calendar when nothing runs: for one building, or all (no building)."""

    __tablename__ = "blackout"

    id: int | None = Field(default=None, primary_key=True)
    building_id: int | None = Field(default=None, foreign_key="building.id", index=True)
    name: str = Field(default="", max_length=200)
    source: str = Field(max_length=200, description="the calendar file it came from, or 'manual'")
    starts_at: datetime = Field(sa_column=_utc())
    ends_at: datetime = Field(sa_column=_utc())
    created_by: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=_utc())


class Deployment(SQLModel, table=True):
    """A released package or image pushed to a set of clients, in windows and waves.

    The deployment's own state and its clients' rows are the truth; the
    scheduler's jobs carry only the deployment's id.
    """

    __tablename__ = "deployment"
    __table_args__ = (
        sa.UniqueConstraint("owner", "idempotency_key", name="deployment_idempotency"),
        sa.CheckConstraint(
            "state IN ('scheduled', 'running', 'paused', 'completed', 'cancelled', 'failed')",
            name="deployment_state",
        ),
        sa.CheckConstraint(
            "failure_threshold_pct >= 0 AND failure_threshold_pct <= 100",
            name="deployment_threshold",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    releasable_id: int = Field(foreign_key="releasable.id", index=True)
    ref: str = Field(max_length=200, description="what is deployed, as people name it")
    digest: str = Field(max_length=71, description="the approved content it was created for")
    playbook: str = Field(max_length=63)
    owner: str = Field(max_length=64)
    role: str = Field(max_length=16)
    state: str = Field(max_length=12)
    state_version: int = Field(default=0, description="bumped by every compare-and-set write")
    reason: str = Field(default="", max_length=500, description="why it paused, failed, ended")
    targets: dict[str, Any] = Field(default_factory=dict, sa_column=_json(dict))
    not_before: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    deadline: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    pilot_names: list[str] = Field(default_factory=list, sa_column=_json(list))
    pilot_per_building: int = 0
    per_building_limit: int = 10
    district_limit: int = 50
    failure_threshold_pct: float = 10.0
    created_at: datetime = Field(sa_column=_utc())
    updated_at: datetime = Field(sa_column=_utc())
    idempotency_key: str | None = Field(
        default=None, max_length=200, description="the API client's Idempotency-Key, per owner"
    )
    request_digest: str | None = Field(
        default=None,
        max_length=71,
        description="what was asked with that key (a replay must match)",
    )


class DeploymentClient(SQLModel, table=True):
    """One client in one deployment: its wave, where it stands, and why."""

    __tablename__ = "deployment_client"
    __table_args__ = (
        sa.UniqueConstraint("deployment_id", "client_id", name="deployment_client_once"),
        sa.CheckConstraint(
            "state IN ('pending', 'staging', 'applying', 'verifying', 'unreachable', "
            "'succeeded', 'failed', 'skipped', 'cancelled')",
            name="deployment_client_state",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    deployment_id: int = Field(foreign_key="deployment.id", index=True)
    client_id: int = Field(foreign_key="client.id", index=True)
    hostname: str = Field(max_length=63)
    building: str = Field(max_length=6)
    wave: int = Field(description="1 is the pilot when there is one; 0 for clients excluded")
    pilot: bool = False
    state: str = Field(max_length=12)
    attempts: int = 0
    reason: str | None = Field(default=None, max_length=2000)
    step: str | None = Field(default=None, max_length=200, description="the failing step")
    retry_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    run_id: int | None = Field(default=None, foreign_key="run.id")
    updated_at: datetime = Field(sa_column=_utc())


SCHEDULER_JOBS = sa.Table(
    "apscheduler_jobs",
    SQLModel.metadata,
    # APScheduler's own SQLAlchemyJobStore layout, made here by a migration so the
    # schema stays the migrations'. Its jobs hold only a deployment's id.
    sa.Column("id", sa.Unicode(191), primary_key=True),
    sa.Column("next_run_time", sa.Float(25), index=True),
    sa.Column("job_state", sa.LargeBinary(), nullable=False),
)


class RequestCategory(SQLModel, table=True):
    """A kind of request and who works it (seeded from domain/requests.py; IT edits it)."""

    __tablename__ = "request_category"
    __table_args__ = (
        sa.CheckConstraint("queue IN ('technician', 'department')", name="request_category_queue"),
    )

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=40, unique=True)
    label: str = Field(max_length=120)
    queue: str = Field(max_length=10)
    department: str = Field(default="", max_length=120)
    why: str = Field(default="", max_length=500)
    active: bool = Field(default=True)


class ServiceRequest(SQLModel, table=True):
    """A request for technical work from a building, routed by its category."""

    __tablename__ = "service_request"
    __table_args__ = (
        sa.CheckConstraint(
            "state IN ('open', 'taken', 'escalated', 'closed')", name="service_request_state"
        ),
        sa.CheckConstraint(
            "urgency IN ('low', 'normal', 'high', 'urgent')", name="service_request_urgency"
        ),
        sa.CheckConstraint("queue IN ('technician', 'department')", name="service_request_queue"),
    )

    id: int | None = Field(default=None, primary_key=True)
    building_id: int = Field(foreign_key="building.id", index=True)
    category_id: int = Field(foreign_key="request_category.id")
    queue: str = Field(max_length=10, description="where it was routed when filed")
    department: str = Field(default="", max_length=120)
    description: str = Field(max_length=4000, description="as typed; rendered escaped")
    urgency: str = Field(max_length=8)
    room: str | None = Field(default=None, max_length=40)
    clients: list[str] = Field(default_factory=list, sa_column=_json(list))
    state: str = Field(max_length=10)
    state_version: int = Field(default=0)
    filed_by_id: int = Field(foreign_key="person.id")
    assignee_id: int | None = Field(default=None, foreign_key="person.id")
    note: str = Field(default="", max_length=2000)
    created_at: datetime = Field(sa_column=_utc())
    first_response_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    closed_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))


class RequestChange(SQLModel, table=True):
    """A change that answers a request: a customized image or package, or a deployment."""

    __tablename__ = "request_change"
    __table_args__ = (
        sa.CheckConstraint(
            "(releasable_id IS NULL) <> (deployment_id IS NULL)", name="request_change_one_target"
        ),
        sa.UniqueConstraint("request_id", "releasable_id", name="request_change_release_once"),
        sa.UniqueConstraint("request_id", "deployment_id", name="request_change_deployment_once"),
    )

    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="service_request.id", index=True)
    releasable_id: int | None = Field(default=None, foreign_key="releasable.id")
    deployment_id: int | None = Field(default=None, foreign_key="deployment.id", index=True)
    linked_by_id: int = Field(foreign_key="person.id")
    linked_at: datetime = Field(sa_column=_utc())


class SigningKey(SQLModel, table=True):
    """An Ed25519 key the district signs image manifests with; the private half
    only as ciphertext under the installation's secret key (services/vault.py)."""

    __tablename__ = "signing_key"

    id: int | None = Field(default=None, primary_key=True)
    key_id: str = Field(max_length=16, unique=True)
    public_key: bytes = Field(sa_column=sa.Column(sa.LargeBinary(), nullable=False))
    ciphertext: bytes = Field(sa_column=sa.Column(sa.LargeBinary(), nullable=False))
    created_at: datetime = Field(sa_column=_utc())
    retired_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))


class ImageManifest(SQLModel, table=True):
    """A catalog entry's bytes in the image store: its chunk index, and once the
    chain has released it, the signed manifest clients check before applying it."""

    __tablename__ = "image_manifest"

    id: int | None = Field(default=None, primary_key=True)
    releasable_id: int = Field(foreign_key="releasable.id", unique=True)
    index_name: str = Field(max_length=120, unique=True, description="under the store's indexes/")
    index_sha256: str = Field(max_length=64)
    artifact_sha256: str | None = Field(
        default=None,
        max_length=64,
        description="the SHA-256 of the file imported: only while it is the entry's "
        "artifact are these bytes signed and pulled (None: imported before it was kept)",
    )
    size: int = Field(sa_column=sa.Column(sa.BigInteger(), nullable=False))
    chunks: int
    unique_chunks: int
    new_bytes: int = Field(
        sa_column=sa.Column(sa.BigInteger(), nullable=False),
        description="compressed bytes this import added to the store",
    )
    imported_by_id: int = Field(foreign_key="person.id")
    imported_at: datetime = Field(sa_column=_utc())
    signed: bytes | None = Field(default=None, sa_column=sa.Column(sa.LargeBinary()))
    key_id: str | None = Field(default=None, max_length=16)
    signed_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))


class DistributionPoint(SQLModel, table=True):
    """A building's cache host: written over SSH (its key pinned), read by the
    building's clients over HTTP(S) at ``url``."""

    __tablename__ = "distribution_point"

    id: int | None = Field(default=None, primary_key=True)
    building_id: int = Field(foreign_key="building.id", unique=True)
    address: str = Field(max_length=255)
    ssh_port: int = 22
    ssh_user: str = Field(max_length=64)
    host_key: str = Field(max_length=2000, description="the SSH key pinned when it was added")
    root: str = Field(max_length=500, description="the store's folder on the point")
    url: str = Field(max_length=500, description="where the building's clients fetch from")
    bandwidth_kib: int = Field(default=0, description="KiB/s the staging may use; 0: no limit")
    created_at: datetime = Field(sa_column=_utc())


class ImageStaging(SQLModel, table=True):
    """One staging of an image's missing chunks to one building's point."""

    __tablename__ = "image_staging"
    __table_args__ = (
        sa.CheckConstraint("state IN ('running', 'staged', 'failed')", name="image_staging_state"),
    )

    id: int | None = Field(default=None, primary_key=True)
    point_id: int = Field(foreign_key="distribution_point.id")
    manifest_id: int = Field(foreign_key="image_manifest.id", index=True)
    state: str = Field(max_length=10)
    chunks_total: int = 0
    chunks_sent: int = 0
    bytes_sent: int = Field(default=0, sa_column=sa.Column(sa.BigInteger(), nullable=False))
    message: str = Field(default="", max_length=500)
    started_at: datetime = Field(sa_column=_utc())
    finished_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
