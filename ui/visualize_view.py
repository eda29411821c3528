"""Widget groups, cached resources and figures for the Inside-the-network page.

Renders run in the page's own script thread with a progress bar: pressing Stop (or changing
any setting) makes Streamlit rerun the page, which interrupts the render at its next progress
update; the engine's hooks are removed on the way out and nothing half-done is cached.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch
from PIL import Image

from tlcore import data, zoo
from tlcore.settings import demo_mode, limits
from tlcore.vis import dream, drift, examples, filters, render
from tlcore.zoo.layers import NO_CHANNEL_MAPS
from ui import data_view, progress, resources
from ui.finetune_view import jobs, visible_runs

T = TypeVar("T")


def sizes() -> list[int]:
    """Render sizes within this server's caps (a demo's are smaller)."""
    return [s for s in (64, 96, 128, 160, 224) if s <= limits().max_vis_size]


def counts() -> list[int]:
    return [c for c in (4, 8, 16, 32, 64) if c <= limits().max_vis_channels]


KINDS = {"channel": "Channels", "neuron": "Centre neurons", "direction": "Classes",
         "layer": "Variations"}  # objective → what its items are
KINDS_HELP = ("Channels: what makes each channel's whole map respond · Centre neurons: only the channel's centre "
              "position (a unit with one receptive field) · Classes: what the layer associates with each class of "
              "your data (the class's mean activation minus the dataset's) · Variations: the whole layer at once "
              "(DeepDream's objective), several renders")
DREAM = dream.DreamConfig(layers=())  # the DeepDream controls start at the engine's (and the CLI's) defaults


def dream_sides(default: int) -> list[int]:
    """DeepDream photo sizes (longer side) within this server's cap, the device's default among them."""
    return sorted({s for s in (256, 384, 512, 768, 1024) if s <= limits().max_dream_side} | {default})


def keep_in_range(key: str, available: int, fallback: int = 0) -> None:
    """A number kept from another layer or objective (or a link) may be out of range now."""
    if st.session_state.get(key, 0) >= available:
        st.session_state[key] = fallback


def model_options() -> list[str]:
    """Convolutional models (their default weights), the ones usable offline first, smallest first."""
    specs = [s for s in zoo.list_models() if s.is_default and s.family not in NO_CHANNEL_MAPS]
    specs.sort(key=lambda s: (not zoo.weights_available(s), s.gflops))
    return [s.model for s in specs]


def model_note(key: str) -> str:
    spec = zoo.get_spec(key)
    where = "weights on this machine" if zoo.weights_available(spec) else "weights download on first use"
    return f"{spec.weights} · {spec.params / 1e6:.1f} M parameters · {where}"


def layers(key: str) -> dict[str, zoo.Layer]:
    return {layer.name: layer for layer in zoo.layers(zoo.get_spec(key))}


def layer_note(layer: zoo.Layer) -> str:
    return f"{layer.channels} channels · {layer.size}×{layer.size} map at the model's own input size · block {layer.block}"


def defaults():
    return render.defaults(resources.device())


def layer_settings(spec: zoo.ModelSpec) -> tuple[zoo.Layer, render.RenderConfig]:
    """The layer and render settings, drawn in the open view that renders channels (DeepDream has its own)."""
    layer_map = layers(spec.key)
    names = list(layer_map)
    c1, c2, c3 = st.columns([2.2, 1.4, 2.1], vertical_alignment="bottom")  # lined up with the gallery row
    name = c1.selectbox("Layer", names, index=names.index(zoo.middle_layer(spec)), key="layer", bind="query-params",
                        help="In forward order, named by their module paths as PyTorch has them (any forward hook "
                             "can use them): the first ones see small patches of colour and edges, the last ones "
                             "whole parts of objects.")
    c3.caption(layer_note(layer_map[name]))
    return layer_map[name], render_settings(c2, name)


def render_settings(where, layer: str) -> render.RenderConfig:
    """The render settings popover (bound to the URL), for ``layer``."""
    d = defaults()
    # A short label: "Render settings" was cut to "Render s…" in its column at 1024 px.
    with where.popover("Settings", icon=":material/tune:", width="stretch",
                       help="How the pictures are optimised: steps, size, learning rate, seed."):
        s1, s2 = st.columns(2)  # two by two: four across spilled out of the popover over the sidebar
        keep_in_range("steps", limits().max_vis_steps + 1, d.steps)  # a link from a server with other caps
        steps = s1.number_input("Steps", 1, limits().max_vis_steps, d.steps, key="steps", bind="query-params",
                                help="Optimisation steps: more give sharper, stronger pictures (the ratio keeps "
                                     "rising to 256 and beyond) and take proportionally longer.")
        size = s2.selectbox("Size (px)", sizes(), index=sizes().index(d.size), key="size", bind="query-params")
        s3, s4 = st.columns(2)
        lr = s3.number_input("Learning rate", 0.001, 1.0, d.lr, format="%.3f", key="lr", bind="query-params",
                             help="Adam's step on the image's parameters; 0.05 was best or near it for every "
                                  "step count on the Lite models (bench/vis_quality.py).")
        seed = s4.number_input("Seed", 0, 2**31 - 1, 0, key="seed", bind="query-params",
                               help="Another seed starts from other random noise: another picture of the same thing.")
    return render.RenderConfig(layer=layer, steps=int(steps), size=int(size), lr=float(lr), seed=int(seed))


def spread_layers(spec: zoo.ModelSpec, n: int = 4) -> list[str]:
    """``n`` layers evenly through the network, first to last, in forward order."""
    names = list(layers(spec.key))
    return list(dict.fromkeys(names[round(i * (len(names) - 1) / max(n - 1, 1))] for i in range(n)))


def depth_row(spec: zoo.ModelSpec, model: torch.nn.Module, cfg: render.RenderConfig, layer: zoo.Layer,
              targets: list[int], row: int, rows: int) -> None:
    """One layer's renders in a row (``row`` of ``rows``, from 0), its name and map size at the left."""
    found = renders(spec, model, cfg, targets, "pretrained", f"depth{row}", step=f"Layer {row + 1} of {rows}: ")
    if not found:
        return
    label, *cols = st.columns([1.4] + [1] * len(targets), vertical_alignment="center")
    label.markdown(f"**{cfg.layer}**  \n{layer.channels} channels · {layer.size}×{layer.size} map · block "
                   f"{layer.block}")
    for col, r in zip(cols, found, strict=True):
        col.image(r.image, width="stretch", caption=f"channel {r.target}")


def pretrained(key: str) -> torch.nn.Module:
    """The shared pretrained model, or a clear stop when its weights cannot be had here."""
    try:
        return resources.cached_model(key, True)
    except zoo.WeightsUnavailableError as err:
        st.error(str(err))
        st.stop()


@st.cache_resource(max_entries=4, show_spinner="Loading the fine-tuned weights…")
def tuned_model(run_id: int, created: str) -> torch.nn.Module | None:
    """A kept run's network (None for a linear probe), loaded once and shared read-only."""
    run = jobs().store.get(run_id)
    return drift.run_model(run, jobs().store, zoo.get_spec(run["model"]), resources.device())


def layer_stats(key: str, ds: data.Dataset, layer: str, model: torch.nn.Module,
                weights: str = "pretrained") -> examples.LayerStats:
    """One pass over the dataset at ``layer`` (cached in memory and on disk by the engine)."""
    with progress.bar(f"Activations at {layer}") as on_step:
        return examples.layer_stats(zoo.get_spec(key), ds, layer, model=model, weights=weights, on_step=on_step)


def pause() -> None:
    st.session_state.vis_paused = True


def resume() -> None:
    st.session_state.vis_paused = False


def with_progress(label: str, work: Callable[[Callable[[int, int], None]], T], key: str,
                  on_stop: Callable[[], None] = pause) -> T:
    """Run ``work(on_step)`` under a progress bar (steps, seconds, the time left) with a Stop button;
    both vanish afterwards. Stop reruns the page (which interrupts the work) after ``on_stop``, by
    default ``pause``, which keeps the automatic renders from starting again until the user asks."""
    holder = st.empty()
    with holder.container():
        bar = st.progress(0.0, text=label)
        st.button("Stop", key=f"stop_{key}", on_click=on_stop, help="Stops the optimisation; nothing half-done is kept.")
    started = time.perf_counter()

    def on_step(done: int, total: int) -> None:
        bar.progress(done / total, text=f"{label} — {progress.status(done, total, started, 'steps')}")

    try:
        return work(on_step)
    finally:
        holder.empty()


def thumbs(ds: data.Dataset, indices: list[int], per_row: int) -> np.ndarray:
    return data_view.thumbnails(ds, indices, n=len(indices), per_row=per_row)


def ratio_text(ratio: float | None) -> str:
    """'ratio 3.2×'; a render weaker than the dataset's best image says so: it is a failed
    optimisation (too few steps, a too-strong transform), not a picture of what the channel wants."""
    if ratio is None:
        return "ratio —"
    return f"ratio {ratio:.1f}×" + (" — weaker than the dataset's best image" if ratio < 1 else "")


RATIO_HELP = ("Activation ratio: (the render's mean activation − the dataset's median) ÷ (the dataset's "
              "best image − the median), for this channel. 1 = as strong as the dataset's best image; a good "
              "render goes well beyond it. Measured from the median because EfficientNet's block outputs "
              "are linear and can be negative on every image.")


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def histogram_figure(stats: examples.LayerStats, channel: int, render_activation: float | None) -> go.Figure:
    """The channel's mean activation over the dataset's images, the render's marked."""
    values = stats.acts[:, channel].numpy()
    fig = go.Figure(go.Histogram(x=values, nbinsx=40, marker_color="#9aa5b8", showlegend=False,
                                 hovertemplate="%{x:.2f}: %{y} images<extra></extra>"))
    lines = {"median": (float(np.median(values)), {"color": "#555", "dash": "dot", "width": 2}),
             "the render": (render_activation, {"color": "#2f6fde", "width": 3})}
    for label, (x, line) in lines.items():  # named in the legend above the plot, where no bar hides the name
        if x is not None:
            fig.add_vline(x=x, line=line)
            fig.add_scatter(x=[None], y=[None], mode="lines", line=line, name=label)
    fig.update_layout(height=240, margin={"l": 10, "r": 10, "t": 30, "b": 10}, template="plotly_white",
                      xaxis_title=f"channel {channel}: mean activation per image", yaxis_title="images",
                      legend={"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom", "itemwidth": 30})
    return fig


def finished_runs(key: str) -> list[dict]:
    """Kept runs that started from exactly these pretrained weights, newest first."""
    return [r for r in visible_runs()[::-1]
            if r["status"] == "done" and r["model"] == key and r["config"].get("pretrained", True)]


def default_drift_runs(runs: list[dict], n: int = 3) -> list[int]:
    """The runs the CKA view opens with (``runs`` newest first): the newest run of each of the ``n``
    shallowest freeze depths, where fine-tuning reached furthest, so the curves differ. The newest
    three alone were often a sweep's last depths, every curve at 1."""
    newest: dict = {}
    for run in runs:
        newest.setdefault(run["config"].get("freeze"), run["id"])
    depths = sorted(newest, key=lambda f: float("inf") if f == "all" else f)
    return [newest[f] for f in depths[:n]]


def run_label(run: dict) -> str:
    freeze = run["config"].get("freeze")
    what = ("linear probe" if freeze == "all" else "everything fine-tuned" if freeze == 0
            else "first block frozen" if freeze == 1 else f"first {freeze} blocks frozen")
    acc = run["result"]["val_acc"]
    return f"#{run['id']} — {what}, val acc {acc:.3f}, {run['dataset'].split('#')[0]}"


def drift_curve(ds: data.Dataset, key: str, run: dict, label: str) -> drift.Drift:
    """A kept run's CKA curve on this dataset, computed once under a progress bar (the fine-tuned
    model loads only then)."""
    def compute() -> drift.Drift:
        with progress.bar(label) as on_step:
            return drift.drift(zoo.get_spec(key), ds, run["config"], tuned=tuned_model(run["id"], run["created"]),
                               tag=drift.run_tag(run), base=pretrained(key), on_step=on_step)

    return progress.shared("drift", (ds.fingerprint, key, run["id"], run["created"]), compute)


def drift_curves(key: str, ds: data.Dataset, runs: list[dict]) -> list[tuple[str, drift.Drift]]:
    """(label, curve) per run; a run that cannot be compared is a warning, not a stop."""
    curves = []
    for i, run in enumerate(runs, 1):
        try:
            curve = drift_curve(ds, key, run, f"Run #{run['id']} ({i} of {len(runs)}): pretrained, then fine-tuned "
                                              "activations at every block")
        except (ValueError, RuntimeError) as err:  # weights missing or unreadable, out of memory
            st.warning(f"Run #{run['id']}: {err}")
            continue
        note = ", BatchNorm statistics trained" if curve.bn_trained else ""
        curves.append((f"#{run['id']} freeze {run['config'].get('freeze')}{note}", curve))
    return curves


def drift_figure(curves: list[tuple[str, drift.Drift]]) -> go.Figure:
    """CKA per block, one line per run; frozen blocks drawn as grey squares."""
    fig = go.Figure()
    for label, curve in curves:
        frozen = [i < curve.frozen for i in range(len(curve.blocks))]
        fig.add_trace(go.Scatter(
            x=curve.blocks, y=curve.cka, mode="lines+markers", name=label,
            marker={"symbol": ["square" if f else "circle" for f in frozen], "size": 9,
                    "line": {"width": 1, "color": "#555"}},
            customdata=["frozen" if f else "trained" for f in frozen],
            hovertemplate="%{x}: CKA %{y:.4f} (%{customdata})<extra>%{fullData.name}</extra>"))
    fig.update_layout(height=380, margin={"l": 10, "r": 10, "t": 10, "b": 10}, template="plotly_white",
                      xaxis_title="block (input → output)", yaxis={"title": "linear CKA with the pretrained model",
                                                                   "range": [0, 1.04]},
                      legend={"orientation": "h", "y": -0.3})
    return fig


def _paused(key: str) -> bool:
    """True (with a way to go on) after the user pressed Stop."""
    if not st.session_state.get("vis_paused"):
        return False
    st.info("Stopped: nothing half-done was kept.")
    st.button("Render", key=f"resume_{key}", on_click=resume, type="primary")
    return True


def renders(spec: zoo.ModelSpec, model: torch.nn.Module, cfg: render.RenderConfig, targets: list[int],
            weights: str, key: str, directions: torch.Tensor | None = None, step: str = "") -> list[render.Render] | None:
    """Renders of ``targets``: from the cache at once, else optimised under a progress bar (its text
    led by ``step``, e.g. "Layer 2 of 4: ", where this is one of several)."""
    try:
        found = render.render(spec, model, cfg, targets, weights=weights, directions=directions, only_cached=True)
        if found is not None or _paused(key):
            return found
        return with_progress(f"{step}Optimising {len(targets)} image{'s' * (len(targets) > 1)} at {cfg.layer}",
                             lambda on_step: render.render(spec, model, cfg, targets, weights=weights,
                                                           directions=directions, on_step=on_step), key)
    except (ValueError, RuntimeError) as err:  # a setting the model cannot take; out of memory
        st.error(str(err))
        return None


def gallery(spec: zoo.ModelSpec, model: torch.nn.Module, cfg: render.RenderConfig, targets: list[int],
            ds: data.Dataset, stats: examples.LayerStats, per_row: int = 4) -> None:
    """Cards: each item's render, its figure, and the dataset images that go with it."""
    directions = examples.class_directions(stats, ds.labels, targets) if cfg.objective == "direction" else None
    found = renders(spec, model, cfg, targets, "pretrained", "gallery", directions)
    if not found:
        return
    for start in range(0, len(found), per_row):
        for col, r in zip(st.columns(per_row), found[start:start + per_row], strict=False):
            if cfg.objective == "direction":
                col.markdown(f"**Class {ds.classes[r.target]}**",
                             help="What this layer associates with the class: the class's mean activation "
                                  "minus the dataset's, rendered with lucent's direction objective.")
                examples_ = stats.top_along(directions[targets.index(r.target)], 4)
                note = "images furthest along this direction"
            elif cfg.objective == "layer":
                col.markdown(f"**Variation {r.target}** of the whole layer")
                examples_, note = [], ""
            elif cfg.objective == "neuron":
                # No activation ratio: the render pushes one position, while the dataset's figures (and the
                # render's) are means over the whole map, which made good renders read as failures.
                col.markdown(f"**Centre neuron of channel {r.target}**",
                             help="Optimised for the channel's centre position only. The dataset images below "
                                  "are those that excite the channel's whole map most.")
                examples_, note = stats.top(r.target, 4), "dataset images that excite the channel most"
            else:
                col.markdown(f"**Channel {r.target}** · {ratio_text(stats.ratio(r.target, r.activation))}",
                             help=RATIO_HELP)
                examples_, note = stats.top(r.target, 4), "dataset images that excite it most"
            col.image(r.image, width="stretch", alt=f"render of {cfg.objective} {r.target}")
            if examples_:
                col.image(thumbs(ds, examples_, 4), width="stretch", caption=note)


def diverse(spec: zoo.ModelSpec, model: torch.nn.Module, cfg: render.RenderConfig, channel: int,
            n: int = 4) -> list[render.Render] | None:
    found = render.render_diverse(spec, model, cfg, channel, n, only_cached=True)
    if found is not None or _paused("diverse"):
        return found
    return with_progress(f"Optimising {n} diverse images of channel {channel}",
                         lambda on_step: render.render_diverse(spec, model, cfg, channel, n, on_step=on_step),
                         "diverse")


def run_dream(spec: zoo.ModelSpec, model: torch.nn.Module, source: str | bytes, cfg: dream.DreamConfig,
              max_side: int, name: str) -> None:
    """Dream ``source`` (a bundled photo's name or an upload's bytes); kept for this session."""
    st.session_state.dream_stopped = False
    st.session_state.pop("last_dream", None)  # an error or a Stop must not leave the previous dream under it
    try:
        photo = data.load_photo(source, max_side=max_side)
        result = with_progress("Dreaming", lambda on_step: dream.deepdream(spec, model, photo, cfg, on_step=on_step),
                               "dream", on_stop=dream_stopped)
        seen = [zoo.predict(spec, model, image, top=3) for image in (photo, result.image)]
    except (ValueError, RuntimeError) as err:  # DatasetError for a bad file, a bad setting, out of memory
        st.error(str(err))
        return
    # The model's name with what it saw: the menu may show another model by the time this is drawn.
    st.session_state.last_dream = {"photo": photo, "dream": result, "name": name, "layers": cfg.layers,
                                   "asked": cfg.octaves, "seen": seen, "model": spec.model}


def seen_text(top: list[tuple[str, float]]) -> str:
    """What the ImageNet head says of an image, in one line: 'Egyptian cat 62 % · tabby 21 % · …'."""
    return " · ".join(f"{name} {100 * p:.0f}\u00a0%" for name, p in top)  # no line break before the %


def dream_stopped() -> None:
    st.session_state.dream_stopped = True


def before_after(spec: zoo.ModelSpec, model: torch.nn.Module, run: dict, cfg: render.RenderConfig, channel: int,
                 ds: data.Dataset, stats: examples.LayerStats) -> None:
    """One channel rendered from the pretrained and from the run's weights, same seed, side by side."""
    try:
        tuned = tuned_model(run["id"], run["created"])
    except ValueError as err:
        st.warning(str(err))
        return
    if frozen_in(spec, run, cfg.layer):  # the same weights: a second render would only repeat the first
        before = renders(spec, model, cfg, [channel], "pretrained", "before")
        if before:
            st.image(before[0].image, width=360, caption=f"pretrained · {ratio_text(stats.ratio(channel, before[0].activation))}")
            st.caption(f"Run #{run['id']} kept {cfg.layer} frozen (its block and every one before it, BatchNorm "
                       "statistics too): after the run the channel is this same picture. Pick a run that trained "
                       "this layer, or a deeper layer.")
        return
    tag = drift.run_tag(run)
    tuned_stats = layer_stats(spec.key, ds, cfg.layer, tuned, tag)
    before = renders(spec, model, cfg, [channel], "pretrained", "before")
    after = renders(spec, tuned, cfg, [channel], tag, "after") if before else None
    if not after:
        return
    left, right = st.columns(2)
    left.image(before[0].image, width="stretch",
               caption=f"pretrained · {ratio_text(stats.ratio(channel, before[0].activation))}")
    right.image(after[0].image, width="stretch",
                caption=f"after run #{run['id']} · {ratio_text(tuned_stats.ratio(channel, after[0].activation))}")


def frozen_in(spec: zoo.ModelSpec, run: dict, layer: str) -> bool:
    """Whether ``run`` left ``layer`` exactly as pretrained: its block among the frozen ones, their
    BatchNorm statistics kept."""
    cfg = run["config"]
    freeze = cfg.get("freeze")
    if freeze == "all" or not isinstance(freeze, int) or cfg.get("bn_mode", "frozen") != "frozen":
        return freeze == "all"
    block = next(x.block for x in zoo.layers(spec) if x.name == layer)
    return [b.name for b in zoo.blocks_of(spec)].index(block) < freeze


SCALES = {"each": "Each filter's own range", "shared": "One range for the layer"}
SCALES_HELP = ("Each filter's own range shows its pattern; one range for the whole layer shows which filters "
               "are strong and which barely fire.")


@st.cache_data(max_entries=16, show_spinner=False)
def first_layer(key: str, _model: torch.nn.Module, weights: str = "pretrained") -> filters.FirstLayer | None:
    """The first layer's filters of a shared model, the pretrained one or a kept run's (``weights``
    names it; None: its first layer is not a convolution over the RGB image); once for every session."""
    try:
        return filters.first_layer(zoo.get_spec(key), _model)
    except ValueError:
        return None


FIRST_LAYER_NOTE = ("The first convolution's weights are pictures themselves: each filter is a small colour image "
                    "the network slides over the photo (AlexNet's 11×11 filters in Krizhevsky et al. 2012, Fig. 3: "
                    "oriented edges, stripes and colour blobs). Drawn on the photo's own pixels: grey is zero, "
                    "brighter adds that colour, darker subtracts it.")


def small_kernel_note(spec: zoo.ModelSpec, layer: filters.FirstLayer) -> str:
    """Why a small first kernel shows no edges like the slide's, and which models do (by kernel size)."""
    k = layer.kernels.shape[1]
    if k > 3:
        return ""
    return (f" {spec.model}'s are {k}×{k}, {k * k} pixels each: too few to show the stripes and Gabor-like "
            "edges of the slide's 11×11 filters, so they read as colour blobs and light-dark gradients. Models "
            "with large first filters show them (AlexNet 11×11, GoogLeNet and ResNets 7×7"
            + ("" if demo_mode() else "; their weights download on first use") + ").")


def first_layer_note(layer: filters.FirstLayer) -> str:
    weak = int(layer.negligible().sum())
    bn = f", its BatchNorm ({layer.batchnorm}) folded in" if layer.batchnorm else ""
    dead = (f" {weak} of them are close to zero (flat grey): their channels give the same output whatever "
            "the photo." if weak else "")
    return (f"**{layer.path}** · {len(layer.weights)} filters, {layer.kind} over RGB{bn}.{dead}")


def first_layer_before_after(spec: zoo.ModelSpec, model: torch.nn.Module, run: dict) -> None:
    """The run's first-layer filters beside the pretrained ones, and how far each moved."""
    try:
        tuned = tuned_model(run["id"], run["created"])
    except ValueError as err:
        st.warning(str(err))
        return
    before = first_layer(spec.key, model)
    after = first_layer(spec.key, tuned, drift.run_tag(run)) if before is not None else None
    if after is None:
        return
    if not run["config"].get("pretrained", True):
        st.caption(f"Run #{run['id']} trained from scratch: its first layer grew from random weights, not "
                   "from the pretrained filters on the left.")
    else:
        moved = filters.change(before, after)
        if np.nanmax(moved.weights) == 0 and np.nanmax(np.abs(moved.gain - 1)) == 0:
            st.caption(f"Run #{run['id']} kept the first block frozen, its BatchNorm statistics too: "
                       "the first layer is the pretrained one, to the bit.")
            return
        st.caption(first_layer_change_text(moved))
    left, right = st.columns(2)
    left.image(before.grid("each", per_row=8), width="stretch", caption="pretrained")
    right.image(after.grid("each", per_row=8), width="stretch", caption=f"after run #{run['id']}")


def first_layer_change_text(moved: filters.Change) -> str:
    text = (f"The filters' own weights moved by {np.nanmedian(moved.weights):.2%} of their size (median; at most "
            f"{np.nanmax(moved.weights):.2%}), ‖after − before‖ ÷ ‖before‖. The first layer is the most general one "
            "(Yosinski et al. 2014): fine-tuning usually moves it least.")
    low, high = np.nanmin(moved.gain), np.nanmax(moved.gain)
    if max(abs(low - 1), abs(high - 1)) > 1e-3:
        text += (f" Its BatchNorm's statistics were re-estimated on this data: it now scales the filters ×{low:.2g} "
                 f"to ×{high:.2g} of before, which changes their strength, not their pattern.")
    return text
