"""Widget groups and figures for the Fine-tune lab."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.colors import qualitative

from tlcore import data, features, recommend, zoo
from tlcore.finetune import TrialConfig, default_lr, freeze_label, sweep_depths
from tlcore.finetune.surgery import imagenet_head_params
from tlcore.jobs import JobManager, Submission
from tlcore.settings import demo_mode, limits
from ui import data_view, resources
from ui.demo import visitor

TAGS = ("sweep", "validation", "strategy", "ranking")  # kept with a run's config by whoever queued it
# What a run is (its data first: a run on other images is another experiment), then how it did and cost.
HISTORY_COLUMNS = ("run", "status", "model", "dataset", "freeze", "pretrained", "val acc", "best val acc", "epochs",
                   "s/epoch", "s to 1st epoch", "under load", "batch", "precision", "sweep", "strategy", "created",
                   "error")
FROZEN, TRAINABLE, NEW, UNUSED = "#c9ced6", "#2f6fde", "#f2a541", "#f1f3f6"


@st.cache_resource
def jobs() -> JobManager:
    """One job queue per server process: all sessions' GPU work goes through it."""
    return JobManager()


def model_options() -> list[str]:
    specs = [s for s in zoo.list_models() if s.is_default]
    specs.sort(key=lambda s: (not zoo.weights_available(s), s.gflops))
    return [s.key for s in specs]


def model_label(key: str, pretrained: bool = True) -> str:
    """'resnet50  (needs download, 25.6 M)'; from scratch only the architecture is built, offline."""
    spec = zoo.get_spec(key)
    where = ("architecture only, no download" if not pretrained
             else "offline" if zoo.weights_available(spec) else "needs download")
    return f"{spec.model}  ({where}, {spec.params / 1e6:.1f} M)"


def strip_figure(spec: zoo.ModelSpec, freeze, probe_block: str = features.PENULTIMATE) -> go.Figure:
    """The block list as a strip: frozen blocks grey, trainable blue, the new head orange; blocks
    after the one a classifier reads are left out (pale)."""
    blocks = zoo.blocks_of(spec)
    n_frozen = len(blocks) if freeze == "all" else freeze
    names = [b.name for b in blocks]
    last_used = names.index(probe_block) if probe_block in names else len(blocks)
    fig = go.Figure()
    for i, block in enumerate(blocks):
        unused = i > last_used
        colour = UNUSED if unused else FROZEN if i < n_frozen else TRAINABLE
        params = block.params - (imagenet_head_params(spec) if i == len(blocks) - 1 else 0)
        note = (f"not run: the classifier reads {probe_block}" if unused else f"{params / 1e6:.3f} M params"
                + (" (its ImageNet classifier is replaced by the new head)" if i == len(blocks) - 1 else ""))
        fig.add_trace(go.Bar(x=[1], y=[""], orientation="h", marker_color=colour, showlegend=False,
                             text=block.name, textposition="inside", insidetextanchor="middle",
                             hovertemplate=f"{block.name}<br>{note}<extra></extra>"))
    fig.add_trace(go.Bar(x=[1], y=[""], orientation="h", marker_color=NEW, showlegend=False,
                         text="new head", textposition="inside", insidetextanchor="middle",
                         hovertemplate="a new classifier for your classes<extra></extra>"))
    fig.update_layout(barmode="stack", height=90, margin={"l": 0, "r": 0, "t": 0, "b": 0},
                      xaxis={"visible": False}, yaxis={"visible": False}, template="plotly_white",
                      uniformtext={"minsize": 8, "mode": "hide"})
    return fig


def probe_blocks(spec: zoo.ModelSpec) -> list[str]:
    """Blocks whose pooled output a classifier can read, deepest first (the head excluded)."""
    return [b.name for b in zoo.blocks_of(spec) if b.name != "head"][::-1]


def trainable_share(spec: zoo.ModelSpec, freeze) -> tuple[int, int]:
    """(trainable, total) parameters of the backbone: the ImageNet classifier, which the new head
    replaces, is in neither."""
    imagenet_head = imagenet_head_params(spec)
    total = sum(b.params for b in zoo.blocks_of(spec)) - imagenet_head
    if freeze == "all":
        return 0, total
    return sum(b.params for b in zoo.blocks_of(spec)[freeze:]) - imagenet_head, total


def read_size_note(spec: zoo.ModelSpec, ds) -> str:
    """" The model reads these 32 px images enlarged to 64 px, …" where it does, else ""."""
    note = features.enlargement_note(spec, ds.size, features.input_size(spec, ds))
    return f" {note}" if note else ""


UNDER_LOAD_COLUMN = st.column_config.CheckboxColumn(
    "loaded", help="Other work (another trial, a render, a page's feature pass) ran on this device during the "
                   "trial: its seconds are pessimistic")


def model_name(key: str) -> str:
    """A zoo key as the run history shows it: 'resnet50.IMAGENET1K_V2' → 'resnet50'."""
    return key.split(".")[0]


def measured_cost(frame: pd.DataFrame, cfg: TrialConfig, label: str) -> str:
    """What this freeze depth cost when it last ran here, on this model, weights and data: the
    seconds a user pays before pressing Run, from measurements rather than a model of them."""
    not_yet = "Not run at this depth on this data yet{}: **Sweep** measures every depth's time and accuracy."
    if frame.empty:  # no runs at all: not even the columns
        return not_yet.format("")
    # The same images whatever the name: the CLI labels a zip 'defects.zip@…', the app 'defects@…'.
    same = frame[(frame.status == "done") & (frame.model == model_name(cfg.model))
                 & (frame.dataset.str.rpartition("@")[2] == label.rpartition("@")[2])
                 & (frame.pretrained == cfg.pretrained)]
    same = same.assign(loaded=same["under load"].map(lambda v: v is True or v is np.True_))  # None: older, idle
    at_depth = same[same.freeze == freeze_label(cfg.freeze, cfg.probe_block)]
    if at_depth.empty:
        # Per depth its newest idle run, else its newest one, marked.
        others = same.sort_values("loaded", ascending=False, kind="stable").drop_duplicates("freeze", keep="last")
        others = others.sort_values("freeze", key=lambda f: f.map(lambda v: int(v) if v.isdigit() else float("inf")))
        known = ", ".join(f"{f} frozen {s:.2g} s" + (" (under load)" if busy else "")
                          for f, s, busy in zip(others.freeze, others["s/epoch"], others.loaded, strict=True))
        return not_yet.format(f" (per epoch here: {known})" if known else "")
    loaded = at_depth.loaded
    last = (at_depth[~loaded] if not loaded.all() else at_depth).iloc[-1]
    first = last["s to 1st epoch"]
    return (f"Measured here (run #{last.run}): {last['s/epoch']:.2g} s per epoch"
            + (f", the first point after {first:.2g} s" if pd.notna(first) else "")
            + (" — while other work ran on this device: idle, it is faster" if loaded.all() else "")
            + ".")


def visible_runs() -> list[dict]:
    """The run history this session may see: all of it, or in demo mode only its own runs."""
    return jobs().store.list(session=visitor() if demo_mode() else None)


def keep_valid(key: str, options: list, fallback) -> bool:
    """A kept widget value (or, for a multiselect, any of its values) that is not among ``options``
    now (the model changed) goes back to ``fallback`` before the widget is drawn; True if it did."""
    kept = st.session_state.get(key)
    if key in st.session_state and not set(kept if isinstance(kept, list) else [kept]) <= set(options):
        st.session_state[key] = fallback
        return True
    return False


def rate_follows_depth() -> None:
    """The head's rate takes the new depth's default (a probe's head alone learns at a higher one)."""
    st.session_state.ft_lr = default_lr(st.session_state.ft_freeze)


def open_in_lab(model_key: str, freeze, probe_block: str) -> None:
    """Set the Fine-tune lab's controls to a setting (the Strategy page's advice) and go there."""
    options = model_options()  # default weights: another weight of the same network maps to them
    st.session_state.ft_model = next((o for o in options if o.split(".")[0] == model_key.split(".")[0]), options[0])
    st.session_state.ft_scratch = False  # the advice is about pretrained weights
    st.session_state.ft_freeze = freeze
    st.session_state.ft_probe = probe_block
    st.session_state.ft_lr = default_lr(freeze)
    st.switch_page("app_pages/finetune.py")


def current_run() -> dict | None:
    """The run this session started last, as the store has it now (None: none, or it was removed).
    A session that started none (a refreshed page, a second tab) follows the newest run still
    queued or training that it may see, so it can watch and cancel it."""
    run_id = st.session_state.get("current_run")
    batch = st.session_state.get("current_batch", [])
    if run_id in batch:  # a sweep: follow its first run still waiting or training, else its last
        statuses = _statuses(batch)
        run_id = st.session_state.current_run = next(
            (r for r in batch if statuses.get(r) in ("queued", "running")), max(statuses, default=run_id))
    if run_id is None:
        # Only runs this server's queue holds: a CLI's run, or a dead process's, cannot be cancelled here.
        runs = visible_runs()
        unfinished = [r for r in runs if r["status"] in ("queued", "running") and jobs().position(r["id"]) is not None]
        if not unfinished:
            return None
        newest = max(unfinished, key=lambda r: r["id"])
        if sweep := (newest["config"].get("tags") or {}).get("sweep"):  # a sweep: follow it from its next depth
            follow(sorted(r["id"] for r in runs if (r["config"].get("tags") or {}).get("sweep") == sweep))
            return current_run()
        run_id = st.session_state.current_run = newest["id"]
    try:
        return jobs().store.get(run_id)
    except KeyError:  # a demo visitor's runs are removed after long idleness
        st.session_state.pop("current_run", None)
        return None


def _statuses(run_ids: list[int]) -> dict[int, str]:
    """Each kept run's status (a demo visitor's runs go after long idleness)."""
    out = {}
    for run_id in run_ids:
        try:
            out[run_id] = jobs().store.get(run_id)["status"]
        except KeyError:
            pass
    return out


def follow(run_ids: list[int]) -> None:
    """The live view follows these runs (one trial, or a sweep's, in order) from now on."""
    st.session_state.current_run, st.session_state.current_batch = run_ids[0], list(run_ids)


def final_accuracy(run: dict) -> str:
    """' · validation accuracy 0.947' once a run is done, else ''."""
    result = run.get("result") or {}
    return f" · validation accuracy {result['val_acc']:.3f}" if run["status"] == "done" and "val_acc" in result else ""


def batch_progress(run: dict) -> str:
    """' · sweep: 3 of 10 depths done' while the live view follows a sweep, else ''."""
    batch = st.session_state.get("current_batch", [])
    if len(batch) < 2 or run["id"] not in batch:
        return ""
    ended = sum(status not in ("queued", "running") for status in _statuses(batch).values())
    return f" · sweep: {ended} of {len(batch)} depths ended"


def refresh_every(statuses) -> float | None:
    """How often a live view of runs polls: every second while one trains, every 2 s while one
    waits, never once all have ended (on a shared server every open page's poll is a script run)."""
    statuses = set(statuses)
    return 1.0 if "running" in statuses else 2.0 if "queued" in statuses else None


def statuses_tagged(frame: pd.DataFrame, tag: str, value: str) -> list[str]:
    """The statuses of the runs in ``frame`` carrying ``tag`` = ``value`` (a validation's or a ranking's id)."""
    return [] if frame.empty or not value else frame.status[frame[tag] == value].tolist()


def rerun_once_ended(polling: float | None, statuses) -> None:
    """Inside a polling fragment: when its runs have all ended, rerun the page so it stops polling."""
    if polling is not None and refresh_every(statuses) is None:
        st.rerun()


def queue_text(run_id: int) -> str | None:
    """'queued — 2 trial(s) ahead, about 40 s' while the run waits; None once it runs or ended."""
    position = jobs().position(run_id)
    if position in (None, 0):
        return None
    wait = jobs().wait_estimate(run_id)
    turns = " (visitors take turns)" if demo_mode() else ""  # why another's later trial can go first
    return f"queued — {position} trial(s) ahead{turns}" + (f", about {wait:.0f} s" if wait is not None else "")


def first_waiting(run_ids) -> str | None:
    """'Run #12: queued — 3 trial(s) ahead, about 40 s' for the first of ``run_ids`` still waiting."""
    places = [(jobs().position(int(i)), int(i)) for i in run_ids]
    waiting = sorted((p, i) for p, i in places if p)
    return f"Run #{waiting[0][1]}: {queue_text(waiting[0][1])}" if waiting else None


def submission(cfg: TrialConfig, ds, label: str, tags: dict | None = None) -> Submission:
    """A trial for the queue on the active dataset ``ds``, starting from the shared pretrained model
    (copied by the trial); its tags say how the dataset was loaded (cap per class, seed)."""
    model = resources.cached_model(cfg.model, True) if cfg.pretrained else None
    choice = data_view.session_choice()
    loaded = data.load_tags(choice.max_per_class, choice.seed)
    return Submission(cfg, ds, label, model, {**(tags or {}), **loaded, "session": visitor()}, owner=visitor())


def submit(cfg: TrialConfig, ds, label: str, tags: dict | None = None) -> int:
    return jobs().submit_many([submission(cfg, ds, label, tags)])[0]


def submit_sweep(base: TrialConfig, ds, label: str) -> list[int]:
    """One trial per freeze depth (``sweep_depths``): Yosinski et al. 2014 on your data; all
    queued or none. A learning rate left at its default for the base's depth becomes each depth's
    own default (a new head alone has a higher one than a head trained with blocks)."""
    sweep = uuid.uuid4().hex[:8]
    depths = sweep_depths(len(zoo.blocks_of(zoo.get_spec(base.model))), limits().max_waiting_per_session)
    lr = None if base.lr == default_lr(base.freeze) else base.lr
    return jobs().submit_many([
        submission(TrialConfig(**{**base.__dict__, "freeze": d, "lr": lr, "probe_block": features.PENULTIMATE}),
                   ds, label, tags={"sweep": sweep})
        for d in depths])


def batch_label(cfg: dict, result: dict | None) -> str:
    """The batch a run trained with: '64 (auto)' once an automatic one is known, 'auto' before."""
    ran = (result or {}).get("timings", {}).get("batch_size")
    if cfg.get("batch_size") is not None:
        return str(ran or cfg["batch_size"])  # chosen (smaller when memory ran out)
    return f"{ran} (auto)" if ran else "auto"


_SHORT = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


def precision_label(timings: dict) -> str | None:
    """'bf16' when the whole trial ran in it; 'bf16 → fp32' when the frozen layers computed in the
    first and the trainable part trained in the second (a probe's head, a CPU's on small images)."""
    frozen, trained = (_SHORT.get(p, p) for p in (timings.get("precision"), timings.get("trained_in")))
    return frozen if trained in (None, frozen) else f"{frozen} → {trained}"


def runs_frame() -> pd.DataFrame:
    rows = []
    for r in visible_runs():
        cfg = r["config"]
        best = max((h["val_acc"] for h in r["history"]), default=None)
        epochs_s = [h["seconds"] for h in r["history"]]
        rows.append({"run": r["id"], "status": r["status"], "model": model_name(r["model"]), "model key": r["model"],
                     "freeze": freeze_label(cfg.get("freeze"), cfg.get("probe_block")),
                     "pretrained": cfg.get("pretrained"),
                     "epochs": f"{len(r['history'])}/{cfg.get('epochs')}", "batch": batch_label(cfg, r["result"]),
                     "val acc": r["result"]["val_acc"] if r["result"] else (r["history"][-1]["val_acc"] if r["history"] else None),
                     "best val acc": best, "s/epoch": sum(epochs_s) / len(epochs_s) if epochs_s else None,
                     # what its last epoch added: a trial still rising when it ended had not settled
                     "last gain": (r["history"][-1]["val_acc"] - r["history"][-2]["val_acc"]
                                   if len(r["history"]) >= 2 else None),
                     "s to 1st epoch": (r["result"] or {}).get("timings", {}).get("first_epoch_s"),
                     "under load": (r["result"] or {}).get("timings", {}).get("under_load"),
                     "dataset": r["dataset"], "precision": precision_label((r["result"] or {}).get("timings", {})),
                     **{tag: (cfg.get("tags") or {}).get(tag, "") for tag in TAGS},
                     "created": r["created"], "error": r["error"] or ""})
    return pd.DataFrame(rows)


CURVES = ("accuracy", "loss")  # what a run's history holds per epoch, for training and validation


def dataset_names(labels: list[str]) -> dict[str, str]:
    """Each dataset label ('digits@64px#3fa2…') as a curve's legend names it: 'digits@64px', with the
    fingerprint's start where two of them share that name (another cap, another upload)."""
    names = [label.split("#")[0] for label in labels]
    return {label: name if names.count(name) == 1 else label[:len(name) + 7]
            for label, name in zip(labels, names, strict=True)}


def run_name(run: dict, dataset: str = "") -> str:
    """'#4 efficientnet_lite0 from scratch, freeze 0 on digits@64px': what tells overlaid runs apart."""
    cfg = run["config"]
    start = "" if cfg.get("pretrained", True) else "from scratch, "
    freeze = freeze_label(cfg.get("freeze"), cfg.get("probe_block"))
    return f"#{run['id']} {model_name(run['model'])} {start}freeze {freeze}" + (f" on {dataset}" if dataset else "")


def curves_figure(run_ids: list[int], curve: str = "accuracy") -> go.Figure:
    """Validation (solid) and training (dotted) accuracy or loss per epoch, one pair per run; the
    datasets are named when the runs were not all trained on one."""
    runs = [jobs().store.get(run_id) for run_id in run_ids]
    datasets = dataset_names(sorted({r["dataset"] for r in runs}))
    metric = "acc" if curve == "accuracy" else "loss"
    fig = go.Figure()
    for i, run in enumerate(runs):
        hist = run["history"]
        if not hist:
            continue
        name = run_name(run, datasets[run["dataset"]] if len(datasets) > 1 else "")
        epochs = [h["epoch"] for h in hist]
        colour = qualitative.Plotly[i % len(qualitative.Plotly)]  # a run's two curves in one colour
        fig.add_trace(go.Scatter(x=epochs, y=[h[f"val_{metric}"] for h in hist], mode="lines+markers", name=name,
                                 line={"color": colour}, legendgroup=str(run["id"])))
        fig.add_trace(go.Scatter(x=epochs, y=[h[f"train_{metric}"] for h in hist], mode="lines",
                                 name=f"{name} (train)", line={"dash": "dot", "color": colour}, opacity=0.6,
                                 legendgroup=str(run["id"])))
    fig.update_layout(height=360, margin={"l": 10, "r": 10, "t": 10, "b": 10}, template="plotly_white",
                      xaxis_title="epoch", yaxis_title=curve)
    if curve == "accuracy":
        fig.update_yaxes(range=[0, 1.02])
    else:
        fig.update_yaxes(rangemode="tozero")  # cross-entropy: no upper bound
    last = max((x for trace in fig.data for x in trace.x), default=1)
    fig.update_xaxes(tick0=1, dtick=max(1, -(-last // 10)))  # whole epochs (plotly put ticks at 1.5)
    return fig


def sweep_figure(frame: pd.DataFrame, sweep: str) -> go.Figure:
    rows = frame[(frame.sweep == sweep) & (frame.status == "done")].copy()
    rows["depth"] = rows.freeze.map(lambda f: float("inf") if f == "all" else int(f))
    rows = rows.sort_values("depth")
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=rows.freeze, y=rows["val acc"], mode="lines+markers", name="validation accuracy"))
    fig.add_trace(go.Bar(x=rows.freeze, y=rows["s/epoch"], name="seconds per epoch", yaxis="y2", opacity=0.35))
    fig.update_layout(height=360, margin={"l": 10, "r": 10, "t": 10, "b": 10}, template="plotly_white",
                      xaxis_title="frozen blocks", yaxis={"title": "validation accuracy", "range": [0, 1.02]},
                      yaxis2={"title": "s / epoch", "overlaying": "y", "side": "right", "tickmode": "auto",
                              "showgrid": False, "rangemode": "tozero"},
                      legend={"orientation": "h", "y": 1.1})
    return fig


def sweep_label(frame: pd.DataFrame, sweep: str) -> str:
    rows = frame[frame.sweep == sweep]
    first = rows.iloc[0]
    return f"{first.model} on {first.dataset.split('#')[0]} — {len(rows)} depths, runs #{rows.run.min()}–{rows.run.max()}"


def sweep_reading(frame: pd.DataFrame, sweep: str, n_val: int | None = None) -> str:
    """One sentence on what the sweep shows: the best depths (those within a standard error, or an
    image, of the best count as one: ``recommend.tied_best``) against both ends. ``n_val``: the
    validation images (default: as many as the best run was scored on)."""
    rows = frame[(frame.sweep == sweep) & (frame.status == "done")]
    waiting = int(frame[frame.sweep == sweep].status.isin(["queued", "running"]).sum())
    if waiting:  # a best among the depths done so far would read as the sweep's answer
        return (f"{len(rows)} of {len(rows) + waiting} depths done so far; the reading follows once the rest "
                "have run.")
    if rows.empty:
        return "No depth has finished yet."
    best = rows.loc[rows["val acc"].idxmax()]
    if n_val is None:
        n_val = sum(map(sum, jobs().store.get(int(best.run))["result"]["confusion"]))
    acc = dict(zip(rows.freeze, rows["val acc"], strict=True))
    ends = [f"{label} {acc[key]:.3f}" for key, label in (("0", "fine-tuning everything"), ("all", "linear probe"))
            if key in acc]
    tied = [rows.freeze.iloc[i] for i in recommend.tied_best(rows["val acc"].tolist(), n_val)]
    if len(tied) == 1:
        depth = "the linear probe" if best.freeze == "all" else f"{best.freeze} frozen blocks"
        return f"Best here: {depth} ({best['val acc']:.3f} validation accuracy); " + ", ".join(ends) + "."
    numbers = [str(f) for f in tied if f != "all"]
    depths = " and ".join(([f"{', '.join(numbers)} frozen blocks"] if numbers else [])
                          + (["the linear probe"] if "all" in tied else []))
    return (f"Best here, tied within a standard error or one image of {n_val:,}: {depths} (up to "
            f"{best['val acc']:.3f}); " + ", ".join(ends) + ".")


def export_json(run_ids: list[int]) -> str:
    return json.dumps([jobs().store.get(r) for r in run_ids], indent=2)


def weights_bytes(run_id: int) -> bytes | None:
    path = jobs().store.weights_path(run_id)
    return path.read_bytes() if path.exists() else None
