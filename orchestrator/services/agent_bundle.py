"""The client's pull agent as a bundle of wheels: what ``orchestrator store agent``
builds and the ``install_agent`` playbook installs on Macs and the imaging
environment, so a client never needs the package index (docs/image-store.md).

A bundle is a folder of wheels: the project's own, built from this source
checkout without its dependencies (a client runs only ``orchestrator-pull``),
and the few libraries the agent imports, at the versions this orchestrator runs,
for each target platform asked for. ``pip`` on the client picks the wheels that
fit it. ``bundle.json`` names the bundle by the SHA-256 of its wheels, so a client
that already runs this bundle is left alone and a changed one replaces it.

The bundle is built beside the last one and swapped in by renames, so a failed
build (no network, a platform with no wheel) leaves the last bundle in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from orchestrator.domain.policy import Action, Actor, authorize
from orchestrator.errors import InvalidInput, OrchestratorError
from orchestrator.services.context import Context

AGENT_LIBRARIES = ("zstandard", "cryptography")
"""What ``orchestrator-pull`` cannot run without, beyond the standard library."""
OPTIONAL_LIBRARIES = ("fastcdc", "click")
"""What it chunks a seed with when the seed has no saved index (``fastcdc``'s
compiled chunker imports ``click``). PyPI has no macOS wheel of fastcdc 1.7.0:
for a platform without one they are left out, and its agent fetches whole the
chunks of such a seed (``fetch.pull``) instead of finding them in it."""

PROJECT = "orchestrator"
BUNDLE_FILE = "bundle.json"
REQUIREMENTS_FILE = "agent-requirements.txt"
OPTIONAL_FILE = "agent-optional.txt"
FOLDER = "agent"
"""The bundle's folder inside the image store's."""

_FROM_VERSIONS = re.compile(r" \(from versions: [^)]*\)")
"""pip's list of every version it found, dropped from its reason: dozens of them."""
_MANYLINUX = re.compile(r"^manylinux_2_(?P<minor>\d{1,2})_(?P<arch>[a-z0-9_]+)$")
_TARGET = re.compile(r"^(?P<platform>[a-z0-9_]{3,80}):(?P<python>3\.\d{1,2}(?:\.\d{1,2})?)$")


class BundleFailed(OrchestratorError):
    """pip could not build or fetch a wheel the bundle needs (no network, no such
    wheel for a target): like an unreachable remote, nothing changed here."""

    code = "bundle_failed"
    http_status = 502
    exit_code = 8


@dataclass(frozen=True)
class Target:
    """A client platform: a wheel platform tag and a Python version, as pip names them."""

    platform: str
    python: str

    @classmethod
    def parse(cls, text: str) -> Target:
        """``macosx_11_0_arm64:3.9.6`` → Target (give the micro version where a
        library excludes some, as cryptography does 3.9.0 and 3.9.1: pip reads
        ``3.9`` as 3.9.0).

        Raises: InvalidInput, naming the text.
        """
        m = _TARGET.match(text.strip())
        if m is None:
            raise InvalidInput(
                f"target {text!r}: not '<wheel platform tag>:<python version>', "
                "e.g. macosx_11_0_arm64:3.9.6 or manylinux_2_28_x86_64:3.11",
                field="target",
            )
        return cls(m["platform"], m["python"])

    def __str__(self) -> str:
        return f"{self.platform}:{self.python}"

    def platforms(self) -> list[str]:
        """The platform tags pip is asked for: a glibc-versioned Linux tag with
        every older one its wheels may carry (pip widens a macOS tag and
        ``manylinux2014`` by itself, not ``manylinux_2_34``: zstandard's wheel is
        ``manylinux_2_17``)."""
        m = _MANYLINUX.match(self.platform)
        if m is None:
            return [self.platform]
        glibc, arch = int(m["minor"]), m["arch"]
        tags = [f"manylinux_2_{minor}_{arch}" for minor in range(glibc, 16, -1)]
        return tags + ([f"manylinux2014_{arch}"] if glibc >= 17 else [])


@dataclass(frozen=True)
class Bundle:
    folder: Path
    bundle_id: str
    """The SHA-256 of the wheels' names and digests: what a client compares."""
    version: str
    """The project's version in it."""
    wheels: tuple[str, ...]
    targets: tuple[str, ...]
    """The platforms asked for; empty: this machine's own."""
    without: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Optional libraries left out, by target (``"this machine"`` for its own):
    no wheel of them for it."""

    @property
    def agent_wheel(self) -> str:
        """The orchestrator's own wheel (installed on clients without its dependencies)."""
        return next(w for w in self.wheels if w.startswith(f"{PROJECT}-"))

    @property
    def size(self) -> int:
        return sum((self.folder / name).stat().st_size for name in self.wheels)


def source_root() -> Path:
    """The checkout the running orchestrator comes from (where its wheel is built).

    Raises: InvalidInput when this orchestrator was not installed from a checkout.
    """
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file() or not (root / PROJECT).is_dir():
        raise InvalidInput(
            f"the agent bundle is built from the orchestrator's source checkout; "
            f"{root} has no pyproject.toml"
        )
    return root


def pins(names: tuple[str, ...] = AGENT_LIBRARIES) -> list[str]:
    """The agent's libraries at the versions this orchestrator runs."""
    return [f"{name}=={metadata.version(name)}" for name in names]


def build_wheelhouse(
    dest: Path,
    *,
    targets: tuple[Target, ...] = (),
    find_links: Path | None = None,
    no_index: bool = False,
) -> Bundle:
    """Build the bundle into ``dest`` (replaced whole, only once the build succeeded).

    ``targets``: the client platforms to fetch wheels for; none means this
    machine's. ``find_links``/``no_index``: where pip looks for the libraries'
    wheels (a district mirror or a folder of wheels), as pip's options of the
    same names.

    A target no wheel of an optional library fits (:data:`OPTIONAL_LIBRARIES`)
    gets the bundle without it, said in ``bundle.without``.

    Raises: BundleFailed (pip's own reason), InvalidInput.
    """
    if no_index and find_links is None:
        raise InvalidInput(
            "without the package index pip needs a folder of wheels to look in (find_links)",
            field="no_index",
        )
    root = source_root()
    if find_links is not None and not find_links.is_dir():
        raise InvalidInput(f"{find_links} is not a folder of wheels", field="find_links")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.new.", dir=dest.parent))
    try:
        _pip("wheel", "--no-deps", "--wheel-dir", str(work), str(root), what="the project's wheel")
        sources = (["--find-links", str(find_links)] if find_links else []) + (
            ["--no-index"] if no_index else []
        )
        without: dict[str, tuple[str, ...]] = {}
        for target in targets or (None,):
            platform = (
                []
                if target is None
                else [
                    *(arg for tag in target.platforms() for arg in ("--platform", tag)),
                    "--python-version",
                    target.python,
                    "--implementation",
                    "cp",
                ]
            )
            download = ("download", "--only-binary=:all:", "--dest", str(work), *sources)
            where = str(target or "this machine")
            _pip(*download, *platform, *pins(), what=f"the agent's libraries for {where}")
            lacking: list[str] = []
            for name in OPTIONAL_LIBRARIES:
                try:
                    _pip(*download, *platform, *pins((name,)), what=f"{name} for {where}")
                except BundleFailed:
                    lacking.append(name)
            if lacking:
                without[where] = tuple(lacking)
        (work / REQUIREMENTS_FILE).write_text("".join(f"{p}\n" for p in pins()))
        (work / OPTIONAL_FILE).write_text("".join(f"{p}\n" for p in pins(OPTIONAL_LIBRARIES)))
        wheels = sorted(p.name for p in work.glob("*.whl"))
        digest = hashlib.sha256()
        for name in wheels:
            digest.update(f"{name} {_sha256(work / name)}\n".encode())
        digest.update((work / REQUIREMENTS_FILE).read_bytes())
        digest.update((work / OPTIONAL_FILE).read_bytes())
        bundle = {
            "bundle_id": digest.hexdigest(),
            "version": metadata.version(PROJECT),
            "wheels": wheels,
            "targets": [str(t) for t in targets],
            "without": {t: list(names) for t, names in without.items()},
        }
        with open(work / BUNDLE_FILE, "w") as f:
            json.dump(bundle, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        work.chmod(0o755)
        _swap(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return load(dest)


def _swap(new: Path, dest: Path) -> None:
    """Put ``new`` at ``dest``; the old bundle is removed only once the new one is there."""
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    new.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _pip(*args: str, what: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        # pip's own reason, without its warnings and its list of versions it ignored.
        errors = [
            _FROM_VERSIONS.sub("", line.removeprefix("ERROR: "))
            for line in lines
            if line.startswith("ERROR:") and not line.startswith("ERROR: Ignored")
        ]
        reason = "; ".join(errors[-2:] or lines[-2:]) or f"exit {done.returncode}"
        raise BundleFailed(f"pip could not get {what}: {reason}")


def load(folder: Path) -> Bundle:
    """The bundle in ``folder``.

    Raises: InvalidInput: none there, or one that does not hold what it lists.
    """
    try:
        data: Any = json.loads((folder / BUNDLE_FILE).read_text())
    except FileNotFoundError:
        raise InvalidInput(
            f"no agent bundle in {folder}: build it first with 'orchestrator store agent'"
        ) from None
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{folder / BUNDLE_FILE}: not a bundle description ({exc})") from None
    try:
        wheels = tuple(str(w) for w in data["wheels"])
        bundle = Bundle(
            folder,
            str(data["bundle_id"]),
            str(data["version"]),
            wheels,
            tuple(str(t) for t in data["targets"]),
            {str(t): tuple(str(n) for n in names) for t, names in data.get("without", {}).items()},
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise InvalidInput(f"{folder / BUNDLE_FILE}: not a bundle description ({exc})") from None
    lost = [w for w in wheels if not (folder / w).is_file()]
    if not any(w.startswith(f"{PROJECT}-") for w in wheels):
        lost.append(f"the {PROJECT} wheel")
    lost += [f for f in (REQUIREMENTS_FILE, OPTIONAL_FILE) if not (folder / f).is_file()]
    if lost:
        raise InvalidInput(
            f"the agent bundle in {folder} lacks {', '.join(lost)}: "
            "build it again with 'orchestrator store agent'"
        )
    return bundle


def folder_of(ctx: Context) -> Path:
    return ctx.image_store_dir / FOLDER


def build(
    ctx: Context,
    actor: Actor,
    *,
    targets: tuple[Target, ...] = (),
    find_links: Path | None = None,
    no_index: bool = False,
) -> Bundle:
    """Build the installation's agent bundle (see :func:`build_wheelhouse`). IT only.

    Raises: Refused, BundleFailed, InvalidInput.
    """
    authorize(actor, Action.MANAGE_IMAGE_STORE, building=None)
    return build_wheelhouse(
        folder_of(ctx), targets=targets, find_links=find_links, no_index=no_index
    )


def current(ctx: Context) -> Bundle:
    """The installation's bundle, for the ``install_agent`` playbook.

    Raises: InvalidInput: none built yet.
    """
    return load(folder_of(ctx))


def extravars(ctx: Context) -> dict[str, str]:
    """What ``install_agent`` is handed: where the bundle is on this machine, its id
    and the orchestrator's wheel in it.

    Raises: InvalidInput: no bundle built yet.
    """
    bundle = current(ctx)
    return {
        "agent_bundle": str(bundle.folder.resolve()),
        "agent_bundle_id": bundle.bundle_id,
        "agent_wheel": bundle.agent_wheel,
    }
