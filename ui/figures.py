"""Plotly figure builders (pure: a DataFrame in, a figure out)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from tlcore.pareto import pareto_front

AXES = {
    "latency": ("median_ms", "Latency per batch (ms, measured here)"),
    "params": ("params_m", "Parameters (millions)"),
    "gflops": ("gflops", "GFLOPs (multiply-adds, 1e9, at crop size)"),
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


def pareto_figure(frame: pd.DataFrame, axis: str) -> go.Figure:
    """ImageNet top-1 against cost on a log axis; bubble = params, colour = family, frontier line."""
    column, label = AXES[axis]
    data = frame.dropna(subset=[column, "acc1"]).copy()
    by_year = data.sort_values(["year", "family"]).family.unique().tolist()  # legend tells the story by year
    fig = px.scatter(
        data, x=column, y="acc1", size="params_m", color="family", log_x=True,
        hover_name="model", hover_data={k: v for k, v in HOVER.items() if k in data},
        size_max=28, labels={column: label, "acc1": "ImageNet top-1 (%)", "family": "Family"},
        category_orders={"family": by_year}, color_discrete_sequence=px.colors.qualitative.Dark24,
    )
    front = data[pareto_front(data[column].to_numpy(), data["acc1"].to_numpy())].sort_values(column)
    # Labels point inwards, so the leftmost ones are not cut off by the axis.
    lx = np.log10(front[column].to_numpy())
    middle = (lx.min() + lx.max()) / 2
    positions = ["top right" if v < middle else "top left" for v in lx]
    fig.add_trace(go.Scatter(
        x=front[column], y=front["acc1"], mode="lines+text", name="Pareto frontier",
        text=front["model"], textposition=positions, textfont={"size": 10, "color": "#444"},
        line={"color": "rgba(40,40,40,0.55)", "dash": "dot", "width": 2}, hoverinfo="skip",
    ))
    ticks = log_ticks(data[column].min(), data[column].max())
    low, high = np.log10(data[column].min()), np.log10(data[column].max())
    fig.update_xaxes(tickvals=ticks, ticktext=[f"{t:g}" for t in ticks],
                     range=[low - 0.1, high + 0.1])
    fig.update_layout(height=520, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      legend={"font": {"size": 11}}, template="plotly_white")
    return fig


def compare_frame(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Side-by-side view: one column per model, one row per attribute."""
    rows = {
        "Family": "family", "Year": "year", "Weights": "weights", "Params (M)": "params_m",
        "GFLOPs": "gflops", "File size (MB)": "file_size_mb", "Depth (conv+linear)": "depth",
        "Freezable blocks": "blocks", "Top-1 (%)": "acc1", "Top-5 (%)": "acc5",
        "Input crop (px)": "crop_size", "Latency (ms)": "median_ms", "Images/s": "images_per_s",
        "Offline": "weights_available",
    }
    sub = frame.set_index("key").loc[keys]
    out = pd.DataFrame({name: sub[col] for name, col in rows.items() if col in sub}).T
    return out.map(_cell).astype(str)


def _cell(v) -> str:
    if isinstance(v, float):
        return "—" if np.isnan(v) else f"{v:,.2f}"
    return str(v)
