"""Sunset arithmetic: pure functions of the date, never of the clock.

A base image is published with a sunset date. A customized image can never
outlive its base: its effective sunset is the earlier of its own and its
base's. On and after the effective sunset date (in the district's time zone)
nothing of it may be approved, published, released or deployed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime, tzinfo

DEFAULT_LEAD_DAYS: tuple[int, ...] = (90, 30, 14, 7, 1)
"""Days before a sunset date at which the owners are warned."""


def district_today(now: datetime, zone: tzinfo) -> date:
    """The calendar date in the district at the instant ``now`` (which must be aware)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(zone).date()


def effective_sunset(own: date | None, *inherited: date | None) -> date | None:
    """The earliest of an item's own sunset and those it inherits (its base's)."""
    dates = [d for d in (own, *inherited) if d is not None]
    return min(dates) if dates else None


def is_sunset(effective: date | None, today: date) -> bool:
    """True on and after the effective sunset date."""
    return effective is not None and today >= effective


def days_to_sunset(effective: date | None, today: date) -> int | None:
    """Whole days left (0 on the day itself, negative after); None if no sunset."""
    return None if effective is None else (effective - today).days


def warning_due(
    effective: date | None,
    today: date,
    already_warned: Iterable[int] = (),
    lead_days: Sequence[int] = DEFAULT_LEAD_DAYS,
) -> int | None:
    """The lead time (in days) whose warning is due today and not yet given.

    Only the shortest lead time that has been crossed is returned, so a
    scheduler that was down for a month warns once, not once per missed lead.
    """
    left = days_to_sunset(effective, today)
    if left is None or left <= 0:
        return None
    crossed = [lead for lead in lead_days if left <= lead]
    if not crossed:
        return None
    due = min(crossed)
    return None if due in set(already_warned) else due
