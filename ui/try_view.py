"""The Fine-tune lab's "try it": a kept run's answer for a photo it never saw, in its own classes."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from tlcore import data, zoo
from tlcore.finetune import predict
from ui import resources
from ui.finetune_view import jobs
from ui.visualize_view import tuned_model

SHOWN_PX = 192  # the prepared photo is drawn this wide, its pixels as squares


@st.cache_resource(max_entries=4, show_spinner="Loading the run's weights…")
def _probe(run_id: int, created: str) -> predict.Network:
    """A probe's head on the shared pretrained model (only read), loaded once per run."""
    run = jobs().store.get(run_id)
    spec = zoo.get_spec(run["model"])
    return predict.run_network(spec, run, jobs().store.load_weights(run_id), device=resources.device(),
                               base=resources.cached_model(spec.key, True))


def network(run: dict) -> predict.Network:
    """What answers for ``run``: the fine-tuned network the Inside-the-network page shares too, or the probe."""
    if run["config"].get("freeze") == "all":
        return _probe(run["id"], run["created"])
    return tuned_model(run["id"], run["created"])


def photo_source() -> str | bytes | None:
    """A bundled photo's name or an upload's bytes (None until one is chosen)."""
    c1, c2 = st.columns([1, 2])
    kind = c1.segmented_control("Photo", ["Bundled", "Upload"], default="Bundled", key="try_source", required=True)
    if kind == "Upload":
        upload = c2.file_uploader("A photo (JPEG, PNG, WebP, …)", type=None, key="try_upload")
        return upload.getvalue() if upload else None
    return c2.selectbox("Bundled photo (scikit-image)", list(data.PHOTOS), key="try_photo")


def answer(run: dict, source: str | bytes) -> tuple[np.ndarray, list[tuple[str, float]]]:
    """The photo as the run's images were (the centre square at their resolution) and its top classes."""
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
               "classifier calls a cat a digit. The photo is prepared as the run's images were.")
    source = photo_source()
    if source is None:
        return
    try:
        seen, top = answer(run, source)
    except (ValueError, zoo.WeightsUnavailableError) as err:  # a bad photo (DatasetError), weights gone
        st.error(str(err))
        return
    c1, c2 = st.columns([1, 2])
    c1.image(enlarged(seen), caption=f"As the run sees it: the centre square at {seen.shape[0]} px")
    c2.plotly_chart(answer_figure(top), width="stretch", config={"displayModeBar": False}, key="try_answer")
