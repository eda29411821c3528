"""Plotly figure builders (pure: a DataFrame in, a figure out)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from tlcore.pareto import pareto_front

AXES = {
    "latency": ("median_ms", "Latency per batch (ms, measured here)"),
    "params": ("params_m", "Parameters (millions)"),
    "gflops": ("gflops", "GFLOPs (multiply-adds, 1e9, at crop size)"),
    "year": ("year", "Year of the architecture's paper"),
}
LINEAR_AXES = {"year"}  # the others span decades and read on a log axis
@dataclass(frozen=True)
class Metric:
    """A y-axis of the chart: its column, title and name, which way is better, and what no model on
    the record line (against year) or the frontier (against cost) is beaten at."""

    column: str
    title: str
    name: str
    higher_is_better: bool
    record: str
    frontier: str


# Top-5 error is the measure of the slides' ILSVRC charts: 100 − the weights' top-5 accuracy.
METRICS = {
    "acc1": Metric("acc1", "ImageNet top-1 (%)", "top-1", True, "is more accurate", "is both cheaper and more accurate"),
    "err5": Metric("err5", "ImageNet top-5 error (%)", "top-5 error", False, "has a lower error",
                   "is both cheaper and lower in error"),
}

HOVER = {"key": True, "family": True, "year": True, "params_m": ":.2f", "gflops": ":.2f",
         "acc1": ":.2f", "acc5": ":.2f", "median_ms": ":.2f", "images_per_s": ":.1f",
         "crop_size": True, "weights_available": True}


def log_ticks(low: float, high: float) -> list[float]:
    """1-2-5 ticks covering [low, high] (plotly's log axis labels too few on narrow ranges)."""
    decades = range(int(np.floor(np.log10(low))), int(np.ceil(np.log10(high))) + 1)
    ticks = [m * 10.0**d for d in decades for m in (1, 2, 5)]
    inside = [t for t in ticks if low / 1.5 <= t <= high * 1.5]
    return inside or ticks


# The plot area label spacing assumes (px, a little under what the chart gets beside the sidebar
# at 1400 px) and a size-10 label's glyph width and line height (with a gap): smaller is safer.
PLOT_PX = (800, 380)
CHAR_PX, LINE_PX = 6.2, 16


def label_mask(x: np.ndarray, y: np.ndarray, names: list[str], rightward: np.ndarray) -> np.ndarray:
    """Which points get a text label: left to right, each whose label box would not overlap one
    already kept (the others are left to hover). ``x`` is in log10 units; ``rightward`` says which
    labels extend to the right of their point. Shapes: (n,) each -> (n,) bool."""
    px = (x - x.min()) / (np.ptp(x) + 0.2) * PLOT_PX[0]  # the x axis pads 0.1 decade each side
    py = (y - y.min()) / (np.ptp(y) * 1.1 + 1e-9) * PLOT_PX[1]  # plotly pads y by about 5 % each side
    widths = np.array([len(n) * CHAR_PX for n in names])
    left = np.where(rightward, px, px - widths)
    keep = np.zeros(len(x), dtype=bool)
    for i in np.argsort(px, kind="stable"):
        clash = (left[keep] < left[i] + widths[i]) & (left[i] < left[keep] + widths[keep]) \
            & (np.abs(py[keep] - py[i]) < LINE_PX)
        keep[i] = not clash.any()
    return keep


FAMILY_SYMBOLS = ["circle", "square", "diamond", "triangle-up", "pentagon", "star"]


def pareto_figure(frame: pd.DataFrame, axis: str, metric: str = "acc1") -> go.Figure:
    """ImageNet top-1 (or top-5 error) against cost (log axis) or year; bubble = params, colour =
    family, frontier line with the labels that fit (every point has its name on hover). Against year
    the frontier is the record line: the best so far, the ILSVRC-winners chart of the slides drawn
    from this zoo. Models without the metric (no top-5 in their metadata) are left out."""
    column, label = AXES[axis]
    m = METRICS[metric]
    y = m.column
    by_year = axis in LINEAR_AXES
    data = frame.assign(err5=100 - frame["acc5"]).dropna(subset=[column, y])
    x = "x"
    data[x] = _spread_within_year(data) if by_year else data[column]
    order = data.sort_values(["year", "family"]).family.unique().tolist()  # legend tells the story by year
    fig = px.scatter(
        data, x=x, y=y, size="params_m", color="family", log_x=not by_year,
        hover_name="model", hover_data={x: False} | {k: v for k, v in HOVER.items() if k in data},
        size_max=28, labels={x: label, y: m.title, "family": "Family"},
        category_orders={"family": order}, color_discrete_sequence=px.colors.qualitative.Dark24,
        # 22 families are more than colours tell apart at a glance: a shape too, cycling, so
        # families next to each other in the legend (and in time) differ in both.
        symbol="family", symbol_sequence=FAMILY_SYMBOLS,
    )
    score = data[y].to_numpy() if m.higher_is_better else -data[y].to_numpy()  # the front wants higher = better
    front = data[pareto_front(data[column].to_numpy(), score)].sort_values(column)
    # Labels point inwards, so the leftmost ones are not cut off by the axis.
    lx = front[x].to_numpy(dtype=float) if by_year else np.log10(front[x].to_numpy())
    rightward = lx < (lx.min() + lx.max()) / 2
    shown = label_mask(lx, front[y].to_numpy(), list(front["model"]), rightward)
    fig.add_trace(go.Scatter(
        x=front[x], y=front[y], mode="lines+text", name="Best so far" if by_year else "Pareto frontier",
        text=front["model"].where(shown, ""), textposition=np.where(rightward, "top right", "top left"),
        textfont={"size": 10, "color": "#333", "shadow": "auto"},  # a halo keeps it legible over bubbles
        line={"color": "rgba(40,40,40,0.55)", "dash": "dot", "width": 2, "shape": "hv" if by_year else "linear"},
        hoverinfo="skip",
    ))
    if by_year:
        years = range(int(data.year.min()), int(data.year.max()) + 1)
        fig.update_xaxes(tickvals=list(years), ticktext=[str(y) for y in years],
                         range=[years[0] - 0.6, years[-1] + 0.6])
    else:
        ticks = log_ticks(data[column].min(), data[column].max())
        low, high = np.log10(data[column].min()), np.log10(data[column].max())
        fig.update_xaxes(tickvals=ticks, ticktext=[f"{t:g}" for t in ticks], range=[low - 0.1, high + 0.1])
    line = (f"dotted line = best {m.name} so far (a record holder: no earlier or same-year model {m.record})"
            if by_year else f"dotted line = Pareto frontier (no model {m.frontier})")
    # A legend under the chart wraps instead of scrolling: every family stays visible.
    fig.update_layout(
        # Two lines: one did not fit beside the sidebar in a 1024 px window, and a plotly title does not wrap.
        height=620, margin={"l": 10, "r": 10, "t": 56, "b": 10}, template="plotly_white",
        title={"text": f"Bubble area ∝ parameters · colour and shape = family · hover a bubble for its name<br>{line}",
               "font": {"size": 12, "color": "#555"}, "x": 0, "xanchor": "left"},
        legend={"orientation": "h", "yref": "container", "y": 0, "yanchor": "bottom",
                "x": 0, "xanchor": "left", "font": {"size": 11}, "title": {"text": "Family "}},
    )
    return fig


def _spread_within_year(data: pd.DataFrame) -> pd.Series:
    """Each family of a year at its own offset within ±0.3 of it, so families of one year stand side
    by side instead of on one vertical line (hover shows the year itself)."""
    offsets = {}
    for year, fams in data.groupby("year").family.unique().items():
        fams = sorted(fams)
        step = 0.6 / len(fams)
        offsets |= {(year, f): -0.3 + step * (i + 0.5) for i, f in enumerate(fams)}
    return data.year + [offsets[(y, f)] for y, f in zip(data.year, data.family, strict=True)]


def compare_frame(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Side-by-side view: one column per model, one row per attribute."""
    rows = {
        "Family": "family", "Year": "year", "Weights": "weights", "Params (M)": "params_m",
        "GFLOPs": "gflops", "File size (MB)": "file_size_mb", "Depth (longest path)": "depth",
        "Weight layers (all)": "weight_layers",
        "Freezable blocks": "blocks", "Top-1 (%)": "acc1", "Top-5 (%)": "acc5",
        "Input crop (px)": "crop_size", "Latency (ms)": "median_ms", "Images/s": "images_per_s",
        "Offline": "weights_available",
    }
    sub = frame.set_index("key").loc[keys]
    out = pd.DataFrame({name: sub[col] for name, col in rows.items() if col in sub}).T
    return out.map(_cell).astype(str)


def _cell(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "—" if np.isnan(v) else f"{v:,.2f}"
    return str(v)
