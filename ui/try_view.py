"""The Fine-tune lab's look at one finished run: its answer for a photo it never saw, in its own
classes, and where it goes wrong on its validation images."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from tlcore import data, zoo
from tlcore.data import Dataset
from tlcore.device import out_of_memory
from tlcore.finetune import predict
from ui import progress, resources
from ui.finetune_view import jobs, precision_label
from ui.visualize_view import tuned_model

SHOWN_PX = 192  # the prepared photo is drawn this wide, its pixels as squares
MISTAKES_SHOWN = 24


@st.cache_data(max_entries=16, show_spinner=False)
def _head(run_id: int, created: str) -> dict:
    """A probe's kept head (a Linear's few weights), read once per run."""
    return jobs().store.load_weights(run_id)


def network(run: dict) -> predict.Network:
    """What answers for ``run``: the fine-tuned network the Inside-the-network page shares too, or the
    probe's head on the shared pretrained model (only read; not kept in the probe's cache entry, so
    a model the shared cache lets go is not held on the device by a probe)."""
    if run["config"].get("freeze") == "all":
        spec = zoo.get_spec(run["model"])
        return predict.run_network(spec, run, _head(run["id"], run["created"]), device=resources.device(),
                                   base=resources.cached_model(spec.key, True))
    return tuned_model(run["id"], run["created"])


def photo_source() -> str | bytes | None:
    """A bundled photo's name or an upload's bytes (None until one is chosen)."""
    c1, c2 = st.columns([1, 2])
    kind = c1.segmented_control("Photo", ["Bundled", "Upload"], default="Bundled", key="try_source", required=True,
                                wrap=True)
    if kind == "Upload":
        upload = c2.file_uploader("A photo (JPEG, PNG, WebP, …)", type=None, key="try_upload")
        return upload.getvalue() if upload else None
    return c2.selectbox("Bundled photo (scikit-image)", list(data.PHOTOS), key="try_photo")


def answer(run: dict, source: str | bytes) -> tuple[np.ndarray, list[tuple[str, float]]]:
    """The photo as the run's images were (the centre square at their resolution) and its top classes."""
    return _answer(run["id"], run["created"], source)


@st.cache_data(max_entries=32, show_spinner=False)
def _answer(run_id: int, created: str, source: str | bytes) -> tuple[np.ndarray, list[tuple[str, float]]]:
    """Kept per run and photo: the lab reruns on every widget change and live-curve refresh."""
    run = jobs().store.get(run_id)
    photo = data.load_photo(source)
    spec = zoo.get_spec(run["model"])
    return predict.prepare(run, photo), predict.classify(spec, run, network(run), photo, device=resources.device())


def enlarged(image: np.ndarray, width: int = SHOWN_PX) -> np.ndarray:
    """``image`` drawn about ``width`` px wide with its pixels as squares: a browser would blur a 32 px image."""
    k = max(1, width // image.shape[1])
    return image.repeat(k, axis=0).repeat(k, axis=1)


def answer_figure(top: list[tuple[str, float]]) -> go.Figure:
    """The top classes as horizontal bars, the likeliest on top."""
    names, probs = [n for n, _ in top][::-1], [p for _, p in top][::-1]
    fig = go.Figure(go.Bar(x=probs, y=names, orientation="h", text=[f"{100 * p:.1f} %" for p in probs],
                           textposition="outside", cliponaxis=False, marker_color="#2f6fde",
                           hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
    fig.update_layout(height=60 + 32 * len(top), margin={"l": 10, "r": 50, "t": 10, "b": 30},
                      xaxis={"range": [0, 1], "title": "probability", "tickformat": ".0%"},
                      yaxis={"type": "category"})
    return fig


def try_run(run: dict) -> None:
    """The photo picker, then the photo as the run sees it beside the run's answer."""
    st.subheader(f"Try run #{run['id']} on a photo")
    st.caption("The run answers in its own classes only, however far the photo is from them: a digits "
               "classifier calls a cat a digit. The photo is cropped and scaled as the run's images were (its "
               "colours are kept, even where the run's images were grey).")
    source = photo_source()
    if source is None:
        return
    try:
        seen, top = answer(run, source)
    except (ValueError, zoo.WeightsUnavailableError) as err:  # a bad photo (DatasetError), weights gone
        st.error(str(err))
        return
    except RuntimeError as err:
        if not out_of_memory(err):
            raise
        st.error("The device is out of memory (a trial may be training on it): try again when it is done.")
        return
    c1, c2 = st.columns([1, 2])
    c1.image(enlarged(seen), caption=f"As the run sees it: the centre square at {seen.shape[0]} px")
    c2.plotly_chart(answer_figure(top), width="stretch", config={"displayModeBar": False}, key="try_answer")


def confusion_figure(confusion: list[list[int]], classes: list[str]) -> go.Figure:
    """Counts per true class (rows, the first on top) and answer (columns); the diagonal is right."""
    counts = np.asarray(confusion)
    fig = go.Figure(go.Heatmap(z=counts, x=classes, y=classes, colorscale="Blues", showscale=False,
                               text=counts, texttemplate="%{text}" if len(classes) <= 20 else None,
                               hovertemplate="true %{y}, said %{x}: %{z}<extra></extra>"))
    side = min(480, 120 + 28 * len(classes))
    fig.update_layout(height=side, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      xaxis={"title": "said", "type": "category", "side": "top"},
                      yaxis={"title": "true", "type": "category", "autorange": "reversed"})
    return fig


def answers(run: dict, ds: Dataset) -> predict.Answers:
    """The run's answer for each validation image, computed once for every session."""
    spec = zoo.get_spec(run["model"])

    def compute() -> predict.Answers:
        with progress.bar(f"Run #{run['id']} on the validation images") as on_step:
            return predict.answer_validation(spec, run, network(run), ds, device=resources.device(),
                                             on_step=on_step)

    key = (run["id"], run["created"], ds.fingerprint, ds.split_digest())
    return progress.shared("run_answers", key, compute, max_entries=8)


def mistakes_caption(found: predict.Answers, classes: list[str]) -> list[str]:
    """'true → said (p %)' for each mistake shown, the surest first."""
    return [f"{classes[found.truth[i]]} → {classes[found.said[i]]} ({100 * found.confidence[i]:.0f}\u00a0%)"
            for i in found.mistakes()[:MISTAKES_SHOWN]]


def agreement_note(found: predict.Answers, run: dict) -> str:
    """Where answers computed again differ from the trial's last evaluation (another precision), say so."""
    stored = sum(np.diag(run["result"]["confusion"]))
    now = int((found.said == found.truth).sum())
    if stored == now:
        return ""
    return (f" Computed again here in float32 they get {now} right where the trial's last epoch counted "
            f"{stored} (it computed in {precision_label(run['result']['timings']) or 'another precision'}).")


def where_wrong(run: dict, ds: Dataset) -> None:
    """The run's confusion matrix, and the validation images it got wrong when its dataset is loaded."""
    classes = run["result"]["classes"]
    st.subheader(f"Where run #{run['id']} goes wrong")
    c1, c2 = st.columns([2, 3])
    c1.plotly_chart(confusion_figure(run["result"]["confusion"], classes), width="stretch",
                    config={"displayModeBar": False}, key="run_confusion")
    c1.caption("Its validation images after the last epoch: rows are the true class, columns what it said.")
    reason = predict.not_its_validation(run, ds)
    if reason:
        c2.info(reason)
        return
    if not c2.toggle("Show the images it got wrong", key=f"show_mistakes{run['id']}",  # asked per run
                     help="One pass of the run over the validation images (kept for every session)."):
        return
    try:
        found = answers(run, ds)
    except (ValueError, zoo.WeightsUnavailableError) as err:  # weights gone, a dataset that no longer fits
        c2.error(str(err))
        return
    wrong = found.mistakes()
    if not len(wrong):
        c2.success(f"It got all {len(found.truth)} validation images right.")
        return
    shown = wrong[:MISTAKES_SHOWN]
    c2.caption(f"{len(wrong)} of {len(found.truth)} validation images wrong"
               + (f", the {len(shown)} it was surest of" if len(wrong) > len(shown) else ", the surest first")
               + ": true class → what it said (its probability)." + agreement_note(found, run))
    images = [enlarged(ds.images[found.indices[i]].permute(1, 2, 0).numpy(), 96) for i in shown]
    c2.image(images, caption=mistakes_caption(found, classes), width=96)
