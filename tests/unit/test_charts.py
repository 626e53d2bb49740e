"""The SVG charts and tables the web pages show (orchestrator/web/charts.py)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.domain.states import Kind
from orchestrator.services.reports import (
    BuildingImages,
    BuildingNearSunset,
    BuildingRef,
    ClientsByImage,
    ClientsNearSunset,
    DeploymentSuccess,
    ImageCount,
    NearSunsetClient,
    SunsetImage,
    WeekResults,
)
from orchestrator.web import charts
from orchestrator.web.charts import Figure, Series

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert("x")</script> & "quoted" \'single\''

Chart = Callable[[Figure], str]
CHARTS: list[Chart] = [charts.bar_chart, charts.stacked_bar_chart, charts.column_chart]


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def _bars(svg: str) -> list[dict[str, str]]:
    return [r.attrib for r in _parse(svg).iter(f"{SVG}rect") if r.get("class") == "bar"]


def _texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG}text")]


def _figure(
    categories: list[str], *series: tuple[str, list[float]], title: str = "Clients"
) -> Figure:
    return Figure(
        title=title,
        category_label="Building",
        categories=tuple(categories),
        series=tuple(Series(name, tuple(values)) for name, values in series),
    )


def _one(pairs: list[tuple[str, float]], title: str = "Clients near sunset") -> Figure:
    return Figure.of_pairs(title, pairs, category_label="Building")


# ---------------------------------------------------------------------------
# Well-formed, accessible, inert
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("chart", CHARTS, ids=lambda c: c.__name__)
def test_a_chart_is_an_image_with_a_title_and_an_aria_label(chart: Chart) -> None:
    figure = _figure(["101 Lincoln Elementary", "301 Kennedy High"], ("clients", [3, 7]))

    root = _parse(chart(figure))

    assert root.get("role") == "img"
    assert root[0].tag == f"{SVG}title" and root[0].text == "Clients"
    label = root.get("aria-label") or ""
    assert label.startswith("Clients.")
    assert "101 Lincoln Elementary: 3 clients" in label and "301 Kennedy High: 7" in label
    assert float(root.get("width") or 0) > 0 and float(root.get("height") or 0) > 0


@pytest.mark.parametrize("chart", CHARTS, ids=lambda c: c.__name__)
def test_labels_are_escaped_and_come_out_as_plain_text(chart: Chart) -> None:
    figure = _figure([HOSTILE, "102"], (HOSTILE, [1, 2]), title=HOSTILE)

    svg = chart(figure)
    root = _parse(svg)

    assert "<script" not in svg
    assert not list(root.iter(f"{SVG}script")) and not list(root.iter("script"))
    assert root[0].text == HOSTILE
    assert HOSTILE in _texts(root)  # the title drawn, unchanged for the reader
    assert {b["data-category"] for b in _bars(svg)} == {HOSTILE, "102"}


@pytest.mark.parametrize("chart", CHARTS, ids=lambda c: c.__name__)
def test_a_chart_carries_no_script_no_handlers_and_no_links(chart: Chart) -> None:
    figure = _figure(["101", "102"], ("a", [1, 2]))

    root = _parse(chart(figure))

    for element in root.iter():
        assert element.tag.removeprefix(SVG) not in ("script", "a", "image", "foreignObject")
        assert not [k for k in element.attrib if k.lower().startswith("on") or "href" in k]


def test_characters_xml_cannot_carry_are_dropped_not_left_to_break_the_page() -> None:
    figure = _one([("lab\x00\x1b-01", 2)])

    root = _parse(charts.bar_chart(figure))

    assert "lab-01" in _texts(root)


def test_a_long_label_is_shortened_in_the_chart_but_whole_in_the_bars_title() -> None:
    name = "101 " + "Abraham Lincoln Memorial " * 4 + "Elementary"
    svg = charts.bar_chart(_one([(name, 2)]))
    root = _parse(svg)

    drawn = [t for t in _texts(root) if t.startswith("101 ")]
    assert drawn and all(len(t) <= charts.MAX_LABEL for t in drawn)
    (bar,) = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]
    assert name in (bar.findtext(f"{SVG}title") or "")


# ---------------------------------------------------------------------------
# Proportions
# ---------------------------------------------------------------------------


def test_bar_lengths_are_proportional_to_the_values() -> None:
    svg = charts.bar_chart(_one([("101", 1), ("102", 2), ("201", 4), ("301", 0)]))

    widths = {b["data-category"]: float(b["width"]) for b in _bars(svg)}

    assert widths == {"101": 100.0, "102": 200.0, "201": charts.PLOT_W, "301": 0.0}


def test_stacked_segments_follow_each_other_on_one_scale_for_the_chart() -> None:
    figure = _figure(
        ["101", "102"], ("pc-elementary@2026.1", [3, 1]), ("pc-elementary@2026.2", [1, 0])
    )

    bars = _bars(charts.stacked_bar_chart(figure))

    row = [b for b in bars if b["data-category"] == "101"]
    assert [float(b["width"]) for b in row] == [300.0, 100.0]
    assert float(row[1]["x"]) == float(row[0]["x"]) + float(row[0]["width"])
    (first_102,) = [b for b in bars if b["data-category"] == "102" and float(b["width"]) > 0]
    assert float(first_102["width"]) == 100.0


def test_column_heights_are_proportional_and_stand_on_one_baseline() -> None:
    figure = _figure(
        ["Feb 23", "Mar 2"], ("succeeded", [10, 5]), ("failed", [2, 0]), ("skipped", [1, 1])
    )

    bars = _bars(charts.column_chart(figure))

    heights = [float(b["height"]) for b in bars]
    assert heights == [charts.PLOT_H, 40.0, 20.0, 100.0, 0.0, 20.0]
    assert len({round(float(b["y"]) + float(b["height"]), 2) for b in bars}) == 1


def test_the_size_follows_the_data() -> None:
    few = _parse(charts.bar_chart(_one([("101", 1)])))
    many = _parse(charts.bar_chart(_one([(str(n), 1) for n in range(100, 140)])))
    long = _parse(charts.bar_chart(_one([("101 Washington Carver Elementary", 1)])))
    weeks = _parse(charts.column_chart(_figure([f"w{n}" for n in range(26)], ("a", [1] * 26))))
    week = _parse(charts.column_chart(_figure(["w1"], ("a", [1]))))

    assert float(many.get("height") or 0) > float(few.get("height") or 0)
    assert float(long.get("width") or 0) > float(few.get("width") or 0)
    assert float(weeks.get("width") or 0) > float(week.get("width") or 0)


# ---------------------------------------------------------------------------
# No data
# ---------------------------------------------------------------------------

EMPTY = [
    pytest.param(_one([]), id="no categories"),
    pytest.param(_one([("101", 0), ("102", 0)]), id="all zero"),
    pytest.param(_figure(["101"], title="Clients near sunset"), id="no series"),
]


@pytest.mark.parametrize("chart", CHARTS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("figure", EMPTY)
def test_empty_or_zero_data_is_a_clear_no_data_chart(chart: Chart, figure: Figure) -> None:
    root = _parse(chart(figure))

    assert root.get("role") == "img"
    assert root.get("aria-label") == "Clients near sunset: no data"
    assert "No data to show" in _texts(root)
    assert _bars(chart(figure)) == []


def test_a_table_of_nothing_says_so() -> None:
    root = ET.fromstring(charts.table(_one([])))

    assert root.findtext("caption") == "Clients near sunset (clients)"
    assert [td.text for td in root.iter("td")] == ["No data to show"]


# ---------------------------------------------------------------------------
# Figures refuse what is not a count
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, words",
    [([1.0], "1 values for 2"), ([1.0, -1.0], "not a count"), ([1.0, float("nan")], "nan")],
)
def test_a_figure_refuses_values_that_are_not_counts(values: list[float], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        _figure(["101", "102"], ("clients", values))


def test_a_bar_chart_draws_one_series_only() -> None:
    with pytest.raises(ValueError, match="stacked_bar_chart"):
        charts.bar_chart(_figure(["101"], ("a", [1]), ("b", [2])))


# ---------------------------------------------------------------------------
# Colours and legend
# ---------------------------------------------------------------------------


def test_series_take_distinct_colour_blind_safe_colours_and_are_named_in_the_legend() -> None:
    names = [f"image@{n}" for n in range(8)]
    figure = _figure(["101"], *((n, [1.0]) for n in names))

    root = _parse(charts.stacked_bar_chart(figure))

    fills = [b["fill"] for b in _bars(charts.stacked_bar_chart(figure))]
    assert fills == list(charts.PALETTE)
    assert fills[:2] == ["#0072B2", "#E69F00"]  # blue, then orange
    (legend,) = [g for g in root.iter(f"{SVG}g") if g.get("class") == "legend"]
    assert [t.text for t in legend.iter(f"{SVG}text")] == names


# ---------------------------------------------------------------------------
# From the reports
# ---------------------------------------------------------------------------

LINCOLN = BuildingRef("101", "Lincoln Elementary")
KENNEDY = BuildingRef("301", "Kennedy High")


def test_clients_by_image_become_one_series_per_image_with_no_image_in_grey() -> None:
    report = ClientsByImage(
        buildings=(
            BuildingImages(LINCOLN, (ImageCount("pc-elementary@2026.1", 3), ImageCount(None, 1))),
            BuildingImages(KENNEDY, (ImageCount("pc-high@2026.1", 4),)),
        ),
        images=("pc-elementary@2026.1", "pc-high@2026.1", None),
    )

    figure = charts.clients_by_image_figure(report)

    assert figure.categories == ("101 Lincoln Elementary", "301 Kennedy High")
    assert [(s.name, s.values) for s in figure.series] == [
        ("pc-elementary@2026.1", (3.0, 0.0)),
        ("pc-high@2026.1", (0.0, 4.0)),
        (charts.NO_IMAGE, (1.0, 0.0)),
    ]
    assert figure.colours() == ("#0072B2", "#E69F00", charts.NEUTRAL)
    bars = _bars(charts.stacked_bar_chart(figure))
    assert [float(b["width"]) for b in bars if b["data-category"] == "301 Kennedy High"] == [
        0.0,
        charts.PLOT_W,
        0.0,
    ]


def test_deployment_success_becomes_weekly_columns_of_succeeded_failed_and_skipped() -> None:
    report = DeploymentSuccess(
        (WeekResults(date(2026, 2, 23), 5, 1, 0), WeekResults(date(2026, 3, 2), 3, 0, 2))
    )

    figure = charts.deployment_success_figure(report)
    root = _parse(charts.column_chart(figure))

    assert figure.categories == ("Feb 23", "Mar 2")
    assert [(s.name, s.values) for s in figure.series] == [
        ("succeeded", (5.0, 3.0)),
        ("failed", (1.0, 0.0)),
        ("skipped", (0.0, 2.0)),
    ]
    assert {"Feb 23", "Mar 2", "succeeded", "failed", "skipped"} <= set(_texts(root))
    assert "Feb 23: 6 (5 succeeded, 1 failed)" in (root.get("aria-label") or "")


def test_a_quiet_quarter_of_deployments_is_a_no_data_chart() -> None:
    report = DeploymentSuccess(tuple(WeekResults(date(2026, 3, 2)) for _ in range(12)))

    root = _parse(charts.column_chart(charts.deployment_success_figure(report)))

    assert "No data to show" in _texts(root)


def _near_report() -> ClientsNearSunset:
    soon = SunsetImage("101/<lab>@1.0", Kind.CUSTOM_IMAGE, date(2026, 5, 31), 90)
    gone = SunsetImage("pc-elementary@2025.1", Kind.BASE_IMAGE, date(2026, 2, 28), -2)
    return ClientsNearSunset(
        today=date(2026, 3, 2),
        within_days=90,
        buildings=(
            BuildingNearSunset(
                LINCOLN,
                (
                    NearSunsetClient("lab-01", "lab", gone),
                    NearSunsetClient("lab-02", "lab", soon),
                    NearSunsetClient("lab-03", "lab", soon),
                ),
            ),
        ),
        images=(gone, soon),
    )


def test_clients_near_sunset_become_one_bar_per_building() -> None:
    figure = charts.near_sunset_figure(_near_report())

    (bar,) = _bars(charts.bar_chart(figure))

    assert figure.title == "Clients on images within 90 days of sunset, per building"
    assert (bar["data-category"], bar["data-value"], float(bar["width"])) == (
        "101 Lincoln Elementary",
        "3.0",
        charts.PLOT_W,
    )


def test_the_near_sunset_table_says_which_clients_on_which_images() -> None:
    root = ET.fromstring(charts.near_sunset_table(_near_report()))

    tbody = root.find("tbody")
    assert tbody is not None
    (row,) = list(tbody)
    cells = [c.text for c in row]
    assert cells == [
        "101 Lincoln Elementary",
        "3",
        "pc-elementary@2025.1 (sunset since 2026-02-28): 1; "
        "101/<lab>@1.0 (sunset 2026-05-31, in 90 days): 2",
        "lab-01, lab-02, lab-03",
    ]


def test_a_figures_table_has_a_row_per_category_and_a_total_when_stacked() -> None:
    figure = _figure([HOSTILE, "102"], ("pc@1", [3, 1]), ("pc@2", [1, 0]))

    html = charts.table(figure)
    root = ET.fromstring(html)

    assert "<script" not in html
    assert [th.text for th in root.iter("th")] == [
        "Building",
        "pc@1",
        "pc@2",
        "total",
        HOSTILE,
        "102",
    ]
    assert [th.get("scope") for th in root.iter("th")] == ["col"] * 4 + ["row"] * 2
    assert [td.text for td in root.iter("td")] == ["3", "1", "4", "1", "0", "1"]


# ---------------------------------------------------------------------------
# Over arbitrary data
# ---------------------------------------------------------------------------

labels = st.text(max_size=60)
counts = st.one_of(
    st.integers(min_value=0, max_value=10**6),
    st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False),
)


@st.composite
def figures(draw: st.DrawFn, max_series: int = 4) -> Figure:
    categories = draw(st.lists(labels, max_size=12))
    names = draw(st.lists(labels, max_size=max_series))
    return Figure(
        title=draw(labels),
        category_label=draw(labels),
        categories=tuple(categories),
        series=tuple(
            Series(
                name,
                tuple(
                    float(v)
                    for v in draw(
                        st.lists(counts, min_size=len(categories), max_size=len(categories))
                    )
                ),
            )
            for name in names
        ),
    )


@settings(max_examples=60, deadline=None)
@given(figures())
def test_every_chart_and_table_is_well_formed_whatever_the_data(figure: Figure) -> None:
    for chart in (charts.stacked_bar_chart, charts.column_chart):
        root = _parse(chart(figure))
        assert root.get("role") == "img" and root[0].tag == f"{SVG}title"
        assert root.get("aria-label")
    ET.fromstring(charts.table(figure))


def _assert_proportional(bars: list[dict[str, str]], size: str, full: float) -> None:
    top = max(float(b["data-value"]) for b in bars)
    for b in bars:
        expected = full * float(b["data-value"]) / top
        assert abs(float(b[size]) - expected) <= 0.006, (b, expected)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(labels, counts), min_size=1, max_size=20))
def test_bar_lengths_are_proportional_whatever_the_values(
    pairs: list[tuple[str, float]],
) -> None:
    svg = charts.bar_chart(_one(pairs))

    if all(v == 0 for _, v in pairs):
        assert "No data to show" in svg
        return
    bars = _bars(svg)
    assert len(bars) == len(pairs)
    _assert_proportional(bars, "width", charts.PLOT_W)


@settings(max_examples=60, deadline=None)
@given(figures())
def test_column_heights_are_proportional_whatever_the_values(figure: Figure) -> None:
    bars = _bars(charts.column_chart(figure))

    assert len(bars) == (0 if figure.empty else len(figure.categories) * len(figure.series))
    if bars:
        _assert_proportional(bars, "height", charts.PLOT_H)


@settings(max_examples=60, deadline=None)
@given(figures())
def test_stacked_bars_share_one_scale_whatever_the_values(figure: Figure) -> None:
    bars = _bars(charts.stacked_bar_chart(figure))

    if figure.empty:
        assert bars == []
        return
    top = max(figure.totals())
    for b in bars:
        # Scaled as the chart scales (value / top first): PLOT_W / top overflows
        # to infinity when top is a subnormal float.
        assert abs(float(b["width"]) - charts.PLOT_W * float(b["data-value"]) / top) <= 0.006
