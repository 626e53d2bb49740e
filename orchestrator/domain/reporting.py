"""Pure arithmetic of the reports: calendar months, quantiles, and CSV cells a
spreadsheet will not run.

No I/O, no clock: "this month" is given by the caller (the district's today).

A month is written ``YYYY-MM`` (``2026-03``), the form the pages, the API and
the command line take and give. :func:`month_range` checks a range the way
every face of the reports does, naming the field at fault.

A CSV opened in a spreadsheet runs a cell starting with ``=``, ``+``, ``-`` or
``@`` as a formula (and some read a leading tab or carriage return the same
way): a category label IT typed as ``=HYPERLINK(...)`` would become a link in
the principal's spreadsheet. :func:`safe_cell` prefixes such a cell with a
single quote, as OWASP's "CSV Injection" advice says; :func:`csv_text` writes
every cell through it.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Sequence
from datetime import date

from orchestrator.errors import InvalidInput

DEFAULT_MONTHS = 12
"""The months a report covers when no range is given: the last twelve, this one included."""

MAX_MONTHS = 36
"""The longest range a report covers: three school years."""

EARLIEST_YEAR = 2000

_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet may read as the start of a formula (OWASP, CSV Injection)."""


def parse_month(value: str, *, field: str) -> tuple[int, int]:
    """``'2026-03'`` as ``(2026, 3)``.

    Raises:
        InvalidInput: not ``YYYY-MM``, a month not 01 to 12, a year before 2000.
    """
    found = _MONTH.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        raise InvalidInput(f"{value!r} is not a month (YYYY-MM, e.g. 2026-03)", field=field)
    year, month = int(found.group(1)), int(found.group(2))
    if not 1 <= month <= 12:
        raise InvalidInput(f"{value!r} is not a month: months are 01 to 12", field=field)
    if year < EARLIEST_YEAR:
        raise InvalidInput(f"{value!r} is before {EARLIEST_YEAR}", field=field)
    return year, month


def month_text(year: int, month: int) -> str:
    return f"{year:04d}-{month:02d}"


def add_months(year: int, month: int, n: int) -> tuple[int, int]:
    """The month ``n`` months after (before, for a negative ``n``) ``year-month``."""
    index = year * 12 + (month - 1) + n
    return index // 12, index % 12 + 1


def first_day(month: str) -> date:
    """The first day of a ``YYYY-MM`` month (one already checked)."""
    year, m = parse_month(month, field="month")
    return date(year, m, 1)


def month_range(
    first: str | None, last: str | None, *, today: date, default_months: int = DEFAULT_MONTHS
) -> tuple[str, ...]:
    """The months from ``first`` to ``last``, both included, oldest first.

    ``last`` defaults to ``today``'s month; ``first`` to ``default_months - 1``
    months before ``last``. Neither may be after ``today``'s month (nothing is
    filed in the future), ``first`` may not be after ``last``, and the range is
    at most :data:`MAX_MONTHS` long.

    Raises:
        InvalidInput: naming ``from`` or ``to``.
    """
    this = (today.year, today.month)
    start = parse_month(first, field="from") if first is not None else None
    end = parse_month(last, field="to") if last is not None else this
    if end > this:
        raise InvalidInput(
            f"{month_text(*end)} is after this month ({month_text(*this)})", field="to"
        )
    if start is None:
        start = add_months(*end, -(default_months - 1))
    if start > this:
        raise InvalidInput(
            f"{month_text(*start)} is after this month ({month_text(*this)})", field="from"
        )
    if start > end:
        raise InvalidInput(
            f"{month_text(*start)} is after the last month asked for ({month_text(*end)})",
            field="from",
        )
    count = (end[0] - start[0]) * 12 + (end[1] - start[1]) + 1
    if count > MAX_MONTHS:
        raise InvalidInput(
            f"{month_text(*start)} to {month_text(*end)} is {count} months: a report covers "
            f"at most {MAX_MONTHS}",
            field="from",
        )
    return tuple(month_text(*add_months(*start, i)) for i in range(count))


def quantile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0 to 1) of ``values``, None for none.

    Linear between the two nearest ranks ("inclusive": the 0.5 quantile of an
    even count is the mean of the middle two, the same as the median; the
    0.9 quantile of 1, 2, ..., 10 hours is 9.1 hours).

    Raises:
        ValueError: ``q`` is not between 0 and 1.
    """
    if not 0 <= q <= 1:
        raise ValueError(f"a quantile is between 0 and 1, not {q!r}")
    if not values:
        return None
    ordered = sorted(values)
    at = (len(ordered) - 1) * q
    lo, hi = math.floor(at), math.ceil(at)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (at - lo)


def safe_cell(value: object) -> str:
    """A cell as text, with a single quote before a formula's first character.

    >>> safe_cell("=1+1"), safe_cell("-3"), safe_cell("Telecommunications"), safe_cell(4)
    ("'=1+1", "'-3", 'Telecommunications', '4')
    """
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A CSV document (RFC 4180: CRLF line ends, quotes where needed) in which no
    cell starts a formula."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([safe_cell(h) for h in header])
    for row in rows:
        writer.writerow([safe_cell(v) for v in row])
    return out.getvalue()
