"""Requests for technical work: the district's categories and where each is routed.

Every request for technical support goes through one intake, even when the
building's technician could handle it, so the district can count the work and
justify how technicians are allocated (briefing #2872, "Appropriate Utilization
of School-based Technicians"). A school-based technician's duties are confined
to hardware and to access to software; some work is never theirs: school web
sites, the telephone system, databases, presentations and spreadsheets, and
anything touching grading ("SBTs are not to have access to grading under any
circumstance"). Such requests go to the department that owns the work, never to
the technician's queue, and the person filing is told why.

Pure rules, no I/O. The catalog of categories is data (stored, editable by IT);
:data:`DEFAULT_CATEGORIES` is the district default it is seeded from.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Queue(StrEnum):
    """Who works a category's requests."""

    TECHNICIAN = "technician"
    """The building's technician (SecTec or BTC), escalating to IT."""

    DEPARTMENT = "department"
    """A district department that owns the work; never a building technician."""


class Urgency(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class RequestState(StrEnum):
    OPEN = "open"
    """Filed; nobody has taken it yet."""

    TAKEN = "taken"
    """Someone whose work it is has taken it."""

    ESCALATED = "escalated"
    """The building's technician passed it to IT."""

    CLOSED = "closed"
    """Done (or withdrawn), with a note."""


FINAL_STATES = frozenset({RequestState.CLOSED})


@dataclass(frozen=True)
class Category:
    key: str
    label: str
    queue: Queue
    department: str = ""
    """For department categories: who owns the work."""
    why: str = ""
    """Said to the person filing when the request is routed away from the technician."""

    @property
    def technicians_duty(self) -> bool:
        return self.queue is Queue.TECHNICIAN


_NOT_SBT = "School-based technicians' duties are hardware and access to software (briefing #2872)"

DEFAULT_CATEGORIES: tuple[Category, ...] = (
    Category("hardware_repair", "Hardware repair", Queue.TECHNICIAN),
    Category("software_access", "Software access or install", Queue.TECHNICIAN),
    Category("imaging", "Imaging a room or cart", Queue.TECHNICIAN),
    Category("account_password", "Account or password", Queue.TECHNICIAN),
    Category("network", "Network or Wi-Fi", Queue.TECHNICIAN),
    Category(
        "telephone",
        "Telephone system",
        Queue.DEPARTMENT,
        "Telecommunications",
        f"{_NOT_SBT}: the telephone system is Telecommunications' work.",
    ),
    Category(
        "web_site",
        "School web site",
        Queue.DEPARTMENT,
        "Communications",
        f"{_NOT_SBT}: school web sites are kept by Communications.",
    ),
    Category(
        "documents",
        "Databases, presentations or spreadsheets",
        Queue.DEPARTMENT,
        "Instructional Technology Training",
        f"{_NOT_SBT}: databases, presentations and spreadsheets are not technicians' work.",
    ),
    Category(
        "grading",
        "Anything about grading or the gradebook",
        Queue.DEPARTMENT,
        "Student Information Systems",
        "Technicians never have access to grading, under any circumstance "
        "(briefing #2872): Student Information Systems handles it. A broken computer "
        "the gradebook runs on is a hardware repair.",
    ),
)
