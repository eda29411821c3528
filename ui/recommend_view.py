"""Cached measurement, the size × similarity matrix figure, and the validation runs for the
Strategy page."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from tlcore import recommend, zoo
from tlcore.data import Dataset
from tlcore.finetune import TrialConfig
from ui import finetune_view, progress, resources


def measurement(ds: Dataset, model_key: str) -> recommend.Measurement:
    """Scores for one (dataset, model), without the BatchNorm gaps (``batchnorm_gaps``: the page
    shows the rest first), computed once under a progress bar; the features behind them are
    cached by tlcore too."""
    def compute() -> recommend.Measurement:
        spec = zoo.get_spec(model_key)
        with progress.bar(f"Measuring: {spec.model} over the training images") as on_step:
            return recommend.measure(spec, ds, model=resources.cached_model(model_key, True), batchnorm=False,
                                     on_step=on_step)

    return progress.shared("measurement", (ds.fingerprint, model_key), compute)


def imagenet_view(ds: Dataset, model_key: str) -> pd.DataFrame:
    """Per class, the three ImageNet classes its training images look like to the pretrained head."""
    def compute() -> pd.DataFrame:
        with progress.bar("The ImageNet head on the training images") as on_step:
            seen = recommend.what_imagenet_sees(zoo.get_spec(model_key), ds,
                                                model=resources.cached_model(model_key, True), on_step=on_step)
        return pd.DataFrame([{"your class": name, **{f"ImageNet's {rank}": f"{label} ({100 * p:.0f}\u00a0%)"
                                                     for rank, (label, p) in zip(("1st", "2nd", "3rd"), top, strict=True)}}
                             for name, top in seen])

    return progress.shared("imagenet_view", (ds.fingerprint, model_key), compute)


def batchnorm_gaps(ds: Dataset, model_key: str) -> list[tuple[str, float]]:
    def compute() -> list[tuple[str, float]]:
        with progress.bar("Comparing the BatchNorm input statistics with ImageNet's (float32)") as on_step:
            return recommend.batchnorm_gaps(zoo.get_spec(model_key), ds,
                                            model=resources.cached_model(model_key, True), on_step=on_step)

    return progress.shared("batchnorm_gaps", (ds.fingerprint, model_key), compute)


def matrix_figure(rec: recommend.Recommendation | None, per_class: float | None = None) -> go.Figure:
    """The seeds' 2×2 matrix with the dataset as a point: images per class (log) × similarity.
    Before any measurement (``rec`` None) the dataset is a line at its ``per_class``: its size is
    known from the labels, its similarity only from the model's pass."""
    per_class = rec.measurement.per_class if rec is not None else per_class or 1
    x_line, y_line = np.log10(recommend.SMALL_PER_CLASS), recommend.SIMILAR_AT
    x_lo, x_hi = 0.0, max(4.0, np.log10(max(per_class, 1)) + 0.5)
    fig = go.Figure()
    cells = {("small", True): (x_lo, x_line, y_line, 1.0), ("large", True): (x_line, x_hi, y_line, 1.0),
             ("small", False): (x_lo, x_line, 0.0, y_line), ("large", False): (x_line, x_hi, 0.0, y_line)}
    for (size, similar), (x0, x1, y0, y1) in cells.items():
        here = rec is not None and (size, similar) == (rec.size, rec.similar)
        fig.add_shape(type="rect", x0=x0, x1=x1, y0=y0, y1=y1, line={"width": 1, "color": "#9aa3ad"},
                      fillcolor="#dbe7fb" if here else "#f4f5f7", layer="below")
        # The point's own cell keeps its caption at the edge farther from the point: a narrow cell's
        # caption runs to 5–6 lines, half the cell.
        low = here and rec.measurement.similarity > (y0 + y1) / 2
        # Wrapped to the cell's share of the width: the right-hand cells are a third of it, and a
        # caption wrapped for a wide cell ran past their edge (at 1024 px into the next caption).
        fig.add_annotation(x=(x0 + x1) / 2, y=y0 + 0.04 if low else y1 - 0.04,
                           text=_wrap(recommend.STRATEGIES[(size, similar)], max(16, round(40 * (x1 - x0) / x_hi))),
                           showarrow=False, yanchor="bottom" if low else "top",
                           font={"size": 11, "color": "#1f2d3d" if here else "#6b7785"})
    x = np.log10(max(per_class, 1))
    if rec is None:
        fig.add_vline(x=x, line={"dash": "dot", "width": 2, "color": "#f2a541"})
        # Between the captions of the cells above and below the line, not over the lower one's.
        fig.add_annotation(x=x, y=0.7, text=f"<b>your data</b>: {per_class:g} per class<br>similarity: Measure",
                           showarrow=False, bgcolor="rgba(255,255,255,0.9)", bordercolor="#1f2d3d", borderpad=3,
                           font={"size": 12, "color": "#1f2d3d"})
    else:
        _the_point(fig, rec.measurement, x, x_lo, x_hi)
    _course_datasets(fig)
    ticks = [v for v in (1, 10, 100, 1000, 10000, 100000) if np.log10(v) <= x_hi]  # 3s crowded a narrow column
    fig.update_layout(height=420, margin={"l": 10, "r": 10, "t": 10, "b": 10}, template="plotly_white",
                      xaxis={"title": "training images per class", "range": [x_lo, x_hi],
                             "tickvals": [np.log10(v) for v in ticks], "ticktext": [f"{v:,}" for v in ticks],
                             "showgrid": False},
                      yaxis={"title": "similarity to ImageNet (LEEP gain)", "range": [0, 1], "showgrid": False})
    return fig


def _course_datasets(fig: go.Figure) -> None:
    """The course's reference datasets (seed 004) as grey marks on the size axis: where its
    "small" and "medium" sit against your data (their similarity to ImageNet is not known here)."""
    names = list(recommend.REFERENCE_DATASETS)
    sizes = [recommend.REFERENCE_DATASETS[n][0] for n in names]
    # Each name away from the size line (VOC'07 left of it, Food-101 right): centred, they ran together.
    sides = ["top left" if size < recommend.SMALL_PER_CLASS else "top right" for size in sizes]
    fig.add_trace(go.Scatter(
        x=np.log10(sizes), y=[0.015] * len(names), mode="markers+text", text=names, textposition=sides,
        marker={"symbol": "triangle-up", "size": 10, "color": "#9aa3ad"}, textfont={"size": 11, "color": "#6b7785"},
        showlegend=False, customdata=[f"{p:,.0f} per class, '{s}' in the course (Thome, seed 004)"
                                      for p, s in recommend.REFERENCE_DATASETS.values()],
        hovertemplate="%{text}: %{customdata}<extra></extra>"))


def training_per_class(ds: Dataset) -> float:
    """The matrix's x before measuring: median training images per class (what ``measure`` reports)."""
    return float(np.median(np.bincount(ds.labels[ds.train_idx].numpy())))


def _the_point(fig: go.Figure, m: recommend.Measurement, x: float, x_lo: float, x_hi: float) -> None:
    y = m.similarity
    fig.add_trace(go.Scatter(x=[x], y=[y], mode="markers",
                             marker={"size": 16, "color": "#f2a541", "line": {"width": 2, "color": "#1f2d3d"}},
                             name="your data", showlegend=False,
                             hovertemplate=f"{m.per_class:.0f} images per class<br>similarity "
                                           f"{m.similarity:.2f}<extra></extra>"))
    # The label on a white box, off the point, and away from its cell's caption, which sits at the
    # bottom of the cell when the point is high in it (matrix_figure), else at the top.
    y0, y1 = (recommend.SIMILAR_AT, 1.0) if y >= recommend.SIMILAR_AT else (0.0, recommend.SIMILAR_AT)
    caption_low = y > (y0 + y1) / 2
    ay = (-28 if y < 0.88 else 0) if caption_low else (28 if y > 0.15 else -28)
    fig.add_annotation(x=x, y=y, text="<b>your data</b>", showarrow=True, arrowhead=0, arrowcolor="#1f2d3d",
                       ax=48 if x < (x_lo + x_hi) / 2 else -48, ay=ay,
                       bgcolor="rgba(255,255,255,0.9)", bordercolor="#1f2d3d", borderpad=3,
                       font={"size": 12, "color": "#1f2d3d"})


def _wrap(text: str, width: int = 28) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + len(w) + 1 > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return "<br>".join([*lines, line])


def depth_figure(m: recommend.Measurement) -> go.Figure:
    """LogME per block (left axis) beside the BatchNorm gap along the network (right axis), both
    against depth: the BatchNorm layers, many more than the blocks, are spread evenly under them."""
    names, values = zip(*m.logme_by_block, strict=True)
    at = list(range(len(names)))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=at, y=list(values), mode="lines+markers", name="LogME of the block's features",
                             customdata=list(names), hovertemplate="%{customdata}: %{y:.3f}<extra></extra>"))
    if m.batchnorm_gap:
        layers, gaps = zip(*m.batchnorm_gap, strict=True)
        fig.add_trace(go.Scatter(x=np.linspace(0, len(names) - 2, len(gaps)), y=list(gaps), mode="lines",
                                 name="BatchNorm gap to ImageNet (0 … 1)", yaxis="y2", line={"dash": "dot"},
                                 customdata=list(layers), hovertemplate="%{customdata}: %{y:.2f}<extra></extra>"))
    fig.update_layout(height=340, margin={"l": 10, "r": 10, "t": 10, "b": 10}, template="plotly_white",
                      xaxis={"title": "depth", "tickvals": at, "ticktext": list(names)},
                      yaxis={"title": "LogME (higher fits better)"},
                      yaxis2={"title": "BatchNorm gap", "overlaying": "y", "side": "right", "range": [0, 1],
                              "showgrid": False, "tickmode": "auto"},
                      legend={"orientation": "h", "y": 1.12})
    return fig


def scores_frame(m: recommend.Measurement) -> pd.DataFrame:
    rows = [("Similarity (LEEP gain)", m.similarity, "share of the labels' uncertainty ImageNet's classes remove"),
            ("LEEP", m.leep, f"nats; {m.leep_floor:.3f} for a source that knows nothing (Nguyen et al. 2020)"),
            ("NCE", m.nce, "nats; −H(labels | ImageNet's top class) (Tran et al. 2019)"),
            ("H-score (shrinkage)", m.h_score, f"penultimate features, about 0 … {m.n_classes - 1} (the reference "
             "code's normalisations can pass it a little on few images); Bao et al.'s H-score with a Ledoit–Wolf "
             "covariance, scaled by (1 − shrinkage) (Ibrahim et al. 2021): noise scores near 0"),
            ("ImageNet head confidence", m.imagenet_confidence, "mean top softmax probability"),
            ("Images per class (median, train)", m.per_class, "")]
    # Text, so a count reads 120 and a score 0.923 (a number column has one format for all rows).
    return pd.DataFrame([(name, f"{value:g}" if name.startswith("Images") else f"{value:.3f}", meaning)
                         for name, value, meaning in rows], columns=["score", "value", "meaning"])


def submit_validation(rec: recommend.Recommendation, ds: Dataset, label: str, epochs: int) -> str:
    """Queue the competing strategies (``tlcore.recommend.validation_trials``), all or none;
    returns the validation's id."""
    vid = uuid.uuid4().hex[:8]
    finetune_view.jobs().submit_many([
        finetune_view.submission(cfg, ds, label, tags={"validation": vid, "strategy": name})
        for name, cfg in recommend.validation_trials(rec, epochs=epochs).items()])
    return vid


def validation_frame(frame: pd.DataFrame, vid: str, n_val: int) -> pd.DataFrame:
    """The validation's trials, from the run history ``frame`` (``finetune_view.runs_frame``), with
    each accuracy's standard error on the ``n_val`` validation images."""
    if frame.empty:
        return frame
    rows = frame[frame.validation == vid].copy()
    rows["± SE"] = [recommend.accuracy_se(a, n_val) if pd.notna(a) else None for a in rows["val acc"]]
    return rows[["strategy", "run", "model", "status", "freeze", "pretrained", "epochs", "val acc", "± SE",
                 "best val acc", "s/epoch", "under load", "s to 1st epoch", "last gain"]]  # the run where long names leave it in view


def validation_verdict(done: pd.DataFrame, rec: recommend.Recommendation, n_val: int, n_classes: int) -> str:
    """What the finished validation says (``recommend.validation_verdict``), in words, and which
    trials were still rising at their last epoch (more epochs could change the order)."""
    advised = recommend.advised_strategy(rec)
    v = recommend.validation_verdict(list(zip(done.strategy, done["val acc"], done["best val acc"],
                                              done.strategy == advised, strict=True)), n_val, n_classes)
    bold = [f"**{s}**" for s in v.best]
    names = bold[0] if len(bold) == 1 else f"{', '.join(bold[:-1])} and {bold[-1]}"
    text = (f"Best on your data: **{v.best[0]}** ({v.best_acc:.3f} validation accuracy)." if len(v.best) == 1
            else f"Best on your data, tied within ±{v.margin:.3f}, a standard error or one image on {n_val:,} "
                 f"validation images: {names} (up to {v.best_acc:.3f}).")
    if v.stuck:  # then the comparison settles nothing
        return text + (f" But {', '.join(v.stuck)} never got past chance ({1 / n_classes:.2f}): too few epochs to "
                       f"judge {'it' if len(v.stuck) == 1 else 'them'}. Run the validation again with more epochs "
                       "before drawing a conclusion.")
    if v.advice_among_best is True:
        text += " The matrix's advice is among the best here."
    elif v.advice_among_best is False:
        text += f" The matrix's advice ({advised}) reached {v.advised_acc:.3f}: on this data, trust the validation."
    gains = done["last gain"] if "last gain" in done else [None] * len(done)
    rising = [f"{s} (+{g:.3f})" for s, g in zip(done.strategy, gains, strict=True) if pd.notna(g) and g > v.margin]
    if rising:  # Thome's tables compare trained networks; a curve still climbing has not settled
        text += (f" Still rising at the last epoch, by more than the best's standard error: {', '.join(rising)}. "
                 "More epochs could change the order.")
    return text


def current_validation(frame: pd.DataFrame, dataset_label: str, model_key: str, asked: str | None) -> str:
    """The validation to show for this dataset and model: ``asked`` (the one this session queued)
    if it is theirs, else the newest (kept across refreshes and restarts), or "". Another model's
    validation is never shown under this one's advice."""
    if frame.empty:
        return ""
    rows = frame[(frame.validation != "") & (frame.dataset == dataset_label) & (frame["model key"] == model_key)]
    if asked and (rows.validation == asked).any():
        return asked
    return "" if rows.empty else rows.loc[rows.run.idxmax(), "validation"]


def model_scores(ds: Dataset, model_key: str, label: str = "") -> dict:
    """One model's transferability scores, computed once under a progress bar."""
    def compute() -> dict:
        with progress.bar(label or f"Scoring {finetune_view.model_name(model_key)}") as on_step:
            return recommend.score_model(zoo.get_spec(model_key), ds, model=resources.cached_model(model_key, True),
                                         on_step=on_step)

    return progress.shared("model_scores", (ds.fingerprint, model_key), compute, max_entries=64)


def submit_ranking(ds: Dataset, label: str, model_keys: list[str], epochs: int) -> str:
    """A linear probe per model: the real accuracy the scores are checked against."""
    rid = uuid.uuid4().hex[:8]
    finetune_view.jobs().submit_many([  # all or nothing
        finetune_view.submission(TrialConfig(model=key, freeze="all", epochs=epochs), ds, label,
                                 tags={"ranking": rid, "strategy": "linear probe"})
        for key in model_keys])
    return rid


def ranking_frame(ds: Dataset, model_keys: list[str], rid: str, runs: pd.DataFrame) -> pd.DataFrame:
    """Scores per model, with the linear probe's accuracy (from the run history ``runs``) once the
    check has run."""
    frame = pd.DataFrame([model_scores(ds, k) for k in model_keys]).drop(columns="block")
    frame = frame.rename(columns={"seconds": "s to score"})
    frame["model"] = frame.model.map(finetune_view.model_name)  # as the run history names them
    if rid and not runs.empty:
        done = runs[(runs.ranking == rid) & (runs.status == "done")]
        frame["linear probe acc"] = frame.model.map(dict(zip(done.model, done["val acc"], strict=True)))
        # its epochs beside it: the validation's probe may have run another number (another accuracy)
        frame["probe epochs"] = frame.model.map(dict(zip(done.model, done.epochs.str.split("/").str[0],
                                                         strict=True))).astype("Int64")
    return frame.sort_values("logme", ascending=False)


SCORE_NAMES = {"logme": "LogME", "leep": "LEEP", "nce": "NCE", "h_score": "H-score (shrinkage)"}  # as the tables show them


def agreement_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Kendall's τ and Spearman's ρ of each score against the measured accuracy."""
    rows = []
    for score, name in SCORE_NAMES.items():
        agreement = recommend.rank_agreement(frame[score].tolist(), frame["linear probe acc"].tolist())
        rows.append({"score": name, "Kendall's τ": agreement["kendall_tau"],
                     "Spearman's ρ": agreement["spearman_rho"]})
    return pd.DataFrame(rows)
