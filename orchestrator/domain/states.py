"""Constants of the district's vocabulary: kinds, platforms, levels, roles, states.

Only constants live here. Which moves between states are legal is decided in
:mod:`orchestrator.domain.lifecycle` and nowhere else.
"""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    """The three releasable things that go through the approval chain."""

    BASE_IMAGE = "base_image"
    """A district base image per platform and level, owned by IT."""

    CUSTOM_IMAGE = "custom_image"
    """A building's customized (derivative) image of a published base image."""

    PACKAGE = "package"
    """A software package (MSI/EXE for PCs, PKG for Macs)."""

    @property
    def label(self) -> str:
        return {
            Kind.BASE_IMAGE: "base image",
            Kind.CUSTOM_IMAGE: "customized image",
            Kind.PACKAGE: "software package",
        }[self]


class Platform(StrEnum):
    PC = "pc"
    """Windows PCs, reached over WinRM; images are WIM disk images."""

    MAC = "mac"
    """Macs, reached over SSH; images are thin images (macOS version + packages)."""


class Level(StrEnum):
    """Instructional level: infrastructure is the same within a level."""

    ELEMENTARY = "elementary"
    MIDDLE = "middle"
    HIGH = "high"
    OFFICE = "office"
    """District offices: buildings, but no instructional base image."""


INSTRUCTIONAL_LEVELS = (Level.ELEMENTARY, Level.MIDDLE, Level.HIGH)


class Role(StrEnum):
    IT = "it"
    """District Information Technology: whole district."""

    EDTECH = "edtech"
    """Educational Technology: whole district."""

    SECTEC = "sectec"
    """Secondary tech coordinator: school-based, its own building(s)."""

    BTC = "btc"
    """Elementary building tech contact: school-based, its own building(s)."""

    PRINCIPAL = "principal"
    """Principal or assistant principal: its own building, read-only here."""

    SYSTEM = "system"
    """The orchestrator itself (scheduler): sunset transitions and warnings."""

    @property
    def label(self) -> str:
        return {
            Role.IT: "IT",
            Role.EDTECH: "EdTech",
            Role.SECTEC: "SecTec",
            Role.BTC: "BTC",
            Role.PRINCIPAL: "Principal",
            Role.SYSTEM: "the system",
        }[self]


DISTRICT_ROLES = frozenset({Role.IT, Role.EDTECH, Role.SYSTEM})
"""Roles whose scope is the whole district."""

BUILDING_TECH_ROLES = frozenset({Role.SECTEC, Role.BTC})


class State(StrEnum):
    """Lifecycle state of a releasable thing."""

    DRAFT = "draft"
    """Being built or revised by its author; nothing approved yet."""

    IN_REVIEW = "in_review"
    """Submitted; waiting for the review step (EdTech)."""

    TESTING = "testing"
    """Reviewed; waiting for student and staff login tests and their sign-off."""

    APPROVED = "approved"
    """Tested and signed off; waiting to be published (base) or released."""

    PUBLISHED = "published"
    """Published (base image) or released (customized image, package): deployable."""

    DEPRECATED = "deprecated"
    """Superseded; still deployable until its sunset, but not for new work."""

    SUNSET = "sunset"
    """At or past its effective sunset date: never deployed again."""

    RETIRED = "retired"
    """Withdrawn for good. Terminal."""


class Step(StrEnum):
    """A step of the approval chain; each is pending in exactly one state."""

    REVIEW = "review"
    TEST = "test"
    PUBLISH = "publish"

    @property
    def pending_in(self) -> State:
        return {
            Step.REVIEW: State.IN_REVIEW,
            Step.TEST: State.TESTING,
            Step.PUBLISH: State.APPROVED,
        }[self]


class Persona(StrEnum):
    """The test logins every image is tried with."""

    STUDENT = "student"
    STAFF = "staff"


class Audience(StrEnum):
    """Who a software package is for; it decides who may own the package."""

    ADMIN_STAFF = "admin_staff"
    """Installers for administrative staff: packaged by IT."""

    INSTRUCTIONAL = "instructional"
    """District-wide instructional applications: IT or EdTech."""

    BUILDING_LOCAL = "building_local"
    """A building's local application: EdTech or that building's SecTec."""


class Outcome(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
