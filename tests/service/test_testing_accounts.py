"""The test clients pool, the persona test accounts and the key rotation (both databases)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy.engine import Engine
from sqlmodel import Session

from orchestrator.db.session import transaction
from orchestrator.errors import InvalidInput, NotFound, Refused
from orchestrator.services import audit, inventory, testing, vault
from tests.factories import District

PASSWORD = "Stu-Canary-7731!"
STAFF_PASSWORD = "Staff-Canary-4410!"
WINRM = "WinRM-Canary-9902!"

ASSETS = (
    "Hostname,Building,Room,Platform,Model,Serial,MAC,IP\n"
    "lab-01,101,lab-a,pc,Latitude 3420,SN0001,02:00:00:00:00:01,127.0.0.11\n"
    "lab-02,101,lab-a,pc,Latitude 3420,SN0002,02:00:00:00:00:02,127.0.0.12\n"
    'cart-01,102,cart,mac,"MacBookAir10,1",SN0003,02:00:00:00:00:03,127.0.0.13\n'
    "hs-01,301,stem,pc,Latitude 3420,SN0004,02:00:00:00:00:04,127.0.0.14\n"
    'hs-02,301,stem,mac,"MacBookAir10,1",SN0005,02:00:00:00:00:05,127.0.0.15\n'
)


@pytest.fixture
def clients(district: District, tmp_path: Path) -> District:
    path = tmp_path / "assets.csv"
    path.write_text(ASSETS)
    inventory.import_clients(district.ctx, district["it.ana"], path)
    return district


def _audit_actions(d: District) -> list[str]:
    return [e.action for e in audit.entries(d.ctx, d["it.ana"])]


def _dump(engine: Engine) -> str:
    """Every row of every table, as text."""
    out = []
    with engine.connect() as conn:
        for table in sa.inspect(engine).get_table_names():
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                out.append(f"{table}: {row!r}")
    return "\n".join(out)


def _set(d: District, who: str = "it.ana", **kw: str) -> testing.AccountView:
    args = {"building": "101", "persona": "student", "username": "stu.test101"} | kw
    return testing.set_test_account(
        d.ctx,
        d[who],
        building=args["building"],
        persona=args["persona"],
        username=args["username"],
        password=kw.get("password", PASSWORD),
    )


# ---------------------------------------------------------------------------
# Test clients
# ---------------------------------------------------------------------------


def test_it_marks_clients_and_the_pool_lists_them_by_platform_and_level(clients: District) -> None:
    d = clients
    view, changed = testing.mark_test_client(d.ctx, d["it.ana"], "LAB-02")
    assert changed and view.test_client
    assert (view.platform.value, view.level.value, view.building) == ("pc", "elementary", "101")
    testing.mark_test_client(d.ctx, d["it.wei"], "cart-01")
    testing.mark_test_client(d.ctx, d["it.wei"], "hs-02")

    pool = testing.list_test_clients(d.ctx, d["edtech.grace"])
    assert [(c.hostname, c.platform.value, c.level.value) for c in pool] == [
        ("cart-01", "mac", "elementary"),
        ("hs-02", "mac", "high"),
        ("lab-02", "pc", "elementary"),
    ]
    macs = testing.list_test_clients(d.ctx, d["it.ana"], platform="mac", level="high")
    assert [c.hostname for c in macs] == ["hs-02"]
    assert testing.list_test_clients(d.ctx, d["it.ana"], level="middle") == []
    assert _audit_actions(d).count("client.mark_test") == 3


def test_marking_again_changes_nothing_and_unmark_takes_it_out(clients: District) -> None:
    d = clients
    testing.mark_test_client(d.ctx, d["it.ana"], "lab-01")
    _, changed = testing.mark_test_client(d.ctx, d["it.ana"], "lab-01")
    assert not changed
    assert _audit_actions(d).count("client.mark_test") == 1

    view, changed = testing.mark_test_client(d.ctx, d["it.ana"], "lab-01", test_client=False)
    assert changed and not view.test_client
    assert testing.list_test_clients(d.ctx, d["it.ana"]) == []
    assert "client.unmark_test" in _audit_actions(d)


def test_building_staff_see_only_their_buildings_test_clients(clients: District) -> None:
    d = clients
    for host in ("lab-01", "cart-01", "hs-01"):
        testing.mark_test_client(d.ctx, d["it.ana"], host)

    assert [c.hostname for c in testing.list_test_clients(d.ctx, d["btc.lincoln"])] == ["lab-01"]
    assert [c.hostname for c in testing.list_test_clients(d.ctx, d["sectec.kim"])] == ["hs-01"]
    assert [c.hostname for c in testing.list_test_clients(d.ctx, d["principal.lincoln"])] == [
        "lab-01"
    ]


@pytest.mark.parametrize("who", ["edtech.grace", "sectec.kim", "btc.lincoln", "principal.lincoln"])
def test_only_it_marks_test_clients(clients: District, who: str) -> None:
    d = clients
    host = "hs-01" if who == "sectec.kim" else "lab-01"
    with pytest.raises(Refused, match="cannot mark or unmark test clients"):
        testing.mark_test_client(d.ctx, d[who], host)
    assert testing.list_test_clients(d.ctx, d["it.ana"]) == []


def test_unknown_host_platform_or_level_is_said_and_changes_nothing(clients: District) -> None:
    d = clients
    with pytest.raises(NotFound, match="no client 'lab-99'"):
        testing.mark_test_client(d.ctx, d["it.ana"], "lab-99")
    with pytest.raises(InvalidInput, match="platform: no platform 'linux'"):
        testing.list_test_clients(d.ctx, d["it.ana"], platform="linux")
    with pytest.raises(InvalidInput, match="level: no level 'kinder'"):
        testing.list_test_clients(d.ctx, d["it.ana"], level="kinder")
    assert "client.mark_test" not in _audit_actions(d)


# ---------------------------------------------------------------------------
# Persona test accounts
# ---------------------------------------------------------------------------


def test_an_account_is_stored_encrypted_listed_without_password_and_revealed_to_runs(
    district: District,
) -> None:
    d = district
    view = _set(d)
    assert (view.building, view.persona, view.username, view.summary) == (
        "101",
        testing.Persona.STUDENT,
        "stu.test101",
        "password set",
    )
    [listed] = testing.list_test_accounts(d.ctx, d["edtech.grace"])
    assert (listed.username, listed.summary, listed.updated_by) == (
        "stu.test101",
        "password set",
        "it.ana",
    )
    assert PASSWORD not in repr(listed)

    login = testing.persona_login(d.ctx, "101", "student")
    assert (login.username, login.password) == ("stu.test101", PASSWORD)
    assert PASSWORD not in repr(login)
    assert PASSWORD not in _dump(d.ctx.engine)
    with d.ctx.engine.connect() as conn:
        token = conn.execute(sa.text("SELECT ciphertext FROM test_account")).scalar_one()
    assert PASSWORD.encode() not in bytes(token)


def test_setting_again_replaces_and_the_audit_names_the_username_only(district: District) -> None:
    d = district
    _set(d, password="first-password")
    _set(d, who="it.wei", username="stu2.test101")

    login = testing.persona_login(d.ctx, "101", "student")
    assert (login.username, login.password) == ("stu2.test101", PASSWORD)
    entries = [e for e in audit.entries(d.ctx, d["it.ana"]) if e.object_kind == "test_account"]
    assert [e.action for e in entries] == ["test_account.set", "test_account.replace"]
    assert entries[1].after == {"username": "stu2.test101", "summary": "password set"}
    text = repr(entries)
    assert PASSWORD not in text and "first-password" not in text


def test_a_sectec_keeps_its_own_buildings_accounts(district: District) -> None:
    d = district
    _set(d, who="sectec.kim", building="301", persona="staff", username="staff.test301")

    assert [a.username for a in testing.list_test_accounts(d.ctx, d["sectec.lee"])] == [
        "staff.test301"
    ]
    testing.remove_test_account(d.ctx, d["sectec.lee"], building="301", persona="staff")
    assert testing.list_test_accounts(d.ctx, d["it.ana"]) == []
    assert "test_account.remove" in _audit_actions(d)


@pytest.mark.parametrize(
    ("who", "building", "words"),
    [
        ("btc.lincoln", "101", "BTC cannot set the student and staff test accounts"),
        ("edtech.grace", "101", "EdTech cannot set the student and staff test accounts"),
        ("principal.lincoln", "101", "Principal cannot set"),
        ("sectec.kim", "302", "in building 302 (a building tech acts only in its own buildings)"),
    ],
)
def test_who_may_not_set_or_remove_test_accounts(
    district: District, who: str, building: str, words: str
) -> None:
    d = district
    _set(d, building=building)
    with pytest.raises(Refused, match=words.replace("(", r"\(").replace(")", r"\)")):
        _set(d, who=who, building=building, password="other-password")
    with pytest.raises(Refused):
        testing.remove_test_account(d.ctx, d[who], building=building, persona="student")
    assert testing.persona_login(d.ctx, building, "student").password == PASSWORD


@pytest.mark.parametrize("who", ["btc.lincoln", "principal.lincoln"])
def test_btcs_and_principals_may_not_list_test_accounts(district: District, who: str) -> None:
    with pytest.raises(Refused, match="cannot see the student and staff test accounts"):
        testing.list_test_accounts(district.ctx, district[who])


def test_a_sectec_lists_only_its_own_buildings_accounts(district: District) -> None:
    d = district
    _set(d, building="301")
    _set(d, building="302")
    assert [a.building for a in testing.list_test_accounts(d.ctx, d["sectec.kim"])] == ["301"]
    with pytest.raises(Refused):
        testing.list_test_accounts(d.ctx, d["sectec.kim"], building="302")


@pytest.mark.parametrize(
    ("kw", "error", "words"),
    [
        ({"building": "999"}, NotFound, "no building '999'"),
        ({"building": "1a"}, InvalidInput, "building: '1a' is not a building number"),
        ({"persona": "teacher"}, InvalidInput, "persona: no persona 'teacher'"),
        ({"username": "  "}, InvalidInput, "username: an empty username"),
        ({"username": "Bad User"}, InvalidInput, "username: 'Bad User' is not a username"),
        ({"password": ""}, InvalidInput, "password: an empty password"),
        ({"password": "   "}, InvalidInput, "password: an empty password"),
        ({"password": "two\nlines"}, InvalidInput, "password: a password cannot hold"),
        ({"password": "x" * 257}, InvalidInput, "password: longer than 256"),
    ],
)
def test_bad_input_is_named_and_changes_nothing(
    district: District, kw: dict[str, str], error: type[Exception], words: str
) -> None:
    d = district
    with pytest.raises(error, match=words):
        _set(d, **kw)
    assert testing.list_test_accounts(d.ctx, d["it.ana"]) == []
    assert not any(a.startswith("test_account") for a in _audit_actions(d))


def test_removing_or_revealing_an_account_that_is_not_set_is_not_found(
    district: District,
) -> None:
    d = district
    with pytest.raises(NotFound, match="building 101 has no staff test account"):
        testing.remove_test_account(d.ctx, d["it.ana"], building="101", persona="staff")
    with pytest.raises(NotFound, match="building 101 has no student test account"):
        testing.persona_login(d.ctx, "101", "student")
    with pytest.raises(InvalidInput, match="no persona 'admin'"):
        testing.persona_login(d.ctx, "101", "admin")


# ---------------------------------------------------------------------------
# Key rotation
# ---------------------------------------------------------------------------


def _stored(d: District) -> list[bytes]:
    with d.ctx.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT ciphertext FROM credential UNION ALL SELECT ciphertext FROM test_account"
            )
        ).all()
    return [bytes(r[0]) for r in rows]


def _key_files(key_file: Path) -> list[str]:
    """The key file and anything left beside it by a rotation (its temp files)."""
    return sorted(p.name for p in key_file.parent.iterdir() if key_file.name in p.name)


def _secrets(d: District) -> None:
    vault.set_secret(d.ctx, d["it.ana"], "winrm-password", WINRM)
    _set(d)
    _set(d, persona="staff", username="staff.test101", password=STAFF_PASSWORD)


def _readable_with(d: District, key: bytes) -> None:
    """Every stored secret decrypts with ``key``, and to the values set."""
    f = Fernet(key.strip())
    assert sorted(f.decrypt(t).decode() for t in _stored(d)) == sorted(
        [WINRM, PASSWORD, STAFF_PASSWORD]
    )
    assert testing.persona_login(d.ctx, "101", "staff").password == STAFF_PASSWORD
    creds = vault.client_credentials(d.ctx, ssh_user="a", winrm_user="b")
    assert creds.winrm_password == WINRM


def test_rotation_re_encrypts_every_secret_and_the_old_key_reads_none(district: District) -> None:
    d = district
    _secrets(d)
    key_file = d.ctx.secret_key_file
    old_key = key_file.read_bytes()

    view = vault.rotate_key(d.ctx, d["it.ana"])

    assert (view.credentials, view.test_accounts) == (1, 2)
    new_key = key_file.read_bytes()
    assert new_key != old_key
    assert key_file.stat().st_mode & 0o777 == 0o600
    _readable_with(d, new_key)
    for token in _stored(d):
        with pytest.raises(InvalidToken):
            Fernet(old_key.strip()).decrypt(token)
    assert _key_files(key_file) == ["secret.key"]
    [entry] = [e for e in audit.entries(d.ctx, d["it.ana"]) if e.action == "credential.rotate_key"]
    assert entry.after == {"credentials": 1, "test_accounts": 2}
    text = repr(entry)
    assert key_file.read_text().strip() not in text and old_key.decode().strip() not in text


def test_only_it_rotates_the_key(district: District) -> None:
    d = district
    _secrets(d)
    old_key = d.ctx.secret_key_file.read_bytes()
    with pytest.raises(Refused, match="set the district's client login secrets"):
        vault.rotate_key(d.ctx, d["sectec.kim"])
    assert d.ctx.secret_key_file.read_bytes() == old_key


def _fail_on_second(monkeypatch: pytest.MonkeyPatch) -> None:
    real = vault._reencrypt
    calls: list[int] = []

    def flaky(*args: object, **kw: object) -> bytes:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk gone mid-rotation")
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(vault, "_reencrypt", flaky)


def _fail_rename(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(tmp: Path, path: Path) -> None:
        raise OSError("rename refused")

    monkeypatch.setattr(vault, "_replace_file", broken)


def _fail_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The transaction's body runs to its end (the key file replaced), then the commit fails."""

    @contextmanager
    def failing(engine: Engine) -> Iterator[Session]:
        with transaction(engine) as session:
            yield session
            raise OSError("connection lost at commit")

    monkeypatch.setattr(vault, "transaction", failing)


@pytest.mark.parametrize("fault", [_fail_on_second, _fail_rename, _fail_commit])
def test_a_rotation_that_fails_half_way_leaves_everything_readable_with_the_old_key(
    district: District, monkeypatch: pytest.MonkeyPatch, fault: object
) -> None:
    d = district
    _secrets(d)
    key_file = d.ctx.secret_key_file
    old_key = key_file.read_bytes()
    before = sorted(_stored(d))

    with monkeypatch.context() as m:
        fault(m)  # type: ignore[operator]
        with pytest.raises(OSError):
            vault.rotate_key(d.ctx, d["it.ana"])

    assert key_file.read_bytes() == old_key
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert sorted(_stored(d)) == before
    _readable_with(d, old_key)
    assert _key_files(key_file) == ["secret.key"]
    assert "credential.rotate_key" not in _audit_actions(d)


def test_a_secret_the_key_cannot_read_stops_the_rotation_before_anything_changes(
    district: District,
) -> None:
    d = district
    _secrets(d)
    key_file = d.ctx.secret_key_file
    old_key = key_file.read_bytes()
    stranger = Fernet(Fernet.generate_key()).encrypt(b"stored under another key")
    with d.ctx.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE test_account SET ciphertext = :t WHERE persona = 'staff'"),
            {"t": stranger},
        )

    with pytest.raises(vault.SecretKeyProblem, match="the staff test account of building"):
        vault.rotate_key(d.ctx, d["it.ana"])
    assert key_file.read_bytes() == old_key
    assert testing.persona_login(d.ctx, "101", "student").password == PASSWORD


def test_rotating_with_a_missing_key_file_and_secrets_stored_is_refused(
    district: District,
) -> None:
    d = district
    _secrets(d)
    d.ctx.secret_key_file.unlink()
    with pytest.raises(vault.SecretKeyProblem, match="is missing"):
        vault.rotate_key(d.ctx, d["it.ana"])
    assert not d.ctx.secret_key_file.exists()


def test_the_canary_password_is_in_no_log_audit_entry_or_table(
    clients: District, caplog: pytest.LogCaptureFixture
) -> None:
    d = clients
    caplog.set_level("DEBUG")
    testing.mark_test_client(d.ctx, d["it.ana"], "lab-01")
    _secrets(d)
    testing.list_test_accounts(d.ctx, d["edtech.grace"])
    vault.rotate_key(d.ctx, d["it.ana"])
    assert testing.persona_login(d.ctx, "101", "student").password == PASSWORD

    for canary in (PASSWORD, STAFF_PASSWORD, WINRM):
        assert canary not in caplog.text
        assert canary not in repr(audit.entries(d.ctx, d["it.ana"]))
        assert canary not in _dump(d.ctx.engine)


def test_a_reader_that_meets_a_rotation_half_done_reads_once_more(
    district: District, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = district
    monkeypatch.setattr(vault, "RETRY_PAUSE", 0)
    _secrets(d)
    [stale, *_] = _stored(d)  # read just before the rotation committed
    vault.rotate_key(d.ctx, d["it.ana"])
    readings = [stale, *_stored(d)]

    def load() -> bytes:
        return readings.pop(0)

    _, plain = vault.reveal(d.ctx, load, bytes, "a secret")
    assert plain == WINRM and len(readings) == 2

    with pytest.raises(vault.SecretKeyProblem, match="a secret cannot be decrypted"):
        vault.reveal(d.ctx, lambda: stale, bytes, "a secret")
