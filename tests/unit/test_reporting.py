"""The reports' pure arithmetic (domain/reporting.py): months, quantiles, CSV cells."""

from __future__ import annotations

import csv
import io
from datetime import date

import pytest

from orchestrator.domain import reporting
from orchestrator.errors import InvalidInput

MARCH = date(2026, 3, 2)


def test_the_default_range_is_twelve_months_ending_this_month_across_the_new_year() -> None:
    months = reporting.month_range(None, None, today=MARCH)
    assert months == (
        "2025-04", "2025-05", "2025-06", "2025-07", "2025-08", "2025-09",
        "2025-10", "2025-11", "2025-12", "2026-01", "2026-02", "2026-03",
    )  # fmt: skip


def test_a_first_month_alone_runs_to_this_month_and_a_last_alone_goes_back_eleven() -> None:
    assert reporting.month_range("2026-01", None, today=MARCH) == ("2026-01", "2026-02", "2026-03")
    back = reporting.month_range(None, "2025-12", today=MARCH)
    assert (back[0], back[-1], len(back)) == ("2025-01", "2025-12", 12)


def test_one_month_and_the_longest_range() -> None:
    assert reporting.month_range("2026-02", "2026-02", today=MARCH) == ("2026-02",)
    longest = reporting.month_range("2023-04", "2026-03", today=MARCH)
    assert len(longest) == reporting.MAX_MONTHS == 36


@pytest.mark.parametrize(
    ("first", "last", "field", "words"),
    [
        ("2026-00", None, "from", "months are 01 to 12"),
        ("2026-1", None, "from", "is not a month (YYYY-MM"),
        (" 2026-01", None, "from", "is not a month"),
        (
            "\uff12\uff10\uff12\uff16-\uff10\uff11",
            None,
            "from",
            "is not a month",
        ),  # full-width digits
        (None, "2026-04", "to", "after this month (2026-03)"),
        ("2026-04", "2026-03", "from", "after this month"),
        ("2026-02", "2025-11", "from", "after the last month asked for (2025-11)"),
        ("2023-03", "2026-03", "from", "is 37 months: a report covers at most 36"),
        ("1999-01", "1999-06", "from", "before 2000"),
    ],
)
def test_a_bad_range_names_its_field(
    first: str | None, last: str | None, field: str, words: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        reporting.month_range(first, last, today=MARCH)
    assert raised.value.field == field and words in raised.value.message


def test_months_add_across_years() -> None:
    assert reporting.add_months(2025, 12, 1) == (2026, 1)
    assert reporting.add_months(2026, 1, -1) == (2025, 12)
    assert reporting.add_months(2026, 3, -35) == (2023, 4)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 0.5, None),
        ([7.0], 0.9, 7.0),
        ([2.0, 4.0], 0.5, 3.0),
        ([4.0, 2.0, 24.0], 0.5, 4.0),
        ([2.0, 4.0, 24.0], 0.9, 20.0),
        ([float(h) for h in range(1, 11)], 0.9, 9.1),
        ([float(h) for h in range(1, 11)], 0.0, 1.0),
        ([float(h) for h in range(1, 11)], 1.0, 10.0),
    ],
)
def test_quantiles_are_linear_between_the_nearest_ranks(
    values: list[float], q: float, expected: float | None
) -> None:
    found = reporting.quantile(values, q)
    if expected is None:
        assert found is None
    else:
        assert found == pytest.approx(expected)


def test_a_quantile_outside_zero_to_one_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        reporting.quantile([1.0], 1.5)


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_a_cell_that_would_start_a_formula_is_quoted(start: str) -> None:
    typed = f'{start}HYPERLINK("http://x","y")'
    assert reporting.safe_cell(typed) == "'" + typed


@pytest.mark.parametrize("value", ["Telecommunications", "101", "a=b", " =1", "", "'already"])
def test_other_cells_are_left_as_they_are(value: str) -> None:
    assert reporting.safe_cell(value) == value


def test_numbers_and_none_are_cells_too() -> None:
    assert (reporting.safe_cell(3), reporting.safe_cell(0.25), reporting.safe_cell(None)) == (
        "3",
        "0.25",
        "",
    )


def test_a_csv_document_quotes_what_it_must_and_reads_back() -> None:
    text = reporting.csv_text(["name", "=n"], [["-1", 'say "hi", then\r\n@go'], ["ok", 2]])
    assert text.endswith("\r\n")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows == [["name", "'=n"], ["'-1", 'say "hi", then\r\n@go'], ["ok", "2"]]
