"""Client inventory: imports are all-or-nothing, duplicates are refused, and the
export is an inventory Ansible itself reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import func, select

from orchestrator.db.models import Client
from orchestrator.db.session import transaction
from orchestrator.errors import InvalidInput, NotFound, Refused
from orchestrator.services import audit, inventory
from tests.factories import District

HEADER = "Computer Name,School,Room,OS,Model,Serial Number,MAC Address,IP Address\n"
GOOD = (
    "lab-01,101,Lab A,Windows,Latitude 3420,SN0001,AA-BB-CC-00-00-01,127.0.0.11\n"
    "lab-02,101,Lab A,Windows,Latitude 3420,SN0002,aabb.cc00.0002,127.0.0.12\n"
    'cart-01,101,Cart 1,macOS,"MacBookAir10,1",SN0003,aa:bb:cc:00:00:03,cart-01.lincoln.test\n'
)


def _count(district: District) -> int:
    with transaction(district.ctx.engine) as s:
        return s.exec(select(func.count()).select_from(Client)).one()


def _write(tmp_path: Path, name: str, text: str, *, bom: bool = False) -> Path:
    path = tmp_path / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def test_csv_asset_export_with_header_variants_and_bom_imports_every_row(
    district: District, tmp_path: Path
) -> None:
    path = _write(tmp_path, "assets.csv", HEADER + GOOD, bom=True)

    result = inventory.import_clients(district.ctx, district["btc.lincoln"], path)

    assert (result.imported, result.buildings) == (3, ["101"])
    clients = {c.hostname: c for c in inventory.list_clients(district.ctx, district["it.ana"])}
    assert clients["lab-02"].mac == "aa:bb:cc:00:00:02"
    assert clients["cart-01"].model == "MacBookAir10,1"
    assert (clients["cart-01"].transport, clients["cart-01"].port) == ("ssh", 22)
    assert (clients["lab-01"].transport, clients["lab-01"].port) == ("winrm", 5985)
    entries = audit.entries(district.ctx, district["it.ana"], object_kind="client_import")
    assert entries[-1].actor == "btc.lincoln" and (entries[-1].after or {})["clients"] == 3


@pytest.mark.parametrize(
    ("row", "where"),
    [
        ("lab-03,101,Lab A,Windows,Latitude 3420,SN0004,not-a-mac,127.0.0.13", "line 5: mac"),
        (
            "lab 03,101,Lab A,Windows,Latitude 3420,SN0004,aa:bb:cc:00:00:04,127.0.0.13",
            "line 5: hostname",
        ),
        (
            "lab-03,101,Lab A,Linux,Latitude 3420,SN0004,aa:bb:cc:00:00:04,127.0.0.13",
            "line 5: platform",
        ),
        (
            "lab-03,999,Lab A,Windows,Latitude 3420,SN0004,aa:bb:cc:00:00:04,127.0.0.13",
            "line 5: building: no building '999'",
        ),
        (
            "lab-03,101,Lab A,Windows,Latitude 3420,SN0004,aa:bb:cc:00:00:04,not an address",
            "line 5: address",
        ),
        (
            "lab-03,101,,Windows,Latitude 3420,SN0004,aa:bb:cc:00:00:04,127.0.0.13",
            "line 5: room: is empty",
        ),
        (
            "lab-01,101,Lab A,Windows,Latitude 3420,SN0004,aa:bb:cc:00:00:04,127.0.0.13",
            "line 5: hostname: lab-01 is listed twice",
        ),
        (
            "lab-03,101,Lab A,Windows,Latitude 3420,SN0001,aa:bb:cc:00:00:04,127.0.0.13",
            "line 5: serial: SN0001 is also lab-01's",
        ),
        (
            "lab-03,101,Lab A,Windows,Latitude 3420,SN0004,AA:BB:CC:00:00:01,127.0.0.13",
            "line 5: mac: aa:bb:cc:00:00:01 is also lab-01's",
        ),
    ],
)
def test_one_bad_row_imports_nothing_and_names_file_line_and_field(
    district: District, tmp_path: Path, row: str, where: str
) -> None:
    path = _write(tmp_path, "assets.csv", HEADER + GOOD + row + "\n")
    with pytest.raises(InvalidInput) as err:
        inventory.import_clients(district.ctx, district["it.ana"], path)
    assert f"{path}, {where}" in str(err.value)
    assert str(err.value).startswith(f"nothing imported from {path}")
    assert _count(district) == 0


def test_a_host_in_two_buildings_is_refused(district: District, tmp_path: Path) -> None:
    row = "lab-01,102,Lab,Windows,Latitude 3420,SN0009,aa:bb:cc:00:00:09,127.0.0.19\n"
    path = _write(tmp_path, "assets.csv", HEADER + GOOD + row)
    with pytest.raises(InvalidInput, match="lab-01 is also in building 101"):
        inventory.import_clients(district.ctx, district["it.ana"], path)
    assert _count(district) == 0


def test_importing_known_computers_again_is_refused_not_merged(
    district: District, tmp_path: Path
) -> None:
    path = _write(tmp_path, "assets.csv", HEADER + GOOD)
    inventory.import_clients(district.ctx, district["it.ana"], path)
    renamed = GOOD.replace("lab-01", "lab-99")
    again = _write(tmp_path, "again.csv", HEADER + renamed)
    with pytest.raises(InvalidInput) as err:
        inventory.import_clients(district.ctx, district["it.ana"], again)
    message = str(err.value)
    assert "serial: SN0001 already belongs to lab-01" in message
    assert "hostname: lab-02 is already in the inventory" in message
    assert _count(district) == 3


def test_missing_column_and_malformed_file_are_clear(district: District, tmp_path: Path) -> None:
    no_mac = _write(
        tmp_path, "a.csv", "Name,School,Room,OS,Model,Serial,IP\nx,101,a,pc,m,SN1,1.2.3.4\n"
    )
    with pytest.raises(InvalidInput, match=r"a\.csv, line 1: missing column\(s\) mac"):
        inventory.import_clients(district.ctx, district["it.ana"], no_mac)
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InvalidInput, match="not UTF-8 text"):
        inventory.import_clients(district.ctx, district["it.ana"], binary)
    with pytest.raises(InvalidInput, match="no such file"):
        inventory.import_clients(district.ctx, district["it.ana"], tmp_path / "absent.csv")
    assert _count(district) == 0


def test_a_building_tech_imports_only_into_its_own_buildings(
    district: District, tmp_path: Path
) -> None:
    row = "lab-09,102,Lab,Windows,Latitude 3420,SN0009,aa:bb:cc:00:00:09,127.0.0.19\n"
    path = _write(tmp_path, "assets.csv", HEADER + GOOD + row)
    with pytest.raises(Refused, match="in building 102"):
        inventory.import_clients(district.ctx, district["btc.lincoln"], path)
    with pytest.raises(Refused, match="EdTech cannot manage client computers"):
        inventory.import_clients(district.ctx, district["edtech.grace"], path)
    assert _count(district) == 0


CART = (
    "cart-01 ansible_host=127.0.0.13 ansible_port=2222 room=cart serial=SN0003 "
    "mac=aa:bb:cc:00:00:03 platform=mac model=MacBookAir10,1\n"
)
INI = (
    """\
# exported from the old Ansible setup
[building_101]
lab-01 ansible_host=127.0.0.11 room="Lab A" serial=SN0001 mac=aa:bb:cc:00:00:01
lab-02 ansible_host=127.0.0.12 room="Lab A" serial=SN0002 mac=aa:bb:cc:00:00:02
"""
    + CART
    + """
[building_101:vars]
building=101
platform=pc
model="Latitude 3420"

[windows]
lab-01
lab-02
"""
)


def test_ansible_ini_inventory_imports_with_group_variables(
    district: District, tmp_path: Path
) -> None:
    path = _write(tmp_path, "hosts.ini", INI)
    result = inventory.import_clients(district.ctx, district["it.ana"], path)
    assert result.imported == 3
    clients = {c.hostname: c for c in inventory.list_clients(district.ctx, district["it.ana"])}
    assert (clients["cart-01"].platform.value, clients["cart-01"].port) == ("mac", 2222)
    assert clients["lab-01"].model == "Latitude 3420"


YAML = """\
all:
  children:
    building_101:
      vars: {building: "101", platform: pc, model: Latitude 3420}
      children:
        lab_a:
          vars: {room: Lab A}
          hosts:
            lab-01: {ansible_host: 127.0.0.11, serial: SN0001, mac: "aa:bb:cc:00:00:01"}
            lab-02: {ansible_host: 127.0.0.12, serial: SN0002, mac: "aa:bb:cc:00:00:02"}
    building_102:
      vars: {building: "102"}
"""


def test_ansible_yaml_inventory_imports_with_nested_groups(
    district: District, tmp_path: Path
) -> None:
    path = _write(tmp_path, "hosts.yml", YAML)
    result = inventory.import_clients(district.ctx, district["it.ana"], path)
    assert result.imported == 2
    rooms = {c.room for c in inventory.list_clients(district.ctx, district["it.ana"])}
    assert rooms == {"Lab A"}


def test_inventory_logins_and_district_variables_are_kept_but_connection_settings_and_secrets_not(
    district: District, tmp_path: Path
) -> None:
    ini = """\
[lab_a]
lab-01 ansible_host=127.0.0.11 serial=SN0001 mac=aa:bb:cc:00:00:01 ansible_user=labadmin
lab-02 ansible_host=127.0.0.12 serial=SN0002 mac=aa:bb:cc:00:00:02 ansible_password=hunter2

[lab_a:vars]
building=101
room=Lab A
platform=pc
model=Latitude 3420
ansible_connection=winrm
ansible_winrm_server_cert_validation=ignore
district_asset_tag=LIN-LAB-A
"""
    path = _write(tmp_path, "hosts.ini", ini)

    result = inventory.import_clients(district.ctx, district["it.ana"], path)

    assert result.ignored == [
        "ansible_connection",
        "ansible_password",
        "ansible_winrm_server_cert_validation",
    ]
    clients = {c.hostname: c for c in inventory.list_clients(district.ctx, district["it.ana"])}
    assert clients["lab-01"].login_user == "labadmin"
    assert clients["lab-02"].login_user is None
    assert clients["lab-02"].host_vars == {"district_asset_tag": "LIN-LAB-A"}
    exported = inventory.ansible_inventory(district.ctx, district["it.ana"])
    assert "hunter2" not in repr(exported) and "ignore" not in repr(exported)
    assert "LIN-LAB-A" in repr(exported) and "labadmin" in repr(exported)


def test_a_bad_login_name_in_an_inventory_imports_nothing(
    district: District, tmp_path: Path
) -> None:
    ini = INI.replace("lab-01 ", "lab-01 ansible_user='bad user;rm' ", 1)
    path = _write(tmp_path, "hosts.ini", ini)
    with pytest.raises(InvalidInput, match="ansible_user: 'bad user;rm' is not a login name"):
        inventory.import_clients(district.ctx, district["it.ana"], path)
    assert _count(district) == 0


def test_inventory_host_in_two_buildings_through_its_groups_is_refused(
    district: District, tmp_path: Path
) -> None:
    two = YAML + "      hosts:\n        lab-01:\n"
    path = _write(tmp_path, "hosts.yml", two)
    with pytest.raises(InvalidInput, match="building: '10[12]' .* and '10[12]' .*one building"):
        inventory.import_clients(district.ctx, district["it.ana"], path)
    assert _count(district) == 0


def test_same_host_twice_with_other_values_is_refused_not_merged(
    district: District, tmp_path: Path
) -> None:
    ini = INI + "[extra]\nlab-01 ansible_host=127.0.0.99\n"
    path = _write(tmp_path, "hosts.ini", ini)
    with pytest.raises(InvalidInput, match="duplicates are refused, not merged"):
        inventory.import_clients(district.ctx, district["it.ana"], path)
    assert _count(district) == 0


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.yml", "all:\n  children: {a: b: c}\n", "line 2: not valid YAML"),
        ("bad.yml", "all:\n  hostz: {}\n", "groups hold hosts, vars and children"),
        ("bad.ini", "[group\nhost\n", r"line 1: .* is not a \[group\]"),
        ("bad.ini", "[g:vars]\nno equals sign\n", "is not KEY=VALUE"),
    ],
)
def test_malformed_inventories_are_refused_with_where(
    district: District, tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(InvalidInput, match=message):
        inventory.import_clients(district.ctx, district["it.ana"], path)
    assert _count(district) == 0


def test_export_is_read_by_ansible_inventory_with_groups_per_building_level_platform_room(
    district: District, tmp_path: Path
) -> None:
    inventory.import_clients(
        district.ctx, district["it.ana"], _write(tmp_path, "a.csv", HEADER + GOOD)
    )
    out = tmp_path / "inventory" / "district.yml"

    assert inventory.export_inventory(district.ctx, district["it.ana"], out) == 3

    listing = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(out), "--list"],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(listing.stdout)
    assert set(data["building_101"]["hosts"]) == {"lab-01", "lab-02", "cart-01"}
    assert data["level_elementary"]["children"] == ["building_101"]
    assert set(data["platform_mac"]["hosts"]) == {"cart-01"}
    assert set(data["room_101_lab_a"]["hosts"]) == {"lab-01", "lab-02"}
    lab = data["_meta"]["hostvars"]["lab-01"]
    assert lab["ansible_connection"] == "winrm"
    assert lab["ansible_winrm_message_encryption"] == "always"
    assert data["_meta"]["hostvars"]["cart-01"]["ansible_connection"] == "ssh"
    assert "WARNING" not in listing.stderr


def test_clients_off_the_approved_list_are_flagged(district: District, tmp_path: Path) -> None:
    rows = (
        "old-01,101,Lab A,Windows,OptiPlex 7010,SN0101,aa:bb:cc:00:01:01,127.0.0.21\n"
        "nope-01,101,Lab A,Windows,ThinkPad 11e,SN0102,aa:bb:cc:00:01:02,127.0.0.22\n"
        "odd-01,101,Lab A,Windows,Acer C740,SN0103,aa:bb:cc:00:01:03,127.0.0.23\n"
    )
    result = inventory.import_clients(
        district.ctx, district["it.ana"], _write(tmp_path, "a.csv", HEADER + GOOD + rows)
    )
    assert result.off_list == ["nope-01", "odd-01", "old-01"]
    flags = {c.hostname: c.flag for c in inventory.list_clients(district.ctx, district["it.ana"])}
    assert flags["old-01"] is not None and "past end of support" in flags["old-01"]
    assert flags["nope-01"] == "model not approved"
    assert flags["odd-01"] == "model not on the Approved Technology List"
    assert flags["lab-01"] is None


def test_building_staff_see_only_their_buildings_clients(
    district: District, tmp_path: Path
) -> None:
    row = "lab-09,102,Lab,Windows,Latitude 3420,SN0009,aa:bb:cc:00:00:09,127.0.0.19\n"
    inventory.import_clients(
        district.ctx, district["it.ana"], _write(tmp_path, "a.csv", HEADER + GOOD + row)
    )
    seen = inventory.list_clients(district.ctx, district["principal.lincoln"])
    assert {c.building for c in seen} == {"101"}
    with pytest.raises(Refused):
        inventory.list_clients(district.ctx, district["principal.lincoln"], building="102")
    with transaction(district.ctx.engine) as s, pytest.raises(NotFound):
        inventory.get_client(s, district["btc.lincoln"], "lab-09")


def test_a_nul_character_in_a_query_is_bad_input_on_every_database(district: District) -> None:
    """PostgreSQL cannot hold a NUL in text (SQLite can): either way the person gets an
    answer or a message naming the character, never a database error."""
    from orchestrator.errors import InvalidInput
    from orchestrator.services import inventory

    if district.ctx.engine.dialect.name == "postgresql":
        with pytest.raises(InvalidInput, match="NUL character"):
            inventory.list_clients(district.ctx, district["it.ana"], room="lab\x00")
    else:
        assert inventory.list_clients(district.ctx, district["it.ana"], room="lab\x00") == []
