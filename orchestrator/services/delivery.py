"""What a package or image playbook is given: only released things, with their bits.

``orchestrator run install_package --package firefox@128.0`` (and
``apply_image`` / ``smoke_checks`` with ``--image``) goes through here
before anything reaches a client. The gates are the chain's:

* the thing is released (published, or deprecated: superseded but still
  deployable), not retired or sunset, and its effective sunset date has not
  been reached;
* it is for this building: a district-wide package or one of the
  building's own; a customized image of this building; a base image only
  when IT rolls it out (building techs deploy their customized images);
* only clients of the thing's platform are targeted;
* its artifact is there: a local file is checked against the catalog's
  SHA-256 before it is offered (the playbook checks it again on the client,
  while it downloads); a URL is handed on with its SHA-256.

Where the building has a distribution point that holds the artifact (staged
there after its release, :mod:`orchestrator.services.staging`), the clients
pull it from the point instead: each artifact's variables carry a ``pull``
source (the point, the image's name in the store and what its signed manifest
must say), and the client's pull agent checks the manifest against the
district's keys before it fetches a chunk. Other local artifacts are offered
over the orchestrator's distribution server
(:mod:`orchestrator.remote.distribution`) at ``/<sha256>/<file name>``, for
the length of the run. Scheduled deployments with waves and windows build on
this; until they land, a run is the way to push one thing to one building.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from sqlmodel import Session

from orchestrator.db.models import Releasable
from orchestrator.domain import sunset
from orchestrator.domain.policy import Action, Actor, authorize, authorize_step
from orchestrator.domain.states import Kind, State, Step
from orchestrator.errors import Conflict, InvalidInput, Refused, SunsetReached
from orchestrator.remote.distribution import sha256_file
from orchestrator.services import catalog, chain, releasables
from orchestrator.services.refs import ref_of

PACKAGE_PLAYBOOKS = frozenset({"install_package"})
IMAGE_PLAYBOOKS = frozenset({"apply_image", "smoke_checks"})
IMAGE_MARKER_PATH = "var/orchestrator/image-marker"


@dataclass(frozen=True)
class Artifact:
    """One file a playbook downloads: served by us (``path``) or already at ``url``."""

    sha256: str
    name: str
    path: Path | None = None
    url: str | None = None
    releasable_id: int | None = None
    """The catalog entry whose artifact this is (what a distribution point holds)."""
    label: str = ""
    """Whose and what it is, for messages: "package scratch@3.30: its installer"."""

    def verify(self) -> None:
        """Check a local file still has the approved SHA-256 (it is read whole).

        Raises: InvalidInput: it changed after it was approved.
        """
        if self.path is None:
            return
        actual = sha256_file(self.path)
        if actual != self.sha256:
            raise InvalidInput(
                f"{self.label} {self.path} has SHA-256 {actual}, not the approved "
                f"{self.sha256}: the file changed after it was approved",
                field="artifact",
            )

    @property
    def served_as(self) -> str:
        return f"{self.sha256}/{self.name}"

    def url_from(self, base_url: str | None) -> str:
        if self.url is not None:
            return self.url
        assert base_url is not None, "a local artifact needs the distribution server"
        return f"{base_url.rstrip('/')}/{self.served_as}"


@dataclass(frozen=True)
class Delivery:
    """A released thing, ready to hand to a playbook."""

    ref: str
    kind: Kind
    platform: str
    artifacts: tuple[Artifact, ...] = ()
    variables: Mapping[str, Any] = field(default_factory=dict)
    """Extra variables, with ``{"artifact": i}`` placeholders where URLs go."""

    def verify(self, pulled: Collection[int] = ()) -> None:
        """Check every local artifact but those (by index) the clients pull from their
        distribution point: those reach them as the signed manifest's bytes, checked
        on the client, so the orchestrator's copy is not read (a 20 GiB image would be,
        whole, before every run).

        Raises: InvalidInput: a file changed after it was approved.
        """
        for i, a in enumerate(self.artifacts):
            if i not in pulled:
                a.verify()

    def served(self, pulled: Collection[int] = ()) -> dict[str, Path]:
        """URL path → local file, for the distribution server: every local artifact
        but those (by index) the clients pull from their distribution point."""
        return {
            a.served_as: a.path
            for i, a in enumerate(self.artifacts)
            if a.path is not None and i not in pulled
        }

    def extravars(
        self,
        base_url: str | None,
        pulls: Mapping[int, Mapping[str, str]] | None = None,
        *,
        district_keys: str = "",
    ) -> dict[str, Any]:
        """The variables with every artifact's URL and pull source filled in.

        ``pulls``: artifact index → its pull source (see
        :func:`orchestrator.services.staging.pull_sources`); an artifact without one
        gets ``None`` and is downloaded from its URL. ``district_keys``: the public
        keys (``orchestrator store keys`` lines) the clients check manifests with.
        """
        sources = pulls or {}

        def fill(value: Any) -> Any:
            if isinstance(value, dict):
                if set(value) == {"artifact"}:
                    if value["artifact"] in sources:  # pulled from the point, not served
                        return ""
                    return self.artifacts[value["artifact"]].url_from(base_url)
                if set(value) == {"pull"}:
                    source = sources.get(value["pull"])
                    return dict(source) if source is not None else None
                return {k: fill(v) for k, v in value.items()}
            if isinstance(value, list):
                return [fill(v) for v in value]
            return value

        filled = {k: fill(v) for k, v in self.variables.items()}
        if sources:
            filled["district_keys"] = district_keys
        return filled


def needs_reference(playbook: str) -> str | None:
    """'package' or 'image' when the playbook needs one, else None."""
    if playbook in PACKAGE_PLAYBOOKS:
        return "package"
    if playbook in IMAGE_PLAYBOOKS:
        return "image"
    return None


def prepare(
    session: Session,
    actor: Actor,
    playbook: str,
    *,
    building: str,
    package: str | None,
    image: str | None,
    today: date,
    trial_of: str | None = None,
) -> Delivery | None:
    """Check the gates and describe what the playbook gets (None: it needs nothing).

    ``trial_of``: an image test of that image (see :func:`check_under_test`) puts it,
    still in the chain's test step, on a test client: ``apply_image`` with the image
    itself, then, for a PC's customized image, ``install_package`` with each of its
    packages (see :data:`TRIAL_PACKAGE_STATES`).

    Raises:
        InvalidInput: a reference missing, unexpected or malformed; an artifact
            missing (whether each still has its SHA-256 is :meth:`Delivery.verify`'s);
            a package the orchestrator cannot detect. NotFound: no such thing the actor may see.
        Refused: not released, for another building, or a base image rolled
            out by someone other than IT. SunsetReached: past its sunset.
    """
    wanted = needs_reference(playbook)
    given = {"package": package, "image": image}
    for what, ref in given.items():
        if ref is not None and what != wanted:
            needed = f"--{wanted}" if wanted else "no package or image"
            raise InvalidInput(f"{playbook} takes {needed}, not --{what}", field=what)
    if wanted is None:
        return None
    ref = given[wanted]
    if ref is None:
        example = "firefox@128.0" if wanted == "package" else "101/lab@1.2 or pc-high@2026.1"
        raise InvalidInput(
            f"{playbook} needs --{wanted} (a released {wanted}, e.g. {example})", field=wanted
        )
    if wanted == "package":
        row = releasables.resolve(session, actor, Kind.PACKAGE, ref)
    else:
        kind = Kind.CUSTOM_IMAGE if "/" in ref else Kind.BASE_IMAGE
        row = releasables.resolve(session, actor, kind, ref)
    if trial_of is not None:
        _check_trial(session, actor, playbook, row, trial_of, today=today)
    else:
        check_released(session, actor, row, building=building, today=today)
    if row.kind == Kind.PACKAGE.value:
        artifact = checked_artifact(row, verify=False)
        return Delivery(ref_of(row), Kind.PACKAGE, row.platform, (artifact,), _package_vars(row, 0))
    return _image(session, playbook, row, building, trial=trial_of is not None)


TRIAL_PACKAGE_STATES = frozenset(s.value for s in State) - {State.RETIRED.value}
"""A package an image carries goes on the test client in any state but retired (a
sunset one is refused as past its sunset): the image's digest covers the package's
content, so a package changed after the test makes the test's evidence outdated."""


def _check_trial(
    session: Session, actor: Actor, playbook: str, row: Releasable, image_ref: str, *, today: date
) -> None:
    kind = Kind.CUSTOM_IMAGE if "/" in image_ref else Kind.BASE_IMAGE
    image = releasables.resolve(session, actor, kind, image_ref)
    check_under_test(session, actor, image, today=today)
    if playbook == "apply_image" and row.id == image.id:
        return
    if playbook != "install_package" or row.kind != Kind.PACKAGE.value:
        raise InvalidInput(
            "an image test runs apply_image with the image, then install_package with its packages",
            field="playbook",
        )
    assert image.id is not None
    if row.id not in {p.id for p in catalog.package_rows(session, image.id)}:
        raise Refused(f"package {ref_of(row)} is not one of {ref_of(image)}'s packages")
    refuse_sunset(session, row, today=today)
    if row.state not in TRIAL_PACKAGE_STATES:
        raise Conflict(
            f"package {ref_of(row)} is retired: the image carries a package that is gone; "
            "revise the image"
        )


def refuse_sunset(session: Session, row: Releasable, *, today: date) -> None:
    """Raises SunsetReached when ``row`` is sunset or past its effective sunset date."""
    effective = catalog.effective_sunset_of(session, row)
    if row.state == State.SUNSET.value or sunset.is_sunset(effective, today):
        raise SunsetReached(
            f"{Kind(row.kind).label} {ref_of(row)} reached its sunset date ({effective}): "
            "it is never deployed again"
        )


def check_released(
    session: Session, actor: Actor, row: Releasable, *, building: str | None, today: date
) -> None:
    """The chain's gates for ``row`` reaching clients of ``building``: released, not
    sunset, for this building (None: no building named; only a district-wide thing, or a
    base image rolled out by IT, passes then), a base image only by IT.

    Raises:
        SunsetReached: past its effective sunset. Refused: not released, another
            building's, or a base image rolled out by someone other than IT.
    """
    ref, kind = ref_of(row), Kind(row.kind)
    refuse_sunset(session, row, today=today)
    if row.state not in (State.PUBLISHED.value, State.DEPRECATED.value):
        word = "published" if kind is Kind.BASE_IMAGE else "released"
        raise Refused(
            f"{kind.label} {ref} is {row.state.replace('_', ' ')}, not {word}: "
            "nothing reaches a client before the approval chain has passed it"
        )
    if kind is Kind.BASE_IMAGE:
        authorize(actor, Action.ROLL_OUT_BASE_IMAGE, building=building)
    elif row.scope_key not in ("*", building):
        raise Refused(
            f"{kind.label} {ref} is building {row.scope_key}'s, not building {building}'s"
        )


def check_under_test(session: Session, actor: Actor, row: Releasable, *, today: date) -> None:
    """The gates for an image in the chain's test step reaching a test client: it is in
    testing, not past its sunset, and the actor may decide its test step (EdTech, or a
    SecTec for its own building's images; never a BTC, never one of its authors).

    Raises: SunsetReached, Conflict (not in testing), Refused.
    """
    ref, kind = ref_of(row), Kind(row.kind)
    refuse_sunset(session, row, today=today)
    if row.state != State.TESTING.value:
        raise Conflict(
            f"{kind.label} {ref} is {row.state.replace('_', ' ')}: image tests run while an "
            "image is in the chain's test step (testing)"
        )
    authorize_step(
        actor,
        chain.load_policy(session, kind),
        Step.TEST,
        building=catalog.building_of(row),
        authors=catalog.authors_of(row),
        doing="run image tests",
    )


def checked_artifact(row: Releasable, *, what: str = "artifact", verify: bool = True) -> Artifact:
    """The row's file or URL; a local file is checked against the catalog's SHA-256
    (with ``verify``; else later, :meth:`Delivery.verify`, once it is known whether
    the clients pull it from their point instead).

    Raises: InvalidInput.
    """
    ref, stated = row.artifact_ref, row.artifact_sha256
    label = f"{Kind(row.kind).label} {ref_of(row)}"
    if not ref or not stated:
        raise InvalidInput(f"{label} has no {what} to deliver", field=what)
    name = ref.rstrip("/").rsplit("/", 1)[-1] or "artifact"
    if ref.startswith(("http://", "https://")):
        return Artifact(stated, name, url=ref, releasable_id=row.id)
    path = Path(ref.removeprefix("file://"))
    if not path.is_file():
        raise InvalidInput(f"{label}: its {what} {path} is not here any more", field=what)
    artifact = Artifact(stated, name, path=path, releasable_id=row.id, label=f"{label}: its {what}")
    if verify:
        artifact.verify()
    return artifact


def detection(row: Releasable) -> tuple[str, str]:
    """(receipt id for Macs, MSI product code for PCs) from the detection rule.

    Rules look like ``pkgutil:edu.mit.scratch>=3.29`` or ``msi:{0F1A2B3C}``.

    Raises: InvalidInput for a Mac package without a pkgutil rule, or a PC
        package without an MSI product code (without them a client cannot
        tell whether the package is installed, and would reinstall it each run).
    """
    rule = (row.detection_rule or "").strip()
    how, _, what = rule.partition(":")
    ident = what.split(">=")[0].split("==")[0].strip()
    receipt = ident if how == "pkgutil" else ""
    product = ident if how == "msi" else ""
    if row.platform == "mac" and not receipt:
        raise InvalidInput(
            f"package {ref_of(row)} has no pkgutil receipt rule (e.g. 'pkgutil:org.example.app'): "
            "without it a Mac cannot tell whether it is installed",
            field="detection_rule",
        )
    if row.platform == "pc" and not product:
        raise InvalidInput(
            f"package {ref_of(row)} has no MSI product code rule (e.g. 'msi:{{0F1A2B3C-…}}'): "
            "without it a PC cannot tell whether it is installed",
            field="detection_rule",
        )
    return receipt, product


def _package_vars(row: Releasable, index: int, *, prefix: str = "package_") -> dict[str, Any]:
    receipt, product = detection(row)
    values: dict[str, Any] = {
        "name": row.name,
        "version": row.version,
        "url": {"artifact": index},
        "sha256": row.artifact_sha256,
        "pull": {"pull": index},
    }
    if row.platform == "mac":
        values |= {"receipt": receipt, "signer": ""}
    else:
        values |= {"product_id": product}
    return {f"{prefix}{k}": v for k, v in values.items()}


def image_marker(row: Releasable) -> str:
    """What the image marker on a client says after this image is applied."""
    return ref_of(row)


def _image(
    session: Session, playbook: str, row: Releasable, building: str, *, trial: bool = False
) -> Delivery:
    base = session.get(Releasable, row.base_id) if row.base_id else row
    assert base is not None
    variables: dict[str, Any] = {
        "image_name": row.name,
        "image_version": row.version,
        "image_marker": image_marker(row),
        "expected_image_marker": image_marker(row),
    }
    packages = catalog.package_rows(session, row.id) if row.id is not None else []
    artifacts: list[Artifact] = []
    if playbook == "smoke_checks":
        if row.platform == "mac":
            variables["required_receipts"] = [detection(p)[0] for p in packages]
        return Delivery(ref_of(row), Kind(row.kind), row.platform, (), variables)
    if row.platform == "mac":
        os_min = (base.os_version or "").removeprefix("macOS").strip()
        items = []
        for p in packages:
            artifacts.append(checked_artifact(p, what="installer", verify=False))
            pv = _package_vars(p, len(artifacts) - 1, prefix="")
            items.append(pv)
        variables |= {
            "image_kind": "mac_thin",
            "image_os_min": os_min,
            "image_packages": items,
            "image_settings": [
                {"domain": "org.district.orchestrator", "key": k, "type": "string", "value": v}
                for k, v in sorted(row.settings.items())
            ],
        }
    else:
        # An image test installs the packages itself afterwards (image_tests.py).
        if row.kind == Kind.CUSTOM_IMAGE.value and (row.artifact_ref or (packages and not trial)):
            carried = ", ".join(ref_of(p) for p in packages) or "a captured overlay"
            raise InvalidInput(
                f"customized image {ref_of(row)} carries {carried}: apply_image lays down the "
                f"base WIM only, so install those with install_package afterwards (scheduled "
                "deployments will do both in one go)",
                field="image",
            )
        artifacts.append(checked_artifact(base, verify=False))
        variables |= {
            "image_kind": "wim",
            "image_url": {"artifact": 0},
            "image_pull": {"pull": 0},
            "image_sha256": base.artifact_sha256,
            "image_index": 1,
        }
    return Delivery(ref_of(row), Kind(row.kind), row.platform, tuple(artifacts), variables)


def delivered_rows(session: Session, playbook: str, row: Releasable) -> list[Releasable]:
    """The catalog entries whose artifacts ``playbook`` with ``row`` sends to clients:
    a package's own; a Mac image's packages; a PC image's WIM, which is its base's.
    What a building's distribution point is staged with before the window."""
    if row.kind == Kind.PACKAGE.value:
        return [row] if playbook in PACKAGE_PLAYBOOKS else []
    if playbook != "apply_image":
        return []
    if row.platform == "mac":
        return catalog.package_rows(session, row.id) if row.id is not None else []
    base = session.get(Releasable, row.base_id) if row.base_id else row
    return [base] if base is not None else []
