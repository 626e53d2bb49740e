"""Client inventory: import from an asset export (CSV) or an Ansible inventory
(INI or YAML), list, and export as a standard Ansible YAML inventory.

Imports are all-or-nothing: every row is checked first (fields, references,
duplicates within the file and against the inventory, the importer's
buildings), and one bad row means nothing is written; the error names the
file, line and field. Duplicates are refused, never merged (Ansible itself
would silently merge two entries of one host).
"""

from __future__ import annotations

import csv
import hashlib
import io
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from sqlmodel import Session, col, func, select

from orchestrator.db.models import Building, Client, HardwareModel
from orchestrator.db.session import transaction
from orchestrator.domain import validation
from orchestrator.domain.policy import Action, Actor, authorize, authorize_role, may
from orchestrator.domain.states import Level, Platform
from orchestrator.errors import InvalidInput, NotFound
from orchestrator.services import audit, installed
from orchestrator.services.context import Context

_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_DNS_NAME = re.compile(
    r"(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
)
_ROOM = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,39}")
_SERIAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{2,39}")
_MAC_HEX = re.compile(r"[0-9a-f]{12}")
_LOGIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_KEPT_ANSIBLE_VARS = frozenset({"ansible_python_interpreter"})
MAX_ERRORS_SHOWN = 10
DEFAULT_PORTS = {Platform.MAC: 22, Platform.PC: 5985}
TRANSPORTS = {Platform.MAC: "ssh", Platform.PC: "winrm"}

# Header names seen in asset-management exports, lower-cased, spaces and '_' folded.
_HEADER_ALIASES = {
    "hostname": ("hostname", "host", "computername", "name", "devicename", "assetname"),
    "building": ("building", "buildingnumber", "building#", "school", "schoolnumber", "site"),
    "room": ("room", "location", "roomnumber", "lab", "cart"),
    "platform": ("platform", "os", "ostype", "type", "devicetype"),
    "model": ("model", "modelname", "hardwaremodel"),
    "serial": ("serial", "serialnumber", "serialno", "sn", "servicetag"),
    "mac": ("mac", "macaddress", "ethernetmac", "wiredmac"),
    "address": ("address", "ip", "ipaddress", "dnsname", "fqdn"),
}
_REQUIRED = ("hostname", "building", "room", "platform", "model", "serial", "mac", "address")
_PLATFORM_WORDS = {
    "pc": Platform.PC,
    "windows": Platform.PC,
    "win": Platform.PC,
    "win11": Platform.PC,
    "mac": Platform.MAC,
    "macos": Platform.MAC,
    "osx": Platform.MAC,
    "apple": Platform.MAC,
}


@dataclass
class Row:
    """One client as read from a file, before it is checked."""

    where: str
    """'FILE, line N' (or 'FILE, host NAME' for inventories)."""
    values: dict[str, str] = field(default_factory=dict)
    port: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    """Other inventory variables of the host (its own and its groups')."""


@dataclass(frozen=True)
class ClientSpec:
    where: str
    hostname: str
    building: str
    room: str
    platform: Platform
    model: str
    serial: str
    mac: str
    address: str
    port: int
    login_user: str | None = None
    host_vars: dict[str, str] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()
    """Inventory variables not taken (connection settings, secrets)."""


class ImportErrors(InvalidInput):
    """Every problem found in a file; nothing was imported."""


# ---------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------


def _fold(header: str) -> str:
    return re.sub(r"[\s_\-.]", "", header.strip().lower())


def read_csv(path: Path) -> list[Row]:
    """Rows of an asset export. Header variants and a UTF-8 BOM are accepted.

    Raises:
        InvalidInput: unreadable file, no header, or a required column missing.
    """
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise InvalidInput(f"{path}: the file is empty") from None
    except csv.Error as exc:
        raise InvalidInput(f"{path}, line 1: not CSV ({exc})") from exc
    columns: dict[str, int] = {}
    for i, name in enumerate(header):
        folded = _fold(name)
        for key, aliases in _HEADER_ALIASES.items():
            if folded in aliases:
                if key in columns:
                    raise InvalidInput(
                        f"{path}, line 1: two columns mean {key} "
                        f"({header[columns[key]]!r} and {name!r})"
                    )
                columns[key] = i
    missing = [k for k in _REQUIRED if k not in columns]
    if missing:
        raise InvalidInput(
            f"{path}, line 1: missing column(s) {', '.join(missing)} "
            f"(found: {', '.join(h for h in header if h.strip()) or 'none'})"
        )
    rows = []
    try:
        for record in reader:
            line = reader.line_num
            if not any(c.strip() for c in record):
                continue
            if len(record) < len(header):
                record = record + [""] * (len(header) - len(record))
            rows.append(
                Row(f"{path}, line {line}", {k: record[i].strip() for k, i in columns.items()})
            )
    except csv.Error as exc:
        raise InvalidInput(f"{path}, line {reader.line_num}: not CSV ({exc})") from exc
    return rows


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read it ({exc.strerror})") from exc


_INVENTORY_VARS = {
    "hostname": "hostname",
    "ansible_host": "address",
    "ansible_port": "port",
    "ansible_user": "user",
    "building": "building",
    "orchestrator_building": "building",
    "room": "room",
    "orchestrator_room": "room",
    "platform": "platform",
    "orchestrator_platform": "platform",
    "model": "model",
    "orchestrator_model": "model",
    "serial": "serial",
    "orchestrator_serial": "serial",
    "mac": "mac",
    "orchestrator_mac": "mac",
}


@dataclass
class _Host:
    where: str
    values: dict[str, str] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)


def read_ansible_inventory(path: Path) -> list[Row]:
    """Rows of an Ansible inventory (INI or YAML); variables may sit on the host
    or on its groups (group variables reach member hosts, as in Ansible).

    A host listed under several groups is one host; if its groups disagree
    (e.g. two buildings) that is an error, not a merge.

    Raises:
        InvalidInput: malformed INI/YAML, or conflicting values for one host.
    """
    text = _read_text(path)
    is_yaml = path.suffix.lower() in (".yml", ".yaml") or text.lstrip().startswith(("---", "all:"))
    hosts, group_vars, children = (
        _parse_yaml_inventory(path, text) if is_yaml else _parse_ini_inventory(path, text)
    )
    rows = []
    for name, host in hosts.items():
        values: dict[str, str] = {"hostname": name}
        extra = dict(host.extra)
        origin: dict[str, str] = {}
        for group in _ancestors(host.groups, children):
            for var, value in group_vars.get(group, {}).items():
                key = _INVENTORY_VARS.get(var)
                if key is None:
                    extra.setdefault(var, value)
                    continue
                if key in values and values[key] != value and origin.get(key) != "host":
                    raise InvalidInput(
                        f"{host.where}: {key}: {values[key]!r} (group {origin[key]}) and "
                        f"{value!r} (group {group}); a host is in one building, room and "
                        "platform"
                    )
                values.setdefault(key, value)
                origin.setdefault(key, group)
        for key, value in host.values.items():
            values[key] = value
        rows.append(
            Row(
                host.where,
                {k: v for k, v in values.items() if k != "port"},
                values.get("port"),
                extra,
            )
        )
    return rows


def _ancestors(groups: Iterable[str], children: dict[str, set[str]]) -> list[str]:
    parents: dict[str, set[str]] = {}
    for parent, kids in children.items():
        for kid in kids:
            parents.setdefault(kid, set()).add(parent)
    seen: list[str] = []
    todo = list(groups)
    while todo:
        g = todo.pop(0)
        if g in seen:
            continue
        seen.append(g)
        todo.extend(sorted(parents.get(g, ())))
    return seen


def _host_value(where: str, hosts: dict[str, _Host], name: str, key: str, value: str) -> None:
    host = hosts[name]
    if key in host.values and host.values[key] != value:
        raise InvalidInput(
            f"{where}: {key}: host {name} has {host.values[key]!r} in {host.where} and "
            f"{value!r} here; duplicates are refused, not merged"
        )
    host.values[key] = value


def _parse_ini_inventory(
    path: Path, text: str
) -> tuple[dict[str, _Host], dict[str, dict[str, str]], dict[str, set[str]]]:
    hosts: dict[str, _Host] = {}
    group_vars: dict[str, dict[str, str]] = {}
    children: dict[str, set[str]] = {}
    section, kind = "ungrouped", "hosts"
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        where = f"{path}, line {n}"
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            m = re.fullmatch(r"\[([A-Za-z0-9_.-]+)(?::(vars|children))?\]", line)
            if not m:
                raise InvalidInput(
                    f"{where}: {line!r} is not a [group], [group:vars] or [group:children] header"
                )
            section, kind = m[1], m[2] or "hosts"
            continue
        if kind == "children":
            children.setdefault(section, set()).add(line.split()[0])
            continue
        if kind == "vars":
            key, sep, value = line.partition("=")
            if not sep:
                raise InvalidInput(f"{where}: {line!r} is not KEY=VALUE")
            group_vars.setdefault(section, {})[key.strip()] = _unquote(value.strip())
            continue
        parts = _split_ini_host(where, line)
        name = parts[0].lower()
        if name not in hosts:
            hosts[name] = _Host(where)
        hosts[name].groups.append(section)
        for item in parts[1:]:
            key, sep, value = item.partition("=")
            if not sep:
                raise InvalidInput(f"{where}: {item!r} is not KEY=VALUE")
            mapped = _INVENTORY_VARS.get(key)
            if mapped:
                _host_value(where, hosts, name, mapped, _unquote(value))
            else:
                hosts[name].extra[key] = _unquote(value)
    return hosts, group_vars, children


def _split_ini_host(where: str, line: str) -> list[str]:
    import shlex

    try:
        return shlex.split(line, comments=True)
    except ValueError as exc:
        raise InvalidInput(f"{where}: {exc}") from exc


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _parse_yaml_inventory(
    path: Path, text: str
) -> tuple[dict[str, _Host], dict[str, dict[str, str]], dict[str, set[str]]]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark is not None else str(path)
        raise InvalidInput(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: an inventory is a mapping of groups (e.g. all:)")
    hosts: dict[str, _Host] = {}
    group_vars: dict[str, dict[str, str]] = {}
    children: dict[str, set[str]] = {}

    def walk(group: str, body: Any, trail: str) -> None:
        if body is None:
            return
        if not isinstance(body, dict):
            raise InvalidInput(f"{path}: group {trail} must be a mapping")
        unknown = set(body) - {"hosts", "vars", "children"}
        if unknown:
            raise InvalidInput(
                f"{path}: group {trail} has {', '.join(sorted(map(str, unknown)))}; "
                "groups hold hosts, vars and children"
            )
        for key, value in (body.get("vars") or {}).items():
            group_vars.setdefault(group, {})[str(key)] = str(value)
        for name, hvars in (body.get("hosts") or {}).items():
            hname = str(name).lower()
            where = f"{path}, host {name} in group {trail}"
            if hname not in hosts:
                hosts[hname] = _Host(where)
            hosts[hname].groups.append(group)
            if hvars is None:
                continue
            if not isinstance(hvars, dict):
                raise InvalidInput(f"{where}: host variables must be a mapping")
            for key, value in hvars.items():
                mapped = _INVENTORY_VARS.get(str(key))
                if mapped:
                    _host_value(where, hosts, hname, mapped, str(value))
                else:
                    hosts[hname].extra[str(key)] = str(value)
        for child, cbody in (body.get("children") or {}).items():
            children.setdefault(group, set()).add(str(child))
            walk(str(child), cbody, f"{trail} > {child}")

    for top, body in data.items():
        walk(str(top), body, str(top))
    return hosts, group_vars, children


# ---------------------------------------------------------------------------
# Checking
# ---------------------------------------------------------------------------


def normalize_mac(value: str) -> str:
    """'AA-BB-CC-DD-EE-FF', 'aabb.ccdd.eeff' or 'aabbccddeeff' → 'aa:bb:cc:dd:ee:ff'.

    Raises:
        InvalidInput: not 12 hexadecimal digits.
    """
    digits = re.sub(r"[:\-.\s]", "", value.lower())
    if not _MAC_HEX.fullmatch(digits):
        raise InvalidInput(f"{value!r} is not a MAC address", field="mac")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def checked_address(value: str) -> str:
    """An IP address (normalized) or a DNS name, lower case.

    Raises:
        InvalidInput: anything else.
    """
    value = value.strip().lower()
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not _DNS_NAME.fullmatch(value):
        raise InvalidInput(f"{value!r} is not an IP address or DNS name", field="address")
    return value


def _check_row(row: Row) -> ClientSpec:
    v = row.values

    def need(key: str) -> str:
        value = v.get(key, "").strip()
        if not value:
            raise InvalidInput("is empty", field=key)
        return value

    hostname = need("hostname").lower()
    if not _HOSTNAME.fullmatch(hostname):
        raise InvalidInput(
            f"{hostname!r} is not a host name (letters, digits and '-', at most 63)",
            field="hostname",
        )
    building = validation.building_number(need("building"))
    room = need("room")
    if not _ROOM.fullmatch(room):
        raise InvalidInput(
            f"{room!r} is not a room (letters, digits, ' ', '.', '_', '-')", field="room"
        )
    platform = _PLATFORM_WORDS.get(need("platform").lower().replace(" ", ""))
    if platform is None:
        raise InvalidInput(f"{v['platform']!r} is not a platform (pc or mac)", field="platform")
    model = validation.label(need("model"), field="model")
    serial = need("serial").upper()
    if not _SERIAL.fullmatch(serial):
        raise InvalidInput(f"{serial!r} is not a serial number", field="serial")
    mac = normalize_mac(need("mac"))
    address = checked_address(need("address"))
    port = DEFAULT_PORTS[platform]
    if row.port:
        if not row.port.isdigit() or not 0 < int(row.port) < 65536:
            raise InvalidInput(f"{row.port!r} is not a port number", field="port")
        port = int(row.port)
    user = v.get("user", "").strip() or None
    if user is not None and not _LOGIN.fullmatch(user):
        raise InvalidInput(f"{user!r} is not a login name", field="ansible_user")
    host_vars, ignored = _host_variables(row.extra)
    return ClientSpec(
        row.where,
        hostname,
        building,
        room,
        platform,
        model,
        serial,
        mac,
        address,
        port,
        user,
        host_vars,
        ignored,
    )


def _host_variables(extra: dict[str, str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """The variables a client keeps, and those not taken.

    The orchestrator's own connection settings (pinned host keys, encrypted
    WinRM) always apply, so an inventory's ``ansible_*`` connection variables
    are not taken; nor are secrets, which IT stores encrypted instead. Other
    variables (the district's own) are kept and reach the playbooks.
    """
    kept: dict[str, str] = {}
    ignored: list[str] = []
    for var, value in sorted(extra.items()):
        if var in _KEPT_ANSIBLE_VARS or not var.startswith("ansible_"):
            if not _VAR_NAME.fullmatch(var):
                raise InvalidInput(f"{var!r} is not a variable name", field=var)
            kept[var] = value
        else:
            ignored.append(var)
    return kept, tuple(ignored)


@dataclass(frozen=True)
class ImportResult:
    imported: int
    buildings: list[str]
    off_list: list[str]
    """Host names whose model is off the Approved Technology List or past end of support."""
    ignored: list[str] = field(default_factory=list)
    """Inventory variables not taken: connection settings and secrets."""


def import_clients(
    ctx: Context, actor: Actor, path: Path, *, format: str | None = None
) -> ImportResult:
    """Import every client in ``path`` or none.

    Raises:
        Refused: a row in a building outside the actor's scope.
        ImportErrors (InvalidInput): malformed file, bad field, unknown building,
            duplicates in the file or against the inventory; the message names
            file, line and field of each problem (the first ten).
    """
    authorize_role(actor, Action.MANAGE_CLIENTS)
    fmt = (format or _guess_format(path)).lower()
    if fmt == "csv":
        rows = read_csv(path)
    elif fmt in ("ini", "yaml", "yml", "ansible"):
        rows = read_ansible_inventory(path)
    else:
        raise InvalidInput(f"{format!r} is not a format (csv, ini or yaml)", field="format")
    if not rows:
        raise InvalidInput(f"{path}: no clients in the file")
    specs: list[ClientSpec] = []
    problems: list[str] = []
    for row in rows:
        try:
            specs.append(_check_row(row))
        except InvalidInput as exc:
            problems.append(f"{row.where}: {exc}")
    problems += _duplicates_in_file(specs)
    today = ctx.today()
    with transaction(ctx.engine) as session:
        buildings = {b.number: b for b in session.exec(select(Building))}
        for spec in specs:
            if spec.building not in buildings:
                problems.append(f"{spec.where}: building: no building {spec.building!r}")
            elif not may(actor, Action.MANAGE_CLIENTS, building=spec.building):
                authorize(actor, Action.MANAGE_CLIENTS, building=spec.building)
        problems += _duplicates_in_inventory(session, specs)
        if problems:
            shown = problems[:MAX_ERRORS_SHOWN]
            more = len(problems) - len(shown)
            raise ImportErrors(
                f"nothing imported from {path}: {len(problems)} problem(s)\n  "
                + "\n  ".join(shown)
                + (f"\n  … and {more} more" if more else "")
            )
        models = _models_by_name(session)
        off_list = []
        now = ctx.now()
        for spec in specs:
            hw = models.get(spec.model.lower())
            if (
                hw is None
                or not hw.approved
                or (hw.end_of_support is not None and hw.end_of_support <= today)
            ):
                off_list.append(spec.hostname)
            session.add(
                Client(
                    hostname=spec.hostname,
                    building_id=buildings[spec.building].id or 0,
                    room=spec.room,
                    platform=spec.platform.value,
                    model=spec.model,
                    hardware_model_id=hw.id if hw else None,
                    serial=spec.serial,
                    mac=spec.mac,
                    address=spec.address,
                    port=spec.port,
                    transport=TRANSPORTS[spec.platform],
                    login_user=spec.login_user,
                    host_vars=spec.host_vars,
                    created_at=now,
                )
            )
        session.flush()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        per_building: dict[str, int] = {}
        for spec in specs:
            per_building[spec.building] = per_building.get(spec.building, 0) + 1
        for number, count in sorted(per_building.items()):
            audit.append(
                session,
                at=now,
                actor=actor,
                action="clients.import",
                subject=audit.Subject("client_import", path.name, None, number),
                after={"clients": count, "file_sha256": digest},
            )
        ignored = sorted({var for spec in specs for var in spec.ignored})
        return ImportResult(len(specs), sorted(per_building), sorted(off_list), ignored)


def _guess_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".yml", ".yaml"):
        return "yaml"
    return "ini"


def _duplicates_in_file(specs: Sequence[ClientSpec]) -> list[str]:
    problems = []
    seen: dict[tuple[str, str], ClientSpec] = {}
    for spec in specs:
        for key in ("hostname", "serial", "mac"):
            value = getattr(spec, key)
            first = seen.get((key, value))
            if first is None:
                seen[(key, value)] = spec
                continue
            if key == "hostname" and first.building != spec.building:
                problems.append(
                    f"{spec.where}: building: {spec.hostname} is also in building "
                    f"{first.building} ({first.where}); a computer is in one building"
                )
            elif key == "hostname":
                problems.append(
                    f"{spec.where}: hostname: {value} is listed twice (also {first.where})"
                )
            else:
                problems.append(
                    f"{spec.where}: {key}: {value} is also {first.hostname}'s ({first.where}); "
                    "one computer under two names is refused, not merged"
                )
    return problems


def _duplicates_in_inventory(session: Session, specs: Sequence[ClientSpec]) -> list[str]:
    problems = []
    for key in ("hostname", "serial", "mac"):
        values = [getattr(s, key) for s in specs]
        column = getattr(Client, key)
        existing = {
            getattr(c, key): c.hostname
            for c in session.exec(select(Client).where(col(column).in_(values)))
        }
        for spec in specs:
            owner = existing.get(getattr(spec, key))
            if owner is not None:
                what = (
                    "is already in the inventory"
                    if key == "hostname"
                    else (f"already belongs to {owner}")
                )
                problems.append(f"{spec.where}: {key}: {getattr(spec, key)} {what}")
    return problems


def _models_by_name(session: Session) -> dict[str, HardwareModel]:
    out: dict[str, HardwareModel] = {}
    for m in session.exec(select(HardwareModel)):
        out.setdefault(m.model.lower(), m)
        out.setdefault(f"{m.vendor} {m.model}".lower(), m)
    return out


def match_model(session: Session, model: str) -> HardwareModel | None:
    """The Approved Technology List entry a reported or imported model name is."""
    return _models_by_name(session).get(model.strip().lower())


FACT_PREFIX = "orchestrator_"
FACT_SOFTWARE = "orchestrator_software"


def apply_facts(
    session: Session, client: Client, facts: Mapping[str, Any], now: datetime
) -> str | None:
    """Fold gathered facts into ``client``; returns a note when something could not be taken."""
    mine = {k: v for k, v in facts.items() if k.startswith(FACT_PREFIX)}
    if not mine:
        return None
    client.facts = {**client.facts, **mine}
    client.last_seen = now
    if FACT_SOFTWARE in mine:
        installed.record_gathered(session, client, mine[FACT_SOFTWARE], now)
    note = None
    marker = mine.get("orchestrator_image")
    if isinstance(marker, str) and marker.strip():
        client.current_image = marker.strip()[:200]
    model = mine.get("orchestrator_model")
    if isinstance(model, str) and model.strip() and model.strip() != client.model:
        client.model = model.strip()[:120]
        hw = match_model(session, client.model)
        client.hardware_model_id = hw.id if hw else None
    serial = mine.get("orchestrator_serial")
    if isinstance(serial, str) and serial.strip() and serial.strip() != client.serial:
        serial = serial.strip()[:40]
        holder = session.exec(
            select(Client).where(Client.serial == serial, Client.id != client.id)
        ).first()
        if holder is None:
            client.serial = serial
        else:
            note = (
                f"{client.hostname} reports serial {serial}, which {holder.hostname} "
                "holds in the inventory; kept the recorded one"
            )
    session.add(client)
    return note


# ---------------------------------------------------------------------------
# Reading the inventory
# ---------------------------------------------------------------------------


class ClientView(BaseModel):
    hostname: str
    building: str
    level: Level
    room: str
    platform: Platform
    model: str
    approved_model: bool
    flag: str | None
    """Every flag below in one line ('; '), or None."""
    serial: str
    mac: str
    address: str
    port: int
    transport: str
    host_key_pinned: bool
    test_client: bool
    current_image: str | None
    login_user: str | None = None
    """None: the district's default login."""
    host_vars: dict[str, str] = {}
    """The district's own Ansible variables for this client (never secrets)."""
    os: str | None = None
    """As last gathered, e.g. 'macOS 15.3'."""
    disk_free_kb: int | None = None
    software: int | None = None
    """How many packages the client reported installed."""
    installed: list[str] = []
    """Package releases the orchestrator installed here and saw succeed."""
    last_seen: datetime | None = None
    flags: list[str] = []
    """The hardware flag, then the host key's: 'host key not pinned' or
    'host key changed: refused'."""
    host_key_refused: bool = False
    """The host offered another key than the pinned one; refused, kept for review."""


HOST_KEY_NOT_PINNED = "host key not pinned"
HOST_KEY_REFUSED = "host key changed: refused"


def list_clients(
    ctx: Context, actor: Actor, *, building: str | None = None, room: str | None = None
) -> list[ClientView]:
    """Clients the actor may see (building staff: their buildings)."""
    if building is not None:
        authorize(actor, Action.READ_CATALOG, building=building)
    today = ctx.today()
    with transaction(ctx.engine) as session:
        q = (
            select(Client, Building, HardwareModel)
            .join(Building, col(Building.id) == col(Client.building_id))
            .join(
                HardwareModel, col(HardwareModel.id) == col(Client.hardware_model_id), isouter=True
            )
            .order_by(col(Building.number), col(Client.room), col(Client.hostname))
        )
        if building is not None:
            q = q.where(Building.number == building)
        if room is not None:
            q = q.where(func.lower(Client.room) == room.lower())
        out = []
        rows = [
            (c, b, hw)
            for c, b, hw in session.exec(q)
            if may(actor, Action.READ_CATALOG, building=b.number)
        ]
        refs = installed.installed_refs(session, {b.id or 0 for _, b, _ in rows})
        for c, b, hw in rows:
            flag = None
            if hw is None:
                flag = "model not on the Approved Technology List"
            elif not hw.approved:
                flag = "model not approved"
            elif hw.end_of_support is not None and hw.end_of_support <= today:
                flag = f"model past end of support ({hw.end_of_support})"
            flags = [flag] if flag else []
            if c.transport == "ssh" and c.host_key_offered is not None:
                flags.append(HOST_KEY_REFUSED)
            elif c.transport == "ssh" and c.host_key is None:
                flags.append(HOST_KEY_NOT_PINNED)
            out.append(
                ClientView(
                    hostname=c.hostname,
                    building=b.number,
                    level=Level(b.level),
                    room=c.room,
                    platform=Platform(c.platform),
                    model=c.model,
                    approved_model=flag is None,
                    flag="; ".join(flags) or None,
                    serial=c.serial,
                    mac=c.mac,
                    address=c.address,
                    port=c.port,
                    transport=c.transport,
                    host_key_pinned=c.host_key is not None,
                    test_client=c.test_client,
                    current_image=c.current_image,
                    login_user=c.login_user,
                    host_vars=dict(c.host_vars),
                    **_gathered(c.facts),
                    installed=refs.get(c.id or 0, []),
                    last_seen=c.last_seen,
                    flags=flags,
                    host_key_refused=c.host_key_offered is not None,
                )
            )
        return out


def _gathered(facts: dict[str, Any]) -> dict[str, Any]:
    name, version = facts.get("orchestrator_os"), facts.get("orchestrator_os_version")
    disk = facts.get("orchestrator_disk_free_kb")
    software = facts.get(FACT_SOFTWARE)
    return {
        "os": " ".join(str(p) for p in (name, version) if p) or None,
        "disk_free_kb": int(disk) if isinstance(disk, int | str) and str(disk).isdigit() else None,
        "software": len(software) if isinstance(software, list) else None,
    }


def get_client(session: Session, actor: Actor, hostname: str) -> Client:
    """Raises: NotFound (also for clients in buildings the actor may not see)."""
    row = session.exec(select(Client).where(Client.hostname == hostname.lower())).first()
    if row is not None:
        b = session.get(Building, row.building_id)
        if b is not None and may(actor, Action.READ_CATALOG, building=b.number):
            return row
    raise NotFound(f"no client {hostname!r} (see 'orchestrator clients list')")


# ---------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------


def group_name(*parts: str) -> str:
    """An Ansible group name: letters, digits and '_' only."""
    return re.sub(r"[^a-z0-9_]", "_", "_".join(parts).lower())


def ansible_inventory(ctx: Context, actor: Actor, *, building: str | None = None) -> dict[str, Any]:
    """The inventory as Ansible's YAML structure, with groups per building,
    level, platform and room, and connection settings per host.

    Secrets are never written here; credentials reach Ansible per run.
    """
    clients = list_clients(ctx, actor, building=building)
    if not clients:
        raise NotFound("no clients to export" + (f" in building {building}" if building else ""))
    groups: dict[str, dict[str, Any]] = {}

    def add(group: str, host: str) -> None:
        groups.setdefault(group, {"hosts": {}})["hosts"][host] = None

    hostvars: dict[str, dict[str, Any]] = {}
    levels: dict[str, set[str]] = {}
    for c in clients:
        b_group = group_name("building", c.building)
        add(b_group, c.hostname)
        add(group_name("platform", c.platform.value), c.hostname)
        add(group_name("room", c.building, c.room), c.hostname)
        levels.setdefault(group_name("level", c.level.value), set()).add(b_group)
        hv: dict[str, Any] = {
            "ansible_host": c.address,
            "ansible_port": c.port,
            "orchestrator_building": c.building,
            "orchestrator_room": c.room,
            "orchestrator_platform": c.platform.value,
            "orchestrator_model": c.model,
            "orchestrator_serial": c.serial,
            "orchestrator_mac": c.mac,
        }
        if c.transport == "winrm":
            hv |= {
                "ansible_connection": "winrm",
                "ansible_winrm_transport": "ntlm",
                "ansible_winrm_message_encryption": "always",
                "ansible_winrm_scheme": "http",
            }
        else:
            hv["ansible_connection"] = "ssh"
        if c.login_user:
            hv["ansible_user"] = c.login_user
        hv |= {k: v for k, v in c.host_vars.items() if k not in hv}
        hostvars[c.hostname] = hv
    for group in groups.values():
        for host in group["hosts"]:
            group["hosts"][host] = hostvars[host]
            hostvars[host] = {}  # each host's variables once, in its first group
    for level, building_groups in levels.items():
        groups[level] = {"children": {g: None for g in sorted(building_groups)}}
    ordered = dict(sorted(groups.items()))
    for g in ordered.values():
        if "hosts" in g:
            g["hosts"] = {h: (v or None) for h, v in g["hosts"].items()}
    return {"all": {"children": ordered}}


def export_inventory(ctx: Context, actor: Actor, path: Path, *, building: str | None = None) -> int:
    """Write the inventory to ``path`` (temp file, then rename). Returns the host count."""
    data = ansible_inventory(ctx, actor, building=building)
    text = "# Written by 'orchestrator inventory export'; edit the orchestrator, not this file.\n"
    text += yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return len({h for g in data["all"]["children"].values() for h in (g.get("hosts") or {})})
