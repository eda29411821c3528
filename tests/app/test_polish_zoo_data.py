"""Readability of the zoo chart, grid and comparison, and of the Data page's figures and notes."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tlcore import zoo
from tlcore.pareto import pareto_front
from tlcore.zoo import zoo_table
from ui import figures, zoo_view

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    t = zoo_table()
    return t.assign(params_m=t.params / 1e6)


def label_boxes(fig) -> list[tuple[float, float, float, str]]:
    """(left px, right px, bottom px, name) of each frontier label, with label_mask's geometry."""
    front = fig.data[-1]
    x, y = np.log10(np.asarray(front.x, dtype=float)), np.asarray(front.y, dtype=float)
    px = (x - x.min()) / (np.ptp(x) + 0.2) * figures.PLOT_PX[0]
    py = (y - y.min()) / (np.ptp(y) * 1.1) * figures.PLOT_PX[1]
    boxes = []
    for i, (name, pos) in enumerate(zip(front.text, front.textposition, strict=True)):
        if name:
            w = len(name) * figures.CHAR_PX
            left = px[i] if pos == "top right" else px[i] - w
            boxes.append((left, left + w, py[i], name))
    return boxes


@pytest.mark.parametrize("axis", ["gflops", "params"])
def test_pareto_labels_do_not_overlap_and_the_rest_are_on_hover(table, axis):
    fig = figures.pareto_figure(table, axis)
    boxes = label_boxes(fig)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not (a[0] < b[1] and b[0] < a[1] and abs(a[2] - b[2]) < figures.LINE_PX), (a[3], b[3])
    labelled = {b[3] for b in boxes}
    column = figures.AXES[axis][0]
    front = table[pareto_front(table[column].to_numpy(), table.acc1.to_numpy())]
    assert 5 <= len(labelled) < len(front)  # a readable few, not every frontier point
    if axis == "gflops":  # the pairs the review found merged into one another
        assert not {"mobilenet_v3_small", "mnasnet0_5"} <= labelled
        assert not {"regnet_y_128gf", "vit_l_16"} <= labelled
    assert all(t.hovertemplate for t in fig.data[:-1])  # every bubble still names itself on hover


def test_pareto_legend_is_below_and_bubble_size_is_explained(table):
    fig = figures.pareto_figure(table, "gflops")
    assert fig.layout.legend.orientation == "h"
    assert "Bubble area ∝ parameters" in fig.layout.title.text
    # families next to each other in the legend differ in shape as well as colour
    marks = [(t.marker.color, t.marker.symbol) for t in fig.data if t.legendgroup]
    assert len(marks) == table.family.nunique() and len(set(marks)) == len(marks)
    assert all(a[1] != b[1] for a, b in zip(marks, marks[1:], strict=False))


def test_label_mask_keeps_the_first_of_two_clashing_labels():
    x, y = np.array([0.0, 0.01, 3.0]), np.array([70.0, 70.1, 90.0])
    keep = figures.label_mask(x, y, ["long_model_name"] * 3, np.array([True, True, False]))
    assert keep.tolist() == [True, False, True]


def test_grid_columns_fit_and_show_under_load_only_when_it_happened():
    frame = pd.DataFrame({"key": ["a", "b"], "under_load": [np.nan, False]})
    assert "under_load" not in zoo_view.columns(frame)
    assert "under_load" in zoo_view.columns(frame.assign(under_load=[np.nan, True]))
    widths = [c["width"] for c in zoo_view.COLUMN_CONFIG.values()]
    assert all(isinstance(w, int) for w in widths)
    # The grid is 940 px wide beside the sidebar at 1400 px; its selection column takes 36.
    assert sum(widths) - zoo_view.COLUMN_CONFIG["under_load"]["width"] <= 940 - 36


def test_comparison_says_yes_or_no():
    at = AppTest.from_file(str(ROOT / "app_pages/zoo.py"), default_timeout=180)
    at.query_params["compare"] = "resnet18.IMAGENET1K_V1,efficientnet_lite0.IMAGENET1K_TF"
    at.run()
    assert not at.exception
    frame = next(d.value for d in at.dataframe if "Offline" in d.value.index)  # the side-by-side table
    assert list(frame.loc["Offline"]) == ["no", "yes"]  # only the Lite weights ship with the app


def test_data_page_numbers_have_separators_and_duplicates_are_explained():
    at = AppTest.from_file(str(ROOT / "app_pages/data.py"), default_timeout=180).run()
    assert not at.exception
    assert at.metric[3].value == "1,438 / 359"  # digits, seed 0
    note = next(c.value for c in at.caption if "near-identical" in c.value)
    assert note.startswith("1 group of ") and "(s)" not in note and "validation" in note


def test_against_year_the_line_is_the_record_of_the_best_top1_so_far(table):
    fig = figures.pareto_figure(table, "year")
    line = fig.data[-1]
    assert line.name == "Best so far" and line.line.shape == "hv"
    acc = np.asarray(line.y, dtype=float)
    assert (np.diff(acc) > 0).all()  # each record beats the one before
    for x, a in zip(line.x, acc, strict=True):  # and every model of its year or before
        assert a == table[table.year <= round(x)].acc1.max()
    # Families of one year stand side by side, within ±0.3 of it (the axis still reads in years).
    xs = np.concatenate([np.asarray(t.x, dtype=float) for t in fig.data[:-1]])
    assert np.abs(xs - np.round(xs)).max() <= 0.3
    assert len(np.unique(np.round(xs, 3))) > table.year.nunique()


def test_the_record_line_of_top5_error_falls_as_the_slides_ilsvrc_chart(table):
    fig = figures.pareto_figure(table, "year", "err5")
    line = fig.data[-1]
    assert fig.layout.yaxis.title.text == "ImageNet top-5 error (%)" and "best top-5 error so far" in fig.layout.title.text
    err = np.asarray(line.y, dtype=float)
    assert (np.diff(err) < 0).all()  # each record lowers the error of the one before
    for x, e in zip(line.x, err, strict=True):  # and no model of its year or before has a lower one
        assert e == pytest.approx(100 - table[table.year <= round(x)].acc5.max())
    plotted = {name for trace in fig.data[:-1] for name in trace.hovertext}
    assert not any(name.startswith("efficientnet_lite") for name in plotted)  # no top-5 in their metadata


def test_the_zoo_page_offers_top5_error_and_says_what_it_is():
    at = AppTest.from_file(str(ROOT / "app_pages/zoo.py"), default_timeout=180).run()
    at.segmented_control(key="y").set_value("err5").run()
    assert not at.exception
    assert any(c.value.startswith("y-axis: 100 − the weights' own top-5 accuracy") for c in at.caption)
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert chart["layout"]["yaxis"]["title"]["text"] == "ImageNet top-5 error (%)"


def test_the_matrix_captions_fit_their_cells_and_the_label_keeps_off_its_cell_s_caption():
    from tlcore import recommend
    from ui import recommend_view as rv

    m = recommend.Measurement(model="efficientnet_lite0", n_images=400, n_classes=10, per_class=32, resolution=32,
                              similarity=0.26, leep=-1.7, leep_floor=-2.303, nce=-1.5, imagenet_confidence=0.3,
                              h_score=1.0, batchnorm_gap=[], logme_by_block=[("penultimate", 0.3)])
    fig = rv.matrix_figure(recommend.recommend(m, zoo.get_spec("efficientnet_lite0")))
    captions = {a.text: a for a in fig.layout.annotations if not a.showarrow}
    narrow = [t for t, a in captions.items() if a.x > np.log10(recommend.SMALL_PER_CLASS)]  # the right third
    assert len(narrow) == 2 and max(len(line) for t in narrow for line in t.split("<br>")) <= 16
    label = next(a for a in fig.layout.annotations if a.showarrow)
    own = next(a for a in captions.values() if a.y < recommend.SIMILAR_AT and a.x < np.log10(recommend.SMALL_PER_CLASS))
    assert own.yanchor == "bottom" and label.ay < 0  # caption at the cell's foot, so the label goes above the point
    courses = next(t for t in fig.data if t.mode == "markers+text")
    assert list(courses.textposition) == ["top left", "top right"]  # VOC'07 and Food-101 apart
