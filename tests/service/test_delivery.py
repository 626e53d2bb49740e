"""Package and image runs: only released things reach clients, with their own bits.

The runner here is a fake that downloads what the play was told to download,
while the run goes, from the orchestrator's real distribution server; the
real plays on real sshd hosts are in tests/remote/test_delivery_sshd.py.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.domain.states import Kind, State
from orchestrator.errors import InvalidInput, NotFound, Refused, SunsetReached
from orchestrator.remote.ansible import (
    FakePlaybookRunner,
    HostEvent,
    PlaybookRequest,
    RunOutcome,
)
from orchestrator.services import audit, chain, inventory, runs
from tests.factories import District

ASSETS = (
    "Hostname,Building,Room,Platform,Model,Serial,MAC,IP\n"
    "lab-01,101,lab-a,pc,Latitude 3420,SN0001,02:00:00:00:00:01,127.0.0.11\n"
    "cart-01,101,cart,mac,MacBookAir10,1,SN0003,02:00:00:00:00:03,127.0.0.13\n"
    "cart-02,101,cart,mac,MacBookAir10,1,SN0005,02:00:00:00:00:05,127.0.0.15\n"
    "hs-01,301,stem,mac,MacBookAir10,1,SN0004,02:00:00:00:00:04,127.0.0.14\n"
).replace("MacBookAir10,1", '"MacBookAir10,1"')
CREDS = runs.Credentials(ssh_key="-----BEGIN KEY-----secret")


class DownloadingRunner(FakePlaybookRunner):
    """Fetches every URL among the play's variables while "running" it."""

    def __init__(self) -> None:
        super().__init__()
        self.downloads: dict[str, bytes] = {}

    def run(
        self,
        request: PlaybookRequest,
        on_event: Callable[[HostEvent], None] = lambda _e: None,
        should_cancel: Callable[[], bool] = lambda: False,
    ) -> RunOutcome:
        for url in _urls(request.extravars):
            with urllib.request.urlopen(url, timeout=10) as answer:
                self.downloads[url] = answer.read()
        return super().run(request, on_event, should_cancel)


def _urls(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [u for v in value.values() for u in _urls(v)]
    if isinstance(value, list):
        return [u for v in value for u in _urls(v)]
    return [value] if isinstance(value, str) and value.startswith("http://") else []


def _run(
    d: District,
    who: str,
    playbook: str,
    *,
    building: str = "101",
    runner: FakePlaybookRunner | None = None,
    **refs: str,
) -> runs.RunView:
    """``who`` runs ``playbook`` on ``building`` (``package=`` / ``image=`` as given)."""
    return runs.run_playbook(
        d.ctx,
        d[who],
        playbook,
        building=building,
        credentials=CREDS,
        runner=runner or FakePlaybookRunner(),
        **refs,  # type: ignore[arg-type]
    )


@pytest.fixture
def clients(district: District, tmp_path: Path) -> District:
    path = tmp_path / "assets.csv"
    path.write_text(ASSETS)
    inventory.import_clients(district.ctx, district["it.ana"], path)
    return district


def _file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _mac_package(d: District, tmp_path: Path, *, to: State = State.PUBLISHED, **kw: Any) -> str:
    installer = _file(tmp_path, "Scratch.pkg", b'{"identifier": "edu.mit.scratch"}')
    return d.package(
        "scratch",
        "3.29",
        platform="mac",
        installer=str(installer),
        detection_rule="pkgutil:edu.mit.scratch>=3.29",
        to=to,
        **kw,
    )


def test_a_released_package_goes_to_its_platforms_clients_with_its_own_bits(
    clients: District, tmp_path: Path
) -> None:
    ref = _mac_package(clients, tmp_path)
    runner = DownloadingRunner()

    view = _run(clients, "btc.lincoln", "install_package", package=ref, runner=runner)

    assert view.status == "successful" and view.delivered == ref
    assert [h.hostname for h in view.hosts] == ["cart-01", "cart-02"]  # not the PC lab-01
    variables = runner.requests[0].extravars
    data = (tmp_path / "Scratch.pkg").read_bytes()
    assert variables["package_sha256"] == hashlib.sha256(data).hexdigest()
    assert variables["package_receipt"] == "edu.mit.scratch"
    assert variables["package_version"] == "3.29"
    assert runner.downloads == {variables["package_url"]: data}
    with pytest.raises(urllib.error.URLError):  # served for the run only
        urllib.request.urlopen(variables["package_url"], timeout=2)
    started = audit.entries(clients.ctx, clients["it.ana"], object_kind="run")[0]
    assert started.after == {"playbook": "install_package", "hosts": 2, "delivered": ref}


def test_a_package_not_yet_released_never_reaches_a_client(
    clients: District, tmp_path: Path
) -> None:
    ref = _mac_package(clients, tmp_path, to=State.APPROVED)
    runner = FakePlaybookRunner()

    with pytest.raises(Refused, match="approved, not released"):
        _run(clients, "btc.lincoln", "install_package", package=ref, runner=runner)
    assert runner.requests == []
    assert runs.list_runs(clients.ctx, clients["it.ana"]) == []


def test_an_installer_changed_after_approval_is_refused(clients: District, tmp_path: Path) -> None:
    ref = _mac_package(clients, tmp_path)
    (tmp_path / "Scratch.pkg").write_bytes(b"something else entirely")

    with pytest.raises(InvalidInput, match="changed after it was approved"):
        _run(clients, "btc.lincoln", "install_package", package=ref)


def test_another_buildings_local_package_is_refused(clients: District, tmp_path: Path) -> None:
    ref = _mac_package(
        clients,
        tmp_path,
        building="301",
        by="sectec.kim",
        audience="building_local",
        to=State.APPROVED,
    )
    chain.publish(clients.ctx, clients["sectec.kim"], Kind.PACKAGE, ref)  # its tech releases it

    with pytest.raises(Refused, match="building 301's, not building 101's"):
        _run(clients, "it.ana", "install_package", package=ref)
    with pytest.raises(NotFound):  # and Lincoln's tech cannot even see it
        _run(clients, "btc.lincoln", "install_package", package=ref)


def test_a_package_playbook_without_a_package_or_with_an_image_is_a_clear_error(
    clients: District,
) -> None:
    with pytest.raises(InvalidInput, match="install_package needs --package"):
        _run(clients, "it.ana", "install_package")
    with pytest.raises(InvalidInput, match="install_package takes --package, not --image"):
        _run(clients, "it.ana", "install_package", image="101/lab@1.0")
    with pytest.raises(InvalidInput, match="ping takes no package or image"):
        _run(clients, "it.ana", "ping", package="firefox@128.0")


def test_a_mac_package_without_a_receipt_rule_cannot_be_delivered(
    clients: District, tmp_path: Path
) -> None:
    installer = _file(tmp_path, "Tool.pkg", b"tool")
    ref = clients.package(
        "tool",
        "1.0",
        platform="mac",
        installer=str(installer),
        detection_rule="registry:Tool",
        to=State.PUBLISHED,
    )
    with pytest.raises(InvalidInput, match="no pkgutil receipt rule"):
        _run(clients, "it.ana", "install_package", package=ref)


def test_a_pc_package_without_a_product_code_cannot_be_delivered(
    clients: District, tmp_path: Path
) -> None:
    installer = _file(tmp_path, "Firefox.msi", b"msi")
    ref = clients.package(
        "firefox",
        "128.0",
        installer=str(installer),
        detection_rule="registry:Mozilla Firefox>=128.0",
        to=State.PUBLISHED,
    )
    with pytest.raises(InvalidInput, match="no MSI product code rule"):
        _run(clients, "it.ana", "install_package", package=ref)


def test_a_pc_package_goes_with_its_product_code(clients: District, tmp_path: Path) -> None:
    installer = _file(tmp_path, "Finance.msi", b"msi")
    ref = clients.package(
        "finance",
        "7.2",
        audience="admin_staff",
        by="it.ana",
        installer=str(installer),
        detection_rule="msi:{0F1A2B3C-0000-4000-8000-000000000001}",
        to=State.PUBLISHED,
    )
    runner = DownloadingRunner()
    view = _run(clients, "it.ana", "install_package", package=ref, runner=runner)
    assert [h.hostname for h in view.hosts] == ["lab-01"]
    variables = runner.requests[0].extravars
    assert variables["package_product_id"] == "{0F1A2B3C-0000-4000-8000-000000000001}"
    assert runner.downloads == {variables["package_url"]: b"msi"}


def test_a_mac_thin_image_carries_its_macos_version_packages_and_settings(
    clients: District, tmp_path: Path
) -> None:
    pkg = _mac_package(clients, tmp_path)
    clients.base("mac", "elementary", "2026.1")
    image = clients.custom(
        base="mac-elementary@2026.1",
        packages=[pkg],
        settings={"wallpaper": "lions"},
        to=State.PUBLISHED,
    )
    runner = DownloadingRunner()
    it = clients["it.ana"]

    view = _run(clients, "btc.lincoln", "apply_image", image=image, runner=runner)

    assert view.status == "successful" and view.delivered == image
    shown = {c.hostname: c.current_image for c in inventory.list_clients(clients.ctx, it)}
    assert shown["cart-01"] == shown["cart-02"] == image  # each Mac now runs it
    assert shown["lab-01"] is None and shown["hs-01"] is None  # not a target
    variables = runner.requests[0].extravars
    assert variables["image_kind"] == "mac_thin"
    assert variables["image_os_min"] == "15.3"
    assert variables["image_marker"] == image
    (package,) = variables["image_packages"]
    assert package["receipt"] == "edu.mit.scratch" and package["version"] == "3.29"
    assert runner.downloads[package["url"]] == (tmp_path / "Scratch.pkg").read_bytes()
    assert variables["image_settings"] == [
        {
            "domain": "org.district.orchestrator",
            "key": "wallpaper",
            "type": "string",
            "value": "lions",
        }
    ]


def test_an_image_past_its_bases_sunset_is_never_applied(clients: District, tmp_path: Path) -> None:
    clients.base("mac", "elementary", "2026.1", sunset_in=30)
    image = clients.custom(base="mac-elementary@2026.1", to=State.PUBLISHED)
    clients.ctx.clock = _later(clients, days=31)

    with pytest.raises(SunsetReached, match="sunset"):
        _run(clients, "btc.lincoln", "apply_image", image=image)


def test_a_base_image_itself_is_rolled_out_by_it_only(clients: District, tmp_path: Path) -> None:
    wim = _file(tmp_path, "pc-elementary-2026.1.wim", b"MSWIM\0\0\0 a tiny image")
    clients.base("pc", "elementary", "2026.1", artifact=str(wim))

    with pytest.raises(Refused, match="rolled out by IT"):
        _run(clients, "btc.lincoln", "apply_image", image="pc-elementary@2026.1")
    runner = DownloadingRunner()
    view = _run(clients, "it.ana", "apply_image", image="pc-elementary@2026.1", runner=runner)
    assert [h.hostname for h in view.hosts] == ["lab-01"]
    variables = runner.requests[0].extravars
    assert variables["image_kind"] == "wim" and variables["image_index"] == 1
    assert runner.downloads == {variables["image_url"]: wim.read_bytes()}


def test_a_pc_customized_image_with_packages_says_to_install_them_separately(
    clients: District,
) -> None:
    clients.base()
    pkg = clients.package(to=State.PUBLISHED)
    image = clients.custom(packages=[pkg], to=State.PUBLISHED)

    with pytest.raises(InvalidInput, match="install those with install_package"):
        _run(clients, "btc.lincoln", "apply_image", image=image)


def test_a_deprecated_image_is_still_checked_but_a_retired_one_is_refused(
    clients: District,
) -> None:
    clients.base("mac", "elementary", "2026.1")
    image = clients.custom(base="mac-elementary@2026.1", to=State.PUBLISHED)
    chain.deprecate(clients.ctx, clients["btc.lincoln"], Kind.CUSTOM_IMAGE, image, "replaced")

    def smoke() -> runs.RunView:
        return _run(clients, "btc.lincoln", "smoke_checks", image=image)

    assert smoke().status == "successful"  # superseded, but the carts still run it
    chain.retire(clients.ctx, clients["btc.lincoln"], Kind.CUSTOM_IMAGE, image, "gone")
    with pytest.raises(Refused, match="retired, not released"):
        smoke()


def _later(d: District, *, days: int) -> Callable[[], Any]:
    from datetime import timedelta

    start = d.ctx.now()
    return lambda: start + timedelta(days=days)
