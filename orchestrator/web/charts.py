"""Charts for the web pages: the figures of :mod:`orchestrator.services.reports`
drawn as accessible inline SVG, and the same figures as an HTML table.

Pure functions of their arguments: no I/O, no clock, no JavaScript, no
external library. Every SVG

* has ``role="img"``, an ``aria-label`` summing it up and a ``<title>``;
* escapes every label (a building or image named ``<script>`` stays text);
* takes its size from the data (rows, columns, the longest label);
* uses the Okabe-Ito palette (blue first, then orange), which readers with
  the common colour-vision deficiencies tell apart, and a text legend, so
  no figure depends on colour alone; each bar's ``<title>`` says its value;
* says "No data" instead of drawing (or dividing by) nothing.

The shape every chart takes is a :class:`Figure`: categories (buildings,
weeks) and one or more :class:`Series` of values, one per category. The
``*_figure`` functions make one from a report.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from orchestrator.services.reports import (
    ClientsByImage,
    ClientsNearSunset,
    DeploymentSuccess,
)

PALETTE: tuple[str, ...] = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#000000",  # black
    "#F0E442",  # yellow: last, it is faint on white
)
"""Okabe-Ito colours, in the order series take them (they repeat after eight;
the legend and each bar's title still name them)."""

NEUTRAL = "#999999"
"""For what is not a value of its own: skipped clients, no image recorded."""

NO_IMAGE = "no image recorded"

FONT = 12
CHAR_W = 7.0
"""A generous average width of one character at :data:`FONT` px, for sizing."""

PAD = 10
TITLE_H = 28
ROW_H = 24
BAR_H = 16
LEGEND_H = 18
PLOT_W = 400
"""The length of the longest bar of a horizontal chart."""
PLOT_H = 200
"""The height of the tallest column of a column chart."""
COLUMN_W = 12
GROUP_GAP = 12
AXIS_W = 48
MAX_LABEL = 40
"""Characters of a label shown in a chart; the bar's title has the whole label."""
SUMMARY_ITEMS = 10
"""Categories named in the aria-label before "and N more"."""

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
"""Month names for week labels, whatever the server's locale."""

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


# ---------------------------------------------------------------------------
# The data a chart draws
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    name: str
    values: tuple[float, ...]
    """One value per category of the figure, none negative."""

    colour: str | None = None
    """None: the next colour of :data:`PALETTE`."""


@dataclass(frozen=True)
class Figure:
    title: str
    category_label: str
    """What the categories are ("Building", "Week"): the table's first heading."""

    categories: tuple[str, ...]
    series: tuple[Series, ...]
    unit: str = "clients"

    def __post_init__(self) -> None:
        """Raises: ValueError: a series with a value per category missing, or a
        negative or non-finite value."""
        for s in self.series:
            if len(s.values) != len(self.categories):
                raise ValueError(
                    f"series {s.name!r} has {len(s.values)} values for "
                    f"{len(self.categories)} categories"
                )
            for v in s.values:
                if not math.isfinite(v) or v < 0:
                    raise ValueError(f"series {s.name!r} has a value {v!r}: not a count")

    @classmethod
    def of_pairs(
        cls,
        title: str,
        pairs: Iterable[tuple[str, float]],
        *,
        category_label: str = "",
        series: str = "",
        unit: str = "clients",
    ) -> Figure:
        """One series from (label, value) pairs, for :func:`bar_chart`."""
        items = list(pairs)
        return cls(
            title=title,
            category_label=category_label,
            categories=tuple(label for label, _ in items),
            series=(Series(series or unit, tuple(float(v) for _, v in items)),),
            unit=unit,
        )

    @property
    def empty(self) -> bool:
        """Nothing to draw: no categories, no series, or every value zero."""
        return not any(v > 0 for s in self.series for v in s.values)

    def colours(self) -> tuple[str, ...]:
        found, n = [], 0
        for s in self.series:
            if s.colour is not None:
                found.append(s.colour)
            else:
                found.append(PALETTE[n % len(PALETTE)])
                n += 1
        return tuple(found)

    def totals(self) -> tuple[float, ...]:
        return tuple(sum(s.values[i] for s in self.series) for i in range(len(self.categories)))


# ---------------------------------------------------------------------------
# From the reports
# ---------------------------------------------------------------------------


def clients_by_image_figure(report: ClientsByImage) -> Figure:
    """Buildings as categories, one series per image version (for
    :func:`stacked_bar_chart`)."""
    series = []
    for image in report.images:
        values = tuple(
            float(next((c.clients for c in b.counts if c.image == image), 0))
            for b in report.buildings
        )
        series.append(Series(image or NO_IMAGE, values, colour=NEUTRAL if image is None else None))
    return Figure(
        title="Clients by image version, per building",
        category_label="Building",
        categories=tuple(b.building.label for b in report.buildings),
        series=tuple(series),
    )


def near_sunset_figure(report: ClientsNearSunset) -> Figure:
    """Buildings as categories, how many of their clients run an image within
    the report's days of its sunset (for :func:`bar_chart`)."""
    return Figure.of_pairs(
        f"Clients on images within {report.within_days} days of sunset, per building",
        ((b.building.label, b.count) for b in report.buildings),
        category_label="Building",
        series=f"clients on images within {report.within_days} days of sunset",
    )


def deployment_success_figure(report: DeploymentSuccess) -> Figure:
    """Weeks (by their Monday) as categories: succeeded, failed and skipped
    client results (for :func:`column_chart`)."""
    weeks = report.weeks
    return Figure(
        title="Deployment results per week",
        category_label="Week of",
        categories=tuple(f"{_MONTHS[w.start.month - 1]} {w.start.day}" for w in weeks),
        series=(
            Series("succeeded", tuple(float(w.succeeded) for w in weeks), PALETTE[0]),
            Series("failed", tuple(float(w.failed) for w in weeks), PALETTE[1]),
            Series("skipped", tuple(float(w.skipped) for w in weeks), NEUTRAL),
        ),
        unit="client results",
    )


# ---------------------------------------------------------------------------
# Charts
# ---------------------------------------------------------------------------


def bar_chart(figure: Figure) -> str:
    """Horizontal bars, one per category, their lengths proportional to the values.

    Raises:
        ValueError: the figure has more than one series (see :func:`stacked_bar_chart`).
    """
    if len(figure.series) > 1:
        raise ValueError("a bar chart draws one series; stack more with stacked_bar_chart")
    return _horizontal(figure, "bar chart")


def stacked_bar_chart(figure: Figure) -> str:
    """Horizontal bars, one per category, each split into its series' values;
    every segment's length proportional to its value (one scale for the chart)."""
    return _horizontal(figure, "stacked bar chart")


def column_chart(figure: Figure) -> str:
    """Vertical columns grouped per category (a week), one column per series,
    their heights proportional to the values."""
    if figure.empty:
        return _no_data(figure)
    colours = figure.colours()
    top = max(v for s in figure.series for v in s.values)
    group_w = len(figure.series) * COLUMN_W + GROUP_GAP
    label_chars = max(3, int(group_w // CHAR_W))
    plot_top = TITLE_H + PAD
    base_y = plot_top + PLOT_H
    width = max(
        float(PAD + AXIS_W + len(figure.categories) * group_w + PAD),
        _legend_width(figure) + 2 * PAD,
        _text_w(figure.title) + 2 * PAD,
    )
    legend_top = base_y + PAD + FONT + PAD
    height = legend_top + len(figure.series) * LEGEND_H + PAD
    parts = [
        _open(figure, width, height, "column chart"),
        _axis_line(PAD + AXIS_W, plot_top, PAD + AXIS_W + len(figure.categories) * group_w, top),
    ]
    for i, category in enumerate(figure.categories):
        x0 = PAD + AXIS_W + i * group_w + GROUP_GAP / 2
        for j, s in enumerate(figure.series):
            h = PLOT_H * s.values[i] / top
            parts.append(
                _rect(
                    x=x0 + j * COLUMN_W,
                    y=base_y - h,
                    w=COLUMN_W - 1,
                    h=h,
                    fill=colours[j],
                    category=category,
                    series=s.name,
                    value=s.values[i],
                    unit=figure.unit,
                )
            )
        parts.append(
            _text(
                x0 + (len(figure.series) * COLUMN_W) / 2,
                base_y + PAD + FONT,
                _shorten(category, label_chars),
                anchor="middle",
            )
        )
    parts.append(_legend(figure, colours, legend_top))
    parts.append("</svg>")
    return "".join(parts)


def _horizontal(figure: Figure, kind: str) -> str:
    if figure.empty:
        return _no_data(figure)
    colours = figure.colours()
    totals = figure.totals()
    top = max(totals)
    label_w = max(_text_w(_shorten(c)) for c in figure.categories) + PAD
    value_w = max(_text_w(_fmt(t)) for t in totals) + PAD
    plot_x = PAD + label_w
    width = max(
        plot_x + PLOT_W + value_w + PAD,
        _legend_width(figure) + 2 * PAD,
        _text_w(figure.title) + 2 * PAD,
    )
    rows_top = TITLE_H + PAD
    legend_top = rows_top + len(figure.categories) * ROW_H + PAD
    height = legend_top + len(figure.series) * LEGEND_H + PAD
    parts = [_open(figure, width, height, kind)]
    for i, category in enumerate(figure.categories):
        y = rows_top + i * ROW_H
        text_y = y + (BAR_H + FONT) / 2 - 1
        parts.append(_text(plot_x - PAD / 2, text_y, _shorten(category), anchor="end"))
        x = float(plot_x)
        for j, s in enumerate(figure.series):
            w = PLOT_W * s.values[i] / top
            parts.append(
                _rect(
                    x=x,
                    y=y,
                    w=w,
                    h=BAR_H,
                    fill=colours[j],
                    category=category,
                    series=s.name,
                    value=s.values[i],
                    unit=figure.unit,
                )
            )
            x += w
        parts.append(_text(x + PAD / 2, text_y, _fmt(totals[i])))
    parts.append(_legend(figure, colours, legend_top))
    parts.append("</svg>")
    return "".join(parts)


def _no_data(figure: Figure) -> str:
    width = max(320, _text_w(figure.title) + 2 * PAD)
    height = TITLE_H + PAD + ROW_H + PAD
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width:.0f}" '
        f'height="{height}" viewBox="0 0 {width:.0f} {height}" '
        f'aria-label="{_esc(figure.title)}: no data" class="chart chart-empty" '
        f'font-family="sans-serif" font-size="{FONT}">'
        f"<title>{_esc(figure.title)}: no data</title>"
        f"{_text(PAD, TITLE_H - PAD, figure.title, bold=True)}"
        f'<text x="{PAD}" y="{TITLE_H + PAD + FONT}" fill="#333333" class="no-data">'
        f"No data to show</text></svg>"
    )


def _open(figure: Figure, width: float, height: float, kind: str) -> str:
    label = _esc(f"{figure.title}. {_summary(figure, kind)}")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'aria-label="{label}" class="chart" font-family="sans-serif" font-size="{FONT}">'
        f"<title>{_esc(figure.title)}</title>"
        f"<desc>{label}</desc>"
        f"{_text(PAD, TITLE_H - PAD, figure.title, bold=True)}"
    )


def _summary(figure: Figure, kind: str) -> str:
    totals = figure.totals()
    shown = [
        f"{c}: {_values_text(figure, i, totals[i])}"
        for i, c in enumerate(figure.categories[:SUMMARY_ITEMS])
    ]
    more = len(figure.categories) - len(shown)
    tail = f"; and {more} more" if more > 0 else ""
    return f"{kind.capitalize()} of {figure.unit}. {'; '.join(shown)}{tail}."


def _values_text(figure: Figure, i: int, total: float) -> str:
    if len(figure.series) == 1:
        return f"{_fmt(total)} {figure.unit}"
    parts = ", ".join(f"{_fmt(s.values[i])} {s.name}" for s in figure.series if s.values[i])
    return f"{_fmt(total)} ({parts})" if parts else "0"


def _rect(
    *,
    x: float,
    y: float,
    w: float,
    h: float,
    fill: str,
    category: str,
    series: str,
    value: float,
    unit: str,
) -> str:
    what = category if series == unit else f"{category}, {series}"
    tip = f"{what}: {_fmt(value)} {unit}"
    return (
        f'<rect class="bar" x="{x:.2f}" y="{y:.2f}" width="{w:.2f}" height="{h:.2f}" '
        f'fill="{_esc(fill)}" data-value="{value!r}" data-category="{_esc(category)}" '
        f'data-series="{_esc(series)}"><title>{_esc(tip)}</title></rect>'
    )


def _axis_line(x0: float, top_y: float, x1: float, top: float) -> str:
    base_y = top_y + PLOT_H
    return (
        f'<line x1="{x0}" y1="{base_y}" x2="{x1}" y2="{base_y}" stroke="#333333"/>'
        f'<line x1="{x0}" y1="{top_y}" x2="{x1}" y2="{top_y}" stroke="#cccccc" '
        f'stroke-dasharray="2 3"/>'
        f"{_text(x0 - PAD / 2, top_y + FONT / 2 - 1, _fmt(top), anchor='end')}"
        f"{_text(x0 - PAD / 2, base_y + FONT / 2 - 1, '0', anchor='end')}"
    )


def _legend(figure: Figure, colours: Sequence[str], top: float) -> str:
    parts = ['<g class="legend">']
    for j, s in enumerate(figure.series):
        y = top + j * LEGEND_H
        parts.append(
            f'<rect x="{PAD}" y="{y:.2f}" width="{FONT}" height="{FONT}" '
            f'fill="{_esc(colours[j])}" stroke="#333333" stroke-width="0.5"/>'
        )
        parts.append(_text(PAD + FONT + 6, y + FONT - 1, _shorten(s.name, 2 * MAX_LABEL)))
    parts.append("</g>")
    return "".join(parts)


def _legend_width(figure: Figure) -> float:
    names = [_shorten(s.name, 2 * MAX_LABEL) for s in figure.series]
    return FONT + 6 + max((_text_w(n) for n in names), default=0)


def _text(x: float, y: float, text: str, *, anchor: str = "start", bold: bool = False) -> str:
    weight = ' font-weight="bold"' if bold else ""
    return (
        f'<text x="{x:.2f}" y="{y:.2f}" text-anchor="{anchor}" fill="#222222"{weight}>'
        f"{_esc(text)}</text>"
    )


# ---------------------------------------------------------------------------
# Tables: the same figures for screen readers, and where SVG is not shown
# ---------------------------------------------------------------------------


def table(figure: Figure) -> str:
    """The figure as an HTML table: a row per category, a column per series
    (and a total when there are several)."""
    several = len(figure.series) > 1
    head = [f'<th scope="col">{_esc(figure.category_label)}</th>']
    head += [f'<th scope="col">{_esc(s.name)}</th>' for s in figure.series]
    if several:
        head.append('<th scope="col">total</th>')
    body = []
    totals = figure.totals()
    for i, category in enumerate(figure.categories):
        cells = [f'<th scope="row">{_esc(category)}</th>']
        cells += [f"<td>{_fmt(s.values[i])}</td>" for s in figure.series]
        if several:
            cells.append(f"<td>{_fmt(totals[i])}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    if not figure.categories:
        body.append(f'<tr><td colspan="{len(head)}">No data to show</td></tr>')
    return (
        f'<table class="chart-table"><caption>{_esc(figure.title)} ({_esc(figure.unit)})'
        f"</caption><thead><tr>{''.join(head)}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def near_sunset_table(report: ClientsNearSunset) -> str:
    """Which clients, per building: how many, on which images (with their
    effective sunset) and their hostnames."""
    rows = []
    for b in report.buildings:
        images = "; ".join(
            f"{i.image} ({_sunset_words(i.days_left, i.effective_sunset.isoformat())}): {n}"
            for i, n in b.per_image
        )
        hosts = ", ".join(c.hostname for c in b.clients)
        rows.append(
            f'<tr><th scope="row">{_esc(b.building.label)}</th><td>{b.count}</td>'
            f"<td>{_esc(images)}</td><td>{_esc(hosts)}</td></tr>"
        )
    if not rows:
        rows.append('<tr><td colspan="4">No data to show</td></tr>')
    return (
        '<table class="chart-table"><caption>'
        f"Clients on images within {report.within_days} days of sunset, "
        f"on {report.today.isoformat()}</caption>"
        '<thead><tr><th scope="col">Building</th><th scope="col">Clients</th>'
        '<th scope="col">Images</th><th scope="col">Computers</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _sunset_words(days_left: int, on: str) -> str:
    if days_left < 0:
        return f"sunset since {on}"
    if days_left == 0:
        return f"sunset today, {on}"
    return f"sunset {on}, in {days_left} day{'s' if days_left != 1 else ''}"


# ---------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------


def _esc(text: str) -> str:
    """Text safe in an SVG or HTML element or attribute: escaped, and without
    the characters XML cannot carry at all."""
    return html.escape(_NOT_XML.sub("", text), quote=True)


def _shorten(text: str, limit: int = MAX_LABEL) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 1)] + "…"


def _text_w(text: str) -> float:
    return len(text) * CHAR_W


def _fmt(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}"
